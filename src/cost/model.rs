//! The cost model: an EventLog and its views in, the cost of a million writes to the log out, line by
//! line.
//!
//! The topology is the one DESIGN.md describes and `src/plan` provisions: producers → SQS ingest queue
//! (optional) → writer Lambda → log table (Streams, optionally PITR) → fan-out → each view's projector →
//! views table, and, for a views table with Streams, its notifier Lambda. The model is COST-MODEL's
//! corrected one (`shared/aws-reference/COST-MODEL.md` §2 scenarios C and D, §4):
//!
//! - SQS: one request per send (per 64 KB chunk), plus one receive and one `DeleteMessageBatch` per batch
//!   received (§4.7). Empty long polls are a fixed monthly cost and are left out.
//! - Lambda: requests, and GB-seconds of configured memory × billed duration (§3).
//! - SNS (fan-out `Sns`): the router publishes each record once, to the topic of its record-type group;
//!   publishes are billed per request (§4.5). Deliveries to Lambda are free and carry no data-transfer
//!   charge (§4.5); each projector receives only its record types (filter policy on message attributes,
//!   which is not billed, unlike payload-based filtering).
//! - DynamoDB writes: one write unit per started KB (§4.2); `Count`/`Sum` write a contribution (the
//!   record's marker) and put the recomputed aggregate, counted once per record (an upper bound: one per
//!   key and batch in practice); the recompute's strongly consistent `Query` of the key's contributions is
//!   noted, not priced (it grows with a key's contributions); `Latest` conditional puts cost their units
//!   even when the condition fails.
//! - Storage and PITR: the data a million writes add, for `storageMonths` months (§4.4, scenario C).
//! - Streams: reads by Lambda are free (§4.6); the operator's in-cluster reader pays per `GetRecords`
//!   call, each returning up to 1000 records or 1 MB.
//!
//! Views tables are assumed on demand and without PITR (a view can be rebuilt from the log). Quantities
//! are per [`WRITES`] records appended to the log; nothing is rounded until it is displayed.

use std::collections::{BTreeMap, BTreeSet};

use super::assumptions::{Assumptions, DEFAULT_BUILT_IN_MEMORY_MB, DEFAULT_STREAM_RECORDS_PER_INVOCATION};
use super::estimate::{Component, Estimate, Line, Unit};
use super::prices::{
    GET_RECORDS_MAX_KB, GET_RECORDS_MAX_RECORDS, Prices, SNS_BILLING_CHUNK_KB, SQS_BILLING_CHUNK_KB,
    SQS_MAX_MESSAGES_PER_BATCH, STORAGE_KB_PER_GB, WRITE_UNIT_KB,
};
use crate::crd::{
    BillingMode, EventLog, MaterializedView, ProjectionMode, ProjectorRuntime, QueueType, StoreTable,
};
use crate::plan::{ResolvedFanOut, StreamReaders, resolve_fan_out};

/// The number of log writes every quantity and cost is given for: one million.
pub const WRITES: f64 = 1_000_000.0;

