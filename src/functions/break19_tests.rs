//! Break probes (#19, break19) for the functions' Lambda events read with `aws_lambda_events` (SQS, SNS,
//! API Gateway WebSocket) and our DynamoDB Streams event: events in shapes AWS documents and sends that
//! the other tests do not have. Each probe asserts the behaviour AWS's documentation calls for: a record
//! is processed, or exactly its id is reported; nothing is dropped silently; one bad message never fails
//! the batch when a partial batch response applies.

use std::sync::Mutex;

use serde_json::json;

use super::RetryPolicy;
use super::connections::{self, ConnectionStore, MemoryConnections, ProxyResponseExt, WebSocketEvent};
use super::event::*;
use super::projector::{self, ProjectorConfig};
use super::router::{self, PublishEntry, PublishError, Publisher, RouterConfig};
use super::tests::{fixture, lookup, player, writer_config};
use super::writer::{self, LogWriter, WriteError};
use crate::crd::{EventLogSpec, MaterializedViewSpec};
use crate::projection::{Item, MemoryStore, ProjectionConfig, Value};
use crate::push::message::{ServerMessage, ViewRoutes};

// ---------------------------------------------------------------- helpers

fn body(item: &Item) -> String {
    json!({ "Item": item }).to_string()
}

/// A log that writes everything and remembers it.
#[derive(Default)]
struct Log {
    calls: Mutex<Vec<Vec<Item>>>,
}

impl Log {
    fn written(&self) -> Vec<Item> {
        self.calls.lock().unwrap().iter().flatten().cloned().collect()
    }
}

impl LogWriter for Log {
    async fn batch_write(&self, items: Vec<Item>) -> Result<Vec<Item>, WriteError> {
        assert!(items.len() <= writer::MAX_BATCH_WRITE);
        self.calls.lock().unwrap().push(items);
        Ok(Vec::new())
    }
}

/// An SQS record exactly as the Lambda developer guide and the SQS API show one (standard queue).
fn sqs_record(id: &str, body: &str) -> serde_json::Value {
    json!({
        "messageId": id,
        "receiptHandle": format!("AQEB{id}..."),
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1545082649183",
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": "1545082649185",
            "AWSTraceHeader": "Root=1-602e71f6-5c6b04245f199c004EXAMPLE"
        },
        "messageAttributes": {},
        "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-2:123456789012:game-log-ingest",
        "awsRegion": "us-east-2"
    })
}

async fn write(event: serde_json::Value) -> (writer::WriterReport, Log) {
    let event: SqsEvent = serde_json::from_value(event).expect("an SQS event of AWS's shape parses");
    let log = Log::default();
    let report = writer::handle(&writer_config(), &log, &RetryPolicy::immediate(2), &event).await;
    (report, log)
}

// ---------------------------------------------------------------- SQS → writer

/// messageAttributes of every SQS data type (String, Number, Binary, a custom label), with
/// `md5OfMessageAttributes` set, null and absent: parsed, and the records written.
#[tokio::test]
async fn sqs_message_attributes_of_every_type_are_read_and_the_records_written() {
    let mut a = sqs_record("a", &body(&player("ada", 1)));
    a["messageAttributes"] = json!({
        "Attribute1": {"stringValue": "AttributeValue1", "stringListValues": [], "binaryListValues": [], "dataType": "String"},
        "Attribute2": {"stringValue": "123", "stringListValues": [], "binaryListValues": ["MQ==", "MA=="], "dataType": "Number"},
        "Attribute3": {"binaryValue": "MTEwMA==", "stringListValues": ["abc", "123"], "binaryListValues": ["MA=="], "dataType": "Binary"},
        "price": {"stringValue": "1.5e3", "stringListValues": [], "binaryListValues": [], "dataType": "Number.float"},
        "blob": {"binaryValue": "", "stringListValues": [], "binaryListValues": [], "dataType": "Binary.gz"}
    });
    a["md5OfMessageAttributes"] = json!("582c92c5c5b6ac403040a4f3ab3115c9");
    let mut b = sqs_record("b", &body(&player("bo", 1)));
    b["md5OfMessageAttributes"] = serde_json::Value::Null;
    b["messageAttributes"] = serde_json::Value::Null;
    let mut c = sqs_record("c", &body(&player("cy", 1)));
    c.as_object_mut().unwrap().remove("messageAttributes");
    c.as_object_mut().unwrap().remove("md5OfMessageAttributes");
    let event = json!({ "Records": [a, b, c] });
    let parsed: SqsEvent = serde_json::from_value(event.clone()).unwrap();
    let attributes = &parsed.records[0].message_attributes;
    assert_eq!(attributes.len(), 5);
    assert_eq!(attributes["Attribute2"].data_type.as_deref(), Some("Number"));
    assert_eq!(attributes["Attribute2"].string_value.as_deref(), Some("123"));
    assert_eq!(
        attributes["Attribute3"]
            .binary_value
            .as_ref()
            .map(|b| b.0.clone()),
        Some(b"1100".to_vec())
    );
    let (report, log) = write(event).await;
    assert!(report.response.failed_ids().is_empty(), "{report:?}");
    assert_eq!(report.written, 3);
    assert_eq!(log.written().len(), 3);
}

