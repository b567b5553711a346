//! The controller core on the real API server, through the real binary: status and conditions, Events,
//! the finalizer, the view → EventLog watch relation, leader election, and fail-fast start-up.

mod common;

use std::time::{Duration, Instant};

use common::Operator;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kappa_operator::crd::{EventLog, MaterializedView, ViewPhase};
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client};

const LOG: &str = r#"
apiVersion: kappa.dev/v1alpha1
kind: EventLog
metadata: {name: game-events}
spec:
  recordTypes: [player, game]
  table: {orderingAttribute: seq}
  export: {bucket: kappa-exports}
"#;

fn view(name: &str) -> String {
    format!(
        r#"
apiVersion: kappa.dev/v1alpha1
kind: MaterializedView
metadata: {{name: {name}}}
spec:
  eventLogRef: {{name: game-events}}
  recordTypes: [player]
  projection: {{mode: Latest, key: {{partitionKey: "PLAYER#{{playerId}}"}}}}
  backfill: {{source: None}}
"#
    )
}

fn condition<'a>(view: &'a MaterializedView, type_: &str) -> Option<&'a kappa_operator::crd::Condition> {
    view.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)
}

/// Waits until the view's status was computed from its current generation and is in `phase` (or, for
/// `Provisioning`, past it).
async fn wait_for_phase(api: &Api<MaterializedView>, name: &str, phase: ViewPhase) -> MaterializedView {
    common::eventually(
        Duration::from_secs(30),
        &format!("view {name} in phase {phase}"),
        || async {
            let v = api.get(name).await.ok()?;
            let status = v.status.as_ref()?;
            // A view may pass Provisioning quickly: any later phase counts as having been there.
            let reached = match phase {
                ViewPhase::Provisioning => matches!(
                    status.phase,
                    Some(
                        ViewPhase::Provisioning
                            | ViewPhase::Backfilling
                            | ViewPhase::CatchingUp
                            | ViewPhase::Live
                    )
                ),
                _ => status.phase == Some(phase),
            };
            (reached && status.observed_generation == v.metadata.generation).then_some(v)
        },
    )
    .await
}

