//! The settlement bench: N completed receipts (with their jobs, captured holds and settlement
//! records, as completion writes them) loaded into a fresh store through the Store port, then
//! settled, timed and measured.
//!
//! Generated receipts carry one signature copied from a template receipt: settlement does not
//! verify signatures (the API verified and countersigned each receipt when the job completed),
//! and signing a million receipts would measure Ed25519, not settlement. Every tenth job starts
//! late (45 s against a 30 s SLA), so penalties are part of the work.

use crate::SchedulerError;
use aitbc_core::job::{JobState, JobStatus};
use aitbc_core::jobspec::{JobOutput, JobSpec};
use aitbc_core::ledger::{AccountId, Transfer};
use aitbc_core::money::{Amount, GpuMillis, Rate};
use aitbc_core::pricing::Tier;
use aitbc_core::receipt::{Receipt, ReceiptBody, UnitType, RECEIPT_VERSION};
use aitbc_core::signing::NamedSigningKey;
use aitbc_core::values::{Address, JobId, KeyId, ModelName, ReceiptId, TransferId};
use aitbc_market::auth::Role;
use aitbc_market::jobs::JobRecord;
use aitbc_market::ledger::hold_capture_write;
use aitbc_market::receipts::receipt_writes;
use aitbc_market::settlement::{CountingStore, Progress, SettleOptions, SettleReport, SettlementDue};
use aitbc_market::{Market, Settings, SystemClock};
use aitbc_store::{Condition, Queue, Store, TxWrite, Update, TRANSACTION_WRITES_MAX};
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

/// Receipts one bench generates, at most.
pub const BENCH_RECEIPTS_MAX: u64 = 10_000_000;
/// Clients and providers, at most.
pub const BENCH_ACCOUNTS_MAX: u32 = 100_000;
/// Writes per generated receipt: job, hold, receipt, the receipt's one-per-job guard, the
/// settlement record.
pub const BENCH_WRITES_PER_RECEIPT: usize = 5;
/// Receipts per loading transaction.
pub const BENCH_RECEIPTS_PER_TX: usize = TRANSACTION_WRITES_MAX / BENCH_WRITES_PER_RECEIPT;
/// Loading transactions in flight at once (the SQLite adapter commits them together), at most.
pub const BENCH_TX_IN_FLIGHT_MAX: usize = 16;
/// Each client's deposit, AITBC: covers its holds up to 100,000 receipts of 4 AITBC each.
pub const BENCH_DEPOSIT_AITBC: u64 = 400_000;

/// What to bench.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub receipts: u64,
    pub clients: u32,
    pub providers: u32,
    /// Count the items settlement writes (a Store wrapper; slightly slower).
    pub count_writes: bool,
    /// Loading transactions in flight: 1..=BENCH_TX_IN_FLIGHT_MAX (moto_server needs 1: it is
    /// not safe under concurrent transactions).
    pub load_in_flight_max: usize,
    /// Load item by item rather than in transactions: moto_server copies its whole state for
    /// every transaction, so transactional loading grows quadratically there.
    pub load_by_item: bool,
    pub settle: SettleOptions,
}

/// What the bench measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub receipts: u64,
    pub clients: u32,
    pub providers: u32,
    pub generate_s: f64,
    /// Items the loading phase wrote per second (5 per receipt, what completion writes), over
    /// the whole load and over its last tenth (the rate at the final table size).
    pub load_items_per_s: f64,
    pub load_items_per_s_last_tenth: f64,
    pub settle_s: f64,
    pub receipts_per_s: f64,
    /// Peak resident memory (VmHWM) during settlement, KiB (reset before it where the kernel
    /// allows; else the peak since the process started). None off Linux.
    pub settle_peak_kib: Option<u64>,
    pub settle: SettleReport,
    /// Items settlement wrote (with `count_writes`).
    pub writes: Option<u64>,
    /// Of those, items of the ledger side: account balances and settlement records and lines.
    pub ledger_writes: Option<u64>,
    pub writes_by_entity: Option<std::collections::BTreeMap<String, u64>>,
}