/// A FIFO queue's records (attributes MessageGroupId, SequenceNumber, MessageDeduplicationId) from three
/// groups, one bad record in the middle of group `ada`: exactly it and the later records of its group are
/// reported; the other groups are written.
#[tokio::test]
async fn sqs_fifo_attributes_keep_each_group_in_order() {
    let groups = ["ada", "bo", "ada", "cy", "ada", "bo"];
    let bodies = [
        body(&player("ada", 1)),
        body(&player("bo", 1)),
        r#"{"Item":{"pk":{"S":"PLAYER#ada"},"sk":{"S":"LOG#2"},"type":{"S":"player"},"seq":{"N":"1E+126"}}}"#
            .to_string(),
        body(&player("cy", 1)),
        body(&player("ada", 3)),
        body(&player("bo", 2)),
    ];
    let records: Vec<serde_json::Value> = groups
        .iter()
        .zip(&bodies)
        .enumerate()
        .map(|(i, (group, body))| {
            let mut r = sqs_record(&format!("f{i}"), body);
            let attributes = r["attributes"].as_object_mut().unwrap();
            attributes.insert("MessageGroupId".into(), json!(group));
            attributes.insert("SequenceNumber".into(), json!(format!("1884949646046769612{i}")));
            attributes.insert("MessageDeduplicationId".into(), json!(format!("dedup-{i}")));
            r["eventSourceARN"] = json!("arn:aws:sqs:us-east-2:123456789012:game-log-ingest.fifo");
            r
        })
        .collect();
    let (report, _) = write(json!({ "Records": records })).await;
    assert_eq!(report.response.failed_ids(), ["f2", "f4"]);
    assert_eq!(report.written, 4);
}

/// A *fair* standard queue: its messages carry `MessageGroupId` (the tenant) but the queue is not FIFO
/// (`eventSourceARN` without `.fifo`), so no order is to be kept: a bad message of tenant `ada` is reported
/// alone, and the later, written message of the same tenant is not failed behind it.
#[tokio::test]
async fn sqs_fair_standard_queue_groups_are_not_treated_as_fifo() {
    let bodies = ["garbage".to_string(), body(&player("ada", 2))];
    let records: Vec<serde_json::Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let mut r = sqs_record(&format!("t{i}"), body);
            r["attributes"]["MessageGroupId"] = json!("tenant-ada");
            r
        })
        .collect();
    let (report, log) = write(json!({ "Records": records })).await;
    assert_eq!(report.response.failed_ids(), ["t0"]);
    assert_eq!((report.written, report.invalid, report.failed), (1, 1, 0));
    assert_eq!(log.written().len(), 1);
}

/// A body of about 256 KiB (the classic SQS maximum; the limit is now 1 MiB) holding one valid record:
/// written whole.
#[tokio::test]
async fn sqs_body_near_256_kib_is_written_whole() {
    let mut record = player("ada", 1);
    let blob: String = "ab🎮cd\u{2028}".repeat(23_800);
    record.insert("blob".into(), Value::S(blob.clone()));
    let text = body(&record);
    assert!(
        (250 * 1024..=256 * 1024).contains(&text.len()),
        "{} bytes",
        text.len()
    );
    let (report, log) = write(json!({ "Records": [sqs_record("big", &text)] })).await;
    assert!(report.response.failed_ids().is_empty(), "{report:?}");
    assert_eq!(log.written()[0]["blob"], Value::S(blob));
}

