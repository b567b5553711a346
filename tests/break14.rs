//! Breaking the work for issue #14 ("Transient AWS errors never fail a view"): the checkpoint bitmap, the
//! tolerant reading of objects and the permanent-error path, with inputs the feature's own tests did not
//! try. A test that shows a bug asserts the correct behaviour (so it fails until fixed) and says input,
//! expected and observed in its doc comment.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kappa_operator::aws::views::ViewTableWriter;
use kappa_operator::backfill::worker::{FileCheckpoints, Progress, Worker};
use kappa_operator::crd::{EventLogSpec, MaterializedViewSpec};
use kappa_operator::projection::ProjectionConfig;
use kappa_operator::runtime::checkpoints::ConfigMapCheckpoint;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Api, Client};

const EXPORT: &str = "full-export/AWSDynamoDB/01700000000000-abcd1234";

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

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("kappa-b14-{name}-{nanos}")
}

/// A bucket holding the fixture export (3 data files, 40 records) at its documented keys; returns the
/// data files' keys.
async fn bucket_with_export(stack: &Stack, name: &str) -> Vec<String> {
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
        if key.contains("/data/") {
            data_keys.push(key.clone());
        }
        stack
            .s3
            .put_object()
            .bucket(name)
            .key(&key)
            .body(std::fs::read(&path).unwrap().into())
            .send()
            .await
            .expect("PutObject");
    }
    data_keys
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

fn worker<C: FileCheckpoints>(stack: &Stack, bucket: &str, table: &str, checkpoints: C) -> Worker<C> {
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

/// The expected players view of the fixture export: how many items.
fn expected_players() -> usize {
    let expected: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("expected-players-view.json")).unwrap(),
    )
    .unwrap();
    expected.len()
}

/// The fixture export's data files in manifest order (what the worker lays the checkpoint out by).
async fn fixture_data_files(stack: &Stack, bucket: &str) -> Vec<String> {
    let (_, files) = kappa_operator::backfill::worker::read_manifests(
        &stack.s3,
        bucket,
        &format!("{EXPORT}/manifest-summary.json"),
    )
    .await
    .unwrap();
    files.into_iter().map(|f| f.data_file_s3_key).collect()
}

/// The ConfigMap key of share 0 of 1's within-file positions over `files` (the bitmap key's twin).
fn lines_key(files: &[String]) -> String {
    kappa_operator::runtime::checkpoints::files_key(files, (0, 1)).replacen("files-", "lines-", 1)
}

/// The data files of an earlier export of the same log (another export id), in manifest order.
fn older_export_files(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("full-export/AWSDynamoDB/01600000000000-0ld0ld00/data/older{i}.json.gz"))
        .collect()
}

// ---------------------------------------------------------------------------------------------------
// 1. The checkpoint bitmap is not bound to the export it was written for.
// ---------------------------------------------------------------------------------------------------

/// **Bug (data loss, silent).** The backfill checkpoint records files by their *position* in the manifest
/// (`files-<i>-of-<n>` bitmap, `lines-<i>-of-<n>`), but nothing in the ConfigMap says which export the
/// positions refer to; the ConfigMap's name is only `<view>-backfill-<attempt>`. The `f-<hash>` keys of
/// before #14 named each file by its full key (export id included), so a checkpoint of another export
/// matched nothing.
///
/// How the same name meets another export: a view deleted and created again under the same name before
/// the garbage collector removed the old `<view>-backfill-1` (the new view's first merge patch even
/// replaces the owner reference), or `status.backfill` deleted by hand (the fix the operator's own
/// ManifestMissing and "export files gone" messages give), which restarts at attempt 1 with a new export
/// once DynamoDB's 8-hour client-token window is past.
///
/// Input: ConfigMap `players-backfill-1` holding the bitmap of an older export whose 3 files were all done
/// (written by the real `ConfigMapCheckpoint`), then the worker run on the fixture export (3 other files,
/// 40 records) with that ConfigMap.
/// Expected: the worker projects the fixture export's 3 files; the views table holds the players view.
/// At ca63515 (read in the code; 5e02eea landed before this test first ran) the worker would report the 3 files resumed (done) and wrote nothing: the view empty,
/// the backfill complete. Fixed in 5e02eea (bitmap keys carry a digest of the file list): passes.
#[tokio::test]
async fn a_checkpoint_left_by_another_export_does_not_skip_this_exports_files() {
    let (client, ns) = common::setup("b14-stale-ckpt").await;
    let stack = stack().await;
    let (bucket, table) = (unique("stale"), unique("views"));
    let data = bucket_with_export(&stack, &bucket).await;
    common::create_pk_sk_table(&stack.ddb, &table).await;

    let older = older_export_files(data.len());
    let before = ConfigMapCheckpoint::new(client.clone(), &ns, "players-backfill-1".into(), None);
    before.layout(&older, (0, 1));
    before.done().await.unwrap();
    for f in &older {
        before.mark_done(f, 10).await.unwrap();
    }

    let now = ConfigMapCheckpoint::new(client.clone(), &ns, "players-backfill-1".into(), None);
    let progress = worker(&stack, &bucket, &table, now.clone())
        .run()
        .await
        .expect("backfill");
    let items = common::scan_all(&stack.ddb, &table).await.len();
    assert_eq!(
        (progress.files_resumed, items),
        (0, expected_players()),
        "no file of this export was done before; the older export's checkpoint must not count \
         (progress {progress:?})"
    );
    common::delete_namespace(&client, &ns).await;
}

