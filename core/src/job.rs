//! The job lifecycle as a pure transition function.
//!
//! ```text
//! queued -> claimed -> running -> completed -> settled
//!    |         |          |
//!    |         +----------+--> queued (lease lapsed, retryable failure or release; attempts left)
//!    |         +----------+--> failed (non-retryable failure, or attempts used up)
//!    +--> cancelled (by the client), expired (unclaimed past its claim deadline)
//! ```
//!
//! A claim takes a lease (holder, expiry) and counts an attempt; heartbeats extend the lease;
//! only the holder of an unexpired lease may start, heartbeat, complete, fail or release. The
//! store applies a transition as a conditional write on the state it read, so a duplicate
//! delivery or a late worker loses the race instead of completing a job twice.

use crate::values::WorkerId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A lease lasts at most this long before it must be extended (SQS caps visibility at 12 h).
pub const LEASE_MS_MAX: u64 = 12 * 3_600 * 1_000;
/// A lease lasts at least this long.
pub const LEASE_MS_MIN: u64 = 1_000;
/// A job is claimed at most this many times before it fails.
pub const ATTEMPTS_MAX_LIMIT: u32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Claimed,
    Running,
    Completed,
    Settled,
    Failed,
    Cancelled,
    Expired,
}

impl JobState {
    pub const ALL: [JobState; 8] = [
        JobState::Queued,
        JobState::Claimed,
        JobState::Running,
        JobState::Completed,
        JobState::Settled,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Expired,
    ];

    pub fn name(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Claimed => "claimed",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Settled => "settled",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Expired => "expired",
        }
    }

    /// No transition leaves a terminal state.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Settled | JobState::Failed | JobState::Cancelled | JobState::Expired)
    }

    /// A worker holds the job.
    pub fn is_leased(self) -> bool {
        matches!(self, JobState::Claimed | JobState::Running)
    }

    /// What becomes of the job's hold in this state: `Some(true)` posted (settled),
    /// `Some(false)` voided, `None` still pending.
    pub fn hold_outcome(self) -> Option<bool> {
        match self {
            JobState::Settled => Some(true),
            JobState::Failed | JobState::Cancelled | JobState::Expired => Some(false),
            _ => None,
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A worker's hold on a job until `expires_at_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Lease {
    pub holder: WorkerId,
    pub expires_at_ms: i64,
}

/// The part of a job the lifecycle rules read and write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobStatus {
    pub state: JobState,
    pub lease: Option<Lease>,
    /// Claims so far; the current attempt's number while leased.
    pub attempt: u32,
    pub attempts_max: u32,
    /// A queued job not claimed by then expires.
    pub claim_deadline_ms: i64,
}

impl JobStatus {
    pub fn queued(attempts_max: u32, claim_deadline_ms: i64) -> Self {
        assert!((1..=ATTEMPTS_MAX_LIMIT).contains(&attempts_max));
        Self { state: JobState::Queued, lease: None, attempt: 0, attempts_max, claim_deadline_ms }
    }
}

/// Something that happens to a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Claim { worker: WorkerId, now_ms: i64, lease_ms: u64 },
    Start { worker: WorkerId, now_ms: i64 },
    Heartbeat { worker: WorkerId, now_ms: i64, lease_ms: u64 },
    Complete { worker: WorkerId, now_ms: i64 },
    Fail { worker: WorkerId, now_ms: i64, retryable: bool },
    /// The worker hands the job back unfinished (shutdown): it returns to the queue at once.
    Release { worker: WorkerId, now_ms: i64 },
    /// The sweeper found the lease lapsed.
    LeaseLapsed { now_ms: i64 },
    Cancel,
    /// The sweeper found the job unclaimed past its deadline.
    Expire { now_ms: i64 },
    Settle,
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::Claim { .. } => "claim",
            Event::Start { .. } => "start",
            Event::Heartbeat { .. } => "heartbeat",
            Event::Complete { .. } => "complete",
            Event::Fail { .. } => "fail",
            Event::Release { .. } => "release",
            Event::LeaseLapsed { .. } => "lease_lapsed",
            Event::Cancel => "cancel",
            Event::Expire { .. } => "expire",
            Event::Settle => "settle",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("cannot {event} a job that is {state}")]
    Illegal { state: JobState, event: &'static str },
    #[error("the job's lease is held by another worker")]
    NotHolder,
    #[error("the job's lease expired")]
    LeaseExpired,
    #[error("the job's lease has not lapsed yet")]
    LeaseActive,
    #[error("the job's claim deadline has not passed yet")]
    NotYetExpired,
    #[error("lease length {0} ms is outside {LEASE_MS_MIN}..={LEASE_MS_MAX}")]
    LeaseLength(u64),
}

