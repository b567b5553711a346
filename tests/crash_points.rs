//! Crash consistency of a view's lifecycle, on the local stack: for every named crash point
//! (`kappa_operator::CRASH_POINTS`, compiled in with the `failpoints` feature that `make test` builds with),
//! an operator started with `FAILPOINTS=<point>=return` exits there (as a SIGKILL would, code
//! `CRASH_EXIT_CODE`), a fresh operator takes over, and the view converges: Live, exact over every record
//! written (before, during and after the crash), and no AWS resource or export left behind.
//!
//! Also: no hot loop. A view waiting on something that never changes, under a storm of triggers that do not
//! change it either, is reconciled at most a few times a minute (the per-object floor).

mod common;

use std::time::Duration;

use common::Operator;
use common::points::{HISTORY, converged, crashed, objects, status_of, view_yaml};
use common::scores::{Event, event, export_bucket, log_yaml, scores_table, write_events};
use kappa_operator::crd::MaterializedView;
use kube::Api;
use kube::api::{Patch, PatchParams};

async fn table_exists(ddb: &aws_sdk_dynamodb::Client, table: &str) -> bool {
    ddb.describe_table().table_name(table).send().await.is_ok()
}

/// The next `n` events after the `written` first, counted as written.
fn more(all: &[Event], written: &mut usize, n: usize) -> Vec<Event> {
    let events = all[*written..*written + n].to_vec();
    *written += n;
    events
}

