//! QA cases against the aggregates work of issue #13 (record identity, Count/Sum markers + ADD,
//! Min/Max, Latest ties, backfill partials, record errors), with inputs invented to break it.
//!
//! Pure cases run anywhere; the cases through the views-table writer need the local stack
//! (`hack/stack.sh up && source .stack/env`).
//!
//! Each test states the expected behaviour per issue #13 / README. Tests that pass are kept: they show
//! what was tried and held.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use aws_sdk_dynamodb::types::AttributeValue;
use bigdecimal::BigDecimal;
use kappa_operator::aws::views::ViewTableWriter;
use kappa_operator::backfill::aggregate::Partials;
use kappa_operator::crd::{EventLogSpec, MaterializedViewSpec};
use kappa_operator::projection::{
    Item, MemoryStore, Number, ProjectionConfig, RecordId, Value, ViewWrite, item_from_dynamodb,
};

fn s(v: &str) -> Value {
    Value::S(v.to_string())
}

fn n(v: &str) -> Value {
    Value::N(Number::parse(v).unwrap())
}

fn log_spec(sort_key: bool) -> EventLogSpec {
    let sk = if sort_key { ", sortKey: sk" } else { "" };
    serde_yaml::from_str(&format!(
        "recordTypes: [order]\ntable: {{partitionKey: pk{sk}, orderingAttribute: seq}}"
    ))
    .unwrap()
}

fn config(projection: &str, prefix: &str, sort_key: bool) -> ProjectionConfig {
    named("v", projection, prefix, sort_key)
}

fn named(name: &str, projection: &str, prefix: &str, sort_key: bool) -> ProjectionConfig {
    let view: MaterializedViewSpec = serde_yaml::from_str(&format!(
        "eventLogRef: {{name: log}}\nrecordTypes: [order]\nprojection: {projection}"
    ))
    .unwrap();
    ProjectionConfig::from_spec(name, &view, &log_spec(sort_key), prefix).unwrap()
}

fn record(pk: Value, sk: Option<Value>, attrs: &[(&str, Value)]) -> Item {
    let mut item = Item::from([("pk".to_string(), pk), ("type".to_string(), s("order"))]);
    if let Some(sk) = sk {
        item.insert("sk".to_string(), sk);
    }
    for (k, v) in attrs {
        item.insert(k.to_string(), v.clone());
    }
    item
}

fn num(text: &str) -> BigDecimal {
    text.parse().unwrap()
}

// ------------------------------------------------------------------------------------------ pure cases

/// Issue #13 §1: "The identity of a record ... is the log record's whole key ... keys may be numbers";
/// `RecordId` documents `B` as one of DynamoDB's three key types and encodes it (base64). An adopted log
/// table keyed by a binary attribute is accepted (`check_keys` compares names only), so its records must
/// project. Expected: a Count write for the record. Found: every such record is a record error
/// (`ProjectionError::LogKey`), because `engine.rs` `log_record_keys` reads the key through `key_text`,
/// which accepts only `S` and `N`.
#[test]
fn binary_log_keys_count_as_records() {
    let view = config("{mode: Count, key: {partitionKey: 'K#{g}'}}", "v#", true);
    let rec = record(
        Value::B(vec![0x00, 0xff, 0x10]),
        Some(Value::B(vec![1])),
        &[("g", s("x"))],
    );
    let write = view.project(&rec);
    assert!(
        matches!(write, Ok(Some(ViewWrite::Add { .. }))),
        "a record with a binary log key must count: {write:?}"
    );
}

/// Issue #13 §1: identity "encoded unambiguously (values may contain `|`, `#`, `~` ...)". An `Append`
/// view without a sortKey template keys each item by the log record's own key, so that a replay
/// overwrites the same item — its idempotency mechanism. Expected: two distinct records give two view
/// items. Found: the default Append sort key is `format!("{pk}|{sk}")` (`engine.rs` `prepare`,
/// `(None, Mode::Append)`), so `pk="a|b", sk="c"` and `pk="a", sk="b|c"` write the same item and one
/// record silently replaces the other (lost data).
#[test]
fn append_items_of_records_whose_log_keys_hold_a_pipe_stay_apart() {
    let view = config("{mode: Append, key: {partitionKey: 'ALL'}}", "v#", true);
    let one = record(s("a|b"), Some(s("c")), &[("g", s("first"))]);
    let two = record(s("a"), Some(s("b|c")), &[("g", s("second"))]);
    let mut store = MemoryStore::new();
    for r in [&one, &two] {
        store.apply(&view.project(r).unwrap().unwrap()).unwrap();
    }
    assert_eq!(
        store.len(),
        2,
        "two log records, two Append items: {:?}",
        store.items().collect::<Vec<_>>()
    );
}

