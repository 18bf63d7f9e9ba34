//! Records in PostgreSQL, shared by every server node (`--meta postgres://…`).
//!
//! Each record is one row holding the same JSON the disk store writes, so both
//! stores keep one shape. What PostgreSQL adds is the ordering across nodes: a
//! session is changed only by the holder of its **lease** (`lease_owner`, a
//! random attempt id, until `lease_until` by the database's clock), taken with one
//! conditional `UPDATE`, renewed while a fragment's bytes flow, and given back
//! with the commit that counts the fragment (`… WHERE lease_owner = $me`, so a
//! holder whose lease was taken over changes nothing). Two nodes never both accept
//! bytes of one session at once (the loser answers `409 fragmentInProgress`, as
//! one node does for a concurrent `PUT`), and no connection is held while a
//! fragment arrives: a slow client costs a lease row, not a pooled connection. A
//! node that dies or stops answering keeps its sessions one lease at most; then
//! the next request takes them (the new request wins, across nodes). Counted
//! fragments are appended to `session_parts`, one row each.
//!
//! The schema lives in `migrations/`, applied in order at start-up under an
//! advisory lock, so nodes starting together migrate once.

use std::fmt::Write as _;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use super::s3::Part;
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
    (
        3,
        "leases",
        include_str!("../../migrations/0003_leases.sql"),
    ),
];

/// An arbitrary constant naming the advisory lock that serialises migrations.
const MIGRATION_LOCK: i64 = 0x7570_7365_7373_696f;

/// Connections per node. Each statement takes one for its round trip only (a
/// fragment holds a lease row, not a connection), so this bounds the database
/// work a node does at once, not the uploads it serves.
const POOL_SIZE: usize = 32;

/// Longest a single statement may run, and how long a connection may stay silent
/// before the kernel gives up on it: a database that stops answering fails
/// requests in seconds instead of hanging them.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Records in PostgreSQL.
#[derive(Clone)]
pub(crate) struct Postgres {
    pool: Pool,
    /// How long a lease lasts from its last renewal.
    lease: Duration,
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
    super::socket_lost(e)
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
    /// brings the schema up to date. `lease` is how long a session's lease lasts
    /// from its last renewal: how long a node that dies or stops answering keeps
    /// its sessions.
    pub(crate) async fn connect(url: &str, lease: Duration) -> io::Result<Self> {
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
        let this = Self { pool, lease };
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

/// What [`Postgres::lease_session`] found.
pub(crate) enum PgLeased {
    /// The lease is ours.
    Held(Box<PgLease>),
    /// Another attempt holds an unexpired lease.
    Busy,
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

    /// Takes the lease of session `id` for a new attempt, if no other attempt
    /// holds one that is still running (by the database's clock).
    pub(crate) async fn lease_session(&self, id: &str) -> io::Result<PgLeased> {
        let owner = attempt_id()?;
        let client = self.client().await?;
        let take = client
            .prepare_cached(
                "UPDATE sessions SET lease_owner = $2, lease_until = now() + make_interval(secs => $3)
                 WHERE id = $1 AND (lease_owner IS NULL OR lease_until <= now())
                 RETURNING record, parts",
            )
            .await
            .map_err(db_err)?;
        let row = soft_write(&client, &take, &[&id, &owner, &self.lease.as_secs_f64()]).await?;
        let Some(row) = row else {
            let exists = client
                .prepare_cached("SELECT 1 FROM sessions WHERE id = $1")
                .await
                .map_err(db_err)?;
            let exists = client
                .query_opt(&exists, &[&id])
                .await
                .map_err(db_err)?
                .is_some();
            return Ok(if exists {
                PgLeased::Busy
            } else {
                PgLeased::Missing
            });
        };
        let record: SessionRecord = from_json(row.get::<_, Json<serde_json::Value>>(0).0)?;
        let counted: i32 = row.get(1);
        let lease = PgLease {
            pg: self.clone(),
            id: id.to_owned(),
            owner,
            record,
            counted: u64::try_from(counted).unwrap_or(0),
            done: false,
            lost: Arc::new(AtomicBool::new(false)),
            renewing: None,
        };
        Ok(PgLeased::Held(Box::new(lease.renewed_on_a_timer())))
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
    client: &impl tokio_postgres::GenericClient,
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

/// A random id for one attempt at a session: its lease's owner, and part of the
/// key of the object it writes.
fn attempt_id() -> io::Result<String> {
    let n = getrandom::u64().map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
    Ok(format!("{n:016x}"))
}

/// A session's lease, held by this request: renewed every third of a lease by a
/// task of its own for as long as it is held (whatever the request is doing:
/// waiting for bytes, writing them, committing), so a live holder never loses it;
/// a node that dies or is cut off from the database stops renewing, and its
/// leases run out. Dropped without [`PgLease::save`] or [`PgLease::release`], it
/// is given back in the background.
pub(crate) struct PgLease {
    pg: Postgres,
    id: String,
    owner: String,
    record: SessionRecord,
    /// Fragments counted in `session_parts` when the lease was taken.
    counted: u64,
    /// Saved or released: nothing to give back.
    done: bool,
    /// Set by the renewing task when the lease is no longer ours.
    lost: Arc<AtomicBool>,
    /// The renewing task, stopped when the lease is saved, given back or dropped.
    renewing: Option<tokio::task::AbortHandle>,
}

/// What [`lease_lost`] carries, so that the engine can tell it from other
/// failures of the store.
#[derive(Debug, thiserror::Error)]
#[error("the session's lease passed to a newer request")]
pub(crate) struct LeaseLost;

/// Why a holder's write or [`PgLease::save`] changed nothing: its lease passed to
/// another attempt (it ran out first).
pub(crate) fn lease_lost() -> io::Error {
    io::Error::other(LeaseLost)
}

/// Whether `err` is a [`lease_lost`].
pub(crate) fn is_lease_lost(err: &io::Error) -> bool {
    err.get_ref()
        .is_some_and(<dyn std::error::Error + Send + Sync>::is::<LeaseLost>)
}

impl PgLease {
    /// Starts the task that renews this lease every third of a lease.
    fn renewed_on_a_timer(mut self) -> Self {
        let (renewer, lost) = (self.renewer(), Arc::clone(&self.lost));
        let every = self.pg.lease / 3;
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match renewer.renew().await {
                    Ok(true) => {}
                    Ok(false) => {
                        lost.store(true, Ordering::Relaxed);
                        return;
                    }
                    // Out of reach: the commit will tell whether it held.
                    Err(e) => {
                        tracing::warn!(session = %renewer.id, error = %e, "could not renew a lease");
                    }
                }
            }
        });
        self.renewing = Some(task.abort_handle());
        self
    }

    /// Whether the renewing task found the lease gone.
    pub(crate) fn lost(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.lost)
    }

