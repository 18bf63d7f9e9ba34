//! Who a bearer token speaks for, as `--auth` configures it: the configured
//! tokens (one user), a tokens file, or JWTs checked against a JWKS file. The
//! decisions are the core's (`upsession_core::identity`); this module reads the
//! files, notices when they change (checked at most once a second, and at once
//! after SIGHUP or, for a JWKS, a token naming an unknown key), and keeps the
//! last good version when a new one does not read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tracing::{info, warn};
use upsession_core::credential::Tokens;
use upsession_core::identity::jwt::{self, JwtPolicy, KeySet};
use upsession_core::identity::{Grant, Principal, TokensFile, bearer};

use crate::config::{AuthMode, Config};

/// Why a bearer token was refused: a metrics label and the 401's sentence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) reason: &'static str,
    pub(crate) sentence: &'static str,
}

impl Refusal {
    const fn new(reason: &'static str, sentence: &'static str) -> Self {
        Self { reason, sentence }
    }
}

/// Set by SIGHUP: every watched file is read again at its next use.
static RELOAD_ALL: AtomicBool = AtomicBool::new(false);

/// Asks every watched file to be read again (what SIGHUP does).
pub(crate) fn reload_all() {
    RELOAD_ALL.store(true, Ordering::Relaxed);
}

/// A file read into `T`, read again when its size or modification time changes.
#[derive(Debug)]
pub(crate) struct Watched<T> {
    path: PathBuf,
    parse: fn(&str) -> Result<T, String>,
    state: RwLock<WatchedState<T>>,
}

#[derive(Debug)]
struct WatchedState<T> {
    value: Arc<T>,
    stamp: Option<Stamp>,
    checked: Instant,
}

/// What tells a changed file: its inode (a file replaced by a rename), size and
/// modification and change times (a rewrite of the same size within the
/// modification time's granularity still moves the change time, or the inode).
type Stamp = (u64, u64, SystemTime, i64, i64);

/// How often a watched file's metadata is looked at.
const CHECK_EVERY: Duration = Duration::from_secs(1);

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    Some((
        meta.ino(),
        meta.len(),
        meta.modified().ok()?,
        meta.ctime(),
        meta.ctime_nsec(),
    ))
}

impl<T> Watched<T> {
    /// `value` until the file at `path` (which does not exist yet) is made.
    fn until_made(path: &Path, parse: fn(&str) -> Result<T, String>, value: T) -> Self {
        Self {
            path: path.to_owned(),
            parse,
            state: RwLock::new(WatchedState {
                value: Arc::new(value),
                stamp: None,
                checked: Instant::now(),
            }),
        }
    }

