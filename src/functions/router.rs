//! The router: reads the log's stream (`Sns` fan-out) and publishes each new record to the SNS topic of
//! its record type's group.
//!
//! For each stream record:
//! - `MODIFY` and `REMOVE` are ignored and counted: the log is append-only, so they are repairs made by
//!   hand, not records.
//! - An `INSERT` whose `NewImage` has no `S` record type, or a type with no topic in [`ENV_TOPICS`], is
//!   skipped with a warning and counted. It is not a failure: retrying cannot change it, and it would
//!   block the shard.
//! - Any other `INSERT` is published to its topic, with body [`RoutedRecord`] (the whole stream record,
//!   as JSON) and the String message attributes `recordType` (what the views' filter policies match) and
//!   `eventName`.
//! - **By reference**: an `INSERT` whose message would exceed [`ENV_MAX_MESSAGE_BYTES`] (a log item may be
//!   up to 400 KB, an SNS message 256 KiB by default) is published instead with body [`LogReference`]
//!   (the stream record without its images: `Keys`, `eventName`, `SequenceNumber`, ...) and the same
//!   attributes plus [`REFERENCE_MESSAGE_ATTRIBUTE`] = [`LOG_REFERENCE_VERSION`]; the projector reads
//!   the item from the log table (see [`super::projector`]). Each record is published exactly one way.
//!
//! Sizes are counted as SNS counts them ([`PublishEntry::size`]): the UTF-8 bytes of the body plus, for
//! every message attribute, its name, its data type and its value ("All parts of the message attribute,
//! including name, type, and value, are included in the message size restriction":
//! <https://docs.aws.amazon.com/sns/latest/api/API_MessageAttributeValue.html>). Entries go out with
//! `PublishBatch` ([`Publisher`]): at most [`MAX_PUBLISH_BATCH`] entries per call and, together, at most
//! the topics' maximum message size ("The combined size of all messages in the batch, including each
//! message's body and attributes, must not exceed the topic's MaximumMessageSize":
//! <https://docs.aws.amazon.com/sns/latest/api/API_PublishBatch.html>; 256 KiB by default, which is also
//! the older documented fixed batch limit [`MAX_PUBLISH_BATCH_BYTES`]). Failed entries and retryable
//! errors are retried per [`RetryPolicy`].
//!
//! Guarantees:
//! - At-least-once: the partial batch response names the `SequenceNumber` of the earliest record (in
//!   stream order) that could not be published; the event source mapping retries from there, so that
//!   record and all after it are published again (duplicates are harmless: projections are idempotent).
//! - A record whose reference itself exceeds [`ENV_MAX_MESSAGE_BYTES`] (only possible with a limit far
//!   below the default: keys are at most 2048 + 1024 bytes) can never be published: it is reported as
//!   failed, so the mapping's `MaximumRetryAttempts` and on-failure destination decide its fate instead
//!   of dropping it silently.
//!
//! Environment: [`ENV_RECORD_TYPE_ATTRIBUTE`], [`ENV_TOPICS`], [`ENV_MAX_MESSAGE_BYTES`] (optional).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use tracing::{error, warn};

use super::event::{
    BatchFailures, BatchResponse, LOG_REFERENCE_VERSION, LogReference, RoutedRecord, StreamEvent,
    StreamEventName,
};
use super::{ConfigError, RetryPolicy, optional, required};
use crate::plan::routing::RECORD_TYPE_MESSAGE_ATTRIBUTE;
use crate::projection::Value;

/// The attribute holding a record's type: the writer's variable.
pub use super::writer::ENV_RECORD_TYPE_ATTRIBUTE;
/// JSON object: record type → topic ARN of its group, e.g. `{"player":"arn:aws:sns:...:t-player"}`.
pub const ENV_TOPICS: &str = "TOPICS";
/// The topics' maximum message size in bytes (body plus attributes); default [`DEFAULT_MAX_MESSAGE_BYTES`].
pub const ENV_MAX_MESSAGE_BYTES: &str = "MAX_MESSAGE_BYTES";

