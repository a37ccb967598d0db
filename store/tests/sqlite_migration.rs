//! A database file from before the items table became a rowid table (a WITHOUT ROWID table
//! clustered on the key) opens with every item, index entry and TTL intact.

use aitbc_store::{Condition, Index, Item, Key, Query, SortCondition, SqliteDb, Store};

/// The items schema as it was, verbatim.
const OLD_SCHEMA: &str = "CREATE TABLE items (pk TEXT NOT NULL, sk TEXT NOT NULL, attrs TEXT NOT NULL, \
    gsi1pk TEXT, gsi1sk TEXT, gsi2pk TEXT, gsi2sk TEXT, gsi3pk TEXT, gsi3sk TEXT, expires_at INTEGER, \
    PRIMARY KEY (pk, sk)) WITHOUT ROWID;
    CREATE INDEX items_gsi1 ON items (gsi1pk, gsi1sk, pk, sk) WHERE gsi1pk IS NOT NULL AND gsi1sk IS NOT NULL;
    CREATE INDEX items_gsi2 ON items (gsi2pk, gsi2sk, pk, sk) WHERE gsi2pk IS NOT NULL AND gsi2sk IS NOT NULL;
    CREATE INDEX items_gsi3 ON items (gsi3pk, gsi3sk, pk, sk) WHERE gsi3pk IS NOT NULL AND gsi3sk IS NOT NULL;
    CREATE INDEX items_expires_at ON items (expires_at) WHERE expires_at IS NOT NULL;
    INSERT INTO items (pk, sk, attrs, gsi1pk, gsi1sk) VALUES
        ('JOB#a', '#', '{\"gsi1pk\":\"CLIENT#c\",\"gsi1sk\":\"0002#a\",\"state\":\"queued\"}', 'CLIENT#c', '0002#a'),
        ('JOB#b', '#', '{\"gsi1pk\":\"CLIENT#c\",\"gsi1sk\":\"0001#b\",\"state\":\"done\"}', 'CLIENT#c', '0001#b');
    INSERT INTO items (pk, sk, attrs, expires_at) VALUES ('NONCE#n', '#', '{\"expires_at\":5}', 5);";

#[tokio::test]
async fn a_without_rowid_items_table_is_moved_to_the_rowid_table() {
    let dir = std::env::temp_dir().join(format!("aitbc-migration-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("old.db");
    rusqlite::Connection::open(&path).unwrap().execute_batch(OLD_SCHEMA).unwrap();

    let db = SqliteDb::open(&path).unwrap();
    let store = db.store();
    let job = store.get(&Key::new("JOB#a", "#")).await.unwrap().expect("the item moved");
    assert_eq!(job.str("state"), Some("queued"));
    // The index answers in its order, from the moved columns.
    let page = store.query(Query::index(Index::Gsi1, "CLIENT#c").sort(SortCondition::All)).await.unwrap();
    let keys: Vec<&str> = page.items.iter().map(|i| i.key.pk.as_str()).collect();
    assert_eq!(keys, ["JOB#b", "JOB#a"]);
    // The key stays unique, and the TTL column still drives the sweeper.
    let again = store.put(Item::new(Key::new("JOB#a", "#")), Condition::Absent).await;
    assert!(again.is_err(), "a put-if-absent of a moved item fails");
    assert_eq!(store.sweep_expired(10, 10).await.unwrap(), 1);
    drop(store);
    drop(db);

    // Opening again finds the new table and moves nothing.
    let sql: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT sql FROM sqlite_schema WHERE name = 'items'", [], |r| r.get(0))
        .unwrap();
    assert!(!sql.to_ascii_uppercase().contains("WITHOUT ROWID"), "{sql}");
    let db = SqliteDb::open(&path).unwrap();
    assert!(db.store().get(&Key::new("JOB#b", "#")).await.unwrap().is_some());
    drop(db);
    std::fs::remove_dir_all(&dir).unwrap();
}