async fn events_for(client: &Client, ns: &str, name: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let list = api.list(&ListParams::default()).await.unwrap();
    list.items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

#[tokio::test]
async fn a_view_without_its_log_stalls_then_progresses_when_the_log_appears() {
    let (client, ns) = common::setup("ctl-stall").await;
    let operator = Operator::start(&ns, "solo", 15);
    common::create_yaml(&client, &ns, &view("players")).await.unwrap();
    let views: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);

    let v = wait_for_phase(&views, "players", ViewPhase::Pending).await;
    let stalled = condition(&v, "Stalled").expect("a Stalled condition");
    assert_eq!(stalled.status, kappa_operator::crd::ConditionStatus::True);
    assert_eq!(stalled.reason, "EventLogNotFound");
    assert!(stalled.message.contains("spec.eventLogRef.name") && stalled.message.contains("game-events"));
    assert_eq!(stalled.observed_generation, v.metadata.generation);
    assert_eq!(
        condition(&v, "Ready").unwrap().status,
        kappa_operator::crd::ConditionStatus::False
    );
    let events = common::eventually(
        Duration::from_secs(10),
        "a Warning Event EventLogNotFound",
        || async {
            let evs = events_for(&client, &ns, "players").await;
            evs.iter()
                .any(|e| {
                    e.reason.as_deref() == Some("EventLogNotFound") && e.type_.as_deref() == Some("Warning")
                })
                .then_some(evs)
        },
    )
    .await;
    assert!(
        events
            .iter()
            .all(|e| e.reporting_controller.as_deref() == Some("kappa-operator"))
    );

    // Creating the log wakes the view through the watch relation, long before the 30s resync.
    let started = Instant::now();
    common::create_yaml(&client, &ns, LOG).await.unwrap();
    // Provisioning, or already Live (no backfill): either way past Pending and not stalled.
    let v = common::eventually(Duration::from_secs(30), "view players past Pending", || async {
        let v = views.get("players").await.ok()?;
        let status = v.status.as_ref()?;
        let moved = matches!(status.phase, Some(ViewPhase::Provisioning | ViewPhase::Live));
        (moved && status.observed_generation == v.metadata.generation).then_some(v)
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the view should react to its EventLog, not the resync"
    );
    assert_eq!(
        condition(&v, "Stalled").unwrap().status,
        kappa_operator::crd::ConditionStatus::False
    );
    assert!(
        v.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"kappa.dev/cleanup".to_string())
    );

    // The log counts its views and resolves Auto fan-out.
    let logs: Api<EventLog> = Api::namespaced(client.clone(), &ns);
    let log = common::eventually(Duration::from_secs(20), "the EventLog's status", || async {
        let l = logs.get("game-events").await.ok()?;
        (l.status.as_ref()?.views == 1).then_some(l)
    })
    .await;
    assert_eq!(log.status.unwrap().fan_out.map(|f| f.as_str()), Some("Direct"));
    let log_out = common::kubectl(&["-n", &ns, "get", "elog", "game-events"]);
    assert!(log_out.contains("Direct"), "{log_out}");

    // A spec change is observed: observedGeneration follows generation.
    common::kubectl(&[
        "-n",
        &ns,
        "patch",
        "mv",
        "players",
        "--type=merge",
        "-p",
        r#"{"spec":{"projector":{"memoryMb":512}}}"#,
    ]);
    let v = wait_for_phase(&views, "players", ViewPhase::Provisioning).await;
    assert_eq!(v.metadata.generation, Some(2));
    assert!(
        operator
            .log()
            .contains("watching EventLogs and MaterializedViews"),
        "{}",
        operator.log()
    );
    assert_eq!(
        common::http_get(operator.http_port, "/healthz").await.as_deref(),
        Some("ok")
    );
    assert_eq!(
        common::http_get(operator.http_port, "/readyz").await.as_deref(),
        Some("ok")
    );
    let metrics = operator.metrics().await.unwrap();
    for family in [
        "kappa_reconciles_total",
        "kappa_reconcile_duration_seconds_count",
        "kappa_leader 1",
    ] {
        assert!(
            metrics.contains(family),
            "{family} missing from /metrics:\n{metrics}"
        );
    }
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn an_invalid_view_is_stalled_with_a_message_naming_the_field() {
    let (client, ns) = common::setup("ctl-invalid").await;
    let _operator = Operator::start(&ns, "solo", 15);
    common::create_yaml(&client, &ns, LOG).await.unwrap();
    common::create_yaml(
        &client,
        &ns,
        &view("chat").replace("recordTypes: [player]", "recordTypes: [chat]"),
    )
    .await
    .unwrap();
    let views: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
    let v = wait_for_phase(&views, "chat", ViewPhase::Pending).await;
    let stalled = condition(&v, "Stalled").unwrap();
    assert_eq!(stalled.reason, "InvalidSpec");
    assert!(
        stalled
            .message
            .contains("spec.recordTypes: \"chat\" is not a record type"),
        "{}",
        stalled.message
    );
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn deleting_a_view_waits_for_the_finalizer() {
    let (client, ns) = common::setup("ctl-finalizer").await;
    let mut operator = Operator::start(&ns, "solo", 15);
    common::create_yaml(&client, &ns, LOG).await.unwrap();
    common::create_yaml(&client, &ns, &view("players")).await.unwrap();
    let views: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
    wait_for_phase(&views, "players", ViewPhase::Provisioning).await;

    // Without an operator, deletion is held by the finalizer.
    operator.kill();
    views.delete("players", &DeleteParams::default()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = views.get("players").await.expect("the finalizer holds the view");
    assert!(held.metadata.deletion_timestamp.is_some());

    // The operator runs cleanup, removes the finalizer, and the view is gone.
    let _operator = Operator::start(&ns, "solo-2", 15);
    common::eventually(Duration::from_secs(30), "the view to be deleted", || async {
        views.get_opt("players").await.unwrap().is_none().then_some(())
    })
    .await;
    let events = events_for(&client, &ns, "players").await;
    assert!(
        events.iter().any(|e| e.reason.as_deref() == Some("Deleted")),
        "{events:?}"
    );
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn only_the_leader_reconciles_and_a_standby_takes_over_when_it_dies() {
    let (client, ns) = common::setup("ctl-leader").await;
    let lease_seconds = 6;
    let mut a = Operator::start(&ns, "replica-a", lease_seconds);
    // Let replica-a win the Lease before replica-b starts, so the test knows who leads.
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    let holder = |leases: Api<Lease>| async move {
        leases
            .get_opt("kappa-operator-leader")
            .await
            .ok()??
            .spec?
            .holder_identity
    };
    common::eventually(Duration::from_secs(20), "replica-a to lead", || async {
        (holder(leases.clone()).await.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let b = Operator::start(&ns, "replica-b", lease_seconds);
    common::create_yaml(&client, &ns, LOG).await.unwrap();
    common::create_yaml(&client, &ns, &view("players")).await.unwrap();
    let views: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
    wait_for_phase(&views, "players", ViewPhase::Provisioning).await;
    common::eventually(Duration::from_secs(10), "replica-b's /metrics", || async {
        b.metrics().await
    })
    .await;
    assert!(a.reconciles().await > 0, "the leader reconciles");
    assert_eq!(b.reconciles().await, 0, "the standby must not reconcile");
    assert!(b.metrics().await.unwrap().contains("kappa_leader 0"));
    assert!(a.metrics().await.unwrap().contains("kappa_leader 1"));

    // Kill the leader without a chance to release: the standby takes over once the Lease expires.
    a.kill();
    let killed = Instant::now();
    common::eventually(Duration::from_secs(30), "replica-b to lead", || async {
        (holder(leases.clone()).await.as_deref() == Some("replica-b")).then_some(())
    })
    .await;
    let takeover = killed.elapsed();
    // The Lease was renewed at most a renew period before the kill; the standby polls every fifth of
    // the duration. So takeover happens within the lease duration plus one retry period.
    let bound = Duration::from_secs(lease_seconds)
        + Duration::from_secs(lease_seconds) / 5
        + Duration::from_millis(500);
    assert!(
        takeover <= bound,
        "takeover took {takeover:?}, more than {bound:?}"
    );
    common::create_yaml(&client, &ns, &view("games").replace("[player]", "[game]"))
        .await
        .unwrap();
    wait_for_phase(&views, "games", ViewPhase::Provisioning).await;
    assert!(b.reconciles().await > 0, "the new leader reconciles");
    assert!(b.log().contains("became leader"), "{}", b.log());
    common::delete_namespace(&client, &ns).await;
}

#[test]
fn the_operator_refuses_to_start_without_a_cluster_id() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kappa-operator"))
        .args(["run", "--lease-namespace", "default"])
        .env_remove("KAPPA_CLUSTER_ID")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no cluster id") && stderr.contains("KAPPA_CLUSTER_ID"),
        "{stderr}"
    );
}

#[test]
fn the_operator_refuses_to_start_with_an_unreadable_push_token() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kappa-operator"))
        .args(["run", "--cluster-id", "test", "--lease-namespace", "default"])
        .args(["--push-token-file", "/nonexistent/kappa-push-token"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/kappa-push-token") && stderr.contains("KAPPA_PUSH_TOKEN_FILE"),
        "{stderr}"
    );
}

#[test]
fn crds_subcommand_prints_the_committed_crds() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kappa-operator"))
        .arg("crds")
        .output()
        .unwrap();
    assert!(out.status.success());
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/kappa.dev_crds.yaml")).unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        committed,
        "run `make crds`"
    );
}

/// Issue #14 item 6: one view whose status this operator version cannot read (a newer version wrote an
/// enum value it does not know) used to stop every reconcile in its namespace, and its namespace hung in
/// Terminating. Now the others reconcile, it gets a Warning naming the field, its status is left as it
/// is, and deleting it still runs the cleanup and removes the finalizer.
#[tokio::test]
async fn a_view_this_operator_cannot_read_is_named_in_a_warning_and_stops_no_other_view() {
    use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
    let (client, ns) = common::setup("ctl-unreadable").await;
    let bad = view("from-newer").replace(
        "metadata: {name: from-newer}",
        "metadata: {name: from-newer, finalizers: [kappa.dev/cleanup]}",
    );
    common::create_yaml(&client, &ns, &bad).await.unwrap();
    let raw: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &ApiResource::erase::<MaterializedView>(&()));
    let newer = serde_json::json!({"status": {"phase": "Live", "versions": [{
        "version": 1, "contentHash": "h", "state": "Active",
        "content": {"projection": {"mode": "Median", "key": {"partitionKey": "P#{playerId}"}}},
    }]}});
    raw.patch_status("from-newer", &PatchParams::default(), &Patch::Merge(&newer))
        .await
        .expect("the API server admits the status (content is an opaque object)");
    common::create_yaml(&client, &ns, &view("players")).await.unwrap();
    let _operator = Operator::start(&ns, "solo", 15);

    let views: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
    wait_for_phase(&views, "players", ViewPhase::Pending).await;
    let warning = common::eventually(
        Duration::from_secs(30),
        "a Warning UnreadableStatus on the unreadable view",
        || async {
            events_for(&client, &ns, "from-newer")
                .await
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some("UnreadableStatus") && e.type_.as_deref() == Some("Warning")
                })
        },
    )
    .await;
    let note = warning.note.unwrap_or_default();
    assert!(note.contains("status.versions[0].content"), "{note}");
    assert!(note.contains("--subresource=status"), "the fix is given: {note}");
    let kept = raw.get("from-newer").await.unwrap();
    assert_eq!(
        kept.data["status"]["versions"][0]["content"]["projection"]["mode"], "Median",
        "the newer operator's status is not overwritten"
    );

    raw.delete("from-newer", &DeleteParams::default()).await.unwrap();
    common::eventually(Duration::from_secs(30), "the unreadable view deleted", || async {
        match raw.get_opt("from-newer").await {
            Ok(None) => Some(()),
            _ => None,
        }
    })
    .await;
    common::delete_namespace(&client, &ns).await;
}