/// The cost of a million writes to `log`, delivered to `views`, at `prices`, under `assumptions`.
///
/// `views` should be the log's views; any whose `spec.eventLogRef` or namespace names another log is
/// left out, with a note. The estimate never fails: an out-of-range assumption falls back to the nearest
/// sensible value (see [`Assumptions::validate`] to reject it instead).
pub fn estimate(
    log: &EventLog,
    views: &[MaterializedView],
    prices: &Prices,
    assumptions: &Assumptions,
) -> Estimate {
    let namespace = namespace_of(log.metadata.namespace.as_deref());
    let log_name = log.metadata.name.clone().unwrap_or_default();
    let mut est = Estimate {
        event_log: format!("{namespace}/{log_name}"),
        fan_out: ResolvedFanOut::Direct,
        lines: Vec::new(),
        notes: Vec::new(),
    };

    let mut own_views = Vec::new();
    for v in views {
        let same_namespace = namespace_of(v.metadata.namespace.as_deref()) == namespace;
        if same_namespace && v.spec.event_log_ref.name == log_name {
            own_views.push(v);
        } else {
            est.note(format!(
                "view {} reads another EventLog ({}/{}) and is left out",
                v.metadata.name.as_deref().unwrap_or("<unnamed>"),
                namespace_of(v.metadata.namespace.as_deref()),
                v.spec.event_log_ref.name
            ));
        }
    }
    est.fan_out = resolve_fan_out(
        log.spec.fan_out.mode,
        StreamReaders::of(own_views.iter().copied()),
    );

    let ctx = Ctx {
        prices,
        a: assumptions,
        item_kb: at_least(assumptions.item_size_kb, f64::MIN_POSITIVE, 10.0),
        months: at_least(assumptions.storage_months, 0.0, 1.0),
        shares: record_type_shares(log, assumptions, &mut est),
    };

    ingest(&ctx, log, &mut est);
    log_table(&ctx, log, &mut est);
    let facts: Vec<ViewFacts> = own_views
        .iter()
        .map(|v| ViewFacts::of(&ctx, log, v, &mut est))
        .collect();
    match est.fan_out {
        ResolvedFanOut::Sns => sns_fan_out(&ctx, log, &facts, &mut est),
        ResolvedFanOut::Direct => direct_fan_out(&ctx, &facts, &mut est),
    }
    if facts.iter().any(|f| !f.lambda) {
        in_cluster_reader(&ctx, &mut est);
    }
    for f in &facts {
        view_items(&ctx, f, &mut est);
    }
    views_tables(&ctx, &facts, &mut est);

    est.note(format!(
        "storage and PITR are charged for {} of the data a million writes add; storage recurs every \
         month the data is kept (COST-MODEL §4.4)",
        if ctx.months == 1.0 {
            "one month".to_string()
        } else {
            format!("{} months", trim_number(ctx.months))
        }
    ));
    est
}

/// What every step needs.
struct Ctx<'a> {
    prices: &'a Prices,
    a: &'a Assumptions,
    item_kb: f64,
    months: f64,
    /// Share of the log's writes per record type, adding up to 1.0.
    shares: BTreeMap<String, f64>,
}

impl Ctx<'_> {
    fn share_of<'t>(&self, types: impl IntoIterator<Item = &'t str>) -> f64 {
        let unique: BTreeSet<&str> = types.into_iter().collect();
        unique.iter().filter_map(|t| self.shares.get(*t)).sum()
    }

    fn storage(&self, kb: f64) -> f64 {
        kb / STORAGE_KB_PER_GB * self.months
    }
}

fn namespace_of(ns: Option<&str>) -> &str {
    match ns {
        Some(ns) if !ns.is_empty() => ns,
        _ => "default",
    }
}

/// `value` if it is a finite number of at least `min`, else `fallback`.
fn at_least(value: f64, min: f64, fallback: f64) -> f64 {
    if value.is_finite() && value >= min {
        value
    } else {
        fallback
    }
}

/// A share clamped to 0..=1; not a number counts as `fallback`.
fn share(value: f64, fallback: f64) -> f64 {
    if value.is_finite() {
        value.clamp(0.0, 1.0)
    } else {
        fallback
    }
}

/// Write units of one item: one per started KB, at least one.
fn write_units(kb: f64) -> f64 {
    (kb / WRITE_UNIT_KB).ceil().max(1.0)
}

