//! The Store port: items addressed by partition key + sort key, conditional writes, atomic numeric
//! adds with a floor, queries with opaque cursors, and all-or-nothing transactions.
//!
//! This module also holds the semantics both adapters share and must not duplicate: argument
//! validation (the limits), condition evaluation against an item (the SQLite adapter uses it; the
//! DynamoDB adapter maps each condition to the native expression with the same meaning), the
//! bounds an add puts on the current value, and the cursor encoding.

use std::collections::HashSet;

use async_trait::async_trait;
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::spec::{Index, ATTR_PK, ATTR_SK, INDEXES};

/// Most items one query page returns (DynamoDB also stops a page at 1 MB of data).
pub const PAGE_ITEMS_MAX: usize = 1000;
/// Most writes in one transaction (DynamoDB's TransactWriteItems limit).
pub const TRANSACTION_WRITES_MAX: usize = 100;
/// Most bytes of one item, measured as its JSON encoding (keys included). DynamoDB's own limit is
/// 400 KB in its binary encoding; JSON is never shorter, so an item we accept DynamoDB accepts.
pub const ITEM_BYTES_MAX: usize = 400 * 1024;
/// Most bytes of all items of one transaction (DynamoDB: 4 MB per TransactWriteItems).
pub const TRANSACTION_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most bytes of a partition key value (DynamoDB's limit).
pub const PK_BYTES_MAX: usize = 2048;
/// Most bytes of a sort key value (DynamoDB's limit).
pub const SK_BYTES_MAX: usize = 1024;
/// Most bytes of an attribute name. DynamoDB allows 64 KB; ours are short, so a small bound
/// catches mistakes (a value passed as a name) early.
pub const ATTR_NAME_BYTES_MAX: usize = 255;
/// Deepest nesting of lists and maps inside one attribute value (DynamoDB allows 32 levels).
pub const VALUE_DEPTH_MAX: usize = 32;
/// Most conditions in one condition tree (each becomes a clause of a DynamoDB expression, whose
/// text is limited to 4 KB).
pub const CONDITION_TERMS_MAX: usize = 32;
/// Most attributes one update may touch (set + remove + add); DynamoDB's expression length
/// (4 KB) bounds it anyway.
pub const UPDATE_ATTRS_MAX: usize = 64;
/// Most bytes of an opaque cursor string (the encoded last key: four keys of at most 2 KB).
pub const CURSOR_BYTES_MAX: usize = 16 * 1024;

/// The address of an item: partition key and sort key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// Partition key (attribute `pk`).
    pub pk: String,
    /// Sort key (attribute `sk`).
    pub sk: String,
}

impl Key {
    /// A key from its two parts.
    pub fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        Key { pk: pk.into(), sk: sk.into() }
    }
}

/// One stored item: its key and its other attributes. Attribute values are JSON values whose
/// numbers are i64 integers (money is integer; floats are refused as `Invalid`). The index key
/// attributes (`gsi1pk` .. `gsi3sk`) and `expires_at` are ordinary attributes with fixed types.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// The item's address.
    pub key: Key,
    /// Every attribute but `pk` and `sk`.
    pub attrs: Map<String, Value>,
}

impl Item {
    /// An item with the given key and no attributes.
    pub fn new(key: Key) -> Self {
        Item { key, attrs: Map::new() }
    }

    /// Builder: sets one attribute.
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.attrs.insert(name.to_string(), value.into());
        self
    }

    /// An attribute as a string, if it is one.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.attrs.get(name).and_then(Value::as_str)
    }

    /// An attribute as an integer, if it is one.
    pub fn int(&self, name: &str) -> Option<i64> {
        self.attrs.get(name).and_then(Value::as_i64)
    }
}

/// A precondition on the current state of one item, checked atomically with the write.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// No precondition.
    Always,
    /// The item does not exist.
    Absent,
    /// The item exists.
    Present,
    /// The item exists and the attribute equals the value.
    Equals(String, Value),
    /// The attribute is absent (or the item is) or differs from the value.
    NotEquals(String, Value),
    /// The attribute is absent (or the item is).
    AttrAbsent(String),
    /// Every condition holds (an empty list always holds).
    And(Vec<Condition>),
}

impl Condition {
    /// `Equals` with owned arguments.
    pub fn equals(attr: &str, value: impl Into<Value>) -> Self {
        Condition::Equals(attr.to_string(), value.into())
    }

