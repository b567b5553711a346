//! One version's run, whichever runtime: which version it is ([`Target`]) and where it stands after this
//! reconcile ([`InClusterOutcome`]), with the record-error ledger both runtimes read.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use sha2::{Digest, Sha256};

use crate::aws::views::ViewTableWriter;
use crate::backfill::aggregate::Cutoff;
use crate::controller::Context;
use crate::controller::status::Health;
use crate::crd::{BackfillStatus, EventLog, LiveStatus, MaterializedView, ViewPhase, reasons};
use crate::projection::{ProjectionConfig, RecordErrors};
use crate::runtime::checkpoints::view_key;

/// Concurrent requests per view writer.
pub(super) const WRITE_CONCURRENCY: usize = 16;

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

/// One version's pass, whichever runtime: the view as the version sees it (its content; its backfill in
/// `status.backfill`), which version it is, and what every step of the pass reads.
#[derive(Clone, Copy)]
pub(super) struct OnVersion<'a> {
    pub view: &'a MaterializedView,
    pub target: &'a Target,
    pub log: &'a EventLog,
    pub ctx: &'a Context,
    pub ns: &'a str,
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

impl InClusterOutcome {
    /// A version stopped by a permanent AWS error: `Failed`, stalled with the error's reason and message,
    /// looked at again in a minute.
    pub(super) fn failed(e: &crate::aws::AwsError) -> Self {
        let health = Health::Stalled {
            reason: crate::controller::status::aws_reason(e),
            message: e.to_string(),
        };
        Self::new(ViewPhase::Failed, health, Duration::from_secs(60))
    }

    /// An outcome in `phase` with `health`, looked at again after `requeue`; no backfill, live path,
    /// resources or record errors to report.
    pub(super) fn new(phase: ViewPhase, health: Health, requeue: Duration) -> Self {
        InClusterOutcome {
            phase,
            health,
            backfill: None,
            backfill_complete: false,
            live: None,
            requeue,
            resources: Default::default(),
            skipped: None,
            record_errors: RecordErrors::default(),
            dead_letters: None,
        }
    }
}

/// A version whose AWS resources are still being created.
pub(super) fn provisioning(message: String) -> InClusterOutcome {
    let health = Health::Progressing { reason: reasons::PROVISIONING, message };
    InClusterOutcome::new(ViewPhase::Provisioning, health, Duration::from_secs(5))
}

/// A version whose backfill `b` is complete: it catches up with the live path next.
pub(super) fn backfilled(b: BackfillStatus, requeue: Duration) -> InClusterOutcome {
    let health = Health::Progressing {
        reason: reasons::BACKFILL_COMPLETE,
        message: "backfill complete".into(),
    };
    InClusterOutcome {
        backfill: Some(b),
        backfill_complete: true,
        ..InClusterOutcome::new(ViewPhase::CatchingUp, health, requeue)
    }
}

pub(super) fn stalled(phase: ViewPhase, reason: &'static str, message: String) -> InClusterOutcome {
    InClusterOutcome::new(
        phase,
        Health::Stalled { reason, message },
        Duration::from_secs(300),
    )
}

/// `outcome`, stopped (Stalled, phase Failed) for `reason` with `message`; its live and backfill status kept.
pub(super) fn stalled_with(
    mut outcome: InClusterOutcome,
    reason: &'static str,
    message: String,
) -> InClusterOutcome {
    outcome.phase = ViewPhase::Failed;
    outcome.health = Health::Stalled { reason, message };
    outcome.requeue = Duration::from_secs(30);
    outcome
}

pub(super) fn log_table(log: &EventLog) -> Option<&crate::crd::TableStatus> {
    log.status.as_ref()?.table.as_ref()
}

pub(super) fn digest(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..16])
}

pub(super) fn time_of(epoch_seconds: f64) -> Option<Time> {
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

/// The view's record-error ledger (what its projector function or a backfill Job's pods left out); empty
/// when it cannot be read (logged: the next reconcile reads it again).
pub(super) async fn record_error_ledger(
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
