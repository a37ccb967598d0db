//! Settlement, payouts and the sweeper on the embedded SQLite store: hand-computed numbers,
//! idempotent re-runs, a crash at every step of a settlement run, payouts once per day, and
//! the sweeper's cases.

use aitbc_core::job::JobState;
use aitbc_core::ledger::{AccountId, Balance, HoldState};
use aitbc_core::money::Amount;
use aitbc_market::auth::Principal;
use aitbc_market::jobs::JobRecord;
use aitbc_market::payouts::{PayoutOptions, PayoutStatus};
use aitbc_market::ledger::HOLD_CAPTURED;
use aitbc_market::settlement::{Failpoint, NoProgress, SettleError, SettleOptions, SETTLE_GRACE_MS};
use aitbc_market::reconcile::{catchup_batch_id, ReconcileOptions, ReconcileReport, RECONCILE_DELAY_MS};
use aitbc_market::sweep::{ExpiredRecords, SweepOptions};
use aitbc_market::Market;
use aitbc_store::{keys, StoreError};
use std::sync::Arc;

mod common;

use common::{aws_world, completion, funded_client, provider, submit, world, Provider, World};

/// Submits a job of `units` GPU-seconds, has it claimed `claim_after_ms` later and completed
/// a second after that with `used_ms` of GPU time.
async fn run_job(w: &World, p: &Provider, client: &Principal, key: &str, units: &str, claim_after_ms: i64, used_ms: u64) -> JobRecord {
    let m = &w.market;
    m.heartbeat(&p.who, &p.listing.gpu_id, &p.worker, None).await.unwrap();
    let job = m.submit_job(client, submit(units), key).await.unwrap();
    w.clock.advance_ms(claim_after_ms);
    let claimed = m.claim_job(&p.who, &job.job_id, &p.worker, None).await.unwrap();
    let started_s = m.now_ms() / 1_000;
    w.clock.advance_ms(1_000);
    let (done, _) = m.complete_job(&p.who, &job.job_id, completion(&claimed, p, used_ms, started_s, started_s + 1)).await.unwrap();
    done
}

async fn balance(m: &Market, account: &AccountId) -> Balance {
    m.account(account).await.unwrap().1
}

fn amt(text: &str) -> Amount {
    Amount::parse(text).unwrap()
}

/// Settlement without the grace for completions in flight: these tests await every completion.
fn no_grace() -> SettleOptions {
    SettleOptions { grace_ms: 0, ..SettleOptions::default() }
}

