//! The projector: one per view. Projects each new log record into the view with the projection engine.
//!
//! Input ([`ProjectorEvent`]): the SNS event of the view's topic subscriptions (`Sns` fan-out; each
//! `Sns.Message` is a [`RoutedRecord`] published by the router) or the stream
//! event of the view's own event source mapping on the log stream (`Direct` fan-out). Both lead to the
//! same stream record, so both give the same writes.
//!
//! **A record by reference** (`Sns` fan-out): a record too large for an SNS message arrives as a
//! [`LogReference`] (its `Keys`, `eventName`, `SequenceNumber`, but no images). The projector reads the
//! item from the log table, the canonical store, with a strongly consistent `GetItem` ([`LogStore`]),
//! puts it in the record as its `NewImage` and projects it exactly as an inline record. Why the item read
//! is the record's:
//! - The log is append-only by contract: the writer ([`super::writer`]) only puts, never updates or
//!   deletes, and each record has its own key (e.g. `sk = LOG#<seq>`); a redelivered message rewrites the
//!   identical item, which DynamoDB does not even stream. The strongly consistent read sees every write
//!   acknowledged before it, so it sees the `INSERT` the reference was made from.
//! - A producer that breaks the contract (reuses a key with different content) overwrites the item: the
//!   stream then carries a `MODIFY`, which the router and projector ignore. The read returns the newer
//!   content; the projector projects it, as a backfill from the log would (the view converges on the log
//!   as it is), and counts it in [`ProjectorStats::newer_in_log`] with a warning naming the key: the
//!   reference's `newImageDigest` differs from the item's [`image_digest`].
//! - A missing item (deleted by hand or by a TTL, which the log's contract excludes) fails the record
//!   ([`ProjectorError::Retry`]: Lambda retries the event, then its on-failure destination keeps it):
//!   never skipped silently. So does a failed read.
//! - `MODIFY`/`REMOVE` references (the router sends none) are ignored as inline ones are.
//!
//! For each stream record: `MODIFY`/`REMOVE` are ignored and counted (the log is append-only); the
//! `NewImage` of an `INSERT` goes through [`ProjectionConfig::project`]; a write is applied with
//! [`ViewStore::apply`]. A write whose condition fails (an older or replayed record) counts as done.
//!
//! Errors, by what retrying could change:
//! - An SNS message that is no routed record, or of an envelope version this projector cannot read (a
//!   router of another operator version, mid-upgrade), fails the invocation like a retryable error: Lambda
//!   retries it, then the view's failure queue keeps it (`status.deadLetters`), never skipped.
//! - A record the engine cannot project ([`ProjectionError`]: a missing key attribute, a non-number
//!   ordering attribute, ...) and a [`StoreError::Permanent`]
//!   (e.g. an item over 400 KB) are **permanent record errors**: logged with the view, the record's keys
//!   and the fix, counted in [`ProjectorStats::rejected`], and the record is skipped. Retrying would fail
//!   the same way forever: on a stream it would block the shard (every later record waits behind it) until
//!   the records expire; with SNS it would only reach the dead-letter queue after Lambda's retries anyway.
//!   The backfill of the view (or a replay) picks the record up once the producer or the view is fixed.
//! - A [`StoreError::Retryable`] (throttling, a 5xx) fails the record. On a stream event, the handler stops
//!   there and reports that record's `SequenceNumber`: the mapping retries from it (records after it are
//!   projected again; the writes are idempotent). On an SNS event, which has no partial response, the
//!   handler still projects the other records, then returns [`ProjectorError::Retry`]: the caller returns
//!   it as the invocation's error so Lambda retries the whole event (then sends it to the function's
//!   on-failure destination or dead-letter queue).
//!
//! Environment: [`ENV_PROJECTION`], the JSON of a [`ProjectorConfig`]; [`ENV_MAX_LAG_MS`], the view's
//! `spec.promotion.maxLag` for its progress reports.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tracing::{error, warn};

