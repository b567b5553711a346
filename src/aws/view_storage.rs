//! Which view object owns a view's storage: the items under a key prefix of a shared views table, or a
//! whole dedicated table (prefix `""`).
//!
//! Names and key prefixes derive from (cluster, namespace, name), so a view deleted with
//! `deletionPolicy: Retain` and created again under the same name would find the items its predecessor
//! projected, and serve them as its own (a Count of 9 where 2 is right). Each location therefore holds an
//! owner item ([`crate::projection::dynamo::storage_owner_key`]) naming the uid of the object whose
//! projector wrote it, claimed before anything is written there:
//!
//! ```text
//! no owner item, nothing stored (or the view wrote there)  ─▶ put {uid: me}, if still absent ─▶ Ours
//! no owner item, items stored (a view from before owners)  ─▶ Retained (no uid)
//! {uid: me}                                                ─▶ Ours
//! {uid: other}, adopt false                                ─▶ Retained: nothing read or written
//! {uid: other | none}, adopt true                          ─▶ put {uid: me, clearing, previous}
//! {uid: me, clearing}                                      ─▶ Clearing: the caller removes what of
//!                                                             `previous` still writes there, then
//!                                                             `clear` deletes the items, drops the flag ─▶ Ours
//! ```
//!
//! Every step is a conditional write on the owner item, so an operator killed between two steps resumes
//! where it stopped (the takeover is recorded before the first item goes). Deleting a location's items
//! (a view deleted with `deletionPolicy: Delete`, a retired version) is for its owner only
//! ([`owner_of`]); a shared table is deleted only when no other owner's items are left in it
//! ([`other_owners`]).

use std::collections::HashMap;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::AttributeValue;

use super::AwsError;
use super::error::from_sdk;
use crate::projection::dynamo::storage_owner_key;
use crate::projection::item_to_dynamodb;

/// The object claiming a location: its uid, and its namespace and name for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimant {
    pub uid: String,
    pub namespace: String,
    pub name: String,
}

/// What [`claim`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The location is the claimant's.
    Ours,
    /// The claimant is taking the location over from `from` (an earlier object's uid; `None`: storage
    /// whose owner was not recorded): the caller removes what of `from` may still write there (its
    /// projector), then calls [`clear`], which deletes the items and makes the location [`Claim::Ours`].
    Clearing { from: Option<String> },
    /// The location holds another object's items, retained when it was deleted (`uid` and `name` as
    /// recorded; `uid` `None`: items written before owners were recorded, or an owner item that cannot
    /// be read); nothing was read or written.
    Retained {
        uid: Option<String>,
        name: String,
        claimed_at: Option<String>,
    },
}

const UID: &str = "uid";
const NAME: &str = "view";
const CLAIMED_AT: &str = "claimedAt";
const CLEARING: &str = "clearing";
const PREVIOUS: &str = "previous";