/// Unicode (astral characters raw and as escaped surrogate pairs, U+2028/U+2029, NUL, RTL and combining
/// marks) and separators (`#`, `|`, `,`, `;`, `\t`, `\n`) in key and attribute values: written exactly.
#[tokio::test]
async fn sqs_unicode_and_separators_in_bodies_are_written_exactly() {
    let bodies = [
        r#"{"Item":{"pk":{"S":"PLAYER#zoë🎮"},"sk":{"S":"LOG#1"},"type":{"S":"player"},"name":{"S":"Zo\u00eb \ud83c\udfae"}}}"#,
        r#"{"Item":{"pk":{"S":"PLAYER#a|b,c;d"},"sk":{"S":"LOG#\u2028\u2029"},"type":{"S":"player"},"name":{"S":"nul\u0000tab\tnl\n"}}}"#,
        "{\"Item\":{\"pk\":{\"S\":\"PLAYER#\u{5e9}\u{5dc}\u{5d5}\u{5dd}\"},\"sk\":{\"S\":\"LOG#e\u{301}\"},\"type\":{\"S\":\"player\"}}}\n",
    ];
    let records: Vec<_> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| sqs_record(&format!("u{i}"), b))
        .collect();
    let (report, log) = write(json!({ "Records": records })).await;
    assert!(report.response.failed_ids().is_empty(), "{report:?}");
    let written = log.written();
    let s = |i: usize, name: &str| written[i][name].as_s().unwrap().to_string();
    assert_eq!(s(0, "pk"), "PLAYER#zoë🎮");
    assert_eq!(s(0, "name"), "Zoë 🎮");
    assert_eq!(s(1, "pk"), "PLAYER#a|b,c;d");
    assert_eq!(s(1, "sk"), "LOG#\u{2028}\u{2029}");
    assert_eq!(s(1, "name"), "nul\u{0}tab\tnl\n");
    assert_eq!(s(2, "sk"), "LOG#e\u{301}");
}

/// A body that is not valid JSON text for us (a lone surrogate escape, a byte-order mark, an empty body):
/// each reported by its own id, the others written.
#[tokio::test]
async fn sqs_undecodable_bodies_are_reported_by_id_never_dropped() {
    let records = vec![
        sqs_record("ok1", &body(&player("ada", 1))),
        sqs_record(
            "lone",
            r#"{"Item":{"pk":{"S":"PLAYER#x\ud800"},"sk":{"S":"LOG#1"},"type":{"S":"player"}}}"#,
        ),
        sqs_record("bom", &format!("\u{feff}{}", body(&player("bo", 1)))),
        sqs_record("empty", ""),
        sqs_record("ok2", &body(&player("cy", 1))),
    ];
    let (report, log) = write(json!({ "Records": records })).await;
    assert_eq!(report.response.failed_ids(), ["lone", "bom", "empty"]);
    assert_eq!(log.written().len(), 2);
}

/// A record published through SNS to the ingest queue without raw message delivery arrives wrapped in
/// SNS's JSON envelope (`Type`, `MessageId`, `Message` holding the record as a string...): not a log
/// record, so it is reported by id with a message saying what a body must be, and nothing is written.
#[tokio::test]
async fn sqs_body_in_an_sns_envelope_is_reported_with_the_expected_format() {
    let envelope = json!({
        "Type": "Notification",
        "MessageId": "95df01b4-ee98-5cb9-9903-4c221d41eb5e",
        "TopicArn": "arn:aws:sns:us-east-2:123456789012:producers",
        "Message": body(&player("ada", 1)),
        "Timestamp": "2023-11-14T22:28:21.317Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLE",
        "SigningCertURL": "https://sns.us-east-2.amazonaws.com/SimpleNotificationService-0.pem",
        "UnsubscribeURL": "https://sns.us-east-2.amazonaws.com/?Action=Unsubscribe"
    });
    let records = vec![
        sqs_record("env", &envelope.to_string()),
        sqs_record("ok", &body(&player("bo", 1))),
    ];
    let event: SqsEvent = serde_json::from_value(json!({ "Records": records })).unwrap();
    let error = writer_config().validate(event.records[0].text()).unwrap_err();
    assert!(error.to_string().contains("{\"Item\":"), "{error}");
    let (report, log) = write(json!({ "Records": records })).await;
    assert_eq!(report.response.failed_ids(), ["env"]);
    assert_eq!(log.written().len(), 1);
}

