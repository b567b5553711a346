//! break16: a new user's adversarial cases against the ingest path as it runs on the local stack
//! (producers → SQS ingest queue → the built-in writer Lambda, the operator's own binary run by
//! hack/local_lambda.py → the log table → the ingest dead-letter queue), and `plan`/`cost` on odd
//! manifests. Each case says Expected, and Observed when it was written if that differed (fixed since).
//!
//! The writer is the binary under test only when `.stack/lambda-binary` names it (hack/test.sh writes it).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::QueueAttributeName;
use common::Operator;
use kappa_operator::crd::{EventLog, EventLogPhase};
use kappa_operator::functions::writer::WriterConfig;
use kube::Api;
use serde_json::json;

fn config() -> WriterConfig {
    let env = BTreeMap::from([
        ("LOG_TABLE", "log"),
        ("PARTITION_KEY", "pk"),
        ("SORT_KEY", "sk"),
        ("RECORD_TYPE_ATTRIBUTE", "type"),
        ("RECORD_TYPES", "player"),
    ]);
    WriterConfig::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap()
}

/// A player record `pk`/`sk` with `extra` attributes, as a message body.
fn record(pk: &str, sk: &str, extra: serde_json::Value) -> String {
    let mut item = json!({"pk": {"S": pk}, "sk": {"S": sk}, "type": {"S": "player"}});
    item.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    json!({ "Item": item }).to_string()
}

fn deep(levels: usize) -> serde_json::Value {
    (0..levels).fold(json!({"S": "x"}), |v, _| json!({ "L": [v] }))
}

/// The valid inputs a user may send: keys at DynamoDB's byte limits in multi-byte UTF-8, separators and
/// unicode in keys, numbers at DynamoDB's limits, empty non-key strings, 32 levels of nesting, a 256 KiB
/// body (SQS's largest), extra attributes of every type.
fn valid_cases() -> Vec<(&'static str, String)> {
    let body_256k = {
        let base = record("PLAYER#big", "LOG#256k", json!({"blob": {"S": ""}}));
        let pad = 256 * 1024 - base.len();
        record("PLAYER#big", "LOG#256k", json!({"blob": {"S": "a".repeat(pad)}}))
    };
    vec![
        (
            "pk of 2048 bytes (1024 × é)",
            record(&"é".repeat(1024), "LOG#1", json!({})),
        ),
        (
            "sk of 1024 bytes (256 × 😀)",
            record("PLAYER#ada", &"😀".repeat(256), json!({})),
        ),
        (
            "separators and unicode in keys",
            record("PLAYER#a|b,c:d/e#ü\u{0}\t", "LOG#1#2|3 ☃", json!({})),
        ),
        (
            "numbers at DynamoDB's limits",
            record(
                "PLAYER#num",
                "LOG#1",
                json!({"digits38": {"N": "12345678901234567890123456789012345678"},
                       "tiny": {"N": "1E-130"}, "huge": {"N": "9.99E+125"}, "neg": {"N": "-9.99E+125"},
                       "ns": {"NS": ["1", "2.5", "-0.1"]}}),
            ),
        ),
        (
            "every attribute type, empty non-key string",
            record(
                "PLAYER#types",
                "LOG#1",
                json!({"s": {"S": ""}, "b": {"B": "AAEC"}, "bool": {"BOOL": false}, "null": {"NULL": true},
                       "ss": {"SS": ["a", "A"]}, "bs": {"BS": ["AA==", "AQ=="]},
                       "m": {"M": {"x": {"L": [{"N": "1"}, {"S": "y"}]}}}, "l": {"L": []}}),
            ),
        ),
        (
            "32 levels of nesting",
            record("PLAYER#deep", "LOG#32", json!({"d": deep(32)})),
        ),
        ("a 256 KiB body", body_256k),
    ]
}

