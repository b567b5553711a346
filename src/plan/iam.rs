//! IAM policy documents for the built-in functions, least privilege by construction.
//!
//! - writer: receive from its ingest queue; put items into the log (the only role that may).
//! - router: read the log's stream; publish to its topics.
//! - projector: read its live source (its topic's deliveries need no permission; a stream mapping needs
//!   stream reads); write only its view's items: in a shared table the writes are conditioned on
//!   `dynamodb:LeadingKeys` matching the view's key prefix. Fed by topics, it may also `GetItem` on
//!   the log table (only): a record too large for SNS arrives by reference and is read from the log.

use serde_json::{Value, json};

/// Where ARNs are built: the partition, region and account the operator works in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsScope {
    pub partition: String,
    pub region: String,
    pub account: String,
}

impl AwsScope {
    pub fn table_arn(&self, table: &str) -> String {
        format!(
            "arn:{}:dynamodb:{}:{}:table/{table}",
            self.partition, self.region, self.account
        )
    }
    /// Every stream of a table (a stream ARN ends in a creation time label not known in advance).
    pub fn table_streams_arn(&self, table: &str) -> String {
        format!("{}/stream/*", self.table_arn(table))
    }
    pub fn queue_arn(&self, queue: &str) -> String {
        format!(
            "arn:{}:sqs:{}:{}:{queue}",
            self.partition, self.region, self.account
        )
    }
    pub fn topic_arn(&self, topic: &str) -> String {
        format!(
            "arn:{}:sns:{}:{}:{topic}",
            self.partition, self.region, self.account
        )
    }
    pub fn function_arn(&self, function: &str) -> String {
        format!(
            "arn:{}:lambda:{}:{}:function:{function}",
            self.partition, self.region, self.account
        )
    }
    /// The ARN of a managed policy given by ARN (returned as it is) or by name (in this account).
    pub fn policy_arn(&self, name_or_arn: &str) -> String {
        if name_or_arn.starts_with("arn:") {
            return name_or_arn.to_string();
        }
        format!(
            "arn:{}:iam::{}:policy/{}",
            self.partition,
            self.account,
            name_or_arn.trim_start_matches('/')
        )
    }
    pub fn role_arn(&self, role: &str) -> String {
        format!("arn:{}:iam::{}:role/{role}", self.partition, self.account)
    }
    fn log_group_arn(&self, function: &str) -> String {
        format!(
            "arn:{}:logs:{}:{}:log-group:/aws/lambda/{function}:*",
            self.partition, self.region, self.account
        )
    }
}

/// The trust policy of every function role: only Lambda may assume it.
pub fn lambda_trust_policy() -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole"
        }]
    })
}

