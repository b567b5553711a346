//! DynamoDB tables: ensure a table matches its plan (keys, billing, stream, PITR, deletion protection,
//! time to live, tags), one change at a time as DynamoDB requires; delete only a table carrying the
//! owner's tags.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode as DdbBilling, KeySchemaElement, KeyType,
    PointInTimeRecoverySpecification, ProvisionedThroughput, ScalarAttributeType, StreamSpecification,
    StreamViewType as DdbView, TableDescription, TableStatus, Tag, TimeToLiveSpecification, TimeToLiveStatus,
    WriteRequest,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;

use super::error::from_sdk;
use super::{AwsError, Convergence};
use crate::crd::{BillingMode, StreamViewType};
use crate::plan::log::TablePlan;
use crate::plan::names::{Owner, Ownership, tag_keys};

/// The refusal of an adoption: the table, why, and the setting that decides.
fn adoption_refused(plan: &TablePlan, why: &dyn std::fmt::Display) -> AwsError {
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
    /// Declared settings the table does not have and the operator leaves as they are: an adopted
    /// table's billing, capacity and point-in-time recovery (see [`settings_not_applied`]). One line each,
    /// naming the field, the declared and the actual setting.
    pub not_applied: Vec<String>,
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
                not_applied: Vec::new(),
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
                &format_args!(
                    "it exists and kappa-operator did not create it; to use an existing table set \
                     spec.table.adoptExisting: true (and {})",
                    plan.adoption.as_ref().err().map_or_else(
                        || "the operator's configuration allows it".to_string(),
                        ToString::to_string
                    )
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
        // A views table an earlier view of the same name retained (see `crate::aws::view_storage`). Any
        // other object's (an EventLog's table retained by an earlier log of its name) is another owner.
        (Ownership::Other(_), _)
            if plan.owner.kind == crate::plan::view::VIEW_KIND
                && plan.owner.predecessor_uid(&have).is_some() =>
        {
            let earlier = plan.owner.predecessor_uid(&have).unwrap_or_default();
            return take_over_predecessor(client, plan, &arn, &earlier)
                .await
                .map(|()| TableState {
                    arn: arn.clone(),
                    stream_arn: table.latest_stream_arn().map(str::to_string),
                    convergence: Convergence::InProgress,
                    created: table.creation_date_time().map(|t| t.as_secs_f64()),
                    not_applied: Vec::new(),
                });
        }
        (Ownership::Other(_), _) => {
            super::check_owned("CheckOwner", &what, &plan.owner, &have)?;
        }
    }
    let mut state = TableState {
        arn: arn.clone(),
        stream_arn: table.latest_stream_arn().map(str::to_string),
        convergence: Convergence::InProgress,
        created: table.creation_date_time().map(|t| t.as_secs_f64()),
        not_applied: Vec::new(),
    };
    check_keys(plan, &table)?;
    if table.table_status() != Some(&TableStatus::Active) {
        return Ok(state);
    }
    // Stream and deletion protection first; a billing or capacity change last, so that AWS refusing it
    // (a switch or decrease limit) leaves every other setting converged.
    let changes = table_changes(plan, &table)?;
    if let Some(change) = changes.iter().find(|c| !c.is_capacity()) {
        apply_change(client, plan, change).await?;
        return Ok(state);
    }
    // Point-in-time recovery, both ways, on a table whose settings are converged; read on an adopted one
    // to report a difference.
    let pitr = if plan.converge_settings || plan.adopted {
        pitr_enabled(client, &plan.name).await?
    } else {
        plan.point_in_time_recovery
    };
    if plan.converge_settings && pitr != plan.point_in_time_recovery {
        client
            .update_continuous_backups()
            .table_name(&plan.name)
            .point_in_time_recovery_specification(
                PointInTimeRecoverySpecification::builder()
                    .point_in_time_recovery_enabled(plan.point_in_time_recovery)
                    .build()?,
            )
            .send()
            .await
            .map_err(|e| {
                let e = from_sdk("UpdateContinuousBackups", &plan.name)(e);
                refusal_of(plan, "spec.table.pointInTimeRecovery", e)
            })?;
        return Ok(state);
    }
    if let Some(attribute) = &plan.time_to_live_attribute
        && ttl_update_needed(client, &plan.name, attribute).await?
    {
        return Ok(state);
    }
    if !plan.adopted && tag_if_needed(client, &arn, &plan.tags, &have).await? {
        return Ok(state);
    }
    if let Some(change) = changes.first() {
        apply_change(client, plan, change).await?;
        return Ok(state);
    }
    if plan.adopted {
        state.not_applied = settings_not_applied(plan, &table, pitr);
    }
    state.convergence = Convergence::Converged;
    Ok(state)
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
        (BillingMode::Provisioned, Some((read, write))) => req
            .billing_mode(DdbBilling::Provisioned)
            .provisioned_throughput(throughput(read, write)?),
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
        not_applied: Vec::new(),
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

/// One `UpdateTable` change. DynamoDB takes one change of a table at a time (a second `UpdateTable`
/// while the table is `UPDATING` fails with `ResourceInUseException`), so [`ensure_table`] makes one per
/// pass and the reconcile requeues until the table is converged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableChange {
    /// Turn the stream on with this view type (the table has none enabled).
    EnableStream(StreamViewType),
    /// Turn deletion protection on or off.
    DeletionProtection(bool),
    /// Switch a provisioned table to on-demand (`PAY_PER_REQUEST`). AWS allows this up to four times in
    /// a 24-hour rolling window ("Considerations when switching capacity modes in DynamoDB",
    /// <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/switching.capacitymode.html>);
    /// beyond, `UpdateTable` fails with `LimitExceededException`.
    OnDemand,
    /// Switch an on-demand table to provisioned with (read, write) capacity units: allowed at any time
    /// (same page); the capacity must be given in the same call.
    Provisioned { read: i64, write: i64 },
    /// Set a provisioned table's (read, write) capacity units. Increases are allowed at any time;
    /// decreases only a limited number of times per UTC day ("Quotas in Amazon DynamoDB", Decreasing
    /// provisioned throughput: four at any time, then one per hour without a decrease, 27 a day;
    /// <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html>); beyond,
    /// `UpdateTable` fails with `LimitExceededException`.
    Capacity { read: i64, write: i64 },
}

