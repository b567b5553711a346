//! The lifecycle of a view on the in-cluster runtime, once its table exists:
//!
//! ```text
//! live reader started ─▶ export requested (client token: uid + attempt) ─▶ export COMPLETED
//!   ─▶ backfill worker (per-file checkpoints) ─▶ export deleted ─▶ live reader caught up ─▶ Live/Ready
//!        ▲                                                                │ gap in the stream
//!        └──────────────── a new attempt (a new export of the log) ◀─────┘
//! ```
//!
//! Everything here is level-based: the status records where the backfill is (its attempt and export ARN),
//! the runtime registry holds the running tasks, and each reconcile moves one step.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use sha2::{Digest, Sha256};
use tracing::info;

use super::Context;
use super::backfill_step::{
    Approval, BackfillStep, ExportStep, Observed, RunStep, after_run, export_step, next_step,
};
use super::status::{self, Health};
use crate::aws::export::{self, ExportState};
use crate::aws::views::ViewTableWriter;
use crate::backfill::aggregate::Cutoff;
use crate::backfill::scan::ScanWorker;
use crate::backfill::worker::{PreAggregate, PreAggregation};
use crate::backfill::worker::{Progress, Worker};
use crate::crd::{
    APPROVE_BACKFILL_ANNOTATION, BackfillApproval, BackfillSource, BackfillStatus, EventLog, LiveStatus,
    MaterializedView, ViewPhase, reasons,
};
use crate::functions::progress;
use crate::projection::{ProjectionConfig, RecordErrors};
use crate::runtime::checkpoints::{self, ConfigMapCheckpoint, view_key};
use crate::runtime::live::LiveReader;
use crate::runtime::{BackfillFailure, BackfillRun};

/// Concurrent requests per view writer.
const WRITE_CONCURRENCY: usize = 16;

/// Which version of a view a run is for: its number, its runtime registry key and the base of its
/// checkpoint names and export prefix (see `crate::plan::versions`). The view passed along it carries the
/// version's content and, in `status.backfill`, the version's backfill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Target {
    pub version: i64,
    pub key: String,
    pub base: String,
}

impl Target {
    pub fn new(view: &MaterializedView, version: i64) -> Self {
        use crate::plan::versions::{checkpoint_base, runtime_key};
        Target {
            version,
            key: runtime_key(&view_key(view), version),
            base: checkpoint_base(&view.name_any(), version),
        }
    }
}

/// Where an in-cluster view stands after this reconcile.
pub(super) struct InClusterOutcome {
    pub phase: ViewPhase,
    pub health: Health,
    pub backfill: Option<BackfillStatus>,
    pub backfill_complete: bool,
    pub live: Option<LiveStatus>,
    /// When to look again.
    pub requeue: Duration,
    /// Resources to record in `status.resources` (a Lambda view's function, subscriptions, mapping).
    pub resources: std::collections::BTreeMap<String, String>,
    /// Under `onRecordError: Fail`: the record that stopped the view (a building version with one fails).
    pub skipped: Option<String>,
    /// Records left out under `onRecordError: Skip`, by the backfill and the live path.
    pub record_errors: RecordErrors,
    /// A Lambda view's dead-lettered records: the messages in its projector's failure queue.
    pub dead_letters: Option<i64>,
}

/// A version whose AWS resources are still being created.
pub(super) fn provisioning(message: String) -> InClusterOutcome {
    InClusterOutcome {
        phase: ViewPhase::Provisioning,
        health: Health::Progressing {
            reason: reasons::PROVISIONING,
            message,
        },
        backfill: None,
        backfill_complete: false,
        live: None,
        requeue: Duration::from_secs(5),
        resources: Default::default(),
        skipped: None,
        record_errors: RecordErrors::default(),
        dead_letters: None,
    }
}

/// A version whose backfill `b` is complete: it catches up with the live path next.
fn backfilled(b: BackfillStatus, requeue: Duration) -> InClusterOutcome {
    InClusterOutcome {
        phase: ViewPhase::CatchingUp,
        health: Health::Progressing {
            reason: reasons::BACKFILL_COMPLETE,
            message: "backfill complete".into(),
        },
        backfill: Some(b),
        backfill_complete: true,
        live: None,
        requeue,
        resources: Default::default(),
        skipped: None,
        record_errors: RecordErrors::default(),
        dead_letters: None,
    }
}

fn stalled(phase: ViewPhase, reason: &'static str, message: String) -> InClusterOutcome {
    InClusterOutcome {
        phase,
        health: Health::Stalled { reason, message },
        backfill: None,
        backfill_complete: false,
        live: None,
        requeue: Duration::from_secs(300),
        resources: Default::default(),
        skipped: None,
        record_errors: RecordErrors::default(),
        dead_letters: None,
    }
}

/// The EventLog's table as its status reports it (name, ARN, stream ARN), once it exists.
/// What the view's backfill will read, write, cost and take (see [`crate::cost::backfill`]): the log's size
/// and the views table's capacity from `DescribeTable`, all of the log's records of the view's record
/// types assumed to be projected (an upper bound). A sentence; the reason when a table cannot be read.
async fn backfill_plan(view: &MaterializedView, log: &EventLog, ctx: &Context, table: &str) -> String {
    use crate::aws::dynamodb::size_and_write_capacity;
    use crate::cost::backfill::BackfillEstimate;
    let Some(log_table) = log_table(log).map(|t| t.name.clone()) else {
        return "cannot be estimated until the EventLog reports its table".into();
    };
    let read = async {
        let (size, _) = size_and_write_capacity(&ctx.aws.dynamodb, &log_table).await?;
        let (_, capacity) = size_and_write_capacity(&ctx.aws.dynamodb, table).await?;
        Ok::<_, crate::aws::AwsError>((size, capacity))
    };
    match read.await {
        Ok((size, capacity)) => {
            let prices = crate::cost::Prices::default();
            let estimate = BackfillEstimate::new(view, size, 1.0, capacity, &prices);
            format!(
                "{} (an upper bound; the log's size as DescribeTable last counted it, us-east-1 list prices)",
                estimate.summary()
            )
        }
        Err(e) => format!("cannot be estimated now ({e})"),
    }
}

fn log_table(log: &EventLog) -> Option<&crate::crd::TableStatus> {
    log.status.as_ref()?.table.as_ref()
}

fn digest(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..16])
}

fn time_of(epoch_seconds: f64) -> Option<Time> {
    let nanos = (epoch_seconds * 1e9) as i128;
    Timestamp::from_nanosecond(nanos).ok().map(Time)
}

/// What the backfill needs to know of the live path.
pub(super) struct LiveFacts {
    /// The reader polled the stream at least once.
    pub started: bool,
    /// Set for a pre-aggregated backfill (see [`crate::backfill::aggregate`]).
    pub cutoff: Option<Cutoff>,
    /// Everything created up to then was read ([`crate::runtime::live::LiveProgress::passed`]).
    pub passed: Option<f64>,
}

/// Whether the view's `Count`/`Sum` backfill is pre-aggregated and folded: the operator runs its live path
/// (this module is the in-cluster runtime) and the backfill reads an export (a snapshot with a time).
fn pre_aggregated(view: &MaterializedView, projection: &ProjectionConfig) -> bool {
    projection.is_additive() && view.spec.backfill.source == BackfillSource::Export
}