/// `{"Records":[]}`: nothing written, the empty batch response.
#[tokio::test]
async fn sqs_empty_records_answer_success() {
    let (report, log) = write(json!({ "Records": [] })).await;
    assert_eq!(
        serde_json::to_value(&report.response).unwrap(),
        json!({"batchItemFailures": []})
    );
    assert!(log.written().is_empty());
}

/// The same message delivered twice in one batch (standard queues are at-least-once): written once, and a
/// failure would name it; here both succeed.
#[tokio::test]
async fn sqs_a_message_delivered_twice_in_one_batch_is_written_once() {
    let text = body(&player("ada", 1));
    let (report, log) = write(json!({ "Records": [sqs_record("d", &text), sqs_record("d", &text)] })).await;
    assert!(report.response.failed_ids().is_empty());
    assert_eq!(log.written().len(), 1);
    assert_eq!((report.written, report.duplicates), (2, 1));
}

// ---------------------------------------------------------------- SNS → projector

const LOG_YAML: &str =
    "recordTypes: [player, game]\ntable: {partitionKey: pk, sortKey: sk, orderingAttribute: seq}";

fn latest_players() -> ProjectionConfig {
    let log: EventLogSpec = serde_yaml::from_str(LOG_YAML).unwrap();
    let view: MaterializedViewSpec = serde_yaml::from_str(
        "eventLogRef: {name: game-log}\nrecordTypes: [player]\nprojection: {mode: Latest, key: {partitionKey: 'PLAYER#{name}'}}",
    )
    .unwrap();
    let config = ProjectorConfig::for_view("players", &view, &log, "kappa-views", "players#").unwrap();
    config.compile().unwrap()
}

/// The INSERT record of `tests/fixtures/stream-event.json` (PLAYER#ivy).
fn fixture_insert() -> serde_json::Value {
    let event: serde_json::Value = serde_json::from_str(&fixture("stream-event.json")).unwrap();
    event["Records"][0].clone()
}

/// `tests/fixtures/sns-event.json` carrying `record` (a routed stream record).
fn sns_event_of(record: &serde_json::Value) -> serde_json::Value {
    let mut event: serde_json::Value = serde_json::from_str(&fixture("sns-event.json")).unwrap();
    event["Records"][0]["Sns"]["Message"] =
        json!(json!({"kind": "dynamodb-stream-record", "version": 1, "record": record}).to_string());
    event
}

async fn project(event: serde_json::Value) -> Result<projector::ProjectorReport, String> {
    let event: ProjectorEvent = serde_json::from_value(event).map_err(|e| e.to_string())?;
    assert!(matches!(event, ProjectorEvent::Sns(_)), "read as SNS");
    let store = Mutex::new(MemoryStore::new());
    projector::handle(&latest_players(), &store, &event)
        .await
        .map_err(|e| e.to_string())
}

