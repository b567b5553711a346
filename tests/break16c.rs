//! break16c: a new user's adversarial cases against the Lambda runtime's failure handling and live-lag
//! reporting (#16) on the local stack: the projector's SNS subscription or stream mapping changed by hand,
//! a failure queue deleted by hand, a record the projection cannot apply under `onRecordError: Fail`, and
//! `spec.promotion.maxLag` against the lag the projector function reports.
//!
//! Each case says Expected, and Observed when it was written (if it differed). Records are put into the
//! log table directly (the writer is not under test here); the stack's Lambda harness runs the router and
//! the projectors from the log's stream. The functions are the binary under test only when
//! `.stack/lambda-binary` names it.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::QueueAttributeName;
use common::Operator;
use kappa_operator::crd::conditions::ConditionStatus;
use kappa_operator::crd::{EventLog, MaterializedView, MaterializedViewStatus, ViewPhase};
use kube::Api;
use kube::api::{Patch, PatchParams};

fn log_yaml(fan_out: &str) -> String {
    format!(
        r#"
apiVersion: kappa.dev/v1alpha1
kind: EventLog
metadata: {{name: game-events}}
spec:
  recordTypes: [player]
  table: {{sortKey: sk, orderingAttribute: seq}}
  fanOut: {{mode: {fan_out}}}
  deletionPolicy: Delete
"#
    )
}

/// A `Latest` view `players` (one item per player) with `extra` spec lines (indented by two spaces).
fn view_yaml(extra: &str) -> String {
    format!(
        r#"
apiVersion: kappa.dev/v1alpha1
kind: MaterializedView
metadata: {{name: players}}
spec:
  eventLogRef: {{name: game-events}}
  recordTypes: [player]
  projection: {{mode: Latest, key: {{partitionKey: "P#{{playerId}}"}}{on_error}}}
{backfill}  deletionPolicy: Delete
{extra}
"#,
        backfill = if extra.contains("backfill:") {
            ""
        } else {
            "  backfill: {source: None}\n"
        },
        on_error = if extra.contains("onRecordError") {
            ", onRecordError: Fail"
        } else {
            ""
        },
        extra = extra
            .lines()
            .filter(|l| !l.contains("onRecordError"))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

fn player(id: &str, seq: u32) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_string(), AttributeValue::S(format!("PLAYER#{id}"))),
        ("sk".to_string(), AttributeValue::S(format!("LOG#{seq:06}"))),
        ("type".to_string(), AttributeValue::S("player".into())),
        ("playerId".to_string(), AttributeValue::S(id.into())),
        ("seq".to_string(), AttributeValue::N(seq.to_string())),
    ])
}

struct Env {
    client: kube::Client,
    ns: String,
    op: Operator,
    ddb: aws_sdk_dynamodb::Client,
    lambda: aws_sdk_lambda::Client,
    sns: aws_sdk_sns::Client,
    sqs: aws_sdk_sqs::Client,
    views: Api<MaterializedView>,
    log_table: String,
    views_table: String,
}

/// A namespace, an operator, the log (`fan_out`) and the view `players` Live on the Lambda runtime.
async fn env(test: &str, fan_out: &str, view_extra: &str) -> Env {
    common::assert_functions_run_this_binary();
    let (client, ns) = common::setup(test).await;
    let aws = common::aws_config().await;
    let op = Operator::start(&ns, "solo", 15);
    common::create_yaml(&client, &ns, &log_yaml(fan_out))
        .await
        .unwrap();
    common::create_yaml(&client, &ns, &view_yaml(view_extra))
        .await
        .unwrap();
    let views: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
    let status = common::eventually(Duration::from_secs(120), "players Live", || async {
        let s = views.get("players").await.ok()?.status?;
        (s.phase == Some(ViewPhase::Live)).then_some(s)
    })
    .await;
    let log_table = common::log_table(&client, &ns, "game-events").await;
    Env {
        views_table: status.table_name.clone().unwrap(),
        client,
        ns,
        op,
        ddb: aws_sdk_dynamodb::Client::new(&aws),
        lambda: aws_sdk_lambda::Client::new(&aws),
        sns: aws_sdk_sns::Client::new(&aws),
        sqs: aws_sdk_sqs::Client::new(&aws),
        views,
        log_table,
    }
}

impl Env {
    async fn status(&self) -> MaterializedViewStatus {
        self.views
            .get("players")
            .await
            .unwrap()
            .status
            .unwrap_or_default()
    }