/// Runs the view's live reader and backfill; see the module docs.
pub(super) async fn reconcile(
    view: &MaterializedView,
    target: &Target,
    log: &EventLog,
    ctx: &Context,
    ns: &str,
    table: &str,
    key_prefix: &str,
) -> InClusterOutcome {
    let name = view.name_any();
    let key = target.key.clone();
    let Some(stream_arn) = log_table(log).and_then(|t| t.stream_arn.clone()) else {
        return InClusterOutcome {
            phase: ViewPhase::Provisioning,
            health: Health::Progressing {
                reason: reasons::WAITING_FOR_LIVE_PATH,
                message: format!(
                    "waiting for EventLog {} to report its table's stream",
                    log.name_any()
                ),
            },
            backfill: None,
            backfill_complete: false,
            live: None,
            requeue: Duration::from_secs(5),
            resources: Default::default(),
            skipped: None,
            record_errors: RecordErrors::default(),
            dead_letters: None,
        };
    };
    let projection = match ProjectionConfig::from_spec(&name, &view.spec, &log.spec, key_prefix) {
        Ok(p) => Arc::new(p),
        Err(e) => return stalled(ViewPhase::Failed, reasons::INVALID_SPEC, e.to_string()),
    };
    // What the live path applies, from the view's and the log's specs: a change restarts it, a setting it
    // does not read (the log's billing, PITR) does not.
    let projection_text = format!("{projection:?}");

    // 1. The live path, first: the export may only start once it runs.
    let live_checkpoint = ConfigMapCheckpoint::new(
        ctx.client.clone(),
        ns,
        checkpoints::stream_name(&target.base),
        checkpoints::owner_of(view),
    );
    // Count/Sum views backfilled from an export are pre-aggregated: the live path needs the export time.
    let cutoff = pre_aggregated(view, &projection).then(|| {
        let b = view.status.as_ref().and_then(|s| s.backfill.as_ref());
        Cutoff {
            attempt: b.map_or(1, |b| b.attempt.max(1)),
            export_time: b
                .and_then(|b| b.export_time.as_ref())
                .map(|t| t.0.as_second() as f64),
        }
    });
    let live_fingerprint = digest(&[
        table,
        key_prefix,
        &stream_arn,
        &projection_text,
        &format!("{cutoff:?}"),
    ]);
    let live = ctx.runtime.live(&key, &live_fingerprint, |progress| {
        let reader = LiveReader {
            streams: ctx.aws.streams.clone(),
            stream_arn: stream_arn.clone(),
            projection: projection.clone(),
            writer: ViewTableWriter::for_view(
                ctx.aws.dynamodb.clone(),
                table,
                &projection,
                WRITE_CONCURRENCY,
            )
            .with_live_attempt(cutoff.as_ref().map(|c| c.attempt)),
            checkpoint: live_checkpoint.clone(),
            progress,
            poll_interval: Duration::from_secs(1),
            cutoff: cutoff.clone(),
        };
        tokio::spawn(reader.run())
    });
    let live_status = LiveStatus {
        caught_up: live.caught_up,
        watermark: live.watermark.and_then(time_of),
        records_applied: live.records_applied as i64,
        checkpoint: Some(live_checkpoint.name().to_string()),
        ..Default::default()
    };
    let gap = pending_gap(view, ctx, &key, &live_checkpoint).await;

    // 2. The backfill.
    let facts = LiveFacts {
        started: live.started,
        cutoff,
        passed: live.passed,
    };
    let call = BackfillCall {
        view,
        target,
        log,
        ctx,
        ns,
        table,
        projection: &projection,
        live: &facts,
    };
    let mut outcome = backfill(&call, gap).await;
    outcome.live = Some(live_status);
    if matches!(outcome.health, Health::Stalled { .. }) {
        return outcome;
    }
    outcome.record_errors.merge(&live.record_errors);
    if ctx.config.backfill_jobs.is_some() {
        // What a backfill Job's pods left out.
        outcome
            .record_errors
            .merge(&record_error_ledger(ctx, table, &projection).await.0);
    }
    if let Some(e) = &live.failed {
        outcome.skipped = Some(e.clone());
        outcome.live.iter_mut().for_each(|l| l.caught_up = false);
        return stalled_with(
            outcome,
            reasons::RECORD_ERROR,
            format!(
                "the live path stopped at a record it cannot apply (spec.projection.onRecordError is Fail): {e}"
            ),
        );
    }
    if let Some(e) = &live.error {
        outcome.health = Health::Progressing {
            reason: reasons::LIVE_PATH_FAILED,
            message: format!("the live path is retrying: {e}"),
        };
    }
    // 3. Live once backfilled and caught up.
    if outcome.backfill_complete {
        if live.caught_up && live.error.is_none() {
            let mut message = format!(
                "backfilled and live: {} stream records applied",
                live.records_applied
            );
            if let Some(e) = outcome.record_errors.last.back() {
                message += &format!(
                    "; {} log records were left out (spec.projection.onRecordError Skip; status.recordErrors), \
                     the last: {e}",
                    outcome.record_errors.count
                );
            }
            outcome.phase = ViewPhase::Live;
            outcome.health = Health::Ready {
                reason: reasons::LIVE,
                message,
            };
            outcome.requeue = Duration::from_secs(30);
        } else {
            outcome.phase = ViewPhase::CatchingUp;
            if live.error.is_none() {
                outcome.health = Health::Progressing {
                    reason: reasons::CATCHING_UP,
                    message: "backfill complete; the live path is catching up with the log's stream".into(),
                };
            }
            outcome.requeue = Duration::from_secs(2);
        }
    }
    outcome
}

/// What a backfill step reads: the view (carrying the version's content and, in `status.backfill`, the
/// version's backfill), the version, the log, the views table it writes and its live path.
pub(super) struct BackfillCall<'a> {
    pub view: &'a MaterializedView,
    pub target: &'a Target,
    pub log: &'a EventLog,
    pub ctx: &'a Context,
    pub ns: &'a str,
    pub table: &'a str,
    pub projection: &'a Arc<ProjectionConfig>,
    pub live: &'a LiveFacts,
}

fn progressing(
    phase: ViewPhase,
    reason: &'static str,
    message: String,
    b: Option<BackfillStatus>,
    requeue: Duration,
) -> InClusterOutcome {
    InClusterOutcome {
        phase,
        health: Health::Progressing { reason, message },
        backfill: b,
        backfill_complete: false,
        live: None,
        requeue,
        resources: Default::default(),
        skipped: None,
        record_errors: RecordErrors::default(),
        dead_letters: None,
    }
}

/// The key of a backfill task in the runtime registry: a new attempt, export or generation is a new task.
fn run_fingerprint(scan: bool, b: &BackfillStatus, generation: i64) -> String {
    match scan {
        true => digest(&["scan", &b.attempt.to_string(), &generation.to_string()]),
        false => digest(&[
            b.export_arn.as_deref().unwrap_or_default(),
            &generation.to_string(),
        ]),
    }
}

/// What this pass observes of the backfill `b` (see [`Observed`]), the key of its task in the runtime
/// registry, and the task if it runs (or ran) in this process.
fn observe<'a>(
    call: &BackfillCall<'_>,
    b: &BackfillStatus,
    gap: Option<&'a str>,
) -> (Observed<'a>, String, Option<BackfillRun>) {
    let view = call.view;
    let generation = view.metadata.generation.unwrap_or_default();
    let approved = view.annotations().get(APPROVE_BACKFILL_ANNOTATION) == Some(&generation.to_string());
    let approval = match view.spec.backfill.approval {
        BackfillApproval::Manual if approved => Approval::Approved,
        BackfillApproval::Manual => Approval::Awaiting,
        _ => Approval::NotRequired,
    };
    let scan = view.spec.backfill.source == BackfillSource::Scan;
    let fingerprint = run_fingerprint(scan, b, generation);
    let running = call.ctx.runtime.backfill_progress(&call.target.key, &fingerprint);
    let seen = Observed {
        source: view.spec.backfill.source,
        log_exports: call.log.spec.export.is_some(),
        gap,
        approval,
        live_started: call.live.started,
        log_table_arn: log_table(call.log).and_then(|t| t.arn.as_ref()).is_some(),
        running: running.is_some(),
    };
    (seen, fingerprint, running)
}

/// Takes the backfill's next step, decided by [`next_step`] from `status.backfill` and this pass's
/// observations; `gap` is a gap the live path found in the stream.
pub(super) async fn backfill(call: &BackfillCall<'_>, gap: Option<String>) -> InClusterOutcome {
    let b = call
        .view
        .status
        .as_ref()
        .and_then(|s| s.backfill.clone())
        .unwrap_or_default();
    let (seen, fingerprint, running) = observe(call, &b, gap.as_deref());
    let wait = |reason, message: &str, requeue| {
        progressing(
            ViewPhase::Backfilling,
            reason,
            message.into(),
            None,
            Duration::from_secs(requeue),
        )
    };
    match next_step(&b, &seen) {
        BackfillStep::NoBackfill => InClusterOutcome {
            backfill_complete: true,
            ..progressing(
                ViewPhase::CatchingUp,
                reasons::NO_BACKFILL,
                "spec.backfill.source None: the view starts from what the log's stream holds".into(),
                None,
                Duration::from_secs(2),
            )
        },
        BackfillStep::Invalid => stalled(
            ViewPhase::Failed,
            reasons::INVALID_SPEC,
            format!(
                "spec.backfill.source is Export but EventLog {} has no spec.export: add spec.export.bucket to the \
                 EventLog, or set spec.backfill.source to None",
                call.log.name_any()
            ),
        ),
        BackfillStep::CloseGap { next_attempt } => {
            close_gap(call, &b, next_attempt, seen.gap.unwrap_or_default()).await
        }
        BackfillStep::Finished { clean_up } => finished(call, b, clean_up).await,
        BackfillStep::AwaitApproval => await_approval(call).await,
        BackfillStep::AwaitLivePath => wait(
            reasons::WAITING_FOR_LIVE_PATH,
            "starting the live path before the export, so no record falls between them",
            1,
        ),
        BackfillStep::StartScan { attempt } => start_scan_status(call, b, attempt),
        BackfillStep::AwaitLogTable => wait(
            reasons::EXPORTING,
            "waiting for the EventLog to report its table ARN",
            5,
        ),
        BackfillStep::StartExport { attempt } => start_export(call, b, attempt).await,
        BackfillStep::Run | BackfillStep::Exporting => {
            let run = match running {
                Some(run) => run,
                None => match start_run(call, &b, &fingerprint).await {
                    Ok(run) => run,
                    Err(outcome) => return *outcome,
                },
            };
            follow_run(call, b, run).await
        }
    }
}

