//! Throughput of the SQLite adapters (`cargo bench -p aitbc-store`): conditional puts one at a
//! time and batched in transactions, and queue messages through send + receive + delete.
//! Targets on a 2-core machine: >= 50k puts/s batched in transactions, >= 10k messages/s
//! through the queue. Each measurement runs a fixed amount of work, so the bench ends by itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aitbc_store::{Condition, Item, Key, Queue, SqliteDb, Store, TxWrite};

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

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would run this too: keep it cheap.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = std::env::temp_dir().join(format!("aitbc-store-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    runtime.block_on(async {
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
    drop(runtime);
    std::fs::remove_dir_all(&dir).unwrap();
}