/// Issue #13 §1 (numbers as keys; same rule): the same with a numeric part, `pk=1|2` (S) vs. `pk=1`,
/// `sk=2` — no sort key template, Append.
#[test]
fn append_items_of_records_without_sort_key_and_with_one_can_collide() {
    // A log without a sort key: Append's sort key is the pk text alone.
    let view = config("{mode: Append, key: {partitionKey: 'ALL'}}", "v#", false);
    let a = record(s("7"), None, &[]);
    let b = record(n("7"), None, &[]); // an adopted log may have a numeric key; text "7" either way
    let (wa, wb) = (
        view.project(&a).unwrap().unwrap(),
        view.project(&b).unwrap().unwrap(),
    );
    // Only one log can exist here (one key type per table), so this one is not a fault: it documents that
    // Append keys are the key's text. Kept as a passing case.
    assert_eq!(wa.view_key(), wb.view_key());
}

/// Found by QA: +9E125, +9E125, −9E125 of one key in two data files. Applied one record at a time (the
/// reference store) the second overflows and the total is 0; the backfill summed per file. The contract
/// since: the backfill's partial sums are exact and unbounded, so its base is the exact total of the
/// export's records (9E125), whatever their order and files; only a base DynamoDB cannot store is an
/// error. (A running total that leaves DynamoDB's range is order-dependent with `ADD` itself: the
/// reference store, fed in another order, agrees with the backfill.)
#[test]
fn the_backfill_base_of_a_sum_that_leaves_the_range_and_returns_is_the_exact_total() {
    let view = config("{mode: Sum, sumOf: amount, key: {partitionKey: 'K'}}", "v#", true);
    let log: Vec<Item> = ["9E125", "9E125", "-9E125"]
        .iter()
        .enumerate()
        .map(|(i, a)| record(s(&format!("E#{i}")), Some(s("1")), &[("amount", n(a))]))
        .collect();
    let writes: Vec<ViewWrite> = log.iter().map(|r| view.project(r).unwrap().unwrap()).collect();
    // The reference store in an order whose running total stays in range: a, c, b.
    let mut store = MemoryStore::new();
    for i in [0, 2, 1] {
        store.apply(&writes[i]).unwrap();
    }
    let reference = match &store.get("v#K", "TOTAL").unwrap()["sum"] {
        Value::N(v) => v.value().clone(),
        other => panic!("{other:?}"),
    };
    let (mut file1, mut file2) = (Partials::default(), Partials::default());
    for (i, w) in writes.into_iter().enumerate() {
        let file = if i == 0 { &mut file1 } else { &mut file2 };
        file.take(w, &HashSet::new()).unwrap();
    }
    assert!(file1.merge(file2).is_empty());
    let (bases, _, refused) = file1.split();
    assert!(refused.is_empty(), "{refused:?}");
    let backfill = bases[&("v#K".to_string(), "TOTAL".to_string(), "sum".to_string())]
        .value()
        .clone();
    assert_eq!(backfill, reference);
}

