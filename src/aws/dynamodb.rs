//! DynamoDB tables: ensure a table matches its plan (keys, billing, stream, PITR, deletion protection,
//! time to live, tags), one change at a time as DynamoDB requires; delete only a table carrying the
//! owner's tags.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode as DdbBilling, KeySchemaElement, KeyType,
    PointInTimeRecoverySpecification, ProvisionedThroughput, ScalarAttributeType, StreamSpecification,
    StreamViewType as DdbView, TableDescription, TableStatus, Tag, TimeToLiveSpecification, TimeToLiveStatus,
};

use super::error::from_sdk;
use super::{AwsError, Convergence};
use crate::crd::{BillingMode, StreamViewType};
use crate::plan::log::TablePlan;
use crate::plan::names::{Owner, Ownership, tag_keys};

/// The refusal of an adoption: the table, why, and the setting that decides.
fn adoption_refused(plan: &TablePlan, why: &str) -> AwsError {
    AwsError::refused(
        "AdoptTable",
        format!("DynamoDB table {}", plan.name),
        super::error::ADOPTION_REFUSED,
        format!(
            "{} {}/{} may not use the existing DynamoDB table {}: {why}",
            plan.owner.kind, plan.owner.namespace, plan.owner.name, plan.name
        ),
    )
}

/// What a table is after `ensure_table`.
#[derive(Clone, Debug, PartialEq)]
pub struct TableState {
    pub arn: String,
    pub stream_arn: Option<String>,
    pub convergence: Convergence,
    /// When the table was created (epoch seconds, DynamoDB's `CreationDateTime`), if known: a table
    /// created after a view's backfill started was deleted and re-created since, and holds none of it.
    pub created: Option<f64>,
}

fn view_type(v: StreamViewType) -> DdbView {
    match v {
        StreamViewType::NewImage => DdbView::NewImage,
        StreamViewType::NewAndOldImages => DdbView::NewAndOldImages,
    }
}

