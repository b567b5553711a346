//! What aggregates cost, on the local AWS API (the stack's `AWS_ENDPOINT_URL`), as ratios to their goals:
//!
//! 1. **Live cost per record against a key's history.** A `Count` key gets 10, 1,000 and 100,000 prior
//!    records through the views-table writer; then 200 more, in batches of 10 as a live path delivers them.
//!    Reported per new record: write capacity units (DynamoDB's rules for items up to 1 KB, counted by the
//!    writer), requests, and reads (none are issued). Goal: at most 4 write units and flat in history.
//! 2. **Backfill items written per distinct view item**, per mode, for an export of 20,000 records in 8
//!    data files whose view keys repeat across every file (the hard case for per-file reduction) and one
//!    whose view key is the log's partition key (records of one entity in one file, as DynamoDB exports
//!    an item collection). Goal: at most 1.1 (`Append`: one per record).
//!
//! `cargo bench --bench aggregates` (or `make bench`) runs it all; under `cargo test` (as `make test` runs
//! it) or with `KAPPA_BENCH_SMOKE=1` it uses small sizes. It prints figures, never asserts timings.

use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use flate2::Compression;
use flate2::write::GzEncoder;
use futures::StreamExt as _;
use kappa_operator::aws::views::ViewTableWriter;
use kappa_operator::backfill::worker::{PreAggregate, Progress, Worker};
use kappa_operator::crd::{EventLogSpec, MaterializedViewSpec};
use kappa_operator::projection::{Number, ProjectionConfig, RecordId, Value, ViewWrite};
use md5::{Digest, Md5};

const START_STACK: &str =
    "the local stack is not running: run `make stack-up && source .stack/env` (or `make bench`)";

#[path = "../tests/common/mod.rs"]
mod common;

type Memory = common::MemoryCheckpoints;

/// Small sizes unless run by `cargo bench` (which passes `--bench`), or when `KAPPA_BENCH_SMOKE=1`.
fn smoke() -> bool {
    std::env::var("KAPPA_BENCH_SMOKE").is_ok_and(|v| v == "1") || !std::env::args().any(|a| a == "--bench")
}

async fn clients() -> (aws_sdk_dynamodb::Client, aws_sdk_s3::Client) {
    std::env::var("AWS_ENDPOINT_URL")
        .unwrap_or_else(|_| panic!("AWS_ENDPOINT_URL is not set; {START_STACK}"));
    let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&aws)
            .force_path_style(true)
            .build(),
    );
    (aws_sdk_dynamodb::Client::new(&aws), s3)
}

async fn table(ddb: &aws_sdk_dynamodb::Client, name: &str) {
    common::create_pk_sk_table(ddb, name).await;
}

fn count_write(i: usize) -> ViewWrite {
    ViewWrite::Add {
        key: [("pk", "b#HOT"), ("sk", "TOTAL")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::S(v.to_string())))
            .collect(),
        attribute: "count".into(),
        delta: Number::from(1),
        record: RecordId::new(
            &Value::S(format!("E#{}", i % 1000)),
            Some(&Value::N(Number::from(i as i64))),
        )
        .unwrap(),
    }
}

/// Lays down what the writer leaves after `history` `Count` records of the hot key ([`count_write`]): one
/// idempotency marker per record and the aggregate, written directly with `BatchWriteItem` (25 items a
/// request), as applying them one transaction at a time would take the local API too long at 100,000.
async fn seed(ddb: &aws_sdk_dynamodb::Client, table: &str, history: usize) {
    use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
    use kappa_operator::projection::{dynamo, item_to_dynamodb};
    let markers: Vec<WriteRequest> = (0..history)
        .map(|i| {
            let ViewWrite::Add { record, .. } = count_write(i) else {
                unreachable!()
            };
            let item = item_to_dynamodb(dynamo::marker_key("b#", "", &record));
            WriteRequest::builder()
                .put_request(PutRequest::builder().set_item(Some(item)).build().unwrap())
                .build()
        })
        .collect();
    let chunks: Vec<Vec<WriteRequest>> = markers.chunks(25).map(|c| c.to_vec()).collect();
    let mut pending = futures::stream::iter(chunks.into_iter().map(|mut chunk| async move {
        while !chunk.is_empty() {
            let out = ddb
                .batch_write_item()
                .request_items(table, chunk)
                .send()
                .await
                .expect("seeding the history");
            chunk = out
                .unprocessed_items
                .and_then(|mut u| u.remove(table))
                .unwrap_or_default();
        }
    }))
    .buffer_unordered(8);
    while futures::StreamExt::next(&mut pending).await.is_some() {}
    ddb.put_item()
        .table_name(table)
        .item("pk", aws_sdk_dynamodb::types::AttributeValue::S("b#HOT".into()))
        .item("sk", aws_sdk_dynamodb::types::AttributeValue::S("TOTAL".into()))
        .item(
            "count",
            aws_sdk_dynamodb::types::AttributeValue::N(history.to_string()),
        )
        .send()
        .await
        .expect("seeding the aggregate");
}

