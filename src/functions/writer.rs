//! The writer: drains the EventLog's SQS ingest queue into the log table.
//!
//! Wire format for producers: each SQS message body is **one** log record, DynamoDB typed JSON wrapped as
//! in an export line: `{"Item":{"pk":{"S":"PLAYER#ada"},"sk":{"S":"LOG#11"},"type":{"S":"player"},...}}`.
//! No other key is accepted next to `Item` (a typo such as `item` is an error, not an empty record).
//!
//! A record is valid when it has the log's partition key as a non-empty `S`, its sort key likewise if the
//! log has one, and the record-type attribute as an `S` naming one of the log's record types, and its
//! content follows DynamoDB's item rules ([`crate::projection::check_item`]: no empty or repeating set,
//! no empty attribute name, at most 32 levels of nesting; numbers within DynamoDB's range and precision)
//! ([`WriterConfig::validate`]). An invalid record is refused by name before any write, so it never
//! costs the other records of its batch a `BatchWriteItem` call refused as a whole.
//!
//! Guarantees:
//! - Valid records are written with `BatchWriteItem` puts ([`LogWriter`]), at most [`MAX_BATCH_WRITE`] per
//!   call; unprocessed items and retryable errors are retried per [`RetryPolicy`].
//! - Plain, unconditional puts of the record's own key: a conditional `attribute_not_exists(pk)` put
//!   cannot be batched. A redelivered message rewrites the identical record, which changes nothing (and
//!   DynamoDB Streams emits no record for a write that changes nothing). The price: a producer that reuses
//!   a key with different content overwrites the earlier record. The log's contract is that each record
//!   has its own key (e.g. `sk = LOG#<seq>`). Inside one batch, a second message with the same key and
//!   the same content is written once; with different content it is failed (see
//!   [`RecordError::Conflict`]) rather than letting the batch pick a winner.
//! - Every message not written (invalid, conflicting, or still failing after the retries) is reported in
//!   the partial batch response, so SQS redelivers it and, after the queue's `maxReceiveCount`, moves it
//!   to the dead-letter queue, where an invalid record waits to be inspected instead of being dropped.
//! - FIFO queues: once a message of a message group fails, every later message of that group in the batch
//!   is reported too, so SQS keeps the group's order (later messages may have been written already; they
//!   are rewritten identically on redelivery).
//!
//! Environment: [`ENV_LOG_TABLE`], [`ENV_PARTITION_KEY`], [`ENV_SORT_KEY`] (optional),
//! [`ENV_RECORD_TYPE_ATTRIBUTE`], [`ENV_RECORD_TYPES`].

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;

use tracing::warn;

use super::event::{BatchFailures, SqsBatchResponse, SqsEvent, SqsMessageExt};
use super::{ConfigError, RetryPolicy, optional, required};
use crate::projection::{Item, Value};

/// The log table's name (for the [`LogWriter`] the caller builds).
pub const ENV_LOG_TABLE: &str = "LOG_TABLE";
/// The log's partition key attribute (`spec.table.partitionKey`).
pub const ENV_PARTITION_KEY: &str = "PARTITION_KEY";
/// The log's sort key attribute (`spec.table.sortKey`); unset when the table has none.
pub const ENV_SORT_KEY: &str = "SORT_KEY";
/// The attribute holding a record's type (`spec.table.recordTypeAttribute`).
pub const ENV_RECORD_TYPE_ATTRIBUTE: &str = "RECORD_TYPE_ATTRIBUTE";
/// The log's record types, comma-separated (`spec.recordTypes`).
pub const ENV_RECORD_TYPES: &str = "RECORD_TYPES";

/// `BatchWriteItem` takes at most 25 requests per call.
pub const MAX_BATCH_WRITE: usize = 25;

/// The log the writer writes, from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterConfig {
    pub log_table: String,
    pub partition_key: String,
    pub sort_key: Option<String>,
    pub record_type_attribute: String,
    pub record_types: RecordTypes,
}

