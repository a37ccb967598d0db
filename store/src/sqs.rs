//! The Queue port on SQS (standard queues). Each queue `<prefix>-<name>` gets a dead-letter
//! queue `<prefix>-<name>-dlq` and a RedrivePolicy with the spec's maximum receive count.
//!
//! SQS counts wait and visibility in whole seconds: this adapter rounds both up to the next
//! second (a 1.5 s visibility hides the message for 2 s), so a holder never loses a message
//! earlier than it asked. Queue URLs are looked up once per name and cached.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry};
use aws_sdk_sqs::Client;

use crate::aws::AwsConfig;
use crate::queue::{
    validate_queue_name, validate_receive, validate_send, validate_visibility, whole_seconds_up, Message, Queue,
    QueueError,
};
use crate::spec::{queue_spec, QueueSpec};

/// The Queue port on SQS.
#[derive(Debug)]
pub struct SqsQueue {
    client: Client,
    config: AwsConfig,
    spec: QueueSpec,
    /// Queue URL by logical name; bounded by the number of queues this process uses.
    urls: Mutex<HashMap<String, String>>,
}

/// Maps an SDK error by its code. SQS answers both its JSON protocol's short codes and the
/// query protocol's `AWS.SimpleQueueService.*` codes, so match on the end of the code.
fn map_error<E, R>(error: SdkError<E, R>, queue: &str) -> QueueError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let code = error.code().unwrap_or_default().to_string();
    let message = error.message().unwrap_or_default().to_string();
    let is = |suffix: &str| code.ends_with(suffix);
    if is("QueueDoesNotExist") || is("NonExistentQueue") {
        QueueError::NotFound(queue.to_string())
    } else if is("MessageNotInflight") {
        QueueError::NotInFlight
    } else if is("RequestThrottled") || is("ThrottlingException") || is("OverLimit") {
        QueueError::Throttled
    } else if is("InvalidParameterValue")
        || is("ReceiptHandleIsInvalid")
        || is("InvalidAttributeValue")
        || is("BatchRequestTooLong")
        || is("TooManyEntriesInBatchRequest")
        || is("InvalidMessageContents")
    {
        QueueError::Invalid(format!("{code}: {message}"))
    } else {
        QueueError::Backend(format!("sqs: {}", DisplayErrorContext(&error)))
    }
}

impl SqsQueue {
    /// The queue adapter with `queue_spec()`.
    pub async fn connect(config: &AwsConfig) -> Result<Self, QueueError> {
        SqsQueue::connect_with_spec(config, queue_spec()).await
    }

    /// The queue adapter creating queues with `spec` (tests use a small maximum receive count).
    pub async fn connect_with_spec(config: &AwsConfig, spec: QueueSpec) -> Result<Self, QueueError> {
        assert!(spec.max_receive_count >= 1);
        let sdk = config.sdk_config().await.map_err(QueueError::Invalid)?;
        Ok(SqsQueue { client: Client::new(&sdk), config: config.clone(), spec, urls: Mutex::new(HashMap::new()) })
    }

    /// The SDK client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The URL of a queue, from the cache or SQS.
    async fn url(&self, name: &str) -> Result<String, QueueError> {
        if let Some(url) = self.urls.lock().expect("url cache lock").get(name) {
            return Ok(url.clone());
        }
        let output = self
            .client
            .get_queue_url()
            .queue_name(self.config.queue_name(name))
            .send()
            .await
            .map_err(|e| map_error(e, name))?;
        let url = output.queue_url.ok_or_else(|| QueueError::Backend("sqs: no queue url".into()))?;
        self.urls.lock().expect("url cache lock").insert(name.to_string(), url.clone());
        Ok(url)
    }

    /// Creates one physical queue with attributes and returns its URL.
    async fn create(&self, name: &str, attributes: HashMap<QueueAttributeName, String>) -> Result<String, QueueError> {
        let output = self
            .client
            .create_queue()
            .queue_name(self.config.queue_name(name))
            .set_attributes(Some(attributes))
            .send()
            .await
            .map_err(|e| map_error(e, name))?;
        let url = output.queue_url.ok_or_else(|| QueueError::Backend("sqs: no queue url".into()))?;
        self.urls.lock().expect("url cache lock").insert(name.to_string(), url.clone());
        Ok(url)
    }

