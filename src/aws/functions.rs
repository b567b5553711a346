//! The real side effects of the built-in functions: the traits of
//! [`writer`](crate::functions::writer), [`router`](crate::functions::router) and
//! [`projector`](crate::functions::projector) (its view writes and its reads of the log,
//! [`DynamoLogStore`]) over the AWS SDK clients.
//!
//! Each implementation sends exactly one request per call and classifies its failure (see [`classify`]):
//! throttling, 5xx, timeouts and network errors are retryable (the handlers retry them, then let Lambda
//! redeliver); everything else (access denied, validation, a missing table or topic) is permanent. A
//! view write whose condition fails is no error but [`Applied::ConditionFailed`]: a
//! `ConditionalCheckFailedException` on a conditional put, or a `TransactionCanceledException` whose
//! first cancellation reason (the idempotency marker's put) is `ConditionalCheckFailed`.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::WriteRequest;
use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;

use crate::aws::views::ViewTableWriter;
use crate::functions::projector::{LogReadError, LogStore, StoreError, ViewStore};
use crate::functions::router::{PublishEntry, PublishError, Publisher};
use crate::functions::writer::{LogWriter, WriteError};
use crate::projection::{Applied, Item, ViewWrite, dynamo, item_from_dynamodb, item_to_dynamodb};

/// Whether a failed call is worth retrying: the operator's one classifier ([`crate::aws::error::classify`]).
pub use super::error::classify;

/// `(retryable, reason)` of an SDK error: `Code: message (HTTP status)` for a service error, the error
/// itself otherwise; retryable by the operator's one classifier.
pub(super) fn sdk_failure<E>(err: &SdkError<E, HttpResponse>) -> (bool, String)
where
    E: ProvideErrorMetadata + std::fmt::Debug,
{
    match err {
        SdkError::ServiceError(service) => {
            let code = service.err().code();
            let status = service.raw().status().as_u16();
            let reason = format!(
                "{}: {} (HTTP {status})",
                code.unwrap_or("Unknown"),
                service.err().message().unwrap_or_default()
            );
            (classify(code, Some(status)), reason)
        }
        other => (crate::aws::error::classify_sdk(other), format!("{other:?}")),
    }
}

/// `(retryable, reason)` of an SDK error; the reason names the operation and the resource.
fn describe<E>(operation: &str, resource: &str, err: &SdkError<E, HttpResponse>) -> (bool, String)
where
    E: ProvideErrorMetadata + std::fmt::Debug,
{
    let (retryable, reason) = sdk_failure(err);
    (retryable, format!("{operation} on {resource}: {reason}"))
}

/// [`LogWriter`] over `BatchWriteItem` on the log table.
#[derive(Debug, Clone)]
pub struct DynamoLogWriter {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoLogWriter {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoLogWriter { client, table: table.into() }
    }
}

impl LogWriter for DynamoLogWriter {
    async fn batch_write(&self, items: Vec<Item>) -> Result<Vec<Item>, WriteError> {
        let requests = items
            .into_iter()
            .map(dynamo::write_request_owned)
            .collect::<Result<Vec<WriteRequest>, _>>()
            .map_err(|e| WriteError::Permanent(format!("building the request: {e}")))?;
        let unprocessed = super::dynamodb::batch_write_once(&self.client, &self.table, requests)
            .await
            .map_err(|e| {
                // A ValidationException is about the request's items (one too large, a number out of
                // range); other permanent errors (access, a missing table) about the table.
                let invalid = e.as_service_error().and_then(|s| s.code()) == Some("ValidationException");
                match describe("BatchWriteItem", &self.table, &e) {
                    (true, reason) => WriteError::Retryable(reason),
                    (false, reason) if invalid => WriteError::Invalid(reason),
                    (false, reason) => WriteError::Permanent(reason),
                }
            })?;
        unprocessed
            .into_iter()
            .filter_map(|request| request.put_request.map(|put| put.item))
            .map(|item| {
                item_from_dynamodb(item).map_err(|e| {
                    WriteError::Permanent(format!(
                        "BatchWriteItem on {}: an unprocessed item cannot be read back: {e}",
                        self.table
                    ))
                })
            })
            .collect()
    }
}

/// [`LogStore`] over `GetItem` on the log table with `ConsistentRead: true`: a strongly consistent read
/// "returns a response with the most up-to-date data, reflecting the updates from all prior write
/// operations that were successful"
/// (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/HowItWorks.ReadConsistency.html>),
/// so it sees the write a stream record was made from. An item absent is `Ok(None)` (`GetItem` returns
/// no `Item`: <https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_GetItem.html>).
/// `table` `None`: the projector's configuration names no log table, and every read fails permanently.
#[derive(Debug, Clone)]
pub struct DynamoLogStore {
    client: aws_sdk_dynamodb::Client,
    table: Option<String>,
}

impl DynamoLogStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: Option<String>) -> Self {
        DynamoLogStore { client, table }
    }
}

impl LogStore for DynamoLogStore {
    async fn get_item(&self, key: &Item) -> Result<Option<Item>, LogReadError> {
        let Some(table) = &self.table else {
            return crate::functions::projector::NoLogTable.get_item(key).await;
        };
        let out = self
            .client
            .get_item()
            .table_name(table)
            .set_key(Some(item_to_dynamodb(key.clone())))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| match describe("GetItem", table, &e) {
                (true, reason) => LogReadError::Retryable(reason),
                (false, reason) => LogReadError::Permanent(reason),
            })?;
        out.item
            .map(|item| {
                item_from_dynamodb(item).map_err(|e| {
                    LogReadError::Permanent(format!("GetItem on {table}: the item cannot be read: {e}"))
                })
            })
            .transpose()
    }
}