#[tokio::test]
async fn settlement_posts_fees_penalties_and_releases_by_hand_computed_numbers() {
    let w = world().await;
    let m = &w.market;
    let p = provider(m).await;
    let client = funded_client(m, "100").await;
    // 2.5 GPU-seconds at 1.6 hold 4 each (see flow.rs for the price).
    let on_time = run_job(&w, &p, &client, "a", "2.5", 0, 2_000).await;
    let late = run_job(&w, &p, &client, "b", "2.5", 31_000, 1_000).await;
    let cancelled = m.submit_job(&client, submit("2.5"), "c").await.unwrap();
    m.cancel_job(&client, &cancelled.job_id).await.unwrap();
    // The cancelled job's hold was voided when it ended, not by settlement.
    let hold = m.hold_record(cancelled.hold_id.as_str()).await.unwrap().unwrap();
    assert_eq!(hold.state, HoldState::Voided);

    let wallet = AccountId::wallet(&client.address);
    let earnings = AccountId::earnings(&p.who.address);
    let fee = AccountId::fee(&m.platform);
    assert_eq!(balance(m, &wallet).await, Balance { available: amt("92"), held: amt("8") });

    // Receipts younger than the grace wait: a completion stamped earlier may still be in flight.
    let early = m.settle(&SettleOptions::default(), &NoProgress).await.unwrap();
    assert_eq!((early.batches, early.receipts, early.steps), (0, 0, 0));
    assert_eq!(m.get_job(&client, &on_time.job_id).await.unwrap().status.state, JobState::Completed);
    w.clock.advance_ms(SETTLE_GRACE_MS);

    w.counter.reset();
    let report = m.settle(&SettleOptions::default(), &NoProgress).await.unwrap();
    assert_eq!((report.batches, report.receipts), (1, 2));
    // On time: 3.2 -> fee floor(2.5%) = 0.08, provider 3.12, 0.8 of the hold back.
    // Late (claimed 31 s after submission, SLA 30 s): 1.6 -> fee 0.04, penalty 50% = 0.8 out
    // of the provider's share: provider 0.76, client gets 4 - 1.6 + 0.8 = 3.2 back.
    assert_eq!(report.price_total, amt("4.8"));
    assert_eq!(report.fee_total, amt("0.12"));
    assert_eq!(report.penalty_total, amt("0.8"));
    assert_eq!(balance(m, &wallet).await, Balance { available: amt("96"), held: Amount::ZERO });
    assert_eq!(balance(m, &earnings).await, Balance { available: amt("3.88"), held: Amount::ZERO });
    assert_eq!(balance(m, &fee).await, Balance { available: amt("0.12"), held: Amount::ZERO });

    // Aggregation: one balance write per account for the batch, whatever the receipts, and
    // nothing per receipt: jobs, receipts, holds and settlement records are not written.
    let writes = w.counter.by_entity();
    assert_eq!(writes.get(&format!("ACCOUNT#{fee}")), Some(&1), "{writes:?}");
    assert_eq!(writes.get("ACCOUNT"), Some(&3), "{writes:?}");
    assert_eq!(writes["SETTLEMENT"], 1 + 1 + 3 + 1, "record, plan page, three lines, finish");
    assert_eq!(w.counter.writes(), 3 + 6, "{writes:?}");

    for (job, penalty) in [(&on_time, Amount::ZERO), (&late, amt("0.8"))] {
        // Clients see the job settled, with its settlement.
        let settled = m.get_job(&client, &job.job_id).await.unwrap();
        assert_eq!(settled.status.state, JobState::Settled);
        let receipt_id = job.receipt_id.clone().unwrap();
        let settlement = settled.settlement.clone().expect("a settled job shows its settlement");
        assert_eq!((settlement.receipt_id.as_str(), settlement.amounts.penalty), (receipt_id.as_str(), penalty));
        assert_eq!(settlement.batch_id, report.last_batch.clone().unwrap());
        assert_eq!(settlement.transfer_id, aitbc_market::settlement::post_transfer_id(&job.job_id));
        let (listed, _) = m.list_jobs(&client, 10, None).await.unwrap();
        assert_eq!(listed.iter().find(|j| j.job_id == job.job_id).unwrap().settlement.as_ref(), Some(&settlement));
        // The hold was captured for the receipt when the job completed; it stays so.
        let (_, phase) = m.hold_with_phase(job.hold_id.as_str()).await.unwrap().unwrap();
        assert_eq!(phase, HOLD_CAPTURED);
        // The stored job is as completion left it: its settled state is the batch's.
        let (stored, _) = m.job_with_version(&job.job_id).await.unwrap();
        assert_eq!((stored.status.state, stored.settlement), (JobState::Completed, None));
    }
    // The fee account's history shows the batch's line.
    let (history, _) = m.ledger_history(&fee, 10, None).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!((history[0].kind.as_str(), history[0].available_delta), ("settlement", 120_000_000));

    // Running it again changes nothing and writes nothing.
    w.counter.reset();
    w.clock.advance_ms(SETTLE_GRACE_MS);
    let again = m.settle(&SettleOptions::default(), &NoProgress).await.unwrap();
    assert_eq!((again.batches, again.receipts, again.steps), (0, 0, 0));
    assert_eq!(w.counter.writes(), 0);
    assert_eq!(balance(m, &wallet).await.available, amt("96"));
    assert_eq!(balance(m, &earnings).await.available, amt("3.88"));
}