/// A log's record types, in `spec.recordTypes` order and without repeats: [`WriterConfig::to_env`] writes
/// them in that order (so the function's environment is the one the operator always wrote), while
/// [`RecordTypes::iter`] gives them in name order (as errors list them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordTypes(Vec<String>);

impl RecordTypes {
    /// Whether `record_type` is one of them.
    pub fn contains(&self, record_type: &str) -> bool {
        self.0.iter().any(|t| t == record_type)
    }

    /// In name order.
    pub fn iter(&self) -> impl Iterator<Item = &String> {
        self.0.iter().collect::<BTreeSet<_>>().into_iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of [`ENV_RECORD_TYPES`]: comma-separated, in their order.
    fn to_env_value(&self) -> String {
        self.0.join(",")
    }
}

impl<S: Into<String>> FromIterator<S> for RecordTypes {
    /// Keeps the first of repeated names.
    fn from_iter<I: IntoIterator<Item = S>>(names: I) -> Self {
        let mut list: Vec<String> = Vec::new();
        for name in names.into_iter().map(Into::into) {
            if !list.contains(&name) {
                list.push(name);
            }
        }
        RecordTypes(list)
    }
}

impl WriterConfig {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(super::process_env)
    }

    /// Reads the configuration through `lookup` (variable name → value).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let log_table = required(&lookup, ENV_LOG_TABLE, "set it to the log table's name")?;
        let partition_key = required(
            &lookup,
            ENV_PARTITION_KEY,
            "set it to the log's spec.table.partitionKey (e.g. pk)",
        )?;
        let sort_key = optional(&lookup, ENV_SORT_KEY);
        let record_type_attribute = required(
            &lookup,
            ENV_RECORD_TYPE_ATTRIBUTE,
            "set it to the log's spec.table.recordTypeAttribute (e.g. type)",
        )?;
        let raw_types = required(
            &lookup,
            ENV_RECORD_TYPES,
            "set it to the log's spec.recordTypes, comma-separated (e.g. player,game)",
        )?;
        let record_types: RecordTypes = raw_types
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        if record_types.is_empty() {
            return Err(ConfigError::Invalid {
                var: ENV_RECORD_TYPES,
                value: raw_types,
                reason: "it lists no record type; list the log's spec.recordTypes, comma-separated".into(),
            });
        }
        Ok(WriterConfig {
            log_table,
            partition_key,
            sort_key,
            record_type_attribute,
            record_types,
        })
    }

    /// The function's environment: every variable [`WriterConfig::from_lookup`] reads, [`ENV_SORT_KEY`]
    /// only when the log has a sort key.
    pub fn to_env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::from([
            (ENV_LOG_TABLE.to_string(), self.log_table.clone()),
            (ENV_PARTITION_KEY.to_string(), self.partition_key.clone()),
            (
                ENV_RECORD_TYPE_ATTRIBUTE.to_string(),
                self.record_type_attribute.clone(),
            ),
            (ENV_RECORD_TYPES.to_string(), self.record_types.to_env_value()),
        ]);
        if let Some(sk) = &self.sort_key {
            env.insert(ENV_SORT_KEY.to_string(), sk.clone());
        }
        env
    }

    /// Parses and validates one message body; see the module documentation for the rules.
    pub fn validate(&self, body: &str) -> Result<Item, RecordError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Wire {
            #[serde(rename = "Item")]
            item: Item,
        }
        // The path names the attribute of a bad value (`Item.score`), not just a column.
        let item = serde_path_to_error::deserialize::<_, Wire>(&mut serde_json::Deserializer::from_str(body))
            .map_err(|e| {
                let attribute = attribute_path(e.path());
                let reason = e.into_inner().to_string();
                match attribute {
                    Some(attribute) => RecordError::Value { attribute, reason },
                    None => RecordError::Body { reason },
                }
            })?
            .item;
        let key = |name: &str, max: usize| match item.get(name) {
            Some(Value::S(s)) if !s.is_empty() && s.len() <= max => Ok(()),
            Some(Value::S(s)) if !s.is_empty() => Err(RecordError::Key {
                attribute: name.to_string(),
                found: format!("a string of {} bytes (DynamoDB allows at most {max})", s.len()),
            }),
            other => Err(RecordError::Key { attribute: name.to_string(), found: describe(other) }),
        };
        key(&self.partition_key, MAX_PARTITION_KEY_BYTES)?;
        if let Some(sort_key) = &self.sort_key {
            key(sort_key, MAX_SORT_KEY_BYTES)?;
        }
        match item.get(&self.record_type_attribute) {
            Some(Value::S(t)) if self.record_types.contains(t) => {
                crate::projection::check_item(&item).map_err(RecordError::Item)?;
                Ok(item)
            }
            Some(Value::S(t)) => Err(RecordError::UnknownRecordType {
                attribute: self.record_type_attribute.clone(),
                record_type: t.clone(),
                known: self.record_types.iter().cloned().collect::<Vec<_>>().join(", "),
            }),
            other => Err(RecordError::RecordType {
                attribute: self.record_type_attribute.clone(),
                found: describe(other),
            }),
        }
    }

    /// The record's key values (checked by [`validate`](Self::validate)), as the text DynamoDB compares.
    fn key_of(&self, item: &Item) -> (String, Option<String>) {
        let text = |name: &str| {
            item.get(name)
                .and_then(Value::as_s)
                .unwrap_or_default()
                .to_string()
        };
        (text(&self.partition_key), self.sort_key.as_deref().map(text))
    }
}