/// Found by QA: merging two data files' partials whose sum left DynamoDB's range dropped the second
/// file's records, good ones included, as one error naming no record. Since: merging never drops a file
/// (sums are unbounded until the end); a base DynamoDB cannot store is reported for its aggregate (the
/// records of that key together cannot be stored; no single record is at fault), and every other
/// aggregate is folded.
#[test]
fn merging_data_file_partials_never_drops_a_file_and_an_unstorable_base_names_its_aggregate() {
    let view = config(
        "{mode: Sum, sumOf: amount, key: {partitionKey: '{g}'}}",
        "v#",
        true,
    );
    let w = |i: usize, g: &str, a: &str| {
        view.project(&record(
            s(&format!("E#{i}")),
            Some(s("1")),
            &[("g", s(g)), ("amount", n(a))],
        ))
        .unwrap()
        .unwrap()
    };
    let mut file1 = Partials::default();
    file1.take(w(0, "K", "9E125"), &HashSet::new()).unwrap();
    file1.take(w(1, "L", "9E125"), &HashSet::new()).unwrap();
    let mut file2 = Partials::default();
    for (i, a) in [(2, "9E125"), (3, "-9E125"), (4, "-1E125")] {
        file2.take(w(i, "K", a), &HashSet::new()).unwrap();
    }
    file2.take(w(5, "L", "9E125"), &HashSet::new()).unwrap();
    assert!(file1.merge(file2).is_empty(), "no file is left out");
    let (bases, _, refused) = file1.split();
    assert_eq!(
        *bases[&("v#K".to_string(), "TOTAL".to_string(), "sum".to_string())].value(),
        num("8E125")
    );
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].pk, "v#L");
    assert!(refused[0].reason.contains("cannot store"), "{refused:?}");
}

/// Passing case: number keys in any written form are one record (`1`, `1.0`, `1E0`), `-0` is `0`.
#[test]
fn equal_numeric_keys_in_different_forms_are_one_record() {
    let view = config("{mode: Count, key: {partitionKey: 'K'}}", "v#", true);
    let mut store = MemoryStore::new();
    for (pk, sk) in [("1", "0"), ("1.0", "-0"), ("1E0", "0.000"), ("10E-1", "0E5")] {
        store
            .apply(&view.project(&record(n(pk), Some(n(sk)), &[])).unwrap().unwrap())
            .unwrap();
    }
    assert_eq!(store.get("v#K", "TOTAL").unwrap()["count"], n("1"));
}

/// Passing case: view keys at DynamoDB's limits (2048-byte pk, 1024-byte sk, multi-byte characters)
/// are accepted; one byte more is a record error naming the record, not a panic.
#[test]
fn view_keys_at_the_byte_limits() {
    let view = config(
        "{mode: Count, key: {partitionKey: '{g}', sortKey: '{h}'}}",
        "",
        true,
    );
    let ok = record(
        s("A"),
        Some(s("1")),
        &[("g", s(&"é".repeat(1024))), ("h", s(&"x".repeat(1024)))],
    );
    assert!(matches!(view.project(&ok), Ok(Some(_))));
    let long = record(
        s("A"),
        Some(s("1")),
        &[("g", s(&format!("{}x", "é".repeat(1024)))), ("h", s("x"))],
    );
    let err = view.project(&long).unwrap_err().to_string();
    assert!(err.contains("2049") || err.contains("2048"), "{err}");
}

// ------------------------------------------------------------------------- through the writer (stack)

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

async fn ddb() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&common::aws_config().await)
}

async fn table(ddb: &aws_sdk_dynamodb::Client, name: &str) -> String {
    let table = format!("break-{name}-{}", std::process::id());
    common::create_pk_sk_table(ddb, &table).await;
    table
}

/// View items (no markers, no band items) of `table` under `prefix`: `(pk, sk) -> item`.
async fn view_items(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    prefix: &str,
) -> BTreeMap<(String, String), Item> {
    common::scan_all(ddb, table)
        .await
        .into_iter()
        .filter_map(|raw| {
            let pk = match raw.get("pk") {
                Some(AttributeValue::S(pk)) => pk.clone(),
                _ => return None,
            };
            let sk = match raw.get("sk") {
                Some(AttributeValue::S(sk)) => sk.clone(),
                _ => return None,
            };
            (pk.starts_with(prefix) && !pk.contains("~applied#"))
                .then(|| ((pk, sk), item_from_dynamodb(raw).unwrap()))
        })
        .collect()
}

fn number_at(items: &BTreeMap<(String, String), Item>, pk: &str, sk: &str, attr: &str) -> Option<BigDecimal> {
    match items.get(&(pk.to_string(), sk.to_string()))?.get(attr)? {
        Value::N(v) => Some(v.value().clone()),
        _ => None,
    }
}

