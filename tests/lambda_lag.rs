//! A Lambda view's live lag on the local stack (#16 item 3): the view's projector function, run by the
//! stack's Lambda harness from the log's stream (`Direct`) or its topics (`Sns`), reports how far behind
//! the log it is; `status.live` shows it (records, lag, last report) and promotion of a rebuilt version
//! waits until that lag is within `spec.promotion.maxLag`.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use common::Operator;
use kappa_operator::crd::{LiveStatus, MaterializedView, MaterializedViewStatus, VersionState, ViewPhase};
use kappa_operator::projection::{dynamo, item_to_dynamodb};
use kube::Api;
use kube::api::{Patch, PatchParams};

fn log(fan_out: &str) -> String {
    format!(
        r#"
apiVersion: kappa.dev/v1alpha1
kind: EventLog
metadata: {{name: game-events}}
spec:
  recordTypes: [player]
  table: {{sortKey: sk, orderingAttribute: seq}}
  fanOut: {{mode: {fan_out}}}
  deletionPolicy: Delete
"#
    )
}

const VIEW: &str = r#"
apiVersion: kappa.dev/v1alpha1
kind: MaterializedView
metadata: {name: players}
spec:
  eventLogRef: {name: game-events}
  recordTypes: [player]
  projection: {mode: Latest, key: {partitionKey: "P#{playerId}"}}
  backfill: {source: None}
  promotion: {mode: Manual, maxLag: 20s, retainPrevious: 5s}
  deletionPolicy: Delete
"#;

fn player(id: &str, seq: u32) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_string(), AttributeValue::S(format!("PLAYER#{id}"))),
        ("sk".to_string(), AttributeValue::S(format!("LOG#{seq}"))),
        ("type".to_string(), AttributeValue::S("player".into())),
        ("playerId".to_string(), AttributeValue::S(id.into())),
        ("seq".to_string(), AttributeValue::N(seq.to_string())),
    ])
}

fn version(s: &MaterializedViewStatus, n: i64) -> Option<&kappa_operator::crd::ViewVersion> {
    s.versions.iter().find(|v| v.version == n)
}

/// The view Live on the Lambda runtime, then five records through the projector function: its report
/// shows in `status.live`. Returns the clients, the view API and the log table.
async fn live_view_reports_its_lag(
    test: &str,
    fan_out: &str,
) -> (kube::Client, String, Operator, Api<MaterializedView>, String) {
    let (client, ns) = common::setup(test).await;
    let ddb = aws_sdk_dynamodb::Client::new(&common::aws_config().await);
    let op = Operator::start(&ns, "solo", 15);
    common::create_yaml(&client, &ns, &log(fan_out)).await.unwrap();
    common::create_yaml(&client, &ns, VIEW).await.unwrap();
    let views: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
    let status = common::eventually(Duration::from_secs(90), "players Live", || async {
        let s = views.get("players").await.ok()?.status?;
        (s.phase == Some(ViewPhase::Live)).then_some(s)
    })
    .await;
    let v1 = version(&status, 1).expect("version 1");
    assert_eq!(
        v1.live
            .as_ref()
            .map(|l| (l.caught_up, l.records_applied, l.lag_seconds)),
        Some((true, 0, None)),
        "no record reached the function yet: nothing to catch up ({:?})",
        v1.live
    );

    let log_table = common::log_table(&client, &ns, "game-events").await;
    let players: Vec<_> = (1..=5).map(|i| player(&format!("p{i}"), i)).collect();
    common::put_items(&ddb, &log_table, players).await;
    // The operator reads the function's report at least every 30 s.
    let live = common::eventually(
        Duration::from_secs(90),
        "the projector's report of 5 records in status.live",
        || async {
            let s = views.get("players").await.ok()?.status?;
            let live = version(&s, 1)?.live.clone()?;
            (live.records_applied >= 5 && live.last_reported.is_some()).then_some(live)
        },
    )
    .await;
    let LiveStatus { caught_up, lag_seconds, .. } = &live;
    assert!(*caught_up, "{live:?}");
    assert!(
        lag_seconds.is_some_and(|l| (0..=20).contains(&l)),
        "the batch's lag, a few seconds at most on the stack: {live:?}"
    );
    (client, ns, op, views, log_table)
}