async fn describe(client: &Client, name: &str) -> Result<Option<TableDescription>, AwsError> {
    match client
        .describe_table()
        .table_name(name)
        .send()
        .await
        .map_err(from_sdk("DescribeTable", name))
    {
        Ok(out) => Ok(out.table),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Creates the table, or brings an existing one in line with the plan with at most one change per call.
///
/// Before any change to an existing table its tags are read: a table of another owner (or of an earlier
/// object of the same name) is refused with [`super::error::OWNED_BY_ANOTHER`] and left untouched. A
/// table without kappa tags is only used when the plan adopts it (`spec.table.adoptExisting`) and
/// [`TablePlan::adoption`] allows it; it is then tagged `kappa.dev/adopted-by` (nothing else), so no
/// other object can adopt it, and it is never deleted. Anything else is refused with
/// [`super::error::ADOPTION_REFUSED`], naming the setting.
pub async fn ensure_table(client: &Client, plan: &TablePlan) -> Result<TableState, AwsError> {
    let Some(table) = describe(client, &plan.name).await? else {
        if plan.adopted {
            return Err(AwsError::permanent(
                "AdoptTable",
                &plan.name,
                "spec.table.adoptExisting is true but no such table exists: create it, or set adoptExisting false",
            ));
        }
        return create(client, plan).await;
    };
    let arn = table.table_arn().unwrap_or_default().to_string();
    let what = format!("DynamoDB table {}", plan.name);
    let have = tags_of(client, &arn).await?;
    match (plan.owner.ownership(&have), plan.adopted) {
        // Its own table, adopted or created (one it created and now calls adopted is just never deleted).
        (Ownership::Ours, _) => {}
        // Adopted earlier: still only while the administrator's rules allow it.
        (Ownership::AdoptedByUs, true) => {
            if let Err(why) = &plan.adoption {
                return Err(adoption_refused(plan, why));
            }
        }
        (Ownership::Unclaimed, true) => {
            if let Err(why) = &plan.adoption {
                return Err(adoption_refused(plan, why));
            }
            let tag = Tag::builder()
                .key(tag_keys::ADOPTED_BY)
                .value(plan.owner.adopter_id())
                .build()?;
            client
                .tag_resource()
                .resource_arn(&arn)
                .tags(tag)
                .send()
                .await
                .map_err(from_sdk("TagResource", &arn))?;
            return Ok(TableState {
                arn,
                stream_arn: table.latest_stream_arn().map(str::to_string),
                convergence: Convergence::InProgress,
                created: table.creation_date_time().map(|t| t.as_secs_f64()),
            });
        }
        (Ownership::Unclaimed, false) if plan.owner.kind != crate::plan::log::KIND => {
            return Err(super::refusal(
                "CheckOwner",
                &what,
                &plan.owner,
                "exists but was not created by kappa-operator (it has no kappa.dev tags)",
            ));
        }
        (Ownership::Unclaimed, false) => {
            return Err(adoption_refused(
                plan,
                &format!(
                    "it exists and kappa-operator did not create it; to use an existing table set \
                     spec.table.adoptExisting: true (and {})",
                    plan.adoption
                        .as_ref()
                        .err()
                        .map(String::as_str)
                        .unwrap_or("the operator's configuration allows it")
                ),
            ));
        }
        (Ownership::AdoptedByUs, false) => {
            return Err(AwsError::refused(
                "CheckOwner",
                &what,
                super::error::OWNED_BY_ANOTHER,
                format!(
                    "{what} was adopted by this EventLog, not created by it: keep spec.table.adoptExisting \
                     true (the operator never takes over an adopted table)"
                ),
            ));
        }
        (Ownership::Other(_), _) if plan.owner.predecessor_uid(&have).is_some() => {
            let earlier = plan.owner.predecessor_uid(&have).unwrap_or_default();
            return take_over_predecessor(client, plan, &arn, &earlier)
                .await
                .map(|()| TableState {
                    arn: arn.clone(),
                    stream_arn: table.latest_stream_arn().map(str::to_string),
                    convergence: Convergence::InProgress,
                    created: table.creation_date_time().map(|t| t.as_secs_f64()),
                });
        }
        (Ownership::Other(_), _) => {
            super::check_owned("CheckOwner", &what, &plan.owner, &have)?;
        }
    }
    let state = |convergence| TableState {
        arn: arn.clone(),
        stream_arn: table.latest_stream_arn().map(str::to_string),
        convergence,
        created: table.creation_date_time().map(|t| t.as_secs_f64()),
    };
    check_keys(plan, &table)?;
    if table.table_status() != Some(&TableStatus::Active) {
        return Ok(state(Convergence::InProgress));
    }
    if update_needed(client, plan, &table).await? {
        return Ok(state(Convergence::InProgress));
    }
    if plan.point_in_time_recovery && !pitr_enabled(client, &plan.name).await? {
        client
            .update_continuous_backups()
            .table_name(&plan.name)
            .point_in_time_recovery_specification(
                PointInTimeRecoverySpecification::builder()
                    .point_in_time_recovery_enabled(true)
                    .build()?,
            )
            .send()
            .await
            .map_err(from_sdk("UpdateContinuousBackups", &plan.name))?;
        return Ok(state(Convergence::InProgress));
    }
    if let Some(attribute) = &plan.time_to_live_attribute
        && ttl_update_needed(client, &plan.name, attribute).await?
    {
        return Ok(state(Convergence::InProgress));
    }
    if !plan.adopted && tag_if_needed(client, &arn, &plan.tags, &have).await? {
        return Ok(state(Convergence::InProgress));
    }
    Ok(state(Convergence::Converged))
}

/// A table tagged for an earlier object of the plan owner's name, uid `earlier` (deleted with its table
/// retained): refused with [`super::error::RETAINED_STORAGE`] unless the plan takes it over; then its
/// owner item records the takeover (so its items are deleted before the view writes, even if the
/// operator stops right after) and only then is it re-tagged for the new owner.
async fn take_over_predecessor(
    client: &Client,
    plan: &TablePlan,
    arn: &str,
    earlier: &str,
) -> Result<(), AwsError> {
    let owner = &plan.owner;
    if !plan.take_over_predecessor {
        return Err(AwsError::refused(
            "CheckOwner",
            &plan.name,
            super::error::RETAINED_STORAGE,
            format!(
                "views table {} holds the items of an earlier {} {}/{} (uid {earlier}), retained when it was \
                 deleted; this view (uid {}) would serve items it did not project, so the table is not used: set \
                 spec.store.adopt: true to delete those items and rebuild the view there from the log, or \
                 delete the table (aws dynamodb delete-table --table-name {}) and the view creates it anew",
                plan.name,
                owner.kind,
                owner.namespace,
                owner.name,
                owner.uid.as_deref().unwrap_or("-"),
                plan.name
            ),
        ));
    }
    let me = super::view_storage::Claimant {
        uid: owner.uid.clone().unwrap_or_default(),
        namespace: owner.namespace.clone(),
        name: owner.name.clone(),
    };
    super::view_storage::begin_takeover(client, &plan.name, "", &me, earlier).await?;
    let mut request = client.tag_resource().resource_arn(arn);
    for (k, v) in &plan.tags {
        request = request.tags(Tag::builder().key(k).value(v).build()?);
    }
    request.send().await.map_err(from_sdk("TagResource", arn))?;
    Ok(())
}

impl From<aws_sdk_dynamodb::error::BuildError> for AwsError {
    fn from(e: aws_sdk_dynamodb::error::BuildError) -> Self {
        AwsError::permanent("BuildRequest", "", e.to_string())
    }
}

async fn create(client: &Client, plan: &TablePlan) -> Result<TableState, AwsError> {
    let mut keys = vec![(plan.partition_key.as_str(), KeyType::Hash)];
    if let Some(sk) = &plan.sort_key {
        keys.push((sk.as_str(), KeyType::Range));
    }
    let mut req = client
        .create_table()
        .table_name(&plan.name)
        .deletion_protection_enabled(plan.deletion_protection);
    for (attr, key_type) in keys {
        req = req
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(attr)
                    .attribute_type(ScalarAttributeType::S)
                    .build()?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(attr)
                    .key_type(key_type)
                    .build()?,
            );
    }
    req = match (plan.billing, plan.capacity) {
        (BillingMode::Provisioned, Some((read, write))) => {
            req.billing_mode(DdbBilling::Provisioned).provisioned_throughput(
                ProvisionedThroughput::builder()
                    .read_capacity_units(read)
                    .write_capacity_units(write)
                    .build()?,
            )
        }
        _ => req.billing_mode(DdbBilling::PayPerRequest),
    };
    if let Some(view) = plan.stream {
        req = req.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(view_type(view))
                .build()?,
        );
    }
    for (k, v) in &plan.tags {
        req = req.tags(Tag::builder().key(k).value(v).build()?);
    }
    let out = req.send().await.map_err(from_sdk("CreateTable", &plan.name))?;
    let table = out.table_description;
    Ok(TableState {
        arn: table
            .as_ref()
            .and_then(|t| t.table_arn())
            .unwrap_or_default()
            .to_string(),
        stream_arn: table
            .as_ref()
            .and_then(|t| t.latest_stream_arn())
            .map(str::to_string),
        convergence: Convergence::InProgress,
        created: table
            .as_ref()
            .and_then(|t| t.creation_date_time())
            .map(|t| t.as_secs_f64()),
    })
}

