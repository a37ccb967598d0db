//! Throughput of the SQLite adapters (`cargo bench -p aitbc-store`): conditional puts one at a
//! time and batched in transactions, and queue messages through send + receive + delete.
//! Targets on a 2-core machine: >= 50k puts/s batched in transactions, >= 10k messages/s
//! through the queue. Each measurement runs a fixed amount of work, so the bench ends by itself.
//!
//! Then the fill: the items completion writes for each receipt (job, hold, settlement record,
//! receipt and its one-per-job guard, shaped like the settle bench's loading phase), put in
//! 100-write transactions, 16 in flight, into a fresh file until it holds
//! `AITBC_BENCH_FILL_RECEIPTS` receipts (default 1,000,000: 5M items, a few GB in the temp
//! dir, deleted after). It prints items/s over the last tenth before 100k receipts and before
//! the end, each beside its anchor from the same run: the sqlite3 C library through rusqlite,
//! a plain loop of prepared INSERTs of the same rows into a table of the same shape
//! (`items_table_sql`), same pragmas, committing every 100 rows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aitbc_store::spec::INDEXES;
use aitbc_store::{Condition, Item, Key, Queue, SqliteDb, Store, TxWrite, TRANSACTION_WRITES_MAX};
use serde_json::Value;

/// Puts of the single-put measurements.
const SINGLE_PUTS: usize = 40_000;
/// Tasks issuing single puts at once in the concurrent measurement.
const SINGLE_PUT_TASKS: usize = 16;
/// Puts of each transaction measurement.
const BATCHED_PUTS: usize = 200_000;
/// Tasks issuing transactions at once in the concurrent transaction measurements.
const TRANSACTION_TASKS: usize = 4;
/// Messages of the queue measurement.
const QUEUE_MESSAGES: usize = 100_000;
/// Queue loops run at once (each sends 10, receives them, deletes them).
const QUEUE_TASKS: usize = 4;

fn item(run: &str, i: usize) -> Item {
    // A realistic small item: a job with an index key and a few attributes.
    let mut item = Item::new(Key::new(format!("JOB#{run}-{i}"), "#"))
        .with("state", "queued")
        .with("price", 123_456)
        .with("client", "client-0001")
        .with("listing", "listing-0001");
    aitbc_store::keys::job_client_index("client-0001", 1_700_000_000_000 + i as i64, &format!("{run}-{i}"))
        .apply(&mut item.attrs);
    item
}

fn report(name: &str, count: usize, unit: &str, elapsed: Duration) {
    let rate = count as f64 / elapsed.as_secs_f64();
    println!("{name:<48} {rate:>12.0} {unit}/s  ({count} in {:.2} s)", elapsed.as_secs_f64());
}

async fn single_puts_sequential(store: Arc<dyn Store>) {
    let start = Instant::now();
    for i in 0..SINGLE_PUTS {
        store.put(item("seq", i), Condition::Absent).await.unwrap();
    }
    report("conditional put, one at a time (1 task)", SINGLE_PUTS, "puts", start.elapsed());
}

