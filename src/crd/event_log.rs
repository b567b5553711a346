//! `EventLog`: the append-only log that is the canonical store, and what moves records in and out of it.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, DeletionPolicy};

/// An append-only log on DynamoDB: the canonical store every MaterializedView is projected from.
///
/// The operator provisions the log table (Streams and point-in-time recovery on), an optional SQS ingest
/// queue drained by the built-in writer Lambda (the only principal allowed to write the log), and the
/// fan-out that delivers each record to the views that need its record type.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kappa.dev",
    version = "v1alpha1",
    kind = "EventLog",
    namespaced,
    status = "EventLogStatus",
    shortname = "elog",
    category = "kappa",
    printcolumn(name = "Table", type_ = "string", json_path = ".status.table.name"),
    printcolumn(name = "FanOut", type_ = "string", json_path = ".status.fanOut"),
    printcolumn(name = "Views", type_ = "integer", json_path = ".status.views"),
    printcolumn(
        name = "DeadLetters",
        type_ = "integer",
        json_path = ".status.deadLetters",
        priority = 1
    ),
    printcolumn(
        name = "RouterDeadLetters",
        type_ = "integer",
        json_path = ".status.routerDeadLetters",
        priority = 1
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new(
    "!has(self.fanOut) || !has(self.fanOut.topics) || self.fanOut.topics.all(t, t.recordTypes.all(r, r in self.recordTypes))"
).message("every record type in spec.fanOut.topics[].recordTypes must be listed in spec.recordTypes").field_path(".fanOut.topics"))]
#[serde(rename_all = "camelCase")]
pub struct EventLogSpec {
    /// The record types this log carries, as found in the table's `recordTypeAttribute`. Views may only
    /// project record types listed here.
    #[schemars(length(min = 1, max = 50))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub record_types: Vec<RecordType>,

    /// The log table.
    pub table: LogTableSpec,

    /// An SQS queue that producers send records to; the built-in writer Lambda drains it into the log.
    /// Without it, producers need their own write access to the table.
    pub ingest: Option<IngestSpec>,

    /// How records reach the views' projectors.
    #[serde(default)]
    pub fan_out: FanOutSpec,

    /// Where point-in-time exports of the log are written for backfills. Required by views whose
    /// `backfill.source` is `Export`.
    pub export: Option<ExportSpec>,

    /// What happens to the AWS resources when this EventLog is deleted. `Retain` (the default) keeps the
    /// table and everything else; `Delete` removes only what carries this EventLog's ownership tags.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// A record type name, as stored in the log's `recordTypeAttribute`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
#[serde(transparent)]
pub struct RecordType(
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
    )]
    pub String,
);

impl RecordType {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RecordType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The DynamoDB table that holds the log.
#[serde_with::skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.sortKey) == has(oldSelf.sortKey) && (!has(self.sortKey) || self.sortKey == oldSelf.sortKey)")
    .message("spec.table.sortKey is immutable: DynamoDB cannot change a table's keys; create a new EventLog instead")
    .field_path(".sortKey"))]
#[x_kube(validation = Rule::new("has(self.name) == has(oldSelf.name) && (!has(self.name) || self.name == oldSelf.name)")
    .message("spec.table.name is immutable: a new name would be a new table; create a new EventLog instead")
    .field_path(".name"))]
#[x_kube(validation = Rule::new("!self.adoptExisting || has(self.name)")
    .message("spec.table.name is required when spec.table.adoptExisting is true: name the table to adopt")
    .field_path(".name"))]
pub struct LogTableSpec {
    /// The table name. Optional: by default a collision-free name is derived from the cluster id,
    /// namespace and EventLog name. Immutable. Names starting with `kappa-` are reserved for derived
    /// names. A table of this name that exists already is only used if this EventLog created it (its
    /// `kappa.dev/*` tags, uid included, say so) or adopts it (`adoptExisting`).
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{3,255}$"))]
    pub name: Option<String>,