/// The attribute a parse error of a body is in, as `score`, `stats.best` or `moves[3]`, from the serde path
/// `Item.<name>.<type tag>.<name or index>.<type tag>...` (type tags such as `M`, `L`, `N` dropped); `None`
/// when the error is outside `Item`'s attributes.
fn attribute_path(path: &serde_path_to_error::Path) -> Option<String> {
    use serde_path_to_error::Segment;
    let mut segments = path.iter();
    if !matches!(segments.next(), Some(Segment::Map { key }) if key == "Item") {
        return None;
    }
    let mut out = String::new();
    let mut tag_next = false;
    for segment in segments {
        if std::mem::take(&mut tag_next) {
            continue;
        }
        match segment {
            Segment::Map { key } if out.is_empty() => out.push_str(key),
            Segment::Map { key } => {
                out.push('.');
                out.push_str(key);
            }
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Enum { .. } | Segment::Unknown => return None,
        }
        tag_next = true;
    }
    (!out.is_empty()).then_some(out)
}

fn sk_name(config: &WriterConfig) -> &str {
    config.sort_key.as_deref().unwrap_or_default()
}

fn describe(value: Option<&Value>) -> String {
    match value {
        None => "missing".to_string(),
        Some(Value::S(_)) => "an empty S".to_string(),
        Some(v) => format!("a {}", v.type_name()),
    }
}

#[cfg(test)]
mod attribute_path_tests {
    use super::*;