/// A world with `clients` clients of one provider, each with one completed job, the first with
/// `extra` more; every seventh job starts late.
async fn crash_world(clients: usize, extra: usize) -> (World, Vec<AccountId>) {
    let w = world().await;
    let p = provider(&w.market).await;
    let mut accounts = vec![AccountId::earnings(&p.who.address), AccountId::wallet(&p.who.address), AccountId::fee(&w.market.platform)];
    let mut principals = Vec::new();
    for _ in 0..clients {
        let client = funded_client(&w.market, "50").await;
        accounts.push(AccountId::wallet(&client.address));
        principals.push(client);
    }
    for n in 0..clients + extra {
        let client = &principals[if n < clients { n } else { 0 }];
        let claim_after = if n % 7 == 3 { 45_000 } else { 2_000 };
        run_job(&w, &p, client, &format!("job-{n}"), "2.5", claim_after, 1_000 + 13 * n as u64).await;
    }
    (w, accounts)
}

async fn balances(m: &Market, accounts: &[AccountId]) -> Vec<Balance> {
    let mut out = Vec::new();
    for a in accounts {
        out.push(balance(m, a).await);
    }
    out
}

#[tokio::test]
async fn a_run_killed_at_any_step_and_run_again_reaches_the_same_balances() {
    // The first batch (60 receipts of 60 clients) touches more accounts than one account step
    // holds (50), so it takes two account steps; the second batch (4 receipts) one.
    const CLIENTS: usize = 60;
    const EXTRA: usize = 4;
    let options = SettleOptions { batch_receipts_max: 60, ..no_grace() };
    let (reference, accounts) = crash_world(CLIENTS, EXTRA).await;
    let expected_before = balances(&reference.market, &accounts).await;
    let total_before: u128 = expected_before.iter().map(|b| u128::from(b.available.raw() + b.held.raw())).sum();
    let report = reference.market.settle(&options, &NoProgress).await.unwrap();
    assert_eq!((report.batches, report.receipts), (2, (CLIENTS + EXTRA) as u64));
    let expected = balances(&reference.market, &accounts).await;
    assert!(expected.iter().all(|b| b.held.is_zero()));
    let total_after: u128 = expected.iter().map(|b| u128::from(b.available.raw())).sum();
    assert_eq!(total_before, total_after, "settlement moves money, it makes none");
    assert!(report.penalty_total > Amount::ZERO, "some jobs started late");
    // record + 2 account steps + finish, then record + 1 account step + finish.
    assert_eq!(report.steps, 4 + 3, "{report:?}");

    for step in 1..=report.steps {
        for after_commit in [false, true] {
            let (w, accounts) = crash_world(CLIENTS, EXTRA).await;
            let crash = SettleOptions { failpoint: Some(Failpoint { step, after_commit }), ..options.clone() };
            let stopped = w.market.settle(&crash, &NoProgress).await;
            assert_eq!(stopped.unwrap_err(), SettleError::Injected { step }, "step {step}");
            let resumed = w.market.settle(&options, &NoProgress).await.unwrap();
            // A run stopped inside batch 1 or 2 leaves it open and the next run resumes it; not
            // one stopped before creating a batch (steps 1, 5) or after finishing one (4, 7).
            let stopped_inside = if after_commit { step != 4 && step != 7 } else { step != 1 && step != 5 };
            assert_eq!(resumed.resumed, u32::from(stopped_inside), "step {step} after {after_commit}: {resumed:?}");
            assert_eq!(balances(&w.market, &accounts).await, expected, "killed at step {step} (after commit: {after_commit})");
            // Every receipt settled exactly once: the resumed run settled what was left.
            let batches = w.market.latest_settlement_batch().await.unwrap().unwrap();
            assert_eq!(batches.seq, 2, "no batch planned twice");
            w.counter.reset();
            let again = w.market.settle(&options, &NoProgress).await.unwrap();
            assert_eq!((again.receipts, w.counter.writes()), (0, 0), "a finished run changes nothing");
        }
    }
}