use super::ConfigError;
use super::event::{BatchFailures, SnsEvent, StreamEvent, StreamEventName};
use super::event::{
    BatchResponse, LOG_REFERENCE_KIND, LOG_REFERENCE_VERSION, LogReference, ProjectorEvent,
    ROUTED_RECORD_KIND, ROUTED_RECORD_VERSION, RoutedRecord, StreamRecord, image_digest,
};
use super::progress::{BatchProgress, LiveReport, ProgressReporter};
use crate::crd::RecordErrorPolicy;
use crate::crd::{
    EventLogRef, EventLogSpec, FanOutSpec, LogTableSpec, MaterializedViewSpec, Projection, RecordType,
};
use crate::projection::{Applied, Item, MemoryStore, ProjectionConfig, ProjectionError, ViewWrite};

/// The view's projection: a [`ProjectorConfig`] as JSON.
pub const ENV_PROJECTION: &str = "PROJECTION";

/// The view's `spec.promotion.maxLag` in milliseconds (a decimal integer), set by the operator on the
/// built-in projector: a report whose lag crosses it is written at once ([`super::progress`]). Missing or
/// not a number: such crossings are reported at the next reporting interval.
pub const ENV_MAX_LAG_MS: &str = "LIVE_MAX_LAG_MS";

/// [`ENV_MAX_LAG_MS`] read through `lookup`.
pub fn max_lag_from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Option<i64> {
    lookup(ENV_MAX_LAG_MS)
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|ms| *ms >= 0)
}

/// Everything the built-in projector of one view needs, serializable into [`ENV_PROJECTION`]. The
/// operator builds it with [`ProjectorConfig::for_view`]. Lambda allows 4 KB of environment variables in
/// all, which a declarative projection fits in easily.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProjectorConfig {
    /// The view's name (in errors and logs).
    pub view: String,
    /// The views table the [`ViewStore`] writes to.
    pub table: String,
    /// The view's key prefix in a shared table; empty for a dedicated table.
    #[serde(default)]
    pub key_prefix: String,
    /// The view's `spec.recordTypes`.
    pub record_types: Vec<RecordType>,
    /// The view's `spec.projection`.
    pub projection: Projection,
    /// What the projection needs of the log's `spec.table`.
    pub log: LogSchema,
}

/// The attributes of the log table the projection reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogSchema {
    pub partition_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort_key: Option<String>,
    pub record_type_attribute: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_attribute: Option<String>,
    /// The log table's name: where the projector reads a record that came by reference
    /// ([`LogReference`]). `None` in a configuration written before references existed; such a
    /// projector fails references until it is redeployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
}

impl ProjectorConfig {
    /// The configuration of view `view_name`'s projector, checked by compiling it. Fails like
    /// [`ProjectionConfig::from_spec`] (a custom projector or an invalid projection).
    pub fn for_view(
        view_name: &str,
        view: &MaterializedViewSpec,
        log: &EventLogSpec,
        table: &str,
        key_prefix: &str,
    ) -> Result<Self, ProjectionError> {
        ProjectionConfig::from_spec(view_name, view, log, key_prefix)?;
        let Some(projection) = view.projection.clone() else {
            return Err(ProjectionError::MissingProjection { view: view_name.to_string() });
        };
        Ok(ProjectorConfig {
            view: view_name.to_string(),
            table: table.to_string(),
            key_prefix: key_prefix.to_string(),
            record_types: view.record_types.clone(),
            projection,
            log: LogSchema {
                partition_key: log.table.partition_key.clone(),
                sort_key: log.table.sort_key.clone(),
                record_type_attribute: log.table.record_type_attribute.clone(),
                ordering_attribute: log.table.ordering_attribute.clone(),
                table: None,
            },
        })
    }

    /// The configuration reading references from log table `log_table` ([`LogSchema::table`]).
    pub fn with_log_table(mut self, log_table: &str) -> Self {
        self.log.table = Some(log_table.to_string()).filter(|t| !t.is_empty());
        self
    }

