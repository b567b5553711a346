//! SNS subscriptions of projector Lambdas to the log's topics, with a filter policy on the `recordType`
//! message attribute, and the permission that lets SNS invoke the function.
//!
//! Guarantees:
//! - One subscription per (topic, function ARN): found by listing the topic's subscriptions, created only
//!   when absent. Its filter policy is compared as parsed JSON (SNS may reformat the text), and its filter
//!   policy scope must be `MessageAttributes`; only what differs is set ([`subscription_changes`]).
//! - The invoke permission has one statement per topic, with an id derived from the topic ARN
//!   ([`sns_statement_id`]); it is added only when the function's policy lacks it, and a concurrent add
//!   (`ResourceConflictException`) counts as present.
//! - A subscription's `RedrivePolicy` names the view's failure queue as its dead-letter queue, compared as
//!   JSON ([`redrive_change`]): a message SNS cannot deliver to the function (throttled past SNS's retries,
//!   the function or its permission missing) lands there instead of being dropped
//!   (<https://docs.aws.amazon.com/sns/latest/dg/sns-dead-letter-queues.html>). The queue's access policy
//!   must let the topic send (`crate::plan::iam::failure_queue_policy`).
//! - Deletion unsubscribes exactly the function's subscriptions on the topic; one already gone is done.
//!   The permission goes away with the function.

use std::collections::HashMap;

use aws_sdk_sns::Client;
use serde_json::Value;

use super::error::from_sdk;
use super::{AwsError, Convergence};
use crate::plan::names::short_hash;

/// The subscription attribute holding the filter policy.
pub const FILTER_POLICY: &str = "FilterPolicy";
/// The subscription attribute saying what the filter policy applies to.
pub const FILTER_POLICY_SCOPE: &str = "FilterPolicyScope";
/// The subscription attribute naming its dead-letter queue (`{"deadLetterTargetArn": "<queue ARN>"}`).
pub const REDRIVE_POLICY: &str = "RedrivePolicy";
/// The scope of the views' policies: the router's message attributes.
pub const MESSAGE_ATTRIBUTES: &str = "MessageAttributes";
const LAMBDA: &str = "lambda";

/// The subscription attributes to set so that `have` (from `GetSubscriptionAttributes`) carries
/// `filter_policy` with scope `MessageAttributes`; empty when nothing differs. A missing scope is
/// `MessageAttributes` (SNS's default).
pub fn subscription_changes(
    filter_policy: &Value,
    have: &HashMap<String, String>,
) -> Vec<(&'static str, String)> {
    let mut changes = Vec::new();
    let scope = have
        .get(FILTER_POLICY_SCOPE)
        .map_or(MESSAGE_ATTRIBUTES, String::as_str);
    if scope != MESSAGE_ATTRIBUTES {
        changes.push((FILTER_POLICY_SCOPE, MESSAGE_ATTRIBUTES.to_string()));
    }
    let policy = have
        .get(FILTER_POLICY)
        .and_then(|text| serde_json::from_str::<Value>(text).ok());
    if policy.as_ref() != Some(filter_policy) {
        changes.push((FILTER_POLICY, filter_policy.to_string()));
    }
    changes
}

/// The `RedrivePolicy` to set so that `have` sends undeliverable messages to `dead_letter_arn`; `None`
/// when it already does (compared as JSON) or no dead-letter queue is wanted.
pub fn redrive_change(
    dead_letter_arn: Option<&str>,
    have: &HashMap<String, String>,
) -> Option<(&'static str, String)> {
    let arn = dead_letter_arn?;
    let current = have
        .get(REDRIVE_POLICY)
        .and_then(|text| serde_json::from_str::<Value>(text).ok());
    let target = current
        .as_ref()
        .and_then(|p| p.get("deadLetterTargetArn"))
        .and_then(Value::as_str);
    (target != Some(arn)).then(|| (REDRIVE_POLICY, redrive_policy(arn)))
}

fn redrive_policy(dead_letter_arn: &str) -> String {
    serde_json::json!({ "deadLetterTargetArn": dead_letter_arn }).to_string()
}

/// The ARN of `function_arn`'s subscriptions on the topic (normally one).
async fn find(client: &Client, topic_arn: &str, function_arn: &str) -> Result<Vec<String>, AwsError> {
    let mut found = Vec::new();
    let mut pages = client
        .list_subscriptions_by_topic()
        .topic_arn(topic_arn)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(from_sdk("ListSubscriptionsByTopic", topic_arn))?;
        found.extend(
            page.subscriptions()
                .iter()
                .filter(|s| s.protocol() == Some(LAMBDA) && s.endpoint() == Some(function_arn))
                .filter_map(|s| s.subscription_arn())
                .map(str::to_string),
        );
    }
    Ok(found)
}