    /// `NotEquals` with owned arguments.
    pub fn not_equals(attr: &str, value: impl Into<Value>) -> Self {
        Condition::NotEquals(attr.to_string(), value.into())
    }

    /// Whether the condition holds for the current item (None: the item does not exist). This is
    /// the reference semantics; the DynamoDB adapter's expressions mean the same.
    pub fn holds(&self, item: Option<&Map<String, Value>>) -> bool {
        match self {
            Condition::Always => true,
            Condition::Absent => item.is_none(),
            Condition::Present => item.is_some(),
            Condition::Equals(attr, value) => item.and_then(|i| i.get(attr)) == Some(value),
            Condition::NotEquals(attr, value) => item.and_then(|i| i.get(attr)) != Some(value),
            Condition::AttrAbsent(attr) => item.and_then(|i| i.get(attr)).is_none(),
            Condition::And(all) => all.iter().all(|c| c.holds(item)),
        }
    }

    /// Whether the condition is `Always` or an `And` of nothing but `Always`: no expression.
    pub fn is_always(&self) -> bool {
        match self {
            Condition::Always => true,
            Condition::And(all) => all.iter().all(Condition::is_always),
            _ => false,
        }
    }

    /// The attribute names the condition reads (an adapter may load just these).
    pub fn attr_names(&self) -> Vec<&str> {
        let mut names = Vec::new();
        self.collect_names(&mut names);
        names.sort_unstable();
        names.dedup();
        names
    }

    fn collect_names<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Condition::Always | Condition::Absent | Condition::Present => {}
            Condition::Equals(attr, _) | Condition::NotEquals(attr, _) | Condition::AttrAbsent(attr) => out.push(attr),
            Condition::And(all) => all.iter().for_each(|c| c.collect_names(out)),
        }
    }

    fn terms(&self) -> usize {
        match self {
            Condition::And(all) => 1 + all.iter().map(Condition::terms).sum::<usize>(),
            _ => 1,
        }
    }

    fn validate(&self) -> Result<(), StoreError> {
        if self.terms() > CONDITION_TERMS_MAX {
            return Err(invalid(format!("condition has more than {CONDITION_TERMS_MAX} terms")));
        }
        self.validate_terms(0)
    }

    fn validate_terms(&self, depth: usize) -> Result<(), StoreError> {
        // The term count bounds the depth too; the explicit check keeps the recursion obviously
        // bounded.
        if depth > CONDITION_TERMS_MAX {
            return Err(invalid("condition nested too deeply".into()));
        }
        match self {
            Condition::Always | Condition::Absent | Condition::Present => Ok(()),
            Condition::Equals(attr, value) | Condition::NotEquals(attr, value) => {
                validate_attr_name(attr, false)?;
                validate_value(attr, value, 0)
            }
            Condition::AttrAbsent(attr) => validate_attr_name(attr, false),
            Condition::And(all) => all.iter().try_for_each(|c| c.validate_terms(depth + 1)),
        }
    }
}

/// An atomic add of `delta` to an integer attribute (a missing attribute counts as 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Add {
    /// The attribute.
    pub attr: String,
    /// The amount to add (negative to subtract).
    pub delta: i64,
    /// The least value the result may have; an add that would go below it is refused with
    /// `ConditionFailed` and changes nothing.
    pub floor: Option<i64>,
}

impl Add {
    /// The range the attribute's current value must lie in for the result to stay within
    /// [floor, i64::MAX] (i64::MIN without a floor), or None when every i64 value does (a zero
    /// delta without a floor). Computed in i128 so that no bound overflows: DynamoDB numbers
    /// hold 38 digits, so the adapter sends these bounds as they are.
    pub fn current_bounds(&self) -> Option<(i128, i128)> {
        let floor = i128::from(self.floor.unwrap_or(i64::MIN));
        let low = floor - i128::from(self.delta);
        let high = i128::from(i64::MAX) - i128::from(self.delta);
        if low <= i128::from(i64::MIN) && high >= i128::from(i64::MAX) {
            None
        } else {
            Some((low, high))
        }
    }

    /// Whether the add may run on an item whose attribute is missing (it counts as 0).
    pub fn allows_missing(&self) -> bool {
        match self.current_bounds() {
            None => true,
            Some((low, high)) => low <= 0 && 0 <= high,
        }
    }
}

