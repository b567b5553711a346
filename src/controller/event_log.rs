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
use super::{Context, Error, Result, provision};
use crate::crd::{
    ConditionStatus, ConditionType, DeletionPolicy, EventLog, EventLogPhase, EventLogStatus,
    InClusterReaderStatus, MaterializedView, TableStatus, Tolerant, reasons,
};
use crate::crd::{ResourceKey, Resources};
use crate::plan::log::plan_log;

const KIND: &str = "EventLog";

pub(super) async fn run(ctx: Arc<Context>) {
    let runs = super::watched_apis::<Tolerant<EventLog>>(&ctx)
        .into_iter()
        .map(|logs| {
            let ctx = ctx.clone();
            let views = match logs.namespace() {
                Some(ns) => Api::<Tolerant<MaterializedView>>::namespaced(ctx.client.clone(), ns),
                None => Api::<Tolerant<MaterializedView>>::all(ctx.client.clone()),
            };
            async move {
                let stream = Controller::new(logs, watcher::Config::default().any_semantic())
                    .watches(
                        views,
                        watcher::Config::default().any_semantic(),
                        |view: Tolerant<MaterializedView>| {
                            let ns = view.namespace()?;
                            let log = &view.readable()?.spec.event_log_ref.name;
                            Some(ObjectRef::<Tolerant<EventLog>>::new(log).within(&ns))
                        },
                    )
                    // Objects left alone while the CRDs were not this operator's, reconciled once they are.
                    .reconcile_all_on(ctx.crd_skew.cleared())
                    .run(reconcile_listed, error_policy, ctx)
                    .boxed();
                super::drain(stream, KIND).await;
            }
        });
    futures::future::join_all(runs).await;
}

/// A listed or watched log: reconciled when this operator can read it (see [`Tolerant`]).
async fn reconcile_listed(log: Arc<Tolerant<EventLog>>, ctx: Arc<Context>) -> Result<Action> {
    super::reconcile_tolerant(log, ctx, KIND, reconcile).await
}

#[instrument(skip_all, fields(namespace = log.namespace(), name = log.name_any()))]
async fn reconcile(log: Arc<Tolerant<EventLog>>, ctx: Arc<Context>) -> Result<Action> {
    super::reconcile_with_finalizer(log, ctx, KIND, apply, cleanup).await
}

fn error_policy(log: Arc<Tolerant<EventLog>>, _error: &Error, ctx: Arc<Context>) -> Action {
    super::requeue_after_error(log.as_ref(), &ctx)
}

/// The views that read this log, found through the MaterializedView's selectable field.
async fn views_of(log: &EventLog, ctx: &Context, ns: &str) -> Result<Vec<MaterializedView>> {
    let api: Api<Tolerant<MaterializedView>> = Api::namespaced(ctx.client.clone(), ns);
    let selector = format!("spec.eventLogRef.name={}", log.name_any());
    let list = api
        .list(&ListParams::default().fields(&selector))
        .await
        .map_err(Error::kube(
            "listing the views of",
            format!("EventLog {ns}/{}", log.name_any()),
        ))?;
    Ok(super::readable(list.items))
}

async fn apply(log: Arc<EventLog>, ctx: &Context, ns: &str) -> Result<Action> {
    let views = views_of(&log, ctx, ns).await?;
    let mut plan = plan_log(&ctx.config.cluster_id, &log, &views);
    plan.table.adoption = ctx.config.adoption.allows(ns, &plan.table.name);
    let functions = provision::LogFunctions {
        spec: &log.spec,
        code: ctx.built_in_code().await,
        router: crate::plan::lambdas::router_needed(plan.fan_out, &views),
        permissions_boundary: &ctx.config.permissions_boundary,
    };
    let provisioned = match crate::plan::log::check_table_name(&plan, log.spec.table.name.as_deref()) {
        Ok(()) => provision::apply_log(&ctx.aws, &plan, &functions).await,
        Err(e) => Err(crate::aws::AwsError::refused(
            "CheckTableName",
            &plan.table.name,
            crate::aws::error::RESERVED_NAME,
            e.to_string(),
        )),
    };
    let (phase, health, resources) = conclude(provisioned)?;
    if let Some(r) = &resources {
        record_dead_letters(ctx, ns, &log, r);
    }
    let old = log.status.clone().unwrap_or_default();
    let mut next = next_status(&log, &old, &plan, &views, phase, &health, resources.as_ref());
    next.in_cluster_reader = in_cluster_reader(ctx, next.table.as_ref());
    if next != old {
        status::apply(&api_of(ctx, ns), log.as_ref(), &next).await?;
        publish_changes(ctx, &log, ns, &old, &next, &health).await;
    }
    Ok(match health {
        Health::Progressing { .. } => Action::requeue(std::time::Duration::from_secs(5)),
        _ => Action::requeue(ctx.config.resync),
    })
}