/// Issue #13 §2 and README "Nothing lost, nothing doubled": during a pre-aggregated backfill the live
/// path applies band records (marker + band item + ADD) with the others in one `TransactWriteItems`
/// per ≤ 100 actions. Input: one call of the live writer (`with_live_attempt(Some(1))`) with 60 Count
/// records of one key, one of them in the band. Expected: `Ok`, count 60. Found: `apply_adds`
/// (`src/aws/views.rs`) chunks the key's records by 49 when any is in the band, then packs the second
/// chunk (11 records, no band, 12 actions) into the same transaction as the first (51 actions): two
/// `ADD`s on one item in one transaction, which DynamoDB refuses ("Transaction request cannot include
/// multiple operations on one item"). The error is not recognized (`Cancelled::Other`), so the call
/// fails; the live path re-reads and retries the same batch forever: the view stalls.
#[test]
fn a_live_band_batch_with_more_than_49_records_of_one_key_does_not_stall() {
    runtime().block_on(async {
        let ddb = ddb().await;
        let table = table(&ddb, "band").await;
        let view = config("{mode: Count, key: {partitionKey: 'K#{g}'}}", "v#", true);
        let writes: Vec<ViewWrite> = (0..60)
            .map(|i| {
                view.project(&record(s(&format!("E#{i}")), Some(s("1")), &[("g", s("hot"))]))
                    .unwrap()
                    .unwrap()
            })
            .collect();
        let band: HashSet<RecordId> = match &writes[0] {
            ViewWrite::Add { record, .. } => [record.clone()].into(),
            _ => unreachable!(),
        };
        let writer = ViewTableWriter::new(ddb.clone(), &table, "v#", 4).with_live_attempt(Some(1));
        let stats = writer.apply_with_band(writes, &band).await;
        assert!(stats.is_ok(), "the live path must not stall: {stats:?}");
        let items = view_items(&ddb, &table, "v#").await;
        assert_eq!(number_at(&items, "v#K#hot", "TOTAL", "count"), Some(num("60")));
    });
}

/// Found by QA: +9E125, +9E125, −9E125 of one key gave another total and other record errors as one
/// call per record than as calls [a] [b, c]. With DynamoDB's `ADD`, whether a running total leaves the
/// range depends on the order records arrive (the live path's batches follow timing), so the contract is
/// the order-independent part: the writer never stalls, every record is either counted or returned as a
/// record error, and the stored total is exactly the sum of the records counted.
#[test]
fn an_overflowing_sum_counts_or_names_every_record_whatever_the_batching() {
    runtime().block_on(async {
        let ddb = ddb().await;
        let table = table(&ddb, "batching").await;
        let view = |p: &str| config("{mode: Sum, sumOf: amount, key: {partitionKey: 'K'}}", p, true);
        let amounts = ["9E125", "9E125", "-9E125"];
        let log: Vec<Item> = amounts
            .iter()
            .enumerate()
            .map(|(i, a)| record(s(&format!("E#{i}")), Some(s("1")), &[("amount", n(a))]))
            .collect();
        for (prefix, batches) in [("two#", vec![0..1, 1..3]), ("each#", vec![0..1, 1..2, 2..3])] {
            let config = view(prefix);
            let writer = ViewTableWriter::for_view(ddb.clone(), &table, &config, 4);
            let writes: Vec<ViewWrite> = log.iter().map(|r| config.project(r).unwrap().unwrap()).collect();
            let mut rejected = BTreeSet::new();
            for batch in batches {
                let stats = writer.apply(writes[batch].to_vec()).await.expect("never a stall");
                rejected.extend(stats.rejected.iter().map(|r| r.record.clone()));
            }
            let counted: BigDecimal = log
                .iter()
                .enumerate()
                .filter(|(i, _)| {
                    !rejected.contains(&RecordId::new(&s(&format!("E#{i}")), Some(&s("1"))).unwrap())
                })
                .map(|(i, _)| num(amounts[i]))
                .sum();
            let items = view_items(&ddb, &table, "").await;
            let total = number_at(&items, &format!("{prefix}K"), "TOTAL", "sum").unwrap();
            assert_eq!(
                total, counted,
                "{prefix}: the total is the sum of the counted records"
            );
        }
    });
}

