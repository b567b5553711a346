//! The MaterializedView reconcile, one pass:
//!
//! ```text
//! dereference (its EventLog, the namespace's views)  ─▶ validate (crate::controller::validate: no AWS call)
//!   ─▶ plan (crate::plan::topology::plan_topology: pure, one ViewTopology)
//!   ─▶ apply (versions ─▶ per version: storage, then in_cluster or lambda; then subscribers), adapters only
//!   ─▶ status (outcome::write_status, from the observed outcome)
//! ```
//!
//! A view is reconciled again whenever its EventLog changes.
//!
//! One file per concern, each importing only those below it (no cycles):
//!
//! | file | what it holds |
//! |---|---|
//! | `dereference` | reading the view's EventLog and its namespace's views (the sharers of a table) |
//! | `versions` | applying the view's versions as planned: each version's table, projector and live path, rebuild and promotion |
//! | `in_cluster` / `lambda`, `lambda_live` | one version on the in-cluster runtime / on Lambda |
//! | `backfill` | the backfill of one version: one [`backfill_step::BackfillStep`] per reconcile, executed |
//! | `backfill_step` | the pure step machine: status + observations → the next step |
//! | `backfill_job`, `backfill_run` | a backfill run as a Kubernetes Job / in this process, and its progress |
//! | `version` | what every version's run shares: [`version::Target`], [`version::InClusterOutcome`] |
//! | `subscribers` | the WebSocket push path (`spec.subscribers`) |
//! | `outcome` | the reconcile's conclusion and the one function writing it to the status |
//! | `cleanup` | deletion: what the view owns, per `spec.deletionPolicy` |
use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tracing::instrument;

use super::status::{self, Health};
use super::{Context, Error, Result, validate};
use crate::crd::{EventLog, MaterializedView, Tolerant, ViewPhase, reasons};
use crate::plan::topology::{TopologyInput, plan_topology};

mod backfill;
mod backfill_job;
mod backfill_run;
mod backfill_step;
mod cleanup;
mod dereference;
mod in_cluster;
mod lambda;
mod lambda_live;
mod outcome;
mod subscribers;
#[cfg(test)]
mod tests;
mod version;
mod versions;

use cleanup::cleanup;
pub(super) use dereference::ViewStores;
use dereference::{LogRef, Views, views_in};
use outcome::{Outcome, VersionsSummary, write_status};
use subscribers::push_path;

const KIND: &str = "MaterializedView";

pub(super) async fn run(ctx: Arc<Context>) {
    let runs = super::watched_apis::<Tolerant<MaterializedView>>(&ctx)
        .into_iter()
        .map(|views| {
            let ctx = ctx.clone();
            let logs = match views.namespace() {
                Some(ns) => Api::<Tolerant<EventLog>>::namespaced(ctx.client.clone(), ns),
                None => Api::<Tolerant<EventLog>>::all(ctx.client.clone()),
            };
            let views_namespace = views.namespace().map(str::to_string);
            async move {
                let controller = Controller::new(views, watcher::Config::default().any_semantic());
                let store = controller.store();
                // The reconciles read the namespace's views (the sharers of a table) from it.
                ctx.view_stores.register(views_namespace.clone(), store.clone());
                let stream = controller
                    .watches(
                        logs,
                        watcher::Config::default().any_semantic(),
                        move |log: Tolerant<EventLog>| {
                            // A changed EventLog re-reconciles every view that reads it.
                            let ns = log.namespace();
                            let name = log.name_any();
                            store
                                .state()
                                .into_iter()
                                .filter(|v| {
                                    v.namespace() == ns
                                        && v.readable().is_some_and(|v| v.spec.event_log_ref.name == name)
                                })
                                .map(|v| ObjectRef::from_obj(v.as_ref()))
                                .collect::<Vec<_>>()
                        },
                    )
                    // Objects left alone while the CRDs were not this operator's, reconciled once they are.
                    .reconcile_all_on(ctx.crd_skew.cleared())
                    // A view whose runtime task changed state, at once (not at its next requeue).
                    .reconcile_on(woken(ctx.clone(), views_namespace))
                    .run(reconcile_listed, error_policy, ctx)
                    .boxed();
                super::drain(stream, KIND).await;
            }
        });
    futures::future::join_all(runs).await;
}

