//! A view version on the Lambda runtime: its projector role, function, failure queue and live path
//! (SNS subscriptions or a stream mapping), and their removal.

use crate::controller::Refusal;
use std::ops::ControlFlow;

use super::version::{InClusterOutcome, OnVersion};
use kube::ResourceExt;
use kube::runtime::events::EventType;

use crate::aws::{Convergence, iam};
use crate::controller::status::{self};
use crate::controller::{Context, Result};
use crate::crd::{EventLog, MaterializedView, ResolvedFanOut, reasons};
use crate::crd::{ResourceKey, Resources};
use crate::plan::log::{plan_log, scope_of_arn};
use crate::plan::names::NameKind;
use crate::plan::topology::{LambdaPlan, VersionPlan};

/// One version of a view on the Lambda runtime, once its table exists (`table_arn`): its projector role,
/// function and live path (subscriptions or mapping), then the same backfill as the in-cluster runtime.
/// Errors: retryable AWS errors, for the controller to retry; a permanent one is the version's failure.
pub(super) async fn lambda_version(
    on: &OnVersion<'_>,
    version: &VersionPlan,
    lambda: &LambdaPlan,
    table_arn: &str,
) -> Result<InClusterOutcome> {
    let plan = &version.storage;
    let (view, target, log, ctx) = (on.view, on.target, on.log, on.ctx);
    let mut resources = std::collections::BTreeMap::new();
    let projector_role = match projector_role(on, lambda, table_arn, &mut resources).await {
        Ok(ControlFlow::Continue(role)) => role,
        Ok(ControlFlow::Break(waiting)) => return Ok(waiting),
        Err(e) => return failed(e),
    };
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
        lambda,
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
        warn_no_destination(view, ctx, message).await;
    }
    let key_prefix = plan.key_prefix.clone().unwrap_or_default();
    // A gap still to close (not yet recorded as a backfill attempt, nor reported for a view without one).
    let gap = match live.gap {
        Some(gap) => super::backfill::unrecorded_gap(view, ctx, gap).await,
        None => None,
    };
    let path = super::lambda_live::LivePathState {
        table: &plan.table.name,
        key_prefix: &key_prefix,
        projection: &version.projection,
        ready: live.ready,
    };
    let mut run = super::lambda_live::lambda_view(on, &path, gap.clone()).await;
    resources.extend(live.resources);
    if let Some(gap) = &gap
        && run.backfill.as_ref().and_then(|b| b.reason.as_deref())
            != Some(super::backfill::gap_reason(gap).as_str())
    {
        // Not recorded in this pass (the live path still converging): the status keeps the subscription
        // ARNs it had, so the next pass finds the gap again.
        for (key, arn) in recorded.typed() {
            if let ResourceKey::Subscription(_) = key {
                resources.record(key, arn.clone());
            }
        }
    }
    run.resources = resources;
    run.dead_letters = live.dead_letters;
    Ok(run)
}

/// Warns that a user's function is mapped without the view's failure queue, with the fix (`message`).
async fn warn_no_destination(view: &MaterializedView, ctx: &Context, message: &str) {
    tracing::warn!(view = %view.name_any(), "{message}");
    status::publish(
        ctx,
        view,
        EventType::Warning,
        reasons::NO_FAILURE_DESTINATION,
        "Provision",
        message.to_string(),
    )
    .await;
}

/// A version's outcome from an AWS error: a retryable one for the controller to retry, a permanent one the
/// version's failure.
fn failed(e: crate::aws::AwsError) -> Result<InClusterOutcome> {
    match e.retryable {
        true => Err(e.into()),
        false => Ok(InClusterOutcome::failed(&e)),
    }
}