/// [`BackfillStep::Finished`]: removes what the backfill read, unless that was done (on every pass until
/// it succeeds).
async fn finished(call: &BackfillCall<'_>, mut b: BackfillStatus, clean_up: bool) -> InClusterOutcome {
    if clean_up {
        let export_spec = export_spec(call.log);
        let base = &call.target.base;
        b.cleaned_up =
            clean_up_backfill(call.view, call.log, call.ctx, call.ns, base, &b, &export_spec).await;
    }
    backfilled(b, Duration::from_secs(2))
}

/// [`BackfillStep::AwaitApproval`]: says what the backfill will cost and how to approve it.
async fn await_approval(call: &BackfillCall<'_>) -> InClusterOutcome {
    let view = call.view;
    let generation = view.metadata.generation.unwrap_or_default();
    let plan = backfill_plan(view, call.log, call.ctx, call.table).await;
    progressing(
        ViewPhase::Pending,
        reasons::BACKFILLING,
        format!(
            "spec.backfill.approval is Manual: the backfill {plan}; approve with `kubectl annotate mv {} \
             {APPROVE_BACKFILL_ANNOTATION}={generation}`",
            view.name_any()
        ),
        None,
        Duration::from_secs(300),
    )
}

/// [`BackfillStep::StartScan`]: records the start of the scan (it runs from the next pass).
fn start_scan_status(call: &BackfillCall<'_>, b: BackfillStatus, attempt: i64) -> InClusterOutcome {
    let b = BackfillStatus {
        attempt,
        reason: b.reason.or_else(|| Some("initial".into())),
        checkpoint: Some(checkpoints::backfill_name(&call.target.base, attempt)),
        started_at: Some(status::now()),
        progress: Some("0%".into()),
        ..BackfillStatus::default()
    };
    progressing(
        ViewPhase::Backfilling,
        reasons::BACKFILLING,
        "scanning the log (spec.backfill.source Scan)".into(),
        Some(b),
        Duration::from_secs(1),
    )
}

/// The log's `spec.export`, or an empty one for a view that scans the log.
fn export_spec(log: &EventLog) -> crate::crd::ExportSpec {
    log.spec.export.clone().unwrap_or_else(|| crate::crd::ExportSpec {
        bucket: String::new(),
        prefix: String::new(),
    })
}

/// [`BackfillStep::CloseGap`]: retires attempt `b` and records `next_attempt`.
async fn close_gap(
    call: &BackfillCall<'_>,
    b: &BackfillStatus,
    next_attempt: i64,
    gap: &str,
) -> InClusterOutcome {
    info!(view = %call.target.key, %gap, "closing a gap in the live path with a new backfill");
    if let Err(e) = retire_attempt(call.ctx, call.ns, &call.target.base, b).await {
        return progressing(
            ViewPhase::Backfilling,
            reasons::BACKFILLING,
            format!(
                "removing the unfinished attempt {} before closing a gap: {e}",
                b.attempt
            ),
            None,
            Duration::from_secs(5),
        );
    }
    crate::fail_point!("backfill-gap-found");
    let next = BackfillStatus {
        attempt: next_attempt,
        reason: Some(gap_reason(gap)),
        ..BackfillStatus::default()
    };
    // Recorded first, exported on a later pass: the live path must switch to the new attempt (and,
    // pre-aggregated, hold) before the export's time is taken, or records it applies under the old
    // attempt after that time would be in neither the export nor the new attempt's live part.
    progressing(
        ViewPhase::Backfilling,
        reasons::EXPORTING,
        format!("closing a gap with backfill attempt {}: {gap}", next.attempt),
        Some(next),
        Duration::from_secs(1),
    )
}

/// [`BackfillStep::StartExport`]: requests the log's export for `attempt` and records it.
async fn start_export(call: &BackfillCall<'_>, b: BackfillStatus, attempt: i64) -> InClusterOutcome {
    let (view, log, ctx) = (call.view, call.log, call.ctx);
    let export_spec = export_spec(log);
    let table_arn = log_table(log).and_then(|t| t.arn.clone()).unwrap_or_default();
    let root = crate::plan::log::export_root(&ctx.config.cluster_id, log);
    let uid = view.uid().unwrap_or_default();
    let prefix = export_prefix(&root, &export_spec.prefix, &call.target.base, &uid, attempt);
    let token = match call.target.version {
        ..=1 => digest(&[&uid, &attempt.to_string()]),
        v => digest(&[&uid, &format!("v{v}"), &attempt.to_string()]),
    };
    let started = match export::start_export(
        &ctx.aws.dynamodb,
        &table_arn,
        &export_spec.bucket,
        &prefix,
        &token,
    )
    .await
    {
        Ok(started) => started,
        Err(e) if e.retryable => {
            return progressing(
                ViewPhase::Backfilling,
                reasons::EXPORTING,
                e.to_string(),
                None,
                Duration::from_secs(10),
            );
        }
        Err(e) => return stalled(ViewPhase::Failed, reasons::EXPORT_FAILED, e.to_string()),
    };
    crate::fail_point!("backfill-export-started");
    info!(view = %call.target.key, export = %started.arn, attempt, "export of the log started");
    let now = status::now();
    let b = BackfillStatus {
        attempt,
        reason: b.reason.or_else(|| Some("initial".into())),
        export_location: Some(format!("s3://{}/{prefix}", export_spec.bucket)),
        checkpoint: Some(checkpoints::backfill_name(&call.target.base, attempt)),
        export_arn: Some(started.arn.clone()),
        export_time: Some(
            started
                .export_time
                .and_then(|t| time_of(t as f64))
                .unwrap_or_else(|| now.clone()),
        ),
        started_at: Some(now),
        progress: Some("0%".into()),
        ..BackfillStatus::default()
    };
    progressing(
        ViewPhase::Backfilling,
        reasons::EXPORTING,
        format!(
            "exporting the log to {}",
            b.export_location.clone().unwrap_or_default()
        ),
        Some(b),
        Duration::from_secs(2),
    )
}

/// [`BackfillStep::Run`] (a scan) or [`BackfillStep::Exporting`] with no task in this process: starts the
/// task reading the scan or the completed export (or the backfill Job reading it). `Err` is this pass's
/// outcome instead (the export still runs or failed, or the live path's band is not closed yet).
async fn start_run(
    call: &BackfillCall<'_>,
    b: &BackfillStatus,
    fingerprint: &str,
) -> Result<BackfillRun, Box<InClusterOutcome>> {
    // The backfill's share of the views table's capacity (spec.backfill.writeCapacityPercent).
    let limit = crate::aws::views::backfill_limit(
        &call.ctx.aws.dynamodb,
        call.table,
        call.view.spec.backfill.write_capacity_percent,
        1,
    )
    .await
    .unwrap_or(None);
    match call.view.spec.backfill.source {
        BackfillSource::Scan => start_scan(call, b, fingerprint, limit),
        _ => start_export_read(call, b, fingerprint, limit).await,
    }
}

