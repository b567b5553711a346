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
use super::{Context, Error, Result, in_cluster, validate, versions};
use crate::aws::{Convergence, dynamodb, iam};
use crate::crd::{
    DeletionPolicy, EventLog, MaterializedView, MaterializedViewStatus, ProjectorRuntime, Tolerant,
    ViewPhase, condition_types as types, reasons,
};
use crate::plan::log::{plan_log, scope_of_arn};
use crate::plan::names::NameKind;
use crate::plan::view::plan_view;
use crate::plan::view::projector_role as projector_role_plan;

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
            async move {
                let controller = Controller::new(views, watcher::Config::default().any_semantic());
                let store = controller.store();
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
                    .run(reconcile_listed, error_policy, ctx)
                    .boxed();
                super::drain(stream, KIND).await;
            }
        });
    futures::future::join_all(runs).await;
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

/// What this reconcile concluded, before it is written to the status.
struct Outcome {
    phase: ViewPhase,
    health: Health,
    /// The views table, once it exists.
    table: Option<versions::ActiveTable>,
    /// The in-cluster runtime's view of the backfill and live path, when the view runs there.
    in_cluster: Option<in_cluster::InClusterOutcome>,
    /// The view's versions.
    versions: Option<VersionsSummary>,
    /// Where subscribers connect (`spec.subscribers`).
    push: Option<crate::crd::PushStatus>,
}

struct VersionsSummary {
    versions: Vec<crate::crd::ViewVersion>,
    active: Option<i64>,
    latest: i64,
    rebuild: Option<versions::Rebuild>,
}

