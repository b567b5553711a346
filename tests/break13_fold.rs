//! Breaker #13: the fold of pre-aggregated `Count`/`Sum` backfills (`ViewTableWriter::fold`,
//! `src/aws/views.rs`) and the live path's band, through the views-table writer on the local AWS API
//! (`cd /work/main && source .stack/env`).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use aws_sdk_dynamodb::types::AttributeValue;
use bigdecimal::BigDecimal;
use kappa_operator::aws::views::ViewTableWriter;
use kappa_operator::backfill::aggregate::Partials;
use kappa_operator::crd::{EventLogSpec, MaterializedViewSpec};
use kappa_operator::projection::{Item, Number, ProjectionConfig, RecordId, Value, ViewWrite};

fn s(v: &str) -> Value {
    Value::S(v.to_string())
}

fn n(v: &str) -> Value {
    Value::N(Number::parse(v).unwrap())
}

fn named(name: &str, projection: &str, prefix: &str) -> ProjectionConfig {
    let log: EventLogSpec = serde_yaml::from_str(
        "recordTypes: [order]\ntable: {partitionKey: pk, sortKey: sk, orderingAttribute: seq}",
    )
    .unwrap();
    let view: MaterializedViewSpec = serde_yaml::from_str(&format!(
        "eventLogRef: {{name: log}}\nrecordTypes: [order]\nprojection: {projection}"
    ))
    .unwrap();
    ProjectionConfig::from_spec(name, &view, &log, prefix).unwrap()
}

fn record(pk: &str, attrs: &[(&str, Value)]) -> Item {
    let mut item = Item::from([
        ("pk".to_string(), s(pk)),
        ("sk".to_string(), s("1")),
        ("type".to_string(), s("order")),
    ]);
    for (k, v) in attrs {
        item.insert(k.to_string(), v.clone());
    }
    item
}

async fn ddb() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&common::aws_config().await)
}

async fn table(ddb: &aws_sdk_dynamodb::Client, name: &str) -> String {
    common::fresh_pk_sk_table(ddb, &format!("break13-{name}")).await
}

/// The number `attr` of the item `(pk, sk)`.
async fn number(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: &str,
    sk: &str,
    attr: &str,
) -> Option<BigDecimal> {
    for item in common::scan_all(ddb, table).await {
        if item.get("pk") == Some(&AttributeValue::S(pk.into()))
            && item.get("sk") == Some(&AttributeValue::S(sk.into()))
            && let Some(AttributeValue::N(v)) = item.get(attr)
        {
            return Some(v.parse().unwrap());
        }
    }
    None
}

fn count_view(name: &str, group: &str, prefix: &str) -> ProjectionConfig {
    named(
        name,
        &format!("{{mode: Count, key: {{partitionKey: '{group}#{{g}}'}}}}"),
        prefix,
    )
}

fn writes(view: &ProjectionConfig, ids: std::ops::Range<usize>) -> Vec<ViewWrite> {
    ids.map(|i| {
        view.project(&record(&format!("ORDER#{i}"), &[("g", s("x"))]))
            .unwrap()
            .unwrap()
    })
    .collect()
}

fn base(pk: &str, value: &str) -> BTreeMap<(String, String, String), Number> {
    BTreeMap::from([(
        (pk.to_string(), "TOTAL".to_string(), "count".to_string()),
        Number::parse(value).unwrap(),
    )])
}

/// Two in-cluster `Count` views `a` and `b` in one shared table, `b`'s prefix `b_prefix`; a gap (the
/// stream trimmed past both readers, e.g. an operator outage over 24 h) starts backfill attempt 2 of
/// both. `b` folded attempt 1 (10 exported + 2 live = 12), its live path of attempt 2 applied 1 record;
/// `a` folds attempt 2 first, then `b` folds attempt 2 with its base of 12.
/// Expected (README: a gap's new backfill "replaces what earlier attempts counted"; views sharing a
/// table are kept apart): `b` = 1 live + 12 base = 13.
async fn sibling_fold_case(name: &str, b_prefix: &str) -> Option<BigDecimal> {
    let ddb = ddb().await;
    let table = table(&ddb, name).await;
    let a = count_view("a", "A", "S#");
    let b = count_view("b", "B", b_prefix);
    let b_item = format!("{b_prefix}B#x");
    // Attempt 1 of b: 2 live records, base 10, folded.
    let b_live1 = ViewTableWriter::for_view(ddb.clone(), &table, &b, 4).with_live_attempt(Some(1));
    b_live1.apply(writes(&b, 0..2)).await.unwrap();
    b_live1.fold(1, base(&b_item, "10")).await.unwrap();
    assert_eq!(
        number(&ddb, &table, &b_item, "TOTAL", "count").await,
        Some(BigDecimal::from(12))
    );
    // Attempt 2: b's live path applies one new record.
    let b_live2 = ViewTableWriter::for_view(ddb.clone(), &table, &b, 4).with_live_attempt(Some(2));
    b_live2.apply(writes(&b, 2..3)).await.unwrap();
    // a's live path applies a record and a folds its attempt 2.
    let a_live2 = ViewTableWriter::for_view(ddb.clone(), &table, &a, 4).with_live_attempt(Some(2));
    a_live2.apply(writes(&a, 0..1)).await.unwrap();
    a_live2.fold(2, base("S#A#x", "4")).await.unwrap();
    a_live2.fold_rest(2).await.unwrap();
    assert_eq!(
        number(&ddb, &table, "S#A#x", "TOTAL", "count").await,
        Some(BigDecimal::from(5))
    );
    // Then b folds its attempt 2: the export holds its 12 records, the live path the 13th.
    b_live2.fold(2, base(&b_item, "12")).await.unwrap();
    b_live2.fold_rest(2).await.unwrap();
    number(&ddb, &table, &b_item, "TOTAL", "count").await
}

