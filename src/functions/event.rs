//! The Lambda events the built-in functions take and the partial batch responses they return.
//!
//! The SQS and SNS events and the batch responses are the `aws_lambda_events` crate's (re-exported here);
//! the DynamoDB Streams event stays ours ([`StreamEvent`]): the crate's does not read every documented
//! shape of it nor re-serialize a record unchanged, which the router's SNS envelope needs (see
//! [`StreamEvent`] and the tests `crate_stream_event_*` in `src/functions/tests.rs`).
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
//! - [`BatchResponse`] (streams) and [`SqsBatchResponse`] (the writer):
//!   `{"batchItemFailures":[{"itemIdentifier":"..."}]}`: an SQS `messageId`, or a stream record's
//!   `dynamodb.SequenceNumber`. An empty list means the whole batch succeeded.

use serde::{Deserialize, Deserializer, Serialize};

pub use aws_lambda_events::event::sns::{MessageAttribute as SnsAttribute, SnsEvent, SnsMessage, SnsRecord};
pub use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
pub use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};

use crate::projection::Item;

/// What the functions need of an SQS message (the crate's fields are all optional).
pub trait SqsMessageExt {
    /// The id reported in a batch response (`messageId`; empty if absent, which never happens on AWS).
    fn id(&self) -> &str;
    /// The body: the producer's text (empty if absent).
    fn text(&self) -> &str;
    /// The FIFO message group, if the queue is FIFO: the `MessageGroupId` attribute of a message whose
    /// `eventSourceARN` names a FIFO queue (its name ends in `.fifo`). A standard queue's messages may carry
    /// a `MessageGroupId` too (a *fair* queue's tenant: "In standard queues, using MessageGroupId enables
    /// fair queues", SQS Developer Guide, using-messagegroupid-property), without any order to keep, so
    /// they have none here. Without an `eventSourceARN` (never on AWS) the attribute is taken as FIFO's.
    fn message_group_id(&self) -> Option<&str>;
}

impl SqsMessageExt for SqsMessage {
    fn id(&self) -> &str {
        self.message_id.as_deref().unwrap_or_default()
    }

    fn text(&self) -> &str {
        self.body.as_deref().unwrap_or_default()
    }

    fn message_group_id(&self) -> Option<&str> {
        let fifo = self
            .event_source_arn
            .as_deref()
            .is_none_or(|arn| arn.ends_with(".fifo"));
        self.attributes
            .get("MessageGroupId")
            .map(String::as_str)
            .filter(|_| fifo)
    }
}

/// An SQS message with `message_id` and `body` (the crate's types cannot be built field by field outside
/// it).
pub fn sqs_message(message_id: impl Into<String>, body: impl Into<String>) -> SqsMessage {
    let mut message = SqsMessage::default();
    message.message_id = Some(message_id.into());
    message.body = Some(body.into());
    message
}

/// An SQS event of `messages`.
pub fn sqs_event(messages: Vec<SqsMessage>) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = messages;
    event
}

/// An SNS notification record as a subscription delivers it to Lambda, with the given message id, topic,
/// body and `String` message attributes (the other fields are fixed placeholders).
pub fn sns_record<'a>(
    message_id: impl Into<String>,
    topic_arn: impl Into<String>,
    message: impl Into<String>,
    attributes: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> SnsRecord {
    let mut record = SnsRecord::default();
    record.event_source = "aws:sns".to_string();
    record.event_version = "1.0".to_string();
    record.sns.sns_message_type = "Notification".to_string();
    record.sns.message_id = message_id.into();
    record.sns.topic_arn = topic_arn.into();
    record.sns.message = message.into();
    record.sns.signature_version = "1".to_string();
    record.sns.message_attributes = attributes
        .into_iter()
        .map(|(name, value)| {
            let mut attribute = SnsAttribute::default();
            attribute.data_type = "String".to_string();
            attribute.value = value.to_string();
            (name.to_string(), attribute)
        })
        .collect();
    record
}

/// An SNS event of `records`.
pub fn sns_event(records: Vec<SnsRecord>) -> SnsEvent {
    let mut event = SnsEvent::default();
    event.records = records;
    event
}