impl TableChange {
    /// A billing mode or capacity change: made after every other setting (see [`ensure_table`]).
    pub fn is_capacity(&self) -> bool {
        matches!(
            self,
            TableChange::OnDemand | TableChange::Provisioned { .. } | TableChange::Capacity { .. }
        )
    }

    /// The spec field the change applies.
    pub fn field(&self) -> &'static str {
        match self {
            TableChange::EnableStream(_) => "spec.table.streamViewType",
            TableChange::DeletionProtection(_) => "spec.deletionPolicy",
            TableChange::OnDemand | TableChange::Provisioned { .. } => "spec.table.billing.mode",
            TableChange::Capacity { .. } => "spec.table.billing (readCapacityUnits, writeCapacityUnits)",
        }
    }
}

/// A table's billing mode and its provisioned (read, write) capacity units. The mode is
/// `BillingModeSummary.BillingMode`; a table without a summary (created provisioned before on-demand
/// existed) is provisioned when it has capacity. On-demand tables report capacity 0/0 on AWS.
pub fn billing_of(table: &TableDescription) -> (BillingMode, (i64, i64)) {
    let throughput = table.provisioned_throughput();
    let capacity = (
        throughput.and_then(|t| t.read_capacity_units()).unwrap_or(0),
        throughput.and_then(|t| t.write_capacity_units()).unwrap_or(0),
    );
    let mode = match table.billing_mode_summary().and_then(|s| s.billing_mode()) {
        Some(DdbBilling::PayPerRequest) => BillingMode::OnDemand,
        Some(DdbBilling::Provisioned) => BillingMode::Provisioned,
        _ if capacity.0 > 0 || capacity.1 > 0 => BillingMode::Provisioned,
        _ => BillingMode::OnDemand,
    };
    (mode, capacity)
}

