//! Records in PostgreSQL, shared by every server node (`--meta postgres://…`).
//!
//! Each record is one row holding the same JSON the disk store writes, so both
//! stores keep one shape. What PostgreSQL adds is the ordering across nodes: a
//! fragment is written under `SELECT … FOR UPDATE NOWAIT` of its session's row, so
//! two nodes never both accept bytes of one session at once (the loser answers
//! `409 fragmentInProgress`, as one node does for a concurrent `PUT`). The lock is
//! a transaction: a node that dies mid-fragment drops its connection and the lock
//! goes with it, and `idle_in_transaction_session_timeout` frees it from a node
//! that hangs instead.
//!
//! The schema lives in `migrations/`, applied in order at start-up under an
//! advisory lock, so nodes starting together migrate once.

use std::fmt::Write as _;
use std::io;
use std::time::{Duration, SystemTime};

use super::{
    AttachmentRecord, DriveRecord, ItemRecord, ItemView, SessionRecord, Uploading, deadline,
};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use serde::Serialize;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Json;

/// The schema, in order: (version, name, SQL).
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "records",
        include_str!("../../migrations/0001_records.sql"),
    ),
    (
        2,
        "drives",
        include_str!("../../migrations/0002_drives.sql"),
    ),
];

/// An arbitrary constant naming the advisory lock that serialises migrations.
const MIGRATION_LOCK: i64 = 0x7570_7365_7373_696f;

/// Connections per node: one is held for the length of each fragment being written.
const POOL_SIZE: usize = 64;

/// Of those, at most this many hold session locks at once, so status requests,
/// new sessions and the sweeper always find a connection; a fragment past it is
/// answered 503 with `Retry-After` before its body is read.
const MAX_LOCKS: usize = 48;

/// Longest a single statement may run, and how long a connection may stay silent
/// before the kernel gives up on it: a database that stops answering fails
/// requests in seconds instead of hanging them.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Records in PostgreSQL.
#[derive(Clone)]
pub(crate) struct Postgres {
    pool: Pool,
    locks: std::sync::Arc<tokio::sync::Semaphore>,
    /// How long a fragment may hold its session's lock before PostgreSQL frees it.
    lock_timeout: Duration,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: never print it.
        f.debug_struct("Postgres").finish_non_exhaustive()
    }
}

/// The error with its causes ("error connecting to server: Connection refused"),
/// of kind [`io::ErrorKind::ConnectionAborted`] when the database could not be
/// reached or went away (a request may be tried again in a moment: 503).
fn db_err<E: std::error::Error + 'static>(e: E) -> io::Error {
    let mut text = format!("PostgreSQL: {e}");
    let mut gone = connection_lost(&e);
    let mut cause = e.source();
    while let Some(c) = cause {
        let _ = write!(text, ": {c}");
        gone |= connection_lost(c);
        cause = c.source();
    }
    if gone {
        io::Error::new(io::ErrorKind::ConnectionAborted, text)
    } else {
        io::Error::other(text)
    }
}

/// Whether `e` itself says the database is unreachable or went away: a closed
/// connection, a refused one, a pool that found no connection in time, or the
/// server's own "connection exception" (class 08) and shutdown codes (57P01-3).
fn connection_lost(e: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(pg) = e.downcast_ref::<tokio_postgres::Error>() {
        return pg.is_closed()
            || pg.code().is_some_and(|c| {
                c.code().starts_with("08")
                    || [
                        SqlState::ADMIN_SHUTDOWN,
                        SqlState::CRASH_SHUTDOWN,
                        SqlState::CANNOT_CONNECT_NOW,
                    ]
                    .contains(c)
            });
    }
    if let Some(pool) = e.downcast_ref::<deadpool_postgres::PoolError>() {
        return matches!(pool, deadpool_postgres::PoolError::Timeout(_));
    }
    e.downcast_ref::<io::Error>().is_some_and(|io| {
        matches!(
            io.kind(),
            io::ErrorKind::ConnectionRefused
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::NotConnected
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
        )
    })
}

