//! A randomized, seeded (reproducible) simulation of the marketplace with the scheduler: jobs
//! (some submitted in batches at the listings' batch discount, some on ordered, small queues)
//! that complete, fail (retryable or not), are cancelled or never claimed; workers that crash
//! (leases lapse) and deliveries that repeat (double claims, double completions); a scheduler
//! that crashes mid-batch (failpoints) and runs again. When everything has ended and settled:
//! no balance below zero, balances equal an independent replay on the core's reference ledger,
//! the sum of all balances equals deposits, exactly one posted transfer per receipt, and every
//! job resolved with no hold pending. Some completions commit late (with the clock moved back
//! into the range of a finished, not yet reconciled batch, as a stalled process or clock skew
//! would): reconciliation, itself killed now and then, settles each of them exactly once.
//! Clients rate settled jobs; every listing's and provider's reputation counters then equal the
//! jobs' outcomes, and every queue is empty with all its room back. Some clients have fixed-rate
//! contracts (their jobs pay the contract's rate while its hours last, penalized by the
//! contract's measured availability) and some paid for reserved capacity (the fee is in the
//! replay); the contracts' counters equal their jobs.
//!
//! On SQLite at full size; on DynamoDB + SQS (moto_server, `AITBC_TEST_AWS_ENDPOINT`) smaller.
//! `AITBC_SIM_SEED` replays a seed.

use aitbc_core::config::MarketConfig;
use aitbc_core::job::JobState;
use aitbc_core::ledger::{AccountId, HoldState, Ledger, Transfer};
use aitbc_core::money::Amount;
use aitbc_core::signing::NamedSigningKey;
use aitbc_core::values::{HoldId, JobId, KeyId, ListingId, TransferId, WorkerId};
use aitbc_market::auth::{Principal, Role};
use aitbc_market::jobs::{Completion, JobRecord, SubmitJob};
use aitbc_market::payouts::{PayoutOptions, PayoutRecord};
use aitbc_market::ledger::HOLD_CAPTURED;
use aitbc_market::settlement::{post_transfer_id, settle_amounts, settle_transfer, sla_missed, Failpoint, NoProgress, SettleError, SettleOptions, SettlementDue};
use aitbc_market::reconcile::{catchup_batch_id, ReconcileOptions};
use aitbc_market::sweep::SweepOptions;
use aitbc_market::{ManualClock, Market, MarketError, Settings};
use aitbc_store::{keys, Queue, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// 2026-01-24 20:00 UTC.
const START_MS: i64 = 1_769_284_800_000;
const SEED_DEFAULT: u64 = 0x5eed_a17b;

/// Every listing's batch offer: from 3 jobs, 20% off.
const BATCH_MIN: u32 = 3;
const BATCH_DISCOUNT_PERCENT: u32 = 20;

/// The queue size of the listings that order their queues.
const QUEUE_SIZE_SMALL: u32 = 12;

/// What a simulation does.
struct Params {
    jobs: usize,
    clients: usize,
    providers: usize,
    /// Jobs submitted per round, at most.
    submit_per_round: usize,
    /// Rounds of the drain phase (no new jobs), at most.
    drain_rounds_max: usize,
    /// Store requests settlement keeps in flight (moto_server is not safe under concurrency).
    in_flight_max: usize,
    /// Chance that a completion commits late (when a batch to be late for exists).
    late_chance: f64,
    /// Chance that a submission is a batch of jobs.
    batch_chance: f64,
}

/// What a job is meant to do when a worker has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Complete,
    FailRetryable,
    FailPermanent,
    Cancel,
    NeverClaimed,
}

struct SimJob {
    id: JobId,
    plan: Plan,
    provider: usize,
    /// Attempts on which the worker crashes (its lease lapses), left.
    crashes: u32,
    client: usize,
    /// Seen completed or ended: no worker acts on it any more.
    done: bool,
}

struct SimProvider {
    who: Principal,
    key: NamedSigningKey,
    gpu_id: ListingId,
    workers: [WorkerId; 2],
    online: bool,
}

#[derive(Debug, Default)]
struct Stats {
    submitted: usize,
    refused: usize,
    completed: usize,
    duplicate_claims_refused: usize,
    duplicate_completions_refused: usize,
    crashes: usize,
    scheduler_crashes: usize,
    settled: u64,
    payouts: u64,
    /// Completions committed into the range of a batch that had read it.
    late: usize,
    /// Late records settled by catch-up batches.
    caught_up: u64,
    /// Ratings given, and ratings refused (twice, or of a job not settled).
    rated: usize,
    ratings_refused: usize,
    /// Claims that an ordered queue answered with another job than the one named.
    reordered: usize,
    /// Batches tried, jobs submitted in batches, and those priced with the batch discount.
    batch_keys: usize,
    batch_jobs: usize,
    discounted: usize,
}

fn receipt_for(job: &JobRecord, key: &NamedSigningKey, worker: &WorkerId, units_ms: u64, now_ms: i64) -> Completion {
    let started_s = job.claimed_at_ms.unwrap_or(now_ms) / 1_000;
    Completion::signed(job, key, worker, units_ms, started_s, (now_ms / 1_000).max(started_s))
}

