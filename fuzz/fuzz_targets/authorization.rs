//! The bearer path of every Graph request: the `Authorization` header read by
//! `identity::bearer`, a tokens file's lookup, and the JWT check
//! (`identity::jwt::verify`) on anything at all.
//!
//! Input: a mode byte, then either a raw header value (mode % 3 == 0), a token
//! checked as a JWT (1), or edits to a valid JWT (2: pairs of position and byte,
//! overwriting, inserting or deleting).
//!
//! Invariants: nothing panics; `bearer` returns a non-empty run of visible ASCII
//! taken from the header after a `Bearer` scheme; a tokens file never names a
//! principal for a token it does not list; a JWT passes only if its signature
//! verifies, so an edited token that passes names exactly the original's user.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use upsession_core::identity::jwt::{self, JwtPolicy, KeySet};
use upsession_core::identity::{Principal, TokensFile, bearer};

// A P-256 key made for this target only.
const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgzYivlk/XaW4BA4Ag
0ULfePjkc9T7fhWpGqAHmqJABMGhRANCAATLhiLRyUwnH+t/RAOUn0Z3f0Q8A7PY
/P+Ak75HxhIarqLWsscBYQcuDowzd1ngW6JqjzUrhNIf18fyFW5RvJLp
-----END PRIVATE KEY-----";

const NOW: u64 = 1_900_000_000;

struct Fixture {
    keys: KeySet,
    policy: JwtPolicy,
    token: String,
    principal: Principal,
    file: TokensFile,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let key = EncodingKey::from_ec_pem(KEY.as_bytes()).unwrap();
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some("k".into());
        let jwks = serde_json::json!({ "keys": [jwk] }).to_string();
        let (keys, _) = KeySet::parse(&jwks).unwrap();
        let policy = JwtPolicy::new("https://issuer.test", "api://aud");
        let claims = serde_json::json!({
            "iss": "https://issuer.test", "aud": "api://aud", "exp": NOW + 3600, "nbf": NOW - 60,
            "oid": "alice", "scp": "Mail.ReadWrite",
        });
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k".into());
        let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(NOW);
        let principal = jwt::verify(&token, &keys, &policy, now).unwrap();
        let file = TokensFile::parse(
            "[[token]]\ntoken = \"known-token\"\nuser = \"alice\"\nscopes = [\"Mail.ReadWrite\"]\n",
        )
        .unwrap();
        Fixture { keys, policy, token, principal, file }
    })
}

fn check_jwt(f: &Fixture, token: &str) {
    let now = UNIX_EPOCH + Duration::from_secs(NOW);
    if let Ok(p) = jwt::verify(token, &f.keys, &f.policy, now) {
        assert_eq!(p, f.principal, "{token} passed as someone else");
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else { return };
    let f = fixture();
    match mode % 3 {
        0 => {
            if let Ok(token) = bearer(Some(rest)) {
                assert!(!token.is_empty() && token.iter().all(u8::is_ascii_graphic));
                assert!(rest.len() > 7 && rest[..6].eq_ignore_ascii_case(b"bearer"));
                assert!(rest.windows(token.len()).any(|w| w == token));
                if token != b"known-token" {
                    assert!(f.file.principal(token).is_none());
                }
            }
        }
        1 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                check_jwt(f, text);
            }
        }
        _ => {
            let mut token = f.token.clone().into_bytes();
            for edit in rest.chunks(2) {
                let [at, byte] = edit else { break };
                let at = usize::from(*at) * token.len() / 256;
                match byte % 4 {
                    0 => token[at] = *byte,
                    1 => token.insert(at, *byte),
                    2 if token.len() > 1 => {
                        token.remove(at);
                    }
                    _ => token[at] = b"-_.A"[usize::from(*byte >> 6)],
                }
            }
            if let Ok(text) = std::str::from_utf8(&token) {
                check_jwt(f, text);
            }
        }
    }
});