    /// The partition key attribute (a string). Immutable.
    #[serde(default = "default_partition_key")]
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"))]
    #[x_kube(validation = Rule::new("self == oldSelf")
        .message("spec.table.partitionKey is immutable: DynamoDB cannot change a table's keys; create a new EventLog instead"))]
    pub partition_key: String,

    /// The sort key attribute (a string), if the table has one. Immutable.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"))]
    pub sort_key: Option<String>,

    /// The attribute that holds a record's type; routing and view filters read it.
    #[serde(default = "default_record_type_attribute")]
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"))]
    pub record_type_attribute: String,

    /// A number attribute that grows with every record of one key; `Latest` views keep the record with
    /// the greatest value, so delivery order and replays do not matter.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"))]
    pub ordering_attribute: Option<String>,

    /// Capacity mode of the table, applied to the table when it changes: one `UpdateTable` at a time,
    /// the EventLog Ready at a generation only once the table has it. AWS limits the changes: a table may
    /// switch from provisioned to on-demand at most 4 times in a 24-hour rolling window (on-demand to
    /// provisioned at any time), and decrease its provisioned capacity only a few times per UTC day
    /// (DynamoDB Developer Guide, "Considerations when switching capacity modes" and "Quotas"). A change
    /// AWS refuses leaves the EventLog not Ready with reason `TableSettingRefused`, the message naming
    /// AWS's error code, the field and the fix, and a Warning event; it is tried again at every resync.
    /// An adopted table's billing is not changed (see `adoptExisting`).
    #[serde(default)]
    pub billing: BillingSpec,

    /// What each stream record carries. Immutable: a DynamoDB stream's view type is fixed while the
    /// stream is enabled, and turning it off and on again starts a new stream, so records written in
    /// between would be in no stream. To change it, create a new EventLog (and replay). A table whose
    /// enabled stream has another view type (an adopted one) is never changed: the EventLog is not Ready,
    /// reason `TableSettingRefused`, naming the table's view type.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf")
        .message("spec.table.streamViewType cannot change: a DynamoDB stream's view type is fixed while it is enabled, and re-enabling starts a new stream (records written in between would be in no stream); create a new EventLog (and replay) instead"))]
    pub stream_view_type: StreamViewType,

    /// Point-in-time recovery. On by default: backfills export the log at a point in time, which needs it.
    /// Applied both ways: turning it off disables PITR on the table (its recovery window is lost). An
    /// adopted table's PITR is not changed (see `adoptExisting`).
    #[serde(default = "default_true")]
    pub point_in_time_recovery: bool,

    /// Adopt an existing table of this `name` instead of creating one. Its keys must match the spec; an
    /// adopted table is never deleted by the operator. Only a table without kappa ownership tags, and
    /// only when the operator's `--adoptable-tables` setting (chart value `adoption.tables`) allows it for
    /// this namespace; otherwise the EventLog is Stalled with reason `AdoptionRefused`.
    ///
    /// An adopted table stays the user's: the operator enables its stream if it has none (with
    /// `streamViewType`) and tags it `kappa.dev/adopted-by`, but never changes its billing, capacity,
    /// point-in-time recovery or deletion protection. Where they differ from the spec, the EventLog is
    /// Ready and `status.table.settingsNotApplied` (and the Ready message) names each field, the declared
    /// and the actual setting.
    #[serde(default)]
    pub adopt_existing: bool,
}

fn default_partition_key() -> String {
    "pk".into()
}
fn default_record_type_attribute() -> String {
    "type".into()
}
fn default_true() -> bool {
    true
}

/// Capacity mode and, when provisioned, the capacity.
#[serde_with::skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.mode == 'Provisioned' ? (has(self.readCapacityUnits) && has(self.writeCapacityUnits)) : (!has(self.readCapacityUnits) && !has(self.writeCapacityUnits))")
    .message("readCapacityUnits and writeCapacityUnits are required with mode Provisioned and not allowed with mode OnDemand"))]
pub struct BillingSpec {
    /// `OnDemand` (the default) or `Provisioned`.
    #[serde(default)]
    pub mode: BillingMode,
    /// Read capacity units, with mode `Provisioned`.
    #[schemars(range(min = 1, max = 40000))]
    pub read_capacity_units: Option<i64>,
    /// Write capacity units, with mode `Provisioned`.
    #[schemars(range(min = 1, max = 40000))]
    pub write_capacity_units: Option<i64>,
}

/// DynamoDB capacity mode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum BillingMode {
    /// Pay per request.
    #[default]
    OnDemand,
    /// Fixed read and write capacity units.
    Provisioned,
}

