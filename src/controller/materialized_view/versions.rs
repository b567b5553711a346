//! The versions of a view, applied as this reconcile's plan (`crate::plan::topology::ViewTopology`) has
//! them (see `crate::plan::versions` for the decisions):
//!
//! ```text
//! plan: reshape (pure) ─▶ remove versions that go (live path first, then items or table)
//!   ─▶ run every version (its table, live reader, backfill) ─▶ settle (pure): failure, promotion
//!   ─▶ pointer ConfigMap `<view>` = the active version's table and key prefix
//! ```
//!
//! The active version's outcome is the view's (phase, health, backfill, live); a building version shows in
//! the `Rebuilding` condition and `status.rebuild`, and never changes the view's readiness.

use super::version::{InClusterOutcome, OnVersion, Target};
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tracing::info;

use crate::aws::{AwsError, Convergence, dynamodb};
use crate::controller::status::{self, Health};
use crate::controller::{Context, Error, Result};
use crate::crd::{
    APPROVE_PROMOTION_ANNOTATION, ConditionStatus, EventLog, MaterializedView, VersionState, ViewPhase,
    ViewVersion, reasons,
};
use crate::plan::topology::{ViewTopology, version_view};
use crate::plan::versions::{Readiness, Transition, settle};
use crate::runtime::checkpoints::{self, ConfigMapCheckpoint};

/// What the versions of a view came to in this reconcile.
pub(super) struct VersionsRun {
    /// The active version's outcome: the view's phase, health, backfill and live path.
    pub outcome: InClusterOutcome,
    /// The active version's table, once it exists.
    pub table: Option<ActiveTable>,
    pub versions: Vec<ViewVersion>,
    pub active: Option<i64>,
    pub latest: i64,
    /// The `Rebuilding` condition and `status.rebuild`, when the content changed.
    pub rebuild: Option<Rebuild>,
}

/// The active version's views table.
pub(super) struct ActiveTable {
    /// The version whose table it is.
    pub version: i64,
    pub name: String,
    pub key_prefix: Option<String>,
    pub arn: String,
    /// The table's latest stream, when Streams are on.
    pub stream_arn: Option<String>,
}

/// Where a rebuild stands.
pub(super) struct Rebuild {
    pub status: ConditionStatus,
    pub reason: &'static str,
    pub message: String,
    /// `status.rebuild`, as `kubectl get mv` shows it.
    pub summary: Option<String>,
}

/// Runs the view's versions; see the module docs.
pub(super) async fn run(
    view: &MaterializedView,
    log: &EventLog,
    ctx: &Context,
    ns: &str,
    all: &[&MaterializedView],
    topology: &ViewTopology,
) -> Result<VersionsRun> {
    let now = topology.now;
    let promotion = &view.spec.promotion;
    let desired_hash = &topology.desired_hash;
    let recorded = &topology.recorded;
    let mut versions = topology.versions.clone();
    let new: Vec<&ViewVersion> = topology
        .versions
        .iter()
        .filter(|v| !recorded.iter().any(|r| r.version == v.version))
        .collect();
    retire_and_announce(view, ctx, ns, all, topology, &new).await?;

    let on = Reconciling { view, log, ctx, ns, all, topology };
    let (mut outcomes, mut tables) = run_versions(&on, &mut versions, recorded).await?;

    // Failures and promotion.
    let readiness = |version: i64| readiness(outcomes.get(&version), topology.max_lag, now);
    let transitions = settle(
        &mut versions,
        desired_hash,
        promotion,
        topology.approved,
        &readiness,
        now,
    );
    publish_transitions(view, ctx, &transitions).await;
    let active = versions
        .iter()
        .find(|v| v.state == VersionState::Active)
        .map(|v| v.version);
    // Every version's projector failures count: a building version's too.
    let dead_letters = outcomes
        .values()
        .filter_map(|o| o.dead_letters)
        .reduce(|a, b| a + b);
    let mut outcome = active
        .and_then(|a| outcomes.remove(&a))
        .unwrap_or_else(|| super::version::provisioning("creating the active version's views table".into()));
    outcome.dead_letters = dead_letters;
    let table = active.and_then(|a| tables.remove(&a));
    if let (Some(active), Some(t)) = (active, &table) {
        write_pointer(view, ctx, ns, active, &t.name, t.key_prefix.as_deref()).await?;
        if transitions
            .iter()
            .any(|t| matches!(t, Transition::Promoted { .. }))
        {
            // Readers use the new version; the promotion is not recorded in status yet.
            crate::fail_point!("version-promoted");
        }
    }
    Ok(versions_run(
        view,
        outcome,
        table,
        versions,
        active,
        topology.latest,
        desired_hash,
    ))
}