    /// Deletes a queue and its dead-letter queue (tests clean up with it).
    pub async fn delete_queue(&self, name: &str) -> Result<(), QueueError> {
        for queue in [name.to_string(), self.spec.dlq_name(name)] {
            let url = self.url(&queue).await?;
            self.client.delete_queue().queue_url(url).send().await.map_err(|e| map_error(e, &queue))?;
            self.urls.lock().expect("url cache lock").remove(&queue);
        }
        Ok(())
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn create_queue(&self, name: &str) -> Result<(), QueueError> {
        validate_queue_name(name)?;
        let dlq = self.spec.dlq_name(name);
        validate_queue_name(&dlq)?;
        let dlq_url = self
            .create(&dlq, HashMap::from([(QueueAttributeName::MessageRetentionPeriod, self.spec.dlq_retention_s.to_string())]))
            .await?;
        let attributes = self
            .client
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| map_error(e, &dlq))?;
        let dlq_arn = attributes
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .ok_or_else(|| QueueError::Backend("sqs: dead-letter queue without an ARN".into()))?
            .clone();
        // The same attributes every time, so that creating an existing queue again succeeds
        // (SQS refuses a re-create with different attributes).
        let redrive = serde_json::json!({
            "deadLetterTargetArn": dlq_arn,
            "maxReceiveCount": self.spec.max_receive_count.to_string(),
        });
        self.create(
            name,
            HashMap::from([
                (QueueAttributeName::VisibilityTimeout, self.spec.visibility_default_s.to_string()),
                (QueueAttributeName::MessageRetentionPeriod, self.spec.retention_s.to_string()),
                (QueueAttributeName::RedrivePolicy, redrive.to_string()),
            ]),
        )
        .await?;
        Ok(())
    }

    async fn send_batch(&self, queue: &str, bodies: Vec<String>) -> Result<Vec<String>, QueueError> {
        validate_send(queue, &bodies)?;
        let url = self.url(queue).await?;
        let mut request = self.client.send_message_batch().queue_url(url);
        for (index, body) in bodies.iter().enumerate() {
            let entry = SendMessageBatchRequestEntry::builder()
                .id(index.to_string())
                .message_body(body)
                .build()
                .map_err(|e| QueueError::Backend(format!("sqs request: {e}")))?;
            request = request.entries(entry);
        }
        let output = request.send().await.map_err(|e| map_error(e, queue))?;
        if let Some(failed) = output.failed().first() {
            // Some entries may have been sent: at-least-once delivery makes a resend safe.
            return Err(QueueError::Backend(format!(
                "sqs: {} of {} messages not sent, first: {} {}",
                output.failed().len(),
                bodies.len(),
                failed.code(),
                failed.message().unwrap_or_default()
            )));
        }
        let mut ids = vec![String::new(); bodies.len()];
        for entry in output.successful() {
            let index: usize = entry.id().parse().map_err(|_| QueueError::Backend("sqs: unknown entry id".into()))?;
            let slot = ids.get_mut(index).ok_or_else(|| QueueError::Backend("sqs: unknown entry id".into()))?;
            *slot = entry.message_id().to_string();
        }
        if ids.iter().any(String::is_empty) {
            return Err(QueueError::Backend("sqs: a sent message has no id".into()));
        }
        Ok(ids)
    }

    async fn receive(
        &self,
        queue: &str,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Message>, QueueError> {
        validate_receive(queue, max, wait, visibility)?;
        let url = self.url(queue).await?;
        let output = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(i32::try_from(max).expect("max <= 10"))
            .wait_time_seconds(whole_seconds_up(wait))
            .visibility_timeout(whole_seconds_up(visibility))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| map_error(e, queue))?;
        let mut messages = Vec::with_capacity(max);
        for message in output.messages.unwrap_or_default() {
            let receive_count = message
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| QueueError::Backend("sqs: message without a receive count".into()))?;
            let missing = || QueueError::Backend("sqs: incomplete message".into());
            messages.push(Message {
                id: message.message_id.ok_or_else(missing)?,
                receipt_handle: message.receipt_handle.ok_or_else(missing)?,
                body: message.body.ok_or_else(missing)?,
                receive_count,
            });
        }
        assert!(messages.len() <= max, "SQS returned more messages than asked");
        Ok(messages)
    }

    async fn extend_visibility(&self, queue: &str, receipt_handle: &str, visibility: Duration) -> Result<(), QueueError> {
        validate_queue_name(queue)?;
        validate_visibility(visibility)?;
        let url = self.url(queue).await?;
        self.client
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(whole_seconds_up(visibility))
            .send()
            .await
            .map_err(|e| match map_error(e, queue) {
                // SQS calls the handle of a deleted message invalid (ReceiptHandleIsInvalid, or
                // InvalidParameterValue "message does not exist"); our arguments were checked
                // already, so either means the lease is lost.
                QueueError::Invalid(m) if m.contains("ReceiptHandleIsInvalid") || m.contains("InvalidParameterValue") => {
                    QueueError::NotInFlight
                }
                other => other,
            })?;
        Ok(())
    }

    async fn delete(&self, queue: &str, receipt_handle: &str) -> Result<(), QueueError> {
        validate_queue_name(queue)?;
        let url = self.url(queue).await?;
        self.client
            .delete_message()
            .queue_url(url)
            .receipt_handle(receipt_handle)
            .send()
            .await
            .map_err(|e| map_error(e, queue))?;
        Ok(())
    }

    async fn approximate_depth(&self, queue: &str) -> Result<u64, QueueError> {
        validate_queue_name(queue)?;
        let url = self.url(queue).await?;
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(|e| map_error(e, queue))?;
        output
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| QueueError::Backend("sqs: no ApproximateNumberOfMessages".into()))
    }
}
