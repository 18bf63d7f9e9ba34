//! Keeping the uploadUrl's credential out of logs, errors, progress events and
//! `Debug` output.
//!
//! An uploadUrl is a bearer credential: whoever holds it can write to (or delete)
//! the upload session, without any other token. Graph puts that credential in the
//! query string, so the query is what this module hides. Everything in upsession's
//! clients that shows a URL shows it through [`redact`], [`RedactedUrl`] or [`UploadUrl`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What replaces a hidden part of a URL.
const HIDDEN: &str = "<redacted>";

/// `url` with its secret parts hidden: the query becomes `?<redacted>`, a fragment
/// `#<redacted>`, and user information before the host `<redacted>@`. The rest (the
/// scheme, host and path) is kept so that a log still says where a request went.
///
/// Works on any text, URL or not, and never fails.
///
/// ```
/// use upsession_core::redact;
///
/// assert_eq!(
///     redact("https://outlook.office.com/api/v2.0/Users('a')/AttachmentSessions('b')?authtoken=eyJ0"),
///     "https://outlook.office.com/api/v2.0/Users('a')/AttachmentSessions('b')?<redacted>",
/// );
/// assert_eq!(redact("https://graph.microsoft.com/v1.0/me"), "https://graph.microsoft.com/v1.0/me");
/// ```
pub fn redact(url: &str) -> String {
    RedactedUrl(url).to_string()
}

/// A borrowed URL that displays (and debugs) redacted, for log fields and messages:
/// `tracing::info!(url = %RedactedUrl(u), …)`.
#[derive(Clone, Copy)]
pub struct RedactedUrl<'a>(pub &'a str);

impl fmt::Display for RedactedUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = self.0;
        let (main, fragment) = match url.find('#') {
            Some(i) => (&url[..i], true),
            None => (url, false),
        };
        let (main, query) = match main.find('?') {
            Some(i) => (&main[..i], true),
            None => (main, false),
        };
        // User information sits between `scheme://` and the first `@` before the path.
        let (scheme, rest) = match main.find("://") {
            Some(i) => main.split_at(i + 3),
            None => ("", main),
        };
        let authority_end = rest.find('/').unwrap_or(rest.len());
        match rest[..authority_end].rfind('@') {
            Some(at) if !scheme.is_empty() => {
                write!(f, "{scheme}{HIDDEN}{}", &rest[at..])?;
            }
            _ => f.write_str(main)?,
        }
        if query {
            write!(f, "?{HIDDEN}")?;
        }
        if fragment {
            write!(f, "#{HIDDEN}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for RedactedUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// An uploadUrl: a URL that carries its own credential.
///
/// It displays and debugs redacted (see [`redact`]); the full URL is only given out
/// by [`UploadUrl::expose_secret`], for the requests themselves and for resume
/// state. It serialises as the plain string, so a resume state file holds
/// the credential: such files are written readable by their owner only.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UploadUrl(String);

impl UploadUrl {
    /// Wraps an uploadUrl.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The full URL, credential included. Send it only to the upload session itself;
    /// never log it.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// The URL for logs and messages.
    pub fn redacted(&self) -> RedactedUrl<'_> {
        RedactedUrl(&self.0)
    }
}

impl fmt::Display for UploadUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.redacted(), f)
    }
}

impl fmt::Debug for UploadUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UploadUrl({:?})", self.redacted())
    }
}

impl From<String> for UploadUrl {
    fn from(url: String) -> Self {
        Self(url)
    }
}

impl From<&str> for UploadUrl {
    fn from(url: &str) -> Self {
        Self(url.to_owned())
    }
}

impl FromStr for UploadUrl {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

#[cfg(test)]
#[allow(clippy::pedantic)] // test code favours brevity over pedantry
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        assert_eq!(redact(input), expected, "redacting {input:?}");
    }

    #[test]
    fn hides_query_fragment_and_userinfo_keeps_the_rest() {
        check(
            "https://h/up/1?tempauth=SECRET",
            "https://h/up/1?<redacted>",
        );
        check("https://h/up/1?", "https://h/up/1?<redacted>");
        check("https://h/up/1#frag", "https://h/up/1#<redacted>");
        check(
            "https://h/up/1?a=SECRET#x?y",
            "https://h/up/1?<redacted>#<redacted>",
        );
        check(
            "https://u:SECRET@h:8/p?q",
            "https://<redacted>@h:8/p?<redacted>",
        );
        check("https://h/p@x", "https://h/p@x");
        check(
            "http://127.0.0.1:9/uploads/s",
            "http://127.0.0.1:9/uploads/s",
        );
        check("not a url ?SECRET", "not a url ?<redacted>");
        check("", "");
    }

    #[test]
    fn upload_url_never_shows_its_query() {
        let u = UploadUrl::new("https://h/up/1?tempauth=SECRET");
        assert_eq!(u.to_string(), "https://h/up/1?<redacted>");
        assert_eq!(format!("{u:?}"), "UploadUrl(\"https://h/up/1?<redacted>\")");
        assert_eq!(u.expose_secret(), "https://h/up/1?tempauth=SECRET");
        assert_eq!(
            serde_json::to_string(&u).unwrap(),
            "\"https://h/up/1?tempauth=SECRET\""
        );
    }
}