/// The version's projector role, when the plan has one (a built-in projector; the views table's ARN names
/// its account and region), recorded in `resources`: `Continue` with its ARN once IAM has it as planned
/// (`None`: no role), `Break` with the outcome to report while it converges.
async fn projector_role(
    on: &OnVersion<'_>,
    lambda: &LambdaPlan,
    table_arn: &str,
    resources: &mut std::collections::BTreeMap<String, String>,
) -> std::result::Result<ControlFlow<InClusterOutcome, Option<String>>, crate::aws::AwsError> {
    let Some(scope) = scope_of_arn(table_arn) else {
        return Ok(ControlFlow::Continue(None));
    };
    let ctx = on.ctx;
    let Some(role) = lambda.role(&scope) else {
        return Ok(ControlFlow::Continue(None));
    };
    let boundary = scope.policy_arn(&ctx.config.permissions_boundary);
    let (arn, convergence) = iam::ensure_role(&ctx.aws.iam, &role, &boundary).await?;
    resources.record(ResourceKey::Role("projector".into()), arn.clone());
    if convergence != Convergence::Converged {
        let mut run = super::version::provisioning(format!(
            "creating or updating views table {} and the projector role",
            lambda.table()
        ));
        run.resources = resources.clone();
        return Ok(ControlFlow::Break(run));
    }
    Ok(ControlFlow::Continue(Some(arn)))
}

/// Removes what an earlier view of this name (uid `earlier`, deleted with `deletionPolicy: Retain`) left
/// that may still write into the storage this view adopts: its projector function (when it still carries
/// the earlier uid), its event source mappings, its subscriptions to the log's topics and its role.
/// The views of `all` that read `view`'s EventLog (the log plan's readers).
fn readers_of_log<'a>(view: &MaterializedView, all: &[&'a MaterializedView]) -> Vec<&'a MaterializedView> {
    all.iter()
        .copied()
        .filter(|v| v.spec.event_log_ref.name == view.spec.event_log_ref.name)
        .collect()
}