/// The changes of one update: attributes to set, to remove, and integer attributes to add to.
/// One attribute may appear in only one of the three (DynamoDB refuses overlapping paths).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Update {
    /// Attributes to set to a value.
    pub set: Map<String, Value>,
    /// Attributes to remove.
    pub remove: Vec<String>,
    /// Integer attributes to add to atomically.
    pub add: Vec<Add>,
}

impl Update {
    /// An update that changes nothing yet (an empty update is refused; add something).
    pub fn new() -> Self {
        Update::default()
    }

    /// Builder: sets an attribute.
    pub fn set(mut self, attr: &str, value: impl Into<Value>) -> Self {
        self.set.insert(attr.to_string(), value.into());
        self
    }

    /// Builder: removes an attribute.
    pub fn remove(mut self, attr: &str) -> Self {
        self.remove.push(attr.to_string());
        self
    }

    /// Builder: adds `delta` to an integer attribute, refused if the result would be below
    /// `floor`.
    pub fn add(mut self, attr: &str, delta: i64, floor: Option<i64>) -> Self {
        self.add.push(Add { attr: attr.to_string(), delta, floor });
        self
    }

    fn validate(&self) -> Result<(), StoreError> {
        let count = self.set.len() + self.remove.len() + self.add.len();
        if count == 0 {
            return Err(invalid("empty update".into()));
        }
        if count > UPDATE_ATTRS_MAX {
            return Err(invalid(format!("update touches more than {UPDATE_ATTRS_MAX} attributes")));
        }
        let mut seen = HashSet::with_capacity(count);
        let names = self
            .set
            .keys()
            .chain(self.remove.iter())
            .chain(self.add.iter().map(|a| &a.attr));
        for name in names {
            validate_attr_name(name, true)?;
            if !seen.insert(name.as_str()) {
                return Err(invalid(format!("attribute {name} appears twice in one update")));
            }
        }
        for (name, value) in &self.set {
            validate_attr_value(name, value)?;
        }
        for add in &self.add {
            if is_string_attr(&add.attr) {
                return Err(invalid(format!("cannot add to string attribute {}", add.attr)));
            }
        }
        Ok(())
    }

    /// Applies the update to the current attributes (None: a missing item, which the update
    /// creates, as DynamoDB's UpdateItem does). Returns `Ok(None)` when an add's bounds refuse
    /// the current value (the caller reports `ConditionFailed`).
    pub fn apply(&self, current: Option<&Map<String, Value>>) -> Result<Option<Map<String, Value>>, StoreError> {
        let mut attrs = current.cloned().unwrap_or_default();
        for add in &self.add {
            let value = match attrs.get(&add.attr) {
                None => {
                    if !add.allows_missing() {
                        return Ok(None);
                    }
                    0
                }
                Some(Value::Number(n)) if n.is_i64() => n.as_i64().expect("checked is_i64"),
                Some(_) => {
                    // A non-integer current value: a bounded add's comparison cannot hold (as in
                    // DynamoDB, where comparing different types is false); an unbounded one is a
                    // type error.
                    if add.current_bounds().is_some() {
                        return Ok(None);
                    }
                    return Err(invalid(format!("attribute {} is not an integer", add.attr)));
                }
            };
            if let Some((low, high)) = add.current_bounds() {
                if i128::from(value) < low || i128::from(value) > high {
                    return Ok(None);
                }
            }
            let result = value.checked_add(add.delta).expect("bounds exclude overflow");
            assert!(add.floor.is_none_or(|floor| result >= floor));
            attrs.insert(add.attr.clone(), Value::from(result));
        }
        for (name, value) in &self.set {
            attrs.insert(name.clone(), value.clone());
        }
        for name in &self.remove {
            attrs.remove(name);
        }
        Ok(Some(attrs))
    }
}

/// A condition on the sort key (of the table or of the queried index).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SortCondition {
    /// Every sort key of the partition.
    All,
    /// Sort keys that begin with the string.
    Prefix(String),
    /// Sort keys in the closed range [low, high].
    Between(String, String),
    /// Sort keys >= the string.
    AtLeast(String),
    /// Sort keys <= the string.
    AtMost(String),
}

impl SortCondition {
    /// Whether a sort key satisfies the condition (strings compare by UTF-8 bytes, as in
    /// DynamoDB and in SQLite's BINARY collation).
    pub fn matches(&self, sk: &str) -> bool {
        match self {
            SortCondition::All => true,
            SortCondition::Prefix(p) => sk.starts_with(p.as_str()),
            SortCondition::Between(low, high) => low.as_str() <= sk && sk <= high.as_str(),
            SortCondition::AtLeast(low) => low.as_str() <= sk,
            SortCondition::AtMost(high) => sk <= high.as_str(),
        }
    }
}

