//! The Store port on SQLite. Items live in one table: key columns, the attributes as JSON, and
//! copies of the index key attributes and `expires_at` in indexed columns. Conditions are
//! evaluated in Rust (`Condition::holds`, the port's reference semantics) on the current item
//! read inside the same IMMEDIATE transaction as the write.

use async_trait::async_trait;
use rusqlite::types::Value as SqlValue;
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

/// Columns that copy attributes so SQLite can index them: the index key attributes (named as
/// the attributes) and the TTL attribute.
const COPIED: usize = 7;

fn copied_names() -> [&'static str; COPIED] {
    let [g1, g2, g3] = INDEXES;
    [g1.pk_attr, g1.sk_attr, g2.pk_attr, g2.sk_attr, g3.pk_attr, g3.sk_attr, ATTR_EXPIRES_AT]
}

/// The values of the copied columns of one row, as SQLite stores them: index keys as text,
/// `expires_at` as an integer, anything else (absent or of another type) as NULL.
#[derive(Clone, Debug, PartialEq)]
struct Copies([SqlValue; COPIED]);

impl Copies {
    fn of(attrs: &Map<String, Value>) -> Self {
        Copies(copied_names().map(|name| match attrs.get(name) {
            Some(Value::String(s)) if name != ATTR_EXPIRES_AT => SqlValue::Text(s.clone()),
            Some(v) if name == ATTR_EXPIRES_AT => v.as_i64().map_or(SqlValue::Null, SqlValue::Integer),
            _ => SqlValue::Null,
        }))
    }
}

/// An item serialized for storage: its JSON text and its copied columns. Built by the caller,
/// off the database thread, for a put.
#[derive(Debug)]
struct Row {
    json: String,
    copies: Copies,
}

impl Row {
    fn of(attrs: &Map<String, Value>) -> Self {
        Row { json: serde_json::to_string(attrs).expect("JSON values serialize"), copies: Copies::of(attrs) }
    }
}

/// What a write needs of the current row: whether it exists, its copied columns, and either
/// every attribute or just those a condition reads.
struct Current {
    copies: Copies,
    attrs: Map<String, Value>,
}

/// Which attributes to read of the current row.
enum Read<'a> {
    /// These (none: the write needs only whether the row exists and its copied columns).
    Named(Vec<&'a str>),
    /// The whole item (an update applies to it).
    All,
}

impl<'a> Read<'a> {
    /// What evaluating `condition` needs. SQLite's JSON operator extracts the named attributes
    /// without parsing the whole item in Rust; names it cannot quote in a JSON path fall back
    /// to the whole item.
    fn for_condition(condition: &'a Condition) -> Self {
        let names = condition.attr_names();
        if names.iter().any(|n| n.contains(['"', '\\'])) {
            Read::All
        } else {
            Read::Named(names)
        }
    }
}

fn select_current(tx: &Connection, key: &Key, read: &Read) -> Result<Option<Current>, StoreError> {
    let mut sql = format!("SELECT {}", copied_names().join(", "));
    let mut paths: Vec<String> = Vec::new();
    match read {
        Read::All => sql.push_str(", attrs"),
        Read::Named(names) => {
            for name in names {
                paths.push(format!("$.\"{name}\""));
                sql.push_str(&format!(", attrs -> ?{}", paths.len() + 2));
            }
        }
    }
    sql.push_str(" FROM items WHERE pk = ?1 AND sk = ?2");
    let mut statement = tx.prepare_cached(&sql)?;
    let mut args: Vec<&dyn rusqlite::ToSql> = vec![&key.pk, &key.sk];
    args.extend(paths.iter().map(|p| p as &dyn rusqlite::ToSql));
    let row = statement
        .query_row(args.as_slice(), |row| {
            let mut copies = Copies(std::array::from_fn(|_| SqlValue::Null));
            for (i, copy) in copies.0.iter_mut().enumerate() {
                *copy = row.get(i)?;
            }
            let mut texts: Vec<Option<String>> = Vec::new();
            for i in COPIED..row.as_ref().column_count() {
                texts.push(row.get::<_, Option<String>>(i)?);
            }
            Ok((copies, texts))
        })
        .optional()?;
    let Some((copies, texts)) = row else { return Ok(None) };
    let attrs = match read {
        Read::All => parse_attrs(texts[0].as_deref().unwrap_or("{}"))?,
        Read::Named(names) => {
            let mut attrs = Map::new();
            for (name, text) in names.iter().zip(texts) {
                if let Some(text) = text {
                    let value = serde_json::from_str(&text).map_err(|e| StoreError::Backend(format!("sqlite: corrupt attribute {name}: {e}")))?;
                    attrs.insert((*name).to_string(), value);
                }
            }
            attrs
        }
    };
    Ok(Some(Current { copies, attrs }))
}

/// Loads what `condition` reads of the current row and checks it.
fn check(tx: &Connection, key: &Key, condition: &Condition) -> Result<Option<Current>, StoreError> {
    let current = select_current(tx, key, &Read::for_condition(condition))?;
    if condition.holds(current.as_ref().map(|c| &c.attrs)) {
        Ok(current)
    } else {
        Err(StoreError::condition_failed(key))
    }
}

