//! A version's backfill, one step per reconcile (see [`super::backfill_step`]): export or scan, run,
//! follow, clean up, and the gaps that start a new attempt.

use super::backfill_job::{JobBackfill, job_backfill};
use super::backfill_run::{apply_progress, track};
use super::version::{
    InClusterOutcome, LiveFacts, WRITE_CONCURRENCY, backfilled, digest, log_table, stalled, time_of,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::ResourceExt;
use tracing::info;

use super::backfill_step::{
    Approval, BackfillStep, ExportStep, Observed, RunStep, after_run, export_step, next_step,
};
use crate::aws::export::{self, ExportState};
use crate::aws::views::ViewTableWriter;
use crate::backfill::scan::ScanWorker;
use crate::backfill::worker::{PreAggregate, PreAggregation};
use crate::backfill::worker::{Progress, Worker};
use crate::controller::Context;
use crate::controller::status::{self, Health};
use crate::crd::{
    APPROVE_BACKFILL_ANNOTATION, BackfillApproval, BackfillSource, BackfillStatus, EventLog,
    MaterializedView, ViewPhase, reasons,
};
use crate::projection::ProjectionConfig;
use crate::runtime::BackfillRun;
use crate::runtime::checkpoints::{self, ConfigMapCheckpoint};

/// What a backfill step reads: the version's pass (`on`: the view carrying the version's content and, in
/// `status.backfill`, the version's backfill; the version, the log; reached through `Deref`), the views
/// table it writes, its projection and its live path.
pub(super) struct BackfillCall<'a> {
    on: super::version::OnVersion<'a>,
    pub table: &'a str,
    pub projection: &'a Arc<ProjectionConfig>,
    pub live: &'a LiveFacts,
}

impl<'a> BackfillCall<'a> {
    /// The backfill of the version `on` runs, into `table`, with what its live path reports.
    pub fn new(
        on: &super::version::OnVersion<'a>,
        table: &'a str,
        projection: &'a Arc<ProjectionConfig>,
        live: &'a LiveFacts,
    ) -> Self {
        BackfillCall { on: *on, table, projection, live }
    }
}

impl<'a> std::ops::Deref for BackfillCall<'a> {
    type Target = super::version::OnVersion<'a>;

    fn deref(&self) -> &Self::Target {
        &self.on
    }
}

pub(super) fn progressing(
    phase: ViewPhase,
    reason: &'static str,
    message: String,
    b: Option<BackfillStatus>,
    requeue: Duration,
) -> InClusterOutcome {
    InClusterOutcome {
        backfill: b,
        ..InClusterOutcome::new(phase, Health::Progressing { reason, message }, requeue)
    }
}

