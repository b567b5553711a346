//! The Lambda events the built-in functions take and the partial batch response they return, as serde
//! types (only the fields the functions use, plus those needed to re-serialize a stream record; unknown
//! fields are ignored).
//!
//! Formats (see the project's AWS reference, sections d to f):
//! - [`SqsEvent`], `{"Records":[{"messageId","body","attributes":{...},...}]}`.
//! - [`StreamEvent`], `{"Records":[{"eventID","eventName":"INSERT"|"MODIFY"|"REMOVE","dynamodb":{"Keys",
//!   "NewImage"?,"OldImage"?,"SequenceNumber","ApproximateCreationDateTime",...},...}]}`. Images are
//!   DynamoDB typed JSON ([`Item`]); `ApproximateCreationDateTime` is kept as it came (a number, or a string
//!   in some documented examples).
//! - [`SnsEvent`], `{"Records":[{"Sns":{"MessageId","TopicArn","Message":"<string>","MessageAttributes":
//!   {"recordType":{"Type":"String","Value":"player"}}}}]}`.
//! - [`RoutedRecord`]: our own SNS message body, the router's output and the projector's input:
//!   `{"kind":"dynamodb-stream-record","version":1,"record":<the stream record>}`, as in the fixture
//!   `tests/fixtures/sns-event.json`.
//! - [`LogReference`]: what the router publishes instead when a [`RoutedRecord`] would exceed the topic's
//!   maximum message size: `{"kind":"dynamodb-stream-record-reference","version":1,"recordType":"player",
//!   "newImageDigest":"<sha-256 hex>","record":<the stream record without NewImage and OldImage>}`.
//! - [`BatchResponse`]: `{"batchItemFailures":[{"itemIdentifier":"..."}]}`: an SQS `messageId`, or a
//!   stream record's `dynamodb.SequenceNumber`. An empty list means the whole batch succeeded.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::projection::Item;

/// An SQS event delivered by an event source mapping.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SqsEvent {
    #[serde(rename = "Records", default)]
    pub records: Vec<SqsMessage>,
}

/// One SQS message of an [`SqsEvent`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SqsMessage {
    /// The id reported in [`BatchItemFailure::item_identifier`].
    pub message_id: String,
    /// The body: the producer's text.
    #[serde(default)]
    pub body: String,
    /// System attributes, all strings: `ApproximateReceiveCount`, `SentTimestamp`, and on FIFO queues
    /// `MessageGroupId`, `MessageDeduplicationId`, `SequenceNumber`.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(rename = "eventSourceARN", default, skip_serializing_if = "Option::is_none")]
    pub event_source_arn: Option<String>,
}

impl SqsMessage {
    /// The FIFO message group, if the queue is FIFO.
    pub fn message_group_id(&self) -> Option<&str> {
        self.attributes.get("MessageGroupId").map(String::as_str)
    }
}

/// A DynamoDB Streams event delivered by an event source mapping.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StreamEvent {
    #[serde(rename = "Records", default)]
    pub records: Vec<StreamRecord>,
}

/// What changed: `INSERT`, `MODIFY` or `REMOVE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum StreamEventName {
    Insert,
    Modify,
    Remove,
}

/// One record of a [`StreamEvent`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamRecord {
    #[serde(rename = "eventID", default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    pub event_name: StreamEventName,
    /// Not fixed: the API says it can change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_region: Option<String>,
    pub dynamodb: StreamData,
    #[serde(rename = "eventSourceARN", default, skip_serializing_if = "Option::is_none")]
    pub event_source_arn: Option<String>,
    /// Set on TTL deletions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_identity: Option<serde_json::Value>,
}

/// The `dynamodb` object of a [`StreamRecord`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StreamData {
    /// Epoch seconds, a number (or a string in some examples): kept as it came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approximate_creation_date_time: Option<serde_json::Value>,
    #[serde(default)]
    pub keys: Item,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_image: Option<Item>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_image: Option<Item>,
    /// A string of 21 to 40 digits; the identifier of partial batch responses.
    pub sequence_number: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_view_type: Option<String>,
}

/// An SNS event (SNS invokes Lambda asynchronously, normally with one record).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SnsEvent {
    #[serde(rename = "Records", default)]
    pub records: Vec<SnsRecord>,
}

/// One record of an [`SnsEvent`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SnsRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_subscription_arn: Option<String>,
    pub sns: SnsMessage,
}

/// The `Sns` object of an [`SnsRecord`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SnsMessage {
    pub message_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_arn: Option<String>,
    /// `null` when the publisher set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Always a string; a JSON body must be parsed a second time.
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub message_attributes: BTreeMap<String, SnsAttribute>,
}

/// A message attribute as delivered to Lambda: flattened to `{"Type","Value"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnsAttribute {
    /// `String`, `String.Array`, `Number` or `Binary`.
    #[serde(rename = "Type")]
    pub data_type: String,
    #[serde(rename = "Value")]
    pub value: String,
}

/// [`RoutedRecord::kind`] of the messages the router publishes.
pub const ROUTED_RECORD_KIND: &str = "dynamodb-stream-record";
/// [`RoutedRecord::version`] of the messages the router publishes.
pub const ROUTED_RECORD_VERSION: u32 = 1;

/// The body of an SNS message published by the router: the whole stream record, so that a projector
/// reads the same `eventName`, `NewImage` and `SequenceNumber` as with `Direct` fan-out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutedRecord {
    /// Always [`ROUTED_RECORD_KIND`].
    pub kind: String,
    /// Always [`ROUTED_RECORD_VERSION`]; a consumer rejects versions it does not know.
    pub version: u32,
    pub record: StreamRecord,
}