    /// The playerIds the view holds.
    async fn players(&self) -> BTreeSet<String> {
        common::scan_all(&self.ddb, &self.views_table)
            .await
            .into_iter()
            .filter(|i| {
                i.get("pk")
                    .and_then(|v| v.as_s().ok())
                    .is_some_and(|pk| pk.starts_with("players#P#"))
            })
            .filter_map(|i| i.get("playerId").and_then(|v| v.as_s().ok()).cloned())
            .collect()
    }

    async fn put(&self, items: Vec<HashMap<String, AttributeValue>>) {
        common::put_items(&self.ddb, &self.log_table, items).await;
    }

    /// Waits until the view holds every id of `ids`.
    async fn wait_for(&self, ids: &BTreeSet<String>, timeout: u64, what: &str) {
        common::eventually(Duration::from_secs(timeout), what, || async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            self.players().await.is_superset(ids).then_some(())
        })
        .await;
    }

    fn brief(s: &MaterializedViewStatus) -> String {
        format!(
            "phase {:?}, live {:?}, deadLetters {:?}, conditions {:?}",
            s.phase,
            s.live,
            s.dead_letters,
            s.conditions
                .iter()
                .map(|c| format!("{}={:?} {}: {}", c.type_, c.status, c.reason, c.message))
                .collect::<Vec<_>>()
        )
    }

    async fn done(self) {
        common::delete_namespace(&self.client, &self.ns).await;
    }
}

fn ids(range: std::ops::Range<u32>) -> BTreeSet<String> {
    range.map(|i| format!("p{i}")).collect()
}

/// The ARN of the view's failure queue, as its status records it.
fn failure_queue(status: &MaterializedViewStatus) -> String {
    status
        .resources
        .get("failureQueue")
        .or_else(|| {
            status
                .versions
                .iter()
                .find_map(|v| v.resources.get("failureQueue"))
        })
        .cloned()
        .unwrap_or_else(|| panic!("no failureQueue in {:?}", status.versions))
}

fn players(range: std::ops::Range<u32>) -> Vec<HashMap<String, AttributeValue>> {
    range.map(|i| player(&format!("p{i}"), i)).collect()
}

// ------------------------------------------------------------------------------------------- cases