/// One query: a partition of the table or of an index, a sort key condition, an order, a page
/// size and where to continue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// None: the table; Some: a secondary index.
    pub index: Option<Index>,
    /// The partition key value (of the index when there is one).
    pub partition: String,
    /// The sort key condition.
    pub sort: SortCondition,
    /// Descending sort key order (newest first for time-ordered sort keys).
    pub descending: bool,
    /// Most items in the page: 1..=PAGE_ITEMS_MAX.
    pub limit: usize,
    /// The cursor of the previous page, to continue after it.
    pub cursor: Option<String>,
}

impl Query {
    /// All items of a table partition, ascending, a full page.
    pub fn table(partition: impl Into<String>) -> Self {
        Query {
            index: None,
            partition: partition.into(),
            sort: SortCondition::All,
            descending: false,
            limit: PAGE_ITEMS_MAX,
            cursor: None,
        }
    }

    /// All items of an index partition, ascending, a full page.
    pub fn index(index: Index, partition: impl Into<String>) -> Self {
        Query { index: Some(index), ..Query::table(partition) }
    }

    /// Builder: the sort key condition.
    pub fn sort(mut self, sort: SortCondition) -> Self {
        self.sort = sort;
        self
    }

    /// Builder: descending order.
    pub fn descending(mut self) -> Self {
        self.descending = true;
        self
    }

    /// Builder: the page size.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Builder: continue after a previous page.
    pub fn after(mut self, cursor: Option<String>) -> Self {
        self.cursor = cursor;
        self
    }

    /// The attribute names of the queried partition and sort keys.
    pub fn key_attrs(&self) -> (&'static str, &'static str) {
        match self.index {
            None => (ATTR_PK, ATTR_SK),
            Some(index) => (index.spec().pk_attr, index.spec().sk_attr),
        }
    }

    /// Checks the query's arguments.
    pub fn validate(&self) -> Result<(), StoreError> {
        if self.limit == 0 || self.limit > PAGE_ITEMS_MAX {
            return Err(invalid(format!("limit {} is not in 1..={PAGE_ITEMS_MAX}", self.limit)));
        }
        if self.partition.is_empty() || self.partition.len() > PK_BYTES_MAX {
            return Err(invalid("query partition must have 1..=2048 bytes".into()));
        }
        let bounds: Vec<&String> = match &self.sort {
            SortCondition::All => vec![],
            SortCondition::Prefix(s) | SortCondition::AtLeast(s) | SortCondition::AtMost(s) => vec![s],
            SortCondition::Between(low, high) => {
                if low > high {
                    return Err(invalid("between: low is above high".into()));
                }
                vec![low, high]
            }
        };
        if bounds.iter().any(|s| s.is_empty() || s.len() > SK_BYTES_MAX) {
            return Err(invalid("sort key bound must have 1..=1024 bytes".into()));
        }
        if let Some(cursor) = &self.cursor {
            self.decode_cursor(cursor)?;
        }
        Ok(())
    }

    /// The key attributes a cursor for this query carries: the index keys (if any) and the
    /// table keys, which make an index position unique.
    pub fn cursor_attrs(&self) -> Vec<&'static str> {
        match self.index {
            None => vec![ATTR_PK, ATTR_SK],
            Some(index) => vec![index.spec().pk_attr, index.spec().sk_attr, ATTR_PK, ATTR_SK],
        }
    }

    /// The cursor that continues after an item: base64url of a JSON object holding the item's
    /// key attributes for this query. Both adapters use it, so the format is one.
    pub fn encode_cursor(&self, last: &Map<String, Value>) -> String {
        let mut key = Map::new();
        for attr in self.cursor_attrs() {
            let value = last.get(attr).expect("a returned item has its query's key attributes");
            assert!(value.is_string());
            key.insert(attr.to_string(), value.clone());
        }
        let json = serde_json::to_vec(&key).expect("a map of strings serializes");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    /// The key attributes a cursor carries, checked against this query (a cursor of another
    /// query or a corrupt one is `Invalid`).
    pub fn decode_cursor(&self, cursor: &str) -> Result<Map<String, Value>, StoreError> {
        if cursor.len() > CURSOR_BYTES_MAX {
            return Err(invalid("cursor too long".into()));
        }
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .map_err(|_| invalid("cursor is not base64url".into()))?;
        let key: Map<String, Value> =
            serde_json::from_slice(&json).map_err(|_| invalid("cursor is not a key".into()))?;
        let attrs = self.cursor_attrs();
        if key.len() != attrs.len() || !attrs.iter().all(|a| key.get(*a).is_some_and(Value::is_string)) {
            return Err(invalid("cursor does not belong to this query".into()));
        }
        let (pk_attr, _) = self.key_attrs();
        if key[pk_attr].as_str() != Some(self.partition.as_str()) {
            return Err(invalid("cursor belongs to another partition".into()));
        }
        Ok(key)
    }
}