impl RoutedRecord {
    /// Wraps a stream record.
    pub fn new(record: StreamRecord) -> Self {
        RoutedRecord {
            kind: ROUTED_RECORD_KIND.to_string(),
            version: ROUTED_RECORD_VERSION,
            record,
        }
    }
}

/// [`LogReference::kind`] of the reference messages the router publishes.
pub const LOG_REFERENCE_KIND: &str = "dynamodb-stream-record-reference";
/// [`LogReference::version`] of the reference messages the router publishes.
pub const LOG_REFERENCE_VERSION: u32 = 1;

/// The body of an SNS message published by the router **instead of** a [`RoutedRecord`] when that would
/// exceed the topic's maximum message size (a log item may be up to 400 KB; an SNS message, attributes
/// included, 256 KiB by default): the stream record without its images. It keeps `eventName`, `Keys`
/// (the log item's primary key), `SequenceNumber`, `ApproximateCreationDateTime` and `SizeBytes`; the
/// projector reads the item itself from the log table, the canonical store, with a strongly consistent
/// `GetItem` on `Keys`, and projects it as if it had come inline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogReference {
    /// Always [`LOG_REFERENCE_KIND`].
    pub kind: String,
    /// Always [`LOG_REFERENCE_VERSION`]; a consumer rejects versions it does not know.
    pub version: u32,
    /// The record's type (also the `recordType` message attribute the filter policies match).
    pub record_type: String,
    /// [`image_digest`] of the record's `NewImage`: the projector compares it with the item it reads, to
    /// tell (and count) a log item rewritten since the record.
    pub new_image_digest: String,
    /// The stream record with `NewImage` and `OldImage` removed.
    pub record: StreamRecord,
}

impl LogReference {
    /// The reference to `record`, an `INSERT` of type `record_type` (its `NewImage` is digested, then
    /// both images dropped).
    pub fn new(record: &StreamRecord, record_type: &str) -> Self {
        let digest = record
            .dynamodb
            .new_image
            .as_ref()
            .map(image_digest)
            .unwrap_or_default();
        let mut record = record.clone();
        record.dynamodb.new_image = None;
        record.dynamodb.old_image = None;
        LogReference {
            kind: LOG_REFERENCE_KIND.to_string(),
            version: LOG_REFERENCE_VERSION,
            record_type: record_type.to_string(),
            new_image_digest: digest,
            record,
        }
    }
}

/// A digest of an item's content (64 hex digits, SHA-256): equal for equal items whatever the order of
/// their set members (DynamoDB returns set members in no particular order), different otherwise (a
/// number is digested as DynamoDB returned its text; DynamoDB returns a stored number the same way in a
/// stream record and a `GetItem`).
pub fn image_digest(item: &Item) -> String {
    use sha2::{Digest, Sha256};
    fn canonical(value: &crate::projection::Value) -> crate::projection::Value {
        use crate::projection::Value;
        match value {
            Value::Ss(set) => Value::Ss({
                let mut s = set.clone();
                s.sort();
                s
            }),
            Value::Ns(set) => Value::Ns({
                let mut s = set.clone();
                s.sort_by(|a, b| a.as_str().cmp(b.as_str()));
                s
            }),
            Value::Bs(set) => Value::Bs({
                let mut s = set.clone();
                s.sort();
                s
            }),
            Value::M(map) => Value::M(map.iter().map(|(k, v)| (k.clone(), canonical(v))).collect()),
            Value::L(list) => Value::L(list.iter().map(canonical).collect()),
            other => other.clone(),
        }
    }
    let canonical: Item = item.iter().map(|(k, v)| (k.clone(), canonical(v))).collect();
    let json = serde_json::to_vec(&canonical).unwrap_or_default();
    Sha256::digest(&json).iter().map(|b| format!("{b:02x}")).collect()
}

/// A projector's input: the SNS event of its subscriptions, or the stream event of its own mapping.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ProjectorEvent {
    Sns(SnsEvent),
    Stream(StreamEvent),
}

impl<'de> Deserialize<'de> for ProjectorEvent {
    /// An event whose first record has an `Sns` object is an SNS event; any other is a stream event (an
    /// empty one included). Errors are those of the chosen shape, so they name the field at fault.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = serde_json::Value::deserialize(deserializer)?;
        let is_sns = value
            .get("Records")
            .and_then(|r| r.get(0))
            .is_some_and(|first| first.get("Sns").is_some());
        if is_sns {
            serde_json::from_value(value)
                .map(ProjectorEvent::Sns)
                .map_err(|e| D::Error::custom(format!("an SNS event: {e}")))
        } else {
            serde_json::from_value(value)
                .map(ProjectorEvent::Stream)
                .map_err(|e| D::Error::custom(format!("a DynamoDB stream event: {e}")))
        }
    }
}

/// The partial batch response of SQS and stream event source mappings with `ReportBatchItemFailures`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchResponse {
    pub batch_item_failures: Vec<BatchItemFailure>,
}

/// One failed item of a [`BatchResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchItemFailure {
    /// An SQS `messageId`, or a stream record's `dynamodb.SequenceNumber`. Never empty: an empty
    /// identifier fails the whole batch.
    pub item_identifier: String,
}

impl BatchResponse {
    /// Every item succeeded.
    pub fn success() -> Self {
        BatchResponse::default()
    }

    /// The given items failed.
    pub fn failed(ids: impl IntoIterator<Item = String>) -> Self {
        BatchResponse {
            batch_item_failures: ids
                .into_iter()
                .map(|item_identifier| BatchItemFailure { item_identifier })
                .collect(),
        }
    }

    /// The ids reported, in order.
    pub fn failed_ids(&self) -> Vec<&str> {
        self.batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect()
    }
}
