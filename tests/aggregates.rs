//! Property-based tests of every projection mode over generated logs, as users' logs look: unique sort
//! keys, sort keys repeating across partitions (`pk = entity`, `sk = 1, 2, 3…`), no sort key, numeric
//! keys, separators and unicode in values; delivered with duplicates, redelivery and reordering.
//!
//! Each case is applied through the in-memory reference ([`MemoryStore`]) and, for a smaller number of
//! cases, through the views-table writer against the local stack's AWS API; both must equal an
//! independent computation over the distinct records (no engine code involved but the record identity
//! used for `Latest` ties, which is the documented rule).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use bigdecimal::BigDecimal;
use kappa_operator::aws::views::ViewTableWriter;
use kappa_operator::crd::{EventLogSpec, MaterializedViewSpec};
use kappa_operator::projection::{Item, MemoryStore, Number, ProjectionConfig, RecordId, Value, ViewWrite};
use proptest::prelude::*;

/// How the log's records are keyed.
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// `pk = E#<entity>`, `sk = <global index>`: sort keys unique across the log.
    UniqueSortKeys,
    /// `pk = E#<entity>`, `sk = 1, 2, 3…` within each entity: sort keys repeat across partitions.
    RepeatingSortKeys,
    /// `pk = R#<index>`, no sort key.
    NoSortKey,
    /// `pk` and `sk` are numbers; sort keys repeat across partitions.
    NumericKeys,
}

#[derive(Clone, Debug)]
struct Record {
    item: Item,
    group: String,
    amount: Number,
    seq: i64,
}

/// Group values with the characters key encodings trip over.
const GROUPS: &[&str] = &["a", "a|b", "x#y", "~z", "é", "日本", "a#b|c~d", "1"];
/// Amounts whose sums stay within DynamoDB's 38 significant digits in any order.
const AMOUNTS: &[&str] = &[
    "1",
    "-2.5",
    "0.1",
    "1000000000000000000000000000000000000",
    "-999999999999999999999999999999999999",
    "42",
    "7.0",
    "0",
];

fn s(v: &str) -> Value {
    Value::S(v.to_string())
}

fn n(v: &str) -> Value {
    Value::N(Number::parse(v).unwrap())
}

fn log_spec(layout: Layout) -> EventLogSpec {
    let sort_key = match layout {
        Layout::NoSortKey => "",
        _ => ", sortKey: sk",
    };
    serde_yaml::from_str(&format!(
        "recordTypes: [order]\ntable: {{partitionKey: pk{sort_key}, orderingAttribute: seq}}"
    ))
    .unwrap()
}

/// The records of a log of `layout`: `(entity, group, amount, seq)` each.
fn records(layout: Layout, raw: &[(u8, u8, u8, u8)]) -> Vec<Record> {
    let mut per_entity: HashMap<u8, u32> = HashMap::new();
    raw.iter()
        .enumerate()
        .map(|(i, &(entity, group, amount, seq))| {
            let counter = per_entity.entry(entity).or_default();
            *counter += 1;
            let (pk, sk) = match layout {
                Layout::UniqueSortKeys => (s(&format!("E#{entity}")), Some(s(&i.to_string()))),
                Layout::RepeatingSortKeys => (s(&format!("E#{entity}")), Some(s(&counter.to_string()))),
                Layout::NoSortKey => (s(&format!("R#{i}|{entity}")), None),
                Layout::NumericKeys => (n(&entity.to_string()), Some(n(&counter.to_string()))),
            };
            let group = GROUPS[group as usize % GROUPS.len()].to_string();
            let amount = Number::parse(AMOUNTS[amount as usize % AMOUNTS.len()]).unwrap();
            let seq = i64::from(seq % 4); // few values: ties are common
            let mut item = Item::from([
                ("pk".to_string(), pk),
                ("type".to_string(), s("order")),
                ("g".to_string(), s(&group)),
                ("amount".to_string(), Value::N(amount.clone())),
                ("seq".to_string(), Value::N(Number::from(seq))),
            ]);
            if let Some(sk) = sk {
                item.insert("sk".to_string(), sk);
            }
            Record { item, group, amount, seq }
        })
        .collect()
}

