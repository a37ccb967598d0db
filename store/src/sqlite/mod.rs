//! The SQLite adapters: one database file in WAL mode, owned by one dedicated thread that runs
//! every statement. Async callers send it closures over a bounded channel and await the answer,
//! so no blocking I/O runs on the async runtime's worker threads, and because one thread owns the
//! connection, every operation is serialized.
//!
//! Group commit: the thread takes every request waiting (up to `GROUP_REQUESTS_MAX`), runs them
//! in ONE IMMEDIATE transaction, each under its own savepoint (rolled back alone when the
//! request fails, for example on a failed condition; a request alone in its group needs none:
//! its failure rolls back the transaction), commits once, and only then answers them
//! all. A commit costs far more than a conditional put (it writes every dirty page to the log),
//! so concurrent callers share that cost; a caller still sees its answer only after its writes
//! are committed, and IMMEDIATE keeps condition and write atomic against other processes too.

mod queue;
mod store;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension};
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
/// Most requests one group commit runs (bounds a group's transaction and its answers' delay).
pub const GROUP_REQUESTS_MAX: usize = 64;
/// How often the checkpoint thread copies the log's new pages into the file. The database
/// thread does not checkpoint on its own (automatic checkpoints are off): a checkpoint of a
/// large log writes and syncs thousands of pages, and on the thread that commits it stalled
/// every request queued behind it (the API's p99 of 162 ms under load). On its own connection
/// it runs beside the commits, which only append to the log.
pub const CHECKPOINT_INTERVAL_MS: u64 = 250;
/// Log pages from which the log should start over from its beginning. SQLite restarts the log
/// at the first write of a transaction that began with every page of it copied, which passive
/// checkpoints beside a stream of commits never see. So once the log is this long and the
/// checkpoint thread has copied all but `WAL_CATCH_UP_PAGES`, the database thread copies that
/// rest itself before its next group, and the group restarts the log (65536 pages of 4 KiB =
/// 256 MiB: the log file stays about that size; it is reused, not cut back, since a truncate
/// on a disk mounted with `discard` waited 25-50 ms for the device on the committing thread).
pub const WAL_RESTART_PAGES: i64 = 65536;
/// Pages the database thread copies at most when it catches up for a restart: that copy and
/// its two syncs are the one pause the commits still see (measured 30-55 ms on this project's
/// 2-core machine, once per 256 MiB of log).
pub const WAL_CATCH_UP_PAGES: i64 = 1024;
/// Log pages past which the database thread catches up whatever is left: the bound on the log
/// when the checkpoint thread cannot keep up (262144 pages of 4 KiB = 1 GiB).
pub const WAL_PAGES_MAX: i64 = 262_144;

/// How the database thread answers a request once its group's commit is done (Err: the commit
/// failed, so the request's writes are gone).
type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;
/// A request: runs inside the group's transaction; says whether to keep its writes (false rolls
/// back to its savepoint) and how to answer after the commit.
type Request = Box<dyn FnOnce(&Connection) -> (bool, Reply) + Send>;

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

/// Why a request got no answer of its own.
#[derive(Debug)]
pub(crate) enum DbError {
    /// The database thread is gone (it panicked), or dropped the request because its group
    /// could not begin a transaction (logged).
    Closed,
    /// The group's commit failed: the request's writes are gone.
    Commit(String),
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbError::Closed => write!(f, "sqlite: the request was dropped (database thread gone or BEGIN failed)"),
            DbError::Commit(error) => write!(f, "sqlite: commit failed: {error}"),
        }
    }
}

impl SqliteDb {
    /// Opens (creating if needed) the database file, sets WAL mode and creates the schema for
    /// both the items table with its indexes and the queue tables. Blocking: call it at startup.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteDb, rusqlite::Error> {
        let path = path.as_ref().to_path_buf();
        let conn = Connection::open(&path)?;
        configure(&conn)?;
        create_schema(&conn)?;
        let checkpointer = Checkpointer::start(&path)?;
        let (requests, receiver) = mpsc::channel::<Request>(REQUESTS_QUEUED_MAX);
        std::thread::Builder::new()
            .name("aitbc-sqlite".into())
            .spawn(move || serve(conn, receiver, checkpointer))
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