    /// The value of [`ENV_PROJECTION`].
    pub fn to_env_value(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    /// The function's environment: [`ENV_PROJECTION`], what [`ProjectorConfig::from_lookup`] reads.
    pub fn to_env(&self) -> Result<BTreeMap<String, String>, serde_json::Error> {
        Ok(BTreeMap::from([(
            ENV_PROJECTION.to_string(),
            self.to_env_value()?,
        )]))
    }

    /// A digest of the configuration (16 hex digits): the operator compares it with the one a failing
    /// projector noted, so a record error under `onRecordError: Fail` is reported only while the
    /// projection that fails on it is deployed.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let json = self.to_env_value().unwrap_or_default();
        Sha256::digest(json.as_bytes())
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Reads and checks the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(super::process_env)
    }

    /// Reads the configuration through `lookup` (variable name → value) and checks that it compiles.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let raw = super::required(
            &lookup,
            ENV_PROJECTION,
            "the operator sets it to the view's projection as JSON; redeploy the view's projector",
        )?;
        let invalid =
            |reason: String| ConfigError::Invalid { var: ENV_PROJECTION, value: raw.clone(), reason };
        let config: ProjectorConfig = serde_json::from_str(&raw).map_err(|e| {
            invalid(format!(
                "{e}; it must be the JSON the operator writes ({{\"view\",\"table\",\"keyPrefix\",\
                 \"recordTypes\",\"projection\",\"log\"}}): redeploy the view's projector"
            ))
        })?;
        config.compile().map_err(|e| invalid(e.to_string()))?;
        Ok(config)
    }

    /// The engine's configuration. Rebuilds the two specs from the parts the engine reads, so the
    /// projector compiles exactly as the backfill does.
    pub fn compile(&self) -> Result<ProjectionConfig, ProjectionError> {
        let view = MaterializedViewSpec {
            event_log_ref: EventLogRef { name: String::new() },
            record_types: self.record_types.clone(),
            projection: Some(self.projection.clone()),
            projector: Default::default(),
            store: Default::default(),
            backfill: Default::default(),
            promotion: Default::default(),
            subscribers: None,
            deletion_policy: Default::default(),
        };
        let log = EventLogSpec {
            record_types: self.record_types.clone(),
            table: LogTableSpec {
                name: None,
                partition_key: self.log.partition_key.clone(),
                sort_key: self.log.sort_key.clone(),
                record_type_attribute: self.log.record_type_attribute.clone(),
                ordering_attribute: self.log.ordering_attribute.clone(),
                billing: Default::default(),
                stream_view_type: Default::default(),
                point_in_time_recovery: true,
                adopt_existing: false,
            },
            ingest: None,
            fan_out: FanOutSpec::default(),
            export: None,
            deletion_policy: Default::default(),
        };
        ProjectionConfig::from_spec(&self.view, &view, &log, &self.key_prefix)
    }
}

/// A view write that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Throttling, a 5xx, a timeout, a transaction conflict: worth another try.
    #[error("view write failed (retryable): {0}")]
    Retryable(String),
    /// Validation (item too large, bad key), access denied, table not found: the same write fails again.
    #[error("view write failed: {0}")]
    Permanent(String),
}

/// Applies view writes with the DynamoDB semantics documented on [`ViewWrite`] (see
/// `crate::projection::dynamo` for the requests). A failed condition is `Ok(Applied::ConditionFailed)`,
/// not an error.
pub trait ViewStore {
    fn apply(&self, write: ViewWrite) -> impl Future<Output = Result<Applied, StoreError>> + Send;