/// What a stream record carries. `KEYS_ONLY` and `OLD_IMAGE` are not offered: projections need the new image.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum StreamViewType {
    /// The item after the change.
    NewImage,
    /// The item before and after the change (the default).
    #[default]
    NewAndOldImages,
}

/// The SQS queue producers send records to, drained by the built-in writer Lambda.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.queueType != 'Fifo' || self.batchSize <= 10")
    .message("batchSize must be at most 10 for a Fifo queue").field_path(".batchSize"))]
#[x_kube(validation = Rule::new("self.queueType != 'Fifo' || self.maximumBatchingWindowSeconds == 0")
    .message("maximumBatchingWindowSeconds must be 0 for a Fifo queue: SQS FIFO event source mappings do not batch by time")
    .field_path(".maximumBatchingWindowSeconds"))]
#[x_kube(validation = Rule::new("self.batchSize <= 10 || self.maximumBatchingWindowSeconds >= 1")
    .message("a batchSize above 10 needs maximumBatchingWindowSeconds of at least 1").field_path(".maximumBatchingWindowSeconds"))]
pub struct IngestSpec {
    /// `Standard` (the default) or `Fifo` (ordered per message group, exactly-once delivery).
    #[serde(default)]
    pub queue_type: QueueType,
    /// Records the writer takes from the queue per invocation: 1 to 10000 (at most 10 for Fifo).
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1, max = 10000))]
    pub batch_size: i32,
    /// How long the writer's event source mapping gathers records before invoking, 0 to 300 seconds.
    #[serde(default)]
    #[schemars(range(min = 0, max = 300))]
    pub maximum_batching_window_seconds: i32,
    /// How many times a message is received (and fails) before SQS moves it to the ingest dead-letter queue
    /// (the redrive policy's `maxReceiveCount`), 1 to 1000; default 5, the least AWS advises for a queue
    /// drained by Lambda, so throttled invocations do not dead-letter good messages (Lambda developer guide,
    /// "Using Lambda with Amazon SQS", dead-letter queues).
    #[serde(default = "default_max_receive_count")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_receive_count: i32,
}

fn default_batch_size() -> i32 {
    10
}

fn default_max_receive_count() -> i32 {
    5
}

/// SQS queue type.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum QueueType {
    #[default]
    Standard,
    Fifo,
}

/// How records reach the views.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.topics) || self.topics.all(t, self.topics.exists_one(u, u.name == t.name))")
    .message("topic names must be unique").field_path(".topics"))]
#[x_kube(validation = Rule::new("!has(self.topics) || self.topics.all(t, t.recordTypes.all(r, self.topics.exists_one(u, r in u.recordTypes)))")
    .message("a record type may belong to one topic group only").field_path(".topics"))]
#[x_kube(validation = Rule::new("self.mode != 'Direct' || !has(self.topics) || size(self.topics) == 0")
    .message("topics are only used with mode Sns or Auto; remove them for mode Direct").field_path(".topics"))]
pub struct FanOutSpec {
    /// `Sns`: a router Lambda publishes each record to the SNS topic of its record-type group, and each
    /// projector subscribes with a filter policy. `Direct`: each projector reads the log stream through
    /// an event source mapping with filter criteria. `Auto` (the default): `Direct` while at most two
    /// readers share the stream (DynamoDB's advice per shard), `Sns` beyond.
    #[serde(default)]
    pub mode: FanOutMode,
    /// How record types are grouped into SNS topics. A record type not listed gets a topic of its own.
    #[serde(default)]
    #[schemars(length(max = 10))]
    pub topics: Vec<TopicGroup>,
}

/// Fan-out mode; see `spec.fanOut.mode`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum FanOutMode {
    Sns,
    Direct,
    #[default]
    Auto,
}

/// The fan-out in effect (`Sns` or `Direct`): `spec.fanOut.mode`, with `Auto` resolved by the number of
/// readers of the log's stream.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ResolvedFanOut {
    /// A router Lambda publishes each record to its record type's SNS topic.
    Sns,
    /// Projectors read the stream themselves (event source mappings with filter criteria).
    Direct,
}

impl ResolvedFanOut {
    /// The name as the status and `kubectl get` show it.
    pub fn as_str(self) -> &'static str {
        match self {
            ResolvedFanOut::Sns => "Sns",
            ResolvedFanOut::Direct => "Direct",
        }
    }
}