pub(super) fn logs_statement(scope: &AwsScope, function: &str) -> Value {
    allow(
        "OwnLogs",
        &["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
        vec![scope.log_group_arn(function)],
    )
}

/// Reading `table`'s stream, as a Lambda event source mapping does.
pub(super) fn stream_read_statement(sid: &str, scope: &AwsScope, table: &str) -> Value {
    allow(
        sid,
        &[
            "dynamodb:DescribeStream",
            "dynamodb:GetRecords",
            "dynamodb:GetShardIterator",
            "dynamodb:ListStreams",
        ],
        vec![scope.table_streams_arn(table)],
    )
}

/// The IAM statement `sid` allowing `actions` on `resources`.
pub(super) fn allow(sid: &str, actions: &[&str], resources: Vec<String>) -> Value {
    json!({"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources})
}

pub(super) fn policy(statements: Vec<Value>) -> Value {
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// The writer drains its queue into the log; no other role gets write actions on the log.
pub fn writer_policy(scope: &AwsScope, function: &str, queue: &str, log_table: &str) -> Value {
    policy(vec![
        allow(
            "DrainIngestQueue",
            &[
                "sqs:ReceiveMessage",
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:ChangeMessageVisibility",
            ],
            vec![scope.queue_arn(queue)],
        ),
        allow(
            "AppendToLog",
            &["dynamodb:PutItem", "dynamodb:BatchWriteItem"],
            vec![scope.table_arn(log_table)],
        ),
        logs_statement(scope, function),
    ])
}

/// The router reads the log's stream and publishes to its own topics only.
pub fn router_policy(scope: &AwsScope, function: &str, log_table: &str, topics: &[String]) -> Value {
    let topic_arns: Vec<String> = topics.iter().map(|t| scope.topic_arn(t)).collect();
    policy(vec![
        stream_read_statement("ReadLogStream", scope, log_table),
        json!({"Sid": "PublishToOwnTopics", "Effect": "Allow", "Action": ["sns:Publish"], "Resource": topic_arns}),
        logs_statement(scope, function),
    ])
}

/// Where a projector reads from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProjectorSource<'a> {
    /// SNS invokes the function; the function needs no permission for that (the topic gets a
    /// resource-based permission on the function instead). It reads the records the router sends by
    /// reference from `log_table` (`dynamodb:GetItem` on that table only).
    Topic { log_table: &'a str },
    /// An event source mapping on the log's stream.
    LogStream { log_table: &'a str },
}

/// The views table a projector writes, and the part of it that is its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewItems<'a> {
    pub table: &'a str,
    /// In a shared table, the view's partition-key prefix; `None` for a dedicated table.
    pub key_prefix: Option<&'a str>,
}

/// The projector reads its source and writes only its view's items (and their idempotency markers,
/// which live under the same prefix).
pub fn projector_policy(
    scope: &AwsScope,
    function: &str,
    source: &ProjectorSource<'_>,
    view: &ViewItems<'_>,
) -> Value {
    let mut statements = Vec::new();
    if let ProjectorSource::LogStream { log_table } = source {
        statements.push(stream_read_statement("ReadLogStream", scope, log_table));
    }
    let mut write = allow(
        "WriteOwnViewItems",
        &[
            "dynamodb:BatchWriteItem",
            "dynamodb:ConditionCheckItem",
            "dynamodb:DeleteItem",
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
        ],
        vec![scope.table_arn(view.table)],
    );
    if let Some(prefix) = view.key_prefix {
        write["Condition"] = json!({
            "ForAllValues:StringLike": {"dynamodb:LeadingKeys": [format!("{prefix}*")]}
        });
    }
    statements.push(write);
    if let ProjectorSource::Topic { log_table } = source {
        statements.push(allow(
            "ReadLogItemsByReference",
            &["dynamodb:GetItem"],
            vec![scope.table_arn(log_table)],
        ));
    }
    statements.push(logs_statement(scope, function));
    policy(statements)
}

// ------------------------------------------------------------------------------------------------------
// Failure queues (#16): kept apart from the roles' own documents above, appended to them by the plans.

/// Lets a function send to its own failure queue and nothing else: Lambda sends a stream mapping's
/// on-failure record and an asynchronous invocation's on-failure record with the function's execution
/// role (<https://docs.aws.amazon.com/lambda/latest/dg/services-dynamodb-errors.html>,
/// <https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-retain-records.html>: "the execution
/// role needs sqs:SendMessage").
pub fn failure_queue_statement(scope: &AwsScope, queue: &str) -> Value {
    allow(
        "SendToOwnFailureQueue",
        &["sqs:SendMessage"],
        vec![scope.queue_arn(queue)],
    )
}

/// `policy` with `statement` appended to its `Statement` list.
pub fn with_statement(mut policy: Value, statement: Value) -> Value {
    if let Some(list) = policy["Statement"].as_array_mut() {
        list.push(statement);
    }
    policy
}

/// The access policy of a projector's failure queue with `Sns` fan-out: SNS may send undeliverable
/// messages of exactly the view's topics to it (a subscription's dead-letter queue needs it, SNS
/// sending as the `sns.amazonaws.com` service principal with the topic as `aws:SourceArn`,
/// <https://docs.aws.amazon.com/sns/latest/dg/sns-configure-dead-letter-queue.html>). `None` without
/// topics: the queue then needs no policy (the function's role sends with its own permission).
pub fn failure_queue_policy(queue_arn: &str, topic_arns: &[String]) -> Option<Value> {
    if topic_arns.is_empty() {
        return None;
    }
    let mut sources = topic_arns.to_vec();
    sources.sort();
    sources.dedup();
    Some(json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "SnsDeadLetters",
            "Effect": "Allow",
            "Principal": {"Service": "sns.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": sources}}
        }]
    }))
}

#[cfg(test)]
mod failure_queue_tests {
    use super::*;
    use crate::fixtures::scope;

    #[test]
    fn a_function_may_send_only_to_its_own_failure_queue() {
        let st = failure_queue_statement(&scope(), "kappa-q-failures");
        assert_eq!(st["Action"], json!(["sqs:SendMessage"]));
        assert_eq!(
            st["Resource"],
            json!(["arn:aws:sqs:eu-west-1:123456789012:kappa-q-failures"])
        );
        let doc = with_statement(policy(vec![json!({"Sid": "A"})]), st.clone());
        assert_eq!(doc["Statement"].as_array().unwrap().len(), 2);
        assert_eq!(doc["Statement"][1], st);
    }