    /// Notes a record error for the operator to report (`status.recordErrors`, or with `failing` the
    /// view's `Failed` condition): the DynamoDB store writes the view's record-error ledger
    /// ([`crate::projection::dynamo::record_errors_key`]). Best effort: the record's own outcome does not
    /// depend on it. The reference store keeps nothing.
    /// `id`: the record's identity ([`crate::projection::RecordId::digest`]), so a record noted again
    /// (a redelivery) counts once.
    fn record_error(&self, id: &str, message: &str, failing: bool) -> impl Future<Output = ()> + Send {
        let _ = (id, message, failing);
        std::future::ready(())
    }

    /// Writes a report of the function's progress to the view's live-progress item for the operator
    /// ([`crate::projection::dynamo::live_progress_key`], [`super::progress`]). Best effort, like
    /// [`ViewStore::record_error`]. The reference store keeps nothing.
    fn report_live(&self, report: &LiveReport) -> impl Future<Output = ()> + Send {
        let _ = report;
        std::future::ready(())
    }
}

/// The reference store: [`MemoryStore`] behind a lock. Its errors (what DynamoDB would reject with a
/// `ValidationException`) are permanent.
impl ViewStore for Mutex<MemoryStore> {
    fn apply(&self, write: ViewWrite) -> impl Future<Output = Result<Applied, StoreError>> + Send {
        let result = match self.lock() {
            Ok(mut store) => store
                .apply(&write)
                .map_err(|e| StoreError::Permanent(e.to_string())),
            Err(_) => Err(StoreError::Permanent(
                "the in-memory store's lock is poisoned".to_string(),
            )),
        };
        std::future::ready(result)
    }
}

/// A read of the log table that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogReadError {
    /// Throttling, a 5xx, a timeout: worth another try.
    #[error("log read failed (retryable): {0}")]
    Retryable(String),
    /// Access denied, table not found, no log table configured: the same read fails again.
    #[error("log read failed: {0}")]
    Permanent(String),
}

/// Reads log items by primary key: where a record sent by reference ([`LogReference`]) is read.
pub trait LogStore {
    /// The item whose primary key is `key` (a stream record's `Keys`: the partition key and, if the log
    /// has one, the sort key), read strongly consistently; `Ok(None)` when the log has no such item.
    fn get_item(&self, key: &Item) -> impl Future<Output = Result<Option<Item>, LogReadError>> + Send;
}

/// The [`LogStore`] of a projector that has no log table ([`LogSchema::table`] unset, or a caller that
/// never receives references): every read fails, permanently, saying so.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLogTable;

impl LogStore for NoLogTable {
    fn get_item(&self, _key: &Item) -> impl Future<Output = Result<Option<Item>, LogReadError>> + Send {
        std::future::ready(Err(LogReadError::Permanent(
            "this projector has no log table to read a record sent by reference from (PROJECTION has no \
             log.table): redeploy the view's projector with this operator version"
                .to_string(),
        )))
    }
}

/// What one invocation did, in records.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProjectorStats {
    /// Writes that changed the view (or rewrote it identically).
    pub applied: usize,
    /// Writes whose condition failed: an older or replayed record.
    pub unchanged: usize,
    /// Records not for this view (another record type, or a filter condition false).
    pub not_for_view: usize,
    /// `MODIFY`/`REMOVE` records.
    pub ignored: usize,
    /// Permanent record errors, skipped.
    pub rejected: usize,
    /// Records that came by reference ([`LogReference`]) and were read from the log.
    pub by_reference: usize,
    /// Of `by_reference`, items whose content differs from the referenced record's `NewImage`: the key
    /// was rewritten since (a producer reusing a key); the item as the log holds it was projected.
    pub newer_in_log: usize,
    /// Records that failed with a retryable error, or (stream) were left for the retry behind one.
    pub failed: usize,
    /// The records finished (every outcome above but `failed`) and their creation times: what the
    /// function reports of its lag ([`super::progress`]).
    pub progress: BatchProgress,
}

/// The result of a stream event, or of an SNS event that needs no retry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProjectorReport {
    /// The response to return to Lambda (always empty for SNS events).
    pub response: BatchResponse,
    pub stats: ProjectorStats,
    /// Why the stream batch stopped at a record (a retryable error; Lambda retries from it), if it did.
    pub failure: Option<String>,
}

