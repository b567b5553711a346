//! `MaterializedView`: a read model projected from an EventLog, built by replaying the log.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, DeletionPolicy, RecordType};

/// The annotation that approves a backfill when `spec.backfill.approval` is `Manual`. Its value must be
/// the view's `.metadata.generation`, so an approval never carries over to a changed spec.
pub const APPROVE_BACKFILL_ANNOTATION: &str = "kappa.dev/approve-backfill";

/// The annotation that approves promoting a rebuilt version when `spec.promotion.mode` is `Manual`. Its
/// value is the number of the version to promote (see `status.versions`).
pub const APPROVE_PROMOTION_ANNOTATION: &str = "kappa.dev/approve-promotion";

/// A materialized view: a read model derived from an EventLog by a projection.
///
/// A new view is backfilled from a point-in-time export of the log, then kept current by the live path
/// (an SNS subscription or a stream mapping) with no event lost and none applied twice.
#[serde_with::skip_serializing_none]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kappa.dev",
    version = "v1alpha1",
    kind = "MaterializedView",
    namespaced,
    status = "MaterializedViewStatus",
    shortname = "mv",
    shortname = "mview",
    category = "kappa",
    selectable = ".spec.eventLogRef.name",
    printcolumn(name = "Log", type_ = "string", json_path = ".spec.eventLogRef.name"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Backfill", type_ = "string", json_path = ".status.backfill.progress"),
    printcolumn(name = "Version", type_ = "integer", json_path = ".status.activeVersion"),
    printcolumn(name = "Rebuild", type_ = "string", json_path = ".status.rebuild"),
    printcolumn(
        name = "DeadLetters",
        type_ = "integer",
        json_path = ".status.deadLetters",
        priority = 1
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Push", type_ = "string", json_path = ".status.push.url", priority = 1)
)]
#[x_kube(validation = Rule::new("!has(self.subscribers) || self.store.streams")
    .message("spec.subscribers pushes the views table's changes, read from its stream: set spec.store.streams: true, or remove spec.subscribers")
    .field_path(".subscribers"))]
#[x_kube(validation = Rule::new("has(self.projection) != (has(self.projector) && has(self.projector.code))")
    .message("set exactly one of spec.projection (a declarative projection) and spec.projector.code (a custom projector Lambda)"))]
#[x_kube(validation = Rule::new("!has(self.projector) || self.projector.runtime != 'InCluster' || has(self.projection)")
    .message("spec.projector.runtime InCluster runs declarative projections only: set spec.projection instead of spec.projector.code")
    .field_path(".projector.runtime"))]
#[serde(rename_all = "camelCase")]
pub struct MaterializedViewSpec {
    /// The EventLog (in this namespace) this view is projected from. Immutable: to read another log,
    /// create another view.
    #[x_kube(validation = Rule::new("self == oldSelf")
        .message("spec.eventLogRef is immutable: create a new MaterializedView to project another log"))]
    pub event_log_ref: EventLogRef,

    /// The record types this view projects. The projector only receives these.
    #[schemars(length(min = 1, max = 20))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub record_types: Vec<RecordType>,

    /// A declarative projection, run by the built-in projector. Exactly one of `projection` and
    /// `projector.code` is set.
    pub projection: Option<Projection>,

    /// Where and how the projection runs: the built-in or a custom Lambda, or inside the operator.
    #[serde(default)]
    pub projector: ProjectorSpec,

    /// Where the view's items are stored.
    #[serde(default)]
    pub store: StoreSpec,

    /// How the view is built from the log's history when it is created.
    #[serde(default)]
    pub backfill: BackfillSpec,

    /// Push the view's changes to WebSocket subscribers. Needs `spec.store.streams: true`. On the Lambda
    /// runtime the operator provisions an API Gateway WebSocket API per views table; on the in-cluster
    /// runtime it serves the same protocol itself. `status.push.url` is the URL to give to clients.
    pub subscribers: Option<SubscribersSpec>,

    /// How a changed view is rebuilt and promoted. A change to what the content depends on (record types,
    /// projection, custom projector code, store) builds a new version beside the active one; other changes
    /// (memory, timeouts, backfill parallelism) apply in place.
    #[serde(default)]
    pub promotion: PromotionSpec,

    /// What happens to the view's AWS resources when it is deleted. `Retain` (the default) keeps them.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Push to subscribers; see `spec.subscribers`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscribersSpec {
    /// The protocol: `WebSocket` (the only one), JSON messages of the push protocol version 1.
    #[serde(default)]
    pub protocol: SubscriberProtocol,
}

