//! TLS to PostgreSQL, as libpq's `sslmode` and `sslrootcert` ask for it in the
//! `--meta` URL (or `key=value` string).
//!
//! tokio-postgres itself knows `sslmode` `disable`, `prefer` and `require`, and no
//! `sslrootcert`; this reads both before it does. `verify-full` (and `require`,
//! which libpq would not verify without a root certificate) connect over rustls,
//! checking the server's certificate against `sslrootcert` (a PEM file of CA
//! certificates; libpq's default `~/.postgresql/root.crt` when not given) and its
//! name against the host. `disable` and `prefer` (tokio-postgres's default, which
//! then stays unencrypted: no TLS connector is given) are passed on as they are.

use std::fmt::Write as _;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tokio_postgres::config::SslMode;

/// How a connection string asks to reach PostgreSQL.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Tls {
    /// No TLS connector: `sslmode` absent, `disable` or `prefer`.
    Plain,
    /// TLS, the server's certificate checked against the CAs in this file and
    /// its name against the host.
    Verified { root_certificates: PathBuf },
}

/// `url` without the parameters read here, and what they ask for.
///
/// # Errors
/// A mode this cannot honour (`allow`, `verify-ca`), or a verified mode with no
/// root certificate to verify against.
pub(crate) fn split(url: &str) -> io::Result<(String, Tls)> {
    // Nothing of ours in it: passed on exactly as given.
    if !url.contains("sslmode") && !url.contains("sslrootcert") {
        return Ok((url.to_owned(), Tls::Plain));
    }
    let (rest, params) = Params::of(url);
    let mut mode = None;
    let mut root = None;
    let mut kept = Vec::new();
    for (key, value) in params {
        match key.as_str() {
            "sslmode" => mode = Some(value),
            "sslrootcert" => root = Some(value),
            _ => kept.push((key, value)),
        }
    }
    let tls = match mode.as_deref() {
        None | Some("disable" | "prefer") if root.is_some() => {
            return Err(invalid(
                "sslrootcert is given without sslmode=verify-full: add it to the PostgreSQL \
                 URL (without it the connection would not be verified, or not encrypted)",
            ));
        }
        None | Some("disable" | "prefer") => {
            if let Some(mode) = mode {
                kept.push(("sslmode".into(), mode));
            }
            Tls::Plain
        }
        Some("require" | "verify-full") => {
            let root_certificates =
                root.map(PathBuf::from)
                    .or_else(default_root)
                    .ok_or_else(|| {
                        invalid(
                            "sslmode=require and verify-full need the CA certificates to check the \
                     server's against: add sslrootcert=FILE (PEM) to the PostgreSQL URL",
                        )
                    })?;
            kept.push(("sslmode".into(), "require".into()));
            Tls::Verified { root_certificates }
        }
        Some("verify-ca") => {
            return Err(invalid(
                "sslmode=verify-ca is not supported: use sslmode=verify-full, which also \
                 checks the server's name",
            ));
        }
        Some(other) => {
            return Err(invalid(&format!(
                "sslmode={other} is not supported (disable, prefer, require, verify-full)"
            )));
        }
    };
    Ok((rest.join(&kept), tls))
}

