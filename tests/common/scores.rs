//! The `scores` EventLog of the end-to-end tests: its manifest, its events (profile updates and scores of
//! 20 players) and how they are written, plus a bucket for its exports.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::AttributeValue;

/// Players the events are spread over.
pub const PLAYERS: usize = 20;

/// The `scores` EventLog, exporting to `bucket`.
pub fn log_yaml(bucket: &str) -> String {
    format!(
        r#"
apiVersion: kappa.dev/v1alpha1
kind: EventLog
metadata: {{name: scores}}
spec:
  recordTypes: [profile, score]
  table: {{sortKey: sk, orderingAttribute: seq}}
  fanOut: {{mode: Direct}}
  export: {{bucket: {bucket}, prefix: exports}}
  deletionPolicy: Delete
"#
    )
}

/// Event `i`: a profile update (every fourth) or a score, of player `i % 200`, with order `seq = i`.
#[derive(Clone, Debug)]
pub struct Event {
    pub i: usize,
    pub player: String,
    pub kind: &'static str,
    pub points: String,
}

pub fn event(i: usize) -> Event {
    let sign = if i.is_multiple_of(13) { "-" } else { "" };
    Event {
        i,
        player: format!("p{:02}", i % PLAYERS),
        kind: if i.is_multiple_of(4) { "profile" } else { "score" },
        points: format!("{sign}{}.{:02}", i % 97, i % 100),
    }
}

pub fn item(e: &Event) -> BTreeMap<String, AttributeValue> {
    let s = |v: &str| AttributeValue::S(v.to_string());
    let mut item = BTreeMap::from([
        ("pk".to_string(), s(&format!("P#{}", e.player))),
        ("sk".to_string(), s(&format!("{:08}", e.i))),
        ("type".to_string(), s(e.kind)),
        ("playerId".to_string(), s(&e.player)),
        ("seq".to_string(), AttributeValue::N(e.i.to_string())),
    ]);
    if e.kind == "profile" {
        item.insert("name".into(), s(&format!("name-{}", e.i)));
        item.insert("level".into(), AttributeValue::N((e.i % 50).to_string()));
    } else {
        item.insert("points".into(), AttributeValue::N(e.points.clone()));
    }
    item
}

pub async fn write_events(ddb: &aws_sdk_dynamodb::Client, table: &str, events: Vec<Event>) {
    let items = events.iter().map(|e| item(e).into_iter().collect()).collect();
    super::put_items(ddb, table, items).await;
}

/// An S3 client (path-style, as the local endpoint needs) and a bucket of the test's own for exports.
pub async fn export_bucket(aws: &aws_config::SdkConfig, ns: &str) -> (aws_sdk_s3::Client, String) {
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(aws)
            .force_path_style(true)
            .build(),
    );
    let bucket = format!("kappa-{ns}");
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("CreateBucket");
    (s3, bucket)
}

/// The name of EventLog `scores`'s table, once its stream exists.
pub async fn scores_table(client: &kube::Client, ns: &str) -> String {
    super::log_table(client, ns, "scores").await
}