struct Sim {
    market: Market,
    clock: Arc<ManualClock>,
    rng: StdRng,
    providers: Vec<SimProvider>,
    clients: Vec<Principal>,
    jobs: Vec<SimJob>,
    deposits: Vec<(AccountId, Amount)>,
    stats: Stats,
    in_flight_max: usize,
    late_chance: f64,
    batch_chance: f64,
    /// Jobs completed late.
    late: HashSet<JobId>,
    /// Ratings given, by job.
    ratings: HashMap<JobId, u8>,
    /// Accepted contracts, as (provider, client) indexes.
    contracts: Vec<(usize, usize)>,
    /// Paid reservations.
    reservations: Vec<aitbc_market::reservations::Reservation>,
}

impl Sim {
    async fn new(store: Arc<dyn Store>, queue: Arc<dyn Queue>, params: &Params, seed: u64) -> Sim {
        let clock = Arc::new(ManualClock::new(START_MS));
        let key = NamedSigningKey::from_seed(KeyId::parse("aitbc-market-sim").unwrap(), [3; 32]);
        let market = Market::new(store, queue, MarketConfig::default(), Settings::default(), key, clock.clone());
        market.bootstrap().await.unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut providers = Vec::new();
        for n in 0..params.providers {
            let opened = market.open_account_with_key(None, Role::Provider, None).await.unwrap();
            let who = market.authenticate(&opened.api_key).await.unwrap();
            let key = NamedSigningKey::from_seed(KeyId::parse(&format!("prov-sim-{n}")).unwrap(), rng.gen());
            market.register_signing_key(&who, key.public()).await.unwrap();
            let new = serde_json::from_value(serde_json::json!({
                "name": "Sim-GPU", "memory_gib": 24, "cuda_version": "12.1", "base_price": "0.05", "region": "us-west",
                "models": ["llama3.2"], "count": 4, "max_concurrent_jobs": 4096,
                "sla": {"response_time_s": 30, "penalty_rate_bps": 2500 + 2500 * (n as u32 % 3)},
                // Every other listing orders its queue (claims then take its first job, not
                // the one named) and holds few jobs (full queues refuse submissions).
                "batch": {"min_batch_size": BATCH_MIN, "discount_percent": BATCH_DISCOUNT_PERCENT},
                "queue_config": if n % 2 == 1 {
                    serde_json::json!({"priority": "weighted_fair_share", "max_queue_size": QUEUE_SIZE_SMALL})
                } else {
                    serde_json::json!({})
                }
            }))
            .unwrap();
            let listing = market.create_listing(&who, new).await.unwrap();
            let workers = [WorkerId::parse(&format!("wrk-{n}-a")).unwrap(), WorkerId::parse(&format!("wrk-{n}-b")).unwrap()];
            providers.push(SimProvider { who, key, gpu_id: listing.gpu_id, workers, online: true });
        }
        let mut clients = Vec::new();
        let mut deposits = Vec::new();
        for _ in 0..params.clients {
            let opened = market.open_account_with_key(None, Role::Client, None).await.unwrap();
            let client = market.authenticate(&opened.api_key).await.unwrap();
            // Enough for most of a client's jobs, not all: some submissions are refused.
            let amount = Amount::from_aitbc(rng.gen_range(20..200));
            market.deposit(&client, &client.address, amount, TransferId::generate()).await.unwrap();
            deposits.push((AccountId::wallet(&client.address), amount));
            clients.push(client);
        }
        // Each provider offers a contract to one client (90% availability guaranteed, one
        // GPU-hour); the client accepts. Jobs of that client priced on that provider pay it.
        let mut contracts = Vec::new();
        for (n, p) in providers.iter().enumerate() {
            let c = n % clients.len();
            let offer = serde_json::from_value(serde_json::json!({"client": clients[c].address, "fixed_rate": "0.036", "hours": 1, "guaranteed_availability_bps": 9_000})).unwrap();
            market.offer_contract(&p.who, offer).await.unwrap();
            market.accept_contract(&clients[c], &p.who.address).await.unwrap();
            contracts.push((n, c));
        }
        // Reserved capacity: the second provider's small queue keeps 2 places for the last
        // client, who pays 5 AITBC for a day of it (a heartbeat first: only an online listing
        // can be reserved).
        let mut reservations = Vec::new();
        if providers.len() > 1 {
            let (p, c) = (&providers[1], &clients[clients.len() - 1]);
            market.heartbeat(&p.who, &p.gpu_id, &p.workers[0], None).await.unwrap();
            let offer = serde_json::from_value(serde_json::json!({"gpu_id": p.gpu_id, "client": c.address, "slots": 2, "duration": "1d", "fee": "5"})).unwrap();
            let offered = market.offer_reservation(&p.who, offer).await.unwrap();
            reservations.push(market.accept_reservation(c, &offered.reservation_id).await.unwrap());
        }
        Sim { market, clock, rng, providers, clients, jobs: Vec::new(), deposits, stats: Stats::default(), in_flight_max: params.in_flight_max, late_chance: params.late_chance, batch_chance: params.batch_chance, late: HashSet::new(), ratings: HashMap::new(), contracts, reservations }
    }

    async fn heartbeats(&mut self) {
        for p in &self.providers {
            if p.online {
                self.market.heartbeat(&p.who, &p.gpu_id, &p.workers[0], None).await.unwrap();
            }
        }
    }

