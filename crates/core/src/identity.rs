//! Who is calling, and which mailbox or drive a request may touch: the pure half
//! of authentication and authorization. Adapters find the [`Principal`] (a
//! configured token, a line of a tokens file, a verified JWT: see [`jwt`] with the
//! `jwt` feature) and ask [`Principal::mailbox`] what a route's `/me` or
//! `/users/{id}` names; the answer is the mailbox key records are stored under,
//! or Graph's refusal.
//!
//! Graph's rules, as modelled here:
//!
//! - `/me` is the caller; an application token (no signed-in user) gets 400, as
//!   Graph answers "/me request is only valid with delegated authentication flow".
//! - `/users/{id or userPrincipalName}` is allowed for the caller themself, or for
//!   an application token holding the application permission (`roles`); anyone
//!   else gets 403 `ErrorAccessDenied`.
//! - A delegated token needs the delegated permission (`scp`): `Mail.ReadWrite` to
//!   write attachments (`Mail.Read` to read them), `Files.ReadWrite` for drives;
//!   without it, 403 whatever the mailbox.
//! - The single-token mode (`--auth token`, the two-command start) is one user:
//!   every `/users/{id}` names that user's one mailbox, as before identities.
//!
//! ```
//! use upsession_core::identity::{Access, Principal, Resource};
//! use upsession_core::route::User;
//!
//! let alice = Principal::delegated("alice", ["Mail.ReadWrite"]).with_upn("alice@contoso.com");
//! let mail = (Resource::Mail, Access::Write);
//! assert_eq!(alice.mailbox(&User::Me, mail).unwrap().as_str(), "alice");
//! assert_eq!(alice.mailbox(&User::Id("Alice@Contoso.com".into()), mail).unwrap().as_str(), "alice");
//! assert!(alice.mailbox(&User::Id("bob".into()), mail).is_err()); // 403
//!
//! let daemon = Principal::application("backup-app", ["Mail.ReadWrite"]);
//! assert_eq!(daemon.mailbox(&User::Id("bob".into()), mail).unwrap().as_str(), "bob");
//! assert!(daemon.mailbox(&User::Me, mail).is_err()); // 400: no signed-in user
//! ```

use core::net::IpAddr;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::error::RequestError;
use crate::route::User;

#[cfg(feature = "jwt")]
pub mod jwt;

/// The single-token mode's one user, as logs name it.
pub const SOLE_USER: &str = "me";

/// A mailbox or drive owner as records store it: a user id, lower-cased (Graph's
/// ids and userPrincipalNames compare without case).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Mailbox(String);

impl Mailbox {
    /// The mailbox of the user `id` (lower-cased).
    #[must_use]
    pub fn of(id: &str) -> Self {
        Self(id.to_lowercase())
    }

    /// The single-token mode's one mailbox, also that of records written before
    /// identities existed. Its key is empty, which no user id can be (tokens
    /// files, JWTs and `/users/{id}` never name an empty user), so no user of a
    /// tokens file or a JWT reaches it.
    #[must_use]
    pub fn sole() -> Self {
        Self(String::new())
    }

    /// The key.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Mailbox {
    fn default() -> Self {
        Self::sole()
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str(SOLE_USER)
        } else {
            f.write_str(&self.0)
        }
    }
}

/// What a route touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// Messages and their attachments.
    Mail,
    /// Events and their attachments.
    Calendar,
    /// Drive items.
    Files,
}

/// Reading or writing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `GET`.
    Read,
    /// Anything that changes something.
    Write,
}

/// How the caller's rights were granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grant {
    /// The single-token mode's one user: every right, every `/users/{id}` is them.
    Sole,
    /// A signed-in user's token, with its delegated permissions (`scp`).
    Delegated(BTreeSet<String>),
    /// An application's own token, with its application permissions (`roles`).
    Application(BTreeSet<String>),
}

/// Who is calling: the user a token speaks for and what it may do.
#[derive(Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user id (`oid`, else `sub`, of a JWT; `user` of a tokens file); for
    /// an application token, the application's own id.
    pub id: String,
    /// The user's sign-in name (`upn` / `preferred_username`), matched by
    /// `/users/{userPrincipalName}`.
    pub upn: Option<String>,
    /// A display name, for logs.
    pub name: Option<String>,
    /// The rights.
    pub grant: Grant,
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.grant {
            Grant::Sole => "sole",
            Grant::Delegated(_) => "delegated",
            Grant::Application(_) => "application",
        };
        write!(f, "Principal({kind} {})", self.id)
    }
}