/// `Direct` fan-out: the projector's own stream mapping delivers, the function reports.
#[tokio::test]
async fn a_direct_lambda_view_reports_its_live_lag() {
    let (client, ns, _op, _views, _log) = live_view_reports_its_lag("lag-direct", "Direct").await;
    common::delete_namespace(&client, &ns).await;
}

/// `Sns` fan-out, then a rebuild (`promotion.mode: Manual`): version 2 whose projector reports a lag of
/// 10 minutes (what a function far behind the log writes) shows `CatchingUp` and is not promoted, though
/// backfilled and approved; once its function applies a fresh record and reports a lag within `maxLag`,
/// it is promoted.
#[tokio::test]
async fn a_rebuilt_lambda_view_is_promoted_only_within_max_lag() {
    let (client, ns, _op, views, log_table) = live_view_reports_its_lag("lag-sns", "Sns").await;
    let ddb = aws_sdk_dynamodb::Client::new(&common::aws_config().await);

    views
        .patch(
            "players",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"projection": {"mode": "Append"}}})),
        )
        .await
        .unwrap();
    let (table, prefix) = common::eventually(
        Duration::from_secs(90),
        "version 2 with its projector function",
        || async {
            let s = views.get("players").await.ok()?.status?;
            let v2 = version(&s, 2)?;
            if !(v2.resources.contains_key("function/projector") && v2.live.is_some()) {
                return None;
            }
            Some((v2.table_name.clone()?, v2.key_prefix.clone().unwrap_or_default()))
        },
    )
    .await;
    let behind = || {
        let mut item = item_to_dynamodb(dynamo::live_progress_key(&prefix, "players"));
        let now = kappa_operator::functions::progress::now_ms();
        item.insert("appliedAt".into(), AttributeValue::N(now.to_string()));
        item.insert("lagMs".into(), AttributeValue::N("600000".into()));
        item.insert("records".into(), AttributeValue::N("1".into()));
        item
    };
    ddb.put_item()
        .table_name(&table)
        .set_item(Some(behind()))
        .send()
        .await
        .unwrap();
    let held = common::eventually(
        Duration::from_secs(30),
        "version 2 CatchingUp with a 600 s lag",
        || async {
            let s = views.get("players").await.ok()?.status?;
            let v2 = version(&s, 2)?.clone();
            (v2.live.as_ref()?.lag_seconds == Some(600)).then_some(v2)
        },
    )
    .await;
    assert_eq!(held.phase, Some(ViewPhase::CatchingUp), "{held:?}");
    assert!(
        held.message
            .as_deref()
            .is_some_and(|m| m.contains("lag of 600s") && m.contains("maxLag")),
        "{held:?}"
    );
    // Approved and backfilled, but behind: not promoted while the report stands.
    views
        .patch(
            "players",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "metadata": {"annotations": {"kappa.dev/approve-promotion": "2"}},
            })),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let s = views.get("players").await.unwrap().status.unwrap();
    assert_eq!(s.active_version, Some(1), "{:?}", s.versions);
    assert_ne!(version(&s, 2).unwrap().state, VersionState::Active);

    // A fresh record: version 2's function applies it and reports a lag within maxLag.
    common::put_items(&ddb, &log_table, vec![player("p9", 9)]).await;
    let promoted = common::eventually(Duration::from_secs(60), "version 2 promoted", || async {
        let s = views.get("players").await.ok()?.status?;
        (s.active_version == Some(2)).then_some(s)
    })
    .await;
    let v2 = version(&promoted, 2).unwrap();
    let live = v2.live.as_ref().unwrap();
    assert!(
        live.caught_up && live.lag_seconds.is_some_and(|l| l <= 20),
        "{v2:?}"
    );
    common::delete_namespace(&client, &ns).await;
}
