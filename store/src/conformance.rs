//! The ONE conformance suite of the Store and Queue ports, written once and run against every
//! adapter pair: `conformance_tests!` expands to one `#[tokio::test]` per case below for a
//! `Backends` factory (`store/tests/conformance.rs` instantiates it for SQLite and for
//! DynamoDB + SQS on moto_server).
//!
//! Every case gets fresh backends (a new SQLite file, or a new uuid name prefix for the table
//! and queues), so cases run in parallel without seeing each other's data.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use crate::queue::{Message, Queue, QueueError};
use crate::spec::{queue_spec, Index, QueueSpec};
use crate::store::{
    Condition, Item, Key, Query, SortCondition, Store, StoreError, TxWrite, Update, TRANSACTION_WRITES_MAX,
};

/// Receives allowed before dead-lettering in the suite's queues: small, so that the case that
/// exhausts it stays quick.
pub const SUITE_RECEIVES_MAX: u32 = 2;
/// Visibility used by the queue cases: SQS's smallest non-zero timeout.
pub const SUITE_VISIBILITY_MS: u64 = 1_000;
/// Tasks racing one conditional update.
pub const RACERS: usize = 16;
/// Most receives a case spends collecting messages (SQS may return fewer than asked).
pub const COLLECT_RECEIVES_MAX: usize = 20;

/// Makes fresh adapters for one test case.
#[async_trait]
pub trait Backends: Send + Sync {
    /// A store on a fresh, provisioned table.
    async fn store(&self) -> Arc<dyn Store>;
    /// A queue adapter under a fresh name prefix, creating queues with `spec`.
    async fn queue(&self, spec: QueueSpec) -> Arc<dyn Queue>;
}

/// The queue spec of the suite.
pub fn suite_queue_spec() -> QueueSpec {
    QueueSpec { max_receive_count: SUITE_RECEIVES_MAX, ..queue_spec() }
}

fn visibility() -> Duration {
    Duration::from_millis(SUITE_VISIBILITY_MS)
}

fn key(pk: &str, sk: &str) -> Key {
    Key::new(pk, sk)
}

fn condition_failed(key: &Key) -> StoreError {
    StoreError::condition_failed(key)
}

/// Conditional puts and deletes succeed exactly when their condition holds.
pub async fn conditional_put(backends: &dyn Backends) {
    let store = backends.store().await;
    let a = key("ACCOUNT#a", "#");
    let item = Item::new(a.clone()).with("state", "open").with("balance", 10);
    store.put(item.clone(), Condition::Absent).await.expect("put when absent");
    assert_eq!(store.get(&a).await.unwrap(), Some(item.clone()));
    assert_eq!(store.put(item.clone(), Condition::Absent).await, Err(condition_failed(&a)));

    let replaced = Item::new(a.clone()).with("state", "closed").with("note", json!({"n": [1, 2, "x"]}));
    assert_eq!(store.put(replaced.clone(), Condition::equals("state", "closed")).await, Err(condition_failed(&a)));
    assert_eq!(store.put(replaced.clone(), Condition::not_equals("state", "open")).await, Err(condition_failed(&a)));
    assert_eq!(store.put(replaced.clone(), Condition::AttrAbsent("state".into())).await, Err(condition_failed(&a)));
    let both = Condition::And(vec![Condition::Present, Condition::equals("state", "open"), Condition::AttrAbsent("x".into())]);
    store.put(replaced.clone(), both).await.expect("put when every condition holds");
    assert_eq!(store.get(&a).await.unwrap(), Some(replaced.clone()), "put replaces every attribute");

    let b = key("ACCOUNT#b", "#");
    assert_eq!(store.put(Item::new(b.clone()), Condition::Present).await, Err(condition_failed(&b)));
    assert_eq!(store.get(&b).await.unwrap(), None);
    store.put(Item::new(b.clone()), Condition::not_equals("state", "open")).await.expect("NotEquals holds on a missing item");

    assert_eq!(store.delete(&a, Condition::equals("state", "open")).await, Err(condition_failed(&a)));
    assert!(store.get(&a).await.unwrap().is_some(), "a failed delete deletes nothing");
    store.delete(&a, Condition::equals("state", "closed")).await.expect("conditional delete");
    assert_eq!(store.get(&a).await.unwrap(), None);
    store.delete(&a, Condition::Always).await.expect("deleting a missing item is no error");
    assert_eq!(store.delete(&a, Condition::Present).await, Err(condition_failed(&a)));

    let float = Item::new(key("QUOTE#f", "#")).with("price", json!(1.5));
    assert!(matches!(store.put(float, Condition::Always).await, Err(StoreError::Invalid(_))), "floats are refused");
}