/// Deletes the projector's SNS subscriptions by hand (`sns unsubscribe`, as a user cleaning up or a topic
/// policy change would), writes p100..p119 in waves over 10 s, waits for the operator to re-subscribe
/// (a resync, 30 s at most) and writes p200; returns once p200 is in the view.
async fn unsubscribe_and_write(e: &Env) {
    e.put(players(1..4)).await;
    e.wait_for(&ids(1..4), 60, "the first records in the view").await;
    let status = e.status().await;
    let subscriptions: BTreeSet<String> = status
        .resources
        .iter()
        .chain(status.versions.iter().flat_map(|v| v.resources.iter()))
        .filter(|(k, _)| k.starts_with("subscription/"))
        .map(|(_, v)| v.clone())
        .collect();
    assert!(!subscriptions.is_empty(), "{:?}", status.resources);
    for arn in &subscriptions {
        e.sns.unsubscribe().subscription_arn(arn).send().await.unwrap();
    }
    for wave in 0..5u32 {
        e.put(players(100 + wave * 4..104 + wave * 4)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    tokio::time::sleep(Duration::from_secs(45)).await;
    e.put(players(200..201)).await;
    e.wait_for(
        &ids(200..201),
        90,
        "the record written after the resync (the subscription restored)",
    )
    .await;
}

/// Input: `Sns` fan-out, `backfill: {source: Scan}`; the projector's SNS subscription deleted by hand,
/// then records p100..p119 in waves over 10 s, then p200 once the operator re-subscribed.
/// Expected: every record reaches the view: SNS dropped what was published to the topic while the
/// subscription was missing, so the operator, finding the subscription its status recorded gone,
/// re-creates it and rebuilds the view from the log (a backfill attempt closing the gap).
/// (Found by the breaker: 4 of 24 records never reached the view while it read Live.)
#[tokio::test]
async fn records_published_while_the_projector_subscription_is_gone_are_not_lost() {
    let e = env("b16c-unsub", "Sns", "  backfill: {source: Scan}").await;
    unsubscribe_and_write(&e).await;
    let want: BTreeSet<String> = ids(1..4)
        .into_iter()
        .chain(ids(100..120))
        .chain(ids(200..201))
        .collect();
    e.wait_for(
        &want,
        180,
        "every record, those published while the subscription was missing too",
    )
    .await;
    let s = common::eventually(
        Duration::from_secs(120),
        "the gap's backfill done, Live",
        || async {
            let s = e.status().await;
            (s.phase == Some(ViewPhase::Live)).then_some(s)
        },
    )
    .await;
    let reason = s
        .backfill
        .as_ref()
        .and_then(|b| b.reason.clone())
        .unwrap_or_default();
    assert!(
        reason.contains("subscription") && reason.contains("re-created"),
        "the attempt says why: {}",
        Env::brief(&s)
    );
    e.done().await;
}

/// Input: as above, with `backfill: {source: None}` (the view cannot rebuild).
/// Expected: the loss is not silent: a Warning Event `RecordsLost` naming the subscription and the fix
/// (a backfill source), as for an in-cluster view's gap.
#[tokio::test]
async fn a_lost_subscription_without_backfill_is_reported_as_records_lost() {
    let e = env("b16c-unsub0", "Sns", "").await;
    unsubscribe_and_write(&e).await;
    let note = common::warning_note(&e.client, &e.ns, "RecordsLost", Duration::from_secs(60)).await;
    assert!(
        note.contains("subscription") && note.contains("spec.backfill.source"),
        "the cause and the fix are named: {note}"
    );
    e.done().await;
}

/// Input: `Direct` fan-out, `spec.promotion.maxLag: 0s` (valid for the CRD: "promote only when not
/// behind at all"); five records, all applied; then no writes for 60 s.
/// Expected: once the projector applied everything the log holds, the view is `Live` (nothing is left
/// to catch up).
/// Found by the breaker (the last batch's lag stood as the view's lag for as long as the log was quiet: 60 s
/// after the last record, phase CatchingUp, `live {caughtUp: false, recordsApplied: 5, lagSeconds: 1}`,
/// Ready=False "backfill complete; the projector function reports a lag of 1s, over
/// spec.promotion.maxLag (0s)"). Fixed: a function quiet for longer than it can run plus the reporting
/// interval has lag 0 (`progress::quiet_after_ms`).
#[tokio::test]
async fn a_quiet_log_leaves_a_caught_up_lambda_view_live_whatever_its_max_lag() {
    let e = env("b16c-lag0", "Direct", "  promotion: {maxLag: 0s}").await;
    e.put(players(1..6)).await;
    e.wait_for(&ids(1..6), 60, "five records in the view").await;
    common::eventually(Duration::from_secs(60), "the projector's report", || async {
        let live = e.status().await.live?;
        (live.records_applied >= 5 && live.last_reported.is_some()).then_some(())
    })
    .await;
    // Quiet for longer than the function can run (spec.projector.timeoutSeconds, 60 s) plus the
    // reporting interval: `progress::quiet_after_ms`.
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut s = e.status().await;
    while std::time::Instant::now() < deadline && s.phase != Some(ViewPhase::Live) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        s = e.status().await;
    }
    assert_eq!(
        s.phase,
        Some(ViewPhase::Live),
        "every record applied, the log quiet for 150 s: {}",
        Env::brief(&s)
    );
    assert_eq!(
        s.live.as_ref().and_then(|l| l.lag_seconds),
        Some(0),
        "{}",
        Env::brief(&s)
    );
    e.done().await;
}

/// Input: `Direct` fan-out, `spec.promotion.maxLag: 5s`; the projector's event source mapping disabled
/// by hand (`UpdateEventSourceMapping Enabled=false`), then five records.
/// Expected: the operator re-enables the mapping (it does for a Disabled state), the five records land,
/// and once they are applied and the log is quiet the view is `Live`, not held `CatchingUp` by the lag
/// of the batch that waited behind the disabled mapping.
/// PASSES (mapping `Enabled` again, all records in the view, view `Live`); but see
/// `status_live_counts_every_record_the_projector_applied`: here `records_applied` read 2 of 7.
#[tokio::test]
async fn a_disabled_projector_mapping_is_re_enabled_and_the_view_returns_to_live() {
    let e = env("b16c-disable", "Direct", "  promotion: {maxLag: 5s}").await;
    e.put(players(1..3)).await;
    e.wait_for(&ids(1..3), 60, "the first records in the view").await;
    let s = e.status().await;
    let mapping = s
        .resources
        .get("mapping")
        .or_else(|| s.versions.iter().find_map(|v| v.resources.get("mapping")))
        .cloned()
        .unwrap_or_else(|| panic!("no mapping in {:?}", s.resources));
    e.lambda
        .update_event_source_mapping()
        .uuid(&mapping)
        .enabled(false)
        .send()
        .await
        .unwrap();
    e.put(players(10..15)).await;
    e.wait_for(
        &ids(10..15),
        120,
        "the records written while the mapping was disabled",
    )
    .await;
    let state = e
        .lambda
        .get_event_source_mapping()
        .uuid(&mapping)
        .send()
        .await
        .unwrap()
        .state
        .unwrap_or_default();
    // The batch that waited behind the disabled mapping may report a lag over maxLag (it does when the
    // re-enabled mapping takes longer than 5 s to deliver); the view is then Live once the function is
    // quiet: `quiet_after_ms` of its timeout (60 s by default), 70 s after its last report.
    let quiet = Duration::from_millis(kappa_operator::functions::progress::quiet_after_ms(60) as u64);
    let deadline = Instant::now() + quiet + Duration::from_secs(60);
    let s = loop {
        let s = e.status().await;
        if s.phase == Some(ViewPhase::Live) || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    println!("mapping {state}; {}", Env::brief(&s));
    assert_eq!(
        s.phase,
        Some(ViewPhase::Live),
        "every record applied, the log quiet for {quiet:?} and more: {}",
        Env::brief(&s)
    );
    e.done().await;
}

/// Input: `Direct` fan-out, `onRecordError: Fail`; the view's failure queue deleted by hand; then a
/// record whose ordering attribute `seq` is a string (the `Latest` projection cannot order it), then a
/// good record.
/// Expected: the operator re-creates the failure queue; the bad record, after the mapping's retries, is
/// in it and counted in `status.deadLetters`; the good record after it is applied; and once the bad
/// record has left the stream (dead-lettered) the status no longer says the projector "stops at a
/// record ... retries it until the record leaves the stream".
/// PASSES (queue re-created, deadLetters 1, the good record applied, no "stops at a record").
#[tokio::test]
async fn a_deleted_failure_queue_is_recreated_and_a_dead_lettered_record_is_counted() {
    let e = env("b16c-fq", "Direct", "  onRecordError: Fail").await;
    let queue_arn = failure_queue(&e.status().await);
    let queue_name = queue_arn.rsplit(':').next().unwrap().to_string();
    let url = e
        .sqs
        .get_queue_url()
        .queue_name(&queue_name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    e.sqs.delete_queue().queue_url(&url).send().await.unwrap();
    let url = common::eventually(
        Duration::from_secs(90),
        "the failure queue re-created",
        || async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            e.sqs
                .get_queue_url()
                .queue_name(&queue_name)
                .send()
                .await
                .ok()?
                .queue_url
        },
    )
    .await;

    let mut bad = player("bad", 1);
    bad.insert("seq".into(), AttributeValue::S("not-a-number".into()));
    e.put(vec![bad]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    e.put(players(2..3)).await;
    e.wait_for(&ids(2..3), 180, "the good record after the bad one")
        .await;
    common::eventually(
        Duration::from_secs(120),
        "the bad record in the failure queue, counted in status.deadLetters",
        || async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let a = e
                .sqs
                .get_queue_attributes()
                .queue_url(&url)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                .send()
                .await
                .ok()?
                .attributes?;
            let n: i64 = a
                .get(&QueueAttributeName::ApproximateNumberOfMessages)?
                .parse()
                .ok()?;
            let s = e.status().await;
            (n == 1 && s.dead_letters == Some(1)).then_some(())
        },
    )
    .await;
    // The stream moved on; give the operator a resync.
    tokio::time::sleep(Duration::from_secs(40)).await;
    let s = e.status().await;
    let says_stopped = s
        .conditions
        .iter()
        .any(|c| c.status == ConditionStatus::True && c.message.contains("stops at a record"));
    assert!(
        !says_stopped,
        "the bad record was dead-lettered and the record after it applied, yet: {}",
        Env::brief(&s)
    );
    let _ = &e.op;
    e.done().await;
}

/// Input: `Sns` fan-out, the `players` view and a `Count` view of all records; records written every
/// second for 100 s while `spec.fanOut.mode` is switched to `Direct` (at 15 s) and back to `Sns` (at 55 s).
/// Expected: every record in the `Latest` view, and the count exactly the number of records written (no
/// record lost or counted twice across the switches).
/// PASSES (300 records, none missing, count 300).
#[tokio::test]
async fn switching_fan_out_while_records_flow_loses_or_doubles_nothing() {
    let e = env("b16c-switch", "Sns", "").await;
    common::create_yaml(
        &e.client,
        &e.ns,
        "apiVersion: kappa.dev/v1alpha1\nkind: MaterializedView\nmetadata: {name: counts}\nspec:\n  \
         eventLogRef: {name: game-events}\n  recordTypes: [player]\n  \
         projection: {mode: Count, key: {partitionKey: 'C#{type}'}}\n  backfill: {source: None}\n  \
         deletionPolicy: Delete\n",
    )
    .await
    .unwrap();
    common::eventually(Duration::from_secs(120), "counts Live", || async {
        let s = e.views.get("counts").await.ok()?.status?;
        (s.phase == Some(ViewPhase::Live)).then_some(())
    })
    .await;
    let logs: Api<EventLog> = Api::namespaced(e.client.clone(), &e.ns);
    let mode = |m: &'static str| {
        let logs = logs.clone();
        async move {
            logs.patch(
                "game-events",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"fanOut": {"mode": m}}})),
            )
            .await
            .unwrap();
        }
    };
    let mut written = 0u32;
    for second in 0..100u32 {
        if second == 15 {
            mode("Direct").await;
        }
        if second == 50 {
            // On `Direct`, no topic may send to the view's failure queue any more.
            let queue = failure_queue(&e.status().await);
            let url = e
                .sqs
                .get_queue_url()
                .queue_name(queue.rsplit(':').next().unwrap())
                .send()
                .await
                .unwrap()
                .queue_url
                .unwrap();
            let policy = e
                .sqs
                .get_queue_attributes()
                .queue_url(&url)
                .attribute_names(QueueAttributeName::Policy)
                .send()
                .await
                .unwrap()
                .attributes
                .and_then(|a| a.get(&QueueAttributeName::Policy).cloned());
            assert_eq!(policy, None, "the Sns-era access policy is removed on Direct");
        }
        if second == 55 {
            mode("Sns").await;
        }
        e.put(players(1000 + written..1000 + written + 3)).await;
        written += 3;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let want = ids(1000..1000 + written);
    let count = || async {
        common::scan_all(&e.ddb, &e.views_table)
            .await
            .into_iter()
            .find(|i| {
                i.get("pk")
                    .and_then(|v| v.as_s().ok())
                    .is_some_and(|pk| pk == "counts#C#player")
            })
            .and_then(|i| i.get("count").and_then(|v| v.as_n().ok()).cloned())
            .and_then(|n| n.parse::<u64>().ok())
    };
    // Up to 4 minutes for the views to settle, then what they hold.
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    while std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(5)).await;
        if e.players().await.is_superset(&want) && count().await >= Some(written as u64) {
            break;
        }
    }
    tokio::time::sleep(Duration::from_secs(15)).await;
    let have = e.players().await;
    let missing: Vec<_> = want.difference(&have).cloned().collect();
    let n = count().await;
    let log = logs.get("game-events").await.unwrap().status.unwrap_or_default();
    assert!(
        missing.is_empty() && n == Some(written as u64),
        "{written} records written; missing from players: {missing:?}; count {n:?}; log fanOut {:?}",
        log.fan_out
    );
    e.done().await;
}