/// Permissions that allow `access` to `resource`, delegated or application.
fn permissions(resource: Resource, access: Access, application: bool) -> &'static [&'static str] {
    // Events are allowed with mail permissions too: Graph asks Calendars.*, the
    // issue's tokens carry Mail.* (docs/PROTOCOL.md says so).
    match (resource, access, application) {
        (Resource::Mail, Access::Write, _) => &["Mail.ReadWrite"],
        (Resource::Mail, Access::Read, _) => &["Mail.ReadWrite", "Mail.Read"],
        (Resource::Calendar, Access::Write, _) => &["Calendars.ReadWrite", "Mail.ReadWrite"],
        (Resource::Calendar, Access::Read, _) => &[
            "Calendars.ReadWrite",
            "Calendars.Read",
            "Mail.ReadWrite",
            "Mail.Read",
        ],
        (Resource::Files, Access::Write, false) => &["Files.ReadWrite", "Files.ReadWrite.All"],
        (Resource::Files, Access::Read, false) => &[
            "Files.ReadWrite",
            "Files.ReadWrite.All",
            "Files.Read",
            "Files.Read.All",
        ],
        (Resource::Files, Access::Write, true) => &["Files.ReadWrite.All"],
        (Resource::Files, Access::Read, true) => &["Files.ReadWrite.All", "Files.Read.All"],
    }
}

fn holds(granted: &BTreeSet<String>, needed: &[&str]) -> bool {
    granted
        .iter()
        .any(|g| needed.iter().any(|n| g.eq_ignore_ascii_case(n)))
}

impl Principal {
    /// The single-token mode's one user.
    #[must_use]
    pub fn sole() -> Self {
        Self {
            id: SOLE_USER.to_owned(),
            upn: None,
            name: None,
            grant: Grant::Sole,
        }
    }

    /// A signed-in user `id` with delegated `scopes`.
    pub fn delegated<S: Into<String>>(id: &str, scopes: impl IntoIterator<Item = S>) -> Self {
        Self {
            id: id.to_owned(),
            upn: None,
            name: None,
            grant: Grant::Delegated(scopes.into_iter().map(Into::into).collect()),
        }
    }

    /// An application `id` with application permissions `roles`.
    pub fn application<S: Into<String>>(id: &str, roles: impl IntoIterator<Item = S>) -> Self {
        Self {
            id: id.to_owned(),
            upn: None,
            name: None,
            grant: Grant::Application(roles.into_iter().map(Into::into).collect()),
        }
    }

    /// With a sign-in name.
    #[must_use]
    pub fn with_upn(mut self, upn: &str) -> Self {
        self.upn = Some(upn.to_owned());
        self
    }

    /// With a display name.
    #[must_use]
    pub fn with_name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// Whether `/users/{user}` names this principal's own user.
    fn is_self(&self, user: &str) -> bool {
        user.eq_ignore_ascii_case(&self.id)
            || self
                .upn
                .as_deref()
                .is_some_and(|upn| user.eq_ignore_ascii_case(upn))
    }

    /// The mailbox (or drive) `user` names for this caller, if it may have
    /// `access` to `resource` there.
    ///
    /// # Errors
    /// [`RequestError::AccessDenied`] (403) without the permission or for another
    /// user's mailbox; [`RequestError::MeWithoutUser`] (400) for `/me` with an
    /// application token.
    pub fn mailbox(
        &self,
        user: &User,
        (resource, access): (Resource, Access),
    ) -> Result<Mailbox, RequestError> {
        match &self.grant {
            Grant::Sole => Ok(Mailbox::sole()),
            Grant::Delegated(scopes) => {
                if !holds(scopes, permissions(resource, access, false)) {
                    return Err(RequestError::AccessDenied);
                }
                match user {
                    User::Me => Ok(Mailbox::of(&self.id)),
                    User::Id(id) if !id.is_empty() && self.is_self(id) => Ok(Mailbox::of(&self.id)),
                    User::Id(_) => Err(RequestError::AccessDenied),
                }
            }
            Grant::Application(roles) => {
                if !holds(roles, permissions(resource, access, true)) {
                    return Err(RequestError::AccessDenied);
                }
                match user {
                    User::Me => Err(RequestError::MeWithoutUser),
                    // No user has an empty id (that key is the sole user's).
                    User::Id(id) if id.is_empty() => Err(RequestError::AccessDenied),
                    User::Id(id) => Ok(Mailbox::of(id)),
                }
            }
        }
    }
}

