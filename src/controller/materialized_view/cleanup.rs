//! Deleting a view: its versions' runtimes, backfills and AWS resources, by `spec.deletionPolicy`.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::dereference::views_listed;
use super::outcome::{Outcome, write_status};
use crate::aws::{dynamodb, iam};
use crate::controller::status::{self, Health};
use crate::controller::{Context, Result, validate};
use crate::crd::{DeletionPolicy, MaterializedView, ViewPhase, ViewVersion, reasons};
use crate::plan::names::NameKind;
use crate::plan::topology::plan_deletion;
use crate::plan::view::{ViewPlan, plan_view};

/// For a view being deleted with the last use of its shared views table: the other views' retained
/// storage still in the table (owner items of other uids), which deleting the table would take with it.
pub(super) async fn retained_in_shared_table(
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

pub(super) async fn cleanup(view: Arc<MaterializedView>, ctx: &Context, ns: &str) -> Result<Action> {
    let deleting = Outcome {
        phase: ViewPhase::Deleting,
        health: Health::Progressing { reason: reasons::DELETING, message: "cleaning up".into() },
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
    delete_backfill_jobs(&view, ctx, ns, &recorded).await;
    let note = match view.spec.deletion_policy {
        DeletionPolicy::Retain => retained_note(&recorded),
        DeletionPolicy::Delete => delete_owned(&view, ctx, ns, &recorded).await?,
    };
    status::publish(ctx, view.as_ref(), EventType::Normal, "Deleted", "Cleanup", note).await;
    Ok(Action::await_change())
}

/// Deletes the view's backfill Jobs (every version's, and a status from before versions): they go with the
/// view whatever its deletionPolicy (they are not its AWS resources).
async fn delete_backfill_jobs(view: &MaterializedView, ctx: &Context, ns: &str, recorded: &[ViewVersion]) {
    for v in recorded {
        if let Some(b) = v.backfill.as_ref().filter(|b| b.attempt > 0) {
            let base = crate::plan::versions::checkpoint_base(&view.name_any(), v.version);
            super::backfill::delete_backfill_job(ctx, ns, &base, b.attempt).await;
        }
    }
    if let Some(b) = view
        .status
        .as_ref()
        .and_then(|s| s.backfill.as_ref())
        .filter(|b| b.attempt > 0)
    {
        super::backfill::delete_backfill_job(ctx, ns, &view.name_any(), b.attempt).await;
    }
}

/// The Normal Event of a view deleted with `deletionPolicy: Retain`: what is kept, owned by no view.
fn retained_note(recorded: &[ViewVersion]) -> String {
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

/// Deletes what a view with `deletionPolicy: Delete` owns: every version stored elsewhere, an unfinished
/// backfill's export, the projector and its live path, the push path, the projector role, then its items
/// in a shared views table or its dedicated table. Returns the Normal Event's note. Errors: AWS's.
async fn delete_owned(
    view: &MaterializedView,
    ctx: &Context,
    ns: &str,
    recorded: &[ViewVersion],
) -> Result<String> {
    let name = view.name_any();
    let listed = views_listed(&ctx.client, ns).await?;
    let others: Vec<&MaterializedView> = listed
        .iter()
        .filter(|v| v.name_any() != name && v.metadata.deletion_timestamp.is_none())
        .collect();
    let namespace_uid = ctx.namespace_uid(ns).await?;
    let deletion = plan_deletion(
        &ctx.config.cluster_id,
        view,
        recorded,
        &others,
        namespace_uid.as_deref(),
    );
    let plan = &deletion.storage;
    // Versions stored elsewhere than the spec's own storage go first (their items or tables).
    for (v, vplan) in &deletion.versions {
        let elsewhere = deletion.elsewhere(vplan);
        super::versions::remove_version(view, ctx, ns, &others, v, vplan, elsewhere).await?;
        crate::fail_point!("deletion-resource-removed");
    }
    // The export of a backfill that had not finished (or removed it) yet.
    if let Some(b) = view
        .status
        .as_ref()
        .and_then(|s| s.backfill.as_ref())
        .filter(|b| !b.cleaned_up && !view.spec.backfill.keep_export)
    {
        super::backfill::delete_export(ctx, ns, &view.name_any(), b).await?;
    }
    let resources = view.status.clone().unwrap_or_default().resources;
    let projector = super::lambda::delete_projector(&resources, ctx, plan).await?;
    let role = plan.owner.resource_name("projector", NameKind::Role);
    let mut role_note = match projector.is_empty() {
        true => String::new(),
        false => format!("deleted {}; ", projector.join(", ")),
    };
    super::subscribers::retire_aws_push(view, ctx, &others).await?;
    if iam::delete_role_if_owned(&ctx.aws.iam, &role, &plan.owner).await? {
        role_note += &format!("deleted projector role {role}; ");
    }
    let sharers: Vec<String> = others
        .iter()
        .filter(|v| {
            plan.shared
                && plan_view(&ctx.config.cluster_id, v, crate::plan::NO_VIEWS)
                    .table
                    .name
                    == plan.table.name
        })
        .map(|v| v.name_any())
        .collect();
    Ok(if !sharers.is_empty() {
        delete_shared_items(view, ctx, plan, &others, &sharers, &role_note).await?
    } else if let Some(kept) = retained_in_shared_table(view, ctx, plan).await? {
        format!(
            "deletionPolicy Delete: {role_note}the shared views table {} is kept: it holds {kept}, \
             retained when their views were deleted (delete them, or the table, by hand)",
            plan.table.name
        )
    } else if dynamodb::delete_table_if_owned(&ctx.aws.dynamodb, &plan.table.name, &plan.table_owner).await? {
        format!(
            "deletionPolicy Delete: {role_note}deleted views table {}",
            plan.table.name
        )
    } else {
        format!(
            "deletionPolicy Delete: views table {} was already gone or not ours",
            plan.table.name
        )
    })
}

/// Deletes the view's items from a views table it shares with `sharers` (the table stays), unless another
/// view's key prefix overlaps its own or the items are not this view's: then they stay, said in a Warning
/// Event. Returns the Normal Event's note. Errors: DynamoDB's.
async fn delete_shared_items(
    view: &MaterializedView,
    ctx: &Context,
    plan: &ViewPlan,
    others: &[&MaterializedView],
    sharers: &[String],
    role_note: &str,
) -> Result<String> {
    // The table stays for its sharers; this view's items (under its key prefix) go, unless
    // another view's prefix overlaps it (its items would go too): then they stay, said so.
    let prefix = plan.key_prefix.clone().unwrap_or_default();
    let overlapping = validate::overlapping_sibling(&prefix, &view.spec.store.shared_table_name, others);
    if let Some(other) = &overlapping {
        items_kept(
            ctx,
            view,
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
        false => crate::aws::view_storage::owner_of(&ctx.aws.dynamodb, &plan.table.name, &prefix).await?,
    };
    let deleted = match owner.as_deref() == Some(uid.as_str()) {
        false => 0,
        true => {
            crate::aws::views::delete_items_with_prefix(&ctx.aws.dynamodb, &plan.table.name, &prefix).await?
        }
    };
    if overlapping.is_none() && !prefix.is_empty() && owner.as_deref() != Some(uid.as_str()) {
        items_kept(
            ctx,
            view,
            format!(
                "the items under key prefix {prefix:?} of the shared views table {} are kept: they \
                 are not this view's (their owner item names {}), so they are not deleted with it",
                plan.table.name,
                owner
                    .as_deref()
                    .map_or("no owner".to_string(), |o| format!("uid {o}"))
            ),
        )
        .await;
    }
    Ok(format!(
        "deletionPolicy Delete: {role_note}deleted the view's {deleted} items (prefix {prefix:?}) from the \
         shared views table {}, kept for {}",
        plan.table.name,
        sharers.join(", ")
    ))
}

/// A Warning Event `ItemsKept`: items under the view's key prefix stay in its shared views table, and why.
async fn items_kept(ctx: &Context, view: &MaterializedView, message: String) {
    status::publish(ctx, view, EventType::Warning, "ItemsKept", "Cleanup", message).await;
}
