//! The uploadUrl credential check: a query string from anywhere never panics the
//! check, and nothing passes it but a credential the key signed, for this session,
//! unexpired.
//!
//! Input: a mode byte, four bytes of expiry, a byte choosing the session id, then
//! either a whole query string (mode even) or edits to a valid query (mode odd:
//! pairs of position and byte, overwriting, inserting or deleting).
//!
//! Invariant: `verify` is true only when the query has exactly one `authtoken`
//! whose expiry and tag read back to what `sign` made for this session and an
//! expiry after `now`; it is false for every other session, and once expired.
#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use upsession_core::credential::{CREDENTIAL_PARAM, Signer};

const IDS: [&str; 4] = ["s1", "abcDEF-_09", "s", "a-much-longer-session-identifier-0123456789"];

/// `(expiry, tag)` of the query's one credential, as `verify` must read it.
fn parsed(query: &str) -> Option<(u64, Vec<u8>)> {
    let mut found = None;
    for pair in query.split('&') {
        if let Some(v) = pair.strip_prefix(CREDENTIAL_PARAM).and_then(|r| r.strip_prefix('=')) {
            if found.is_some() {
                return None;
            }
            found = Some(v);
        }
    }
    let (expiry, tag) = found?.split_once('.')?;
    Some((expiry.parse().ok()?, URL_SAFE_NO_PAD.decode(tag).ok()?))
}

fuzz_target!(|data: &[u8]| {
    let [mode, e0, e1, e2, e3, which, rest @ ..] = data else {
        return;
    };
    let signer = Signer::new([0x5a; 32]);
    let id = IDS[usize::from(*which) % IDS.len()];
    let other = IDS[(usize::from(*which) + 1) % IDS.len()];
    let expiry = u64::from(u32::from_le_bytes([*e0, *e1, *e2, *e3])) + 1;
    let expires = UNIX_EPOCH + Duration::from_secs(expiry);
    let now = expires - Duration::from_secs(1);
    let valid = format!("{CREDENTIAL_PARAM}={}", signer.sign(id, expires));
    let Some(signed) = parsed(&valid) else {
        panic!("a signed credential does not read: {valid}");
    };
    assert!(signer.verify(id, Some(&valid), now));
    assert!(!signer.verify(id, Some(&valid), expires), "expired yet accepted");
    assert!(!signer.verify(other, Some(&valid), now), "another session's");

    let query = if mode % 2 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let mut bytes = valid.clone().into_bytes();
        for edit in rest.chunks(2) {
            let (pos, byte) = (usize::from(edit[0]), edit.get(1).copied().unwrap_or(0));
            let at = pos % (bytes.len() + 1);
            match byte % 4 {
                0 if at < bytes.len() => {
                    bytes.remove(at);
                }
                1 => bytes.insert(at, byte / 4 + 32),
                _ if at < bytes.len() => bytes[at] = byte,
                _ => {}
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    };
    let accepted = signer.verify(id, Some(&query), now);
    if accepted {
        assert_eq!(
            parsed(&query),
            Some(signed.clone()),
            "{query:?} passed but is not the credential that was signed"
        );
    }
    let never = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX) + 10);
    assert!(!signer.verify(id, Some(&query), never), "accepted after every expiry");
    assert!(!signer.verify(other, Some(&query), now) || parsed(&query).is_some_and(|(e, t)| {
        // Only a credential signed for `other` passes for it; this query was made
        // from one for `id`, so that would be a forgery.
        let for_other = parsed(&format!(
            "{CREDENTIAL_PARAM}={}",
            signer.sign(other, UNIX_EPOCH + Duration::from_secs(e))
        ));
        for_other == Some((e, t))
    }), "{query:?} passed for another session");
});