/// Reads the token out of an `Authorization` header value (`Bearer TOKEN`, the
/// scheme in any case, as RFC 9110 has it).
///
/// # Errors
/// A sentence for the 401's message.
pub fn bearer(authorization: Option<&[u8]>) -> Result<&[u8], &'static str> {
    let value = authorization
        .ok_or("the Authorization header is missing; send `Authorization: Bearer TOKEN`")?;
    let (scheme, rest) = value
        .iter()
        .position(|&b| b == b' ')
        .map(|at| value.split_at(at))
        .ok_or("the Authorization header is not a bearer token")?;
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err("the Authorization header is not a bearer token");
    }
    let token = rest.trim_ascii();
    if token.is_empty() {
        return Err("the Authorization header's bearer token is empty");
    }
    if !token.iter().all(u8::is_ascii_graphic) {
        return Err("the bearer token has characters a token cannot have");
    }
    Ok(token)
}

/// The hex SHA-256 of a token: what a tokens file stores instead of the token.
#[must_use]
pub fn token_digest(token: &[u8]) -> String {
    Sha256::digest(token)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// One entry of a tokens file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// The token's SHA-256, hex (what `upsession token add` writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The token itself (for hand-written files; prefer `sha256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The user id (`/users/{id}`), or the application's id with `app = true`.
    pub user: String,
    /// The user's sign-in name (`/users/{upn}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upn: Option<String>,
    /// A display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Delegated permissions (`scp`), or application permissions with `app = true`.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// An application token: `scopes` are application permissions (`roles`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub app: bool,
}

impl TokenEntry {
    /// The principal this entry's token speaks for.
    #[must_use]
    pub fn principal(&self) -> Principal {
        let mut p = if self.app {
            Principal::application(&self.user, self.scopes.iter().cloned())
        } else {
            Principal::delegated(&self.user, self.scopes.iter().cloned())
        };
        p.upn.clone_from(&self.upn);
        p.name.clone_from(&self.name);
        p
    }

    /// This entry as one `[[token]]` table of a tokens file.
    ///
    /// # Panics
    /// Never: the entry is plain strings.
    #[must_use]
    pub fn to_toml(&self) -> String {
        #[derive(Serialize)]
        struct One<'a> {
            token: [&'a TokenEntry; 1],
        }
        toml::to_string(&One { token: [self] }).expect("a token entry is plain TOML")
    }
}

/// Delegated permissions `upsession token add` grants unless told otherwise.
pub const DEFAULT_SCOPES: &[&str] = &["Mail.ReadWrite", "Calendars.ReadWrite", "Files.ReadWrite"];

/// A tokens file: `[[token]]` tables mapping tokens (by SHA-256) to users.
///
/// ```
/// use upsession_core::identity::TokensFile;
///
/// let file = TokensFile::parse(r#"
/// [[token]]
/// token = "alice-secret"
/// user = "alice"
/// upn = "alice@contoso.com"
/// scopes = ["Mail.ReadWrite"]
/// "#).unwrap();
/// let alice = file.principal(b"alice-secret").unwrap();
/// assert_eq!(alice.id, "alice");
/// assert!(file.principal(b"guess").is_none());
/// ```
#[derive(Clone, Default)]
pub struct TokensFile {
    /// (SHA-256 of the token, entry).
    entries: Vec<([u8; 32], TokenEntry)>,
}

impl fmt::Debug for TokensFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokensFile({} tokens)", self.entries.len())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

impl TokensFile {
    /// Reads a tokens file's text.
    ///
    /// # Errors
    /// A sentence naming what is wrong (TOML syntax, an entry without a token,
    /// a bad digest, a token twice).
    pub fn parse(text: &str) -> Result<Self, String> {
        let shape: FileShape = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        let mut entries = Vec::with_capacity(shape.token.len());
        for (n, entry) in shape.token.into_iter().enumerate() {
            let which = format!("token {} (user `{}`)", n + 1, entry.user);
            if entry.user.is_empty() {
                return Err(format!("token {} has an empty `user`", n + 1));
            }
            let digest = match (&entry.sha256, &entry.token) {
                (Some(hex), None) => parse_digest(hex)
                    .ok_or_else(|| format!("{which}: `sha256` is not 64 hex digits"))?,
                (None, Some(token)) if !token.is_empty() => Sha256::digest(token).into(),
                (None, Some(_)) => return Err(format!("{which}: `token` is empty")),
                (Some(_), Some(_)) => {
                    return Err(format!("{which}: give `sha256` or `token`, not both"));
                }
                (None, None) => return Err(format!("{which}: it has no `sha256` or `token`")),
            };
            if entries.iter().any(|(d, _)| *d == digest) {
                return Err(format!("{which}: the same token is listed twice"));
            }
            entries.push((digest, entry));
        }
        Ok(Self { entries })
    }