/// An SNS event with a record that must be retried: return it as the invocation's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectorError {
    #[error(
        "view {view}: {failed} of {total} SNS record(s) could not be written ({reason}); Lambda retries the \
         event"
    )]
    Retry {
        view: String,
        failed: usize,
        total: usize,
        reason: String,
        stats: ProjectorStats,
    },
}

/// Why a record fails the batch or the invocation (Lambda retries it, then its on-failure destination
/// keeps it). `category()` is its metric label.
#[derive(Debug, thiserror::Error)]
pub enum RecordFailure {
    /// A log reference (a record too large for SNS) without the keys to read it by.
    #[error(
        "a log reference without Keys (stream sequence number {sequence}): the router that sent it is \
         broken; the record cannot be read from the log"
    )]
    ReferenceWithoutKeys { sequence: String },
    /// The log item a reference names is gone.
    #[error(
        "log record {{{keys}}} (stream sequence number {sequence}) came by reference, but the log table has \
         no item with that key: the log is append-only, so it was deleted (by hand or a TTL); restore it and \
         replay the event from the projector's on-failure destination"
    )]
    ReferenceMissing { keys: String, sequence: String },
    /// The log item a reference names could not be read (DynamoDB's error).
    #[error(
        "log record {{{keys}}} (stream sequence number {sequence}) came by reference and could not be read \
         from the log: {reason}"
    )]
    ReferenceUnreadable {
        keys: String,
        sequence: String,
        reason: String,
    },
    /// An SNS message of the reference kind whose body does not parse.
    #[error("a log reference that cannot be read ({0})")]
    UnreadableReference(String),
    /// A record the view cannot apply, under `spec.projection.onRecordError: Fail`.
    #[error("record error (spec.projection.onRecordError Fail): {0}")]
    Stopped(String),
    /// The view write failed in a way worth retrying (throttling, 5xx, a timeout).
    #[error("view write failed: {0}")]
    ViewWrite(String),
}

impl RecordFailure {
    /// A short, bounded label: `reference`, `record-error`, `view-write`.
    pub fn category(&self) -> &'static str {
        match self {
            RecordFailure::ReferenceWithoutKeys { .. }
            | RecordFailure::ReferenceMissing { .. }
            | RecordFailure::ReferenceUnreadable { .. }
            | RecordFailure::UnreadableReference(_) => "reference",
            RecordFailure::Stopped(_) => "record-error",
            RecordFailure::ViewWrite(_) => "view-write",
        }
    }
}

/// Handles one event without a log table ([`NoLogTable`]: a record by reference fails); see
/// [`handle_with_log`].
pub async fn handle<S: ViewStore>(
    config: &ProjectionConfig,
    store: &S,
    event: &ProjectorEvent,
) -> Result<ProjectorReport, ProjectorError> {
    handle_with_log(config, store, &NoLogTable, event).await
}

/// Handles one event, reading records sent by reference from `log`; see the module documentation.
pub async fn handle_with_log<S: ViewStore, L: LogStore>(
    config: &ProjectionConfig,
    store: &S,
    log: &L,
    event: &ProjectorEvent,
) -> Result<ProjectorReport, ProjectorError> {
    match event {
        ProjectorEvent::Stream(event) => Ok(handle_stream(config, store, event).await),
        ProjectorEvent::Sns(event) => handle_sns_with_log(config, store, log, event).await,
    }
}

/// A stream event: stops at the first retryable failure and reports its `SequenceNumber`.
pub async fn handle_stream<S: ViewStore>(
    config: &ProjectionConfig,
    store: &S,
    event: &StreamEvent,
) -> ProjectorReport {
    let mut report = ProjectorReport::default();
    report.stats.progress.stream = true;
    for (i, record) in event.records.iter().enumerate() {
        if let Err(failure) = project_record(config, store, record, &mut report.stats).await {
            let reason = failure.to_string();
            let sequence = &record.dynamodb.sequence_number;
            warn!(
                view = config.view_name(),
                sequence_number = %sequence,
                "{reason}; the event source mapping retries from this record"
            );
            report.stats.failed = event.records.len() - i;
            report.response = BatchResponse::failed([sequence.clone()]);
            report.failure = Some(reason);
            break;
        }
    }
    report
}

