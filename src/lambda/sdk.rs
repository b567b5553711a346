//! The real side effects of the built-in functions: the traits of [`writer`](super::writer),
//! [`router`](super::router) and [`projector`](super::projector) over the AWS SDK clients.
//!
//! Each implementation sends exactly one request per call and classifies its failure (see [`classify`]):
//! throttling, 5xx, timeouts and network errors are retryable (the handlers retry them, then let Lambda
//! redeliver); everything else (access denied, validation, a missing table or topic) is permanent. A
//! view write whose condition fails is no error but [`Applied::ConditionFailed`]: a
//! `ConditionalCheckFailedException` on a conditional put, or a `TransactionCanceledException` whose
//! first cancellation reason (the idempotency marker's put) is `ConditionalCheckFailed`.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Put, WriteRequest};
use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;

use super::projector::{StoreError, ViewStore};
use super::router::{PublishEntry, PublishError, Publisher};
use super::writer::{LogWriter, WriteError};
use crate::projection::{Applied, Item, ViewWrite, dynamo, item_from_dynamodb};

/// Error codes of DynamoDB and SNS that clear by themselves.
const RETRYABLE_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "Throttled",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "KMSThrottlingException",
    "KMSThrottling",
    "InternalServerError",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "TransactionConflictException",
    "TransactionInProgressException",
    "ReplicatedWriteConflictException",
];

/// Whether a failed call is worth retrying: a service error with a retryable code or an HTTP status of
/// 429 or 5xx; `None` for `code` and `status` means no response at all (timeout, network), retryable.
pub fn classify(code: Option<&str>, status: Option<u16>) -> bool {
    match (code, status) {
        (None, None) => true,
        (code, status) => {
            code.is_some_and(|c| RETRYABLE_CODES.contains(&c))
                || status.is_some_and(|s| s == 429 || (500..600).contains(&s))
        }
    }
}

/// `(retryable, reason)` of an SDK error; the reason names the operation and the resource.
fn describe<E>(operation: &str, resource: &str, err: &SdkError<E, HttpResponse>) -> (bool, String)
where
    E: ProvideErrorMetadata + std::fmt::Debug,
{
    match err {
        SdkError::ServiceError(service) => {
            let code = service.err().code();
            let status = service.raw().status().as_u16();
            let reason = format!(
                "{operation} on {resource}: {}: {} (HTTP {status})",
                code.unwrap_or("Unknown"),
                service.err().message().unwrap_or_default()
            );
            (classify(code, Some(status)), reason)
        }
        other => (true, format!("{operation} on {resource}: {other:?}")),
    }
}

/// How a canceled `TransactWriteItems` of an aggregate ends, from its cancellation reason codes in item
/// order (`None` or `"None"` for an item that did not fail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancellation {
    /// The marker exists: the record was counted before.
    AlreadyApplied,
    Retryable,
    Permanent,
}

/// See [`Cancellation`]: the marker's condition first; then throttling and conflicts are retryable;
/// anything else (a validation error, an item collection too large) is permanent. No reasons at all:
/// retryable, as nothing says otherwise.
pub fn cancellation(reasons: &[Option<&str>]) -> Cancellation {
    const RETRYABLE_REASONS: &[&str] = &[
        "TransactionConflict",
        "ThrottlingError",
        "ProvisionedThroughputExceeded",
        "RequestLimitExceeded",
        "InternalServerError",
    ];
    if reasons.first().copied().flatten() == Some("ConditionalCheckFailed") {
        return Cancellation::AlreadyApplied;
    }
    let failed: Vec<&str> = reasons
        .iter()
        .flatten()
        .copied()
        .filter(|c| *c != "None")
        .collect();
    if failed.is_empty() || failed.iter().all(|c| RETRYABLE_REASONS.contains(c)) {
        Cancellation::Retryable
    } else {
        Cancellation::Permanent
    }
}

/// [`LogWriter`] over `BatchWriteItem` on the log table.
#[derive(Debug, Clone)]
pub struct DynamoLogWriter {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoLogWriter {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoLogWriter {
            client,
            table: table.into(),
        }
    }
}