/// Runs every version that has storage to keep current: their outcomes and tables, by version.
async fn run_versions(
    on: &Reconciling<'_>,
    versions: &mut [ViewVersion],
    recorded: &[ViewVersion],
) -> Result<(BTreeMap<i64, InClusterOutcome>, BTreeMap<i64, ActiveTable>)> {
    let mut outcomes = BTreeMap::new();
    let mut tables = BTreeMap::new();
    for v in versions.iter_mut() {
        let (out, table) = run_version(on, v, recorded).await?;
        if let Some(out) = out {
            outcomes.insert(v.version, out);
        }
        if let Some(table) = table {
            tables.insert(v.version, table);
        }
    }
    Ok((outcomes, tables))
}

/// What the versions came to (pure): the active version's outcome, with a building version's rebuild
/// shown (`Rebuilding` phase, a short requeue) and a retained one's end looked at again.
fn versions_run(
    view: &MaterializedView,
    outcome: InClusterOutcome,
    table: Option<ActiveTable>,
    versions: Vec<ViewVersion>,
    active: Option<i64>,
    latest: i64,
    desired_hash: &str,
) -> VersionsRun {
    let approval = view
        .annotations()
        .get(APPROVE_PROMOTION_ANNOTATION)
        .map(String::as_str);
    let rebuild = rebuild_of(
        &view.name_any(),
        &versions,
        desired_hash,
        view.spec.promotion.mode,
        active,
        approval,
    );
    let mut run = VersionsRun { outcome, table, versions, active, latest, rebuild };
    let building = run.versions.iter().any(|v| v.state == VersionState::Building);
    if building {
        run.outcome.requeue = run.outcome.requeue.min(Duration::from_secs(2));
        if run.outcome.phase == ViewPhase::Live {
            run.outcome.phase = ViewPhase::Rebuilding;
        }
    }
    if run.versions.iter().any(|v| v.state == VersionState::Retained) {
        // Come back when the retention ends.
        run.outcome.requeue = run.outcome.requeue.min(Duration::from_secs(30));
    }
    run
}

/// What every version's pass of one reconcile reads.
#[derive(Clone, Copy)]
struct Reconciling<'a> {
    view: &'a MaterializedView,
    log: &'a EventLog,
    ctx: &'a Context,
    ns: &'a str,
    /// The namespace's views (the sharers of a table).
    all: &'a [&'a MaterializedView],
    /// This reconcile's plan.
    topology: &'a ViewTopology,
}

/// Removes the versions the topology's `removals` name (each with a Normal Event) and announces each `new` version
/// built beside the active one.
async fn retire_and_announce(
    view: &MaterializedView,
    ctx: &Context,
    ns: &str,
    all: &[&MaterializedView],
    topology: &ViewTopology,
    new: &[&ViewVersion],
) -> Result<()> {
    for removal in &topology.removals {
        let storage = &topology.removed_storage[&removal.version.version];
        remove_version(view, ctx, ns, all, &removal.version, storage, true).await?;
        crate::fail_point!("version-retired");
        status::publish(
            ctx,
            view,
            EventType::Normal,
            reasons::VERSION_REMOVED,
            "Rebuild",
            format!("removed version {}: {}", removal.version.version, removal.why),
        )
        .await;
    }
    for v in new {
        if v.state == VersionState::Building {
            info!(view = %view.name_any(), version = v.version, "the view's content changed: building a new version");
            status::publish(
                ctx,
                view,
                EventType::Normal,
                reasons::REBUILDING,
                "Rebuild",
                format!(
                    "the content changed (record types, projection, code or store): building version {} beside \
                     the active version {}",
                    v.version,
                    view.status.as_ref().and_then(|s| s.active_version).unwrap_or(1)
                ),
            )
            .await;
        }
    }
    Ok(())
}