/// The `UpdateTable` changes that bring `table` to `plan`, in the order [`ensure_table`] makes them
/// (stream, deletion protection, then billing). Billing and capacity only when
/// [`TablePlan::converge_settings`]; deletion protection never on an adopted table.
///
/// An enabled stream whose view type differs from the plan's is refused (`Err`, code
/// [`super::error::TABLE_SETTING_REFUSED`]), never changed: DynamoDB fixes a stream's view type while it
/// is enabled, and turning it off and on again starts a new stream, so records written in between
/// would be in no stream and readers would jump to the new stream with no gap reported.
pub fn table_changes(plan: &TablePlan, table: &TableDescription) -> Result<Vec<TableChange>, AwsError> {
    let stream = table.stream_specification();
    let enabled = stream.is_some_and(|s| s.stream_enabled());
    let current_view = stream.and_then(|s| s.stream_view_type()).cloned();
    let mut changes = Vec::new();
    match plan.stream {
        Some(view) if enabled && current_view.as_ref() != Some(&view_type(view)) => {
            let actual = current_view.as_ref().map(|v| v.as_str()).unwrap_or("unknown");
            return Err(AwsError::refused(
                "CheckStream",
                format!("DynamoDB table {}", plan.name),
                super::error::TABLE_SETTING_REFUSED,
                format!(
                    "spec.table.streamViewType is {view:?} but table {}'s enabled stream has view type {actual}: a \
                     DynamoDB stream's view type is fixed while it is enabled, and re-enabling starts a new stream \
                     (records written in between would be in no stream), so the operator does not change it; set \
                     spec.table.streamViewType back to the table's ({}), or create a new EventLog (and replay)",
                    plan.name,
                    match current_view {
                        Some(DdbView::NewImage) => "NewImage",
                        Some(DdbView::NewAndOldImages) => "NewAndOldImages",
                        _ => "a view type the log cannot use: KEYS_ONLY and OLD_IMAGE carry no new image",
                    }
                ),
            ));
        }
        Some(view) if !enabled => changes.push(TableChange::EnableStream(view)),
        _ => {}
    }
    if !plan.adopted && table.deletion_protection_enabled() != Some(plan.deletion_protection) {
        changes.push(TableChange::DeletionProtection(plan.deletion_protection));
    }
    if plan.converge_settings {
        let (mode, capacity) = billing_of(table);
        match (plan.billing, plan.capacity) {
            (BillingMode::OnDemand, _) if mode == BillingMode::Provisioned => {
                changes.push(TableChange::OnDemand)
            }
            (BillingMode::Provisioned, Some((read, write))) if mode == BillingMode::OnDemand => {
                changes.push(TableChange::Provisioned { read, write })
            }
            (BillingMode::Provisioned, Some((read, write))) if capacity != (read, write) => {
                changes.push(TableChange::Capacity { read, write })
            }
            _ => {}
        }
    }
    Ok(changes)
}

/// Declared settings an adopted table does not have: the operator never changes an adopted table's
/// billing, capacity or point-in-time recovery (it is the user's table; a switch of capacity mode or a
/// decrease is limited by AWS per day, and PITR costs and protects what the user decides), so the
/// difference is reported in the status instead. Empty when they match, or for a table not adopted.
pub fn settings_not_applied(plan: &TablePlan, table: &TableDescription, pitr: bool) -> Vec<String> {
    if !plan.adopted {
        return Vec::new();
    }
    let mut out = Vec::new();
    let (mode, capacity) = billing_of(table);
    let describe = |mode: BillingMode, capacity: Option<(i64, i64)>| match (mode, capacity) {
        (BillingMode::Provisioned, Some((r, w))) => format!("Provisioned {r}/{w}"),
        (mode, _) => format!("{mode:?}"),
    };
    let declared = describe(plan.billing, plan.capacity);
    let actual = describe(mode, (mode == BillingMode::Provisioned).then_some(capacity));
    if declared != actual {
        out.push(format!(
            "spec.table.billing: declared {declared}, the adopted table is {actual} (an adopted table's billing is \
             not changed: change the table yourself, or the spec to match)"
        ));
    }
    if pitr != plan.point_in_time_recovery {
        out.push(format!(
            "spec.table.pointInTimeRecovery: declared {}, the adopted table has it {} (an adopted table's point-in-time \
             recovery is not changed: change the table yourself, or the spec to match; Export backfills need it on)",
            plan.point_in_time_recovery,
            if pitr { "on" } else { "off" }
        ));
    }
    out
}

