//! The Queue port on SQLite: a `messages` table with a visibility time per message. A receive
//! takes the visible messages and pushes their visibility into the future; a receipt handle is
//! `<id>.<receive number>`, so a later receive of the same message invalidates older handles.
//! Long polls wait on an in-process notification per queue (a send wakes them at once) and
//! re-check at least every `POLL_INTERVAL_MS` (for visibility timeouts that lapse and for other
//! processes' sends).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{now_ms, DbError, SqliteDb};
use crate::queue::{
    validate_queue_name, validate_receive, validate_send, validate_visibility, Message, Queue, QueueError,
    RECEIVE_WAIT_MS_MAX,
};
use crate::spec::QueueSpec;

/// Longest sleep between two checks of a long poll: bounds how late a message whose
/// visibility lapsed (or another process sent) is seen.
pub const POLL_INTERVAL_MS: u64 = 50;
/// Most checks of one long poll: the wait over the interval, plus wake-ups by sends that other
/// receivers took first (each check is cheap; the bound keeps the loop finite whatever happens).
pub const RECEIVE_POLLS_MAX: u64 = 4 * (RECEIVE_WAIT_MS_MAX / POLL_INTERVAL_MS) + 16;
/// Most messages one receive moves to the dead-letter queue before it returns: bounds the work
/// of one receive when many messages are due for dead-lettering at once.
pub const DEAD_LETTERS_PER_RECEIVE_MAX: usize = 100;

/// The Queue port on a SQLite database (see `SqliteDb`).
#[derive(Clone)]
pub struct SqliteQueue {
    db: SqliteDb,
    spec: QueueSpec,
    /// One notification per queue name, woken by sends and releases in this process.
    wakers: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
}

impl std::fmt::Debug for SqliteQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteQueue").field("db", &self.db).field("spec", &self.spec).finish()
    }
}

fn backend(error: rusqlite::Error) -> QueueError {
    QueueError::Backend(format!("sqlite: {error}"))
}

impl From<DbError> for QueueError {
    fn from(error: DbError) -> Self {
        QueueError::Backend(error.to_string())
    }
}

impl From<rusqlite::Error> for QueueError {
    fn from(error: rusqlite::Error) -> Self {
        backend(error)
    }
}

/// A receipt handle: the message id and which receive of it.
fn handle(id: i64, receives: i64) -> String {
    format!("{id}.{receives}")
}

fn parse_handle(handle: &str) -> Result<(i64, i64), QueueError> {
    let invalid = || QueueError::Invalid(format!("malformed receipt handle {handle:?}"));
    let (id, receives) = handle.split_once('.').ok_or_else(invalid)?;
    Ok((id.parse().map_err(|_| invalid())?, receives.parse().map_err(|_| invalid())?))
}

/// The queue's dead-letter queue and maximum receive count, or NotFound.
fn queue_row(tx: &Connection, queue: &str) -> Result<(Option<String>, i64), QueueError> {
    tx.prepare_cached("SELECT dlq, max_receive_count FROM queues WHERE name = ?1")?
        .query_row(params![queue], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?
        .ok_or_else(|| QueueError::NotFound(queue.to_string()))
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).expect("validated durations fit")
}