/// Claims the storage of `prefix` in `table` for `me` (see the module docs); with `adopt`, begins taking
/// over another object's retained items ([`Claim::Clearing`]).
///
/// `written`: the claimant's status shows it wrote there already (a backfill started, a live path ran).
/// A location without an owner item is then claimed at once (storage of a view from before owner items);
/// otherwise only when nothing is stored under the prefix: items there belong to an earlier view whose
/// owner was never recorded ([`Claim::Retained`] with no uid). An owner item without a readable uid
/// counts as the claimant's when it `written`, else as retained.
///
/// Errors: the SDK's, classified (a transient one leaves the claim where it was; call again).
pub async fn claim(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    prefix: &str,
    me: &Claimant,
    adopt: bool,
    written: bool,
) -> Result<Claim, AwsError> {
    let key = item_to_dynamodb(storage_owner_key(prefix));
    // A few rounds: another writer (a second replica during a handover) may change the item between our
    // read and our conditional write.
    for _ in 0..5 {
        let found = owner_item(client, table, &key).await?;
        let text = |item: &HashMap<String, AttributeValue>, a: &str| {
            item.get(a).and_then(|v| v.as_s().ok()).cloned()
        };
        // The uid of the object whose retained items the location holds (`None`: unrecorded or
        // unreadable), when they are not the claimant's.
        let uid = match &found {
            None => {
                if written || !holds_items(client, table, prefix, &key).await? {
                    match put_owner(client, table, &key, me, Mark::Ours, When::Absent).await? {
                        true => return Ok(Claim::Ours),
                        false => continue,
                    }
                }
                None
            }
            Some(item) => match text(item, UID) {
                // Unreadable: the claimant's own when it wrote there, else someone's retained items.
                None if written => {
                    put_owner(client, table, &key, me, Mark::Ours, When::Present).await?;
                    return Ok(Claim::Ours);
                }
                None => None,
                Some(owner) if owner == me.uid => {
                    if !item.get(CLEARING).is_some_and(|v| v.as_bool().is_ok_and(|b| *b)) {
                        return Ok(Claim::Ours);
                    }
                    return Ok(Claim::Clearing { from: text(item, PREVIOUS) });
                }
                Some(owner) => Some(owner),
            },
        };
        if !adopt {
            return Ok(Claim::Retained {
                uid,
                name: found.as_ref().and_then(|i| text(i, NAME)).unwrap_or_default(),
                claimed_at: found.as_ref().and_then(|i| text(i, CLAIMED_AT)),
            });
        }
        // Record the takeover before the first item goes; the next round reports it.
        let when = match (&uid, &found) {
            (Some(owner), _) => When::OwnedBy(owner),
            (None, None) => When::Absent,
            (None, Some(_)) => When::Present,
        };
        let mark = Mark::Clearing { previous: uid.as_deref() };
        put_owner(client, table, &key, me, mark, when).await?;
    }
    // No error code: retried like any transient error.
    Err(AwsError::new(
        "ClaimStorage",
        table,
        "",
        &format!("the owner item of key prefix {prefix:?} kept changing; will try again"),
    ))
}

/// Finishes a takeover [`claim`] reported as [`Claim::Clearing`]: deletes every item under the prefix but
/// the owner item, then marks the location the claimant's. Returns the items deleted.
pub async fn clear(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    prefix: &str,
    me: &Claimant,
) -> Result<u64, AwsError> {
    let key = item_to_dynamodb(storage_owner_key(prefix));
    let pk = key.get("pk").and_then(|v| v.as_s().ok()).cloned();
    let deleted = super::views::delete_items_with_prefix_but(client, table, prefix, pk.as_deref()).await?;
    put_owner(client, table, &key, me, Mark::Ours, When::OwnedBy(&me.uid)).await?;
    Ok(deleted)
}

/// The uid the owner item of `prefix` in `table` names: `Ok(None)` when there is none or it names no
/// readable uid. Deleting a location's items is for its owner only.
pub async fn owner_of(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    prefix: &str,
) -> Result<Option<String>, AwsError> {
    let key = item_to_dynamodb(storage_owner_key(prefix));
    Ok(owner_item(client, table, &key)
        .await?
        .and_then(|item| item.get(UID).and_then(|v| v.as_s().ok()).cloned()))
}

/// The owner items of `table` that name another uid than `uid` (or none readable), as (key prefix,
/// owner): retained storage of other views, which deleting the whole table would take with it. Reads the
/// whole table (a `Scan`); for deleting a shared views table only.
pub async fn other_owners(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    uid: &str,
) -> Result<Vec<(String, String)>, AwsError> {
    let suffix = format!("{}owner", crate::projection::MARKER_INFIX);
    let mut found = Vec::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .filter_expression("contains(pk, :o) AND sk = :s")
            .expression_attribute_values(":o", AttributeValue::S(suffix.clone()))
            .expression_attribute_values(
                ":s",
                AttributeValue::S(crate::projection::dynamo::MARKER_SK.into()),
            )
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(from_sdk("Scan", table))?;
        for item in page.items() {
            let Some(pk) = item.get("pk").and_then(|v| v.as_s().ok()) else {
                continue;
            };
            let Some(prefix) = pk.strip_suffix(&suffix) else {
                continue;
            };
            let owner = item
                .get(UID)
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default();
            if owner != uid {
                found.push((prefix.to_string(), owner));
            }
        }
        start = page.last_evaluated_key;
        if start.is_none() {
            return Ok(found);
        }
    }
}

async fn owner_item(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    key: &HashMap<String, AttributeValue>,
) -> Result<Option<HashMap<String, AttributeValue>>, AwsError> {
    Ok(client
        .get_item()
        .table_name(table)
        .set_key(Some(key.clone()))
        .consistent_read(true)
        .send()
        .await
        .map_err(from_sdk("GetItem", table))?
        .item)
}