/// The views of `namespace` (every namespace: `None`) whose runtime task changed state
/// ([`crate::runtime::Wake`]), each also marked woken for the pacer (its next run is progress though the
/// object looks the same). A controller that lagged behind the wakes misses some; the views' own requeues
/// cover them.
fn woken(
    ctx: Arc<Context>,
    namespace: Option<String>,
) -> impl futures::Stream<Item = ObjectRef<Tolerant<MaterializedView>>> + Send + 'static {
    futures::stream::unfold(ctx.runtime.wakes(), |mut wakes| async move {
        loop {
            match wakes.recv().await {
                Ok(key) => return Some((key, wakes)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .filter_map(move |key| {
        let view = crate::runtime::view_of_key(&key)
            .filter(|(ns, _)| namespace.as_deref().is_none_or(|n| n == *ns))
            .map(|(ns, name)| {
                ctx.pacer.wake(&format!("{KIND}/{ns}/{name}"));
                ObjectRef::new(name).within(ns)
            });
        std::future::ready(view)
    })
}

/// A listed or watched view: reconciled when this operator can read it (see [`Tolerant`]).
async fn reconcile_listed(view: Arc<Tolerant<MaterializedView>>, ctx: Arc<Context>) -> Result<Action> {
    super::reconcile_tolerant(view, ctx, KIND, reconcile).await
}

#[instrument(skip_all, fields(namespace = view.namespace(), name = view.name_any()))]
async fn reconcile(view: Arc<Tolerant<MaterializedView>>, ctx: Arc<Context>) -> Result<Action> {
    super::reconcile_with_finalizer(view, ctx, KIND, apply, cleanup).await
}

fn error_policy(view: Arc<Tolerant<MaterializedView>>, _error: &Error, ctx: Arc<Context>) -> Action {
    super::requeue_after_error(view.as_ref(), &ctx)
}

async fn apply(view: Arc<MaterializedView>, ctx: &Context, ns: &str) -> Result<Action> {
    let log_name = &view.spec.event_log_ref.name;
    let outcome = match dereference::event_log(&ctx.client, ns, log_name).await? {
        LogRef::Unreadable(why) => Outcome::stalled(
            reasons::EVENT_LOG_UNREADABLE,
            format!(
                "spec.eventLogRef.name: EventLog {ns}/{log_name} cannot be read by this operator version ({why}); \
                 its Warning Event says how to fix it; the view waits"
            ),
        ),
        LogRef::Missing => Outcome::stalled(
            reasons::EVENT_LOG_NOT_FOUND,
            format!(
                "spec.eventLogRef.name: EventLog {log_name:?} does not exist in namespace {ns}: create it, or \
                 create a view that refers to an existing EventLog (the field is immutable)"
            ),
        ),
        LogRef::Found(log) => {
            let mut problems = validate::view_against_log(&view, &log);
            // The namespace's views, read once: for the prefix check and the sharers of the table.
            let mut views = Views::none();
            if problems.is_empty() {
                views = views_in(ctx, ns).await?;
                problems.extend(validate::prefix_overlap(&view, &views.all()));
            }
            if problems.is_empty() {
                provision(&view, &log, ctx, ns, &views.all()).await?
            } else {
                Outcome::stalled(reasons::INVALID_SPEC, problems.join("; "))
            }
        }
    };
    write_status(&view, ctx, ns, &outcome).await?;
    // A changed spec or EventLog wakes a stalled view; the resync is a safety net. A table still being
    // created is looked at again soon.
    if let Some(run) = &outcome.in_cluster {
        return Ok(Action::requeue(run.requeue.min(ctx.config.resync)));
    }
    let table_ready = outcome.table.is_some() && outcome.phase == ViewPhase::Provisioning;
    Ok(match outcome.health {
        Health::Progressing { .. } if !table_ready => Action::requeue(std::time::Duration::from_secs(5)),
        _ => Action::requeue(ctx.config.resync),
    })
}

async fn provision(
    view: &MaterializedView,
    log: &EventLog,
    ctx: &Context,
    ns: &str,
    all: &[&MaterializedView],
) -> Result<Outcome> {
    // Plan: the whole desired topology, once, before any AWS call.
    let namespace_uid = ctx.namespace_uid(ns).await?;
    let topology = plan_topology(&TopologyInput {
        cluster: &ctx.config.cluster_id,
        view,
        log,
        siblings: all,
        namespace_uid: namespace_uid.as_deref(),
        now: k8s_openapi::jiff::Timestamp::now(),
    });
    // Apply, version by version, then the push path.
    let mut run = versions::run(view, log, ctx, ns, all, &topology).await?;
    let push = match push_path(view, ctx, ns, run.table.as_ref(), all, &topology).await {
        Ok(push) => push,
        Err(e) if e.retryable => return Err(e.into()),
        Err(e) => {
            run.outcome.health = Health::Stalled {
                reason: status::aws_reason(&e),
                message: format!("spec.subscribers: {e}"),
            };
            None
        }
    };
    if view.spec.subscribers.is_some() && push.is_none() {
        run.outcome.requeue = run.outcome.requeue.min(std::time::Duration::from_secs(1));
    }
    Ok(Outcome {
        phase: run.outcome.phase,
        health: run.outcome.health.clone(),
        table: run.table,
        push,
        in_cluster: Some(run.outcome),
        versions: Some(VersionsSummary {
            versions: run.versions,
            active: run.active,
            latest: run.latest,
            rebuild: run.rebuild,
        }),
    })
}
