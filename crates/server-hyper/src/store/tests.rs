//! The store suite: what every [`SessionStore`] must do, run against each store.
//! A new store passes it before anything else uses it.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::TryStreamExt as _;
use upsession_core::ByteRange;
use upsession_core::identity::Mailbox;
use upsession_core::route::ItemKind;
use upsession_core::session::{Limits, PutDecision, Session};
use upsession_core::wire::AttachmentItem;

use super::{AttachmentRecord, ItemRecord, Locked, SessionRecord, SessionStore, Wait};

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_900_000_000 + secs)
}

/// Alice's message `item-1`, which the sessions of these tests attach to.
fn item_1() -> ItemRecord {
    ItemRecord {
        id: "item-1".into(),
        kind: ItemKind::Message,
        subject: "s".into(),
        created: t(0),
        owner: Mailbox::of("alice"),
    }
}

pub(crate) fn new_session(id: &str, item: &str, size: u64) -> (SessionRecord, Session) {
    let limits = Limits::default().with_min_size(1);
    let session = Session::open(t(0), size, &limits).unwrap();
    let record = SessionRecord {
        id: id.into(),
        item_id: item.into(),
        kind: ItemKind::Message,
        beta: false,
        user: None,
        attachment_id: format!("att-{id}"),
        app: "app".into(),
        attachment: AttachmentItem::file("f.bin", size),
        snapshot: session.snapshot(),
        parts: Vec::new(),
        sums: Vec::new(),
        drive: None,
        owner: Mailbox::of("alice"),
        journal_epoch: 0,
    };
    (record, session)
}

/// The session's lock. A guard dropped just before lets go a moment later in the
/// shared store (its rollback runs in a task): busy is waited out, for 5 s at most.
async fn held(store: &dyn SessionStore, id: &str) -> Box<dyn super::SessionGuard> {
    for _ in 0..100 {
        match store.lock(id, Wait::No).await.unwrap() {
            Locked::Held(guard) => return guard,
            Locked::Busy => tokio::time::sleep(Duration::from_millis(50)).await,
            Locked::Missing => panic!("{id} is missing"),
        }
    }
    panic!("{id} stayed busy for 5 s")
}

/// Stores `data[range]` through a held session and commits it.
async fn store_fragment(store: &dyn SessionStore, id: &str, data: &[u8], first: u64, last: u64) {
    let mut guard = held(store, id).await;
    let mut session = Session::restore(&guard.record().snapshot).unwrap();
    let header = format!("bytes {first}-{last}/{}", data.len());
    let PutDecision::Write(ticket) = session
        .handle_put(t(1), Some(&header), Some(last - first + 1))
        .unwrap()
    else {
        panic!("new bytes are written")
    };
    let range = ticket.range();
    let mut writer = guard.writer(range).await.unwrap();
    let bytes = Bytes::copy_from_slice(&data[first as usize..=last as usize]);
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, &bytes) as u32;
    writer.write(bytes).await.unwrap();
    writer.finish().await.unwrap();
    let pending = session.prepare_commit(t(1), ticket).unwrap();
    let commit = guard.record().commit(range, (crc, None), &pending, t(1));
    guard.commit(commit).await.unwrap();
    let _ = session.confirm(pending);
}

