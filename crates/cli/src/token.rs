//! `upsession token add`: a new bearer token in a tokens file (`serve --auth
//! tokens FILE`). The file keeps the token's SHA-256, never the token, which is
//! printed once on stdout (alone, so `TOKEN=$(upsession token add …)` works).
//! `upsession token jwt`: a JWT for `serve --auth jwt` from a development key.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use upsession_core::identity::jwt::DevSigner;
use upsession_core::identity::{DEFAULT_SCOPES, TokenEntry, TokensFile, token_digest};

use crate::Failure;

/// `upsession token …`.
#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Make a new token for a user (or an application) and add it to a tokens
    /// file; the token is printed once.
    Add(AddArgs),
    /// Mint a JWT for `serve --auth jwt` from a development key (made with its
    /// JWKS in --dir on first use): to try JWT mode, or test with it, offline.
    Jwt(JwtArgs),
}

/// Whom a new token speaks for: what `token add` and `token jwt` share.
#[derive(Debug, Args)]
pub(crate) struct Who {
    /// The user id the token speaks for (`/users/{id}`; a JWT's `oid`), or the
    /// application's id with --app.
    #[arg(long)]
    user: String,
    /// Permissions, comma-separated: delegated ones (`scp`), or application ones
    /// (`roles`) with --app. [default: Mail.ReadWrite,Calendars.ReadWrite,
    /// Files.ReadWrite; with --app: Mail.ReadWrite,Files.ReadWrite.All]
    #[arg(long, value_delimiter = ',')]
    scopes: Option<Vec<String>>,
    /// The user's sign-in name, which `/users/{upn}` also names.
    #[arg(long)]
    upn: Option<String>,
    /// An application token: no signed-in user (`/me` is 400), any user's mailbox
    /// through `/users/{id}` given the application permission.
    #[arg(long)]
    app: bool,
}

/// Flags of `upsession token jwt`.
#[derive(Debug, Args)]
pub(crate) struct JwtArgs {
    #[command(flatten)]
    who: Who,
    /// Where the development key (`signing.key`) and its JWKS (`jwks.json`, for
    /// `serve --jwks`) are kept; both are made when missing.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The `iss` claim (give `serve --issuer` the same).
    #[arg(long, default_value = "https://login.upsession.test/v2.0")]
    issuer: String,
    /// The `aud` claim (give `serve --audience` the same).
    #[arg(long, default_value = "api://upsession")]
    audience: String,
    /// How long the token is valid.
    #[arg(long, default_value = "1h", value_parser = crate::size::parse_duration)]
    ttl: std::time::Duration,
}