fn trim_number(x: f64) -> String {
    let s = format!("{x:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Each record type's share of `log`'s records under `a` (see `Assumptions::record_type_shares`).
pub(crate) fn shares_of(log: &EventLog, a: &Assumptions) -> BTreeMap<String, f64> {
    let mut scratch = Estimate {
        event_log: String::new(),
        fan_out: crate::plan::ResolvedFanOut::Direct,
        lines: Vec::new(),
        notes: Vec::new(),
    };
    record_type_shares(log, a, &mut scratch)
}

fn record_type_shares(log: &EventLog, a: &Assumptions, est: &mut Estimate) -> BTreeMap<String, f64> {
    let types: BTreeSet<&str> = log.spec.record_types.iter().map(|t| t.as_str()).collect();
    for name in a.record_type_shares.keys() {
        if !types.contains(name.as_str()) {
            est.note(format!(
                "recordTypeShares names {name}, which is not a record type of the log; ignored"
            ));
        }
    }
    let mut shares = BTreeMap::new();
    if types.is_empty() {
        return shares;
    }
    let given: BTreeMap<&str, f64> = types
        .iter()
        .filter_map(|t| a.record_type_shares.get(*t).map(|s| (*t, at_least(*s, 0.0, 0.0))))
        .collect();
    let given_sum: f64 = given.values().sum();
    let rest: Vec<&str> = types.iter().copied().filter(|t| !given.contains_key(t)).collect();
    if given.is_empty() || (given_sum <= 0.0 && rest.is_empty()) {
        let equal = 1.0 / types.len() as f64;
        shares.extend(types.iter().map(|t| (t.to_string(), equal)));
    } else if given_sum >= 1.0 || rest.is_empty() {
        if (given_sum - 1.0).abs() > 1e-9 {
            est.note(format!(
                "recordTypeShares add up to {}; scaled to 1",
                trim_number(given_sum)
            ));
        }
        shares.extend(
            types
                .iter()
                .map(|t| (t.to_string(), given.get(t).map_or(0.0, |s| s / given_sum))),
        );
    } else {
        let each = (1.0 - given_sum) / rest.len() as f64;
        shares.extend(given.iter().map(|(t, s)| (t.to_string(), *s)));
        shares.extend(rest.iter().map(|t| (t.to_string(), each)));
    }
    shares
}

/// SQS ingest and the writer Lambda.
fn ingest(ctx: &Ctx, log: &EventLog, est: &mut Estimate) {
    let Some(ingest) = &log.spec.ingest else {
        est.note(
            "no ingest queue: producers write the log table themselves; their requests are not included",
        );
        return;
    };
    let (p, a) = (ctx.prices, ctx.a);
    let price = match ingest.queue_type {
        QueueType::Standard => p.sqs_standard_requests_per_million,
        QueueType::Fifo => p.sqs_fifo_requests_per_million,
    };
    let resource = match ingest.queue_type {
        QueueType::Standard => "ingest queue",
        QueueType::Fifo => "ingest queue (FIFO)",
    };
    let batch = f64::from(ingest.batch_size.max(1));
    let wanted_fill = a.writer.records_per_invocation.unwrap_or(batch);
    let writer_fill = at_least(wanted_fill, 1.0, batch).min(batch);
    if writer_fill != wanted_fill {
        est.note(format!(
            "writer.recordsPerInvocation {} is outside 1..={batch} (the ingest batchSize); {} used",
            trim_number(wanted_fill),
            trim_number(writer_fill)
        ));
    }

    let per_send = at_least(a.sqs.messages_per_send, 1.0, 1.0).min(SQS_MAX_MESSAGES_PER_BATCH);
    let send_requests_per_message = (per_send * ctx.item_kb / SQS_BILLING_CHUNK_KB).ceil() / per_send;
    est.push(Line::new(
        Component::SqsSend,
        resource,
        WRITES * send_requests_per_message,
        Unit::Requests,
        price,
    ));

    let per_receive = at_least(
        a.sqs
            .messages_per_receive
            .unwrap_or(writer_fill.min(SQS_MAX_MESSAGES_PER_BATCH)),
        1.0,
        1.0,
    )
    .min(SQS_MAX_MESSAGES_PER_BATCH);
    let receives = WRITES / per_receive;
    let requests_per_receive = if a.sqs.bill_receive_payload_chunks {
        (per_receive * ctx.item_kb / SQS_BILLING_CHUNK_KB).ceil().max(1.0)
    } else {
        1.0
    };
    est.push(Line::new(
        Component::SqsReceive,
        resource,
        receives * requests_per_receive,
        Unit::Requests,
        price,
    ));
    est.push(Line::new(
        Component::SqsDelete,
        resource,
        receives,
        Unit::Requests,
        price,
    ));

    let memory = f64::from(a.writer.memory_mb.unwrap_or(DEFAULT_BUILT_IN_MEMORY_MB));
    let ms = a.writer.ms_per_invocation.max(0.0) + a.writer.ms_per_record.max(0.0) * writer_fill;
    est.lambda("writer Lambda", WRITES / writer_fill, memory, ms, ctx.prices);
}

/// The log table: writes, storage, PITR.
fn log_table(ctx: &Ctx, log: &EventLog, est: &mut Estimate) {
    let p = ctx.prices;
    est.push(Line::new(
        Component::DynamoDbWrites,
        "log table",
        WRITES * write_units(ctx.item_kb),
        Unit::WriteUnits,
        p.dynamodb_write_units_per_million,
    ));
    let gb_months = ctx.storage(WRITES * ctx.item_kb);
    est.push(Line::new(
        Component::DynamoDbStorage,
        "log table",
        gb_months,
        Unit::GbMonths,
        p.dynamodb_storage_gb_month,
    ));
    if log.spec.table.point_in_time_recovery {
        est.push(Line::new(
            Component::PitrStorage,
            "log table",
            gb_months,
            Unit::GbMonths,
            p.dynamodb_pitr_gb_month,
        ));
    }
    if log.spec.table.billing.mode == BillingMode::Provisioned {
        est.note(
            "the log table is Provisioned: its writes are billed per capacity-unit hour whatever the \
             traffic; the write line shows what the same write units cost on demand",
        );
    }
}

/// What the estimate needs to know of one view.
struct ViewFacts<'a> {
    name: &'a str,
    /// The view's record types (as written; the log may not carry all of them).
    record_types: Vec<&'a str>,
    /// Share of the log's writes that are of the view's record types.
    type_share: f64,
    /// Share of those that pass `spec.projection.filter`.
    pass_share: f64,
    mode: Option<ProjectionMode>,
    item_kb: f64,
    new_key_share: f64,
    /// Projected by a Lambda (else in-cluster).
    lambda: bool,
    memory_mb: f64,
    table: String,
    streams: bool,
    /// `spec.subscribers` is set.
    subscribers: bool,
}

impl<'a> ViewFacts<'a> {
    fn of(ctx: &Ctx, log: &EventLog, v: &'a MaterializedView, est: &mut Estimate) -> ViewFacts<'a> {
        let name = v.metadata.name.as_deref().unwrap_or("<unnamed>");
        let overrides = ctx.a.views.get(name).cloned().unwrap_or_default();
        let log_types: BTreeSet<&str> = log.spec.record_types.iter().map(|t| t.as_str()).collect();
        let unknown: Vec<&str> = v
            .spec
            .record_types
            .iter()
            .map(|t| t.as_str())
            .filter(|t| !log_types.contains(t))
            .collect();
        if !unknown.is_empty() {
            est.note(format!(
                "view {name} projects record types the log does not carry ({}); they count as no writes",
                unknown.join(", ")
            ));
        }
        let projection = v.spec.projection.as_ref();
        if projection.is_some_and(|p| !p.filter.is_empty()) && overrides.filter_pass_share.is_none() {
            est.note(format!(
                "view {name} has spec.projection.filter: every record of its types is assumed to pass \
                 (set views.{name}.filterPassShare)"
            ));
        }
        if projection.is_none() {
            est.note(format!(
                "view {name} has a custom projector: assumed to put one item of viewItemSizeKb per record"
            ));
        }
        let default_item_kb = ctx.a.view_item_size_kb.unwrap_or(ctx.item_kb);
        let table = match v.spec.store.table {
            StoreTable::Shared => format!("views table {}", v.spec.store.shared_table_name),
            StoreTable::Dedicated => format!("views table {name} (dedicated)"),
        };
        ViewFacts {
            name,
            record_types: v.spec.record_types.iter().map(|t| t.as_str()).collect(),
            type_share: ctx.share_of(v.spec.record_types.iter().map(|t| t.as_str())),
            pass_share: share(overrides.filter_pass_share.unwrap_or(1.0), 1.0),
            mode: projection.map(|p| p.mode),
            item_kb: at_least(
                overrides.item_size_kb.unwrap_or(default_item_kb),
                f64::MIN_POSITIVE,
                ctx.item_kb,
            ),
            new_key_share: share(overrides.new_key_share.unwrap_or(ctx.a.new_key_share), 1.0),
            lambda: v.spec.projector.runtime == ProjectorRuntime::Lambda,
            memory_mb: f64::from(
                ctx.a
                    .projector
                    .memory_mb
                    .map_or(v.spec.projector.memory_mb, |mb| {
                        i32::try_from(mb).unwrap_or(i32::MAX)
                    })
                    .max(128),
            ),
            table,
            streams: v.spec.store.streams,
            subscribers: v.spec.subscribers.is_some(),
        }
    }

    /// Log records of the view's types per million writes: what its projector receives.
    fn received(&self) -> f64 {
        WRITES * self.type_share
    }

    /// Records the view writes per million log writes.
    fn projected(&self) -> f64 {
        self.received() * self.pass_share
    }

    /// Items changed per projected record, each a record on the views table's stream.
    fn changes_per_record(&self) -> f64 {
        match self.mode {
            Some(ProjectionMode::Count | ProjectionMode::Sum) => 2.0,
            _ => 1.0,
        }
    }

    fn projector(&self) -> String {
        format!("projector {}", self.name)
    }
}

fn stream_records_per_invocation(requested: Option<f64>) -> f64 {
    at_least(
        requested.unwrap_or(DEFAULT_STREAM_RECORDS_PER_INVOCATION),
        1.0,
        DEFAULT_STREAM_RECORDS_PER_INVOCATION,
    )
}

/// Fan-out `Sns`: the router, the topics, the deliveries and the projectors they invoke.
fn sns_fan_out(ctx: &Ctx, log: &EventLog, views: &[ViewFacts], est: &mut Estimate) {
    let (p, a) = (ctx.prices, ctx.a);
    if !views.iter().any(|v| v.lambda) {
        // The operator runs the router only for Lambda projectors (crate::plan::lambdas::router_needed).
        est.note(
            "no view runs on Lambda: the operator runs no router, and the topics stay idle (no cost per write)",
        );
        return;
    }
    est.push(Line::new(
        Component::StreamReads,
        "log stream (router Lambda)",
        WRITES,
        Unit::StreamRecords,
        0.0,
    ));
    let fill = stream_records_per_invocation(a.router.records_per_invocation);
    let memory = f64::from(a.router.memory_mb.unwrap_or(DEFAULT_BUILT_IN_MEMORY_MB));
    let ms = a.router.ms_per_invocation.max(0.0) + a.router.ms_per_record.max(0.0) * fill;
    est.lambda("router Lambda", WRITES / fill, memory, ms, p);

    let per_record = match a.sns.publish_requests_per_record {
        Some(r) => at_least(r, 0.0, 1.0),
        None => (ctx.item_kb / SNS_BILLING_CHUNK_KB).ceil().max(1.0),
    };
    // Record types listed in a group go to its topic; any other type gets a topic of its own.
    let mut grouped = BTreeSet::new();
    let mut topics: Vec<(String, Vec<&str>)> = Vec::new();
    for group in &log.spec.fan_out.topics {
        let types: Vec<&str> = group.record_types.iter().map(|t| t.as_str()).collect();
        grouped.extend(types.iter().copied());
        topics.push((group.name.clone(), types));
    }
    for t in &log.spec.record_types {
        if grouped.insert(t.as_str()) {
            topics.push((t.as_str().to_string(), vec![t.as_str()]));
        }
    }
    // Record types some Lambda projector subscribes to; the router publishes the others all the same.
    let subscribed: BTreeSet<&str> = views
        .iter()
        .filter(|v| v.lambda)
        .flat_map(|v| v.record_types.iter().copied())
        .collect();
    for (topic, types) in &topics {
        let share = ctx.share_of(types.iter().copied());
        est.push(Line::new(
            Component::SnsPublishes,
            format!("topic {topic}"),
            WRITES * share * per_record,
            Unit::Requests,
            p.sns_publishes_per_million,
        ));
        if share > 0.0 && !types.iter().any(|t| subscribed.contains(t)) {
            est.note(format!(
                "topic {topic} has no Lambda projector subscribed; the router publishes its records anyway"
            ));
        }
    }

    for v in views.iter().filter(|v| v.lambda) {
        let projector = v.projector();
        est.push(Line::new(
            Component::SnsDeliveries,
            &projector,
            v.received(),
            Unit::Deliveries,
            p.sns_lambda_deliveries_per_million,
        ));
        // SNS invokes a Lambda once per message: one record per invocation.
        let ms = a.projector.ms_per_invocation.max(0.0) + a.projector.ms_per_record.max(0.0);
        est.lambda(&projector, v.received(), v.memory_mb, ms, p);
    }
}

/// Fan-out `Direct`: each Lambda projector reads the log stream itself, filtered by record type.
fn direct_fan_out(ctx: &Ctx, views: &[ViewFacts], est: &mut Estimate) {
    let (p, a) = (ctx.prices, ctx.a);
    let fill = stream_records_per_invocation(a.projector.records_per_invocation);
    for v in views.iter().filter(|v| v.lambda) {
        let projector = v.projector();
        est.push(Line::new(
            Component::StreamReads,
            format!("log stream ({projector})"),
            WRITES,
            Unit::StreamRecords,
            0.0,
        ));
        // Records filtered out by the mapping's filter criteria do not invoke the function.
        let ms = a.projector.ms_per_invocation.max(0.0) + a.projector.ms_per_record.max(0.0) * fill;
        est.lambda(&projector, v.received() / fill, v.memory_mb, ms, p);
    }
}

/// The operator's one stream reader for all in-cluster projectors of the log.
fn in_cluster_reader(ctx: &Ctx, est: &mut Estimate) {
    let full = (GET_RECORDS_MAX_KB / ctx.item_kb)
        .floor()
        .clamp(1.0, GET_RECORDS_MAX_RECORDS);
    let per_call = at_least(
        ctx.a.in_cluster.records_per_get_records.unwrap_or(full),
        1.0,
        full,
    )
    .min(GET_RECORDS_MAX_RECORDS);
    est.push(Line::new(
        Component::StreamReads,
        "log stream (in-cluster reader)",
        WRITES / per_call,
        Unit::ReadRequests,
        ctx.prices.dynamodb_streams_reads_per_million,
    ));
    est.note(
        "the in-cluster reader's GetRecords calls (one reader per log, whatever the number of in-cluster \
         views) are counted at full responses; idle polls (about one a second per shard) are a fixed \
         monthly cost and are left out",
    );
}

/// A view's writes and storage in its views table.
fn view_items(ctx: &Ctx, v: &ViewFacts, est: &mut Estimate) {
    let (p, a) = (ctx.prices, ctx.a);
    let resource = format!("view {}", v.name);
    let marker_kb = at_least(a.marker_item_size_kb, f64::MIN_POSITIVE, 0.1);
    let aggregate_kb = at_least(a.aggregate_item_size_kb, f64::MIN_POSITIVE, 0.1);
    let projected = v.projected();
    let (units_per_record, kb_stored) = match v.mode {
        Some(ProjectionMode::Append) => (write_units(v.item_kb), projected * v.item_kb),
        Some(ProjectionMode::Latest) | None => {
            (write_units(v.item_kb), projected * v.new_key_share * v.item_kb)
        }
        // One TransactWriteItems per batch: the record's idempotency marker put and its share of the
        // aggregate's ADD, each a transactional write (2 units per KB). Priced as one ADD per record, an
        // upper bound (one per key and batch in practice); no reads, whatever the key's history.
        Some(ProjectionMode::Count | ProjectionMode::Sum) => (
            2.0 * write_units(marker_kb) + 2.0 * write_units(aggregate_kb),
            projected * marker_kb + projected * v.new_key_share * aggregate_kb,
        ),
        // One conditional UpdateItem per record (a failed condition is billed too), no marker.
        Some(ProjectionMode::Min | ProjectionMode::Max) => (
            write_units(aggregate_kb),
            projected * v.new_key_share * aggregate_kb,
        ),
    };
    est.push(Line::new(
        Component::DynamoDbWrites,
        &resource,
        projected * units_per_record,
        Unit::WriteUnits,
        p.dynamodb_write_units_per_million,
    ));
    est.push(Line::new(
        Component::DynamoDbStorage,
        &resource,
        ctx.storage(kb_stored),
        Unit::GbMonths,
        p.dynamodb_storage_gb_month,
    ));
}

/// Each views table with Streams: its stream and who reads it. When a view on the Lambda runtime has
/// `spec.subscribers`: the notifier Lambda (stream reads are free for Lambda) and its API Gateway
/// WebSocket messages, one per change of a subscribed view per subscriber; with in-cluster subscribers
/// only, the operator's push feed (one `GetRecords` per poll, too few per million writes to show); with no
/// subscribers, nothing reads the stream.
fn views_tables(ctx: &Ctx, views: &[ViewFacts], est: &mut Estimate) {
    struct Table<'v> {
        name: &'v str,
        streams: bool,
        /// Stream records: every change of every view in the table.
        records: f64,
        /// Views asking for Streams.
        asking: Vec<&'v str>,
        /// Changes of views on the Lambda runtime with subscribers, and their size in 32 KB messages.
        pushed_messages: f64,
        lambda_push: bool,
        in_cluster_push: bool,
    }
    let mut tables: Vec<Table> = Vec::new();
    for v in views {
        let changes = v.projected() * v.changes_per_record();
        let i = match tables.iter().position(|t| t.name == v.table) {
            Some(i) => i,
            None => {
                tables.push(Table {
                    name: &v.table,
                    streams: false,
                    records: 0.0,
                    asking: Vec::new(),
                    pushed_messages: 0.0,
                    lambda_push: false,
                    in_cluster_push: false,
                });
                tables.len() - 1
            }
        };
        let t = &mut tables[i];
        t.streams |= v.streams;
        t.records += changes;
        if v.streams {
            t.asking.push(v.name);
        }
        if v.streams && v.subscribers {
            match v.lambda {
                true => {
                    t.lambda_push = true;
                    // The operator's per-record contributions (Count/Sum) are not sent.
                    let item_kb = match v.mode {
                        Some(ProjectionMode::Count | ProjectionMode::Sum) => ctx.a.aggregate_item_size_kb,
                        _ => v.item_kb,
                    };
                    t.pushed_messages += v.projected() * (item_kb / 32.0).ceil().max(1.0);
                }
                false => t.in_cluster_push = true,
            }
        }
    }
    let a = &ctx.a.notifier;
    let fill = stream_records_per_invocation(a.records_per_invocation);
    let memory = f64::from(a.memory_mb.unwrap_or(DEFAULT_BUILT_IN_MEMORY_MB));
    let ms = a.ms_per_invocation.max(0.0) + a.ms_per_record.max(0.0) * fill;
    let mut any = false;
    for t in tables.iter().filter(|t| t.streams) {
        est.push(Line::new(
            Component::StreamReads,
            format!("{} stream", t.name),
            t.records,
            Unit::StreamRecords,
            0.0,
        ));
        let asking = t.asking.join(", ");
        if !t.lambda_push {
            est.note(match t.in_cluster_push {
                true => format!(
                    "{} has Streams (asked for by {asking}), read by the operator's push feed (in-cluster \
                     runtime): no notifier Lambda",
                    t.name
                ),
                false => format!(
                    "{} has Streams (asked for by {asking}) but no view of it has spec.subscribers: nothing \
                     reads the stream, which costs nothing",
                    t.name
                ),
            });
            continue;
        }
        any = true;
        est.lambda(
            &format!("notifier of {}", t.name),
            t.records / fill,
            memory,
            ms,
            ctx.prices,
        );
        let subscribers = ctx.a.subscribers_per_change.max(0.0);
        est.push(Line::new(
            Component::WebSocketMessages,
            format!("{} WebSocket API", t.name),
            t.pushed_messages * subscribers,
            Unit::Messages,
            ctx.prices.apigateway_websocket_messages_per_million,
        ));
        est.note(format!(
            "{} has Streams (asked for by {asking}): every change to it, of every view in it, is a stream \
             record the notifier Lambda is invoked for; each change of a view with subscribers is a WebSocket \
             message to each of subscribersPerChange ({}) subscribers",
            t.name,
            trim_number(subscribers)
        ));
    }
    if any {
        est.note(
            "WebSocket connection minutes ($0.25 per million in us-east-1) are left out: they depend on how \
             long clients stay connected, not on writes",
        );
    }
}