/// Starts the parallel scan of the log (`spec.backfill.source: Scan`).
fn start_scan(
    call: &BackfillCall<'_>,
    b: &BackfillStatus,
    fingerprint: &str,
    limit: Option<f64>,
) -> Result<BackfillRun, Box<InClusterOutcome>> {
    let (view, ctx) = (call.view, call.ctx);
    let Some(log_table_name) = log_table(call.log).map(|t| t.name.clone()) else {
        return Err(Box::new(progressing(
            ViewPhase::Backfilling,
            reasons::BACKFILLING,
            "waiting for the EventLog to report its table".into(),
            Some(b.clone()),
            Duration::from_secs(5),
        )));
    };
    let parallelism = view.spec.backfill.parallelism.max(1);
    let worker = ScanWorker {
        dynamodb: ctx.aws.dynamodb.clone(),
        log_table: log_table_name,
        total_segments: parallelism * 4,
        projection: call.projection.clone(),
        writer: ViewTableWriter::for_view(
            ctx.aws.dynamodb.clone(),
            call.table,
            call.projection,
            WRITE_CONCURRENCY,
        )
        .with_rate_limit(limit),
        checkpoints: backfill_checkpoint(ctx, call.ns, view, &call.target.base, b.attempt),
        parallelism: parallelism as usize,
        progress: Arc::new(Mutex::new(Progress::default())),
    };
    info!(view = %call.target.key, segments = worker.total_segments, "backfilling by scanning the log");
    let progress = worker.progress.clone();
    let transient = worker.writer.transient_log().clone();
    Ok(ctx.runtime.backfill(&call.target.key, fingerprint, |run| {
        tokio::spawn(async move { track(progress, transient, worker.run(), run).await })
    }))
}

/// A backfill `b` that waits (`Err` of a step that could not start its task this pass).
fn backfilling(
    b: &BackfillStatus,
    reason: &'static str,
    message: String,
    requeue: Duration,
) -> Box<InClusterOutcome> {
    Box::new(progressing(
        ViewPhase::Backfilling,
        reason,
        message,
        Some(b.clone()),
        requeue,
    ))
}

/// The export of `b` once it completed (read with `DescribeExport`); `Err` is this pass's outcome while it
/// runs, or once it failed.
async fn completed_export(
    call: &BackfillCall<'_>,
    b: &BackfillStatus,
) -> Result<export::ExportInfo, Box<InClusterOutcome>> {
    let export_arn = b.export_arn.clone().unwrap_or_default();
    let wait = |reason, message, requeue| backfilling(b, reason, message, requeue);
    let export_spec = export_spec(call.log);
    let info = match export::describe_export(&call.ctx.aws.dynamodb, &export_arn).await {
        Ok(info) => info,
        Err(e) if e.retryable => {
            return Err(wait(reasons::EXPORTING, e.to_string(), Duration::from_secs(10)));
        }
        Err(e) => {
            return Err(Box::new(stalled(
                ViewPhase::Failed,
                reasons::EXPORT_FAILED,
                e.to_string(),
            )));
        }
    };
    match (export_step(&info.state), &info.state) {
        (ExportStep::Wait, _) => {
            let message = format!("export {export_arn} is in progress");
            return Err(wait(reasons::EXPORTING, message, Duration::from_secs(5)));
        }
        (ExportStep::Failed, ExportState::Failed { code, message }) => {
            return Err(Box::new(stalled(
                ViewPhase::Failed,
                reasons::EXPORT_FAILED,
                format!(
                    "export {export_arn} failed: {code}: {message}; fix the cause (the bucket {} must exist and \
                     accept DynamoDB's writes), then delete the view's status.backfill or recreate the view to \
                     export again",
                    export_spec.bucket
                ),
            )));
        }
        _ => {}
    }
    Ok(info)
}

/// Follows the export of [`BackfillStep::Exporting`]; once it completed, starts reading it: in this
/// process, or with an Indexed Job for a large export (`--backfill-jobs`).
async fn start_export_read(
    call: &BackfillCall<'_>,
    b: &BackfillStatus,
    fingerprint: &str,
    limit: Option<f64>,
) -> Result<BackfillRun, Box<InClusterOutcome>> {
    let ctx = call.ctx;
    let wait = |reason, message, requeue| backfilling(b, reason, message, requeue);
    let export_spec = export_spec(call.log);
    let info = completed_export(call, b).await?;
    let prefix = b
        .export_location
        .as_deref()
        .and_then(|l| l.strip_prefix(&format!("s3://{}/", export_spec.bucket)))
        .unwrap_or_default()
        .to_string();
    let writer = ViewTableWriter::for_view(
        ctx.aws.dynamodb.clone(),
        call.table,
        call.projection,
        WRITE_CONCURRENCY,
    )
    .with_rate_limit(limit);
    let items = info.item_count.unwrap_or(0).max(0) as u64;
    // A pre-aggregated backfill reads the export once the live path has recorded its band.
    let how = PreAggregation::of(call.projection, call.live.cutoff.is_some());
    if how == PreAggregation::Banded
        && let Some(cutoff) = &call.live.cutoff
        && !cutoff.band_closed(call.live.passed)
    {
        let message = format!(
            "waiting for the live path to read past the export time plus {}s, so that the records it applied \
             itself are known and left out of the export's sums",
            crate::backfill::aggregate::BAND_MARGIN_SECONDS
        );
        return Err(wait(reasons::BACKFILLING, message, Duration::from_secs(2)));
    }
    let jobs = ctx.config.backfill_jobs.as_ref().filter(|j| items > j.min_items);
    // The band is read by whoever reads the export: this process, or each of the Job's pods.
    let band = match (how, jobs) {
        (PreAggregation::Banded, None) => match writer.load_band(b.attempt).await {
            Ok(band) => band,
            Err(e) => {
                let message = format!("reading the live path's band: {e}");
                return Err(wait(reasons::BACKFILLING, message, Duration::from_secs(5)));
            }
        },
        _ => Default::default(),
    };
    let pre_aggregate = (how != PreAggregation::PerRecord).then(|| PreAggregate {
        band: Arc::new(band),
        partials_prefix: crate::backfill::aggregate::partials_prefix(&prefix, b.attempt),
        buckets: crate::backfill::aggregate::buckets_for(items),
    });
    let worker = Worker {
        s3: ctx.aws.s3.clone(),
        bucket: info.bucket.clone().unwrap_or_else(|| export_spec.bucket.clone()),
        summary_key: export::summary_key(&info, &prefix),
        projection: call.projection.clone(),
        writer,
        checkpoints: (),
        parallelism: call.view.spec.backfill.parallelism.max(1) as usize,
        share: (0, 1),
        progress: Arc::new(Mutex::new(Progress::default())),
        pre_aggregate,
    };
    match jobs {
        Some(jobs) => Ok(export_job(call, b, fingerprint, jobs, how, worker).await),
        None => Ok(export_task(call, b, fingerprint, worker)),
    }
}

/// Reads the export with an Indexed Job (`--backfill-jobs`); this process folds what its pods
/// pre-aggregated, with `worker` (its settings, without checkpoints).
async fn export_job(
    call: &BackfillCall<'_>,
    b: &BackfillStatus,
    fingerprint: &str,
    jobs: &crate::settings::BackfillJobs,
    how: PreAggregation,
    worker: Worker<()>,
) -> BackfillRun {
    let ledger = worker.writer.clone();
    let (bucket, summary) = (worker.bucket.clone(), worker.summary_key.clone());
    let fold = worker.pre_aggregate.is_some().then(|| Worker {
        parallelism: 1,
        ..worker
    });
    let job = JobBackfill {
        jobs,
        attempt: b.attempt,
        bucket: &bucket,
        summary_key: &summary,
        pre_aggregation: how,
        fold: fold.map(|w| (w, format!("{fingerprint}/fold"))),
        ledger,
    };
    job_backfill(call.view, call.target, call.ctx, call.ns, job).await
}

/// Reads the export in this process, resuming from the attempt's checkpoint.
fn export_task(
    call: &BackfillCall<'_>,
    b: &BackfillStatus,
    fingerprint: &str,
    worker: Worker<()>,
) -> BackfillRun {
    let ctx = call.ctx;
    let Worker {
        s3,
        bucket,
        summary_key,
        projection,
        writer,
        checkpoints: (),
        parallelism,
        share,
        progress,
        pre_aggregate,
    } = worker;
    let worker = Worker {
        s3,
        bucket,
        summary_key,
        projection,
        writer,
        checkpoints: backfill_checkpoint(ctx, call.ns, call.view, &call.target.base, b.attempt),
        parallelism,
        share,
        progress,
        pre_aggregate,
    };
    info!(view = %call.target.key, export = ?b.export_arn, summary = %worker.summary_key, "backfilling from the export");
    let progress = worker.progress.clone();
    let transient = worker.writer.transient_log().clone();
    let attempt = b.attempt;
    ctx.runtime.backfill(&call.target.key, fingerprint, |run| {
        let work = async move {
            worker.run().await?;
            worker.fold(attempt).await?;
            // With the record errors the fold found.
            Ok(worker.progress.lock().unwrap_or_else(|e| e.into_inner()).clone())
        };
        tokio::spawn(async move { track(progress, transient, work, run).await })
    })
}