    fn stop_renewing(&mut self) {
        if let Some(task) = self.renewing.take() {
            task.abort();
        }
    }

    /// The session's record as it was when the lease was taken.
    pub(crate) fn record(&self) -> &SessionRecord {
        &self.record
    }

    /// Fragments the session had counted when the lease was taken.
    pub(crate) fn counted(&self) -> u64 {
        self.counted
    }

    /// This attempt's id.
    pub(crate) fn owner(&self) -> &str {
        &self.owner
    }

    fn renewer(&self) -> Renewer {
        Renewer {
            pg: self.pg.clone(),
            id: self.id.clone(),
            owner: self.owner.clone(),
        }
    }

    /// Counts a fragment, `part`, and writes the session's new record (or deletes
    /// it, with `None`), with a finished attachment whose manifest is every
    /// counted fragment, all or nothing, and gives the lease back; refused
    /// ([`lease_lost`]) if the lease passed to another attempt meanwhile.
    pub(crate) async fn save(
        mut self,
        session: Option<&SessionRecord>,
        part: Option<&Part>,
        attachment: Option<&mut AttachmentRecord>,
    ) -> io::Result<()> {
        let mut client = self.pg.client().await?;
        // Statements prepared once per connection; the session's change and the
        // counted fragment go out together (one round trip), and only then is
        // the first's count looked at.
        let change = match session {
            Some(_) => client.prepare_cached(
                "UPDATE sessions SET record = $3, deadline = $4, parts = parts + $5,
                     lease_owner = NULL, lease_until = NULL
                 WHERE id = $1 AND lease_owner = $2",
            ),
            None => {
                client.prepare_cached("DELETE FROM sessions WHERE id = $1 AND lease_owner = $2")
            }
        }
        .await
        .map_err(db_err)?;
        let count = client
            .prepare_cached(
                "INSERT INTO session_parts (session_id, start_byte, end_byte, attempt)
                 VALUES ($1, $2, $3, $4)",
            )
            .await
            .map_err(db_err)?;
        let tx = client.transaction().await.map_err(db_err)?;
        let added = i32::from(part.is_some());
        let (record, due) = match session {
            Some(s) => (Some(Json(to_json(s)?)), deadline(&s.snapshot)),
            None => (None, None),
        };
        let changing = async {
            match &record {
                Some(record) => {
                    tx.execute(&change, &[&self.id, &self.owner, record, &due, &added])
                        .await
                }
                None => tx.execute(&change, &[&self.id, &self.owner]).await,
            }
        };
        let part_row = part
            .map(|p| {
                Ok::<_, io::Error>((
                    to_i64(p.start)?,
                    to_i64(p.end)?,
                    p.attempt.as_deref().unwrap_or(""),
                ))
            })
            .transpose()?;
        let counting = async {
            match &part_row {
                Some((start, end, attempt)) => tx
                    .execute(&count, &[&self.id, start, end, attempt])
                    .await
                    .map(Some),
                None => Ok(None),
            }
        };
        let (changed, counted) = futures_util::future::join(changing, counting).await;
        if changed.map_err(db_err)? != 1 {
            // Rolled back as the transaction drops; the lease is not ours to free.
            self.done = true;
            self.stop_renewing();
            return Err(lease_lost());
        }
        counted.map_err(db_err)?;
        if let Some(attachment) = attachment {
            // The manifest: fragments listed in a record written before the
            // table existed, then the table's.
            let rows = tx
                .query(
                    "SELECT start_byte, end_byte, attempt FROM session_parts
                     WHERE session_id = $1 ORDER BY start_byte",
                    &[&self.id],
                )
                .await
                .map_err(db_err)?;
            let mut parts = self.record.parts.clone();
            for row in rows {
                let attempt: String = row.get(2);
                parts.push(Part {
                    start: u64::try_from(row.get::<_, i64>(0)).map_err(io::Error::other)?,
                    end: u64::try_from(row.get::<_, i64>(1)).map_err(io::Error::other)?,
                    attempt: (!attempt.is_empty()).then_some(attempt),
                });
            }
            parts.sort_unstable();
            attachment.parts = parts;
            insert_attachment(&*tx, attachment).await?;
        }
        tx.commit().await.map_err(db_err)?;
        self.done = true;
        self.stop_renewing();
        Ok(())
    }

