//! A view deleted with `deletionPolicy: Retain` and created again under the same name (issue #17 b):
//! names and key prefixes derive from (cluster, namespace, name), so the new object finds the items its
//! predecessor projected. It must never serve them: it is Stalled `StorageRetained` (naming the earlier
//! view's uid and the fixes) and writes nothing, until `spec.store.adopt: true` deletes those items and
//! rebuilds the view there from the log. Shared key prefix (Count, a filter narrowing 20 players to 2) and
//! dedicated table (Latest, narrowed to 1).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use common::Operator;
use common::scores::{Event, event, export_bucket, log_yaml, scores_table, write_events};
use kappa_operator::crd::{MaterializedView, ViewPhase};
use kube::Api;
use kube::api::{Patch, PatchParams};

fn view(name: &str, mode: &str, store: &str, filter: Option<&str>) -> String {
    let filter = filter
        .map(|f| format!(", filter: [{{attribute: playerId, operator: In, values: [{f}]}}]"))
        .unwrap_or_default();
    format!(
        r#"
apiVersion: kappa.dev/v1alpha1
kind: MaterializedView
metadata: {{name: {name}}}
spec:
  eventLogRef: {{name: scores}}
  recordTypes: [score]
  projector: {{runtime: InCluster}}
  projection: {{mode: {mode}, key: {{partitionKey: "T#{{playerId}}"}}{filter}}}
  store: {store}
  deletionPolicy: Retain
"#
    )
}

/// The view items (markers and owner items left out) of `table` under `prefix`: pk → count attribute (or
/// the record's seq for Latest).
async fn items_under(ddb: &aws_sdk_dynamodb::Client, table: &str, prefix: &str) -> BTreeMap<String, String> {
    common::scan_all(ddb, table)
        .await
        .into_iter()
        .filter_map(|i| {
            let Some(AttributeValue::S(pk)) = i.get("pk") else {
                return None;
            };
            if !pk.starts_with(prefix) || pk.contains("~applied#") {
                return None;
            }
            let value = ["count", "seq"]
                .iter()
                .find_map(|a| i.get(*a).and_then(|v| v.as_n().ok()).cloned())
                .unwrap_or_default();
            Some((pk.clone(), value))
        })
        .collect()
}

