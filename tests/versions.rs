//! View versions end to end on the local stack (in-cluster runtime): a view whose projection changes while
//! events keep arriving is rebuilt beside the active version and promoted once caught up; the pointer
//! ConfigMap follows; the previous version stays current while retained, comes back without a backfill on a
//! rollback, and is removed after `retainPrevious`. A rebuild that cannot project some records fails
//! without disturbing the active version, and a fixed spec recovers.

mod common;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use bigdecimal::BigDecimal;
use common::Operator;
use common::scores::{Event, event, export_bucket, log_yaml, scores_table, write_events};
use k8s_openapi::api::core::v1::ConfigMap;
use kappa_operator::crd::{MaterializedView, MaterializedViewStatus, VersionState, ViewPhase};
use kube::Api;
use kube::api::{Patch, PatchParams};

const VIEW: &str = r#"
apiVersion: kappa.dev/v1alpha1
kind: MaterializedView
metadata: {name: points}
spec:
  eventLogRef: {name: scores}
  recordTypes: [score]
  projector: {runtime: InCluster}
  projection: {mode: Sum, sumOf: points, key: {partitionKey: "PLAYER#{playerId}"}}
  backfill: {parallelism: 2}
  promotion: {maxLag: 30s, retainPrevious: 60s}
  deletionPolicy: Delete
"#;

/// Per player: the exact sum of points of the score events.
fn sums(events: &[Event]) -> BTreeMap<String, BigDecimal> {
    let mut out: BTreeMap<String, BigDecimal> = BTreeMap::new();
    for e in events.iter().filter(|e| e.kind == "score") {
        *out.entry(e.player.clone()).or_default() += BigDecimal::from_str(&e.points).unwrap();
    }
    out
}

/// Per player: the number of score events.
fn counts(events: &[Event]) -> BTreeMap<String, BigDecimal> {
    let mut out: BTreeMap<String, BigDecimal> = BTreeMap::new();
    for e in events.iter().filter(|e| e.kind == "score") {
        *out.entry(e.player.clone()).or_default() += BigDecimal::from(1);
    }
    out
}

/// The aggregates (`attribute`: `sum` or `count`) of the items under `prefix`, by player.
async fn aggregates(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    prefix: &str,
    attribute: &str,
) -> BTreeMap<String, BigDecimal> {
    let mut out = BTreeMap::new();
    for item in common::scan_all(ddb, table).await {
        let Some(AttributeValue::S(pk)) = item.get("pk") else {
            continue;
        };
        let Some(player) = pk.strip_prefix(prefix).and_then(|k| k.strip_prefix("PLAYER#")) else {
            continue;
        };
        if pk.contains("~applied#") {
            continue;
        }
        if let Some(AttributeValue::N(n)) = item.get(attribute) {
            out.insert(player.to_string(), BigDecimal::from_str(n).unwrap());
        }
    }
    out
}

/// Items of the table whose partition key starts with `prefix` (markers included).
async fn items_under(ddb: &aws_sdk_dynamodb::Client, table: &str, prefix: &str) -> usize {
    let page = ddb
        .scan()
        .table_name(table)
        .filter_expression("begins_with(pk, :p)")
        .expression_attribute_values(":p", AttributeValue::S(prefix.into()))
        .send()
        .await
        .expect("Scan");
    page.count() as usize
}

async fn status(api: &Api<MaterializedView>) -> Option<MaterializedViewStatus> {
    api.get("points").await.ok()?.status
}

fn version(s: &MaterializedViewStatus, n: i64) -> Option<&kappa_operator::crd::ViewVersion> {
    s.versions.iter().find(|v| v.version == n)
}

fn condition<'a>(s: &'a MaterializedViewStatus, type_: &str) -> Option<&'a kappa_operator::crd::Condition> {
    s.conditions.iter().find(|c| c.type_ == type_)
}

/// The pointer ConfigMap's `version`, `tableName` and `keyPrefix`.
async fn pointer(cms: &Api<ConfigMap>) -> Option<(String, String, String)> {
    let data = cms.get("points").await.ok()?.data?;
    Some((
        data.get("version")?.clone(),
        data.get("tableName")?.clone(),
        data.get("keyPrefix")?.clone(),
    ))
}