/// Updates set, remove and add, return the new item, and change nothing when refused.
pub async fn conditional_update(backends: &dyn Backends) {
    let store = backends.store().await;
    let j = key("JOB#1", "#");
    let claim = Update::new().set("state", "claimed").set("worker", "w1");
    assert_eq!(store.update(&j, claim.clone(), Condition::Present).await, Err(condition_failed(&j)));
    assert_eq!(store.get(&j).await.unwrap(), None, "a refused update creates nothing");

    let created = store
        .update(&j, Update::new().set("state", "queued").add("attempt", 1, None), Condition::Absent)
        .await
        .expect("update creates a missing item");
    assert_eq!(created, Item::new(j.clone()).with("state", "queued").with("attempt", 1));

    let queued = Condition::equals("state", "queued");
    let claimed = store.update(&j, claim.clone().remove("attempt"), queued.clone()).await.expect("claim");
    assert_eq!(claimed, Item::new(j.clone()).with("state", "claimed").with("worker", "w1"));
    assert_eq!(store.get(&j).await.unwrap(), Some(claimed.clone()));
    assert_eq!(store.update(&j, claim, queued).await, Err(condition_failed(&j)), "a second claim fails");
    assert_eq!(store.get(&j).await.unwrap(), Some(claimed));

    let bad = Update::new().set("x", 1).remove("x");
    assert!(matches!(store.update(&j, bad, Condition::Always).await, Err(StoreError::Invalid(_))));
    assert!(matches!(store.update(&j, Update::new(), Condition::Always).await, Err(StoreError::Invalid(_))));
}

/// An add with a floor never takes the attribute below the floor, nor beyond i64.
pub async fn add_stops_at_floor(backends: &dyn Backends) {
    let store = backends.store().await;
    let a = key("ACCOUNT#c", "#");
    store.put(Item::new(a.clone()).with("available", 10), Condition::Absent).await.unwrap();
    let debit = |amount: i64| Update::new().add("available", -amount, Some(0));
    assert_eq!(store.update(&a, debit(4), Condition::Always).await.unwrap().int("available"), Some(6));
    assert_eq!(store.update(&a, debit(7), Condition::Always).await, Err(condition_failed(&a)));
    assert_eq!(store.get(&a).await.unwrap().unwrap().int("available"), Some(6), "a refused add changes nothing");
    assert_eq!(store.update(&a, debit(6), Condition::Always).await.unwrap().int("available"), Some(0));
    assert_eq!(store.update(&a, debit(1), Condition::Always).await, Err(condition_failed(&a)));

    // A missing attribute counts as zero: a credit creates it, a debit is refused.
    let credit = store.update(&a, Update::new().add("held", 5, Some(0)), Condition::Present).await.unwrap();
    assert_eq!(credit.int("held"), Some(5));
    assert_eq!(store.update(&a, Update::new().add("other", -1, Some(0)), Condition::Always).await, Err(condition_failed(&a)));
    assert_eq!(store.get(&a).await.unwrap().unwrap().attrs.get("other"), None);

    // Two adds in one update: both bounds hold or nothing changes.
    let moved = Update::new().add("held", -5, Some(0)).add("available", 5, Some(0));
    let after = store.update(&a, moved, Condition::Always).await.unwrap();
    assert_eq!((after.int("held"), after.int("available")), (Some(0), Some(5)));
    let too_much = Update::new().add("held", -1, Some(0)).add("available", 1, Some(0));
    assert_eq!(store.update(&a, too_much, Condition::Always).await, Err(condition_failed(&a)));
    assert_eq!(store.get(&a).await.unwrap().unwrap().int("available"), Some(5));

    // Without a floor an add may go negative, but never past i64's range.
    let below = store.update(&a, Update::new().add("available", -8, None), Condition::Always).await.unwrap();
    assert_eq!(below.int("available"), Some(-3));
    store.update(&a, Update::new().set("big", i64::MAX - 1), Condition::Always).await.unwrap();
    assert_eq!(store.update(&a, Update::new().add("big", 2, None), Condition::Always).await, Err(condition_failed(&a)));
    assert_eq!(store.update(&a, Update::new().add("big", 1, None), Condition::Always).await.unwrap().int("big"), Some(i64::MAX));
}

