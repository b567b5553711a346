//! The EventLog pipeline: dereference its views → plan (fan-out) → (apply: provisioning) → status.
//! An EventLog is reconciled again whenever one of its views changes, since `Auto` fan-out and the
//! routed topics depend on them.

use std::sync::Arc;

use futures::StreamExt;
use kube::api::ListParams;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tracing::instrument;

use super::status::{self, Health};
use super::{Context, Error, Result};
use crate::crd::{
    ConditionStatus, DeletionPolicy, EventLog, EventLogPhase, EventLogStatus, MaterializedView,
    condition_types as types, reasons,
};
use crate::plan::{StreamReaders, resolve_fan_out};

const KIND: &str = "EventLog";

pub(super) async fn run(ctx: Arc<Context>) {
    let runs = super::watched_apis::<EventLog>(&ctx).into_iter().map(|logs| {
        let ctx = ctx.clone();
        let views = match logs.namespace() {
            Some(ns) => Api::<MaterializedView>::namespaced(ctx.client.clone(), ns),
            None => Api::<MaterializedView>::all(ctx.client.clone()),
        };
        async move {
            let stream = Controller::new(logs, watcher::Config::default().any_semantic())
                .watches(
                    views,
                    watcher::Config::default().any_semantic(),
                    |view: MaterializedView| {
                        let ns = view.namespace()?;
                        Some(ObjectRef::<EventLog>::new(&view.spec.event_log_ref.name).within(&ns))
                    },
                )
                .run(reconcile, error_policy, ctx)
                .boxed();
            super::drain(stream, KIND).await;
        }
    });
    futures::future::join_all(runs).await;
}

#[instrument(skip_all, fields(namespace = log.namespace(), name = log.name_any()))]
async fn reconcile(log: Arc<EventLog>, ctx: Arc<Context>) -> Result<Action> {
    super::reconcile_with_finalizer(log, ctx, KIND, apply, cleanup).await
}

fn error_policy(log: Arc<EventLog>, _error: &Error, ctx: Arc<Context>) -> Action {
    super::requeue_after_error(log.as_ref(), &ctx)
}

/// The views that read this log, found through the MaterializedView's selectable field.
async fn views_of(log: &EventLog, ctx: &Context, ns: &str) -> Result<Vec<MaterializedView>> {
    let api: Api<MaterializedView> = Api::namespaced(ctx.client.clone(), ns);
    let selector = format!("spec.eventLogRef.name={}", log.name_any());
    let list = api
        .list(&ListParams::default().fields(&selector))
        .await
        .map_err(Error::kube(
            "listing the views of",
            format!("EventLog {ns}/{}", log.name_any()),
        ))?;
    Ok(list.items)
}

async fn apply(log: Arc<EventLog>, ctx: &Context, ns: &str) -> Result<Action> {
    let views = views_of(&log, ctx, ns).await?;
    let fan_out = resolve_fan_out(log.spec.fan_out.mode, StreamReaders::of(&views));
    let health = Health::Progressing {
        reason: reasons::PROVISIONING,
        message: "provisioning the log's AWS resources".into(),
    };
    let old = log.status.clone().unwrap_or_default();
    let mut next: EventLogStatus = old.clone();
    let now = status::now();
    let generation = log.metadata.generation;
    next.observed_generation = generation;
    next.phase = Some(EventLogPhase::Provisioning);
    next.views = views.len() as i32;
    next.fan_out = Some(fan_out.as_str().to_string());
    status::set_kstatus(&mut next.conditions, &health, generation, &now);
    status::set(
        &mut next.conditions,
        types::PROVISIONED,
        ConditionStatus::False,
        reasons::PROVISIONING,
        "",
        generation,
        &now,
    );
    if next != old {
        status::apply(&api_of(ctx, ns), log.as_ref(), &next).await?;
        if old.phase != next.phase {
            let note = format!("phase {:?} → Provisioning", old.phase);
            status::publish(
                ctx,
                log.as_ref(),
                EventType::Normal,
                "Provisioning",
                "PhaseChanged",
                note,
            )
            .await;
        }
    }
    Ok(Action::requeue(ctx.config.resync))
}

fn api_of(ctx: &Context, ns: &str) -> Api<EventLog> {
    Api::namespaced(ctx.client.clone(), ns)
}

async fn cleanup(log: Arc<EventLog>, ctx: &Context, ns: &str) -> Result<Action> {
    let mut next = log.status.clone().unwrap_or_default();
    next.phase = Some(EventLogPhase::Deleting);
    status::apply(&api_of(ctx, ns), log.as_ref(), &next).await?;
    let note = match log.spec.deletion_policy {
        DeletionPolicy::Retain => {
            "deletionPolicy Retain: the log table and its resources are kept".to_string()
        }
        DeletionPolicy::Delete => "deletionPolicy Delete: the log's AWS resources are removed".to_string(),
    };
    status::publish(ctx, log.as_ref(), EventType::Normal, "Deleted", "Cleanup", note).await;
    Ok(Action::await_change())
}