impl LogWriter for DynamoLogWriter {
    async fn batch_write(&self, items: Vec<Item>) -> Result<Vec<Item>, WriteError> {
        let requests = items
            .into_iter()
            .map(dynamo::write_request_owned)
            .collect::<Result<Vec<WriteRequest>, _>>()
            .map_err(|e| WriteError::Permanent(format!("building the request: {e}")))?;
        let out = self
            .client
            .batch_write_item()
            .request_items(&self.table, requests)
            .send()
            .await
            .map_err(|e| match describe("BatchWriteItem", &self.table, &e) {
                (true, reason) => WriteError::Retryable(reason),
                (false, reason) => WriteError::Permanent(reason),
            })?;
        let unprocessed = out
            .unprocessed_items
            .and_then(|mut tables| tables.remove(&self.table))
            .unwrap_or_default();
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

fn publish_entry(entry: PublishEntry) -> Result<PublishBatchRequestEntry, String> {
    let attributes = entry
        .attributes
        .into_iter()
        .map(|(name, value)| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map(|v| (name, v))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<HashMap<_, _>, _>>()?;
    PublishBatchRequestEntry::builder()
        .id(entry.id)
        .message(entry.message)
        .set_message_attributes(Some(attributes))
        .build()
        .map_err(|e| e.to_string())
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

/// [`ViewStore`] over `PutItem` (the `Latest` and `Append` writes) and `TransactWriteItems` (aggregates),
/// with the requests of [`crate::projection::dynamo`].
#[derive(Debug, Clone)]
pub struct DynamoViewStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoViewStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoViewStore {
            client,
            table: table.into(),
        }
    }

    async fn put_item(&self, put: Put) -> Result<Applied, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(put.table_name)
            .set_item(Some(put.item))
            .set_condition_expression(put.condition_expression)
            .set_expression_attribute_names(put.expression_attribute_names)
            .set_expression_attribute_values(put.expression_attribute_values)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Applied::Written),
            Err(SdkError::ServiceError(s))
                if matches!(s.err(), PutItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(Applied::ConditionFailed)
            }
            Err(e) => Err(store_error(describe("PutItem", &self.table, &e))),
        }
    }
}

fn store_error((retryable, reason): (bool, String)) -> StoreError {
    if retryable {
        StoreError::Retryable(reason)
    } else {
        StoreError::Permanent(reason)
    }
}

impl ViewStore for DynamoViewStore {
    async fn apply(&self, write: ViewWrite) -> Result<Applied, StoreError> {
        let build_error = |e: aws_sdk_dynamodb::error::BuildError| {
            StoreError::Permanent(format!("building the request for {}: {e}", self.table))
        };
        match write {
            ViewWrite::PutIfNewer {
                item,
                order_attribute,
                order,
            } => {
                let put = dynamo::put_if_newer_owned(&self.table, item, order_attribute, order)
                    .map_err(build_error)?;
                self.put_item(put).await
            }
            ViewWrite::Put { item } => {
                let put = dynamo::put(&self.table, &item).map_err(build_error)?;
                self.put_item(put).await
            }
            ViewWrite::Add {
                key,
                attribute,
                delta,
                marker,
            } => {
                let items = dynamo::add_transaction_owned(&self.table, key, attribute, delta, marker)
                    .map_err(build_error)?;
                let result = self
                    .client
                    .transact_write_items()
                    .set_transact_items(Some(items))
                    .send()
                    .await;
                let err = match result {
                    Ok(_) => return Ok(Applied::Written),
                    Err(err) => err,
                };
                if let SdkError::ServiceError(s) = &err
                    && let TransactWriteItemsError::TransactionCanceledException(canceled) = s.err()
                {
                    let reasons: Vec<Option<&str>> =
                        canceled.cancellation_reasons().iter().map(|r| r.code()).collect();
                    let reason = describe("TransactWriteItems", &self.table, &err).1;
                    return match cancellation(&reasons) {
                        Cancellation::AlreadyApplied => Ok(Applied::ConditionFailed),
                        Cancellation::Retryable => {
                            Err(StoreError::Retryable(format!("{reason} {reasons:?}")))
                        }
                        Cancellation::Permanent => {
                            Err(StoreError::Permanent(format!("{reason} {reasons:?}")))
                        }
                    };
                }
                Err(store_error(describe("TransactWriteItems", &self.table, &err)))
            }
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
    fn a_canceled_transaction_is_classified_by_its_reasons() {
        assert_eq!(
            cancellation(&[Some("ConditionalCheckFailed"), Some("None")]),
            Cancellation::AlreadyApplied
        );
        assert_eq!(
            cancellation(&[Some("None"), Some("TransactionConflict")]),
            Cancellation::Retryable
        );
        assert_eq!(
            cancellation(&[Some("ThrottlingError"), None]),
            Cancellation::Retryable
        );
        assert_eq!(cancellation(&[]), Cancellation::Retryable);
        assert_eq!(
            cancellation(&[Some("None"), Some("ValidationError")]),
            Cancellation::Permanent
        );
        assert_eq!(
            cancellation(&[Some("None"), Some("ConditionalCheckFailed")]),
            Cancellation::Permanent,
            "only the marker's condition means already counted; the update has none"
        );
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