    fn plan(&mut self) -> (Plan, u32) {
        let plan = match self.rng.gen_range(0..100) {
            0..=54 => Plan::Complete,
            55..=66 => Plan::FailRetryable,
            67..=74 => Plan::FailPermanent,
            75..=84 => Plan::Cancel,
            _ => Plan::NeverClaimed,
        };
        (plan, if self.rng.gen_bool(0.2) { self.rng.gen_range(1..=3) } else { 0 })
    }

    /// A client submits a batch of 2..=4 jobs: one quote, with the listing's batch discount
    /// from `BATCH_MIN` jobs on; each job then lives (and is paid for) on its own.
    async fn submit_batch(&mut self) {
        let client = self.rng.gen_range(0..self.clients.len());
        let n = self.rng.gen_range(2..=4usize);
        let units = format!("{}.{:03}", self.rng.gen_range(0..3), self.rng.gen_range(1..1000));
        let batch: aitbc_market::jobs::SubmitBatch = serde_json::from_value(serde_json::json!({
            "model": "llama3.2", "units": units, "region": "us-west",
            "specs": vec![serde_json::json!({"kind": "vector_add", "n": 1024, "seed": 1}); n]
        }))
        .unwrap();
        self.stats.batch_keys += 1;
        let key = format!("sim-batch-{}", self.stats.batch_keys);
        match self.market.submit_batch(&self.clients[client], batch, &key).await {
            Ok(made) => {
                let expected = if n >= BATCH_MIN as usize { 10_000 - 100 * BATCH_DISCOUNT_PERCENT } else { 10_000 };
                assert_eq!(made.quote.terms.breakdown.batch_bps, expected, "batch of {n}");
                self.stats.refused += made.refused.len();
                for job in made.jobs {
                    assert_eq!((job.unit_price, job.max_price), (made.quote.terms.unit_price, made.quote.terms.max_price));
                    let provider = self.providers.iter().position(|p| p.gpu_id == job.gpu_id).expect("a known listing");
                    let (plan, crashes) = self.plan();
                    self.jobs.push(SimJob { id: job.job_id, plan, provider, crashes, client, done: false });
                    self.stats.submitted += 1;
                    self.stats.batch_jobs += 1;
                    if n >= BATCH_MIN as usize {
                        self.stats.discounted += 1;
                    }
                }
            }
            Err(MarketError::InsufficientFunds(_) | MarketError::NoCapacity(_) | MarketError::QueueFull(_)) => self.stats.refused += 1,
            Err(e) => panic!("submit batch: {e:?}"),
        }
    }

    async fn submit(&mut self) {
        if self.rng.gen_bool(self.batch_chance) {
            return self.submit_batch().await;
        }
        let client = self.rng.gen_range(0..self.clients.len());
        let plan = match self.rng.gen_range(0..100) {
            0..=54 => Plan::Complete,
            55..=66 => Plan::FailRetryable,
            67..=74 => Plan::FailPermanent,
            75..=84 => Plan::Cancel,
            _ => Plan::NeverClaimed,
        };
        let crashes = if self.rng.gen_bool(0.2) { self.rng.gen_range(1..=3) } else { 0 };
        let units = format!("{}.{:03}", self.rng.gen_range(0..3), self.rng.gen_range(1..1000));
        let mut body = serde_json::json!({
            "model": "llama3.2", "units": units, "region": "us-west",
            "spec": {"kind": "vector_add", "n": 1024, "seed": 1}
        });
        // Some clients name a listing (routing would favour the first of equals).
        if self.rng.gen_bool(0.4) {
            body["gpu_id"] = serde_json::json!(self.providers[self.rng.gen_range(0..self.providers.len())].gpu_id);
        }
        let submit: SubmitJob = serde_json::from_value(body).unwrap();
        let key = format!("sim-{}", self.jobs.len() + self.stats.refused);
        match self.market.submit_job(&self.clients[client], submit, &key).await {
            Ok(job) => {
                let provider = self.providers.iter().position(|p| p.gpu_id == job.gpu_id).expect("a known listing");
                self.jobs.push(SimJob { id: job.job_id, plan, provider, crashes, client, done: false });
                self.stats.submitted += 1;
            }
            Err(MarketError::InsufficientFunds(_) | MarketError::NoCapacity(_) | MarketError::QueueFull(_)) => self.stats.refused += 1,
            Err(e) => panic!("submit: {e:?}"),
        }
    }