/// Kills the operator at `point` and checks that a fresh one converges.
async fn crash_and_converge(point: &'static str) {
    let (client, ns) = common::setup(&format!("crash-{point}")).await;
    let aws = common::aws_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let (s3, bucket) = export_bucket(&aws, &ns).await;
    let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
    let crash_env = format!("{point}=return");
    let crashing = [("FAILPOINTS", crash_env.as_str())];
    // Points on the way to the first Live crash the first operator; the others a later one.
    let early = point.starts_with("backfill-") && point != "backfill-gap-found" || point == "version-created";
    let mut op = Operator::start_with_env(&ns, "first", 5, if early { &crashing } else { &[] });
    common::create_yaml(&client, &ns, &log_yaml(&bucket))
        .await
        .unwrap();
    let log_table = scores_table(&client, &ns).await;
    let all: Vec<Event> = (0..HISTORY + 1_000).map(event).collect();
    write_events(&ddb, &log_table, all[..HISTORY].to_vec()).await;
    common::create_yaml(&client, &ns, &view_yaml("PLAYER#{playerId}"))
        .await
        .unwrap();
    let mut written = HISTORY;

    if early {
        crashed(&mut op, point).await;
        write_events(&ddb, &log_table, more(&all, &mut written, 200)).await;
        drop(op);
        op = Operator::start(&ns, "second", 5);
        write_events(&ddb, &log_table, more(&all, &mut written, 200)).await;
        converged(
            &mvs,
            &ddb,
            &all[..written],
            "PLAYER#",
            "Live and exact after the crash",
        )
        .await;
    } else {
        let s = converged(&mvs, &ddb, &all[..written], "PLAYER#", "Live and exact").await;
        let v1_table = s.table_name.clone().unwrap();
        drop(op);
        match point {
            "backfill-gap-found" => {
                // The stream checkpoint still reads a shard the stream no longer holds: a gap.
                let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), &ns);
                let cm = cms.get("points-stream").await.unwrap();
                let mut checkpoint: serde_json::Value =
                    serde_json::from_str(&cm.data.unwrap()["checkpoint"]).unwrap();
                checkpoint["shards"]["shardId-00000001700000000000-gone"] =
                    serde_json::json!({"state": "reading", "after": "1"});
                let patch = serde_json::json!({"data": {"checkpoint": checkpoint.to_string()}});
                cms.patch("points-stream", &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .unwrap();
                op = Operator::start_with_env(&ns, "crashing", 5, &crashing);
                crashed(&mut op, point).await;
                drop(op);
                op = Operator::start(&ns, "third", 5);
                write_events(&ddb, &log_table, more(&all, &mut written, 200)).await;
                let s = common::eventually(Duration::from_secs(240), "a new attempt for the gap", || async {
                    let s = status_of(&mvs).await?;
                    let b = s.backfill.clone()?;
                    (b.attempt == 2 && b.reason.as_deref().is_some_and(|r| r.contains("gap"))).then_some(s)
                })
                .await;
                assert!(
                    s.backfill
                        .unwrap()
                        .reason
                        .unwrap()
                        .contains("shardId-00000001700000000000-gone")
                );
                converged(
                    &mvs,
                    &ddb,
                    &all[..written],
                    "PLAYER#",
                    "Live and exact after the gap",
                )
                .await;
            }
            "version-promoted" | "version-retired" => {
                op = Operator::start_with_env(&ns, "crashing", 5, &crashing);
                let patch =
                    serde_json::json!({"spec": {"projection": {"key": {"partitionKey": "P2#{playerId}"}}}});
                mvs.patch("points", &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .unwrap();
                write_events(&ddb, &log_table, more(&all, &mut written, 200)).await;
                crashed(&mut op, point).await;
                drop(op);
                op = Operator::start(&ns, "third", 5);
                write_events(&ddb, &log_table, more(&all, &mut written, 200)).await;
                let s = converged(&mvs, &ddb, &all[..written], "P2#", "version 2 Live and exact").await;
                assert_eq!(s.active_version, Some(2));
                assert_ne!(s.table_name.as_deref(), Some(v1_table.as_str()));
                common::eventually(Duration::from_secs(120), "version 1 retired", || async {
                    let s = status_of(&mvs).await?;
                    (s.versions.iter().all(|v| v.version != 1) && !table_exists(&ddb, &v1_table).await)
                        .then_some(())
                })
                .await;
            }
            "deletion-resource-removed" => {
                op = Operator::start_with_env(&ns, "crashing", 5, &crashing);
                mvs.delete("points", &Default::default()).await.unwrap();
                crashed(&mut op, point).await;
                drop(op);
                op = Operator::start(&ns, "third", 5);
                common::eventually(Duration::from_secs(120), "the view deleted", || async {
                    (mvs.get_opt("points").await.ok()?.is_none() && !table_exists(&ddb, &v1_table).await)
                        .then_some(())
                })
                .await;
            }
            other => panic!("no scenario for crash point {other}"),
        }
    }
    // Nothing left behind: the exports (and their partials) are gone, and so are finished checkpoints.
    common::eventually(Duration::from_secs(60), "no export left in S3", || async {
        objects(&s3, &bucket).await.is_empty().then_some(())
    })
    .await;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), &ns);
    let names: Vec<String> = cms
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .filter(|n| n.contains("-backfill-"))
        .collect();
    assert!(names.is_empty(), "backfill checkpoints left: {names:?}");
    drop(op);
    common::delete_namespace(&client, &ns).await;
}

#[test]
fn every_crash_point_has_a_scenario() {
    let covered = [
        "backfill-export-started",
        "backfill-file-checkpointed",
        "backfill-files-done",
        "backfill-export-deleted",
        "backfill-gap-found",
        "version-created",
        "version-promoted",
        "version-retired",
        "deletion-resource-removed",
    ];
    let mut points = kappa_operator::CRASH_POINTS.to_vec();
    points.sort();
    let mut covered = covered.to_vec();
    covered.sort();
    assert_eq!(points, covered);
}

#[tokio::test]
async fn crash_after_the_export_started() {
    crash_and_converge("backfill-export-started").await;
}

#[tokio::test]
async fn crash_after_a_file_is_checkpointed() {
    crash_and_converge("backfill-file-checkpointed").await;
}

#[tokio::test]
async fn crash_after_every_file_is_done_before_the_backfill_is_recorded() {
    crash_and_converge("backfill-files-done").await;
}

#[tokio::test]
async fn crash_after_the_export_is_deleted() {
    crash_and_converge("backfill-export-deleted").await;
}

#[tokio::test]
async fn crash_after_a_gap_is_found_before_its_attempt_is_recorded() {
    crash_and_converge("backfill-gap-found").await;
}