#[tokio::test]
async fn payouts_pay_providers_above_the_threshold_once_per_day() {
    let w = world().await;
    let m = &w.market;
    let p = provider(m).await;
    let poor = provider(m).await;
    let client = funded_client(m, "100").await;
    run_job(&w, &p, &client, "a", "2.5", 0, 2_000).await;
    m.settle(&no_grace(), &NoProgress).await.unwrap();
    let earnings = AccountId::earnings(&p.who.address);
    let wallet = AccountId::wallet(&p.who.address);
    assert_eq!(balance(m, &earnings).await.available, amt("3.12"));

    // 3.12 is below the default 10 AITBC: nobody is paid.
    let report = m.run_payouts(&PayoutOptions::default(), &NoProgress).await.unwrap();
    assert_eq!((report.providers_scanned, report.paid, report.lines.len()), (2, 0, 0));
    assert_eq!(balance(m, &earnings).await.available, amt("3.12"));

    let options = PayoutOptions { threshold: amt("3") };
    let report = m.run_payouts(&options, &NoProgress).await.unwrap();
    assert_eq!((report.day.as_str(), report.paid, report.paid_total), ("2026-01-24", 1, amt("3.12")));
    let line = &report.lines[0];
    assert_eq!((&line.provider, line.status, line.payout_id.as_str()), (&p.who.address, PayoutStatus::Paid, format!("pay-20260124-{}", p.who.address).as_str()));
    assert_eq!(balance(m, &earnings).await.available, Amount::ZERO);
    assert_eq!(balance(m, &wallet).await.available, amt("3.12"));
    assert_eq!(balance(m, &AccountId::earnings(&poor.who.address)).await.available, Amount::ZERO);
    assert_eq!(report.to_csv(), format!("day,provider,payout_id,transfer_id,amount,status\n2026-01-24,{0},pay-20260124-{0},tx-pay-20260124-{0},3.12,paid\n", p.who.address));
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["lines"][0]["amount"], "3.12");

    // The same day again: more earnings, but no second payout.
    run_job(&w, &p, &client, "b", "2.5", 0, 2_000).await;
    m.settle(&no_grace(), &NoProgress).await.unwrap();
    let again = m.run_payouts(&options, &NoProgress).await.unwrap();
    assert_eq!((again.paid, again.already_paid, again.paid_total), (0, 1, Amount::ZERO));
    assert_eq!(again.lines[0].status, PayoutStatus::AlreadyPaid);
    assert_eq!(balance(m, &earnings).await.available, amt("3.12"));
    assert_eq!(balance(m, &wallet).await.available, amt("3.12"));

    // The next UTC day pays what accrued.
    w.clock.advance_ms(24 * 3_600_000);
    let next = m.run_payouts(&options, &NoProgress).await.unwrap();
    assert_eq!((next.day.as_str(), next.paid, next.paid_total), ("2026-01-25", 1, amt("3.12")));
    assert_eq!(balance(m, &wallet).await.available, amt("6.24"));
    let record = m.payout_record(&next.lines[0].payout_id).await.unwrap().unwrap();
    assert_eq!(record.amount, amt("3.12"));
}

