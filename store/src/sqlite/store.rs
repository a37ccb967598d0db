//! The Store port on SQLite. Items live in one table: key columns, the attributes as JSON, and
//! copies of the index key attributes and `expires_at` in indexed columns. Conditions are
//! evaluated in Rust (`Condition::holds`, the port's reference semantics) on the current item
//! read inside the same IMMEDIATE transaction as the write.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{Map, Value};

use super::{DbError, SqliteDb};
use crate::spec::{ATTR_EXPIRES_AT, ATTR_PK, ATTR_SK, INDEXES};
use crate::store::{
    validate_condition, validate_key, validate_put, validate_transaction, validate_update, Condition, Item, Key,
    Page, Query, SortCondition, Store, StoreError, TxWrite, Update,
};

/// Most expired items one `sweep_expired` call deletes (one transaction: bounded work).
pub const SWEEP_ITEMS_MAX: usize = 1000;

/// The Store port on a SQLite database (see `SqliteDb`).
#[derive(Clone, Debug)]
pub struct SqliteStore {
    db: SqliteDb,
}

impl SqliteStore {
    /// The store on an open database.
    pub fn new(db: SqliteDb) -> Self {
        SqliteStore { db }
    }

    /// Opens the database file (see `SqliteDb::open`) and returns its store.
    pub fn open(path: impl AsRef<std::path::Path>) -> Result<Self, StoreError> {
        let db = SqliteDb::open(path).map_err(backend)?;
        Ok(SqliteStore { db })
    }

    /// The database this store uses.
    pub fn db(&self) -> &SqliteDb {
        &self.db
    }

    /// Deletes up to `limit` (<= SWEEP_ITEMS_MAX) items whose `expires_at` is at or before
    /// `now_s` (unix seconds) and returns how many: DynamoDB's TTL does this by itself, SQLite
    /// needs a sweeper to call it.
    pub async fn sweep_expired(&self, now_s: i64, limit: usize) -> Result<usize, StoreError> {
        if limit == 0 || limit > SWEEP_ITEMS_MAX {
            return Err(StoreError::Invalid(format!("limit must be 1..={SWEEP_ITEMS_MAX}")));
        }
        let limit = i64::try_from(limit).expect("bounded");
        self.run(move |tx| {
            let deleted = tx
                .prepare_cached(
                    "DELETE FROM items WHERE (pk, sk) IN \
                     (SELECT pk, sk FROM items WHERE expires_at <= ?1 LIMIT ?2)",
                )?
                .execute(params![now_s, limit])?;
            Ok(deleted)
        })
        .await
    }

    /// Runs `f` atomically on the database thread (in a group commit: see `sqlite`): an Err
    /// rolls back whatever `f` wrote.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        self.db.call(f).await
    }
}

fn backend(error: rusqlite::Error) -> StoreError {
    StoreError::Backend(format!("sqlite: {error}"))
}

impl From<DbError> for StoreError {
    fn from(error: DbError) -> Self {
        StoreError::Backend(error.to_string())
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        backend(error)
    }
}

fn parse_attrs(json: &str) -> Result<Map<String, Value>, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Backend(format!("sqlite: corrupt item: {e}")))
}

fn load(tx: &Connection, key: &Key) -> Result<Option<Map<String, Value>>, StoreError> {
    let json: Option<String> = tx
        .prepare_cached("SELECT attrs FROM items WHERE pk = ?1 AND sk = ?2")?
        .query_row(params![key.pk, key.sk], |row| row.get(0))
        .optional()?;
    json.as_deref().map(parse_attrs).transpose()
}

/// Loads the current item only when the condition needs it.
fn check(tx: &Connection, key: &Key, condition: &Condition) -> Result<(), StoreError> {
    if condition.is_always() {
        return Ok(());
    }
    let current = load(tx, key)?;
    if condition.holds(current.as_ref()) {
        Ok(())
    } else {
        Err(StoreError::condition_failed(key))
    }
}

fn text_attr<'a>(attrs: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    attrs.get(name).and_then(Value::as_str)
}