/// Every documented spelling and shape of the SNS notification's optional parts: `Subject` null, absent or
/// set; `SigningCertURL`/`UnsubscribeURL` spellings; MessageAttributes of types Number, String.Array and
/// Binary, null, empty or absent; Timestamp with and without milliseconds. Each projects the record.
#[tokio::test]
async fn sns_documented_variants_all_project_the_record() {
    type Edit = fn(&mut serde_json::Map<String, serde_json::Value>);
    let edits: Vec<(&str, Edit)> = vec![
        ("as fixture", |_| {}),
        ("Subject absent", |s| {
            s.remove("Subject");
        }),
        ("Subject set", |s| {
            s.insert("Subject".into(), json!("TestInvoke"));
        }),
        ("SigningCertURL", |s| {
            let v = s.remove("SigningCertUrl").unwrap();
            s.insert("SigningCertURL".into(), v);
        }),
        ("UnsubscribeURL", |s| {
            let v = s.remove("UnsubscribeUrl").unwrap();
            s.insert("UnsubscribeURL".into(), v);
        }),
        ("attributes of every type", |s| {
            s.insert(
                "MessageAttributes".into(),
                json!({
                    "recordType": {"Type": "String", "Value": "player"},
                    "seq": {"Type": "Number", "Value": "99999999999999999999999999999999999999"},
                    "tags": {"Type": "String.Array", "Value": "[\"a\",1,true,null]"},
                    "raw": {"Type": "Binary", "Value": "AAEC/w=="},
                    "TestBinary": {"Type": "Binary", "Value": "TestBinary"}
                }),
            );
        }),
        ("attributes null", |s| {
            s.insert("MessageAttributes".into(), serde_json::Value::Null);
        }),
        ("attributes empty", |s| {
            s.insert("MessageAttributes".into(), json!({}));
        }),
        ("attributes absent", |s| {
            s.remove("MessageAttributes");
        }),
        ("Timestamp without millis", |s| {
            s.insert("Timestamp".into(), json!("2023-11-14T22:28:21Z"));
        }),
        ("Timestamp 1970", |s| {
            s.insert("Timestamp".into(), json!("1970-01-01T00:00:00.000Z"));
        }),
    ];
    for (name, edit) in edits {
        let mut event = sns_event_of(&fixture_insert());
        edit(event["Records"][0]["Sns"].as_object_mut().unwrap());
        let report = project(event).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(report.stats.applied, 1, "{name}");
    }
}

/// SNS without `UnsubscribeUrl` (the projector never reads it), or another field the projector does not
/// read: the record is projected rather than the whole invocation failing on a field the function does not
/// use. Without `MessageId` or `Message` (what it reads) the event still fails, loudly.
#[tokio::test]
async fn sns_without_unsubscribe_url_still_projects() {
    let sns_fields = [
        "UnsubscribeUrl",
        "SigningCertUrl",
        "Signature",
        "SignatureVersion",
        "Timestamp",
        "TopicArn",
        "Type",
    ];
    for field in sns_fields {
        let mut event = sns_event_of(&fixture_insert());
        event["Records"][0]["Sns"].as_object_mut().unwrap().remove(field);
        let report = project(event)
            .await
            .unwrap_or_else(|e| panic!("without {field}: {e}"));
        assert_eq!(report.stats.applied, 1, "without {field}");
        let mut event = sns_event_of(&fixture_insert());
        event["Records"][0]["Sns"][field] = serde_json::Value::Null;
        let report = project(event)
            .await
            .unwrap_or_else(|e| panic!("{field} null: {e}"));
        assert_eq!(report.stats.applied, 1, "{field} null");
    }
    for field in ["EventSubscriptionArn", "EventVersion", "EventSource"] {
        let mut event = sns_event_of(&fixture_insert());
        event["Records"][0].as_object_mut().unwrap().remove(field);
        let report = project(event)
            .await
            .unwrap_or_else(|e| panic!("without {field}: {e}"));
        assert_eq!(report.stats.applied, 1, "without {field}");
    }
    for field in ["MessageId", "Message"] {
        let mut event = sns_event_of(&fixture_insert());
        event["Records"][0]["Sns"].as_object_mut().unwrap().remove(field);
        let err = project(event).await.expect_err(field);
        assert!(err.contains(field), "{err}");
    }
}

/// A message near SNS's 256 KiB limit with astral characters and separators: projected, content exact.
#[tokio::test]
async fn sns_message_near_256_kib_projects_exactly() {
    let mut record = fixture_insert();
    let blob = "ü🎮|,#\u{2029}".repeat(20_000);
    record["dynamodb"]["NewImage"]["blob"] = json!({ "S": blob });
    let event = sns_event_of(&record);
    let size = event["Records"][0]["Sns"]["Message"].as_str().unwrap().len();
    assert!((200 * 1024..=256 * 1024).contains(&size), "{size}");
    let parsed: ProjectorEvent = serde_json::from_value(event).unwrap();
    let store = Mutex::new(MemoryStore::new());
    let report = projector::handle(&latest_players(), &store, &parsed)
        .await
        .unwrap();
    assert_eq!(report.stats.applied, 1);
    let store = store.into_inner().unwrap();
    let view: Vec<&Item> = store.items().collect();
    assert_eq!(view.len(), 1);
    assert_eq!(view[0]["blob"], Value::S(blob));
}

