//! The `orders` log's records and its in-cluster `Count` views' figures, for the shared-reader tests
//! (tests/shared_reader.rs, tests/break18_shared.rs).

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;

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
