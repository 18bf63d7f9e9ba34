//! A token issuer for tests of `--auth jwt`: an ES256 key made for the run, its
//! JWKS written to a file the server reads, and tokens minted as Azure AD v2
//! issues them (`oid`, `scp` or `roles`, `iss`, `aud`, `exp`, `nbf`), or spoiled
//! in one way each.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// The issuer tokens name unless a test says otherwise.
pub const ISSUER: &str = "https://login.upsession.test/tenant/v2.0";
/// The audience tokens name unless a test says otherwise.
pub const AUDIENCE: &str = "api://upsession";
/// The key id in the JWKS and the tokens' headers.
pub const KID: &str = "test-key-1";

/// An ES256 key pair and its JWKS file.
pub struct Issuer {
    key: EncodingKey,
    kid: String,
    jwks: PathBuf,
    public: Jwk,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Issuer({})", self.jwks.display())
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

impl Issuer {
    /// A new key named [`KID`], its JWKS written to `dir/jwks.json`.
    ///
    /// # Panics
    /// When the key cannot be made or the file written.
    pub fn new(dir: &Path) -> Self {
        Self::with_kid(dir, KID)
    }

    /// A new key named `kid`, its JWKS written to `dir/jwks.json`.
    ///
    /// # Panics
    /// When the key cannot be made or the file written.
    pub fn with_kid(dir: &Path, kid: &str) -> Self {
        let pair =
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a P-256 key");
        let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("the key reads");
        let mut public = Jwk::from_encoding_key(&key, Algorithm::ES256).expect("a public JWK");
        public.common.key_id = Some(kid.into());
        let jwks = dir.join("jwks.json");
        let issuer = Self {
            key,
            kid: kid.into(),
            jwks,
            public,
        };
        issuer.write_jwks(&[]);
        issuer
    }

    /// The JWKS file.
    pub fn jwks(&self) -> &Path {
        &self.jwks
    }

    /// The public key as a JWK.
    pub fn public_jwk(&self) -> &Jwk {
        &self.public
    }

    /// Writes the JWKS: this issuer's key and `more`.
    ///
    /// # Panics
    /// When the file cannot be written.
    pub fn write_jwks(&self, more: &[Value]) {
        let mut keys = vec![serde_json::to_value(&self.public).expect("a JWK is JSON")];
        keys.extend(more.iter().cloned());
        std::fs::write(&self.jwks, json!({ "keys": keys }).to_string())
            .expect("the JWKS is written");
    }

    /// Claims of a delegated token for user `oid` with `scopes`, valid for an hour.
    pub fn user_claims(oid: &str, upn: &str, scopes: &str) -> Value {
        let now = now();
        json!({
            "iss": ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now - 10, "exp": now + 3600,
            "oid": oid, "sub": format!("pairwise-{oid}"), "preferred_username": upn,
            "name": oid, "scp": scopes, "ver": "2.0",
        })
    }

    /// Claims of an application token with `roles`, valid for an hour.
    pub fn app_claims(app: &str, roles: &[&str]) -> Value {
        let now = now();
        json!({
            "iss": ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now - 10, "exp": now + 3600,
            "oid": app, "sub": app, "roles": roles, "idtyp": "app", "ver": "2.0",
        })
    }

    /// `claims` signed with this issuer's key, naming its key id.
    ///
    /// # Panics
    /// When signing fails.
    pub fn mint(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).expect("a signed token")
    }

    /// `claims` signed with this key but naming another key id.
    ///
    /// # Panics
    /// When signing fails.
    pub fn mint_with_kid(&self, claims: &Value, kid: &str) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, &self.key).expect("a signed token")
    }

    /// `claims` with `"alg": "none"` and no signature.
    pub fn unsigned(claims: &Value) -> String {
        use base64::Engine as _;
        let b64 = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(claims)
        )
    }

    /// `claims` signed with HS256, the public JWK's JSON as the secret: the
    /// classic key-confusion forgery.
    ///
    /// # Panics
    /// When signing fails.
    pub fn hmac_with_public_key(&self, claims: &Value) -> String {
        let secret = serde_json::to_vec(&self.public).expect("a JWK is JSON");
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.kid.clone());
        let key = EncodingKey::from_secret(&secret).expect("an HMAC key");
        jsonwebtoken::encode(&header, claims, &key).expect("a signed token")
    }

    /// A token for `claims` whose payload was changed after signing.
    pub fn tampered(&self, claims: &Value) -> String {
        use base64::Engine as _;
        let good = self.mint(claims);
        let mut parts: Vec<&str> = good.split('.').collect();
        let mut changed = claims.clone();
        changed["oid"] = json!("mallory");
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(changed.to_string());
        parts[1] = &body;
        parts.join(".")
    }
}
