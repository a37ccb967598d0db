//! Provisioning: one function per backend pair that creates the table (with its indexes and
//! TTL) and the named queues (each with its dead-letter queue) from the definitions in `spec`,
//! and returns the opened adapters. Idempotent: running it on provisioned resources changes
//! nothing. Used by the tests and by the local run; queues that appear at run time (one per GPU
//! listing) are created later with `Queue::create_queue`.

use crate::queue::QueueError;
use crate::store::StoreError;

/// What went wrong while provisioning.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProvisionError {
    /// Creating or opening the table failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Creating a queue failed.
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
}

/// Opens (creating) the SQLite file at `path` with its schema and creates `queues` in it.
#[cfg(feature = "sqlite")]
pub async fn sqlite(
    path: impl AsRef<std::path::Path>,
    queues: &[&str],
    spec: crate::spec::QueueSpec,
) -> Result<(crate::sqlite::SqliteStore, crate::sqlite::SqliteQueue), ProvisionError> {
    use crate::queue::Queue as _;
    // Opening is blocking file work (schema creation): keep it off the async worker threads.
    let path = path.as_ref().to_path_buf();
    let db = tokio::task::spawn_blocking(move || crate::sqlite::SqliteDb::open(path))
        .await
        .map_err(|e| StoreError::Backend(format!("sqlite open task: {e}")))?
        .map_err(|e| StoreError::Backend(format!("sqlite: {e}")))?;
    let queue = db.queue_with_spec(spec);
    for name in queues {
        queue.create_queue(name).await?;
    }
    Ok((db.store(), queue))
}

/// Creates the DynamoDB table (indexes, TTL) named by `config` and returns its store.
#[cfg(feature = "dynamodb")]
pub async fn dynamodb(config: &crate::aws::AwsConfig) -> Result<crate::dynamodb::DynamoStore, ProvisionError> {
    let store = crate::dynamodb::DynamoStore::connect(config).await?;
    store.provision().await?;
    Ok(store)
}

/// Creates `queues` (each with its dead-letter queue) in SQS and returns the queue adapter.
#[cfg(feature = "sqs")]
pub async fn sqs(
    config: &crate::aws::AwsConfig,
    queues: &[&str],
    spec: crate::spec::QueueSpec,
) -> Result<crate::sqs::SqsQueue, ProvisionError> {
    use crate::queue::Queue as _;
    let queue = crate::sqs::SqsQueue::connect_with_spec(config, spec).await?;
    for name in queues {
        queue.create_queue(name).await?;
    }
    Ok(queue)
}

/// The AWS pair: the DynamoDB table and the SQS queues.
#[cfg(all(feature = "dynamodb", feature = "sqs"))]
pub async fn aws(
    config: &crate::aws::AwsConfig,
    queues: &[&str],
    spec: crate::spec::QueueSpec,
) -> Result<(crate::dynamodb::DynamoStore, crate::sqs::SqsQueue), ProvisionError> {
    Ok((dynamodb(config).await?, sqs(config, queues, spec).await?))
}
