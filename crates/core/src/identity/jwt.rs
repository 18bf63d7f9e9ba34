//! Bearer JWTs as Azure AD v2 issues them, checked against a JWKS (the `jwt`
//! feature): signature by `jsonwebtoken`, then issuer, audience, `exp` and `nbf`
//! against the `now` the adapter passes in (with a small skew), and the claims
//! mapped to a [`Principal`]: the user is `oid` (else `sub`), delegated
//! permissions come from `scp`, application permissions from `roles` (a token
//! with `roles` and no `scp` is an application's).
//!
//! Algorithms are allowed by name; the default is RS256, ES256 and EdDSA. HMAC
//! algorithms are never allowed (a public key must never serve as an HMAC
//! secret), and `none` is not an algorithm `jsonwebtoken` reads. A key's `kid`
//! picks the key; a token naming a `kid` the set does not hold is
//! [`JwtError::UnknownKey`], on which an adapter may re-read its JWKS once.
//!
//! The crypto backend is chosen by whoever builds this crate: the server enables
//! `jsonwebtoken/aws_lc_rs`, the fuzz targets `jsonwebtoken/rust_crypto`.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;

use super::{Grant, Principal};

/// What a token must say and how it may be signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtPolicy {
    /// Accepted `iss` values (at least one).
    pub issuers: Vec<String>,
    /// Accepted `aud` values (at least one).
    pub audiences: Vec<String>,
    /// How far `exp` and `nbf` may be off the server's clock.
    pub skew: Duration,
    /// Accepted `alg` values.
    pub algorithms: Vec<Algorithm>,
}

/// Algorithms allowed unless configured otherwise.
pub const DEFAULT_ALGORITHMS: &[Algorithm] =
    &[Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// Skew allowed unless configured otherwise.
pub const DEFAULT_SKEW: Duration = Duration::from_secs(60);

impl JwtPolicy {
    /// A policy for one issuer and one audience, with the default skew and
    /// algorithms.
    #[must_use]
    pub fn new(issuer: &str, audience: &str) -> Self {
        Self {
            issuers: vec![issuer.to_owned()],
            audiences: vec![audience.to_owned()],
            skew: DEFAULT_SKEW,
            algorithms: DEFAULT_ALGORITHMS.to_vec(),
        }
    }

    /// Reads an algorithm's name (`RS256`, `ES256`, `EdDSA`, …).
    ///
    /// # Errors
    /// A sentence for an unknown name, `none`, or an HMAC algorithm.
    pub fn algorithm(name: &str) -> Result<Algorithm, String> {
        if name.eq_ignore_ascii_case("none") {
            return Err("`none` is not a signature: unsigned tokens are never accepted".into());
        }
        let alg: Algorithm = name
            .parse()
            .map_err(|_| format!("`{name}` is not a JWT signature algorithm"))?;
        if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            return Err(format!(
                "`{name}` is an HMAC algorithm: tokens are checked against public keys, never shared secrets"
            ));
        }
        Ok(alg)
    }
}

/// Why a JWT was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// Not three base64url parts, bad JSON, or an unknown `alg` (`none` included).
    #[error("the access token is not a well-formed JWT")]
    Malformed,
    /// Signed with an algorithm the server does not allow.
    #[error("the access token's signing algorithm is not allowed")]
    Algorithm,
    /// Names a key (`kid`) the key set does not hold.
    #[error("the access token was signed with an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the access token's signature is not valid")]
    Signature,
    /// Past `exp`.
    #[error("the access token has expired")]
    Expired,
    /// Before `nbf`.
    #[error("the access token is not valid yet")]
    NotYetValid,
    /// Another issuer's.
    #[error("the access token's issuer is not accepted")]
    Issuer,
    /// Meant for another audience.
    #[error("the access token's audience is not this server")]
    Audience,
    /// `exp`, or both `oid` and `sub`, missing or not of their type.
    #[error("the access token lacks a required claim")]
    Claims,
}

