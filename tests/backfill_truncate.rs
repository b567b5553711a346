//! The backfill worker with its S3 reads going through the fault proxy (hack/fault-proxy.py, kind
//! `truncate`): half of the GetObject answers stop after half their body and the connection is reset, as a
//! long download's connection may break. `aws::export::open_object` resumes a broken body with a ranged
//! `GetObject` (`Range: bytes=<delivered>-`, `If-Match: <ETag>`), so the export reader (gunzip + MD5 of
//! every data file) sees each file whole: the view is the same as without faults, and the resumes are
//! noted as transient errors.
//!
//! The fixture export (`tests/fixtures/full-export`) is laid out in a bucket as DynamoDB writes it, as in
//! tests/backfill_worker.rs.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::faults::FaultProxy;
use kappa_operator::aws::views::ViewTableWriter;
use kappa_operator::backfill::worker::{Progress, Worker};
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

fn s3_client(aws: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(aws)
            .force_path_style(true)
            .build(),
    )
}

/// A bucket holding the fixture export at its documented keys (written directly, not through the proxy).
async fn bucket_with_export(s3: &aws_sdk_s3::Client, name: &str) {
    s3.create_bucket()
        .bucket(name)
        .send()
        .await
        .expect("CreateBucket");
    let root = fixtures();
    for path in files_under(&root.join(EXPORT)) {
        let key = path.strip_prefix(&root).unwrap().to_string_lossy().to_string();
        s3.put_object()
            .bucket(name)
            .key(&key)
            .body(std::fs::read(&path).unwrap().into())
            .send()
            .await
            .expect("PutObject");
    }
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

fn worker(
    s3: &aws_sdk_s3::Client,
    ddb: &aws_sdk_dynamodb::Client,
    bucket: &str,
    table: &str,
) -> Worker<Memory> {
    Worker {
        s3: s3.clone(),
        bucket: bucket.to_string(),
        summary_key: format!("{EXPORT}/manifest-summary.json"),
        projection: players_projection(),
        writer: ViewTableWriter::new(ddb.clone(), table, "", 4),
        checkpoints: Memory::default(),
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
    format!("kappa-truncate-{name}-{nanos}")
}

/// The view table's items, sorted.
async fn view(ddb: &aws_sdk_dynamodb::Client, table: &str) -> Vec<Item> {
    let mut items: Vec<Item> = common::scan_all(ddb, table)
        .await
        .into_iter()
        .map(|i| item_from_dynamodb(i).unwrap())
        .collect();
    items.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    items
}

#[tokio::test]
async fn broken_object_bodies_are_resumed_and_the_view_equals_the_fault_free_one() {
    let aws = common::aws_config().await;
    let (s3, ddb) = (s3_client(&aws), aws_sdk_dynamodb::Client::new(&aws));
    let bucket = unique("export");
    bucket_with_export(&s3, &bucket).await;

    // Without faults.
    let clean_table = unique("clean");
    common::create_pk_sk_table(&ddb, &clean_table).await;
    let clean = worker(&s3, &ddb, &bucket, &clean_table);
    let progress = clean.run().await.expect("the fault-free backfill");
    assert_eq!((progress.files_done, progress.items_done), (3, 40));
    let expected = view(&ddb, &clean_table).await;
    assert!(!expected.is_empty());

    // Through the proxy, half of the GetObject bodies cut.
    let proxy = FaultProxy::start(&common::stack_var("AWS_ENDPOINT_URL"));
    proxy
        .configure(serde_json::json!({
            "rate": {"s3": 0.5},
            "kinds": ["truncate"],
            "seed": 3,
            "resetCounts": true,
        }))
        .await;
    let through = s3_client(&proxy.aws_config_through().await);
    let faulty_table = unique("faulty");
    common::create_pk_sk_table(&ddb, &faulty_table).await;
    let faulty = worker(&through, &ddb, &bucket, &faulty_table);
    let progress = faulty.run().await.expect("the backfill with broken bodies");
    assert_eq!((progress.files_done, progress.items_done), (3, 40));
    assert_eq!(
        view(&ddb, &faulty_table).await,
        expected,
        "the view built from resumed bodies differs from the fault-free one"
    );

    let counts = proxy.counts().await;
    let truncated = counts["counts"]["s3"]["faults"]["truncate"].as_u64().unwrap_or(0);
    assert!(truncated > 0, "no body was cut: {counts}");
    let data_cuts = counts["injected"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "truncate" && f["path"].as_str().is_some_and(|p| p.contains("/data/")))
        .count() as u64;
    assert!(
        data_cuts > 0,
        "no data file body was cut (only manifests?): {counts}"
    );
    // Each cut data file body was resumed, and the resume noted (BodyBrokeOff) in the writer's log.
    let transient = faulty.writer.transient_log().get();
    eprintln!("{truncated} bodies cut ({data_cuts} of data files); writer's transient log: {transient:?}");
    assert!(
        transient.count >= data_cuts,
        "{data_cuts} data file bodies were cut but the writer's transient log counts {}: {transient:?}",
        transient.count
    );
    assert!(
        transient.last.as_deref().is_some_and(|l| l.contains("GetObject")),
        "{transient:?}"
    );
}