/// One version's pass: its storage (table, claimed prefix), a re-created table noticed, then its runtime
/// (in-cluster or Lambda). Returns its outcome (`None` for a failed version, stopped) and, once it runs,
/// its table. Errors: retryable ones, for the controller to retry.
async fn run_version(
    on: &Reconciling<'_>,
    v: &mut ViewVersion,
    recorded: &[ViewVersion],
) -> Result<(Option<InClusterOutcome>, Option<ActiveTable>)> {
    let Reconciling { view, log, ctx, ns, topology, .. } = *on;
    let target = Target::new(view, v.version);
    // A failed version has no plan: it is stopped.
    let Some(plan) = topology.plans.get(&v.version) else {
        ctx.runtime.stop(&target.key);
        return Ok((None, None));
    };
    let storage_plan = &plan.storage;
    // A version that cannot run and has no storage yet gets none: nothing of AWS is created for it. One
    // with storage (an EventLog edit broke its projection) keeps it and fails at its runtime, as it serves.
    let stored = recorded
        .iter()
        .any(|r| r.version == v.version && r.table_name.is_some());
    if let Some(e) = plan.refusal().filter(|_| !stored) {
        let out = super::version::stalled(ViewPhase::Failed, reasons::INVALID_SPEC, e.to_string());
        record_outcome(v, &out);
        return Ok((Some(out), None));
    }
    v.table_name = Some(storage_plan.table.name.clone());
    v.key_prefix = storage_plan.key_prefix.clone();
    let table = match storage(on, &target, storage_plan, v, recorded).await? {
        ControlFlow::Continue(table) => table,
        ControlFlow::Break(out) => return Ok((Some(out), None)),
    };
    let vview = version_view(view, v);
    let prefix = storage_plan.key_prefix.clone().unwrap_or_default();
    let version = OnVersion { view: &vview, target: &target, log, ctx, ns };
    let out = match &plan.lambda {
        None => {
            let table = &storage_plan.table.name;
            super::in_cluster::reconcile(&version, table, &prefix, &plan.projection).await
        }
        Some(lambda) => super::lambda::lambda_version(&version, plan, lambda, &table.arn).await?,
    };
    record_outcome(v, &out);
    let table = ActiveTable {
        version: v.version,
        name: storage_plan.table.name.clone(),
        key_prefix: storage_plan.key_prefix.clone(),
        arn: table.arn,
        stream_arn: table.stream_arn,
    };
    Ok((Some(out), Some(table)))
}