impl BenchResult {
    /// The result as a Markdown table.
    pub fn table(&self) -> String {
        let per_1000 = |w: Option<u64>| w.map_or("-".to_string(), |w| format!("{:.0}", w as f64 * 1_000.0 / self.receipts.max(1) as f64));
        let peak = self.settle_peak_kib.map_or("-".to_string(), |k| format!("{:.0}", k as f64 / 1024.0));
        format!(
            "| receipts | clients | providers | generate s | load items/s (last tenth) | settle s | receipts/s | peak MiB (VmHWM) | writes / 1,000 receipts | ledger writes / 1,000 receipts |\n\
             | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n\
             | {} | {} | {} | {:.1} | {:.0} ({:.0}) | {:.2} | {:.0} | {} | {} | {} |\n",
            self.receipts,
            self.clients,
            self.providers,
            self.generate_s,
            self.load_items_per_s,
            self.load_items_per_s_last_tenth,
            self.settle_s,
            self.receipts_per_s,
            peak,
            per_1000(self.writes),
            per_1000(self.ledger_writes),
        )
    }
}

/// Peak resident set size of this process (VmHWM), KiB.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets VmHWM to the current RSS (Linux: writing 5 to clear_refs), so that the next reading
/// is the peak of what follows. Returns whether it worked.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn load_error(e: impl std::fmt::Display) -> SchedulerError {
    SchedulerError::Config(format!("bench load: {e}"))
}

