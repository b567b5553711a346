//! Resuming within a data file (issue #14 item 3): AWS export data files hold hundreds of MB, so a worker
//! records how far into a file it is every `LINES_SAVE_EVERY` records, and a restarted worker goes on
//! from there instead of the file's first line (the file is still read whole, to verify it).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use flate2::Compression;
use flate2::write::GzEncoder;
use kappa_operator::aws::views::ViewTableWriter;
use kappa_operator::backfill::worker::{FileCheckpoints, LINES_SAVE_EVERY, Progress, Worker};
use kappa_operator::crd::{EventLogSpec, MaterializedViewSpec};
use kappa_operator::projection::ProjectionConfig;
use md5::{Digest, Md5};

const RECORDS: u64 = 120_000;
const ENTITIES: u64 = 100;

/// A checkpoint in memory that also keeps how far into each file the worker is.
#[derive(Clone, Default)]
struct Lines {
    done: Arc<Mutex<BTreeSet<String>>>,
    lines: Arc<Mutex<HashMap<String, u64>>>,
    saves: Arc<Mutex<Vec<u64>>>,
}

impl FileCheckpoints for Lines {
    async fn done(&self) -> Result<BTreeSet<String>, kappa_operator::backfill::worker::CheckpointError> {
        Ok(self.done.lock().unwrap().clone())
    }
    async fn mark_done(
        &self,
        file: &str,
        _items: u64,
    ) -> Result<(), kappa_operator::backfill::worker::CheckpointError> {
        self.done.lock().unwrap().insert(file.to_string());
        Ok(())
    }
    async fn lines_done(
        &self,
    ) -> Result<HashMap<String, u64>, kappa_operator::backfill::worker::CheckpointError> {
        Ok(self.lines.lock().unwrap().clone())
    }
    async fn save_lines_done(
        &self,
        file: &str,
        lines: u64,
    ) -> Result<(), kappa_operator::backfill::worker::CheckpointError> {
        self.lines.lock().unwrap().insert(file.to_string(), lines);
        self.saves.lock().unwrap().push(lines);
        Ok(())
    }
}

/// One data file of `RECORDS` records in AWS's export layout: record `i` is `pk = E#<i % ENTITIES>`,
/// `seq = i`. Returns the data file's key.
async fn export(s3: &aws_sdk_s3::Client, bucket: &str) -> (String, String) {
    s3.create_bucket()
        .bucket(bucket)
        .send()
        .await
        .expect("CreateBucket");
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    for i in 0..RECORDS {
        writeln!(
            enc,
            r#"{{"Item":{{"pk":{{"S":"E#{}"}},"sk":{{"N":"{i}"}},"type":{{"S":"order"}},"seq":{{"N":"{i}"}}}}}}"#,
            i % ENTITIES
        )
        .unwrap();
    }
    let body = enc.finish().unwrap();
    let base = "resume/AWSDynamoDB/01700000000000-resume";
    let key = format!("{base}/data/big.json.gz");
    let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&body));
    let manifest =
        format!(r#"{{"itemCount":{RECORDS},"md5Checksum":"{md5}","etag":"x","dataFileS3Key":"{key}"}}"#)
            + "\n";
    let summary = format!(
        r#"{{"version":"2020-06-30","exportArn":"arn:aws:dynamodb:us-east-1:123456789012:table/T/export/01700000000000-resume","startTime":"2023-11-14T22:13:20.000Z","endTime":"2023-11-14T22:19:47.318Z","tableArn":"arn:aws:dynamodb:us-east-1:123456789012:table/T","tableId":"t","exportTime":"2023-11-14T22:13:20.000Z","s3Bucket":"{bucket}","s3Prefix":"resume","s3SseAlgorithm":"AES256","s3SseKmsKeyId":null,"manifestFilesS3Key":"{base}/manifest-files.json","billedSizeBytes":1,"itemCount":{RECORDS},"outputFormat":"DYNAMODB_JSON","exportType":"FULL_EXPORT"}}"#
    );
    for (k, b) in [
        (key.clone(), body),
        (format!("{base}/manifest-files.json"), manifest.into_bytes()),
        (format!("{base}/manifest-summary.json"), summary.into_bytes()),
    ] {
        s3.put_object()
            .bucket(bucket)
            .key(k)
            .body(b.into())
            .send()
            .await
            .expect("PutObject");
    }
    (key, format!("{base}/manifest-summary.json"))
}

