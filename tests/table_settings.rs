//! Issue #17 c and d on the local stack: an EventLog's table settings (billing mode, provisioned capacity,
//! point-in-time recovery) reach the table before the EventLog is Ready at their generation; a change of
//! `spec.table.streamViewType` is refused at admission; an adopted table keeps its own settings (the
//! difference listed in the status), and one whose enabled stream has another view type is refused, never
//! disabled; a change AWS refuses (a limit the emulator does not enforce, answered by the fault proxy's
//! `refuse` rule in DynamoDB's error shape) leaves the log not Ready, naming AWS's code, the field and the fix.

mod common;

use std::time::Duration;

use aws_sdk_dynamodb::types::{BillingMode, StreamSpecification, StreamViewType};
use common::Operator;
use common::faults::FaultProxy;
use k8s_openapi::api::events::v1::Event;
use kappa_operator::crd::{EventLog, EventLogPhase};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client};

const LOG: &str = r#"
apiVersion: kappa.dev/v1alpha1
kind: EventLog
metadata: {name: settings}
spec:
  recordTypes: [player]
  table: {orderingAttribute: seq}
  deletionPolicy: Delete
"#;

/// The table's (billing mode, read, write) as DescribeTable shows them.
async fn billing(ddb: &aws_sdk_dynamodb::Client, table: &str) -> (BillingMode, i64, i64) {
    let t = ddb
        .describe_table()
        .table_name(table)
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    let mode = t
        .billing_mode_summary()
        .and_then(|s| s.billing_mode())
        .cloned()
        .expect("BillingModeSummary");
    let p = t.provisioned_throughput().expect("ProvisionedThroughput");
    (
        mode,
        p.read_capacity_units().unwrap_or(0),
        p.write_capacity_units().unwrap_or(0),
    )
}

async fn pitr(ddb: &aws_sdk_dynamodb::Client, table: &str) -> String {
    ddb.describe_continuous_backups()
        .table_name(table)
        .send()
        .await
        .unwrap()
        .continuous_backups_description()
        .and_then(|d| d.point_in_time_recovery_description())
        .and_then(|p| p.point_in_time_recovery_status())
        .map(|s| s.as_str().to_string())
        .unwrap_or_default()
}

/// Patches `spec.table` of log `name` and returns the new generation.
async fn patch_table(api: &Api<EventLog>, name: &str, table: serde_json::Value) -> i64 {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"table": table}})),
    )
    .await
    .unwrap_or_else(|e| panic!("patching spec.table of {name}: {e}"))
    .metadata
    .generation
    .unwrap()
}

/// Waits for the log Ready at `generation`; every time it is seen so, `check` must hold on the table at
/// once (Ready at a generation means its settings are on the table).
async fn ready_at<F, Fut>(api: &Api<EventLog>, name: &str, generation: i64, what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    common::eventually(
        Duration::from_secs(60),
        &format!("{name} Ready at generation {generation} ({what})"),
        || async {
            let l = api.get(name).await.ok()?;
            let s = l.status.as_ref()?;
            if s.phase == Some(EventLogPhase::Ready) && s.observed_generation == Some(generation) {
                if let Err(e) = check().await {
                    panic!("{name} says Ready at generation {generation} but the table is not {what}: {e}");
                }
                return Some(());
            }
            None
        },
    )
    .await;
}

