//! Store and queue ports of aitbc, with their adapters.
//!
//! - [`Store`]: items addressed by partition key + sort key, conditional writes, atomic adds with
//!   a floor, queries on the table and three generic secondary indexes with opaque cursors, and
//!   all-or-nothing transactions of up to [`TRANSACTION_WRITES_MAX`] writes.
//! - [`Queue`]: named queues with batched sends, long-poll receives with a visibility timeout,
//!   visibility extension, deletes and dead-lettering.
//!
//! Adapters, by Cargo feature: `sqlite` (default: [`SqliteStore`], [`SqliteQueue`] on one file),
//! `dynamodb` ([`DynamoStore`]), `sqs` ([`SqsQueue`]); `aws-https` adds HTTPS for real AWS
//! endpoints. The table and queue definitions are data in [`spec`]; [`provision`] creates them.
//! [`keys`] holds the single-table key scheme. The `conformance` feature exposes the test suite
//! every adapter pair passes.

#![warn(missing_docs)]
// Without an adapter the shared validation helpers have no caller (the market crate builds so).
#![cfg_attr(not(any(feature = "sqlite", feature = "dynamodb", feature = "sqs")), allow(dead_code))]

pub mod keys;
pub mod provision;
pub mod queue;
pub mod spec;
pub mod store;

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "dynamodb")]
pub mod dynamodb;
#[cfg(feature = "sqlite")]
pub mod sqlite;
#[cfg(feature = "sqs")]
pub mod sqs;

pub use queue::{Message, Queue, QueueError, RECEIVE_MESSAGES_MAX, SEND_BATCH_MAX};
pub use spec::{queue_spec, table_spec, Index, IndexSpec, QueueSpec, TableSpec};
pub use store::{
    Add, Condition, Item, Key, Page, Query, SortCondition, Store, StoreError, TxWrite, Update, PAGE_ITEMS_MAX,
    TRANSACTION_WRITES_MAX,
};

#[cfg(feature = "aws")]
pub use aws::AwsConfig;
#[cfg(feature = "dynamodb")]
pub use dynamodb::DynamoStore;
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteDb, SqliteQueue, SqliteStore};
#[cfg(feature = "sqs")]
pub use sqs::SqsQueue;