/// The message attribute carrying the stream record's event name (always `INSERT`).
pub const EVENT_NAME_MESSAGE_ATTRIBUTE: &str = "eventName";
/// The message attribute marking a [`LogReference`] message; its value is the reference's version.
pub const REFERENCE_MESSAGE_ATTRIBUTE: &str = "logReference";
/// `PublishBatch` takes at most 10 entries.
pub const MAX_PUBLISH_BATCH: usize = 10;
/// `PublishBatch`'s total payload at the default maximum message size: 256 KiB for all entries together
/// (the batch limit is the topic's `MaximumMessageSize`, [`RouterConfig::max_message_bytes`]).
pub const MAX_PUBLISH_BATCH_BYTES: usize = 262_144;
/// SNS's default maximum message size.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 262_144;
/// SNS's largest configurable maximum message size.
pub const LARGEST_MAX_MESSAGE_BYTES: usize = 1_048_576;

/// Where each record type goes, from the router's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    pub record_type_attribute: String,
    /// Record type → topic ARN.
    pub topics: BTreeMap<String, String>,
    pub max_message_bytes: usize,
}

impl RouterConfig {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(super::process_env)
    }

    /// Reads the configuration through `lookup` (variable name → value).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let record_type_attribute = required(
            &lookup,
            ENV_RECORD_TYPE_ATTRIBUTE,
            "set it to the log's spec.table.recordTypeAttribute (e.g. type)",
        )?;
        let raw = required(
            &lookup,
            ENV_TOPICS,
            "set it to a JSON object of record type to topic ARN, e.g. {\"player\":\"arn:aws:sns:...\"}",
        )?;
        let topics: BTreeMap<String, String> =
            serde_json::from_str(&raw).map_err(|e| ConfigError::Invalid {
                var: ENV_TOPICS,
                value: raw.clone(),
                reason: format!(
                    "{e}; it must be a JSON object of record type to topic ARN, e.g. \
                     {{\"player\":\"arn:aws:sns:us-east-1:123456789012:topic\"}}"
                ),
            })?;
        if let Some((record_type, arn)) = topics.iter().find(|(_, arn)| !arn.starts_with("arn:")) {
            return Err(ConfigError::Invalid {
                var: ENV_TOPICS,
                value: raw.clone(),
                reason: format!("record type {record_type:?} maps to {arn:?}, which is not a topic ARN"),
            });
        }
        let max_message_bytes = match optional(&lookup, ENV_MAX_MESSAGE_BYTES) {
            None => DEFAULT_MAX_MESSAGE_BYTES,
            Some(raw) => match raw.trim().parse::<usize>() {
                Ok(n) if (1024..=LARGEST_MAX_MESSAGE_BYTES).contains(&n) => n,
                _ => {
                    return Err(ConfigError::Invalid {
                        var: ENV_MAX_MESSAGE_BYTES,
                        value: raw,
                        reason: format!(
                            "it must be the topics' MaximumMessageSize, a number of bytes from 1024 to \
                             {LARGEST_MAX_MESSAGE_BYTES}; unset means {DEFAULT_MAX_MESSAGE_BYTES}"
                        ),
                    });
                }
            },
        };
        Ok(RouterConfig { record_type_attribute, topics, max_message_bytes })
    }

    /// The function's environment: every variable [`RouterConfig::from_lookup`] reads,
    /// [`ENV_MAX_MESSAGE_BYTES`] only when it is not the default.
    pub fn to_env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::from([
            (
                ENV_RECORD_TYPE_ATTRIBUTE.to_string(),
                self.record_type_attribute.clone(),
            ),
            (
                ENV_TOPICS.to_string(),
                serde_json::to_string(&self.topics).unwrap_or_else(|_| "{}".into()),
            ),
        ]);
        if self.max_message_bytes != DEFAULT_MAX_MESSAGE_BYTES {
            env.insert(
                ENV_MAX_MESSAGE_BYTES.to_string(),
                self.max_message_bytes.to_string(),
            );
        }
        env
    }
}

/// One entry of a `PublishBatch` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishEntry {
    /// Unique within the call: `r<index of the record in the event>`.
    pub id: String,
    /// The body: a [`RoutedRecord`] as JSON.
    pub message: String,
    /// Message attributes, all of data type `String`.
    pub attributes: BTreeMap<String, String>,
}

