//! IAM roles of the built-in functions: the trust policy (Lambda only), one inline policy named `kappa`
//! with the planned least-privilege statements, and the owner's tags. Policy documents are compared as
//! JSON, so a reconcile of an unchanged role changes nothing; IAM returns documents URL-encoded, which is
//! decoded first (a document that is already plain JSON is read as it is).

use std::collections::BTreeMap;

use aws_sdk_iam::Client;
use aws_sdk_iam::types::Tag;
use serde_json::Value;

use super::error::from_sdk;
use super::{AwsError, Convergence};
use crate::plan::log::RolePlan;
use crate::plan::names::Owner;

/// The name of the single inline policy of every role.
pub const POLICY_NAME: &str = "kappa";

/// Reads a policy document as IAM returns it: URL-encoded JSON, or plain JSON.
pub fn parse_document(text: &str) -> Option<Value> {
    serde_json::from_str(text)
        .ok()
        .or_else(|| serde_json::from_str(&percent_decode(text)?).ok())
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

super::key_value_tags!(Tag, list_role_tags(role_name) = "ListRoleTags");

/// Creates the role or brings its permissions boundary, trust policy, inline policy and tags in line;
/// returns its ARN. `boundary` is the ARN of the managed policy every role of the operator carries as its
/// permissions boundary (see the chart's docs/iam-policy.md): the operator's own policy lets it create
/// and change roles only with it. An existing role of another owner is refused before anything changes.
pub async fn ensure_role(
    client: &Client,
    plan: &RolePlan,
    boundary: &str,
) -> Result<(String, Convergence), AwsError> {
    let existing = match client
        .get_role()
        .role_name(&plan.name)
        .send()
        .await
        .map_err(from_sdk("GetRole", &plan.name))
    {
        Ok(out) => out.role,
        Err(e) if e.is_not_found() || e.code == "NoSuchEntity" => None,
        Err(e) => Err(e)?,
    };
    let mut convergence = Convergence::Converged;
    let arn = match existing {
        None => {
            let planned = tags(plan.tags.iter())?;
            let out = client
                .create_role()
                .role_name(&plan.name)
                .assume_role_policy_document(plan.trust.to_string())
                .description(format!("kappa-operator: {}", plan.role))
                .permissions_boundary(boundary)
                .set_tags(Some(planned))
                .send()
                .await
                .map_err(from_sdk("CreateRole", &plan.name))?;
            convergence = Convergence::InProgress;
            out.role.map(|r| r.arn).unwrap_or_default()
        }
        Some(role) => {
            let have = tags_of(client, &plan.name).await?;
            super::check_planned_owner(
                "CheckOwner",
                &format!("IAM role {}", plan.name),
                &plan.tags,
                &have,
            )?;
            let current_boundary = role
                .permissions_boundary()
                .and_then(|b| b.permissions_boundary_arn());
            if current_boundary != Some(boundary) {
                client
                    .put_role_permissions_boundary()
                    .role_name(&plan.name)
                    .permissions_boundary(boundary)
                    .send()
                    .await
                    .map_err(from_sdk("PutRolePermissionsBoundary", &plan.name))?;
                convergence = Convergence::InProgress;
            }
            if role
                .assume_role_policy_document()
                .and_then(parse_document)
                .as_ref()
                != Some(&plan.trust)
            {
                client
                    .update_assume_role_policy()
                    .role_name(&plan.name)
                    .policy_document(plan.trust.to_string())
                    .send()
                    .await
                    .map_err(from_sdk("UpdateAssumeRolePolicy", &plan.name))?;
                convergence = Convergence::InProgress;
            }
            let missing = tags(super::missing_tags(&plan.tags, &have))?;
            if !missing.is_empty() {
                client
                    .tag_role()
                    .role_name(&plan.name)
                    .set_tags(Some(missing))
                    .send()
                    .await
                    .map_err(from_sdk("TagRole", &plan.name))?;
                convergence = Convergence::InProgress;
            }
            role.arn
        }
    };
    let current = match client
        .get_role_policy()
        .role_name(&plan.name)
        .policy_name(POLICY_NAME)
        .send()
        .await
        .map_err(from_sdk("GetRolePolicy", &plan.name))
    {
        Ok(out) => parse_document(&out.policy_document),
        Err(e) if e.is_not_found() || e.code == "NoSuchEntity" => None,
        Err(e) => Err(e)?,
    };
    if current.as_ref() != Some(&plan.policy) {
        client
            .put_role_policy()
            .role_name(&plan.name)
            .policy_name(POLICY_NAME)
            .policy_document(plan.policy.to_string())
            .send()
            .await
            .map_err(from_sdk("PutRolePolicy", &plan.name))?;
        convergence = Convergence::InProgress;
    }
    Ok((arn, convergence))
}

/// Deletes the role (its inline policy first) if `owner` created it; `Ok(false)` when absent or not ours.
pub async fn delete_role_if_owned(client: &Client, name: &str, owner: &Owner) -> Result<bool, AwsError> {
    let tags = match tags_of(client, name).await {
        Ok(tags) => tags,
        Err(e) if e.is_not_found() || e.code == "NoSuchEntity" => return Ok(false),
        Err(e) => return Err(e),
    };
    if !owner.owns(&tags) {
        return Ok(false);
    }
    let deleted_policy = client
        .delete_role_policy()
        .role_name(name)
        .policy_name(POLICY_NAME)
        .send()
        .await;
    if let Err(e) = deleted_policy.map_err(from_sdk("DeleteRolePolicy", name))
        && !(e.is_not_found() || e.code == "NoSuchEntity")
    {
        return Err(e);
    }
    client
        .delete_role()
        .role_name(name)
        .send()
        .await
        .map_err(from_sdk("DeleteRole", name))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_read_url_encoded_or_plain() {
        let doc = serde_json::json!({"Version": "2012-10-17", "Statement": []});
        assert_eq!(parse_document(&doc.to_string()), Some(doc.clone()));
        let encoded = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%5D%7D";
        assert_eq!(parse_document(encoded), Some(doc));
        assert_eq!(parse_document("%ZZ"), None);
    }
}