/// Issue #13 §1/§2: a record counts once per view. Markers live at `<prefix>~applied#<digest>`, sk `~`
/// (`dynamo::marker_key`), in the same key space as view items. A Count view whose key templates start
/// with an attribute (`partitionKey: '{g}'`, `sortKey: '{h}'`) renders record X's item right onto record
/// Y's marker when X holds `g = "~applied#<digest of Y>"`, `h = "~"` (log data, which the operator does
/// not control). Expected: X counts under its own key and Y counts under `K`; view keys never alias
/// markers (render-time refusal of `~applied#` or a marker sk no view key can take). Found: X's `ADD`
/// creates Y's marker; Y is then dropped as "applied before": Y's count is lost, silently.
#[test]
fn a_view_key_that_would_alias_another_records_marker_is_a_record_error() {
    runtime().block_on(async {
        let ddb = ddb().await;
        let table = table(&ddb, "alias").await;
        let view = config(
            "{mode: Count, key: {partitionKey: '{g}', sortKey: '{h}'}}",
            "",
            true,
        );
        let y = record(s("Y"), Some(s("1")), &[("g", s("K")), ("h", s("T"))]);
        let y_id = RecordId::new(&s("Y"), Some(&s("1"))).unwrap();
        let x = record(
            s("X"),
            Some(s("1")),
            &[("g", s(&format!("~applied#{}", y_id.digest()))), ("h", s("~"))],
        );
        let writer = ViewTableWriter::for_view(ddb.clone(), &table, &view, 4);
        // Since: a view key holding `~applied#` is a record error of X; Y counts.
        let err = view.project(&x).unwrap_err();
        assert_eq!(err.category(), "invalid-key", "{err}");
        let stats = writer
            .apply(vec![view.project(&y).unwrap().unwrap()])
            .await
            .unwrap();
        let items = view_items(&ddb, &table, "").await;
        assert_eq!(
            number_at(&items, "K", "T", "count"),
            Some(num("1")),
            "record Y must count: {stats:?}"
        );
    });
}

/// README ("shared" tables; views under a key prefix each) and issue #13 §1: "a record counts once in a
/// view". Two Count views of one log in one shared table with the same `spec.store.keyPrefix` (nothing
/// rejects it: `keyPrefix` is only pattern-checked) and different key templates, e.g. by status and by
/// customer. Markers are per (prefix, record) — not per view — so the second view's markers already
/// exist and it counts nothing. Expected: each view counts every record (or the duplicate prefix is
/// refused at admission). Found: the by-customer view holds no item at all.
#[test]
fn two_count_views_sharing_a_key_prefix_each_count_every_record() {
    runtime().block_on(async {
        let ddb = ddb().await;
        let table = table(&ddb, "sameprefix").await;
        let by_status = named(
            "by-status",
            "{mode: Count, key: {partitionKey: 'ST#{status}'}}",
            "S#",
            true,
        );
        let by_customer = named(
            "by-customer",
            "{mode: Count, key: {partitionKey: 'CU#{customer}'}}",
            "S#",
            true,
        );
        let log: Vec<Item> = (0..5)
            .map(|i| {
                record(
                    s(&format!("ORDER#{i}")),
                    Some(s("1")),
                    &[("status", s("paid")), ("customer", s("ada"))],
                )
            })
            .collect();
        let a: Vec<ViewWrite> = log
            .iter()
            .map(|r| by_status.project(r).unwrap().unwrap())
            .collect();
        let b: Vec<ViewWrite> = log
            .iter()
            .map(|r| by_customer.project(r).unwrap().unwrap())
            .collect();
        ViewTableWriter::for_view(ddb.clone(), &table, &by_status, 4)
            .apply(a)
            .await
            .unwrap();
        ViewTableWriter::for_view(ddb.clone(), &table, &by_customer, 4)
            .apply(b)
            .await
            .unwrap();
        let items = view_items(&ddb, &table, "S#").await;
        assert_eq!(number_at(&items, "S#ST#paid", "TOTAL", "count"), Some(num("5")));
        assert_eq!(
            number_at(&items, "S#CU#ada", "TOTAL", "count"),
            Some(num("5")),
            "{items:?}"
        );
    });
}