/// A transaction whose last condition fails writes nothing, and names the failing item.
pub async fn failed_transaction_writes_nothing(backends: &dyn Backends) {
    let store = backends.store().await;
    let (a, b, c, d) = (key("T#a", "#"), key("T#b", "#"), key("T#c", "#"), key("T#d", "#"));
    store.put(Item::new(b.clone()).with("n", 1), Condition::Absent).await.unwrap();
    store.put(Item::new(c.clone()).with("n", 1), Condition::Absent).await.unwrap();
    store.put(Item::new(d.clone()).with("state", "open"), Condition::Absent).await.unwrap();
    let writes = |d_state: &str| {
        vec![
            TxWrite::Put { item: Item::new(a.clone()).with("n", 1), condition: Condition::Absent },
            TxWrite::Update { key: b.clone(), update: Update::new().add("n", 1, Some(0)), condition: Condition::Present },
            TxWrite::Delete { key: c.clone(), condition: Condition::equals("n", 1) },
            TxWrite::ConditionCheck { key: d.clone(), condition: Condition::equals("state", d_state) },
        ]
    };
    assert_eq!(store.transact(writes("closed")).await, Err(condition_failed(&d)));
    assert_eq!(store.get(&a).await.unwrap(), None, "the put was rolled back");
    assert_eq!(store.get(&b).await.unwrap().unwrap().int("n"), Some(1), "the update was rolled back");
    assert!(store.get(&c).await.unwrap().is_some(), "the delete was rolled back");

    // A failure in the middle names that item.
    let mut middle = writes("open");
    middle[2] = TxWrite::Delete { key: c.clone(), condition: Condition::equals("n", 2) };
    assert_eq!(store.transact(middle).await, Err(condition_failed(&c)));
    assert_eq!(store.get(&a).await.unwrap(), None);

    store.transact(writes("open")).await.expect("every condition holds");
    assert_eq!(store.get(&a).await.unwrap().unwrap().int("n"), Some(1));
    assert_eq!(store.get(&b).await.unwrap().unwrap().int("n"), Some(2));
    assert_eq!(store.get(&c).await.unwrap(), None);
    assert_eq!(store.get(&d).await.unwrap().unwrap().str("state"), Some("open"), "a check writes nothing");

    // A floor inside a transaction refuses it whole.
    let floor = vec![
        TxWrite::Put { item: Item::new(key("T#e", "#")), condition: Condition::Absent },
        TxWrite::Update { key: b.clone(), update: Update::new().add("n", -3, Some(0)), condition: Condition::Always },
    ];
    assert_eq!(store.transact(floor).await, Err(condition_failed(&b)));
    assert_eq!(store.get(&key("T#e", "#")).await.unwrap(), None);
}

/// Transactions hold 1..=100 writes on distinct items.
pub async fn transaction_limits(backends: &dyn Backends) {
    let store = backends.store().await;
    let put = |i: usize| TxWrite::Put { item: Item::new(key(&format!("L#{i}"), "#")).with("i", i as i64), condition: Condition::Absent };
    let too_many: Vec<TxWrite> = (0..=TRANSACTION_WRITES_MAX).map(put).collect();
    assert_eq!(too_many.len(), 101);
    assert!(matches!(store.transact(too_many).await, Err(StoreError::Invalid(_))));
    assert_eq!(store.get(&key("L#0", "#")).await.unwrap(), None);
    assert!(matches!(store.transact(vec![]).await, Err(StoreError::Invalid(_))));
    assert!(matches!(store.transact(vec![put(1), put(1)]).await, Err(StoreError::Invalid(_))), "one item twice");
    let check = TxWrite::ConditionCheck { key: key("L#0", "#"), condition: Condition::Always };
    assert!(matches!(store.transact(vec![check]).await, Err(StoreError::Invalid(_))), "a check without a condition");

    let full: Vec<TxWrite> = (0..TRANSACTION_WRITES_MAX).map(put).collect();
    store.transact(full).await.expect("100 writes");
    for i in [0, 57, 99] {
        assert_eq!(store.get(&key(&format!("L#{i}"), "#")).await.unwrap().unwrap().int("i"), Some(i as i64));
    }
}