/// Push protocols; see `spec.subscribers.protocol`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SubscriberProtocol {
    #[default]
    WebSocket,
}

/// Where subscribers connect; see `status.push`.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushStatus {
    /// The WebSocket URL to give to clients: they send `{"action":"subscribe","view":"<name>"}`.
    pub url: Option<String>,
    /// The API Gateway WebSocket API's id (Lambda runtime).
    pub api_id: Option<String>,
}

/// Parses a duration: one or more `<number><unit>` with units `s`, `m`, `h`, `d` (the schema's pattern
/// `^([0-9]+[smhd])+$`), for example `90s` or `1h30m`; `None` when it does not match.
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    if text.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        match c {
            '0'..='9' => digits.push(c),
            's' | 'm' | 'h' | 'd' if !digits.is_empty() => {
                let n: u64 = digits.parse().ok()?;
                let unit = match c {
                    's' => 1,
                    'm' => 60,
                    'h' => 3600,
                    _ => 86_400,
                };
                total = total.checked_add(n.checked_mul(unit)?)?;
                digits.clear();
            }
            _ => return None,
        }
    }
    digits.is_empty().then(|| std::time::Duration::from_secs(total))
}

/// How a rebuilt version replaces the active one; see `spec.promotion`.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionSpec {
    /// `Automatic` (the default): promote the new version as soon as it is backfilled and within `maxLag`.
    /// `Manual`: also wait for the annotation `kappa.dev/approve-promotion` set to the version's number.
    #[serde(default)]
    pub mode: PromotionMode,
    /// How far behind the log the new version's live path may be when it is promoted, for example `30s`.
    #[serde(default = "default_max_lag")]
    #[schemars(regex(pattern = r"^([0-9]+[smhd])+$"))]
    pub max_lag: String,
    /// How long the previous version is kept (and kept current) after a promotion, so a rollback is
    /// instant, for example `1h`. Then it is removed, its live path first.
    #[serde(default = "default_retain_previous")]
    #[schemars(regex(pattern = r"^([0-9]+[smhd])+$"))]
    pub retain_previous: String,
    /// Give up on a rebuild that has not caught up this long after it started, for example `6h`. Unset:
    /// never give up.
    #[schemars(regex(pattern = r"^([0-9]+[smhd])+$"))]
    pub abort_after: Option<String>,
}

impl Default for PromotionSpec {
    fn default() -> Self {
        PromotionSpec {
            mode: PromotionMode::default(),
            max_lag: default_max_lag(),
            retain_previous: default_retain_previous(),
            abort_after: None,
        }
    }
}

fn default_max_lag() -> String {
    "30s".into()
}
fn default_retain_previous() -> String {
    "1h".into()
}

/// Promotion modes; see `spec.promotion.mode`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PromotionMode {
    #[default]
    Automatic,
    Manual,
}

/// A reference to an EventLog in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct EventLogRef {
    /// The EventLog's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A declarative projection: filter, key, attributes and mode.
#[serde_with::skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.mode == 'Sum' ? has(self.sumOf) : !has(self.sumOf)")
    .message("spec.projection.sumOf is required with mode Sum and not allowed with other modes").field_path(".sumOf"))]
#[x_kube(validation = Rule::new("self.mode == 'Min' ? has(self.minOf) : !has(self.minOf)")
    .message("spec.projection.minOf is required with mode Min and not allowed with other modes").field_path(".minOf"))]
#[x_kube(validation = Rule::new("self.mode == 'Max' ? has(self.maxOf) : !has(self.maxOf)")
    .message("spec.projection.maxOf is required with mode Max and not allowed with other modes").field_path(".maxOf"))]
#[x_kube(validation = Rule::new("self.mode == 'Latest' || !has(self.orderBy)")
    .message("spec.projection.orderBy is only used with mode Latest").field_path(".orderBy"))]
