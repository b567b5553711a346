//! The backfill worker on the local AWS API (S3 + DynamoDB), reading the real-format export fixture
//! (`tests/fixtures/full-export`, laid out in a bucket exactly as DynamoDB writes it):
//! - every item is read with exact values and the expected players view is reproduced in a views table;
//! - a wrong MD5, a truncated gzip and a malformed line each fail the backfill with an error naming the
//!   file (and the line), and the broken file is never marked done;
//! - a worker restarted with a checkpoint skips the files it lists.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kappa_operator::aws::views::ViewTableWriter;
use kappa_operator::backfill::worker::{BackfillError, FileCheckpoints, Progress, Worker};
use kappa_operator::crd::{EventLogSpec, MaterializedViewSpec};
use kappa_operator::projection::{Item, ProjectionConfig, item_from_dynamodb};

const EXPORT: &str = "full-export/AWSDynamoDB/01700000000000-abcd1234";

type Memory = common::MemoryCheckpoints;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

struct Stack {
    s3: aws_sdk_s3::Client,
    ddb: aws_sdk_dynamodb::Client,
}

async fn stack() -> Stack {
    let aws = common::aws_config().await;
    Stack {
        s3: aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&aws)
                .force_path_style(true)
                .build(),
        ),
        ddb: aws_sdk_dynamodb::Client::new(&aws),
    }
}

/// A bucket holding the fixture export at its documented keys; `corrupt` may change one data file.
async fn bucket_with_export(
    stack: &Stack,
    name: &str,
    corrupt: impl Fn(&str, Vec<u8>) -> Vec<u8>,
) -> Vec<String> {
    stack
        .s3
        .create_bucket()
        .bucket(name)
        .send()
        .await
        .expect("CreateBucket");
    let root = fixtures();
    let mut data_keys = Vec::new();
    for path in files_under(&root.join(EXPORT)) {
        let key = path.strip_prefix(&root).unwrap().to_string_lossy().to_string();
        let mut bytes = std::fs::read(&path).unwrap();
        if key.contains("/data/") {
            bytes = corrupt(&key, bytes);
            data_keys.push(key.clone());
        }
        stack
            .s3
            .put_object()
            .bucket(name)
            .key(&key)
            .body(bytes.into())
            .send()
            .await
            .expect("PutObject");
    }
    data_keys
}

async fn views_table(stack: &Stack, name: &str) {
    common::create_pk_sk_table(&stack.ddb, name).await;
}

fn players_projection() -> Arc<ProjectionConfig> {
    let log: EventLogSpec = serde_yaml::from_str(
        "recordTypes: [player, game]\ntable: {partitionKey: pk, sortKey: sk, orderingAttribute: seq}",
    )
    .unwrap();
    let view: MaterializedViewSpec = serde_yaml::from_str(
        "eventLogRef: {name: game-log}\nrecordTypes: [player]\nprojection: {mode: Latest, key: {partitionKey: '{pk}'}}",
    )
    .unwrap();
    Arc::new(ProjectionConfig::from_spec("players", &view, &log, "").unwrap())
}

fn worker(stack: &Stack, bucket: &str, table: &str, checkpoints: Memory) -> Worker<Memory> {
    Worker {
        s3: stack.s3.clone(),
        bucket: bucket.to_string(),
        summary_key: format!("{EXPORT}/manifest-summary.json"),
        projection: players_projection(),
        writer: ViewTableWriter::new(stack.ddb.clone(), table, "", 4),
        checkpoints,
        parallelism: 2,
        share: (0, 1),
        progress: Arc::new(Mutex::new(Progress::default())),
        pre_aggregate: None,
    }
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("kappa-worker-{name}-{nanos}")
}