#[tokio::test]
async fn unclaimed_jobs_are_rematched_once_then_expire_with_their_hold_voided() {
    let w = world().await;
    let m = &w.market;
    let p = provider(m).await;
    let client = funded_client(m, "10").await;
    let wallet = AccountId::wallet(&client.address);
    let job = m.submit_job(&client, submit("2.5"), "a").await.unwrap();
    let timeout = m.settings.claim_timeout_ms as i64;

    // Before the deadline nothing happens.
    w.clock.advance_ms(timeout - 1_000);
    m.heartbeat(&p.who, &p.listing.gpu_id, &p.worker, None).await.unwrap();
    let report = m.sweep(&SweepOptions::default(), &NoProgress).await.unwrap();
    assert_eq!((report.rematched, report.expired), (0, 0));

    // Past it, with the listing online: re-matched (its message sent again), deadline moved.
    w.clock.advance_ms(2_000);
    m.heartbeat(&p.who, &p.listing.gpu_id, &p.worker, None).await.unwrap();
    let report = m.sweep(&SweepOptions::default(), &NoProgress).await.unwrap();
    assert_eq!((report.rematched, report.expired), (1, 0));
    let (queued, _) = m.job_with_version(&job.job_id).await.unwrap();
    assert_eq!(queued.status.state, JobState::Queued);
    assert_eq!(queued.status.claim_deadline_ms, m.now_ms() + timeout);
    let depth = m.queue.approximate_depth(&p.listing.queue).await.unwrap();
    assert_eq!(depth, 2, "the original message and the re-match's");
    let report = m.sweep(&SweepOptions::default(), &NoProgress).await.unwrap();
    assert_eq!((report.rematched, report.expired), (0, 0), "a re-matched job waits for its new deadline");

    // Past the new deadline: it was re-matched once already, so it expires and its hold is voided.
    w.clock.advance_ms(timeout + 1_000);
    m.heartbeat(&p.who, &p.listing.gpu_id, &p.worker, None).await.unwrap();
    let report = m.sweep(&SweepOptions::default(), &NoProgress).await.unwrap();
    assert_eq!((report.rematched, report.expired), (0, 1));
    let (expired, _) = m.job_with_version(&job.job_id).await.unwrap();
    assert_eq!(expired.status.state, JobState::Expired);
    assert_eq!(m.hold_record(job.hold_id.as_str()).await.unwrap().unwrap().state, HoldState::Voided);
    assert_eq!(balance(m, &wallet).await, Balance { available: amt("10"), held: Amount::ZERO });

    // A job whose listing went offline expires at its first deadline, without a re-match.
    m.heartbeat(&p.who, &p.listing.gpu_id, &p.worker, None).await.unwrap();
    let offline = m.submit_job(&client, submit("2.5"), "b").await.unwrap();
    w.clock.advance_ms(timeout + 1_000);
    let report = m.sweep(&SweepOptions::default(), &NoProgress).await.unwrap();
    assert_eq!((report.rematched, report.expired), (0, 1));
    assert_eq!(m.job_with_version(&offline.job_id).await.unwrap().0.status.state, JobState::Expired);
    assert_eq!(balance(m, &wallet).await, Balance { available: amt("10"), held: Amount::ZERO });
}

#[tokio::test]
async fn lapsed_leases_requeue_until_the_last_attempt_then_fail_and_void() {
    let w = world().await;
    let m = &w.market;
    let p = provider(m).await;
    let client = funded_client(m, "10").await;
    let job = m.submit_job(&client, submit("2.5"), "a").await.unwrap();
    let lease = m.settings.lease_ms as i64;
    for attempt in 1..=m.settings.attempts_max {
        let claimed = m.claim_job(&p.who, &job.job_id, &p.worker, None).await.unwrap();
        assert_eq!(claimed.status.attempt, attempt);
        // Still within the lease: nothing to do.
        w.clock.advance_ms(lease - 1);
        assert_eq!(m.sweep(&SweepOptions::default(), &NoProgress).await.unwrap().requeued, 0);
        w.clock.advance_ms(1);
        let report = m.sweep(&SweepOptions::default(), &NoProgress).await.unwrap();
        let (after, _) = m.job_with_version(&job.job_id).await.unwrap();
        let view = m.listing_view(&m.listing_item(&p.listing.gpu_id).await.unwrap()).unwrap();
        assert_eq!(view.active_jobs, 0, "the lapsed claim no longer counts");
        if attempt < m.settings.attempts_max {
            assert_eq!((report.requeued, report.failed, after.status.state), (1, 0, JobState::Queued));
            assert_eq!(after.status.attempt, attempt, "the claim counted the attempt");
        } else {
            assert_eq!((report.requeued, report.failed, after.status.state), (0, 1, JobState::Failed));
            assert!(after.failure.unwrap().reason.contains("lease lapsed"));
        }
    }
    assert_eq!(m.hold_record(job.hold_id.as_str()).await.unwrap().unwrap().state, HoldState::Voided);
    assert_eq!(balance(m, &AccountId::wallet(&client.address)).await, Balance { available: amt("10"), held: Amount::ZERO });
    // A late worker of the last attempt cannot complete the failed job.
    let now_s = m.now_ms() / 1_000;
    let (failed, _) = m.job_with_version(&job.job_id).await.unwrap();
    assert!(m.complete_job(&p.who, &job.job_id, completion(&failed, &p, 1_000, now_s - 2, now_s)).await.is_err());
}