/// Loads `options.receipts` completed receipts into `store` (fresh, provisioned), settles them
/// and checks that every receipt settled and that money was conserved.
pub async fn run(store: Arc<dyn Store>, queue: Arc<dyn Queue>, options: &BenchOptions, progress: &dyn Progress) -> Result<BenchResult, SchedulerError> {
    assert!((1..=BENCH_RECEIPTS_MAX).contains(&options.receipts));
    assert!((1..=BENCH_TX_IN_FLIGHT_MAX).contains(&options.load_in_flight_max));
    assert!((1..=BENCH_ACCOUNTS_MAX).contains(&options.clients) && (1..=BENCH_ACCOUNTS_MAX).contains(&options.providers));
    let key = || NamedSigningKey::from_seed(KeyId::parse("aitbc-bench").expect("valid"), [7; 32]);
    let loader = Market::new(store.clone(), queue.clone(), crate::market_config_from_env()?, Settings::default(), key(), Arc::new(SystemClock));
    loader.bootstrap().await?;
    let started = Instant::now();

    // Providers with a listing each (SLA: start within 30 s or refund half).
    let mut listings = Vec::with_capacity(options.providers as usize);
    for _ in 0..options.providers {
        let opened = loader.open_account_with_key(None, Role::Provider, None).await?;
        let who = loader.authenticate(&opened.api_key).await?;
        let new = serde_json::from_value(serde_json::json!({
            "name": "Bench-GPU", "memory_gib": 80, "cuda_version": "12.4", "base_price": "0.05", "region": "us-west",
            "models": ["llama3.2"], "count": 8, "sla": {"response_time_s": 30, "penalty_rate_bps": 5000}
        }))
        .expect("a valid listing");
        let listing = loader.create_listing(&who, new).await?;
        listings.push((who.address, listing.gpu_id, listing.sla));
    }
    let mut clients = Vec::with_capacity(options.clients as usize);
    for _ in 0..options.clients {
        let address = Address::generate();
        let wallet = AccountId::wallet(&address);
        loader.open_account(&wallet, None).await?;
        let deposit = Transfer::Deposit { id: TransferId::generate(), to: wallet, amount: Amount::from_aitbc(BENCH_DEPOSIT_AITBC) };
        loader.apply_transfer(&deposit, vec![]).await?;
        clients.push(address);
    }

    let unit_price = Rate::parse("1.6").expect("valid");
    let max_units = GpuMillis::from_millis(2_500);
    let max_price = unit_price.price(max_units).expect("fits");
    let template = ReceiptBody {
        version: RECEIPT_VERSION,
        receipt_id: ReceiptId::parse("rcpt-template").expect("valid"),
        job_id: JobId::parse("job-template").expect("valid"),
        gpu_id: listings[0].1.clone(),
        attempt: 1,
        provider: listings[0].0.clone(),
        client: clients[0].clone(),
        units: max_units,
        unit_type: UnitType::CpuSeconds,
        unit_price,
        price: max_price,
        model: Some(ModelName::parse("llama3.2").expect("valid")),
        started_at: loader.now_ms() / 1_000,
        completed_at: loader.now_ms() / 1_000 + 1,
        prompt_tokens: None,
        completion_tokens: None,
    };
    let signature = template.clone().sign(&key()).map_err(load_error)?.signature;
    let model = template.model.clone();
    let now = loader.now_ms();
    // Jobs were submitted over the last N ms, one per ms, so sort keys differ.
    let t0 = now - options.receipts as i64 - 120_000;
    let mut held = vec![0u64; clients.len()];
    let mut in_flight = tokio::task::JoinSet::new();
    let mut writes: Vec<TxWrite> = Vec::with_capacity(TRANSACTION_WRITES_MAX);
    let load_started = Instant::now();
    let last_tenth_from = options.receipts - options.receipts / 10;
    let mut last_tenth_started = None;
    for i in 0..options.receipts {
        if i == last_tenth_from {
            last_tenth_started = Some(Instant::now());
        }
        let n = i as usize;
        let client = &clients[n % clients.len()];
        let (provider, gpu_id, sla) = &listings[n % listings.len()];
        held[n % clients.len()] += max_price.raw();
        let hex = format!("{:032x}", u128::from(i) | (0xb3 << 120));
        let job_id = JobId::parse(&format!("job-{hex}")).expect("valid");
        let hold_id = aitbc_market::jobs::hold_id_for(&job_id);
        let receipt_id = ReceiptId::parse(&format!("rcpt-{hex}")).expect("valid");
        let created = t0 + i as i64;
        let claimed = created + if i % 10 == 0 { 45_000 } else { 1_000 };
        let units = GpuMillis::from_millis(1_000 + i % 1_500);
        let body = ReceiptBody {
            receipt_id: receipt_id.clone(),
            job_id: job_id.clone(),
            gpu_id: gpu_id.clone(),
            provider: provider.clone(),
            client: client.clone(),
            units,
            price: unit_price.price(units).expect("fits"),
            started_at: claimed / 1_000,
            completed_at: claimed / 1_000 + 2,
            prompt_tokens: None,
            completion_tokens: None,
            ..template.clone()
        };
        let job = JobRecord {
            job_id: job_id.clone(),
            client: client.clone(),
            provider: provider.clone(),
            gpu_id: gpu_id.clone(),
            queue: "bench".into(),
            spec: JobSpec::VectorAdd { n: 1_024, seed: i },
            model: model.clone(),
            tier: Tier::Basic,
            units_max: max_units,
            unit_price,
            max_price,
            hold_id: hold_id.clone(),
            timeout_ms: 60_000,
            status: JobStatus { state: JobState::Completed, lease: None, attempt: 1, attempts_max: 3, claim_deadline_ms: created + 600_000 },
            created_at_ms: created,
            claimed_at_ms: Some(claimed),
            finished_at_ms: Some(claimed + 2_000),
            receipt_id: Some(receipt_id.to_string()),
            output: Some(JobOutput { checksum: "00".into(), values: vec![], backend: "cpu".into(), device_ms: units.millis(), wall_ms: units.millis(), text: None }),
            failure: None,
            price: Some(body.price),
            queue_tag: None,
            contract: None,
            preempt: false,
            settlement: None,
        };
        // The job as the market writes it, created here rather than replaced.
        let TxWrite::Put { item, .. } = loader.job_write(&job, -1) else { unreachable!("job_write puts") };
        writes.push(TxWrite::Put { item, condition: Condition::Absent });
        let hold = Transfer::Hold { id: TransferId::parse(&format!("tx-{hex}-hold")).expect("valid"), hold: hold_id, from: AccountId::wallet(client), amount: max_price };
        let hold_write = loader
            .transfer_writes(&hold, None, created)?
            .into_iter()
            .find(|w| w.key().pk.starts_with("HOLD#"))
            .expect("a hold writes its hold item");
        // The hold as completion leaves it: captured for the job's receipt.
        let (TxWrite::Put { mut item, condition }, TxWrite::Update { update: capture, .. }) = (hold_write, hold_capture_write(&job.hold_id, &receipt_id)) else {
            unreachable!("a hold is put, a capture is an update")
        };
        item.attrs = capture.apply(Some(&item.attrs))?.expect("an update of an existing item");
        writes.push(TxWrite::Put { item, condition });
        // The settlement record as completion writes it.
        let due = SettlementDue::new(&job, body.price, claimed + 2_000, Some(sla), loader.config.fee_bps)?;
        writes.push(due.write());
        let receipt = Receipt { body, signature: signature.clone(), countersignature: None };
        writes.extend(receipt_writes(&receipt, claimed + 2_000));
        if writes.len() + BENCH_WRITES_PER_RECEIPT > TRANSACTION_WRITES_MAX || i + 1 == options.receipts {
            if in_flight.len() >= options.load_in_flight_max {
                in_flight.join_next().await.expect("in flight").map_err(load_error)??;
            }
            let store = store.clone();
            let batch = std::mem::replace(&mut writes, Vec::with_capacity(TRANSACTION_WRITES_MAX));
            let by_item = options.load_by_item;
            in_flight.spawn(async move {
                if !by_item {
                    return store.transact(batch).await;
                }
                for write in batch {
                    let TxWrite::Put { item, condition } = write else { unreachable!("loading only puts") };
                    store.put(item, condition).await?;
                }
                Ok(())
            });
            progress.advance("load", BENCH_RECEIPTS_PER_TX as u64);
        }
    }
    while let Some(done) = in_flight.join_next().await {
        done.map_err(load_error)??;
    }
    let items_per_s = |receipts: u64, since: Instant| (receipts as usize * BENCH_WRITES_PER_RECEIPT) as f64 / since.elapsed().as_secs_f64().max(1e-9);
    let load_items_per_s = items_per_s(options.receipts, load_started);
    let load_items_per_s_last_tenth = items_per_s(options.receipts - last_tenth_from, last_tenth_started.expect("receipts >= 1"));
    // The holds' money moves from available to held, one write per client.
    for (client, amount) in clients.iter().zip(&held) {
        let amount = i64::try_from(*amount).map_err(load_error)?;
        let update = Update::new().add("available", -amount, Some(0)).add("held", amount, Some(0));
        store.update(&aitbc_store::keys::account(&AccountId::wallet(client).to_string()), update, Condition::Present).await?;
    }
    let generate_s = started.elapsed().as_secs_f64();

    // Settle, through a counting wrapper if asked.
    let counter = options.count_writes.then(|| Arc::new(CountingStore::new(store.clone())));
    let settle_store: Arc<dyn Store> = match &counter {
        Some(counter) => counter.clone(),
        None => store.clone(),
    };
    let settler = Market::new(settle_store, queue, crate::market_config_from_env()?, Settings::default(), key(), Arc::new(SystemClock));
    let reset = reset_peak_rss();
    let started = Instant::now();
    let report = settler.settle(&options.settle, progress).await?;
    let settle_s = started.elapsed().as_secs_f64();
    let settle_peak_kib = peak_rss_kib();
    if !reset {
        tracing::warn!("could not reset VmHWM: the peak includes loading");
    }

    // Every receipt settled, nothing held, and no money made or lost.
    if report.receipts != options.receipts {
        return Err(SchedulerError::Config(format!("settled {} of {} receipts", report.receipts, options.receipts)));
    }
    let mut total: u128 = 0;
    let mut accounts: Vec<AccountId> = clients.iter().map(AccountId::wallet).collect();
    accounts.extend(listings.iter().map(|(p, _, _)| AccountId::earnings(p)));
    accounts.push(AccountId::fee(&loader.platform));
    for account in &accounts {
        let (_, balance) = settler.account(account).await?;
        if !balance.held.is_zero() {
            return Err(SchedulerError::Config(format!("{account} still holds {}", balance.held)));
        }
        total += u128::from(balance.available.raw());
    }
    let deposited = u128::from(Amount::from_aitbc(BENCH_DEPOSIT_AITBC).raw()) * clients.len() as u128;
    if total != deposited {
        return Err(SchedulerError::Config(format!("balances sum to {total} nano, deposits to {deposited}")));
    }

    let by_entity = counter.as_ref().map(|c| c.by_entity());
    let ledger_writes = by_entity.as_ref().map(|m| m.get("ACCOUNT").copied().unwrap_or(0) + m.get("SETTLEMENT").copied().unwrap_or(0));
    Ok(BenchResult {
        receipts: options.receipts,
        clients: options.clients,
        providers: options.providers,
        generate_s,
        load_items_per_s,
        load_items_per_s_last_tenth,
        settle_s,
        receipts_per_s: options.receipts as f64 / settle_s.max(1e-9),
        settle_peak_kib,
        settle: report,
        writes: counter.as_ref().map(|c| c.writes()),
        ledger_writes,
        writes_by_entity: by_entity.map(|m| m.into_iter().filter(|(k, _)| !k.contains('#')).collect()),
    })
}