/// Writes a row: an insert when there is none, else an update of the JSON and of only the
/// copied columns that changed, so SQLite leaves the entries of unchanged indexes alone.
fn write(tx: &Connection, key: &Key, before: Option<&Copies>, row: &Row) -> Result<(), StoreError> {
    let after = &row.copies.0;
    match before {
        None => {
            tx.prepare_cached(
                "INSERT INTO items (pk, sk, attrs, gsi1pk, gsi1sk, gsi2pk, gsi2sk, gsi3pk, gsi3sk, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![key.pk, key.sk, row.json, after[0], after[1], after[2], after[3], after[4], after[5], after[6]])?;
        }
        Some(before) => {
            let mut sql = String::from("UPDATE items SET attrs = ?3");
            let mut args: Vec<&dyn rusqlite::ToSql> = vec![&key.pk, &key.sk, &row.json];
            for (i, name) in copied_names().iter().enumerate() {
                if before.0[i] != after[i] {
                    args.push(&after[i]);
                    sql.push_str(&format!(", {name} = ?{}", args.len()));
                }
            }
            sql.push_str(" WHERE pk = ?1 AND sk = ?2");
            tx.prepare_cached(&sql)?.execute(args.as_slice())?;
        }
    }
    Ok(())
}

fn remove(tx: &Connection, key: &Key) -> Result<(), StoreError> {
    tx.prepare_cached("DELETE FROM items WHERE pk = ?1 AND sk = ?2")?.execute(params![key.pk, key.sk])?;
    Ok(())
}

fn put_in(tx: &Connection, key: &Key, row: &Row, condition: &Condition) -> Result<(), StoreError> {
    let current = check(tx, key, condition)?;
    write(tx, key, current.as_ref().map(|c| &c.copies), row)
}

fn update_in(
    tx: &Connection,
    key: &Key,
    update: &Update,
    condition: &Condition,
) -> Result<Map<String, Value>, StoreError> {
    let current = select_current(tx, key, &Read::All)?;
    if !condition.holds(current.as_ref().map(|c| &c.attrs)) {
        return Err(StoreError::condition_failed(key));
    }
    let attrs = update.apply(current.as_ref().map(|c| &c.attrs))?.ok_or_else(|| StoreError::condition_failed(key))?;
    write(tx, key, current.as_ref().map(|c| &c.copies), &Row::of(&attrs))?;
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

/// One page of raw rows (key and JSON text) and whether more follow: the JSON is parsed by the
/// caller, off the database thread.
fn query_in(tx: &Connection, query: &Query) -> Result<(Vec<(String, String, String)>, bool), StoreError> {
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
    let mut rows_out = Vec::with_capacity(query.limit.min(64));
    let mut more = false;
    for row in rows {
        if rows_out.len() == query.limit {
            more = true;
            break;
        }
        rows_out.push(row?);
    }
    Ok((rows_out, more))
}

/// A page from raw rows: the items parsed, and the cursor after the last one if more follow.
fn page_of(query: &Query, rows: Vec<(String, String, String)>, more: bool) -> Result<Page, StoreError> {
    let items = rows.into_iter().map(|(pk, sk, json)| Ok(Item { key: Key { pk, sk }, attrs: parse_attrs(&json)? })).collect::<Result<Vec<Item>, StoreError>>()?;
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

/// A transaction's write with its item serialized (puts) before it goes to the database thread.
enum Prepared {
    Put { key: Key, row: Row, condition: Condition },
    Update { key: Key, update: Update, condition: Condition },
    Delete { key: Key, condition: Condition },
    Check { key: Key, condition: Condition },
}

impl From<TxWrite> for Prepared {
    fn from(write: TxWrite) -> Self {
        match write {
            TxWrite::Put { item, condition } => Prepared::Put { row: Row::of(&item.attrs), key: item.key, condition },
            TxWrite::Update { key, update, condition } => Prepared::Update { key, update, condition },
            TxWrite::Delete { key, condition } => Prepared::Delete { key, condition },
            TxWrite::ConditionCheck { key, condition } => Prepared::Check { key, condition },
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        validate_key(key)?;
        let owned = key.clone();
        let json: Option<String> = self
            .run(move |conn| {
                let json = conn
                    .prepare_cached("SELECT attrs FROM items WHERE pk = ?1 AND sk = ?2")?
                    .query_row(params![owned.pk, owned.sk], |row| row.get(0))
                    .optional()?;
                Ok(json)
            })
            .await?;
        json.map(|json| Ok(Item { key: key.clone(), attrs: parse_attrs(&json)? })).transpose()
    }

    async fn put(&self, item: Item, condition: Condition) -> Result<(), StoreError> {
        validate_put(&item, &condition)?;
        let row = Row::of(&item.attrs);
        let key = item.key;
        self.run(move |tx| put_in(tx, &key, &row, &condition)).await
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
        let query = std::sync::Arc::new(query);
        let asked = query.clone();
        let (rows, more) = self.run(move |conn| query_in(conn, &asked)).await?;
        page_of(&query, rows, more)
    }

    async fn transact(&self, writes: Vec<TxWrite>) -> Result<(), StoreError> {
        validate_transaction(&writes)?;
        // Each write's condition looks only at its own item and the items are distinct, so
        // checking each condition just before its write equals checking all first. Any error
        // returns before the commit, and dropping the transaction rolls everything back.
        let writes: Vec<Prepared> = writes.into_iter().map(Prepared::from).collect();
        self.run(move |tx| {
            for write in &writes {
                match write {
                    Prepared::Put { key, row, condition } => put_in(tx, key, row, condition)?,
                    Prepared::Update { key, update, condition } => {
                        update_in(tx, key, update, condition)?;
                    }
                    Prepared::Delete { key, condition } => delete_in(tx, key, condition)?,
                    Prepared::Check { key, condition } => {
                        check(tx, key, condition)?;
                    }
                }
            }
            Ok(())
        })
        .await
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