/// **Bug (data loss, silent).** The same for the within-file position (`lines-<i>-of-<n>`, #14 item 3):
/// a `lines` entry left by another export (or edited by hand) larger than the file's record count makes
/// the worker skip every record of the file and then mark it done; nothing checks the saved position
/// against the manifest's `itemCount` of the file.
///
/// Input: `players-backfill-1` with `lines-0-of-1: {"0": 1000000}` (file 0 of an older export was a
/// million records in), then the worker on the fixture export (its file 0 holds far fewer records).
/// Expected: every record of the fixture export projected (a saved position beyond a file's end is not
/// this file's), the players view complete.
/// At ca63515 (read in the code, key `lines-0-of-1`): file 0's records skipped, the file marked done. Fixed in
/// 5e02eea (digest in the key; a position at or past the file's end read from the start); the test writes
/// the real key of this export: passes.
#[tokio::test]
async fn a_saved_position_beyond_the_files_end_does_not_skip_the_file() {
    let (client, ns) = common::setup("b14-stale-lines").await;
    let stack = stack().await;
    let (bucket, table) = (unique("lines"), unique("views"));
    bucket_with_export(&stack, &bucket).await;
    common::create_pk_sk_table(&stack.ddb, &table).await;

    let data = fixture_data_files(&stack, &bucket).await;
    let hand = ConfigMapCheckpoint::new(client.clone(), &ns, "players-backfill-1".into(), None);
    hand.merge(std::collections::BTreeMap::from([(
        lines_key(&data),
        r#"{"0":1000000}"#.to_string(),
    )]))
    .await
    .unwrap();

    let now = ConfigMapCheckpoint::new(client.clone(), &ns, "players-backfill-1".into(), None);
    let progress = worker(&stack, &bucket, &table, now)
        .run()
        .await
        .expect("backfill");
    assert_eq!(progress.files_done, 3);
    let items = common::scan_all(&stack.ddb, &table).await.len();
    assert_eq!(
        items,
        expected_players(),
        "a saved position past the file's end skipped its records"
    );
    common::delete_namespace(&client, &ns).await;
}

// ---------------------------------------------------------------------------------------------------
// 2. Two processes of the same share.
// ---------------------------------------------------------------------------------------------------

/// **Bug (a backfill that never completes).** Each process keeps its share's bitmap in memory, loaded
/// once, and every `mark_done` writes the whole bitmap from memory. Two pods of the same Job index (a pod
/// replaced while the old one still runs: a node lost and back, a pod stuck Terminating) overwrite each
/// other's files. With the `f-<hash>` keys of before, each file was its own key and nothing was lost.
///
/// Worse than re-work: the operator follows a Job backfill by the checkpoint alone
/// (`job_backfill`: the Job is left alone while `finished < files` and it has not failed). When the new pod
/// finishes every file (its index succeeds, the Job completes) and the old pod then writes its stale bitmap
/// once more before it is stopped, the checkpoint stays short of every file for good: the view waits in
/// Backfilling forever, with no error.
///
/// Input: files f0..f3, share 0 of 1; the old pod marks f0; the new pod starts (reads {f0}) and marks
/// f1, f2, f3; the old pod, slower, marks f1 (its next file) and is stopped.
/// Expected: a fresh reader (the operator) finds all 4 files done.
/// At ca63515 (read in the code): {f0, f1}: f2 and f3, done by the new pod, lost. Fixed in 5e02eea (a bitmap write
/// ORs what the key holds under a resourceVersion precondition): passes.
#[tokio::test]
async fn two_pods_of_one_share_do_not_erase_each_others_files() {
    let (client, ns) = common::setup("b14-same-share").await;
    let files: Vec<String> = (0..4)
        .map(|i| format!("p/AWSDynamoDB/01700000000000-abcd1234/data/f{i}.json.gz"))
        .collect();
    let name = "v-backfill-1".to_string();
    let pod = || {
        let c = ConfigMapCheckpoint::new(client.clone(), &ns, name.clone(), None);
        c.layout(&files, (0, 1));
        c
    };
    let old = pod();
    assert!(old.done().await.unwrap().is_empty());
    old.mark_done(&files[0], 10).await.unwrap();

    let new = pod();
    assert_eq!(new.done().await.unwrap().len(), 1);
    for f in &files[1..] {
        new.mark_done(f, 10).await.unwrap();
    }
    old.mark_done(&files[1], 10).await.unwrap();

    let reader = pod();
    let done = reader.done().await.unwrap();
    assert_eq!(
        done.len(),
        files.len(),
        "a file recorded done by one pod was erased by the other pod of the same share: {done:?}"
    );
    common::delete_namespace(&client, &ns).await;
}