fn check_keys(plan: &TablePlan, table: &TableDescription) -> Result<(), AwsError> {
    let key = |t: KeyType| {
        table
            .key_schema()
            .iter()
            .find(|k| k.key_type() == &t)
            .map(|k| k.attribute_name().to_string())
    };
    let (pk, sk) = (key(KeyType::Hash), key(KeyType::Range));
    if pk.as_deref() != Some(plan.partition_key.as_str()) || sk != plan.sort_key {
        return Err(AwsError::permanent(
            "CheckKeys",
            &plan.name,
            format!(
                "the table's keys are ({}, {}) but spec.table declares ({}, {}): keys cannot change; fix \
                 spec.table.partitionKey/sortKey to match, or use another table",
                pk.unwrap_or_default(),
                sk.unwrap_or_else(|| "none".into()),
                plan.partition_key,
                plan.sort_key.clone().unwrap_or_else(|| "none".into())
            ),
        ));
    }
    Ok(())
}

/// Makes the first needed `UpdateTable` change; `true` when one was made.
async fn update_needed(
    client: &Client,
    plan: &TablePlan,
    table: &TableDescription,
) -> Result<bool, AwsError> {
    let stream = table.stream_specification();
    let enabled = stream.is_some_and(|s| s.stream_enabled());
    let current_view = stream.and_then(|s| s.stream_view_type()).cloned();
    let update = client.update_table().table_name(&plan.name);
    let update = match plan.stream {
        // A view type cannot change in place: turn the stream off now, on with the new type next time.
        Some(view) if enabled && current_view.as_ref() != Some(&view_type(view)) => {
            update.stream_specification(StreamSpecification::builder().stream_enabled(false).build()?)
        }
        Some(view) if !enabled => update.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(view_type(view))
                .build()?,
        ),
        _ if !plan.adopted && table.deletion_protection_enabled() != Some(plan.deletion_protection) => {
            update.deletion_protection_enabled(plan.deletion_protection)
        }
        _ => return Ok(false),
    };
    update.send().await.map_err(from_sdk("UpdateTable", &plan.name))?;
    Ok(true)
}