async fn wait_phase(mvs: &Api<MaterializedView>, name: &str, phase: ViewPhase) {
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    loop {
        let status = mvs.get(name).await.ok().and_then(|v| v.status);
        if status.as_ref().is_some_and(|s| s.phase == Some(phase)) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {name} {phase:?}: {status:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The Stalled condition's message once its reason is `StorageRetained`.
async fn retained_message(mvs: &Api<MaterializedView>, name: &str) -> String {
    common::eventually(
        Duration::from_secs(90),
        &format!("{name} StorageRetained"),
        || async {
            let s = mvs.get(name).await.ok()?.status?;
            let c = s
                .conditions
                .iter()
                .find(|c| c.type_ == "Stalled" && c.is_true())?;
            (c.reason == "StorageRetained").then(|| c.message.clone())
        },
    )
    .await
}

async fn delete_and_wait(mvs: &Api<MaterializedView>, name: &str) -> String {
    let uid = mvs.get(name).await.unwrap().metadata.uid.unwrap();
    mvs.delete(name, &Default::default()).await.unwrap();
    common::eventually(Duration::from_secs(60), &format!("{name} deleted"), || async {
        mvs.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await;
    uid
}

async fn adopt(mvs: &Api<MaterializedView>, name: &str) {
    let patch = serde_json::json!({"spec": {"store": {"adopt": true}}});
    mvs.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// Expected counts per player for score events of `players` (all when empty).
fn counts(events: &[Event], players: &[&str]) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for e in events.iter().filter(|e| e.kind == "score") {
        if players.is_empty() || players.contains(&e.player.as_str()) {
            *out.entry(e.player.clone()).or_default() += 1;
        }
    }
    out.into_iter().map(|(p, n)| (p, n.to_string())).collect()
}

#[tokio::test]
async fn a_recreated_view_in_a_shared_table_never_counts_its_predecessors_records() {
    let (client, ns) = common::setup("recreated-shared").await;
    let aws = common::aws_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let (_, bucket) = export_bucket(&aws, &ns).await;
    let op = Operator::start(&ns, "solo", 5);
    common::create_yaml(&client, &ns, &log_yaml(&bucket))
        .await
        .unwrap();
    let log_table = scores_table(&client, &ns).await;
    let events: Vec<Event> = (0..400).map(event).collect();
    write_events(&ddb, &log_table, events.clone()).await;
    let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
    let shared = "{table: Shared}";

    common::create_yaml(&client, &ns, &view("tally", "Count", shared, None))
        .await
        .unwrap();
    wait_phase(&mvs, "tally", ViewPhase::Live).await;
    let table = mvs
        .get("tally")
        .await
        .unwrap()
        .status
        .unwrap()
        .table_name
        .unwrap();
    let all = counts(&events, &[]);
    let key = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        m.iter()
            .map(|(p, n)| (format!("tally#T#{p}"), n.clone()))
            .collect()
    };
    assert_eq!(items_under(&ddb, &table, "tally#").await, key(&all));

    let earlier = delete_and_wait(&mvs, "tally").await;
    assert_eq!(
        items_under(&ddb, &table, "tally#").await,
        key(&all),
        "Retain keeps the items"
    );

    // Created again, narrowed to two players: refused, naming the earlier view and the fixes.
    common::create_yaml(&client, &ns, &view("tally", "Count", shared, Some("p01, p02")))
        .await
        .unwrap();
    let message = retained_message(&mvs, "tally").await;
    for part in [
        earlier.as_str(),
        "spec.store.adopt: true",
        "spec.store.keyPrefix",
        "\"tally#\"",
    ] {
        assert!(message.contains(part), "{part:?} in {message}");
    }
    let s = mvs.get("tally").await.unwrap().status.unwrap();
    assert_eq!(s.phase, Some(ViewPhase::Pending), "{s:?}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        items_under(&ddb, &table, "tally#").await,
        key(&all),
        "nothing written while refused"
    );

    // Adopted: the earlier items go, the view is rebuilt from the log: exactly the two players.
    adopt(&mvs, "tally").await;
    wait_phase(&mvs, "tally", ViewPhase::Live).await;
    let two = counts(&events, &["p01", "p02"]);
    assert_eq!(two.len(), 2);
    assert_eq!(items_under(&ddb, &table, "tally#").await, key(&two));
    // Adoption is reported, and a later reconcile changes nothing.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(items_under(&ddb, &table, "tally#").await, key(&two));
    drop(op);
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn a_recreated_view_with_a_dedicated_table_never_serves_its_predecessors_items() {
    let (client, ns) = common::setup("recreated-dedicated").await;
    let aws = common::aws_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let (_, bucket) = export_bucket(&aws, &ns).await;
    let op = Operator::start(&ns, "solo", 5);
    common::create_yaml(&client, &ns, &log_yaml(&bucket))
        .await
        .unwrap();
    let log_table = scores_table(&client, &ns).await;
    let events: Vec<Event> = (0..200).map(event).collect();
    write_events(&ddb, &log_table, events.clone()).await;
    let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
    let dedicated = "{table: Dedicated}";

    common::create_yaml(&client, &ns, &view("latest", "Latest", dedicated, None))
        .await
        .unwrap();
    wait_phase(&mvs, "latest", ViewPhase::Live).await;
    let table = mvs
        .get("latest")
        .await
        .unwrap()
        .status
        .unwrap()
        .table_name
        .unwrap();
    let scoring = counts(&events, &[]).len();
    assert_eq!(items_under(&ddb, &table, "T#").await.len(), scoring);

    let earlier = delete_and_wait(&mvs, "latest").await;
    common::create_yaml(&client, &ns, &view("latest", "Latest", dedicated, Some("p03")))
        .await
        .unwrap();
    let message = retained_message(&mvs, "latest").await;
    for part in [earlier.as_str(), "spec.store.adopt: true", &table] {
        assert!(message.contains(part), "{part:?} in {message}");
    }
    assert_eq!(
        items_under(&ddb, &table, "T#").await.len(),
        scoring,
        "nothing written or deleted while refused"
    );

    adopt(&mvs, "latest").await;
    wait_phase(&mvs, "latest", ViewPhase::Live).await;
    let newest = events
        .iter()
        .filter(|e| e.kind == "score" && e.player == "p03")
        .map(|e| e.i)
        .max()
        .unwrap();
    assert_eq!(
        items_under(&ddb, &table, "T#").await,
        BTreeMap::from([("T#p03".to_string(), newest.to_string())])
    );
    drop(op);
    common::delete_namespace(&client, &ns).await;
}
