//! Isolation in a shared views table (issue #17 a): views `scores` (default prefix `scores#`), `sc`
//! (`keyPrefix: sc`, `deletionPolicy: Delete`) and `third` (`keyPrefix: "scores#"`) in one shared table.
//! The later views are refused (Stalled, naming both views and the fix) and never write; deleting `sc`
//! removes none of `scores`' items.

mod common;

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use common::Operator;
use common::scores::{Event, event, export_bucket, log_yaml, scores_table, write_events};
use kappa_operator::crd::{MaterializedView, ViewPhase};
use kube::Api;

fn view(name: &str, prefix: Option<&str>, policy: &str) -> String {
    let prefix = prefix
        .map(|p| format!(", keyPrefix: \"{p}\""))
        .unwrap_or_default();
    format!(
        r#"
apiVersion: kappa.dev/v1alpha1
kind: MaterializedView
metadata: {{name: {name}}}
spec:
  eventLogRef: {{name: scores}}
  recordTypes: [profile]
  projector: {{runtime: InCluster}}
  projection: {{mode: Latest, key: {{partitionKey: "PLAYER#{{playerId}}"}}}}
  store: {{table: Shared{prefix}}}
  deletionPolicy: {policy}
"#
    )
}

/// The items of `table` whose partition key starts with `prefix`.
async fn items_under(ddb: &aws_sdk_dynamodb::Client, table: &str, prefix: &str) -> usize {
    common::scan_all(ddb, table)
        .await
        .iter()
        .filter(|i| matches!(i.get("pk"), Some(AttributeValue::S(pk)) if pk.starts_with(prefix) && !pk.contains("~applied#")))
        .count()
}

#[tokio::test]
async fn overlapping_key_prefixes_are_refused_and_deleting_one_view_keeps_the_others_items() {
    let (client, ns) = common::setup("shared-prefixes").await;
    let aws = common::aws_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let (_, bucket) = export_bucket(&aws, &ns).await;
    let op = Operator::start(&ns, "solo", 5);
    common::create_yaml(&client, &ns, &log_yaml(&bucket))
        .await
        .unwrap();
    let log_table = scores_table(&client, &ns).await;
    let events: Vec<Event> = (0..400).map(event).collect();
    let profiled: std::collections::BTreeSet<String> = events
        .iter()
        .filter(|e| e.kind == "profile")
        .map(|e| e.player.clone())
        .collect();
    write_events(&ddb, &log_table, events).await;
    let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
    common::create_yaml(&client, &ns, &view("scores", None, "Retain"))
        .await
        .unwrap();
    let status = common::eventually(Duration::from_secs(180), "scores Live", || async {
        let s = mvs.get("scores").await.ok()?.status?;
        (s.phase == Some(ViewPhase::Live)).then_some(s)
    })
    .await;
    let table = status.table_name.unwrap();
    let players = items_under(&ddb, &table, "scores#").await;
    assert_eq!(
        players,
        profiled.len(),
        "one profile item per player with a profile"
    );

    common::create_yaml(&client, &ns, &view("sc", Some("sc"), "Delete"))
        .await
        .unwrap();
    common::create_yaml(&client, &ns, &view("third", Some("scores#"), "Delete"))
        .await
        .unwrap();
    for (name, prefix) in [("sc", "\"sc\""), ("third", "\"scores#\"")] {
        let message = common::eventually(Duration::from_secs(60), &format!("{name} refused"), || async {
            let s = mvs.get(name).await.ok()?.status?;
            let stalled = s
                .conditions
                .iter()
                .find(|c| c.type_ == "Stalled" && c.is_true())?;
            stalled
                .message
                .contains("overlaps")
                .then(|| stalled.message.clone())
        })
        .await;
        assert!(
            message.contains(prefix) && message.contains("\"scores#\"") && message.contains("\"scores\""),
            "{name}: {message}"
        );
    }
    // Refused views write nothing; deleting `sc` (deletionPolicy Delete) removes none of `scores`' items.
    mvs.delete("sc", &Default::default()).await.unwrap();
    mvs.delete("third", &Default::default()).await.unwrap();
    common::eventually(Duration::from_secs(60), "sc and third deleted", || async {
        (mvs.get_opt("sc").await.ok()?.is_none() && mvs.get_opt("third").await.ok()?.is_none()).then_some(())
    })
    .await;
    assert_eq!(
        items_under(&ddb, &table, "scores#").await,
        players,
        "scores keeps every item"
    );
    let s = mvs.get("scores").await.unwrap().status.unwrap();
    assert_eq!(s.phase, Some(ViewPhase::Live));
    drop(op);
    common::delete_namespace(&client, &ns).await;
}