/// What TTL call, if any, brings a table whose TTL is (`status`, `attribute`) to TTL on `want`: enable it
/// on `want`, or first disable it on another attribute (DynamoDB changes one at a time); nothing while a
/// change is under way or when it is already on `want`.
pub fn ttl_change(
    status: Option<&TimeToLiveStatus>,
    attribute: Option<&str>,
    want: &str,
) -> Option<(bool, String)> {
    match status {
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling) if attribute == Some(want) => None,
        Some(TimeToLiveStatus::Enabling | TimeToLiveStatus::Disabling) => None,
        Some(TimeToLiveStatus::Enabled) => Some((false, attribute.unwrap_or_default().to_string())),
        _ => Some((true, want.to_string())),
    }
}

/// Makes the TTL call [`ttl_change`] asks for; `true` when one was made, or one is still under way.
async fn ttl_update_needed(client: &Client, name: &str, want: &str) -> Result<bool, AwsError> {
    let out = client
        .describe_time_to_live()
        .table_name(name)
        .send()
        .await
        .map_err(from_sdk("DescribeTimeToLive", name))?;
    let description = out.time_to_live_description();
    let status = description.and_then(|d| d.time_to_live_status());
    let attribute = description.and_then(|d| d.attribute_name());
    let Some((enabled, attribute_name)) = ttl_change(status, attribute, want) else {
        // Enabling on `want` needs nothing more; anything else under way precedes a change of ours.
        let settling = status == Some(&TimeToLiveStatus::Disabling)
            || (status == Some(&TimeToLiveStatus::Enabling) && attribute != Some(want));
        return Ok(settling);
    };
    client
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(enabled)
                .attribute_name(attribute_name)
                .build()?,
        )
        .send()
        .await
        .map_err(from_sdk("UpdateTimeToLive", name))?;
    Ok(true)
}

async fn pitr_enabled(client: &Client, name: &str) -> Result<bool, AwsError> {
    let out = client
        .describe_continuous_backups()
        .table_name(name)
        .send()
        .await
        .map_err(from_sdk("DescribeContinuousBackups", name))?;
    Ok(out
        .continuous_backups_description()
        .and_then(|d| d.point_in_time_recovery_description())
        .and_then(|p| p.point_in_time_recovery_status())
        .is_some_and(|s| s.as_str() == "ENABLED"))
}

/// A table's size as `DescribeTable` reports it (`ItemCount`, `TableSizeBytes`, updated by DynamoDB about
/// every six hours: API_TableDescription) and its write capacity for a backfill: provisioned write units,
/// or the on-demand maximum when one is set (`None`: on-demand without a maximum).
pub async fn size_and_write_capacity(
    client: &Client,
    name: &str,
) -> Result<(crate::cost::backfill::LogSize, Option<f64>), AwsError> {
    let out = client
        .describe_table()
        .table_name(name)
        .send()
        .await
        .map_err(from_sdk("DescribeTable", name))?;
    let t = out.table.as_ref();
    let size = crate::cost::backfill::LogSize {
        items: t.and_then(|t| t.item_count()).unwrap_or(0).max(0) as u64,
        bytes: t.and_then(|t| t.table_size_bytes()).unwrap_or(0).max(0) as u64,
    };
    let provisioned = t
        .and_then(|t| t.provisioned_throughput())
        .and_then(|p| p.write_capacity_units())
        .filter(|c| *c > 0);
    let on_demand = t
        .and_then(|t| t.on_demand_throughput())
        .and_then(|o| o.max_write_request_units())
        .filter(|c| *c > 0);
    Ok((size, provisioned.or(on_demand).map(|c| c as f64)))
}