const MODES: &[&str] = &[
    "{mode: Count, key: {partitionKey: 'K#{g}'}}",
    "{mode: Sum, sumOf: amount, key: {partitionKey: 'K#{g}'}}",
    "{mode: Min, minOf: amount, key: {partitionKey: 'K#{g}'}}",
    "{mode: Max, maxOf: amount, key: {partitionKey: 'K#{g}'}}",
    "{mode: Latest, key: {partitionKey: 'K#{g}'}, attributes: [{from: amount}, {from: seq}]}",
];

fn config(layout: Layout, projection: &str, prefix: &str) -> ProjectionConfig {
    let view: MaterializedViewSpec = serde_yaml::from_str(&format!(
        "eventLogRef: {{name: log}}\nrecordTypes: [order]\nprojection: {projection}"
    ))
    .unwrap();
    ProjectionConfig::from_spec("v", &view, &log_spec(layout), prefix).unwrap()
}

/// What each mode's view must hold per group, computed directly from the distinct records:
/// `group -> attribute -> value text` (numbers compared by value).
fn expected(layout: Layout, projection: &str, records: &[Record]) -> BTreeMap<String, BigDecimal> {
    let mut out: BTreeMap<String, BigDecimal> = BTreeMap::new();
    let mut latest: BTreeMap<String, (i64, String, BigDecimal)> = BTreeMap::new();
    for r in records {
        let value = r.amount.value().clone();
        if projection.contains("Count") {
            *out.entry(r.group.clone()).or_default() += BigDecimal::from(1);
        } else if projection.contains("Sum") {
            *out.entry(r.group.clone()).or_default() += value;
        } else if projection.contains("Min") {
            let e = out.entry(r.group.clone()).or_insert(value.clone());
            if value < *e {
                *e = value;
            }
        } else if projection.contains("Max") {
            let e = out.entry(r.group.clone()).or_insert(value.clone());
            if value > *e {
                *e = value;
            }
        } else {
            let sk = match layout {
                Layout::NoSortKey => None,
                _ => r.item.get("sk"),
            };
            let digest = RecordId::new(&r.item["pk"], sk).unwrap().digest();
            let candidate = (r.seq, digest, value);
            let e = latest.entry(r.group.clone()).or_insert(candidate.clone());
            if (candidate.0, &candidate.1) > (e.0, &e.1) {
                *e = candidate;
            }
        }
    }
    for (g, (_, _, amount)) in latest {
        out.insert(g, amount);
    }
    out
}

/// The attribute a mode's view item holds its value in.
fn attribute(projection: &str) -> &'static str {
    for (mode, attr) in [("Count", "count"), ("Sum", "sum"), ("Min", "min"), ("Max", "max")] {
        if projection.contains(mode) {
            return attr;
        }
    }
    "amount"
}

/// The order in which records are delivered: every record at least once, some again, shuffled.
fn deliveries(count: usize, extra: &[u16], seed: &[u16]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..count).collect();
    order.extend(extra.iter().map(|e| *e as usize % count));
    for (i, k) in seed.iter().enumerate() {
        let (a, b) = (i % order.len(), *k as usize % order.len());
        order.swap(a, b);
    }
    order
}

fn layout_strategy() -> impl Strategy<Value = Layout> {
    prop_oneof![
        Just(Layout::UniqueSortKeys),
        Just(Layout::RepeatingSortKeys),
        Just(Layout::NoSortKey),
        Just(Layout::NumericKeys),
    ]
}

type Case = (Layout, Vec<(u8, u8, u8, u8)>, Vec<u16>, Vec<u16>);

fn case_strategy(max_records: usize) -> impl Strategy<Value = Case> {
    (
        layout_strategy(),
        prop::collection::vec((0u8..5, any::<u8>(), any::<u8>(), any::<u8>()), 1..max_records),
        prop::collection::vec(any::<u16>(), 0..max_records),
        prop::collection::vec(any::<u16>(), 0..2 * max_records),
    )
}