struct Expiry(aitbc_store::SqliteStore);

#[async_trait::async_trait]
impl ExpiredRecords for Expiry {
    async fn sweep_expired(&self, now_s: i64, limit: usize) -> Result<usize, StoreError> {
        self.0.sweep_expired(now_s, limit).await
    }
}

#[tokio::test]
async fn straggling_holds_are_voided_and_expired_records_removed() {
    let w = world().await;
    let m = &w.market;
    let _p = provider(m).await;
    let client = funded_client(m, "10").await;
    let job = m.submit_job(&client, submit("2.5"), "a").await.unwrap();
    // A job that ended unpaid without its void (as a crash of an older version might leave it).
    let (record, version) = m.job_with_version(&job.job_id).await.unwrap();
    let mut cancelled = record.clone();
    cancelled.status.state = JobState::Cancelled;
    m.store.transact(vec![m.job_write(&cancelled, version)]).await.unwrap();
    assert_eq!(m.hold_record(job.hold_id.as_str()).await.unwrap().unwrap().state, HoldState::Pending);
    m.idempotency_begin("scope-a", "key-1", "fp").await.unwrap();
    let idem = keys::idempotency("scope-a", "key-1");
    assert!(m.store.get(&idem).await.unwrap().is_some());

    let options = SweepOptions { expired_records: Some(Arc::new(Expiry(w.sqlite.clone().unwrap()))), ..SweepOptions::default() };
    let report = m.sweep(&options, &NoProgress).await.unwrap();
    assert_eq!((report.holds_voided, report.expired_records), (0, 0), "not yet due");

    w.clock.advance_ms(25 * 3_600_000);
    let report = m.sweep(&options, &NoProgress).await.unwrap();
    assert_eq!((report.holds_voided, report.expired_records), (1, 1));
    assert_eq!(m.hold_record(job.hold_id.as_str()).await.unwrap().unwrap().state, HoldState::Voided);
    assert_eq!(balance(m, &AccountId::wallet(&client.address)).await, Balance { available: amt("10"), held: Amount::ZERO });
    assert!(m.store.get(&idem).await.unwrap().is_none());
    let report = m.sweep(&options, &NoProgress).await.unwrap();
    assert_eq!((report.holds_voided, report.anomalies), (0, 0), "a second sweep finds nothing");
}

/// Reconciliation without the delay for completions in flight: these tests await every one.
fn reconcile_now() -> ReconcileOptions {
    ReconcileOptions { delay_ms: 0, ..ReconcileOptions::default() }
}