/// A group of record types published to one SNS topic.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TopicGroup {
    /// The group's name, part of the topic name: lowercase letters, digits and dashes, at most 40.
    #[schemars(
        length(min = 1, max = 40),
        regex(pattern = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
    )]
    pub name: String,
    /// The record types published to this topic.
    #[schemars(length(min = 1, max = 20))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub record_types: Vec<RecordType>,
}

/// Where exports of the log land.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExportSpec {
    /// The S3 bucket (it must exist; the operator does not create it). DynamoDB writes the export there.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"))]
    pub bucket: String,
    /// A key prefix added below the log's own export root, `kappa-exports/<cluster>/<namespace>/<name>/<uid>`,
    /// which the operator derives from the log: exports are written, and deleted, only under that root.
    /// Each view's export goes below it in a prefix of its own.
    #[serde(default = "default_export_prefix")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9!_.*'()/-]{1,200}$"))]
    pub prefix: String,
}

fn default_export_prefix() -> String {
    "kappa-exports".into()
}

/// What the operator observed and provisioned for an EventLog.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventLogStatus {
    /// The `.metadata.generation` the status was computed from.
    pub observed_generation: Option<i64>,
    /// `Pending`, `Provisioning`, `Ready`, `Failed` or `Deleting`.
    pub phase: Option<EventLogPhase>,
    /// Ready, Reconciling, Stalled and Provisioned, in the kstatus convention.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The log table as provisioned.
    pub table: Option<TableStatus>,
    /// The fan-out mode in effect (`Sns` or `Direct`); `Auto` resolved.
    pub fan_out: Option<ResolvedFanOut>,
    /// How many MaterializedViews read this log.
    #[serde(default)]
    pub views: i32,
    /// The ingest queue URL producers send to.
    pub ingest_queue_url: Option<String>,
    /// Messages in the ingest dead-letter queue (SQS's `ApproximateNumberOfMessages`): records the writer
    /// could not write after `spec.ingest.maxReceiveCount` tries. They stay 14 days; after a fix, move them back
    /// to the ingest queue with SQS's dead-letter queue redrive: `kubectl kappa redrive <log>`.
    pub dead_letters: Option<i64>,
    /// With `Sns` fan-out: messages in the router's failure queue (`status.resources.routerFailureQueue`),
    /// each naming a batch of the log's stream records (shard and sequence numbers) the router failed to
    /// publish after its retries, so no view on the `Sns` fan-out received them. The records stay in the
    /// log; after a fix, re-project the views from it. Kept 14 days.
    pub router_dead_letters: Option<i64>,
    /// The estimated cost of this log and its views per million writes, with default us-east-1 prices
    /// (`kappa-operator cost -f` prints the table and takes other prices).
    pub cost_estimate: Option<String>,
    /// ARNs of the provisioned resources, by role (`writer`, `router`, `topic/<group>`, ...).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub resources: std::collections::BTreeMap<String, String>,
    /// The operator's one reader of the log's stream for all its in-cluster views, as of the last
    /// reconcile; absent while no in-cluster view reads the log.
    pub in_cluster_reader: Option<InClusterReaderStatus>,
}

/// The operator's reader of a log's stream (one per log, shared by its in-cluster views and versions).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InClusterReaderStatus {
    /// Stream shards the shared reader knows (reading or finished).
    pub shards: i32,
    /// In-cluster live readers reading the shared reader's recent records.
    pub joined: i32,
    /// In-cluster live readers behind them, catching up one at a time with a reader of their own.
    pub catching_up: i32,
}

/// Phase of an EventLog.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum EventLogPhase {
    Pending,
    Provisioning,
    Ready,
    Failed,
    Deleting,
}

/// A provisioned DynamoDB table.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TableStatus {
    /// The table name.
    pub name: String,
    /// The table ARN.
    pub arn: Option<String>,
    /// The latest stream ARN.
    pub stream_arn: Option<String>,
    /// Declared settings an adopted table does not have, which the operator leaves as they are (billing,
    /// capacity, point-in-time recovery of `spec.table.adoptExisting` tables): one line each, naming the
    /// field, the declared and the actual setting. Empty for a table the operator created, whose settings
    /// are converged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settings_not_applied: Vec<String>,
}