#[tokio::test]
async fn billing_capacity_and_pitr_reach_the_table_before_ready() {
    let (client, ns) = common::setup("table-settings").await;
    let ddb = aws_sdk_dynamodb::Client::new(&common::aws_config().await);
    let _op = Operator::start(&ns, "solo", 15);
    common::create_yaml(&client, &ns, LOG).await.unwrap();
    let logs: Api<EventLog> = Api::namespaced(client.clone(), &ns);
    let first = common::eventually(Duration::from_secs(60), "the log Ready", || async {
        let l = logs.get("settings").await.ok()?;
        let s = l.status.as_ref()?;
        (s.phase == Some(EventLogPhase::Ready) && s.observed_generation == l.metadata.generation).then_some(l)
    })
    .await;
    let table = first.status.unwrap().table.unwrap().name;
    assert_eq!(billing(&ddb, &table).await.0, BillingMode::PayPerRequest);
    assert_eq!(pitr(&ddb, &table).await, "ENABLED");

    // On-demand → provisioned 5/5.
    let g = patch_table(
        &logs,
        "settings",
        serde_json::json!({"billing": {"mode": "Provisioned", "readCapacityUnits": 5, "writeCapacityUnits": 5}}),
    )
    .await;
    ready_at(&logs, "settings", g, "provisioned 5/5", || async {
        let b = billing(&ddb, &table).await;
        (b == (BillingMode::Provisioned, 5, 5))
            .then_some(())
            .ok_or(format!("{b:?}"))
    })
    .await;

    // 5/5 → 50/20.
    let g = patch_table(
        &logs,
        "settings",
        serde_json::json!({"billing": {"mode": "Provisioned", "readCapacityUnits": 50, "writeCapacityUnits": 20}}),
    )
    .await;
    ready_at(&logs, "settings", g, "provisioned 50/20", || async {
        let b = billing(&ddb, &table).await;
        (b == (BillingMode::Provisioned, 50, 20))
            .then_some(())
            .ok_or(format!("{b:?}"))
    })
    .await;

    // PITR off: applied, not only the enabling way.
    let g = patch_table(
        &logs,
        "settings",
        serde_json::json!({"pointInTimeRecovery": false}),
    )
    .await;
    ready_at(&logs, "settings", g, "PITR disabled", || async {
        let p = pitr(&ddb, &table).await;
        (p == "DISABLED").then_some(()).ok_or(p)
    })
    .await;
    assert_eq!(
        billing(&ddb, &table).await,
        (BillingMode::Provisioned, 50, 20),
        "unchanged by the PITR change"
    );

    // Back to on-demand (the capacity fields must go with the mode: a JSON merge patch of null).
    let g = patch_table(
        &logs,
        "settings",
        serde_json::json!({"billing": {"mode": "OnDemand", "readCapacityUnits": null, "writeCapacityUnits": null}}),
    )
    .await;
    ready_at(&logs, "settings", g, "on-demand", || async {
        let b = billing(&ddb, &table).await;
        (b.0 == BillingMode::PayPerRequest)
            .then_some(())
            .ok_or(format!("{b:?}"))
    })
    .await;

    // streamViewType is refused at admission, with the field and the fix.
    let refused = logs
        .patch(
            "settings",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"table": {"streamViewType": "NewImage"}}})),
        )
        .await
        .expect_err("a streamViewType change must be refused");
    let text = refused.to_string();
    assert!(
        text.contains("spec.table.streamViewType cannot change") && text.contains("create a new EventLog"),
        "{text}"
    );
    assert_eq!(
        logs.get("settings").await.unwrap().spec.table.stream_view_type,
        kappa_operator::crd::StreamViewType::NewAndOldImages
    );

    logs.delete("settings", &DeleteParams::default()).await.unwrap();
    common::eventually(Duration::from_secs(60), "the log deleted", || async {
        logs.get_opt("settings").await.ok()?.is_none().then_some(())
    })
    .await;
    common::delete_namespace(&client, &ns).await;
}

async fn events_for(client: &Client, ns: &str, name: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let list = api.list(&ListParams::default()).await.unwrap();
    list.items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

fn adopting(name: &str, table: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: kappa.dev/v1alpha1
kind: EventLog
metadata: {{name: {name}}}
spec:
  recordTypes: [player]
  table: {{name: {table}, sortKey: sk, adoptExisting: true{extra}}}
"#
    )
}

