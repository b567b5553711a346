//! What a reconcile concluded ([`Outcome`]) and the one function that writes it to the status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};

use crate::controller::status::{self, Health};
use crate::controller::{Context, Result};
use crate::crd::{ConditionType, MaterializedView, MaterializedViewStatus, ViewPhase, reasons};
use crate::crd::{ResourceKey, Resources};

/// What this reconcile concluded, before it is written to the status.
pub(super) struct Outcome {
    pub(super) phase: ViewPhase,
    pub(super) health: Health,
    /// The views table, once it exists.
    pub(super) table: Option<super::versions::ActiveTable>,
    /// The in-cluster runtime's view of the backfill and live path, when the view runs there.
    pub(super) in_cluster: Option<super::version::InClusterOutcome>,
    /// The view's versions.
    pub(super) versions: Option<VersionsSummary>,
    /// Where subscribers connect (`spec.subscribers`).
    pub(super) push: Option<crate::crd::PushStatus>,
}

impl Outcome {
    /// A view that waits for its user: `Pending`, `Stalled` with `reason` and `message`, nothing provisioned.
    pub(super) fn stalled(reason: &'static str, message: String) -> Self {
        Outcome {
            phase: ViewPhase::Pending,
            health: Health::Stalled { reason, message },
            table: None,
            in_cluster: None,
            versions: None,
            push: None,
        }
    }
}

pub(super) struct VersionsSummary {
    pub(super) versions: Vec<crate::crd::ViewVersion>,
    pub(super) active: Option<i64>,
    pub(super) latest: i64,
    pub(super) rebuild: Option<super::versions::Rebuild>,
}

pub(super) async fn write_status(
    view: &MaterializedView,
    ctx: &Context,
    ns: &str,
    outcome: &Outcome,
) -> Result<()> {
    let old = view.status.clone().unwrap_or_default();
    let mut next: MaterializedViewStatus = old.clone();
    let now = status::now();
    let generation = view.metadata.generation;
    next.observed_generation = generation;
    next.phase = Some(outcome.phase);
    if let Some(t) = &outcome.table {
        next.table_name = Some(t.name.clone());
        next.key_prefix = t.key_prefix.clone();
        next.resources.record(ResourceKey::ViewsTable, t.arn.clone());
    }
    status::set_kstatus(&mut next.conditions, &outcome.health, generation, &now);
    if outcome.push.is_some() || view.spec.subscribers.is_none() {
        next.push = outcome.push.clone();
    }
    if let Some(v) = &outcome.versions {
        next.versions = v.versions.clone();
        next.active_version = v.active;
        next.latest_version = Some(v.latest);
        next.rebuild = v.rebuild.as_ref().and_then(|r| r.summary.clone());
        set_rebuilding(&mut next, v, &outcome.health, generation, &now);
    }
    if let Some(run) = &outcome.in_cluster {
        if run.backfill.is_some() {
            next.backfill = run.backfill.clone();
        }
        next.live = run.live.clone();
        record_errors(view, ctx, ns, &mut next, run).await;
        if let Some(n) = run.dead_letters {
            next.dead_letters = Some(n);
            ctx.metrics
                .view_dead_letters
                .get_or_create(&crate::metrics::ViewLabels {
                    namespace: ns.to_string(),
                    view: view.name_any(),
                })
                .set(n);
        }
        next.resources.extend(run.resources.clone());
    }
    set_provisioned(&mut next, outcome, generation, &now);
    if next == old {
        return Ok(());
    }
    let api: Api<MaterializedView> = Api::namespaced(ctx.client.clone(), ns);
    status::apply(&api, view, &next).await?;
    publish_changes(view, ctx, &old, &next, outcome).await;
    Ok(())
}

/// The `Rebuilding` condition from the view's rebuild; while the active version is Ready, `Reconciling` and
/// `Stalled` follow the rebuild (kstatus).
fn set_rebuilding(
    next: &mut MaterializedViewStatus,
    v: &VersionsSummary,
    health: &Health,
    generation: Option<i64>,
    now: &Time,
) {
    match &v.rebuild {
        // A view that was never rebuilt carries no Rebuilding condition.
        Some(r) if !(v.latest <= 1 && r.reason == reasons::PROMOTED) => {
            status::set(
                &mut next.conditions,
                ConditionType::Rebuilding,
                r.status,
                r.reason,
                &r.message,
                generation,
                now,
            );
            // kstatus: a rebuild in progress is reconciling; a failed one needs a change from the user
            // (the active version stays Ready and serving).
            if matches!(health, Health::Ready { .. }) {
                let (reconciling, stalled) = match r.reason {
                    reasons::REBUILDING | reasons::WAITING_FOR_APPROVAL => (true, false),
                    reasons::REBUILD_FAILED => (false, true),
                    _ => (false, false),
                };
                let flag = |b: bool| match b {
                    true => crate::crd::ConditionStatus::True,
                    false => crate::crd::ConditionStatus::False,
                };
                status::set(
                    &mut next.conditions,
                    ConditionType::Reconciling,
                    flag(reconciling),
                    r.reason,
                    if reconciling { &r.message } else { "" },
                    generation,
                    now,
                );
                status::set(
                    &mut next.conditions,
                    ConditionType::Stalled,
                    flag(stalled),
                    r.reason,
                    if stalled { &r.message } else { "" },
                    generation,
                    now,
                );
            }
        }
        _ => next.conditions.retain(|c| !c.is(ConditionType::Rebuilding)),
    }
}