/// Input: `Sns` fan-out; the log's SNS topic deleted by hand (`sns delete-topic`), then records
/// p100..p120 written in waves over 10 s, then one more record after the operator's resync.
/// Expected: every record reaches the view, or the records that could not be routed are counted
/// (`status.routerDeadLetters` on the EventLog, `status.deadLetters` on the view).
/// The router's retries publish to the re-created topic (same name, same ARN), but SNS drops what
/// reaches it before the projector's subscription is re-created: the operator finds the subscription its
/// status recorded gone and rebuilds the view from the log (`backfill: {source: Scan}` here).
#[tokio::test]
async fn records_routed_while_the_log_topic_is_gone_are_not_lost_silently() {
    let e = env("b16c-topic", "Sns", "  backfill: {source: Scan}").await;
    e.put(players(1..4)).await;
    e.wait_for(&ids(1..4), 60, "the first records in the view").await;
    let logs: Api<EventLog> = Api::namespaced(e.client.clone(), &e.ns);
    let log = logs.get("game-events").await.unwrap().status.unwrap();
    let topics: Vec<String> = log
        .resources
        .iter()
        .filter(|(k, _)| k.starts_with("topic/"))
        .map(|(_, v)| v.clone())
        .collect();
    assert!(!topics.is_empty(), "{:?}", log.resources);
    for arn in &topics {
        e.sns.delete_topic().topic_arn(arn).send().await.unwrap();
    }
    for wave in 0..5u32 {
        e.put(players(100 + wave * 4..104 + wave * 4)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    tokio::time::sleep(Duration::from_secs(45)).await;
    e.put(players(200..201)).await;
    let want: BTreeSet<String> = ids(1..4)
        .into_iter()
        .chain(ids(100..120))
        .chain(ids(200..201))
        .collect();
    // The rebuild closing the gap runs after the resync: up to 4 minutes.
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    while std::time::Instant::now() < deadline && !e.players().await.is_superset(&want) {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let have = e.players().await;
    let missing: Vec<_> = want.difference(&have).cloned().collect();
    let s = e.status().await;
    let log = logs.get("game-events").await.unwrap().status.unwrap();
    let counted = log.router_dead_letters.unwrap_or(0) + s.dead_letters.unwrap_or(0);
    assert!(
        missing.is_empty() || counted >= missing.len() as i64,
        "{} of {} records never reached the view {missing:?}; routerDeadLetters {:?}, log phase {:?}, \
         topics now {:?}; view: {}",
        missing.len(),
        want.len(),
        log.router_dead_letters,
        log.phase,
        log.resources
            .iter()
            .filter(|(k, _)| k.starts_with("topic/"))
            .collect::<Vec<_>>(),
        Env::brief(&s)
    );
    e.done().await;
}

/// Input: the ingest dead-letter queue deleted by hand (`sqs delete-queue`), `maxReceiveCount: 1`; then
/// a malformed message (`{"Item": not json`) and a valid one.
/// Expected: the operator re-creates the dead-letter queue (the ingest queue's redrive policy names it by
/// ARN); the valid record is written; the malformed one ends in the re-created queue and
/// `status.deadLetters` counts it (1).
/// Found on the local stack: the malformed message was in neither queue and `status.deadLetters` stayed
/// 0: moto kept a reference to the DLQ *object* it resolved when `RedrivePolicy` was set, so the message
/// moved into the deleted queue. SQS resolves the ARN; so does the local stack now (hack/moto-server.py).
/// (On AWS, re-creating a queue of the same name within 60 s of deleting it is refused,
/// `QueueDeletedRecently`, and the operator retries: untested here.)
#[tokio::test]
async fn a_deleted_ingest_dead_letter_queue_is_recreated_and_counts_the_next_failure() {
    let (client, ns) = common::setup("b16c-dlq").await;
    let aws = common::aws_config().await;
    let _op = Operator::start(&ns, "solo", 15);
    common::create_yaml(
        &client,
        &ns,
        "apiVersion: kappa.dev/v1alpha1\nkind: EventLog\nmetadata: {name: ingest}\nspec:\n  \
         recordTypes: [player]\n  table: {sortKey: sk}\n  ingest: {maxReceiveCount: 1}\n  deletionPolicy: Delete\n",
    )
    .await
    .unwrap();
    let logs: Api<EventLog> = Api::namespaced(client.clone(), &ns);
    let status = common::eventually(Duration::from_secs(90), "the EventLog Ready", || async {
        let s = logs.get("ingest").await.ok()?.status?;
        (s.phase == Some(kappa_operator::crd::EventLogPhase::Ready)
            && s.resources.contains_key("mapping/writer"))
        .then_some(s)
    })
    .await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let dlq_name = status.resources["deadLetterQueue"]
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let url = sqs
        .get_queue_url()
        .queue_name(&dlq_name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    sqs.delete_queue().queue_url(&url).send().await.unwrap();
    let url = common::eventually(
        Duration::from_secs(90),
        "the dead-letter queue re-created",
        || async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            sqs.get_queue_url()
                .queue_name(&dlq_name)
                .send()
                .await
                .ok()?
                .queue_url
        },
    )
    .await;
    let queue_url = status.ingest_queue_url.clone().unwrap();
    let good = r#"{"Item":{"pk":{"S":"PLAYER#a"},"sk":{"S":"LOG#1"},"type":{"S":"player"}}}"#.to_string();
    common::send_messages(&sqs, &queue_url, &["{\"Item\": not json".to_string(), good]).await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let table = status.table.clone().unwrap().name;
    common::eventually(Duration::from_secs(60), "the valid record written", || async {
        (common::scan_all(&ddb, &table).await.len() == 1).then_some(())
    })
    .await;
    // The malformed message is received again after the visibility timeout (3 minutes).
    let deadline = std::time::Instant::now() + Duration::from_secs(330);
    let mut last = (None, None);
    while std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let n = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .ok()
            .and_then(|o| o.attributes)
            .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages).cloned());
        let s = logs.get("ingest").await.unwrap().status.unwrap();
        last = (n.clone(), s.dead_letters);
        if n.as_deref() == Some("1") && s.dead_letters == Some(1) {
            break;
        }
    }
    let (in_queue, in_queue_url) = {
        let a = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap_or_default();
        (
            a.get(&QueueAttributeName::ApproximateNumberOfMessages).cloned(),
            a.get(&QueueAttributeName::RedrivePolicy).cloned(),
        )
    };
    assert_eq!(
        last,
        (Some("1".to_string()), Some(1)),
        "(messages in the re-created DLQ, status.deadLetters); ingest queue holds {in_queue:?}, redrive {in_queue_url:?}"
    );
    common::delete_namespace(&client, &ns).await;
}