fn lease_ms_ok(lease_ms: u64) -> Result<i64, TransitionError> {
    if (LEASE_MS_MIN..=LEASE_MS_MAX).contains(&lease_ms) {
        Ok(lease_ms as i64)
    } else {
        Err(TransitionError::LeaseLength(lease_ms))
    }
}

/// The holder's live lease, or why not.
fn held_by<'a>(status: &'a JobStatus, worker: &WorkerId, now_ms: i64) -> Result<&'a Lease, TransitionError> {
    let lease = status.lease.as_ref().expect("a leased state always has a lease");
    if &lease.holder != worker {
        return Err(TransitionError::NotHolder);
    }
    if now_ms >= lease.expires_at_ms {
        return Err(TransitionError::LeaseExpired);
    }
    Ok(lease)
}

/// Back to the queue if attempts remain, else failed.
fn requeue_or_fail(status: &JobStatus) -> JobStatus {
    let state = if status.attempt < status.attempts_max { JobState::Queued } else { JobState::Failed };
    JobStatus { state, lease: None, ..status.clone() }
}

/// The status after `event`, or why the event is illegal now. Pure.
pub fn transition(status: &JobStatus, event: &Event) -> Result<JobStatus, TransitionError> {
    debug_assert_eq!(status.state.is_leased(), status.lease.is_some());
    let illegal = || TransitionError::Illegal { state: status.state, event: event.name() };
    let next = match (status.state, event) {
        (JobState::Queued, Event::Claim { worker, now_ms, lease_ms }) => {
            let lease_ms = lease_ms_ok(*lease_ms)?;
            if status.attempt >= status.attempts_max {
                return Err(illegal());
            }
            JobStatus {
                state: JobState::Claimed,
                lease: Some(Lease { holder: worker.clone(), expires_at_ms: now_ms + lease_ms }),
                attempt: status.attempt + 1,
                ..status.clone()
            }
        }
        (JobState::Claimed, Event::Start { worker, now_ms }) => {
            held_by(status, worker, *now_ms)?;
            JobStatus { state: JobState::Running, ..status.clone() }
        }
        (JobState::Claimed | JobState::Running, Event::Heartbeat { worker, now_ms, lease_ms }) => {
            let lease_ms = lease_ms_ok(*lease_ms)?;
            let lease = held_by(status, worker, *now_ms)?;
            // A heartbeat never shortens a lease.
            let expires_at_ms = lease.expires_at_ms.max(now_ms + lease_ms);
            JobStatus { lease: Some(Lease { holder: worker.clone(), expires_at_ms }), ..status.clone() }
        }
        (JobState::Claimed | JobState::Running, Event::Complete { worker, now_ms }) => {
            held_by(status, worker, *now_ms)?;
            JobStatus { state: JobState::Completed, lease: None, ..status.clone() }
        }
        (JobState::Claimed | JobState::Running, Event::Fail { worker, now_ms, retryable }) => {
            held_by(status, worker, *now_ms)?;
            if *retryable {
                requeue_or_fail(status)
            } else {
                JobStatus { state: JobState::Failed, lease: None, ..status.clone() }
            }
        }
        (JobState::Claimed | JobState::Running, Event::Release { worker, now_ms }) => {
            held_by(status, worker, *now_ms)?;
            // A hand-back is not the job's fault: the attempt it used is given back.
            JobStatus { state: JobState::Queued, lease: None, attempt: status.attempt - 1, ..status.clone() }
        }
        (JobState::Claimed | JobState::Running, Event::LeaseLapsed { now_ms }) => {
            let lease = status.lease.as_ref().expect("leased");
            if *now_ms < lease.expires_at_ms {
                return Err(TransitionError::LeaseActive);
            }
            requeue_or_fail(status)
        }
        (JobState::Queued, Event::Cancel) => JobStatus { state: JobState::Cancelled, ..status.clone() },
        (JobState::Queued, Event::Expire { now_ms }) => {
            if *now_ms < status.claim_deadline_ms {
                return Err(TransitionError::NotYetExpired);
            }
            JobStatus { state: JobState::Expired, ..status.clone() }
        }
        (JobState::Completed, Event::Settle) => JobStatus { state: JobState::Settled, ..status.clone() },
        _ => return Err(illegal()),
    };
    debug_assert_eq!(next.state.is_leased(), next.lease.is_some());
    debug_assert!(next.attempt <= next.attempts_max);
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(n: u8) -> WorkerId {
        WorkerId::parse(&format!("wrk-{n}")).unwrap()
    }

    const NOW: i64 = 1_000_000;
    const LEASE: u64 = 30_000;

    /// A job in `state` held by worker 1 (leased states) with one attempt used.
    fn status_in(state: JobState) -> JobStatus {
        let lease = state.is_leased().then(|| Lease { holder: w(1), expires_at_ms: NOW + LEASE as i64 });
        JobStatus { state, lease, attempt: 1, attempts_max: 3, claim_deadline_ms: NOW - 1 }
    }

    fn events() -> Vec<Event> {
        vec![
            Event::Claim { worker: w(1), now_ms: NOW, lease_ms: LEASE },
            Event::Start { worker: w(1), now_ms: NOW },
            Event::Heartbeat { worker: w(1), now_ms: NOW, lease_ms: LEASE },
            Event::Complete { worker: w(1), now_ms: NOW },
            Event::Fail { worker: w(1), now_ms: NOW, retryable: true },
            Event::Fail { worker: w(1), now_ms: NOW, retryable: false },
            Event::Release { worker: w(1), now_ms: NOW },
            Event::LeaseLapsed { now_ms: NOW + LEASE as i64 },
            Event::Cancel,
            Event::Expire { now_ms: NOW },
            Event::Settle,
        ]
    }

    /// The expected state after each (state, event) pair, or None where the event is illegal.
    fn expected(state: JobState, event: &Event) -> Option<JobState> {
        use JobState::*;
        match (state, event) {
            (Queued, Event::Claim { .. }) => Some(Claimed),
            (Claimed, Event::Start { .. }) => Some(Running),
            (Claimed | Running, Event::Heartbeat { .. }) => Some(state),
            (Claimed | Running, Event::Complete { .. }) => Some(Completed),
            (Claimed | Running, Event::Fail { retryable: true, .. }) => Some(Queued),
            (Claimed | Running, Event::Fail { retryable: false, .. }) => Some(Failed),
            (Claimed | Running, Event::Release { .. }) => Some(Queued),
            (Claimed | Running, Event::LeaseLapsed { .. }) => Some(Queued),
            (Queued, Event::Cancel) => Some(Cancelled),
            (Queued, Event::Expire { .. }) => Some(Expired),
            (Completed, Event::Settle) => Some(Settled),
            _ => None,
        }
    }

    #[test]
    fn every_state_and_event_pair() {
        let mut legal = 0;
        for state in JobState::ALL {
            for event in events() {
                let result = transition(&status_in(state), &event);
                match expected(state, &event) {
                    Some(next) => {
                        legal += 1;
                        assert_eq!(result.as_ref().map(|s| s.state), Ok(next), "{state} + {}", event.name());
                    }
                    None => assert_eq!(
                        result,
                        Err(TransitionError::Illegal { state, event: event.name() }),
                        "{state} + {}",
                        event.name()
                    ),
                }
            }
        }
        assert_eq!(legal, 17);
        for state in JobState::ALL.into_iter().filter(|s| s.is_terminal()) {
            assert!(events().iter().all(|e| transition(&status_in(state), e).is_err()), "{state} is terminal");
        }
    }

    #[test]
    fn only_the_holder_of_a_live_lease_acts() {
        for state in [JobState::Claimed, JobState::Running] {
            let s = status_in(state);
            let late = NOW + LEASE as i64;
            let by_other = [
                Event::Start { worker: w(2), now_ms: NOW },
                Event::Heartbeat { worker: w(2), now_ms: NOW, lease_ms: LEASE },
                Event::Complete { worker: w(2), now_ms: NOW },
                Event::Fail { worker: w(2), now_ms: NOW, retryable: false },
                Event::Release { worker: w(2), now_ms: NOW },
            ];
            for e in by_other {
                let r = transition(&s, &e);
                if state == JobState::Running && matches!(e, Event::Start { .. }) {
                    assert!(matches!(r, Err(TransitionError::Illegal { .. })));
                } else {
                    assert_eq!(r, Err(TransitionError::NotHolder), "{state} {}", e.name());
                }
            }
            assert_eq!(transition(&s, &Event::Complete { worker: w(1), now_ms: late }), Err(TransitionError::LeaseExpired));
            assert_eq!(transition(&s, &Event::Heartbeat { worker: w(1), now_ms: late, lease_ms: LEASE }), Err(TransitionError::LeaseExpired));
            assert_eq!(transition(&s, &Event::LeaseLapsed { now_ms: late - 1 }), Err(TransitionError::LeaseActive));
        }
    }

    #[test]
    fn claims_count_attempts_until_the_job_fails() {
        let mut s = JobStatus::queued(2, NOW + 60_000);
        for attempt in 1..=2 {
            s = transition(&s, &Event::Claim { worker: w(attempt), now_ms: NOW, lease_ms: LEASE }).unwrap();
            assert_eq!((s.state, s.attempt), (JobState::Claimed, u32::from(attempt)));
            assert_eq!(s.lease.as_ref().unwrap().expires_at_ms, NOW + LEASE as i64);
            s = transition(&s, &Event::LeaseLapsed { now_ms: NOW + LEASE as i64 }).unwrap();
        }
        assert_eq!((s.state, s.lease.clone()), (JobState::Failed, None));
    }

    #[test]
    fn a_release_gives_the_attempt_back_and_heartbeats_never_shorten() {
        let s = transition(&JobStatus::queued(1, NOW), &Event::Claim { worker: w(1), now_ms: NOW, lease_ms: LEASE }).unwrap();
        let longer = transition(&s, &Event::Heartbeat { worker: w(1), now_ms: NOW + 10, lease_ms: 5 * LEASE }).unwrap();
        assert_eq!(longer.lease.as_ref().unwrap().expires_at_ms, NOW + 10 + 5 * LEASE as i64);
        let same = transition(&longer, &Event::Heartbeat { worker: w(1), now_ms: NOW + 20, lease_ms: LEASE }).unwrap();
        assert_eq!(same.lease, longer.lease);
        let released = transition(&same, &Event::Release { worker: w(1), now_ms: NOW + 30 }).unwrap();
        assert_eq!((released.state, released.attempt), (JobState::Queued, 0));
        assert!(transition(&released, &Event::Claim { worker: w(2), now_ms: NOW, lease_ms: LEASE }).is_ok());
    }

    #[test]
    fn lease_lengths_and_deadlines_are_bounded() {
        let q = JobStatus::queued(3, NOW + 10);
        for bad in [0, LEASE_MS_MIN - 1, LEASE_MS_MAX + 1] {
            assert_eq!(transition(&q, &Event::Claim { worker: w(1), now_ms: NOW, lease_ms: bad }), Err(TransitionError::LeaseLength(bad)));
        }
        assert_eq!(transition(&q, &Event::Expire { now_ms: NOW }), Err(TransitionError::NotYetExpired));
        assert_eq!(transition(&q, &Event::Expire { now_ms: NOW + 10 }).unwrap().state, JobState::Expired);
    }

    #[test]
    fn a_duplicate_completion_is_refused() {
        let s = status_in(JobState::Running);
        let done = transition(&s, &Event::Complete { worker: w(1), now_ms: NOW }).unwrap();
        assert_eq!(
            transition(&done, &Event::Complete { worker: w(1), now_ms: NOW }),
            Err(TransitionError::Illegal { state: JobState::Completed, event: "complete" })
        );
    }

    #[test]
    fn hold_outcomes_follow_the_state() {
        for state in JobState::ALL {
            let outcome = state.hold_outcome();
            assert_eq!(outcome.is_some(), state.is_terminal(), "{state}");
        }
        assert_eq!(JobState::Settled.hold_outcome(), Some(true));
        assert_eq!(JobState::Expired.hold_outcome(), Some(false));
    }
}
