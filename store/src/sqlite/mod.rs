//! The SQLite adapters: one database file in WAL mode, owned by one dedicated thread that runs
//! every statement. Async callers send it closures over a bounded channel and await the answer,
//! so no blocking I/O runs on the async runtime's worker threads, and because one thread owns the
//! connection, every operation is serialized: each write runs in its own IMMEDIATE transaction,
//! so a condition and the write it guards are atomic even against other processes on the file.

mod queue;
mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

pub use queue::SqliteQueue;
pub use store::SqliteStore;

use crate::spec::{queue_spec, QueueSpec, INDEXES};

/// Most requests waiting for the database thread; senders wait when it is full (backpressure).
pub const REQUESTS_QUEUED_MAX: usize = 1024;
/// Prepared statements kept per connection (every statement this adapter runs, with room).
pub const STATEMENTS_CACHED_MAX: usize = 128;
/// How long a write waits for another process's lock on the file before failing.
pub const BUSY_TIMEOUT_MS: u64 = 5_000;
/// Page cache of the connection, KiB.
pub const PAGE_CACHE_KIB: i64 = 64 * 1024;

type Request = Box<dyn FnOnce(&mut Connection) + Send>;

/// A handle to one SQLite database file and the thread that owns its connection. Cheap to
/// clone; the thread ends (and the connection closes) when the last clone is dropped.
#[derive(Clone)]
pub struct SqliteDb {
    inner: Arc<DbInner>,
}

struct DbInner {
    path: PathBuf,
    requests: mpsc::Sender<Request>,
}

impl std::fmt::Debug for SqliteDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteDb").field("path", &self.inner.path).finish()
    }
}

/// The database thread went away (it panicked); nothing more can run.
#[derive(Debug)]
pub(crate) struct DbClosed;

impl SqliteDb {
    /// Opens (creating if needed) the database file, sets WAL mode and creates the schema for
    /// both the items table with its indexes and the queue tables. Blocking: call it at startup.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteDb, rusqlite::Error> {
        let path = path.as_ref().to_path_buf();
        let conn = Connection::open(&path)?;
        configure(&conn)?;
        create_schema(&conn)?;
        let (requests, receiver) = mpsc::channel::<Request>(REQUESTS_QUEUED_MAX);
        std::thread::Builder::new()
            .name("aitbc-sqlite".into())
            .spawn(move || serve(conn, receiver))
            .expect("spawning the database thread");
        Ok(SqliteDb { inner: Arc::new(DbInner { path, requests }) })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The Store adapter on this database.
    pub fn store(&self) -> SqliteStore {
        SqliteStore::new(self.clone())
    }

    /// The Queue adapter on this database, creating queues with `queue_spec()`.
    pub fn queue(&self) -> SqliteQueue {
        SqliteQueue::new(self.clone(), queue_spec())
    }

    /// The Queue adapter on this database, creating queues with the given spec (tests use a
    /// small maximum receive count).
    pub fn queue_with_spec(&self, spec: QueueSpec) -> SqliteQueue {
        SqliteQueue::new(self.clone(), spec)
    }

    /// Runs `f` on the database thread and returns its result.
    pub(crate) async fn call<T, F>(&self, f: F) -> Result<T, DbClosed>
    where
        F: FnOnce(&mut Connection) -> T + Send + 'static,
        T: Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let request: Request = Box::new(move |conn| {
            // The caller may have gone away (its future dropped): then nobody needs the answer.
            let _ = answer.send(f(conn));
        });
        self.inner.requests.send(request).await.map_err(|_| DbClosed)?;
        answered.await.map_err(|_| DbClosed)
    }
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // WAL: readers never block the writer and a commit appends to the log. synchronous=NORMAL
    // in WAL mode syncs only at checkpoints: a power loss may lose the last commits but never
    // corrupts the file, the usual trade for an embedded server's throughput.
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(mode, "SQLite refused WAL mode (in-memory database?)");
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous=NORMAL;
         PRAGMA temp_store=MEMORY;
         PRAGMA cache_size=-{PAGE_CACHE_KIB};"
    ))?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
    conn.set_prepared_statement_cache_capacity(STATEMENTS_CACHED_MAX);
    Ok(())
}

/// The schema, built from the table spec: one column per index key attribute, a partial index
/// per secondary index (sparse, like DynamoDB's), and the TTL attribute for the sweeper.
fn create_schema(conn: &Connection) -> rusqlite::Result<()> {
    let mut sql = String::from("CREATE TABLE IF NOT EXISTS items (pk TEXT NOT NULL, sk TEXT NOT NULL, attrs TEXT NOT NULL");
    for index in &INDEXES {
        sql.push_str(&format!(", {} TEXT, {} TEXT", index.pk_attr, index.sk_attr));
    }
    sql.push_str(", expires_at INTEGER, PRIMARY KEY (pk, sk)) WITHOUT ROWID;\n");
    for index in &INDEXES {
        let (name, pk, sk) = (index.name, index.pk_attr, index.sk_attr);
        sql.push_str(&format!(
            "CREATE INDEX IF NOT EXISTS items_{name} ON items ({pk}, {sk}, pk, sk) \
             WHERE {pk} IS NOT NULL AND {sk} IS NOT NULL;\n"
        ));
    }
    sql.push_str(
        "CREATE INDEX IF NOT EXISTS items_expires_at ON items (expires_at) WHERE expires_at IS NOT NULL;
         CREATE TABLE IF NOT EXISTS queues (
             name TEXT PRIMARY KEY,
             dlq TEXT,
             max_receive_count INTEGER NOT NULL
         ) WITHOUT ROWID;
         -- AUTOINCREMENT: an id is never reused, so (id, receives) names exactly one receive
         -- and a stale receipt handle can never reach a newer message.
         CREATE TABLE IF NOT EXISTS messages (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             queue TEXT NOT NULL,
             body TEXT NOT NULL,
             visible_ms INTEGER NOT NULL,
             receives INTEGER NOT NULL,
             sent_ms INTEGER NOT NULL
         );
         CREATE INDEX IF NOT EXISTS messages_ready ON messages (queue, visible_ms, id);",
    );
    conn.execute_batch(&sql)
}

/// The database thread: runs requests in arrival order until every handle is dropped.
fn serve(mut conn: Connection, mut receiver: mpsc::Receiver<Request>) {
    while let Some(request) = receiver.blocking_recv() {
        request(&mut conn);
    }
    // Merge the log into the file so that a closed database is one file again.
    if let Err(error) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
        tracing::warn!(%error, "SQLite checkpoint on close failed");
    }
}

/// Now, in unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    let elapsed = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970");
    i64::try_from(elapsed.as_millis()).expect("time fits i64 ms")
}
