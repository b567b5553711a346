//! QA cases against the aggregates work of issue #13, end to end on the local stack (the real operator
//! binary): shared tables with several aggregate views, and `onRecordError` on the live path.

mod common;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use bigdecimal::BigDecimal;
use common::Operator;
use common::scores::export_bucket;
use kappa_operator::crd::{MaterializedView, ViewPhase};
use kube::Api;

fn log_yaml(name: &str, bucket: &str) -> String {
    format!(
        r#"
apiVersion: kappa.dev/v1alpha1
kind: EventLog
metadata: {{name: {name}}}
spec:
  recordTypes: [order]
  table: {{sortKey: sk, orderingAttribute: seq}}
  fanOut: {{mode: Direct}}
  export: {{bucket: {bucket}, prefix: exports}}
  deletionPolicy: Delete
"#
    )
}

fn view_yaml(log: &str, name: &str, projection: &str, store: &str) -> String {
    common::in_cluster_order_view(log, name, projection, &format!("  store: {store}\n"))
}

async fn put(ddb: &aws_sdk_dynamodb::Client, table: &str, item: &[(&str, AttributeValue)]) {
    ddb.put_item()
        .table_name(table)
        .set_item(Some(
            item.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        ))
        .send()
        .await
        .expect("PutItem to the log");
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn n(v: &str) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

async fn wait_live(mvs: &Api<MaterializedView>, names: &[&str]) {
    common::eventually(Duration::from_secs(180), "the views Live", || async {
        for name in names {
            let v = mvs.get(name).await.ok()?;
            (v.status?.phase? == ViewPhase::Live).then_some(())?;
        }
        Some(())
    })
    .await
}

/// `(pk, sk) -> attribute -> number` of every item of `table` (markers included).
async fn numbers(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> BTreeMap<String, BTreeMap<String, BigDecimal>> {
    let mut out: BTreeMap<String, BTreeMap<String, BigDecimal>> = BTreeMap::new();
    for item in common::scan_all(ddb, table).await {
        let Some(AttributeValue::S(pk)) = item.get("pk") else {
            continue;
        };
        for (k, v) in &item {
            if let AttributeValue::N(v) = v {
                out.entry(pk.clone())
                    .or_default()
                    .insert(k.clone(), BigDecimal::from_str(v).unwrap());
            }
        }
    }
    out
}

/// README: a `Shared` views table holds several views, "each view under its own key prefix"; issue #13
/// §1: "a record counts once in a view". Input: two `Count` views of one log in one shared table, both
/// with `store: {table: Shared, keyPrefix: 'S#'}`, one keyed `ST#{status}`, one `CU#{customer}`; 10
/// records written once both are Live. Expected: the duplicate prefix is refused (admission or a
/// Stalled condition), or both views count 10. Found: both views are admitted and go Live; idempotency
/// markers are per (key prefix, record) (`projection/dynamo.rs` `marker_key`), so whichever view's live
/// path writes a record second finds the marker and drops it: together the two views count 10, not 20
/// (lost data, no error, no event).
#[tokio::test]
async fn views_sharing_a_key_prefix_in_a_shared_table_each_count_every_record() {
    let (client, ns) = common::setup("break-prefix").await;
    let aws = common::aws_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let (_s3, bucket) = export_bucket(&aws, &ns).await;
    let op = Operator::start(&ns, "run0", 5);
    common::create_yaml(&client, &ns, &log_yaml("orders", &bucket))
        .await
        .unwrap();
    let log = common::log_table(&client, &ns, "orders").await;
    let store = "{table: Shared, keyPrefix: 'S#'}";
    let a = view_yaml(
        "orders",
        "by-status",
        "{mode: Count, key: {partitionKey: 'ST#{status}'}}",
        store,
    );
    let b = view_yaml(
        "orders",
        "by-customer",
        "{mode: Count, key: {partitionKey: 'CU#{customer}'}}",
        store,
    );
    let admitted_a = common::create_yaml(&client, &ns, &a).await;
    let admitted_b = common::create_yaml(&client, &ns, &b).await;
    if admitted_a.is_err() || admitted_b.is_err() {
        // Refused at admission: the expected behaviour.
        drop(op);
        common::delete_namespace(&client, &ns).await;
        return;
    }
    let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
    // Refused with a Stalled condition (the operator's answer since #17: overlapping key prefixes in one
    // shared table) is the other expected behaviour; the first view keeps running.
    let refused = common::eventually(Duration::from_secs(120), "both Live, or one refused", || async {
        let mut live = 0;
        for name in ["by-status", "by-customer"] {
            let s = mvs.get(name).await.ok()?.status?;
            if s.conditions
                .iter()
                .any(|c| c.type_ == "Stalled" && c.is_true() && c.message.contains("overlaps"))
            {
                return Some(true);
            }
            live += usize::from(s.phase == Some(kappa_operator::crd::ViewPhase::Live));
        }
        (live == 2).then_some(false)
    })
    .await;
    if refused {
        drop(op);
        common::delete_namespace(&client, &ns).await;
        return;
    }
    let table = mvs
        .get("by-status")
        .await
        .unwrap()
        .status
        .unwrap()
        .table_name
        .unwrap();
    // Past the band around the export time, so both views apply these on their live paths.
    tokio::time::sleep(Duration::from_secs(32)).await;
    for i in 0..10 {
        put(
            &ddb,
            &log,
            &[
                ("pk", s(&format!("ORDER#o{i}"))),
                ("sk", s("1")),
                ("type", s("order")),
                ("status", s("paid")),
                ("customer", s("ada")),
                ("seq", n(&i.to_string())),
            ],
        )
        .await;
    }
    let got = common::eventually(
        Duration::from_secs(60),
        "both views to apply the 10 records",
        || async {
            let status = mvs.get("by-status").await.ok()?.status?.live?.records_applied;
            let customer = mvs.get("by-customer").await.ok()?.status?.live?.records_applied;
            (status >= 10 && customer >= 10).then_some(())?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            Some(numbers(&ddb, &table).await)
        },
    )
    .await;
    let count = |pk: &str| got.get(pk).and_then(|a| a.get("count")).cloned();
    let ten = Some(BigDecimal::from(10));
    assert_eq!(
        (count("S#ST#paid"), count("S#CU#ada")),
        (ten.clone(), ten),
        "both views admitted with keyPrefix S#; items: {got:?}"
    );
    drop(op);
    common::delete_namespace(&client, &ns).await;
}

/// Issue #13 §5: `Fail` "stops the view with a condition naming the record ... `caughtUp` must not
/// read true while the live path is failing"; `Skip` "counts the record, keeps ... log keys and reasons
/// in `status.recordErrors`". Input: one log, two Sum views (Fail and Skip); once both are Live, a record
/// whose `amount` is a string, then 3 good records. Expected: the Fail view is Stalled with reason
/// RecordError naming `ORDER#bad`, its `live.caughtUp` stays false, its sum stays at what came before
/// the bad record; the Skip view sums the 3 good records and reports 1 record error naming `ORDER#bad`.
#[tokio::test]
async fn on_record_error_fail_and_skip_on_the_live_path() {
    let (client, ns) = common::setup("break-onerror").await;
    let aws = common::aws_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let (_s3, bucket) = export_bucket(&aws, &ns).await;
    let op = Operator::start(&ns, "run0", 5);
    common::create_yaml(&client, &ns, &log_yaml("orders", &bucket))
        .await
        .unwrap();
    let log = common::log_table(&client, &ns, "orders").await;
    for (name, policy) in [("fail", "Fail"), ("skip", "Skip")] {
        let projection =
            format!("{{mode: Sum, sumOf: amount, onRecordError: {policy}, key: {{partitionKey: 'T'}}}}");
        let yaml = view_yaml("orders", name, &projection, "{table: Dedicated}");
        common::create_yaml(&client, &ns, &yaml).await.unwrap();
    }
    let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
    wait_live(&mvs, &["fail", "skip"]).await;
    tokio::time::sleep(Duration::from_secs(32)).await;
    let record = |pk: &str, amount: AttributeValue| {
        vec![
            ("pk", s(pk)),
            ("sk", s("1")),
            ("type", s("order")),
            ("amount", amount),
            ("seq", n("1")),
        ]
    };
    put(&ddb, &log, &record("ORDER#bad", s("12.50"))).await;
    for i in 0..3 {
        put(&ddb, &log, &record(&format!("ORDER#ok{i}"), n("2"))).await;
    }
    // Skip: 6, one record error naming the record.
    let skip_table = mvs.get("skip").await.unwrap().status.unwrap().table_name.unwrap();
    common::eventually(
        Duration::from_secs(90),
        "the Skip view to sum 6 and report the record",
        || async {
            let st = mvs.get("skip").await.ok()?.status?;
            let errors = st.record_errors?;
            (errors.count == 1 && errors.last.iter().any(|e| e.contains("ORDER#bad"))).then_some(())?;
            let got = numbers(&ddb, &skip_table).await;
            (got.get("T")?.get("sum")? == &BigDecimal::from(6)).then_some(())
        },
    )
    .await;
    // Fail: stalled naming the record; caughtUp never true afterwards.
    common::eventually(
        Duration::from_secs(90),
        "the Fail view to stop at the record",
        || async {
            let st = mvs.get("fail").await.ok()?.status?;
            let stalled = st
                .conditions
                .iter()
                .any(|c| c.reason == "RecordError" && c.message.contains("ORDER#bad"));
            stalled.then_some(())
        },
    )
    .await;
    let fail_table = mvs.get("fail").await.unwrap().status.unwrap().table_name.unwrap();
    for _ in 0..10 {
        let st = mvs.get("fail").await.unwrap().status.unwrap();
        assert!(
            !st.live.as_ref().is_some_and(|l| l.caught_up),
            "caughtUp while failing: {st:?}"
        );
        assert_ne!(st.phase, Some(ViewPhase::Live), "{st:?}");
        let got = numbers(&ddb, &fail_table).await;
        assert!(
            got.get("T").and_then(|t| t.get("sum")).is_none(),
            "nothing after the failing record is applied: {got:?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    drop(op);
    common::delete_namespace(&client, &ns).await;
}