impl PublishEntry {
    /// What the entry counts toward SNS's size limits, in bytes: the body's UTF-8 bytes and every part of
    /// every attribute (name, data type `String`, value), as
    /// <https://docs.aws.amazon.com/sns/latest/api/API_MessageAttributeValue.html> counts them.
    pub fn size(&self) -> usize {
        self.message.len()
            + self
                .attributes
                .iter()
                .map(|(name, value)| name.len() + "String".len() + value.len())
                .sum::<usize>()
    }
}

/// A `PublishBatch` call that failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// Throttling, a 5xx, a timeout: worth another try.
    #[error("PublishBatch failed (retryable): {0}")]
    Retryable(String),
    /// Access denied, topic not found, invalid parameter: the same call fails again.
    #[error("PublishBatch failed: {0}")]
    Permanent(String),
}

/// Publishes to SNS: `PublishBatch` on one topic.
pub trait Publisher {
    /// Publishes `entries` (at most [`MAX_PUBLISH_BATCH`], at most the topics' maximum message size together)
    /// to `topic_arn` and returns the ids of the entries that failed (`Failed`); an `Err` means none was
    /// published.
    fn publish_batch(
        &self,
        topic_arn: &str,
        entries: Vec<PublishEntry>,
    ) -> impl Future<Output = Result<Vec<String>, PublishError>> + Send;
}

/// What one invocation did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouterReport {
    /// The response to return to Lambda.
    pub response: BatchResponse,
    /// Records published.
    pub published: usize,
    /// `MODIFY`/`REMOVE` records ignored.
    pub ignored: usize,
    /// `INSERT`s without a usable record type (missing, not `S`, or no `NewImage`).
    pub untyped: usize,
    /// `INSERT`s whose record type has no topic.
    pub unknown_type: usize,
    /// Of `published`, records published by reference ([`LogReference`]): too large to go inline.
    pub by_reference: usize,
    /// Records that could not be published; the response names the earliest of them.
    pub failed: usize,
}

/// Handles one stream event: publishes each `INSERT` to its topic and reports the earliest failure.
pub async fn handle<P: Publisher>(
    config: &RouterConfig,
    publisher: &P,
    retry: &RetryPolicy,
    event: &StreamEvent,
) -> RouterReport {
    let mut report = RouterReport::default();
    // Per topic, in stream order: (record index, entry).
    let mut by_topic: BTreeMap<&str, Vec<(usize, PublishEntry)>> = BTreeMap::new();
    let mut failed: BTreeSet<usize> = BTreeSet::new();
    let mut by_reference: BTreeSet<usize> = BTreeSet::new();

    for (i, record) in event.records.iter().enumerate() {
        let sequence = &record.dynamodb.sequence_number;
        if record.event_name != StreamEventName::Insert {
            report.ignored += 1;
            continue;
        }
        let record_type = record
            .dynamodb
            .new_image
            .as_ref()
            .and_then(|image| image.get(&config.record_type_attribute));
        let record_type = match record_type {
            Some(Value::S(t)) => t,
            other => {
                let found = other.map_or("missing", Value::type_name);
                warn!(
                    sequence_number = %sequence,
                    "skipping a log record whose record-type attribute `{}` is {found}, not a string; \
                     no view can receive it: fix the producer",
                    config.record_type_attribute
                );
                report.untyped += 1;
                continue;
            }
        };
        let Some(topic) = config.topics.get(record_type) else {
            warn!(
                sequence_number = %sequence,
                "skipping a log record of type {record_type:?}, which has no topic in {ENV_TOPICS}; \
                 add it to the EventLog's spec.recordTypes (the operator then routes it)"
            );
            report.unknown_type += 1;
            continue;
        };
        let message = match serde_json::to_string(&RoutedRecord::new(record.clone())) {
            Ok(message) => message,
            Err(e) => {
                error!(sequence_number = %sequence, "cannot serialize the stream record: {e}");
                failed.insert(i);
                continue;
            }
        };
        let mut attributes = BTreeMap::from([
            (RECORD_TYPE_MESSAGE_ATTRIBUTE.to_string(), record_type.clone()),
            (EVENT_NAME_MESSAGE_ATTRIBUTE.to_string(), "INSERT".to_string()),
        ]);
        let inline = PublishEntry { id: format!("r{i}"), message, attributes: attributes.clone() };
        let entry = if inline.size() <= config.max_message_bytes {
            inline
        } else {
            let inline_size = inline.size();
            let reference = match serde_json::to_string(&LogReference::new(record, record_type)) {
                Ok(reference) => reference,
                Err(e) => {
                    error!(sequence_number = %sequence, "cannot serialize the log reference: {e}");
                    failed.insert(i);
                    continue;
                }
            };
            attributes.insert(
                REFERENCE_MESSAGE_ATTRIBUTE.to_string(),
                LOG_REFERENCE_VERSION.to_string(),
            );
            let entry = PublishEntry { id: format!("r{i}"), message: reference, attributes };
            if entry.size() > config.max_message_bytes {
                error!(
                    sequence_number = %sequence,
                    "the SNS message of this log record is {inline_size} bytes and even its reference (its \
                     keys) is {} bytes, over the topics' limit of {}; raise the topics' MaximumMessageSize \
                     and {ENV_MAX_MESSAGE_BYTES}",
                    entry.size(),
                    config.max_message_bytes
                );
                failed.insert(i);
                continue;
            }
            by_reference.insert(i);
            entry
        };
        by_topic.entry(topic.as_str()).or_default().push((i, entry));
    }

    for (topic, entries) in by_topic {
        for batch in batches(entries, config.max_message_bytes) {
            let sent: Vec<usize> = batch.iter().map(|(i, _)| *i).collect();
            let not_published = publish_with_retries(publisher, retry, topic, batch).await;
            for i in sent.into_iter().filter(|i| !not_published.contains(i)) {
                report.published += 1;
                report.by_reference += usize::from(by_reference.contains(&i));
            }
            failed.extend(not_published);
        }
    }

    report.failed = failed.len();
    if let Some(&first) = failed.first() {
        let sequence = event.records[first].dynamodb.sequence_number.clone();
        report.response = BatchResponse::failed([sequence]);
    }
    report
}