/// Version `v`'s storage: its views table as planned and converged, a table re-created by hand noticed
/// (a new backfill attempt), and its key prefix or table claimed. `Continue` with the table once the
/// version may write there; `Break` with the version's outcome meanwhile (creating, retained, failed).
async fn storage(
    on: &Reconciling<'_>,
    target: &Target,
    plan: &crate::plan::view::ViewPlan,
    v: &mut ViewVersion,
    recorded: &[ViewVersion],
) -> Result<ControlFlow<InClusterOutcome, dynamodb::TableState>> {
    let Reconciling { view, ctx, .. } = *on;
    let table = match dynamodb::ensure_table(&ctx.aws.dynamodb, &plan.table).await {
        Ok(t) => t,
        Err(e) if e.retryable => return Err(e.into()),
        Err(e) if e.code == crate::aws::error::RETAINED_STORAGE => {
            let out = retained(view, ctx, target, v, e.message.clone()).await;
            return Ok(ControlFlow::Break(out));
        }
        Err(e) => return Ok(ControlFlow::Break(InClusterOutcome::failed(&e))),
    };
    if !recorded.iter().any(|r| r.version == v.version) {
        // Its storage exists and the version is not recorded yet.
        crate::fail_point!("version-created");
    }
    if let Some(created) = table.created {
        recreated_table(on, target, &plan.table.name, created, v).await?;
    }
    if table.convergence != Convergence::Converged {
        v.phase = Some(ViewPhase::Provisioning);
        let message = format!("creating views table {}", plan.table.name);
        return Ok(ControlFlow::Break(super::version::provisioning(message)));
    }
    // What the status shows this object wrote there already (a backfill begun, a live path run).
    let written = recorded.iter().any(|r| {
        r.version == v.version
            && (r.live.is_some()
                || r.backfill
                    .as_ref()
                    .is_some_and(|b| b.attempt > 0 || b.started_at.is_some()))
    });
    match claim_storage(on, plan, v.version, written).await {
        Ok(None) => Ok(ControlFlow::Continue(table)),
        Ok(Some(message)) => Ok(ControlFlow::Break(retained(view, ctx, target, v, message).await)),
        Err(e) if e.retryable => Err(e.into()),
        Err(e) => Ok(ControlFlow::Break(InClusterOutcome::failed(&e))),
    }
}

/// A views table created (`created`, seconds since the epoch) after version `v`'s backfill started was
/// deleted outside the operator and re-created empty: it holds none of the view. Starts a new backfill
/// attempt that rebuilds it from the log, with a Warning Event.
async fn recreated_table(
    on: &Reconciling<'_>,
    target: &Target,
    table: &str,
    created: f64,
    v: &mut ViewVersion,
) -> Result<()> {
    let Reconciling { view, ctx, ns, .. } = *on;
    let Some(b) = v.backfill.clone() else {
        return Ok(());
    };
    let started_before = b
        .started_at
        .as_ref()
        .is_some_and(|t| (t.0.as_second() as f64) + 1.0 < created);
    if b.attempt == 0 || !started_before {
        return Ok(());
    }
    let reason = format!(
        "views table {table} was deleted outside the operator and re-created empty: rebuilding the view from \
         the log"
    );
    tracing::warn!(view = %view.name_any(), version = v.version, %reason, "starting a new backfill attempt");
    super::backfill::retire_attempt(ctx, ns, &target.base, &b).await?;
    ctx.runtime.stop(&target.key);
    status::publish(
        ctx,
        view,
        EventType::Warning,
        reasons::TABLE_RECREATED,
        "Rebuild",
        reason.clone(),
    )
    .await;
    v.backfill = Some(crate::crd::BackfillStatus {
        attempt: b.attempt + 1,
        reason: Some(reason),
        ..Default::default()
    });
    Ok(())
}

/// Records a version's outcome in its status entry.
fn record_outcome(v: &mut ViewVersion, out: &InClusterOutcome) {
    if !out.resources.is_empty() {
        v.resources = out.resources.clone();
    }
    v.phase = Some(out.phase);
    if out.backfill.is_some() {
        v.backfill = out.backfill.clone();
    }
    v.live = out.live.clone();
    v.message = Some(out.health.message().to_string()).filter(|m| !m.is_empty());
}

/// Whether a version may be promoted: caught up (backfilled, within `max_lag` of the log, its live path
/// not failing), or why it failed. A version waiting for the user's storage decision has not failed.
fn readiness(out: Option<&InClusterOutcome>, max_lag: Duration, now: Timestamp) -> Readiness {
    let Some(out) = out else {
        return Readiness::default();
    };
    let failure = match (&out.health, &out.skipped) {
        // Waits for the user (spec.store.adopt or another prefix), not a failure of the version.
        (Health::Stalled { reason, .. }, _) if *reason == reasons::STORAGE_RETAINED => None,
        (Health::Stalled { message, .. }, _) => Some(message.clone()),
        (_, Some(skipped)) => Some(skipped.clone()),
        _ => None,
    };
    // In-cluster: the reader's watermark; Lambda: the lag the projector function reports
    // (`crate::functions::progress`), folded into `caught_up` against maxLag. No live status: no live path.
    let within_lag = out.live.as_ref().is_none_or(|l| {
        l.caught_up
            || l.watermark
                .as_ref()
                .is_some_and(|w| now.as_second() - w.0.as_second() <= max_lag.as_secs() as i64)
    });
    let live_ok =
        !matches!(out.health, Health::Progressing { reason, .. } if reason == reasons::LIVE_PATH_FAILED);
    Readiness {
        caught_up: out.backfill_complete && within_lag && live_ok,
        failure,
    }
}