/// Found: `fold_live_only` (attempt > 1) scans `begins_with(pk, <a's prefix>)` for any item with a
/// `kappaLive2` attribute and folds it with base 0, setting `kappaFolded = 2`: `b`'s aggregate is set
/// to its live part (1) and `b`'s own fold is then refused by its `kappaFolded < 2` condition, so b's
/// base of 12 is lost for good (b reads 1). The live attribute and the folded marker are not per view.
#[test]
fn a_second_attempts_fold_leaves_a_sibling_view_sharing_the_prefix_alone() {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let got = sibling_fold_case("sameprefix", "S#").await;
        assert_eq!(got, Some(BigDecimal::from(13)), "b's count after both folds");
    });
}

/// Same with `b` under a longer prefix of its own (`spec.store.keyPrefix: 'S#eu#'` beside `a`'s `S#`):
/// `begins_with(pk, "S#")` matches b's items too.
#[test]
fn a_second_attempts_fold_leaves_a_view_under_a_longer_prefix_alone() {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let got = sibling_fold_case("longerprefix", "S#eu#").await;
        assert_eq!(got, Some(BigDecimal::from(13)), "b's count after both folds");
    });
}

/// Operator restart between "all files done" and the end of the fold: the fold runs again (the
/// Job's files are all checkpointed). Expected: the base is counted once, and live records applied
/// between the two folds count once. Passing regression.
#[test]
fn a_fold_run_again_after_a_restart_counts_the_base_once() {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let ddb = ddb().await;
        let table = table(&ddb, "refold").await;
        let v = count_view("v", "K", "v#");
        let live = ViewTableWriter::for_view(ddb.clone(), &table, &v, 4).with_live_attempt(Some(1));
        live.apply(writes(&v, 0..3)).await.unwrap();
        live.fold(1, base("v#K#x", "7")).await.unwrap();
        live.apply(writes(&v, 3..5)).await.unwrap();
        live.fold(1, base("v#K#x", "7")).await.unwrap();
        // Redelivered records change nothing either.
        live.apply(writes(&v, 0..5)).await.unwrap();
        assert_eq!(
            number(&ddb, &table, "v#K#x", "TOTAL", "count").await,
            Some(BigDecimal::from(12))
        );
    });
}

/// README "Record errors": "every record is either counted or named, and the total is exactly the sum
/// of the counted ones". Input: a `Sum` view; within the band (±30 s of the export time) the live path
/// applies r1 = 9E125 and then r2 = 9E125, which DynamoDB refuses (1.8E126): r2 is a record error
/// (named). r3 = -9E125 is older (export only). The export holds r1, r2, r3; the backfill leaves out the
/// band and folds. Expected: the total is the sum of the records not named: r1 + r3 = 0.
/// Found (if failing): r2's band item was in the refused transaction, so r2 is not in the band; the
/// backfill's base counts it (r2 + r3 = 0) and the fold sets 9E125 + 0: r2 is both named and counted.
#[test]
fn a_band_record_the_live_path_refused_is_not_also_counted_by_the_backfill() {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let ddb = ddb().await;
        let table = table(&ddb, "bandrefused").await;
        let v = named("v", "{mode: Sum, sumOf: amount, key: {partitionKey: 'K'}}", "v#");
        let amounts = ["9E125", "9E125", "-9E125"];
        let all: Vec<ViewWrite> = amounts
            .iter()
            .enumerate()
            .map(|(i, a)| {
                v.project(&record(&format!("R#{i}"), &[("amount", n(a))]))
                    .unwrap()
                    .unwrap()
            })
            .collect();
        let id = |i: usize| RecordId::new(&s(&format!("R#{i}")), Some(&s("1"))).unwrap();
        let live = ViewTableWriter::for_view(ddb.clone(), &table, &v, 4).with_live_attempt(Some(1));
        let band_ids: HashSet<RecordId> = [id(0), id(1)].into();
        let mut named_ids = BTreeSet::new();
        for w in &all[..2] {
            let stats = live.apply_with_band(vec![w.clone()], &band_ids).await.unwrap();
            named_ids.extend(stats.rejected.iter().map(|r| r.record.clone()));
        }
        assert_eq!(named_ids, BTreeSet::from([id(1)]), "r2 is refused live");
        // The backfill: band loaded, export's records summed leaving it out, folded.
        let band = live.load_band(1).await.unwrap();
        let mut partials = Partials::default();
        for w in all.clone() {
            partials.take(w, &band).unwrap();
        }
        let (bases, _, unstorable) = partials.split();
        assert!(unstorable.is_empty());
        let (_, refused) = live.fold(1, bases).await.unwrap();
        let total = number(&ddb, &table, "v#K", "TOTAL", "sum").await.unwrap();
        let counted: BigDecimal = (0..3)
            .filter(|i| !named_ids.contains(&id(*i)))
            .map(|i| amounts[i].parse::<BigDecimal>().unwrap())
            .sum();
        assert_eq!(
            total, counted,
            "the total is the sum of the records not named (named: r2; fold refused: {refused:?})"
        );
    });
}

