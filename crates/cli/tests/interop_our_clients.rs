//! Our two client transports go through what the official SDKs' interop tests put
//! them through: at their default settings each uploads the SDKs' three sizes (5 MB,
//! 33 MiB + 7 B and 150 MB) byte-exact to `upsession serve` with its default flags
//! and in the outlook dialect, and each carries on through a `kill -9` of the server
//! in the middle of an upload, once the server is back on the same data directory.
//!
//! The async client (reqwest) runs on a tokio runtime of its own thread; the
//! blocking one (ureq) on a plain thread. Both report progress to the same
//! channel, which is how the test knows when to kill and when to restart.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use common::interop::{SIZES, SdkServer, TOKEN, TestFile, files};
use upsession_client_ureq::{ProgressEvent, ProgressKind, Uploaded};
use upsession_testbed::kit::{download, sha256_hex};

/// The longest one test's uploads may take.
const LIMIT: Duration = Duration::from_secs(300);

/// Holds a client after its `after`-th acknowledged fragment until `release`
/// says to go on.
struct Hold {
    after: usize,
    release: Mutex<Option<mpsc::Receiver<()>>>,
}

#[derive(Clone, Copy, Debug)]
enum Transport {
    Reqwest,
    Ureq,
}

impl Transport {
    /// Uploads `file` to a new draft on `base` at the client's defaults (only the
    /// base URL and token set), reporting each progress event to `events`.
    fn upload(
        self,
        base: String,
        file: std::path::PathBuf,
        events: mpsc::Sender<ProgressKind>,
        hold: Option<Hold>,
    ) -> thread::JoinHandle<Result<Uploaded, String>> {
        let acknowledged = AtomicUsize::new(0);
        let report = move |e: &ProgressEvent| {
            let _ = events.send(e.kind.clone());
            if let (ProgressKind::Acknowledged { .. }, Some(hold)) = (&e.kind, &hold)
                && acknowledged.fetch_add(1, Ordering::SeqCst) + 1 == hold.after
            {
                // The client waits here, before its next fragment, until the test
                // has killed the server: the upload cannot end before the kill.
                let release = hold.release.lock().unwrap().take();
                if let Some(release) = release {
                    let _ = release.recv_timeout(LIMIT);
                }
            }
        };
        thread::spawn(move || match self {
            Self::Ureq => {
                use upsession_client_ureq::{Client, UploadOptions};
                let client = Client::builder()
                    .base_url(base)
                    .token(TOKEN)
                    .build()
                    .map_err(|e| e.to_string())?;
                let draft = client.create_draft("ureq").map_err(|e| e.to_string())?;
                let options = UploadOptions::new().on_progress(report);
                client
                    .upload_file(&draft, &file, &options)
                    .map_err(|e| e.to_string())
            }
            Self::Reqwest => {
                use upsession_client_reqwest::{Client, UploadOptions};
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let client = Client::builder()
                        .base_url(base)
                        .token(TOKEN)
                        .build()
                        .map_err(|e| e.to_string())?;
                    let draft = client
                        .create_draft("reqwest")
                        .await
                        .map_err(|e| e.to_string())?;
                    let options = UploadOptions::new().on_progress(report);
                    client
                        .upload_file(&draft, &file, options)
                        .await
                        .map_err(|e| e.to_string())
                })
            }
        })
    }

    /// Uploads every file of `SIZES` to a server started with `extra` flags, one
    /// after the other, and checks each attachment from our side.
    fn uploads_at_defaults(self, extra: &[&str], seed: u64) {
        let started = Instant::now();
        let dir = tempfile::tempdir().unwrap();
        let server = SdkServer::start(&dir.path().join("data"), false, extra);
        for file in files(dir.path(), &SIZES, seed) {
            let (tx, _events) = mpsc::channel();
            let done = self
                .upload(server.base(), file.path.clone(), tx, None)
                .join()
                .expect("the upload thread ends");
            check(&done, &file, self);
        }
        eprintln!("{self:?} {extra:?}: {:.1?}", started.elapsed());
    }

    /// kill -9 of the server after the second acknowledged fragment of a 150 MB
    /// upload (the client is held there until the kill); it is started again once the client says it is retrying. The
    /// same call finishes the upload, byte-exact, without starting over.
    fn carries_on_after_kill9(self, extra: &[&str], seed: u64) {
        let dir = tempfile::tempdir().unwrap();
        let mut server = SdkServer::start(&dir.path().join("data"), false, extra);
        let file = files(dir.path(), &SIZES[2..3], seed).remove(0);
        let (tx, events) = mpsc::channel();
        let (release, held) = mpsc::channel();
        let hold = Hold {
            after: 2,
            release: Mutex::new(Some(held)),
        };
        let upload = self.upload(server.base(), file.path.clone(), tx, Some(hold));
        let deadline = Instant::now() + LIMIT;
        let next = |what: &str| {
            let left = deadline.saturating_duration_since(Instant::now());
            events
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("{self:?}: no progress event {what}"))
        };
        let mut acked = Vec::new();
        while acked.len() < 2 {
            if let ProgressKind::Acknowledged { acknowledged, .. } = next("before the kill") {
                acked.push(acknowledged);
            }
        }
        server.kill9();
        release.send(()).unwrap();
        let mut after_kill = Vec::new();
        loop {
            match next("after the kill") {
                ProgressKind::Retrying(_) => break,
                kind => after_kill.push(kind),
            }
        }
        server.restart();
        let done = upload.join().expect("the upload thread ends");
        check(&done, &file, self);
        let resent_from = events.try_iter().find_map(|k| match k {
            ProgressKind::Acknowledged { acknowledged, .. } => Some(acknowledged),
            _ => None,
        });
        // Whatever was acknowledged before the kill is not sent again: the next
        // acknowledgement is past it.
        let last_before = after_kill
            .iter()
            .filter_map(|k| match k {
                ProgressKind::Acknowledged { acknowledged, .. } => Some(*acknowledged),
                _ => None,
            })
            .chain(acked.iter().copied())
            .max()
            .unwrap();
        assert!(
            resent_from.is_some_and(|n| n > last_before),
            "{self:?}: acknowledged {last_before} before the kill, then {resent_from:?}"
        );
    }
}