/// One non-waiting receive, atomic (inside one request of a group commit).
fn receive_now(tx: &Connection, queue: &str, max: usize, visibility_ms: i64) -> Result<Vec<Message>, QueueError> {
    let (dlq, max_receive_count) = queue_row(tx, queue)?;
    let now = now_ms();
    let mut messages = Vec::with_capacity(max);
    let mut dead_lettered = 0;
    // Each round either fills the answer or moves messages to the dead-letter queue, so the
    // rounds are bounded by the two limits.
    let rounds_max = max + DEAD_LETTERS_PER_RECEIVE_MAX;
    for _ in 0..rounds_max {
        let wanted = max - messages.len();
        if wanted == 0 || dead_lettered >= DEAD_LETTERS_PER_RECEIVE_MAX {
            break;
        }
        let candidates: Vec<(i64, String, i64)> = tx
            .prepare_cached(
                "SELECT id, body, receives FROM messages WHERE queue = ?1 AND visible_ms <= ?2 \
                 ORDER BY visible_ms, id LIMIT ?3",
            )?
            .query_map(params![queue, now, i64::try_from(wanted).expect("small")], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })?
            .collect::<Result<_, _>>()?;
        if candidates.is_empty() {
            break;
        }
        for (id, body, receives) in candidates {
            match &dlq {
                // SQS moves a message on the receive after its last allowed one.
                Some(dlq) if receives >= max_receive_count => {
                    tx.prepare_cached("UPDATE messages SET queue = ?2, visible_ms = ?3 WHERE id = ?1")?
                        .execute(params![id, dlq, now])?;
                    dead_lettered += 1;
                }
                _ => {
                    let receives = receives + 1;
                    tx.prepare_cached("UPDATE messages SET receives = ?2, visible_ms = ?3 WHERE id = ?1")?
                        .execute(params![id, receives, now + visibility_ms])?;
                    messages.push(Message {
                        id: id.to_string(),
                        receipt_handle: handle(id, receives),
                        body,
                        receive_count: u32::try_from(receives).expect("receive counts are small"),
                    });
                }
            }
        }
    }
    assert!(messages.len() <= max);
    Ok(messages)
}

