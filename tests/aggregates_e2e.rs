//! End to end on the local stack: `Count`, `Sum`, `Min` and `Max` views over the two log layouts that
//! broke the first release, an event-sourced log (`pk = ORDER#o<k>`, `sk = 1, 2, 3…` within each order, so
//! sort keys repeat across partitions) and a log without a sort key, backfilled from exports while more
//! records arrive, with the operator killed once mid-way; every view ends exactly equal to an independent
//! computation, and the `Count`/`Sum` backfills wrote about one item per aggregate (no marker per exported
//! record). Then a `Sum` view of the event-sourced log is re-keyed: version 2 is rebuilt beside version 1
//! while records arrive, promoted, and exact.

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

const HISTORY: usize = 2_400;
const MORE: usize = 600;
const STATUSES: &[&str] = &["new", "paid", "shipped", "cancelled|x#y"];

fn log_yaml(name: &str, sort_key: bool, bucket: &str) -> String {
    let sk = if sort_key { "sortKey: sk, " } else { "" };
    format!(
        r#"
apiVersion: kappa.dev/v1alpha1
kind: EventLog
metadata: {{name: {name}}}
spec:
  recordTypes: [order]
  table: {{{sk}orderingAttribute: seq}}
  fanOut: {{mode: Direct}}
  export: {{bucket: {bucket}, prefix: exports}}
  deletionPolicy: Delete
"#
    )
}

fn view_yaml(log: &str, name: &str, projection: &str) -> String {
    common::in_cluster_order_view(log, name, projection, "  backfill: {parallelism: 2}\n")
}

const PROJECTIONS: &[(&str, &str)] = &[
    ("count", "{mode: Count, key: {partitionKey: 'S#{status}'}}"),
    (
        "sum",
        "{mode: Sum, sumOf: amount, key: {partitionKey: 'C#{customer}'}}",
    ),
    (
        "min",
        "{mode: Min, minOf: amount, key: {partitionKey: 'C#{customer}'}}",
    ),
    (
        "max",
        "{mode: Max, maxOf: amount, key: {partitionKey: 'C#{customer}'}}",
    ),
];

/// Record `i` of a log: order `o<i % 97>`, its `n`-th event (`sk = n`, repeating across orders), or,
/// without a sort key, `pk = EVT#<i>`.
#[derive(Clone, Debug)]
struct Record {
    i: usize,
    status: &'static str,
    customer: String,
    amount: String,
}

fn record(i: usize) -> Record {
    let sign = if i.is_multiple_of(7) { "-" } else { "" };
    Record {
        i,
        status: STATUSES[i * 7 % STATUSES.len()],
        customer: format!("c{}", i % 13),
        amount: format!("{sign}{}.{:03}", i % 1000, i % 997),
    }
}

fn item(r: &Record, sort_key: bool) -> std::collections::HashMap<String, AttributeValue> {
    let s = |v: &str| AttributeValue::S(v.to_string());
    let mut item = std::collections::HashMap::from([
        ("type".to_string(), s("order")),
        ("status".to_string(), s(r.status)),
        ("customer".to_string(), s(&r.customer)),
        ("amount".to_string(), AttributeValue::N(r.amount.clone())),
        ("seq".to_string(), AttributeValue::N(r.i.to_string())),
    ]);
    if sort_key {
        item.insert("pk".into(), s(&format!("ORDER#o{}", r.i % 97)));
        item.insert("sk".into(), s(&(r.i / 97 + 1).to_string()));
    } else {
        item.insert("pk".into(), s(&format!("EVT#{}", r.i)));
    }
    item
}

async fn write(ddb: &aws_sdk_dynamodb::Client, table: &str, records: &[Record], sort_key: bool) {
    common::put_items(ddb, table, records.iter().map(|r| item(r, sort_key)).collect()).await;
}

/// `view → key → value`, computed from the records alone.
fn expected(records: &[Record]) -> BTreeMap<String, BTreeMap<String, BigDecimal>> {
    let mut out: BTreeMap<String, BTreeMap<String, BigDecimal>> = BTreeMap::new();
    for r in records {
        let amount = BigDecimal::from_str(&r.amount).unwrap();
        *out.entry("count".into())
            .or_default()
            .entry(format!("S#{}", r.status))
            .or_default() += BigDecimal::from(1);
        let key = format!("C#{}", r.customer);
        *out.entry("sum".into())
            .or_default()
            .entry(key.clone())
            .or_default() += amount.clone();
        let min = out
            .entry("min".into())
            .or_default()
            .entry(key.clone())
            .or_insert(amount.clone());
        if amount < *min {
            *min = amount.clone();
        }
        let max = out
            .entry("max".into())
            .or_default()
            .entry(key)
            .or_insert(amount.clone());
        if amount > *max {
            *max = amount;
        }
    }
    out
}

/// What the views of `log` hold, from their table, and how many marker items each has.
async fn actual(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    log: &str,
) -> (
    BTreeMap<String, BTreeMap<String, BigDecimal>>,
    BTreeMap<String, usize>,
) {
    let mut out: BTreeMap<String, BTreeMap<String, BigDecimal>> = BTreeMap::new();
    let mut markers: BTreeMap<String, usize> = BTreeMap::new();
    for item in common::scan_all(ddb, table).await {
        let Some(AttributeValue::S(pk)) = item.get("pk") else {
            continue;
        };
        for (view, _) in PROJECTIONS {
            let Some(rest) = pk.strip_prefix(&format!("{log}-{view}#")) else {
                continue;
            };
            if rest.starts_with("~applied#") {
                if !rest.starts_with("~applied#band#") {
                    *markers.entry(view.to_string()).or_default() += 1;
                }
                continue;
            }
            if let Some(AttributeValue::N(v)) = item.get(*view) {
                out.entry(view.to_string())
                    .or_default()
                    .insert(rest.to_string(), BigDecimal::from_str(v).unwrap());
            }
        }
    }
    (out, markers)
}