fn by_group(items: impl Iterator<Item = Item>, prefix: &str, attr: &str) -> BTreeMap<String, BigDecimal> {
    items
        .filter_map(|item| {
            let pk = item.get("pk")?.as_s()?.to_string();
            let group = pk.strip_prefix(prefix)?.strip_prefix("K#")?.to_string();
            match item.get(attr)? {
                Value::N(v) => Some((group, v.value().clone())),
                _ => None,
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The reference store applies every mode exactly, whatever the layout and delivery.
    #[test]
    fn the_reference_store_is_exact_on_every_layout((layout, raw, extra, seed) in case_strategy(40)) {
        let records = records(layout, &raw);
        let order = deliveries(records.len(), &extra, &seed);
        for projection in MODES {
            let config = config(layout, projection, "v#");
            let mut store = MemoryStore::new();
            for &i in &order {
                if let Some(write) = config.project(&records[i].item).unwrap() {
                    store.apply(&write).unwrap();
                }
            }
            let got = by_group(store.items().cloned(), "v#", attribute(projection));
            prop_assert_eq!(got, expected(layout, projection, &records), "{:?} {}", layout, projection);
        }
    }
}

/// The views-table writer on the local stack: the same cases, delivered in batches that overlap
/// (redelivery) and repeat, through one shared table with a prefix per view.
#[test]
fn the_dynamodb_writer_is_exact_on_every_layout() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ddb = runtime.block_on(async {
        let config = common::aws_config().await;
        aws_sdk_dynamodb::Client::new(&config)
    });
    let ddb = Arc::new(ddb);
    let mut runner =
        proptest::test_runner::TestRunner::new(ProptestConfig { cases: 16, ..ProptestConfig::default() });
    let case = std::sync::atomic::AtomicUsize::new(0);
    runner
        .run(
            &(case_strategy(60), 1usize..7),
            |((layout, raw, extra, seed), batch)| {
                let records = records(layout, &raw);
                let order = deliveries(records.len(), &extra, &seed);
                let case = case.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                runtime.block_on(async {
                    // A table per case (shared by its five views, a prefix each), so each scan stays small.
                    let table = format!("aggregates-{}-{case}", std::process::id());
                    common::create_pk_sk_table(&ddb, &table).await;
                    for (m, projection) in MODES.iter().enumerate() {
                        let prefix = format!("c{case}m{m}#");
                        let config = config(layout, projection, &prefix);
                        let writer = ViewTableWriter::new((*ddb).clone(), &table, &prefix, 4);
                        let writes: Vec<ViewWrite> = order
                            .iter()
                            .filter_map(|&i| config.project(&records[i].item).unwrap())
                            .collect();
                        // Batches of `batch` writes; every other batch is delivered twice (redelivery).
                        for (b, chunk) in writes.chunks(batch).enumerate() {
                            let stats = writer.apply(chunk.to_vec()).await.expect("apply");
                            assert!(stats.rejected.is_empty(), "{:?}", stats.rejected);
                            if b % 2 == 1 {
                                writer.apply(chunk.to_vec()).await.expect("redelivery");
                            }
                        }
                        let items = common::scan_all(&ddb, &table).await;
                        let items = items.into_iter().filter_map(|raw| {
                            let pk = match raw.get("pk") {
                                Some(AttributeValue::S(pk)) => pk.clone(),
                                _ => return None,
                            };
                            (pk.starts_with(&prefix) && !pk.contains("~applied#"))
                                .then(|| kappa_operator::projection::item_from_dynamodb(raw).unwrap())
                        });
                        let got = by_group(items, &prefix, attribute(projection));
                        let want = expected(layout, projection, &records);
                        prop_assert_eq!(got, want, "{:?} {} batch {}", layout, projection, batch);
                    }
                    Ok(())
                })
            },
        )
        .unwrap();
}

/// Many records of one key in one call, some in the live path's band: a key is never in one transaction
/// twice (DynamoDB refuses a transaction that touches an item twice), and every record counts once.
#[test]
fn a_hot_key_with_band_records_is_applied_in_transactions_that_touch_it_once() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let config = common::aws_config().await;
        let ddb = aws_sdk_dynamodb::Client::new(&config);
        let table = format!("hot-band-{}", std::process::id());
        common::create_pk_sk_table(&ddb, &table).await;
        let view = self::config(
            Layout::RepeatingSortKeys,
            "{mode: Count, key: {partitionKey: 'K#{g}'}}",
            "v#",
        );
        let log = records(
            Layout::RepeatingSortKeys,
            &(0..130).map(|i| (i as u8 % 5, 0u8, 0u8, 0u8)).collect::<Vec<_>>(),
        );
        let writes: Vec<ViewWrite> = log
            .iter()
            .filter_map(|r| view.project(&r.item).unwrap())
            .collect();
        // Every third record is in the band: chunks of 49 hold fewer than 98 actions, so two would fit.
        let band: std::collections::HashSet<RecordId> = writes
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 == 0)
            .filter_map(|(_, w)| match w {
                ViewWrite::Add { record, .. } => Some(record.clone()),
                _ => None,
            })
            .collect();
        let writer = ViewTableWriter::new(ddb.clone(), &table, "v#", 4).with_live_attempt(Some(1));
        let stats = writer
            .apply_with_band(writes.clone(), &band)
            .await
            .expect("no transaction touches an item twice");
        assert_eq!(stats.applied, 130, "{stats:?}");
        writer.apply_with_band(writes, &band).await.expect("redelivery");
        let items = common::scan_all(&ddb, &table).await;
        let items = items
            .into_iter()
            .map(|raw| kappa_operator::projection::item_from_dynamodb(raw).unwrap());
        let got = by_group(items, "v#", "count");
        assert_eq!(got[GROUPS[0]], BigDecimal::from(130));
        let bands = common::scan_all(&ddb, &table)
            .await
            .iter()
            .filter(|i| matches!(i.get("pk"), Some(AttributeValue::S(pk)) if pk.contains("~applied#band#")))
            .count();
        assert_eq!(bands, band.len());
    });
}

