//! The Store port on DynamoDB (single table, three generic GSIs, TTL). Every condition and
//! update maps to a native expression with the same meaning as the port's reference semantics
//! (`Condition::holds`, `Update::apply`); transactions map to TransactWriteItems, and a cancelled
//! transaction's CancellationReasons name the item whose condition failed.
//!
//! Retries: the SDK retries throttling and transient errors with exponential backoff bounded by
//! `aws::RETRY_ATTEMPTS_MAX` and `aws::RETRY_BACKOFF_MAX_MS`; what is still throttled after them
//! is `StoreError::Throttled`.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, Delete, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, Projection, ProjectionType, Put, ReturnValue, ScalarAttributeType, TableStatus,
    TimeToLiveSpecification, TimeToLiveStatus, TransactWriteItem, Update as DynamoUpdate,
};
use aws_sdk_dynamodb::Client;
use serde_json::{Map, Value};

use crate::aws::AwsConfig;
use crate::spec::{table_spec, ATTR_PK, ATTR_SK};
use crate::store::{
    validate_condition, validate_key, validate_put, validate_transaction, validate_update, Condition, Item, Key,
    Page, Query, SortCondition, Store, StoreError, TxWrite, Update,
};

/// Most checks of a new table's status while waiting for it to become ACTIVE.
pub const TABLE_ACTIVE_POLLS_MAX: u32 = 600;
/// Pause between two such checks (so at most 60 s in all).
pub const TABLE_ACTIVE_POLL_MS: u64 = 100;

/// The Store port on one DynamoDB table.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

/// Builds the expression attribute names and values of one request; placeholders are
/// numbered, and a name used twice gets one placeholder.
#[derive(Default)]
struct Expr {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Expr {
    fn name(&mut self, attr: &str) -> String {
        if let Some((placeholder, _)) = self.names.iter().find(|(_, a)| a.as_str() == attr) {
            return placeholder.clone();
        }
        let placeholder = format!("#n{}", self.names.len());
        self.names.insert(placeholder.clone(), attr.to_string());
        placeholder
    }

    fn value(&mut self, value: AttributeValue) -> String {
        let placeholder = format!(":v{}", self.values.len());
        self.values.insert(placeholder.clone(), value);
        placeholder
    }

    fn json(&mut self, value: &Value) -> Result<String, StoreError> {
        Ok(self.value(to_attribute(value)?))
    }

    /// The condition as a ConditionExpression, None for one that always holds.
    fn condition(&mut self, condition: &Condition) -> Result<Option<String>, StoreError> {
        Ok(match condition {
            Condition::Always => None,
            Condition::Absent => Some(format!("attribute_not_exists({})", self.name(ATTR_PK))),
            Condition::Present => Some(format!("attribute_exists({})", self.name(ATTR_PK))),
            Condition::Equals(attr, value) => Some(format!("{} = {}", self.name(attr), self.json(value)?)),
            // DynamoDB's `<>` on a missing attribute is not obviously true; say it explicitly.
            Condition::NotEquals(attr, value) => {
                let name = self.name(attr);
                Some(format!("(attribute_not_exists({name}) OR {name} <> {})", self.json(value)?))
            }
            Condition::AttrAbsent(attr) => Some(format!("attribute_not_exists({})", self.name(attr))),
            Condition::And(all) => {
                let mut parts = Vec::with_capacity(all.len());
                for c in all {
                    if let Some(part) = self.condition(c)? {
                        parts.push(format!("({part})"));
                    }
                }
                if parts.is_empty() {
                    None
                } else {
                    Some(parts.join(" AND "))
                }
            }
        })
    }

