//! The `with_…` builder methods of the project's configuration types, written once:
//! [`setters!`](crate::setters!) and [`const_setters!`](crate::const_setters!). Each
//! line names a method, the field it sets and its type:
//!
//! ```
//! #[derive(Default)]
//! pub struct Options {
//!     size: u64,
//!     name: String,
//! }
//!
//! impl Options {
//!     upsession_core::const_setters! {
//!         /// Sets the size.
//!         with_size(size: u64);
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
//! Setters that do more than assign (wrap in `Some`, convert, clamp) are written by
//! hand beside them.

/// Builder methods `pub fn with_x(mut self, x: T) -> Self` that assign one field
/// each; see the [module documentation](crate::setters).
#[macro_export]
macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident($field:ident: $ty:ty);)*) => {
        $(
            $(#[$doc])*
            #[must_use]
            pub fn $name(mut self, $field: $ty) -> Self {
                self.$field = $field;
                self
            }
        )*
    };
}

/// [`setters!`](crate::setters!) as `const fn`s, for fields of `Copy` types.
#[macro_export]
macro_rules! const_setters {
    ($($(#[$doc:meta])* $name:ident($field:ident: $ty:ty);)*) => {
        $(
            $(#[$doc])*
            #[must_use]
            pub const fn $name(mut self, $field: $ty) -> Self {
                self.$field = $field;
                self
            }
        )*
    };
}
