//! Turning reqwest's errors into the shared [`Error`](crate::Error)'s text: the
//! cause of a failed connection, and transport errors stripped of their URL.

pub use upsession_client_shared::{Error, Result};

/// The TLS error among `error`'s causes, if the failure was TLS's.
fn tls_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        // An `io::Error`'s `source` skips the error it wraps: step into it.
        cause = match e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// Whether TLS failed this request.
pub(crate) fn is_tls_failure(error: &reqwest::Error) -> bool {
    tls_failure(error).is_some()
}

/// Why a connection could not be made, in a few words (`connection refused`,
/// `unknown host (…)`, `TLS handshake failed: …`): the deepest cause, without the
/// layers reqwest and hyper wrap around it.
pub(crate) fn connect_cause(error: &reqwest::Error) -> String {
    if let Some(why) = tls_failure(error) {
        return handshake_failed(&why);
    }
    let mut deepest: &(dyn std::error::Error + 'static) = error;
    let mut dns = false;
    while let Some(next) = deepest.source() {
        dns |= deepest.to_string().contains("dns error");
        deepest = next;
    }
    let io_kind = deepest
        .downcast_ref::<std::io::Error>()
        .map(std::io::Error::kind);
    let text = match io_kind {
        Some(std::io::ErrorKind::ConnectionRefused) => "connection refused".to_owned(),
        Some(std::io::ErrorKind::TimedOut) => "connecting timed out".to_owned(),
        _ if error.is_timeout() => "connecting timed out".to_owned(),
        _ => deepest.to_string(),
    };
    let text = if dns {
        format!("unknown host ({text})")
    } else {
        text
    };
    if text.contains('?') {
        upsession_core::redact(&text)
    } else {
        text
    }
}

/// A failed TLS handshake, with its usual causes.
fn handshake_failed(why: &str) -> String {
    format!(
        "TLS handshake failed: {why} (usually an https URL for a plain-http server, \
         or a certificate this machine does not trust)"
    )
}

/// Describes a transport error without its URL (which may be an uploadUrl), with
/// the chain of causes that says what actually happened.
pub(crate) fn describe_reqwest(error: reqwest::Error) -> String {
    let error = error.without_url();
    let tls = tls_failure(&error);
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    if let Some(why) = tls {
        // The chain says "corrupt message of type InvalidContentType" or
        // "UnknownIssuer": name the layer (and, for a handshake, its usual causes).
        text = if error.is_connect() {
            handshake_failed(&why)
        } else {
            format!("TLS failed: {why}")
        };
    }
    // A cause could quote a URL (a redirect target, a proxy): hide any query.
    if text.contains('?') {
        upsession_core::redact(&text)
    } else {
        text
    }
}