/// Records the progress of the task `run` and, once it stopped, what [`after_run`] says its outcome
/// means.
async fn follow_run(call: &BackfillCall<'_>, mut b: BackfillStatus, run: BackfillRun) -> InClusterOutcome {
    let key = &call.target.key;
    let export_arn = b.export_arn.clone().unwrap_or_default();
    apply_progress(&mut b, &run.progress);
    let backfill_record_errors = run.progress.record_errors.clone();
    let failure = match &run.outcome {
        Some(Err(f)) => f.message.clone(),
        _ => String::new(),
    };
    let mut out = match after_run(run.outcome.as_ref()) {
        RunStep::Running => progressing(
            ViewPhase::Backfilling,
            reasons::BACKFILLING,
            format!(
                "backfilling from export {export_arn}: {} of {} files, {} of {} log records",
                run.progress.files_done,
                run.progress.files_total,
                run.progress.items_done,
                run.progress.items_total
            ),
            Some(b),
            Duration::from_secs(2),
        ),
        RunStep::Finished => {
            b.finished_at = Some(status::now());
            b.progress = Some("100%".into());
            b.eta = None;
            // The export and the checkpoint are removed once this is recorded (the next pass).
            crate::fail_point!("backfill-files-done");
            call.ctx.runtime.forget_backfill(key);
            info!(view = %key, records = run.progress.items_done, "backfill complete");
            backfilled(b, Duration::from_secs(1))
        }
        RunStep::ExportAgain => return export_again(call, b, &failure).await,
        RunStep::Resume => {
            call.ctx.runtime.forget_backfill(key);
            progressing(
                ViewPhase::Backfilling,
                reasons::BACKFILLING,
                format!("the backfill resumes from its checkpoint shortly: {failure}"),
                Some(b),
                Duration::from_secs(3),
            )
        }
        RunStep::Failed => {
            let mut outcome = stalled(
                ViewPhase::Failed,
                reasons::BACKFILL_FAILED,
                format!(
                    "{failure}; no file of the failed one is marked done: fix the cause and the backfill resumes"
                ),
            );
            outcome.backfill = Some(b);
            outcome
        }
    };
    out.record_errors = backfill_record_errors;
    out
}

/// [`RunStep::ExportAgain`]: the export completed, so its files were there: someone removed them. What is
/// recorded decides: the backfill did not finish, so a new attempt exports the log again, once what is left
/// of this one is removed.
async fn export_again(call: &BackfillCall<'_>, b: BackfillStatus, failure: &str) -> InClusterOutcome {
    let key = &call.target.key;
    call.ctx.runtime.forget_backfill(key);
    if let Err(e) = retire_attempt(call.ctx, call.ns, &call.target.base, &b).await {
        return progressing(
            ViewPhase::Backfilling,
            reasons::BACKFILLING,
            format!(
                "the export's files are gone; removing what is left of attempt {}: {e}",
                b.attempt
            ),
            Some(b),
            Duration::from_secs(5),
        );
    }
    tracing::warn!(view = %key, message = %failure, "the export's files are gone; starting a new backfill attempt");
    let next = BackfillStatus {
        attempt: b.attempt + 1,
        reason: Some(format!(
            "the files of export {} are gone ({failure}): exporting again",
            b.export_arn.as_deref().unwrap_or_default()
        )),
        ..BackfillStatus::default()
    };
    progressing(
        ViewPhase::Backfilling,
        reasons::EXPORTING,
        format!(
            "the export's files are gone; exporting the log again (attempt {})",
            next.attempt
        ),
        Some(next),
        Duration::from_secs(1),
    )
}

/// A view on the Lambda runtime once its projector function exists: its live path is the subscription or
/// mapping (`live_path_ready`), created before the export, so the same backfill applies; the view is `Live`
/// when the backfill is complete (Lambda's own retries keep the live path caught up).
#[allow(clippy::too_many_arguments)]
pub(super) async fn lambda_view(
    view: &MaterializedView,
    target: &Target,
    log: &EventLog,
    ctx: &Context,
    ns: &str,
    table: &str,
    key_prefix: &str,
    live_path_ready: bool,
    gap: Option<String>,
) -> InClusterOutcome {
    if !live_path_ready {
        return InClusterOutcome {
            phase: ViewPhase::Provisioning,
            health: Health::Progressing {
                reason: reasons::PROVISIONING,
                message:
                    "creating the projector function and its live path (subscriptions or stream mapping)"
                        .into(),
            },
            backfill: None,
            backfill_complete: false,
            live: None,
            requeue: Duration::from_secs(5),
            resources: Default::default(),
            skipped: None,
            record_errors: RecordErrors::default(),
            dead_letters: None,
        };
    }
    let mut outcome = match view.spec.projection {
        Some(_) => match ProjectionConfig::from_spec(&view.name_any(), &view.spec, &log.spec, key_prefix) {
            Ok(p) => {
                let facts = LiveFacts {
                    started: true,
                    cutoff: None,
                    passed: None,
                };
                let call = BackfillCall {
                    view,
                    target,
                    log,
                    ctx,
                    ns,
                    table,
                    projection: &Arc::new(p),
                    live: &facts,
                };
                backfill(&call, gap).await
            }
            Err(e) => stalled(ViewPhase::Failed, reasons::INVALID_SPEC, e.to_string()),
        },
        None if view.spec.backfill.source == BackfillSource::None => InClusterOutcome {
            phase: ViewPhase::Live,
            health: Health::Ready {
                reason: reasons::LIVE,
                message: String::new(),
            },
            backfill: None,
            backfill_complete: true,
            live: None,
            requeue: Duration::from_secs(300),
            resources: Default::default(),
        skipped: None,
        record_errors: RecordErrors::default(),
        dead_letters: None,
        },
        None => stalled(
            ViewPhase::Failed,
            reasons::NOT_SUPPORTED,
            "the operator backfills declarative projections (spec.projection) only: with a custom projector set \
             spec.backfill.source to None"
                .into(),
        ),
    };
    if outcome.backfill_complete {
        outcome.phase = ViewPhase::Live;
        outcome.health = Health::Ready {
            reason: reasons::LIVE,
            message: "the projector function and its live path are in place and the backfill is complete"
                .into(),
        };
        outcome.requeue = ctx.config.resync;
    }
    // What the projector function left out, or the record it stops at (spec.projection.onRecordError).
    if view.spec.projector.code.is_none()
        && let Ok(projection) =
            ProjectionConfig::from_spec(&view.name_any(), &view.spec, &log.spec, key_prefix)
    {
        let fingerprint = crate::functions::projector::ProjectorConfig::for_view(
            &view.name_any(),
            &view.spec,
            &log.spec,
            table,
            key_prefix,
        )
        .map(|c| c.fingerprint())
        .unwrap_or_default();
        let (errors, failing) = record_error_ledger(ctx, table, &projection).await;
        outcome.record_errors.merge(&errors);
        if live_path_ready {
            lambda_live(&mut outcome, view, ctx, table, &projection).await;
        }
        if let Some(message) =
            failing.and_then(|(m, noted)| current_failure(&noted, &fingerprint).then_some(m))
            && !matches!(outcome.health, Health::Stalled { .. })
        {
            outcome.live.iter_mut().for_each(|l| l.caught_up = false);
            return stalled_with(
                outcome,
                reasons::RECORD_ERROR,
                format!(
                    "the projector function stops at a record it cannot apply (spec.projection.onRecordError is \
                     Fail; its event source mapping retries it until the record leaves the stream): {message}"
                ),
            );
        }
    }
    outcome
}