    #[test]
    fn only_the_views_topics_may_dead_letter_into_its_queue() {
        assert!(failure_queue_policy("arn:q", &[]).is_none());
        let doc =
            failure_queue_policy("arn:q", &["arn:t2".into(), "arn:t1".into(), "arn:t2".into()]).unwrap();
        let st = &doc["Statement"][0];
        assert_eq!(st["Principal"], json!({"Service": "sns.amazonaws.com"}));
        assert_eq!(st["Action"], "sqs:SendMessage");
        assert_eq!(st["Resource"], "arn:q");
        assert_eq!(
            st["Condition"],
            json!({"ArnEquals": {"aws:SourceArn": ["arn:t1", "arn:t2"]}})
        );
        assert_eq!(doc["Statement"].as_array().unwrap().len(), 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{scope, statement};

    fn actions(doc: &Value, sid: &str) -> Vec<String> {
        statement(doc, sid)["Action"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    }

    fn resources(doc: &Value, sid: &str) -> Vec<String> {
        statement(doc, sid)["Resource"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    }

    fn all_actions(doc: &Value) -> Vec<String> {
        doc["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| {
                s["Action"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_string())
            })
            .collect()
    }

    #[test]
    fn the_writer_is_the_only_role_that_writes_the_log() {
        let w = writer_policy(&scope(), "kappa-w", "kappa-q", "kappa-log");
        assert_eq!(
            actions(&w, "AppendToLog"),
            ["dynamodb:PutItem", "dynamodb:BatchWriteItem"]
        );
        assert_eq!(
            resources(&w, "AppendToLog"),
            ["arn:aws:dynamodb:eu-west-1:123456789012:table/kappa-log"]
        );
        assert_eq!(
            resources(&w, "DrainIngestQueue"),
            ["arn:aws:sqs:eu-west-1:123456789012:kappa-q"]
        );
        let r = router_policy(&scope(), "kappa-r", "kappa-log", &["kappa-t1".into()]);
        assert!(
            !all_actions(&r)
                .iter()
                .any(|a| a.contains("PutItem") || a.contains("Write")),
            "{r}"
        );
        let p = projector_policy(
            &scope(),
            "kappa-p",
            &ProjectorSource::LogStream { log_table: "kappa-log" },
            &ViewItems { table: "kappa-views", key_prefix: None },
        );
        assert_eq!(
            resources(&p, "WriteOwnViewItems"),
            ["arn:aws:dynamodb:eu-west-1:123456789012:table/kappa-views"]
        );
    }

    #[test]
    fn the_router_reads_only_its_stream_and_publishes_only_to_its_topics() {
        let r = router_policy(
            &scope(),
            "kappa-r",
            "kappa-log",
            &["kappa-players".into(), "kappa-games".into()],
        );
        assert_eq!(
            resources(&r, "ReadLogStream"),
            ["arn:aws:dynamodb:eu-west-1:123456789012:table/kappa-log/stream/*"]
        );
        assert_eq!(actions(&r, "PublishToOwnTopics"), ["sns:Publish"]);
        assert_eq!(
            resources(&r, "PublishToOwnTopics"),
            [
                "arn:aws:sns:eu-west-1:123456789012:kappa-players",
                "arn:aws:sns:eu-west-1:123456789012:kappa-games"
            ]
        );
    }

    #[test]
    fn a_projector_in_a_shared_table_is_confined_to_its_prefix() {
        let p = projector_policy(
            &scope(),
            "kappa-p",
            &ProjectorSource::Topic { log_table: "kappa-log" },
            &ViewItems { table: "kappa-views", key_prefix: Some("players#") },
        );
        let st = &p["Statement"][0];
        assert_eq!(
            st["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"],
            json!(["players#*"])
        );
        assert!(
            !all_actions(&p)
                .iter()
                .any(|a| a.starts_with("dynamodb:GetRecords")),
            "topic-fed: no stream"
        );
        assert!(
            !all_actions(&p)
                .iter()
                .any(|a| a.contains("Scan") || a.contains("Query") || a == "dynamodb:*")
        );
    }

    #[test]
    fn a_topic_fed_projector_may_only_get_items_of_its_log() {
        let source = ProjectorSource::Topic { log_table: "kappa-log" };
        let items = ViewItems { table: "kappa-views", key_prefix: None };
        let p = projector_policy(&scope(), "kappa-p", &source, &items);
        assert_eq!(actions(&p, "ReadLogItemsByReference"), ["dynamodb:GetItem"]);
        assert_eq!(
            resources(&p, "ReadLogItemsByReference"),
            ["arn:aws:dynamodb:eu-west-1:123456789012:table/kappa-log"]
        );
        let direct = ProjectorSource::LogStream { log_table: "kappa-log" };
        let d = projector_policy(&scope(), "kappa-p", &direct, &items);
        assert!(
            d["Statement"]
                .as_array()
                .unwrap()
                .iter()
                .all(|st| st["Sid"] != "ReadLogItemsByReference"),
            "a stream-fed projector reads images from the stream: {d}"
        );
    }

    #[test]
    fn every_role_writes_only_its_own_logs() {
        let w = writer_policy(&scope(), "kappa-w", "q", "t");
        assert_eq!(
            resources(&w, "OwnLogs"),
            ["arn:aws:logs:eu-west-1:123456789012:log-group:/aws/lambda/kappa-w:*"]
        );
        assert_eq!(
            lambda_trust_policy()["Statement"][0]["Principal"]["Service"],
            "lambda.amazonaws.com"
        );
    }
}