/// Returns what was removed; nothing of another owner is touched.
pub(super) async fn remove_earlier_projector(
    view: &MaterializedView,
    log: &EventLog,
    ctx: &Context,
    plan: &crate::plan::view::ViewPlan,
    earlier: &str,
    all: &[&MaterializedView],
) -> std::result::Result<Vec<String>, crate::aws::AwsError> {
    use crate::aws::{lambda, subscriptions};
    let previous = plan.owner.clone().with_uid(Some(earlier));
    let name = crate::plan::lambdas::projector_name(plan);
    let mut removed = Vec::new();
    // Only the earlier view's function (or none left): never this view's own.
    let theirs = lambda::function_tags(&ctx.aws.lambda, &name)
        .await?
        .is_some_and(|tags| previous.owns(&tags));
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
        let function_arn = scope.function_arn(&name);
        for topic in plan_log(&ctx.config.cluster_id, log, &readers_of_log(view, all)).topics {
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
pub(super) struct LivePath {
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
pub(super) async fn ensure_failure_queue(
    ctx: &Context,
    mut queue: crate::plan::log::QueuePlan,
    table_arn: &str,
    topic_arns: &[String],
) -> std::result::Result<crate::aws::sqs::QueueState, crate::aws::AwsError> {
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
pub(super) async fn projector_live_path(
    view: &MaterializedView,
    log: &EventLog,
    ctx: &Context,
    lambda: &LambdaPlan,
    role_arn: Option<&str>,
    table_arn: &str,
    recorded: &std::collections::BTreeMap<String, String>,
) -> std::result::Result<LivePath, crate::aws::AwsError> {
    let mut resources = std::collections::BTreeMap::new();
    let log_status = log.status.clone().unwrap_or_default();
    let subscribed = lambda.subscriptions.clone();
    let topic_arns: Vec<String> = match log_status.fan_out {
        Some(ResolvedFanOut::Sns) => subscribed
            .keys()
            .filter_map(|group| {
                log_status
                    .resources
                    .arn(&ResourceKey::Topic(group.clone()))
                    .cloned()
            })
            .collect(),
        _ => Vec::new(),
    };
    let failures = ensure_failure_queue(ctx, lambda.failure_queue.clone(), table_arn, &topic_arns).await?;
    resources.record(ResourceKey::FailureQueue, failures.arn.clone());
    let not_ready = |resources| LivePath {
        ready: false,
        resources,
        dead_letters: failures.messages,
        gap: None,
        no_destination: None,
    };
    let Some(projector) = projector_function(view, ctx, lambda, role_arn, &mut resources).await? else {
        return Ok(not_ready(resources));
    };
    let failure_queue = failures.arn.as_str();
    let (ready, gaps, no_destination) = match log_status.fan_out {
        Some(ResolvedFanOut::Sns) => {
            let (ready, gaps) = projector
                .subscribe(
                    ctx,
                    &log_status,
                    subscribed,
                    failure_queue,
                    recorded,
                    &mut resources,
                )
                .await?;
            (ready, gaps, None)
        }
        Some(ResolvedFanOut::Direct) => match log_status.table.as_ref().and_then(|t| t.stream_arn.clone()) {
            Some(stream) => {
                let (ready, no_destination) = projector
                    .map_stream(ctx, &log.spec, &stream, failure_queue, &mut resources)
                    .await?;
                (ready, Vec::new(), no_destination)
            }
            None => return Ok(not_ready(resources)),
        },
        None => return Ok(not_ready(resources)),
    };
    Ok(LivePath {
        ready,
        resources,
        dead_letters: failures.messages,
        gap: (!gaps.is_empty()).then(|| gaps.join("; ")),
        no_destination,
    })
}

/// The version's projector function as its live path names it.
struct Projector<'a> {
    view: &'a MaterializedView,
    /// Our projector's function name (`crate::plan::lambdas::projector_name`).
    name: String,
    /// The function's ARN.
    arn: String,
    /// How a stream mapping names it: the ARN of a user's function, the name of ours.
    reference: String,
}

impl Projector<'_> {
    /// A user's function (`functionArn`) keeps its own failure handling: its role may not send to our
    /// queue, and its configuration is the user's.
    fn ours(&self) -> bool {
        self.reference == self.name
    }

    /// `Sns` fan-out: our function's asynchronous failures go to the failure queue, and the function is
    /// subscribed to the topic of each of its topic groups (SNS's redrive needs only the queue's policy).
    /// Returns whether all converged, and the gaps of subscriptions found re-created.
    async fn subscribe(
        &self,
        ctx: &Context,
        log_status: &crate::crd::EventLogStatus,
        subscribed: std::collections::BTreeMap<String, serde_json::Value>,
        failure_queue: &str,
        recorded: &std::collections::BTreeMap<String, String>,
        resources: &mut std::collections::BTreeMap<String, String>,
    ) -> std::result::Result<(bool, Vec<String>), crate::aws::AwsError> {
        use crate::aws::{lambda, subscriptions};
        let mut ready = true;
        let mut gaps = Vec::new();
        if self.ours() {
            let async_failures = crate::plan::lambdas::projector_async_failures(&self.name, failure_queue);
            let c = lambda::ensure_async_failures(&ctx.aws.lambda, &async_failures).await?;
            ready &= c == Convergence::Converged;
        }
        for (group, policy) in subscribed {
            let Some(topic) = log_status.resources.arn(&ResourceKey::Topic(group.clone())) else {
                ready = false;
                continue;
            };
            let c1 = subscriptions::allow_sns_invoke(&ctx.aws.lambda, &self.arn, topic).await?;
            let (arn, c2) = subscriptions::ensure_subscription(
                &ctx.aws.sns,
                topic,
                &self.arn,
                &policy,
                Some(failure_queue),
            )
            .await?;
            ready &= c1 == Convergence::Converged && c2 == Convergence::Converged;
            let key = ResourceKey::Subscription(group.clone());
            if let Some(before) = recorded.arn(&key).filter(|before| **before != arn) {
                tracing::warn!(view = %self.view.name_any(), %before, now = %arn, "a projector subscription was re-created");
                gaps.push(subscription_gap(before, &arn));
            }
            resources.record(key, arn);
        }
        Ok((ready, gaps))
    }

    /// `Direct` fan-out: the function's event source mapping on the log's stream, with the failure queue as
    /// its on-failure destination. Returns whether it converged, and why a user's function is mapped
    /// without the destination (its role may not send to the queue), with the fix.
    async fn map_stream(
        &self,
        ctx: &Context,
        log: &crate::crd::EventLogSpec,
        stream: &str,
        failure_queue: &str,
        resources: &mut std::collections::BTreeMap<String, String>,
    ) -> std::result::Result<(bool, Option<String>), crate::aws::AwsError> {
        use crate::aws::lambda;
        let mut mapping =
            crate::plan::lambdas::projector_mapping(self.view, log, &self.reference, stream, failure_queue);
        let mut no_destination = None;
        let (id, c) = match lambda::ensure_mapping(&ctx.aws.lambda, &mapping).await {
            // A user's function whose role may not send to the view's failure queue: mapped without the
            // destination (the view works), and the user is told how to grant it.
            Err(e) if !self.ours() && lambda::is_destination_refused(&e) => {
                mapping.on_failure = None;
                no_destination = Some(format!(
                    "the execution role of spec.projector.code.functionArn {} may not send to the view's failure \
                     queue {failure_queue}, so its stream mapping has no on-failure destination: records the \
                     function still fails after the mapping's retries are dropped. Grant the role \
                     sqs:SendMessage on {failure_queue}",
                    self.reference
                ));
                lambda::ensure_mapping(&ctx.aws.lambda, &mapping).await?
            }
            other => other?,
        };
        resources.record(ResourceKey::Mapping, id);
        Ok((c == Convergence::Converged, no_destination))
    }
}

/// The projector function: the user's (`spec.projector.code.functionArn`, checked) or ours, created or
/// updated (its ARN recorded in `resources`). `None` until ours exists as planned (no role yet, no
/// projection to run, or still converging). Errors: AWS's; a built-in code or projection that cannot be
/// used is permanent.
async fn projector_function<'a>(
    view: &'a MaterializedView,
    ctx: &Context,
    plan: &LambdaPlan,
    role_arn: Option<&str>,
    resources: &mut std::collections::BTreeMap<String, String>,
) -> std::result::Result<Option<Projector<'a>>, crate::aws::AwsError> {
    use crate::aws::lambda;
    let name = plan.function_name.clone();
    if let Some(arn) = plan.custom_function.clone() {
        lambda::check_custom_function(&ctx.aws.lambda, &arn, plan.owner()).await?;
        return Ok(Some(Projector { view, name, reference: arn.clone(), arn }));
    }
    let Some(role_arn) = role_arn else {
        return Ok(None);
    };
    let code = ctx.built_in_code().await.map_err(|e| e.refusal(&name))?;
    let function = plan.function(role_arn, &code).map_err(|e| e.refusal(&name))?;
    let Some(function) = function else {
        return Ok(None);
    };
    let (arn, convergence) = lambda::ensure_function(&ctx.aws.lambda, &function).await?;
    resources.record(ResourceKey::Function("projector".into()), arn.clone());
    Ok((convergence == Convergence::Converged).then(|| Projector {
        view,
        reference: name.clone(),
        name,
        arn,
    }))
}

/// The gap of a projector subscription `before` found gone and re-created as `now`.
pub(super) fn subscription_gap(before: &str, now: &str) -> String {
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
        .arn(&ResourceKey::Function("projector".into()))
        .cloned()
        .unwrap_or_else(|| name.clone());
    for (key, arn) in resources.typed() {
        if let ResourceKey::Subscription(_) = key {
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