impl SqliteQueue {
    /// The queue adapter on an open database, creating queues with `spec`.
    pub fn new(db: SqliteDb, spec: QueueSpec) -> Self {
        assert!(spec.max_receive_count >= 1);
        SqliteQueue { db, spec, wakers: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// The database this queue adapter uses.
    pub fn db(&self) -> &SqliteDb {
        &self.db
    }

    fn waker(&self, queue: &str) -> Arc<Notify> {
        let mut wakers = self.wakers.lock().expect("waker map lock");
        wakers.entry(queue.to_string()).or_default().clone()
    }

    /// Runs `f` atomically on the database thread (in a group commit: see `sqlite`): an Err
    /// rolls back whatever `f` wrote.
    async fn run<T, F>(&self, f: F) -> Result<T, QueueError>
    where
        F: FnOnce(&Connection) -> Result<T, QueueError> + Send + 'static,
        T: Send + 'static,
    {
        self.db.call(f).await
    }
}

#[async_trait]
impl Queue for SqliteQueue {
    async fn create_queue(&self, name: &str) -> Result<(), QueueError> {
        validate_queue_name(name)?;
        let dlq = self.spec.dlq_name(name);
        validate_queue_name(&dlq)?;
        let name = name.to_string();
        let max_receive_count = i64::from(self.spec.max_receive_count);
        self.run(move |tx| {
            let mut insert =
                tx.prepare_cached("INSERT OR IGNORE INTO queues (name, dlq, max_receive_count) VALUES (?1, ?2, ?3)")?;
            // The dead-letter queue has none of its own: what lands there stays for inspection.
            insert.execute(params![dlq, Option::<String>::None, 0])?;
            insert.execute(params![name, Some(&dlq), max_receive_count])?;
            Ok(())
        })
        .await
    }

    async fn send_batch(&self, queue: &str, bodies: Vec<String>) -> Result<Vec<String>, QueueError> {
        validate_send(queue, &bodies)?;
        let name = queue.to_string();
        let ids = self
            .run(move |tx| {
                queue_row(tx, &name)?;
                let now = now_ms();
                let mut insert = tx.prepare_cached(
                    "INSERT INTO messages (queue, body, visible_ms, receives, sent_ms) VALUES (?1, ?2, ?3, 0, ?3)",
                )?;
                let mut ids = Vec::with_capacity(bodies.len());
                for body in &bodies {
                    let id = insert.insert(params![name, body, now])?;
                    ids.push(id.to_string());
                }
                Ok(ids)
            })
            .await?;
        self.waker(queue).notify_waiters();
        Ok(ids)
    }

    async fn receive(
        &self,
        queue: &str,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Message>, QueueError> {
        validate_receive(queue, max, wait, visibility)?;
        let visibility_ms = millis(visibility);
        let deadline = Instant::now() + wait;
        let waker = self.waker(queue);
        for _ in 0..RECEIVE_POLLS_MAX {
            // Register for the wake-up before looking, so a send between the look and the wait
            // is not missed.
            let notified = waker.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let name = queue.to_string();
            let messages = self.run(move |tx| receive_now(tx, &name, max, visibility_ms)).await?;
            let now = Instant::now();
            if !messages.is_empty() || now >= deadline {
                return Ok(messages);
            }
            let nap = (deadline - now).min(Duration::from_millis(POLL_INTERVAL_MS));
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
        Ok(Vec::new())
    }

    async fn extend_visibility(&self, queue: &str, receipt_handle: &str, visibility: Duration) -> Result<(), QueueError> {
        validate_queue_name(queue)?;
        validate_visibility(visibility)?;
        let (id, receives) = parse_handle(receipt_handle)?;
        let name = queue.to_string();
        let visibility_ms = millis(visibility);
        self.run(move |tx| {
            let now = now_ms();
            // In flight: this receive is the latest and its visibility has not lapsed.
            let changed = tx
                .prepare_cached(
                    "UPDATE messages SET visible_ms = ?4 \
                     WHERE id = ?1 AND queue = ?2 AND receives = ?3 AND visible_ms > ?5",
                )?
                .execute(params![id, name, receives, now + visibility_ms, now])?;
            if changed == 0 {
                queue_row(tx, &name)?;
                return Err(QueueError::NotInFlight);
            }
            Ok(())
        })
        .await?;
        if visibility.is_zero() {
            self.waker(queue).notify_waiters();
        }
        Ok(())
    }

    async fn delete(&self, queue: &str, receipt_handle: &str) -> Result<(), QueueError> {
        validate_queue_name(queue)?;
        let (id, receives) = parse_handle(receipt_handle)?;
        let name = queue.to_string();
        self.run(move |tx| {
            let deleted = tx
                .prepare_cached("DELETE FROM messages WHERE id = ?1 AND queue = ?2 AND receives = ?3")?
                .execute(params![id, name, receives])?;
            if deleted == 0 {
                // A stale handle is no error (as in SQS); a missing queue is.
                queue_row(tx, &name)?;
            }
            Ok(())
        })
        .await
    }

    async fn approximate_depth(&self, queue: &str) -> Result<u64, QueueError> {
        validate_queue_name(queue)?;
        let name = queue.to_string();
        self.run(move |tx| {
            queue_row(tx, &name)?;
            let count: i64 = tx
                .prepare_cached("SELECT COUNT(*) FROM messages WHERE queue = ?1 AND visible_ms <= ?2")?
                .query_row(params![name, now_ms()], |row| row.get(0))?;
            Ok(u64::try_from(count).expect("a count is not negative"))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::queue_spec;

    /// SQLite is stricter than the shared suite asks: a handle that lost its message, by a
    /// lapsed visibility or a later receive, cannot extend it.
    #[tokio::test]
    async fn stale_handles_cannot_extend() {
        let path = std::env::temp_dir().join(format!("aitbc-store-stale-{}.db", std::process::id()));
        let queue = SqliteDb::open(&path).unwrap().queue_with_spec(queue_spec());
        queue.create_queue("q").await.unwrap();
        queue.send_batch("q", vec!["m".into()]).await.unwrap();
        let short = Duration::from_millis(100);
        let first = queue.receive("q", 1, Duration::ZERO, short).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        let lapsed = queue.extend_visibility("q", &first[0].receipt_handle, short).await;
        assert_eq!(lapsed, Err(QueueError::NotInFlight));
        let second = queue.receive("q", 1, Duration::ZERO, Duration::from_secs(60)).await.unwrap();
        assert_eq!(second[0].receive_count, 2);
        let old = queue.extend_visibility("q", &first[0].receipt_handle, short).await;
        assert_eq!(old, Err(QueueError::NotInFlight));
        queue.delete("q", &first[0].receipt_handle).await.unwrap();
        assert_eq!(queue.approximate_depth("q").await.unwrap(), 0);
        queue.extend_visibility("q", &second[0].receipt_handle, Duration::ZERO).await.unwrap();
        assert_eq!(queue.approximate_depth("q").await.unwrap(), 1, "the stale delete left the message");
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    #[test]
    fn handles_round_trip() {
        assert_eq!(parse_handle(&handle(12, 3)).unwrap(), (12, 3));
        assert!(parse_handle("12").is_err());
        assert!(parse_handle("a.b").is_err());
    }
}