/// What the provisioning came to: the phase, the health and the resources (when AWS answered). Errors: a
/// retryable AWS error, for the controller to retry.
fn conclude(
    provisioned: std::result::Result<provision::LogResources, crate::aws::AwsError>,
) -> Result<(EventLogPhase, Health, Option<provision::LogResources>)> {
    Ok(match provisioned {
        Ok(mut r) if r.problem.is_some() => {
            let problem = r.problem.take();
            let message = problem.as_ref().map(|e| e.to_string()).unwrap_or_default();
            (
                EventLogPhase::Failed,
                Health::Stalled {
                    reason: problem
                        .as_ref()
                        .map_or(reasons::AWS_ERROR, super::status::aws_reason),
                    message: format!("the log's table and topics exist, but its functions do not: {message}"),
                },
                Some(r),
            )
        }
        Ok(r) if r.converged => (
            EventLogPhase::Ready,
            Health::Ready {
                reason: reasons::PROVISIONED,
                message: if r.table.not_applied.is_empty() {
                    "the log table, ingest queue, topics, functions and their roles match the spec".into()
                } else {
                    format!(
                        "the log's resources match the spec, but the adopted table keeps its own settings \
                         (status.table.settingsNotApplied): {}",
                        r.table.not_applied.join("; ")
                    )
                },
            },
            Some(r),
        ),
        Ok(r) => (
            EventLogPhase::Provisioning,
            Health::Progressing {
                reason: reasons::PROVISIONING,
                message: "creating or updating the log's AWS resources".into(),
            },
            Some(r),
        ),
        Err(e) if !e.retryable => (
            EventLogPhase::Failed,
            Health::Stalled { reason: status::aws_reason(&e), message: e.to_string() },
            None,
        ),
        Err(e) => return Err(e.into()),
    })
}

/// The status this reconcile concluded (pure): `old` with the plan, the health and what AWS reported.
fn next_status(
    log: &EventLog,
    old: &EventLogStatus,
    plan: &crate::plan::log::LogPlan,
    views: &[MaterializedView],
    phase: EventLogPhase,
    health: &Health,
    resources: Option<&provision::LogResources>,
) -> EventLogStatus {
    let mut next: EventLogStatus = old.clone();
    let now = status::now();
    let generation = log.metadata.generation;
    next.observed_generation = generation;
    next.phase = Some(phase);
    next.views = views.len() as i32;
    next.fan_out = Some(plan.fan_out);
    let estimate = crate::cost::estimate(log, views, &Default::default(), &Default::default());
    next.cost_estimate = Some(estimate.summary());
    if let Some(r) = resources {
        next.table = Some(TableStatus {
            name: plan.table.name.clone(),
            arn: Some(r.table.arn.clone()),
            stream_arn: r.table.stream_arn.clone(),
            settings_not_applied: r.table.not_applied.clone(),
        });
        next.ingest_queue_url = r.queue.as_ref().map(|q| q.url.clone());
        next.resources = r
            .topics
            .iter()
            .map(|(group, arn)| (ResourceKey::Topic(group.clone()).to_string(), arn.clone()))
            .collect();
        if let Some(q) = &r.queue {
            next.resources.record(ResourceKey::Queue, q.arn.clone());
        }
        next.dead_letters = r.dead_letter_queue.as_ref().and_then(|q| q.messages);
        if let Some(q) = &r.dead_letter_queue {
            next.resources.record(ResourceKey::DeadLetterQueue, q.arn.clone());
        }
        next.router_dead_letters = r.router_failure_queue.as_ref().and_then(|q| q.messages);
        if let Some(q) = &r.router_failure_queue {
            next.resources
                .record(ResourceKey::RouterFailureQueue, q.arn.clone());
        }
        for (role, arn) in &r.roles {
            next.resources
                .record(ResourceKey::Role(role.clone()), arn.clone());
        }
        for (function, (arn, mapping)) in &r.functions {
            next.resources
                .record(ResourceKey::Function(function.clone()), arn.clone());
            if !mapping.is_empty() {
                next.resources
                    .record(ResourceKey::MappingOf(function.clone()), mapping.clone());
            }
        }
    }
    status::set_kstatus(&mut next.conditions, health, generation, &now);
    let provisioned = matches!(health, Health::Ready { .. });
    status::set(
        &mut next.conditions,
        ConditionType::Provisioned,
        if provisioned {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        },
        health.reason(),
        health.message().to_string(),
        generation,
        &now,
    );
    next
}

/// This process's shared reader of the log's stream (see [`crate::runtime::shared_stream`]), if any
/// in-cluster view reads it.
fn in_cluster_reader(ctx: &Context, table: Option<&TableStatus>) -> Option<InClusterReaderStatus> {
    let stats = ctx.shared_streams.reader(table?.stream_arn.as_deref()?)?;
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    Some(InClusterReaderStatus {
        shards: count(stats.shards),
        joined: count(stats.joined),
        catching_up: count(stats.waiting + stats.reading),
    })
}