async fn apply(view: Arc<MaterializedView>, ctx: &Context, ns: &str) -> Result<Action> {
    // Read tolerantly: a log this operator version cannot read stalls its views with the field named.
    let logs: Api<Tolerant<EventLog>> = Api::namespaced(ctx.client.clone(), ns);
    let log_name = &view.spec.event_log_ref.name;
    let found = logs
        .get_opt(log_name)
        .await
        .map_err(Error::kube("reading", format!("EventLog {ns}/{log_name}")))?;
    let (log, unreadable) = match found.map(|t| (t.object, t.status_dropped)) {
        None => (None, None),
        Some((Ok(log), None)) => (Some(log), None),
        Some((Ok(_), Some(why)) | (Err(why), _)) => (None, Some(why)),
    };
    let outcome = match log {
        None if unreadable.is_some() => Outcome {
            phase: ViewPhase::Pending,
            health: Health::Stalled {
                reason: reasons::EVENT_LOG_UNREADABLE,
                message: format!(
                    "spec.eventLogRef.name: EventLog {ns}/{log_name} cannot be read by this operator version ({}); \
                     its Warning Event says how to fix it; the view waits",
                    unreadable.as_ref().map(ToString::to_string).unwrap_or_default()
                ),
            },
            table: None,
            in_cluster: None,
            versions: None,
            push: None,
        },
        None => Outcome {
            phase: ViewPhase::Pending,
            health: Health::Stalled {
                reason: reasons::EVENT_LOG_NOT_FOUND,
                message: format!(
                    "spec.eventLogRef.name: EventLog {log_name:?} does not exist in namespace {ns}: create it, or \
                     create a view that refers to an existing EventLog (the field is immutable)"
                ),
            },
            table: None,
            in_cluster: None,
            versions: None,
            push: None,
        },
        Some(log) => {
            let mut problems = validate::view_against_log(&view, &log);
            if problems.is_empty() {
                problems.extend(validate::prefix_overlap(&view, &views_in(ctx, ns).await?));
            }
            if problems.is_empty() {
                provision(&view, &log, ctx, ns).await?
            } else {
                Outcome {
                    phase: ViewPhase::Pending,
                    health: Health::Stalled {
                        reason: reasons::INVALID_SPEC,
                        message: problems.join("; "),
                    },
                    table: None,
                    in_cluster: None,
                    versions: None,
                    push: None,
                }
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

/// The namespace's views, to plan a shared table with its sharers: those this operator can read (an
/// unreadable one is named in a Warning Event of its own by its reconcile).
async fn views_in(ctx: &Context, ns: &str) -> Result<Vec<MaterializedView>> {
    let api: Api<Tolerant<MaterializedView>> = Api::namespaced(ctx.client.clone(), ns);
    let list = api
        .list(&Default::default())
        .await
        .map_err(Error::kube("listing the views of namespace", ns))?;
    Ok(super::readable(list.items))
}

/// Provisions the view's table and role, then runs it: on the in-cluster runtime (the operator reads the
/// stream) or on Lambda (the projector function and its subscriptions or mapping); both backfill.
/// Push of the view's changes to subscribers (`spec.subscribers`): on the in-cluster runtime, the
/// operator's own endpoint fed from the active version's table; on the Lambda runtime, the views table's
/// API Gateway WebSocket API with the built-in connections and notifier functions. `None` until clients
/// can connect.
async fn push_path(
    view: &MaterializedView,
    ctx: &Context,
    ns: &str,
    table: Option<&versions::ActiveTable>,
    all: &[MaterializedView],
) -> std::result::Result<Option<crate::crd::PushStatus>, crate::aws::AwsError> {
    let name = view.name_any();
    let Some(table) = table.filter(|_| view.spec.subscribers.is_some()) else {
        ctx.push.forget_view(ns, &name);
        if view.spec.subscribers.is_none() {
            retire_aws_push(view, ctx, all).await?;
        }
        return Ok(None);
    };
    let Some(stream) = table.stream_arn.as_deref() else {
        return Ok(None);
    };
    match view.spec.projector.runtime {
        ProjectorRuntime::InCluster => {
            retire_aws_push(view, ctx, all).await?;
            let prefix = table.key_prefix.as_deref().unwrap_or_default();
            let ready = ctx
                .push
                .serve_view(&ctx.aws.streams, ns, &name, &table.name, prefix, stream);
            Ok(ready.then(|| crate::crd::PushStatus {
                url: Some(ctx.push.url(ns)),
                api_id: None,
            }))
        }
        ProjectorRuntime::Lambda => {
            ctx.push.forget_view(ns, &name);
            let Some(scope) = scope_of_arn(&table.arn) else {
                return Ok(None);
            };
            let namespace_uid = namespace_uid_for_aws(ctx, ns).await?;
            let plan = aws_push_plan(
                view,
                ctx,
                all,
                &table.name,
                table.key_prefix.as_deref(),
                &scope,
                namespace_uid.as_deref(),
            );
            let code = ctx.built_in_code().await.map_err(|m| {
                crate::aws::AwsError::permanent("CreateFunction", &plan.connections_function, m)
            })?;
            let got = super::push::ensure_aws_push(
                &ctx.aws,
                &plan,
                &code,
                stream,
                &ctx.config.permissions_boundary,
            )
            .await?;
            Ok(got.converged.then_some(crate::crd::PushStatus {
                url: Some(got.url),
                api_id: Some(got.api_id),
            }))
        }
    }
}

/// [`Context::namespace_uid`] for the steps whose errors are AWS errors (a failed read is retried).
async fn namespace_uid_for_aws(
    ctx: &Context,
    ns: &str,
) -> std::result::Result<Option<String>, crate::aws::AwsError> {
    ctx.namespace_uid(ns)
        .await
        .map_err(|e| crate::aws::AwsError::new("GetNamespace", ns, "", &e.to_string()))
}

/// The push plan of the views table `table`: the namespace's Lambda-runtime views on it with subscribers
/// (`this` view at `key_prefix`, the others at the prefix their status reports).
fn aws_push_plan(
    this: &MaterializedView,
    ctx: &Context,
    all: &[MaterializedView],
    table: &str,
    key_prefix: Option<&str>,
    scope: &crate::plan::iam::AwsScope,
    namespace_uid: Option<&str>,
) -> crate::plan::push::PushPlan {
    let name = this.name_any();
    let mut subscribers: Vec<(String, String)> = all
        .iter()
        .filter(|v| v.name_any() != name && v.metadata.deletion_timestamp.is_none())
        .filter(|v| v.spec.subscribers.is_some() && v.spec.projector.runtime == ProjectorRuntime::Lambda)
        .filter_map(|v| {
            let s = v.status.as_ref()?;
            (s.table_name.as_deref() == Some(table))
                .then(|| (v.name_any(), s.key_prefix.clone().unwrap_or_default()))
        })
        .collect();
    if this.spec.subscribers.is_some() && this.metadata.deletion_timestamp.is_none() {
        subscribers.push((name, key_prefix.unwrap_or_default().to_string()));
    }
    subscribers.sort();
    let mut plan = plan_view(&ctx.config.cluster_id, this, all).in_namespace(namespace_uid);
    plan.table.name = table.to_string();
    crate::plan::push::plan_push(&plan, &subscribers, scope)
}

/// Removes the views table's push stack when `view` had one (`status.push.apiId`) and no other view of the
/// table still has subscribers.
async fn retire_aws_push(
    view: &MaterializedView,
    ctx: &Context,
    all: &[MaterializedView],
) -> std::result::Result<(), crate::aws::AwsError> {
    let status = view.status.clone().unwrap_or_default();
    if status.push.as_ref().and_then(|p| p.api_id.as_ref()).is_none() {
        return Ok(());
    }
    let (Some(table), Some(arn)) = (status.table_name.clone(), status.resources.get("viewsTable")) else {
        return Ok(());
    };
    let Some(scope) = scope_of_arn(arn) else {
        return Ok(());
    };
    let mut gone = view.clone();
    gone.spec.subscribers = None;
    let namespace_uid = namespace_uid_for_aws(ctx, &view.namespace().unwrap_or_default()).await?;
    let plan = aws_push_plan(&gone, ctx, all, &table, None, &scope, namespace_uid.as_deref());
    if !plan.view_routes.views.is_empty() {
        return Ok(());
    }
    let deleted = super::push::delete_aws_push(&ctx.aws, &plan).await?;
    if !deleted.is_empty() {
        status::publish(
            ctx,
            view,
            EventType::Normal,
            "PushRemoved",
            "Cleanup",
            format!(
                "no view of table {table} has subscribers any more: deleted {}",
                deleted.join(", ")
            ),
        )
        .await;
    }
    Ok(())
}

async fn provision(view: &MaterializedView, log: &EventLog, ctx: &Context, ns: &str) -> Result<Outcome> {
    let all = views_in(ctx, ns).await?;
    let mut run = versions::run(view, log, ctx, ns, &all).await?;
    let push = match push_path(view, ctx, ns, run.table.as_ref(), &all).await {
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

/// One version of a view on the Lambda runtime, once its table exists: its projector role, function and
/// live path (subscriptions or mapping), then the same backfill as the in-cluster runtime.
#[allow(clippy::too_many_arguments)]
pub(super) async fn lambda_version(
    view: &MaterializedView,
    target: &in_cluster::Target,
    log: &EventLog,
    ctx: &Context,
    ns: &str,
    plan: &crate::plan::view::ViewPlan,
    table_arn: &str,
    all: &[MaterializedView],
) -> Result<in_cluster::InClusterOutcome> {
    let failed = |e: crate::aws::AwsError| -> Result<in_cluster::InClusterOutcome> {
        match e.retryable {
            true => Err(e.into()),
            false => Ok(versions::failed_outcome(&e)),
        }
    };
    let mut resources = std::collections::BTreeMap::new();
    let mut projector_role = None;
    if let Some(scope) = scope_of_arn(table_arn) {
        let readers: Vec<MaterializedView> = all
            .iter()
            .filter(|v| v.spec.event_log_ref.name == view.spec.event_log_ref.name)
            .cloned()
            .collect();
        let log_plan = plan_log(&ctx.config.cluster_id, log, &readers);
        if let Some(role) = projector_role_plan(view, plan, &log_plan, &scope) {
            let boundary = scope.policy_arn(&ctx.config.permissions_boundary);
            match iam::ensure_role(&ctx.aws.iam, &role, &boundary).await {
                Ok((arn, convergence)) => {
                    resources.insert("role/projector".to_string(), arn.clone());
                    if convergence != Convergence::Converged {
                        let mut run = in_cluster::provisioning(format!(
                            "creating or updating views table {} and the projector role",
                            plan.table.name
                        ));
                        run.resources = resources;
                        return Ok(run);
                    }
                    projector_role = Some(arn);
                }
                Err(e) => return failed(e),
            }
        }
    }
    // What the status shows of this version's live path, to tell a subscription re-created from a new one.
    let recorded = view
        .status
        .as_ref()
        .and_then(|s| s.versions.iter().find(|v| v.version == target.version))
        .map(|v| v.resources.clone())
        .unwrap_or_default();
    let live = match projector_live_path(
        view,
        log,
        ctx,
        plan,
        projector_role.as_deref(),
        table_arn,
        &recorded,
    )
    .await
    {
        Ok(live) => live,
        Err(e) => return failed(e),
    };
    if let Some(message) = &live.no_destination {
        tracing::warn!(view = %view.name_any(), "{message}");
        status::publish(
            ctx,
            view,
            EventType::Warning,
            reasons::NO_FAILURE_DESTINATION,
            "Provision",
            message.clone(),
        )
        .await;
    }
    let key_prefix = plan.key_prefix.clone().unwrap_or_default();
    // A gap still to close (not yet recorded as a backfill attempt, nor reported for a view without one).
    let gap = match live.gap {
        Some(gap) => in_cluster::unrecorded_gap(view, ctx, gap).await,
        None => None,
    };
    let mut run = in_cluster::lambda_view(
        view,
        target,
        log,
        ctx,
        ns,
        &plan.table.name,
        &key_prefix,
        live.ready,
        gap.clone(),
    )
    .await;
    resources.extend(live.resources);
    if let Some(gap) = &gap {
        let reason = in_cluster::gap_reason(gap);
        if run.backfill.as_ref().and_then(|b| b.reason.as_deref()) != Some(reason.as_str()) {
            // Not recorded in this pass (the live path still converging): the status keeps the subscription
            // ARNs it had, so the next pass finds the gap again.
            for (key, arn) in recorded.iter().filter(|(k, _)| k.starts_with("subscription/")) {
                resources.insert(key.clone(), arn.clone());
            }
        }
    }
    run.resources = resources;
    run.dead_letters = live.dead_letters;
    Ok(run)
}

/// For a view being deleted with the last use of its shared views table: the other views' retained
/// storage still in the table (owner items of other uids), which deleting the table would take with it.
async fn retained_in_shared_table(
    view: &MaterializedView,
    ctx: &Context,
    plan: &crate::plan::view::ViewPlan,
) -> std::result::Result<Option<String>, crate::aws::AwsError> {
    if !plan.shared {
        return Ok(None);
    }
    let uid = view.metadata.uid.clone().unwrap_or_default();
    let others = match crate::aws::view_storage::other_owners(&ctx.aws.dynamodb, &plan.table.name, &uid).await
    {
        Ok(others) => others,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok((!others.is_empty()).then(|| {
        let prefixes: Vec<String> = others.iter().map(|(p, _)| format!("{p:?}")).collect();
        format!("items under key prefix(es) {}", prefixes.join(", "))
    }))
}

/// Removes what an earlier view of this name (uid `earlier`, deleted with `deletionPolicy: Retain`) left
/// that may still write into the storage this view adopts: its projector function (when it still carries
/// the earlier uid), its event source mappings, its subscriptions to the log's topics and its role.
/// Returns what was removed; nothing of another owner is touched.
pub(super) async fn remove_earlier_projector(
    view: &MaterializedView,
    log: &EventLog,
    ctx: &Context,
    plan: &crate::plan::view::ViewPlan,
    earlier: &str,
    all: &[MaterializedView],
) -> std::result::Result<Vec<String>, crate::aws::AwsError> {
    use crate::aws::{lambda, subscriptions};
    let previous = plan.owner.clone().with_uid(Some(earlier));
    let name = crate::plan::lambdas::projector_name(plan);
    let mut removed = Vec::new();
    // Only the earlier view's function (or none left): never this view's own.
    let theirs = match ctx.aws.lambda.get_function().function_name(&name).send().await {
        Ok(out) => {
            let tags: std::collections::BTreeMap<String, String> = out
                .tags()
                .map(|t| t.clone().into_iter().collect())
                .unwrap_or_default();
            previous.owns(&tags)
        }
        Err(e) => {
            let e = crate::aws::from_sdk("GetFunction", &name)(e);
            match e.is_not_found() {
                true => false,
                false => return Err(e),
            }
        }
    };
    if !theirs {
        return Ok(removed);
    }
    if let Some(scope) = log
        .status
        .as_ref()
        .and_then(|s| s.table.as_ref())
        .and_then(|t| t.arn.as_deref())
        .and_then(scope_of_arn)
    {
        let readers: Vec<MaterializedView> = all
            .iter()
            .filter(|v| v.spec.event_log_ref.name == view.spec.event_log_ref.name)
            .cloned()
            .collect();
        let function_arn = scope.function_arn(&name);
        for topic in plan_log(&ctx.config.cluster_id, log, &readers).topics {
            let n = subscriptions::delete_subscriptions(
                &ctx.aws.sns,
                &scope.topic_arn(&topic.name),
                &function_arn,
            )
            .await?;
            if n > 0 {
                removed.push(format!("subscription to {}", topic.name));
            }
        }
    }
    let mappings = lambda::delete_mappings(&ctx.aws.lambda, &name).await?;
    if mappings > 0 {
        removed.push(format!("{mappings} mapping(s)"));
    }
    if lambda::delete_function_if_owned(&ctx.aws.lambda, &name, &previous).await? {
        removed.push(format!("function {name}"));
    }
    let queue = plan.failure_queue().name;
    if crate::aws::sqs::delete_queue_if_owned(&ctx.aws.sqs, &queue, &previous).await? {
        removed.push(format!("failure queue {queue}"));
    }
    let role = plan
        .owner
        .resource_name(&plan.projector_role_name(), NameKind::Role);
    if iam::delete_role_if_owned(&ctx.aws.iam, &role, &previous).await? {
        removed.push(format!("role {role}"));
    }
    Ok(removed)
}

/// The projector Lambda of a view on the Lambda runtime and its live path: SNS subscriptions with filter
/// policies (`Sns` fan-out) or a stream mapping with filter criteria (`Direct`).
struct LivePath {
    /// Everything exists as planned.
    ready: bool,
    resources: std::collections::BTreeMap<String, String>,
    /// The messages in the version's failure queue (records the projector could not process).
    dead_letters: Option<i64>,
    /// Records the projector may have missed: an SNS subscription the status recorded was gone and is
    /// re-created (SNS keeps nothing for a subscription that does not exist), described for the backfill
    /// attempt that closes the gap.
    gap: Option<String>,
    /// Why a user's function (`functionArn`) is mapped without the view's failure queue, with the fix.
    no_destination: Option<String>,
}

/// The version's failure queue (see [`crate::plan::view::ViewPlan::failure_queue`]), created first: the
/// role's policy, the mapping's destination and the subscriptions' redrive policy name it. With `Sns`
/// fan-out its access policy lets the view's topics (`topic_arns`) dead-letter into it.
async fn ensure_failure_queue(
    ctx: &Context,
    plan: &crate::plan::view::ViewPlan,
    table_arn: &str,
    topic_arns: &[String],
) -> std::result::Result<crate::aws::sqs::QueueState, crate::aws::AwsError> {
    let mut queue = plan.failure_queue();
    if let Some(scope) = scope_of_arn(table_arn) {
        // No topic (`Direct` fan-out, or none yet): no policy, so a topic of an earlier `Sns` fan-out may no
        // longer send to the queue.
        let policy = crate::plan::iam::failure_queue_policy(&scope.queue_arn(&queue.name), topic_arns)
            .map(|p| p.to_string())
            .unwrap_or_default();
        queue.attributes.insert("Policy".into(), policy);
    }
    crate::aws::sqs::ensure_queue(&ctx.aws.sqs, &queue, None).await
}

/// Ensures the version's live path; `recorded`: the version's resources as its status shows them (a
/// subscription ARN there that is not the one found now was deleted outside the operator: a gap). A
/// `Direct` mapping re-created reads the stream from `TRIM_HORIZON` again, so it leaves no gap.
async fn projector_live_path(
    view: &MaterializedView,
    log: &EventLog,
    ctx: &Context,
    plan: &crate::plan::view::ViewPlan,
    role_arn: Option<&str>,
    table_arn: &str,
    recorded: &std::collections::BTreeMap<String, String>,
) -> std::result::Result<LivePath, crate::aws::AwsError> {
    use crate::aws::{lambda, subscriptions};
    use crate::plan::lambdas;
    let mut resources = std::collections::BTreeMap::new();
    let log_status = log.status.clone().unwrap_or_default();
    let function_name = lambdas::projector_name(plan);
    let subscribed = lambdas::projector_subscriptions(view, &log.spec);
    let topic_arns: Vec<String> = match log_status.fan_out.as_deref() {
        Some("Sns") => subscribed
            .keys()
            .filter_map(|group| log_status.resources.get(&format!("topic/{group}")).cloned())
            .collect(),
        _ => Vec::new(),
    };
    let failures = ensure_failure_queue(ctx, plan, table_arn, &topic_arns).await?;
    resources.insert("failureQueue".into(), failures.arn.clone());
    let dead_letters = failures.messages;
    // How the mapping names the function: the ARN of a user's function, the name of ours.
    let mut function_ref = function_name.clone();
    let function_arn = match view
        .spec
        .projector
        .code
        .as_ref()
        .and_then(|c| c.function_arn.clone())
    {
        Some(arn) => {
            lambda::check_custom_function(&ctx.aws.lambda, &arn, &plan.owner).await?;
            function_ref = arn.clone();
            arn
        }
        None => {
            let Some(role_arn) = role_arn else {
                return Ok(LivePath {
                    ready: false,
                    resources,
                    dead_letters,
                    gap: None,
                    no_destination: None,
                });
            };
            let code = ctx
                .built_in_code()
                .await
                .map_err(|m| crate::aws::AwsError::permanent("CreateFunction", &function_name, m))?;
            let log_table = log_status.table.as_ref().map_or("", |t| t.name.as_str());
            let function = lambdas::projector_function(view, plan, &log.spec, log_table, role_arn, &code)
                .map_err(|m| crate::aws::AwsError::permanent("CreateFunction", &function_name, m))?;
            let Some(function) = function else {
                return Ok(LivePath {
                    ready: false,
                    resources,
                    dead_letters,
                    gap: None,
                    no_destination: None,
                });
            };
            let (arn, convergence) = lambda::ensure_function(&ctx.aws.lambda, &function).await?;
            resources.insert("function/projector".into(), arn.clone());
            if convergence != Convergence::Converged {
                return Ok(LivePath {
                    ready: false,
                    resources,
                    dead_letters,
                    gap: None,
                    no_destination: None,
                });
            }
            arn
        }
    };
    // A user's function (`functionArn`) keeps its own failure handling: its role may not send to our
    // queue, and its configuration is the user's. SNS's redrive needs only the queue's policy.
    let ours = function_ref == function_name;
    let mut ready = true;
    let mut gaps = Vec::new();
    let mut no_destination = None;
    match log_status.fan_out.as_deref() {
        Some("Sns") => {
            if ours {
                let async_failures = lambdas::projector_async_failures(&function_name, &failures.arn);
                let c = lambda::ensure_async_failures(&ctx.aws.lambda, &async_failures).await?;
                ready &= c == Convergence::Converged;
            }
            for (group, policy) in subscribed {
                let Some(topic) = log_status.resources.get(&format!("topic/{group}")) else {
                    ready = false;
                    continue;
                };
                let c1 = subscriptions::allow_sns_invoke(&ctx.aws.lambda, &function_arn, topic).await?;
                let (arn, c2) = subscriptions::ensure_subscription(
                    &ctx.aws.sns,
                    topic,
                    &function_arn,
                    &policy,
                    Some(&failures.arn),
                )
                .await?;
                ready &= c1 == Convergence::Converged && c2 == Convergence::Converged;
                let key = format!("subscription/{group}");
                if let Some(before) = recorded.get(&key).filter(|before| **before != arn) {
                    tracing::warn!(view = %view.name_any(), %before, now = %arn, "a projector subscription was re-created");
                    gaps.push(subscription_gap(before, &arn));
                }
                resources.insert(key, arn);
            }
        }
        Some("Direct") => match log_status.table.as_ref().and_then(|t| t.stream_arn.clone()) {
            Some(stream) => {
                let mut mapping =
                    lambdas::projector_mapping(view, &log.spec, &function_ref, &stream, &failures.arn);
                let (id, c) = match lambda::ensure_mapping(&ctx.aws.lambda, &mapping).await {
                    // A user's function whose role may not send to the view's failure queue: mapped
                    // without the destination (the view works), and the user is told how to grant it.
                    Err(e) if !ours && lambda::is_destination_refused(&e) => {
                        mapping.on_failure = None;
                        no_destination = Some(format!(
                            "the execution role of spec.projector.code.functionArn {function_ref} may not send to \
                             the view's failure queue {queue}, so its stream mapping has no on-failure \
                             destination: records the function still fails after the mapping's retries are \
                             dropped. Grant the role sqs:SendMessage on {queue}",
                            queue = failures.arn
                        ));
                        lambda::ensure_mapping(&ctx.aws.lambda, &mapping).await?
                    }
                    other => other?,
                };
                ready &= c == Convergence::Converged;
                resources.insert("mapping".into(), id);
            }
            None => ready = false,
        },
        _ => ready = false,
    }
    Ok(LivePath {
        ready,
        resources,
        dead_letters,
        gap: (!gaps.is_empty()).then(|| gaps.join("; ")),
        no_destination,
    })
}

/// The gap of a projector subscription `before` found gone and re-created as `now`.
fn subscription_gap(before: &str, now: &str) -> String {
    format!(
        "the projector's SNS subscription {before} was deleted outside the operator and re-created as {now}; \
         records published while it was missing never reached the projector"
    )
}

/// Removes a Lambda view's live path and function (subscriptions, mappings, then the function).
pub(super) async fn delete_projector(
    resources: &std::collections::BTreeMap<String, String>,
    ctx: &Context,
    plan: &crate::plan::view::ViewPlan,
) -> std::result::Result<Vec<String>, crate::aws::AwsError> {
    use crate::aws::{lambda, subscriptions};
    let mut deleted = Vec::new();
    let name = crate::plan::lambdas::projector_name(plan);
    let function_arn = resources
        .get("function/projector")
        .cloned()
        .unwrap_or_else(|| name.clone());
    for (key, arn) in resources {
        if key.starts_with("subscription/") {
            // The topic is the subscription ARN without its last segment.
            if let Some((topic, _)) = arn.rsplit_once(':') {
                subscriptions::delete_subscriptions(&ctx.aws.sns, topic, &function_arn).await?;
                deleted.push(format!("subscription {arn}"));
            }
        }
    }
    let mappings = lambda::delete_mappings(&ctx.aws.lambda, &name).await?;
    if mappings > 0 {
        deleted.push(format!("{mappings} mapping(s)"));
    }
    if lambda::delete_function_if_owned(&ctx.aws.lambda, &name, &plan.owner).await? {
        deleted.push(format!("function {name}"));
    }
    // After the function and its subscriptions: nothing sends to it any more.
    let queue = plan.failure_queue().name;
    if crate::aws::sqs::delete_queue_if_owned(&ctx.aws.sqs, &queue, &plan.owner).await? {
        deleted.push(format!("failure queue {queue}"));
    }
    Ok(deleted)
}

async fn write_status(view: &MaterializedView, ctx: &Context, ns: &str, outcome: &Outcome) -> Result<()> {
    let old = view.status.clone().unwrap_or_default();
    let mut next: MaterializedViewStatus = old.clone();
    let now = status::now();
    let generation = view.metadata.generation;
    next.observed_generation = generation;
    next.phase = Some(outcome.phase);
    if let Some(t) = &outcome.table {
        next.table_name = Some(t.name.clone());
        next.key_prefix = t.key_prefix.clone();
        next.resources.insert("viewsTable".into(), t.arn.clone());
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
        match &v.rebuild {
            // A view that was never rebuilt carries no Rebuilding condition.
            Some(r) if !(v.latest <= 1 && r.reason == reasons::PROMOTED) => {
                status::set(
                    &mut next.conditions,
                    types::REBUILDING,
                    r.status,
                    r.reason,
                    &r.message,
                    generation,
                    &now,
                );
                // kstatus: a rebuild in progress is reconciling; a failed one needs a change from the user
                // (the active version stays Ready and serving).
                if matches!(outcome.health, Health::Ready { .. }) {
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
                        types::RECONCILING,
                        flag(reconciling),
                        r.reason,
                        if reconciling { &r.message } else { "" },
                        generation,
                        &now,
                    );
                    status::set(
                        &mut next.conditions,
                        types::STALLED,
                        flag(stalled),
                        r.reason,
                        if stalled { &r.message } else { "" },
                        generation,
                        &now,
                    );
                }
            }
            _ => next.conditions.retain(|c| c.type_ != types::REBUILDING),
        }
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
        let (complete, reason) = match run.backfill_complete {
            true => (crate::crd::ConditionStatus::True, reasons::BACKFILL_COMPLETE),
            false => (crate::crd::ConditionStatus::False, reasons::BACKFILLING),
        };
        status::set(
            &mut next.conditions,
            types::BACKFILL_COMPLETE,
            complete,
            reason,
            "",
            generation,
            &now,
        );
        status::set(
            &mut next.conditions,
            types::PROVISIONED,
            crate::crd::ConditionStatus::True,
            reasons::PROVISIONED,
            "views table, projector and live path ready",
            generation,
            &now,
        );
    } else if !matches!(outcome.health, Health::Ready { .. }) {
        let reason = match outcome.health {
            Health::Stalled { reason, .. } => reason,
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
    if let Some(n) = next.dead_letters.filter(|n| *n > old.dead_letters.unwrap_or(0)) {
        let note = format!(
            "the projector's failure queue {} holds {n} message(s) (was {}): log records the projector failed \
             after its retries (each message names them: a stream batch's shard and sequence numbers, or the \
             SNS event). The records are still in the log, the canonical store; fix the cause (the projector's \
             logs say why), then re-project the view from the log (`kubectl kappa replay {}`) and purge the \
             queue",
            next.resources.get("failureQueue").cloned().unwrap_or_default(),
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

/// `status.recordErrors` from what the backfill and the live path left out; a Warning Event and the
/// metric `kappa_view_record_errors_total` when the count grew.
async fn record_errors(
    view: &MaterializedView,
    ctx: &Context,
    ns: &str,
    next: &mut crate::crd::MaterializedViewStatus,
    run: &super::in_cluster::InClusterOutcome,
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
        let labels = crate::metrics::ViewLabels {
            namespace: ns.to_string(),
            view: view.name_any(),
        };
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

async fn cleanup(view: Arc<MaterializedView>, ctx: &Context, ns: &str) -> Result<Action> {
    let deleting = Outcome {
        phase: ViewPhase::Deleting,
        health: Health::Progressing {
            reason: reasons::DELETING,
            message: "cleaning up".into(),
        },
        table: None,
        in_cluster: None,
        versions: None,
        push: None,
    };
    ctx.push.forget_view(ns, &view.name_any());
    let key = crate::runtime::checkpoints::view_key(&view);
    let recorded = view.status.clone().unwrap_or_default().versions;
    ctx.runtime.stop(&key);
    for v in &recorded {
        ctx.runtime
            .stop(&crate::plan::versions::runtime_key(&key, v.version));
    }
    write_status(&view, ctx, ns, &deleting).await?;
    // Backfill Jobs go with the view whatever its deletionPolicy (they are not its AWS resources).
    for v in &recorded {
        if let Some(b) = v.backfill.as_ref().filter(|b| b.attempt > 0) {
            let base = crate::plan::versions::checkpoint_base(&view.name_any(), v.version);
            in_cluster::delete_backfill_job(ctx, ns, &base, b.attempt).await;
        }
    }
    if let Some(b) = view
        .status
        .as_ref()
        .and_then(|s| s.backfill.as_ref())
        .filter(|b| b.attempt > 0)
    {
        in_cluster::delete_backfill_job(ctx, ns, &view.name_any(), b.attempt).await;
    }
    let note = match view.spec.deletion_policy {
        DeletionPolicy::Retain => {
            let kept: Vec<String> = recorded
                .iter()
                .filter_map(|v| {
                    let table = v.table_name.as_deref()?;
                    Some(match v.key_prefix.as_deref() {
                        Some(p) => format!("key prefix {p:?} of views table {table}"),
                        None => format!("views table {table}"),
                    })
                })
                .collect();
            format!(
                "deletionPolicy Retain: the view's AWS resources are kept, its items ({}) owned by no view; a view \
                 created again under this name does not serve them: it is Stalled ({}) until its \
                 spec.store.adopt: true deletes them and rebuilds",
                match kept.is_empty() {
                    true => "none written yet".to_string(),
                    false => kept.join(", "),
                },
                reasons::STORAGE_RETAINED
            )
        }
        DeletionPolicy::Delete => {
            let name = view.name_any();
            let others: Vec<MaterializedView> = views_in(ctx, ns)
                .await?
                .into_iter()
                .filter(|v| v.name_any() != name && v.metadata.deletion_timestamp.is_none())
                .collect();
            let namespace_uid = ctx.namespace_uid(ns).await?;
            let plan =
                plan_view(&ctx.config.cluster_id, &view, &others).in_namespace(namespace_uid.as_deref());
            // Versions stored elsewhere than the spec's own storage go first (their items or tables).
            for v in &recorded {
                let vview = crate::plan::versions::view_with_content(&view, &v.content);
                let vplan =
                    crate::plan::versions::plan_version(&ctx.config.cluster_id, &vview, &others, v.version);
                let elsewhere = (vplan.table.name.as_str(), vplan.key_prefix.as_deref())
                    != (plan.table.name.as_str(), plan.key_prefix.as_deref());
                versions::remove_version(&view, ctx, ns, &others, v, elsewhere).await?;
                crate::fail_point!("deletion-resource-removed");
            }
            // The export of a backfill that had not finished (or removed it) yet.
            if let Some(b) = view
                .status
                .as_ref()
                .and_then(|s| s.backfill.as_ref())
                .filter(|b| !b.cleaned_up && !view.spec.backfill.keep_export)
            {
                in_cluster::delete_export(ctx, ns, &view.name_any(), b).await?;
            }
            let resources = view.status.clone().unwrap_or_default().resources;
            let projector = delete_projector(&resources, ctx, &plan).await?;
            let role = plan.owner.resource_name("projector", NameKind::Role);
            let mut role_note = match projector.is_empty() {
                true => String::new(),
                false => format!("deleted {}; ", projector.join(", ")),
            };
            retire_aws_push(&view, ctx, &others).await?;
            if iam::delete_role_if_owned(&ctx.aws.iam, &role, &plan.owner).await? {
                role_note += &format!("deleted projector role {role}; ");
            }
            let sharers: Vec<String> = others
                .iter()
                .filter(|v| {
                    plan.shared && plan_view(&ctx.config.cluster_id, v, &[]).table.name == plan.table.name
                })
                .map(|v| v.name_any())
                .collect();
            if !sharers.is_empty() {
                // The table stays for its sharers; this view's items (under its key prefix) go, unless
                // another view's prefix overlaps it (its items would go too): then they stay, said so.
                let prefix = plan.key_prefix.clone().unwrap_or_default();
                let overlapping =
                    validate::overlapping_sibling(&prefix, &view.spec.store.shared_table_name, &others);
                if let Some(other) = &overlapping {
                    status::publish(
                        ctx,
                        view.as_ref(),
                        EventType::Warning,
                        "ItemsKept",
                        "Cleanup",
                        format!(
                            "the items under key prefix {prefix:?} are kept in the shared views table {}: view \
                             {other:?}'s key prefix overlaps it, so deleting them by prefix would delete some of \
                             {other:?}'s",
                            plan.table.name
                        ),
                    )
                    .await;
                }
                // Only items this object projected: a view refused over an earlier view's retained
                // items (StorageRetained) never owned them.
                let uid = view.metadata.uid.clone().unwrap_or_default();
                let owner = match prefix.is_empty() || overlapping.is_some() {
                    true => None,
                    false => {
                        crate::aws::view_storage::owner_of(&ctx.aws.dynamodb, &plan.table.name, &prefix)
                            .await?
                    }
                };
                let deleted = match owner.as_deref() == Some(uid.as_str()) {
                    false => 0,
                    true => {
                        crate::aws::views::delete_items_with_prefix(
                            &ctx.aws.dynamodb,
                            &plan.table.name,
                            &prefix,
                        )
                        .await?
                    }
                };
                if overlapping.is_none() && !prefix.is_empty() && owner.as_deref() != Some(uid.as_str()) {
                    status::publish(
                        ctx,
                        view.as_ref(),
                        EventType::Warning,
                        "ItemsKept",
                        "Cleanup",
                        format!(
                            "the items under key prefix {prefix:?} of the shared views table {} are kept: they \
                             are not this view's (their owner item names {}), so they are not deleted with it",
                            plan.table.name,
                            owner.as_deref().map_or("no owner".to_string(), |o| format!("uid {o}"))
                        ),
                    )
                    .await;
                }
                format!(
                    "deletionPolicy Delete: {role_note}deleted the view's {deleted} items (prefix {prefix:?}) from the \
                     shared views table {}, kept for {}",
                    plan.table.name,
                    sharers.join(", ")
                )
            } else if let Some(kept) = retained_in_shared_table(&view, ctx, &plan).await? {
                format!(
                    "deletionPolicy Delete: {role_note}the shared views table {} is kept: it holds {kept}, \
                     retained when their views were deleted (delete them, or the table, by hand)",
                    plan.table.name
                )
            } else if dynamodb::delete_table_if_owned(&ctx.aws.dynamodb, &plan.table.name, &plan.table_owner)
                .await?
            {
                format!(
                    "deletionPolicy Delete: {role_note}deleted views table {}",
                    plan.table.name
                )
            } else {
                format!(
                    "deletionPolicy Delete: views table {} was already gone or not ours",
                    plan.table.name
                )
            }
        }
    };
    status::publish(ctx, view.as_ref(), EventType::Normal, "Deleted", "Cleanup", note).await;
    Ok(Action::await_change())
}