/// One page of query results.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    /// The items, in the query's order.
    pub items: Vec<Item>,
    /// Where to continue: None when the query has no more items; Some when it may have more
    /// (DynamoDB can return a full page and then an empty one).
    pub cursor: Option<String>,
}

/// One write of a transaction, with its own condition.
#[derive(Clone, Debug, PartialEq)]
pub enum TxWrite {
    /// Put (create or replace) an item.
    Put {
        /// The item.
        item: Item,
        /// Its precondition.
        condition: Condition,
    },
    /// Update an item (creating it if absent, unless the condition says otherwise).
    Update {
        /// The item's key.
        key: Key,
        /// The changes.
        update: Update,
        /// Its precondition.
        condition: Condition,
    },
    /// Delete an item.
    Delete {
        /// The item's key.
        key: Key,
        /// Its precondition.
        condition: Condition,
    },
    /// Check a condition on an item without writing it (the condition may not be `Always`).
    ConditionCheck {
        /// The item's key.
        key: Key,
        /// The condition.
        condition: Condition,
    },
}

impl TxWrite {
    /// The key of the item this write touches.
    pub fn key(&self) -> &Key {
        match self {
            TxWrite::Put { item, .. } => &item.key,
            TxWrite::Update { key, .. } | TxWrite::Delete { key, .. } | TxWrite::ConditionCheck { key, .. } => key,
        }
    }

    /// This write's condition.
    pub fn condition(&self) -> &Condition {
        match self {
            TxWrite::Put { condition, .. }
            | TxWrite::Update { condition, .. }
            | TxWrite::Delete { condition, .. }
            | TxWrite::ConditionCheck { condition, .. } => condition,
        }
    }
}

/// The one error type of the Store port.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A condition (or an add's floor) did not hold for this item; nothing was written.
    #[error("condition failed on item ({pk}, {sk})")]
    ConditionFailed {
        /// Partition key of the item whose condition failed.
        pk: String,
        /// Sort key of the item whose condition failed.
        sk: String,
    },
    /// A concurrent transaction touched the same items; nothing was written; retry.
    #[error("transaction conflict")]
    TransactionConflict,
    /// The table or index does not exist (not provisioned).
    #[error("not found: {0}")]
    NotFound(String),
    /// The backend throttled the request after the adapter's bounded retries; retry later.
    #[error("throttled")]
    Throttled,
    /// The arguments break a rule or a limit of the port.
    #[error("invalid: {0}")]
    Invalid(String),
    /// Any other backend failure.
    #[error("backend: {0}")]
    Backend(String),
}

impl StoreError {
    /// Whether retrying the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Throttled | StoreError::TransactionConflict)
    }

    /// `ConditionFailed` for a key.
    pub fn condition_failed(key: &Key) -> Self {
        StoreError::ConditionFailed { pk: key.pk.clone(), sk: key.sk.clone() }
    }
}

/// The Store port. Implementations: `SqliteStore` (feature `sqlite`) and `DynamoStore`
/// (feature `dynamodb`). Use it as `Arc<dyn Store>`.
#[async_trait]
pub trait Store: Send + Sync {
    /// The item at `key`, if it exists.
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError>;

    /// Creates or replaces an item if `condition` holds for the current one.
    async fn put(&self, item: Item, condition: Condition) -> Result<(), StoreError>;

    /// Applies `update` if `condition` holds (creating the item when absent, as DynamoDB's
    /// UpdateItem does: use `Condition::Present` to refuse that) and returns the new item.
    async fn update(&self, key: &Key, update: Update, condition: Condition) -> Result<Item, StoreError>;