    fn open(path: &Path, parse: fn(&str) -> Result<T, String>) -> Result<Self, String> {
        let stamp = stamp(path);
        let value = read(path, parse)?;
        Ok(Self {
            path: path.to_owned(),
            parse,
            state: RwLock::new(WatchedState {
                value: Arc::new(value),
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// The current version: read again if the file changed (looked at no more
    /// than once a second unless `now` is asked for).
    fn current(&self, force: bool) -> Arc<T> {
        {
            let state = self.state.read().expect("watched lock");
            if !force && state.checked.elapsed() < CHECK_EVERY {
                return Arc::clone(&state.value);
            }
        }
        let mut state = self.state.write().expect("watched lock");
        if !force && state.checked.elapsed() < CHECK_EVERY {
            return Arc::clone(&state.value);
        }
        state.checked = Instant::now();
        let now = stamp(&self.path);
        if force || now != state.stamp {
            state.stamp = now;
            match read(&self.path, self.parse) {
                Ok(value) => {
                    info!(file = %self.path.display(), "read again after a change");
                    state.value = Arc::new(value);
                }
                Err(e) => warn!(
                    file = %self.path.display(),
                    error = %e,
                    "changed but does not read; the previous version stays in use"
                ),
            }
        }
        Arc::clone(&state.value)
    }
}

fn read<T>(path: &Path, parse: fn(&str) -> Result<T, String>) -> Result<T, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("could not read {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse_keys(text: &str) -> Result<KeySet, String> {
    let (keys, skipped) = KeySet::parse(text)?;
    for key in skipped {
        warn!(key = %key, "JWKS key left out");
    }
    Ok(keys)
}

/// The configured way of knowing callers.
#[derive(Debug)]
pub(crate) enum Identities {
    /// `--auth token`: any configured token is the one user.
    Token(Tokens),
    /// `--auth tokens FILE`.
    File(Watched<TokensFile>),
    /// `--auth jwt`.
    Jwt {
        keys: Watched<KeySet>,
        policy: JwtPolicy,
        /// When a token naming an unknown key last made the JWKS be read again.
        refreshed: RwLock<Option<Instant>>,
        /// Sign-in names (lower-cased) of the users seen, to their ids: the only
        /// directory there is, so that an application's `/users/{upn}` reaches the
        /// mailbox of the user's `oid`.
        seen: RwLock<HashMap<String, String>>,
    },
}

/// Most sign-in names the JWT mode remembers (then it starts again).
const SEEN_USERS: usize = 100_000;

/// A token naming an unknown key re-reads the JWKS at most this often.
const UNKNOWN_KEY_REFRESH: Duration = Duration::from_secs(5);

impl Identities {
    /// Reads what `config.auth` names.
    ///
    /// # Errors
    /// A sentence naming the file and what is wrong with it.
    pub(crate) fn open(config: &Config) -> Result<Self, String> {
        Ok(match &config.auth {
            AuthMode::Token => Self::Token(Tokens::new(&config.tokens)),
            AuthMode::TokensFile(path) => {
                // A file not made yet is an empty one: `upsession token add` may
                // make it while the server runs.
                let file = if path.exists() {
                    Watched::open(path, TokensFile::parse)?
                } else {
                    warn!(
                        file = %path.display(),
                        "the tokens file does not exist yet: every token is refused until it is made (upsession token add --file …)"
                    );
                    Watched::until_made(path, TokensFile::parse, TokensFile::default())
                };
                let n = file.current(false).len();
                info!(file = %path.display(), tokens = n, "tokens file read");
                Self::File(file)
            }
            AuthMode::Jwt(jwt) => {
                let mut policy = JwtPolicy::new("", "");
                policy.issuers.clone_from(&jwt.issuers);
                policy.audiences.clone_from(&jwt.audiences);
                policy.skew = jwt.skew;
                policy.algorithms = jwt
                    .algorithms
                    .iter()
                    .map(|name| JwtPolicy::algorithm(name))
                    .collect::<Result<_, _>>()?;
                if policy.issuers.iter().all(String::is_empty)
                    || policy.audiences.iter().all(String::is_empty)
                {
                    return Err("JWT authentication needs an issuer and an audience".into());
                }
                if policy.algorithms.is_empty() {
                    return Err("JWT authentication needs at least one algorithm".into());
                }
                let keys = Watched::open(&jwt.jwks, parse_keys)?;
                info!(jwks = %jwt.jwks.display(), keys = keys.current(false).len(), "JWKS read");
                Self::Jwt {
                    keys,
                    policy,
                    refreshed: RwLock::new(None),
                    seen: RwLock::default(),
                }
            }
        })
    }

    /// The principal an `Authorization` header speaks for at `now`.
    pub(crate) fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        now: SystemTime,
    ) -> Result<Principal, Refusal> {
        let token = bearer(authorization).map_err(|sentence| {
            let reason = if authorization.is_none() {
                "missing"
            } else {
                "malformed"
            };
            Refusal::new(reason, sentence)
        })?;
        let force = RELOAD_ALL.swap(false, Ordering::Relaxed);
        let unknown = Refusal::new("unknown_token", "the access token is not valid");
        match self {
            Self::Token(tokens) => tokens.contains(token).then(Principal::sole).ok_or(unknown),
            Self::File(file) => file.current(force).principal(token).ok_or(unknown),
            Self::Jwt {
                keys,
                policy,
                refreshed,
                seen,
            } => {
                let text = std::str::from_utf8(token).map_err(|_| {
                    Refusal::new("malformed", "the access token is not a well-formed JWT")
                })?;
                let checked = jwt::verify(text, &keys.current(force), policy, now);
                let checked = match checked {
                    Err(jwt::JwtError::UnknownKey) if Self::may_refresh(refreshed) => {
                        jwt::verify(text, &keys.current(true), policy, now)
                    }
                    other => other,
                };
                let principal = checked.map_err(|e| Refusal::new(e.label(), e.sentence()))?;
                if let (Grant::Delegated(_), Some(upn)) = (&principal.grant, &principal.upn) {
                    let upn = upn.to_lowercase();
                    let known = seen.read().expect("seen lock").get(&upn) == Some(&principal.id);
                    if !known {
                        let mut seen = seen.write().expect("seen lock");
                        if seen.len() >= SEEN_USERS {
                            seen.clear();
                        }
                        seen.insert(upn, principal.id.clone());
                    }
                }
                Ok(principal)
            }
        }
    }

    fn may_refresh(refreshed: &RwLock<Option<Instant>>) -> bool {
        let mut last = refreshed.write().expect("refresh lock");
        if last.is_some_and(|at| at.elapsed() < UNKNOWN_KEY_REFRESH) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// The user id `/users/{user}` names, where the tokens file knows the user
    /// or, with JWTs, the user has signed in since the start (so an application
    /// reaches alice's mailbox by her sign-in name as well as by her id).
    pub(crate) fn user_id(&self, user: &str) -> Option<String> {
        match self {
            Self::File(file) => file.current(false).user_id(user).map(str::to_owned),
            Self::Jwt { seen, .. } => seen
                .read()
                .expect("seen lock")
                .get(&user.to_lowercase())
                .cloned(),
            Self::Token(_) => None,
        }
    }
}