/// Flags of `upsession token add`.
#[derive(Debug, Args)]
pub(crate) struct AddArgs {
    #[command(flatten)]
    who: Who,
    /// A display name, for logs.
    #[arg(long)]
    name: Option<String>,
    /// The tokens file [default: tokens.toml in the data directory].
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
    /// The data directory whose tokens.toml to use (as `serve --data-dir`).
    #[arg(long, env = "UPSESSION_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

/// A new bearer token: `ups_` and 256 random bits in base64url. The prefix says
/// what it is (to a secret scanner too) and keeps it from starting with `-`,
/// which a command line would take for a flag.
pub(crate) fn new_token() -> Result<String, Failure> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Failure::new(format!("no random source: {e}")))?;
    Ok(format!(
        "ups_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// Where `serve --auth tokens` and `token add` look without a FILE.
pub(crate) fn default_file(data_dir: &Path) -> PathBuf {
    data_dir.join("tokens.toml")
}

pub(crate) fn run(command: TokenCommand) -> Result<(), Failure> {
    match command {
        TokenCommand::Add(args) => add(args),
        TokenCommand::Jwt(args) => jwt(&args),
    }
}

/// The permissions of a new token: those asked for, else the defaults.
fn permissions(asked: Option<Vec<String>>, app: bool) -> Vec<String> {
    asked
        .unwrap_or_else(|| {
            if app {
                vec!["Mail.ReadWrite".into(), "Files.ReadWrite.All".into()]
            } else {
                DEFAULT_SCOPES.iter().map(|s| (*s).to_owned()).collect()
            }
        })
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Reads the development key in `dir`, or makes it (and its JWKS).
fn dev_signer(dir: &Path) -> Result<DevSigner, Failure> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let key_path = dir.join("signing.key");
    let jwks_path = dir.join("jwks.json");
    let cannot = |what: &str, path: &Path, e: std::io::Error| {
        Failure::new(format!("cannot {what} {}: {e}", path.display()))
    };
    let seed = match fs::read_to_string(&key_path) {
        Ok(text) => b64
            .decode(text.trim())
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| {
                Failure::new(format!(
                    "{} is not a development key (32 bytes, base64url)",
                    key_path.display()
                ))
            })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(|e| cannot("create", dir, e))?;
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed)
                .map_err(|e| Failure::new(format!("no random source: {e}")))?;
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&key_path)
                .map_err(|e| cannot("create", &key_path, e))?;
            file.write_all(b64.encode(seed).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| cannot("write", &key_path, e))?;
            seed
        }
        Err(e) => return Err(cannot("read", &key_path, e)),
    };
    let signer = DevSigner::from_seed(seed, "upsession-dev");
    let jwks = signer.jwks().map_err(Failure::new)?;
    match fs::read_to_string(&jwks_path) {
        Ok(kept) if kept == jwks => {}
        Ok(_) => {
            // Never overwritten: it may be a real key set a server trusts.
            return Err(Failure::new(format!(
                "{} holds other keys than {}'s; give `token jwt` a --dir of its own",
                jwks_path.display(),
                key_path.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::write(&jwks_path, jwks).map_err(|e| cannot("write", &jwks_path, e))?;
        }
        Err(e) => return Err(cannot("read", &jwks_path, e)),
    }
    Ok(signer)
}

fn jwt(args: &JwtArgs) -> Result<(), Failure> {
    let who = &args.who;
    if who.user.trim().is_empty() {
        return Err(Failure::usage("--user must name a user"));
    }
    let signer = dev_signer(&args.dir)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let scopes = permissions(who.scopes.clone(), who.app);
    let mut claims = serde_json::json!({
        "iss": args.issuer,
        "aud": args.audience,
        "iat": now,
        "nbf": now,
        "exp": now + args.ttl.as_secs(),
        "oid": who.user,
        "sub": who.user,
        "ver": "2.0",
    });
    if who.app {
        claims["roles"] = serde_json::json!(scopes);
        claims["idtyp"] = serde_json::json!("app");
    } else {
        claims["scp"] = serde_json::json!(scopes.join(" "));
        if let Some(upn) = &who.upn {
            claims["preferred_username"] = serde_json::json!(upn);
        }
    }
    let token = signer.mint(&claims).map_err(Failure::new)?;
    crate::print_out(&format!("{token}\n"));
    eprintln!(
        "minted a JWT for {} (valid {}), signed by the key in {}; serve with \
         `--auth jwt --jwks {} --issuer {} --audience {}`",
        who.user,
        humantime::format_duration(args.ttl),
        args.dir.display(),
        args.dir.join("jwks.json").display(),
        args.issuer,
        args.audience
    );
    Ok(())
}

fn add(args: AddArgs) -> Result<(), Failure> {
    let who = args.who;
    if who.user.trim().is_empty() {
        return Err(Failure::usage("--user must name a user"));
    }
    let file = match (args.file, args.data_dir) {
        (Some(file), _) => file,
        (None, Some(dir)) => default_file(&dir),
        (None, None) => {
            use etcetera::AppStrategy as _;
            default_file(&crate::app_dirs("data directory", "--file")?.data_dir())
        }
    };
    let scopes = permissions(who.scopes, who.app);
    let token = new_token()?;
    let entry = TokenEntry {
        sha256: Some(token_digest(token.as_bytes())),
        token: None,
        user: who.user.clone(),
        upn: who.upn,
        name: args.name,
        scopes: scopes.clone(),
        app: who.app,
    };
    append(&file, &entry)?;
    crate::print_out(&format!("{token}\n"));
    eprintln!(
        "added a{} token for {} ({}) to {}; a `serve --auth tokens {}` reads it within a second",
        if who.app { "n application" } else { "" },
        who.user,
        if scopes.is_empty() {
            "no permissions".to_owned()
        } else {
            scopes.join(", ")
        },
        file.display(),
        file.display()
    );
    Ok(())
}

/// Adds `entry` to the tokens file `path` (made readable by its owner only), after
/// checking that what is there reads, so a broken file is not made worse.
fn append(path: &Path, entry: &TokenEntry) -> Result<(), Failure> {
    let cannot = |what: &str, e: std::io::Error| {
        Failure::new(format!("cannot {what} {}: {e}", path.display()))
    };
    match fs::read_to_string(path) {
        Ok(text) => {
            TokensFile::parse(&text).map_err(|e| {
                Failure::new(format!(
                    "{} does not read as a tokens file ({e}); fix it before adding to it",
                    path.display()
                ))
            })?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs::create_dir_all(dir).map_err(|e| cannot("create the folder of", e))?;
            }
        }
        Err(e) => return Err(cannot("read", e)),
    }
    let mut file = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| cannot("open", e))?;
    file.write_all(format!("\n{}", entry.to_toml()).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| cannot("write", e))
}