/// Input: `Direct` fan-out; two records, then (as soon as they are in the view, a couple of seconds
/// after the projector's first report) five more; then a quiet log for 40 s.
/// Expected: `status.live.recordsApplied` counts the 7 records the projector applied, and
/// `lastReported` is after the last batch.
/// Found by the breaker (a batch finished less than 5 s after the instance's previous report, with a similar
/// lag, is not reported (`ProgressReporter::observe` only reports sooner when the lag halves or
/// doubles); the instance keeps the count in memory until its next batch, which on a quiet log never
/// comes: recordsApplied 2 of 7, seen in `a_disabled_projector_mapping_...` too). Fixed: a stream batch is
/// reported every time (one write per batch and shard).
#[tokio::test]
async fn status_live_counts_every_record_the_projector_applied() {
    let e = env("b16c-count", "Direct", "").await;
    e.put(players(1..3)).await;
    e.wait_for(&ids(1..3), 60, "the first records in the view").await;
    e.put(players(10..15)).await;
    e.wait_for(&ids(10..15), 60, "the next records in the view").await;
    tokio::time::sleep(Duration::from_secs(40)).await;
    let s = e.status().await;
    assert_eq!(
        s.live.as_ref().map(|l| l.records_applied),
        Some(7),
        "7 records applied, the log quiet for 40 s: {}",
        Env::brief(&s)
    );
    e.done().await;
}