#[x_kube(validation = Rule::new("self.mode in ['Latest', 'Append'] || !has(self.attributes) || size(self.attributes) == 0")
    .message("spec.projection.attributes are only kept by modes Latest and Append; Count, Sum, Min and Max store the aggregate")
    .field_path(".attributes"))]
#[x_kube(validation = Rule::new("!has(self.attributes) || self.attributes.all(a, self.attributes.exists_one(b, (has(b.to) ? b.to : b.from) == (has(a.to) ? a.to : a.from)))")
    .message("two entries of spec.projection.attributes write the same view attribute").field_path(".attributes"))]
#[x_kube(validation = Rule::new("!has(self.attributes) || self.attributes.all(a, !((has(a.to) ? a.to : a.from) in ['pk', 'sk']))")
    .message("pk and sk are the view item's keys, built from spec.projection.key; rename the attribute")
    .field_path(".attributes"))]
pub struct Projection {
    /// `Latest`: one item per key holding the record with the greatest ordering attribute (of two records
    /// with equal ordering values, the one whose log key sorts last wins, in every path). `Append`: one
    /// item per log record. `Count`: the number of records per key (attribute `count`). `Sum`: the sum of
    /// `sumOf` per key (attribute `sum`). `Min` / `Max`: the least of `minOf` / greatest of `maxOf` per key
    /// (attribute `min` / `max`). Each record counts once, whatever its key layout and however often it is
    /// delivered.
    pub mode: ProjectionMode,

    /// How the view item's keys are built from the record's attributes.
    pub key: KeyTemplate,

    /// Conditions a record must meet, all of them, to be projected (besides its record type).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub filter: Vec<FilterCondition>,

    /// The record attributes to keep, optionally renamed. Empty keeps every attribute (Latest, Append).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub attributes: Vec<AttributeMapping>,

    /// With `Latest`: the number attribute that orders records of one key. Defaults to the EventLog's
    /// `spec.table.orderingAttribute`.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"))]
    pub order_by: Option<String>,

    /// With `Sum`: the number attribute to add up.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"))]
    pub sum_of: Option<String>,

    /// With `Min`: the number attribute whose least value per key the view keeps.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"))]
    pub min_of: Option<String>,

    /// With `Max`: the number attribute whose greatest value per key the view keeps.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"))]
    pub max_of: Option<String>,

    /// What a log record this projection cannot project does (a missing key attribute, a `sumOf` that is
    /// not a number, a sum DynamoDB cannot store). The log is immutable, so such a record stays bad.
    /// `Skip` (default): the record is left out of the view, counted in `status.recordErrors` (with the
    /// last few records' log keys and reasons), a Warning Event and the metric
    /// `kappa_view_record_errors_total`; the view stays available and exact over every other record.
    /// `Fail`: the view stops (Stalled) at the first such record, naming it; fix it with a filter that
    /// excludes such records or a projection change (either builds a new version).
    #[serde(default, skip_serializing_if = "RecordErrorPolicy::is_default")]
    pub on_record_error: RecordErrorPolicy,
}

/// What happens to a record a projection cannot project; see `spec.projection.onRecordError`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RecordErrorPolicy {
    /// Leave the record out, count and report it.
    #[default]
    Skip,
    /// Stop the view at the record.
    Fail,
}

impl RecordErrorPolicy {
    /// Whether this is the default (`Skip`), which manifests and status leave out.
    pub fn is_default(&self) -> bool {
        *self == RecordErrorPolicy::Skip
    }
}

/// Projection modes; see `spec.projection.mode`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ProjectionMode {
    Latest,
    Append,
    Count,
    Sum,
    Min,
    Max,
}

/// Templates for the view item's keys: literal text and `{attribute}` placeholders replaced by the
/// record's attribute values (strings or numbers), for example `PLAYER#{playerId}`.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyTemplate {
    /// Template of the view item's partition key (`pk`).
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^([^{}]|\{[A-Za-z_][A-Za-z0-9_-]*\})+$")
    )]
    pub partition_key: String,
    /// Template of the view item's sort key (`sk`). Defaults to a constant per mode (`Append` uses the
    /// log record's own keys, so a replay overwrites rather than duplicates).
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^([^{}]|\{[A-Za-z_][A-Za-z0-9_-]*\})+$")
    )]
    pub sort_key: Option<String>,
}