    /// Deletes the item if `condition` holds (deleting a missing item with `Always` is no error).
    async fn delete(&self, key: &Key, condition: Condition) -> Result<(), StoreError>;

    /// One page of a query.
    async fn query(&self, query: Query) -> Result<Page, StoreError>;

    /// Runs 1..=TRANSACTION_WRITES_MAX writes on distinct items, all or nothing. A failed
    /// condition is `ConditionFailed` naming its item.
    async fn transact(&self, writes: Vec<TxWrite>) -> Result<(), StoreError>;
}

pub(crate) fn invalid(message: String) -> StoreError {
    StoreError::Invalid(message)
}

/// Whether the attribute is one of the index keys, which must be strings (the indexes declare
/// them as type S).
fn is_string_attr(name: &str) -> bool {
    INDEXES.iter().any(|i| i.pk_attr == name || i.sk_attr == name)
}

fn validate_attr_name(name: &str, writable: bool) -> Result<(), StoreError> {
    if name.is_empty() || name.len() > ATTR_NAME_BYTES_MAX {
        return Err(invalid(format!("attribute name must have 1..={ATTR_NAME_BYTES_MAX} bytes")));
    }
    if writable && (name == ATTR_PK || name == ATTR_SK) {
        return Err(invalid(format!("attribute {name} is part of the key")));
    }
    Ok(())
}

fn validate_attr_value(name: &str, value: &Value) -> Result<(), StoreError> {
    if is_string_attr(name) {
        match value {
            Value::String(s) if !s.is_empty() && s.len() <= SK_BYTES_MAX => {}
            _ => return Err(invalid(format!("index key {name} must be a string of 1..=1024 bytes"))),
        }
    }
    if name == crate::spec::ATTR_EXPIRES_AT && !value.is_i64() {
        return Err(invalid(format!("{name} must be an integer (unix seconds)")));
    }
    validate_value(name, value, 0)
}

/// Numbers must be i64 (no floats, no u64 above i64::MAX); nesting is bounded.
fn validate_value(name: &str, value: &Value, depth: usize) -> Result<(), StoreError> {
    if depth > VALUE_DEPTH_MAX {
        return Err(invalid(format!("attribute {name} nests deeper than {VALUE_DEPTH_MAX}")));
    }
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => Ok(()),
        Value::Number(n) if n.is_i64() => Ok(()),
        Value::Number(n) => Err(invalid(format!("attribute {name}: {n} is not an i64 integer"))),
        Value::Array(values) => values.iter().try_for_each(|v| validate_value(name, v, depth + 1)),
        Value::Object(map) => map.values().try_for_each(|v| validate_value(name, v, depth + 1)),
    }
}

pub(crate) fn validate_key(key: &Key) -> Result<(), StoreError> {
    if key.pk.is_empty() || key.pk.len() > PK_BYTES_MAX {
        return Err(invalid(format!("pk must have 1..={PK_BYTES_MAX} bytes")));
    }
    if key.sk.is_empty() || key.sk.len() > SK_BYTES_MAX {
        return Err(invalid(format!("sk must have 1..={SK_BYTES_MAX} bytes")));
    }
    Ok(())
}

/// Checks an item and returns its size in bytes (JSON encoding with its key).
pub(crate) fn validate_item(item: &Item) -> Result<usize, StoreError> {
    validate_key(&item.key)?;
    for (name, value) in &item.attrs {
        validate_attr_name(name, true)?;
        validate_attr_value(name, value)?;
    }
    let size = item_bytes(&item.key, &item.attrs);
    if size > ITEM_BYTES_MAX {
        return Err(invalid(format!("item is {size} bytes, above {ITEM_BYTES_MAX}")));
    }
    Ok(size)
}

/// The size of an item as this crate measures it: its JSON encoding, keys included.
pub(crate) fn item_bytes(key: &Key, attrs: &Map<String, Value>) -> usize {
    let attrs_bytes = serde_json::to_vec(attrs).map(|v| v.len()).unwrap_or(usize::MAX / 2);
    attrs_bytes + key.pk.len() + key.sk.len() + 16
}

pub(crate) fn validate_condition(condition: &Condition) -> Result<(), StoreError> {
    condition.validate()
}

pub(crate) fn validate_update(key: &Key, update: &Update, condition: &Condition) -> Result<(), StoreError> {
    validate_key(key)?;
    update.validate()?;
    condition.validate()
}

