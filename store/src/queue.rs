//! The Queue port: named queues with batched sends, long-poll receives with a visibility timeout,
//! visibility extension (the worker heartbeat), deletes, dead-lettering after a maximum receive
//! count, and an approximate depth.
//!
//! Delivery is at least once and unordered (SQS standard queues): consumers must be idempotent.

use std::time::Duration;

use async_trait::async_trait;

/// Most messages one send carries (SQS SendMessageBatch).
pub const SEND_BATCH_MAX: usize = 10;
/// Most messages one receive returns (SQS ReceiveMessage).
pub const RECEIVE_MESSAGES_MAX: usize = 10;
/// Longest long-poll wait of one receive (SQS: 20 s).
pub const RECEIVE_WAIT_MS_MAX: u64 = 20_000;
/// Longest visibility timeout (SQS: 12 hours).
pub const VISIBILITY_MS_MAX: u64 = 12 * 3600 * 1000;
/// Most bytes of one message body (SQS's default maximum message size, 256 KiB).
pub const BODY_BYTES_MAX: usize = 256 * 1024;
/// Most bytes of all bodies of one send (SQS limits a batch's payload like one message).
pub const BATCH_BYTES_MAX: usize = 256 * 1024;
/// Most bytes of a queue name before the prefix and the dead-letter suffix: SQS names have at
/// most 80 characters, and `<prefix>-<name>-dlq` must fit (room for `listing-<uuid>`).
pub const QUEUE_NAME_BYTES_MAX: usize = 48;

/// One received message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The message id, stable across receives.
    pub id: String,
    /// The handle of this receive: extend and delete take it. A later receive of the same
    /// message gets a new handle; whether the old one still acts on the message differs (SQLite:
    /// never; SQS: it may), so a lease must be guarded by the store's conditional writes.
    pub receipt_handle: String,
    /// The body as sent.
    pub body: String,
    /// How many times the message has been received, this receive included (1 the first time).
    pub receive_count: u32,
}

/// The one error type of the Queue port.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The queue does not exist (create it first).
    #[error("queue not found: {0}")]
    NotFound(String),
    /// The message is not in flight under this handle: it was deleted, or (SQLite; SQS may
    /// still honour such a handle) its visibility lapsed or it was received again. The lease on
    /// the message is lost.
    #[error("message not in flight under this receipt handle")]
    NotInFlight,
    /// The backend throttled the request after the adapter's bounded retries; retry later.
    #[error("throttled")]
    Throttled,
    /// The arguments break a rule or a limit of the port.
    #[error("invalid: {0}")]
    Invalid(String),
    /// Any other backend failure.
    #[error("backend: {0}")]
    Backend(String),
}

/// The Queue port. Implementations: `SqliteQueue` (feature `sqlite`) and `SqsQueue` (feature
/// `sqs`). Use it as `Arc<dyn Queue>`.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Creates a queue and its dead-letter queue `<name>-dlq` with the adapter's `QueueSpec`
    /// (maximum receive count, retention). Creating an existing queue again is no error.
    async fn create_queue(&self, name: &str) -> Result<(), QueueError>;

    /// Sends 1..=SEND_BATCH_MAX messages; returns their ids in order. Each body holds at most
    /// BODY_BYTES_MAX bytes, all at most BATCH_BYTES_MAX, of characters SQS accepts.
    async fn send_batch(&self, queue: &str, bodies: Vec<String>) -> Result<Vec<String>, QueueError>;

    /// Receives up to `max` (1..=RECEIVE_MESSAGES_MAX) messages, waiting up to `wait`
    /// (<= RECEIVE_WAIT_MS_MAX) for the first, and hides them from other receives for
    /// `visibility` (<= VISIBILITY_MS_MAX). SQS counts both in whole seconds, so its adapter
    /// rounds each up to the next second; a message received more than the maximum receive
    /// count goes to the dead-letter queue instead of being returned.
    async fn receive(
        &self,
        queue: &str,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Message>, QueueError>;

    /// Sets a received message's visibility to `visibility` from now (<= VISIBILITY_MS_MAX;
    /// zero releases it at once). `NotInFlight` when the message is no longer in flight (see
    /// `QueueError::NotInFlight` for what each adapter detects).
    async fn extend_visibility(&self, queue: &str, receipt_handle: &str, visibility: Duration) -> Result<(), QueueError>;

    /// Deletes a received message. A stale handle (the message was received again since) is no
    /// error but may leave the message in place, as in SQS.
    async fn delete(&self, queue: &str, receipt_handle: &str) -> Result<(), QueueError>;

    /// About how many messages wait to be received (not counting in-flight ones).
    async fn approximate_depth(&self, queue: &str) -> Result<u64, QueueError>;
}

