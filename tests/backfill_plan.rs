//! A view with `spec.backfill.approval: Manual` waits, showing what its backfill will read, write, cost
//! and take (issue #17, item 5): the log's items and size, the export's price, the view writes and write
//! units at most, and the time at the configured write rate; approved, it backfills and goes Live.

mod common;

use std::time::Duration;

use common::Operator;
use common::scores::{Event, event, export_bucket, log_yaml, scores_table, write_events};
use kappa_operator::crd::{APPROVE_BACKFILL_ANNOTATION, MaterializedView, ViewPhase};
use kube::Api;
use kube::api::{Patch, PatchParams};

const VIEW: &str = r#"
apiVersion: kappa.dev/v1alpha1
kind: MaterializedView
metadata: {name: gated}
spec:
  eventLogRef: {name: scores}
  recordTypes: [score]
  projector: {runtime: InCluster}
  projection: {mode: Latest, key: {partitionKey: "T#{playerId}"}}
  backfill: {approval: Manual, writeCapacityPercent: 25}
"#;

#[tokio::test]
async fn a_view_waiting_for_approval_shows_its_backfill_plan() {
    let (client, ns) = common::setup("backfill-plan").await;
    let aws = common::aws_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let (_, bucket) = export_bucket(&aws, &ns).await;
    let op = Operator::start(&ns, "solo", 5);
    common::create_yaml(&client, &ns, &log_yaml(&bucket))
        .await
        .unwrap();
    let log_table = scores_table(&client, &ns).await;
    let events: Vec<Event> = (0..300).map(event).collect();
    write_events(&ddb, &log_table, events).await;
    common::create_yaml(&client, &ns, VIEW).await.unwrap();
    let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
    let message = common::eventually(
        Duration::from_secs(90),
        "the plan in the waiting view",
        || async {
            let s = mvs.get("gated").await.ok()?.status?;
            let c = s
                .conditions
                .iter()
                .find(|c| c.type_ == "Reconciling" && c.is_true())?;
            c.message
                .contains("approval is Manual")
                .then(|| c.message.clone())
        },
    )
    .await;
    // 300 log items (the local AWS API counts at once; AWS every ~6 hours), 25 % of on-demand's 4,000/s.
    for part in [
        "exports 300 items",
        "of the log to S3 ($",
        "writes at most 300 view items",
        "at 1000 write units/s",
        "an upper bound",
        &format!("kubectl annotate mv gated {APPROVE_BACKFILL_ANNOTATION}=1"),
    ] {
        assert!(message.contains(part), "{part:?} in {message}");
    }
    let s = mvs.get("gated").await.unwrap().status.unwrap();
    assert_eq!(s.phase, Some(ViewPhase::Pending));
    assert!(
        s.backfill.is_none_or(|b| b.export_arn.is_none()),
        "nothing exported before approval"
    );

    let patch = serde_json::json!({"metadata": {"annotations": {APPROVE_BACKFILL_ANNOTATION: "1"}}});
    mvs.patch("gated", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    common::eventually(Duration::from_secs(180), "gated Live", || async {
        let s = mvs.get("gated").await.ok()?.status?;
        (s.phase == Some(ViewPhase::Live)).then_some(())
    })
    .await;
    drop(op);
    common::delete_namespace(&client, &ns).await;
}