/// Input (the projector's reporting rule, in process): a batch 35 s behind the log is reported; 3 s later
/// the instance finishes the last batch of the burst, 25 s behind (within `maxLag: 30s`); then the log is
/// quiet.
/// Expected: the report that brings the lag within maxLag is written (or the view is not held): after
/// the burst, `assess` says caught up, so a rebuilt version is promoted.
/// Found by the breaker (`observe` returned None for the 25 s batch (not 5 s since the last report, and 25 s is
/// not half of 35 s), so the stored report keeps lagMs 35000 and `assess(.., maxLag 30 s)` says not
/// caught up for as long as no record comes: the version is held `CatchingUp` (never promoted) on a quiet
/// log though it applied everything within maxLag). Fixed: the function knows maxLag
/// (`LIVE_MAX_LAG_MS`) and reports a crossing at once; and a quiet function's lag is 0.
#[test]
fn the_batch_that_brings_the_lag_within_max_lag_is_reported() {
    use kappa_operator::functions::progress::quiet_after_ms;
    use kappa_operator::functions::progress::{BatchProgress, ProgressItem, ProgressReporter, assess};
    let batch = |records: u64, oldest: i64| BatchProgress {
        records,
        oldest_created_ms: Some(oldest),
        newest_created_ms: Some(oldest + 100),
        stream: false,
    };
    let mut reporter = ProgressReporter::new(Some(30_000));
    let t0 = 1_000_000;
    let first = reporter
        .observe(t0, &batch(100, t0 - 35_000), None)
        .expect("the first batch reports");
    let mut item = ProgressItem {
        applied_at_ms: Some(first.at_ms),
        lag_ms: first.lag_ms,
        records: first.records,
        ..Default::default()
    };
    if let Some(r) = reporter.observe(t0 + 3_000, &batch(50, t0 + 3_000 - 25_000), None) {
        item.applied_at_ms = Some(r.at_ms);
        item.lag_ms = r.lag_ms.or(item.lag_ms);
        item.records += r.records;
    }
    // The log is quiet from here: no more batches, no more reports.
    let seen = assess(Some(&item), t0 + 600_000, 30_000, quiet_after_ms(30));
    assert!(
        seen.caught_up && item.records == 150,
        "10 minutes after the burst's last batch (25 s behind, within maxLag 30 s): {seen:?}, stored \
         {item:?}"
    );
}

