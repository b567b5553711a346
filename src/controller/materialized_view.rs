//! The MaterializedView pipeline: dereference its EventLog → validate → (plan → apply: provisioning) →
//! status. A view is reconciled again whenever its EventLog changes.

use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tracing::instrument;

use super::status::{self, Health};
use super::{Context, Error, Result, validate};
use crate::crd::{
    DeletionPolicy, EventLog, MaterializedView, MaterializedViewStatus, ViewPhase, condition_types as types,
    reasons,
};

const KIND: &str = "MaterializedView";

pub(super) async fn run(ctx: Arc<Context>) {
    let runs = super::watched_apis::<MaterializedView>(&ctx)
        .into_iter()
        .map(|views| {
            let ctx = ctx.clone();
            let logs = Api::<EventLog>::all(ctx.client.clone());
            let logs = match views.namespace() {
                Some(ns) => Api::<EventLog>::namespaced(ctx.client.clone(), ns),
                None => logs,
            };
            async move {
                let controller = Controller::new(views, watcher::Config::default().any_semantic());
                let store = controller.store();
                let stream = controller
                    .watches(
                        logs,
                        watcher::Config::default().any_semantic(),
                        move |log: EventLog| {
                            // A changed EventLog re-reconciles every view that reads it.
                            let ns = log.namespace();
                            let name = log.name_any();
                            store
                                .state()
                                .into_iter()
                                .filter(|v| v.namespace() == ns && v.spec.event_log_ref.name == name)
                                .map(|v| ObjectRef::from_obj(v.as_ref()))
                                .collect::<Vec<_>>()
                        },
                    )
                    .run(reconcile, error_policy, ctx)
                    .boxed();
                super::drain(stream, KIND).await;
            }
        });
    futures::future::join_all(runs).await;
}

#[instrument(skip_all, fields(namespace = view.namespace(), name = view.name_any()))]
async fn reconcile(view: Arc<MaterializedView>, ctx: Arc<Context>) -> Result<Action> {
    super::reconcile_with_finalizer(view, ctx, KIND, apply, cleanup).await
}

fn error_policy(view: Arc<MaterializedView>, _error: &Error, ctx: Arc<Context>) -> Action {
    super::requeue_after_error(view.as_ref(), &ctx)
}

/// What this reconcile concluded, before it is written to the status.
struct Outcome {
    phase: ViewPhase,
    health: Health,
}

async fn apply(view: Arc<MaterializedView>, ctx: &Context, ns: &str) -> Result<Action> {
    let logs: Api<EventLog> = Api::namespaced(ctx.client.clone(), ns);
    let log_name = &view.spec.event_log_ref.name;
    let log = logs
        .get_opt(log_name)
        .await
        .map_err(Error::kube("reading", format!("EventLog {ns}/{log_name}")))?;
    let outcome = match log {
        None => Outcome {
            phase: ViewPhase::Pending,
            health: Health::Stalled {
                reason: reasons::EVENT_LOG_NOT_FOUND,
                message: format!(
                    "spec.eventLogRef.name: EventLog {log_name:?} does not exist in namespace {ns}: create it, or \
                     create a view that refers to an existing EventLog (the field is immutable)"
                ),
            },
        },
        Some(log) => {
            let problems = validate::view_against_log(&view, &log);
            if problems.is_empty() {
                Outcome {
                    phase: ViewPhase::Provisioning,
                    health: Health::Progressing {
                        reason: reasons::PROVISIONING,
                        message: "provisioning the view's AWS resources".into(),
                    },
                }
            } else {
                Outcome {
                    phase: ViewPhase::Pending,
                    health: Health::Stalled {
                        reason: reasons::INVALID_SPEC,
                        message: problems.join("; "),
                    },
                }
            }
        }
    };
    write_status(&view, ctx, ns, &outcome).await?;
    Ok(match outcome.health {
        // A changed spec or EventLog wakes a stalled view; the resync is a safety net.
        Health::Stalled { .. } => Action::requeue(ctx.config.resync),
        Health::Progressing { .. } => Action::requeue(std::time::Duration::from_secs(10)),
        Health::Ready { .. } => Action::requeue(ctx.config.resync),
    })
}

async fn write_status(view: &MaterializedView, ctx: &Context, ns: &str, outcome: &Outcome) -> Result<()> {
    let old = view.status.clone().unwrap_or_default();
    let mut next: MaterializedViewStatus = old.clone();
    let now = status::now();
    let generation = view.metadata.generation;
    next.observed_generation = generation;
    next.phase = Some(outcome.phase);
    status::set_kstatus(&mut next.conditions, &outcome.health, generation, &now);
    if !matches!(outcome.health, Health::Ready { .. }) {
        let reason = match outcome.health {
            Health::Stalled { .. } => reasons::INVALID_SPEC,
            _ => reasons::PROVISIONING,
        };
        status::set(
            &mut next.conditions,
            types::PROVISIONED,
            crate::crd::ConditionStatus::False,
            reason,
            "",
            generation,
            &now,
        );
    }
    if next == old {
        return Ok(());
    }
    let api: Api<MaterializedView> = Api::namespaced(ctx.client.clone(), ns);
    status::apply(&api, view, &next).await?;
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
        .any(|c| c.type_ == types::STALLED && c.is_true());
    if let Health::Stalled { reason, message } = &outcome.health {
        let stalled_before_with_same = was_stalled
            && old
                .conditions
                .iter()
                .any(|c| c.type_ == types::STALLED && c.message == *message);
        if !stalled_before_with_same {
            status::publish(ctx, view, EventType::Warning, reason, "Validate", message.clone()).await;
        }
    }
    Ok(())
}

async fn cleanup(view: Arc<MaterializedView>, ctx: &Context, ns: &str) -> Result<Action> {
    let deleting = Outcome {
        phase: ViewPhase::Deleting,
        health: Health::Progressing {
            reason: reasons::DELETING,
            message: "cleaning up".into(),
        },
    };
    write_status(&view, ctx, ns, &deleting).await?;
    let note = match view.spec.deletion_policy {
        DeletionPolicy::Retain => "deletionPolicy Retain: the view's AWS resources are kept".to_string(),
        DeletionPolicy::Delete => "deletionPolicy Delete: the view's AWS resources are removed".to_string(),
    };
    status::publish(ctx, view.as_ref(), EventType::Normal, "Deleted", "Cleanup", note).await;
    Ok(Action::await_change())
}