/// `BackfillComplete` and `Provisioned` from the outcome: a version running (in-cluster or on Lambda) is
/// provisioned; otherwise the health's reason says why not yet.
fn set_provisioned(
    next: &mut MaterializedViewStatus,
    outcome: &Outcome,
    generation: Option<i64>,
    now: &Time,
) {
    if let Some(run) = &outcome.in_cluster {
        let (complete, reason) = match run.backfill_complete {
            true => (crate::crd::ConditionStatus::True, reasons::BACKFILL_COMPLETE),
            false => (crate::crd::ConditionStatus::False, reasons::BACKFILLING),
        };
        status::set(
            &mut next.conditions,
            ConditionType::BackfillComplete,
            complete,
            reason,
            "",
            generation,
            now,
        );
        status::set(
            &mut next.conditions,
            ConditionType::Provisioned,
            crate::crd::ConditionStatus::True,
            reasons::PROVISIONED,
            "views table, projector and live path ready",
            generation,
            now,
        );
    } else if !matches!(outcome.health, Health::Ready { .. }) {
        let reason = match outcome.health {
            Health::Stalled { reason, .. } => reason,
            _ => reasons::PROVISIONING,
        };
        status::set(
            &mut next.conditions,
            ConditionType::Provisioned,
            crate::crd::ConditionStatus::False,
            reason,
            "",
            generation,
            now,
        );
    }
}

/// The Events a written status calls for: more dead letters, a new phase, a new reason to be stalled.
async fn publish_changes(
    view: &MaterializedView,
    ctx: &Context,
    old: &MaterializedViewStatus,
    next: &MaterializedViewStatus,
    outcome: &Outcome,
) {
    if let Some(n) = next.dead_letters.filter(|n| *n > old.dead_letters.unwrap_or(0)) {
        let note = format!(
            "the projector's failure queue {} holds {n} message(s) (was {}): log records the projector failed \
             after its retries (each message names them: a stream batch's shard and sequence numbers, or the \
             SNS event). The records are still in the log, the canonical store; fix the cause (the projector's \
             logs say why), then re-project the view from the log (`kubectl kappa replay {}`) and purge the \
             queue",
            next.resources
                .arn(&ResourceKey::FailureQueue)
                .cloned()
                .unwrap_or_default(),
            old.dead_letters.unwrap_or(0),
            view.name_any(),
        );
        status::publish(ctx, view, EventType::Warning, "DeadLetters", "DeadLettered", note).await;
    }
    if old.phase != next.phase {
        let from = old.phase.map(|p| p.to_string()).unwrap_or_else(|| "none".into());
        let note = format!("phase {from} → {}: {}", outcome.phase, outcome.health.message());
        status::publish(
            ctx,
            view,
            EventType::Normal,
            &outcome.phase.to_string(),
            "PhaseChanged",
            note,
        )
        .await;
    }
    let was_stalled = old
        .conditions
        .iter()
        .any(|c| c.is(ConditionType::Stalled) && c.is_true());
    if let Health::Stalled { reason, message } = &outcome.health {
        let stalled_before_with_same = was_stalled
            && old
                .conditions
                .iter()
                .any(|c| c.is(ConditionType::Stalled) && c.message == *message);
        if !stalled_before_with_same {
            status::publish(ctx, view, EventType::Warning, reason, "Validate", message.clone()).await;
        }
    }
}

/// `status.recordErrors` from what the backfill and the live path left out; a Warning Event and the
/// metric `kappa_view_record_errors_total` when the count grew.
pub(super) async fn record_errors(
    view: &MaterializedView,
    ctx: &Context,
    ns: &str,
    next: &mut crate::crd::MaterializedViewStatus,
    run: &super::version::InClusterOutcome,
) {
    let previous = next.record_errors.as_ref().map_or(0, |r| r.count);
    let backfill = next.backfill.as_ref().map_or(0, |b| b.record_errors);
    let count = (backfill + run.record_errors.count as i64).max(previous);
    if count == 0 {
        return;
    }
    let mut last: Vec<String> = next
        .record_errors
        .as_ref()
        .map(|r| r.last.clone())
        .unwrap_or_default();
    for m in &run.record_errors.last {
        if !last.contains(m) {
            last.push(m.clone());
        }
    }
    let keep = last.len().saturating_sub(crate::projection::KEPT_RECORD_ERRORS);
    last.drain(..keep);
    if count > previous {
        let labels = crate::metrics::ViewLabels { namespace: ns.to_string(), view: view.name_any() };
        ctx.metrics
            .record_errors
            .get_or_create(&labels)
            .inc_by((count - previous) as u64);
        let newest = last.last().cloned().unwrap_or_default();
        status::publish(
            ctx,
            view,
            EventType::Warning,
            reasons::RECORD_ERROR,
            "Project",
            format!(
                "{} log records left out in all (spec.projection.onRecordError Skip; see status.recordErrors), \
                 the newest: {newest}",
                count
            ),
        )
        .await;
    }
    next.record_errors = Some(crate::crd::RecordErrorsStatus { count, last });
}