    /// The UpdateExpression, and the condition that keeps each add within its bounds (the
    /// floor, and i64's range so that a result always reads back as an i64).
    fn update(&mut self, update: &Update) -> Result<(String, Option<String>), StoreError> {
        let mut clauses = Vec::with_capacity(3);
        let mut bounds = Vec::new();
        if !update.set.is_empty() {
            let mut sets = Vec::with_capacity(update.set.len());
            for (attr, value) in &update.set {
                sets.push(format!("{} = {}", self.name(attr), self.json(value)?));
            }
            clauses.push(format!("SET {}", sets.join(", ")));
        }
        if !update.remove.is_empty() {
            let removes: Vec<String> = update.remove.iter().map(|a| self.name(a)).collect();
            clauses.push(format!("REMOVE {}", removes.join(", ")));
        }
        if !update.add.is_empty() {
            let mut adds = Vec::with_capacity(update.add.len());
            for add in &update.add {
                let name = self.name(&add.attr);
                adds.push(format!("{name} {}", self.value(AttributeValue::N(add.delta.to_string()))));
                if let Some((low, high)) = add.current_bounds() {
                    let mut range = Vec::with_capacity(2);
                    if low > i128::from(i64::MIN) {
                        range.push(format!("{name} >= {}", self.value(AttributeValue::N(low.to_string()))));
                    }
                    if high < i128::from(i64::MAX) {
                        range.push(format!("{name} <= {}", self.value(AttributeValue::N(high.to_string()))));
                    }
                    let range = range.join(" AND ");
                    bounds.push(if add.allows_missing() {
                        format!("(attribute_not_exists({name}) OR ({range}))")
                    } else {
                        format!("({range})")
                    });
                }
            }
            clauses.push(format!("ADD {}", adds.join(", ")));
        }
        assert!(!clauses.is_empty(), "validated updates change something");
        let bounds = if bounds.is_empty() { None } else { Some(bounds.join(" AND ")) };
        Ok((clauses.join(" "), bounds))
    }

    /// The user's condition and the update's bounds, both required.
    fn update_condition(&mut self, update: &Update, condition: &Condition) -> Result<(String, Option<String>), StoreError> {
        let user = self.condition(condition)?;
        let (expression, bounds) = self.update(update)?;
        let condition = match (user, bounds) {
            (None, None) => None,
            (Some(c), None) | (None, Some(c)) => Some(c),
            (Some(user), Some(bounds)) => Some(format!("({user}) AND {bounds}")),
        };
        Ok((expression, condition))
    }

    fn names(&self) -> Option<HashMap<String, String>> {
        // DynamoDB refuses empty maps here: send none instead.
        (!self.names.is_empty()).then(|| self.names.clone())
    }

    fn values(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }
}

fn to_attribute(value: &Value) -> Result<AttributeValue, StoreError> {
    serde_dynamo::aws_sdk_dynamodb_1::to_attribute_value(value)
        .map_err(|e| StoreError::Invalid(format!("value not storable in DynamoDB: {e}")))
}

fn key_map(key: &Key) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (ATTR_PK.to_string(), AttributeValue::S(key.pk.clone())),
        (ATTR_SK.to_string(), AttributeValue::S(key.sk.clone())),
    ])
}

fn item_map(item: &Item) -> Result<HashMap<String, AttributeValue>, StoreError> {
    let mut map: HashMap<String, AttributeValue> = serde_dynamo::aws_sdk_dynamodb_1::to_item(&item.attrs)
        .map_err(|e| StoreError::Invalid(format!("item not storable in DynamoDB: {e}")))?;
    map.extend(key_map(&item.key));
    Ok(map)
}

fn from_map(mut map: HashMap<String, AttributeValue>) -> Result<Item, StoreError> {
    let mut text = |name: &str| match map.remove(name) {
        Some(AttributeValue::S(s)) => Ok(s),
        _ => Err(StoreError::Backend(format!("dynamodb: item without string {name}"))),
    };
    let key = Key { pk: text(ATTR_PK)?, sk: text(ATTR_SK)? };
    let attrs: Map<String, Value> = serde_dynamo::aws_sdk_dynamodb_1::from_item(map)
        .map_err(|e| StoreError::Backend(format!("dynamodb: unreadable item: {e}")))?;
    Ok(Item { key, attrs })
}

fn build_error(error: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Backend(format!("dynamodb request: {error}"))
}

/// Maps an SDK error by its error code (the same codes for every operation). `key` names the
/// item for a failed condition.
fn map_error<E, R>(error: SdkError<E, R>, key: Option<&Key>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let message = error.message().unwrap_or_default().to_string();
    match error.code() {
        Some("ConditionalCheckFailedException") => match key {
            Some(key) => StoreError::condition_failed(key),
            None => StoreError::Backend(format!("condition failed: {message}")),
        },
        Some("ProvisionedThroughputExceededException" | "ThrottlingException" | "RequestLimitExceeded") => {
            StoreError::Throttled
        }
        Some("TransactionConflictException" | "TransactionInProgressException") => StoreError::TransactionConflict,
        Some("ResourceNotFoundException") => StoreError::NotFound(message),
        Some("ValidationException") => StoreError::Invalid(message),
        _ => StoreError::Backend(format!("dynamodb: {}", DisplayErrorContext(&error))),
    }
}

