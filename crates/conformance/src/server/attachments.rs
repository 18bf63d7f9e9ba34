//! The end of a case: every completed attachment fetched from `{Location}/$value`
//! and compared byte for byte with its file.

use std::fmt::Write as _;

use http::Method;
use reqwest::Url;
use sha2::{Digest as _, Sha256};

use super::exec::Exec;
use super::http::Outgoing;
use super::verdict::{Violation, violation};
use crate::rule::Rule;

impl Exec<'_> {
    /// Fetches every completed attachment and compares it with its file.
    pub(super) async fn check_attachments(&mut self) -> Result<(), Violation> {
        for i in 0..self.sessions.len() {
            let Some(location) = self.sessions[i].location.clone() else {
                continue;
            };
            let text = format!("{}/$value", location.trim_end_matches('/'));
            let Ok(url) = Url::parse(&text) else {
                return Err(violation(
                    Rule::Completion,
                    format!("`{text}` is not a URL"),
                ));
            };
            let req = Outgoing::new(Method::GET, url, text).bearer(&self.cfg.token);
            let (step, reply) = self.send(&req).await;
            self.stats.checked(Rule::AttachmentBytes);
            let m = &self.sessions[i];
            let outcome = match &reply {
                Err(e) => Err(format!("no answer: {e}")),
                Ok(r) if r.status != 200 => Err(format!(
                    "fetching the attachment of file {} must answer 200, got {}",
                    m.file,
                    r.brief()
                )),
                Ok(r) if r.body != m.data => Err(difference(&r.body, &m.data, m.file)),
                Ok(_) => Ok(()),
            };
            if let Err(message) = outcome {
                let v = violation(Rule::AttachmentBytes, message);
                return Err(self.at(step, v));
            }
        }
        Ok(())
    }
}

/// Where a fetched attachment differs from its file: sizes, SHA-256s and the first
/// byte that differs.
fn difference(got: &[u8], want: &[u8], file: usize) -> String {
    let sha = |b: &[u8]| {
        Sha256::digest(b).iter().fold(String::new(), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
    };
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| got.len().min(want.len()));
    format!(
        "the attachment of file {file} is {} bytes with SHA-256 {}, but file {file} is {} bytes \
         with SHA-256 {}; first difference at byte {first}",
        got.len(),
        sha(got),
        want.len(),
        sha(want)
    )
}