/// An SNS event without a log table ([`NoLogTable`]); see [`handle_sns_with_log`].
pub async fn handle_sns<S: ViewStore>(
    config: &ProjectionConfig,
    store: &S,
    event: &SnsEvent,
) -> Result<ProjectorReport, ProjectorError> {
    handle_sns_with_log(config, store, &NoLogTable, event).await
}

/// An SNS event: projects every record (reading those sent by reference from `log`), then fails the
/// invocation if any must be retried.
pub async fn handle_sns_with_log<S: ViewStore, L: LogStore>(
    config: &ProjectionConfig,
    store: &S,
    log: &L,
    event: &SnsEvent,
) -> Result<ProjectorReport, ProjectorError> {
    let mut stats = ProjectorStats::default();
    let mut first_reason = None;
    for record in &event.records {
        let message_id = &record.sns.message_id;
        let routed = match serde_json::from_str::<RoutedRecord>(&record.sns.message) {
            Ok(routed) if routed.kind == ROUTED_RECORD_KIND && routed.version == ROUTED_RECORD_VERSION => {
                routed
            }
            Ok(routed) if routed.kind == LOG_REFERENCE_KIND && routed.version == LOG_REFERENCE_VERSION => {
                let resolved = match serde_json::from_str::<LogReference>(&record.sns.message) {
                    Ok(reference) => resolve_reference(config, log, reference, &mut stats).await,
                    Err(e) => Err(RecordFailure::UnreadableReference(e.to_string())),
                };
                match resolved {
                    Ok(record) => RoutedRecord::new(record),
                    Err(failure) => {
                        let reason = failure.to_string();
                        error!(view = config.view_name(), message_id = %message_id, "{reason}");
                        stats.failed += 1;
                        first_reason.get_or_insert(reason);
                        continue;
                    }
                }
            }
            // A message this projector cannot read is never skipped: the invocation fails, so Lambda retries
            // it and then its on-failure destination (the view's failure queue, `status.deadLetters`)
            // keeps it for a replay once the cause is fixed.
            Ok(routed) => {
                let reason = format!(
                    "an SNS message of kind {:?} version {} (message {message_id}), which this projector cannot \
                     read: it reads kind {ROUTED_RECORD_KIND:?} version {ROUTED_RECORD_VERSION} and kind \
                     {LOG_REFERENCE_KIND:?} version {LOG_REFERENCE_VERSION}; Lambda retries it, then the view's \
                     failure queue keeps it: upgrade the projector or the router so both run the same operator \
                     version, then replay the view (`kubectl kappa replay`)",
                    routed.kind, routed.version
                );
                error!(view = config.view_name(), message_id = %message_id, "{reason}");
                stats.failed += 1;
                first_reason.get_or_insert(reason);
                continue;
            }
            Err(e) => {
                let reason = format!(
                    "an SNS message that is not a routed log record (message {message_id}: {e}); only the \
                     router may publish to the log's topics: Lambda retries it, then the view's failure queue \
                     keeps it for you to inspect"
                );
                error!(view = config.view_name(), message_id = %message_id, "{reason}");
                stats.failed += 1;
                first_reason.get_or_insert(reason);
                continue;
            }
        };
        if let Err(failure) = project_record(config, store, &routed.record, &mut stats).await {
            let reason = failure.to_string();
            warn!(view = config.view_name(), message_id = %message_id, "{reason}");
            stats.failed += 1;
            first_reason.get_or_insert(reason);
        }
    }
    match first_reason {
        None => Ok(ProjectorReport { response: BatchResponse::success(), stats, failure: None }),
        Some(reason) => Err(ProjectorError::Retry {
            view: config.view_name().to_string(),
            failed: stats.failed,
            total: event.records.len(),
            reason,
            stats,
        }),
    }
}