/// Every store: items, sessions, exclusive locks, commits, completion, close, expiry.
pub(crate) async fn suite(store: Arc<dyn SessionStore>) {
    let store = &*store;
    let key = store.server_key().await.unwrap();
    assert_eq!(store.server_key().await.unwrap(), key, "one key");

    let item = item_1();
    store.put_item(&item).await.unwrap();
    let view = store.item("item-1").await.unwrap().expect("the item");
    assert!(view.attachments.is_empty());
    // The owner is stored with the item: it decides who may see it.
    assert_eq!(view.record.owner, Mailbox::of("alice"));
    assert!(store.item("nope").await.unwrap().is_none());

    let data: Vec<u8> = (0..10u8).collect();
    let (record, _) = new_session("s-1", "item-1", 10);
    store.create_session(&record).await.unwrap();
    let peeked = store.peek("s-1").await.unwrap().unwrap();
    assert_eq!(
        (peeked.id.as_str(), &peeked.owner),
        ("s-1", &Mailbox::of("alice"))
    );
    assert!(matches!(
        store.lock("nope", Wait::No).await.unwrap(),
        Locked::Missing
    ));

    // One request at a time.
    let guard = held(store, "s-1").await;
    assert!(matches!(
        store.lock("s-1", Wait::No).await.unwrap(),
        Locked::Busy
    ));
    guard.release().await;
    let guard = held(store, "s-1").await;
    drop(guard);

    store_fragment(store, "s-1", &data, 0, 5).await;
    let peeked = store.peek("s-1").await.unwrap().unwrap();
    assert_eq!(
        peeked.snapshot.received,
        vec![[0, 6]],
        "committed is what peek sees"
    );
    store_fragment(store, "s-1", &data, 6, 9).await;
    let view = store.item("item-1").await.unwrap().unwrap();
    assert_eq!(
        view.attachments.len(),
        1,
        "the completed upload is an attachment"
    );
    let attachment = &view.attachments[0];
    assert_eq!(read(store, attachment, whole(attachment)).await, data);
    // Any window, inside one fragment or across both (they meet at 6).
    for (start, end) in [(0, 1), (2, 6), (5, 7), (6, 10), (9, 10), (1, 9)] {
        let window = ByteRange::new(start, end).unwrap();
        let part = read(store, attachment, window).await;
        assert_eq!(part, &data[start as usize..end as usize], "{window:?}");
    }

    // Closing a completed session keeps its attachment.
    held(store, "s-1").await.close(false).await.unwrap();
    assert!(store.peek("s-1").await.unwrap().is_none());
    assert!(matches!(
        store.lock("s-1", Wait::No).await.unwrap(),
        Locked::Missing
    ));
    let view = store.item("item-1").await.unwrap().unwrap();
    assert_eq!(view.attachments.len(), 1);

    // An abandoned session is due once its expiry passes, and closes with its bytes.
    let (record, _) = new_session("s-2", "item-1", 10);
    store.create_session(&record).await.unwrap();
    store_fragment(store, "s-2", &data, 0, 3).await;
    let expiry = store
        .peek("s-2")
        .await
        .unwrap()
        .unwrap()
        .snapshot
        .expires_at;
    let due = store
        .due(expiry + Duration::from_secs(1), 100)
        .await
        .unwrap();
    assert!(due.contains(&"s-2".to_owned()), "{due:?}");
    assert!(
        store
            .list_sessions()
            .await
            .unwrap()
            .iter()
            .any(|r| r.id == "s-2")
    );
    assert_eq!(
        store.uploading().await.unwrap(),
        vec![("app".to_owned(), "s-2".to_owned(), 10)],
        "only the open session counts against its app"
    );
    held(store, "s-2").await.close(true).await.unwrap();
    assert!(store.peek("s-2").await.unwrap().is_none());
    assert!(store.uploading().await.unwrap().is_empty());
    deleting_an_attachment(store, &data).await;
    let _ = ByteRange::new(0, 1);
}

/// An attachment deleted is neither listed nor readable, and deleted once.
async fn deleting_an_attachment(store: &dyn SessionStore, data: &[u8]) {
    let (record, _) = new_session("s-3", "item-1", 10);
    store.create_session(&record).await.unwrap();
    store_fragment(store, "s-3", data, 0, 9).await;
    let view = store.item("item-1").await.unwrap().unwrap();
    let made = view
        .attachments
        .iter()
        .find(|a| a.meta.id == "att-s-3")
        .expect("the attachment")
        .clone();
    assert_eq!(made.session.as_deref(), Some("s-3"), "it names its session");
    held(store, "s-3").await.close(false).await.unwrap();
    assert!(store.delete_attachment(&made).await.unwrap());
    let view = store.item("item-1").await.unwrap().unwrap();
    assert_eq!(view.attachments.len(), 1, "the other attachment stays");
    assert!(view.attachments.iter().all(|a| a.meta.id != "att-s-3"));
    let read = match store.read_attachment(&made, whole(&made)).await {
        Ok(stream) => stream.map_ok(|b| b.to_vec()).try_concat().await,
        Err(e) => Err(e),
    };
    assert!(read.is_err(), "its bytes are gone");
    assert!(
        !store.delete_attachment(&made).await.unwrap(),
        "deleted once"
    );
}