    #[test]
    fn a_bad_value_is_named_by_its_attribute_path() {
        let config = WriterConfig {
            log_table: "t".into(),
            partition_key: "pk".into(),
            sort_key: None,
            record_type_attribute: "type".into(),
            record_types: ["p"].into_iter().collect(),
        };
        let cases = [
            (r#"{"Item":{"score":{"N":"1E+126"}}}"#, "score"),
            (r#"{"Item":{"stats":{"M":{"best":{"N":"x"}}}}}"#, "stats.best"),
            (
                r#"{"Item":{"moves":{"L":[{"S":"a"},{"N":"1e999"}]}}}"#,
                "moves[1]",
            ),
            (r#"{"Item":{"a.b":{"NS":["1","zz"]}}}"#, "a.b[1]"),
            (r#"{"Item":{"x":{"Q":"1"}}}"#, "x"),
        ];
        for (body, attribute) in cases {
            match config.validate(body) {
                Err(RecordError::Value { attribute: found, .. }) => assert_eq!(found, attribute, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
        assert!(matches!(
            config.validate(r#"{"Item":[1]}"#),
            Err(RecordError::Body { .. })
        ));
    }
}

/// The longest partition key value DynamoDB stores, in UTF-8 bytes (DynamoDB Developer Guide, Service,
/// account, and table quotas: "Partition key length and values").
pub const MAX_PARTITION_KEY_BYTES: usize = 2048;

/// The longest sort key value DynamoDB stores, in UTF-8 bytes (same source: "Sort key length and
/// values").
pub const MAX_SORT_KEY_BYTES: usize = 1024;

/// Why one message is not written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The body is not `{"Item": {...DynamoDB typed JSON...}}`.
    #[error(
        "the message body is not a log record: {reason}; send one record per message as \
         {{\"Item\":{{\"<attribute>\":{{\"S\":\"...\"}},...}}}} (DynamoDB typed JSON)"
    )]
    Body { reason: String },
    /// An attribute's value is not DynamoDB typed JSON, or not a value DynamoDB stores (a number out of
    /// range or with more than 38 digits, invalid base64).
    #[error(
        "attribute `{attribute}` holds no valid DynamoDB value: {reason}; fix the producer (values are \
         DynamoDB typed JSON such as {{\"N\":\"12.5\"}})"
    )]
    Value { attribute: String, reason: String },
    /// A key attribute is missing or not a non-empty string.
    #[error(
        "key attribute `{attribute}` is {found}; every log record needs the log's key attributes as \
         non-empty strings (S): fix the producer"
    )]
    Key { attribute: String, found: String },
    /// The record-type attribute is missing or not a string.
    #[error(
        "record-type attribute `{attribute}` is {found}; every log record needs its type as a string (S): \
         fix the producer"
    )]
    RecordType { attribute: String, found: String },
    /// The record type is not one of the log's.
    #[error(
        "record type {record_type:?} (attribute `{attribute}`) is not one of the log's record types \
         ({known}): fix the producer, or add it to the EventLog's spec.recordTypes"
    )]
    UnknownRecordType {
        attribute: String,
        record_type: String,
        known: String,
    },
    /// The record breaks one of DynamoDB's item rules (an empty set, a repeated set element, ...).
    #[error("the record cannot be stored in DynamoDB: {0}; fix the producer")]
    Item(crate::projection::ItemRuleError),
    /// Another message of the same batch carries a different record with the same key.
    #[error(
        "message {other} of the same batch carries a different record with the same key {key}; log records \
         are never overwritten on purpose: give every record its own key"
    )]
    Conflict { key: String, other: String },
    /// The record could not be written.
    #[error("the record could not be written to the log table: {0}")]
    Write(String),
    /// An earlier message of the same FIFO message group failed.
    #[error("an earlier message of FIFO message group {group:?} failed; retried after it to keep the order")]
    BehindFailure { group: String },
}

impl RecordError {
    /// A short, bounded label for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            RecordError::Body { .. } => "invalid-body",
            RecordError::Value { .. } => "invalid-value",
            RecordError::Key { .. } => "invalid-key",
            RecordError::RecordType { .. } => "invalid-record-type",
            RecordError::UnknownRecordType { .. } => "unknown-record-type",
            RecordError::Item(_) => "invalid-item",
            RecordError::Conflict { .. } => "conflict",
            RecordError::Write(_) => "write-failed",
            RecordError::BehindFailure { .. } => "fifo-behind-failure",
        }
    }
}