/// A Normal Event per promotion, a Warning per failed version (its runtime stopped).
async fn publish_transitions(view: &MaterializedView, ctx: &Context, transitions: &[Transition]) {
    let promotion = &view.spec.promotion;
    for t in transitions {
        match t {
            Transition::Promoted { version, previous } => {
                info!(view = %view.name_any(), version, ?previous, "promoted");
                status::publish(
                    ctx,
                    view,
                    EventType::Normal,
                    reasons::PROMOTED,
                    "Promote",
                    match previous {
                        Some(p) => format!(
                            "readers now use version {version}; version {p} is retained for {} and kept current",
                            promotion.retain_previous
                        ),
                        None => format!("readers now use version {version}"),
                    },
                )
                .await;
            }
            Transition::Failed { version, message } => {
                ctx.runtime.stop(&Target::new(view, *version).key);
                status::publish(
                    ctx,
                    view,
                    EventType::Warning,
                    reasons::REBUILD_FAILED,
                    "Rebuild",
                    format!("version {version} failed and the active version keeps serving: {message}"),
                )
                .await;
            }
        }
    }
}

/// A version whose storage holds an earlier view's retained items (see `crate::aws::view_storage`): it
/// waits, Stalled, until the user adopts the storage or moves the view; whatever of it ran stops (it must
/// write nothing there), and a Warning Event says why.
async fn retained(
    view: &MaterializedView,
    ctx: &Context,
    target: &Target,
    v: &mut ViewVersion,
    message: String,
) -> InClusterOutcome {
    ctx.runtime.stop(&target.key);
    status::publish(
        ctx,
        view,
        EventType::Warning,
        reasons::STORAGE_RETAINED,
        "ClaimStorage",
        format!("version {}: {message}", v.version),
    )
    .await;
    v.phase = Some(ViewPhase::Pending);
    v.message = Some(message.clone());
    InClusterOutcome {
        phase: ViewPhase::Pending,
        health: Health::Stalled { reason: reasons::STORAGE_RETAINED, message },
        ..InClusterOutcome::failed(&AwsError::permanent("ClaimStorage", "", ""))
    }
}