impl JwtError {
    /// A short label for metrics.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Algorithm => "algorithm",
            Self::UnknownKey => "unknown_key",
            Self::Signature => "signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Issuer => "issuer",
            Self::Audience => "audience",
            Self::Claims => "claims",
        }
    }

    /// The sentence of the 401's message.
    #[must_use]
    pub fn sentence(&self) -> &'static str {
        match self {
            Self::Malformed => "the access token is not a well-formed JWT",
            Self::Algorithm => "the access token's signing algorithm is not allowed",
            Self::UnknownKey => "the access token was signed with an unknown key",
            Self::Signature => "the access token's signature is not valid",
            Self::Expired => "the access token has expired",
            Self::NotYetValid => "the access token is not valid yet",
            Self::Issuer => "the access token's issuer is not accepted",
            Self::Audience => "the access token's audience is not this server",
            Self::Claims => "the access token lacks a required claim",
        }
    }
}

/// The public keys tokens are checked against: a JWKS document's usable keys.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: Vec<(Option<String>, DecodingKey)>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self
            .keys
            .iter()
            .map(|(kid, _)| kid.as_deref().unwrap_or("-"))
            .collect();
        write!(f, "KeySet({kids:?})")
    }
}

impl KeySet {
    /// Reads a JWKS document (`{"keys": [...]}`). Keys it cannot use (symmetric
    /// `oct` keys, unknown types, encryption keys) are left out and named in the
    /// second value.
    ///
    /// # Errors
    /// A sentence when the text is not a JWKS or holds no usable key.
    pub fn parse(jwks: &str) -> Result<(Self, Vec<String>), String> {
        #[derive(Deserialize)]
        struct Doc {
            keys: Vec<serde_json::Value>,
        }
        let doc: Doc = serde_json::from_str(jwks)
            .map_err(|e| format!("the JWKS is not a JSON key set (`{{\"keys\": [...]}}`): {e}"))?;
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (n, raw) in doc.keys.into_iter().enumerate() {
            let name = raw
                .get("kid")
                .and_then(serde_json::Value::as_str)
                .map_or_else(|| format!("key {}", n + 1), |kid| format!("key `{kid}`"));
            if raw.get("kty").and_then(serde_json::Value::as_str) == Some("oct") {
                skipped.push(format!("{name}: a symmetric key, never used"));
                continue;
            }
            if raw.get("use").and_then(serde_json::Value::as_str) == Some("enc") {
                skipped.push(format!("{name}: an encryption key"));
                continue;
            }
            let decoded = serde_json::from_value::<Jwk>(raw)
                .map_err(|e| e.to_string())
                .and_then(|jwk| {
                    let key = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
                    Ok((jwk.common.key_id, key))
                });
            match decoded {
                Ok(key) => keys.push(key),
                Err(e) => skipped.push(format!("{name}: {e}")),
            }
        }
        if keys.is_empty() {
            return Err(format!(
                "the JWKS holds no usable public key{}",
                if skipped.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", skipped.join("; "))
                }
            ));
        }
        Ok((Self { keys }, skipped))
    }

    /// How many keys it holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether it holds none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// A development signing key (Ed25519) that mints tokens a server in `--auth
/// jwt` mode accepts: what `upsession token jwt` uses, for teams testing their
/// JWT set-up offline. The seed comes from the caller (the core draws no random
/// numbers).
#[derive(Clone)]
pub struct DevSigner {
    key: jsonwebtoken::EncodingKey,
    kid: String,
}

impl std::fmt::Debug for DevSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DevSigner({})", self.kid)
    }
}

/// PKCS#8 v1 of an Ed25519 private key, up to the 32 bytes of its seed (RFC 8410).
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