/// Splits one topic's entries into `PublishBatch` calls, in order: at most [`MAX_PUBLISH_BATCH`] entries
/// and `max_batch_bytes` ([`PublishEntry::size`] summed) per call; an entry larger than that alone goes
/// in a call of its own (the router never builds one).
pub fn batches(
    entries: Vec<(usize, PublishEntry)>,
    max_batch_bytes: usize,
) -> Vec<Vec<(usize, PublishEntry)>> {
    let mut out: Vec<Vec<(usize, PublishEntry)>> = Vec::new();
    let mut bytes = 0;
    for (i, entry) in entries {
        let size = entry.size();
        let fits = out
            .last()
            .is_some_and(|b| b.len() < MAX_PUBLISH_BATCH && bytes + size <= max_batch_bytes);
        if !fits {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(batch) = out.last_mut() {
            batch.push((i, entry));
        }
    }
    out
}

/// Publishes one batch, retrying failed entries and retryable errors; returns the record indexes not
/// published.
async fn publish_with_retries<P: Publisher>(
    publisher: &P,
    retry: &RetryPolicy,
    topic: &str,
    batch: Vec<(usize, PublishEntry)>,
) -> Vec<usize> {
    let mut pending = batch;
    for attempt in 1..=retry.max_attempts.max(1) {
        if attempt > 1 {
            retry.wait_before(attempt).await;
        }
        let entries = pending.iter().map(|(_, e)| e.clone()).collect();
        match publisher.publish_batch(topic, entries).await {
            Ok(failed_ids) => {
                pending.retain(|(_, e)| failed_ids.contains(&e.id));
                if pending.is_empty() {
                    return Vec::new();
                }
                warn!(
                    topic,
                    attempt,
                    failed = pending.len(),
                    "PublishBatch left entries unpublished"
                );
            }
            Err(PublishError::Retryable(reason)) => {
                warn!(topic, attempt, "PublishBatch failed, retrying: {reason}");
            }
            Err(PublishError::Permanent(reason)) => {
                error!(
                    topic,
                    "PublishBatch failed: {reason}; check the router role's sns:Publish permission on the \
                     topic and that the topic exists"
                );
                break;
            }
        }
    }
    pending.into_iter().map(|(i, _)| i).collect()
}