/// A Lambda view's live path as its projector function reports it (`crate::functions::progress`):
/// `outcome.live` with the reported lag (caught up within `spec.promotion.maxLag`, which promotion waits
/// on), and a retryable failure the function reports as `LivePathFailed` (Progressing, as an in-cluster
/// reader's). The item unreadable: the live status is left unknown (not caught up) and a warning logged.
async fn lambda_live(
    outcome: &mut InClusterOutcome,
    view: &MaterializedView,
    ctx: &Context,
    table: &str,
    projection: &ProjectionConfig,
) {
    let writer = ViewTableWriter::for_view(ctx.aws.dynamodb.clone(), table, projection, 1);
    let item = match writer.live_progress().await {
        Ok(item) => item,
        Err(e) => {
            tracing::warn!(view = projection.view_name(), error = %e, "could not read the projector's progress");
            outcome.live = Some(LiveStatus::default());
            return;
        }
    };
    let max_lag = crate::crd::parse_duration(&view.spec.promotion.max_lag)
        .unwrap_or(Duration::from_secs(30))
        .as_millis() as i64;
    let quiet = progress::quiet_after_ms(i64::from(view.spec.projector.timeout_seconds));
    let seen = progress::assess(item.as_ref(), progress::now_ms(), max_lag, quiet);
    let item = item.unwrap_or_default();
    outcome.live = Some(LiveStatus {
        caught_up: seen.caught_up,
        records_applied: item.records as i64,
        lag_seconds: seen.lag_ms.map(|ms| (ms + 999) / 1_000),
        last_reported: item.applied_at_ms.and_then(|ms| time_of(ms as f64 / 1_000.0)),
        ..Default::default()
    });
    // The function reports between reconciles: read it again as often as an in-cluster view's reader is.
    outcome.requeue = outcome.requeue.min(Duration::from_secs(30));
    if matches!(outcome.health, Health::Stalled { .. }) || seen.caught_up {
        return;
    }
    outcome.requeue = outcome.requeue.min(Duration::from_secs(5));
    if let Some(reason) = seen.failing {
        outcome.health = Health::Progressing {
            reason: reasons::LIVE_PATH_FAILED,
            message: format!(
                "the projector function fails to apply records and Lambda retries them (its event source \
                 mapping or SNS): {reason}"
            ),
        };
    } else if outcome.phase == ViewPhase::Live {
        outcome.phase = ViewPhase::CatchingUp;
        outcome.health = Health::Progressing {
            reason: reasons::CATCHING_UP,
            message: format!(
                "backfill complete; the projector function reports a lag of {}s, over spec.promotion.maxLag \
                 ({})",
                seen.lag_ms.map_or(0, |ms| (ms + 999) / 1_000),
                view.spec.promotion.max_lag
            ),
        };
    }
}

/// How long a record error noted by a failing projector function counts as current without being noted
/// again, in seconds: the event source mapping retries the failing batch (with backoff) for as long as
/// the record is in the stream, noting it at every attempt.
const FAILING_FRESH_SECONDS: u64 = 900;

/// Whether `noted` (`<fingerprint>@<epoch seconds>`, see `DynamoViewStore::record_error`) is a failure of
/// the projector configured as `fingerprint`, noted within [`FAILING_FRESH_SECONDS`].
fn current_failure(noted: &str, fingerprint: &str) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match noted.split_once('@') {
        Some((f, at)) => {
            f == fingerprint
                && at
                    .parse::<u64>()
                    .is_ok_and(|at| now.saturating_sub(at) <= FAILING_FRESH_SECONDS)
        }
        None => false,
    }
}

/// The view's record-error ledger (what its projector function or a backfill Job's pods left out); empty
/// when it cannot be read (logged: the next reconcile reads it again).
async fn record_error_ledger(
    ctx: &Context,
    table: &str,
    projection: &ProjectionConfig,
) -> (RecordErrors, Option<(String, String)>) {
    let writer = ViewTableWriter::for_view(ctx.aws.dynamodb.clone(), table, projection, 1);
    match writer.record_error_ledger().await {
        Ok(ledger) => ledger,
        Err(e) => {
            tracing::warn!(view = projection.view_name(), error = %e, "could not read the view's record-error ledger");
            Default::default()
        }
    }
}

/// The `status.backfill.reason` of the attempt that closes `gap`.
pub(super) fn gap_reason(gap: &str) -> String {
    format!("closing a gap: {gap}")
}

/// The gap the live reader reported (kept in its checkpoint until acknowledged, so a restart does not
/// lose it) that still needs a backfill attempt: `None` once the attempt for it is recorded in status
/// (then the gap is acknowledged and cleared), when no backfill ran yet (the first one covers it), or
/// when the view has no backfill (`source: None`: the loss is reported as a Warning Event and counted in
/// `kappa_view_gaps_total`, with the fix).
async fn pending_gap(
    view: &MaterializedView,
    ctx: &Context,
    key: &str,
    checkpoint: &ConfigMapCheckpoint,
) -> Option<String> {
    let gap = ctx.runtime.gap(key)?;
    if let Some(gap) = unrecorded_gap(view, ctx, gap.clone()).await {
        return Some(gap);
    }
    match checkpoint.clear_gap(&gap).await {
        Ok(()) => ctx.runtime.ack_gap(key, &gap),
        Err(e) => tracing::warn!(view = %key, error = %e, "could not clear the handled gap; trying again"),
    }
    None
}

/// `gap` (records the view's live path lost) when it still needs a backfill attempt: `None` once the
/// attempt for it is recorded in status, when no backfill ran yet (the first one covers it), or when the
/// view has no backfill (`source: None`: the loss is then reported as a Warning Event `RecordsLost` and
/// counted in `kappa_view_gaps_total`, with the fix).
pub(super) async fn unrecorded_gap(view: &MaterializedView, ctx: &Context, gap: String) -> Option<String> {
    let b = view.status.as_ref().and_then(|s| s.backfill.as_ref());
    let recorded = b.is_some_and(|b| b.reason.as_deref() == Some(gap_reason(&gap).as_str()));
    let first = b.is_none_or(|b| b.attempt == 0);
    let none = view.spec.backfill.source == BackfillSource::None;
    if !(recorded || first || none) {
        return Some(gap);
    }
    if none && !recorded {
        ctx.metrics
            .gaps
            .get_or_create(&crate::metrics::ViewLabels {
                namespace: view.namespace().unwrap_or_default(),
                view: view.name_any(),
            })
            .inc();
        status::publish(
            ctx,
            view,
            kube::runtime::events::EventType::Warning,
            reasons::RECORDS_LOST,
            "Live",
            format!(
                "the view lost log records: {gap}; it has no backfill (spec.backfill.source None), so they stay \
                 missing: set spec.backfill.source to Export (or Scan) to rebuild the view from the log"
            ),
        )
        .await;
    }
    None
}

/// What [`job_backfill`] is given.
struct JobBackfill<'a> {
    jobs: &'a crate::settings::BackfillJobs,
    attempt: i64,
    bucket: &'a str,
    summary_key: &'a str,
    /// How the Job's pods combine records (they write partials unless `PerRecord`).
    pre_aggregation: PreAggregation,
    /// The fold of the pods' partials once every file is done, and its run's fingerprint.
    fold: Option<(Worker<()>, String)>,
    /// The view's writer, to read its record-error ledger.
    ledger: ViewTableWriter,
}