/// A later backfill attempt (a gap) of an export large enough for several fold buckets (over a million
/// records: `buckets_for`): `Worker::fold` folds bucket by bucket, and each bucket's `ViewTableWriter::fold`
/// also runs `fold_live_only` over the whole prefix. Input: one `Count` view, attempt 2, 8 aggregates
/// `K#0..K#7`, each with 1 record applied by the live path of attempt 2 and a base of 10 in the export's
/// partials, folded in 4 buckets. Expected: every aggregate 11.
/// Found (if failing): bucket 0's `fold_live_only` sets every other bucket's aggregates to their live
/// part with `kappaFolded = 2`; their own bucket's fold is then refused by its condition: they read 1.
#[test]
fn a_second_attempt_folded_in_several_buckets_keeps_every_buckets_base() {
    use kappa_operator::backfill::aggregate::{bucket_of, partial_key, partials_prefix};
    use kappa_operator::backfill::worker::{PreAggregate, Progress, Worker};
    use std::sync::{Arc, Mutex};
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let aws = common::aws_config().await;
        let ddb = aws_sdk_dynamodb::Client::new(&aws);
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&aws)
                .force_path_style(true)
                .build(),
        );
        let table = table(&ddb, "buckets").await;
        let bucket = table.to_lowercase();
        s3.create_bucket().bucket(&bucket).send().await.unwrap();
        let v = named("v", "{mode: Count, key: {partitionKey: 'K#{g}'}}", "v#");
        let buckets = 4;
        let prefix = partials_prefix("exports/v/2", 2);
        // The export's partials: one data file per aggregate, base 10 each.
        for g in 0..8 {
            let mut part = Partials::default();
            for i in 0..10 {
                let w = v
                    .project(&record(&format!("OLD#{g}#{i}"), &[("g", s(&g.to_string()))]))
                    .unwrap()
                    .unwrap();
                part.take(w, &HashSet::new()).unwrap();
            }
            let pk = format!("v#K#{g}");
            let key = partial_key(
                &prefix,
                bucket_of(&pk, "TOTAL", buckets),
                &format!("data/{g}.json.gz"),
            );
            s3.put_object()
                .bucket(&bucket)
                .key(key)
                .body(part.to_bytes().into())
                .send()
                .await
                .unwrap();
        }
        // Attempt 2's live path: one new record per aggregate.
        let live = ViewTableWriter::for_view(ddb.clone(), &table, &v, 4).with_live_attempt(Some(2));
        let new: Vec<ViewWrite> = (0..8)
            .map(|g| {
                v.project(&record(&format!("NEW#{g}"), &[("g", s(&g.to_string()))]))
                    .unwrap()
                    .unwrap()
            })
            .collect();
        live.apply(new).await.unwrap();
        let worker = Worker {
            s3: s3.clone(),
            bucket: bucket.clone(),
            summary_key: "exports/v/2/manifest-summary.json".into(),
            writer: live.clone(),
            projection: Arc::new(v.clone()),
            checkpoints: common::MemoryCheckpoints::default(),
            parallelism: 1,
            share: (0, 1),
            progress: Arc::new(Mutex::new(Progress::default())),
            pre_aggregate: Some(PreAggregate {
                band: Arc::new(HashSet::new()),
                partials_prefix: prefix.clone(),
                buckets,
            }),
        };
        worker.fold(2).await.unwrap();
        let mut got = BTreeMap::new();
        for g in 0..8 {
            let pk = format!("v#K#{g}");
            got.insert(pk.clone(), number(&ddb, &table, &pk, "TOTAL", "count").await);
        }
        let want: BTreeMap<String, Option<BigDecimal>> = (0..8)
            .map(|g| (format!("v#K#{g}"), Some(BigDecimal::from(11))))
            .collect();
        assert_eq!(got, want, "10 exported + 1 live per aggregate");
    });
}
