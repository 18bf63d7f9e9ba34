//! Who may do what: bearer tokens on Graph routes, signed credentials on uploadUrls.
//!
//! Pure computation (HMAC-SHA256, constant-time comparison), so it lives here and
//! is tested and fuzzed without a server; the time comes in as `now`.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use upsession_core::credential::{CREDENTIAL_PARAM, Signer};
//!
//! let signer = Signer::new([7; 32]);
//! let expires = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
//! let query = format!("{CREDENTIAL_PARAM}={}", signer.sign("session-1", expires));
//! let now = UNIX_EPOCH + Duration::from_secs(1_900_000_000);
//! assert!(signer.verify("session-1", Some(&query), now));
//! assert!(!signer.verify("session-2", Some(&query), now));
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The query parameter that carries an uploadUrl's credential.
pub const CREDENTIAL_PARAM: &str = "authtoken";

/// The accepted bearer tokens, compared in constant time.
#[derive(Clone)]
pub struct Tokens(Vec<Vec<u8>>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.0.len())
    }
}

impl Tokens {
    /// The tokens to accept (empty ones are ignored).
    pub fn new(tokens: &[String]) -> Self {
        Self(
            tokens
                .iter()
                .filter(|t| !t.is_empty())
                .map(|t| t.as_bytes().to_vec())
                .collect(),
        )
    }

    /// Checks an `Authorization` header value. Every configured token is compared,
    /// so the time taken does not say which one (or whether any) matched.
    ///
    /// # Errors
    /// A sentence saying what is wrong with the header, for the 401's message.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<(), &'static str> {
        let token = crate::identity::bearer(authorization)?;
        if self.contains(token) {
            Ok(())
        } else {
            Err("the access token is not valid")
        }
    }

    /// Whether `token` (the bearer token itself) is one of these, comparing every
    /// one in constant time.
    #[must_use]
    pub fn contains(&self, token: &[u8]) -> bool {
        let mut ok = subtle::Choice::from(0);
        for t in &self.0 {
            ok |= t.as_slice().ct_eq(token);
        }
        bool::from(ok)
    }
}

type HmacSha256 = Hmac<Sha256>;

/// Signs and checks uploadUrl credentials: `{expiry}.{mac}` where the MAC is an
/// HMAC-SHA256 over the session id and the expiry with the server's key.
#[derive(Clone)]
pub struct Signer {
    key: [u8; 32],
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<key>)")
    }
}

impl Signer {
    /// A signer with the server's secret key.
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn mac(&self, session_id: &str, expiry: u64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(b"upsession-upload-v1\0");
        mac.update(session_id.as_bytes());
        mac.update(b"\0");
        mac.update(&expiry.to_be_bytes());
        mac
    }

    /// The credential for `session_id`, valid until `expires`.
    pub fn sign(&self, session_id: &str, expires: SystemTime) -> String {
        let expiry = expires
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let tag = self.mac(session_id, expiry).finalize().into_bytes();
        format!("{expiry}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// Whether `query` carries exactly one valid, unexpired credential for `session_id`.
    pub fn verify(&self, session_id: &str, query: Option<&str>, now: SystemTime) -> bool {
        let mut found = None;
        for pair in query.unwrap_or("").split('&') {
            if let Some(value) = pair
                .strip_prefix(CREDENTIAL_PARAM)
                .and_then(|r| r.strip_prefix('='))
            {
                if found.is_some() {
                    return false; // repeated: refuse rather than guess which one counts
                }
                found = Some(value);
            }
        }
        let Some((expiry, tag)) = found.and_then(|v| v.split_once('.')) else {
            return false;
        };
        let (Ok(expiry), Ok(tag)) = (expiry.parse::<u64>(), URL_SAFE_NO_PAD.decode(tag)) else {
            return false;
        };
        // An absurd expiry (past what a clock can hold) is simply invalid.
        if UNIX_EPOCH
            .checked_add(Duration::from_secs(expiry))
            .is_none_or(|at| at <= now)
        {
            return false;
        }
        self.mac(session_id, expiry).verify_slice(&tag).is_ok()
    }
}

#[cfg(test)]
#[allow(clippy::pedantic)] // test code favours brevity over pedantry
mod tests {
    use super::*;

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn credential_is_bound_to_session_and_expiry() {
        let signer = Signer::new([7; 32]);
        let cred = signer.sign("s1", t(1000));
        let q = format!("{CREDENTIAL_PARAM}={cred}");
        assert!(signer.verify("s1", Some(&q), t(999)));
        assert!(!signer.verify("s1", Some(&q), t(1000)), "expired");
        assert!(
            !signer.verify("s2", Some(&q), t(10)),
            "another session's credential"
        );
        assert!(
            !Signer::new([8; 32]).verify("s1", Some(&q), t(10)),
            "another server's key"
        );
        let tampered = q.replace("1000.", "2000.");
        assert!(
            !signer.verify("s1", Some(&tampered), t(10)),
            "expiry edited"
        );
        assert!(
            !signer.verify("s1", Some(&format!("{q}&{q}")), t(10)),
            "repeated parameter"
        );
        assert!(!signer.verify("s1", None, t(10)));
        assert!(!signer.verify("s1", Some("authtoken=garbage"), t(10)));
        assert!(
            !signer.verify("s1", Some("authtoken=18446744073709551615.AAAA"), t(10)),
            "no overflow"
        );
        assert!(
            signer.verify("s1", Some(&format!("x=1&{q}")), t(10)),
            "other parameters are fine"
        );
        assert!(
            cred.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "URL-safe"
        );
    }

    #[test]
    fn bearer_tokens() {
        let tokens = Tokens::new(&["abc".into(), "def".into()]);
        assert!(tokens.check(Some(b"Bearer def")).is_ok());
        assert!(tokens.check(Some(b"Bearer de")).is_err());
        assert!(tokens.check(Some(b"Basic abc")).is_err());
        assert!(tokens.check(None).is_err());
        assert!(Tokens::new(&[]).check(Some(b"Bearer ")).is_err());
    }
}
