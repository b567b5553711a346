//! SQS queues: ensure the ingest queue exists with its tags; delete only a queue carrying the owner's tags.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;

use super::error::from_sdk;
use super::{AwsError, Convergence};
use crate::plan::log::QueuePlan;
use crate::plan::names::Owner;

/// What a queue is after `ensure_queue`.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueState {
    pub url: String,
    pub arn: String,
    pub convergence: Convergence,
}

async fn url_of(client: &Client, name: &str) -> Result<Option<String>, AwsError> {
    match client
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .map_err(from_sdk("GetQueueUrl", name))
    {
        Ok(out) => Ok(out.queue_url),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

async fn tags_of(client: &Client, url: &str) -> Result<BTreeMap<String, String>, AwsError> {
    let out = client
        .list_queue_tags()
        .queue_url(url)
        .send()
        .await
        .map_err(from_sdk("ListQueueTags", url))?;
    Ok(out.tags.unwrap_or_default().into_iter().collect())
}

/// Creates the queue or brings its tags in line; an existing queue of another owner is refused untouched.
pub async fn ensure_queue(client: &Client, plan: &QueuePlan) -> Result<QueueState, AwsError> {
    let (url, convergence) = match url_of(client, &plan.name).await? {
        Some(url) => {
            let have = tags_of(client, &url).await?;
            super::check_planned_owner(
                "CheckOwner",
                &format!("SQS queue {}", plan.name),
                &plan.tags,
                &have,
            )?;
            let missing: HashMap<String, String> = super::missing_tags(&plan.tags, &have)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if missing.is_empty() {
                (url, Convergence::Converged)
            } else {
                client
                    .tag_queue()
                    .queue_url(&url)
                    .set_tags(Some(missing))
                    .send()
                    .await
                    .map_err(from_sdk("TagQueue", &plan.name))?;
                (url, Convergence::InProgress)
            }
        }
        None => {
            let mut req = client.create_queue().queue_name(&plan.name);
            if plan.fifo {
                req = req.attributes(QueueAttributeName::FifoQueue, "true");
            }
            for (k, v) in &plan.tags {
                req = req.tags(k, v);
            }
            let out = req.send().await.map_err(from_sdk("CreateQueue", &plan.name))?;
            (out.queue_url.unwrap_or_default(), Convergence::InProgress)
        }
    };
    let attrs = client
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(from_sdk("GetQueueAttributes", &plan.name))?;
    let arn = attrs
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .unwrap_or_default();
    Ok(QueueState {
        url,
        arn,
        convergence,
    })
}

/// Deletes the queue if `owner` created it; `Ok(false)` when absent or not ours.
pub async fn delete_queue_if_owned(client: &Client, name: &str, owner: &Owner) -> Result<bool, AwsError> {
    let Some(url) = url_of(client, name).await? else {
        return Ok(false);
    };
    if !owner.owns(&tags_of(client, &url).await?) {
        return Ok(false);
    }
    client
        .delete_queue()
        .queue_url(&url)
        .send()
        .await
        .map_err(from_sdk("DeleteQueue", name))?;
    Ok(true)
}