/// A condition on one attribute of the record.
#[serde_with::skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.operator in ['Exists', 'NotExists'] ? (!has(self.value) && (!has(self.values) || size(self.values) == 0)) : (self.operator == 'In' ? (!has(self.value) && has(self.values) && size(self.values) > 0) : (has(self.value) && (!has(self.values) || size(self.values) == 0)))")
    .message("Exists and NotExists take no value; In takes values (a list); Equals, NotEquals and BeginsWith take value"))]
pub struct FilterCondition {
    /// The record attribute tested.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"))]
    pub attribute: String,
    /// `Equals`, `NotEquals`, `BeginsWith`, `In`, `Exists` or `NotExists`.
    pub operator: FilterOperator,
    /// The value compared with (a string, or a number written as a string).
    #[schemars(length(max = 1024))]
    pub value: Option<String>,
    /// The values for `In`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub values: Vec<String>,
}

/// Filter operators; see `spec.projection.filter[].operator`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum FilterOperator {
    Equals,
    NotEquals,
    BeginsWith,
    In,
    Exists,
    NotExists,
}

/// A record attribute kept in the view, optionally under another name.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttributeMapping {
    /// The record's attribute.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"))]
    pub from: String,
    /// The view attribute's name; defaults to `from`.
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"))]
    pub to: Option<String>,
}

/// Where the projection runs.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectorSpec {
    /// `Lambda` (the default): a Lambda function per view. `InCluster`: the operator's pods read the log
    /// stream and project it themselves (no Lambda; one reader per log for all its in-cluster views).
    #[serde(default)]
    pub runtime: ProjectorRuntime,
    /// Memory of the projector Lambda in MB, 128 to 10240.
    #[serde(default = "default_memory_mb")]
    #[schemars(range(min = 128, max = 10240))]
    pub memory_mb: i32,
    /// Timeout of the projector Lambda in seconds, 1 to 900.
    #[serde(default = "default_timeout_seconds")]
    #[schemars(range(min = 1, max = 900))]
    pub timeout_seconds: i32,
    /// Extra environment variables of the projector Lambda.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(length(max = 50))]
    pub environment: BTreeMap<String, String>,
    /// A custom projector Lambda instead of the built-in one. Exactly one of `spec.projection` and this.
    pub code: Option<ProjectorCode>,
}

impl Default for ProjectorSpec {
    fn default() -> Self {
        ProjectorSpec {
            runtime: ProjectorRuntime::default(),
            memory_mb: default_memory_mb(),
            timeout_seconds: default_timeout_seconds(),
            environment: BTreeMap::new(),
            code: None,
        }
    }
}

fn default_memory_mb() -> i32 {
    256
}
fn default_timeout_seconds() -> i32 {
    60
}

/// Where the projection runs; see `spec.projector.runtime`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ProjectorRuntime {
    #[default]
    Lambda,
    InCluster,
}

/// The code of a custom projector: exactly one of `s3`, `imageUri` and `functionArn`.
#[serde_with::skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.s3), has(self.imageUri), has(self.functionArn)].filter(x, x).size() == 1")
    .message("set exactly one of spec.projector.code.s3, spec.projector.code.imageUri and spec.projector.code.functionArn"))]
pub struct ProjectorCode {
    /// A zip in S3, run with `handler` on `lambdaRuntime`.
    pub s3: Option<S3Code>,
    /// A container image in ECR.
    #[schemars(regex(
        pattern = r"^[0-9]{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/[a-z0-9._/-]+(:[A-Za-z0-9._-]+|@sha256:[a-f0-9]{64})$"
    ))]
    pub image_uri: Option<String>,
    /// An existing function, used as it is (the operator only wires it to the log).
    #[schemars(regex(
        pattern = r"^arn:aws[a-z-]*:lambda:[a-z0-9-]+:[0-9]{12}:function:[A-Za-z0-9_-]{1,64}(:[A-Za-z0-9$_-]{1,128})?$"
    ))]
    pub function_arn: Option<String>,
}