fn invalid(message: String) -> QueueError {
    QueueError::Invalid(message)
}

/// Checks a queue name: ASCII letters, digits, `-` and `_` (what SQS accepts), bounded length.
pub(crate) fn validate_queue_name(name: &str) -> Result<(), QueueError> {
    // The dead-letter queue's name adds a suffix, so allow it on top of the bound.
    let bytes_max = QUEUE_NAME_BYTES_MAX + crate::spec::queue_spec().dlq_suffix.len();
    if name.is_empty() || name.len() > bytes_max {
        return Err(invalid(format!("queue name must have 1..={QUEUE_NAME_BYTES_MAX} bytes")));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(invalid(format!("queue name {name:?} has characters other than [A-Za-z0-9_-]")));
    }
    Ok(())
}

/// Characters SQS accepts in a body: #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD |
/// #x10000 to #x10FFFF.
fn body_char_allowed(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Checks a send: queue name, batch size, body sizes and characters.
pub(crate) fn validate_send(queue: &str, bodies: &[String]) -> Result<(), QueueError> {
    validate_queue_name(queue)?;
    if bodies.is_empty() || bodies.len() > SEND_BATCH_MAX {
        return Err(invalid(format!("a send holds 1..={SEND_BATCH_MAX} messages, not {}", bodies.len())));
    }
    let mut bytes_total = 0;
    for body in bodies {
        if body.is_empty() || body.len() > BODY_BYTES_MAX {
            return Err(invalid(format!("a body holds 1..={BODY_BYTES_MAX} bytes, not {}", body.len())));
        }
        if !body.chars().all(body_char_allowed) {
            return Err(invalid("a body holds a character SQS refuses".into()));
        }
        bytes_total += body.len();
    }
    if bytes_total > BATCH_BYTES_MAX {
        return Err(invalid(format!("a batch holds at most {BATCH_BYTES_MAX} bytes, not {bytes_total}")));
    }
    Ok(())
}

/// Checks a receive's arguments.
pub(crate) fn validate_receive(queue: &str, max: usize, wait: Duration, visibility: Duration) -> Result<(), QueueError> {
    validate_queue_name(queue)?;
    if max == 0 || max > RECEIVE_MESSAGES_MAX {
        return Err(invalid(format!("max must be 1..={RECEIVE_MESSAGES_MAX}, not {max}")));
    }
    if wait > Duration::from_millis(RECEIVE_WAIT_MS_MAX) {
        return Err(invalid(format!("wait must be at most {RECEIVE_WAIT_MS_MAX} ms")));
    }
    validate_visibility(visibility)
}

/// Checks a visibility timeout.
pub(crate) fn validate_visibility(visibility: Duration) -> Result<(), QueueError> {
    if visibility > Duration::from_millis(VISIBILITY_MS_MAX) {
        return Err(invalid(format!("visibility must be at most {VISIBILITY_MS_MAX} ms")));
    }
    Ok(())
}

/// A duration in whole seconds, rounded up (SQS counts visibility and wait in seconds; rounding
/// down could make a message visible again before its holder expects it).
#[cfg_attr(not(feature = "sqs"), allow(dead_code))]
pub(crate) fn whole_seconds_up(duration: Duration) -> i32 {
    let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    assert!(seconds <= VISIBILITY_MS_MAX / 1000, "validated durations fit");
    i32::try_from(seconds).expect("at most 12 hours")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_up() {
        assert_eq!(whole_seconds_up(Duration::ZERO), 0);
        assert_eq!(whole_seconds_up(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds_up(Duration::from_millis(1000)), 1);
        assert_eq!(whole_seconds_up(Duration::from_millis(1001)), 2);
    }

    #[test]
    fn sends_are_bounded() {
        let ten: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        assert!(validate_send("q", &ten).is_ok());
        let eleven: Vec<String> = (0..11).map(|i| i.to_string()).collect();
        assert!(matches!(validate_send("q", &eleven), Err(QueueError::Invalid(_))));
        assert!(validate_send("q", &["\u{0}".to_string()]).is_err());
        assert!(validate_send("a b", &ten).is_err());
        assert!(validate_send("q", &["x".repeat(BODY_BYTES_MAX + 1)]).is_err());
    }
}