#[tokio::test]
async fn the_local_store_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = super::local::LocalStore::open(dir.path(), crate::config::Fsync::Always)
        .await
        .unwrap();
    suite(Arc::new(store)).await;
    // What was committed is there again after a restart.
    let again = super::local::LocalStore::open(dir.path(), crate::config::Fsync::Always)
        .await
        .unwrap();
    assert_eq!(
        again
            .item("item-1")
            .await
            .unwrap()
            .unwrap()
            .attachments
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_store_passes_the_suite() {
    let required = std::env::var_os("UPSESSION_REQUIRE_ENGINES").is_some_and(|v| v == "1");
    let engines = tokio::task::spawn_blocking(|| {
        let pg = upsession_testbed::Postgres::start()?;
        let garage = upsession_testbed::Garage::start(1)?;
        Ok::<_, std::io::Error>((pg, garage))
    })
    .await
    .unwrap();
    let (pg, garage) = match engines {
        Ok(engines) => engines,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            eprintln!("skipped: {e}");
            return;
        }
        Err(e) => panic!("the storage engines did not start: {e}"),
    };
    let credentials = super::s3::S3Credentials {
        key_id: garage.env()[0].1.clone(),
        secret: garage.env()[1].1.clone(),
    };
    let store = super::shared::SharedStore::open(
        &garage.store_url(0),
        &pg.url("upsession"),
        Duration::from_secs(60),
        Some(&credentials),
        Arc::new(crate::metrics::Metrics::new()),
    )
    .await
    .unwrap();
    suite(Arc::new(store)).await;
}

/// Every byte of `attachment`.
fn whole(attachment: &AttachmentRecord) -> ByteRange {
    ByteRange::new(0, attachment.meta.size).expect("attachments are not empty")
}

/// The bytes `window` of `attachment`, read whole.
async fn read(
    store: &dyn SessionStore,
    attachment: &AttachmentRecord,
    window: ByteRange,
) -> Vec<u8> {
    store
        .read_attachment(attachment, window)
        .await
        .unwrap()
        .map_ok(|b| b.to_vec())
        .try_concat()
        .await
        .unwrap()
}

/// `sslmode=verify-full` with `sslrootcert`: the store reaches a PostgreSQL that
/// takes TLS connections only, trusting the CA that signed its certificate, and
/// refuses it under a CA that did not (or without TLS at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_store_reaches_postgres_over_verified_tls() {
    let required = std::env::var_os("UPSESSION_REQUIRE_ENGINES").is_some_and(|v| v == "1");
    let pg = match tokio::task::spawn_blocking(upsession_testbed::Postgres::start_tls)
        .await
        .unwrap()
    {
        Ok(pg) => pg,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            eprintln!("skipped: {e}");
            return;
        }
        Err(e) => panic!("PostgreSQL did not start: {e}"),
    };
    let timeout = Duration::from_secs(60);
    let url = pg.url("upsession");
    let ca = pg.ca_file().display().to_string();
    let verified = format!("{url}?sslmode=verify-full&sslrootcert={ca}");
    let store = super::pg::Postgres::connect(&verified, timeout)
        .await
        .unwrap();
    store.ping().await.unwrap();
    store.now().await.unwrap();
    // The server takes nothing else: without TLS the connection is refused.
    let plain = super::pg::Postgres::connect(&format!("{url}?sslmode=disable"), timeout).await;
    assert!(plain.is_err(), "a plain connection was taken");
    // A CA that signed nothing here: the server's certificate is refused.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.pem");
    std::fs::write(&other, upsession_testbed::unrelated_ca_pem().unwrap()).unwrap();
    let err = super::pg::Postgres::connect(
        &format!("{url}?sslmode=verify-full&sslrootcert={}", other.display()),
        timeout,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    // The right CA, but another address of the same server, one its
    // certificate does not name: verify-full checks the name too.
    let elsewhere = url.replace("127.0.0.1", "127.0.0.2");
    assert_ne!(elsewhere, url);
    let err = super::pg::Postgres::connect(
        &format!("{elsewhere}?sslmode=verify-full&sslrootcert={ca}"),
        timeout,
    )
    .await
    .unwrap_err();
    let said = err.to_string().to_lowercase();
    assert!(said.contains("not valid for name"), "{err}");
}

/// The operating system's files, counting the `syncfs` calls.
#[derive(Debug, Default)]
struct CountingSyncfs(std::sync::atomic::AtomicUsize);