/// Whether any item but the owner item is stored under `prefix` (a filtered `Scan` until the first one:
/// at most the whole table, once, when a view first claims a location without an owner item).
async fn holds_items(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    prefix: &str,
    key: &HashMap<String, AttributeValue>,
) -> Result<bool, AwsError> {
    let owner_pk = key.get("pk").cloned().unwrap_or(AttributeValue::S(String::new()));
    let mut start = None;
    loop {
        let mut scan = client
            .scan()
            .table_name(table)
            .projection_expression("pk")
            .expression_attribute_values(":k", owner_pk.clone())
            .set_exclusive_start_key(start);
        scan = match prefix.is_empty() {
            true => scan.filter_expression("pk <> :k"),
            false => scan
                .filter_expression("begins_with(pk, :p) AND pk <> :k")
                .expression_attribute_values(":p", AttributeValue::S(prefix.to_string())),
        };
        let page = scan.send().await.map_err(from_sdk("Scan", table))?;
        if !page.items().is_empty() {
            return Ok(true);
        }
        start = page.last_evaluated_key;
        if start.is_none() {
            return Ok(false);
        }
    }
}

/// Records that `me` takes over the location of `prefix` in `table` from the object of uid `from` (or
/// from nobody, when no owner item is there): the next [`claim`] by `me` reports [`Claim::Clearing`]. For
/// a dedicated table, before it is re-tagged (see `crate::aws::dynamodb`).
pub async fn begin_takeover(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    prefix: &str,
    me: &Claimant,
    from: &str,
) -> Result<(), AwsError> {
    let key = item_to_dynamodb(storage_owner_key(prefix));
    let mark = Mark::Clearing { previous: Some(from) };
    if !put_owner(client, table, &key, me, mark, When::AbsentOrOwnedBy(from)).await? {
        // Already someone else's (ours, a retry after the re-tag failed): leave it to `claim`.
        tracing::info!(%table, %prefix, "the owner item changed before the takeover was recorded");
    }
    Ok(())
}

/// What an owner item says of its location besides its claimant.
#[derive(Clone, Copy)]
enum Mark<'a> {
    /// The claimant's, ready.
    Ours,
    /// Being cleared for the claimant (a takeover), from `previous` (its uid) when there was one.
    Clearing { previous: Option<&'a str> },
}

/// When an owner item may be written (a DynamoDB condition expression).
#[derive(Clone, Copy)]
enum When<'a> {
    /// No owner item yet.
    Absent,
    /// An owner item, whoever's.
    Present,
    /// The owner item names this uid.
    OwnedBy(&'a str),
    /// No owner item yet, or one naming this uid.
    AbsentOrOwnedBy(&'a str),
}

/// Puts the owner item naming `me`, marked `mark`, if `when` holds; false when it did not.
async fn put_owner(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    key: &HashMap<String, AttributeValue>,
    me: &Claimant,
    mark: Mark<'_>,
    when: When<'_>,
) -> Result<bool, AwsError> {
    let mut item = key.clone();
    item.insert(UID.into(), AttributeValue::S(me.uid.clone()));
    item.insert(
        NAME.into(),
        AttributeValue::S(format!("{}/{}", me.namespace, me.name)),
    );
    item.insert(
        CLAIMED_AT.into(),
        AttributeValue::S(k8s_openapi::jiff::Timestamp::now().to_string()),
    );
    if let Mark::Clearing { previous } = mark {
        item.insert(CLEARING.into(), AttributeValue::Bool(true));
        if let Some(previous) = previous {
            item.insert(PREVIOUS.into(), AttributeValue::S(previous.to_string()));
        }
    }
    let (condition, expected) = match when {
        When::Absent => ("attribute_not_exists(pk)", None),
        When::Present => ("attribute_exists(pk)", None),
        When::OwnedBy(uid) => ("#u = :u", Some(uid)),
        When::AbsentOrOwnedBy(uid) => ("attribute_not_exists(pk) OR #u = :u", Some(uid)),
    };
    let mut put = client
        .put_item()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression(condition);
    if let Some(expected) = expected {
        put = put
            .expression_attribute_names("#u", UID)
            .expression_attribute_values(":u", AttributeValue::S(expected.to_string()));
    }
    match put.send().await {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(false),
        Err(e) => Err(from_sdk("PutItem", table)(e)),
    }
}