/// The key of a backfill task in the runtime registry: a new attempt, export or generation is a new task.
pub(super) fn run_fingerprint(scan: bool, b: &BackfillStatus, generation: i64) -> String {
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
pub(super) fn observe<'a>(
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
pub(super) async fn finished(
    call: &BackfillCall<'_>,
    mut b: BackfillStatus,
    clean_up: bool,
) -> InClusterOutcome {
    if clean_up {
        let export_spec = export_spec(call.log);
        let base = &call.target.base;
        b.cleaned_up =
            clean_up_backfill(call.view, call.log, call.ctx, call.ns, base, &b, &export_spec).await;
    }
    backfilled(b, Duration::from_secs(2))
}

/// [`BackfillStep::AwaitApproval`]: says what the backfill will cost and how to approve it.
pub(super) async fn await_approval(call: &BackfillCall<'_>) -> InClusterOutcome {
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
pub(super) fn start_scan_status(
    call: &BackfillCall<'_>,
    b: BackfillStatus,
    attempt: i64,
) -> InClusterOutcome {
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
pub(super) fn export_spec(log: &EventLog) -> crate::crd::ExportSpec {
    log.spec
        .export
        .clone()
        .unwrap_or_else(|| crate::crd::ExportSpec { bucket: String::new(), prefix: String::new() })
}

/// [`BackfillStep::CloseGap`]: retires attempt `b` and records `next_attempt`.
pub(super) async fn close_gap(
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
pub(super) async fn start_export(
    call: &BackfillCall<'_>,
    b: BackfillStatus,
    attempt: i64,
) -> InClusterOutcome {
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
pub(super) async fn start_run(
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
pub(super) fn start_scan(
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
    let wake = ctx.runtime.waker(&call.target.key);
    Ok(ctx.runtime.backfill(&call.target.key, fingerprint, |run| {
        tokio::spawn(async move { track(progress, transient, worker.run(), (run, wake)).await })
    }))
}

/// A backfill `b` that waits (`Err` of a step that could not start its task this pass).
pub(super) fn backfilling(
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
pub(super) async fn completed_export(
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
pub(super) async fn start_export_read(
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
pub(super) async fn export_job(
    call: &BackfillCall<'_>,
    b: &BackfillStatus,
    fingerprint: &str,
    jobs: &crate::settings::BackfillJobs,
    how: PreAggregation,
    worker: Worker<()>,
) -> BackfillRun {
    let ledger = worker.writer.clone();
    let (bucket, summary) = (worker.bucket.clone(), worker.summary_key.clone());
    let fold = worker
        .pre_aggregate
        .is_some()
        .then(|| Worker { parallelism: 1, ..worker });
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
pub(super) fn export_task(
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
    let wake = ctx.runtime.waker(&call.target.key);
    ctx.runtime.backfill(&call.target.key, fingerprint, |run| {
        let work = async move {
            worker.run().await?;
            worker.fold(attempt).await?;
            // With the record errors the fold found.
            Ok(worker.progress.lock().unwrap_or_else(|e| e.into_inner()).clone())
        };
        tokio::spawn(async move { track(progress, transient, work, (run, wake)).await })
    })
}

/// Records the progress of the task `run` and, once it stopped, what [`after_run`] says its outcome
/// means.
pub(super) async fn follow_run(
    call: &BackfillCall<'_>,
    mut b: BackfillStatus,
    run: BackfillRun,
) -> InClusterOutcome {
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
pub(super) async fn export_again(
    call: &BackfillCall<'_>,
    b: BackfillStatus,
    failure: &str,
) -> InClusterOutcome {
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

/// The `status.backfill.reason` of the attempt that closes `gap`.
pub(super) fn gap_reason(gap: &str) -> String {
    format!("closing a gap: {gap}")
}

/// The gap the live reader reported (kept in its checkpoint until acknowledged, so a restart does not
/// lose it) that still needs a backfill attempt: `None` once the attempt for it is recorded in status
/// (then the gap is acknowledged and cleared), when no backfill ran yet (the first one covers it), or
/// when the view has no backfill (`source: None`: the loss is reported as a Warning Event and counted in
/// `kappa_view_gaps_total`, with the fix).
pub(super) async fn pending_gap(
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

/// The ConfigMap a view's backfill `attempt` checkpoints its files or segments in, owned by the view.
pub(super) fn backfill_checkpoint(
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
pub(super) async fn clean_up_backfill(
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
pub(super) async fn delete_backfill_checkpoint(ctx: &Context, ns: &str, base: &str, attempt: i64) -> bool {
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
pub(super) fn is_views_export(prefix: &str, base: &str, attempt: i64) -> bool {
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
pub(super) fn export_prefix(root: &str, base: &str, view: &str, uid: &str, attempt: i64) -> String {
    let base = base.trim_matches('/');
    let own = format!("views/{view}/{uid}/{attempt}");
    match base.is_empty() {
        true => format!("{root}/{own}"),
        false => format!("{root}/{base}/{own}"),
    }
}

/// What the view's backfill will read, write, cost and take (see [`crate::cost::backfill`]): the log's size
/// and the views table's capacity from `DescribeTable`, all of the log's records of the view's record
/// types assumed to be projected (an upper bound). A sentence; the reason when a table cannot be read.
pub(super) async fn backfill_plan(
    view: &MaterializedView,
    log: &EventLog,
    ctx: &Context,
    table: &str,
) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
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