/// A large export's backfill as an Indexed Job of the operator's image (see `crate::plan::job`): creates the
/// Job once, and reads progress and completion from the view's backfill checkpoint, which the Job's pods
/// write. The Job is deleted once every data file is done.
async fn job_backfill(
    view: &MaterializedView,
    target: &Target,
    ctx: &Context,
    ns: &str,
    job: JobBackfill<'_>,
) -> BackfillRun {
    let JobBackfill {
        jobs,
        attempt,
        bucket,
        summary_key,
        pre_aggregation,
        fold,
        ledger,
    } = job;
    use k8s_openapi::api::batch::v1::Job;
    use kube::Api;
    use kube::api::{DeleteParams, PostParams, PropagationPolicy};
    let name = view.name_any();
    let failure = |message: String, retryable: bool| BackfillRun {
        progress: Progress::default(),
        outcome: Some(Err(BackfillFailure {
            message,
            retryable,
            input_gone: false,
        })),
    };
    let workers = view.spec.backfill.parallelism.max(1);
    let env = [
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "KAPPA_S3_PATH_STYLE",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
    .collect();
    let spec = crate::plan::job::BackfillJob {
        namespace: ctx.config.lease_namespace.clone(),
        image: jobs.image.clone(),
        service_account: jobs.service_account.clone(),
        view_namespace: ns.to_string(),
        view: name.clone(),
        version: target.version,
        attempt,
        workers,
        pre_aggregation,
        env,
    };
    // The manifests first: pods started before the export's files are readable would only fail.
    let (_, files) = match crate::backfill::worker::read_manifests(&ctx.aws.s3, bucket, summary_key).await {
        Ok(m) => m,
        Err(e) => {
            let gone = matches!(
                e,
                crate::backfill::worker::BackfillError::ManifestMissing { .. }
                    | crate::backfill::worker::BackfillError::DataFileMissing { .. }
            );
            let mut run = failure(e.to_string(), e.retryable());
            if let Some(Err(f)) = run.outcome.as_mut() {
                f.input_gone = gone;
            }
            return run;
        }
    };
    let checkpoint = ConfigMapCheckpoint::new(
        ctx.client.clone(),
        ns,
        checkpoints::backfill_name(&target.base, attempt),
        None,
    );
    let keys: Vec<String> = files.iter().map(|f| f.data_file_s3_key.clone()).collect();
    crate::backfill::worker::FileCheckpoints::layout(&checkpoint, &keys, (0, 1));
    let done = match crate::backfill::worker::FileCheckpoints::done(&checkpoint).await {
        Ok(done) => done,
        Err(e) => return failure(e, true),
    };
    let finished: Vec<_> = files
        .iter()
        .filter(|f| done.contains(&f.data_file_s3_key))
        .collect();
    let progress = Progress {
        files_total: files.len() as u64,
        files_done: finished.len() as u64,
        items_total: files.iter().map(|f| f.item_count).sum(),
        items_done: finished.iter().map(|f| f.item_count).sum(),
        files_resumed: 0,
        items_per_second: 0.0,
        writes_sent: 0,
        ..Progress::default()
    };
    // The Job runs until the checkpoint holds every file; after that it is never (re)created, whatever
    // happened to it (the operator may have deleted it and stopped before recording the backfill).
    let job_name = crate::plan::job::job_name(ns, &target.base, attempt);
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &spec.namespace);
    if finished.len() < files.len() {
        let job = match api.get_opt(&job_name).await {
            Ok(Some(job)) => job,
            Ok(None) => match api
                .create(&PostParams::default(), &crate::plan::job::backfill_job(&spec))
                .await
            {
                Ok(job) => {
                    info!(view = %name, job = %job_name, workers, "backfilling with an Indexed Job");
                    job
                }
                Err(e) => return failure(format!("creating backfill Job {job_name}: {e}"), true),
            },
            Err(e) => return failure(format!("reading backfill Job {job_name}: {e}"), true),
        };
        let failed = job
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Failed" && c.status == "True"));
        if let Some(condition) = failed {
            // Why: a pod notes the error that stopped it in the view's record-error ledger.
            // Only this attempt's pods' note (`job@a<attempt>i<index>`), not an older failure.
            let why = ledger.record_error_ledger().await.ok().and_then(|l| l.1);
            let why = why
                .filter(|(_, noted)| noted.starts_with(&format!("job@a{attempt}i")))
                .map(|(m, _)| format!(" ({m})"))
                .unwrap_or_default();
            return failure(
                format!(
                    "backfill Job {}/{job_name} failed: {}{why}; see `kubectl -n {} logs job/{job_name}`, fix the \
                     cause and delete the Job to run it again",
                    spec.namespace,
                    condition.message.clone().unwrap_or_default(),
                    spec.namespace
                ),
                false,
            );
        }
        return BackfillRun {
            progress,
            outcome: None,
        };
    }
    // Every share wrote its partials: fold them, once, here (idempotent if the operator restarts).
    let mut record_errors = RecordErrors::default();
    if let Some((worker, fingerprint)) = fold {
        let key = target.key.clone();
        let tracked = worker.progress.clone();
        let transient = worker.writer.transient_log().clone();
        let run = ctx.runtime.backfill(&key, &fingerprint, |run| {
            let work = async move {
                worker.fold(attempt).await?;
                Ok(worker.progress.lock().unwrap_or_else(|e| e.into_inner()).clone())
            };
            tokio::spawn(async move { track(tracked, transient, work, run).await })
        });
        match run.outcome {
            None => {
                return BackfillRun {
                    progress,
                    outcome: None,
                };
            }
            Some(Err(e)) => {
                // The caller forgets the run, so the next pass folds again.
                return BackfillRun {
                    progress,
                    outcome: Some(Err(e)),
                };
            }
            Some(Ok(())) => record_errors = run.progress.record_errors,
        }
    }
    let progress = Progress {
        record_errors,
        ..progress
    };
    let background = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    match api.delete(&job_name, &background).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => tracing::warn!(job = %job_name, error = %e, "could not delete the finished backfill Job"),
    }
    BackfillRun {
        progress,
        outcome: Some(Ok(())),
    }
}

/// The ConfigMap a view's backfill `attempt` checkpoints its files or segments in, owned by the view.
fn backfill_checkpoint(
    ctx: &Context,
    ns: &str,
    view: &MaterializedView,
    base: &str,
    attempt: i64,
) -> ConfigMapCheckpoint {
    ConfigMapCheckpoint::new(
        ctx.client.clone(),
        ns,
        checkpoints::backfill_name(base, attempt),
        checkpoints::owner_of(view),
    )
}

/// Removes what a finished (and recorded) backfill read: its export's files, only below the log's own
/// export root and unless `spec.backfill.keepExport`, and its checkpoint ConfigMap. Idempotent; `true`
/// once both are gone (a failure is logged and tried again on the next pass).
async fn clean_up_backfill(
    view: &MaterializedView,
    log: &EventLog,
    ctx: &Context,
    ns: &str,
    base: &str,
    b: &BackfillStatus,
    export_spec: &crate::crd::ExportSpec,
) -> bool {
    let key = format!("{ns}/{base}");
    let mut done = true;
    // Only below the log's own export root, whatever status says.
    let root = format!("{}/", crate::plan::log::export_root(&ctx.config.cluster_id, log));
    let ours = b
        .export_location
        .as_deref()
        .and_then(|l| l.strip_prefix(&format!("s3://{}/", export_spec.bucket)))
        .is_some_and(|p| p.starts_with(&root));
    if !view.spec.backfill.keep_export && ours {
        match delete_export(ctx, ns, base, b).await {
            Ok(n) => info!(view = %key, objects = n, "deleted the export"),
            Err(e) => {
                tracing::warn!(view = %key, error = %e, "could not delete the export yet; trying again");
                done = false;
            }
        }
    }
    crate::fail_point!("backfill-export-deleted");
    done && delete_backfill_checkpoint(ctx, ns, base, b.attempt).await
}

/// Deletes the checkpoint ConfigMap of view (version) `base`'s backfill `attempt`; `false` (logged) when
/// it could not be deleted now.
async fn delete_backfill_checkpoint(ctx: &Context, ns: &str, base: &str, attempt: i64) -> bool {
    let checkpoint = ConfigMapCheckpoint::new(
        ctx.client.clone(),
        ns,
        checkpoints::backfill_name(base, attempt),
        None,
    );
    match checkpoint.delete().await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(view = %format!("{ns}/{base}"), error = %e, "could not delete the backfill checkpoint yet");
            false
        }
    }
}

/// Removes what an attempt that will not finish (superseded by a new attempt: a gap, its export's files
/// gone, its views table re-created) left: its export, its checkpoint and its backfill Job. Idempotent;
/// `Err` (to try again before moving on, so nothing is left behind) when the export cannot be deleted.
pub(super) async fn retire_attempt(
    ctx: &Context,
    ns: &str,
    base: &str,
    b: &BackfillStatus,
) -> Result<(), crate::aws::AwsError> {
    if b.attempt == 0 || b.cleaned_up {
        return Ok(());
    }
    let n = delete_export(ctx, ns, base, b).await?;
    if n > 0 {
        info!(view = %format!("{ns}/{base}"), attempt = b.attempt, objects = n, "removed the superseded attempt's export");
    }
    delete_backfill_checkpoint(ctx, ns, base, b.attempt).await;
    delete_backfill_job(ctx, ns, base, b.attempt).await;
    Ok(())
}