/// Checks a transaction: its size, distinct items (DynamoDB refuses two writes to one item),
/// each write, and the total bytes.
pub(crate) fn validate_transaction(writes: &[TxWrite]) -> Result<(), StoreError> {
    if writes.is_empty() || writes.len() > TRANSACTION_WRITES_MAX {
        return Err(invalid(format!(
            "a transaction holds 1..={TRANSACTION_WRITES_MAX} writes, not {}",
            writes.len()
        )));
    }
    let mut keys = HashSet::with_capacity(writes.len());
    let mut bytes_total = 0usize;
    for write in writes {
        if !keys.insert(write.key()) {
            return Err(invalid(format!("two writes to item ({}, {})", write.key().pk, write.key().sk)));
        }
        match write {
            TxWrite::Put { item, condition } => {
                bytes_total += validate_item(item)?;
                condition.validate()?;
            }
            TxWrite::Update { key, update, condition } => validate_update(key, update, condition)?,
            TxWrite::Delete { key, condition } => {
                validate_key(key)?;
                condition.validate()?;
            }
            TxWrite::ConditionCheck { key, condition } => {
                validate_key(key)?;
                condition.validate()?;
                if condition.is_always() {
                    return Err(invalid("a condition check needs a condition".into()));
                }
            }
        }
    }
    if bytes_total > TRANSACTION_BYTES_MAX {
        return Err(invalid(format!("transaction is {bytes_total} bytes, above {TRANSACTION_BYTES_MAX}")));
    }
    Ok(())
}

/// Checks a put.
pub(crate) fn validate_put(item: &Item, condition: &Condition) -> Result<(), StoreError> {
    validate_item(item)?;
    condition.validate()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn add_bounds_follow_floor_and_overflow() {
        let add = Add { attr: "b".into(), delta: -5, floor: Some(0) };
        assert_eq!(add.current_bounds(), Some((5, i128::from(i64::MAX) + 5)));
        assert!(!add.allows_missing());
        let add = Add { attr: "b".into(), delta: 5, floor: Some(0) };
        assert!(add.allows_missing());
        assert_eq!(Add { attr: "b".into(), delta: 0, floor: None }.current_bounds(), None);
    }

    #[test]
    fn apply_add_refuses_below_floor_and_overflow() {
        let current: Map<String, Value> = json!({"b": 7}).as_object().unwrap().clone();
        let update = Update::new().add("b", -7, Some(0));
        assert_eq!(update.apply(Some(&current)).unwrap().unwrap()["b"], json!(0));
        let update = Update::new().add("b", -8, Some(0));
        assert_eq!(update.apply(Some(&current)).unwrap(), None);
        let big: Map<String, Value> = json!({"b": i64::MAX}).as_object().unwrap().clone();
        assert_eq!(Update::new().add("b", 1, None).apply(Some(&big)).unwrap(), None);
    }

    #[test]
    fn floats_and_overlaps_are_invalid() {
        let key = Key::new("a", "b");
        let item = Item::new(key.clone()).with("price", json!(1.5));
        assert!(matches!(validate_put(&item, &Condition::Always), Err(StoreError::Invalid(_))));
        let update = Update::new().set("x", 1).remove("x");
        assert!(matches!(validate_update(&key, &update, &Condition::Always), Err(StoreError::Invalid(_))));
        let item = Item::new(key).with("gsi1pk", 5);
        assert!(matches!(validate_put(&item, &Condition::Always), Err(StoreError::Invalid(_))));
    }

    #[test]
    fn cursor_round_trips_and_is_bound_to_its_partition() {
        let query = Query::index(Index::Gsi1, "p");
        let last = json!({"pk": "a", "sk": "b", "gsi1pk": "p", "gsi1sk": "s", "other": 1});
        let cursor = query.encode_cursor(last.as_object().unwrap());
        let key = query.decode_cursor(&cursor).unwrap();
        assert_eq!(key.len(), 4);
        assert!(Query::index(Index::Gsi1, "q").decode_cursor(&cursor).is_err());
        assert!(Query::table("p").decode_cursor(&cursor).is_err());
        assert!(query.decode_cursor("!!").is_err());
    }

    #[test]
    fn conditions_on_missing_items() {
        assert!(Condition::not_equals("a", 1).holds(None));
        assert!(!Condition::equals("a", 1).holds(None));
        assert!(Condition::AttrAbsent("a".into()).holds(None));
        assert!(Condition::And(vec![]).holds(None));
    }
}