/// Reads a whole query page by page, checking each page's size; returns the sort keys in order
/// and the number of pages.
async fn read_all(store: &dyn Store, query: Query, sort_attr: &str) -> (Vec<String>, usize) {
    let mut keys = Vec::new();
    let mut cursor = None;
    // Bounded: the suite's partitions are small.
    for page_number in 1..=100 {
        let page = store.query(query.clone().after(cursor)).await.expect("query");
        assert!(page.items.len() <= query.limit);
        if page.cursor.is_some() {
            // The page before a cursor is full (neither backend stops early at these sizes).
            assert_eq!(page.items.len(), query.limit, "a page with a cursor is full");
        }
        for item in page.items {
            let value = if sort_attr == "sk" { item.key.sk.clone() } else { item.str(sort_attr).unwrap().to_string() };
            keys.push(value);
        }
        cursor = page.cursor;
        if cursor.is_none() {
            return (keys, page_number);
        }
    }
    panic!("query did not end");
}

/// Queries return the partition's items in sort key order, filtered by the sort condition,
/// page by page through cursors.
pub async fn query_order_and_paging(backends: &dyn Backends) {
    let store = backends.store().await;
    let partition = "PROVIDER#p";
    for i in 0..25 {
        let item = Item::new(key(partition, &format!("KEY#{i:02}"))).with("i", i);
        store.put(item, Condition::Always).await.unwrap();
    }
    for sk in ["#", "LISTING#1", "KEZ", "KEY"] {
        store.put(Item::new(key(partition, sk)), Condition::Always).await.unwrap();
    }
    store.put(Item::new(key("PROVIDER#q", "KEY#00")), Condition::Always).await.unwrap();

    let expected: Vec<String> = (0..25).map(|i| format!("KEY#{i:02}")).collect();
    let prefix = Query::table(partition).sort(SortCondition::Prefix("KEY#".into())).limit(10);
    let (keys, pages) = read_all(store.as_ref(), prefix.clone(), "sk").await;
    assert_eq!(keys, expected);
    assert_eq!(pages, 3);

    let (keys, _) = read_all(store.as_ref(), prefix.clone().descending(), "sk").await;
    let reversed: Vec<String> = expected.iter().rev().cloned().collect();
    assert_eq!(keys, reversed);

    let between = Query::table(partition).sort(SortCondition::Between("KEY#03".into(), "KEY#07".into())).limit(2);
    let (keys, pages) = read_all(store.as_ref(), between, "sk").await;
    assert_eq!(keys, expected[3..=7].to_vec());
    assert_eq!(pages, 3);
    let at_least = Query::table(partition).sort(SortCondition::AtLeast("KEY#23".into()));
    let (keys, _) = read_all(store.as_ref(), at_least, "sk").await;
    assert_eq!(keys, ["KEY#23", "KEY#24", "KEZ", "LISTING#1"]);
    let at_most = Query::table(partition).sort(SortCondition::AtMost("KEY#01".into())).descending();
    let (keys, _) = read_all(store.as_ref(), at_most, "sk").await;
    assert_eq!(keys, ["KEY#01", "KEY#00", "KEY", "#"]);

    let all = store.query(Query::table(partition).limit(1000)).await.unwrap();
    assert_eq!(all.items.len(), 29);
    assert_eq!(all.cursor, None);
    assert_eq!(all.items[1].int("i"), None);
    assert_eq!(store.query(Query::table("PROVIDER#none")).await.unwrap().items, vec![]);

    let bad_limit = Query::table(partition).limit(1001);
    assert!(matches!(store.query(bad_limit).await, Err(StoreError::Invalid(_))));
    let other = store.query(prefix.clone()).await.unwrap().cursor.unwrap();
    let foreign = Query::table("PROVIDER#q").after(Some(other));
    assert!(matches!(store.query(foreign).await, Err(StoreError::Invalid(_))), "a cursor of another partition");
}

/// A key of a sparse index sharded like the hot partitions of `keys` (gsi3, which receipts do
/// not otherwise use), with the same `<time>#<id>` sort keys.
fn sparse_index(at_ms: i64, id: &str) -> crate::keys::IndexKey {
    crate::keys::IndexKey { index: Index::Gsi3, pk: format!("FLAGGED#{}", crate::keys::shard(id)), sk: format!("{}#{id}", crate::keys::time(at_ms)) }
}