/// Maps a cancelled transaction to the error of the first write that caused it.
fn map_transaction_error<R: std::fmt::Debug>(
    error: SdkError<TransactWriteItemsError, R>,
    writes: &[TxWrite],
) -> StoreError {
    let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) = error.as_service_error() else {
        return map_error(error, None);
    };
    let reasons = cancelled.cancellation_reasons();
    // Reasons come one per write, in order, "None" for writes that were fine.
    for (index, reason) in reasons.iter().enumerate() {
        let mapped = match reason.code() {
            None | Some("None") => continue,
            Some("ConditionalCheckFailed") => match writes.get(index) {
                Some(write) => StoreError::condition_failed(write.key()),
                None => StoreError::Backend("cancellation reason for a write that was not sent".into()),
            },
            Some("TransactionConflict") => StoreError::TransactionConflict,
            Some("ThrottlingError" | "ProvisionedThroughputExceeded" | "RequestLimitExceeded") => StoreError::Throttled,
            Some("ValidationError" | "ItemCollectionSizeLimitExceeded") => {
                StoreError::Invalid(reason.message().unwrap_or("validation error").to_string())
            }
            Some(other) => StoreError::Backend(format!("transaction cancelled: {other}")),
        };
        return mapped;
    }
    StoreError::Backend(format!("transaction cancelled without a reason: {}", DisplayErrorContext(&error)))
}

impl DynamoStore {
    /// A store on an SDK client and a table name.
    pub fn from_client(client: Client, table: impl Into<String>) -> Self {
        DynamoStore { client, table: table.into() }
    }