/// A Sum DynamoDB cannot store is a record error of the record that overflows it, never a stall: the
/// writer rejects exactly that record and applies every other, of the same key and of others.
#[test]
fn an_unstorable_sum_rejects_only_its_record() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let config = common::aws_config().await;
        let ddb = aws_sdk_dynamodb::Client::new(&config);
        let table = format!("overflow-{}", std::process::id());
        common::create_pk_sk_table(&ddb, &table).await;
        let projection = "{mode: Sum, sumOf: amount, key: {partitionKey: 'K#{g}'}}";
        let view = self::config(Layout::UniqueSortKeys, projection, "v#");
        let big = "9".repeat(38);
        let record = |i: usize, g: &str, amount: &str| {
            Item::from([
                ("pk".to_string(), s(&format!("E#{i}"))),
                ("sk".to_string(), s("1")),
                ("type".to_string(), s("order")),
                ("g".to_string(), s(g)),
                ("amount".to_string(), n(amount)),
                ("seq".to_string(), n("1")),
            ])
        };
        let log = [
            record(0, "hot", &big),
            record(1, "hot", "0.5"), // 99…9.5 has 39 significant digits: DynamoDB cannot store it
            record(2, "hot", "-5"),
            record(3, "cold", "2.5"),
        ];
        let writer = ViewTableWriter::new(ddb.clone(), &table, "v#", 4);
        let writes: Vec<ViewWrite> = log.iter().filter_map(|r| view.project(r).unwrap()).collect();
        let stats = writer.apply(writes.clone()).await.expect("no stall");
        let again = writer.apply(writes).await.expect("redelivery");
        let items = common::scan_all(&ddb, &table).await;
        let items = items
            .into_iter()
            .map(|raw| kappa_operator::projection::item_from_dynamodb(raw).unwrap());
        let got = by_group(items, "v#", "sum");
        let hot: BigDecimal = big.parse::<BigDecimal>().unwrap() - BigDecimal::from(5);
        assert_eq!(got["hot"], hot, "{stats:?}");
        assert_eq!(got["cold"], "2.5".parse::<BigDecimal>().unwrap());
        // The writer applies a refused group's records one by one, in order: the second is rejected.
        assert_eq!(
            stats.rejected.len() + again.rejected.len(),
            2,
            "{stats:?} {again:?}"
        );
        assert_eq!(stats.rejected.len(), 1, "{stats:?}");
        assert!(
            stats.rejected[0].reason.contains("38 significant digits"),
            "{stats:?}"
        );
    });
}
