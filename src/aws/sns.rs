//! SNS topics: ensure each planned topic exists with its tags; delete only topics carrying the owner's tags.

use std::collections::BTreeMap;

use aws_sdk_sns::Client;
use aws_sdk_sns::types::Tag;

use super::error::from_sdk;
use super::{AwsError, Convergence};
use crate::plan::log::TopicPlan;
use crate::plan::names::Owner;

/// The ARN of the topic named `name`, found by listing (read-only) rather than by creating.
async fn find(client: &Client, name: &str) -> Result<Option<String>, AwsError> {
    let suffix = format!(":{name}");
    let mut pages = client.list_topics().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(from_sdk("ListTopics", name))?;
        if let Some(arn) = page
            .topics()
            .iter()
            .filter_map(|t| t.topic_arn())
            .find(|arn| arn.ends_with(&suffix))
        {
            return Ok(Some(arn.to_string()));
        }
    }
    Ok(None)
}

super::key_value_tags!(Tag, list_tags_for_resource(resource_arn) = "ListTagsForResource");

/// Creates the topic or brings its tags in line; returns its ARN. An existing topic of another owner is
/// refused untouched.
pub async fn ensure_topic(client: &Client, plan: &TopicPlan) -> Result<(String, Convergence), AwsError> {
    if let Some(arn) = find(client, &plan.name).await? {
        let have = tags_of(client, &arn).await?;
        super::check_planned_owner(
            "CheckOwner",
            &format!("SNS topic {}", plan.name),
            &plan.tags,
            &have,
        )?;
        let missing = tags(super::missing_tags(&plan.tags, &have))?;
        if missing.is_empty() {
            return Ok((arn, Convergence::Converged));
        }
        client
            .tag_resource()
            .resource_arn(&arn)
            .set_tags(Some(missing))
            .send()
            .await
            .map_err(from_sdk("TagResource", &arn))?;
        return Ok((arn, Convergence::InProgress));
    }
    let planned = tags(plan.tags.iter())?;
    let out = client
        .create_topic()
        .name(&plan.name)
        .set_tags(Some(planned))
        .send()
        .await
        .map_err(from_sdk("CreateTopic", &plan.name))?;
    Ok((out.topic_arn.unwrap_or_default(), Convergence::InProgress))
}

/// Deletes the topic named `name` if `owner` created it; `Ok(false)` when absent or not ours.
pub async fn delete_topic_if_owned(client: &Client, name: &str, owner: &Owner) -> Result<bool, AwsError> {
    let Some(arn) = find(client, name).await? else {
        return Ok(false);
    };
    if !owner.owns(&tags_of(client, &arn).await?) {
        return Ok(false);
    }
    client
        .delete_topic()
        .topic_arn(&arn)
        .send()
        .await
        .map_err(from_sdk("DeleteTopic", name))?;
    Ok(true)
}