/// [`Publisher`] over `PublishBatch`.
#[derive(Debug, Clone)]
pub struct SnsPublisher {
    client: aws_sdk_sns::Client,
}

impl SnsPublisher {
    pub fn new(client: aws_sdk_sns::Client) -> Self {
        SnsPublisher { client }
    }
}

/// One SNS batch entry with its message attributes; errors: the SDK builder's (a required field unset).
fn publish_entry(
    entry: PublishEntry,
) -> Result<PublishBatchRequestEntry, aws_smithy_types::error::operation::BuildError> {
    let attributes = entry
        .attributes
        .into_iter()
        .map(|(name, value)| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map(|v| (name, v))
        })
        .collect::<Result<HashMap<_, _>, _>>()?;
    PublishBatchRequestEntry::builder()
        .id(entry.id)
        .message(entry.message)
        .set_message_attributes(Some(attributes))
        .build()
}

impl Publisher for SnsPublisher {
    async fn publish_batch(
        &self,
        topic_arn: &str,
        entries: Vec<PublishEntry>,
    ) -> Result<Vec<String>, PublishError> {
        let entries = entries
            .into_iter()
            .map(publish_entry)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PublishError::Permanent(format!("building the request for {topic_arn}: {e}")))?;
        let out = self
            .client
            .publish_batch()
            .topic_arn(topic_arn)
            .set_publish_batch_request_entries(Some(entries))
            .send()
            .await
            .map_err(|e| match describe("PublishBatch", topic_arn, &e) {
                (true, reason) => PublishError::Retryable(reason),
                (false, reason) => PublishError::Permanent(reason),
            })?;
        Ok(out.failed().iter().map(|f| f.id().to_string()).collect())
    }
}

/// [`ViewStore`] over the views-table writer the backfill and the in-cluster runtime use
/// ([`ViewTableWriter`]), so a view's items, markers and aggregates have one layout whichever path
/// wrote them (a Lambda view is backfilled by the operator and kept live by its projector).
#[derive(Debug, Clone)]
pub struct DynamoViewStore {
    writer: ViewTableWriter,
    /// [`super::projector::ProjectorConfig::fingerprint`] of the function's configuration, written with a
    /// record the view stops at, so the operator reports it only while that projection is deployed.
    fingerprint: String,
}

impl DynamoViewStore {
    /// The store of `view` in `table`, for the projector configured as `fingerprint`.
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
        view: &crate::projection::ProjectionConfig,
        fingerprint: impl Into<String>,
    ) -> Self {
        DynamoViewStore {
            writer: ViewTableWriter::for_view(client, table, view, 1),
            fingerprint: fingerprint.into(),
        }
    }
}

impl ViewStore for DynamoViewStore {
    async fn apply(&self, write: ViewWrite) -> Result<Applied, StoreError> {
        match self.writer.apply(vec![write]).await {
            // DynamoDB refused the record's write (a sum it cannot store): a record error.
            Ok(stats) if !stats.rejected.is_empty() => Err(StoreError::Permanent(format!(
                "record {}: {}",
                stats.rejected[0].record, stats.rejected[0].reason
            ))),
            // A failed `Latest` condition is an equal or newer record already there.
            Ok(stats) if stats.skipped > 0 && stats.applied == 0 => Ok(Applied::ConditionFailed),
            Ok(_) => Ok(Applied::Written),
            Err(e) if e.retryable => Err(StoreError::Retryable(e.to_string())),
            Err(e) => Err(StoreError::Permanent(e.to_string())),
        }
    }

    async fn record_error(&self, id: &str, message: &str, failing: bool) {
        let noted = match failing {
            true => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let noted = format!("{}@{now}", self.fingerprint);
                self.writer.note_failing_record(message, &noted).await
            }
            false => {
                let named = [(id.to_string(), message.to_string())];
                self.writer.note_record_errors(&[id.to_string()], &named, 0).await
            }
        };
        if let Err(e) = noted {
            tracing::warn!(error = %e, "could not note the record error for the operator; it is in this log only");
        }
    }

    async fn report_live(&self, report: &crate::functions::progress::LiveReport) {
        if let Err(e) = self.writer.note_live_progress(report).await {
            tracing::warn!(error = %e, "could not report the projector's progress to the operator");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_5xx_are_retried_the_rest_is_permanent() {
        assert!(classify(
            Some("ProvisionedThroughputExceededException"),
            Some(400)
        ));
        assert!(classify(Some("ThrottlingException"), Some(400)));
        assert!(classify(Some("Throttled"), Some(400)), "SNS throttling");
        assert!(classify(Some("InternalServerError"), Some(500)));
        assert!(classify(Some("Unknown"), Some(503)));
        assert!(classify(None, Some(429)));
        assert!(classify(None, None), "no response at all");
        assert!(!classify(Some("AccessDeniedException"), Some(400)));
        assert!(!classify(Some("ValidationException"), Some(400)));
        assert!(!classify(Some("ResourceNotFoundException"), Some(400)));
        assert!(!classify(Some("NotFound"), Some(404)));
    }

    #[test]
    fn publish_entries_carry_string_attributes() {
        let entry = PublishEntry {
            id: "r0".into(),
            message: "{}".into(),
            attributes: [("recordType".to_string(), "player".to_string())].into(),
        };
        let built = publish_entry(entry).unwrap();
        assert_eq!(built.id(), "r0");
        assert_eq!(built.message(), "{}");
        let attr = &built.message_attributes().unwrap()["recordType"];
        assert_eq!(attr.data_type(), "String");
        assert_eq!(attr.string_value(), Some("player"));
    }
}