    /// Runs `f` on the database thread inside a group transaction, atomically: an Err rolls
    /// back everything `f` wrote. Answers after the group's commit.
    pub(crate) async fn call<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel::<Result<T, E>>();
        let request: Request = Box::new(move |conn| {
            let result = f(conn);
            let keep = result.is_ok();
            let reply: Reply = Box::new(move |commit| {
                let result = match commit {
                    Ok(()) => result,
                    Err(error) => Err(E::from(DbError::Commit(error))),
                };
                // The caller may have gone away (its future dropped): nobody needs the answer.
                let _ = answer.send(result);
            });
            (keep, reply)
        });
        self.inner.requests.send(request).await.map_err(|_| E::from(DbError::Closed))?;
        answered.await.map_err(|_| E::from(DbError::Closed))?
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
         PRAGMA cache_size=-{PAGE_CACHE_KIB};
         PRAGMA wal_autocheckpoint=0;"
    ))?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
    conn.set_prepared_statement_cache_capacity(STATEMENTS_CACHED_MAX);
    Ok(())
}

/// The schema, built from the table spec: one column per index key attribute, a partial index
/// per secondary index (sparse, like DynamoDB's), and the TTL attribute for the sweeper.
///
/// The items live in a rowid table with a unique index on the key, not in a WITHOUT ROWID
/// table clustered on the key: a WITHOUT ROWID table keeps rows in an index b-tree, whose cells
/// spill to an overflow page above about 1,000 bytes (a job or receipt item is 600-1,200) and
/// whose interior pages hold whole rows. Profiled on the settle bench's loading phase, that
/// table had 40,122 overflow pages of 50,940 and 65% of its bytes unused, so every item cost
/// about 2.3 KiB of pages written twice (log, then checkpoint). A rowid table keeps rows up to
/// 4,061 bytes on their leaf, appends new rows at its right edge, and the key index holds only
/// the short keys.
fn create_schema(conn: &Connection) -> rusqlite::Result<()> {
    let old: Option<String> = conn
        .query_row("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'items'", [], |row| row.get(0))
        .optional()?;
    let migrate = old.is_some_and(|sql| sql.to_ascii_uppercase().contains("WITHOUT ROWID"));
    let mut sql = String::new();
    if migrate {
        // A file from before the rowid table: move its items over in this same transaction.
        // The old indexes go with the old table (their names are reused below).
        sql.push_str("ALTER TABLE items RENAME TO items_without_rowid;\n");
        for index in &INDEXES {
            sql.push_str(&format!("DROP INDEX IF EXISTS items_{};\n", index.name));
        }
        sql.push_str("DROP INDEX IF EXISTS items_expires_at;\n");
    }
    sql.push_str(&items_table_sql());
    if migrate {
        let columns = std::iter::once("pk, sk, attrs".to_string()).chain(copied_columns()).collect::<Vec<_>>().join(", ");
        sql.push_str(&format!(
            "INSERT INTO items ({columns}) SELECT {columns} FROM items_without_rowid ORDER BY pk, sk;\n\
             DROP TABLE items_without_rowid;\n"
        ));
    }
    sql.push_str(
        "CREATE TABLE IF NOT EXISTS queues (
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
    if migrate {
        tracing::info!("SQLite: moving the items table to a rowid table (once per file)");
    }
    // One transaction: a crash during the move leaves the old table as it was.
    conn.execute_batch(&format!("BEGIN IMMEDIATE;\n{sql}\nCOMMIT;"))
}

/// The copied columns (index key attributes, then `expires_at`), in table order.
fn copied_columns() -> impl Iterator<Item = String> {
    INDEXES
        .iter()
        .flat_map(|index| [index.pk_attr.to_string(), index.sk_attr.to_string()])
        .chain(std::iter::once("expires_at".to_string()))
}

/// The items table and its indexes (IF NOT EXISTS). Public so that the benches' plain rusqlite
/// anchor inserts into a table of exactly this shape.
pub fn items_table_sql() -> String {
    let mut sql = String::from(
        "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, pk TEXT NOT NULL, sk TEXT NOT NULL, attrs TEXT NOT NULL",
    );
    for index in &INDEXES {
        sql.push_str(&format!(", {} TEXT, {} TEXT", index.pk_attr, index.sk_attr));
    }
    sql.push_str(", expires_at INTEGER);\nCREATE UNIQUE INDEX IF NOT EXISTS items_key ON items (pk, sk);\n");
    for index in &INDEXES {
        let (name, pk, sk) = (index.name, index.pk_attr, index.sk_attr);
        sql.push_str(&format!(
            "CREATE INDEX IF NOT EXISTS items_{name} ON items ({pk}, {sk}, pk, sk) \
             WHERE {pk} IS NOT NULL AND {sk} IS NOT NULL;\n"
        ));
    }
    sql.push_str("CREATE INDEX IF NOT EXISTS items_expires_at ON items (expires_at) WHERE expires_at IS NOT NULL;\n");
    sql
}

/// The database thread: runs requests in arrival order, in group commits, until every handle
/// is dropped.
fn serve(conn: Connection, mut receiver: mpsc::Receiver<Request>, checkpointer: Checkpointer) {
    let mut group: Vec<Request> = Vec::with_capacity(GROUP_REQUESTS_MAX);
    let mut replies: Vec<Reply> = Vec::with_capacity(GROUP_REQUESTS_MAX);
    while let Some(first) = receiver.blocking_recv() {
        group.push(first);
        while group.len() < GROUP_REQUESTS_MAX {
            match receiver.try_recv() {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }
        if checkpointer.take_catch_up() {
            // Outside any transaction, so that the copy can be complete and the BEGIN below
            // starts from a fully copied log, which its first write then restarts.
            if checkpoint(&conn).is_none() {
                tracing::warn!("SQLite catch-up checkpoint did not run");
            }
        }
        if let Err(error) = conn.execute_batch("BEGIN IMMEDIATE") {
            // Dropping the requests answers their callers with DbError::Closed.
            tracing::error!(%error, requests = group.len(), "SQLite could not begin a transaction");
            group.clear();
            continue;
        }
        // A request alone in its group needs no savepoint: when it fails, rolling back the
        // whole transaction undoes exactly its writes. (A savepoint copies every page the
        // request changes into a sub-journal, in case it has to roll back.)
        let mut keep_group = true;
        if group.len() == 1 {
            let request = group.pop().expect("one request");
            let (keep, reply) = request(&conn);
            keep_group = keep;
            replies.push(reply);
        }
        for request in group.drain(..) {
            replies.push(run_in_savepoint(&conn, request));
        }
        let commit = if keep_group {
            conn.execute_batch("COMMIT").map_err(|e| e.to_string())
        } else {
            // Its own answer (an error) reaches the caller: the rollback is not a failure.
            conn.execute_batch("ROLLBACK").map_err(|e| e.to_string())
        };
        if commit.is_err() {
            // Leave no transaction open for the next group.
            let _ = conn.execute_batch("ROLLBACK");
        }
        for reply in replies.drain(..) {
            reply(commit.clone());
        }
        assert!(conn.is_autocommit(), "no transaction outlives its group");
    }
    checkpointer.stop();
    // Merge the log into the file so that a closed database is one file again.
    if let Err(error) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
        tracing::warn!(%error, "SQLite checkpoint on close failed");
    }
}

/// The checkpoint thread: its own connection to the file, copying the log's committed pages
/// into the database file every `CHECKPOINT_INTERVAL_MS`, off the thread that commits.
struct Checkpointer {
    /// Dropping it tells the thread to stop.
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
    /// Set by the thread when the database thread should catch up and restart the log.
    catch_up: Arc<AtomicBool>,
}

impl Checkpointer {
    fn start(path: &Path) -> rusqlite::Result<Checkpointer> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let catch_up = Arc::new(AtomicBool::new(false));
        let wanted = catch_up.clone();
        let thread = std::thread::Builder::new()
            .name("aitbc-sqlite-checkpoint".into())
            .spawn(move || {
                let interval = std::time::Duration::from_millis(CHECKPOINT_INTERVAL_MS);
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    if let Some((log_pages, copied_pages)) = checkpoint(&conn) {
                        if catch_up_wanted(log_pages, copied_pages) {
                            wanted.store(true, Ordering::Relaxed);
                        }
                    }
                }
            })
            .expect("spawning the checkpoint thread");
        Ok(Checkpointer { stop, thread, catch_up })
    }

    /// Whether the database thread should catch up now (asked once per time it is answered).
    fn take_catch_up(&self) -> bool {
        self.catch_up.swap(false, Ordering::Relaxed)
    }

    /// Stops the thread and waits for it (a checkpoint under way finishes first).
    fn stop(self) {
        drop(self.stop);
        if self.thread.join().is_err() {
            tracing::error!("the SQLite checkpoint thread panicked");
        }
    }
}