async fn single_puts_concurrent(store: Arc<dyn Store>) {
    let start = Instant::now();
    let per_task = SINGLE_PUTS / SINGLE_PUT_TASKS;
    let mut tasks = Vec::new();
    for t in 0..SINGLE_PUT_TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_task {
                store.put(item("con", t * per_task + i), Condition::Absent).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    report(&format!("conditional put, one at a time ({SINGLE_PUT_TASKS} tasks)"), per_task * SINGLE_PUT_TASKS, "puts", start.elapsed());
}

async fn transactions(store: Arc<dyn Store>, size: usize, tasks_count: usize) {
    let count = BATCHED_PUTS / size / tasks_count;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..tasks_count {
        let store = store.clone();
        let run = format!("tx{size}-{tasks_count}-{t}");
        tasks.push(tokio::spawn(async move {
            for n in 0..count {
                let writes = (0..size)
                    .map(|i| TxWrite::Put { item: item(&run, n * size + i), condition: Condition::Absent })
                    .collect();
                store.transact(writes).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = start.elapsed();
    let total = count * tasks_count;
    report(&format!("conditional puts in {size}-write transactions ({tasks_count} tasks)"), total * size, "puts", elapsed);
    report(&format!("{size}-write transactions ({tasks_count} tasks)"), total, "transactions", elapsed);
}

async fn queue_round_trips(queue: Arc<dyn Queue>) {
    queue.create_queue("bench").await.unwrap();
    let loops = QUEUE_MESSAGES / 10 / QUEUE_TASKS;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..QUEUE_TASKS {
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            let body = "{\"job\":\"0123456789abcdef\",\"listing\":\"listing-0001\",\"attempt\":1}".to_string();
            let mut moved = 0;
            for _ in 0..loops {
                queue.send_batch("bench", vec![body.clone(); 10]).await.unwrap();
                let messages = queue.receive("bench", 10, Duration::from_secs(1), Duration::from_secs(60)).await.unwrap();
                for message in &messages {
                    queue.delete("bench", &message.receipt_handle).await.unwrap();
                }
                moved += messages.len();
            }
            moved
        }));
    }
    let mut moved = 0;
    for task in tasks {
        moved += task.await.unwrap();
    }
    let elapsed = start.elapsed();
    report(&format!("queue send+receive+delete, batches of 10 ({QUEUE_TASKS} tasks)"), moved, "messages", elapsed);
    // Every message sent was received and deleted by someone: a left-over means a lost delete.
    let left = queue.approximate_depth("bench").await.unwrap();
    println!("{:<48} {left:>12} messages", "queue depth after the run");
}

/// Receipts of the fill (`AITBC_BENCH_FILL_RECEIPTS` overrides; 0 skips it).
const FILL_RECEIPTS_DEFAULT: u64 = 1_000_000;
/// The first table size the fill reports at, receipts.
const FILL_FIRST_REPORT: u64 = 100_000;
/// Items completion writes per receipt.
const FILL_ITEMS_PER_RECEIPT: usize = 5;
/// Receipts per fill transaction (100 writes, the transaction limit).
const FILL_RECEIPTS_PER_TX: usize = TRANSACTION_WRITES_MAX / FILL_ITEMS_PER_RECEIPT;
/// Fill transactions in flight (as the settle bench's loading phase).
const FILL_TX_IN_FLIGHT: usize = 16;
/// Clients, providers and listings the receipts spread over (as `scripts/settle-bench.sh`).
const FILL_CLIENTS: u64 = 1_000;
const FILL_PROVIDERS: u64 = 100;

/// A 32-hex-digit id that is not in insertion order (ids are random in the market).
fn scattered(i: u64) -> String {
    format!("{:016x}{:016x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15), i)
}

/// The items completion leaves for receipt `i`, about the sizes the market writes: the job
/// (~1,150 bytes, three index keys), the captured hold (~350, one), the settlement record
/// (~140, none), the receipt (~920, two) and its guard (~50, none).
fn receipt_items(i: u64) -> [Item; FILL_ITEMS_PER_RECEIPT] {
    let id = scattered(i);
    let (job, receipt, hold) = (format!("job-{id}"), format!("rcpt-{id}"), format!("hold-{id}"));
    let client = format!("ait1{:032x}", i % FILL_CLIENTS);
    let provider = format!("ait1{:032x}", 0xf000 + i % FILL_PROVIDERS);
    let at = 1_700_000_000_000 + i as i64;
    let filler = |n: usize| "x".repeat(n);
    let mut job_item = Item::new(Key::new(format!("JOB#{job}"), "#"))
        .with("state", "completed")
        .with("client", client.as_str())
        .with("provider", provider.as_str())
        .with("receipt_id", receipt.as_str())
        .with("spec", filler(700));
    aitbc_store::keys::job_client_index(&client, at, &job).apply(&mut job_item.attrs);
    aitbc_store::keys::job_state_index("completed", at, &job).apply(&mut job_item.attrs);
    aitbc_store::keys::job_listing_index(&format!("gpu-{}", i % FILL_PROVIDERS), at, &job).apply(&mut job_item.attrs);
    let mut hold_item = Item::new(Key::new(format!("HOLD#{hold}"), "#"))
        .with("state", "captured")
        .with("amount", 4_000_000_000_i64)
        .with("receipt_id", receipt.as_str())
        .with("note", filler(120));
    aitbc_store::keys::hold_account_index(&format!("wallet:{client}"), at, &hold).apply(&mut hold_item.attrs);
    let due = Item::new(Key::new(format!("DUE#{}", i % 16), format!("{at:016}#{job}")))
        .with("c", client.as_str())
        .with("p", provider.as_str())
        .with("h", 4_000_000_000_i64)
        .with("r", 1_630_400_000_i64);
    let mut receipt_item = Item::new(Key::new(format!("RECEIPT#{receipt}"), "#"))
        .with("job_id", job.as_str())
        .with("receipt", filler(600));
    aitbc_store::keys::receipt_client_index(&client, at, &receipt).apply(&mut receipt_item.attrs);
    aitbc_store::keys::receipt_provider_index(&provider, at, &receipt).apply(&mut receipt_item.attrs);
    let guard = Item::new(Key::new(format!("JOB#{job}"), "RECEIPT")).with("receipt_id", receipt.as_str());
    [job_item, hold_item, due, receipt_item, guard]
}

/// One fill transaction's writes: receipts `first..first + FILL_RECEIPTS_PER_TX`.
fn fill_batch(first: u64) -> Vec<TxWrite> {
    (first..first + FILL_RECEIPTS_PER_TX as u64)
        .flat_map(receipt_items)
        .map(|item| TxWrite::Put { item, condition: Condition::Absent })
        .collect()
}

/// Items/s over the last tenth before each report size: (receipts at the report, items/s).
type FillRates = Vec<(u64, f64)>;

/// The report sizes of a fill of `receipts`.
fn fill_reports(receipts: u64) -> Vec<u64> {
    let mut at = vec![FILL_FIRST_REPORT.min(receipts)];
    if receipts > FILL_FIRST_REPORT {
        at.push(receipts);
    }
    at
}

/// Times windows of a fill: call `tick(done)` after each batch; returns the rates at the end.
struct FillClock {
    reports: Vec<u64>,
    window_start: Option<(u64, Instant)>,
    rates: FillRates,
}

impl FillClock {
    fn new(receipts: u64) -> Self {
        FillClock { reports: fill_reports(receipts), window_start: None, rates: Vec::new() }
    }

    /// `done`: receipts written so far.
    fn tick(&mut self, done: u64) {
        let Some(&next) = self.reports.first() else { return };
        if self.window_start.is_none() && done >= next - next / 10 {
            self.window_start = Some((done, Instant::now()));
        }
        if done >= next {
            let (from, start) = self.window_start.take().expect("the window started");
            let items = (done - from) as usize * FILL_ITEMS_PER_RECEIPT;
            self.rates.push((next, items as f64 / start.elapsed().as_secs_f64()));
            self.reports.remove(0);
        }
    }
}

/// Our store: fill transactions through `Store::transact`, FILL_TX_IN_FLIGHT at once.
async fn fill_store(store: Arc<dyn Store>, receipts: u64) -> FillRates {
    let mut clock = FillClock::new(receipts);
    clock.tick(0);
    let mut in_flight = std::collections::VecDeque::new();
    let mut sent = 0;
    let mut done = 0;
    while done < receipts {
        while sent < receipts && in_flight.len() < FILL_TX_IN_FLIGHT {
            let store = store.clone();
            let batch = fill_batch(sent);
            in_flight.push_back(tokio::spawn(async move { store.transact(batch).await }));
            sent += FILL_RECEIPTS_PER_TX as u64;
        }
        in_flight.pop_front().expect("in flight").await.unwrap().unwrap();
        done += FILL_RECEIPTS_PER_TX as u64;
        clock.tick(done);
    }
    clock.rates
}

/// The anchor: the same rows through rusqlite, a plain insert loop on one connection.
fn fill_anchor(path: &std::path::Path, receipts: u64) -> FillRates {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    // Same durability and cache as ours; SQLite's own automatic checkpoints (every 1,000 log
    // pages, on this connection), as a plain program gets them.
    conn.execute_batch(&format!("PRAGMA synchronous=NORMAL; PRAGMA cache_size=-{};", aitbc_store::sqlite::PAGE_CACHE_KIB))
        .unwrap();
    conn.execute_batch(&aitbc_store::sqlite::items_table_sql()).unwrap();
    let column = |item: &Item, name: &str| item.attrs.get(name).and_then(Value::as_str).map(str::to_string);
    let mut clock = FillClock::new(receipts);
    clock.tick(0);
    let mut done = 0;
    while done < receipts {
        let batch = fill_batch(done);
        conn.execute_batch("BEGIN").unwrap();
        {
            let mut insert = conn
                .prepare_cached(
                    "INSERT INTO items (pk, sk, attrs, gsi1pk, gsi1sk, gsi2pk, gsi2sk, gsi3pk, gsi3sk, expires_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL)",
                )
                .unwrap();
            for write in batch {
                let TxWrite::Put { item, .. } = write else { unreachable!("the fill puts") };
                let json = serde_json::to_string(&item.attrs).unwrap();
                let c: Vec<Option<String>> =
                    INDEXES.iter().flat_map(|i| [column(&item, i.pk_attr), column(&item, i.sk_attr)]).collect();
                insert.execute(rusqlite::params![item.key.pk, item.key.sk, json, c[0], c[1], c[2], c[3], c[4], c[5]]).unwrap();
            }
        }
        conn.execute_batch("COMMIT").unwrap();
        done += FILL_RECEIPTS_PER_TX as u64;
        clock.tick(done);
    }
    clock.rates
}

fn fill(runtime: &tokio::runtime::Runtime, dir: &std::path::Path) {
    let receipts: u64 = std::env::var("AITBC_BENCH_FILL_RECEIPTS")
        .ok()
        .map(|v| v.parse().expect("AITBC_BENCH_FILL_RECEIPTS: a number of receipts"))
        .unwrap_or(FILL_RECEIPTS_DEFAULT);
    if receipts == 0 {
        return;
    }
    let receipts = receipts.div_ceil(FILL_RECEIPTS_PER_TX as u64) * FILL_RECEIPTS_PER_TX as u64;
    let ours = runtime.block_on(async {
        let db = SqliteDb::open(dir.join("fill.db")).unwrap();
        fill_store(Arc::new(db.store()), receipts).await
    });
    let _ = std::fs::remove_file(dir.join("fill.db"));
    let _ = std::fs::remove_file(dir.join("fill.db-wal"));
    let anchor = fill_anchor(&dir.join("anchor.db"), receipts);
    for ((at, ours), (_, anchor)) in ours.iter().zip(&anchor) {
        println!(
            "{:<48} {ours:>12.0} items/s  anchor (rusqlite insert loop) {anchor:.0} items/s  ratio {:.2}",
            format!("fill, 100-write transactions, at {at} receipts"),
            ours / anchor
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would run this too: keep it cheap.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = std::env::temp_dir().join(format!("aitbc-store-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // AITBC_BENCH_FILL_ONLY: just the fill (it takes minutes; the rest, seconds).
    let fill_only = std::env::var_os("AITBC_BENCH_FILL_ONLY").is_some();
    runtime.block_on(async {
        if fill_only {
            return;
        }
        let db = SqliteDb::open(dir.join("bench.db")).unwrap();
        let store: Arc<dyn Store> = Arc::new(db.store());
        single_puts_sequential(store.clone()).await;
        single_puts_concurrent(store.clone()).await;
        for size in [10, 100] {
            transactions(store.clone(), size, 1).await;
            transactions(store.clone(), size, TRANSACTION_TASKS).await;
        }
        let queue: Arc<dyn Queue> = Arc::new(db.queue());
        queue_round_trips(queue).await;
    });
    fill(&runtime, &dir);
    drop(runtime);
    std::fs::remove_dir_all(&dir).unwrap();
}