/// Claims version `version`'s storage (its key prefix in a shared table, or its dedicated table) for the
/// view before anything reads or writes it (`written`: its status shows it wrote there already); the
/// message when it holds another view's retained items and `spec.store.adopt` is not set. With it, what
/// of the earlier view may still write there (its projector function, mappings, subscriptions and role)
/// is removed, then its items are deleted (a Warning Event says how many) and the version rebuilds.
async fn claim_storage(
    on: &Reconciling<'_>,
    plan: &crate::plan::view::ViewPlan,
    version: i64,
    written: bool,
) -> std::result::Result<Option<String>, AwsError> {
    use crate::aws::view_storage::{Claim, Claimant, claim, clear};
    let Reconciling { view, log, ctx, all, .. } = *on;
    let me = Claimant {
        uid: view.metadata.uid.clone().unwrap_or_default(),
        namespace: plan.owner.namespace.clone(),
        name: plan.owner.name.clone(),
    };
    let prefix = plan.key_prefix.clone().unwrap_or_default();
    let adopt = view.spec.store.adopt;
    let table = &plan.table.name;
    match claim(&ctx.aws.dynamodb, table, &prefix, &me, adopt, written).await {
        Ok(Claim::Ours) => Ok(None),
        Ok(Claim::Clearing { from }) => {
            let removed = match &from {
                Some(earlier) => {
                    super::lambda::remove_earlier_projector(view, log, ctx, plan, earlier, all).await?
                }
                None => Vec::new(),
            };
            let n = clear(&ctx.aws.dynamodb, table, &prefix, &me).await?;
            let removed = match removed.is_empty() {
                true => String::new(),
                false => format!(" (and removed the earlier view's {})", removed.join(", ")),
            };
            status::publish(
                ctx,
                view,
                EventType::Warning,
                reasons::STORAGE_ADOPTED,
                "AdoptStorage",
                format!(
                    "spec.store.adopt: deleted {n} items an earlier view of this name left under key prefix \
                     {prefix:?} of views table {table}{removed}; version {version} is rebuilt from the log"
                ),
            )
            .await;
            Ok(None)
        }
        Ok(Claim::Retained { uid, name, claimed_at }) => {
            let location = match plan.shared {
                true => format!("key prefix {prefix:?} of shared views table {table}"),
                false => format!("views table {table}"),
            };
            let earlier = match uid {
                Some(uid) => {
                    let since = claimed_at.map(|t| format!(", since {t}")).unwrap_or_default();
                    format!(
                        "an earlier MaterializedView {name} (uid {uid}{since}), retained when it was deleted"
                    )
                }
                None => "the items of a view that recorded no owner (one deleted with deletionPolicy Retain \
                         before kappa-operator recorded owners, or an owner item without a uid)"
                    .to_string(),
            };
            let move_it = match plan.shared {
                true => "or set spec.store.keyPrefix to a prefix of its own",
                false => "or delete that table",
            };
            Ok(Some(format!(
                "spec.store: {location} holds the items of {earlier}; this view (uid {}) would serve items it \
                 did not project, so it writes nothing there: set spec.store.adopt: true to delete those items \
                 and rebuild the view there from the log, {move_it}",
                me.uid
            )))
        }
        Err(e) => Err(e),
    }
}

/// The `Rebuilding` condition and summary: the version of the desired content, when it is not active.
fn rebuild_of(
    view: &str,
    versions: &[ViewVersion],
    desired_hash: &str,
    mode: crate::crd::PromotionMode,
    active: Option<i64>,
    approval: Option<&str>,
) -> Option<Rebuild> {
    let wanted = versions.iter().find(|v| v.content_hash == desired_hash)?;
    let active = active.unwrap_or_default();
    let n = wanted.version;
    Some(match wanted.state {
        VersionState::Active => Rebuild {
            status: ConditionStatus::False,
            reason: reasons::PROMOTED,
            message: format!("version {n} is active"),
            summary: None,
        },
        VersionState::Failed => Rebuild {
            status: ConditionStatus::False,
            reason: reasons::REBUILD_FAILED,
            message: format!(
                "version {n} failed; version {active} keeps serving: {}; fix the spec to start another version",
                wanted.message.clone().unwrap_or_default()
            ),
            summary: Some(format!("v{n} Failed")),
        },
        VersionState::Building | VersionState::Retained => {
            let phase = wanted
                .phase
                .map(|p| p.to_string())
                .unwrap_or_else(|| "Pending".into());
            let progress = wanted
                .backfill
                .as_ref()
                .and_then(|b| b.progress.clone())
                .filter(|_| wanted.phase == Some(ViewPhase::Backfilling));
            let live = wanted.phase == Some(ViewPhase::Live);
            let (reason, message) = match (mode, live) {
                (crate::crd::PromotionMode::Manual, true) => (
                    reasons::WAITING_FOR_APPROVAL,
                    format!(
                        "version {n} has caught up; approve its promotion with `kubectl annotate mv {view} \
                         {APPROVE_PROMOTION_ANNOTATION}={n} --overwrite`{}",
                        approval
                            .map(|a| format!(" (the annotation is {a:?}, which does not name version {n})"))
                            .unwrap_or_default()
                    ),
                ),
                _ => (
                    reasons::REBUILDING,
                    format!(
                        "version {n} is {phase}{}; version {active} keeps serving until it is backfilled and within \
                         spec.promotion.maxLag",
                        progress.as_deref().map(|p| format!(" ({p})")).unwrap_or_default()
                    ),
                ),
            };
            Rebuild {
                status: ConditionStatus::True,
                reason,
                message,
                summary: Some(match progress {
                    Some(p) => format!("v{n} {phase} {p}"),
                    None => format!("v{n} {phase}"),
                }),
            }
        }
    })
}