#[tokio::test]
async fn the_fixture_export_reproduces_the_players_view_and_a_restart_skips_done_files() {
    let stack = stack().await;
    let (bucket, table) = (unique("ok"), unique("views"));
    let data = bucket_with_export(&stack, &bucket, |_, b| b).await;
    views_table(&stack, &table).await;
    let checkpoints = Memory::default();
    let progress = worker(&stack, &bucket, &table, checkpoints.clone())
        .run()
        .await
        .expect("backfill");
    assert_eq!((progress.files_done, progress.files_total), (3, 3));
    assert_eq!((progress.items_done, progress.items_total), (40, 40));
    assert_eq!(checkpoints.done().await.unwrap().len(), data.len());

    // The views table holds exactly the expected players view, every value exact.
    let expected: Vec<Item> = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("expected-players-view.json")).unwrap(),
    )
    .unwrap();
    let scan = stack.ddb.scan().table_name(&table).send().await.unwrap();
    assert_eq!(scan.items().len(), expected.len());
    for want in &expected {
        let pk = want["pk"].as_s().unwrap();
        let got = scan
            .items()
            .iter()
            .map(|i| item_from_dynamodb(i.clone()).unwrap())
            .find(|i| i["pk"].as_s() == Some(pk))
            .unwrap_or_else(|| panic!("no view item for {pk}"));
        assert_eq!(got.get("logSk"), Some(&want["sk"]), "{pk}: the latest record");
        let mut rest = got.clone();
        for key in ["pk", "sk", "logPk", "logSk", "logRecordId"] {
            rest.remove(key);
        }
        let mut want_rest = want.clone();
        want_rest.remove("pk");
        want_rest.remove("sk");
        assert_eq!(rest, want_rest, "{pk}: every attribute, exactly");
    }

    // A restarted worker with that checkpoint has nothing left to do.
    let again = worker(&stack, &bucket, &table, checkpoints.clone())
        .run()
        .await
        .expect("resume");
    assert_eq!((again.files_resumed, again.files_done), (3, 3));
}

#[tokio::test]
async fn a_corrupt_file_fails_the_backfill_naming_it_and_is_never_marked_done() {
    let stack = stack().await;
    type Corruption = fn(Vec<u8>) -> Vec<u8>;
    let cases: [(&str, Corruption, &str); 3] = [
        (
            "md5",
            |mut b| {
                // Another valid gzip member appended: the content still parses, the MD5 no longer matches.
                b.extend_from_slice(&gzip(b""));
                b
            },
            "MD5",
        ),
        (
            "gzip",
            |b| b[..b.len() / 2].to_vec(),
            "gzip stream is truncated or corrupt",
        ),
        (
            "line",
            |_| gzip(b"{\"Item\":{\"pk\":{\"S\":\"x\"}}}\nnot json\n"),
            "line 2",
        ),
    ];
    for (name, corrupt, says) in cases {
        let (bucket, table) = (unique(name), unique(&format!("views-{name}")));
        let target = std::sync::OnceLock::new();
        let data = bucket_with_export(&stack, &bucket, |key, bytes| {
            // Corrupt the first data file in key order.
            if target.get().is_none() {
                let _ = target.set(key.to_string());
            }
            if target.get().map(String::as_str) == Some(key) {
                corrupt(bytes)
            } else {
                bytes
            }
        })
        .await;
        views_table(&stack, &table).await;
        let broken = target.get().unwrap().clone();
        let checkpoints = Memory::default();
        let error = worker(&stack, &bucket, &table, checkpoints.clone())
            .run()
            .await
            .expect_err("a corrupt export must fail the backfill");
        let text = error.to_string();
        assert!(text.contains(&broken), "{name}: the error names the file: {text}");
        assert!(
            text.contains(says),
            "{name}: the error says what is wrong ({says}): {text}"
        );
        assert!(matches!(error, BackfillError::Read(_)), "{name}: {error:?}");
        assert!(
            !error.retryable(),
            "{name}: a corrupt file is not retried blindly"
        );
        let done = checkpoints.done().await.unwrap();
        assert!(!done.contains(&broken), "{name}: the broken file was marked done");
        assert!(done.len() < data.len());
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}