/// Items of one shard of the sparse index before `before_ms` (as `keys::jobs_by_state` reads).
fn sparse_before(shard: u32, before_ms: i64) -> Query {
    let high = format!("{}#\u{10FFFF}", crate::keys::time(before_ms - 1));
    Query::index(Index::Gsi3, format!("FLAGGED#{shard}")).sort(crate::store::SortCondition::AtMost(high))
}

/// Index queries see exactly the items carrying the index attributes, in index sort key order,
/// across table partitions and pages.
pub async fn index_queries(backends: &dyn Backends) {
    let store = backends.store().await;
    // Receipts of one client across providers, written out of time order.
    let mut expected = BTreeSet::new();
    for i in [7, 3, 11, 0, 5, 9, 1, 10, 2, 8, 4, 6] {
        let receipt = format!("r{i}");
        let client = crate::keys::receipt_client_index("c1", 1_000 + i, &receipt);
        let provider = crate::keys::receipt_provider_index(if i % 2 == 0 { "p0" } else { "p1" }, 1_000 + i, &receipt);
        let unsettled = sparse_index(1_000 + i, &receipt);
        let mut item = Item::new(crate::keys::receipt(&receipt)).with("n", i);
        client.apply(&mut item.attrs);
        provider.apply(&mut item.attrs);
        if i < 6 {
            unsettled.apply(&mut item.attrs);
        }
        expected.insert(client.sk.clone());
        store.put(item, Condition::Absent).await.unwrap();
    }
    // Not in the index: no index attributes, or another client.
    store.put(Item::new(crate::keys::receipt("other")).with("n", 99), Condition::Absent).await.unwrap();
    let mut foreign = Item::new(crate::keys::receipt("foreign"));
    crate::keys::receipt_client_index("c2", 1_005, "foreign").apply(&mut foreign.attrs);
    store.put(foreign, Condition::Absent).await.unwrap();

    let expected: Vec<String> = expected.into_iter().collect();
    let by_client = crate::keys::receipts_by_client("c1").limit(5);
    let (keys, pages) = read_all(store.as_ref(), by_client.clone(), "gsi1sk").await;
    assert_eq!(keys, expected);
    assert_eq!(pages, 3);
    let (keys, _) = read_all(store.as_ref(), by_client.descending().limit(7), "gsi1sk").await;
    assert_eq!(keys, expected.iter().rev().cloned().collect::<Vec<_>>());

    let (keys, _) = read_all(store.as_ref(), crate::keys::receipts_by_provider("p0").limit(2), "gsi2sk").await;
    assert_eq!(keys.len(), 6);
    assert!(keys.windows(2).all(|w| w[0] < w[1]));

    // A sparse, sharded index (as jobs by state and pending holds are), all shards, before a time.
    let mut flagged = Vec::new();
    for shard in 0..crate::keys::INDEX_SHARDS {
        let (keys, _) = read_all(store.as_ref(), sparse_before(shard, 1_004).limit(3), "gsi3sk").await;
        flagged.extend(keys);
    }
    flagged.sort();
    assert_eq!(flagged, expected[0..4].to_vec(), "receipts 0..=3 are flagged and before 1004");

    // Removing the index attributes removes an item from the sparse index.
    let settle = Update::new().remove("gsi3pk").remove("gsi3sk").set("settled", true);
    store.update(&crate::keys::receipt("r0"), settle, Condition::Present).await.unwrap();
    let shard = crate::keys::shard("r0");
    let (keys, _) = read_all(store.as_ref(), sparse_before(shard, 1_004), "gsi3sk").await;
    assert!(!keys.iter().any(|k| k.ends_with("#r0")));

    let page = store.query(Query::index(Index::Gsi1, "CLIENT#c1#RECEIPTS").limit(1)).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].key, crate::keys::receipt("r0"), "index items come back whole");
    assert_eq!(page.items[0].attrs.get("settled"), Some(&json!(true)));
}