impl CountingSyncfs {
    fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl super::files::Files for CountingSyncfs {
    fn background_syncs(&self) -> bool {
        super::files::RealFiles.background_syncs()
    }
    fn sync_file_system(&self, dir: &std::path::Path) -> std::io::Result<()> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        super::files::RealFiles.sync_file_system(dir)
    }
    fn lock(
        &self,
        root: &std::path::Path,
    ) -> std::io::Result<Box<dyn std::fmt::Debug + Send + Sync>> {
        super::files::RealFiles.lock(root)
    }
    fn create_dir_all(&self, dir: &std::path::Path) -> std::io::Result<()> {
        super::files::RealFiles.create_dir_all(dir)
    }
    fn list(&self, dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
        super::files::RealFiles.list(dir)
    }
    fn read(&self, path: &std::path::Path) -> std::io::Result<Vec<u8>> {
        super::files::RealFiles.read(path)
    }
    fn read_at(&self, path: &std::path::Path, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        super::files::RealFiles.read_at(path, offset, len)
    }
    fn len(&self, path: &std::path::Path) -> std::io::Result<u64> {
        super::files::RealFiles.len(path)
    }
    fn write_file(
        &self,
        path: &std::path::Path,
        bytes: &[u8],
        sync: bool,
        private: bool,
    ) -> std::io::Result<()> {
        super::files::RealFiles.write_file(path, bytes, sync, private)
    }
    fn open_writer(
        &self,
        path: &std::path::Path,
    ) -> std::io::Result<Box<dyn super::files::FileHandle>> {
        super::files::RealFiles.open_writer(path)
    }
    fn rename(&self, from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
        super::files::RealFiles.rename(from, to)
    }
    fn remove(&self, path: &std::path::Path) -> std::io::Result<()> {
        super::files::RealFiles.remove(path)
    }
    fn sync_dir(&self, dir: &std::path::Path) -> std::io::Result<()> {
        super::files::RealFiles.sync_dir(dir)
    }
    fn stream(
        &self,
        path: &std::path::Path,
        window: ByteRange,
    ) -> std::io::Result<super::ByteStream> {
        super::files::RealFiles.stream(path, window)
    }
}

/// A `--fsync never` store in `dir` on `files`, with Alice's `item-1` and `n`
/// completed 10-byte attachments (`att-s-0`…).
async fn completed_under_fsync_never(
    files: Arc<CountingSyncfs>,
    dir: &std::path::Path,
    n: usize,
) -> super::local::LocalStore {
    let store = super::local::LocalStore::open_on(files, dir, crate::config::Fsync::Never)
        .await
        .unwrap();
    store.put_item(&item_1()).await.unwrap();
    let data: Vec<u8> = (0..10u8).collect();
    for i in 0..n {
        let id = format!("s-{i}");
        let (record, _) = new_session(&id, "item-1", 10);
        store.create_session(&record).await.unwrap();
        store_fragment(&store, &id, &data, 0, 9).await;
    }
    store
}

/// Stops `store` (without waiting out the delay) and checks that every
/// completion waiting for its sync was synced and recorded as such.
async fn stop_syncs_every_waiting_completion(
    store: &super::local::LocalStore,
    dir: &std::path::Path,
) {
    tokio::time::timeout(Duration::from_secs(20), store.settled())
        .await
        .expect("a stop does not wait out the delay");
    assert!(
        unsynced_records(dir).is_empty(),
        "every one synced at the stop, and recorded"
    );
}

/// The attachment records in `dir` that still carry their sums (their bytes
/// not synced yet), by file name.
fn unsynced_records(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir.join("attachments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter(|p| {
            let record: serde_json::Value =
                serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
            record.get("unsynced").is_some()
        })
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// Under `--fsync never` a completed attachment's bytes are synced later, not
/// beside the uploads still going: its record keeps its sums until then. A stop
/// runs the waiting sync at once (it does not wait out the delay) and records the
/// attachment as synced; one deleted while it waited stays deleted. Two waiting
/// take a sync each, no `syncfs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_fsync_never_a_completions_sync_waits_and_a_stop_runs_it_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let files = Arc::new(CountingSyncfs::default());
    let store = completed_under_fsync_never(Arc::clone(&files), dir.path(), 2).await;
    let view = store.item("item-1").await.unwrap().unwrap();
    let second = view.attachments.iter().find(|a| a.meta.id == "att-s-1");
    held(&store, "s-1").await.close(false).await.unwrap();
    assert!(store.delete_attachment(second.unwrap()).await.unwrap());
    // Nothing to wait for but the absence of a sync: a while, then still there.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        unsynced_records(dir.path()),
        ["att-s-0.json"],
        "the sync waits"
    );
    stop_syncs_every_waiting_completion(&store, dir.path()).await;
    let names: Vec<String> = std::fs::read_dir(dir.path().join("attachments"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with("att-s-1")), "{names:?}");
    assert_eq!(files.count(), 0, "two waiting: a sync each");
}

/// Many completions waiting at a stop take one sync of the file system (then
/// each its own, which finds nothing left to write), and every one is recorded
/// as synced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_completions_waiting_at_a_stop_are_all_synced_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let files = Arc::new(CountingSyncfs::default());
    let store = completed_under_fsync_never(Arc::clone(&files), dir.path(), 20).await;
    assert_eq!(unsynced_records(dir.path()).len(), 20, "every sync waits");
    stop_syncs_every_waiting_completion(&store, dir.path()).await;
    assert_eq!(files.count(), 1, "one syncfs for the twenty");
}
