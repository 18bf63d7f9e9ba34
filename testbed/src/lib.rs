//! The engines behind upsession's shared storage, started for tests and benchmarks
//! on 127.0.0.1 and stopped when dropped: [`Postgres`] (Debian's PostgreSQL, an
//! `initdb` in a temporary directory), [`Garage`] (a Garage cluster of several
//! nodes), and [`RoundRobin`], a small HTTP proxy that sends each request to the
//! next upsession node, as a load balancer would.
//!
//! Garage is installed by `cargo xtask engines` (from crates.io, into a cache
//! directory); [`Garage::binary`] says where it looks.
//!
//! [`kit`] holds what every crate's tests repeat: our server in process or as a
//! child, Graph calls and fragments, raw in-flight PUTs, Graph error answers, and
//! seeded test data.

mod garage;
pub mod issuer;
pub mod kit;
mod postgres;
mod proxy;

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

pub use garage::{BUCKET, GARAGE_VERSION, Garage, cache_dir};
pub use postgres::{Postgres, unrelated_ca_pem};
pub use proxy::RoundRobin;

/// A port nothing listens on now.
///
/// # Errors
/// When no port can be bound.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until something accepts connections on `port` (at most `limit`).
///
/// # Errors
/// `TimedOut` when nothing listens in time.
pub fn wait_for_port(port: u16, limit: Duration) -> io::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    while start.elapsed() < limit {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("nothing listened on 127.0.0.1:{port} within {limit:?}"),
    ))
}

/// Runs a command to its end, failing with its output when it fails.
fn run(cmd: &mut std::process::Command) -> io::Result<String> {
    let out = cmd.output()?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(io::Error::other(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

/// `bytes` random bytes as hex, from the kernel.
fn random_hex(bytes: usize) -> io::Result<String> {
    use std::io::Read as _;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().fold(String::new(), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    }))
}