/// Subscribes the function to the topic with `filter_policy` (scope `MessageAttributes`) and, given
/// `dead_letter_arn`, a redrive policy to that queue; or brings an existing subscription's attributes in
/// line; returns the subscription ARN.
pub async fn ensure_subscription(
    sns: &Client,
    topic_arn: &str,
    function_arn: &str,
    filter_policy: &Value,
    dead_letter_arn: Option<&str>,
) -> Result<(String, Convergence), AwsError> {
    let resource = format!("{topic_arn} -> {function_arn}");
    let Some(arn) = find(sns, topic_arn, function_arn).await?.into_iter().next() else {
        let mut req = sns
            .subscribe()
            .topic_arn(topic_arn)
            .protocol(LAMBDA)
            .endpoint(function_arn)
            .attributes(FILTER_POLICY, filter_policy.to_string())
            .attributes(FILTER_POLICY_SCOPE, MESSAGE_ATTRIBUTES);
        if let Some(dlq) = dead_letter_arn {
            req = req.attributes(REDRIVE_POLICY, redrive_policy(dlq));
        }
        let out = req
            .return_subscription_arn(true)
            .send()
            .await
            .map_err(from_sdk("Subscribe", &resource))?;
        return Ok((
            out.subscription_arn().unwrap_or_default().to_string(),
            Convergence::InProgress,
        ));
    };
    let attrs = sns
        .get_subscription_attributes()
        .subscription_arn(&arn)
        .send()
        .await
        .map_err(from_sdk("GetSubscriptionAttributes", &arn))?;
    let empty = HashMap::new();
    let have = attrs.attributes().unwrap_or(&empty);
    let mut changes = subscription_changes(filter_policy, have);
    changes.extend(redrive_change(dead_letter_arn, have));
    let convergence = if changes.is_empty() {
        Convergence::Converged
    } else {
        Convergence::InProgress
    };
    for (name, value) in changes {
        sns.set_subscription_attributes()
            .subscription_arn(&arn)
            .attribute_name(name)
            .attribute_value(value)
            .send()
            .await
            .map_err(from_sdk("SetSubscriptionAttributes", &arn))?;
    }
    Ok((arn, convergence))
}