impl DevSigner {
    /// The Ed25519 key of `seed`, published under the key id `kid`.
    #[must_use]
    pub fn from_seed(seed: [u8; 32], kid: &str) -> Self {
        let mut der = ED25519_PKCS8_PREFIX.to_vec();
        der.extend_from_slice(&seed);
        Self {
            key: jsonwebtoken::EncodingKey::from_ed_der(&der),
            kid: kid.to_owned(),
        }
    }

    /// The JWKS document (`{"keys": [...]}`) holding this key's public half.
    ///
    /// # Errors
    /// When the crypto backend cannot derive the public key.
    pub fn jwks(&self) -> Result<String, String> {
        let mut jwk =
            Jwk::from_encoding_key(&self.key, Algorithm::EdDSA).map_err(|e| e.to_string())?;
        jwk.common.key_id = Some(self.kid.clone());
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        Ok(serde_json::json!({ "keys": [jwk] }).to_string())
    }

    /// `claims` signed with EdDSA, naming this key.
    ///
    /// # Errors
    /// When signing fails.
    pub fn mint(&self, claims: &serde_json::Value) -> Result<String, String> {
        let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).map_err(|e| e.to_string())
    }
}

/// `scp`: space-separated, as Entra ID writes it, or an array, as some issuers do.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scopes {
    Spaced(String),
    Listed(Vec<String>),
}

impl Scopes {
    fn into_set(self) -> BTreeSet<String> {
        match self {
            Self::Spaced(s) => s.split_ascii_whitespace().map(str::to_owned).collect(),
            Self::Listed(v) => v.into_iter().filter(|s| !s.is_empty()).collect(),
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    oid: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    scp: Option<Scopes>,
    #[serde(default)]
    idtyp: Option<String>,
    #[serde(default)]
    roles: Option<Vec<String>>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    preferred_username: Option<String>,
    #[serde(default)]
    upn: Option<String>,
}

fn from_kind(kind: &ErrorKind) -> JwtError {
    match kind {
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => JwtError::Algorithm,
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidIssuer => JwtError::Issuer,
        ErrorKind::InvalidAudience => JwtError::Audience,
        // The header was read before: JSON that does not fit is the claims'.
        ErrorKind::MissingRequiredClaim(_)
        | ErrorKind::InvalidClaimFormat(_)
        | ErrorKind::Json(_) => JwtError::Claims,
        // A key of another family than the algorithm (an EC key for RS256) fails
        // as a wrong signature does.
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => JwtError::Signature,
        _ => JwtError::Malformed,
    }
}

/// Checks `token` (the bearer token's text) against `keys` and `policy` at `now`.
///
/// # Errors
/// Why it was refused; [`JwtError::UnknownKey`] when its `kid` is not in `keys`.
pub fn verify(
    token: &str,
    keys: &KeySet,
    policy: &JwtPolicy,
    now: SystemTime,
) -> Result<Principal, JwtError> {
    if token.split('.').count() != 3 {
        return Err(JwtError::Malformed);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
        ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => JwtError::Algorithm,
        _ if names_an_algorithm(token) => JwtError::Algorithm,
        _ => JwtError::Malformed,
    })?;
    if !policy.algorithms.contains(&header.alg)
        || matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        )
    {
        return Err(JwtError::Algorithm);
    }
    let mut validation = Validation::new(header.alg);
    validation.algorithms = vec![header.alg];
    // Times are checked below against the `now` passed in, not the system clock.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    // All three: without `iss` or `aud` in the list, a token lacking them would
    // pass the issuer and audience checks (jsonwebtoken checks only what is there).
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation.set_issuer(&policy.issuers);
    validation.set_audience(&policy.audiences);
    let family = header.alg.family();
    let candidates: Vec<&DecodingKey> = match &header.kid {
        Some(kid) => keys
            .keys
            .iter()
            .filter(|(k, _)| k.as_deref() == Some(kid.as_str()))
            .map(|(_, key)| key)
            .collect(),
        None => keys
            .keys
            .iter()
            .filter(|(_, key)| key.family() == family)
            .map(|(_, key)| key)
            .collect(),
    };
    if candidates.is_empty() {
        return Err(if header.kid.is_some() {
            JwtError::UnknownKey
        } else {
            JwtError::Signature
        });
    }
    let mut last = JwtError::Signature;
    let mut claims = None;
    for key in candidates {
        if key.family() != family {
            last = JwtError::Algorithm;
            continue;
        }
        match jsonwebtoken::decode::<Claims>(token, key, &validation) {
            Ok(data) => {
                claims = Some(data.claims);
                break;
            }
            Err(e) => last = from_kind(e.kind()),
        }
    }
    let claims = claims.ok_or(last)?;
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let skew = policy.skew.as_secs();
    let exp = claims.exp.ok_or(JwtError::Claims)?;
    if exp.saturating_add(skew) <= now {
        return Err(JwtError::Expired);
    }
    if claims.nbf.is_some_and(|nbf| nbf > now.saturating_add(skew)) {
        return Err(JwtError::NotYetValid);
    }
    principal(claims)
}