/// Every tag of the table, over all pages (`ListTagsOfResource` pages with `NextToken`; the page size is
/// the service's: API_ListTagsOfResource).
async fn tags_of(client: &Client, arn: &str) -> Result<BTreeMap<String, String>, AwsError> {
    let mut tags = BTreeMap::new();
    let mut next = None;
    loop {
        let out = client
            .list_tags_of_resource()
            .resource_arn(arn)
            .set_next_token(next)
            .send()
            .await
            .map_err(from_sdk("ListTagsOfResource", arn))?;
        tags.extend(
            out.tags()
                .iter()
                .map(|t| (t.key().to_string(), t.value().to_string())),
        );
        next = out.next_token;
        if next.is_none() {
            return Ok(tags);
        }
    }
}

async fn tag_if_needed(
    client: &Client,
    arn: &str,
    want: &BTreeMap<String, String>,
    have: &BTreeMap<String, String>,
) -> Result<bool, AwsError> {
    let missing: Vec<Tag> = super::missing_tags(want, have)
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect::<Result<_, _>>()?;
    if missing.is_empty() {
        return Ok(false);
    }
    client
        .tag_resource()
        .resource_arn(arn)
        .set_tags(Some(missing))
        .send()
        .await
        .map_err(from_sdk("TagResource", arn))?;
    Ok(true)
}

/// Removes `owner`'s `kappa.dev/adopted-by` tag from a table it adopted, so the table can be adopted
/// again (by the administrator's leave) once its EventLog is gone; `Ok(false)` when the table is absent or
/// not adopted by `owner`. Nothing else about the table changes.
pub async fn release_adopted_table(client: &Client, name: &str, owner: &Owner) -> Result<bool, AwsError> {
    let Some(table) = describe(client, name).await? else {
        return Ok(false);
    };
    let arn = table.table_arn().unwrap_or_default();
    if owner.ownership(&tags_of(client, arn).await?) != Ownership::AdoptedByUs {
        return Ok(false);
    }
    client
        .untag_resource()
        .resource_arn(arn)
        .tag_keys(tag_keys::ADOPTED_BY)
        .send()
        .await
        .map_err(from_sdk("UntagResource", arn))?;
    Ok(true)
}

/// Deletes the table if `owner` created it (all ownership tags present); `Ok(false)` when it is absent or
/// not ours. Turns deletion protection off first when the owner had turned it on.
pub async fn delete_table_if_owned(client: &Client, name: &str, owner: &Owner) -> Result<bool, AwsError> {
    let Some(table) = describe(client, name).await? else {
        return Ok(false);
    };
    let arn = table.table_arn().unwrap_or_default();
    if !owner.owns(&tags_of(client, arn).await?) {
        return Ok(false);
    }
    if table.deletion_protection_enabled() == Some(true) {
        client
            .update_table()
            .table_name(name)
            .deletion_protection_enabled(false)
            .send()
            .await
            .map_err(from_sdk("UpdateTable", name))?;
    }
    match client
        .delete_table()
        .table_name(name)
        .send()
        .await
        .map_err(from_sdk("DeleteTable", name))
    {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::types::TimeToLiveStatus as S;

    use super::ttl_change;

    #[test]
    fn ttl_is_enabled_once_and_moved_off_another_attribute_first() {
        assert_eq!(
            ttl_change(Some(&S::Enabled), Some("expiresAt"), "expiresAt"),
            None
        );
        assert_eq!(
            ttl_change(Some(&S::Enabling), Some("expiresAt"), "expiresAt"),
            None
        );
        assert_eq!(
            ttl_change(Some(&S::Disabled), None, "expiresAt"),
            Some((true, "expiresAt".to_string()))
        );
        assert_eq!(
            ttl_change(None, None, "expiresAt"),
            Some((true, "expiresAt".to_string()))
        );
        assert_eq!(
            ttl_change(Some(&S::Enabled), Some("ttl"), "expiresAt"),
            Some((false, "ttl".to_string())),
            "another attribute is turned off before ours is turned on"
        );
        assert_eq!(ttl_change(Some(&S::Disabling), Some("ttl"), "expiresAt"), None);
    }
}