/// Of many tasks racing one conditional update, exactly one wins.
pub async fn concurrent_conditional_update(backends: &dyn Backends) {
    let store = backends.store().await;
    let job = key("JOB#race", "#");
    store.put(Item::new(job.clone()).with("state", "queued"), Condition::Absent).await.unwrap();
    let mut tasks = Vec::with_capacity(RACERS);
    for worker in 0..RACERS {
        let store = store.clone();
        let job = job.clone();
        tasks.push(tokio::spawn(async move {
            let claim = Update::new().set("state", "claimed").set("worker", worker as i64);
            store.update(&job, claim, Condition::equals("state", "queued")).await.map(|_| worker)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            Ok(worker) => winners.push(worker),
            Err(error) => assert_eq!(error, condition_failed(&job)),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one claim wins: {winners:?}");
    let item = store.get(&job).await.unwrap().unwrap();
    assert_eq!(item.int("worker"), Some(winners[0] as i64));
}

/// Receives until `count` messages came or the bound is spent.
async fn collect(queue: &dyn Queue, name: &str, count: usize, wait: Duration) -> Vec<Message> {
    let mut messages = Vec::new();
    for _ in 0..COLLECT_RECEIVES_MAX {
        if messages.len() >= count {
            break;
        }
        let got = queue.receive(name, 10, wait, Duration::from_secs(30)).await.expect("receive");
        messages.extend(got);
    }
    messages
}

/// A received message stays hidden for its visibility timeout and then comes back, with a new
/// handle and a higher receive count.
pub async fn receive_hides_until_visibility_lapses(backends: &dyn Backends) {
    let queue = backends.queue(suite_queue_spec()).await;
    queue.create_queue("jobs").await.unwrap();
    queue.send_batch("jobs", vec!["job-1".into()]).await.unwrap();
    assert_eq!(queue.approximate_depth("jobs").await.unwrap(), 1);
    let first = queue.receive("jobs", 10, Duration::from_secs(2), visibility()).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].body.as_str(), first[0].receive_count), ("job-1", 1));
    assert_eq!(queue.approximate_depth("jobs").await.unwrap(), 0, "in-flight messages are not counted");
    assert_eq!(queue.receive("jobs", 10, Duration::ZERO, visibility()).await.unwrap(), vec![], "hidden");
    let again = queue.receive("jobs", 10, Duration::from_secs(5), visibility()).await.unwrap();
    assert_eq!(again.len(), 1, "back after the visibility timeout");
    assert_eq!((again[0].id.as_str(), again[0].receive_count), (first[0].id.as_str(), 2));
    assert_ne!(again[0].receipt_handle, first[0].receipt_handle);
}

/// Extending visibility keeps a message hidden; extending to zero releases it at once; the
/// handle of a deleted message cannot extend. (A handle whose visibility lapsed, or of an
/// earlier receive of a message received again, is left unspecified: SQLite refuses it, SQS may
/// honour it, so leases are guarded by the store's conditional writes, not by handles.)
pub async fn extend_visibility(backends: &dyn Backends) {
    let queue = backends.queue(suite_queue_spec()).await;
    queue.create_queue("jobs").await.unwrap();
    queue.send_batch("jobs", vec!["job-1".into()]).await.unwrap();
    let first = queue.receive("jobs", 1, Duration::from_secs(2), visibility()).await.unwrap();
    assert_eq!(first.len(), 1);
    let handle = &first[0].receipt_handle;
    queue.extend_visibility("jobs", handle, Duration::from_secs(4)).await.expect("heartbeat");
    // Past the first timeout, still hidden by the extension.
    let hidden = queue.receive("jobs", 1, Duration::from_millis(2 * SUITE_VISIBILITY_MS), visibility()).await.unwrap();
    assert_eq!(hidden, vec![], "extended visibility hides the message");
    queue.extend_visibility("jobs", handle, Duration::ZERO).await.expect("release");
    let released = queue.receive("jobs", 1, Duration::from_secs(2), visibility()).await.unwrap();
    assert_eq!(released.len(), 1, "visible again after release");
    assert_eq!(released[0].receive_count, 2);
    let handle = &released[0].receipt_handle;
    queue.extend_visibility("jobs", handle, Duration::from_secs(5)).await.expect("the new handle extends");
    assert!(matches!(
        queue.extend_visibility("jobs", handle, Duration::from_secs(12 * 3600 + 1)).await,
        Err(QueueError::Invalid(_))
    ));
    queue.delete("jobs", handle).await.unwrap();
    assert_eq!(
        queue.extend_visibility("jobs", handle, Duration::from_secs(5)).await,
        Err(QueueError::NotInFlight),
        "a deleted message cannot be extended"
    );

}

/// A deleted message never comes back.
pub async fn delete_removes_message(backends: &dyn Backends) {
    let queue = backends.queue(suite_queue_spec()).await;
    queue.create_queue("jobs").await.unwrap();
    queue.send_batch("jobs", vec!["gone".into(), "kept".into()]).await.unwrap();
    let got = collect(queue.as_ref(), "jobs", 2, Duration::from_secs(1)).await;
    assert_eq!(got.len(), 2);
    let gone = got.iter().find(|m| m.body == "gone").unwrap();
    let kept = got.iter().find(|m| m.body == "kept").unwrap();
    queue.delete("jobs", &gone.receipt_handle).await.unwrap();
    queue.extend_visibility("jobs", &kept.receipt_handle, Duration::ZERO).await.unwrap();
    let later = queue.receive("jobs", 10, Duration::from_secs(2), visibility()).await.unwrap();
    let bodies: Vec<&str> = later.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["kept"]);
    queue.delete("jobs", &later[0].receipt_handle).await.unwrap();
    tokio::time::sleep(Duration::from_millis(SUITE_VISIBILITY_MS + 200)).await;
    assert_eq!(queue.receive("jobs", 10, Duration::from_millis(500), visibility()).await.unwrap(), vec![]);
    assert_eq!(queue.approximate_depth("jobs").await.unwrap(), 0);
}