    /// How many tokens the file lists.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file lists no token.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The principal of `token`, comparing every entry's digest in constant time.
    #[must_use]
    pub fn principal(&self, token: &[u8]) -> Option<Principal> {
        let digest: [u8; 32] = Sha256::digest(token).into();
        let mut found = None;
        for (d, entry) in &self.entries {
            if bool::from(d.ct_eq(&digest)) {
                found = Some(entry);
            }
        }
        found.map(TokenEntry::principal)
    }

    /// Whether `/users/{user}` names a user this file knows, and which (its id).
    #[must_use]
    pub fn user_id(&self, user: &str) -> Option<&str> {
        self.entries
            .iter()
            .map(|(_, e)| e)
            .filter(|e| !e.app)
            .find(|e| {
                e.user.eq_ignore_ascii_case(user)
                    || e.upn
                        .as_deref()
                        .is_some_and(|u| u.eq_ignore_ascii_case(user))
            })
            .map(|e| e.user.as_str())
    }
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A per-address budget of failed authentications: a guesser gets 429 with
/// `Retry-After` once it has failed `limit` times within `window`, until the
/// oldest failure ages out. IPv6 addresses count by their /64, as one host
/// usually holds the whole prefix.
#[derive(Debug)]
pub struct FailureBudget {
    limit: usize,
    window: Duration,
    failures: HashMap<IpAddr, VecDeque<SystemTime>>,
}

/// How many addresses the budget tracks before it forgets the quiet ones.
const BUDGET_ADDRESSES: usize = 65_536;

impl FailureBudget {
    /// `limit` failures per `window` per address (at least one).
    #[must_use]
    pub fn new(limit: usize, window: Duration) -> Self {
        Self {
            limit: limit.max(1),
            window,
            failures: HashMap::new(),
        }
    }

    fn key(addr: IpAddr) -> IpAddr {
        match addr {
            IpAddr::V4(_) => addr,
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or_else(
                || IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
                IpAddr::V4,
            ),
        }
    }

    /// Whether `addr` may try to authenticate at `now`; if not, the seconds to
    /// wait (at least 1).
    ///
    /// # Errors
    /// [`RequestError::Throttled`] with the wait.
    pub fn check(&mut self, addr: IpAddr, now: SystemTime) -> Result<(), RequestError> {
        let Some(times) = self.failures.get_mut(&Self::key(addr)) else {
            return Ok(());
        };
        let window = self.window;
        times.retain(|t| now.duration_since(*t).unwrap_or_default() < window);
        if times.len() < self.limit {
            return Ok(());
        }
        let oldest = times.front().copied().unwrap_or(now);
        let wait = window.saturating_sub(now.duration_since(oldest).unwrap_or_default());
        Err(RequestError::Throttled {
            retry_after_secs: (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1),
        })
    }

