//! The engine against the shared fixtures (`tests/fixtures/`, see its README): a real export's items,
//! a stream event, and the expected `Latest` players view.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use flate2::read::GzDecoder;

use crate::crd::{EventLogSpec, MaterializedViewSpec};
use crate::projection::*;

fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

/// Every item of the full export, read from its gzip JSON Lines data files (`{"Item":{...}}` per line).
fn full_export_items() -> Vec<Item> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Line {
        item: Item,
    }
    let dir = fixture("full-export/AWSDynamoDB/01700000000000-abcd1234/data");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut items = Vec::new();
    for file in files {
        let reader = BufReader::new(GzDecoder::new(std::fs::File::open(&file).unwrap()));
        for line in reader.lines() {
            let line: Line = serde_json::from_str(&line.unwrap()).unwrap();
            items.push(line.item);
        }
    }
    assert_eq!(items.len(), 40, "the README's item count");
    items
}

fn config(projection: &str, record_type: &str, key_prefix: &str) -> ProjectionConfig {
    let log: EventLogSpec = serde_yaml::from_str(
        "recordTypes: [player, game]\ntable: {partitionKey: pk, sortKey: sk, orderingAttribute: seq}",
    )
    .unwrap();
    let view: MaterializedViewSpec = serde_yaml::from_str(&format!(
        "eventLogRef: {{name: game-log}}\nrecordTypes: [{record_type}]\nprojection: {projection}"
    ))
    .unwrap();
    ProjectionConfig::from_spec("players", &view, &log, key_prefix).unwrap()
}

fn latest_players() -> ProjectionConfig {
    config("{mode: Latest, key: {partitionKey: '{pk}'}}", "player", "")
}

fn writes(config: &ProjectionConfig, records: &[Item]) -> Vec<ViewWrite> {
    records
        .iter()
        .filter_map(|r| config.project(r).unwrap())
        .collect()
}

fn store_of<'a>(writes: impl IntoIterator<Item = &'a ViewWrite>) -> MemoryStore {
    let mut store = MemoryStore::new();
    store.apply_all(writes).unwrap();
    store
}

/// A deterministic Fisher-Yates shuffle (xorshift), so failures reproduce.
fn shuffled<T: Clone>(items: &[T], mut seed: u64) -> Vec<T> {
    let mut out = items.to_vec();
    for i in (1..out.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    out
}

#[test]
fn the_full_export_projects_to_the_expected_players_view() {
    let store = store_of(&writes(&latest_players(), &full_export_items()));
    let expected: Vec<Item> =
        serde_json::from_str(&std::fs::read_to_string(fixture("expected-players-view.json")).unwrap())
            .unwrap();
    assert_eq!(expected.len(), 8);
    assert_eq!(store.len(), expected.len(), "one item per player, nothing else");
    for want in &expected {
        let pk = want["pk"].as_s().unwrap();
        let got = store
            .get(pk, LATEST_SK)
            .unwrap_or_else(|| panic!("no view item for {pk}"));
        assert_eq!(
            got.get("logSk"),
            Some(&want["sk"]),
            "{pk}: the latest by numeric seq"
        );
        assert_eq!(got.get("logPk"), Some(&want["pk"]));
        let mut rest = got.clone();
        for key in ["pk", "sk", "logPk", "logSk", "logRecordId"] {
            rest.remove(key);
        }
        let mut want_rest = want.clone();
        want_rest.remove("pk");
        want_rest.remove("sk");
        assert_eq!(rest, want_rest, "{pk}: every other attribute");
    }
}

#[test]
fn every_order_and_every_replay_gives_the_same_view() {
    let items = full_export_items();
    for config in [
        latest_players(),
        config("{mode: Append, key: {partitionKey: '{pk}'}}", "player", "a#"),
        config("{mode: Count, key: {partitionKey: 'T#{type}'}}", "player", "c#"),
        config(
            "{mode: Sum, sumOf: mapSeed, key: {partitionKey: '{pk}'}}",
            "game",
            "s#",
        ),
    ] {
        let in_order = store_of(&writes(&config, &items));
        let mut reversed = items.clone();
        reversed.reverse();
        let mut orders = vec![reversed];
        orders.extend([1, 2, 3, 42, 0x9e37_79b9].map(|seed| shuffled(&items, seed)));
        for order in &orders {
            let replayed: Vec<Item> = order.iter().chain(&shuffled(order, 7)).cloned().collect();
            assert_eq!(
                store_of(&writes(&config, order)),
                in_order,
                "{:?}: another order",
                config.mode()
            );
            assert_eq!(
                store_of(&writes(&config, &replayed)),
                in_order,
                "{:?}: replayed",
                config.mode()
            );
        }
    }
}

#[test]
fn aggregates_over_the_export_are_exact() {
    let items = full_export_items();
    let count = store_of(&writes(
        &config("{mode: Count, key: {partitionKey: 'T#{type}'}}", "player", ""),
        &items,
    ));
    let total = count.get("T#player", TOTAL_SK).unwrap();
    assert_eq!(total["count"], Value::N(Number::from(26)), "26 player records");

    let sum_config = config(
        "{mode: Sum, sumOf: mapSeed, key: {partitionKey: '{pk}'}}",
        "game",
        "s#",
    );
    let twice: Vec<Item> = items.iter().chain(&items).cloned().collect();
    let sums = store_of(&writes(&sum_config, &twice));
    let sum = |game: &str| sums.get(&format!("s#GAME#{game}"), TOTAL_SK).unwrap()["sum"].clone();
    // 12345678901234567890123456789012345678 + 2962962963 + 4938271605, which f64 cannot hold.
    assert_eq!(
        sum("g001").as_n().unwrap().as_str(),
        "12345678901234567890123456796913580246"
    );
    assert_eq!(
        sum("g003").as_n().unwrap().as_str(),
        "12345678901234567890123456803827160493"
    );
    assert!(
        sums.items()
            .all(|i| !i["pk"].as_s().unwrap().contains("~applied#")),
        "idempotency markers are not view items"
    );
    assert!(
        sums.items().all(|i| i["pk"].as_s().unwrap().starts_with("s#")),
        "all under the prefix"
    );
}

#[test]
fn a_stream_new_image_projects_like_an_export_item() {
    let event: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("stream-event.json")).unwrap()).unwrap();
    let insert = &event["Records"][0]["dynamodb"];
    assert_eq!(insert["Keys"]["pk"]["S"], "PLAYER#ivy");
    let image: Item = serde_json::from_value(insert["NewImage"].clone()).unwrap();
    // Through the SDK types the stream consumer receives, and back.
    let image = item_from_stream(item_to_stream(image.clone()))
        .map(|i| (i == image).then_some(i))
        .unwrap();
    let image = image.expect("lossless through aws-sdk-dynamodbstreams");

    let mut store = store_of(&writes(&latest_players(), &full_export_items()));
    let write = latest_players().project(&image).unwrap().unwrap();
    assert_eq!(store.apply(&write).unwrap(), Applied::Written);
    let ivy = store.get("PLAYER#ivy", LATEST_SK).unwrap();
    assert_eq!(ivy["motto"], Value::S("gg #1 — Zoë 🎮".into()));
    assert_eq!(ivy["logSk"], Value::S("LOG#1".into()));
    assert_eq!(
        store.apply(&write).unwrap(),
        Applied::ConditionFailed,
        "redelivery changes nothing"
    );
}