/// The invalid inputs, each with what its error must say (the field or the value) and its category.
fn invalid_cases() -> Vec<(&'static str, String, &'static str, &'static str)> {
    vec![
        ("empty body", String::new(), "EOF", "invalid-body"),
        ("whitespace body", " ".into(), "EOF", "invalid-body"),
        (
            "not JSON",
            "{not json".into(),
            "key must be a string",
            "invalid-body",
        ),
        (
            "a bare item",
            r#"{"pk":{"S":"a"}}"#.into(),
            "unknown field `pk`",
            "invalid-body",
        ),
        (
            "lower-case item",
            r#"{"item":{}}"#.into(),
            "unknown field `item`",
            "invalid-body",
        ),
        (
            "an extra top-level field",
            r#"{"Item":{"pk":{"S":"a"},"sk":{"S":"b"},"type":{"S":"player"}},"Meta":1}"#.into(),
            "unknown field `Meta`",
            "invalid-body",
        ),
        ("JSON array", "[1,2]".into(), "invalid type", "invalid-body"),
        (
            "missing pk",
            r#"{"Item":{"sk":{"S":"b"},"type":{"S":"player"}}}"#.into(),
            "`pk` is missing",
            "invalid-key",
        ),
        (
            "numeric pk",
            record("x", "y", json!({"pk": {"N": "1"}})),
            "`pk` is a N",
            "invalid-key",
        ),
        (
            "empty sk",
            record("x", "", json!({})),
            "`sk` is an empty S",
            "invalid-key",
        ),
        (
            "pk of 2049 bytes",
            record(&"a".repeat(2049), "LOG#1", json!({})),
            "2049 bytes",
            "invalid-key",
        ),
        (
            "sk of 1025 bytes",
            record("PLAYER#a", &format!("{}é", "a".repeat(1023)), json!({})),
            "1025 bytes",
            "invalid-key",
        ),
        (
            "no type",
            r#"{"Item":{"pk":{"S":"a"},"sk":{"S":"b"}}}"#.into(),
            "`type` is missing",
            "invalid-record-type",
        ),
        (
            "unknown type",
            record("a", "b", json!({"type": {"S": "Player"}})),
            "\"Player\"",
            "unknown-record-type",
        ),
        (
            "39 digits",
            record(
                "a",
                "b",
                json!({"n": {"N": "123456789012345678901234567890123456789"}}),
            ),
            "`n",
            "invalid-value",
        ),
        (
            "1E-131",
            record("a", "b", json!({"n": {"N": "1E-131"}})),
            "`1E-131`",
            "invalid-value",
        ),
        (
            "1E+126",
            record("a", "b", json!({"n": {"N": "1E+126"}})),
            "`1E+126`",
            "invalid-value",
        ),
        (
            "a number as JSON number",
            record("a", "b", json!({"n": {"N": 5}})),
            "`n",
            "invalid-value",
        ),
        (
            "NaN",
            record("a", "b", json!({"n": {"N": "NaN"}})),
            "`NaN`",
            "invalid-value",
        ),
        (
            "two type tags",
            record("a", "b", json!({"n": {"N": "1", "S": "1"}})),
            "several",
            "invalid-value",
        ),
        (
            "bad base64",
            record("a", "b", json!({"b": {"B": "!!"}})),
            "base64",
            "invalid-value",
        ),
        (
            "empty SS",
            record("a", "b", json!({"tags": {"SS": []}})),
            "`tags` is an empty string set",
            "invalid-item",
        ),
        (
            "repeated NS",
            record("a", "b", json!({"ns": {"NS": ["1", "1.0"]}})),
            "`ns` is a number set (NS) holding",
            "invalid-item",
        ),
        (
            "empty attribute name",
            record("a", "b", json!({"": {"S": "x"}})),
            "attribute name \"\"",
            "invalid-item",
        ),
        (
            "33 levels",
            record("a", "b", json!({"d": deep(33)})),
            "33 levels deep",
            "invalid-item",
        ),
    ]
}