fn json_err(e: serde_json::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn to_json<T: Serialize>(v: &T) -> io::Result<serde_json::Value> {
    serde_json::to_value(v).map_err(json_err)
}

fn from_json<T: for<'de> serde::Deserialize<'de>>(v: serde_json::Value) -> io::Result<T> {
    serde_json::from_value(v).map_err(json_err)
}

impl Postgres {
    /// Connects (checking the URL and the server now, not at the first request) and
    /// brings the schema up to date. `lock_timeout` bounds how long a node that
    /// stops answering can keep a session locked.
    pub(crate) async fn connect(url: &str, lock_timeout: Duration) -> io::Result<Self> {
        let (url, tls) = super::pg_tls::split(url)?;
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not a PostgreSQL URL: {e}"),
            )
        })?;
        if let Some(mode) = super::pg_tls::ssl_mode(&tls) {
            config.ssl_mode(mode);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_options().is_none() {
            config.options(format!(
                "-c statement_timeout={}",
                STATEMENT_TIMEOUT.as_millis()
            ));
        }
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .tcp_user_timeout(STATEMENT_TIMEOUT);
        // A connection comes back from the pool outside any transaction,
        // whatever happened to the request that last used it.
        let recycling = || ManagerConfig {
            recycling_method: RecyclingMethod::Custom("ROLLBACK".into()),
        };
        let manager = match &tls {
            super::pg_tls::Tls::Plain => Manager::from_config(config, NoTls, recycling()),
            super::pg_tls::Tls::Verified { root_certificates } => Manager::from_config(
                config,
                super::pg_tls::connector(root_certificates)?,
                recycling(),
            ),
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(10)))
            .wait_timeout(Some(Duration::from_secs(30)))
            .build()
            .map_err(db_err)?;
        let this = Self {
            pool,
            locks: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_LOCKS)),
            lock_timeout,
        };
        this.migrate().await?;
        Ok(this)
    }

    async fn client(&self) -> io::Result<Object> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => db_err(e),
            e => db_err(e),
        })
    }

    async fn migrate(&self) -> io::Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(db_err)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS upsession_migrations (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(db_err)?;
        for (version, name, sql) in MIGRATIONS {
            let done = tx
                .query_opt(
                    "SELECT 1 FROM upsession_migrations WHERE version = $1",
                    &[version],
                )
                .await
                .map_err(db_err)?
                .is_some();
            if !done {
                tx.batch_execute(sql).await.map_err(db_err)?;
                tx.execute(
                    "INSERT INTO upsession_migrations (version, name) VALUES ($1, $2)",
                    &[version, name],
                )
                .await
                .map_err(db_err)?;
                tracing::info!(version, name, "database migration applied");
            }
        }
        tx.commit().await.map_err(db_err)
    }
}

/// What [`Postgres::lock_session`] found.
pub(crate) enum PgLocked {
    /// The row, locked by our transaction.
    Held(Box<PgLock>),
    /// Another transaction (on any node) holds it.
    Busy,
    /// Too many sessions are locked on this node already: try again shortly.
    Saturated,
    /// No such session.
    Missing,
}