/// The ConfigMap named after the view that points readers at its active version (owned by the view).
async fn write_pointer(
    view: &MaterializedView,
    ctx: &Context,
    ns: &str,
    version: i64,
    table: &str,
    key_prefix: Option<&str>,
) -> Result<()> {
    let name = view.name_any();
    let mut data = BTreeMap::from([
        ("view".to_string(), name.clone()),
        ("version".to_string(), version.to_string()),
        ("tableName".to_string(), table.to_string()),
        (
            "keyPrefix".to_string(),
            key_prefix.unwrap_or_default().to_string(),
        ),
    ]);
    data.insert("region".into(), ctx.aws.region.clone());
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    if let Ok(Some(cm)) = api.get_opt(&name).await
        && cm.data.as_ref() == Some(&data)
    {
        return Ok(());
    }
    let cm = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/managed-by": "kappa-operator", "kappa.dev/view": name},
            "ownerReferences": checkpoints::owner_of(view).into_iter().collect::<Vec<_>>(),
        },
        "data": data,
    });
    api.patch(
        &name,
        &PatchParams::apply("kappa-operator").force(),
        &Patch::Apply(&cm),
    )
    .await
    .map_err(Error::kube(
        "writing the pointer ConfigMap",
        format!("{ns}/{name}"),
    ))?;
    Ok(())
}

/// Removes a version whose storage is `plan` (planned by `crate::plan::topology`): its live path and
/// backfill first (the tasks and their checkpoints, or its projector function, subscriptions, mapping and
/// role), then, with `storage`, its items (a shared table) or its table (a dedicated one).
pub(super) async fn remove_version(
    view: &MaterializedView,
    ctx: &Context,
    ns: &str,
    all: &[&MaterializedView],
    v: &ViewVersion,
    plan: &crate::plan::view::ViewPlan,
    storage: bool,
) -> Result<()> {
    let target = Target::new(view, v.version);
    stop_version(view, ctx, ns, v, &target).await?;
    let projector = super::lambda::delete_projector(&v.resources, ctx, plan).await?;
    let role = plan
        .owner
        .resource_name(&plan.projector_role_name(), crate::plan::names::NameKind::Role);
    let role_deleted = crate::aws::iam::delete_role_if_owned(&ctx.aws.iam, &role, &plan.owner).await?;
    if !projector.is_empty() || role_deleted {
        info!(view = %view.name_any(), version = v.version, ?projector, role_deleted, "removed the version's projector");
    }
    if !storage {
        return Ok(());
    }
    remove_storage(view, ctx, all, v, plan).await
}