/// After an invocation ended with `outcome`: feeds `reporter` (the instance's reporting rule) and writes
/// the report it asks for with [`ViewStore::report_live`]. `now_ms`: epoch milliseconds.
pub async fn report_progress<S: ViewStore>(
    store: &S,
    reporter: &Mutex<ProgressReporter>,
    outcome: &Result<ProjectorReport, ProjectorError>,
    now_ms: i64,
) {
    let (progress, failure) = match outcome {
        Ok(report) => (&report.stats.progress, report.failure.as_deref()),
        Err(ProjectorError::Retry { stats, reason, .. }) => (&stats.progress, Some(reason.as_str())),
    };
    let report = match reporter.lock() {
        Ok(mut reporter) => reporter.observe(now_ms, progress, failure),
        Err(_) => None,
    };
    if let Some(report) = report {
        store.report_live(&report).await;
    }
}

/// The stream record a [`LogReference`] stands for: its `Keys`' item read from the log as `NewImage`.
/// `Err` (the reason, naming the key and the table's state) when the item cannot be read or is missing:
/// the record then fails, never is skipped. Counts [`ProjectorStats::by_reference`] and
/// [`ProjectorStats::newer_in_log`].
async fn resolve_reference<L: LogStore>(
    config: &ProjectionConfig,
    log: &L,
    reference: LogReference,
    stats: &mut ProjectorStats,
) -> Result<StreamRecord, RecordFailure> {
    let mut record = reference.record;
    if record.event_name != StreamEventName::Insert {
        // Ignored by `project_record`, as an inline MODIFY/REMOVE is.
        return Ok(record);
    }
    let keys = describe_keys(&record.dynamodb.keys);
    let sequence = record.dynamodb.sequence_number.clone();
    if record.dynamodb.keys.is_empty() {
        return Err(RecordFailure::ReferenceWithoutKeys { sequence });
    }
    let item = match log.get_item(&record.dynamodb.keys).await {
        Ok(Some(item)) => item,
        Ok(None) => {
            return Err(RecordFailure::ReferenceMissing { keys, sequence });
        }
        Err(e) => {
            return Err(RecordFailure::ReferenceUnreadable { keys, sequence, reason: e.to_string() });
        }
    };
    stats.by_reference += 1;
    if image_digest(&item) != reference.new_image_digest {
        warn!(
            view = config.view_name(),
            sequence_number = %sequence,
            "log record {{{keys}}} was rewritten since this record (a producer reused its key); projecting \
             the item as the log holds it now, as a backfill would"
        );
        stats.newer_in_log += 1;
    }
    record.dynamodb.new_image = Some(item);
    Ok(record)
}