impl Postgres {
    pub(crate) async fn server_key(&self) -> io::Result<[u8; 32]> {
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh).map_err(|e| io::Error::other(e.to_string()))?;
        let client = self.client().await?;
        // The first node to start wins; every other node reads its key.
        client
            .execute(
                "INSERT INTO server_key (id, key) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
                &[&fresh.as_slice()],
            )
            .await
            .map_err(db_err)?;
        let row = client
            .query_one("SELECT key FROM server_key WHERE id = 1", &[])
            .await
            .map_err(db_err)?;
        let key: Vec<u8> = row.get(0);
        key.try_into()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "server key is not 32 bytes"))
    }

    pub(crate) async fn put_item(&self, item: &ItemRecord) -> io::Result<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO items (id, record) VALUES ($1, $2)
                 ON CONFLICT (id) DO UPDATE SET record = excluded.record",
                &[&item.id, &Json(to_json(item)?)],
            )
            .await
            .map_err(db_err)
            .map(drop)
    }

    pub(crate) async fn put_session(&self, session: &SessionRecord) -> io::Result<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO sessions (id, record, deadline) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET record = excluded.record, deadline = excluded.deadline",
                &[&session.id, &Json(to_json(session)?), &deadline(&session.snapshot)],
            )
            .await
            .map_err(db_err)
            .map(drop)
    }

    pub(crate) async fn get_item(&self, id: &str) -> io::Result<Option<ItemView>> {
        let client = self.client().await?;
        let Some(row) = client
            .query_opt("SELECT record FROM items WHERE id = $1", &[&id])
            .await
            .map_err(db_err)?
        else {
            return Ok(None);
        };
        let item: ItemRecord = from_json(row.get::<_, Json<serde_json::Value>>(0).0)?;
        let attachments = client
            .query(
                "SELECT record FROM attachments WHERE item_id = $1 ORDER BY seq",
                &[&id],
            )
            .await
            .map_err(db_err)?
            .into_iter()
            .map(|r| from_json(r.get::<_, Json<serde_json::Value>>(0).0))
            .collect::<io::Result<Vec<AttachmentRecord>>>()?;
        Ok(Some(ItemView {
            record: item,
            attachments,
        }))
    }

    pub(crate) async fn get_drive(&self, id: &str) -> io::Result<Option<DriveRecord>> {
        self.client()
            .await?
            .query_opt("SELECT record FROM drives WHERE id = $1", &[&id])
            .await
            .map_err(db_err)?
            .map(|row| from_json(row.get::<_, Json<serde_json::Value>>(0).0))
            .transpose()
    }

    /// Stores a drive over the version `read` (`None`: a new drive); whether it
    /// was still that version.
    pub(crate) async fn put_drive(
        &self,
        drive: &DriveRecord,
        read: Option<u64>,
    ) -> io::Result<bool> {
        let version = i64::try_from(drive.tree.version).map_err(io::Error::other)?;
        let record = Json(to_json(drive)?);
        let client = self.client().await?;
        let changed = match read {
            None => {
                client
                    .execute(
                        "INSERT INTO drives (id, version, record) VALUES ($1, $2, $3)
                         ON CONFLICT (id) DO NOTHING",
                        &[&drive.tree.id, &version, &record],
                    )
                    .await
            }
            Some(read) => {
                let read = i64::try_from(read).map_err(io::Error::other)?;
                client
                    .execute(
                        "UPDATE drives SET version = $2, record = $3 WHERE id = $1 AND version = $4",
                        &[&drive.tree.id, &version, &record, &read],
                    )
                    .await
            }
        }
        .map_err(db_err)?;
        Ok(changed == 1)
    }

    /// The database's clock (`now()`).
    pub(crate) async fn now(&self) -> io::Result<SystemTime> {
        self.client()
            .await?
            .query_one("SELECT now()", &[])
            .await
            .map_err(db_err)
            .map(|row| row.get(0))
    }

    /// One round trip to the database.
    pub(crate) async fn ping(&self) -> io::Result<()> {
        self.client()
            .await?
            .simple_query("SELECT 1")
            .await
            .map_err(db_err)
            .map(drop)
    }

    /// Which of the sessions `ids` a record still names: a session row, or an
    /// attachment made by it (whose bytes are its objects).
    pub(crate) async fn referenced(
        &self,
        ids: &[String],
    ) -> io::Result<std::collections::HashSet<String>> {
        Ok(self
            .client()
            .await?
            .query(
                "SELECT id FROM sessions WHERE id = ANY($1)
                 UNION SELECT record->>'session' FROM attachments WHERE record->>'session' = ANY($1)",
                &[&ids],
            )
            .await
            .map_err(db_err)?
            .into_iter()
            .filter_map(|row| row.get::<_, Option<String>>(0))
            .collect())
    }

    pub(crate) async fn drive_uploads(&self) -> io::Result<Vec<AttachmentRecord>> {
        self.client()
            .await?
            .query(
                "SELECT a.record FROM attachments a JOIN drives d ON a.item_id = d.id",
                &[],
            )
            .await
            .map_err(db_err)?
            .into_iter()
            .map(|row| from_json(row.get::<_, Json<serde_json::Value>>(0).0))
            .collect()
    }

    pub(crate) async fn get_attachment(&self, id: &str) -> io::Result<Option<AttachmentRecord>> {
        self.client()
            .await?
            .query_opt("SELECT record FROM attachments WHERE id = $1", &[&id])
            .await
            .map_err(db_err)?
            .map(|row| from_json(row.get::<_, Json<serde_json::Value>>(0).0))
            .transpose()
    }

    pub(crate) async fn get_session(&self, id: &str) -> io::Result<Option<SessionRecord>> {
        self.client()
            .await?
            .query_opt("SELECT record FROM sessions WHERE id = $1", &[&id])
            .await
            .map_err(db_err)?
            .map(|row| from_json(row.get::<_, Json<serde_json::Value>>(0).0))
            .transpose()
    }

    /// Locks a session's row for this request, with `NOWAIT`.
    pub(crate) async fn lock_session(&self, id: &str) -> io::Result<PgLocked> {
        let Ok(permit) = std::sync::Arc::clone(&self.locks).try_acquire_owned() else {
            return Ok(PgLocked::Saturated);
        };
        // The guard exists before `BEGIN` is sent: however this future ends, the
        // transaction is rolled back before the connection is used again.
        let mut lock = PgLock {
            client: Some(self.client().await?),
            record: None,
            _permit: permit,
        };
        let timeout_ms = self.lock_timeout.as_millis().min(i32::MAX as u128);
        lock.client()
            .batch_execute(&format!(
                "BEGIN; SET LOCAL idle_in_transaction_session_timeout = {timeout_ms}"
            ))
            .await
            .map_err(db_err)?;
        let found = lock
            .client()
            .query_opt(
                "SELECT record FROM sessions WHERE id = $1 FOR UPDATE NOWAIT",
                &[&id],
            )
            .await;
        match found {
            Ok(Some(row)) => {
                lock.record = Some(from_json(row.get::<_, Json<serde_json::Value>>(0).0)?);
                Ok(PgLocked::Held(Box::new(lock)))
            }
            Ok(None) => Ok(PgLocked::Missing),
            Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => Ok(PgLocked::Busy),
            Err(e) => Err(db_err(e)),
        }
    }

    pub(crate) async fn due_sessions(
        &self,
        now: SystemTime,
        limit: u32,
    ) -> io::Result<Vec<String>> {
        Ok(self
            .client()
            .await?
            .query(
                "SELECT id FROM sessions WHERE deadline <= $1 ORDER BY deadline LIMIT $2",
                &[&now, &i64::from(limit)],
            )
            .await
            .map_err(db_err)?
            .into_iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// Deletes an attachment's row; whether there was one.
    pub(crate) async fn delete_attachment(&self, id: &str) -> io::Result<bool> {
        let deleted = self
            .client()
            .await?
            .execute("DELETE FROM attachments WHERE id = $1", &[&id])
            .await
            .map_err(db_err)?;
        Ok(deleted > 0)
    }

    /// Every session in the open phase, as the per-token limits count them.
    pub(crate) async fn uploading(&self) -> io::Result<Vec<Uploading>> {
        Ok(self
            .client()
            .await?
            .query(
                "SELECT record->>'app', id, (record->'snapshot'->>'size')::bigint FROM sessions
                 WHERE record->'snapshot'->>'phase' = 'open'",
                &[],
            )
            .await
            .map_err(db_err)?
            .into_iter()
            .map(|r| {
                let size: i64 = r.get(2);
                let app: Option<String> = r.get(0);
                (
                    app.unwrap_or_default(),
                    r.get(1),
                    u64::try_from(size).unwrap_or(0),
                )
            })
            .collect())
    }

    /// Up to `limit` session records, for the test double's inspection route.
    pub(crate) async fn list_sessions(&self, limit: u32) -> io::Result<Vec<SessionRecord>> {
        self.client()
            .await?
            .query(
                "SELECT record FROM sessions ORDER BY id LIMIT $1",
                &[&i64::from(limit)],
            )
            .await
            .map_err(db_err)?
            .into_iter()
            .map(|row| from_json(row.get::<_, Json<serde_json::Value>>(0).0))
            .collect()
    }
}

async fn insert_attachment(
    client: &tokio_postgres::Client,
    attachment: &AttachmentRecord,
) -> io::Result<()> {
    client
        .execute(
            "INSERT INTO attachments (id, item_id, record) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO NOTHING",
            &[
                &attachment.meta.id,
                &attachment.item_id,
                &Json(to_json(attachment)?),
            ],
        )
        .await
        .map_err(db_err)
        .map(drop)
}

/// A session row locked by an open transaction on a pooled connection. Dropped
/// without [`PgLock::save`], it is rolled back.
pub(crate) struct PgLock {
    /// `None` once saved.
    client: Option<Object>,
    record: Option<SessionRecord>,
    /// One of [`MAX_LOCKS`].
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl PgLock {
    fn client(&self) -> &tokio_postgres::Client {
        self.client
            .as_ref()
            .expect("the connection is held until saved")
    }
}

impl PgLock {
    /// The session's record as it was when locked.
    pub(crate) fn record(&self) -> &SessionRecord {
        self.record.as_ref().expect("a held lock has its record")
    }

    /// Writes the new record (or deletes it, with `None`) and, with it, a finished
    /// attachment, all or nothing; then releases the lock.
    pub(crate) async fn save(
        mut self,
        session: Option<&SessionRecord>,
        attachment: Option<&AttachmentRecord>,
    ) -> io::Result<()> {
        let client = self.client();
        if let Some(a) = attachment {
            insert_attachment(client, a).await?;
        }
        match session {
            Some(s) => client
                .execute(
                    "UPDATE sessions SET record = $2, deadline = $3 WHERE id = $1",
                    &[&s.id, &Json(to_json(s)?), &deadline(&s.snapshot)],
                )
                .await
                .map_err(db_err)?,
            None => client
                .execute("DELETE FROM sessions WHERE id = $1", &[&self.record().id])
                .await
                .map_err(db_err)?,
        };
        client.batch_execute("COMMIT").await.map_err(db_err)?;
        self.client = None;
        Ok(())
    }

    /// Releases the lock, changing nothing, now (a dropped lock is released too,
    /// but a moment later: another node asking at once would find it held).
    pub(crate) async fn release(mut self) {
        if let Some(client) = self.client.take() {
            rollback(client).await;
        }
    }
}

/// Ends the transaction; a connection that cannot is closed, never reused.
async fn rollback(client: Object) {
    if client.batch_execute("ROLLBACK").await.is_err() {
        drop(Object::take(client));
    }
}

impl Drop for PgLock {
    fn drop(&mut self) {
        // Not saved: roll back before the connection goes back to the pool. Where
        // no runtime is left, the connection is dropped, which aborts the transaction.
        if let Some(client) = self.client.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(rollback(client));
        }
    }
}
