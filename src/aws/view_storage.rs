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
//! no owner item                  ─▶ put {uid: me}, if still absent            ─▶ Ours
//! {uid: me}                      ─▶ Ours
//! {uid: other}, adopt false      ─▶ Retained (nothing is read or written there)
//! {uid: other}, adopt true       ─▶ put {uid: me, clearing}, if still other's ─┐
//! {uid: me, clearing}            ─▶ delete every other item under the prefix ◀─┘
//!                                   then drop `clearing`                      ─▶ Ours (rebuilt from the log)
//! ```
//!
//! Every step is a conditional write on the owner item, so an operator killed between two steps resumes
//! where it stopped (the clearing is recorded before the first item goes, and the item goes last).
//! Storage written before owner items existed has none: its view claims it on its next reconcile.

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
    /// The location is the claimant's. `cleared`: items of an earlier object deleted now (adoption).
    Ours { cleared: Option<u64> },
    /// The location holds the items of another object (`uid`, `name` as it recorded them), retained
    /// when it was deleted; nothing was read or written.
    Retained {
        uid: String,
        name: String,
        claimed_at: Option<String>,
    },
}

const UID: &str = "uid";
const NAME: &str = "view";
const CLAIMED_AT: &str = "claimedAt";
const CLEARING: &str = "clearing";

/// Claims the storage of `prefix` in `table` for `me` (see the module docs); with `adopt`, takes over
/// another object's retained items by deleting them first.
///
/// Errors: the SDK's, classified (a transient one leaves the claim where it was; call again).
pub async fn claim(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    prefix: &str,
    me: &Claimant,
    adopt: bool,
) -> Result<Claim, AwsError> {
    let key = item_to_dynamodb(storage_owner_key(prefix));
    // A few rounds: another writer (a second replica during a handover) may change the item between our
    // read and our conditional write.
    for _ in 0..5 {
        let found = client
            .get_item()
            .table_name(table)
            .set_key(Some(key.clone()))
            .consistent_read(true)
            .send()
            .await
            .map_err(from_sdk("GetItem", table))?
            .item;
        let text = |item: &HashMap<String, AttributeValue>, a: &str| {
            item.get(a).and_then(|v| v.as_s().ok()).cloned()
        };
        let Some(item) = found else {
            match put_owner(client, table, &key, me, false, "attribute_not_exists(pk)", None).await? {
                true => return Ok(Claim::Ours { cleared: None }),
                false => continue,
            }
        };
        let owner = text(&item, UID).unwrap_or_default();
        if owner == me.uid {
            if !item.get(CLEARING).is_some_and(|v| v.as_bool().is_ok_and(|b| *b)) {
                return Ok(Claim::Ours { cleared: None });
            }
            let pk = key.get("pk").and_then(|v| v.as_s().ok()).cloned();
            let deleted =
                super::views::delete_items_with_prefix_but(client, table, prefix, pk.as_deref()).await?;
            let done = put_owner(client, table, &key, me, false, "#u = :u", Some(&me.uid)).await?;
            if done {
                return Ok(Claim::Ours {
                    cleared: Some(deleted),
                });
            }
            continue;
        }
        if !adopt {
            return Ok(Claim::Retained {
                uid: owner,
                name: text(&item, NAME).unwrap_or_default(),
                claimed_at: text(&item, CLAIMED_AT),
            });
        }
        // Record the takeover before the first item goes; the next round clears.
        put_owner(client, table, &key, me, true, "#u = :u", Some(&owner)).await?;
    }
    // No error code: retried like any transient error.
    Err(AwsError::new(
        "ClaimStorage",
        table,
        "",
        &format!("the owner item of key prefix {prefix:?} kept changing; will try again"),
    ))
}

/// Records that `me` takes over the location of `prefix` in `table` from the object of uid `from` (or
/// from nobody, when no owner item is there): the next [`claim`] by `me` deletes every item under the
/// prefix first. For a dedicated table, before it is re-tagged (see `crate::aws::dynamodb`).
pub async fn begin_takeover(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    prefix: &str,
    me: &Claimant,
    from: &str,
) -> Result<(), AwsError> {
    let key = item_to_dynamodb(storage_owner_key(prefix));
    let condition = "attribute_not_exists(pk) OR #u = :u";
    if !put_owner(client, table, &key, me, true, condition, Some(from)).await? {
        // Already someone else's (ours, a retry after the re-tag failed): leave it to `claim`.
        tracing::info!(%table, %prefix, "the owner item changed before the takeover was recorded");
    }
    Ok(())
}

/// Puts the owner item naming `me` if `condition` holds (`:u` = `expected`); false when it did not.
async fn put_owner(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    key: &HashMap<String, AttributeValue>,
    me: &Claimant,
    clearing: bool,
    condition: &str,
    expected: Option<&str>,
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
    if clearing {
        item.insert(CLEARING.into(), AttributeValue::Bool(true));
    }
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