// ---------------------------------------------------------------------------------------------------
// 3. A checkpoint edited by hand.
// ---------------------------------------------------------------------------------------------------

/// A bitmap key of this very export edited into garbage (by hand, or truncated): its files must be
/// projected again, never skipped. (Before 5e02eea `done()` refused such a key as a retryable
/// checkpoint error, so the backfill said "resumes shortly" forever; now the key is logged and ignored.)
///
/// Input: `players-backfill-1` whose real bitmap key (`files-<digest>-0-of-1`) holds `garbage`; the
/// worker on the fixture export. Expected: the backfill completes with the whole players view. Passes.
#[tokio::test]
async fn a_bitmap_key_edited_into_garbage_projects_its_files_again() {
    let (client, ns) = common::setup("b14-garbage").await;
    let stack = stack().await;
    let (bucket, table) = (unique("garbage"), unique("views"));
    bucket_with_export(&stack, &bucket).await;
    common::create_pk_sk_table(&stack.ddb, &table).await;
    let data = fixture_data_files(&stack, &bucket).await;
    let hand = ConfigMapCheckpoint::new(client.clone(), &ns, "players-backfill-1".into(), None);
    hand.merge(std::collections::BTreeMap::from([(
        kappa_operator::runtime::checkpoints::files_key(&data, (0, 1)),
        "garbage".to_string(),
    )]))
    .await
    .unwrap();

    let progress = worker(&stack, &bucket, &table, hand.clone())
        .run()
        .await
        .expect("a garbage bitmap is ignored, its files projected again");
    assert_eq!((progress.files_resumed, progress.files_done), (0, 3));
    assert_eq!(
        common::scan_all(&stack.ddb, &table).await.len(),
        expected_players()
    );
    common::delete_namespace(&client, &ns).await;
}

/// **Bug (a backfill stuck for good, retried forever).** The twin of the case above for the within-file
/// positions (#14 item 3): a `lines-<digest>-<i>-of-<n>` key that is not JSON (edited by hand, or
/// truncated) makes `lines_done()` fail, which the worker turns into `BackfillError::Checkpoint`, always
/// `retryable()`: the backfill stops before any file, on every pass, forever ("the backfill resumes from
/// its checkpoint shortly"), though the key is only a hint ("losing it costs re-reading") and an unreadable
/// bitmap key is now simply ignored.
///
/// Input: `players-backfill-1` whose real lines key holds `{not json`; the worker on the fixture export.
/// Expected: the files are read from their start and the backfill completes with the whole players view
/// (or, at the least, fails with an error that is not retried as transient).
/// Observed: `Err(Checkpoint("ConfigMap players-backfill-1: key lines-…-0-of-1 is not a map of lines: …"))`,
/// `retryable() == true`, nothing projected.
#[tokio::test]
async fn a_lines_key_edited_into_garbage_does_not_stop_the_backfill_for_good() {
    let (client, ns) = common::setup("b14-garbage-lines").await;
    let stack = stack().await;
    let (bucket, table) = (unique("garbage-lines"), unique("views"));
    bucket_with_export(&stack, &bucket).await;
    common::create_pk_sk_table(&stack.ddb, &table).await;
    let data = fixture_data_files(&stack, &bucket).await;
    let hand = ConfigMapCheckpoint::new(client.clone(), &ns, "players-backfill-1".into(), None);
    hand.merge(std::collections::BTreeMap::from([(
        lines_key(&data),
        "{not json".to_string(),
    )]))
    .await
    .unwrap();

    match worker(&stack, &bucket, &table, hand.clone()).run().await {
        Ok(progress) => {
            assert_eq!(progress.files_done, 3);
            assert_eq!(
                common::scan_all(&stack.ddb, &table).await.len(),
                expected_players()
            );
        }
        Err(e) => assert!(
            !e.retryable(),
            "a hand-edited lines key never heals by itself, yet the backfill is retried forever: {e}"
        ),
    }
    common::delete_namespace(&client, &ns).await;
}