    /// A store on the table `config.table_name()` (which must exist: see `provision`).
    pub async fn connect(config: &AwsConfig) -> Result<Self, StoreError> {
        let sdk = config.sdk_config().await.map_err(StoreError::Invalid)?;
        Ok(DynamoStore::from_client(Client::new(&sdk), config.table_name()))
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The SDK client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Creates the table from `table_spec()` (key schema, GSIs, on-demand billing) unless it
    /// exists, waits until it is ACTIVE, and enables TTL on its TTL attribute. Idempotent.
    pub async fn provision(&self) -> Result<(), StoreError> {
        let spec = table_spec();
        let exists = match self.client.describe_table().table_name(&self.table).send().await {
            Ok(_) => true,
            Err(error) => match map_error(error, None) {
                StoreError::NotFound(_) => false,
                other => return Err(other),
            },
        };
        if !exists {
            let key = |attr: &str, kind: KeyType| {
                KeySchemaElement::builder().attribute_name(attr).key_type(kind).build().map_err(build_error)
            };
            let mut create = self
                .client
                .create_table()
                .table_name(&self.table)
                .billing_mode(BillingMode::from(spec.billing_mode))
                .key_schema(key(spec.pk_attr, KeyType::Hash)?)
                .key_schema(key(spec.sk_attr, KeyType::Range)?);
            for attr in &spec.attribute_definitions {
                create = create.attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(*attr)
                        .attribute_type(ScalarAttributeType::S)
                        .build()
                        .map_err(build_error)?,
                );
            }
            for index in spec.indexes {
                create = create.global_secondary_indexes(
                    GlobalSecondaryIndex::builder()
                        .index_name(index.name)
                        .key_schema(key(index.pk_attr, KeyType::Hash)?)
                        .key_schema(key(index.sk_attr, KeyType::Range)?)
                        .projection(Projection::builder().projection_type(ProjectionType::All).build())
                        .build()
                        .map_err(build_error)?,
                );
            }
            if let Err(error) = create.send().await {
                // Another provisioner created it meanwhile: that is the outcome we want.
                if error.code() != Some("ResourceInUseException") {
                    return Err(map_error(error, None));
                }
            }
        }
        self.wait_active().await?;
        let ttl = self
            .client
            .describe_time_to_live()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| map_error(e, None))?;
        let enabled = ttl.time_to_live_description().is_some_and(|d| {
            matches!(d.time_to_live_status(), Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling))
                && d.attribute_name() == Some(spec.ttl_attr)
        });
        if !enabled {
            let specification = TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(spec.ttl_attr)
                .build()
                .map_err(build_error)?;
            self.client
                .update_time_to_live()
                .table_name(&self.table)
                .time_to_live_specification(specification)
                .send()
                .await
                .map_err(|e| map_error(e, None))?;
        }
        Ok(())
    }

    async fn wait_active(&self) -> Result<(), StoreError> {
        for _ in 0..TABLE_ACTIVE_POLLS_MAX {
            let described = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|e| map_error(e, None))?;
            if described.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(TABLE_ACTIVE_POLL_MS)).await;
        }
        Err(StoreError::Backend(format!("table {} did not become ACTIVE", self.table)))
    }

    /// Deletes the table (tests clean up with it).
    pub async fn delete_table(&self) -> Result<(), StoreError> {
        self.client.delete_table().table_name(&self.table).send().await.map_err(|e| map_error(e, None))?;
        Ok(())
    }

    fn transact_item(&self, write: &TxWrite) -> Result<TransactWriteItem, StoreError> {
        let mut expr = Expr::default();
        Ok(match write {
            TxWrite::Put { item, condition } => {
                let condition = expr.condition(condition)?;
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item_map(item)?))
                    .set_condition_expression(condition)
                    .set_expression_attribute_names(expr.names())
                    .set_expression_attribute_values(expr.values())
                    .build()
                    .map_err(build_error)?;
                TransactWriteItem::builder().put(put).build()
            }
            TxWrite::Update { key, update, condition } => {
                let (expression, condition) = expr.update_condition(update, condition)?;
                let update = DynamoUpdate::builder()
                    .table_name(&self.table)
                    .set_key(Some(key_map(key)))
                    .update_expression(expression)
                    .set_condition_expression(condition)
                    .set_expression_attribute_names(expr.names())
                    .set_expression_attribute_values(expr.values())
                    .build()
                    .map_err(build_error)?;
                TransactWriteItem::builder().update(update).build()
            }
            TxWrite::Delete { key, condition } => {
                let condition = expr.condition(condition)?;
                let delete = Delete::builder()
                    .table_name(&self.table)
                    .set_key(Some(key_map(key)))
                    .set_condition_expression(condition)
                    .set_expression_attribute_names(expr.names())
                    .set_expression_attribute_values(expr.values())
                    .build()
                    .map_err(build_error)?;
                TransactWriteItem::builder().delete(delete).build()
            }
            TxWrite::ConditionCheck { key, condition } => {
                let condition = expr.condition(condition)?.expect("validated: a check has a condition");
                let check = ConditionCheck::builder()
                    .table_name(&self.table)
                    .set_key(Some(key_map(key)))
                    .condition_expression(condition)
                    .set_expression_attribute_names(expr.names())
                    .set_expression_attribute_values(expr.values())
                    .build()
                    .map_err(build_error)?;
                TransactWriteItem::builder().condition_check(check).build()
            }
        })
    }
}