/// A `BatchWriteItem` call that failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// Throttling, a 5xx, a timeout: worth another try.
    #[error("BatchWriteItem failed (retryable): {0}")]
    Retryable(String),
    /// Access denied, table not found: the same call fails again, whatever its items.
    #[error("BatchWriteItem failed: {0}")]
    Permanent(String),
    /// Refused for its items (`ValidationException`: an item over 400 KB, a number out of range), without
    /// saying which: the same items fail again, others may not.
    #[error("BatchWriteItem refused: {0}")]
    Invalid(String),
}

/// Writes log records: `BatchWriteItem` with one `PutRequest` per item on the log table.
pub trait LogWriter {
    /// Puts `items` (at most [`MAX_BATCH_WRITE`], no two with the same key) and returns the items
    /// DynamoDB left unprocessed (`UnprocessedItems`); an `Err` means none was written.
    fn batch_write(&self, items: Vec<Item>) -> impl Future<Output = Result<Vec<Item>, WriteError>> + Send;
}

/// What one invocation did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WriterReport {
    /// The response to return to Lambda.
    pub response: SqsBatchResponse,
    /// Messages whose record was written (duplicates included).
    pub written: usize,
    /// Messages rejected as invalid (including conflicts).
    pub invalid: usize,
    /// Messages whose valid record could not be written, or that wait behind a failed FIFO message.
    pub failed: usize,
    /// Messages whose record was identical to an earlier message's in the batch (written once).
    pub duplicates: usize,
}

/// Handles one SQS event: validates, writes, and reports the messages not written.
pub async fn handle<W: LogWriter>(
    config: &WriterConfig,
    writer: &W,
    retry: &RetryPolicy,
    event: &SqsEvent,
) -> WriterReport {
    let messages = &event.records;
    let mut errors: Vec<Option<RecordError>> = vec![None; messages.len()];
    let mut report = WriterReport::default();

    // One write per distinct record; every message carrying it shares its outcome.
    let mut unique: Vec<(Item, Vec<usize>)> = Vec::new();
    let mut by_key: BTreeMap<(String, Option<String>), usize> = BTreeMap::new();
    for (i, message) in messages.iter().enumerate() {
        let item = match config.validate(message.text()) {
            Ok(item) => item,
            Err(e) => {
                errors[i] = Some(e);
                report.invalid += 1;
                continue;
            }
        };
        let key = config.key_of(&item);
        match by_key.get(&key) {
            Some(&slot) if unique[slot].0 == item => {
                unique[slot].1.push(i);
                report.duplicates += 1;
            }
            Some(&slot) => {
                let other = messages[unique[slot].1[0]].id().to_string();
                let key = match &key.1 {
                    Some(sk) => format!("{}={:?}, {}={sk:?}", config.partition_key, key.0, sk_name(config)),
                    None => format!("{}={:?}", config.partition_key, key.0),
                };
                errors[i] = Some(RecordError::Conflict { key, other });
                report.invalid += 1;
            }
            None => {
                by_key.insert(key, unique.len());
                unique.push((item, vec![i]));
            }
        }
    }

    let slots: Vec<usize> = (0..unique.len()).collect();
    for chunk in slots.chunks(MAX_BATCH_WRITE) {
        let failed = write_chunk(config, writer, retry, &unique, chunk, &by_key).await;
        for (slot, error) in failed {
            for &i in &unique[slot].1 {
                errors[i] = Some(RecordError::Write(error.clone()));
            }
        }
    }

    // FIFO: nothing of a group may succeed after a failed message of that group.
    let mut failed_groups = HashSet::new();
    for (i, message) in messages.iter().enumerate() {
        let Some(group) = message.message_group_id() else {
            continue;
        };
        if errors[i].is_some() {
            failed_groups.insert(group);
        } else if failed_groups.contains(group) {
            errors[i] = Some(RecordError::BehindFailure { group: group.to_string() });
        }
    }

    let mut failed_ids = Vec::new();
    for (message, error) in messages.iter().zip(&errors) {
        match error {
            None => report.written += 1,
            Some(error) => {
                if matches!(error, RecordError::Write(_) | RecordError::BehindFailure { .. }) {
                    report.failed += 1;
                }
                warn!(
                    message_id = %message.id(),
                    category = error.category(),
                    "log record not written: {error}"
                );
                failed_ids.push(message.id().to_string());
            }
        }
    }
    report.response = SqsBatchResponse::failed(failed_ids);
    report
}

