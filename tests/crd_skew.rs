//! CRD version skew on the real API server, through the real binary (issue #17 e): with an older
//! MaterializedView CRD installed (no `spec.promotion.mode`, no schema digest, as Helm leaves it after an
//! upgrade), the operator runs but reconciles nothing, `/readyz` fails naming the CRD and the fix, and each
//! object gets a Warning Event `CrdSkew` with the command; once the current CRDs are applied, the objects
//! are reconciled by the same process and `/readyz` succeeds: at once, also when the change is to the
//! annotations only (which, unlike a schema change, leaves the API server's watches of the objects open).
//!
//! This binary holds one test only: it replaces a cluster-scoped CRD, which any test beside it would see.
//! The current CRDs are applied again when the test ends, failed or not ([`RestoreCrds`]), since the other
//! test binaries of `make test` run on the same stack afterwards and install them with `common::install_crds`.

mod common;

use std::time::Duration;

use common::Operator;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kappa_operator::crd::{EventLog, MaterializedView, ViewPhase};
use kube::api::{ListParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, ResourceExt};

const VIEW_CRD: &str = "materializedviews.kappa.dev";

const LOG: &str = r#"
apiVersion: kappa.dev/v1alpha1
kind: EventLog
metadata: {name: game-events}
spec:
  recordTypes: [player, game]
  table: {orderingAttribute: seq}
  export: {bucket: kappa-exports}
"#;

const VIEW: &str = r#"
apiVersion: kappa.dev/v1alpha1
kind: MaterializedView
metadata: {name: players}
spec:
  eventLogRef: {name: game-events}
  recordTypes: [player]
  projection: {mode: Latest, key: {partitionKey: "PLAYER#{playerId}"}}
  backfill: {source: None}
  promotion: {mode: Manual}
"#;

/// Applies the current CRDs again when dropped, even when the test panicked.
struct RestoreCrds;

impl Drop for RestoreCrds {
    fn drop(&mut self) {
        // A runtime of its own: the test's may be gone (or be the one panicking).
        let restored = std::thread::spawn(|| {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                let client = common::kube_client().await;
                common::install_crds(&client).await;
            })
        })
        .join();
        if restored.is_err() {
            eprintln!(
                "could not apply the current CRDs again: run `cargo run -- crds | kubectl apply --server-side --force-conflicts -f -`"
            );
        }
    }
}

/// The MaterializedView CRD of an older release: the generated one without `spec.promotion.mode` (in
/// its schema and its default) and without the fingerprint annotations.
fn older_view_crd() -> CustomResourceDefinition {
    let current = kappa_operator::crd::all_crds()
        .into_iter()
        .find(|c| c.name_any() == VIEW_CRD)
        .unwrap();
    let mut crd = serde_json::to_value(&current).unwrap();
    crd["metadata"].as_object_mut().unwrap().remove("annotations");
    for version in crd["spec"]["versions"].as_array_mut().unwrap() {
        let promotion =
            &mut version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["promotion"];
        assert!(
            promotion["properties"]["mode"].is_object(),
            "the current CRD has promotion.mode"
        );
        promotion["properties"].as_object_mut().unwrap().remove("mode");
        if let Some(default) = promotion["default"].as_object_mut() {
            default.remove("mode");
        }
    }
    serde_json::from_value(crd).unwrap()
}

/// Replaces the installed CRD by `crd` exactly (annotations other managers set included) and waits until
/// it is established.
async fn replace_crd(client: &Client, mut crd: CustomResourceDefinition) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.name_any();
    let installed = api.get(&name).await.unwrap();
    crd.metadata.resource_version = installed.metadata.resource_version;
    api.replace(&name, &PostParams::default(), &crd)
        .await
        .unwrap_or_else(|e| panic!("replacing CRD {name}: {e}"));
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(api.clone(), &name, conditions::is_crd_established()),
    )
    .await
    .unwrap_or_else(|_| panic!("CRD {name} not established in 30s"))
    .unwrap();
}

/// GET on loopback: the status code and the body, or None while nothing answers.
async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