/// A settled world with a late completion: job `a` completes and batch 1 settles it; job `b`,
/// claimed before batch 1 read its range, then completes with a clock 3 s behind (a stalled
/// process would do the same), so that its settlement record lands in batch 1's range after
/// batch 1 read it. Answers the world, job `b`, and the accounts (client wallet, provider
/// earnings, fee).
async fn late_world(w: World) -> (World, JobRecord, Vec<AccountId>) {
    let m = &w.market;
    let p = provider(m).await;
    let client = funded_client(m, "100").await;
    run_job(&w, &p, &client, "a", "2.5", 0, 2_000).await;
    m.heartbeat(&p.who, &p.listing.gpu_id, &p.worker, None).await.unwrap();
    let job = m.submit_job(&client, submit("2.5"), "b").await.unwrap();
    let claimed = m.claim_job(&p.who, &job.job_id, &p.worker, None).await.unwrap();
    let claimed_ms = m.now_ms();
    w.clock.advance_ms(5_000);
    let report = m.settle(&no_grace(), &NoProgress).await.unwrap();
    assert_eq!((report.batches, report.receipts), (1, 1));
    w.clock.advance_ms(-3_000);
    let started_s = claimed_ms / 1_000;
    let (late, _) = m.complete_job(&p.who, &job.job_id, completion(&claimed, &p, 1_000, started_s, started_s + 1)).await.unwrap();
    w.clock.advance_ms(3_000);
    let batch = m.latest_settlement_batch().await.unwrap().unwrap();
    let due_sk = keys::settlement_due(keys::shard(late.job_id.as_str()), late.finished_at_ms.unwrap(), late.job_id.as_str()).sk;
    assert!(batch.covers(&due_sk), "the late record lies in the range batch 1 read");
    let accounts = vec![AccountId::wallet(&client.address), AccountId::earnings(&p.who.address), AccountId::fee(&m.platform)];
    (w, late, accounts)
}

/// The late completion strands its hold until the sweeper reconciles batch 1; then it posts
/// once, in a catch-up batch, and the job shows settled by it. A second run changes nothing.
async fn late_completion_settles_in_a_catch_up(w: World) {
    let (w, late, accounts) = late_world(w).await;
    let m = &w.market;
    // Stranded: settlement goes on past batch 1, the hold stays held, the provider unpaid.
    w.clock.advance_ms(SETTLE_GRACE_MS);
    let report = m.settle(&SettleOptions::default(), &NoProgress).await.unwrap();
    assert_eq!(report.receipts, 0, "the late record is in a finished batch's range");
    assert_eq!(balances(m, &accounts).await, vec![
        Balance { available: amt("92.8"), held: amt("4") },
        Balance { available: amt("3.12"), held: Amount::ZERO },
        Balance { available: amt("0.08"), held: Amount::ZERO },
    ]);
    let (_, phase) = m.hold_with_phase(late.hold_id.as_str()).await.unwrap().unwrap();
    assert_eq!(phase, HOLD_CAPTURED);

    // Not yet: batch 1 finished less than the reconciliation delay ago.
    let sweep = m.sweep(&SweepOptions::default(), &NoProgress).await.unwrap();
    assert_eq!(sweep.reconcile, ReconcileReport::default());
    w.clock.advance_ms(RECONCILE_DELAY_MS);
    let sweep = m.sweep(&SweepOptions::default(), &NoProgress).await.unwrap();
    let r = &sweep.reconcile;
    assert_eq!((r.batches, r.records, r.late, r.catchups, r.undecodable), (1, 2, 1, 1, 0), "{r:?}");
    // 1.6 for 1 s at the listing's rate: fee 0.04, provider 1.56, 2.4 of the hold back.
    let expected = vec![
        Balance { available: amt("95.2"), held: Amount::ZERO },
        Balance { available: amt("4.68"), held: Amount::ZERO },
        Balance { available: amt("0.12"), held: Amount::ZERO },
    ];
    assert_eq!(balances(m, &accounts).await, expected);
    let shown = m.with_settlement(m.job_with_version(&late.job_id).await.unwrap().0).await.unwrap();
    assert_eq!(shown.status.state, JobState::Settled);
    let settlement = shown.settlement.expect("a settled job shows its settlement");
    assert_eq!(settlement.batch_id, catchup_batch_id(1, 1));
    assert_eq!(settlement.amounts.price, amt("1.6"));

    // Again: nothing to do, nothing written, no new batch.
    w.counter.reset();
    let again = m.sweep(&SweepOptions::default(), &NoProgress).await.unwrap();
    assert_eq!(again.reconcile, ReconcileReport::default());
    assert_eq!(w.counter.writes(), 0);
    assert_eq!(balances(m, &accounts).await, expected);
    assert_eq!(m.latest_settlement_batch().await.unwrap().unwrap().seq, 1);
    assert!(m.settlement_batch(&catchup_batch_id(1, 2)).await.unwrap().is_none());
    assert_eq!(m.settle(&no_grace(), &NoProgress).await.unwrap().receipts, 0);
}