/// **Bug (files fail under contention).** Since 5e02eea a bitmap write reads the ConfigMap and patches it
/// with the ConfigMap's resourceVersion as precondition, trying again at once on 409, at most 20 times
/// (`CONFLICT_RETRIES`). The precondition is the whole ConfigMap's, shared by every share's key, so the
/// shares of one Indexed Job all contend for one version: with many shares finishing files at once, a
/// writer loses 20 rounds in a row (no backoff between rounds) and `mark_done` fails; the worker fails the
/// file (a `Checkpoint` error), re-reads it, and the run ends in error.
///
/// Input: 32 shares (a Job with 32 workers) each marking its 10 files done, concurrently, as fast as the
/// API server answers.
/// Expected: every `mark_done` succeeds and a fresh reader finds all 320 files.
/// Observed: 64 of 320 `mark_done` calls fail with "writing ConfigMap wide-backfill-1: it kept changing
/// under 20 attempts".
#[tokio::test]
async fn thirty_two_shares_marking_files_at_once_all_succeed() {
    let (client, ns) = common::setup("b14-contention").await;
    let shares = 32;
    let files: Vec<String> = (0..shares * 10)
        .map(|i| format!("p/AWSDynamoDB/01700000000000-abcd1234/data/f{i:04}.json.gz"))
        .collect();
    let name = "wide-backfill-1".to_string();
    let marks = (0..shares).map(|share| {
        let c = ConfigMapCheckpoint::new(client.clone(), &ns, name.clone(), None);
        c.layout(&files, (share, shares));
        let files = &files;
        async move {
            let mut failed = Vec::new();
            for f in files.iter().skip(share).step_by(shares) {
                if let Err(e) = c.mark_done(f, 1).await {
                    failed.push(format!("{f}: {e}"));
                }
            }
            failed
        }
    });
    let failed: Vec<String> = futures::future::join_all(marks).await.concat();
    let reader = ConfigMapCheckpoint::new(client.clone(), &ns, name.clone(), None);
    reader.layout(&files, (0, 1));
    let done = reader.done().await.unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} file checkpoints failed under contention, e.g. {:?}",
        failed.len(),
        files.len(),
        failed.first()
    );
    assert_eq!(done.len(), files.len());
    common::delete_namespace(&client, &ns).await;
}

// ---------------------------------------------------------------------------------------------------
// 4. Permanent AWS errors fail at once.
// ---------------------------------------------------------------------------------------------------

/// Permanent errors are not retried in place: a views table that does not exist (deleted mid-backfill)
/// and an export bucket that does not exist each stop the worker with a non-retryable error naming the
/// resource, without the ~5 minutes of in-place retries (bounded here by a generous 120 s guard, far
/// below the retry budget).
#[tokio::test]
async fn a_missing_views_table_or_bucket_fails_the_backfill_at_once_naming_it() {
    let stack = stack().await;
    let (bucket, table) = (unique("perm"), unique("gone-views"));
    bucket_with_export(&stack, &bucket).await;

    let run = worker(&stack, &bucket, &table, common::MemoryCheckpoints::default());
    let e = tokio::time::timeout(Duration::from_secs(120), run.run())
        .await
        .expect("a missing views table is not retried for minutes")
        .expect_err("no views table");
    assert!(!e.retryable(), "{e}");
    assert!(e.to_string().contains(&table), "names the table: {e}");

    let missing = unique("no-such-bucket");
    let run = worker(&stack, &missing, &table, common::MemoryCheckpoints::default());
    let e = tokio::time::timeout(Duration::from_secs(120), run.run())
        .await
        .expect("a missing bucket is not retried for minutes")
        .expect_err("no bucket");
    assert!(!e.retryable(), "{e}");
    assert!(e.to_string().contains(&missing), "names the bucket: {e}");
}

// ---------------------------------------------------------------------------------------------------
// 5. An EventLog this operator cannot read.
// ---------------------------------------------------------------------------------------------------