/// Passing case: Min/Max/Latest with equal values in different forms (`7`, `7.0`, `0.7E1`), delivered in
/// both orders, redelivered, through the writer: Min/Max hold 7 and the Latest tie is broken by the
/// record digest the same way in every order (issue #13 §6).
#[test]
fn equal_values_in_different_forms_are_deterministic_through_the_writer() {
    runtime().block_on(async {
        let ddb = ddb().await;
        let table = table(&ddb, "forms").await;
        let log = [
            record(
                s("A"),
                Some(s("1")),
                &[("amount", n("7")), ("seq", n("5")), ("tag", s("a"))],
            ),
            record(
                s("B"),
                Some(s("1")),
                &[("amount", n("7.0")), ("seq", n("5.0")), ("tag", s("b"))],
            ),
            record(
                s("C"),
                Some(s("1")),
                &[("amount", n("0.7E1")), ("seq", n("0.5E1")), ("tag", s("c"))],
            ),
        ];
        let mut winners = Vec::new();
        for (run, order) in [[0usize, 1, 2], [2, 1, 0], [1, 2, 0]].iter().enumerate() {
            for (m, projection) in [
                "{mode: Min, minOf: amount, key: {partitionKey: 'K'}}",
                "{mode: Max, maxOf: amount, key: {partitionKey: 'K'}}",
                "{mode: Latest, key: {partitionKey: 'K'}, attributes: [{from: tag}, {from: seq}]}",
            ]
            .iter()
            .enumerate()
            {
                let prefix = format!("r{run}m{m}#");
                let view = config(projection, &prefix, true);
                let w = ViewTableWriter::new(ddb.clone(), &table, &prefix, 4);
                for &i in order {
                    w.apply(vec![view.project(&log[i]).unwrap().unwrap()])
                        .await
                        .unwrap();
                }
                // Redelivery of all three in one call.
                let all: Vec<ViewWrite> = log.iter().map(|r| view.project(r).unwrap().unwrap()).collect();
                w.apply(all).await.unwrap();
            }
        }
        let items = view_items(&ddb, &table, "").await;
        for run in 0..3 {
            assert_eq!(
                number_at(&items, &format!("r{run}m0#K"), "TOTAL", "min"),
                Some(num("7"))
            );
            assert_eq!(
                number_at(&items, &format!("r{run}m1#K"), "TOTAL", "max"),
                Some(num("7"))
            );
            let latest = &items[&(format!("r{run}m2#K"), "LATEST".to_string())];
            winners.push(latest["tag"].clone());
        }
        assert!(winners.windows(2).all(|w| w[0] == w[1]), "{winners:?}");
    });
}

/// Passing case: sums at DynamoDB's limits through the writer: 1E-130 + 1E-130, 38 digits, negative
/// zero, and a single unstorable sum rejected without stalling the key's other records.
#[test]
fn sums_at_the_number_limits_through_the_writer() {
    runtime().block_on(async {
        let ddb = ddb().await;
        let table = table(&ddb, "limits").await;
        let view = config(
            "{mode: Sum, sumOf: amount, key: {partitionKey: '{g}'}}",
            "v#",
            true,
        );
        let cases = [
            ("tiny", vec!["1E-130", "1E-130"], "2E-130", 0),
            (
                "digits",
                vec!["9999999999999999999999999999999999999", "1"],
                "10000000000000000000000000000000000000",
                0,
            ),
            ("negzero", vec!["-0", "0", "-0.000"], "0", 0),
            ("huge", vec!["9.9E125", "1E125", "-1E125"], "8.9E125", 1),
        ];
        let writer = ViewTableWriter::new(ddb.clone(), &table, "v#", 4);
        let mut i = 0;
        for (g, amounts, want, rejected) in &cases {
            let mut got_rejected = 0;
            for a in amounts {
                i += 1;
                let w = view
                    .project(&record(
                        s(&format!("E#{i}")),
                        Some(s("1")),
                        &[("g", s(g)), ("amount", n(a))],
                    ))
                    .unwrap()
                    .unwrap();
                got_rejected += writer.apply(vec![w]).await.unwrap().rejected.len();
            }
            let items = view_items(&ddb, &table, "v#").await;
            assert_eq!(
                number_at(&items, &format!("v#{g}"), "TOTAL", "sum"),
                Some(num(want)),
                "{g}"
            );
            assert_eq!(got_rejected, *rejected, "{g}");
        }
    });
}
