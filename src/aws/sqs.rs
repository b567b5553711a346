//! SQS queues: ensure the ingest queue, its dead-letter queue and the failure queues of the router and
//! projectors exist with their attributes (visibility timeout, retention, redrive policy, access policy)
//! and tags; delete only a queue carrying the owner's tags.

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
    /// `ApproximateNumberOfMessages`: messages available to receive.
    pub messages: Option<i64>,
    pub convergence: Convergence,
}

/// The attributes `plan` wants, by SQS name: its own and, with a redrive, the `RedrivePolicy` JSON
/// (`{"deadLetterTargetArn": ..., "maxReceiveCount": "5"}`; SQS API Reference, SetQueueAttributes).
pub fn desired_attributes(plan: &QueuePlan, dead_letter_arn: Option<&str>) -> BTreeMap<String, String> {
    let mut want = plan.attributes.clone();
    if let (Some(r), Some(arn)) = (&plan.redrive, dead_letter_arn) {
        want.insert(
            "RedrivePolicy".into(),
            serde_json::json!({
                "deadLetterTargetArn": arn,
                "maxReceiveCount": r.max_receive_count.to_string(),
            })
            .to_string(),
        );
    }
    want
}

/// The attributes of `want` that `have` lacks or holds otherwise. A `RedrivePolicy` is compared as JSON
/// (SQS returns `maxReceiveCount` as a number or a string, and orders keys its own way); so is a `Policy`
/// (the queue's access policy, whose text SQS may reformat).
pub fn attribute_changes(
    want: &BTreeMap<String, String>,
    have: &HashMap<String, String>,
) -> BTreeMap<String, String> {
    let same = |k: &str, w: &str, h: &str| match k {
        "RedrivePolicy" => {
            let norm = |s: &str| {
                serde_json::from_str::<serde_json::Value>(s).ok().map(|v| {
                    (
                        v["deadLetterTargetArn"].as_str().map(String::from),
                        match &v["maxReceiveCount"] {
                            serde_json::Value::String(s) => s.parse::<i64>().ok(),
                            n => n.as_i64(),
                        },
                    )
                })
            };
            norm(w).is_some() && norm(w) == norm(h)
        }
        "Policy" => {
            let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
            parse(w).is_some() && parse(w) == parse(h)
        }
        _ => w == h,
    };
    want.iter()
        .filter(|(k, w)| {
            // An empty `Policy` removes the queue's policy (SQS API Reference, SetQueueAttributes): a queue
            // without one has it already.
            let none = (k.as_str() == "Policy" && w.is_empty()).then_some("");
            !have
                .get(k.as_str())
                .map(String::as_str)
                .or(none)
                .is_some_and(|h| if w.is_empty() { h.is_empty() } else { same(k, w, h) })
        })
        .map(|(k, w)| (k.clone(), w.clone()))
        .collect()
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

/// Creates the queue or brings its tags and attributes in line (`dead_letter_arn`: the ARN of the queue
/// its redrive policy names); an existing queue of another owner is refused untouched.
pub async fn ensure_queue(
    client: &Client,
    plan: &QueuePlan,
    dead_letter_arn: Option<&str>,
) -> Result<QueueState, AwsError> {
    let want = desired_attributes(plan, dead_letter_arn);
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
            // An empty value means "none" (a `Policy` to remove): a new queue has none.
            for (k, v) in want.iter().filter(|(_, v)| !v.is_empty()) {
                req = req.attributes(QueueAttributeName::from(k.as_str()), v);
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
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .map_err(from_sdk("GetQueueAttributes", &plan.name))?;
    let have: HashMap<String, String> = (attrs.attributes.unwrap_or_default().into_iter())
        .map(|(k, v)| (k.as_str().to_string(), v))
        .collect();
    let changes = attribute_changes(&want, &have);
    let convergence = match changes.is_empty() {
        true => convergence,
        false => {
            let mut req = client.set_queue_attributes().queue_url(&url);
            for (k, v) in &changes {
                req = req.attributes(QueueAttributeName::from(k.as_str()), v);
            }
            req.send()
                .await
                .map_err(from_sdk("SetQueueAttributes", &plan.name))?;
            Convergence::InProgress
        }
    };
    Ok(QueueState {
        url,
        arn: have.get("QueueArn").cloned().unwrap_or_default(),
        messages: have
            .get("ApproximateNumberOfMessages")
            .and_then(|n| n.parse().ok()),
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

/// A dead-letter queue's redrive: an SQS message move task (SQS API Reference, StartMessageMoveTask and
/// ListMessageMoveTasks).
#[derive(Clone, Debug, PartialEq)]
pub struct MoveTask {
    pub handle: Option<String>,
    /// `RUNNING`, `COMPLETED`, `CANCELLING`, `CANCELLED` or `FAILED`.
    pub status: String,
    /// Messages moved so far (`ApproximateNumberOfMessagesMoved`).
    pub moved: i64,
    /// Messages to move in all, when SQS knows (`ApproximateNumberOfMessagesToMove`).
    pub to_move: Option<i64>,
    /// Why the task failed (`FailureReason`), when it did.
    pub failure: Option<String>,
}

impl MoveTask {
    /// True once the task moves nothing more: completed, cancelled or failed.
    pub fn finished(&self) -> bool {
        self.status != "RUNNING" && self.status != "CANCELLING"
    }
}

/// Starts moving the messages of the dead-letter queue `dead_letter_arn` back to the queue that
/// dead-lettered them (no `DestinationArn`: "the messages are moved back to the original source queue");
/// returns the task's handle. SQS runs one task per source queue at a time and refuses a second while
/// one runs; the source must be a dead-letter queue.
pub async fn start_redrive(client: &Client, dead_letter_arn: &str) -> Result<String, AwsError> {
    let out = client
        .start_message_move_task()
        .source_arn(dead_letter_arn)
        .send()
        .await
        .map_err(from_sdk("StartMessageMoveTask", dead_letter_arn))?;
    Ok(out.task_handle.unwrap_or_default())
}

/// The newest message move task of the dead-letter queue `dead_letter_arn`, if any ran.
pub async fn newest_redrive(client: &Client, dead_letter_arn: &str) -> Result<Option<MoveTask>, AwsError> {
    let out = client
        .list_message_move_tasks()
        .source_arn(dead_letter_arn)
        .max_results(1)
        .send()
        .await
        .map_err(from_sdk("ListMessageMoveTasks", dead_letter_arn))?;
    Ok(out
        .results
        .unwrap_or_default()
        .into_iter()
        .next()
        .map(|t| MoveTask {
            handle: t.task_handle,
            status: t.status.unwrap_or_default(),
            moved: t.approximate_number_of_messages_moved,
            to_move: t.approximate_number_of_messages_to_move,
            failure: t.failure_reason,
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_policy_removes_one_and_is_met_by_none() {
        let want = BTreeMap::from([("Policy".to_string(), String::new())]);
        assert!(
            attribute_changes(&want, &HashMap::new()).is_empty(),
            "no policy: nothing to do"
        );
        let stale = HashMap::from([(
            "Policy".to_string(),
            r#"{"Statement":[{"Sid":"SnsDeadLetters"}]}"#.to_string(),
        )]);
        assert_eq!(
            attribute_changes(&want, &stale),
            want,
            "an earlier policy is removed"
        );
        let wanted = BTreeMap::from([("Policy".to_string(), r#"{"Statement":[]}"#.to_string())]);
        assert_eq!(attribute_changes(&wanted, &HashMap::new()), wanted);
    }

    fn ingest() -> QueuePlan {
        QueuePlan {
            name: "kappa-q".into(),
            fifo: false,
            attributes: BTreeMap::from([("VisibilityTimeout".into(), "180".into())]),
            redrive: Some(crate::plan::log::Redrive {
                dead_letter_queue: "kappa-q-dlq".into(),
                max_receive_count: 5,
            }),
            tags: BTreeMap::new(),
        }
    }

    #[test]
    fn the_redrive_policy_names_the_dead_letter_queue_and_compares_as_json() {
        let want = desired_attributes(&ingest(), Some("arn:aws:sqs:us-east-1:1:kappa-q-dlq"));
        assert_eq!(want["VisibilityTimeout"], "180");
        let have: HashMap<String, String> = HashMap::from([
            ("VisibilityTimeout".into(), "180".into()),
            (
                "RedrivePolicy".into(),
                r#"{"maxReceiveCount":5,"deadLetterTargetArn":"arn:aws:sqs:us-east-1:1:kappa-q-dlq"}"#.into(),
            ),
        ]);
        assert!(
            attribute_changes(&want, &have).is_empty(),
            "the same policy, another form"
        );
        let mut other = have.clone();
        other.insert("VisibilityTimeout".into(), "30".into());
        other.insert(
            "RedrivePolicy".into(),
            r#"{"maxReceiveCount":"9","deadLetterTargetArn":"arn:aws:sqs:us-east-1:1:kappa-q-dlq"}"#.into(),
        );
        let changes = attribute_changes(&want, &other);
        assert_eq!(
            changes.keys().collect::<Vec<_>>(),
            ["RedrivePolicy", "VisibilityTimeout"]
        );
        other.remove("RedrivePolicy");
        assert!(
            attribute_changes(&want, &other).contains_key("RedrivePolicy"),
            "none set yet"
        );
        assert!(
            !desired_attributes(&ingest(), None).contains_key("RedrivePolicy"),
            "no policy before the dead-letter queue exists"
        );
    }

    #[test]
    fn an_access_policy_compares_as_json() {
        let want = BTreeMap::from([(
            "Policy".to_string(),
            r#"{"Version":"2012-10-17","Statement":[]}"#.to_string(),
        )]);
        let have = HashMap::from([(
            "Policy".to_string(),
            r#"{ "Statement": [], "Version": "2012-10-17" }"#.to_string(),
        )]);
        assert!(attribute_changes(&want, &have).is_empty());
        let other = HashMap::from([(
            "Policy".to_string(),
            r#"{"Version":"2012-10-17","Statement":[{}]}"#.to_string(),
        )]);
        assert_eq!(attribute_changes(&want, &other).len(), 1);
        assert_eq!(attribute_changes(&want, &HashMap::new()).len(), 1);
    }
}