async fn live_cost(ddb: &aws_sdk_dynamodb::Client) {
    let histories: &[usize] = if smoke() {
        &[10, 1_000]
    } else {
        &[10, 1_000, 100_000]
    };
    println!("live cost per Count record, against the key's history (goal: <= 4 write units, flat)");
    println!(
        "{:>10}  {:>12}  {:>14}  {:>10}  {:>12}",
        "history", "write units", "requests", "reads", "ratio to goal"
    );
    for &history in histories {
        let name = format!("bench-live-{history}-{}", std::process::id());
        table(ddb, &name).await;
        let writer = ViewTableWriter::new(ddb.clone(), &name, "b#", 8);
        seed(ddb, &name, history).await;
        let new = 200;
        let (mut units, mut requests) = (0, 0);
        for batch in (history..history + new).collect::<Vec<_>>().chunks(10) {
            let stats = writer
                .apply(batch.iter().map(|&i| count_write(i)).collect())
                .await
                .expect("live batch");
            units += stats.write_units;
            requests += stats.requests;
        }
        let total = ddb
            .get_item()
            .table_name(&name)
            .key("pk", aws_sdk_dynamodb::types::AttributeValue::S("b#HOT".into()))
            .key("sk", aws_sdk_dynamodb::types::AttributeValue::S("TOTAL".into()))
            .consistent_read(true)
            .send()
            .await
            .expect("reading the aggregate")
            .item
            .and_then(|i| i.get("count").and_then(|c| c.as_n().ok().cloned()));
        assert_eq!(total, Some((history + new).to_string()), "the count stays exact");
        let per = units as f64 / new as f64;
        println!(
            "{history:>10}  {per:>12.2}  {:>14.2}  {:>10}  {:>12.2}",
            requests as f64 / new as f64,
            0,
            per / 4.0
        );
    }
}

/// A synthetic full export in AWS's layout under `prefix` in `bucket`: `records` order records in
/// `files` data files; record `i` has `pk = E#<i % entities>`, `sk = i`, `g = i % groups`.
async fn export(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    records: usize,
    files: usize,
    by_entity: bool,
) {
    let mut bodies: Vec<(GzEncoder<Vec<u8>>, u64)> = (0..files)
        .map(|_| (GzEncoder::new(Vec::new(), Compression::fast()), 0))
        .collect();
    let entities = records / 20;
    for i in 0..records {
        let entity = i % entities;
        // By entity: an entity's records in one file; otherwise round-robin across files.
        let file = if by_entity {
            entity * files / entities
        } else {
            i % files
        };
        let line = format!(
            r#"{{"Item":{{"pk":{{"S":"E#{entity}"}},"sk":{{"S":"{i}"}},"type":{{"S":"order"}},"g":{{"S":"G{}"}},"amount":{{"N":"{}.{:02}"}},"seq":{{"N":"{i}"}}}}}}"#,
            i % 50,
            i % 1000,
            i % 100
        );
        let (enc, n) = &mut bodies[file];
        enc.write_all(line.as_bytes()).unwrap();
        enc.write_all(b"\n").unwrap();
        *n += 1;
    }
    let base = format!("{prefix}/AWSDynamoDB/01700000000000-bench");
    let mut manifest = String::new();
    for (f, (enc, n)) in bodies.into_iter().enumerate() {
        let body = enc.finish().unwrap();
        let key = format!("{base}/data/file{f}.json.gz");
        let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&body));
        manifest +=
            &format!(r#"{{"itemCount":{n},"md5Checksum":"{md5}","etag":"x","dataFileS3Key":"{key}"}}"#);
        manifest += "\n";
        s3.put_object()
            .bucket(bucket)
            .key(&key)
            .body(body.into())
            .send()
            .await
            .unwrap();
    }
    let summary = format!(
        r#"{{"version":"2020-06-30","exportArn":"arn:aws:dynamodb:us-east-1:123456789012:table/T/export/01700000000000-bench","startTime":"2023-11-14T22:13:20.000Z","endTime":"2023-11-14T22:19:47.318Z","tableArn":"arn:aws:dynamodb:us-east-1:123456789012:table/T","tableId":"t","exportTime":"2023-11-14T22:13:20.000Z","s3Bucket":"{bucket}","s3Prefix":"{prefix}","s3SseAlgorithm":"AES256","s3SseKmsKeyId":null,"manifestFilesS3Key":"{base}/manifest-files.json","billedSizeBytes":1,"itemCount":{records},"outputFormat":"DYNAMODB_JSON","exportType":"FULL_EXPORT"}}"#
    );
    s3.put_object()
        .bucket(bucket)
        .key(format!("{base}/manifest-files.json"))
        .body(manifest.into_bytes().into())
        .send()
        .await
        .unwrap();
    s3.put_object()
        .bucket(bucket)
        .key(format!("{base}/manifest-summary.json"))
        .body(summary.into_bytes().into())
        .send()
        .await
        .unwrap();
}