/// Unsubscribes the function from the topic; returns how many subscriptions it removed. A topic that is
/// gone has no subscriptions left.
pub async fn delete_subscriptions(
    sns: &Client,
    topic_arn: &str,
    function_arn: &str,
) -> Result<usize, AwsError> {
    let found = match find(sns, topic_arn, function_arn).await {
        Ok(found) => found,
        Err(e) if e.is_not_found() => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut deleted = 0;
    for arn in found {
        match sns
            .unsubscribe()
            .subscription_arn(&arn)
            .send()
            .await
            .map_err(from_sdk("Unsubscribe", &arn))
        {
            Ok(_) => deleted += 1,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

/// The statement id of the permission letting `topic_arn` invoke a function: `sns-<topic name>-<hash>`,
/// at most 100 characters of `[A-Za-z0-9_-]`, distinct for same-named topics in other regions or accounts.
pub fn sns_statement_id(topic_arn: &str) -> String {
    let name = topic_arn.rsplit(':').next().unwrap_or(topic_arn);
    let readable: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(100 - "sns-".len() - 9)
        .collect();
    format!("sns-{readable}-{}", short_hash(&[topic_arn]))
}

/// Whether a function policy (`GetPolicy`'s JSON text) has a statement with id `sid`.
pub fn policy_has_statement(policy: &str, sid: &str) -> bool {
    serde_json::from_str::<Value>(policy)
        .ok()
        .and_then(|p| p.get("Statement").and_then(Value::as_array).cloned())
        .is_some_and(|statements| {
            statements
                .iter()
                .any(|s| s.get("Sid").and_then(Value::as_str) == Some(sid))
        })
}

/// The function's resource policy (JSON), or `None` when it has no permissions yet.
pub(crate) async fn function_policy(
    lambda: &aws_sdk_lambda::Client,
    function_name: &str,
) -> Result<Option<String>, AwsError> {
    match lambda
        .get_policy()
        .function_name(function_name)
        .send()
        .await
        .map_err(from_sdk("GetPolicy", function_name))
    {
        Ok(out) => Ok(out.policy),
        // No policy yet: the function exists, it has no permissions.
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Lets the topic invoke the function (`lambda:InvokeFunction`, principal `sns.amazonaws.com`, source the
/// topic), unless the function's policy already does.
pub async fn allow_sns_invoke(
    lambda: &aws_sdk_lambda::Client,
    function_name: &str,
    topic_arn: &str,
) -> Result<Convergence, AwsError> {
    let sid = sns_statement_id(topic_arn);
    let policy = function_policy(lambda, function_name).await?;
    if policy.as_deref().is_some_and(|p| policy_has_statement(p, &sid)) {
        return Ok(Convergence::Converged);
    }
    match lambda
        .add_permission()
        .function_name(function_name)
        .statement_id(&sid)
        .action("lambda:InvokeFunction")
        .principal("sns.amazonaws.com")
        .source_arn(topic_arn)
        .send()
        .await
        .map_err(from_sdk("AddPermission", function_name))
    {
        Ok(_) => Ok(Convergence::InProgress),
        Err(e) if e.code == "ResourceConflictException" => Ok(Convergence::Converged),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_equal_policy_in_other_words_needs_no_call() {
        let want = json!({"recordType": ["player", "game"]});
        let have = attrs(&[
            (FILTER_POLICY, "{\n  \"recordType\" : [ \"player\", \"game\" ]\n}"),
            (FILTER_POLICY_SCOPE, MESSAGE_ATTRIBUTES),
        ]);
        assert!(subscription_changes(&want, &have).is_empty());
        let no_scope = attrs(&[(FILTER_POLICY, r#"{"recordType":["player","game"]}"#)]);
        assert!(
            subscription_changes(&want, &no_scope).is_empty(),
            "MessageAttributes is the default"
        );
    }

    #[test]
    fn a_different_missing_or_garbled_policy_is_set() {
        let want = json!({"recordType": ["player"]});
        for have in [
            attrs(&[(FILTER_POLICY, r#"{"recordType":["player","game"]}"#)]),
            attrs(&[]),
            attrs(&[(FILTER_POLICY, "not json")]),
        ] {
            assert_eq!(
                subscription_changes(&want, &have),
                [(FILTER_POLICY, r#"{"recordType":["player"]}"#.to_string())],
                "{have:?}"
            );
        }
    }

    #[test]
    fn a_message_body_scope_is_switched_back() {
        let want = json!({"recordType": ["player"]});
        let have = attrs(&[
            (FILTER_POLICY, r#"{"recordType":["player"]}"#),
            (FILTER_POLICY_SCOPE, "MessageBody"),
        ]);
        assert_eq!(
            subscription_changes(&want, &have),
            [(FILTER_POLICY_SCOPE, MESSAGE_ATTRIBUTES.to_string())]
        );
    }

    #[test]
    fn statement_ids_are_valid_short_and_distinct() {
        let a =
            sns_statement_id("arn:aws:sns:us-east-1:123456789012:kappa-prod-ns-log-topic-t-player-1a2b3c4d");
        assert!(
            a.starts_with("sns-kappa-prod-ns-log-topic-t-player-1a2b3c4d-"),
            "{a}"
        );
        let b =
            sns_statement_id("arn:aws:sns:eu-west-1:123456789012:kappa-prod-ns-log-topic-t-player-1a2b3c4d");
        assert_ne!(a, b);
        let long = sns_statement_id(&format!("arn:aws:sns:us-east-1:1:{}", "x.y".repeat(100)));
        assert!(long.len() <= 100, "{}", long.len());
        assert!(
            long.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }

    #[test]
    fn a_policy_statement_is_found_by_its_id() {
        let policy = json!({"Version": "2012-10-17", "Statement": [
            {"Sid": "other", "Effect": "Allow"},
            {"Sid": "sns-t-1", "Effect": "Allow"},
        ]})
        .to_string();
        assert!(policy_has_statement(&policy, "sns-t-1"));
        assert!(!policy_has_statement(&policy, "sns-t-2"));
        assert!(!policy_has_statement("garbage", "sns-t-1"));
    }

    #[test]
    fn the_redrive_policy_names_the_failure_queue_and_compares_as_json() {
        let have = HashMap::from([(
            REDRIVE_POLICY.to_string(),
            r#"{ "deadLetterTargetArn" : "arn:aws:sqs:us-east-1:1:q" }"#.to_string(),
        )]);
        assert_eq!(redrive_change(Some("arn:aws:sqs:us-east-1:1:q"), &have), None);
        assert_eq!(redrive_change(None, &HashMap::new()), None, "none wanted");
        let (name, value) = redrive_change(Some("arn:aws:sqs:us-east-1:1:other"), &have).unwrap();
        assert_eq!(name, "RedrivePolicy");
        assert_eq!(
            serde_json::from_str::<Value>(&value).unwrap(),
            serde_json::json!({"deadLetterTargetArn": "arn:aws:sqs:us-east-1:1:other"})
        );
        assert!(
            redrive_change(Some("arn:q"), &HashMap::new()).is_some(),
            "none set yet"
        );
    }
}