#[tokio::test]
async fn aggregates_are_exact_on_repeating_and_missing_sort_keys_through_backfill_live_and_a_kill() {
    let (client, ns) = common::setup("aggregates-e2e").await;
    let aws = common::aws_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let (_s3, bucket) = export_bucket(&aws, &ns).await;
    let mut op = Operator::start(&ns, "run0", 5);
    let logs = [("orders", true), ("flat", false)];
    let mut tables = BTreeMap::new();
    for (name, sort_key) in logs {
        common::create_yaml(&client, &ns, &log_yaml(name, sort_key, &bucket))
            .await
            .unwrap();
        tables.insert(name, common::log_table(&client, &ns, name).await);
    }
    let all: Vec<Record> = (0..HISTORY + MORE).map(record).collect();
    for (name, sort_key) in logs {
        write(&ddb, &tables[name], &all[..HISTORY], sort_key).await;
    }
    // The history is older than the export time minus the band margin (30 s), so the backfill, not the
    // live path, counts it.
    tokio::time::sleep(Duration::from_secs(35)).await;
    for (log, _) in logs {
        for (view, projection) in PROJECTIONS {
            let yaml = view_yaml(log, &format!("{log}-{view}"), projection);
            common::create_yaml(&client, &ns, &yaml).await.unwrap();
        }
    }
    let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
    common::eventually(Duration::from_secs(120), "the exports to start", || async {
        let vs = mvs.list(&Default::default()).await.ok()?.items;
        let started = vs
            .iter()
            .filter(|v| {
                v.status
                    .as_ref()
                    .and_then(|s| s.backfill.as_ref()?.export_arn.clone())
                    .is_some()
            })
            .count();
        (started == vs.len() && !vs.is_empty()).then_some(())
    })
    .await;
    // More records while the backfills wait for their bands and run; the operator is killed once.
    for (i, chunk) in all[HISTORY..].chunks(100).enumerate() {
        for (name, sort_key) in logs {
            write(&ddb, &tables[name], chunk, sort_key).await;
        }
        if i == 2 {
            op.kill();
            op = Operator::start(&ns, "run1", 5);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    common::eventually(Duration::from_secs(300), "every view Live", || async {
        let vs = mvs.list(&Default::default()).await.ok()?.items;
        (vs.len() == 2 * PROJECTIONS.len()
            && vs
                .iter()
                .all(|v| v.status.as_ref().and_then(|s| s.phase) == Some(ViewPhase::Live)))
        .then_some(())
    })
    .await;
    let want = expected(&all);
    for (log, _) in logs {
        let table = mvs
            .get(&format!("{log}-count"))
            .await
            .unwrap()
            .status
            .unwrap()
            .table_name
            .unwrap();
        let got = common::eventually(Duration::from_secs(120), "the views exact", || async {
            let (got, markers) = actual(&ddb, &table, log).await;
            (got == want).then_some((got, markers))
        })
        .await;
        let (_, markers) = got;
        for view in ["count", "sum"] {
            let n = markers.get(view).copied().unwrap_or(0);
            assert!(
                n < HISTORY / 2,
                "{log}-{view}: {n} markers; the backfill must pre-aggregate the {HISTORY} exported records"
            );
        }
    }

    // A changed projection on the event-sourced log: `orders-sum` re-keyed by status is rebuilt as
    // version 2 (its own prefix, backfilled from a new export) while records keep arriving, then
    // promoted; version 2 is exact over every record.
    let patch = serde_json::json!({"spec": {"projection": {"key": {"partitionKey": "S#{status}"}}}});
    mvs.patch(
        "orders-sum",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
    let extra: Vec<Record> = (HISTORY + MORE..HISTORY + MORE + 300).map(record).collect();
    for chunk in extra.chunks(50) {
        write(&ddb, &tables["orders"], chunk, true).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let everything: Vec<Record> = all.iter().chain(&extra).cloned().collect();
    let mut by_status: BTreeMap<String, BigDecimal> = BTreeMap::new();
    for r in &everything {
        *by_status.entry(format!("S#{}", r.status)).or_default() += BigDecimal::from_str(&r.amount).unwrap();
    }
    let promoted = common::eventually(Duration::from_secs(300), "version 2 promoted", || async {
        let s = mvs.get("orders-sum").await.ok()?.status?;
        (s.active_version == Some(2)).then_some(s)
    })
    .await;
    let prefix = promoted.key_prefix.clone().unwrap();
    assert!(prefix.starts_with("~v2~"), "{prefix}");
    let table = promoted.table_name.clone().unwrap();
    common::eventually(Duration::from_secs(120), "version 2 exact", || async {
        let mut got: BTreeMap<String, BigDecimal> = BTreeMap::new();
        for item in common::scan_all(&ddb, &table).await {
            let (Some(AttributeValue::S(pk)), Some(AttributeValue::N(sum))) =
                (item.get("pk"), item.get("sum"))
            else {
                continue;
            };
            if let Some(key) = pk.strip_prefix(&prefix) {
                got.insert(key.to_string(), BigDecimal::from_str(sum).unwrap());
            }
        }
        (got == by_status).then_some(())
    })
    .await;
    drop(op);
    common::delete_namespace(&client, &ns).await;
}