fn write(tx: &Connection, key: &Key, attrs: &Map<String, Value>) -> Result<(), StoreError> {
    let json = serde_json::to_string(attrs).expect("JSON values serialize");
    let [g1, g2, g3] = INDEXES;
    let expires_at = attrs.get(ATTR_EXPIRES_AT).and_then(Value::as_i64);
    tx.prepare_cached(
        "INSERT OR REPLACE INTO items \
         (pk, sk, attrs, gsi1pk, gsi1sk, gsi2pk, gsi2sk, gsi3pk, gsi3sk, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        key.pk,
        key.sk,
        json,
        text_attr(attrs, g1.pk_attr),
        text_attr(attrs, g1.sk_attr),
        text_attr(attrs, g2.pk_attr),
        text_attr(attrs, g2.sk_attr),
        text_attr(attrs, g3.pk_attr),
        text_attr(attrs, g3.sk_attr),
        expires_at,
    ])?;
    Ok(())
}

fn remove(tx: &Connection, key: &Key) -> Result<(), StoreError> {
    tx.prepare_cached("DELETE FROM items WHERE pk = ?1 AND sk = ?2")?.execute(params![key.pk, key.sk])?;
    Ok(())
}

fn put_in(tx: &Connection, item: &Item, condition: &Condition) -> Result<(), StoreError> {
    check(tx, &item.key, condition)?;
    write(tx, &item.key, &item.attrs)
}

fn update_in(
    tx: &Connection,
    key: &Key,
    update: &Update,
    condition: &Condition,
) -> Result<Map<String, Value>, StoreError> {
    let current = load(tx, key)?;
    if !condition.holds(current.as_ref()) {
        return Err(StoreError::condition_failed(key));
    }
    let attrs = update.apply(current.as_ref())?.ok_or_else(|| StoreError::condition_failed(key))?;
    write(tx, key, &attrs)?;
    Ok(attrs)
}

fn delete_in(tx: &Connection, key: &Key, condition: &Condition) -> Result<(), StoreError> {
    check(tx, key, condition)?;
    remove(tx, key)
}