/// Input: `Direct` fan-out; a view whose projector is the user's own function (`spec.projector.code.
/// functionArn`), whose execution role has no `sqs:SendMessage` on the view's failure queue (the user's
/// role is theirs: the operator never edits it); then the user grants it.
/// Expected: the view still goes Live (mapped without an on-failure destination, which Lambda refuses
/// for that role), a Warning Event `NoFailureDestination` names the queue and the grant; once granted,
/// the mapping gets the destination, so a record the function fails after the retries is kept, not
/// dropped. (Before: a user's function was always mapped without a destination.)
#[tokio::test]
async fn a_users_function_gets_the_failure_queue_once_its_role_may_send_to_it() {
    let (client, ns) = common::setup("b16c-userfn").await;
    let aws = common::aws_config().await;
    let iam = aws_sdk_iam::Client::new(&aws);
    let lambda = aws_sdk_lambda::Client::new(&aws);
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let role_name = format!("user-projector-{ns}");
    let role = iam
        .create_role()
        .role_name(&role_name)
        .assume_role_policy_document(trust)
        .send()
        .await
        .unwrap()
        .role
        .unwrap()
        .arn;
    let zip = kappa_operator::aws::lambda::bootstrap_zip(b"#!/bin/sh\nexit 0\n");
    let function_arn = lambda
        .create_function()
        .function_name(format!("user-projector-{ns}"))
        .runtime(aws_sdk_lambda::types::Runtime::Providedal2023)
        .role(&role)
        .handler("projector")
        .code(
            aws_sdk_lambda::types::FunctionCode::builder()
                .zip_file(aws_sdk_lambda::primitives::Blob::new(zip))
                .build(),
        )
        .send()
        .await
        .unwrap()
        .function_arn
        .unwrap();
    let _op = Operator::start(&ns, "solo", 10);
    common::create_yaml(&client, &ns, &log_yaml("Direct"))
        .await
        .unwrap();
    common::create_yaml(
        &client,
        &ns,
        &format!(
            "apiVersion: kappa.dev/v1alpha1\nkind: MaterializedView\nmetadata: {{name: players}}\nspec:\n  \
             eventLogRef: {{name: game-events}}\n  recordTypes: [player]\n  projector:\n    code: {{functionArn: \
             \"{function_arn}\"}}\n  backfill: {{source: None}}\n  deletionPolicy: Delete\n"
        ),
    )
    .await
    .unwrap();
    let views: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
    let status = common::eventually(Duration::from_secs(120), "players Live", || async {
        let s = views.get("players").await.ok()?.status?;
        (s.phase == Some(ViewPhase::Live)).then_some(s)
    })
    .await;
    let note = common::warning_note(&client, &ns, "NoFailureDestination", Duration::from_secs(60)).await;
    let queue = failure_queue(&status);
    assert!(
        note.contains(&queue) && note.contains("sqs:SendMessage") && note.contains(&function_arn),
        "the queue, the function and the grant are named: {note}"
    );
    let mapping = || async {
        let list = lambda
            .list_event_source_mappings()
            .function_name(&function_arn)
            .send()
            .await
            .unwrap();
        list.event_source_mappings()
            .first()
            .cloned()
            .expect("the view's mapping on the user's function")
    };
    assert!(mapping().await.destination_config.is_none(), "no destination yet");
    let grant = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"sqs:SendMessage","Resource":"{queue}"}}]}}"#
    );
    iam.put_role_policy()
        .role_name(&role_name)
        .policy_name("kappa-failures")
        .policy_document(grant)
        .send()
        .await
        .unwrap();
    let destination = common::eventually(
        Duration::from_secs(90),
        "the mapping's on-failure destination once granted",
        || async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            mapping()
                .await
                .destination_config
                .and_then(|d| d.on_failure)
                .and_then(|o| o.destination)
        },
    )
    .await;
    assert_eq!(destination, queue);
    common::delete_namespace(&client, &ns).await;
}
