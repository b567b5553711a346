//! Push of a view's changes to its subscribers (`spec.subscribers`): the in-cluster endpoint or the views
//! table's API Gateway WebSocket stack.

use crate::controller::Refusal;
use kube::ResourceExt;
use kube::runtime::events::EventType;

use crate::controller::Context;
use crate::controller::status::{self};
use crate::crd::{MaterializedView, ProjectorRuntime};
use crate::crd::{ResourceKey, Resources};
use crate::plan::log::scope_of_arn;
use crate::plan::topology::{ViewTopology, push_of};

/// Provisions the view's table and role, then runs it: on the in-cluster runtime (the operator reads the
/// stream) or on Lambda (the projector function and its subscriptions or mapping); both backfill.
/// Push of the view's changes to subscribers (`spec.subscribers`): on the in-cluster runtime, the
/// operator's own endpoint fed from the active version's table; on the Lambda runtime, the views table's
/// API Gateway WebSocket API with the built-in connections and notifier functions. `None` until clients
/// can connect.
pub(super) async fn push_path(
    view: &MaterializedView,
    ctx: &Context,
    ns: &str,
    table: Option<&super::versions::ActiveTable>,
    all: &[&MaterializedView],
    topology: &ViewTopology,
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
            Ok(ready.then(|| crate::crd::PushStatus { url: Some(ctx.push.url(ns)), api_id: None }))
        }
        ProjectorRuntime::Lambda => {
            ctx.push.forget_view(ns, &name);
            let Some(scope) = scope_of_arn(&table.arn) else {
                return Ok(None);
            };
            let plan = topology.push(table.version, &table.name, table.key_prefix.as_deref(), &scope);
            let code = (ctx.built_in_code().await).map_err(|e| e.refusal(&plan.connections_function))?;
            let got = crate::controller::push::ensure_aws_push(
                &ctx.aws,
                &plan,
                &code,
                stream,
                &ctx.config.permissions_boundary,
            )
            .await?;
            Ok(got
                .converged
                .then_some(crate::crd::PushStatus { url: Some(got.url), api_id: Some(got.api_id) }))
        }
    }
}

/// [`Context::namespace_uid`] for the steps whose errors are AWS errors (a failed read is retried).
pub(super) async fn namespace_uid_for_aws(
    ctx: &Context,
    ns: &str,
) -> std::result::Result<Option<String>, crate::aws::AwsError> {
    ctx.namespace_uid(ns)
        .await
        .map_err(|e| crate::aws::AwsError::new("GetNamespace", ns, "", &e.to_string()))
}

/// Removes the views table's push stack when `view` had one (`status.push.apiId`) and no other view of the
/// table still has subscribers.
pub(super) async fn retire_aws_push(
    view: &MaterializedView,
    ctx: &Context,
    all: &[&MaterializedView],
) -> std::result::Result<(), crate::aws::AwsError> {
    let status = view.status.clone().unwrap_or_default();
    if status.push.as_ref().and_then(|p| p.api_id.as_ref()).is_none() {
        return Ok(());
    }
    let (Some(table), Some(arn)) = (
        status.table_name.clone(),
        status.resources.arn(&ResourceKey::ViewsTable),
    ) else {
        return Ok(());
    };
    let Some(scope) = scope_of_arn(arn) else {
        return Ok(());
    };
    let mut gone = view.clone();
    gone.spec.subscribers = None;
    let namespace_uid = namespace_uid_for_aws(ctx, &view.namespace().unwrap_or_default()).await?;
    let cluster = &ctx.config.cluster_id;
    let plan = push_of(
        cluster,
        &gone,
        all,
        namespace_uid.as_deref(),
        &table,
        None,
        &scope,
    );
    if !plan.view_routes.views.is_empty() {
        return Ok(());
    }
    let deleted = crate::controller::push::delete_aws_push(&ctx.aws, &plan).await?;
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