/// Makes one `UpdateTable` change. AWS refusing a settings change (`LimitExceededException`: a switch
/// or decrease limit; `ValidationException`) becomes a [`super::error::TABLE_SETTING_REFUSED`] error
/// naming the field and the fix; anything else (`ResourceInUseException` while the table is updating,
/// throttling) is returned as it is.
async fn apply_change(client: &Client, plan: &TablePlan, change: &TableChange) -> Result<(), AwsError> {
    let update = client.update_table().table_name(&plan.name);
    let update = match change {
        TableChange::EnableStream(view) => update.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(view_type(*view))
                .build()?,
        ),
        TableChange::DeletionProtection(on) => update.deletion_protection_enabled(*on),
        TableChange::OnDemand => update.billing_mode(DdbBilling::PayPerRequest),
        TableChange::Provisioned { read, write } => update
            .billing_mode(DdbBilling::Provisioned)
            .provisioned_throughput(throughput(*read, *write)?),
        TableChange::Capacity { read, write } => update.provisioned_throughput(throughput(*read, *write)?),
    };
    update
        .send()
        .await
        .map_err(|e| refusal_of(plan, change.field(), from_sdk("UpdateTable", &plan.name)(e)))?;
    Ok(())
}

fn throughput(read: i64, write: i64) -> Result<ProvisionedThroughput, AwsError> {
    Ok(ProvisionedThroughput::builder()
        .read_capacity_units(read)
        .write_capacity_units(write)
        .build()?)
}

/// AWS refusing a change of `field` (`LimitExceededException`, `ValidationException`) as a
/// [`super::error::TABLE_SETTING_REFUSED`] error whose message keeps AWS's code and message and adds the
/// field and the fix; other errors unchanged.
pub fn refusal_of(plan: &TablePlan, field: &str, e: AwsError) -> AwsError {
    let limit = match field {
        "spec.table.billing.mode" => {
            "a table may switch from provisioned to on-demand at most 4 times in a 24-hour rolling window"
        }
        f if f.starts_with("spec.table.billing") => {
            "a table's provisioned capacity may be decreased only a limited number of times per UTC day"
        }
        _ => "AWS limits how often this change may be made",
    };
    let fix = match e.code.as_str() {
        "LimitExceededException" => format!(
            "{limit}: the operator tries again at every resync until AWS accepts it; to stop, set {field} back to \
             the table's current setting"
        ),
        "ValidationException" => format!("AWS does not accept this setting for the table: change {field}"),
        _ => return e,
    };
    AwsError::refused(
        e.operation,
        e.resource.clone(),
        super::error::TABLE_SETTING_REFUSED,
        format!(
            "AWS refused to apply {field} to table {}: {}: {}; {fix}",
            plan.name, e.code, e.message
        ),
    )
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
    super::tag_resource_with!(client, arn, missing)
}

