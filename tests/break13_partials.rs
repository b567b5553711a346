//! Breaker #13, pure cases: the backfill's partial objects (`src/backfill/aggregate.rs`) that Job pods
//! write to S3 and the operator folds. Invented inputs: `Latest` items holding every DynamoDB type,
//! unicode and separators in keys, Min/Max at DynamoDB's number limits.

use std::collections::HashSet;

use kappa_operator::backfill::aggregate::Partials;
use kappa_operator::crd::{EventLogSpec, MaterializedViewSpec};
use kappa_operator::projection::{Item, Number, ProjectionConfig, Value, ViewWrite};

fn s(v: &str) -> Value {
    Value::S(v.to_string())
}

fn n(v: &str) -> Value {
    Value::N(Number::parse(v).unwrap())
}

fn config(projection: &str) -> ProjectionConfig {
    let log: EventLogSpec = serde_yaml::from_str(
        "recordTypes: [order]\ntable: {partitionKey: pk, sortKey: sk, orderingAttribute: seq}",
    )
    .unwrap();
    let view: MaterializedViewSpec = serde_yaml::from_str(&format!(
        "eventLogRef: {{name: log}}\nrecordTypes: [order]\nprojection: {projection}"
    ))
    .unwrap();
    ProjectionConfig::from_spec("v", &view, &log, "v#").unwrap()
}

fn record(pk: &str, sk: Value, attrs: &[(&str, Value)]) -> Item {
    let mut item = Item::from([
        ("pk".to_string(), s(pk)),
        ("sk".to_string(), sk),
        ("type".to_string(), s("order")),
    ]);
    for (k, v) in attrs {
        item.insert(k.to_string(), v.clone());
    }
    item
}

/// A `Latest` view backfilled by a Job (`--pre-aggregation reduced`) carries each key's winning item
/// through a partial object (gzip NDJSON). Input: items with B, BS, NS, SS, L, M, NULL, BOOL, empty
/// strings, numbers at the limits (38 digits, 1E+125, -1E-130), NUL/newline/emoji/`|#~` in keys and
/// values. Expected: the partial object reads back equal, and the winner is the one a direct write keeps.
#[test]
fn latest_partials_round_trip_items_of_every_dynamodb_type() {
    let view = config("{mode: Latest, key: {partitionKey: 'P#{pk}'}}");
    let odd_keys = ["a|b#c~d", "Zoë 🎮\n\0x", "~applied", ""];
    let mut partials = Partials::default();
    let mut expected = Vec::new();
    for (i, key) in odd_keys.iter().enumerate() {
        let mut best = None;
        for seq in ["1E+125", "-1E-130", "12345678901234567890123456789012345678"] {
            let item = record(
                key,
                n(&format!("{i}")),
                &[
                    ("seq", n(seq)),
                    ("bin", Value::B(vec![0, 255, 10, 13])),
                    ("note", s("tab\there \u{1F600} \u{200B}|#~")),
                    ("empty", s("")),
                    ("flag", Value::Bool(false)),
                    ("nothing", Value::Null),
                    (
                        "nested",
                        Value::M(Item::from([
                            ("l".to_string(), Value::L(vec![n("-0.000"), s(""), Value::Null])),
                            (
                                "big".to_string(),
                                n("9.9999999999999999999999999999999999999E+125"),
                            ),
                        ])),
                    ),
                ],
            );
            let item = match item {
                mut item if i == 0 => {
                    // Sets as well (one item per key carries them).
                    item.insert(
                        "set".into(),
                        serde_json::from_str::<Value>(r#"{"NS":["1E+125","-1E-130","0"]}"#).unwrap(),
                    );
                    item.insert(
                        "bset".into(),
                        serde_json::from_str::<Value>(r#"{"BS":["AAE=","//4="]}"#).unwrap(),
                    );
                    item.insert(
                        "sset".into(),
                        serde_json::from_str::<Value>(r#"{"SS":["é","|"]}"#).unwrap(),
                    );
                    item
                }
                item => item,
            };
            let Some(write) = view.project(&item).unwrap() else {
                panic!("projects");
            };
            if seq == "1E+125" {
                best = Some(write.clone());
            }
            assert_eq!(partials.take(write, &HashSet::new()).unwrap(), None);
        }
        expected.push(best.unwrap());
    }
    let back = Partials::from_bytes(&partials.to_bytes()).expect("the partial object reads back");
    assert_eq!(back, partials, "the partial object is what the pod held");
    let (_, mut winners, refused) = back.split();
    assert!(refused.is_empty(), "{refused:?}");
    winners.sort_by_key(|w| w.view_key().0.to_string());
    expected.sort_by_key(|w| w.view_key().0.to_string());
    assert_eq!(winners, expected);
}

/// `Min`/`Max` through Job partials: each data file's extreme is written as decimal text and the fold
/// parses it back into a DynamoDB number. Input: values at DynamoDB's limits in several files.
/// Expected: the fold's writes hold exactly the extremes, and none is refused as unstorable.
#[test]
fn min_and_max_partials_at_the_number_limits_stay_storable() {
    for (mode, greatest) in [("Min", false), ("Max", true)] {
        let of = if greatest { "maxOf" } else { "minOf" };
        let view = config(&format!(
            "{{mode: {mode}, {of}: amount, key: {{partitionKey: 'K'}}}}"
        ));
        let files = [
            vec!["1E+125", "-1E-130"],
            vec![
                "9.9999999999999999999999999999999999999E+125",
                "12345678901234567890123456789012345678",
            ],
            vec!["-9.9999999999999999999999999999999999999E+125", "1E-130", "0"],
        ];
        let mut total = Partials::default();
        let mut i = 0;
        for file in &files {
            let mut part = Partials::default();
            for a in file {
                i += 1;
                let w = view
                    .project(&record(&format!("E#{i}"), s("1"), &[("amount", n(a))]))
                    .unwrap()
                    .unwrap();
                assert_eq!(part.take(w, &HashSet::new()).unwrap(), None);
            }
            let part = Partials::from_bytes(&part.to_bytes()).unwrap();
            assert!(total.merge(part).is_empty());
        }
        let (bases, writes, refused) = total.split();
        assert!(bases.is_empty() && refused.is_empty(), "{mode}: {refused:?}");
        let want = match greatest {
            true => "9.9999999999999999999999999999999999999E+125",
            false => "-9.9999999999999999999999999999999999999E+125",
        };
        match writes.as_slice() {
            [ViewWrite::Extreme { value, .. }] => {
                assert_eq!(value.value(), Number::parse(want).unwrap().value(), "{mode}");
                // The text sent to DynamoDB must itself be a valid DynamoDB number.
                assert!(
                    Number::parse(value.as_str()).is_ok(),
                    "{mode}: {}",
                    value.as_str()
                );
            }
            other => panic!("{mode}: one extreme write expected, got {other:?}"),
        }
    }
}