async fn patch_spec(api: &Api<MaterializedView>, spec: serde_json::Value) {
    api.patch(
        "points",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "spec": spec })),
    )
    .await
    .expect("patching the view's spec");
}

/// Writes events `from..` in small batches until stopped; `written` is how many exist.
fn keep_writing(
    ddb: aws_sdk_dynamodb::Client,
    table: String,
    from: usize,
    written: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut next = from;
        while !stop.load(Ordering::SeqCst) {
            write_events(&ddb, &table, (next..next + 20).map(event).collect()).await;
            next += 20;
            written.store(next, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    })
}

#[tokio::test]
async fn a_changed_projection_is_rebuilt_beside_the_active_version_and_promoted_when_caught_up() {
    let (client, ns) = common::setup("versions").await;
    let aws = common::aws_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let (_s3, bucket) = export_bucket(&aws, &ns).await;
    let _op = Operator::start(&ns, "solo", 5);
    common::create_yaml(&client, &ns, &log_yaml(&bucket))
        .await
        .unwrap();
    let log_table = scores_table(&client, &ns).await;
    write_events(&ddb, &log_table, (0..3_000).map(event).collect()).await;
    common::create_yaml(&client, &ns, VIEW).await.unwrap();
    let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);

    // Version 1 is live and readers are pointed at it.
    let first = common::eventually(Duration::from_secs(120), "points Live on version 1", || async {
        let s = status(&mvs).await?;
        (s.phase == Some(ViewPhase::Live) && s.active_version == Some(1)).then_some(s)
    })
    .await;
    let table = first.table_name.clone().unwrap();
    assert_eq!(
        pointer(&cms).await,
        Some(("1".into(), table.clone(), "points#".into()))
    );
    let v1_export = first.backfill.clone().unwrap().export_arn;
    assert!(v1_export.is_some());

    // Events keep arriving; the projection changes from Sum to Count.
    let written = Arc::new(AtomicUsize::new(3_000));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = keep_writing(
        ddb.clone(),
        log_table.clone(),
        3_000,
        written.clone(),
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let changed_at = k8s_openapi::jiff::Timestamp::now();
    patch_spec(
        &mvs,
        serde_json::json!({"projection": {"mode": "Count", "sumOf": null, "key": {"partitionKey": "PLAYER#{playerId}"}}}),
    )
    .await;

    // While version 2 builds, version 1 stays active, Ready and fed by the live path; the pointer holds.
    let saw_building = std::cell::Cell::new(false);
    let v1_fed_during_rebuild = std::cell::Cell::new(false);
    let promoted = common::eventually(Duration::from_secs(240), "version 2 promoted", || {
        let (mvs, cms, table) = (&mvs, &cms, &table);
        let (saw_building, fed) = (&saw_building, &v1_fed_during_rebuild);
        async move {
            // The pointer is written before the status that records the promotion, so read it first: a
            // status read after it is at least as new, and a pointer at version 2 is checked against it.
            let p = pointer(cms).await?;
            let s = status(mvs).await?;
            if p.0 == "2" && s.active_version != Some(2) {
                return None; // the status recording the promotion is on its way
            }
            if s.active_version == Some(1) {
                assert_eq!(p, ("1".into(), table.clone(), "points#".into()), "{s:?}");
                if version(&s, 2).is_some_and(|v| v.state == VersionState::Building) {
                    saw_building.set(true);
                    assert_eq!(s.phase, Some(ViewPhase::Rebuilding), "{s:?}");
                    assert!(condition(&s, "Ready").is_some_and(|c| c.is_true()), "{s:?}");
                    assert!(
                        s.rebuild.as_deref().is_some_and(|r| r.starts_with("v2 ")),
                        "{:?}",
                        s.rebuild
                    );
                    let watermark = version(&s, 1)?.live.as_ref()?.watermark.clone()?;
                    if watermark.0 > changed_at {
                        fed.set(true);
                    }
                }
                return None;
            }
            // The pointer flips only once version 2 is backfilled and caught up.
            (s.active_version == Some(2)).then_some(())?;
            let v2 = version(&s, 2)?;
            assert!(
                v2.backfill.as_ref()?.finished_at.is_some(),
                "promoted before backfilled: {v2:?}"
            );
            Some(s)
        }
    })
    .await;
    assert!(saw_building.get(), "version 2 was never seen building");
    assert!(
        v1_fed_during_rebuild.get(),
        "version 1's live path applied no record written after the change while version 2 was building"
    );
    let v2_prefix = "~v2~points#";
    common::eventually(Duration::from_secs(30), "the pointer at version 2", || async {
        (pointer(&cms).await? == ("2".into(), table.clone(), v2_prefix.into())).then_some(())
    })
    .await;
    assert_eq!(version(&promoted, 1).unwrap().state, VersionState::Retained);

    // Both versions are exact over every event: version 2 counts, version 1 (retained, kept current) sums.
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    let all: Vec<Event> = (0..written.load(Ordering::SeqCst)).map(event).collect();
    let (want_counts, want_sums) = (counts(&all), sums(&all));
    common::eventually(Duration::from_secs(60), "version 2 exact", || async {
        (aggregates(&ddb, &table, v2_prefix, "count").await == want_counts).then_some(())
    })
    .await;
    common::eventually(Duration::from_secs(60), "version 1 exact and current", || async {
        (aggregates(&ddb, &table, "points#", "sum").await == want_sums).then_some(())
    })
    .await;

    // A rollback within the retention promotes version 1 again, without a backfill.
    patch_spec(
        &mvs,
        serde_json::json!({"projection": {"mode": "Sum", "sumOf": "points", "key": {"partitionKey": "PLAYER#{playerId}"}}}),
    )
    .await;
    let back = common::eventually(Duration::from_secs(60), "version 1 active again", || async {
        let s = status(&mvs).await?;
        (s.active_version == Some(1) && s.phase == Some(ViewPhase::Live)).then_some(s)
    })
    .await;
    assert_eq!(
        back.latest_version,
        Some(2),
        "no new version for a rollback: {back:?}"
    );
    let b = back.backfill.clone().unwrap();
    assert_eq!(
        (b.attempt, b.export_arn.clone()),
        (1, v1_export),
        "no new backfill: {b:?}"
    );
    assert_eq!(version(&back, 2).unwrap().state, VersionState::Retained);
    common::eventually(
        Duration::from_secs(30),
        "the pointer back at version 1",
        || async { (pointer(&cms).await? == ("1".into(), table.clone(), "points#".into())).then_some(()) },
    )
    .await;

    // After retainPrevious, version 2 goes: its live path, its checkpoint and its items.
    common::eventually(Duration::from_secs(120), "version 2 removed", || async {
        let s = status(&mvs).await?;
        (s.versions.len() == 1 && version(&s, 1)?.state == VersionState::Active).then_some(())
    })
    .await;
    assert_eq!(
        items_under(&ddb, &table, v2_prefix).await,
        0,
        "version 2's items remain"
    );
    assert!(cms.get_opt("points.v2-stream").await.unwrap().is_none());
    assert_eq!(aggregates(&ddb, &table, "points#", "sum").await, want_sums);
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn a_rebuild_that_cannot_project_some_records_fails_beside_the_active_version_and_a_fix_recovers() {
    let (client, ns) = common::setup("versions-fail").await;
    let aws = common::aws_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let (_s3, bucket) = export_bucket(&aws, &ns).await;
    let _op = Operator::start(&ns, "solo", 5);
    common::create_yaml(&client, &ns, &log_yaml(&bucket))
        .await
        .unwrap();
    let log_table = scores_table(&client, &ns).await;
    let events: Vec<Event> = (0..1_000).map(event).collect();
    write_events(&ddb, &log_table, events.clone()).await;
    common::create_yaml(&client, &ns, VIEW).await.unwrap();
    let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let first = common::eventually(Duration::from_secs(120), "points Live", || async {
        let s = status(&mvs).await?;
        (s.phase == Some(ViewPhase::Live)).then_some(s)
    })
    .await;
    let table = first.table_name.clone().unwrap();

    // Profile records have no `points`: summing them cannot work, and this view stops at such a record.
    patch_spec(
        &mvs,
        serde_json::json!({"recordTypes": ["score", "profile"], "projection": {"onRecordError": "Fail"}}),
    )
    .await;
    let failed = common::eventually(Duration::from_secs(120), "the rebuild failed", || async {
        let s = status(&mvs).await?;
        (version(&s, 2)?.state == VersionState::Failed).then_some(s)
    })
    .await;
    let rebuilding = condition(&failed, "Rebuilding").unwrap();
    assert_eq!(rebuilding.reason, "RebuildFailed");
    assert!(rebuilding.message.contains("points"), "{}", rebuilding.message);
    assert_eq!(failed.active_version, Some(1));
    assert_eq!(failed.phase, Some(ViewPhase::Live));
    assert!(condition(&failed, "Ready").unwrap().is_true());
    assert_eq!(condition(&failed, "Stalled").unwrap().reason, "RebuildFailed");
    assert_eq!(failed.rebuild.as_deref(), Some("v2 Failed"));
    assert_eq!(
        pointer(&cms).await,
        Some(("1".into(), table.clone(), "points#".into()))
    );
    // The active version still takes new events.
    let more: Vec<Event> = (1_000..1_200).map(event).collect();
    write_events(&ddb, &log_table, more.clone()).await;
    let all: Vec<Event> = events.iter().chain(more.iter()).cloned().collect();
    let want = sums(&all);
    common::eventually(Duration::from_secs(60), "version 1 current", || async {
        (aggregates(&ddb, &table, "points#", "sum").await == want).then_some(())
    })
    .await;

    // The fix: only records that have points. A new version builds and is promoted; the failed one goes.
    patch_spec(
        &mvs,
        serde_json::json!({"projection": {"filter": [{"attribute": "points", "operator": "Exists"}]}}),
    )
    .await;
    let fixed = common::eventually(Duration::from_secs(180), "version 3 promoted", || async {
        let s = status(&mvs).await?;
        (s.active_version == Some(3) && s.phase == Some(ViewPhase::Live)).then_some(s)
    })
    .await;
    assert!(
        version(&fixed, 2).is_none(),
        "the failed version is removed: {fixed:?}"
    );
    assert!(!condition(&fixed, "Stalled").unwrap().is_true());
    assert_eq!(condition(&fixed, "Rebuilding").unwrap().reason, "Promoted");
    assert_eq!(items_under(&ddb, &table, "~v2~points#").await, 0);
    common::eventually(Duration::from_secs(60), "version 3 exact", || async {
        (aggregates(&ddb, &table, "~v3~points#", "sum").await == want).then_some(())
    })
    .await;
    common::delete_namespace(&client, &ns).await;
}

const LAMBDA_VIEW: &str = r#"
apiVersion: kappa.dev/v1alpha1
kind: MaterializedView
metadata: {name: players}
spec:
  eventLogRef: {name: game-events}
  recordTypes: [player]
  projection: {mode: Append, key: {partitionKey: "P#{playerId}"}}
  backfill: {source: None}
  promotion: {retainPrevious: 10s}
  deletionPolicy: Delete
"#;

/// The function's `PROJECTION` environment variable, or `None` when the function does not exist.
async fn projection_env(lambda: &aws_sdk_lambda::Client, arn: &str) -> Option<String> {
    let f = lambda
        .get_function_configuration()
        .function_name(arn)
        .send()
        .await
        .ok()?;
    f.environment()?.variables()?.get("PROJECTION").cloned()
}

/// SNS subscription endpoints of every topic.
async fn subscription_endpoints(sns: &aws_sdk_sns::Client) -> Vec<String> {
    let out = sns.list_subscriptions().send().await.expect("ListSubscriptions");
    out.subscriptions()
        .iter()
        .filter_map(|s| s.endpoint().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn a_lambda_view_gets_a_projector_per_version_and_the_previous_one_goes_after_retention() {
    let (client, ns) = common::setup("versions-lambda").await;
    let aws = common::aws_config().await;
    let lambda = aws_sdk_lambda::Client::new(&aws);
    let sns = aws_sdk_sns::Client::new(&aws);
    let iam = aws_sdk_iam::Client::new(&aws);
    let _op = Operator::start(&ns, "solo", 5);
    common::create_yaml(&client, &ns, common::GAME_EVENTS_SNS_LOG)
        .await
        .unwrap();
    common::create_yaml(&client, &ns, LAMBDA_VIEW).await.unwrap();
    let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
    let first = common::eventually(Duration::from_secs(90), "players Live on version 1", || async {
        let s = mvs.get("players").await.ok()?.status?;
        (s.phase == Some(ViewPhase::Live) && s.resources.contains_key("function/projector")).then_some(s)
    })
    .await;
    let f1 = first.resources["function/projector"].clone();
    let role1 = first.resources["role/projector"].clone();
    assert!(projection_env(&lambda, &f1).await.unwrap().contains("P#"));

    // With Manual promotion, version 2 waits for its approval once caught up.
    mvs.patch(
        "players",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {
            "projection": {"key": {"partitionKey": "Q#{playerId}"}},
            "promotion": {"mode": "Manual"},
        }})),
    )
    .await
    .unwrap();
    let waiting = common::eventually(
        Duration::from_secs(90),
        "version 2 waiting for approval",
        || async {
            let s = mvs.get("players").await.ok()?.status?;
            let c = condition(&s, "Rebuilding")?;
            (c.reason == "WaitingForApproval").then_some(s)
        },
    )
    .await;
    assert_eq!(waiting.active_version, Some(1));
    assert_eq!(waiting.phase, Some(ViewPhase::Rebuilding));
    let message = &condition(&waiting, "Rebuilding").unwrap().message;
    assert!(message.contains("kappa.dev/approve-promotion=2"), "{message}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        mvs.get("players").await.unwrap().status.unwrap().active_version,
        Some(1),
        "promoted without approval"
    );
    common::kubectl(&[
        "-n",
        &ns,
        "annotate",
        "mv",
        "players",
        "kappa.dev/approve-promotion=2",
    ]);
    let second = common::eventually(Duration::from_secs(90), "version 2 promoted", || async {
        let s = mvs.get("players").await.ok()?.status?;
        (s.active_version == Some(2) && s.phase == Some(ViewPhase::Live)).then_some(s)
    })
    .await;
    let f2 = second.resources["function/projector"].clone();
    assert_ne!(f1, f2);
    assert!(f2.contains("-projector-v2-"), "{f2}");
    assert!(projection_env(&lambda, &f2).await.unwrap().contains("Q#"));
    assert_eq!(second.key_prefix.as_deref(), Some("~v2~players#"));
    // Retained: the first projector still runs, beside the second.
    assert!(
        projection_env(&lambda, &f1).await.is_some(),
        "version 1's projector is retained"
    );
    let endpoints = subscription_endpoints(&sns).await;
    assert!(
        endpoints.contains(&f1) && endpoints.contains(&f2),
        "{endpoints:?}"
    );

    // After retainPrevious: version 1's subscriptions, function and role go; version 2's stay.
    common::eventually(Duration::from_secs(60), "version 1 removed", || async {
        let s = mvs.get("players").await.ok()?.status?;
        (s.versions.len() == 1).then_some(())
    })
    .await;
    assert!(
        projection_env(&lambda, &f1).await.is_none(),
        "version 1's function remains"
    );
    let role1_name = role1.rsplit('/').next().unwrap();
    assert!(
        iam.get_role().role_name(role1_name).send().await.is_err(),
        "version 1's role remains"
    );
    let endpoints = subscription_endpoints(&sns).await;
    assert!(
        !endpoints.contains(&f1) && endpoints.contains(&f2),
        "{endpoints:?}"
    );
    assert!(projection_env(&lambda, &f2).await.is_some());
    common::delete_namespace(&client, &ns).await;
}