/// Expected: every valid input validates; every invalid one is refused with an error naming the field or
/// the value, saying how to fix it, in its category.
/// Observed: an empty set, a repeated set element, an empty attribute name and 33 levels of nesting
/// passed validation (DynamoDB refuses them: a whole `BatchWriteItem` call refused, then split; moto
/// stores them, so the local log held records AWS would not); a number out of range was reported as
/// "the message body is not a log record ... at line 1 column 93", without the attribute, with the fix
/// "send one record per message".
#[test]
fn the_writer_validates_each_input_by_name() {
    let config = config();
    for (case, body) in valid_cases() {
        let item = config.validate(&body);
        assert!(item.is_ok(), "{case}: {item:?}");
    }
    let mut wrong = Vec::new();
    for (case, body, names, category) in invalid_cases() {
        match config.validate(&body) {
            Ok(_) => wrong.push(format!("{case}: accepted")),
            Err(e) => {
                let text = e.to_string();
                if !text.contains(names)
                    || e.category() != category
                    || !text.contains("fix") && !text.contains("send")
                {
                    wrong.push(format!("{case}: [{}] {text}", e.category()));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

// ---------------------------------------------------------------- on the local stack

fn log_yaml(name: &str, max_receive_count: u32) -> String {
    format!(
        r#"
apiVersion: kappa.dev/v1alpha1
kind: EventLog
metadata: {{name: {name}}}
spec:
  recordTypes: [player]
  table: {{sortKey: sk}}
  ingest: {{maxReceiveCount: {max_receive_count}}}
  deletionPolicy: Delete
"#
    )
}

struct Ingest {
    client: kube::Client,
    ns: String,
    _op: Operator,
    logs: Api<EventLog>,
    sqs: aws_sdk_sqs::Client,
    ddb: aws_sdk_dynamodb::Client,
    queue_url: String,
    dlq_url: String,
    table: String,
}

/// A namespace, an operator, and EventLog `name` Ready with its writer mapped to its ingest queue.
async fn ingest(test: &str, name: &str, max_receive_count: u32) -> Ingest {
    common::assert_functions_run_this_binary();
    let (client, ns) = common::setup(test).await;
    let aws = common::aws_config().await;
    let op = Operator::start(&ns, "solo", 15);
    common::create_yaml(&client, &ns, &log_yaml(name, max_receive_count))
        .await
        .unwrap();
    let logs: Api<EventLog> = Api::namespaced(client.clone(), &ns);
    let status = common::eventually(Duration::from_secs(60), "the EventLog Ready", || async {
        let s = logs.get(name).await.ok()?.status?;
        (s.phase == Some(EventLogPhase::Ready) && s.resources.contains_key("mapping/writer")).then_some(s)
    })
    .await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let dlq_name = status.resources["deadLetterQueue"]
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let dlq_url = sqs
        .get_queue_url()
        .queue_name(dlq_name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    Ingest {
        queue_url: status.ingest_queue_url.clone().unwrap(),
        table: status.table.unwrap().name,
        client,
        ns,
        _op: op,
        logs,
        sqs,
        ddb: aws_sdk_dynamodb::Client::new(&aws),
        dlq_url,
    }
}

impl Ingest {
    /// Sends `bodies` to the ingest queue ([`common::send_messages`]).
    async fn send(&self, bodies: &[String]) {
        common::send_messages(&self.sqs, &self.queue_url, bodies).await;
    }

    /// The log's items by (pk, sk).
    async fn log(&self) -> BTreeMap<(String, String), std::collections::HashMap<String, AttributeValue>> {
        let s = |item: &std::collections::HashMap<String, AttributeValue>, k: &str| {
            item.get(k)
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default()
        };
        let items = common::scan_all(&self.ddb, &self.table).await;
        let n = items.len();
        let map: BTreeMap<_, _> = items
            .into_iter()
            .map(|i| ((s(&i, "pk"), s(&i, "sk")), i))
            .collect();
        assert_eq!(map.len(), n, "a key twice in a scan");
        map
    }

    async fn queue_counts(&self, url: &str) -> (u64, u64) {
        let a = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap_or_default();
        let n = |k: QueueAttributeName| a.get(&k).and_then(|v| v.parse().ok()).unwrap_or(0);
        (
            n(QueueAttributeName::ApproximateNumberOfMessages),
            n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        )
    }
}

/// The (pk, sk) of a valid body.
fn key_of(body: &str) -> (String, String) {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    let s = |k: &str| v["Item"][k]["S"].as_str().unwrap().to_string();
    (s("pk"), s("sk"))
}

/// Expected: batches mixing every valid and invalid input (and each valid message sent twice, as SQS's
/// at-least-once delivery may) leave the log holding exactly the valid records, once each, with their
/// content; every invalid message ends in the dead-letter queue (maxReceiveCount 1: after one failed
/// receive and the queue's visibility timeout), counted in `status.deadLetters` with a Warning Event,
/// and nothing is left in the ingest queue.
#[tokio::test]
async fn mixed_batches_write_exactly_the_valid_records_once_and_dead_letter_the_rest() {
    let ing = ingest("b16-mixed", "mixed", 1).await;
    let valid: Vec<String> = valid_cases().into_iter().map(|(_, b)| b).collect();
    // SQS refuses an empty body (MessageBody is at least one character), so the user cannot send one.
    let invalid: Vec<String> = invalid_cases()
        .into_iter()
        .map(|(_, b, _, _)| b)
        .filter(|b| !b.is_empty())
        .collect();
    let mut bodies = Vec::new();
    for (i, b) in valid.iter().enumerate() {
        bodies.push(b.clone());
        bodies.extend(invalid.iter().skip(i * 4).take(4).cloned());
    }
    bodies.extend(invalid.iter().skip(valid.len() * 4).cloned());
    bodies.extend(valid.iter().cloned());
    assert_eq!(bodies.len(), 2 * valid.len() + invalid.len());
    ing.send(&bodies).await;

    let expected: BTreeSet<(String, String)> = valid.iter().map(|b| key_of(b)).collect();
    let log = common::eventually(
        Duration::from_secs(60),
        "the valid records in the log",
        || async {
            let log = ing.log().await;
            (log.len() >= expected.len()).then_some(log)
        },
    )
    .await;
    assert_eq!(log.keys().cloned().collect::<BTreeSet<_>>(), expected);
    for body in &valid {
        let sent: serde_json::Value = serde_json::from_str(body).unwrap();
        let stored = &log[&key_of(body)];
        assert_eq!(
            stored.len(),
            sent["Item"].as_object().unwrap().len(),
            "{:?}",
            key_of(body)
        );
    }
    let numbers = &log[&("PLAYER#num".to_string(), "LOG#1".to_string())];
    let n = |text: &str| kappa_operator::projection::Number::parse(text).unwrap();
    for (attribute, value) in [
        ("digits38", "12345678901234567890123456789012345678"),
        ("tiny", "1E-130"),
        ("huge", "9.99E+125"),
        ("neg", "-9.99E+125"),
    ] {
        assert_eq!(n(numbers[attribute].as_n().unwrap()), n(value), "{attribute}");
    }

    let dead = invalid.len() as i64;
    common::eventually(
        Duration::from_secs(420),
        "every invalid message in the dead-letter queue, counted in status.deadLetters",
        || async {
            let (dlq, _) = ing.queue_counts(&ing.dlq_url).await;
            let s = ing.logs.get("mixed").await.ok()?.status?;
            (dlq as i64 == dead && s.dead_letters == Some(dead)).then_some(())
        },
    )
    .await;
    assert_eq!(
        ing.queue_counts(&ing.queue_url).await,
        (0, 0),
        "the ingest queue drained"
    );
    let mut in_dlq = BTreeSet::new();
    while let Some(messages) = ing
        .sqs
        .receive_message()
        .queue_url(&ing.dlq_url)
        .max_number_of_messages(10)
        .visibility_timeout(600)
        .send()
        .await
        .unwrap()
        .messages
        .filter(|m| !m.is_empty())
    {
        in_dlq.extend(messages.into_iter().filter_map(|m| m.body));
    }
    assert_eq!(in_dlq, invalid.iter().cloned().collect::<BTreeSet<_>>());
    assert_eq!(ing.log().await.len(), expected.len(), "nothing written late");
    let events = common::kubectl(&[
        "-n",
        &ing.ns,
        "get",
        "events",
        "--field-selector",
        "reason=DeadLetters",
        "-o",
        "json",
    ]);
    assert!(events.contains(&format!("holds {dead} message")), "{events}");
    common::delete_namespace(&ing.client, &ing.ns).await;
}

/// Expected: a burst of 1000 distinct records, 150 of them sent twice, lands in the log exactly once
/// each; nothing stays in the queue and nothing is dead-lettered. (The breaker ran 2000 with 300 twice,
/// 6 minutes on a loaded machine; `make test` keeps half.)
/// Distinct records in the burst.
const BURST: usize = 1000;

#[tokio::test]
async fn a_burst_with_redeliveries_lands_exactly_once() {
    let ing = ingest("b16-burst", "burst", 5).await;
    let mut bodies: Vec<String> = (0..BURST)
        .map(|i| {
            record(
                &format!("PLAYER#{}", i % 97),
                &format!("LOG#{i:05}"),
                json!({"seq": {"N": i.to_string()}}),
            )
        })
        .collect();
    bodies.extend(bodies[..BURST / 20 * 3].to_vec());
    ing.send(&bodies).await;
    // The queue's counters, not a scan, are polled: scanning a growing table every 200 ms would load the
    // emulator the writer writes to.
    common::eventually(Duration::from_secs(900), "the ingest queue drained", || async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        (ing.queue_counts(&ing.queue_url).await == (0, 0)).then_some(())
    })
    .await;
    let log = ing.log().await;
    assert_eq!(log.len(), BURST);
    for (i, body) in bodies[..BURST].iter().enumerate() {
        let stored = &log[&key_of(body)];
        assert_eq!(stored["seq"].as_n().unwrap(), &i.to_string());
    }
    assert_eq!(ing.queue_counts(&ing.dlq_url).await, (0, 0));
    common::delete_namespace(&ing.client, &ing.ns).await;
}

// ---------------------------------------------------------------- plan and cost on odd manifests

fn kappa(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kappa-operator"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run kappa-operator")
}

fn manifest(name: &str, yaml: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("break16-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("all.yaml");
    std::fs::write(&file, yaml).unwrap();
    file
}

fn odd_log(ingest: &str) -> String {
    format!(
        "apiVersion: kappa.dev/v1alpha1\nkind: EventLog\nmetadata: {{name: odd, namespace: shop}}\n\
         spec:\n  recordTypes: [order]\n  table: {{}}\n  ingest: {ingest}\n"
    )
}

/// Expected: `plan` and `cost` refuse (exit 2) a manifest the API server would refuse, naming the field,
/// the value and the limit, as `kubectl apply` would, instead of estimating it.
/// Observed: `ingest: {maxReceiveCount: 0}` was planned as "the ingest queue's dead-letter queue: messages
/// the writer failed 0 times", a Fifo queue with batchSize 50 and a batchSize of 20000 were priced (the
/// API server refuses all three: the CRD's minimum/maximum and CEL rules were not checked).
#[test]
fn plan_and_cost_refuse_what_the_api_server_refuses() {
    let cases = [
        (
            "{maxReceiveCount: 0}",
            "spec.ingest.maxReceiveCount: 0 is less than the minimum 1",
        ),
        (
            "{batchSize: 20000, maximumBatchingWindowSeconds: 1}",
            "spec.ingest.batchSize: 20000 is more than the maximum",
        ),
        (
            "{queueType: Fifo, batchSize: 50}",
            "batchSize must be at most 10 for a Fifo queue",
        ),
        (
            "{batchSize: 100}",
            "a batchSize above 10 needs maximumBatchingWindowSeconds",
        ),
    ];
    // And a log without spec.table (required by the schema).
    let file = manifest("notable", &odd_log("{}").replace("  table: {}\n", ""));
    let out = kappa(&["plan", "-f", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(2) && err.contains("spec.table: required"),
        "{err}"
    );
    let mut wrong = Vec::new();
    for (i, (ingest, expected)) in cases.iter().enumerate() {
        let file = manifest(&format!("refused{i}"), &odd_log(ingest));
        for command in ["plan", "cost"] {
            let out = kappa(&[command, "-f", file.to_str().unwrap()]);
            let err = String::from_utf8_lossy(&out.stderr);
            if out.status.code() != Some(2) || !err.contains(expected) || !err.contains("odd") {
                wrong.push(format!("{command} {ingest}: exit {:?}: {err}", out.status.code()));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Expected (holds?): the odd but valid shapes a user has: a `v1` `List`, documents with only comments,
/// other kinds, an EventLog at every ingest limit; planned with exit 0. An empty file, or one without an
/// EventLog, is refused naming the fix; a huge `--log-items` is estimated, not a crash.
#[test]
fn plan_of_odd_but_valid_manifests() {
    let yaml = format!(
        "# only a comment\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\n---\n\
         apiVersion: v1\nkind: List\nitems:\n- {}\n",
        serde_json::to_string(&serde_yaml::from_str::<serde_json::Value>(&odd_log(
            "{queueType: Standard, batchSize: 10000, maximumBatchingWindowSeconds: 300, maxReceiveCount: 1000}"
        ))
        .unwrap())
        .unwrap()
    );
    let file = manifest("list", &yaml);
    let out = kappa(&[
        "plan",
        "-f",
        file.to_str().unwrap(),
        "--log-items",
        "1000000000000",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("failed 1000 times"), "{text}");
    for (name, yaml) in [
        ("empty", ""),
        ("others", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"),
    ] {
        let file = manifest(name, yaml);
        let out = kappa(&["plan", "-f", file.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains("no EventLog"), "{name}: {err}");
    }
}