// ---------------------------------------------------------------- API Gateway WebSocket → connections

fn ws_fixture() -> serde_json::Value {
    serde_json::from_str(&fixture("websocket-events.json")).unwrap()
}

fn routes() -> ViewRoutes {
    ViewRoutes { views: vec![("players".into(), "players#".into())] }
}

const NOW: i64 = 1_732_492_900;
const CONNECTION: &str = "Vq2PbcfvoAMCLkg=";

async fn ws(store: &MemoryConnections, event: serde_json::Value) -> connections::ProxyResponse {
    let event: WebSocketEvent =
        serde_json::from_value(event).expect("a WebSocket event of AWS's shape parses");
    connections::handle(&routes(), store, &event, NOW).await
}

/// `$connect` with a query string (single and multi-value, an empty value), a Lambda authorizer's
/// context (principalId, a numeric integrationLatency, typed custom keys), identity fields null, and
/// non-ASCII header values: accepted, the connection registered with the expiry of `connectedAt`.
#[tokio::test]
async fn ws_connect_with_query_string_authorizer_and_headers_is_accepted() {
    let mut connect = ws_fixture()["connect"].clone();
    connect["queryStringParameters"] = json!({"token": "abc==", "empty": "", "view": "players"});
    connect["multiValueQueryStringParameters"] =
        json!({"token": ["abc=="], "empty": [""], "view": ["players", "games"]});
    connect["headers"]["User-Agent"] = json!("Zoë 🎮/1.0");
    connect["headers"]["Sec-WebSocket-Protocol"] = json!("kappa.v1, kappa.v0");
    connect["multiValueHeaders"]["User-Agent"] = json!(["Zoë 🎮/1.0"]);
    connect["requestContext"]["authorizer"] = json!({
        "principalId": "user-42", "integrationLatency": 12, "tenant": "t1", "admin": true, "quota": 5
    });
    connect["requestContext"]["identity"] = json!({
        "accountId": null, "apiKey": null, "caller": null, "cognitoIdentityId": null, "sourceIp": "203.0.113.10",
        "userAgent": "Zoë", "user": null, "userArn": null, "accessKey": null
    });
    let store = MemoryConnections::new();
    let r = ws(&store, connect).await;
    assert_eq!(r.status_code, 200, "{r:?}");
    assert_eq!(
        store.items(),
        vec![connections::connection_item(
            CONNECTION,
            connections::expires_at(1_732_492_800)
        )]
    );
}

/// `$disconnect` with no headers at all, with `disconnectStatusCode` -1, 1005, 1006 and an empty reason:
/// the connection removed, 200.
#[tokio::test]
async fn ws_disconnect_variants_remove_the_connection() {
    for status in [-1, 1005, 1006] {
        let store = MemoryConnections::new();
        assert_eq!(ws(&store, ws_fixture()["connect"].clone()).await.status_code, 200);
        let mut disconnect = ws_fixture()["disconnect"].clone();
        let object = disconnect.as_object_mut().unwrap();
        object.remove("headers");
        object.remove("multiValueHeaders");
        disconnect["requestContext"]["disconnectStatusCode"] = json!(status);
        disconnect["requestContext"]["disconnectReason"] = json!("");
        assert_eq!(ws(&store, disconnect).await.status_code, 200, "{status}");
        assert_eq!(store.items(), vec![], "{status}");
    }
}

/// A valid `subscribe` body on the `$default` route (dispatch is by body), with a key prefix of non-ASCII
/// characters and separators: served, the prefix kept exactly.
#[tokio::test]
async fn ws_default_route_serves_a_subscribe_with_a_unicode_prefix() {
    let store = MemoryConnections::new();
    ws(&store, ws_fixture()["connect"].clone()).await;
    let prefix = "PLAYER#Zoë🎮|\u{2028},";
    let mut message = ws_fixture()["default"].clone();
    message["body"] =
        json!(json!({"action": "subscribe", "view": "players", "keyPrefix": prefix}).to_string());
    let r = ws(&store, message).await;
    assert_eq!(r.status_code, 200, "{r:?}");
    assert_eq!(
        r.server_message(),
        Some(ServerMessage::Subscribed {
            version: crate::push::message::PROTOCOL_VERSION,
            view: "players".into(),
            key_prefix: Some(prefix.into())
        })
    );
}

