//! EventLog provisioning on the local stack's AWS API: the planned table, queue and topics exist with
//! their settings and ownership tags; an unchanged log costs no mutating AWS call; drift is repaired;
//! deletion honours the policy and touches only what the log owns.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::Operator;
use kappa_operator::crd::{EventLog, EventLogPhase};
use kube::api::DeleteParams;
use kube::{Api, Client};

fn log(name: &str, policy: &str) -> String {
    format!(
        r#"
apiVersion: kappa.dev/v1alpha1
kind: EventLog
metadata: {{name: {name}}}
spec:
  recordTypes: [player, game]
  table: {{sortKey: sk, orderingAttribute: seq}}
  ingest: {{queueType: Standard}}
  fanOut: {{mode: Sns}}
  deletionPolicy: {policy}
"#
    )
}

async fn wait_ready(api: &Api<EventLog>, name: &str) -> EventLog {
    common::eventually(
        Duration::from_secs(40),
        &format!("EventLog {name} Ready"),
        || async {
            let l = api.get(name).await.ok()?;
            let s = l.status.as_ref()?;
            (s.phase == Some(EventLogPhase::Ready) && s.observed_generation == l.metadata.generation)
                .then_some(l)
        },
    )
    .await
}

/// Sum of `kappa_aws_calls_total` samples with `mutating="true"`.
async fn mutating_calls(op: &Operator) -> u64 {
    let text = op.metrics().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("kappa_aws_calls_total") && l.contains(r#"mutating="true""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Touches the object so the operator reconciles it now rather than at the resync.
fn nudge(ns: &str, name: &str, n: u32) {
    nudge_kind(ns, "elog", name, n);
}

/// Nudges the object, waits for the reconcile, and checks it made no mutating AWS call (still `before`).
async fn assert_no_mutation_after_nudge(
    op: &Operator,
    ns: &str,
    kind: &str,
    name: &str,
    n: u32,
    before: u64,
    what: &str,
) {
    let reconciles = op.reconciles().await;
    nudge_kind(ns, kind, name, n);
    common::eventually(Duration::from_secs(20), "a reconcile after the nudge", || async {
        (op.reconciles().await > reconciles).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        mutating_calls(op).await,
        before,
        "{what} must not change anything on AWS"
    );
}

/// [`nudge`] for any kind (`elog`, `mv`).
fn nudge_kind(ns: &str, kind: &str, name: &str, n: u32) {
    common::kubectl(&[
        "-n",
        ns,
        "annotate",
        "--overwrite",
        kind,
        name,
        &format!("test/nudge={n}"),
    ]);
}

async fn table_tags(ddb: &aws_sdk_dynamodb::Client, arn: &str) -> BTreeMap<String, String> {
    let out = ddb
        .list_tags_of_resource()
        .resource_arn(arn)
        .send()
        .await
        .unwrap();
    out.tags()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect()
}

async fn topic_exists(sns: &aws_sdk_sns::Client, arn: &str) -> bool {
    sns.get_topic_attributes().topic_arn(arn).send().await.is_ok()
}

/// The AWS clients the assertions use.
struct AwsClients {
    ddb: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    sns: aws_sdk_sns::Client,
    iam: aws_sdk_iam::Client,
}

/// The preamble of the log tests: a namespace, the AWS clients, an operator watching it, and the log
/// `name` with `policy`, once Ready.
async fn ready_log(
    test: &str,
    name: &str,
    policy: &str,
) -> (Client, String, AwsClients, Operator, Api<EventLog>, EventLog) {
    let (client, ns) = common::setup(test).await;
    let aws = common::aws_config().await;
    let clients = AwsClients {
        ddb: aws_sdk_dynamodb::Client::new(&aws),
        sqs: aws_sdk_sqs::Client::new(&aws),
        sns: aws_sdk_sns::Client::new(&aws),
        iam: aws_sdk_iam::Client::new(&aws),
    };
    let op = Operator::start(&ns, "solo", 15);
    common::create_yaml(&client, &ns, &log(name, policy))
        .await
        .unwrap();
    let logs: Api<EventLog> = Api::namespaced(client.clone(), &ns);
    let ready = wait_ready(&logs, name).await;
    (client, ns, clients, op, logs, ready)
}

#[tokio::test]
async fn an_event_log_is_provisioned_idempotently_repaired_and_retained() {
    let (client, ns, AwsClients { ddb, sqs, sns, iam }, op, logs, ready) =
        ready_log("prov-log", "game-events", "Retain").await;
    let status = ready.status.unwrap();
    let cost = status.cost_estimate.clone().expect("status.costEstimate");
    assert!(
        cost.starts_with('$') && cost.ends_with("per million writes"),
        "{cost}"
    );

    // The table: keys, stream, PITR, tags.
    let table = status.table.clone().expect("status.table");
    assert!(
        table
            .name
            .starts_with(&format!("kappa-test-{ns}-game-events-log-")),
        "{}",
        table.name
    );
    let desc = ddb
        .describe_table()
        .table_name(&table.name)
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    let keys: Vec<(String, String)> = desc
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name().to_string(), k.key_type().as_str().to_string()))
        .collect();
    assert_eq!(
        keys,
        [("pk".into(), "HASH".into()), ("sk".into(), "RANGE".into())]
    );
    let stream = desc.stream_specification().unwrap();
    assert!(stream.stream_enabled());
    assert_eq!(stream.stream_view_type().unwrap().as_str(), "NEW_AND_OLD_IMAGES");
    assert_eq!(table.stream_arn.as_deref(), desc.latest_stream_arn());
    let pitr = ddb
        .describe_continuous_backups()
        .table_name(&table.name)
        .send()
        .await
        .unwrap();
    let pitr_status = pitr
        .continuous_backups_description()
        .and_then(|d| d.point_in_time_recovery_description())
        .and_then(|p| p.point_in_time_recovery_status())
        .map(|s| s.as_str().to_string());
    assert_eq!(pitr_status.as_deref(), Some("ENABLED"));
    let tags = table_tags(&ddb, desc.table_arn().unwrap()).await;
    for (k, v) in [
        ("kappa.dev/cluster", "test"),
        ("kappa.dev/namespace", ns.as_str()),
        ("kappa.dev/kind", "EventLog"),
        ("kappa.dev/name", "game-events"),
        ("kappa.dev/managed-by", "kappa-operator"),
    ] {
        assert_eq!(tags.get(k).map(String::as_str), Some(v), "tag {k}: {tags:?}");
    }

    // The queue and the topics, tagged.
    let url = status.ingest_queue_url.clone().expect("status.ingestQueueUrl");
    let qtags = sqs
        .list_queue_tags()
        .queue_url(&url)
        .send()
        .await
        .unwrap()
        .tags
        .unwrap_or_default();
    assert_eq!(
        qtags.get("kappa.dev/name").map(String::as_str),
        Some("game-events")
    );
    let topics: Vec<(&String, &String)> = status
        .resources
        .iter()
        .filter(|(k, _)| k.starts_with("topic/"))
        .collect();
    assert_eq!(
        topics.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["topic/t-game", "topic/t-player"]
    );
    for (_, arn) in &topics {
        let t = sns
            .list_tags_for_resource()
            .resource_arn(*arn)
            .send()
            .await
            .unwrap();
        assert!(
            t.tags()
                .iter()
                .any(|t| t.key() == "kappa.dev/namespace" && t.value() == ns),
            "{arn}"
        );
    }

    // The writer's and router's roles: Lambda trust, least-privilege inline policy, owner tags.
    let role_name = |arn: &String| arn.rsplit('/').next().unwrap().to_string();
    let writer = role_name(
        status
            .resources
            .get("role/writer")
            .expect("status.resources.role/writer"),
    );
    let router = role_name(
        status
            .resources
            .get("role/router")
            .expect("status.resources.role/router"),
    );
    let policy = |name: String| {
        let iam = iam.clone();
        async move {
            let doc = iam
                .get_role_policy()
                .role_name(&name)
                .policy_name("kappa")
                .send()
                .await
                .unwrap()
                .policy_document;
            kappa_operator::aws::iam::parse_document(&doc).unwrap()
        }
    };
    let w = policy(writer.clone()).await;
    let append = w["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == "AppendToLog")
        .unwrap();
    assert_eq!(
        append["Action"],
        serde_json::json!(["dynamodb:PutItem", "dynamodb:BatchWriteItem"])
    );
    assert_eq!(append["Resource"], serde_json::json!([desc.table_arn().unwrap()]));
    let r = policy(router.clone()).await;
    let publish = r["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == "PublishToOwnTopics")
        .unwrap();
    let mut published: Vec<String> = publish["Resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    published.sort();
    let mut topic_arns: Vec<String> = topics.iter().map(|(_, a)| a.to_string()).collect();
    topic_arns.sort();
    assert_eq!(
        published, topic_arns,
        "the router publishes to exactly its topics"
    );
    assert!(
        !r.to_string().contains("PutItem"),
        "only the writer writes the log"
    );
    let trust = iam
        .get_role()
        .role_name(&writer)
        .send()
        .await
        .unwrap()
        .role
        .unwrap();
    let trust =
        kappa_operator::aws::iam::parse_document(trust.assume_role_policy_document().unwrap()).unwrap();
    assert_eq!(
        trust["Statement"][0]["Principal"]["Service"],
        "lambda.amazonaws.com"
    );
    let role_tags = iam.list_role_tags().role_name(&router).send().await.unwrap();
    assert!(
        role_tags
            .tags()
            .iter()
            .any(|t| t.key() == "kappa.dev/name" && t.value() == "game-events")
    );

    // Reconciling an unchanged log makes no mutating AWS call.
    let before = mutating_calls(&op).await;
    assert!(
        before >= 5,
        "creating the table, queue and topics was counted: {before}"
    );
    assert_no_mutation_after_nudge(
        &op,
        &ns,
        "elog",
        "game-events",
        1,
        before,
        "an unchanged EventLog",
    )
    .await;

    // Drift: a topic deleted by hand and PITR turned off are repaired by the next reconcile.
    let (_, player_topic) = topics
        .iter()
        .find(|(k, _)| k.as_str() == "topic/t-player")
        .unwrap();
    sns.delete_topic().topic_arn(*player_topic).send().await.unwrap();
    ddb.update_continuous_backups()
        .table_name(&table.name)
        .point_in_time_recovery_specification(
            aws_sdk_dynamodb::types::PointInTimeRecoverySpecification::builder()
                .point_in_time_recovery_enabled(false)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    nudge(&ns, "game-events", 2);
    let repaired = common::eventually(Duration::from_secs(30), "the topic to be recreated", || async {
        let l = logs.get("game-events").await.ok()?;
        let arn = l.status?.resources.get("topic/t-player")?.clone();
        topic_exists(&sns, &arn).await.then_some(arn)
    })
    .await;
    assert!(
        repaired.ends_with(player_topic.rsplit(':').next().unwrap()),
        "same deterministic name"
    );
    common::eventually(Duration::from_secs(30), "PITR to be on again", || async {
        nudge(&ns, "game-events", 3);
        let out = ddb
            .describe_continuous_backups()
            .table_name(&table.name)
            .send()
            .await
            .ok()?;
        let on = out
            .continuous_backups_description()?
            .point_in_time_recovery_description()?
            .point_in_time_recovery_status()?
            .as_str()
            == "ENABLED";
        on.then_some(())
    })
    .await;

    // Retain: deleting the EventLog keeps the table.
    logs.delete("game-events", &DeleteParams::default())
        .await
        .unwrap();
    common::eventually(Duration::from_secs(30), "the EventLog to be gone", || async {
        logs.get_opt("game-events").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(
        ddb.describe_table().table_name(&table.name).send().await.is_ok(),
        "Retain keeps the log table"
    );
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn delete_policy_removes_only_what_the_log_owns() {
    let (client, ns, AwsClients { ddb, sqs, sns, iam }, _op, logs, ready) =
        ready_log("prov-delete", "scratch", "Delete").await;
    let status = ready.status.unwrap();
    let table = status.table.unwrap().name;
    let url = status.ingest_queue_url.unwrap();
    let topic_arns: Vec<String> = status
        .resources
        .iter()
        .filter(|(k, _)| k.starts_with("topic/"))
        .map(|(_, v)| v.clone())
        .collect();

    // A table made by hand with the same prefix, not tagged by the operator, must survive.
    let bystander = format!("{}-by-hand", table);
    ddb.create_table()
        .table_name(&bystander)
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .attribute_definitions(
            aws_sdk_dynamodb::types::AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            aws_sdk_dynamodb::types::KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(aws_sdk_dynamodb::types::KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    logs.delete("scratch", &DeleteParams::default()).await.unwrap();
    common::eventually(Duration::from_secs(30), "the EventLog to be gone", || async {
        logs.get_opt("scratch").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(
        ddb.describe_table().table_name(&table).send().await.is_err(),
        "the owned table is deleted"
    );
    assert!(
        sqs.list_queue_tags().queue_url(&url).send().await.is_err(),
        "the owned queue is deleted"
    );
    let dlq = status
        .resources
        .get("deadLetterQueue")
        .expect("status.resources.deadLetterQueue");
    let dlq_name = dlq.rsplit(':').next().unwrap();
    assert!(
        sqs.get_queue_url().queue_name(dlq_name).send().await.is_err(),
        "the owned dead-letter queue is deleted"
    );
    for arn in &topic_arns {
        assert!(!topic_exists(&sns, arn).await, "topic {arn} is deleted");
    }
    for role in status
        .resources
        .iter()
        .filter(|(k, _)| k.starts_with("role/"))
        .map(|(_, v)| v)
    {
        let name = role.rsplit('/').next().unwrap();
        assert!(
            iam.get_role().role_name(name).send().await.is_err(),
            "role {name} is deleted"
        );
    }
    assert!(
        ddb.describe_table().table_name(&bystander).send().await.is_ok(),
        "a table we do not own survives"
    );
    ddb.delete_table().table_name(&bystander).send().await.unwrap();
    common::delete_namespace(&client, &ns).await;
}

/// The ingest queue's attributes, by SQS name.
async fn queue_attributes(sqs: &aws_sdk_sqs::Client, url: &str) -> BTreeMap<String, String> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    (out.attributes.unwrap_or_default().into_iter())
        .map(|(k, v)| (k.as_str().to_string(), v))
        .collect()
}

/// The ingest queue has a dead-letter queue (owned, tagged, 14 days' retention) named by its redrive
/// policy with `spec.ingest.maxReceiveCount`, and a visibility timeout of six times the writer's timeout
/// (AWS's advice for a queue drained by Lambda). A message received that many times without being
/// deleted (the writer failed it each time) moves there; the EventLog counts it in `status.deadLetters`
/// with a Warning Event. A changed maxReceiveCount and a visibility timeout changed by hand converge.
#[tokio::test]
async fn the_ingest_queue_dead_letters_what_the_writer_fails_and_the_log_counts_it() {
    let (client, ns, AwsClients { sqs, .. }, op, logs, ready) = ready_log("prov-dlq", "dlq", "Delete").await;
    let status = ready.status.unwrap();
    let url = status.ingest_queue_url.clone().unwrap();
    let dlq_arn = status
        .resources
        .get("deadLetterQueue")
        .expect("status.resources.deadLetterQueue")
        .clone();
    let dlq_url = sqs
        .get_queue_url()
        .queue_name(dlq_arn.rsplit(':').next().unwrap())
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let attrs = queue_attributes(&sqs, &url).await;
    assert_eq!(
        attrs.get("VisibilityTimeout").map(String::as_str),
        Some("180"),
        "{attrs:?}"
    );
    let policy: serde_json::Value = serde_json::from_str(&attrs["RedrivePolicy"]).unwrap();
    assert_eq!(policy["deadLetterTargetArn"], dlq_arn.as_str());
    assert_eq!(
        policy["maxReceiveCount"].to_string().trim_matches('"'),
        "5",
        "the default"
    );
    let dlq_attrs = queue_attributes(&sqs, &dlq_url).await;
    assert_eq!(
        dlq_attrs.get("MessageRetentionPeriod").map(String::as_str),
        Some("1209600")
    );
    let tags = sqs
        .list_queue_tags()
        .queue_url(&dlq_url)
        .send()
        .await
        .unwrap()
        .tags
        .unwrap_or_default();
    assert_eq!(
        tags.get("kappa.dev/name").map(String::as_str),
        Some("dlq"),
        "{tags:?}"
    );
    assert_eq!(status.dead_letters, Some(0));

    // maxReceiveCount 2, and the visibility timeout changed by hand: both converge.
    logs.patch(
        "dlq",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"spec": {"ingest": {"maxReceiveCount": 2}}})),
    )
    .await
    .unwrap();
    sqs.set_queue_attributes()
        .queue_url(&url)
        .attributes(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout, "30")
        .send()
        .await
        .unwrap();
    // The patch is reconciled at once; the visibility timeout changed by hand (perhaps after that
    // reconcile read the queue) is mended by the next periodic one, 30 s later at most.
    common::eventually(
        Duration::from_secs(90),
        "the redrive policy with maxReceiveCount 2",
        || async {
            let a = queue_attributes(&sqs, &url).await;
            let p: serde_json::Value = serde_json::from_str(a.get("RedrivePolicy")?).ok()?;
            (p["maxReceiveCount"].to_string().trim_matches('"') == "2"
                && a.get("VisibilityTimeout").map(String::as_str) == Some("180"))
            .then_some(())
        },
    )
    .await;
    wait_ready(&logs, "dlq").await;

    // A message the writer fails twice (received, never deleted) is dead-lettered on the next receive.
    // The test plays the failing writer by hand: the local stack runs the real writer behind the
    // mapping (hack/local_lambda.py), whose receives would hold the message for the 180 s visibility
    // timeout, so the mapping is disabled first. The operator keeps the mapping as planned (it enables a
    // disabled one at its next reconcile, and the writer's poller could then take the message again for
    // another 180 s), so it is stopped while the test plays the writer, and started again after.
    drop(op);
    let lambda = aws_sdk_lambda::Client::new(&common::aws_config().await);
    let queue_arn = queue_attributes(&sqs, &url).await["QueueArn"].clone();
    let mappings = lambda
        .list_event_source_mappings()
        .event_source_arn(&queue_arn)
        .send()
        .await
        .unwrap();
    for m in mappings.event_source_mappings() {
        lambda
            .update_event_source_mapping()
            .uuid(m.uuid().unwrap())
            .enabled(false)
            .send()
            .await
            .unwrap();
    }
    // The harness's pollers look at a mapping's state every 200 ms (later on a loaded machine).
    tokio::time::sleep(Duration::from_secs(3)).await;
    sqs.send_message()
        .queue_url(&url)
        .message_body("{not json")
        .send()
        .await
        .unwrap();
    // Received (and failed) until SQS moves it. Should the writer's poller still have taken it before it
    // paused, the writer failed it too (a receive that counts) and it is visible again after the 180 s
    // visibility timeout: the deadline covers that.
    common::eventually(
        Duration::from_secs(240),
        "the message in the dead-letter queue",
        || async {
            sqs.receive_message()
                .queue_url(&url)
                .visibility_timeout(0)
                .send()
                .await
                .unwrap();
            let a = queue_attributes(&sqs, &dlq_url).await;
            (a.get("ApproximateNumberOfMessages").map(String::as_str) == Some("1")).then_some(())
        },
    )
    .await;
    let _op = Operator::start(&ns, "solo", 15);
    nudge(&ns, "dlq", 1);
    common::eventually(Duration::from_secs(60), "status.deadLetters 1", || async {
        let s = logs.get("dlq").await.ok()?.status?;
        (s.dead_letters == Some(1)).then_some(())
    })
    .await;
    let events = common::kubectl(&[
        "-n",
        &ns,
        "get",
        "events",
        "--field-selector",
        "reason=DeadLetters",
        "-o",
        "json",
    ]);
    let events: serde_json::Value = serde_json::from_str(&events).unwrap();
    let notes: Vec<&str> = (events["items"].as_array().unwrap().iter())
        .filter_map(|e| e["note"].as_str().or(e["message"].as_str()))
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("holds 1 message") && n.contains("kubectl kappa redrive")),
        "a Warning Event DeadLetters naming the count and the fix: {notes:?}"
    );
    common::delete_namespace(&client, &ns).await;
}

fn view(name: &str, store: &str) -> String {
    format!(
        r#"
apiVersion: kappa.dev/v1alpha1
kind: MaterializedView
metadata: {{name: {name}}}
spec:
  eventLogRef: {{name: game-events}}
  recordTypes: [player]
  projection: {{mode: Append, key: {{partitionKey: "P#{{playerId}}"}}}}
  backfill: {{source: None}}
  store: {store}
  deletionPolicy: Delete
"#
    )
}

async fn wait_for_table(
    api: &Api<kappa_operator::crd::MaterializedView>,
    name: &str,
) -> (String, Option<String>) {
    common::eventually(
        Duration::from_secs(40),
        &format!("view {name}'s table"),
        || async {
            let s = api.get(name).await.ok()?.status?;
            Some((s.table_name?, s.key_prefix))
        },
    )
    .await
}

#[tokio::test]
async fn views_tables_are_shared_or_dedicated_and_a_shared_one_outlives_all_but_its_last_view() {
    let (client, ns) = common::setup("prov-views").await;
    let ddb = aws_sdk_dynamodb::Client::new(&common::aws_config().await);
    let _op = Operator::start(&ns, "solo", 15);
    common::create_yaml(&client, &ns, &log("game-events", "Delete"))
        .await
        .unwrap();
    for (name, store) in [
        ("players", "{}"),
        ("scores", "{keyPrefix: \"S#\"}"),
        ("games", "{table: Dedicated, streams: true}"),
    ] {
        common::create_yaml(&client, &ns, &view(name, store))
            .await
            .unwrap();
    }
    let views: Api<kappa_operator::crd::MaterializedView> = Api::namespaced(client.clone(), &ns);
    let (players, players_prefix) = wait_for_table(&views, "players").await;
    let (scores, scores_prefix) = wait_for_table(&views, "scores").await;
    let (games, games_prefix) = wait_for_table(&views, "games").await;
    assert_eq!(players, scores, "two shared views, one table");
    assert_ne!(players, games);
    assert_eq!(
        (players_prefix.as_deref(), scores_prefix.as_deref(), games_prefix),
        (Some("players#"), Some("S#"), None)
    );

    let shared = ddb
        .describe_table()
        .table_name(&players)
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    assert!(
        shared.stream_specification().is_none_or(|s| !s.stream_enabled()),
        "no sharer asked for Streams"
    );
    let shared_tags = table_tags(&ddb, shared.table_arn().unwrap()).await;
    assert_eq!(shared_tags["kappa.dev/kind"], "ViewsTable");
    assert_eq!(shared_tags["kappa.dev/name"], "views");
    let dedicated = ddb
        .describe_table()
        .table_name(&games)
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    assert_eq!(
        dedicated
            .stream_specification()
            .unwrap()
            .stream_view_type()
            .unwrap()
            .as_str(),
        "NEW_AND_OLD_IMAGES"
    );
    let dedicated_tags = table_tags(&ddb, dedicated.table_arn().unwrap()).await;
    assert_eq!(
        (
            dedicated_tags["kappa.dev/kind"].as_str(),
            dedicated_tags["kappa.dev/name"].as_str()
        ),
        ("MaterializedView", "games")
    );
    let keys: Vec<String> = dedicated
        .key_schema()
        .iter()
        .map(|k| k.attribute_name().to_string())
        .collect();
    assert_eq!(keys, ["pk", "sk"]);

    // Each projector's role writes only its own items: the prefix in the shared table, anything in its own.
    let iam = aws_sdk_iam::Client::new(&common::aws_config().await);
    let projector_policy = |view: &'static str| {
        let (views, iam) = (views.clone(), iam.clone());
        async move {
            let status = views.get(view).await.unwrap().status.unwrap();
            let arn = status
                .resources
                .get("role/projector")
                .cloned()
                .expect("status.resources.role/projector");
            let name = arn.rsplit('/').next().unwrap().to_string();
            let doc = iam
                .get_role_policy()
                .role_name(&name)
                .policy_name("kappa")
                .send()
                .await
                .unwrap();
            (
                name,
                kappa_operator::aws::iam::parse_document(&doc.policy_document).unwrap(),
            )
        }
    };
    let (players_role, players_policy) = projector_policy("players").await;
    let write = players_policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == "WriteOwnViewItems")
        .unwrap()
        .clone();
    assert_eq!(
        write["Resource"],
        serde_json::json!([shared.table_arn().unwrap()])
    );
    assert_eq!(
        write["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"],
        serde_json::json!(["players#*"])
    );
    let (_, games_policy) = projector_policy("games").await;
    assert!(
        !games_policy.to_string().contains("LeadingKeys"),
        "a dedicated table needs no prefix condition"
    );
    assert!(
        !games_policy.to_string().contains("GetRecords"),
        "Sns fan-out: the projector reads no stream"
    );

    // The projectors are Lambda functions of the built-in code, subscribed to their record types' topics
    // with a filter policy; the log's writer drains the queue and its router reads the stream.
    let aws = common::aws_config().await;
    let lambda = aws_sdk_lambda::Client::new(&aws);
    let sns = aws_sdk_sns::Client::new(&aws);
    let players_status = common::eventually(Duration::from_secs(60), "players Live on Lambda", || async {
        let s = views.get("players").await.ok()?.status?;
        (s.phase == Some(kappa_operator::crd::ViewPhase::Live)
            && s.resources.contains_key("subscription/t-player"))
        .then_some(s)
    })
    .await;
    let function_arn = players_status.resources["function/projector"].clone();
    let config = lambda
        .get_function()
        .function_name(&function_arn)
        .send()
        .await
        .unwrap()
        .configuration
        .unwrap();
    assert_eq!(config.runtime().map(|r| r.as_str()), Some("provided.al2023"));
    assert_eq!(config.handler(), Some("projector"));
    assert_eq!(
        config.role(),
        Some(players_status.resources["role/projector"].as_str())
    );
    let env = config.environment().unwrap().variables().unwrap();
    assert!(env["PROJECTION"].contains(r#""view":"players""#), "{env:?}");
    let subscription = players_status.resources["subscription/t-player"].clone();
    let attributes = sns
        .get_subscription_attributes()
        .subscription_arn(&subscription)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    assert_eq!(attributes["Protocol"], "lambda");
    assert_eq!(attributes["Endpoint"], function_arn);
    let policy: serde_json::Value = serde_json::from_str(&attributes["FilterPolicy"]).unwrap();
    assert_eq!(policy, serde_json::json!({"recordType": ["player"]}));
    let log_status = Api::<EventLog>::namespaced(client.clone(), &ns)
        .get("game-events")
        .await
        .unwrap()
        .status
        .unwrap();
    let source_of = |function: &str| {
        let (lambda, function) = (
            lambda.clone(),
            log_status.resources[&format!("function/{function}")].clone(),
        );
        async move {
            let name = function.rsplit(':').next().unwrap().to_string();
            let out = lambda
                .list_event_source_mappings()
                .function_name(&name)
                .send()
                .await
                .unwrap();
            let sources: Vec<String> = out
                .event_source_mappings()
                .iter()
                .filter_map(|m| m.event_source_arn().map(str::to_string))
                .collect();
            assert_eq!(sources.len(), 1, "one mapping of {name}: {sources:?}");
            sources[0].clone()
        }
    };
    assert_eq!(source_of("writer").await, log_status.resources["queue"]);
    assert_eq!(
        source_of("router").await,
        log_status.table.as_ref().unwrap().stream_arn.clone().unwrap()
    );

    // A subscription deleted by hand is back after the next reconcile.
    sns.unsubscribe()
        .subscription_arn(&subscription)
        .send()
        .await
        .unwrap();
    let topic = subscription.rsplit_once(':').unwrap().0.to_string();
    nudge_kind(&ns, "mv", "players", 1);
    common::eventually(Duration::from_secs(30), "the subscription recreated", || async {
        let out = sns
            .list_subscriptions_by_topic()
            .topic_arn(&topic)
            .send()
            .await
            .ok()?;
        out.subscriptions()
            .iter()
            .any(|s| s.endpoint() == Some(function_arn.as_str()))
            .then_some(())
    })
    .await;

    // A filter policy changed by hand is restored.
    let current = sns
        .list_subscriptions_by_topic()
        .topic_arn(&topic)
        .send()
        .await
        .unwrap()
        .subscriptions()
        .iter()
        .find(|s| s.endpoint() == Some(function_arn.as_str()))
        .and_then(|s| s.subscription_arn().map(str::to_string))
        .unwrap();
    sns.set_subscription_attributes()
        .subscription_arn(&current)
        .attribute_name("FilterPolicy")
        .attribute_value(r#"{"recordType": ["game"]}"#)
        .send()
        .await
        .unwrap();
    nudge_kind(&ns, "mv", "players", 2);
    common::eventually(Duration::from_secs(30), "the filter policy restored", || async {
        let attributes = sns
            .get_subscription_attributes()
            .subscription_arn(&current)
            .send()
            .await
            .ok()?
            .attributes?;
        let policy: serde_json::Value = serde_json::from_str(attributes.get("FilterPolicy")?).ok()?;
        (policy == serde_json::json!({"recordType": ["player"]})).then_some(())
    })
    .await;

    let gone = |name: &'static str| {
        let views = views.clone();
        async move {
            views.delete(name, &DeleteParams::default()).await.unwrap();
            common::eventually(
                Duration::from_secs(30),
                &format!("view {name} to be gone"),
                || async { views.get_opt(name).await.unwrap().is_none().then_some(()) },
            )
            .await;
        }
    };
    // An item of each sharer: deleting players (deletionPolicy Delete) removes only its own.
    let key = |pk: &str| {
        std::collections::HashMap::from([
            (
                "pk".to_string(),
                aws_sdk_dynamodb::types::AttributeValue::S(pk.into()),
            ),
            (
                "sk".to_string(),
                aws_sdk_dynamodb::types::AttributeValue::S("LATEST".into()),
            ),
        ])
    };
    for pk in ["players#PLAYER#ada", "S#PLAYER#ada"] {
        ddb.put_item()
            .table_name(&players)
            .set_item(Some(key(pk)))
            .send()
            .await
            .unwrap();
    }
    gone("players").await;
    assert!(
        ddb.describe_table().table_name(&players).send().await.is_ok(),
        "scores still uses the shared table"
    );
    let item = |pk: &'static str| {
        let (ddb, table, k) = (ddb.clone(), players.clone(), key(pk));
        async move {
            ddb.get_item()
                .table_name(table)
                .set_key(Some(k))
                .send()
                .await
                .unwrap()
                .item
        }
    };
    assert!(
        item("players#PLAYER#ada").await.is_none(),
        "the deleted view's items are gone"
    );
    assert!(item("S#PLAYER#ada").await.is_some(), "its sibling's items stay");
    assert!(
        lambda
            .get_function()
            .function_name(&function_arn)
            .send()
            .await
            .is_err(),
        "the view's projector function is deleted"
    );
    let left = sns
        .list_subscriptions_by_topic()
        .topic_arn(&topic)
        .send()
        .await
        .unwrap();
    assert!(
        !left
            .subscriptions()
            .iter()
            .any(|s| s.endpoint() == Some(function_arn.as_str())),
        "and its subscription"
    );
    assert!(
        iam.get_role().role_name(&players_role).send().await.is_err(),
        "the view's projector role is deleted"
    );
    gone("games").await;
    assert!(
        ddb.describe_table().table_name(&games).send().await.is_err(),
        "the dedicated table is deleted"
    );
    gone("scores").await;
    assert!(
        ddb.describe_table().table_name(&scores).send().await.is_err(),
        "the last sharer deletes the shared table"
    );
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn a_direct_view_maps_the_log_stream_with_filter_criteria_and_no_router_runs() {
    let (client, ns) = common::setup("prov-direct").await;
    let aws = common::aws_config().await;
    let lambda = aws_sdk_lambda::Client::new(&aws);
    let op = Operator::start(&ns, "solo", 15);
    let direct_log = log("game-events", "Delete").replace("fanOut: {mode: Sns}", "fanOut: {mode: Direct}");
    common::create_yaml(&client, &ns, &direct_log).await.unwrap();
    common::create_yaml(&client, &ns, &view("players", "{}"))
        .await
        .unwrap();
    let views: Api<kappa_operator::crd::MaterializedView> = Api::namespaced(client.clone(), &ns);
    let status = common::eventually(
        Duration::from_secs(60),
        "players Live with its mapping",
        || async {
            let s = views.get("players").await.ok()?.status?;
            (s.phase == Some(kappa_operator::crd::ViewPhase::Live) && s.resources.contains_key("mapping"))
                .then_some(s)
        },
    )
    .await;
    let mapping = lambda
        .get_event_source_mapping()
        .uuid(&status.resources["mapping"])
        .send()
        .await
        .unwrap();
    let log_status = Api::<EventLog>::namespaced(client.clone(), &ns)
        .get("game-events")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(
        mapping.event_source_arn(),
        log_status.table.unwrap().stream_arn.as_deref()
    );
    let patterns: Vec<serde_json::Value> = mapping
        .filter_criteria()
        .unwrap()
        .filters()
        .iter()
        .map(|f| serde_json::from_str(f.pattern().unwrap()).unwrap())
        .collect();
    assert_eq!(
        patterns,
        [serde_json::json!({"dynamodb": {"NewImage": {"type": {"S": ["player"]}}}})]
    );
    assert!(
        !log_status.resources.contains_key("function/router"),
        "Direct fan-out: no router"
    );

    // A mapping deleted by hand is back after the next reconcile.
    lambda
        .delete_event_source_mapping()
        .uuid(&status.resources["mapping"])
        .send()
        .await
        .unwrap();
    nudge_kind(&ns, "mv", "players", 0);
    let function = status.resources["function/projector"]
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    common::eventually(Duration::from_secs(30), "the mapping recreated", || async {
        let out = lambda
            .list_event_source_mappings()
            .function_name(&function)
            .send()
            .await
            .ok()?;
        (out.event_source_mappings().len() == 1).then_some(())
    })
    .await;

    // Reconciling the unchanged view (function, mapping, role, table) makes no mutating AWS call.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = mutating_calls(&op).await;
    assert_no_mutation_after_nudge(&op, &ns, "mv", "players", 1, before, "an unchanged view").await;
    common::delete_namespace(&client, &ns).await;
}

// ------------------------------------------------------------------------------------------------------
// Failure handling of the Lambda runtime (#16 item 2): stream mappings and SNS subscriptions.

/// The URL of the queue an ARN names.
async fn queue_url_of(sqs: &aws_sdk_sqs::Client, arn: &str) -> Option<String> {
    sqs.get_queue_url()
        .queue_name(arn.rsplit(':').next()?)
        .send()
        .await
        .ok()?
        .queue_url
}

async fn queue_tags(sqs: &aws_sdk_sqs::Client, url: &str) -> BTreeMap<String, String> {
    (sqs.list_queue_tags().queue_url(url).send().await.unwrap().tags)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// A stream mapping's failure handling as the operator plans it: bisect, 10 retries, records up to
/// 23 hours old, on failure to `queue_arn`.
fn assert_failure_handling(m: &aws_sdk_lambda::types::EventSourceMappingConfiguration, queue_arn: &str) {
    assert_eq!(m.bisect_batch_on_function_error(), Some(true), "{m:?}");
    assert_eq!(m.maximum_retry_attempts(), Some(10), "{m:?}");
    assert_eq!(m.maximum_record_age_in_seconds(), Some(82_800), "{m:?}");
    assert_eq!(
        m.destination_config()
            .and_then(|d| d.on_failure())
            .and_then(|o| o.destination()),
        Some(queue_arn),
        "{m:?}"
    );
}

/// Warning Events of `reason` in the namespace, their notes.
fn event_notes(ns: &str, reason: &str) -> Vec<String> {
    let events = common::kubectl(&[
        "-n",
        ns,
        "get",
        "events",
        "--field-selector",
        &format!("reason={reason}"),
        "-o",
        "json",
    ]);
    let events: serde_json::Value = serde_json::from_str(&events).unwrap();
    (events["items"].as_array().unwrap().iter())
        .filter_map(|e| e["note"].as_str().or(e["message"].as_str()))
        .map(String::from)
        .collect()
}

/// `Direct` fan-out: the projector's stream mapping bisects, retries 10 times, skips records older than
/// 23 hours and sends a failed batch to the view's own failure queue (owned, tagged, 14 days); the role
/// may send to that queue only. A hand-changed retry count and a hand-deleted queue come back; an
/// unchanged view costs no mutating call; a message in the queue shows in `status.deadLetters`, the
/// metric and a Warning Event; deleting the view deletes its queue, not the log's.
#[tokio::test]
async fn a_direct_views_mapping_sends_what_it_fails_to_the_views_own_failure_queue() {
    let (client, ns) = common::setup("prov-direct-fail").await;
    let aws = common::aws_config().await;
    let lambda = aws_sdk_lambda::Client::new(&aws);
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let iam = aws_sdk_iam::Client::new(&aws);
    let op = Operator::start(&ns, "solo", 15);
    let direct_log = log("game-events", "Delete").replace("fanOut: {mode: Sns}", "fanOut: {mode: Direct}");
    common::create_yaml(&client, &ns, &direct_log).await.unwrap();
    common::create_yaml(&client, &ns, &view("players", "{}"))
        .await
        .unwrap();
    let views: Api<kappa_operator::crd::MaterializedView> = Api::namespaced(client.clone(), &ns);
    let status = common::eventually(
        Duration::from_secs(60),
        "players Live with its mapping and failure queue",
        || async {
            let s = views.get("players").await.ok()?.status?;
            (s.phase == Some(kappa_operator::crd::ViewPhase::Live)
                && s.resources.contains_key("mapping")
                && s.resources.contains_key("failureQueue"))
            .then_some(s)
        },
    )
    .await;
    let queue_arn = status.resources["failureQueue"].clone();
    let uuid = status.resources["mapping"].clone();
    let mapping = lambda
        .get_event_source_mapping()
        .uuid(&uuid)
        .send()
        .await
        .unwrap();
    let mapping = aws_sdk_lambda::types::EventSourceMappingConfiguration::builder()
        .set_bisect_batch_on_function_error(mapping.bisect_batch_on_function_error())
        .set_maximum_retry_attempts(mapping.maximum_retry_attempts())
        .set_maximum_record_age_in_seconds(mapping.maximum_record_age_in_seconds())
        .set_destination_config(mapping.destination_config().cloned())
        .build();
    assert_failure_handling(&mapping, &queue_arn);
    let url = queue_url_of(&sqs, &queue_arn)
        .await
        .expect("the failure queue exists");
    let tags = queue_tags(&sqs, &url).await;
    assert_eq!(
        tags.get("kappa.dev/kind").map(String::as_str),
        Some("MaterializedView")
    );
    assert_eq!(tags.get("kappa.dev/name").map(String::as_str), Some("players"));
    assert_eq!(
        queue_attributes(&sqs, &url)
            .await
            .get("MessageRetentionPeriod")
            .map(String::as_str),
        Some("1209600")
    );
    assert_eq!(status.dead_letters, Some(0));
    let role = status.resources["role/projector"]
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    let policy = iam
        .get_role_policy()
        .role_name(&role)
        .policy_name("kappa")
        .send()
        .await
        .unwrap();
    let policy = kappa_operator::aws::iam::parse_document(policy.policy_document()).unwrap();
    let sends: Vec<&serde_json::Value> = (policy["Statement"].as_array().unwrap().iter())
        .filter(|s| s.to_string().contains("sqs:"))
        .collect();
    assert_eq!(sends.len(), 1, "{policy}");
    assert_eq!(sends[0]["Action"], serde_json::json!(["sqs:SendMessage"]));
    assert_eq!(sends[0]["Resource"], serde_json::json!([queue_arn]));

    // A retry count changed by hand converges; a failure queue deleted by hand comes back.
    lambda
        .update_event_source_mapping()
        .uuid(&uuid)
        .maximum_retry_attempts(3)
        .send()
        .await
        .unwrap();
    sqs.delete_queue().queue_url(&url).send().await.unwrap();
    nudge_kind(&ns, "mv", "players", 1);
    common::eventually(
        Duration::from_secs(30),
        "the retries and the failure queue back",
        || async {
            let m = lambda.get_event_source_mapping().uuid(&uuid).send().await.ok()?;
            let back = queue_url_of(&sqs, &queue_arn).await.is_some();
            (m.maximum_retry_attempts() == Some(10) && back).then_some(())
        },
    )
    .await;

    // A second reconcile of the unchanged view changes nothing.
    common::eventually(Duration::from_secs(30), "players Live again", || async {
        let s = views.get("players").await.ok()?.status?;
        (s.phase == Some(kappa_operator::crd::ViewPhase::Live)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    nudge_kind(&ns, "mv", "players", 2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = mutating_calls(&op).await;
    assert_no_mutation_after_nudge(&op, &ns, "mv", "players", 3, before, "an unchanged view").await;

    // A failed batch's record in the queue: counted, with a Warning Event and the metric.
    let url = queue_url_of(&sqs, &queue_arn).await.unwrap();
    sqs.send_message()
        .queue_url(&url)
        .message_body(r#"{"requestContext":{"condition":"RetryAttemptsExhausted"},"DDBStreamBatchInfo":{}}"#)
        .send()
        .await
        .unwrap();
    nudge_kind(&ns, "mv", "players", 4);
    common::eventually(Duration::from_secs(60), "status.deadLetters 1", || async {
        let s = views.get("players").await.ok()?.status?;
        (s.dead_letters == Some(1)).then_some(())
    })
    .await;
    let notes = event_notes(&ns, "DeadLetters");
    assert!(
        notes
            .iter()
            .any(|n| n.contains("holds 1 message") && n.contains("still in the log")),
        "a Warning Event DeadLetters naming the count and the fix: {notes:?}"
    );
    let metrics = op.metrics().await.unwrap_or_default();
    assert!(
        metrics.lines().any(|l| l.starts_with("kappa_view_dead_letters")
            && l.contains(r#"view="players""#)
            && l.ends_with(" 1")),
        "kappa_view_dead_letters 1: {}",
        metrics
            .lines()
            .filter(|l| l.contains("dead_letters"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Deleting the view deletes its failure queue and none of the log's.
    let log_dlq = Api::<EventLog>::namespaced(client.clone(), &ns)
        .get("game-events")
        .await
        .unwrap()
        .status
        .unwrap()
        .resources["deadLetterQueue"]
        .clone();
    views.delete("players", &DeleteParams::default()).await.unwrap();
    common::eventually(Duration::from_secs(40), "players deleted", || async {
        views.get_opt("players").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(
        queue_url_of(&sqs, &queue_arn).await.is_none(),
        "the view's failure queue is gone"
    );
    assert!(
        queue_url_of(&sqs, &log_dlq).await.is_some(),
        "the log's queues stay"
    );
    common::delete_namespace(&client, &ns).await;
}

/// `Sns` fan-out: the router's stream mapping fails over to the log's router failure queue; the
/// projector's subscription has a redrive policy to the view's failure queue, whose access policy lets
/// only the view's topics send; the projector's asynchronous invocations retry twice and then go to the
/// same queue. A hand-changed invoke configuration converges; deleting the view removes its queue and
/// leaves the router's; deleting the log (`Delete`) removes the router's.
#[tokio::test]
async fn sns_views_and_the_router_dead_letter_to_their_own_queues() {
    let (client, ns) = common::setup("prov-sns-fail").await;
    let aws = common::aws_config().await;
    let lambda = aws_sdk_lambda::Client::new(&aws);
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let sns = aws_sdk_sns::Client::new(&aws);
    let _op = Operator::start(&ns, "solo", 15);
    common::create_yaml(&client, &ns, &log("game-events", "Delete"))
        .await
        .unwrap();
    common::create_yaml(&client, &ns, &view("players", "{}"))
        .await
        .unwrap();
    let views: Api<kappa_operator::crd::MaterializedView> = Api::namespaced(client.clone(), &ns);
    let logs: Api<EventLog> = Api::namespaced(client.clone(), &ns);
    let status = common::eventually(
        Duration::from_secs(60),
        "players Live with its subscription and failure queue",
        || async {
            let s = views.get("players").await.ok()?.status?;
            (s.phase == Some(kappa_operator::crd::ViewPhase::Live)
                && s.resources.keys().any(|k| k.starts_with("subscription/"))
                && s.resources.contains_key("failureQueue"))
            .then_some(s)
        },
    )
    .await;
    let log_status = common::eventually(Duration::from_secs(60), "the router's mapping", || async {
        let s = logs.get("game-events").await.ok()?.status?;
        (s.resources.contains_key("mapping/router") && s.resources.contains_key("routerFailureQueue"))
            .then_some(s)
    })
    .await;

    // The router's mapping.
    let router_queue = log_status.resources["routerFailureQueue"].clone();
    let m = lambda
        .get_event_source_mapping()
        .uuid(&log_status.resources["mapping/router"])
        .send()
        .await
        .unwrap();
    let m = aws_sdk_lambda::types::EventSourceMappingConfiguration::builder()
        .set_bisect_batch_on_function_error(m.bisect_batch_on_function_error())
        .set_maximum_retry_attempts(m.maximum_retry_attempts())
        .set_maximum_record_age_in_seconds(m.maximum_record_age_in_seconds())
        .set_destination_config(m.destination_config().cloned())
        .build();
    assert_failure_handling(&m, &router_queue);
    let router_url = queue_url_of(&sqs, &router_queue)
        .await
        .expect("the router's failure queue");
    let tags = queue_tags(&sqs, &router_url).await;
    assert_eq!(tags.get("kappa.dev/kind").map(String::as_str), Some("EventLog"));
    assert_eq!(log_status.router_dead_letters, Some(0));

    // The subscription's redrive policy and the queue's access policy.
    let queue_arn = status.resources["failureQueue"].clone();
    let (key, subscription) = status
        .resources
        .iter()
        .find(|(k, _)| k.starts_with("subscription/"))
        .unwrap();
    let group = key.trim_start_matches("subscription/");
    let topic = log_status.resources[&format!("topic/{group}")].clone();
    let attrs = sns
        .get_subscription_attributes()
        .subscription_arn(subscription)
        .send()
        .await
        .unwrap();
    let redrive: serde_json::Value =
        serde_json::from_str(&attrs.attributes().unwrap()["RedrivePolicy"]).unwrap();
    assert_eq!(redrive["deadLetterTargetArn"], queue_arn.as_str());
    let url = queue_url_of(&sqs, &queue_arn).await.unwrap();
    let access: serde_json::Value =
        serde_json::from_str(&queue_attributes(&sqs, &url).await["Policy"]).unwrap();
    let st = &access["Statement"][0];
    assert_eq!(
        st["Principal"],
        serde_json::json!({"Service": "sns.amazonaws.com"})
    );
    assert_eq!(st["Action"], "sqs:SendMessage");
    assert_eq!(st["Resource"], queue_arn.as_str());
    assert_eq!(
        st["Condition"]["ArnEquals"]["aws:SourceArn"],
        serde_json::json!([topic])
    );

    // The projector's asynchronous-invocation failure handling, converged after a hand change.
    let function = status.resources["function/projector"].clone();
    let config = lambda
        .get_function_event_invoke_config()
        .function_name(&function)
        .send()
        .await
        .unwrap();
    assert_eq!(config.maximum_retry_attempts(), Some(2));
    assert_eq!(config.maximum_event_age_in_seconds(), Some(21_600));
    assert_eq!(
        config
            .destination_config()
            .and_then(|d| d.on_failure())
            .and_then(|o| o.destination()),
        Some(queue_arn.as_str())
    );
    lambda
        .put_function_event_invoke_config()
        .function_name(&function)
        .maximum_retry_attempts(0)
        .send()
        .await
        .unwrap();
    nudge_kind(&ns, "mv", "players", 1);
    common::eventually(
        Duration::from_secs(30),
        "the invoke configuration back",
        || async {
            let c = lambda
                .get_function_event_invoke_config()
                .function_name(&function)
                .send()
                .await
                .ok()?;
            (c.maximum_retry_attempts() == Some(2)
                && c.destination_config()
                    .and_then(|d| d.on_failure())
                    .and_then(|o| o.destination())
                    == Some(queue_arn.as_str()))
            .then_some(())
        },
    )
    .await;

    // Deleting the view removes its queue, not the router's; deleting the log removes the router's.
    views.delete("players", &DeleteParams::default()).await.unwrap();
    common::eventually(Duration::from_secs(40), "players deleted", || async {
        views.get_opt("players").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(
        queue_url_of(&sqs, &queue_arn).await.is_none(),
        "the view's failure queue is gone"
    );
    assert!(
        queue_url_of(&sqs, &router_queue).await.is_some(),
        "the router's failure queue is the log's"
    );
    logs.delete("game-events", &DeleteParams::default())
        .await
        .unwrap();
    common::eventually(Duration::from_secs(60), "game-events deleted", || async {
        logs.get_opt("game-events").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(
        queue_url_of(&sqs, &router_queue).await.is_none(),
        "the router's failure queue goes with its log"
    );
    common::delete_namespace(&client, &ns).await;
}