    /// Gives the lease back, changing nothing, now (a dropped lease is given back
    /// too, but a moment later: another node asking at once would find it held).
    /// A database out of reach is asked again in the background.
    pub(crate) async fn release(mut self) {
        self.done = true;
        self.stop_renewing();
        let renewer = self.renewer();
        if renewer.give_back_once().await.is_err() {
            tokio::spawn(async move { renewer.give_back().await });
        }
    }
}

impl Drop for PgLease {
    fn drop(&mut self) {
        self.stop_renewing();
        // Where no runtime is left, the lease runs out by itself.
        if !self.done
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let renewer = self.renewer();
            rt.spawn(async move { renewer.give_back().await });
        }
    }
}

/// Renews one attempt's lease; cheap to clone into the fragment's writer.
#[derive(Clone)]
pub(crate) struct Renewer {
    pg: Postgres,
    id: String,
    owner: String,
}

impl Renewer {
    /// Extends the lease by its length from now; `false` when it is no longer
    /// this attempt's (taken over after it ran out, or the session is gone).
    pub(crate) async fn renew(&self) -> io::Result<bool> {
        let client = self.pg.client().await?;
        let renew = client
            .prepare_cached(
                "UPDATE sessions SET lease_until = now() + make_interval(secs => $3)
                 WHERE id = $1 AND lease_owner = $2 RETURNING 1",
            )
            .await
            .map_err(db_err)?;
        let renewed = soft_write(
            &client,
            &renew,
            &[&self.id, &self.owner, &self.pg.lease.as_secs_f64()],
        )
        .await?;
        Ok(renewed.is_some())
    }

    /// Frees the lease, once.
    async fn give_back_once(&self) -> io::Result<()> {
        let client = self.pg.client().await?;
        let free = client
            .prepare_cached(
                "UPDATE sessions SET lease_owner = NULL, lease_until = NULL
                 WHERE id = $1 AND lease_owner = $2 RETURNING 1",
            )
            .await
            .map_err(db_err)?;
        soft_write(&client, &free, &[&self.id, &self.owner])
            .await
            .map(drop)
    }

    /// Frees the lease. A database out of reach (restarting, say) is asked again
    /// every half second until the lease would have run out anyway, so that the
    /// client's retry finds the session free as soon as the database is back.
    async fn give_back(&self) {
        let started = std::time::Instant::now();
        loop {
            match self.give_back_once().await {
                Ok(()) => return,
                Err(e) if started.elapsed() >= self.pg.lease => {
                    tracing::warn!(session = %self.id, error = %e, "could not give a lease back; it runs out by itself");
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

/// Runs `statement` (one row at most) in a transaction of its own whose commit
/// does not wait for the disk (`synchronous_commit = off`), sent as one round
/// trip. For leases only: a crash of the database may lose the last ones, which
/// is a lease that ran out early; the commit that counts a fragment, checked
/// against the lease's owner, is durable.
async fn soft_write(
    client: &Object,
    statement: &tokio_postgres::Statement,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> io::Result<Option<tokio_postgres::Row>> {
    // Polled in order, so sent in order on the connection, before any answer.
    let (begun, row, done) = futures_util::future::join3(
        client.batch_execute("BEGIN; SET LOCAL synchronous_commit = off"),
        client.query_opt(statement, params),
        client.batch_execute("COMMIT"),
    )
    .await;
    begun.map_err(db_err)?;
    let row = row.map_err(db_err)?;
    done.map_err(db_err)?;
    Ok(row)
}

fn to_i64(n: u64) -> io::Result<i64> {
    i64::try_from(n).map_err(io::Error::other)
}
