//! Breaker #13, end to end on the local stack (the real operator binary): pre-aggregated `Count`/`Sum`
//! backfills against records that come back through the stream.

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

fn view_yaml(log: &str, name: &str, projection: &str) -> String {
    common::in_cluster_order_view(log, name, projection, "  store: {table: Dedicated}\n")
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn n(v: &str) -> AttributeValue {
    AttributeValue::N(v.to_string())
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

fn order(i: usize, note: &str) -> Vec<(&'static str, AttributeValue)> {
    vec![
        ("pk", s(&format!("ORDER#{i}"))),
        ("sk", s("1")),
        ("type", s("order")),
        ("amount", n("2")),
        ("seq", n(&i.to_string())),
        ("note", s(note)),
    ]
}

/// README "Nothing lost, nothing doubled" / `marker_key`: "a record counts once in a view for the view's
/// whole life, whichever path (backfill, live, a gap's new backfill, a redelivery) brings it". Input: 10
/// orders written well before the view (outside the band), a `Count` and a `Sum` view (in-cluster, so
/// pre-aggregated: no marker per backfilled record); once Live and past the band, a producer re-puts
/// ORDER#3 with one attribute changed (a retried write carrying a new `note`: a MODIFY stream record;
/// the in-cluster live path projects `Insert | Modify`). Expected: count 10, sum 20. Found (if failing):
/// the backfill wrote ORDER#3 into the base without a marker, so the live path finds no marker for it
/// and counts it again: 11 and 22. A per-record backfill (Lambda runtime) would have found the marker.
#[tokio::test]
async fn a_re_put_log_record_counts_once_after_a_pre_aggregated_backfill() {
    let (client, ns) = common::setup("break13-reput").await;
    let aws = common::aws_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let (_s3, bucket) = export_bucket(&aws, &ns).await;
    let op = Operator::start(&ns, "run0", 5);
    common::create_yaml(&client, &ns, &log_yaml("orders", &bucket))
        .await
        .unwrap();
    let log = common::log_table(&client, &ns, "orders").await;
    for i in 0..10 {
        put(&ddb, &log, &order(i, "first")).await;
    }
    tokio::time::sleep(Duration::from_secs(32)).await;
    for (name, projection) in [
        ("counts", "{mode: Count, key: {partitionKey: 'T'}}"),
        ("sums", "{mode: Sum, sumOf: amount, key: {partitionKey: 'T'}}"),
    ] {
        common::create_yaml(&client, &ns, &view_yaml("orders", name, projection))
            .await
            .unwrap();
    }
    let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
    common::eventually(Duration::from_secs(180), "the views Live", || async {
        for name in ["counts", "sums"] {
            let v = mvs.get(name).await.ok()?;
            (v.status?.phase? == ViewPhase::Live).then_some(())?;
        }
        Some(())
    })
    .await;
    let tables: Vec<String> = {
        let mut t = Vec::new();
        for name in ["counts", "sums"] {
            t.push(mvs.get(name).await.unwrap().status.unwrap().table_name.unwrap());
        }
        t
    };
    let read = || async {
        let c = numbers(&ddb, &tables[0])
            .await
            .get("T")
            .and_then(|t| t.get("count").cloned());
        let s = numbers(&ddb, &tables[1])
            .await
            .get("T")
            .and_then(|t| t.get("sum").cloned());
        (c, s)
    };
    let want = (Some(BigDecimal::from(10)), Some(BigDecimal::from(20)));
    common::eventually(
        Duration::from_secs(60),
        "10 and 20 after the backfill",
        || async { (read().await == want).then_some(()) },
    )
    .await;
    // Past the band, the producer re-puts ORDER#3 with a changed note, and writes one new order.
    tokio::time::sleep(Duration::from_secs(32)).await;
    put(&ddb, &log, &order(3, "retried")).await;
    put(&ddb, &log, &order(10, "first")).await;
    let want = (Some(BigDecimal::from(11)), Some(BigDecimal::from(22)));
    let mut got = read().await;
    for _ in 0..30 {
        let applied = mvs
            .get("counts")
            .await
            .ok()
            .and_then(|v| v.status?.live.map(|l| l.records_applied))
            .unwrap_or(0);
        got = read().await;
        if applied >= 2 && got.0 >= want.0 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            got = read().await;
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    drop(op);
    common::delete_namespace(&client, &ns).await;
    assert_eq!(
        got, want,
        "11 orders, each counted once (ORDER#3 re-put with a changed attribute)"
    );
}
