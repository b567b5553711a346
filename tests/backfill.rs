//! End to end on the local stack: three views (Latest, Append, Sum) on the in-cluster runtime are
//! backfilled from a point-in-time export of a 20,000-event log while 2,000 more events arrive, with the
//! operator killed three times mid-backfill; each view ends exactly equal to what this test computes on
//! its own from every event written, and the restarted operators resumed from their checkpoints.
//!
//! The export: the emulator completes `ExportTableToPointInTime` but does not write AWS's layout, so the
//! stack's export shim (`hack/moto-export-shim.py`) lays the snapshot out as AWS does (manifests, several
//! gzip data files); the operator reads only that layout.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use bigdecimal::BigDecimal;
use common::Operator;
use common::scores::{Event, event, export_bucket, log_yaml, scores_table, write_events};
use kappa_operator::crd::{MaterializedView, ViewPhase};
use kube::Api;

const EVENTS: usize = 20_000;
const MORE_EVENTS: usize = 2_000;

const VIEWS: &str = r#"
apiVersion: kappa.dev/v1alpha1
kind: MaterializedView
metadata: {name: profiles}
spec:
  eventLogRef: {name: scores}
  recordTypes: [profile]
  projector: {runtime: InCluster}
  projection: {mode: Latest, key: {partitionKey: "PLAYER#{playerId}"}}
  backfill: {parallelism: 1}
  deletionPolicy: Delete
---
apiVersion: kappa.dev/v1alpha1
kind: MaterializedView
metadata: {name: score-feed}
spec:
  eventLogRef: {name: scores}
  recordTypes: [score]
  projector: {runtime: InCluster}
  projection: {mode: Append, key: {partitionKey: "FEED#{playerId}"}}
  backfill: {parallelism: 1}
  deletionPolicy: Delete
---
apiVersion: kappa.dev/v1alpha1
kind: MaterializedView
metadata: {name: points}
spec:
  eventLogRef: {name: scores}
  recordTypes: [score]
  projector: {runtime: InCluster}
  projection: {mode: Sum, sumOf: points, key: {partitionKey: "PLAYER#{playerId}"}}
  store: {table: Dedicated}
  backfill: {parallelism: 1}
  deletionPolicy: Delete
"#;

/// What the three views must hold, computed from the events alone.
#[derive(Debug, PartialEq)]
struct Expected {
    /// player → (name, level, seq) of the profile with the greatest seq.
    profiles: BTreeMap<String, (String, String, String)>,
    /// (player, seq, points) of every score.
    feed: BTreeSet<(String, String, String)>,
    /// player → exact sum of points.
    points: BTreeMap<String, BigDecimal>,
}

fn expected(events: &[Event]) -> Expected {
    let mut profiles: BTreeMap<String, (usize, (String, String, String))> = BTreeMap::new();
    let mut feed = BTreeSet::new();
    let mut points: BTreeMap<String, BigDecimal> = BTreeMap::new();
    for e in events {
        if e.kind == "profile" {
            let value = (format!("name-{}", e.i), (e.i % 50).to_string(), e.i.to_string());
            let slot = profiles.entry(e.player.clone()).or_insert((e.i, value.clone()));
            if e.i >= slot.0 {
                *slot = (e.i, value);
            }
        } else {
            feed.insert((e.player.clone(), e.i.to_string(), e.points.clone()));
            *points.entry(e.player.clone()).or_default() += BigDecimal::from_str(&e.points).unwrap();
        }
    }
    Expected {
        profiles: profiles.into_iter().map(|(k, (_, v))| (k, v)).collect(),
        feed,
        points,
    }
}

/// What the views table holds, read back with a full scan.
async fn actual(ddb: &aws_sdk_dynamodb::Client, table: &str) -> Expected {
    let text = |item: &std::collections::HashMap<String, AttributeValue>, name: &str| match item.get(name) {
        Some(AttributeValue::S(s)) | Some(AttributeValue::N(s)) => s.clone(),
        other => format!("{other:?}"),
    };
    let mut out = Expected {
        profiles: BTreeMap::new(),
        feed: BTreeSet::new(),
        points: BTreeMap::new(),
    };
    for item in common::scan_all(ddb, table).await {
        let item = &item;
        let pk = text(item, "pk");
        if pk.contains("~applied#") {
            continue;
        }
        if let Some(player) = pk.strip_prefix("profiles#PLAYER#") {
            let value = (text(item, "name"), text(item, "level"), text(item, "seq"));
            out.profiles.insert(player.to_string(), value);
        } else if pk.starts_with("score-feed#FEED#") {
            out.feed
                .insert((text(item, "playerId"), text(item, "seq"), text(item, "points")));
        } else if let Some(player) = pk.strip_prefix("PLAYER#").filter(|_| item.contains_key("sum")) {
            out.points.insert(
                player.to_string(),
                BigDecimal::from_str(&text(item, "sum")).unwrap(),
            );
        }
    }
    out
}