/// A message event whose body is base64 (`isBase64Encoded: true`, what API Gateway sends when an
/// integration converts the payload): the body the flag describes is read, not its base64 text.
#[tokio::test]
async fn ws_base64_encoded_body_is_decoded_before_it_is_read() {
    use base64::Engine;
    let store = MemoryConnections::new();
    ws(&store, ws_fixture()["connect"].clone()).await;
    let mut message = ws_fixture()["subscribe"].clone();
    let text = message["body"].as_str().unwrap().to_string();
    message["body"] = json!(base64::engine::general_purpose::STANDARD.encode(text));
    message["isBase64Encoded"] = json!(true);
    let r = ws(&store, message).await;
    assert_eq!(r.status_code, 200, "{:?}", r.body_text());
    assert_eq!(
        store.subscribers("players").await.unwrap(),
        vec![(CONNECTION.to_string(), Some("PLAYER#bo".to_string()))]
    );
}

/// A body marked base64 that is not base64, or not UTF-8 once decoded: refused with 400, nothing changed.
#[tokio::test]
async fn ws_base64_body_that_does_not_decode_is_refused_with_400() {
    let store = MemoryConnections::new();
    ws(&store, ws_fixture()["connect"].clone()).await;
    let before = store.items();
    for body in ["not base64!", "/w=="] {
        let mut message = ws_fixture()["subscribe"].clone();
        message["body"] = json!(body);
        message["isBase64Encoded"] = json!(true);
        let r = ws(&store, message).await;
        assert_eq!(r.status_code, 400, "{body}");
        assert!(
            matches!(r.server_message(), Some(ServerMessage::Error { .. })),
            "{body}"
        );
    }
    assert_eq!(store.items(), before);
}

/// A message event without a body (`body` null or absent): refused with 400 and the accepted requests,
/// nothing changed.
#[tokio::test]
async fn ws_message_without_a_body_is_refused_with_400() {
    let store = MemoryConnections::new();
    ws(&store, ws_fixture()["connect"].clone()).await;
    let before = store.items();
    for body in [Some(serde_json::Value::Null), None] {
        let mut message = ws_fixture()["subscribe"].clone();
        match body {
            Some(v) => message["body"] = v,
            None => {
                message.as_object_mut().unwrap().remove("body");
            }
        }
        let r = ws(&store, message).await;
        assert_eq!(r.status_code, 400);
        assert!(r.body_text().unwrap().contains("accepted"));
    }
    assert_eq!(store.items(), before);
}

// ---------------------------------------------------------------- DynamoDB stream → router, projector

fn router_config() -> RouterConfig {
    let topics = json!({"player": "arn:aws:sns:us-east-1:123456789012:kappa-t-player"}).to_string();
    RouterConfig::from_lookup(lookup(&[("RECORD_TYPE_ATTRIBUTE", "type"), ("TOPICS", &topics)])).unwrap()
}

#[derive(Default)]
struct Sns {
    published: Mutex<Vec<PublishEntry>>,
}

impl Publisher for Sns {
    async fn publish_batch(
        &self,
        _topic: &str,
        entries: Vec<PublishEntry>,
    ) -> Result<Vec<String>, PublishError> {
        self.published.lock().unwrap().extend(entries);
        Ok(Vec::new())
    }
}

