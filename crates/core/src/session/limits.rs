//! The limits a session is opened under, and the defaults every official SDK fits.

use std::time::Duration;

/// The limits a session is opened under.
///
/// The defaults are those every official Graph SDK's defaults fit: files of
/// 2,097,152 B (the live service's measured minimum) to 150 MB (decimal), fragments
/// of at most 60 MiB (the SDKs send 5 MiB, and some one byte more; Graph's "up to
/// 4 MB" is the opt-in `with_max_fragment(4 << 20)`), sessions that live 24 hours past
/// their last fragment.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Smallest file an upload session may carry.
    pub min_size: u64,
    /// Largest file an upload session may carry.
    pub max_size: u64,
    /// Largest fragment one `PUT` may carry.
    pub max_fragment: u64,
    /// How long a session lives after it is opened or last received a fragment.
    pub ttl: Duration,
    /// The longest a session can live in all, however many fragments extend it. The
    /// uploadUrl's credential expires then too.
    pub max_age: Duration,
    /// Refuse re-sent bytes with 416 instead of answering them (OneDrive's rule).
    pub reject_resend: bool,
    /// Every fragment but the last must be a multiple of this (OneDrive's 320 KiB).
    pub fragment_quantum: Option<u64>,
    /// Each stored fragment moves the expiry to `now + ttl` (OneDrive). When false
    /// the expiry stays as createUploadSession answered it (Outlook: it "remains the
    /// same as returned by the initial uploadSession").
    pub sliding_expiry: bool,
}

/// The smallest file an upload session takes by default: 2 MiB, as the live
/// service was measured to accept (its documents say 3 MB).
pub const DEFAULT_MIN_SIZE: u64 = 2_097_152;

/// The largest fragment by default: 60 MiB, OneDrive's documented maximum, above
/// every official SDK's default slice (5 MiB, plus the one byte Python and PHP add).
pub const DEFAULT_MAX_FRAGMENT: u64 = 60 * 1024 * 1024;

/// Graph's documented fragment size for Outlook, "up to 4 MB", read as 4 MiB: the
/// strict, opt-in limit.
pub const STRICT_MAX_FRAGMENT: u64 = 4 * 1024 * 1024;

impl Limits {
    crate::const_setters! {
        /// Sets the smallest file size.
        with_min_size(min_size: u64);
        /// Sets the largest file size.
        with_max_size(max_size: u64);
        /// Sets the largest fragment.
        with_max_fragment(max_fragment: u64);
        /// Sets the session lifetime after each fragment.
        with_ttl(ttl: Duration);
        /// Sets whether each stored fragment moves the expiry.
        with_sliding_expiry(sliding_expiry: bool);
        /// Sets the longest total lifetime of a session.
        with_max_age(max_age: Duration);
        /// Sets whether a fragment of bytes already stored is refused (OneDrive)
        /// rather than answered as a re-send.
        with_reject_resend(reject_resend: bool);
        /// Sets the multiple every fragment but the last must be (OneDrive: 320 KiB).
        with_fragment_quantum(fragment_quantum: Option<u64>);
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            min_size: DEFAULT_MIN_SIZE,
            max_size: 150_000_000,
            max_fragment: DEFAULT_MAX_FRAGMENT,
            ttl: Duration::from_secs(24 * 60 * 60),
            max_age: Duration::from_secs(7 * 24 * 60 * 60),
            reject_resend: false,
            fragment_quantum: None,
            sliding_expiry: true,
        }
    }
}

/// A message's size limit, as [`Session::set_message_limit`](super::Session::set_message_limit) takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageLimit {
    /// The largest the message's attachments may be in all.
    pub limit: u64,
    /// The size of its other attachments.
    pub attached: u64,
}