/// Deletes a version's items (a shared table: only under its own prefix, and only items this object
/// projected) or its table (a dedicated one, when its tags say this object owns it).
async fn remove_storage(
    view: &MaterializedView,
    ctx: &Context,
    all: &[&MaterializedView],
    v: &ViewVersion,
    plan: &crate::plan::view::ViewPlan,
) -> Result<()> {
    match (plan.shared, plan.key_prefix.as_deref()) {
        (true, Some(prefix))
            if !prefix.is_empty()
                && let Some(other) = crate::controller::validate::overlapping_sibling(
                    prefix,
                    &view.spec.store.shared_table_name,
                    &all.iter()
                        .filter(|o| o.metadata.name != view.metadata.name)
                        .cloned()
                        .collect::<Vec<_>>(),
                ) =>
        {
            tracing::warn!(view = %view.name_any(), version = v.version, prefix, other, "keeping the version's items: another view's key prefix overlaps");
        }
        (true, Some(prefix)) if !prefix.is_empty() => {
            // Only items this object projected: a version refused over retained storage owns none.
            let uid = view.metadata.uid.clone().unwrap_or_default();
            let owner =
                crate::aws::view_storage::owner_of(&ctx.aws.dynamodb, &plan.table.name, prefix).await?;
            if owner.as_deref() == Some(uid.as_str()) {
                let n =
                    crate::aws::views::delete_items_with_prefix(&ctx.aws.dynamodb, &plan.table.name, prefix)
                        .await?;
                info!(view = %view.name_any(), version = v.version, items = n, prefix, "removed the version's items");
            } else {
                tracing::warn!(view = %view.name_any(), version = v.version, prefix, ?owner, "keeping items under the version's prefix: not this view's");
            }
        }
        (true, _) => {}
        (false, _) => {
            let deleted =
                dynamodb::delete_table_if_owned(&ctx.aws.dynamodb, &plan.table.name, &plan.table_owner)
                    .await?;
            info!(view = %view.name_any(), version = v.version, table = %plan.table.name, deleted, "removed the version's table");
        }
    }
    Ok(())
}

/// Stops a version's tasks and removes what they keep: its stream and backfill checkpoints, its backfill
/// Job and its export (unless the backfill removed it already, or the user keeps exports).
async fn stop_version(
    view: &MaterializedView,
    ctx: &Context,
    ns: &str,
    v: &ViewVersion,
    target: &Target,
) -> Result<()> {
    ctx.runtime.stop(&target.key);
    let stream = ConfigMapCheckpoint::new(
        ctx.client.clone(),
        ns,
        checkpoints::stream_name(&target.base),
        None,
    );
    if let Err(e) = stream.delete().await {
        tracing::warn!(version = v.version, error = %e, "could not delete the version's stream checkpoint");
    }
    if let Some(b) = &v.backfill
        && b.attempt > 0
    {
        let cm = ConfigMapCheckpoint::new(
            ctx.client.clone(),
            ns,
            checkpoints::backfill_name(&target.base, b.attempt),
            None,
        );
        if let Err(e) = cm.delete().await {
            tracing::warn!(version = v.version, error = %e, "could not delete the version's backfill checkpoint");
        }
    }
    // Its backfill Job (still running, or kept failed), then its export, unless the backfill finished and
    // removed it already (or the user keeps exports).
    if let Some(b) = v.backfill.as_ref().filter(|b| b.attempt > 0) {
        super::backfill::delete_backfill_job(ctx, ns, &target.base, b.attempt).await;
    }
    if let Some(b) = v.backfill.as_ref().filter(|b| !b.cleaned_up)
        && !view.spec.backfill.keep_export
    {
        let n = super::backfill::delete_export(ctx, ns, &target.base, b).await?;
        if n > 0 {
            info!(view = %view.name_any(), version = v.version, objects = n, "removed the version's export");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_up_version_waiting_for_approval_says_how_and_why_the_annotation_does_not_count() {
        let building = ViewVersion {
            version: 2,
            content_hash: "h2".into(),
            state: VersionState::Building,
            phase: Some(ViewPhase::Live),
            ..ViewVersion::default()
        };
        let manual = crate::crd::PromotionMode::Manual;
        let r = rebuild_of(
            "points",
            std::slice::from_ref(&building),
            "h2",
            manual,
            Some(1),
            Some("yes"),
        )
        .unwrap();
        assert_eq!(r.reason, reasons::WAITING_FOR_APPROVAL);
        assert!(
            r.message
                .contains("kubectl annotate mv points kappa.dev/approve-promotion=2"),
            "{}",
            r.message
        );
        assert!(r.message.contains("\"yes\""), "{}", r.message);
        let r = rebuild_of("points", &[building], "h2", manual, Some(1), None).unwrap();
        assert!(!r.message.contains("the annotation is"), "{}", r.message);
    }
}