/// One `BatchWriteItem` of `requests` (at most 25) to `table`. Returns the requests DynamoDB left
/// unprocessed, its `UnprocessedItems` for `table` (throttling), for the caller to send again after a
/// backoff ([BatchWriteItem](https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_BatchWriteItem.html)).
///
/// # Errors
/// The SDK's error, for the caller to classify (a `ValidationException` names a bad item).
pub async fn batch_write_once(
    client: &Client,
    table: &str,
    requests: Vec<WriteRequest>,
) -> Result<Vec<WriteRequest>, SdkError<BatchWriteItemError, HttpResponse>> {
    let out = client
        .batch_write_item()
        .request_items(table, requests)
        .send()
        .await?;
    Ok(out
        .unprocessed_items
        .and_then(|mut tables| tables.remove(table))
        .unwrap_or_default())
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
    use aws_sdk_dynamodb::types::{
        BillingModeSummary, ProvisionedThroughputDescription, StreamSpecification, TableDescription,
        TimeToLiveStatus as S,
    };

    use super::*;
    use crate::crd::EventLog;

    fn plan(spec: &str) -> TablePlan {
        let log: EventLog = serde_yaml::from_str(&format!(
            "apiVersion: kappa.dev/v1alpha1\nkind: EventLog\nmetadata: {{name: l, namespace: n}}\nspec:\n  \
             recordTypes: [a]\n  table: {spec}\n"
        ))
        .unwrap();
        crate::plan::log::plan_log("test", &log, crate::plan::NO_VIEWS).table
    }

    /// A table as DescribeTable shows it: billing (None: no summary), capacity, stream view (None: off).
    fn table(billing: Option<DdbBilling>, capacity: (i64, i64), stream: Option<DdbView>) -> TableDescription {
        let mut t = TableDescription::builder()
            .deletion_protection_enabled(true)
            .provisioned_throughput(
                ProvisionedThroughputDescription::builder()
                    .read_capacity_units(capacity.0)
                    .write_capacity_units(capacity.1)
                    .build(),
            )
            .stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(stream.is_some())
                    .set_stream_view_type(stream)
                    .build()
                    .unwrap(),
            );
        if let Some(b) = billing {
            t = t.billing_mode_summary(BillingModeSummary::builder().billing_mode(b).build());
        }
        t.build()
    }

    const BOTH: Option<DdbView> = Some(DdbView::NewAndOldImages);

    #[test]
    fn billing_changes_follow_the_spec_one_kind_at_a_time() {
        let on_demand = table(Some(DdbBilling::PayPerRequest), (0, 0), BOTH);
        assert_eq!(table_changes(&plan("{}"), &on_demand).unwrap(), []);
        let p55 = plan("{billing: {mode: Provisioned, readCapacityUnits: 5, writeCapacityUnits: 5}}");
        assert_eq!(
            table_changes(&p55, &on_demand).unwrap(),
            [TableChange::Provisioned { read: 5, write: 5 }],
            "a switch carries the capacity in the same call"
        );
        let at55 = table(Some(DdbBilling::Provisioned), (5, 5), BOTH);
        assert_eq!(table_changes(&p55, &at55).unwrap(), []);
        let p5020 = plan("{billing: {mode: Provisioned, readCapacityUnits: 50, writeCapacityUnits: 20}}");
        assert_eq!(
            table_changes(&p5020, &at55).unwrap(),
            [TableChange::Capacity { read: 50, write: 20 }]
        );
        assert_eq!(
            table_changes(&plan("{}"), &at55).unwrap(),
            [TableChange::OnDemand]
        );
        // An on-demand table whose throughput still shows old numbers (as moto reports them) is on-demand.
        let stale = table(Some(DdbBilling::PayPerRequest), (5, 5), BOTH);
        assert_eq!(table_changes(&plan("{}"), &stale).unwrap(), []);
        // No summary (a table created provisioned before on-demand existed): provisioned by its capacity.
        let old = table(None, (5, 5), BOTH);
        assert_eq!(billing_of(&old), (BillingMode::Provisioned, (5, 5)));
        assert_eq!(table_changes(&p55, &old).unwrap(), []);
        assert_eq!(billing_of(&table(None, (0, 0), BOTH)).0, BillingMode::OnDemand);
    }

    #[test]
    fn the_stream_and_deletion_protection_come_before_billing() {
        let p = plan("{billing: {mode: Provisioned, readCapacityUnits: 5, writeCapacityUnits: 5}}");
        let mut t = table(Some(DdbBilling::PayPerRequest), (0, 0), None);
        t.deletion_protection_enabled = Some(false);
        let changes = table_changes(&p, &t).unwrap();
        assert_eq!(
            changes,
            [
                TableChange::EnableStream(StreamViewType::NewAndOldImages),
                TableChange::DeletionProtection(true),
                TableChange::Provisioned { read: 5, write: 5 },
            ]
        );
        assert_eq!(
            changes.iter().map(TableChange::is_capacity).collect::<Vec<_>>(),
            [false, false, true]
        );
    }

    #[test]
    fn an_enabled_stream_of_another_view_type_is_refused_never_disabled() {
        let p = plan("{streamViewType: NewImage}");
        for (actual, named) in [
            (DdbView::NewAndOldImages, "NEW_AND_OLD_IMAGES"),
            (DdbView::KeysOnly, "KEYS_ONLY"),
        ] {
            let e =
                table_changes(&p, &table(Some(DdbBilling::PayPerRequest), (0, 0), Some(actual))).unwrap_err();
            assert_eq!(e.code, crate::aws::error::TABLE_SETTING_REFUSED);
            assert!(!e.retryable);
            assert!(
                e.message.contains("spec.table.streamViewType")
                    && e.message.contains(named)
                    && e.message.contains("create a new EventLog"),
                "{e}"
            );
        }
        assert_eq!(
            crate::controller::status::aws_reason(
                &table_changes(&p, &table(Some(DdbBilling::PayPerRequest), (0, 0), BOTH)).unwrap_err()
            ),
            crate::crd::reasons::TABLE_SETTING_REFUSED
        );
    }

    #[test]
    fn an_adopted_table_keeps_its_settings_and_the_difference_is_listed() {
        let p = plan(
            "{name: legacy, adoptExisting: true, pointInTimeRecovery: true, billing: {mode: Provisioned, \
             readCapacityUnits: 5, writeCapacityUnits: 5}}",
        );
        assert!(p.adopted && !p.converge_settings);
        let t = table(Some(DdbBilling::PayPerRequest), (0, 0), BOTH);
        assert_eq!(
            table_changes(&p, &t).unwrap(),
            [],
            "no billing change, no deletion protection"
        );
        let notes = settings_not_applied(&p, &t, false);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("spec.table.billing") && notes[0].contains("Provisioned 5/5"));
        assert!(notes[0].contains("OnDemand"), "{}", notes[0]);
        assert!(notes[1].contains("spec.table.pointInTimeRecovery"));
        assert_eq!(
            settings_not_applied(&p, &table(Some(DdbBilling::Provisioned), (5, 5), BOTH), true),
            Vec::<String>::new()
        );
        assert!(
            settings_not_applied(&plan("{}"), &t, false).is_empty(),
            "only adopted tables"
        );
    }

    #[test]
    fn views_tables_keep_settings_changed_by_hand() {
        let mut p = plan("{}");
        p.converge_settings = false;
        p.adopted = false;
        let t = table(Some(DdbBilling::Provisioned), (5, 5), BOTH);
        assert_eq!(table_changes(&p, &t).unwrap(), []);
    }

    #[test]
    fn aws_refusals_name_the_code_the_field_and_the_fix() {
        let p = plan("{}");
        let aws = AwsError::new(
            "UpdateTable",
            &p.name,
            "LimitExceededException",
            "Subscriber limit exceeded: Update to PayPerRequest mode are limited",
        );
        assert!(
            aws.retryable,
            "LimitExceeded alone is taken for a transient limit"
        );
        let e = refusal_of(&p, TableChange::OnDemand.field(), aws);
        assert_eq!(e.code, crate::aws::error::TABLE_SETTING_REFUSED);
        assert!(!e.retryable);
        let text = e.to_string();
        assert!(
            text.contains("LimitExceededException")
                && text.contains("spec.table.billing.mode")
                && text.contains("24-hour")
                && text.contains("set spec.table.billing.mode back"),
            "{text}"
        );
        let field = TableChange::Capacity { read: 1, write: 1 }.field();
        let e = refusal_of(
            &p,
            field,
            AwsError::new("UpdateTable", "t", "LimitExceededException", "decreases"),
        );
        assert!(
            e.message.contains("decreased") && e.message.contains("readCapacityUnits"),
            "{e}"
        );
        let e = refusal_of(
            &p,
            field,
            AwsError::new("UpdateTable", "t", "ValidationException", "bad"),
        );
        assert!(
            e.message.contains("ValidationException") && e.message.contains(field),
            "{e}"
        );
        let busy = AwsError::new("UpdateTable", "t", "ResourceInUseException", "updating");
        assert_eq!(
            refusal_of(&p, field, busy.clone()),
            busy,
            "still retried as before"
        );
    }

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