/// A message received more than the maximum receive count lands in the dead-letter queue.
pub async fn dead_letter_after_max_receives(backends: &dyn Backends) {
    let queue = backends.queue(suite_queue_spec()).await;
    queue.create_queue("jobs").await.unwrap();
    let ids = queue.send_batch("jobs", vec!["poison".into()]).await.unwrap();
    for attempt in 1..=SUITE_RECEIVES_MAX {
        let got = queue.receive("jobs", 1, Duration::from_secs(5), visibility()).await.unwrap();
        assert_eq!(got.len(), 1, "receive {attempt}");
        assert_eq!((got[0].receive_count, got[0].id.as_str()), (attempt, ids[0].as_str()));
    }
    // The receive after the last allowed one moves it instead of returning it.
    tokio::time::sleep(Duration::from_millis(SUITE_VISIBILITY_MS + 200)).await;
    let none = queue.receive("jobs", 1, Duration::from_secs(1), visibility()).await.unwrap();
    assert_eq!(none, vec![], "no receive beyond the maximum");
    let dlq = suite_queue_spec().dlq_name("jobs");
    let dead = queue.receive(&dlq, 10, Duration::from_secs(2), visibility()).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, "poison");
    assert_eq!(queue.approximate_depth("jobs").await.unwrap(), 0);
}

/// A batch of 10 goes through whole; 11 messages, or receives beyond their limits, are Invalid.
pub async fn batch_limits(backends: &dyn Backends) {
    let queue = backends.queue(suite_queue_spec()).await;
    queue.create_queue("jobs").await.unwrap();
    queue.create_queue("jobs").await.expect("creating a queue again is no error");
    let bodies: Vec<String> = (0..10).map(|i| format!("{{\"job\":{i}}}")).collect();
    let ids = queue.send_batch("jobs", bodies.clone()).await.unwrap();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 10, "ten distinct ids");
    assert_eq!(queue.approximate_depth("jobs").await.unwrap(), 10);
    let got = collect(queue.as_ref(), "jobs", 10, Duration::from_secs(1)).await;
    let got_bodies: BTreeSet<String> = got.iter().map(|m| m.body.clone()).collect();
    assert_eq!(got_bodies, bodies.iter().cloned().collect::<BTreeSet<_>>());
    for message in &got {
        queue.delete("jobs", &message.receipt_handle).await.unwrap();
    }

    let eleven: Vec<String> = (0..11).map(|i| i.to_string()).collect();
    assert!(matches!(queue.send_batch("jobs", eleven).await, Err(QueueError::Invalid(_))));
    assert!(matches!(queue.send_batch("jobs", vec![]).await, Err(QueueError::Invalid(_))));
    let huge = "x".repeat(crate::queue::BODY_BYTES_MAX + 1);
    assert!(matches!(queue.send_batch("jobs", vec![huge]).await, Err(QueueError::Invalid(_))));
    assert!(matches!(queue.receive("jobs", 11, Duration::ZERO, visibility()).await, Err(QueueError::Invalid(_))));
    assert!(matches!(queue.receive("jobs", 1, Duration::from_secs(21), visibility()).await, Err(QueueError::Invalid(_))));
    assert_eq!(queue.approximate_depth("jobs").await.unwrap(), 0, "refused sends sent nothing");
    assert!(matches!(queue.send_batch("missing", vec!["x".into()]).await, Err(QueueError::NotFound(_))));
}