#[tokio::test]
async fn crash_after_a_version_is_created_before_it_is_recorded() {
    crash_and_converge("version-created").await;
}

#[tokio::test]
async fn crash_after_a_promotion_before_it_is_recorded() {
    crash_and_converge("version-promoted").await;
}

#[tokio::test]
async fn crash_after_a_version_is_retired_before_it_is_recorded() {
    crash_and_converge("version-retired").await;
}

#[tokio::test]
async fn crash_during_deletion() {
    crash_and_converge("deletion-resource-removed").await;
}

/// The regression of the issue: the export's files are removed (by hand, or a bucket lifecycle rule)
/// before the backfill finished; the view starts a new attempt instead of waiting for them forever.
#[tokio::test]
async fn a_backfill_whose_export_files_are_gone_exports_again() {
    let (client, ns) = common::setup("crash-export-gone").await;
    let aws = common::aws_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let (s3, bucket) = export_bucket(&aws, &ns).await;
    let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
    // Crash once the first file is checkpointed, then remove every export file.
    let mut op = Operator::start_with_env(
        &ns,
        "first",
        5,
        &[("FAILPOINTS", "backfill-file-checkpointed=return")],
    );
    common::create_yaml(&client, &ns, &log_yaml(&bucket))
        .await
        .unwrap();
    let log_table = scores_table(&client, &ns).await;
    let all: Vec<Event> = (0..HISTORY + 200).map(event).collect();
    write_events(&ddb, &log_table, all[..HISTORY].to_vec()).await;
    common::create_yaml(&client, &ns, &view_yaml("PLAYER#{playerId}"))
        .await
        .unwrap();
    crashed(&mut op, "backfill-file-checkpointed").await;
    drop(op);
    for key in objects(&s3, &bucket).await {
        s3.delete_object().bucket(&bucket).key(key).send().await.unwrap();
    }
    let op = Operator::start(&ns, "second", 5);
    write_events(&ddb, &log_table, all[HISTORY..].to_vec()).await;
    let s = converged(&mvs, &ddb, &all, "PLAYER#", "Live and exact from a new export").await;
    let b = s.backfill.unwrap();
    assert_eq!(b.attempt, 2, "{b:?}");
    assert!(b.reason.unwrap().contains("are gone"));
    drop(op);
    common::delete_namespace(&client, &ns).await;
}

/// No hot loop: a view waiting for an EventLog that does not exist, while its labels are patched ten
/// times a second (each a watch event that changes nothing the operator reads), is reconciled at most a
/// few times a minute once its floor has grown; the deferrals are counted.
#[tokio::test]
async fn a_waiting_view_is_not_reconciled_in_a_hot_loop() {
    let (client, ns) = common::setup("hot-loop").await;
    let op = Operator::start(&ns, "solo", 5);
    let view = view_yaml("PLAYER#{playerId}").replace("name: scores", "name: missing");
    common::create_yaml(&client, &ns, &view).await.unwrap();
    let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
    let poke = |i: usize| {
        let mvs = mvs.clone();
        async move {
            let patch = serde_json::json!({"metadata": {"labels": {"poke": i.to_string()}}});
            let _ = mvs
                .patch("points", &PatchParams::default(), &Patch::Merge(&patch))
                .await;
        }
    };
    // The floor grows to its cap (15 s) within about 30 s of nothing changing.
    let mut i = 0;
    let warm = tokio::time::Instant::now() + Duration::from_secs(35);
    while tokio::time::Instant::now() < warm {
        poke(i).await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = op.reconciles().await;
    let window = tokio::time::Instant::now() + Duration::from_secs(45);
    while tokio::time::Instant::now() < window {
        poke(i).await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let runs = op.reconciles().await - before;
    assert!(runs <= 4, "{runs} reconciles in 45 s under {i} triggers");
    let metrics = op.metrics().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("kappa_reconciles_deferred_total{kind=\"MaterializedView\"}")),
        "deferrals are counted: {metrics}"
    );
    drop(op);
    common::delete_namespace(&client, &ns).await;
}