/// A DynamoDB Streams event delivered by an event source mapping.
///
/// Ours rather than `aws_lambda_events` 1.2.1's `dynamodb::Event` (tests `crate_stream_event_*` in
/// `src/functions/tests.rs`): the crate's refuses `ApproximateCreationDateTime` as a string (a shape one
/// Lambda doc example shows; the project's AWS reference, section d), and re-serializing its record changes
/// it (absent `NewImage`/`OldImage` become `{}`, an absent `ApproximateCreationDateTime` becomes `0`,
/// absent optional fields such as `userIdentity` become `null`), while the router publishes the record as
/// it came (a user's projector reads it as a stream record) and a [`LogReference`] must carry no images.
/// Its numbers are exact (`serde_dynamo` keeps `N` as text), so that is not the reason.
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
            serde_json::from_value(with_unread_sns_fields(value))
                .map(ProjectorEvent::Sns)
                .map_err(|e| D::Error::custom(format!("an SNS event: {e}")))
        } else {
            serde_json::from_value(value)
                .map(ProjectorEvent::Stream)
                .map_err(|e| D::Error::custom(format!("a DynamoDB stream event: {e}")))
        }
    }
}

/// An SNS event with the fields `aws_lambda_events` requires but the projector never reads (it reads
/// `Sns.MessageId` and `Sns.Message`) filled in where absent, so that a notification without, say,
/// `UnsubscribeUrl` is projected instead of failing the whole invocation before the handler sees it. A
/// field present in either documented spelling (`SigningCertUrl`/`SigningCertURL`,
/// `UnsubscribeUrl`/`UnsubscribeURL`) is left alone. `Sns.MessageId` and `Sns.Message` stay required.
fn with_unread_sns_fields(mut value: serde_json::Value) -> serde_json::Value {
    fn fill(object: &mut serde_json::Map<String, serde_json::Value>, spellings: &[&str], default: &str) {
        if !spellings
            .iter()
            .any(|name| object.get(*name).is_some_and(|v| !v.is_null()))
        {
            for name in spellings {
                object.remove(*name);
            }
            object.insert(spellings[0].to_string(), serde_json::Value::from(default));
        }
    }
    let Some(records) = value.get_mut("Records").and_then(|r| r.as_array_mut()) else {
        return value;
    };
    for record in records.iter_mut().filter_map(|r| r.as_object_mut()) {
        for name in ["EventSource", "EventVersion", "EventSubscriptionArn"] {
            fill(record, &[name], "");
        }
        let Some(sns) = record.get_mut("Sns").and_then(|s| s.as_object_mut()) else {
            continue;
        };
        for name in ["Type", "TopicArn", "SignatureVersion", "Signature"] {
            fill(sns, &[name], "");
        }
        fill(sns, &["SigningCertUrl", "SigningCertURL"], "");
        fill(sns, &["UnsubscribeUrl", "UnsubscribeURL"], "");
        fill(sns, &["Timestamp"], "1970-01-01T00:00:00Z");
    }
    value
}

/// The partial batch response of the stream functions (router, projector, notifier); the writer returns
/// an [`SqsBatchResponse`]. Both have the same JSON shape.
pub type BatchResponse = DynamoDbEventResponse;

/// Building and reading a partial batch response ([`BatchResponse`], [`SqsBatchResponse`]).
pub trait BatchFailures: Default {
    /// The given items failed. An identifier is never empty: an empty one fails the whole batch.
    fn failed(ids: impl IntoIterator<Item = String>) -> Self;

    /// Every item succeeded.
    fn success() -> Self {
        Self::default()
    }

    /// The ids reported, in order.
    fn failed_ids(&self) -> Vec<&str>;
}

impl BatchFailures for DynamoDbEventResponse {
    fn failed(ids: impl IntoIterator<Item = String>) -> Self {
        let mut response = DynamoDbEventResponse::default();
        for id in ids {
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = Some(id);
            response.batch_item_failures.push(failure);
        }
        response
    }

    fn failed_ids(&self) -> Vec<&str> {
        self.batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_deref().unwrap_or_default())
            .collect()
    }
}

impl BatchFailures for SqsBatchResponse {
    fn failed(ids: impl IntoIterator<Item = String>) -> Self {
        let mut response = SqsBatchResponse::default();
        response.set_failures(ids);
        response
    }

    fn failed_ids(&self) -> Vec<&str> {
        self.batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect()
    }
}