/// libpq's default root certificate file, when it exists.
fn default_root() -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os("HOME")?).join(".postgresql/root.crt");
    path.is_file().then_some(path)
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// The TLS connector for [`Tls::Verified`]: rustls (aws-lc, as everywhere in the
/// server) trusting the CAs of `root_certificates` only.
///
/// # Errors
/// The file does not read, or holds no certificate rustls takes.
pub(crate) fn connector(
    root_certificates: &std::path::Path,
) -> io::Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let unreadable = |e: &dyn std::fmt::Display| {
        invalid(&format!(
            "sslrootcert {} does not read as PEM certificates: {e}",
            root_certificates.display()
        ))
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(root_certificates).map_err(|e| unreadable(&e))? {
        roots
            .add(cert.map_err(|e| unreadable(&e))?)
            .map_err(|e| unreadable(&e))?;
    }
    if roots.is_empty() {
        return Err(unreadable(&"no certificate in it"));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid(&format!("TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// The mode tokio-postgres is given for `tls`.
pub(crate) fn ssl_mode(tls: &Tls) -> Option<SslMode> {
    match tls {
        Tls::Plain => None,
        Tls::Verified { .. } => Some(SslMode::Require),
    }
}

/// A connection string split into its parameters: a URL's query
/// (`postgres://h/db?a=b&c=d`) or the `key=value` words of libpq's other form.
enum Params {
    Url(String),
    /// The words that stay, as written.
    Words(String),
}

impl Params {
    fn of(text: &str) -> (Self, Vec<(String, String)>) {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            // tokio-postgres reads credentials up to the first `@`: a `?` in a
            // password is not the query's.
            let from = text.find('@').map_or(0, |at| at + 1);
            let (base, query) = text[from..]
                .find('?')
                .map_or((text, ""), |q| (&text[..from + q], &text[from + q + 1..]));
            let params = query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect();
            (Self::Url(base.to_owned()), params)
        } else {
            // Only unquoted `key=value` words of ours are taken out; every other
            // word (quoted passwords included) is kept as written.
            let mut kept = Vec::new();
            let mut params = Vec::new();
            for word in text.split(' ') {
                match word.split_once('=') {
                    Some((k @ ("sslmode" | "sslrootcert"), v)) if !v.starts_with('\'') => {
                        params.push((k.to_owned(), v.to_owned()));
                    }
                    _ => kept.push(word),
                }
            }
            (Self::Words(kept.join(" ")), params)
        }
    }

    fn join(&self, params: &[(String, String)]) -> String {
        match self {
            Self::Url(base) if params.is_empty() => base.clone(),
            Self::Url(base) => {
                let query: Vec<String> = params
                    .iter()
                    .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                    .collect();
                format!("{base}?{}", query.join("&"))
            }
            Self::Words(kept) => {
                params
                    .iter()
                    .fold(kept.trim_end().to_owned(), |mut out, (k, v)| {
                        let _ = write!(out, " {k}={v}");
                        out
                    })
            }
        }
    }
}

/// Percent-decoding of a URL query's key or value (`+` is a plus in libpq's URLs).
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let value = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encoding of what is not unreserved in a URL query.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{Tls, split};
    use std::path::PathBuf;

    #[test]
    fn plain_modes_pass_through_untouched() {
        for url in [
            "postgres://u@h:5432/db",
            "postgres://u@h/db?sslmode=disable",
            "postgres://u@h/db?application_name=x&sslmode=prefer",
            "host=h user=u sslmode=disable",
            "host=db password='pa  ss' dbname=app",
            "postgres://u:p?x@h/db",
        ] {
            let (out, tls) = split(url).unwrap();
            assert_eq!((out.as_str(), tls), (url, Tls::Plain));
        }
    }

    #[test]
    fn verified_modes_take_the_root_file_and_ask_tokio_postgres_for_require() {
        let (out, tls) =
            split("postgres://u@h/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20x.pem&x=1")
                .unwrap();
        assert_eq!(out, "postgres://u@h/db?x=1&sslmode=require");
        assert_eq!(
            tls,
            Tls::Verified {
                root_certificates: PathBuf::from("/etc/ca x.pem")
            }
        );
        let (out, tls) =
            split("host=h password='a  b' sslmode=require sslrootcert=/ca.pem dbname=x").unwrap();
        assert_eq!(out, "host=h password='a  b' dbname=x sslmode=require");
        assert!(matches!(tls, Tls::Verified { .. }));
        // A `?` in the password is not the query.
        let (out, _) =
            split("postgres://u:p?x@h/db?sslmode=verify-full&sslrootcert=/ca.pem").unwrap();
        assert_eq!(out, "postgres://u:p?x@h/db?sslmode=require");
    }

    #[test]
    fn modes_it_cannot_honour_are_refused_in_one_sentence() {
        for url in [
            "postgres://h/db?sslmode=verify-ca&sslrootcert=/ca.pem",
            "postgres://h/db?sslmode=allow",
            "postgres://h/db?sslmode=bogus",
            "postgres://h/db?sslrootcert=/ca.pem",
            "postgres://h/db?sslmode=prefer&sslrootcert=/ca.pem",
        ] {
            let err = split(url).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
            assert!(err.to_string().contains("sslmode="), "{err}");
            assert!(!err.to_string().contains('\n'), "{err}");
        }
    }
}
