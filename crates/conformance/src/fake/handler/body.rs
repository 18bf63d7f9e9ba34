//! Reading request bodies: whole, cut by a fault, or drained after an early answer.

use std::time::Duration;

use http_body_util::BodyExt as _;
use hyper::body::Incoming;

/// Longest pause between two pieces of a body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest body read and discarded after an early answer.
const MAX_LINGER: u64 = 64 * 1024 * 1024;

/// How a body read ended.
pub(super) enum BodyRead {
    /// The body, whole (possibly shorter than announced).
    Complete(Vec<u8>),
    /// More than the limit arrived.
    TooLong(u64),
    /// The connection failed after this many bytes.
    Broken(u64),
    /// The body stalled.
    Stalled,
    /// The fault cut it (the `reset` fault).
    Cut,
}

pub(super) async fn read_body(mut body: Incoming, limit: u64, cut_at: Option<u64>) -> BodyRead {
    if cut_at == Some(0) {
        return BodyRead::Cut;
    }
    let mut data = Vec::new();
    loop {
        match tokio::time::timeout(BODY_TIMEOUT, body.frame()).await {
            Err(_) => return BodyRead::Stalled,
            Ok(None) => return BodyRead::Complete(data),
            Ok(Some(Err(_))) => return BodyRead::Broken(data.len() as u64),
            Ok(Some(Ok(frame))) => {
                let Ok(chunk) = frame.into_data() else {
                    continue;
                };
                data.extend_from_slice(&chunk);
                let got = data.len() as u64;
                if cut_at.is_some_and(|cut| got >= cut) {
                    return BodyRead::Cut;
                }
                if got > limit {
                    return BodyRead::TooLong(got);
                }
            }
        }
    }
}

/// Reads and discards what is left of a body after an early answer, so that the
/// client sees the answer rather than a reset (a "lingering close").
pub(super) fn linger(body: Incoming) {
    tokio::spawn(async move {
        let _ = read_body(body, MAX_LINGER, None).await;
    });
}