/// Writes the records of `chunk` (slots of `unique`), retrying unprocessed items and retryable errors.
/// Returns the slots still not written, each with the reason. A call refused for its items
/// ([`WriteError::Invalid`]: one item too large, a number out of range) says nothing of which item, and
/// writes none: the group is split in halves and each written again, so only the items refused on their
/// own fail and the others are written.
async fn write_chunk<W: LogWriter>(
    config: &WriterConfig,
    writer: &W,
    retry: &RetryPolicy,
    unique: &[(Item, Vec<usize>)],
    chunk: &[usize],
    by_key: &BTreeMap<(String, Option<String>), usize>,
) -> Vec<(usize, String)> {
    let mut failed = Vec::new();
    let mut groups = vec![chunk.to_vec()];
    while let Some(group) = groups.pop() {
        match write_group(config, writer, retry, unique, group, by_key).await {
            None => {}
            Some(GroupFailure::Invalid(slots, _)) if slots.len() > 1 => {
                let (a, b) = slots.split_at(slots.len() / 2);
                groups.push(b.to_vec());
                groups.push(a.to_vec());
            }
            Some(GroupFailure::Invalid(slots, reason) | GroupFailure::Failed(slots, reason)) => {
                failed.extend(slots.into_iter().map(|slot| (slot, reason.clone())));
            }
        }
    }
    failed
}

/// Why a group of records was not (all) written: the slots not written, and the reason.
enum GroupFailure {
    /// The call was refused for its items.
    Invalid(Vec<usize>, String),
    /// Refused for good for the table, or still unprocessed or failing after the retries.
    Failed(Vec<usize>, String),
}

/// One group's `BatchWriteItem` with its retries; `None` when every record was written.
async fn write_group<W: LogWriter>(
    config: &WriterConfig,
    writer: &W,
    retry: &RetryPolicy,
    unique: &[(Item, Vec<usize>)],
    mut pending: Vec<usize>,
    by_key: &BTreeMap<(String, Option<String>), usize>,
) -> Option<GroupFailure> {
    let mut last_error = String::new();
    for attempt in 1..=retry.max_attempts.max(1) {
        if attempt > 1 {
            retry.wait_before(attempt).await;
        }
        let items = pending.iter().map(|&slot| unique[slot].0.clone()).collect();
        match writer.batch_write(items).await {
            Ok(unprocessed) => {
                // Back from items to slots; an item the writer did not get is ignored.
                let mut left: Vec<usize> = unprocessed
                    .iter()
                    .filter_map(|item| by_key.get(&config.key_of(item)).copied())
                    .filter(|slot| pending.contains(slot))
                    .collect();
                left.sort_unstable();
                left.dedup();
                pending = left;
                if pending.is_empty() {
                    return None;
                }
                last_error = format!(
                    "DynamoDB left it unprocessed after {attempt} attempt(s) (throttling); it is retried on \
                     redelivery; raise the log table's write capacity if this persists"
                );
            }
            Err(WriteError::Retryable(reason)) => {
                last_error = format!("{reason} (after {attempt} attempt(s))");
            }
            Err(WriteError::Invalid(reason)) => return Some(GroupFailure::Invalid(pending, reason)),
            Err(WriteError::Permanent(reason)) => return Some(GroupFailure::Failed(pending, reason)),
        }
    }
    Some(GroupFailure::Failed(pending, last_error))
}
