//! break21: a view's lifecycle under crashes, gaps, removed inputs and deletions, on the local stack.
//! Each test states what a user expects: the view converges Live and exact, and nothing of an earlier
//! attempt (export files, partials, checkpoint ConfigMaps, backfill Jobs) is left behind.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use common::Operator;
use common::points::{HISTORY, actual, converged, crashed, expected, objects, status_of, view_yaml};
use common::scores::{Event, event, export_bucket, log_yaml, scores_table, write_events};
use k8s_openapi::api::core::v1::ConfigMap;
use kappa_operator::crd::{MaterializedView, MaterializedViewStatus, ViewPhase};
use kube::Api;
use kube::api::{Patch, PatchParams};

async fn backfill_config_maps(client: &kube::Client, ns: &str) -> Vec<String> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    cms.list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .filter(|n| n.contains("-backfill-"))
        .collect()
}

/// Waits (60 s) for the bucket to hold no export and the namespace no backfill checkpoint; fails naming
/// what is left.
async fn nothing_left(client: &kube::Client, ns: &str, s3: &aws_sdk_s3::Client, bucket: &str, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = objects(s3, bucket).await;
        let cms = backfill_config_maps(client, ns).await;
        if left.is_empty() && cms.is_empty() {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "{what}: left behind: {} S3 objects (first: {:?}), backfill checkpoints {cms:?}",
                left.len(),
                left.iter().take(3).collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Adds a shard the stream does not hold to the view's stream checkpoint: the live reader finds a gap.
async fn inject_gap(client: &kube::Client, ns: &str, shard: &str) {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let cm = common::eventually(Duration::from_secs(60), "the stream checkpoint", || async {
        let cm = cms.get_opt("points-stream").await.ok()??;
        cm.data.as_ref()?.get("checkpoint")?;
        Some(cm)
    })
    .await;
    let mut checkpoint: serde_json::Value = serde_json::from_str(&cm.data.unwrap()["checkpoint"]).unwrap();
    checkpoint["shards"][shard] = serde_json::json!({"state": "reading", "after": "1"});
    let patch = serde_json::json!({"data": {"checkpoint": checkpoint.to_string()}});
    cms.patch("points-stream", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// The stack, a log with `HISTORY` events written and its bucket; the operator is the caller's.
struct Scene {
    client: kube::Client,
    ns: String,
    ddb: aws_sdk_dynamodb::Client,
    s3: aws_sdk_s3::Client,
    bucket: String,
    mvs: Api<MaterializedView>,
    log_table: String,
    all: Vec<Event>,
    written: usize,
}

/// An operator that backfills any export over 100 items with an Indexed Job.
const JOB_ENV: [(&str, &str); 3] = [
    ("KAPPA_BACKFILL_JOB_ITEMS", "100"),
    ("KAPPA_IMAGE", "registry.example/kappa-operator:test"),
    ("KAPPA_SERVICE_ACCOUNT", "kappa-operator"),
];

impl Scene {
    /// An operator with [`JOB_ENV`], the log with its history and the view, once its backfill Job exists.
    async fn with_a_backfill_job(&mut self) -> (Operator, Api<k8s_openapi::api::batch::v1::Job>, String) {
        let op = Operator::start_with_env(&self.ns, "solo", 5, &JOB_ENV);
        self.log_with_history().await;
        self.view().await;
        let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(self.client.clone(), &self.ns);
        let job_name = kappa_operator::plan::job::job_name(&self.ns, "points", 1);
        common::eventually(Duration::from_secs(180), "the backfill Job", || async {
            jobs.get_opt(&job_name).await.ok()?
        })
        .await;
        (op, jobs, job_name)
    }

    async fn new(test: &str) -> Scene {
        let (client, ns) = common::setup(test).await;
        let aws = common::aws_config().await;
        let ddb = aws_sdk_dynamodb::Client::new(&aws);
        let (s3, bucket) = export_bucket(&aws, &ns).await;
        let mvs = Api::namespaced(client.clone(), &ns);
        Scene {
            client,
            ns,
            ddb,
            s3,
            bucket,
            mvs,
            log_table: String::new(),
            all: (0..HISTORY + 2_000).map(event).collect(),
            written: 0,
        }
    }

    async fn log_with_history(&mut self) {
        common::create_yaml(&self.client, &self.ns, &log_yaml(&self.bucket))
            .await
            .unwrap();
        self.log_table = scores_table(&self.client, &self.ns).await;
        self.write(HISTORY).await;
    }

    async fn write(&mut self, n: usize) {
        let events = self.all[self.written..self.written + n].to_vec();
        self.written += n;
        write_events(&self.ddb, &self.log_table, events).await;
    }

    async fn view(&self) {
        common::create_yaml(&self.client, &self.ns, &view_yaml("PLAYER#{playerId}"))
            .await
            .unwrap();
    }

    async fn converged(&self, what: &str) -> MaterializedViewStatus {
        converged(&self.mvs, &self.ddb, &self.all[..self.written], "PLAYER#", what).await
    }
}

/// The export's files are removed by hand after the first file was checkpointed (crash there, then
/// `aws s3 rm --recursive`): a new attempt exports again and the view converges; expected: the first
/// attempt's checkpoint ConfigMap (`points-backfill-1`) is removed too, as every finished checkpoint is.
#[tokio::test]
async fn files_gone_new_attempt_leaves_no_checkpoint_of_the_first() {
    let mut sc = Scene::new("b21-files-gone").await;
    let mut op = Operator::start_with_env(
        &sc.ns,
        "first",
        5,
        &[("FAILPOINTS", "backfill-file-checkpointed=return")],
    );
    sc.log_with_history().await;
    sc.view().await;
    crashed(&mut op, "backfill-file-checkpointed").await;
    drop(op);
    for key in objects(&sc.s3, &sc.bucket).await {
        sc.s3
            .delete_object()
            .bucket(&sc.bucket)
            .key(key)
            .send()
            .await
            .unwrap();
    }
    let op = Operator::start(&sc.ns, "second", 5);
    sc.write(200).await;
    let s = sc.converged("Live and exact from a new export").await;
    assert_eq!(s.backfill.unwrap().attempt, 2);
    nothing_left(&sc.client, &sc.ns, &sc.s3, &sc.bucket, "after the new attempt").await;
    drop(op);
    common::delete_namespace(&sc.client, &sc.ns).await;
}

/// A gap is found while the first backfill is still running (the operator crashed after its first file;
/// meanwhile its stream checkpoint names a shard the stream no longer holds): attempt 2 exports again.
/// Expected: Live and exact, and attempt 1's export (files and partials) and checkpoint removed.
#[tokio::test]
async fn a_gap_during_a_running_backfill_converges_and_leaves_nothing() {
    let mut sc = Scene::new("b21-gap-mid-backfill").await;
    let mut op = Operator::start_with_env(
        &sc.ns,
        "first",
        5,
        &[("FAILPOINTS", "backfill-file-checkpointed=return")],
    );
    sc.log_with_history().await;
    sc.view().await;
    crashed(&mut op, "backfill-file-checkpointed").await;
    drop(op);
    inject_gap(&sc.client, &sc.ns, "shardId-00000001700000000000-gone").await;
    let op = Operator::start(&sc.ns, "second", 5);
    sc.write(200).await;
    common::eventually(Duration::from_secs(120), "attempt 2 for the gap", || async {
        let b = status_of(&sc.mvs).await?.backfill?;
        (b.attempt == 2).then_some(())
    })
    .await;
    sc.write(200).await;
    let s = sc.converged("Live and exact after the gap").await;
    assert!(s.backfill.unwrap().reason.unwrap_or_default().contains("gap"));
    nothing_left(&sc.client, &sc.ns, &sc.s3, &sc.bucket, "after the gap's attempt").await;
    drop(op);
    common::delete_namespace(&sc.client, &sc.ns).await;
}

/// A gap is found after the backfill was recorded finished but before its cleanup completed (crash at
/// `backfill-export-deleted`: the export is gone, its checkpoint not yet). Expected: attempt 2 runs and
/// converges; attempt 1's checkpoint ConfigMap does not outlive it.
#[tokio::test]
async fn a_gap_between_finish_and_cleanup_leaves_no_checkpoint() {
    let mut sc = Scene::new("b21-gap-cleanup").await;
    let mut op = Operator::start_with_env(
        &sc.ns,
        "first",
        5,
        &[("FAILPOINTS", "backfill-export-deleted=return")],
    );
    sc.log_with_history().await;
    sc.view().await;
    crashed(&mut op, "backfill-export-deleted").await;
    drop(op);
    inject_gap(&sc.client, &sc.ns, "shardId-00000001700000000000-gone").await;
    let op = Operator::start(&sc.ns, "second", 5);
    sc.write(200).await;
    let s = sc.converged("Live and exact").await;
    let b = s.backfill.unwrap();
    assert_eq!(b.attempt, 2, "{b:?}");
    nothing_left(&sc.client, &sc.ns, &sc.s3, &sc.bucket, "after the gap's attempt").await;
    drop(op);
    common::delete_namespace(&sc.client, &sc.ns).await;
}

/// Two crashes in a row at different points: on the 2nd checkpointed file, then before the backfill is
/// recorded finished. Expected: Live, exact, nothing left.
#[tokio::test]
async fn two_crashes_in_a_row_converge() {
    let mut sc = Scene::new("b21-two-crashes").await;
    let mut op = Operator::start_with_env(
        &sc.ns,
        "first",
        5,
        &[("FAILPOINTS", "backfill-file-checkpointed=1*off->return")],
    );
    sc.log_with_history().await;
    sc.view().await;
    crashed(&mut op, "backfill-file-checkpointed").await;
    drop(op);
    sc.write(200).await;
    let mut op = Operator::start_with_env(
        &sc.ns,
        "second",
        5,
        &[("FAILPOINTS", "backfill-files-done=return")],
    );
    crashed(&mut op, "backfill-files-done").await;
    drop(op);
    sc.write(200).await;
    let op = Operator::start(&sc.ns, "third", 5);
    sc.write(200).await;
    sc.converged("Live and exact after two crashes").await;
    nothing_left(&sc.client, &sc.ns, &sc.s3, &sc.bucket, "after two crashes").await;
    drop(op);
    common::delete_namespace(&sc.client, &sc.ns).await;
}

/// A view deleted while its backfill runs as an Indexed Job (an export over `KAPPA_BACKFILL_JOB_ITEMS`).
/// Expected: the view goes, and so does its Job (else its pods keep writing partials and checkpoints
/// for a view, and into a table, that no longer exist), and no export or checkpoint is left.
#[tokio::test]
async fn deleting_a_view_during_a_job_backfill_removes_the_job() {
    let mut sc = Scene::new("b21-delete-job").await;
    let (op, jobs, job_name) = sc.with_a_backfill_job().await;
    sc.mvs.delete("points", &Default::default()).await.unwrap();
    common::eventually(Duration::from_secs(120), "the view deleted", || async {
        sc.mvs.get_opt("points").await.ok()?.is_none().then_some(())
    })
    .await;
    // Give the operator (and the API server's garbage collector) a minute.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let mut left = Vec::new();
    if let Some(job) = jobs.get_opt(&job_name).await.unwrap()
        && job.metadata.deletion_timestamp.is_none()
    {
        left.push(format!(
            "backfill Job {job_name} (owners: {:?})",
            job.metadata.owner_references
        ));
    }
    let s3_left = objects(&sc.s3, &sc.bucket).await;
    if !s3_left.is_empty() {
        left.push(format!(
            "{} export objects, e.g. {:?}",
            s3_left.len(),
            s3_left.first()
        ));
    }
    let cms = backfill_config_maps(&sc.client, &sc.ns).await;
    if !cms.is_empty() {
        left.push(format!("backfill checkpoints {cms:?}"));
    }
    assert!(
        left.is_empty(),
        "60 s after the view was deleted, left behind: {left:#?}"
    );
    nothing_left(&sc.client, &sc.ns, &sc.s3, &sc.bucket, "after deleting the view").await;
    drop(op);
    common::delete_namespace(&sc.client, &sc.ns).await;
}

/// The view's table is deleted by hand (a new user cleaning up in the console, or a mistaken
/// `aws dynamodb delete-table`) while the view is Live. Expected: the view either rebuilds its content
/// (a new backfill) and is Live and exact again, or stops saying what happened; it must not report
/// Live over a table that lost everything the backfill wrote. And it must not reconcile in a hot loop.
#[tokio::test]
async fn a_view_table_deleted_by_hand_is_not_live_with_lost_data() {
    let mut sc = Scene::new("b21-table-gone").await;
    let op = Operator::start(&sc.ns, "solo", 5);
    sc.log_with_history().await;
    sc.view().await;
    let s = sc.converged("Live and exact").await;
    let table = s.table_name.clone().unwrap();
    sc.ddb.delete_table().table_name(&table).send().await.unwrap();
    sc.write(200).await;
    let before = op.reconciles().await;
    let want = expected(&sc.all[..sc.written]);
    // Three minutes: enough for a new export and backfill of 6,000 records on the stack.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let mut last = String::new();
    loop {
        let s = status_of(&sc.mvs).await.unwrap();
        let have = actual(&sc.ddb, &table, "PLAYER#").await;
        if s.phase == Some(ViewPhase::Live) && have == want {
            break;
        }
        last = format!(
            "phase {:?}, backfill attempt {:?}, {} of {} players, e.g. p01 = {:?} (want {:?}), conditions {:?}",
            s.phase,
            s.backfill.as_ref().map(|b| b.attempt),
            have.len(),
            want.len(),
            have.get("p01"),
            want.get("p01"),
            s.conditions
                .iter()
                .map(|c| (c.type_.clone(), c.status, c.message.clone()))
                .collect::<Vec<_>>()
        );
        if tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let runs = op.reconciles().await - before;
    let s = status_of(&sc.mvs).await.unwrap();
    let have = actual(&sc.ddb, &table, "PLAYER#").await;
    assert!(
        !(s.phase == Some(ViewPhase::Live) && have != want),
        "the view reports Live over a table that lost its backfilled data: {last}"
    );
    assert!(
        s.phase == Some(ViewPhase::Live) && have == want,
        "not converged 180 s after its table was deleted: {last}"
    );
    assert!(runs <= 60, "{runs} reconciles in 180 s");
    drop(op);
    common::delete_namespace(&sc.client, &sc.ns).await;
}

/// The stream checkpoint ConfigMap is deleted by hand while the operator is down (the view is Live):
/// the live reader starts over from the stream's trim horizon. Expected: nothing counted twice.
#[tokio::test]
async fn a_stream_checkpoint_deleted_while_down_counts_nothing_twice() {
    let mut sc = Scene::new("b21-stream-cm-gone").await;
    let op = Operator::start(&sc.ns, "first", 5);
    sc.log_with_history().await;
    sc.view().await;
    sc.converged("Live and exact").await;
    sc.write(200).await;
    sc.converged("Live and exact with live records").await;
    drop(op);
    let cms: Api<ConfigMap> = Api::namespaced(sc.client.clone(), &sc.ns);
    cms.delete("points-stream", &Default::default()).await.unwrap();
    let op = Operator::start(&sc.ns, "second", 5);
    sc.write(200).await;
    // Let the reader replay the whole stream before judging.
    tokio::time::sleep(Duration::from_secs(20)).await;
    sc.converged("Live and exact after the stream checkpoint was deleted")
        .await;
    drop(op);
    common::delete_namespace(&sc.client, &sc.ns).await;
}

/// The backfill checkpoint ConfigMap is deleted by hand after a crash mid-backfill: every file is read
/// again. Expected: exact (the partials are restart-safe), and nothing left.
#[tokio::test]
async fn a_backfill_checkpoint_deleted_mid_backfill_counts_nothing_twice() {
    let mut sc = Scene::new("b21-backfill-cm-gone").await;
    let mut op = Operator::start_with_env(
        &sc.ns,
        "first",
        5,
        &[("FAILPOINTS", "backfill-file-checkpointed=2*off->return")],
    );
    sc.log_with_history().await;
    sc.view().await;
    crashed(&mut op, "backfill-file-checkpointed").await;
    drop(op);
    let cms: Api<ConfigMap> = Api::namespaced(sc.client.clone(), &sc.ns);
    cms.delete("points-backfill-1", &Default::default())
        .await
        .unwrap();
    let op = Operator::start(&sc.ns, "second", 5);
    sc.write(200).await;
    sc.converged("Live and exact after the backfill checkpoint was deleted")
        .await;
    nothing_left(&sc.client, &sc.ns, &sc.s3, &sc.bucket, "after the backfill").await;
    drop(op);
    common::delete_namespace(&sc.client, &sc.ns).await;
}

/// A `Count` view backfilled by a `Scan` (one marker per record), the operator killed before the scan is
/// recorded finished, then killed again on the next pass's cleanup. Expected: each score counted once.
#[tokio::test]
async fn a_count_scan_crashed_twice_counts_once() {
    let mut sc = Scene::new("b21-count-scan").await;
    let mut op = Operator::start_with_env(
        &sc.ns,
        "first",
        5,
        &[("FAILPOINTS", "backfill-files-done=return")],
    );
    sc.log_with_history().await;
    let view = view_yaml("PLAYER#{playerId}")
        .replace("{mode: Sum, sumOf: points, ", "{mode: Count, ")
        .replace("  store:", "  backfill: {source: Scan, parallelism: 2}\n  store:");
    common::create_yaml(&sc.client, &sc.ns, &view).await.unwrap();
    crashed(&mut op, "backfill-files-done").await;
    drop(op);
    sc.write(200).await;
    let mut op = Operator::start_with_env(
        &sc.ns,
        "second",
        5,
        &[("FAILPOINTS", "backfill-export-deleted=return")],
    );
    crashed(&mut op, "backfill-export-deleted").await;
    drop(op);
    let op = Operator::start(&sc.ns, "third", 5);
    sc.write(200).await;
    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for e in sc.all[..sc.written].iter().filter(|e| e.kind == "score") {
        *want.entry(e.player.clone()).or_default() += 1;
    }
    let mvs = sc.mvs.clone();
    let ddb = sc.ddb.clone();
    let mut last = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(s) = status_of(&mvs).await
            && s.phase == Some(ViewPhase::Live)
            && s.backfill.as_ref().is_some_and(|b| b.cleaned_up)
            && let Some(table) = s.table_name.clone()
        {
            let mut have = BTreeMap::new();
            for item in common::scan_all(&ddb, &table).await {
                if let (Some(AttributeValue::S(pk)), Some(AttributeValue::N(n))) =
                    (item.get("pk"), item.get("count"))
                    && let Some(p) = pk.strip_prefix("PLAYER#")
                {
                    have.insert(p.to_string(), n.parse::<i64>().unwrap());
                }
            }
            if have == want {
                break;
            }
            last = have;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not Live and exact: have {last:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    nothing_left(&sc.client, &sc.ns, &sc.s3, &sc.bucket, "after the scan").await;
    drop(op);
    common::delete_namespace(&sc.client, &sc.ns).await;
}

/// Runs index `index` of backfill Job `name` as its pod would (the operator's binary with the Job's args).
async fn run_job_pods(jobs: &Api<k8s_openapi::api::batch::v1::Job>, name: &str) {
    let job = common::eventually(Duration::from_secs(180), "the backfill Job", || async {
        jobs.get_opt(name).await.ok()?
    })
    .await;
    let spec = job.spec.unwrap();
    let completions = spec.completions.unwrap_or(1);
    let args = spec.template.spec.unwrap().containers[0].args.clone().unwrap();
    for index in 0..completions {
        let mut attempts = 0;
        loop {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_kappa-operator"))
                .args(&args)
                .env("JOB_COMPLETION_INDEX", index.to_string())
                .output()
                .unwrap();
            attempts += 1;
            if out.status.success() {
                break;
            }
            assert!(
                attempts <= 3,
                "index {index}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

/// A Job backfill (Sum, pre-aggregated, folded by the operator): the Job's pods finish, the operator folds
/// and is killed before the backfill is recorded finished; a fresh operator must not fold twice or
/// recreate the Job. Expected: Live, exact, no Job, export or checkpoint left.
#[tokio::test]
async fn a_job_backfill_crashed_after_its_fold_converges_exactly() {
    let mut sc = Scene::new("b21-job-fold-crash").await;
    let mut env = JOB_ENV.to_vec();
    env.push(("FAILPOINTS", "backfill-files-done=return"));
    let mut op = Operator::start_with_env(&sc.ns, "first", 5, &env);
    sc.log_with_history().await;
    sc.view().await;
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(sc.client.clone(), &sc.ns);
    let job_name = kappa_operator::plan::job::job_name(&sc.ns, "points", 1);
    run_job_pods(&jobs, &job_name).await;
    sc.write(200).await;
    crashed(&mut op, "backfill-files-done").await;
    drop(op);
    let op = Operator::start_with_env(&sc.ns, "second", 5, &JOB_ENV);
    sc.write(200).await;
    sc.converged("Live and exact after a crash after the fold").await;
    nothing_left(&sc.client, &sc.ns, &sc.s3, &sc.bucket, "after the Job backfill").await;
    common::eventually(Duration::from_secs(30), "no backfill Job", || async {
        jobs.get_opt(&job_name).await.ok()?.is_none().then_some(())
    })
    .await;
    drop(op);
    common::delete_namespace(&sc.client, &sc.ns).await;
}

/// A gap found mid-backfill (attempt 2 supersedes attempt 1), then the view is deleted. Expected: every
/// export the view made is removed with it (deletionPolicy Delete), attempt 1's included.
#[tokio::test]
async fn deleting_a_view_after_a_gap_mid_backfill_removes_every_export() {
    let mut sc = Scene::new("b21-gap-then-delete").await;
    let mut op = Operator::start_with_env(
        &sc.ns,
        "first",
        5,
        &[("FAILPOINTS", "backfill-file-checkpointed=return")],
    );
    sc.log_with_history().await;
    sc.view().await;
    crashed(&mut op, "backfill-file-checkpointed").await;
    drop(op);
    inject_gap(&sc.client, &sc.ns, "shardId-00000001700000000000-gone").await;
    let op = Operator::start(&sc.ns, "second", 5);
    sc.converged("Live and exact after the gap").await;
    sc.mvs.delete("points", &Default::default()).await.unwrap();
    common::eventually(Duration::from_secs(120), "the view deleted", || async {
        sc.mvs.get_opt("points").await.ok()?.is_none().then_some(())
    })
    .await;
    nothing_left(&sc.client, &sc.ns, &sc.s3, &sc.bucket, "after deleting the view").await;
    drop(op);
    common::delete_namespace(&sc.client, &sc.ns).await;
}

/// No hot loop while a Job backfill waits for its pods (nothing changes), and the floor does not hold the
/// view back long once the pods finish. Expected: at most a few reconciles in 45 s of waiting; Live
/// within 35 s (the floor's cap plus a pass) after the last pod exits.
#[tokio::test]
async fn a_waiting_job_backfill_is_paced_and_not_held_back_once_done() {
    let mut sc = Scene::new("b21-job-pace").await;
    let (op, jobs, job_name) = sc.with_a_backfill_job().await;
    tokio::time::sleep(Duration::from_secs(40)).await;
    // The view's reconciles (its EventLog's follow their own resync).
    let before = op.reconciles_of("MaterializedView").await;
    tokio::time::sleep(Duration::from_secs(45)).await;
    let runs = op.reconciles_of("MaterializedView").await - before;
    run_job_pods(&jobs, &job_name).await;
    let done = tokio::time::Instant::now();
    sc.converged("Live and exact after the Job").await;
    let took = done.elapsed();
    assert!(runs <= 4, "{runs} reconciles in 45 s while the Job waited");
    assert!(
        took <= Duration::from_secs(35),
        "Live {took:?} after the Job's pods finished"
    );
    drop(op);
    common::delete_namespace(&sc.client, &sc.ns).await;
}

/// Issue #14 item 5: a view with no backfill (`spec.backfill.source: None`) that loses stream records
/// says so, with the fix (a Warning Event `RecordsLost` and `kappa_view_gaps_total`), and keeps applying
/// what follows; it is never silently Live over a hole.
#[tokio::test]
async fn a_gap_in_a_view_without_backfill_is_reported_with_its_fix() {
    let mut sc = Scene::new("b21-gap-none").await;
    let op = Operator::start(&sc.ns, "first", 5);
    sc.log_with_history().await;
    let yaml = view_yaml("PLAYER#{playerId}") + "  backfill: {source: None}\n";
    common::create_yaml(&sc.client, &sc.ns, &yaml).await.unwrap();
    common::eventually(Duration::from_secs(120), "points Live", || async {
        let s = sc.mvs.get("points").await.ok()?.status?;
        (s.phase == Some(ViewPhase::Live)).then_some(())
    })
    .await;
    // The operator stopped long enough for the stream to drop records its checkpoint still needs.
    drop(op);
    inject_gap(&sc.client, &sc.ns, "shardId-00000000000000000000-deadbeef").await;
    let op = Operator::start(&sc.ns, "restarted", 5);
    let note = common::warning_note(&sc.client, &sc.ns, "RecordsLost", Duration::from_secs(60)).await;
    assert!(
        note.contains("deadbeef") && note.contains("spec.backfill.source"),
        "the shard and the fix are named: {note}"
    );
    let metrics = common::eventually(Duration::from_secs(30), "the gap counted", || async {
        let m = op.metrics().await?;
        m.lines()
            .any(|l| l.starts_with("kappa_view_gaps_total") && l.contains("points") && l.ends_with(" 1"))
            .then_some(m)
    })
    .await;
    assert!(metrics.contains("kappa_view_gaps_total"));
    // The reader goes on past the gap: new records are applied.
    let before = sc
        .mvs
        .get("points")
        .await
        .unwrap()
        .status
        .unwrap()
        .live
        .unwrap()
        .records_applied;
    sc.write(50).await;
    common::eventually(
        Duration::from_secs(60),
        "records after the gap applied",
        || async {
            let live = sc.mvs.get("points").await.ok()?.status?.live?;
            (live.records_applied > before).then_some(())
        },
    )
    .await;
    drop(op);
    common::delete_namespace(&sc.client, &sc.ns).await;
}