    /// Counts a failed authentication of `addr` at `now`.
    pub fn failed(&mut self, addr: IpAddr, now: SystemTime) {
        if self.failures.len() >= BUDGET_ADDRESSES {
            let window = self.window;
            self.failures.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t).unwrap_or_default() < window)
            });
            // Still full of recent guessers (many /64s of one network): the half
            // that failed least recently is forgotten, so the table stays bounded
            // and each forgetting pays for the next half's worth of failures.
            if self.failures.len() >= BUDGET_ADDRESSES {
                let mut last: Vec<SystemTime> = self
                    .failures
                    .values()
                    .filter_map(|t| t.back().copied())
                    .collect();
                let half = last.len() / 2;
                let (_, cut, _) = last.select_nth_unstable(half);
                let cut = *cut;
                self.failures
                    .retain(|_, times| times.back().is_some_and(|t| *t > cut));
            }
        }
        let times = self.failures.entry(Self::key(addr)).or_default();
        times.push_back(now);
        if times.len() > self.limit {
            times.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::GraphError as _;

    const MAIL_W: (Resource, Access) = (Resource::Mail, Access::Write);
    const MAIL_R: (Resource, Access) = (Resource::Mail, Access::Read);
    const FILES_W: (Resource, Access) = (Resource::Files, Access::Write);

    fn me() -> User {
        User::Me
    }
    fn user(id: &str) -> User {
        User::Id(id.to_owned())
    }

    #[test]
    fn a_delegated_user_reaches_only_their_own_mailbox() {
        let alice = Principal::delegated("Alice", ["Mail.ReadWrite"]).with_upn("alice@contoso.com");
        assert_eq!(alice.mailbox(&me(), MAIL_W).unwrap(), Mailbox::of("alice"));
        assert_eq!(
            alice.mailbox(&user("ALICE"), MAIL_W).unwrap(),
            Mailbox::of("alice")
        );
        assert_eq!(
            alice.mailbox(&user("alice@CONTOSO.com"), MAIL_R).unwrap(),
            Mailbox::of("alice")
        );
        let err = alice.mailbox(&user("bob"), MAIL_W).unwrap_err();
        assert_eq!(
            (err.status().as_u16(), err.code()),
            (403, "ErrorAccessDenied")
        );
    }

    #[test]
    fn a_missing_permission_is_refused_whatever_the_mailbox() {
        let reader = Principal::delegated("carol", ["Mail.Read"]);
        assert!(reader.mailbox(&me(), MAIL_R).is_ok());
        assert_eq!(
            reader.mailbox(&me(), MAIL_W),
            Err(RequestError::AccessDenied)
        );
        let none = Principal::delegated("dave", ["User.Read"]);
        assert_eq!(none.mailbox(&me(), MAIL_R), Err(RequestError::AccessDenied));
        assert_eq!(
            none.mailbox(&me(), FILES_W),
            Err(RequestError::AccessDenied)
        );
        let files = Principal::delegated("erin", ["files.readwrite"]);
        assert!(files.mailbox(&me(), FILES_W).is_ok());
        assert_eq!(
            files.mailbox(&me(), MAIL_W),
            Err(RequestError::AccessDenied)
        );
    }

    #[test]
    fn an_application_token_reaches_any_mailbox_with_its_role_and_never_me() {
        let app = Principal::application("daemon", ["Mail.ReadWrite"]);
        assert_eq!(
            app.mailbox(&user("Bob"), MAIL_W).unwrap(),
            Mailbox::of("bob")
        );
        let err = app.mailbox(&me(), MAIL_W).unwrap_err();
        assert_eq!(err.status().as_u16(), 400);
        // Delegated Files.ReadWrite is not enough for an application.
        let files = Principal::application("daemon", ["Files.ReadWrite"]);
        assert_eq!(
            files.mailbox(&user("bob"), FILES_W),
            Err(RequestError::AccessDenied)
        );
        let all = Principal::application("daemon", ["Files.ReadWrite.All"]);
        assert!(all.mailbox(&user("bob"), FILES_W).is_ok());
    }

    #[test]
    fn no_user_reaches_the_sole_mailbox() {
        let app = Principal::application("daemon", ["Mail.ReadWrite"]);
        for u in ["me", "", "ME"] {
            assert_ne!(
                app.mailbox(&user(u), MAIL_W).ok(),
                Some(Mailbox::sole()),
                "{u:?}"
            );
        }
        let me = Principal::delegated("me", ["Mail.ReadWrite"]);
        assert_ne!(me.mailbox(&User::Me, MAIL_W).unwrap(), Mailbox::sole());
        assert_eq!(Mailbox::sole().to_string(), SOLE_USER);
    }

    #[test]
    fn the_sole_user_is_every_user() {
        let sole = Principal::sole();
        for u in [me(), user("alice"), user("bob@contoso.com")] {
            assert_eq!(sole.mailbox(&u, MAIL_W).unwrap(), Mailbox::sole());
        }
    }

    #[test]
    fn bearer_headers_are_read_strictly() {
        assert_eq!(bearer(Some(b"Bearer abc")).unwrap(), b"abc");
        assert_eq!(bearer(Some(b"bearer abc")).unwrap(), b"abc");
        assert_eq!(bearer(Some(b"BEARER   abc ")).unwrap(), b"abc");
        for bad in [
            &b""[..],
            b"Bearer",
            b"Bearer ",
            b"Basic abc",
            b"Bearerabc",
            b"Bearer a b",
            b"Bearer a\x01",
        ] {
            assert!(bearer(Some(bad)).is_err(), "{bad:?}");
        }
        assert!(bearer(None).is_err());
    }

    #[test]
    fn tokens_files_map_tokens_to_users_by_digest() {
        let digest = token_digest(b"bob-secret");
        let text = format!(
            "[[token]]\ntoken = \"alice-secret\"\nuser = \"alice\"\nscopes = [\"Mail.ReadWrite\"]\n\n\
             [[token]]\nsha256 = \"{digest}\"\nuser = \"bob\"\nname = \"Bob\"\n\n\
             [[token]]\ntoken = \"app-secret\"\nuser = \"backup\"\napp = true\nscopes = [\"Mail.ReadWrite\"]\n"
        );
        let file = TokensFile::parse(&text).unwrap();
        assert_eq!(file.len(), 3);
        assert_eq!(file.principal(b"alice-secret").unwrap().id, "alice");
        let bob = file.principal(b"bob-secret").unwrap();
        assert_eq!((bob.id.as_str(), bob.name.as_deref()), ("bob", Some("Bob")));
        assert_eq!(bob.grant, Grant::Delegated(BTreeSet::new()));
        assert!(matches!(
            file.principal(b"app-secret").unwrap().grant,
            Grant::Application(_)
        ));
        assert!(file.principal(b"alice-secre").is_none());
        assert_eq!(file.user_id("ALICE"), Some("alice"));
        assert_eq!(file.user_id("backup"), None);
    }

    #[test]
    fn an_entry_written_by_token_add_reads_back() {
        let entry = TokenEntry {
            sha256: Some(token_digest(b"t0k")),
            token: None,
            user: "alice".into(),
            upn: Some("alice@contoso.com".into()),
            name: None,
            scopes: vec!["Mail.ReadWrite".into()],
            app: false,
        };
        let twice = format!("{}\n{}", entry.to_toml(), {
            let mut other = entry.clone();
            other.sha256 = Some(token_digest(b"other"));
            other.to_toml()
        });
        let file = TokensFile::parse(&twice).unwrap();
        assert_eq!(file.principal(b"t0k").unwrap(), entry.principal());
    }

    #[test]
    fn bad_tokens_files_say_why() {
        for (text, says) in [
            ("[[token]]\nuser = \"a\"\n", "no `sha256`"),
            ("[[token]]\ntoken = \"\"\nuser = \"a\"\n", "empty"),
            ("[[token]]\nsha256 = \"zz\"\nuser = \"a\"\n", "64 hex"),
            (
                "[[token]]\ntoken = \"x\"\nsha256 = \"x\"\nuser = \"a\"\n",
                "not both",
            ),
            ("[[token]]\ntoken = \"x\"\nuser = \"\"\n", "empty `user`"),
            (
                "[[token]]\ntoken = \"x\"\nuser = \"a\"\n[[token]]\ntoken = \"x\"\nuser = \"b\"\n",
                "twice",
            ),
            (
                "[[token]]\ntoken = \"x\"\nuser = \"a\"\nscope = []\n",
                "unknown field",
            ),
            ("[[token]\n", ""),
        ] {
            let err = TokensFile::parse(text).unwrap_err();
            assert!(err.contains(says), "{text:?}: {err}");
        }
        assert!(TokensFile::parse("").unwrap().is_empty());
    }

    #[test]
    fn failed_authentications_are_budgeted_per_address() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut budget = FailureBudget::new(3, Duration::from_secs(60));
        let guesser: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        for i in 0..3 {
            budget.check(guesser, t0 + Duration::from_secs(i)).unwrap();
            budget.failed(guesser, t0 + Duration::from_secs(i));
        }
        let Err(RequestError::Throttled { retry_after_secs }) =
            budget.check(guesser, t0 + Duration::from_secs(10))
        else {
            panic!("a fourth guess within the window must wait");
        };
        assert_eq!(retry_after_secs, 50);
        budget.check(other, t0 + Duration::from_secs(10)).unwrap();
        budget.check(guesser, t0 + Duration::from_secs(61)).unwrap();
        // One /64 is one guesser.
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        for _ in 0..3 {
            budget.failed(a, t0);
        }
        assert!(budget.check(b, t0).is_err());
        assert!(budget.check("2001:db8:1:3::1".parse().unwrap(), t0).is_ok());
    }

    #[test]
    fn the_budget_table_stays_bounded_when_every_guesser_is_recent() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut budget = FailureBudget::new(3, Duration::from_secs(60));
        for i in 0..(BUDGET_ADDRESSES as u64 + 10) {
            let addr = IpAddr::V6((0x2001_0db8_u128 << 96 | u128::from(i) << 64).into());
            budget.failed(addr, t0 + Duration::from_millis(i / 100));
        }
        assert!(
            budget.failures.len() <= BUDGET_ADDRESSES,
            "{}",
            budget.failures.len()
        );
    }
}