/// A pseudo-random delay up to `max_ms`, from the clock.
fn random_ms(max_ms: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    nanos % max_ms
}

/// One view of [`VIEWS`], by name.
fn view_yaml(name: &str) -> String {
    VIEWS
        .split("\n---\n")
        .find(|v| v.contains(&format!("name: {name}}}")))
        .unwrap_or_else(|| panic!("no view {name} in VIEWS"))
        .to_string()
}

async fn views(api: &Api<MaterializedView>) -> Vec<MaterializedView> {
    api.list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

#[tokio::test]
async fn three_views_are_backfilled_exactly_through_restarts_and_concurrent_writes() {
    let (client, ns) = common::setup("backfill-e2e").await;
    let aws = common::aws_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let (s3, bucket) = export_bucket(&aws, &ns).await;

    let mut op = Operator::start(&ns, "run0", 5);
    common::create_yaml(&client, &ns, &log_yaml(&bucket))
        .await
        .unwrap();
    let log_table = scores_table(&client, &ns).await;
    let log_uid = Api::<kappa_operator::crd::EventLog>::namespaced(client.clone(), &ns)
        .get("scores")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();

    // The history: 20,000 events before any view exists.
    let all: Vec<Event> = (0..EVENTS + MORE_EVENTS).map(event).collect();
    write_events(&ddb, &log_table, all[..EVENTS].to_vec()).await;

    for view in VIEWS.split("\n---\n") {
        common::create_yaml(&client, &ns, view).await.unwrap();
    }
    let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);

    // 2,000 more events while the backfills run.
    common::eventually(Duration::from_secs(90), "an export to start", || async {
        let vs = views(&mvs).await;
        vs.iter()
            .any(|v| {
                v.status
                    .as_ref()
                    .and_then(|s| s.backfill.as_ref()?.export_arn.clone())
                    .is_some()
            })
            .then_some(())
    })
    .await;
    let writer = {
        let (ddb, table, more) = (ddb.clone(), log_table.clone(), all[EVENTS..].to_vec());
        tokio::spawn(async move {
            for chunk in more.chunks(100) {
                write_events(&ddb, &table, chunk.to_vec()).await;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };

    // Kill the operator three times while some view is mid-backfill (at least one file done, not all).
    let mut logs_of_restarts = Vec::new();
    let mut files_done_at_kill: BTreeMap<String, i64> = BTreeMap::new();
    for run in 1..=3 {
        // A view mid-backfill that got further since the last kill (so this operator led and worked).
        let progressed = common::eventually(
            Duration::from_secs(240),
            "a view progressing mid-backfill",
            || {
                let (mvs, before) = (mvs.clone(), files_done_at_kill.clone());
                async move {
                    let vs = views(&mvs).await;
                    let progressed: BTreeMap<String, i64> = vs
                        .iter()
                        .filter_map(|v| {
                            let b = v.status.as_ref()?.backfill.as_ref()?;
                            let name = v.metadata.name.clone()?;
                            Some((name, b.files_done, b.files_total, b.finished_at.is_none()))
                        })
                        .filter(|(name, done, total, running)| {
                            *running
                                && *done >= 1
                                && done < total
                                && before.get(name).is_none_or(|b| done > b)
                        })
                        .map(|(name, done, _, _)| (name, done))
                        .collect();
                    (!progressed.is_empty()).then_some(progressed)
                }
            },
        )
        .await;
        files_done_at_kill.extend(progressed);
        tokio::time::sleep(Duration::from_millis(random_ms(1500))).await;
        op.kill();
        logs_of_restarts.push(op.log_path.clone());
        op = Operator::start(&ns, &format!("run{run}"), 5);
    }
    writer.await.expect("the writer task");

    // Every view Live, then exactly what the events say.
    let want = expected(&all);
    common::eventually(Duration::from_secs(300), "all three views Live", || async {
        let vs = views(&mvs).await;
        (vs.len() == 3
            && vs
                .iter()
                .all(|v| v.status.as_ref().and_then(|s| s.phase) == Some(ViewPhase::Live)))
        .then_some(())
    })
    .await;
    let shared = mvs
        .get("profiles")
        .await
        .unwrap()
        .status
        .unwrap()
        .table_name
        .unwrap();
    let dedicated = mvs
        .get("points")
        .await
        .unwrap()
        .status
        .unwrap()
        .table_name
        .unwrap();
    assert_ne!(shared, dedicated);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let mut got = actual(&ddb, &shared).await;
        got.points = actual(&ddb, &dedicated).await.points;
        if got == want {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let diff = |a: usize, b: usize| format!("{a} vs {b} expected");
            panic!(
                "views differ from the independent computation: profiles {}, feed {}, points {}; \
                 first differing points: {:?}",
                diff(got.profiles.len(), want.profiles.len()),
                diff(got.feed.len(), want.feed.len()),
                diff(got.points.len(), want.points.len()),
                want.points.iter().find(|(k, v)| got.points.get(*k) != Some(*v))
            );
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }

    // The restarted operators resumed from checkpoints instead of starting over.
    let resumed = std::iter::once(op.log_path.clone())
        .chain(logs_of_restarts.into_iter().skip(1))
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .filter(|log| log.contains("resuming the backfill from its checkpoint"))
        .count();
    assert!(
        resumed >= 1,
        "no restarted operator logged that it resumed a backfill from its checkpoint"
    );

    // Each backfill finished once, and its export is deleted from S3.
    for v in views(&mvs).await {
        let b = v.status.unwrap().backfill.unwrap();
        assert_eq!(b.attempt, 1, "{}: one backfill attempt", v.metadata.name.unwrap());
        assert_eq!(b.progress.as_deref(), Some("100%"));
        assert!(
            b.items_total >= EVENTS as i64,
            "the export held the history: {b:?}"
        );
        let location = b.export_location.unwrap();
        let prefix = location.strip_prefix(&format!("s3://{bucket}/")).unwrap();
        // Under the log's own export root (the operator's), the user's prefix below it.
        let root = format!("kappa-exports/test/{ns}/scores/{log_uid}/exports/views/");
        assert!(prefix.starts_with(&root), "{location} is not under {root}");
        // Deleted on the pass after the finished backfill is recorded (materialized_view/backfill.rs, clean_up_backfill).
        common::eventually(
            Duration::from_secs(60),
            &format!("the export under {location} deleted"),
            || async {
                let left = s3
                    .list_objects_v2()
                    .bucket(&bucket)
                    .prefix(prefix)
                    .send()
                    .await
                    .ok()?;
                (left.key_count() == Some(0)).then_some(())
            },
        )
        .await;
    }
    drop(op);
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn a_view_backfilled_by_scanning_the_log_ends_exact() {
    let (client, ns) = common::setup("backfill-scan").await;
    let aws = common::aws_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let _op = Operator::start(&ns, "solo", 5);
    // No export: a log without spec.export, backfilled by a parallel segmented scan.
    let log = log_yaml("unused").replace("  export: {bucket: unused, prefix: exports}\n", "");
    common::create_yaml(&client, &ns, &log).await.unwrap();
    let log_table = scores_table(&client, &ns).await;
    let events: Vec<Event> = (0..3_000).map(event).collect();
    write_events(&ddb, &log_table, events.clone()).await;
    let view = view_yaml("points").replace(
        "backfill: {parallelism: 1}",
        "backfill: {source: Scan, parallelism: 2}",
    );
    common::create_yaml(&client, &ns, &view).await.unwrap();
    let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
    let status = common::eventually(Duration::from_secs(120), "points Live", || async {
        let s = mvs.get("points").await.ok()?.status?;
        (s.phase == Some(ViewPhase::Live)).then_some(s)
    })
    .await;
    let b = status.backfill.clone().unwrap();
    assert_eq!(
        (b.files_done, b.files_total),
        (8, 8),
        "2 × 4 segments, all checkpointed: {b:?}"
    );
    assert_eq!(b.items_done, 3_000, "every log item scanned once");
    let want = expected(&events).points;
    let table = status.table_name.unwrap();
    common::eventually(Duration::from_secs(60), "points exact", || async {
        (actual(&ddb, &table).await.points == want).then_some(())
    })
    .await;
    common::delete_namespace(&client, &ns).await;
}

/// Runs each index of backfill Job `name` as its pod would: the local stack has no kubelet, so the test
/// runs the container's command itself, retrying an index that exits 1 (retryable) as the Job's
/// `backoffLimitPerIndex` does. Returns the Job's arguments.
async fn run_job(jobs: &Api<k8s_openapi::api::batch::v1::Job>, name: &str, image: &str) -> Vec<String> {
    let job = common::eventually(Duration::from_secs(180), "the backfill Job", || async {
        jobs.get_opt(name).await.ok()?
    })
    .await;
    let spec = job.spec.unwrap();
    assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
    assert_eq!((spec.completions, spec.parallelism), (Some(2), Some(2)));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("kappa-operator"));
    let container = &pod.containers[0];
    assert_eq!(container.image.as_deref(), Some(image));
    let args = container.args.clone().unwrap();
    for index in 0..2 {
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
                out.status.code() == Some(1) && attempts <= 3,
                "index {index}, attempt {attempts}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    args
}

/// The items of `table` whose partition key holds `infix`.
async fn items_with(ddb: &aws_sdk_dynamodb::Client, table: &str, infix: &str) -> usize {
    let mut n = 0;
    let mut start = None;
    loop {
        let page = ddb
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        n += page
            .items()
            .iter()
            .filter(|i| matches!(i.get("pk"), Some(AttributeValue::S(pk)) if pk.contains(infix)))
            .count();
        start = page.last_evaluated_key;
        if start.is_none() {
            return n;
        }
    }
}

/// A large export is backfilled by Indexed Jobs of the operator's image, pre-aggregated as the operator's
/// own backfill is: a `Latest` view (reduced per key) and a `Sum` view (summed per player beside the live
/// path's band, then folded by the operator), both exact, the `Sum` view without a marker per record.
#[tokio::test]
async fn a_large_export_is_backfilled_by_an_indexed_job_of_the_operators_image() {
    let (client, ns) = common::setup("backfill-job").await;
    let aws = common::aws_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let (_, bucket) = export_bucket(&aws, &ns).await;
    // Any export over 100 items runs as a Job.
    let image = "registry.example/kappa-operator:test";
    let _op = Operator::start_with_env(
        &ns,
        "solo",
        5,
        &[
            ("KAPPA_BACKFILL_JOB_ITEMS", "100"),
            ("KAPPA_IMAGE", image),
            ("KAPPA_SERVICE_ACCOUNT", "kappa-operator"),
        ],
    );
    common::create_yaml(&client, &ns, &log_yaml(&bucket))
        .await
        .unwrap();
    let log_table = scores_table(&client, &ns).await;
    let events: Vec<Event> = (0..1_000).map(event).collect();
    write_events(&ddb, &log_table, events.clone()).await;
    // Older than the band around the export time: every record is the export's alone, so the Sum view's
    // backfill must write no marker at all.
    tokio::time::sleep(Duration::from_secs_f64(
        kappa_operator::backfill::aggregate::BAND_MARGIN_SECONDS + 2.0,
    ))
    .await;
    for name in ["profiles", "points"] {
        let view = view_yaml(name).replace("backfill: {parallelism: 1}", "backfill: {parallelism: 2}");
        common::create_yaml(&client, &ns, &view).await.unwrap();
    }

    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), &ns);
    let profiles_job = kappa_operator::plan::job::job_name(&ns, "profiles", 1);
    let args = run_job(&jobs, &profiles_job, image).await;
    assert!(
        args.windows(2).any(|a| a == ["--pre-aggregation", "reduced"]),
        "{args:?}"
    );
    // The Sum view's Job starts once the live path has read past the export time plus the band margin.
    let points_job = kappa_operator::plan::job::job_name(&ns, "points", 1);
    let args = run_job(&jobs, &points_job, image).await;
    assert!(
        args.windows(2).any(|a| a == ["--pre-aggregation", "banded"]),
        "{args:?}"
    );

    let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
    for name in ["profiles", "points"] {
        let status = common::eventually(Duration::from_secs(90), &format!("{name} Live"), || async {
            let s = mvs.get(name).await.ok()?.status?;
            (s.phase == Some(ViewPhase::Live)).then_some(s)
        })
        .await;
        let b = status.backfill.unwrap();
        assert_eq!(b.files_done, b.files_total);
        assert_eq!(b.items_done, 1_000);
        let table = status.table_name.unwrap();
        let want = expected(&events);
        common::eventually(Duration::from_secs(60), &format!("{name} exact"), || async {
            let have = actual(&ddb, &table).await;
            match name {
                "profiles" => have.profiles == want.profiles,
                _ => have.points == want.points,
            }
            .then_some(())
        })
        .await;
        if name == "points" {
            // Folded per player: no idempotency marker per backfilled record.
            let markers = items_with(&ddb, &table, "~applied#points/").await;
            assert_eq!(
                markers, 0,
                "the Job's pods wrote partials, not a marker per record"
            );
        }
    }
    common::eventually(Duration::from_secs(30), "the finished Jobs deleted", || async {
        (jobs.get_opt(&profiles_job).await.ok()?.is_none() && jobs.get_opt(&points_job).await.ok()?.is_none())
            .then_some(())
    })
    .await;
    common::delete_namespace(&client, &ns).await;
}