async fn events_for(client: &Client, ns: &str, name: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let list = api.list(&ListParams::default()).await.unwrap();
    list.items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

const LOG: &str = r#"
apiVersion: kappa.dev/v1alpha1
kind: EventLog
metadata: {name: game-events, finalizers: [kappa.dev/cleanup]}
spec:
  recordTypes: [player, game]
  table: {orderingAttribute: seq}
"#;

fn view(name: &str, log: &str) -> String {
    format!(
        r#"
apiVersion: kappa.dev/v1alpha1
kind: MaterializedView
metadata: {{name: {name}}}
spec:
  eventLogRef: {{name: {log}}}
  recordTypes: [player]
  projection: {{mode: Latest, key: {{partitionKey: "PLAYER#{{playerId}}"}}}}
  backfill: {{source: None}}
"#
    )
}

/// **Bug (the views of an unreadable EventLog fail with an opaque error).** The EventLog controller reads
/// EventLogs through `Tolerant` (its own Warning names the field: passes), but a view reads its EventLog
/// with a typed `Api<EventLog>::get_opt` (`materialized_view::apply`), which fails as a whole on the same
/// status: every view of that log fails each reconcile with a deserialization error that names neither the
/// field nor the fix.
///
/// Input: an EventLog whose `status.views` is 3000000000 (the CRD types it `integer`, format int32, which
/// the API server admits; i32 cannot hold it: say a newer operator widened it), and a view of it; another
/// view of a missing log in the same namespace.
/// Expected: the EventLog gets a Warning `UnreadableStatus` naming `status.views` (passes); the other view
/// goes on (Pending, EventLogNotFound: passes); the view of the unreadable log reports (Event or condition)
/// that its EventLog cannot be read, naming `status.views`.
/// Observed: the view's only Warnings are `reading EventLog …: Error deserializing response: invalid value:
/// integer `3000000000`, expected i32 …`, naming no field, repeated with backoff.
#[tokio::test]
async fn the_views_of_an_eventlog_with_an_unreadable_status_name_the_field() {
    let (client, ns) = common::setup("b14-unreadable-log").await;
    common::create_yaml(&client, &ns, LOG).await.unwrap();
    let raw: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &ApiResource::erase::<kappa_operator::crd::EventLog>(&()),
    );
    raw.patch_status(
        "game-events",
        &PatchParams::default(),
        &Patch::Merge(&serde_json::json!({"status": {"phase": "Ready", "views": 3_000_000_000u64}})),
    )
    .await
    .expect("the API server admits an int32-formatted integer beyond i32");
    common::create_yaml(&client, &ns, &view("players", "game-events"))
        .await
        .unwrap();
    common::create_yaml(&client, &ns, &view("orphan", "no-such-log"))
        .await
        .unwrap();
    let _operator = common::Operator::start(&ns, "solo", 15);

    let warning = common::eventually(
        Duration::from_secs(60),
        "a Warning UnreadableStatus on the EventLog",
        || async {
            events_for(&client, &ns, "game-events")
                .await
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("UnreadableStatus"))
        },
    )
    .await;
    let note = warning.note.unwrap_or_default();
    assert!(note.contains("status.views"), "{note}");

    let views: Api<kappa_operator::crd::MaterializedView> = Api::namespaced(client.clone(), &ns);
    common::eventually(Duration::from_secs(60), "the other view Pending", || async {
        let v = views.get("orphan").await.ok()?;
        (v.status?.phase == Some(kappa_operator::crd::ViewPhase::Pending)).then_some(())
    })
    .await;

    // The view of the unreadable log: give it time to say something, then read what it said.
    let said = common::eventually(
        Duration::from_secs(60),
        "a Warning on the view of the unreadable EventLog",
        || async {
            let events = events_for(&client, &ns, "players").await;
            let warnings: Vec<String> = events
                .into_iter()
                .filter(|e| e.type_.as_deref() == Some("Warning"))
                .map(|e| format!("{}: {}", e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
                .collect();
            (!warnings.is_empty()).then_some(warnings)
        },
    )
    .await;
    let view_conditions = views
        .get("players")
        .await
        .ok()
        .and_then(|v| v.status)
        .map(|s| format!("{:?}", s.conditions))
        .unwrap_or_default();
    assert!(
        said.iter().any(|w| w.contains("status.views")) || view_conditions.contains("status.views"),
        "the view does not say which field of its EventLog cannot be read: warnings {said:?}, conditions \
         {view_conditions}"
    );

    let _ = raw
        .patch(
            "game-events",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"metadata": {"finalizers": null}})),
        )
        .await;
    common::delete_namespace(&client, &ns).await;
}
