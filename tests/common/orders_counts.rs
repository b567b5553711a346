//! The `orders` log's records and its in-cluster `Count` views' figures, for the shared-reader tests
//! (tests/shared_reader.rs, tests/break18_shared.rs).

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;

use kappa_operator::crd::MaterializedView;
use kube::Api;
use std::time::Duration;

use super::Operator;

pub const IDS: usize = 3;

pub fn order(i: usize) -> HashMap<String, AttributeValue> {
    let s = |v: String| AttributeValue::S(v);
    HashMap::from([
        ("pk".to_string(), s(format!("order#{i}"))),
        ("sk".to_string(), s("order".into())),
        ("type".to_string(), s("order".into())),
        ("id".to_string(), s(format!("{}", i % IDS))),
    ])
}

/// `kappa_stream_readers` and `kappa_stream_views` of the operator, summed over streams:
/// `(readers, joined, catching_up)`.
pub async fn readers(op: &Operator) -> Option<(i64, i64, i64)> {
    let text = op.metrics().await?;
    let mut out = (0, 0, 0);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<i64>() else { continue };
        if name.starts_with("kappa_stream_readers{") {
            out.0 += value;
        } else if name.starts_with("kappa_stream_views{") && name.contains("state=\"joined\"") {
            out.1 += value;
        } else if name.starts_with("kappa_stream_views{") && name.contains("state=\"catching_up\"") {
            out.2 += value;
        }
    }
    Some(out)
}

/// Each view's counts per id, from the shared views table (`pk = <view>#C#<id>`, attribute `count`).
pub async fn counts(ddb: &aws_sdk_dynamodb::Client, table: &str) -> BTreeMap<String, BTreeMap<String, i64>> {
    let mut out: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for item in super::scan_all(ddb, table).await {
        let (Some(AttributeValue::S(pk)), Some(AttributeValue::N(n))) = (item.get("pk"), item.get("count"))
        else {
            continue;
        };
        if let Some((view, key)) = pk.split_once("#C#") {
            out.entry(view.to_string())
                .or_default()
                .insert(key.to_string(), n.parse().unwrap());
        }
    }
    out
}

pub fn expected(records: usize) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for i in 0..records {
        *out.entry(format!("{}", i % IDS)).or_default() += 1;
    }
    out
}

/// A namespace of `test`'s own with an operator watching it (identity `solo`, 5 s lease, its log path
/// printed) and the `orders` log created: what the shared-reader tests start from.
pub struct OrdersLog {
    pub client: kube::Client,
    pub ns: String,
    pub op: Operator,
    pub log_table: String,
    pub ddb: aws_sdk_dynamodb::Client,
    pub mvs: Api<MaterializedView>,
}

pub async fn orders_log(test: &str) -> OrdersLog {
    let (client, ns) = super::setup(test).await;
    let op = Operator::start(&ns, "solo", 5);
    eprintln!("operator log: {}", op.log_path.display());
    super::create_yaml(&client, &ns, super::ORDERS_LOG).await.unwrap();
    let log_table = super::log_table(&client, &ns, "orders").await;
    let ddb = aws_sdk_dynamodb::Client::new(&super::aws_config().await);
    let mvs = Api::namespaced(client.clone(), &ns);
    OrdersLog { client, ns, op, log_table, ddb, mvs }
}

/// Samples the operator's `kappa_stream_readers` every 100 ms: the most seen at once.
pub fn sample_readers(
    port: u16,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicI64>,
    tokio::task::JoinHandle<()>,
) {
    let most = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let handle = {
        let most = most.clone();
        tokio::spawn(async move {
            loop {
                if let Some(text) = super::http_get(port, "/metrics").await {
                    let n: i64 = text
                        .lines()
                        .filter(|l| l.starts_with("kappa_stream_readers{"))
                        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<i64>().ok())
                        .sum();
                    most.fetch_max(n, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    (most, handle)
}

pub async fn wait_ready(mvs: &Api<MaterializedView>, name: &str) {
    super::eventually(Duration::from_secs(120), &format!("{name} Ready"), || async {
        super::view_ready(mvs, name).await.then_some(())
    })
    .await;
}
