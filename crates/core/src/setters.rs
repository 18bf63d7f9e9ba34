//! The `with_…` builder methods of the project's configuration types, written once:
//! [`setters!`](crate::setters!) and [`const_setters!`](crate::const_setters!). Each
//! line names a method and the fields it sets (its parameters), with their types:
//!
//! ```
//! #[derive(Default)]
//! pub struct Options {
//!     size: u64,
//!     name: String,
//!     budget: u64,
//!     window: std::time::Duration,
//! }
//!
//! impl Options {
//!     upsession_core::const_setters! {
//!         /// Sets the size.
//!         with_size(size: u64);
//!         /// Sets the bytes allowed per window.
//!         with_budget(budget: u64, window: std::time::Duration);
//!     }
//!     upsession_core::setters! {
//!         /// Sets the name.
//!         with_name(name: String);
//!     }
//! }
//!
//! let o = Options::default().with_size(3).with_name("n".into());
//! assert_eq!((o.size, o.name.as_str()), (3, "n"));
//! ```
//!
//! A setter that does more than assign its parameters says what it assigns:
//!
//! ```
//! #[derive(Default)]
//! pub struct Server {
//!     admin: Option<String>,
//!     quiet: bool,
//! }
//!
//! impl Server {
//!     upsession_core::setters! {
//!         /// Enables the admin routes behind `token`.
//!         with_admin(token: impl Into<String>) => admin = Some(token.into());
//!         /// Logs nothing.
//!         quiet() => quiet = true;
//!     }
//! }
//!
//! let s = Server::default().with_admin("t").quiet();
//! assert_eq!((s.admin.as_deref(), s.quiet), (Some("t"), true));
//! ```
//!
//! Setters with logic (validation, clamping) are written by hand beside them.

/// Builder methods `pub fn with_x(mut self, x: T, ...) -> Self`; see the
/// [module documentation](mod@crate::setters). A line `with_x(x: T);` assigns the fields
/// its parameters name; a line `with_x(a: A) => field = expr, ...;` assigns what it says.
#[macro_export]
macro_rules! setters {
    ($($line:tt)*) => {
        $crate::__setters!([] $($line)*);
    };
}

/// [`setters!`](crate::setters!) as `const fn`s, for fields of `Copy` types.
#[macro_export]
macro_rules! const_setters {
    ($($line:tt)*) => {
        $crate::__setters!([const] $($line)*);
    };
}

/// The one implementation of [`setters!`](crate::setters!) and
/// [`const_setters!`](crate::const_setters!): one line at a time.
#[doc(hidden)]
#[macro_export]
macro_rules! __setters {
    ([$($qualifier:tt)*]) => {};
    (
        [$($qualifier:tt)*]
        $(#[$doc:meta])* $name:ident($($field:ident: $ty:ty),+ $(,)?);
        $($rest:tt)*
    ) => {
        $(#[$doc])*
        #[must_use]
        pub $($qualifier)* fn $name(mut self, $($field: $ty),+) -> Self {
            $(self.$field = $field;)+
            self
        }
        $crate::__setters!([$($qualifier)*] $($rest)*);
    };
    (
        [$($qualifier:tt)*]
        $(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),* $(,)?)
            => $($field:ident = $value:expr),+;
        $($rest:tt)*
    ) => {
        $(#[$doc])*
        #[must_use]
        pub $($qualifier)* fn $name(mut self, $($arg: $ty),*) -> Self {
            $(self.$field = $value;)+
            self
        }
        $crate::__setters!([$($qualifier)*] $($rest)*);
    };
}