/// The upload succeeded and the attachment at its `Location` is `file`'s bytes.
fn check(done: &Result<Uploaded, String>, file: &TestFile, who: Transport) {
    let name = file.path.display();
    let done = done
        .as_ref()
        .unwrap_or_else(|e| panic!("{who:?} {name}: {e}"));
    assert_eq!(done.size, file.size as u64, "{who:?} {name}");
    let location = done.location.as_deref().expect("a Location");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bytes = rt.block_on(download(&reqwest::Client::new(), location, TOKEN));
    assert_eq!(sha256_hex(&bytes), file.sha256, "{who:?} {name}");
}

macro_rules! client_tests {
    ($($test:ident: $transport:ident.$run:ident($($flag:literal),*), $seed:literal;)*) => {$(
        #[test]
        fn $test() {
            Transport::$transport.$run(&[$($flag),*], $seed);
        }
    )*};
}

client_tests! {
    reqwest_uploads_at_its_defaults_to_the_default_server:
        Reqwest.uploads_at_defaults(), 0x7271_0001;
    reqwest_uploads_at_its_defaults_in_the_outlook_dialect:
        Reqwest.uploads_at_defaults("--dialect", "outlook"), 0x7271_0002;
    reqwest_carries_on_after_a_kill9_of_the_default_server:
        Reqwest.carries_on_after_kill9(), 0x7271_0003;
    reqwest_carries_on_after_a_kill9_in_the_outlook_dialect:
        Reqwest.carries_on_after_kill9("--dialect", "outlook"), 0x7271_0004;
    ureq_uploads_at_its_defaults_to_the_default_server:
        Ureq.uploads_at_defaults(), 0x7572_0001;
    ureq_uploads_at_its_defaults_in_the_outlook_dialect:
        Ureq.uploads_at_defaults("--dialect", "outlook"), 0x7572_0002;
    ureq_carries_on_after_a_kill9_of_the_default_server:
        Ureq.carries_on_after_kill9(), 0x7572_0003;
    ureq_carries_on_after_a_kill9_in_the_outlook_dialect:
        Ureq.carries_on_after_kill9("--dialect", "outlook"), 0x7572_0004;
}