/// A Lambda deployment package in S3.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Code {
    /// The bucket.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"))]
    pub bucket: String,
    /// The object key of the zip.
    #[schemars(length(min = 1, max = 1024))]
    pub key: String,
    /// The Lambda runtime identifier, for example `python3.12` or `provided.al2023`.
    #[serde(default = "default_lambda_runtime")]
    #[schemars(regex(pattern = r"^[a-z0-9.]{3,32}$"))]
    pub lambda_runtime: String,
    /// The handler, for example `app.handler`.
    #[serde(default = "default_handler")]
    #[schemars(length(min = 1, max = 128))]
    pub handler: String,
}

fn default_lambda_runtime() -> String {
    "provided.al2023".into()
}
fn default_handler() -> String {
    "bootstrap".into()
}

/// Where the view's items live.
#[serde_with::skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.table == 'Shared' || !has(self.keyPrefix)")
    .message("spec.store.keyPrefix is only used with table Shared; a Dedicated table holds one view")
    .field_path(".keyPrefix"))]
pub struct StoreSpec {
    /// `Shared` (the default): a views table shared by the namespace's views of the same
    /// `sharedTableName`, each view under its own key prefix (single-table design). `Dedicated`: a table
    /// of its own.
    #[serde(default)]
    pub table: StoreTable,
    /// With `Shared`: which shared table of the namespace, by short name.
    #[serde(default = "default_shared_table_name")]
    #[schemars(regex(pattern = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"))]
    pub shared_table_name: String,
    /// With `Shared`: the prefix of this view's partition keys. Defaults to `<view name>#`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.:#/-]{1,64}$"))]
    pub key_prefix: Option<String>,
    /// Turn DynamoDB Streams on for the views table, so changes can be pushed to subscribers. Views that
    /// change often and nobody watches belong in a table without Streams.
    #[serde(default)]
    pub streams: bool,
    /// Take over storage that holds the items of an earlier view of the same name, deleted with
    /// `deletionPolicy: Retain` (its key prefix in the shared table, or its dedicated table): those items
    /// are deleted and the view is rebuilt there from the log. Without it such storage is never read or
    /// written, and the view is `Stalled` with reason `StorageRetained` naming the earlier view's uid
    /// and the fixes. Storage the view itself projected is unaffected either way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopt: bool,
}

impl Default for StoreSpec {
    fn default() -> Self {
        StoreSpec {
            table: StoreTable::default(),
            shared_table_name: default_shared_table_name(),
            key_prefix: None,
            streams: false,
            adopt: false,
        }
    }
}

fn default_shared_table_name() -> String {
    "views".into()
}

/// Shared or dedicated views table; see `spec.store.table`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum StoreTable {
    #[default]
    Shared,
    Dedicated,
}

/// How a view is backfilled from the log's history.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackfillSpec {
    /// `Export` (the default): a point-in-time export of the log to S3 (needs PITR and
    /// `spec.export` on the EventLog). `Scan`: a parallel scan of the log table (not a consistent
    /// snapshot; for logs without PITR). `None`: go live without history.
    #[serde(default)]
    pub source: BackfillSource,
    /// Workers projecting the export in parallel, 1 to 64.
    #[serde(default = "default_parallelism")]
    #[schemars(range(min = 1, max = 64))]
    pub parallelism: i32,
    /// `Automatic` (the default) or `Manual`: wait for the annotation `kappa.dev/approve-backfill` set
    /// to the view's generation before starting.
    #[serde(default)]
    pub approval: BackfillApproval,
    /// The share of the views table's write capacity the backfill may use, in percent (1 to 100).
    #[serde(default = "default_write_capacity_percent")]
    #[schemars(range(min = 1, max = 100))]
    pub write_capacity_percent: i32,
    /// Keep the export files in S3 after a successful backfill (by default they are deleted).
    #[serde(default)]
    pub keep_export: bool,
}

impl Default for BackfillSpec {
    fn default() -> Self {
        BackfillSpec {
            source: BackfillSource::default(),
            parallelism: default_parallelism(),
            approval: BackfillApproval::default(),
            write_capacity_percent: default_write_capacity_percent(),
            keep_export: false,
        }
    }
}

fn default_parallelism() -> i32 {
    4
}
fn default_write_capacity_percent() -> i32 {
    50
}

/// Backfill sources; see `spec.backfill.source`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum BackfillSource {
    #[default]
    Export,
    Scan,
    None,
}

