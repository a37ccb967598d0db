//! The table and queue definitions as data, in ONE place: the SQLite schema, DynamoDB
//! provisioning and SQS provisioning are built from these values, and the CloudFormation
//! template is compared against them by a test.

/// The partition key attribute of the table.
pub const ATTR_PK: &str = "pk";
/// The sort key attribute of the table.
pub const ATTR_SK: &str = "sk";
/// The time-to-live attribute: unix seconds after which the record may be deleted. DynamoDB TTL
/// deletes lazily (up to days late) and the SQLite adapter only through `sweep_expired`, so
/// readers must treat an item whose `expires_at` has passed as absent.
pub const ATTR_EXPIRES_AT: &str = "expires_at";

/// A global secondary index: overloaded and generic (each entity decides what its `gsiNpk` and
/// `gsiNsk` hold), projection ALL, sparse (an item without both attributes is not in it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexSpec {
    /// The index name (DynamoDB IndexName).
    pub name: &'static str,
    /// Its partition key attribute (type string).
    pub pk_attr: &'static str,
    /// Its sort key attribute (type string).
    pub sk_attr: &'static str,
}

/// The secondary indexes, the single table both backends provision from.
pub const INDEXES: [IndexSpec; 3] = [
    IndexSpec { name: "gsi1", pk_attr: "gsi1pk", sk_attr: "gsi1sk" },
    IndexSpec { name: "gsi2", pk_attr: "gsi2pk", sk_attr: "gsi2sk" },
    IndexSpec { name: "gsi3", pk_attr: "gsi3pk", sk_attr: "gsi3sk" },
];

/// Names one secondary index of `INDEXES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Index {
    /// `gsi1`.
    Gsi1,
    /// `gsi2`.
    Gsi2,
    /// `gsi3`.
    Gsi3,
}

impl Index {
    /// Every index, in `INDEXES` order.
    pub const ALL: [Index; 3] = [Index::Gsi1, Index::Gsi2, Index::Gsi3];

    /// The index's definition.
    pub fn spec(self) -> &'static IndexSpec {
        match self {
            Index::Gsi1 => &INDEXES[0],
            Index::Gsi2 => &INDEXES[1],
            Index::Gsi3 => &INDEXES[2],
        }
    }
}

/// The one table of the single-table design.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSpec {
    /// Suffix of the table name: the table is `<prefix>-<name_suffix>`.
    pub name_suffix: &'static str,
    /// Partition key attribute (type string).
    pub pk_attr: &'static str,
    /// Sort key attribute (type string).
    pub sk_attr: &'static str,
    /// Every attribute used in a key schema: all of type string (DynamoDB "S").
    pub attribute_definitions: Vec<&'static str>,
    /// The global secondary indexes (projection ALL).
    pub indexes: &'static [IndexSpec],
    /// The TTL attribute (unix seconds).
    pub ttl_attr: &'static str,
    /// DynamoDB billing mode: on demand, so no capacity to provision or tune.
    pub billing_mode: &'static str,
}

/// The table definition.
pub fn table_spec() -> TableSpec {
    let mut attribute_definitions = vec![ATTR_PK, ATTR_SK];
    for index in &INDEXES {
        attribute_definitions.push(index.pk_attr);
        attribute_definitions.push(index.sk_attr);
    }
    TableSpec {
        name_suffix: "main",
        pk_attr: ATTR_PK,
        sk_attr: ATTR_SK,
        attribute_definitions,
        indexes: &INDEXES,
        ttl_attr: ATTR_EXPIRES_AT,
        billing_mode: "PAY_PER_REQUEST",
    }
}

/// Settings every queue is created with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueSpec {
    /// A message received more than this many times goes to the queue's dead-letter queue (on
    /// the receive after the last allowed one, as SQS does).
    pub max_receive_count: u32,
    /// Visibility timeout of the queue, used by SQS when a receive names none (ours always do).
    pub visibility_default_s: u32,
    /// How long an unreceived message is kept (SQS MessageRetentionPeriod).
    pub retention_s: u32,
    /// How long a dead-lettered message is kept: the longest SQS allows, for inspection.
    pub dlq_retention_s: u32,
    /// Suffix of each queue's dead-letter queue: `<name><dlq_suffix>`.
    pub dlq_suffix: &'static str,
}

/// Most receives of one message before it is dead-lettered.
pub const QUEUE_RECEIVES_MAX: u32 = 5;

/// The queue definition.
pub fn queue_spec() -> QueueSpec {
    QueueSpec {
        max_receive_count: QUEUE_RECEIVES_MAX,
        visibility_default_s: 30,
        retention_s: 4 * 24 * 3600,
        dlq_retention_s: 14 * 24 * 3600,
        dlq_suffix: "-dlq",
    }
}

impl QueueSpec {
    /// The name of a queue's dead-letter queue.
    pub fn dlq_name(&self, queue: &str) -> String {
        format!("{queue}{}", self.dlq_suffix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_is_consistent() {
        let spec = table_spec();
        assert_eq!(spec.attribute_definitions.len(), 2 + 2 * INDEXES.len());
        for (i, index) in Index::ALL.iter().enumerate() {
            assert_eq!(index.spec(), &INDEXES[i]);
        }
        assert!(queue_spec().max_receive_count >= 1);
    }
}