/// The limits of DynamoDB JSON in a stream INSERT: 38-digit and extreme numbers, every set type, empty
/// binary and string, nested maps and lists, NULL/BOOL, `ApproximateCreationDateTime` with a fraction,
/// `StreamViewType` NEW_IMAGE. The router publishes the record exactly as it came; the projector, reading
/// that SNS message, projects the same values exactly.
#[tokio::test]
async fn stream_record_at_the_limits_is_routed_unchanged_and_projected_exactly() {
    let mut record = fixture_insert();
    let image = &mut record["dynamodb"]["NewImage"];
    image["big"] = json!({"N": "99999999999999999999999999999999999999"});
    image["tiny"] = json!({"N": "-1E-130"});
    image["huge"] = json!({"N": "9.9999999999999999999999999999999999999E+125"});
    image["ns"] = json!({"NS": ["1", "-0.5", "12345678901234567890123456789012345678"]});
    image["ss"] = json!({"SS": ["a|b", "🎮", " "]});
    image["bs"] = json!({"BS": ["AA==", "//8=", "AQID"]});
    image["emptyB"] = json!({"B": ""});
    image["deep"] =
        json!({"M": {"a": {"M": {"b": {"L": [{"M": {"c": {"NULL": true}}}, {"BOOL": true}, {"L": []}]}}}}});
    record["dynamodb"]["ApproximateCreationDateTime"] = json!(1700000305.123);
    record["dynamodb"]["StreamViewType"] = json!("NEW_IMAGE");
    let event: StreamEvent = serde_json::from_value(json!({ "Records": [record.clone()] })).unwrap();
    assert_eq!(
        super::progress::created_ms(&event.records[0]),
        Some(1_700_000_305_123)
    );

    let sns = Sns::default();
    let report = router::handle(&router_config(), &sns, &RetryPolicy::immediate(2), &event).await;
    assert_eq!((report.published, report.failed), (1, 0));
    let published = sns.published.lock().unwrap().clone();
    let message: serde_json::Value = serde_json::from_str(&published[0].message).unwrap();
    assert_eq!(message["record"], record, "published as it came");

    let sns_event = super::event::sns_event(vec![sns_record(
        "m1",
        "arn:aws:sns:us-east-1:123456789012:kappa-t-player",
        published[0].message.clone(),
        published[0]
            .attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )]);
    let store = Mutex::new(MemoryStore::new());
    let report = projector::handle(&latest_players(), &store, &ProjectorEvent::Sns(sns_event))
        .await
        .unwrap();
    assert_eq!(report.stats.applied, 1);
    let store = store.into_inner().unwrap();
    let view: Vec<&Item> = store.items().collect();
    let n = |name: &str| match &view[0][name] {
        Value::N(n) => n.as_str().to_string(),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(n("big"), "99999999999999999999999999999999999999");
    assert_eq!(n("tiny"), "-1E-130");
    assert_eq!(n("huge"), "9.9999999999999999999999999999999999999E+125");
}

/// A TTL deletion (REMOVE with `userIdentity`, no NewImage) and an INSERT from a KEYS_ONLY stream (no
/// NewImage): neither fails the batch; the router ignores the REMOVE and counts the INSERT it cannot route;
/// the projector ignores the REMOVE and counts the INSERT as rejected (never silently).
#[tokio::test]
async fn stream_remove_and_keys_only_insert_are_counted_not_failed() {
    let mut remove = fixture_insert();
    remove["eventName"] = json!("REMOVE");
    let image = remove["dynamodb"]
        .as_object_mut()
        .unwrap()
        .remove("NewImage")
        .unwrap();
    remove["dynamodb"]["OldImage"] = image;
    remove["dynamodb"]["SequenceNumber"] = json!("4700000000000000009001");
    remove["userIdentity"] = json!({"type": "Service", "principalId": "dynamodb.amazonaws.com"});
    let mut keys_only = fixture_insert();
    keys_only["dynamodb"].as_object_mut().unwrap().remove("NewImage");
    keys_only["dynamodb"]["StreamViewType"] = json!("KEYS_ONLY");
    keys_only["dynamodb"]["SequenceNumber"] = json!("4700000000000000009002");
    let value = json!({ "Records": [remove.clone(), keys_only] });
    let event: StreamEvent = serde_json::from_value(value.clone()).unwrap();
    assert_eq!(serde_json::to_value(&event).unwrap(), value, "kept as it came");

    let sns = Sns::default();
    let report = router::handle(&router_config(), &sns, &RetryPolicy::immediate(2), &event).await;
    assert!(report.response.failed_ids().is_empty());
    assert_eq!((report.ignored, report.untyped, report.published), (1, 1, 0));

    let store = Mutex::new(MemoryStore::new());
    let report = projector::handle(&latest_players(), &store, &ProjectorEvent::Stream(event))
        .await
        .unwrap();
    assert!(report.response.failed_ids().is_empty());
    assert_eq!((report.stats.ignored, report.stats.rejected), (1, 1));
}