async fn amplification(ddb: &aws_sdk_dynamodb::Client, s3: &aws_sdk_s3::Client) {
    let records = if smoke() { 2_000 } else { 20_000 };
    let files = 8;
    let bucket = format!("bench-backfill-{}", std::process::id());
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateBucket: {e:?}; {START_STACK}"));
    let log: EventLogSpec = serde_yaml::from_str(
        "recordTypes: [order]\ntable: {partitionKey: pk, sortKey: sk, orderingAttribute: seq}",
    )
    .unwrap();
    println!();
    println!(
        "backfill items written per distinct view item ({records} records, {files} data files; goal: <= 1.1)"
    );
    println!(
        "{:<28} {:<8} {:>9} {:>10} {:>8} {:>13}",
        "view key", "mode", "written", "distinct", "ratio", "ratio to goal"
    );
    for (layout, by_entity, key) in [
        ("group, in every file", false, "G#{g}"),
        ("entity, one file each", true, "E#{pk}"),
    ] {
        let prefix = format!("exports-{by_entity}");
        export(s3, &bucket, &prefix, records, files, by_entity).await;
        for (mode, projection) in [
            (
                "Count",
                format!("{{mode: Count, key: {{partitionKey: '{key}'}}}}"),
            ),
            (
                "Sum",
                format!("{{mode: Sum, sumOf: amount, key: {{partitionKey: '{key}'}}}}"),
            ),
            (
                "Min",
                format!("{{mode: Min, minOf: amount, key: {{partitionKey: '{key}'}}}}"),
            ),
            (
                "Max",
                format!("{{mode: Max, maxOf: amount, key: {{partitionKey: '{key}'}}}}"),
            ),
            (
                "Latest",
                format!("{{mode: Latest, key: {{partitionKey: '{key}'}}}}"),
            ),
            (
                "Append",
                format!("{{mode: Append, key: {{partitionKey: '{key}'}}}}"),
            ),
        ] {
            let view: MaterializedViewSpec = serde_yaml::from_str(&format!(
                "eventLogRef: {{name: log}}\nrecordTypes: [order]\nprojection: {projection}"
            ))
            .unwrap();
            let config = Arc::new(ProjectionConfig::from_spec("v", &view, &log, "v#").unwrap());
            let name = format!("bench-fill-{by_entity}-{mode}-{}", std::process::id());
            table(ddb, &name).await;
            let pre = (mode != "Append").then(|| PreAggregate {
                band: Arc::default(),
                partials_prefix: format!("{prefix}/partials-{mode}/"),
                buckets: 4,
            });
            let worker = Worker {
                s3: s3.clone(),
                bucket: bucket.clone(),
                summary_key: format!("{prefix}/AWSDynamoDB/01700000000000-bench/manifest-summary.json"),
                projection: config,
                writer: ViewTableWriter::new(ddb.clone(), &name, "v#", 16),
                checkpoints: Memory::default(),
                parallelism: 2,
                share: (0, 1),
                progress: Arc::new(Mutex::new(Progress::default())),
                pre_aggregate: pre,
            };
            worker.run().await.expect("backfill");
            worker.fold(1).await.expect("fold");
            let written = worker.progress.lock().unwrap().writes_sent;
            let distinct = match mode {
                "Append" => records,
                _ if by_entity => records / 20,
                _ => 50,
            };
            let ratio = written as f64 / distinct as f64;
            println!(
                "{layout:<28} {mode:<8} {written:>9} {distinct:>10} {ratio:>8.2} {:>13.2}",
                ratio / 1.1
            );
        }
    }
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (ddb, s3) = clients().await;
        live_cost(&ddb).await;
        amplification(&ddb, &s3).await;
    });
}
