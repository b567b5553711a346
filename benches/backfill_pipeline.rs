//! Backfill pipeline throughput: read export → project → build write batches, with no network, against
//! the ceiling of reading alone (MD5 + gunzip + parse into items) on the same data in the same run.
//!
//! The pipeline is what a backfill worker does with each export item it owns: `project_owned` (the
//! record's attributes move into the view item, no clone), then `WriteBatcher::push_owned` (the view item
//! moves into a real SDK request: a `WriteRequest` in a `BatchWriteItem` batch, or a conditional `Put`),
//! then dropping the request as if it had been sent. Nothing is sent.
//!
//! `cargo bench --bench backfill_pipeline` prints items/s, MB/s of gzip input and the ratio to the
//! ceiling for an `Append` view (BatchWriteItem batches) and a `Latest` view (conditional puts). Under
//! `cargo test` it runs once on a small export as a smoke test.

use std::io::Write;
use std::time::{Duration, Instant};

use base64::Engine as _;
use flate2::Compression;
use flate2::write::GzEncoder;
use kappa_operator::backfill::batch::{Request, WriteBatcher};
use kappa_operator::backfill::export::{DataFileEntry, ExportKind, ExportRecord, read_data_file};
use kappa_operator::crd::{EventLogSpec, MaterializedViewSpec};
use kappa_operator::projection::{Item, ProjectionConfig};
use md5::{Digest, Md5};

const FILES: usize = 8;

struct DataFile {
    entry: DataFileEntry,
    body: Vec<u8>,
}

/// A synthetic full export in AWS's format: players and games, about 300 bytes a line.
fn make_export(items: usize) -> Vec<DataFile> {
    let mut encoders: Vec<(GzEncoder<Vec<u8>>, u64)> = (0..FILES)
        .map(|_| (GzEncoder::new(Vec::new(), Compression::default()), 0))
        .collect();
    for i in 0..items {
        let (kind, id) = if i % 3 == 0 {
            ("game", i % 5_000)
        } else {
            ("player", i % 20_000)
        };
        let seq = i / 20_000 + 1;
        let line = if kind == "player" {
            format!(
                r#"{{"Item":{{"pk":{{"S":"PLAYER#p{id}"}},"sk":{{"S":"LOG#{seq}"}},"type":{{"S":"player"}},"seq":{{"N":"{seq}"}},"playerId":{{"S":"p{id}"}},"name":{{"S":"Player {id}"}},"level":{{"N":"{}"}},"score":{{"N":"{}.5"}},"tags":{{"SS":["pvp","ranked"]}},"stats":{{"M":{{"wins":{{"N":"{}"}},"losses":{{"N":"3"}}}}}}}}}}"#,
                i % 90,
                i * 7,
                i % 50
            )
        } else {
            format!(
                r#"{{"Item":{{"pk":{{"S":"GAME#g{id}"}},"sk":{{"S":"LOG#{seq}"}},"type":{{"S":"game"}},"seq":{{"N":"{seq}"}},"gameId":{{"S":"g{id}"}},"status":{{"S":"running"}},"players":{{"L":[{{"S":"p1"}},{{"S":"p2"}}]}},"winner":{{"NULL":true}}}}}}"#
            )
        };
        let (enc, count) = &mut encoders[(id * 31) % FILES];
        enc.write_all(line.as_bytes()).unwrap();
        enc.write_all(b"\n").unwrap();
        *count += 1;
    }
    encoders
        .into_iter()
        .enumerate()
        .map(|(n, (enc, count))| {
            let body = enc.finish().unwrap();
            let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&body));
            let entry = DataFileEntry {
                item_count: count,
                md5_checksum: md5,
                etag: None,
                data_file_s3_key: format!("bench/AWSDynamoDB/0/data/{n}.json.gz"),
            };
            DataFile { entry, body }
        })
        .collect()
}

fn log_spec() -> EventLogSpec {
    serde_yaml::from_str("recordTypes: [player, game]\ntable: {sortKey: sk, orderingAttribute: seq}").unwrap()
}

fn view(yaml: &str) -> ProjectionConfig {
    let spec: MaterializedViewSpec = serde_yaml::from_str(yaml).unwrap();
    ProjectionConfig::from_spec("bench", &spec, &log_spec(), "bench#").unwrap()
}

/// Reads every file, handing each item to `each`; returns the items read.
fn read_all(files: &[DataFile], mut each: impl FnMut(Item)) -> u64 {
    let mut items = 0;
    for f in files {
        let stats = read_data_file::<_, Item, std::convert::Infallible, _>(
            &f.entry,
            ExportKind::Full,
            &f.body[..],
            |r| {
                if let ExportRecord::Full(item) = r {
                    each(item);
                }
                Ok(())
            },
        )
        .unwrap();
        items += stats.records;
    }
    items
}

/// The pipeline: read, project (moving the item), batch (moving the write). Returns (items read, requests
/// built).
fn pipeline(files: &[DataFile], config: &ProjectionConfig) -> (u64, usize) {
    let mut batcher = WriteBatcher::new("views");
    let mut ready: Vec<Request> = Vec::new();
    let mut requests = 0;
    let items = read_all(files, |item| {
        if let Some(write) = config.project_owned(item).unwrap() {
            batcher.push_owned(write, &mut ready).unwrap();
            requests += ready.len();
            ready.clear(); // a worker would send these now
        }
    });
    requests += usize::from(batcher.flush().is_some());
    (items, requests)
}

fn best_of(runs: usize, mut f: impl FnMut()) -> Duration {
    f(); // warm-up
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap()
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let (items, runs) = if benching { (300_000, 5) } else { (3_000, 1) };
    let files = make_export(items);
    let gz_bytes: usize = files.iter().map(|f| f.body.len()).sum();
    let append = view(
        "eventLogRef: {name: l}\nrecordTypes: [game]\nprojection: {mode: Append, key: {partitionKey: \"FEED#{gameId}\"}}",
    );
    let latest = view(
        "eventLogRef: {name: l}\nrecordTypes: [player]\nprojection: {mode: Latest, key: {partitionKey: \"PLAYER#{playerId}\"}}",
    );

    let (n, _) = pipeline(&files, &append);
    assert_eq!(n as usize, items, "every item is read");
    let (_, latest_requests) = pipeline(&files, &latest);
    assert!(latest_requests > 0);
    if !benching {
        println!("backfill_pipeline: smoke run on {items} items ok (run `cargo bench` for figures)");
        return;
    }

    let ceiling = best_of(runs, || {
        read_all(&files, |item| {
            std::hint::black_box(item);
        });
    });
    let report = |name: &str, d: Duration| {
        let secs = d.as_secs_f64();
        println!(
            "{name:<28} {:>10.0} items/s {:>8.1} MB/s gzip  {:>6.1}% of ceiling",
            items as f64 / secs,
            gz_bytes as f64 / secs / 1e6,
            ceiling.as_secs_f64() / secs * 100.0
        );
    };
    println!(
        "{items} items in {FILES} files, {:.1} MB gzip; best of {runs} runs",
        gz_bytes as f64 / 1e6
    );
    report("ceiling: md5+gunzip+parse", ceiling);
    report(
        "pipeline: Append view",
        best_of(runs, || {
            std::hint::black_box(pipeline(&files, &append));
        }),
    );
    report(
        "pipeline: Latest view",
        best_of(runs, || {
            std::hint::black_box(pipeline(&files, &latest));
        }),
    );
}