#[tokio::test]
async fn a_late_completion_settles_in_a_catch_up_batch_on_sqlite() {
    late_completion_settles_in_a_catch_up(world().await).await;
}

#[tokio::test]
async fn a_late_completion_settles_in_a_catch_up_batch_on_dynamodb() {
    let Some(w) = aws_world().await else { return };
    late_completion_settles_in_a_catch_up(w).await;
}

#[tokio::test]
async fn a_reconciliation_killed_at_any_step_and_run_again_reaches_the_same_balances() {
    let (reference, _, accounts) = late_world(world().await).await;
    let report = reference.market.reconcile(&reconcile_now()).await.unwrap();
    // Create the catch-up, its three accounts, finish it, move the cursor.
    assert_eq!((report.late, report.steps), (1, 4), "{report:?}");
    let expected = balances(&reference.market, &accounts).await;
    assert!(expected.iter().all(|b| b.held.is_zero()));
    for step in 1..=report.steps {
        for after_commit in [false, true] {
            let (w, late, accounts) = late_world(world().await).await;
            let crash = ReconcileOptions { failpoint: Some(Failpoint { step, after_commit }), ..reconcile_now() };
            let stopped = w.market.reconcile(&crash).await;
            assert_eq!(stopped.unwrap_err(), SettleError::Injected { step }, "step {step}");
            let resumed = w.market.reconcile(&reconcile_now()).await.unwrap();
            // The catch-up is open after step 1 committed and until step 3 did.
            let open = if after_commit { step == 1 || step == 2 } else { step == 2 || step == 3 };
            assert_eq!(resumed.resumed, u32::from(open), "step {step} after {after_commit}: {resumed:?}");
            assert_eq!(balances(&w.market, &accounts).await, expected, "killed at step {step} (after commit: {after_commit})");
            assert!(w.market.settlement_batch(&catchup_batch_id(1, 2)).await.unwrap().is_none(), "settled once");
            let shown = w.market.with_settlement(w.market.job_with_version(&late.job_id).await.unwrap().0).await.unwrap();
            assert_eq!(shown.settlement.map(|s| s.batch_id), Some(catchup_batch_id(1, 1)));
            w.counter.reset();
            let again = w.market.reconcile(&reconcile_now()).await.unwrap();
            assert_eq!((again.batches, again.late, w.counter.writes()), (0, 0, 0), "a finished run changes nothing");
        }
    }
}

#[tokio::test]
async fn a_late_job_is_not_settled_while_its_catch_up_is_open() {
    let (w, late, _) = late_world(world().await).await;
    let m = &w.market;
    // Stopped after the catch-up (and its marker) was created, before its accounts moved.
    let crash = ReconcileOptions { failpoint: Some(Failpoint { step: 1, after_commit: true }), ..reconcile_now() };
    assert!(m.reconcile(&crash).await.is_err());
    let shown = m.with_settlement(m.job_with_version(&late.job_id).await.unwrap().0).await.unwrap();
    assert_eq!((shown.status.state, shown.settlement), (JobState::Completed, None));
}