/// Whether the database thread should copy the rest of the log itself, so that its next
/// group restarts the log: the log is long and little is left to copy, or it is too long.
fn catch_up_wanted(log_pages: i64, copied_pages: i64) -> bool {
    (log_pages >= WAL_RESTART_PAGES && log_pages - copied_pages <= WAL_CATCH_UP_PAGES) || log_pages > WAL_PAGES_MAX
}

/// One passive checkpoint: copies what it can without waiting for anyone. Returns the pages in
/// the log and the pages of it copied so far (None when it failed or the file is not in WAL
/// mode).
fn checkpoint(conn: &Connection) -> Option<(i64, i64)> {
    // (busy, pages in the log, pages copied); -1, -1 when the file is not in WAL mode.
    let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?)));
    match result {
        Ok((log_pages, copied_pages)) if log_pages >= 0 && copied_pages >= 0 => Some((log_pages, copied_pages)),
        Ok(_) => None,
        Err(error) => {
            tracing::warn!(%error, "SQLite checkpoint failed");
            None
        }
    }
}

/// Runs one request under a savepoint, keeping or rolling back its writes.
fn run_in_savepoint(conn: &Connection, request: Request) -> Reply {
    let savepoint = |sql: &str| conn.prepare_cached(sql).and_then(|mut s| s.execute([]).map(|_| ()));
    if let Err(error) = savepoint("SAVEPOINT request") {
        // Cannot isolate it: refuse to run it rather than risk keeping half of its writes.
        let message = error.to_string();
        return Box::new(move |_| tracing::error!(error = message, "SQLite savepoint failed; request dropped"));
    }
    let (keep, reply) = request(conn);
    let rollback = || savepoint("ROLLBACK TO request").and_then(|()| savepoint("RELEASE request"));
    let end = if keep {
        // Should a release fail, undo the request so that what is committed matches its answer.
        savepoint("RELEASE request").or_else(|error| rollback().and(Err(error)))
    } else {
        rollback()
    };
    match end {
        Ok(()) => reply,
        Err(error) => {
            let message = error.to_string();
            Box::new(move |_| reply(Err(message)))
        }
    }
}

/// Now, in unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    let elapsed = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970");
    i64::try_from(elapsed.as_millis()).expect("time fits i64 ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_thread_catches_up_on_a_long_log_nearly_copied_or_a_log_too_long() {
        // Short logs restart by themselves when idle: never.
        assert!(!catch_up_wanted(WAL_RESTART_PAGES - 1, WAL_RESTART_PAGES - 1));
        assert!(!catch_up_wanted(0, 0));
        // Long, with at most WAL_CATCH_UP_PAGES left to copy.
        assert!(catch_up_wanted(WAL_RESTART_PAGES, WAL_RESTART_PAGES - WAL_CATCH_UP_PAGES));
        assert!(!catch_up_wanted(WAL_RESTART_PAGES, WAL_RESTART_PAGES - WAL_CATCH_UP_PAGES - 1));
        // Past the bound, whatever is left.
        assert!(catch_up_wanted(WAL_PAGES_MAX + 1, 0));
        assert!(!catch_up_wanted(WAL_PAGES_MAX, 0));
    }
}