/// Whether a token `jsonwebtoken` could not read has a JSON header with an
/// `alg` (then the algorithm, `none` say, is what it does not know).
fn names_an_algorithm(token: &str) -> bool {
    use base64::Engine as _;
    token
        .split('.')
        .next()
        .and_then(|head| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(head)
                .ok()
        })
        .and_then(|json| serde_json::from_slice::<serde_json::Value>(&json).ok())
        .is_some_and(|header| header.get("alg").is_some_and(serde_json::Value::is_string))
}

fn principal(claims: Claims) -> Result<Principal, JwtError> {
    let upn = claims.upn.or(claims.preferred_username);
    // An application's own token, as Microsoft documents telling one apart: no
    // `scp`, and `idtyp: app` or, where that optional claim is off, no sign-in
    // name and `oid` equal to `sub` (or no `oid` at all, as issuers other than
    // Entra ID write an application's token). A user's token with app roles but no
    // `scp` (it has a sign-in name, or an `oid` other than its pairwise `sub`)
    // stays a user's, with no delegated permission.
    let application = claims.scp.is_none()
        && (claims.idtyp.as_deref() == Some("app")
            || (claims.idtyp.is_none()
                && upn.is_none()
                && (claims.oid.is_none() || claims.oid == claims.sub)));
    let id = claims
        .oid
        .or(claims.sub)
        .filter(|id| !id.is_empty())
        .ok_or(JwtError::Claims)?;
    let grant = if application {
        Grant::Application(claims.roles.unwrap_or_default().into_iter().collect())
    } else {
        Grant::Delegated(claims.scp.map(Scopes::into_set).unwrap_or_default())
    };
    Ok(Principal {
        id,
        upn,
        name: claims.name,
        grant,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    // A P-256 key pair made for these tests only.
    const EC_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgaig87cNUL66WEtaT
HrjNdHScps7T2Hjf7S+FBXh7WMuhRANCAASO0PMAwm6ZVQSVmPr+TyWpiJ6e3S7n
z4yRarbuF5ymM+8xXz8pwdF7pDfIBXaM6D7BBrySE4C3rW13HGQ+tJg5
-----END PRIVATE KEY-----";

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_900_000_000)
    }

    fn keys() -> (KeySet, EncodingKey) {
        let enc = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap();
        let mut jwk = Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some("k1".into());
        let jwks = json!({ "keys": [jwk, {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}] });
        let (set, skipped) = KeySet::parse(&jwks.to_string()).unwrap();
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        (set, enc)
    }

    fn token(enc: &EncodingKey, kid: Option<&str>, claims: &serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = kid.map(str::to_owned);
        encode(&header, claims, enc).unwrap()
    }

    fn good() -> serde_json::Value {
        json!({
            "iss": "https://login.example/tenant/v2.0",
            "aud": "api://upsession",
            "exp": 1_900_000_600u64,
            "nbf": 1_899_999_000u64,
            "oid": "00000000-0000-0000-0000-00000000a11c",
            "sub": "pairwise",
            "preferred_username": "alice@contoso.com",
            "name": "Alice",
            "scp": "Mail.ReadWrite User.Read",
        })
    }

    fn policy() -> JwtPolicy {
        JwtPolicy::new("https://login.example/tenant/v2.0", "api://upsession")
    }

    #[test]
    fn a_good_token_names_its_user_and_scopes() {
        let (set, enc) = keys();
        let p = verify(&token(&enc, Some("k1"), &good()), &set, &policy(), now()).unwrap();
        assert_eq!(p.id, "00000000-0000-0000-0000-00000000a11c");
        assert_eq!(p.upn.as_deref(), Some("alice@contoso.com"));
        let Grant::Delegated(scopes) = p.grant else {
            panic!()
        };
        assert!(scopes.contains("Mail.ReadWrite"));
        // No kid: the keys of the algorithm's family are tried.
        assert!(verify(&token(&enc, None, &good()), &set, &policy(), now()).is_ok());
    }

    #[test]
    fn only_an_applications_own_token_is_an_application() {
        let (set, enc) = keys();
        let grant = |edit: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
            let mut claims = good();
            let map = claims.as_object_mut().unwrap();
            map.remove("scp");
            map.insert("roles".into(), json!(["Mail.ReadWrite"]));
            edit(map);
            verify(&token(&enc, Some("k1"), &claims), &set, &policy(), now())
                .unwrap()
                .grant
        };
        // idtyp: app, or oid = sub and no sign-in name: an application.
        assert!(matches!(
            grant(&|m| {
                m.insert("idtyp".into(), json!("app"));
            }),
            Grant::Application(_)
        ));
        assert!(matches!(
            grant(&|m| {
                m.remove("preferred_username");
                m.insert("sub".into(), m["oid"].clone());
            }),
            Grant::Application(_)
        ));
        // No oid, no sign-in name (an application's token from another issuer).
        assert!(matches!(
            grant(&|m| {
                m.remove("preferred_username");
                m.remove("oid");
            }),
            Grant::Application(_)
        ));
        // A user with app roles and no scp: a user without delegated permissions.
        assert_eq!(grant(&|_| {}), Grant::Delegated(BTreeSet::new()));
        assert_eq!(
            grant(&|m| {
                m.insert("idtyp".into(), json!("user"));
            }),
            Grant::Delegated(BTreeSet::new())
        );
        // scp as an array is read too.
        let mut claims = good();
        claims["scp"] = json!(["Mail.ReadWrite", "User.Read"]);
        let p = verify(&token(&enc, Some("k1"), &claims), &set, &policy(), now()).unwrap();
        let Grant::Delegated(scopes) = p.grant else {
            panic!()
        };
        assert!(scopes.contains("Mail.ReadWrite") && scopes.contains("User.Read"));
    }

    #[test]
    fn every_bad_token_is_refused_for_its_reason() {
        let (set, enc) = keys();
        let with = |key: &str, value: serde_json::Value| {
            let mut c = good();
            c[key] = value;
            token(&enc, Some("k1"), &c)
        };
        let without = |key: &str| {
            let mut c = good();
            c.as_object_mut().unwrap().remove(key);
            token(&enc, Some("k1"), &c)
        };
        let good_token = token(&enc, Some("k1"), &good());
        let (head, rest) = good_token.split_once('.').unwrap();
        let (body, sig) = rest.split_once('.').unwrap();
        let tampered_sig = format!(
            "{head}.{body}.{}{}",
            if sig.starts_with('A') { 'B' } else { 'A' },
            &sig[1..]
        );
        let other_body = token(&enc, Some("k1"), &{
            let mut c = good();
            c["oid"] = json!("mallory");
            c
        });
        let swapped_body = format!("{head}.{}.{sig}", other_body.split('.').nth(1).unwrap());
        let none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"; // {"alg":"none","typ":"JWT"}
        let hs_header = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"; // {"alg":"HS256","typ":"JWT"}
        let cases = [
            (with("exp", json!(1_899_999_900u64)), JwtError::Expired),
            (with("nbf", json!(1_900_000_100u64)), JwtError::NotYetValid),
            (with("iss", json!("https://evil.example")), JwtError::Issuer),
            (with("aud", json!("api://other")), JwtError::Audience),
            (with("exp", json!("soon")), JwtError::Claims),
            (without("iss"), JwtError::Claims),
            (without("aud"), JwtError::Claims),
            (
                token(&enc, Some("k1"), &{
                    let mut c = good();
                    c.as_object_mut().unwrap().remove("exp");
                    c
                }),
                JwtError::Claims,
            ),
            (
                token(&enc, Some("k1"), &{
                    let mut c = good();
                    c.as_object_mut().unwrap().remove("oid");
                    c.as_object_mut().unwrap().remove("sub");
                    c
                }),
                JwtError::Claims,
            ),
            (token(&enc, Some("k9"), &good()), JwtError::UnknownKey),
            (tampered_sig, JwtError::Signature),
            (swapped_body, JwtError::Signature),
            (format!("{none_header}.{body}."), JwtError::Algorithm),
            (format!("{hs_header}.{body}.{sig}"), JwtError::Algorithm),
            ("not a jwt".into(), JwtError::Malformed),
            (format!("{head}.{body}"), JwtError::Malformed),
            (String::new(), JwtError::Malformed),
        ];
        for (n, (tok, why)) in cases.into_iter().enumerate() {
            assert_eq!(
                verify(&tok, &set, &policy(), now()),
                Err(why),
                "case {n}: {tok}"
            );
        }
        // Within the skew, expiry and nbf are forgiven.
        let just_expired = with("exp", json!(1_899_999_990u64));
        assert!(verify(&just_expired, &set, &policy(), now()).is_ok());
        // An algorithm the policy does not list.
        let mut strict = policy();
        strict.algorithms = vec![Algorithm::RS256];
        assert_eq!(
            verify(&token(&enc, Some("k1"), &good()), &set, &strict, now()),
            Err(JwtError::Algorithm)
        );
    }

    #[test]
    fn algorithms_are_allowed_by_name_never_none_or_hmac() {
        assert_eq!(JwtPolicy::algorithm("RS256").unwrap(), Algorithm::RS256);
        assert_eq!(JwtPolicy::algorithm("EdDSA").unwrap(), Algorithm::EdDSA);
        for bad in ["none", "NONE", "HS256", "HS512", "RS999", ""] {
            assert!(JwtPolicy::algorithm(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_dev_signer_mints_what_its_jwks_verifies() {
        let signer = DevSigner::from_seed([7; 32], "dev");
        let (set, skipped) = KeySet::parse(&signer.jwks().unwrap()).unwrap();
        assert!(skipped.is_empty());
        let token = signer.mint(&good()).unwrap();
        let p = verify(&token, &set, &policy(), now()).unwrap();
        assert_eq!(p.id, "00000000-0000-0000-0000-00000000a11c");
        // Another seed's token does not pass.
        let other = DevSigner::from_seed([8; 32], "dev").mint(&good()).unwrap();
        assert_eq!(
            verify(&other, &set, &policy(), now()),
            Err(JwtError::Signature)
        );
    }

    #[test]
    fn key_sets_without_a_usable_key_are_refused() {
        assert!(KeySet::parse("{}").is_err());
        assert!(KeySet::parse(r#"{"keys": []}"#).is_err());
        let err = KeySet::parse(r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#).unwrap_err();
        assert!(err.contains("symmetric"), "{err}");
    }
}