    /// One worker step on a random share of the jobs.
    async fn act(&mut self) {
        for n in 0..self.jobs.len() {
            if self.jobs[n].done || !self.rng.gen_bool(0.5) {
                continue;
            }
            let (job, _) = self.market.job_with_version(&self.jobs[n].id).await.unwrap();
            if job.status.state.is_terminal() || job.status.state == JobState::Completed {
                self.jobs[n].done = true;
                continue;
            }
            let sim = &self.jobs[n];
            let p = &self.providers[sim.provider];
            let (plan, provider, client) = (sim.plan, sim.provider, sim.client);
            let worker = p.workers[self.rng.gen_range(0..2)].clone();
            let now = self.market.now_ms();
            let lapsed = job.status.lease.as_ref().is_some_and(|l| now >= l.expires_at_ms);
            match job.status.state {
                JobState::Queued => match plan {
                    Plan::NeverClaimed => {}
                    Plan::Cancel => {
                        self.market.cancel_job(&self.clients[client], &job.job_id).await.unwrap();
                        // A repeated cancel is refused.
                        assert!(matches!(self.market.cancel_job(&self.clients[client], &job.job_id).await, Err(MarketError::Conflict(_))));
                    }
                    _ if p.online => {
                        let claimed = self.market.claim_job(&p.who, &job.job_id, &worker, None).await.unwrap();
                        if claimed.job_id != job.job_id {
                            // An ordered queue gave its first job instead; the one named waits.
                            assert!(claimed.queue_tag.is_some(), "only an ordered queue reorders claims");
                            self.stats.reordered += 1;
                        } else if self.rng.gen_bool(0.2) {
                            // A duplicate delivery: another worker claims the same job.
                            let other = p.workers.iter().find(|w| **w != worker).unwrap();
                            let second = self.market.claim_job(&p.who, &job.job_id, other, None).await;
                            assert!(matches!(second, Err(MarketError::Conflict(_))), "{second:?}");
                            self.stats.duplicate_claims_refused += 1;
                        }
                    }
                    _ => {}
                },
                JobState::Claimed | JobState::Running if lapsed => {
                    // A crashed worker's job: the next claim takes it over (or the sweeper
                    // requeues it first).
                    if p.online && self.rng.gen_bool(0.5) {
                        match self.market.claim_job(&p.who, &job.job_id, &worker, None).await {
                            Ok(_) => {}
                            Err(MarketError::Conflict(_)) => {} // out of attempts: failed, hold voided
                            Err(e) => panic!("takeover: {e:?}"),
                        }
                    }
                }
                JobState::Claimed | JobState::Running => {
                    let holder = job.status.lease.as_ref().unwrap().holder.clone();
                    if self.jobs[n].crashes > 0 {
                        // The worker dies: nothing more from it; the lease will lapse.
                        self.jobs[n].crashes -= 1;
                        self.stats.crashes += 1;
                        // Mark the job so the step does not act on it again this attempt: its
                        // lease is the marker (it lapses on its own).
                        continue;
                    }
                    let key = &self.providers[provider].key;
                    match plan {
                        Plan::FailRetryable => {
                            self.market.fail_job(&p.who, &job.job_id, &holder, "device lost".into(), true).await.unwrap();
                        }
                        Plan::FailPermanent => {
                            self.market.fail_job(&p.who, &job.job_id, &holder, "bad kernel".into(), false).await.unwrap();
                        }
                        _ => {
                            let used = self.rng.gen_range(1..=job.units_max.millis());
                            // Now and then the completion commits late: stamped inside the range
                            // of the newest batch, which read it already and is not reconciled yet.
                            let mut back_ms = 0;
                            if self.rng.gen_bool(self.late_chance) {
                                if let Some(batch) = self.market.latest_settlement_batch().await.unwrap() {
                                    let through_ms: i64 = batch.through_sk[..keys::TIME_DIGITS].parse().unwrap();
                                    let at_ms = through_ms - self.rng.gen_range(0..2_000);
                                    let lease_ok = job.status.lease.as_ref().is_some_and(|l| at_ms < l.expires_at_ms);
                                    let unreconciled = self.market.reconcile_cursor().await.unwrap() < batch.seq;
                                    if unreconciled && lease_ok && at_ms >= job.claimed_at_ms.unwrap() + 1_000 && at_ms < now {
                                        back_ms = now - at_ms;
                                    }
                                }
                            }
                            self.clock.advance_ms(-back_ms);
                            let completion = receipt_for(&job, key, &holder, used, now - back_ms);
                            self.market.complete_job(&p.who, &job.job_id, completion.clone()).await.unwrap();
                            self.clock.advance_ms(back_ms);
                            if back_ms > 0 {
                                self.late.insert(job.job_id.clone());
                                self.stats.late += 1;
                            }
                            self.stats.completed += 1;
                            if self.rng.gen_bool(0.2) {
                                // The completion is delivered twice: the second is refused.
                                assert!(self.market.complete_job(&p.who, &job.job_id, completion).await.is_err());
                                self.stats.duplicate_completions_refused += 1;
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// The scheduler's runs, sometimes killed at a random step.
    async fn schedule(&mut self, crash_chance: f64) {
        let sweep = self.market.sweep(&SweepOptions::default(), &NoProgress).await.unwrap();
        self.stats.caught_up += sweep.reconcile.late;
        if self.rng.gen_bool(0.3) {
            // Reconciliation without its delay, sometimes killed at a random step.
            let failpoint = self.rng.gen_bool(crash_chance).then(|| Failpoint { step: self.rng.gen_range(1..=4), after_commit: self.rng.gen_bool(0.5) });
            match self.market.reconcile(&ReconcileOptions { delay_ms: 0, failpoint, in_flight_max: self.in_flight_max }).await {
                Ok(report) => self.stats.caught_up += report.late,
                Err(SettleError::Injected { .. }) => self.stats.scheduler_crashes += 1,
                Err(e) => panic!("reconcile: {e}"),
            }
        }
        let failpoint = self.rng.gen_bool(crash_chance).then(|| Failpoint { step: self.rng.gen_range(1..=8), after_commit: self.rng.gen_bool(0.5) });
        // The simulation awaits each completion, so any grace is safe; a random one leaves the
        // newest receipts to a later run now and then.
        let grace_ms = if self.rng.gen_bool(0.5) { 0 } else { self.rng.gen_range(1_000..120_000) };
        let options = SettleOptions { batch_receipts_max: self.rng.gen_range(20..=200), failpoint, in_flight_max: self.in_flight_max, grace_ms, ..SettleOptions::default() };
        match self.market.settle(&options, &NoProgress).await {
            Ok(report) => self.stats.settled += report.receipts,
            Err(SettleError::Injected { .. }) => self.stats.scheduler_crashes += 1,
            Err(e) => panic!("settle: {e}"),
        }
        if self.rng.gen_bool(0.1) {
            let report = self.market.run_payouts(&PayoutOptions { threshold: Amount::from_aitbc(5) }, &NoProgress).await.unwrap();
            self.stats.payouts += report.paid;
        }
    }
}

async fn simulate(store: Arc<dyn Store>, queue: Arc<dyn Queue>, params: Params) {
    let seed = std::env::var("AITBC_SIM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(SEED_DEFAULT);
    println!("simulation seed {seed} (AITBC_SIM_SEED replays it)");
    let mut sim = Sim::new(store, queue, &params, seed).await;
    let started = std::time::Instant::now();

    // Busy phase: jobs arrive, workers work and crash, the scheduler runs and crashes.
    let mut round = 0usize;
    while sim.jobs.len() < params.jobs {
        round += 1;
        sim.clock.advance_ms(sim.rng.gen_range(2_000..12_000));
        // Now and then a provider goes offline for a while (its unclaimed jobs expire).
        for p in sim.providers.iter_mut() {
            if sim.rng.gen_bool(0.02) {
                p.online = !p.online;
            }
        }
        if sim.providers.iter().all(|p| !p.online) {
            sim.providers[0].online = true;
        }
        sim.heartbeats().await;
        let arrivals = sim.rng.gen_range(1..=params.submit_per_round);
        for _ in 0..arrivals.min(params.jobs - sim.jobs.len()) {
            sim.submit().await;
        }
        sim.act().await;
        if round % 5 == 0 {
            sim.schedule(0.3).await;
        }
    }
    // Drain: no new jobs; workers finish, leases lapse, deadlines pass, the scheduler runs.
    for p in sim.providers.iter_mut() {
        p.online = true;
    }
    for drain in 0..params.drain_rounds_max {
        sim.clock.advance_ms(40_000);
        sim.heartbeats().await;
        sim.act().await;
        sim.schedule(if drain < params.drain_rounds_max / 2 { 0.3 } else { 0.0 }).await;
    }
    // Every provider offline and well past every deadline: what is still queued expires.
    for _ in 0..3 {
        sim.clock.advance_ms(2 * sim.market.settings.claim_timeout_ms as i64);
        sim.schedule(0.0).await;
    }
    let last = SettleOptions { in_flight_max: sim.in_flight_max, ..SettleOptions::default() };
    let report = sim.market.settle(&last, &NoProgress).await.unwrap();
    sim.stats.settled += report.receipts;
    let reconcile = ReconcileOptions { delay_ms: 0, in_flight_max: sim.in_flight_max, ..ReconcileOptions::default() };
    for _ in 0..1_000 {
        let report = sim.market.reconcile(&reconcile).await.unwrap();
        sim.stats.caught_up += report.late;
        if report.batches == 0 {
            break;
        }
    }
    let payouts = sim.market.run_payouts(&PayoutOptions { threshold: Amount::from_aitbc(1) }, &NoProgress).await.unwrap();
    sim.stats.payouts += payouts.paid;
    rate_jobs(&mut sim).await;
    println!("simulated {} jobs in {round} rounds, {:.1} s: {:?}", sim.jobs.len(), started.elapsed().as_secs_f64(), sim.stats);

    check(&sim).await;
    check_reputation(&sim).await;
    check_queues(&sim).await;
}

/// The invariants, against an independent replay on the core's reference ledger.
async fn check(sim: &Sim) {
    let m = &sim.market;
    let mut reference = Ledger::new();
    for (account, amount) in &sim.deposits {
        reference.apply(&Transfer::Deposit { id: TransferId::generate(), to: account.clone(), amount: *amount }).unwrap();
    }
    // Reservation fees, paid before any job.
    for r in &sim.reservations {
        let pay = Transfer::Pay { id: TransferId::generate(), from: AccountId::wallet(&r.client), to: AccountId::earnings(&r.provider), amount: r.fee, fee: r.fee.share_bps(m.config.fee_bps), fee_to: AccountId::fee(&m.platform) };
        reference.apply(&pay).unwrap();
    }
    // Per contract: GPU-milliseconds its jobs took, its completed jobs and the late ones.
    let mut contract_use: HashMap<(String, String), (u64, u64, u64)> = HashMap::new();
    let mut states: BTreeMap<&'static str, usize> = BTreeMap::new();
    // Every settlement record, each of one job and one receipt: one posted transfer each.
    let mut due_jobs: HashSet<String> = HashSet::new();
    for shard in 0..keys::INDEX_SHARDS {
        let mut cursor = None;
        loop {
            let page = m.store.query(keys::settlement_due_range(shard, &keys::settlement_due_start(), &keys::settlement_due_end(m.now_ms())).after(cursor)).await.unwrap();
            for item in &page.items {
                let due = SettlementDue::from_item(item.clone()).unwrap();
                assert_eq!(item.key, due.key(), "a record lies under its own key");
                assert!(due_jobs.insert(due.job_id.to_string()), "one settlement record per job");
            }
            cursor = page.cursor;
            if cursor.is_none() {
                break;
            }
        }
    }
    let mut posted_receipts = HashSet::new();
    let mut receipts_by_client: HashMap<String, usize> = HashMap::new();
    for sim_job in &sim.jobs {
        let (stored, _) = m.job_with_version(&sim_job.id).await.unwrap();
        let job = m.with_settlement(stored.clone()).await.unwrap();
        *states.entry(job.status.state.name()).or_default() += 1;
        assert!(
            matches!(job.status.state, JobState::Settled | JobState::Failed | JobState::Cancelled | JobState::Expired),
            "job {} left {} ({:?})",
            job.job_id,
            job.status.state,
            sim_job.plan
        );
        let (hold, phase) = m.hold_with_phase(job.hold_id.as_str()).await.unwrap().expect("every job has its hold");
        if job.contract.is_some() {
            assert_eq!(job.unit_price, aitbc_core::money::Rate::per_hour(Amount::parse("0.036").unwrap()), "a contract job pays the contract's rate");
            contract_use.entry((job.provider.to_string(), job.client.to_string())).or_default().0 += job.units_max.millis();
        }
        let hold_transfer = Transfer::Hold { id: TransferId::generate(), hold: job.hold_id.clone(), from: AccountId::wallet(&job.client), amount: job.max_price };
        reference.apply(&hold_transfer).unwrap();
        if job.status.state == JobState::Settled {
            let receipt_id = job.receipt_id.clone().expect("a settled job has its receipt");
            let receipt_item = m.store.get(&keys::receipt(&receipt_id)).await.unwrap().expect("stored");
            let receipt = aitbc_market::receipts::receipt_from_item(&receipt_item).unwrap();
            let settlement = job.settlement.clone().expect("a settled job shows its settlement");
            assert_eq!(stored.status.state, JobState::Completed, "the stored job stays as completion left it");
            assert!(due_jobs.remove(job.job_id.as_str()), "job {} has its settlement record", job.job_id);
            assert_eq!(settlement.receipt_id, receipt_id, "the posted transfer names its receipt");
            assert_eq!(settlement.transfer_id, post_transfer_id(&job.job_id));
            // A late record is settled by a catch-up of the batch whose range it lies in.
            assert_eq!(settlement.batch_id.contains("-late-"), sim.late.contains(&job.job_id), "job {}: {}", job.job_id, settlement.batch_id);
            assert!(posted_receipts.insert(receipt_id.clone()), "one posted transfer per receipt");
            *receipts_by_client.entry(job.client.to_string()).or_default() += 1;
            // The hold was captured for this receipt at completion, and never voided.
            assert_eq!((phase.as_str(), hold.state), (HOLD_CAPTURED, HoldState::Pending));
            let hold_item = m.store.get(&keys::hold(job.hold_id.as_str())).await.unwrap().unwrap();
            assert_eq!(hold_item.str("receipt_id"), Some(receipt_id.as_str()));
            // The settlement's numbers, computed again here from the receipt, the job and the SLA.
            let listing = m.listing(&job.gpu_id).await.unwrap();
            let late = sla_missed(job.created_at_ms, job.claimed_at_ms.unwrap(), &listing.sla);
            let penalty_bps = if late { listing.sla.penalty_rate_bps } else { 0 };
            if job.contract.is_some() {
                // By the contract's availability: the listing's penalty or none.
                let none = settle_amounts(job.max_price, receipt.body.price, m.config.fee_bps, 0).unwrap();
                let full = settle_amounts(job.max_price, receipt.body.price, m.config.fee_bps, listing.sla.penalty_rate_bps).unwrap();
                assert!(settlement.amounts == none || settlement.amounts == full, "job {}: {:?}", job.job_id, settlement.amounts);
                let used = contract_use.entry((job.provider.to_string(), job.client.to_string())).or_default();
                used.1 += 1;
                used.2 += u64::from(late);
            } else {
                assert_eq!(settlement.amounts, settle_amounts(job.max_price, receipt.body.price, m.config.fee_bps, penalty_bps).unwrap());
            }
            assert_eq!(job.price, Some(receipt.body.price));
            reference.apply(&settle_transfer(&job.job_id, &job.hold_id, &job.provider, &settlement.amounts, &m.platform)).unwrap();
        } else {
            assert_eq!((phase.as_str(), hold.state), ("voided", HoldState::Voided), "job {} ended {} and voided its hold", job.job_id, job.status.state);
            reference.apply(&Transfer::Void { id: TransferId::generate(), hold: HoldId::parse(job.hold_id.as_str()).unwrap() }).unwrap();
        }
    }
    assert!(due_jobs.is_empty(), "settlement records of jobs not settled: {due_jobs:?}");
    // Each contract's hours and counters equal its jobs: units taken at submission (refused or
    // cancelled jobs keep theirs: the hours were sold), completions and available ones.
    let mut contract_jobs = 0;
    for (p, c) in &sim.contracts {
        let (provider, client) = (&sim.providers[*p].who, &sim.clients[*c]);
        let record = m.get_contract(provider, &provider.address, &client.address).await.unwrap();
        let (used_ms, completed, late) = contract_use.get(&(provider.address.to_string(), client.address.to_string())).copied().unwrap_or_default();
        assert_eq!(record.remaining.as_deref(), Some(aitbc_core::money::GpuMillis::from_millis(3_600_000 - used_ms).to_string().as_str()), "contract of provider {p}");
        assert_eq!((record.jobs_completed, record.jobs_available), (completed, completed - late), "contract of provider {p}");
        contract_jobs += completed;
    }
    assert!(contract_jobs > 0, "the simulation settled some contract jobs");
    // Receipts exist only for settled jobs: each client's receipts are exactly its settled ones.
    for client in &sim.clients {
        let mut count = 0;
        let mut cursor = None;
        loop {
            let page = m.store.query(keys::receipts_by_client(client.address.as_str()).after(cursor)).await.unwrap();
            for item in &page.items {
                let receipt = aitbc_market::receipts::receipt_from_item(item).unwrap();
                assert!(posted_receipts.contains(receipt.body.receipt_id.as_str()), "receipt {} is settled", receipt.body.receipt_id);
                count += 1;
            }
            cursor = page.cursor;
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(count, receipts_by_client.get(&client.address.to_string()).copied().unwrap_or(0));
    }
    // Payouts move earnings to wallets.
    for p in &sim.providers {
        let page = m.store.query(keys::payouts_by_provider(p.who.address.as_str())).await.unwrap();
        for item in &page.items {
            let record: PayoutRecord = serde_json::from_value(serde_json::Value::Object(item.attrs.clone())).unwrap();
            let payout = Transfer::Move { id: record.transfer_id, from: AccountId::earnings(&p.who.address), to: AccountId::wallet(&p.who.address), amount: record.amount };
            reference.apply(&payout).unwrap();
        }
    }
    // Every account's balances equal the replay's; nothing is held; money is conserved.
    let mut accounts: Vec<AccountId> = sim.clients.iter().map(|c| AccountId::wallet(&c.address)).collect();
    for p in &sim.providers {
        accounts.push(AccountId::wallet(&p.who.address));
        accounts.push(AccountId::earnings(&p.who.address));
    }
    accounts.push(AccountId::fee(&m.platform));
    let mut total: i128 = 0;
    for account in &accounts {
        let (_, balance) = m.account(account).await.unwrap(); // balances parse as u64: never below zero
        assert_eq!(balance, reference.balance(account), "{account}");
        assert!(balance.held.is_zero(), "{account} still holds {}", balance.held);
        total += i128::from(balance.available.raw());
    }
    assert_eq!(total, reference.external_total(), "the sum of all accounts equals deposits minus withdrawals");
    assert_eq!(reference.total(), reference.external_total());
    // The simulation exercised what it claims to.
    println!("final states: {states:?}");
    for state in ["settled", "failed", "cancelled", "expired"] {
        assert!(states.get(state).copied().unwrap_or(0) > 0, "no job ended {state}: {states:?}");
    }
    // A finished settlement run again changes nothing.
    let again = m.settle(&SettleOptions { in_flight_max: sim.in_flight_max, ..SettleOptions::default() }, &NoProgress).await.unwrap();
    assert_eq!((again.receipts, again.steps), (0, 0));
    // So does reconciliation; every late completion was caught up exactly once.
    let again = m.reconcile(&ReconcileOptions { delay_ms: 0, in_flight_max: sim.in_flight_max, ..ReconcileOptions::default() }).await.unwrap();
    assert_eq!((again.batches, again.late, again.steps), (0, 0, 0));
    // Each late record is listed by exactly one catch-up batch (a killed run's catch-ups count).
    let latest = m.latest_settlement_batch().await.unwrap().map_or(0, |b| b.seq);
    let mut listed = Vec::new();
    for seq in 1..=latest {
        for k in 1.. {
            let Some(catchup) = m.settlement_batch(&catchup_batch_id(seq, k)).await.unwrap() else { break };
            listed.extend(catchup.late.iter().map(|sk| sk[keys::TIME_DIGITS + 1..].to_string()));
        }
    }
    listed.sort_unstable();
    let mut late: Vec<String> = sim.late.iter().map(|j| j.to_string()).collect();
    late.sort_unstable();
    assert_eq!(listed, late, "each late record caught up once");
    assert!(!sim.late.is_empty(), "the simulation completed some jobs late");
}

#[tokio::test]
async fn simulation_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let (store, queue) = aitbc_store::provision::sqlite(dir.path().join("sim.db"), &[], aitbc_store::queue_spec()).await.unwrap();
    let params = Params { jobs: 2_000, clients: 40, providers: 3, submit_per_round: 24, drain_rounds_max: 12, in_flight_max: aitbc_market::settlement::SETTLE_IN_FLIGHT_MAX, late_chance: 0.05, batch_chance: 0.08 };
    simulate(Arc::new(store), Arc::new(queue), params).await;
}

#[tokio::test]
async fn simulation_on_dynamodb_and_sqs() {
    use aitbc_store::conformance::Backends;
    let Some(backends) = aitbc_store::conformance::aws().await else { return };
    let store = backends.store().await;
    let queue = backends.queue(aitbc_store::queue_spec()).await;
    let params = Params { jobs: 100, clients: 8, providers: 2, submit_per_round: 8, drain_rounds_max: 8, in_flight_max: 1, late_chance: 0.5, batch_chance: 0.05 };
    simulate(store, queue, params).await;
}

/// Clients rate about half of their jobs: a settled job once (a second rating is refused), any
/// other job not at all (refused). Ratings move no money: `check` runs after them.
async fn rate_jobs(sim: &mut Sim) {
    let m = sim.market.clone();
    for i in 0..sim.jobs.len() {
        if !sim.rng.gen_bool(0.5) {
            continue;
        }
        let (job_id, client) = (sim.jobs[i].id.clone(), sim.clients[sim.jobs[i].client].clone());
        let rating = sim.rng.gen_range(1..=5u8);
        let settled = m.with_settlement(m.job_with_version(&job_id).await.unwrap().0).await.unwrap().status.state == JobState::Settled;
        let rate = aitbc_market::reputation::RateJob { rating: i64::from(rating) };
        match m.rate_job(&client, &job_id, rate.clone()).await {
            Ok(r) => {
                assert!(settled, "only a settled job is rated");
                assert_eq!(r.rating.get(), rating);
                sim.ratings.insert(job_id.clone(), rating);
                sim.stats.rated += 1;
                // Twice: refused, and nothing moves.
                assert!(matches!(m.rate_job(&client, &job_id, rate).await, Err(MarketError::Conflict(_))));
                sim.stats.ratings_refused += 1;
            }
            Err(MarketError::Conflict(_)) => {
                assert!(!settled, "a settled job rated once is rated");
                sim.stats.ratings_refused += 1;
            }
            Err(e) => panic!("rating job {job_id}: {e}"),
        }
    }
}

/// Each provider's reputation counters equal what happened to its jobs, counted here from the
/// jobs themselves; its one listing's equal its own.
async fn check_reputation(sim: &Sim) {
    use aitbc_core::reputation::Facts;
    let m = &sim.market;
    let mut expected: Vec<Facts> = vec![Facts::default(); sim.providers.len()];
    for sim_job in &sim.jobs {
        let job = m.with_settlement(m.job_with_version(&sim_job.id).await.unwrap().0).await.unwrap();
        let facts = &mut expected[sim_job.provider];
        if job.status.attempt > 0 {
            facts.started += 1;
        }
        match job.status.state {
            JobState::Settled => {
                facts.completed += 1;
                let listing = m.listing(&job.gpu_id).await.unwrap();
                if sla_missed(job.created_at_ms, job.claimed_at_ms.unwrap(), &listing.sla) {
                    facts.sla_breaches += 1;
                }
            }
            JobState::Failed => facts.failed += 1,
            JobState::Expired => facts.expired += 1,
            _ => {}
        }
        if let Some(rating) = sim.ratings.get(&sim_job.id) {
            facts.ratings += 1;
            facts.rating_total += u64::from(*rating);
        }
    }
    assert!(sim.stats.rated > 0 && sim.stats.ratings_refused > 0, "{:?}", sim.stats);
    for (p, want) in sim.providers.iter().zip(&expected) {
        let rep = m.provider_reputation(&p.who.address).await.unwrap();
        let got = rep.reputation.facts;
        let counted = (got.completed, got.failed, got.expired, got.sla_breaches, got.started, got.ratings, got.rating_total);
        let wanted = (want.completed, want.failed, want.expired, want.sla_breaches, want.started, want.ratings, want.rating_total);
        assert_eq!(counted, wanted, "provider {}: completed, failed, expired, breaches, started, ratings, rating total", p.who.address);
        assert_eq!(got.wait_histogram.iter().sum::<u64>(), got.started, "every start is in one bucket");
        assert_eq!(rep.listings.len(), 1);
        assert_eq!(rep.listings[0].reputation.facts, got, "one listing: its counters are its provider's");
        assert_eq!(rep.reputation.score_bps, got.score_bps());
    }
}

/// With every job ended, every queue is empty: each listing's room is back to its size and no
/// priority entry is left; the ordered listings did reorder claims.
async fn check_queues(sim: &Sim) {
    let m = &sim.market;
    for p in &sim.providers {
        let view = m.listing_view(&m.listing_item(&p.gpu_id).await.unwrap()).unwrap();
        assert_eq!(view.queue_room, i64::from(view.listing.queue_config.max_queue_size), "listing {}: every place is free again", p.gpu_id);
        let entries = m.store.query(keys::queue_entries(p.gpu_id.as_str())).await.unwrap();
        assert!(entries.items.is_empty(), "listing {}: entries left {:?}", p.gpu_id, entries.items.iter().map(|i| &i.key.sk).collect::<Vec<_>>());
    }
    assert!(sim.stats.reordered > 0, "no claim was reordered: {:?}", sim.stats);
    assert!(sim.stats.discounted > 0, "no job was priced with the batch discount: {:?}", sim.stats);
}