async fn events_for(client: &Client, ns: &str, name: &str, reason: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let list = api.list(&ListParams::default()).await.unwrap();
    list.items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

/// The DynamoDB tables whose name holds `ns` (every table of the namespace's objects does).
async fn tables_of(ns: &str) -> Vec<String> {
    let ddb = aws_sdk_dynamodb::Client::new(&common::aws_config().await);
    let mut names = Vec::new();
    let mut start: Option<String> = None;
    loop {
        let page = ddb
            .list_tables()
            .set_exclusive_start_table_name(start.take())
            .send()
            .await
            .unwrap();
        names.extend(page.table_names().iter().filter(|n| n.contains(ns)).cloned());
        match page.last_evaluated_table_name() {
            Some(last) => start = Some(last.to_string()),
            None => return names,
        }
    }
}

#[tokio::test]
async fn an_older_crd_stops_reconciling_until_the_current_one_is_applied() {
    let client = common::kube_client().await;
    let _restore = RestoreCrds;
    common::install_crds(&client).await;
    replace_crd(&client, older_view_crd()).await;
    let ns = common::namespace(&client, "crd-skew").await;

    // The older schema prunes `promotion.mode: Manual` on admission: the harm the skew check prevents.
    common::create_yaml(&client, &ns, LOG).await.unwrap();
    common::create_yaml(&client, &ns, VIEW).await.unwrap();
    let stored = common::kubectl(&["-n", &ns, "get", "mv", "players", "-o", "json"]);
    let stored: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert!(
        stored["spec"]["promotion"].get("mode").is_none(),
        "the older CRD should have pruned promotion.mode: {}",
        stored["spec"]
    );

    let mut operator = Operator::start(&ns, "solo", 15);
    // /readyz fails naming the CRD, both digests' owners and the fix; /healthz and /metrics still serve.
    let (_, body) = common::eventually(Duration::from_secs(30), "/readyz answering 503", || async {
        get(operator.http_port, "/readyz")
            .await
            .filter(|(code, _)| *code == 503)
    })
    .await;
    for part in [
        "CRD version skew",
        &format!("CRD {VIEW_CRD} has no kappa.dev/schema-digest annotation"),
        &format!("this operator {}", env!("CARGO_PKG_VERSION")),
        "kubectl apply --server-side --force-conflicts -f https://github.com/kappa-dev/kappa-operator/releases/download/",
    ] {
        assert!(body.contains(part), "{part:?} not in /readyz: {body}");
    }
    assert!(
        !body.contains("eventlogs.kappa.dev"),
        "only the older CRD is skew: {body}"
    );
    assert_eq!(
        get(operator.http_port, "/healthz").await,
        Some((200, "ok".to_string()))
    );
    let metrics = operator.metrics().await.expect("/metrics serves while skewed");
    assert!(metrics.contains("kappa_crd_skew 1"), "{metrics}");

    // Each object gets a Warning Event CrdSkew with the fix; nothing is reconciled.
    for name in ["players", "game-events"] {
        let events = common::eventually(
            Duration::from_secs(30),
            &format!("a Warning Event CrdSkew on {name}"),
            || async {
                let events = events_for(&client, &ns, name, "CrdSkew").await;
                (!events.is_empty()).then_some(events)
            },
        )
        .await;
        let note = events[0].note.clone().unwrap_or_default();
        assert_eq!(events[0].type_.as_deref(), Some("Warning"));
        assert!(
            note.contains(VIEW_CRD)
                && note.contains("is not reconciled")
                && note.contains("kubectl apply --server-side --force-conflicts -f"),
            "{note}"
        );
    }
    assert!(
        operator.log().contains("CRD version skew"),
        "an error log names the skew: {}",
        operator.log()
    );
    // Time for a reconcile that should not happen (the Events above came from the first look already).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let views: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
    let logs: Api<EventLog> = Api::namespaced(client.clone(), &ns);
    let view = views.get("players").await.unwrap();
    let log = logs.get("game-events").await.unwrap();
    assert!(view.status.is_none(), "no status while skewed: {:?}", view.status);
    assert!(log.status.is_none(), "no status while skewed: {:?}", log.status);
    assert!(
        view.finalizers().is_empty() && log.finalizers().is_empty(),
        "no finalizer while skewed"
    );
    assert_eq!(operator.reconciles().await, 0, "no reconcile while skewed");
    assert_eq!(
        tables_of(&ns).await,
        Vec::<String>::new(),
        "no AWS table while skewed"
    );

    // The current CRDs: the same process reconciles both objects, /readyz succeeds.
    common::install_crds(&client).await;
    let (code, body) = common::eventually(Duration::from_secs(30), "/readyz answering 200", || async {
        get(operator.http_port, "/readyz")
            .await
            .filter(|(code, _)| *code == 200)
    })
    .await;
    assert_eq!((code, body.as_str()), (200, "ok"));
    let view = common::eventually(Duration::from_secs(30), "the view reconciled", || async {
        let v = views.get("players").await.ok()?;
        let status = v.status.as_ref()?;
        (status.phase.is_some() && status.phase != Some(ViewPhase::Pending)).then_some(v)
    })
    .await;
    assert!(view.finalizers().contains(&"kappa.dev/cleanup".to_string()));
    common::eventually(Duration::from_secs(30), "the EventLog reconciled", || async {
        logs.get("game-events").await.ok()?.status
    })
    .await;
    common::eventually(Duration::from_secs(30), "the log's table", || async {
        let tables = tables_of(&ns).await;
        (!tables.is_empty()).then_some(tables)
    })
    .await;
    assert!(
        operator.child.try_wait().unwrap().is_none(),
        "the operator was not restarted: {}",
        operator.log()
    );
    assert!(
        operator
            .log()
            .contains("the installed CRDs match this operator's"),
        "{}",
        operator.log()
    );
    let metrics = operator.metrics().await.unwrap();
    assert!(metrics.contains("kappa_crd_skew 0"), "{metrics}");

    // What the older CRD pruned stays pruned; applied again, `mode: Manual` is kept now.
    common::kubectl(&[
        "-n",
        &ns,
        "patch",
        "mv",
        "players",
        "--type=merge",
        "-p",
        r#"{"spec":{"promotion":{"mode":"Manual"}}}"#,
    ]);
    let view = views.get("players").await.unwrap();
    assert_eq!(
        serde_json::to_value(&view.spec).unwrap()["promotion"]["mode"],
        "Manual"
    );

    // A CRD whose digest is another schema's (the annotation altered) is skew too, seen by the watch.
    let mut other = kappa_operator::crd::all_crds()
        .into_iter()
        .find(|c| c.name_any() == "eventlogs.kappa.dev")
        .unwrap();
    other.metadata.annotations.as_mut().unwrap().insert(
        "kappa.dev/schema-digest".into(),
        "0000000000000000000000000000000000000000000000000000000000000000".into(),
    );
    other
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("kappa.dev/operator-version".into(), "0.0.1".into());
    replace_crd(&client, other).await;
    let (_, body) = common::eventually(Duration::from_secs(30), "/readyz answering 503 again", || async {
        get(operator.http_port, "/readyz")
            .await
            .filter(|(code, _)| *code == 503)
    })
    .await;
    assert!(
        body.contains("CRD eventlogs.kappa.dev has schema digest 000000000000 (operator version 0.0.1)"),
        "{body}"
    );
    // An annotation-only change leaves the API server's watches of the objects open (a schema change
    // ends them, and the relist alone would reconcile everything): a view created now is left alone, and
    // reconciled as soon as the CRDs match again, long before its 60 s retry.
    common::create_yaml(&client, &ns, &VIEW.replace("name: players", "name: scores"))
        .await
        .unwrap();
    common::eventually(
        Duration::from_secs(30),
        "a Warning Event CrdSkew on scores",
        || async {
            let events = events_for(&client, &ns, "scores", "CrdSkew").await;
            (!events.is_empty()).then_some(())
        },
    )
    .await;
    assert!(views.get("scores").await.unwrap().status.is_none());
    let fixed = std::time::Instant::now();
    common::install_crds(&client).await;
    common::eventually(Duration::from_secs(30), "/readyz answering 200 again", || async {
        get(operator.http_port, "/readyz")
            .await
            .filter(|(code, _)| *code == 200)
    })
    .await;
    common::eventually(Duration::from_secs(30), "the view scores reconciled", || async {
        views.get("scores").await.ok()?.status
    })
    .await;
    assert!(
        fixed.elapsed() < Duration::from_secs(20),
        "reconciling resumed after {:?}: it should follow the CRD fix, not the retry",
        fixed.elapsed()
    );

    common::delete_namespace(&client, &ns).await;
    operator.kill();
}