#[async_trait]
impl Store for DynamoStore {
    async fn get(&self, key: &Key) -> Result<Option<Item>, StoreError> {
        validate_key(key)?;
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_map(key)))
            // Strongly consistent: a read right after a conditional write sees it.
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| map_error(e, None))?;
        output.item.map(from_map).transpose()
    }

    async fn put(&self, item: Item, condition: Condition) -> Result<(), StoreError> {
        validate_put(&item, &condition)?;
        let mut expr = Expr::default();
        let expression = expr.condition(&condition)?;
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item_map(&item)?))
            .set_condition_expression(expression)
            .set_expression_attribute_names(expr.names())
            .set_expression_attribute_values(expr.values())
            .send()
            .await
            .map_err(|e| map_error(e, Some(&item.key)))?;
        Ok(())
    }

    async fn update(&self, key: &Key, update: Update, condition: Condition) -> Result<Item, StoreError> {
        validate_update(key, &update, &condition)?;
        let mut expr = Expr::default();
        let (expression, condition) = expr.update_condition(&update, &condition)?;
        let output = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key_map(key)))
            .update_expression(expression)
            .set_condition_expression(condition)
            .set_expression_attribute_names(expr.names())
            .set_expression_attribute_values(expr.values())
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(|e| map_error(e, Some(key)))?;
        let attributes = output.attributes.unwrap_or_default();
        if attributes.is_empty() {
            return Err(StoreError::Backend("dynamodb: update returned no item".into()));
        }
        from_map(attributes)
    }

    async fn delete(&self, key: &Key, condition: Condition) -> Result<(), StoreError> {
        validate_key(key)?;
        validate_condition(&condition)?;
        let mut expr = Expr::default();
        let expression = expr.condition(&condition)?;
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key_map(key)))
            .set_condition_expression(expression)
            .set_expression_attribute_names(expr.names())
            .set_expression_attribute_values(expr.values())
            .send()
            .await
            .map_err(|e| map_error(e, Some(key)))?;
        Ok(())
    }

    async fn query(&self, query: Query) -> Result<Page, StoreError> {
        query.validate()?;
        let (pk_attr, sk_attr) = query.key_attrs();
        let mut expr = Expr::default();
        let partition = format!("{} = {}", expr.name(pk_attr), expr.value(AttributeValue::S(query.partition.clone())));
        let text = |s: &String| AttributeValue::S(s.clone());
        let sort = match &query.sort {
            SortCondition::All => None,
            SortCondition::Prefix(p) => Some(format!("begins_with({}, {})", expr.name(sk_attr), expr.value(text(p)))),
            SortCondition::Between(low, high) => {
                let name = expr.name(sk_attr);
                Some(format!("{name} BETWEEN {} AND {}", expr.value(text(low)), expr.value(text(high))))
            }
            SortCondition::AtLeast(low) => Some(format!("{} >= {}", expr.name(sk_attr), expr.value(text(low)))),
            SortCondition::AtMost(high) => Some(format!("{} <= {}", expr.name(sk_attr), expr.value(text(high)))),
        };
        let key_condition = match sort {
            None => partition,
            Some(sort) => format!("{partition} AND {sort}"),
        };
        let start = match &query.cursor {
            None => None,
            Some(cursor) => Some(
                query
                    .decode_cursor(cursor)?
                    .into_iter()
                    .map(|(k, v)| (k, AttributeValue::S(v.as_str().expect("checked").to_string())))
                    .collect(),
            ),
        };
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .set_index_name(query.index.map(|i| i.spec().name.to_string()))
            .key_condition_expression(key_condition)
            .set_expression_attribute_names(expr.names())
            .set_expression_attribute_values(expr.values())
            .scan_index_forward(!query.descending)
            .limit(i32::try_from(query.limit).expect("limit <= PAGE_ITEMS_MAX"))
            // GSIs are eventually consistent only; the table can be read consistently.
            .set_consistent_read(query.index.is_none().then_some(true))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| map_error(e, None))?;
        let items = output.items.unwrap_or_default().into_iter().map(from_map).collect::<Result<Vec<_>, _>>()?;
        assert!(items.len() <= query.limit);
        let cursor = match output.last_evaluated_key {
            None => None,
            Some(last) => {
                let mut position = Map::new();
                for (name, value) in last {
                    match value {
                        AttributeValue::S(s) => position.insert(name, Value::from(s)),
                        _ => return Err(StoreError::Backend("dynamodb: non-string key attribute".into())),
                    };
                }
                Some(query.encode_cursor(&position))
            }
        };
        Ok(Page { items, cursor })
    }

    async fn transact(&self, writes: Vec<TxWrite>) -> Result<(), StoreError> {
        validate_transaction(&writes)?;
        let items = writes.iter().map(|w| self.transact_item(w)).collect::<Result<Vec<_>, _>>()?;
        self.client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map_err(|e| map_transaction_error(e, &writes))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_name_each_attribute_once() {
        let mut expr = Expr::default();
        let update = Update::new().set("state", "done").add("balance", -5, Some(0));
        let condition = Condition::And(vec![Condition::Present, Condition::equals("state", "running")]);
        let (expression, condition) = expr.update_condition(&update, &condition).unwrap();
        assert_eq!(expression, "SET #n1 = :v1 ADD #n2 :v2");
        assert_eq!(condition.as_deref(), Some("((attribute_exists(#n0)) AND (#n1 = :v0)) AND (#n2 >= :v3)"));
        assert_eq!(expr.names["#n1"], "state");
        assert_eq!(expr.values[":v3"], AttributeValue::N("5".into()));
    }

    #[test]
    fn always_has_no_expression() {
        let mut expr = Expr::default();
        assert_eq!(expr.condition(&Condition::And(vec![Condition::Always])).unwrap(), None);
        assert!(expr.names().is_none() && expr.values().is_none());
    }
}