/// The log's dead-letter gauges, from what SQS reported in this pass.
fn record_dead_letters(ctx: &Context, ns: &str, log: &EventLog, r: &provision::LogResources) {
    let labels = crate::metrics::LogLabels { namespace: ns.to_string(), event_log: log.name_any() };
    if let Some(q) = &r.dead_letter_queue {
        ctx.metrics
            .dead_letters
            .get_or_create(&labels)
            .set(q.messages.unwrap_or(0));
    }
    if let Some(q) = &r.router_failure_queue {
        ctx.metrics
            .router_dead_letters
            .get_or_create(&labels)
            .set(q.messages.unwrap_or(0));
    }
}

/// The Events a status change calls for: more dead letters, and a changed phase (or a new reason to be
/// `Failed`).
async fn publish_changes(
    ctx: &Context,
    log: &EventLog,
    ns: &str,
    old: &EventLogStatus,
    next: &EventLogStatus,
    health: &Health,
) {
    let phase = next.phase.unwrap_or(EventLogPhase::Pending);
    if let Some(n) = next.dead_letters.filter(|n| *n > old.dead_letters.unwrap_or(0)) {
        let note = format!(
            "the ingest dead-letter queue holds {n} message(s) (was {}): records the writer failed \
             spec.ingest.maxReceiveCount times (its log says why). Fix the cause, then move them back with \
             `kubectl kappa redrive {} -n {ns}` (SQS's redrive of {})",
            old.dead_letters.unwrap_or(0),
            log.name_any(),
            next.resources
                .arn(&ResourceKey::DeadLetterQueue)
                .cloned()
                .unwrap_or_default()
        );
        status::publish(ctx, log, EventType::Warning, "DeadLetters", "DeadLettered", note).await;
    }
    if let Some(n) = next
        .router_dead_letters
        .filter(|n| *n > old.router_dead_letters.unwrap_or(0))
    {
        let note = format!(
            "the router's failure queue {} holds {n} message(s) (was {}): batches of log stream records the \
             router failed to publish after its retries (each message names the shard and sequence numbers), \
             so no Lambda view on the Sns fan-out received them. The records are still in the log, the \
             canonical store; fix the cause (the router's logs say why), then re-project each Lambda view of \
             the log (`kubectl kappa replay <view>`) and purge the queue",
            next.resources
                .arn(&ResourceKey::RouterFailureQueue)
                .cloned()
                .unwrap_or_default(),
            old.router_dead_letters.unwrap_or(0),
        );
        status::publish(
            ctx,
            log,
            EventType::Warning,
            "RouterDeadLetters",
            "DeadLettered",
            note,
        )
        .await;
    }
    // An event on every change of phase, and on a new reason to be Failed (e.g. a table setting
    // refused while another problem was reported).
    let ready_reason = |s: &EventLogStatus| {
        s.conditions
            .iter()
            .find(|c| c.is(ConditionType::Ready))
            .map(|c| c.reason.clone())
    };
    if old.phase != next.phase || (phase == EventLogPhase::Failed && ready_reason(old) != ready_reason(next))
    {
        let note = format!("phase {:?} → {phase:?}: {}", old.phase, health.message());
        let type_ = if phase == EventLogPhase::Failed {
            EventType::Warning
        } else {
            EventType::Normal
        };
        status::publish(ctx, log, type_, health.reason(), "PhaseChanged", note).await;
    }
}

fn api_of(ctx: &Context, ns: &str) -> Api<EventLog> {
    Api::namespaced(ctx.client.clone(), ns)
}

async fn cleanup(log: Arc<EventLog>, ctx: &Context, ns: &str) -> Result<Action> {
    let mut next = log.status.clone().unwrap_or_default();
    if next.phase != Some(EventLogPhase::Deleting) {
        next.phase = Some(EventLogPhase::Deleting);
        status::apply(&api_of(ctx, ns), log.as_ref(), &next).await?;
    }
    let note = match log.spec.deletion_policy {
        DeletionPolicy::Retain => {
            if log.spec.table.adopt_existing {
                // The adopter is gone: the table may be adopted again (where the administrator allows).
                let plan = plan_log(&ctx.config.cluster_id, &log, crate::plan::NO_VIEWS);
                crate::aws::dynamodb::release_adopted_table(&ctx.aws.dynamodb, &plan.table.name, &plan.owner)
                    .await
                    .map_err(Error::from)?;
            }
            "deletionPolicy Retain: the log table, queue and topics are kept".to_string()
        }
        DeletionPolicy::Delete => {
            // Every topic group the log could have had, whatever the fan-out was.
            let mut all_topics = log.as_ref().clone();
            all_topics.spec.fan_out.mode = crate::crd::FanOutMode::Sns;
            let plan = plan_log(&ctx.config.cluster_id, &all_topics, crate::plan::NO_VIEWS);
            let deleted = provision::delete_log(&ctx.aws, &plan).await?;
            format!(
                "deletionPolicy Delete: deleted {}",
                if deleted.is_empty() {
                    "nothing".into()
                } else {
                    deleted.join(", ")
                }
            )
        }
    };
    status::publish(ctx, log.as_ref(), EventType::Normal, "Deleted", "Cleanup", note).await;
    Ok(Action::await_change())
}