/// Backfill approval gates; see `spec.backfill.approval`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum BackfillApproval {
    #[default]
    Automatic,
    Manual,
}

/// What the operator observed and did for a view.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaterializedViewStatus {
    /// The `.metadata.generation` the status was computed from.
    pub observed_generation: Option<i64>,
    /// Where the view is in its life: `Pending`, `Provisioning`, `Backfilling`, `CatchingUp`, `Live`,
    /// `Rebuilding`, `Failed` or `Deleting`.
    pub phase: Option<ViewPhase>,
    /// Ready, Reconciling, Stalled, Provisioned and BackfillComplete, in the kstatus convention.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The views table holding this view's items.
    pub table_name: Option<String>,
    /// The partition-key prefix of this view's items in a shared table.
    pub key_prefix: Option<String>,
    /// ARNs and ids of the provisioned resources, by role (`projector`, `subscription`, `mapping`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, String>,
    /// Backfill progress.
    pub backfill: Option<BackfillStatus>,
    /// The live path's progress (runtime `InCluster`: the operator's stream reader).
    pub live: Option<LiveStatus>,
    /// Records left out under `spec.projection.onRecordError: Skip`.
    pub record_errors: Option<RecordErrorsStatus>,
    /// Where WebSocket subscribers connect, when `spec.subscribers` is set.
    pub push: Option<PushStatus>,
    /// The version readers are pointed at (`tableName` and `keyPrefix` above are its storage; the
    /// ConfigMap named after the view holds the same pointer).
    pub active_version: Option<i64>,
    /// The highest version number used so far (a new version takes the next one).
    pub latest_version: Option<i64>,
    /// A summary of the rebuild in progress or failed, as shown by `kubectl get mv` (for example
    /// `v2 Backfilling 42%`).
    pub rebuild: Option<String>,
    /// Runtime `Lambda`: messages in the failure queues of the view's projectors (SQS's
    /// `ApproximateNumberOfMessages`, summed over versions): log records the projector failed after its
    /// retries, each message naming them (a stream batch's shard and sequence numbers with `Direct`
    /// fan-out; the SNS event with `Sns`). The records stay in the log; after a fix, re-project them.
    /// Kept 14 days (`status.resources.failureQueue`).
    pub dead_letters: Option<i64>,
    /// Every version that has storage: the active one, a building one, a retained previous one, a failed
    /// one (kept until the spec changes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub versions: Vec<ViewVersion>,
}

/// The state of a view version.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum VersionState {
    /// Readers are pointed at it.
    Active,
    /// Being backfilled and caught up beside the active version.
    #[default]
    Building,
    /// The previous active version, kept current for `spec.promotion.retainPrevious`.
    Retained,
    /// The rebuild failed (see `message`); the active version is untouched.
    Failed,
}

/// The schema of a recorded copy of spec fields: an object kept as it is. Its fields were validated when
/// they were the spec; repeating the spec's CEL rules inside a status list would exceed the API server's
/// cost budget.
fn opaque_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// What a version's content was built from: the content fields of the spec it was created for.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ViewContent {
    /// The record types projected (`spec.recordTypes`).
    pub record_types: Vec<RecordType>,
    /// The declarative projection (`spec.projection`).
    pub projection: Option<Projection>,
    /// The custom projector code (`spec.projector.code`).
    pub code: Option<ProjectorCode>,
    /// Where the items are stored (`spec.store`).
    pub store: StoreSpec,
}

/// One version of a view: its own storage, live path and backfill.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ViewVersion {
    /// The version's number, from 1.
    pub version: i64,
    /// A digest of `content`: a spec with the same digest is served by this version.
    pub content_hash: String,
    /// `Active`, `Building`, `Retained` or `Failed`.
    pub state: VersionState,
    /// What the version's content was built from (the spec's fields, as they were; not validated again).
    #[schemars(schema_with = "opaque_object")]
    pub content: ViewContent,
    /// The views table holding the version's items.
    pub table_name: Option<String>,
    /// The version's partition-key prefix in a shared table.
    pub key_prefix: Option<String>,
    /// Where the version is: `Backfilling`, `CatchingUp`, `Live`, ...
    pub phase: Option<ViewPhase>,
    /// Why a version failed, or what it waits for.
    pub message: Option<String>,
    /// The version's backfill.
    pub backfill: Option<BackfillStatus>,
    /// The version's live path.
    pub live: Option<LiveStatus>,
    /// The version's own AWS resources by role (a Lambda view's projector function, role, subscriptions).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, String>,
    /// When the version was started.
    pub created_at: Option<Time>,
    /// When readers were last pointed at it.
    pub promoted_at: Option<Time>,
    /// When another version replaced it (the retention counts from here).
    pub superseded_at: Option<Time>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Log records the view left out under `spec.projection.onRecordError: Skip` (they cannot be projected,
/// or DynamoDB refused their write), by its backfills and by its live path since the operator started.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordErrorsStatus {
    /// How many records were left out.
    pub count: i64,
    /// The newest few (at most 5): each names the record's log keys, the reason and the fix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last: Vec<String>,
}