/// `name=value, ...` of a record's keys, for messages.
fn describe_keys(keys: &Item) -> String {
    keys.iter()
        .map(|(name, value)| match value {
            crate::projection::Value::S(text) => format!("{name}={text:?}"),
            crate::projection::Value::N(n) => format!("{name}={n}"),
            other => format!("{name}={other:?}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A record's identity for the record-error ledger: its log key's digest, or (keys unreadable) its
/// stream sequence number, which a redelivery keeps too.
fn record_identity(config: &ProjectionConfig, record: &StreamRecord) -> String {
    let image = record
        .dynamodb
        .new_image
        .as_ref()
        .unwrap_or(&record.dynamodb.keys);
    config
        .record_id(image)
        .or_else(|| config.record_id(&record.dynamodb.keys))
        .map(|id| id.digest())
        .unwrap_or_else(|| format!("seq:{}", record.dynamodb.sequence_number))
}

/// A record error's message for `status.recordErrors`: the record's log keys (and stream sequence
/// number), then `reason`.
fn record_error(record: &StreamRecord, reason: &str) -> String {
    let keys: Vec<String> = record
        .dynamodb
        .keys
        .iter()
        .map(|(name, value)| match value {
            crate::projection::Value::S(text) => format!("{name}={text:?}"),
            crate::projection::Value::N(n) => format!("{name}={n}"),
            other => format!("{name}={other:?}"),
        })
        .collect();
    // The reason says how to fix it when it can (a DynamoDB refusal does).
    let fix = match reason.contains("spec.projection.filter") {
        true => "",
        false => "; leave such records out with spec.projection.filter, or change the projection",
    };
    format!(
        "log record {{{}}} (stream sequence number {}): {reason}{fix}",
        keys.join(", "),
        record.dynamodb.sequence_number
    )
}

/// Projects and applies one stream record. `Err` (the reason) for a retryable store error, or a record
/// error under `onRecordError: Fail` (the batch then reports it as failed, from it on); every
/// other outcome is counted in `stats`.
async fn project_record<S: ViewStore>(
    config: &ProjectionConfig,
    store: &S,
    record: &StreamRecord,
    stats: &mut ProjectorStats,
) -> Result<(), RecordFailure> {
    project_counted(config, store, record, stats).await?;
    stats.progress.finished(record);
    Ok(())
}

/// [`project_record`] without the progress count.
async fn project_counted<S: ViewStore>(
    config: &ProjectionConfig,
    store: &S,
    record: &StreamRecord,
    stats: &mut ProjectorStats,
) -> Result<(), RecordFailure> {
    let view = config.view_name();
    let sequence = &record.dynamodb.sequence_number;
    if record.event_name != StreamEventName::Insert {
        stats.ignored += 1;
        return Ok(());
    }
    let Some(image) = &record.dynamodb.new_image else {
        error!(
            view,
            sequence_number = %sequence,
            "skipping an INSERT without NewImage: the log's stream must carry new images \
             (spec.table.streamViewType NewImage or NewAndOldImages)"
        );
        stats.rejected += 1;
        return Ok(());
    };
    let write = match config.project(image) {
        Ok(Some(write)) => write,
        Ok(None) => {
            stats.not_for_view += 1;
            return Ok(());
        }
        Err(e) if config.on_record_error() == RecordErrorPolicy::Fail => {
            error!(view, sequence_number = %sequence, category = e.category(), "stopping at a record (onRecordError Fail): {e}");
            store
                .record_error(
                    &record_identity(config, record),
                    &record_error(record, &e.to_string()),
                    true,
                )
                .await;
            return Err(RecordFailure::Stopped(e.to_string()));
        }
        Err(e) => {
            error!(view, sequence_number = %sequence, category = e.category(), "skipping a record: {e}");
            store
                .record_error(
                    &record_identity(config, record),
                    &record_error(record, &e.to_string()),
                    false,
                )
                .await;
            stats.rejected += 1;
            return Ok(());
        }
    };
    match store.apply(write).await {
        Ok(Applied::Written) => stats.applied += 1,
        Ok(Applied::ConditionFailed) => stats.unchanged += 1,
        Err(StoreError::Permanent(reason)) if config.on_record_error() == RecordErrorPolicy::Fail => {
            error!(view, sequence_number = %sequence, "stopping at a record whose view write is rejected (onRecordError Fail): {reason}");
            store
                .record_error(
                    &record_identity(config, record),
                    &record_error(record, &reason),
                    true,
                )
                .await;
            return Err(RecordFailure::Stopped(reason));
        }
        Err(StoreError::Permanent(reason)) => {
            error!(view, sequence_number = %sequence, "skipping a record whose view write is rejected: {reason}");
            store
                .record_error(
                    &record_identity(config, record),
                    &record_error(record, &reason),
                    false,
                )
                .await;
            stats.rejected += 1;
        }
        Err(StoreError::Retryable(reason)) => return Err(RecordFailure::ViewWrite(reason)),
    }
    Ok(())
}