fn first_seq_projection() -> Arc<ProjectionConfig> {
    let log: EventLogSpec = serde_yaml::from_str(
        "recordTypes: [order]\ntable: {partitionKey: pk, sortKey: sk, orderingAttribute: seq}",
    )
    .unwrap();
    let view: MaterializedViewSpec = serde_yaml::from_str(
        "eventLogRef: {name: orders}\nrecordTypes: [order]\nprojection: {mode: Min, minOf: seq, key: {partitionKey: '{pk}'}}",
    )
    .unwrap();
    Arc::new(ProjectionConfig::from_spec("first-seq", &view, &log, "").unwrap())
}

/// The smallest number in each view item, by partition key.
async fn minima(ddb: &aws_sdk_dynamodb::Client, table: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for item in common::scan_all(ddb, table).await {
        let Some(aws_sdk_dynamodb::types::AttributeValue::S(pk)) = item.get("pk") else {
            continue;
        };
        let n = item
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "pk" | "sk"))
            .filter_map(|(_, v)| v.as_n().ok()?.parse::<f64>().ok())
            .fold(f64::INFINITY, f64::min);
        out.insert(pk.clone(), n);
    }
    out
}

#[tokio::test]
async fn a_worker_records_how_far_into_a_file_it_is_and_a_restart_goes_on_from_there() {
    let aws = common::aws_config().await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&aws)
            .force_path_style(true)
            .build(),
    );
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let bucket = format!("kappa-resume-{nanos}");
    let (file, summary) = export(&s3, &bucket).await;
    let worker = |table: &str, checkpoints: Lines| Worker {
        s3: s3.clone(),
        bucket: bucket.clone(),
        summary_key: summary.clone(),
        projection: first_seq_projection(),
        writer: ViewTableWriter::new(ddb.clone(), table, "", 4),
        checkpoints,
        parallelism: 1,
        share: (0, 1),
        progress: Arc::new(Mutex::new(Progress::default())),
        pre_aggregate: None,
    };

    // A whole run records its way through the file.
    let fresh = common::fresh_pk_sk_table(&ddb, "resume-a").await;
    let checkpoints = Lines::default();
    worker(&fresh, checkpoints.clone())
        .run()
        .await
        .expect("the backfill runs");
    let saves = checkpoints.saves.lock().unwrap().clone();
    assert_eq!(
        saves.len() as u64,
        (RECORDS - 1) / LINES_SAVE_EVERY,
        "a point every {LINES_SAVE_EVERY} records: {saves:?}"
    );
    assert!(
        saves.windows(2).all(|w| w[0] < w[1]) && saves[0] >= LINES_SAVE_EVERY,
        "{saves:?}"
    );
    assert!(checkpoints.done.lock().unwrap().contains(&file));
    let whole = minima(&ddb, &fresh).await;
    assert_eq!(whole.len() as u64, ENTITIES);
    assert!(
        whole.values().all(|m| *m < ENTITIES as f64),
        "the first records count: {whole:?}"
    );

    // A restart after the first point: the records before it are not applied again (a view of minima
    // shows it: it only sees what comes after).
    let resumed_table = common::fresh_pk_sk_table(&ddb, "resume-b").await;
    let restarted = Lines::default();
    restarted.lines.lock().unwrap().insert(file.clone(), saves[0]);
    let progress = worker(&resumed_table, restarted.clone())
        .run()
        .await
        .expect("the resumed backfill runs");
    assert_eq!(progress.items_done, RECORDS, "the file counts whole once done");
    let after = minima(&ddb, &resumed_table).await;
    assert_eq!(after.len() as u64, ENTITIES);
    assert!(
        after
            .values()
            .all(|m| *m >= saves[0] as f64 && *m < (saves[0] + ENTITIES) as f64),
        "the resumed run applied only records after line {}: {after:?}",
        saves[0]
    );
}