/// Where the live path is.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiveStatus {
    /// True when the live path has read everything the log's stream holds (no lag).
    #[serde(default)]
    pub caught_up: bool,
    /// The creation time of the newest log record applied: everything written before it is in the view.
    pub watermark: Option<Time>,
    /// Stream records applied since the reader started in this operator process.
    #[serde(default)]
    pub records_applied: i64,
    /// The ConfigMap holding the stream reader's checkpoint (sequence numbers per shard).
    pub checkpoint: Option<String>,
    /// Lambda runtime: how far behind the log the projector function was when it last reported, in
    /// seconds (rounded up): from the oldest record of its batch being written to the log to the batch
    /// being applied. Promotion waits until it is within `spec.promotion.maxLag`.
    pub lag_seconds: Option<i64>,
    /// Lambda runtime: when the projector function last reported applying records (it reports at most
    /// every 5 s per instance, sooner when its lag moves).
    pub last_reported: Option<Time>,
}

/// Phase of a view.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ViewPhase {
    Pending,
    Provisioning,
    Backfilling,
    CatchingUp,
    Live,
    Rebuilding,
    Failed,
    Deleting,
}

impl std::fmt::Display for ViewPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// Progress of a backfill.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackfillStatus {
    /// Which backfill of the view this is, from 1: a new attempt (a new export) starts when the live path
    /// lost records it must recover from the log.
    #[serde(default)]
    pub attempt: i64,
    /// Records this backfill left out under `spec.projection.onRecordError: Skip`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub record_errors: i64,
    /// Transient AWS errors (throttling, 5xx, timeouts) this backfill retried in place in this operator
    /// process: they slow it down, never fail it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub transient_errors: i64,
    /// The newest of them.
    pub last_transient_error: Option<String>,
    /// Why this attempt started (`initial`, or the gap it closes).
    pub reason: Option<String>,
    /// The S3 location the export is written to (`s3://bucket/prefix`), owned by the view.
    pub export_location: Option<String>,
    /// The ConfigMap holding the data files done (the checkpoint a restarted backfill resumes from).
    pub checkpoint: Option<String>,
    /// Log records projected per second.
    pub items_per_second: Option<i64>,
    /// Estimated time left, for example `2m30s`.
    pub eta: Option<String>,
    /// Percent done, as shown by `kubectl get mv` (for example `42%`).
    pub progress: Option<String>,
    /// The export's ARN.
    pub export_arn: Option<String>,
    /// The point in time the export snapshots.
    pub export_time: Option<Time>,
    /// Data files projected.
    #[serde(default)]
    pub files_done: i64,
    /// Data files in the export.
    #[serde(default)]
    pub files_total: i64,
    /// Log records read.
    #[serde(default)]
    pub items_done: i64,
    /// Log records in the export.
    #[serde(default)]
    pub items_total: i64,
    /// When the backfill started.
    pub started_at: Option<Time>,
    /// When it finished.
    pub finished_at: Option<Time>,
    /// What the finished backfill read was removed: its export's files (unless `spec.backfill.keepExport`)
    /// and its checkpoint. Done only after `finishedAt` is recorded, so a restart never finds an
    /// unfinished backfill whose export is gone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cleaned_up: bool,
}

#[cfg(test)]
mod duration_tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_add_their_parts() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Some(Duration::from_secs(172_800)));
        for bad in ["", "10", "m", "1x", "1.5h", "-1s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