/// Deletes the backfill Job of view (version) `base`'s `attempt`, with its pods, if there is one.
pub(super) async fn delete_backfill_job(ctx: &Context, ns: &str, base: &str, attempt: i64) {
    use k8s_openapi::api::batch::v1::Job;
    use kube::api::{DeleteParams, PropagationPolicy};
    let name = crate::plan::job::job_name(ns, base, attempt);
    let api: kube::Api<Job> = kube::Api::namespaced(ctx.client.clone(), &ctx.config.lease_namespace);
    let background = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    match api.delete(&name, &background).await {
        Ok(_) => info!(job = %name, "deleted the backfill Job"),
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => tracing::warn!(job = %name, error = %e, "could not delete the backfill Job"),
    }
}

/// Deletes the export backfill `b` of view (version) `base` in namespace `ns` wrote, if any: every object
/// below its `exportLocation`, which must lie where the operator writes this namespace's exports
/// (`kappa-exports/<cluster>/<ns>/…/views/<base>/<attempt>`), else nothing is touched. Returns the
/// objects deleted. For a finished backfill, a retired version and a deleted view alike.
pub(super) async fn delete_export(
    ctx: &Context,
    ns: &str,
    base: &str,
    b: &BackfillStatus,
) -> Result<usize, crate::aws::AwsError> {
    let Some((bucket, prefix)) = b
        .export_location
        .as_deref()
        .and_then(|l| l.strip_prefix("s3://"))
        .and_then(|l| l.split_once('/'))
    else {
        return Ok(0);
    };
    let area = format!("kappa-exports/{}/{ns}/", ctx.config.cluster_id);
    if !prefix.starts_with(&area) || !is_views_export(prefix, base, b.attempt) || bucket.is_empty() {
        tracing::warn!(location = ?b.export_location, "not deleting an export outside the operator's own area");
        return Ok(0);
    }
    export::delete_prefix(&ctx.aws.s3, bucket, &format!("{prefix}/")).await
}

/// Whether `prefix` ends as an export of view (version) `base`'s attempt `attempt` does:
/// `…/views/<base>/<uid>/<attempt>`, or `…/views/<base>/<attempt>` as versions before uids wrote it.
fn is_views_export(prefix: &str, base: &str, attempt: i64) -> bool {
    let Some(head) = prefix.strip_suffix(&format!("/{attempt}")) else {
        return false;
    };
    let own = format!("/views/{base}");
    head.ends_with(&own)
        || head.rsplit_once('/').is_some_and(|(head, uid)| {
            head.ends_with(&own) && !uid.is_empty() && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        })
}

/// The prefix of a view's export: the log's `root` ([`crate::plan::log::export_root`]), then the
/// EventLog's `spec.export.prefix` (`base`, which only adds below the root), then the view's own:
/// `views/<view>/<uid>/<attempt>`. The view object's uid keeps a view created again under the same name
/// from ever reading what its predecessor's backfill left there (its partial aggregates).
fn export_prefix(root: &str, base: &str, view: &str, uid: &str, attempt: i64) -> String {
    let base = base.trim_matches('/');
    let own = format!("views/{view}/{uid}/{attempt}");
    match base.is_empty() {
        true => format!("{root}/{own}"),
        false => format!("{root}/{base}/{own}"),
    }
}

/// `outcome`, stopped (Stalled, phase Failed) for `reason` with `message`; its live and backfill status kept.
fn stalled_with(mut outcome: InClusterOutcome, reason: &'static str, message: String) -> InClusterOutcome {
    outcome.phase = ViewPhase::Failed;
    outcome.health = Health::Stalled { reason, message };
    outcome.requeue = Duration::from_secs(30);
    outcome
}

fn apply_progress(b: &mut BackfillStatus, p: &Progress) {
    b.record_errors = p.record_errors.count as i64;
    b.files_done = p.files_done as i64;
    b.files_total = p.files_total as i64;
    b.items_done = p.items_done as i64;
    b.items_total = p.items_total as i64;
    let percent = (p.items_done * 100)
        .checked_div(p.items_total)
        .or_else(|| (p.files_done * 100).checked_div(p.files_total));
    if let Some(percent) = percent {
        b.progress = Some(format!("{percent}%"));
    }
    b.transient_errors = p.transient.count as i64;
    b.last_transient_error = p.transient.last.clone();
    if p.items_per_second > 0.0 {
        b.items_per_second = Some(p.items_per_second.round() as i64);
        let left = p.items_total.saturating_sub(p.items_done) as f64 / p.items_per_second;
        b.eta = Some(format_duration(left.round() as u64));
    }
}

use crate::cost::backfill::format_duration;

/// Runs one backfill (an export's or a scan's), copying its progress into the registry every second and its outcome at the end.
async fn track(
    progress: Arc<Mutex<Progress>>,
    transient: crate::aws::retry::TransientLog,
    work: impl Future<Output = Result<Progress, crate::backfill::worker::BackfillError>>,
    run: Arc<Mutex<BackfillRun>>,
) {
    let copy = |outcome: Option<Result<(), BackfillFailure>>| {
        let mut p = progress.lock().unwrap_or_else(|e| e.into_inner()).clone();
        p.transient = transient.get();
        let mut r = run.lock().unwrap_or_else(|e| e.into_inner());
        r.progress = p;
        r.outcome = outcome;
    };
    tokio::pin!(work);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let result = loop {
        tokio::select! {
            result = &mut work => break result,
            _ = tick.tick() => copy(None),
        }
    };
    copy(Some(result.map(|_| ()).map_err(|e| {
        tracing::warn!(error = %e, retryable = e.retryable(), "backfill stopped");
        BackfillFailure {
            message: e.to_string(),
            retryable: e.retryable(),
            input_gone: matches!(
                e,
                crate::backfill::worker::BackfillError::ManifestMissing { .. }
                    | crate::backfill::worker::BackfillError::DataFileMissing { .. }
            ),
        }
    })));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_projector_counts_only_for_its_own_fingerprint_and_while_it_keeps_failing() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(current_failure(&format!("abc@{now}"), "abc"));
        assert!(
            !current_failure(&format!("abc@{now}"), "def"),
            "another projection is deployed"
        );
        assert!(
            !current_failure(&format!("abc@{}", now - FAILING_FRESH_SECONDS - 1), "abc"),
            "not noted again: the record passed (or left the stream)"
        );
        assert!(!current_failure("job@0", "abc"));
        assert!(!current_failure("garbage", "abc"));
    }

    #[test]
    fn progress_shows_percent_rate_and_eta() {
        let mut b = BackfillStatus::default();
        apply_progress(
            &mut b,
            &Progress {
                record_errors: Default::default(),
                writes_sent: 0,
                files_total: 8,
                files_done: 2,
                items_total: 20_000,
                items_done: 5_000,
                files_resumed: 0,
                items_per_second: 1_000.0,
                transient: crate::aws::retry::Transient {
                    count: 3,
                    last: Some("GetObject s3://b/k failed: SlowDown".into()),
                },
            },
        );
        assert_eq!(b.transient_errors, 3);
        assert!(b.last_transient_error.as_deref().unwrap().contains("SlowDown"));
        assert_eq!(b.progress.as_deref(), Some("25%"));
        assert_eq!(b.items_per_second, Some(1000));
        assert_eq!(b.eta.as_deref(), Some("15s"));
        assert_eq!(format_duration(3725), "1h2m");
        assert_eq!(format_duration(150), "2m30s");
    }

    #[test]
    fn exports_land_under_a_prefix_of_the_view_object() {
        assert_eq!(
            export_prefix("kappa-exports/c/ns/log/u", "exports/", "players", "0a-1f", 2),
            "kappa-exports/c/ns/log/u/exports/views/players/0a-1f/2"
        );
        assert_eq!(
            export_prefix("kappa-exports/c/ns/log/u", "", "players", "0a-1f", 1),
            "kappa-exports/c/ns/log/u/views/players/0a-1f/1"
        );
        // What deletion accepts as the view's own: this layout and the one before uids, nothing else.
        let own = |p: &str| is_views_export(p, "players", 1);
        assert!(own("kappa-exports/c/ns/log/u/views/players/0a-1f/1"));
        assert!(own("kappa-exports/c/ns/log/u/views/players/1"));
        assert!(!own("kappa-exports/c/ns/log/u/views/players/0a-1f/2"));
        assert!(!own("kappa-exports/c/ns/log/u/views/players-2/0a-1f/1"));
        assert!(!own("kappa-exports/c/ns/log/u/views/players/x/y/1"));
        assert!(!own("kappa-exports/c/ns/log/u/views/players/zz/1"));
    }
}
