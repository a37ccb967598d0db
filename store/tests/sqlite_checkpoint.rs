//! The database thread never checkpoints: the checkpoint thread copies committed pages from the
//! log into the database file on its own connection, and the items are all there after a
//! reopen.

use std::time::{Duration, Instant};

use aitbc_store::sqlite::CHECKPOINT_INTERVAL_MS;
use aitbc_store::{Condition, Item, Key, SqliteDb, Store};

/// Items written: about 4 MiB of log, far more than an empty file holds.
const ITEMS: usize = 2_000;
/// Bytes of padding per item.
const PAD_BYTES: usize = 2_000;

#[tokio::test]
async fn committed_pages_reach_the_file_without_the_writer_checkpointing() {
    let dir = std::env::temp_dir().join(format!("aitbc-checkpoint-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("db.db");
    let db = SqliteDb::open(&path).unwrap();
    let store = db.store();
    let size = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let empty_bytes = size();
    let pad = "x".repeat(PAD_BYTES);
    for i in 0..ITEMS {
        let item = Item::new(Key::new(format!("ITEM#{i:05}"), "#")).with("pad", pad.as_str());
        store.put(item, Condition::Absent).await.unwrap();
    }
    // The writes went to the log; the file grows only when the checkpoint thread copies them.
    let written_bytes = (ITEMS * PAD_BYTES) as u64;
    let deadline = Instant::now() + Duration::from_millis(40 * CHECKPOINT_INTERVAL_MS);
    while size() < empty_bytes + written_bytes && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(CHECKPOINT_INTERVAL_MS / 5)).await;
    }
    assert!(
        size() >= empty_bytes + written_bytes,
        "the file holds {} bytes ({empty_bytes} empty) after {written_bytes} bytes were committed",
        size()
    );
    drop(store);
    drop(db);

    let db = SqliteDb::open(&path).unwrap();
    let store = db.store();
    for i in [0, ITEMS / 2, ITEMS - 1] {
        let item = store.get(&Key::new(format!("ITEM#{i:05}"), "#")).await.unwrap().expect("the item is kept");
        assert_eq!(item.str("pad").map(str::len), Some(PAD_BYTES));
    }
    drop(store);
    drop(db);
    std::fs::remove_dir_all(&dir).unwrap();
}