#[tokio::test]
async fn an_adopted_table_keeps_its_settings_and_another_view_type_is_refused() {
    let (client, ns) = common::setup("table-adopted").await;
    let ddb = aws_sdk_dynamodb::Client::new(&common::aws_config().await);
    let plain = common::fresh_pk_sk_table(&ddb, "legacy-plain").await;
    let new_image = common::fresh_pk_sk_table(&ddb, "legacy-newimage").await;
    ddb.update_table()
        .table_name(&new_image)
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewImage)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let adoptable = format!("{ns}=legacy-.*");
    let _op = Operator::start_with_args(&[&ns], "solo", 5, &["--adoptable-tables", &adoptable], &[]);
    let logs: Api<EventLog> = Api::namespaced(client.clone(), &ns);

    // Declared provisioned 5/5 with PITR (the default) on an on-demand table without PITR: left as it is.
    common::create_yaml(
        &client,
        &ns,
        &adopting(
            "adopter",
            &plain,
            ", billing: {mode: Provisioned, readCapacityUnits: 5, writeCapacityUnits: 5}",
        ),
    )
    .await
    .unwrap();
    // A table whose enabled stream is NEW_IMAGE, for a log declaring NewAndOldImages (the default).
    common::create_yaml(&client, &ns, &adopting("other-view", &new_image, ""))
        .await
        .unwrap();

    let ready = common::eventually(Duration::from_secs(60), "the adopter Ready", || async {
        let l = logs.get("adopter").await.ok()?;
        let s = l.status.as_ref()?;
        (s.phase == Some(EventLogPhase::Ready) && s.observed_generation == l.metadata.generation).then_some(l)
    })
    .await;
    let status = ready.status.unwrap();
    let notes = status.table.unwrap().settings_not_applied;
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes[0].contains("spec.table.billing")
            && notes[0].contains("Provisioned 5/5")
            && notes[0].contains("OnDemand"),
        "{notes:?}"
    );
    assert!(notes[1].contains("spec.table.pointInTimeRecovery"), "{notes:?}");
    let ready_message = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .message
        .clone();
    assert!(ready_message.contains("settingsNotApplied"), "{ready_message}");
    assert_eq!(billing(&ddb, &plain).await.0, BillingMode::PayPerRequest);
    assert_eq!(pitr(&ddb, &plain).await, "DISABLED");

    let stalled = common::eventually(Duration::from_secs(60), "other-view not Ready", || async {
        let l = logs.get("other-view").await.ok()?;
        let ready = l
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")?
            .clone();
        (ready.reason == "TableSettingRefused").then_some(ready)
    })
    .await;
    assert_eq!(stalled.status, kappa_operator::crd::ConditionStatus::False);
    assert!(
        stalled.message.contains("spec.table.streamViewType")
            && stalled.message.contains("NEW_IMAGE")
            && stalled.message.contains("create a new EventLog"),
        "{}",
        stalled.message
    );
    let warning = common::eventually(
        Duration::from_secs(30),
        "a Warning TableSettingRefused",
        || async {
            events_for(&client, &ns, "other-view")
                .await
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some("TableSettingRefused")
                        && e.type_.as_deref() == Some("Warning")
                })
        },
    )
    .await;
    assert!(warning.note.unwrap_or_default().contains("NEW_IMAGE"));
    // The stream was never turned off: still the one it had.
    let t = ddb
        .describe_table()
        .table_name(&new_image)
        .send()
        .await
        .unwrap()
        .table
        .unwrap();
    let s = t.stream_specification().unwrap();
    assert!(s.stream_enabled());
    assert_eq!(s.stream_view_type(), Some(&StreamViewType::NewImage));

    for name in ["adopter", "other-view"] {
        logs.delete(name, &DeleteParams::default()).await.unwrap();
    }
    common::eventually(Duration::from_secs(60), "the logs deleted", || async {
        logs.list(&ListParams::default())
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    for t in [&plain, &new_image] {
        let _ = ddb.delete_table().table_name(t).send().await;
    }
    common::delete_namespace(&client, &ns).await;
}

/// DynamoDB allows up to four switches from provisioned to on-demand in a 24-hour rolling window and a few
/// capacity decreases per UTC day; moto enforces neither (it switched a table to on-demand six times in a
/// minute), so the fault proxy answers `UpdateTable` as AWS does beyond a limit: `LimitExceededException`.
#[tokio::test]
async fn a_billing_change_aws_refuses_is_reported_and_applied_once_allowed() {
    let (client, ns) = common::setup("table-refused").await;
    let ddb = aws_sdk_dynamodb::Client::new(&common::aws_config().await);
    let proxy = FaultProxy::start(&common::stack_var("AWS_ENDPOINT_URL"));
    let endpoint = proxy.endpoint();
    let _op = Operator::start_with_env(&ns, "solo", 15, &[("AWS_ENDPOINT_URL", &endpoint)]);
    let provisioned = LOG.replace(
        "table: {orderingAttribute: seq}",
        "table: {orderingAttribute: seq, billing: {mode: Provisioned, readCapacityUnits: 5, writeCapacityUnits: 5}}",
    );
    common::create_yaml(&client, &ns, &provisioned).await.unwrap();
    let logs: Api<EventLog> = Api::namespaced(client.clone(), &ns);
    let first = common::eventually(Duration::from_secs(60), "the log Ready", || async {
        let l = logs.get("settings").await.ok()?;
        let s = l.status.as_ref()?;
        (s.phase == Some(EventLogPhase::Ready) && s.observed_generation == l.metadata.generation).then_some(l)
    })
    .await;
    let table = first.status.unwrap().table.unwrap().name;
    assert_eq!(billing(&ddb, &table).await, (BillingMode::Provisioned, 5, 5));

    // The message is the test's own; the code and the error shape are DynamoDB's.
    let message = "Subscriber limit exceeded: switches to on-demand are limited within a 24-hour window";
    proxy
        .configure(serde_json::json!({"refuse": {"DynamoDB_20120810.UpdateTable": {
            "code": "LimitExceededException", "message": message}}}))
        .await;
    let g = patch_table(
        &logs,
        "settings",
        serde_json::json!({"billing": {"mode": "OnDemand", "readCapacityUnits": null, "writeCapacityUnits": null}}),
    )
    .await;
    let refused = common::eventually(Duration::from_secs(60), "the log TableSettingRefused", || async {
        let l = logs.get("settings").await.ok()?;
        let s = l.status.as_ref()?;
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready")?.clone();
        (s.observed_generation == Some(g) && ready.reason == "TableSettingRefused")
            .then_some((s.clone(), ready))
    })
    .await;
    let (status, ready) = refused;
    assert_eq!(status.phase, Some(EventLogPhase::Failed));
    assert_eq!(ready.status, kappa_operator::crd::ConditionStatus::False);
    for part in [
        "LimitExceededException",
        "spec.table.billing.mode",
        message,
        "24-hour",
        "set spec.table.billing.mode back",
    ] {
        assert!(ready.message.contains(part), "{part:?} not in {}", ready.message);
    }
    let warning = common::eventually(
        Duration::from_secs(30),
        "a Warning TableSettingRefused",
        || async {
            events_for(&client, &ns, "settings").await.into_iter().find(|e| {
                e.reason.as_deref() == Some("TableSettingRefused") && e.type_.as_deref() == Some("Warning")
            })
        },
    )
    .await;
    assert!(
        warning
            .note
            .unwrap_or_default()
            .contains("LimitExceededException")
    );
    assert_eq!(
        billing(&ddb, &table).await,
        (BillingMode::Provisioned, 5, 5),
        "nothing applied"
    );

    // The limit lifts: the next resync applies the change, and only then is the log Ready.
    proxy.configure(serde_json::json!({"refuse": {}})).await;
    common::eventually(
        Duration::from_secs(90),
        "the log Ready once AWS accepts",
        || async {
            let l = logs.get("settings").await.ok()?;
            let s = l.status.as_ref()?;
            (s.phase == Some(EventLogPhase::Ready) && s.observed_generation == Some(g)).then_some(())
        },
    )
    .await;
    assert_eq!(billing(&ddb, &table).await.0, BillingMode::PayPerRequest);

    logs.delete("settings", &DeleteParams::default()).await.unwrap();
    common::eventually(Duration::from_secs(60), "the log deleted", || async {
        logs.get_opt("settings").await.ok()?.is_none().then_some(())
    })
    .await;
    common::delete_namespace(&client, &ns).await;
}
