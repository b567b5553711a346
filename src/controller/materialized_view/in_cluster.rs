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
//! the runtime registry holds the running tasks, and each reconcile moves one step (the backfill's steps are
//! in `super::backfill`).

use super::backfill::{BackfillCall, backfill, pending_gap};
use super::version::{
    InClusterOutcome, LiveFacts, OnVersion, WRITE_CONCURRENCY, digest, log_table, provisioning,
    record_error_ledger, stalled, stalled_with, time_of,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::ResourceExt;

use crate::aws::views::ViewTableWriter;
use crate::backfill::aggregate::Cutoff;
use crate::controller::Context;
use crate::controller::status::Health;
use crate::crd::{BackfillSource, LiveStatus, MaterializedView, ViewPhase, reasons};
use crate::projection::{ProjectionConfig, ProjectionError};
use crate::runtime::checkpoints::{self, ConfigMapCheckpoint};
use crate::runtime::live::{LiveProgress, LiveReader};

/// Whether the view's `Count`/`Sum` backfill is pre-aggregated and folded: the operator runs its live path
/// (this module is the in-cluster runtime) and the backfill reads an export (a snapshot with a time).
pub(super) fn pre_aggregated(view: &MaterializedView, projection: &ProjectionConfig) -> bool {
    projection.is_additive() && view.spec.backfill.source == BackfillSource::Export
}

/// Runs the view's live reader and backfill; see the module docs.
/// `projection`: the version's, as planned (or why the spec cannot be projected).
pub(super) async fn reconcile(
    on: &OnVersion<'_>,
    table: &str,
    key_prefix: &str,
    projection: &Result<Arc<ProjectionConfig>, ProjectionError>,
) -> InClusterOutcome {
    let OnVersion { view, target, log, ctx, .. } = *on;
    let Some(stream_arn) = log_table(log).and_then(|t| t.stream_arn.clone()) else {
        let mut waiting = provisioning(format!(
            "waiting for EventLog {} to report its table's stream",
            log.name_any()
        ));
        waiting.health = Health::Progressing {
            reason: reasons::WAITING_FOR_LIVE_PATH,
            message: waiting.health.message().to_string(),
        };
        return waiting;
    };
    let projection = match projection {
        Ok(p) => p.clone(),
        Err(e) => return stalled(ViewPhase::Failed, reasons::INVALID_SPEC, e.to_string()),
    };
    // 1. The live path, first: the export may only start once it runs.
    let (live, live_checkpoint, cutoff) = start_live(on, table, key_prefix, &stream_arn, &projection);
    let live_status = LiveStatus {
        caught_up: live.caught_up,
        watermark: live.watermark.and_then(time_of),
        records_applied: live.records_applied as i64,
        checkpoint: Some(live_checkpoint.name().to_string()),
        ..Default::default()
    };
    let gap = pending_gap(view, ctx, &target.key, &live_checkpoint).await;

    // 2. The backfill.
    let facts = LiveFacts { started: live.started, cutoff, passed: live.passed };
    let call = BackfillCall::new(on, table, &projection, &facts);
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
    with_live(outcome, &live)
}

/// Starts the version's live reader, or finds it running with the same settings (a change restarts it):
/// its progress, its stream checkpoint, and the cutoff of a pre-aggregated backfill.
fn start_live(
    on: &OnVersion<'_>,
    table: &str,
    key_prefix: &str,
    stream_arn: &str,
    projection: &Arc<ProjectionConfig>,
) -> (LiveProgress, ConfigMapCheckpoint, Option<Cutoff>) {
    let OnVersion { view, target, ctx, ns, .. } = *on;
    let live_checkpoint = ConfigMapCheckpoint::new(
        ctx.client.clone(),
        ns,
        checkpoints::stream_name(&target.base),
        checkpoints::owner_of(view),
    );
    // Count/Sum views backfilled from an export are pre-aggregated: the live path needs the export time.
    let cutoff = live_cutoff(view, projection);
    // What the live path applies, from the view's and the log's specs: a change restarts it, a setting it
    // does not read (the log's billing, PITR) does not.
    let fingerprint = digest(&[
        table,
        key_prefix,
        stream_arn,
        &format!("{projection:?}"),
        &format!("{cutoff:?}"),
    ]);
    let live = ctx.runtime.live(&target.key, &fingerprint, |progress| {
        let mut reader = live_reader(
            ctx,
            table,
            stream_arn,
            projection,
            &live_checkpoint,
            &cutoff,
            progress,
        );
        reader.wake = Some(ctx.runtime.waker(&target.key));
        tokio::spawn(reader.run())
    });
    (live, live_checkpoint, cutoff)
}

/// The cutoff of a pre-aggregated backfill (see [`pre_aggregated`]): its attempt and its export's time,
/// once known. The live path applies only records after it.
fn live_cutoff(view: &MaterializedView, projection: &ProjectionConfig) -> Option<Cutoff> {
    pre_aggregated(view, projection).then(|| {
        let b = view.status.as_ref().and_then(|s| s.backfill.as_ref());
        Cutoff {
            attempt: b.map_or(1, |b| b.attempt.max(1)),
            export_time: b
                .and_then(|b| b.export_time.as_ref())
                .map(|t| t.0.as_second() as f64),
        }
    })
}

/// The version's live reader: the log's stream into the views table, from its checkpoint, after `cutoff`.
fn live_reader(
    ctx: &Context,
    table: &str,
    stream_arn: &str,
    projection: &Arc<ProjectionConfig>,
    checkpoint: &ConfigMapCheckpoint,
    cutoff: &Option<Cutoff>,
    progress: Arc<Mutex<LiveProgress>>,
) -> LiveReader {
    LiveReader {
        streams: ctx.shared_streams.clone(),
        stream_arn: stream_arn.to_string(),
        projection: projection.clone(),
        writer: ViewTableWriter::for_view(ctx.aws.dynamodb.clone(), table, projection, WRITE_CONCURRENCY)
            .with_live_attempt(cutoff.as_ref().map(|c| c.attempt)),
        checkpoint: checkpoint.clone(),
        progress,
        cutoff: cutoff.clone(),
        wake: None,
    }
}

/// The outcome with the live path's state: stalled at a record it cannot apply, retrying, catching up, or
/// (backfilled and caught up) `Live`.
fn with_live(mut outcome: InClusterOutcome, live: &LiveProgress) -> InClusterOutcome {
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
    if !outcome.backfill_complete {
        return outcome;
    }
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
        outcome.health = Health::Ready { reason: reasons::LIVE, message };
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
    outcome
}