/// The smallest string above every string that starts with `prefix`, if there is one: the
/// prefix with its last character incremented (dropping trailing characters that cannot be).
/// Code point order is UTF-8 byte order, so this bounds a prefix scan of an index.
fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last {
            '\u{D7FF}' => Some('\u{E000}'),
            char::MAX => None,
            c => char::from_u32(u32::from(c) + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

fn query_in(tx: &Connection, query: &Query) -> Result<Page, StoreError> {
    let (pk_col, sk_col) = query.key_attrs();
    let mut sql = format!("SELECT pk, sk, attrs FROM items WHERE {pk_col} = ?1 AND {sk_col} IS NOT NULL");
    let mut args: Vec<String> = vec![query.partition.clone()];
    let mut arg = |sql: &mut String, clause: &str, value: &str| {
        args.push(value.to_string());
        sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
    };
    match &query.sort {
        SortCondition::All => {}
        SortCondition::Prefix(prefix) => {
            arg(&mut sql, &format!(" AND {sk_col} >= ?"), prefix);
            if let Some(above) = prefix_successor(prefix) {
                arg(&mut sql, &format!(" AND {sk_col} < ?"), &above);
            }
        }
        SortCondition::Between(low, high) => {
            arg(&mut sql, &format!(" AND {sk_col} >= ?"), low);
            arg(&mut sql, &format!(" AND {sk_col} <= ?"), high);
        }
        SortCondition::AtLeast(low) => arg(&mut sql, &format!(" AND {sk_col} >= ?"), low),
        SortCondition::AtMost(high) => arg(&mut sql, &format!(" AND {sk_col} <= ?"), high),
    }
    let (op, order) = if query.descending { ("<", "DESC") } else { (">", "ASC") };
    let is_index = query.index.is_some();
    if let Some(cursor) = &query.cursor {
        let last = query.decode_cursor(cursor)?;
        let text = |name: &str| last[name].as_str().expect("decode_cursor checks strings").to_string();
        if is_index {
            // Index sort keys need not be unique: the table key breaks ties, as in the order.
            arg(&mut sql, &format!(" AND ({sk_col}, pk, sk) {op} (?"), &text(sk_col));
            arg(&mut sql, ", ?", &text(ATTR_PK));
            arg(&mut sql, ", ?)", &text(ATTR_SK));
        } else {
            arg(&mut sql, &format!(" AND sk {op} ?"), &text(ATTR_SK));
        }
    }
    if is_index {
        sql.push_str(&format!(" ORDER BY {sk_col} {order}, pk {order}, sk {order}"));
    } else {
        sql.push_str(&format!(" ORDER BY sk {order}"));
    }
    // One row more than the page: it tells whether a next page exists without another query.
    sql.push_str(&format!(" LIMIT {}", query.limit + 1));

    let mut statement = tx.prepare_cached(&sql)?;
    let rows = statement.query_map(rusqlite::params_from_iter(args.iter()), |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?))
    })?;
    let mut items = Vec::with_capacity(query.limit.min(64));
    let mut more = false;
    for row in rows {
        let (pk, sk, json) = row?;
        if items.len() == query.limit {
            more = true;
            break;
        }
        items.push(Item { key: Key { pk, sk }, attrs: parse_attrs(&json)? });
    }
    assert!(items.len() <= query.limit);
    let cursor = if more {
        let last = items.last().expect("a full page has a last item");
        let mut position = last.attrs.clone();
        position.insert(ATTR_PK.into(), Value::from(last.key.pk.clone()));
        position.insert(ATTR_SK.into(), Value::from(last.key.sk.clone()));
        Some(query.encode_cursor(&position))
    } else {
        None
    };
    Ok(Page { items, cursor })
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        validate_key(key)?;
        let key = key.clone();
        self.run(move |conn| Ok(load(conn, &key)?.map(|attrs| Item { key, attrs }))).await
    }

    async fn put(&self, item: Item, condition: Condition) -> Result<(), StoreError> {
        validate_put(&item, &condition)?;
        self.run(move |tx| put_in(tx, &item, &condition)).await
    }

    async fn update(&self, key: &Key, update: Update, condition: Condition) -> Result<Item, StoreError> {
        validate_update(key, &update, &condition)?;
        let key = key.clone();
        self.run(move |tx| {
            let attrs = update_in(tx, &key, &update, &condition)?;
            Ok(Item { key, attrs })
        })
        .await
    }

    async fn delete(&self, key: &Key, condition: Condition) -> Result<(), StoreError> {
        validate_key(key)?;
        validate_condition(&condition)?;
        let key = key.clone();
        self.run(move |tx| delete_in(tx, &key, &condition)).await
    }

    async fn query(&self, query: Query) -> Result<Page, StoreError> {
        query.validate()?;
        self.run(move |conn| query_in(conn, &query)).await
    }

    async fn transact(&self, writes: Vec<TxWrite>) -> Result<(), StoreError> {
        validate_transaction(&writes)?;
        // Each write's condition looks only at its own item and the items are distinct, so
        // checking each condition just before its write equals checking all first. Any error
        // returns before the commit, and dropping the transaction rolls everything back.
        self.run(move |tx| {
            for write in &writes {
                match write {
                    TxWrite::Put { item, condition } => put_in(tx, item, condition)?,
                    TxWrite::Update { key, update, condition } => {
                        update_in(tx, key, update, condition)?;
                    }
                    TxWrite::Delete { key, condition } => delete_in(tx, key, condition)?,
                    TxWrite::ConditionCheck { key, condition } => check(tx, key, condition)?,
                }
            }
            Ok(())
        })
        .await
    }

    /// Every index entry is written in the same SQLite transaction as its row.
    fn indexes_lag(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_successor;

    #[test]
    fn prefix_successor_bounds_the_prefix() {
        assert_eq!(prefix_successor("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_successor("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_successor("\u{10FFFF}"), None);
        assert_eq!(prefix_successor("\u{D7FF}").as_deref(), Some("\u{E000}"));
    }
}