/// Expands to one `#[tokio::test]` per conformance case for a backends factory: an expression
/// that evaluates to a future of `Option<impl Backends>` (None: skipped, already reported).
#[macro_export]
macro_rules! conformance_tests {
    ($backends:expr) => {
        $crate::conformance_tests!(@cases $backends;
            conditional_put,
            conditional_update,
            add_stops_at_floor,
            failed_transaction_writes_nothing,
            transaction_limits,
            query_order_and_paging,
            index_queries,
            concurrent_conditional_update,
            receive_hides_until_visibility_lapses,
            extend_visibility,
            delete_removes_message,
            dead_letter_after_max_receives,
            batch_limits
        );
    };
    (@cases $backends:expr; $($case:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let Some(backends) = $backends.await else { return };
                $crate::conformance::$case(&backends).await;
            }
        )+
    };
}

/// Fresh SQLite backends: a new database file under the temp directory, removed on drop.
#[cfg(feature = "sqlite")]
pub struct SqliteBackends {
    path: std::path::PathBuf,
}

#[cfg(feature = "sqlite")]
impl SqliteBackends {
    /// Backends on a new temporary file.
    pub fn new() -> Self {
        let name = format!("aitbc-store-{}.db", uuid::Uuid::new_v4().simple());
        SqliteBackends { path: std::env::temp_dir().join(name) }
    }

    fn db(&self) -> crate::sqlite::SqliteDb {
        crate::sqlite::SqliteDb::open(&self.path).expect("open the test database")
    }
}

#[cfg(feature = "sqlite")]
impl Default for SqliteBackends {
    fn default() -> Self {
        SqliteBackends::new()
    }
}

#[cfg(feature = "sqlite")]
impl Drop for SqliteBackends {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.path.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(feature = "sqlite")]
#[async_trait]
impl Backends for SqliteBackends {
    async fn store(&self) -> Arc<dyn Store> {
        Arc::new(self.db().store())
    }

    async fn queue(&self, spec: QueueSpec) -> Arc<dyn Queue> {
        Arc::new(self.db().queue_with_spec(spec))
    }
}

/// The SQLite factory for `conformance_tests!`.
#[cfg(feature = "sqlite")]
pub async fn sqlite() -> Option<SqliteBackends> {
    Some(SqliteBackends::new())
}

/// The environment variable that points the AWS cases at an emulator (scripts/test.sh sets it).
pub const TEST_ENDPOINT_VAR: &str = "AITBC_TEST_AWS_ENDPOINT";

/// DynamoDB + SQS backends on an emulator, under a fresh name prefix.
#[cfg(all(feature = "dynamodb", feature = "sqs"))]
pub struct AwsBackends {
    config: crate::aws::AwsConfig,
}

#[cfg(all(feature = "dynamodb", feature = "sqs"))]
#[async_trait]
impl Backends for AwsBackends {
    async fn store(&self) -> Arc<dyn Store> {
        Arc::new(crate::provision::dynamodb(&self.config).await.expect("provision the table"))
    }

    async fn queue(&self, spec: QueueSpec) -> Arc<dyn Queue> {
        Arc::new(crate::provision::sqs(&self.config, &[], spec).await.expect("connect to SQS"))
    }
}

/// The DynamoDB + SQS factory for `conformance_tests!`: the emulator named by
/// `AITBC_TEST_AWS_ENDPOINT`. Without it the case fails under CI (`CI=true`) and is skipped,
/// saying so, elsewhere.
#[cfg(all(feature = "dynamodb", feature = "sqs"))]
pub async fn aws() -> Option<AwsBackends> {
    let endpoint = std::env::var(TEST_ENDPOINT_VAR).ok().filter(|v| !v.is_empty());
    let Some(endpoint) = endpoint else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{TEST_ENDPOINT_VAR} is not set under CI: run the tests with scripts/test.sh, which starts moto_server");
        }
        println!("skipped: {TEST_ENDPOINT_VAR} not set (run scripts/test.sh)");
        return None;
    };
    let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    Some(AwsBackends { config: crate::aws::AwsConfig::emulator(&endpoint, &prefix) })
}
