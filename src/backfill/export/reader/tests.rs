use std::io::Write as _;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Map, Value, json};

use super::*;
use crate::backfill::export::{ExportDirError, ManifestSummary, parse_manifest_files, read_export_dir};

type Item = Map<String, Value>;

const FULL_DIR: &str = "full-export/AWSDynamoDB/01700000000000-abcd1234";
const INC_DIR: &str = "incremental-export/AWSDynamoDB/01700004000000-5e6f7a8b";
const MD5_OF_NOTHING: &str = "1B2M2Y8AsgTpgAmY7PhCfg==";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn manifest_files(dir: &str) -> Vec<DataFileEntry> {
    let key = format!("{dir}/manifest-files.json");
    let body = std::fs::read(fixtures().join(&key)).expect("fixture exists");
    parse_manifest_files(&key, body.as_slice()).expect("valid manifest")
}

fn body_of(file: &DataFileEntry) -> Vec<u8> {
    std::fs::read(fixtures().join(&file.data_file_s3_key)).expect("fixture exists")
}

fn gzip(lines: &[&str]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    for line in lines {
        encoder.write_all(line.as_bytes()).expect("in memory");
        encoder.write_all(b"\n").expect("in memory");
    }
    encoder.finish().expect("in memory")
}

fn md5_base64(bytes: &[u8]) -> String {
    BASE64.encode(Md5::digest(bytes))
}

fn entry_for(body: &[u8], item_count: u64) -> DataFileEntry {
    DataFileEntry {
        item_count,
        md5_checksum: md5_base64(body),
        etag: None,
        data_file_s3_key: "exp/AWSDynamoDB/data/test.json.gz".into(),
    }
}

/// Reads a file and collects its records; the handler never fails.
fn collect(
    file: &DataFileEntry,
    kind: ExportKind,
    body: &[u8],
) -> Result<(FileStats, Vec<ExportRecord<Item>>), ReadError<io::Error>> {
    let mut records = Vec::new();
    let stats = read_data_file(file, kind, body, |record| {
        records.push(record);
        Ok::<_, io::Error>(())
    })?;
    Ok((stats, records))
}

fn text<'a>(item: &'a Item, attribute: &str, kind: &str) -> &'a str {
    item.get(attribute)
        .and_then(|v| v.get(kind))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

#[test]
fn reads_every_full_export_file_and_verifies_it() {
    let files = manifest_files(FULL_DIR);
    let expected = [(18, 1890), (22, 2048), (0, 20)];
    for (file, (records, bytes)) in files.iter().zip(expected) {
        let (stats, items) = collect(file, ExportKind::Full, &body_of(file)).expect("file verifies");
        assert_eq!(stats.records, records, "{}", file.data_file_s3_key);
        assert_eq!(stats.compressed_bytes, bytes, "{}", file.data_file_s3_key);
        assert_eq!(items.len() as u64, records);
        assert!(
            items
                .iter()
                .all(|r| matches!(r, ExportRecord::Full(item) if item.contains_key("pk")))
        );
    }
}

#[test]
fn reads_the_whole_full_export_from_the_bucket_root() {
    let mut seen = Vec::<(String, Item)>::new();
    let export = read_export_dir(
        &fixtures(),
        &format!("{FULL_DIR}/manifest-summary.json"),
        |file: &DataFileEntry, record: ExportRecord<Item>| match record {
            ExportRecord::Full(item) => {
                seen.push((file.data_file_s3_key.clone(), item));
                Ok(())
            }
            other => Err(format!("unexpected {other:?}")),
        },
    )
    .expect("export verifies");
    assert_eq!(export.summary.export_type, ExportKind::Full);
    assert_eq!(export.files.len(), 3);
    assert_eq!(export.totals.records, 40);
    assert_eq!(export.totals.compressed_bytes, 1890 + 2048 + 20);
    assert_eq!(seen.len(), 40);

    // Every pk sits in exactly one file, as in a real export.
    let mut file_of_pk = std::collections::BTreeMap::new();
    for (file, item) in &seen {
        let previous = file_of_pk.insert(text(item, "pk", "S").to_owned(), file.clone());
        assert!(
            previous.is_none_or(|p| &p == file),
            "{} split across files",
            text(item, "pk", "S")
        );
    }
    assert_eq!(file_of_pk.len(), 8 + 6);

    // Exact values survive: a 38-digit N keeps its text, non-ASCII S is intact, B stays base64 text.
    let games: Vec<&Item> = seen
        .iter()
        .map(|(_, i)| i)
        .filter(|i| text(i, "type", "S") == "game")
        .collect();
    assert_eq!(games.len(), 14);
    assert!(
        games
            .iter()
            .any(|g| text(g, "mapSeed", "N") == "12345678901234567890123456789012345678")
    );
    let players = seen
        .iter()
        .map(|(_, i)| i)
        .filter(|i| text(i, "type", "S") == "player");
    assert!(
        players
            .clone()
            .any(|p| text(p, "motto", "S") == "gg #10 — Zoë 🎮")
    );
    assert!(
        players
            .clone()
            .any(|p| text(p, "motto", "S").is_empty() && p["motto"] == json!({"S": ""}))
    );
    let bo3 = seen
        .iter()
        .map(|(_, i)| i)
        .find(|i| text(i, "pk", "S") == "PLAYER#bo" && text(i, "sk", "S") == "LOG#3")
        .expect("bo LOG#3 is exported");
    assert_eq!(bo3["avatar"], json!({"B": "Plv4L+F9wBJpf1wu"}));
    assert_eq!(bo3["score"], json!({"N": "1053.5"}));
    assert_eq!(bo3["guild"], json!({"NULL": true}));
    assert_eq!(bo3["keyring"], json!({"BS": ["AAED", "//4C"]}));
}

#[test]
fn reads_the_incremental_export_in_the_shared_data_folder() {
    let mut records = Vec::new();
    let export = read_export_dir(
        &fixtures(),
        &format!("{INC_DIR}/manifest-summary.json"),
        |_: &DataFileEntry, record: ExportRecord<Item>| {
            records.push(record);
            Ok::<_, io::Error>(())
        },
    )
    .expect("export verifies");
    assert_eq!(export.summary.export_type, ExportKind::Incremental);
    assert_eq!(export.totals.records, 8);
    assert_eq!(records.len(), 8);

    let mut shapes = std::collections::BTreeMap::new();
    for record in &records {
        let ExportRecord::Incremental { keys, new_image, old_image, write_timestamp_micros } = record else {
            panic!("full record in an incremental export: {record:?}");
        };
        assert_eq!(keys.len(), 2, "Keys hold pk and sk only");
        let micros = write_timestamp_micros.expect("every fixture line has WriteTimestampMicros");
        assert!(
            (1_700_000_000_000_000..1_700_003_600_000_000).contains(&micros),
            "{micros} in the window"
        );
        for image in [new_image, old_image].into_iter().flatten() {
            assert_eq!(
                (text(image, "pk", "S"), text(image, "sk", "S")),
                (text(keys, "pk", "S"), text(keys, "sk", "S"))
            );
        }
        let shape = match (new_image.is_some(), old_image.is_some()) {
            (true, false) => "insert",
            (true, true) => "modify",
            (false, true) => "remove",
            (false, false) => "keys only",
        };
        shapes.insert(
            format!("{}/{}", text(keys, "pk", "S"), text(keys, "sk", "S")),
            shape,
        );
    }
    let expected = [
        ("PLAYER#ada/LOG#11", "insert"),
        ("PLAYER#ivy/LOG#1", "insert"),
        ("GAME#g007/LOG#1", "insert"),
        ("PLAYER#bo/LOG#3", "modify"),
        ("GAME#g002/LOG#2", "modify"),
        ("PLAYER#hal/LOG#99", "modify"),
        ("PLAYER#dee/LOG#5", "remove"),
        ("GAME#g005/LOG#1", "remove"),
    ];
    assert_eq!(
        shapes,
        expected.into_iter().map(|(k, s)| (k.to_owned(), s)).collect()
    );
}

#[test]
fn incremental_old_image_is_the_item_from_the_full_export() {
    let mut full = Vec::new();
    for file in manifest_files(FULL_DIR) {
        full.extend(
            collect(&file, ExportKind::Full, &body_of(&file))
                .expect("verifies")
                .1,
        );
    }
    let mut old_images = 0;
    for file in manifest_files(INC_DIR) {
        for record in collect(&file, ExportKind::Incremental, &body_of(&file))
            .expect("verifies")
            .1
        {
            if let ExportRecord::Incremental { old_image: Some(old), .. } = record {
                assert!(
                    full.contains(&ExportRecord::Full(old.clone())),
                    "{old:?} is not in the full export"
                );
                old_images += 1;
            }
        }
    }
    assert_eq!(old_images, 5);
}

#[test]
fn write_timestamp_micros_in_every_encoding() {
    let keys = r#""Keys":{"pk":{"S":"p"},"sk":{"S":"s"}}"#;
    let lines = [
        format!(
            r#"{{"Metadata":{{"WriteTimestampMicros":{{"N":"1700000061123456"}}}},{keys},"NewImage":{{}}}}"#
        ),
        format!(r#"{{"Metadata":{{"WriteTimestampMicros":"1700000061123457"}},{keys},"OldImage":{{}}}}"#),
        format!(r#"{{"Metadata":{{"WriteTimestampMicros":1700000061123458}},{keys}}}"#),
        format!(r#"{{"Metadata":{{}},{keys},"NewImage":null}}"#),
        format!(r#"{{{keys}}}"#),
    ];
    let body = gzip(&lines.iter().map(String::as_str).collect::<Vec<_>>());
    let (_, records) = collect(&entry_for(&body, 5), ExportKind::Incremental, &body).expect("valid file");
    let micros: Vec<_> = records
        .iter()
        .map(|r| match r {
            ExportRecord::Incremental { write_timestamp_micros, .. } => *write_timestamp_micros,
            ExportRecord::Full(_) => panic!("full record"),
        })
        .collect();
    assert_eq!(
        micros,
        vec![
            Some(1700000061123456),
            Some(1700000061123457),
            Some(1700000061123458),
            None,
            None
        ]
    );
    assert!(matches!(
        &records[3],
        ExportRecord::Incremental { new_image: None, old_image: None, .. }
    ));

    let bad = gzip(&[r#"{"Metadata":{"WriteTimestampMicros":{"N":"1.5e3x"}},"Keys":{}}"#]);
    let err = collect(&entry_for(&bad, 1), ExportKind::Incremental, &bad).expect_err("not a number");
    assert!(matches!(err, ReadError::MalformedLine { line: 1, .. }), "{err:?}");
    assert!(err.to_string().contains("WriteTimestampMicros"), "{err}");
}

#[test]
fn wrong_md5_in_the_manifest_entry_is_reported_after_reading() {
    let mut file = manifest_files(FULL_DIR).remove(0);
    file.md5_checksum = "AAAAAAAAAAAAAAAAAAAAAA==".into();
    let mut handed_over = 0;
    let err = read_data_file(
        &file,
        ExportKind::Full,
        body_of(&file).as_slice(),
        |_: ExportRecord<Item>| {
            handed_over += 1;
            Ok::<_, io::Error>(())
        },
    )
    .expect_err("MD5 differs");
    assert_eq!(handed_over, 18, "records stream before the MD5 is known");
    let ReadError::Md5Mismatch { file: key, expected, actual } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(key, &file.data_file_s3_key);
    assert_eq!(expected, "AAAAAAAAAAAAAAAAAAAAAA==");
    assert_eq!(actual, "FQBMY19pIkf6PEnAdhMRWw==");
    assert_eq!(err.category(), "md5_mismatch");
    assert!(err.to_string().contains(&file.data_file_s3_key), "{err}");
}

#[test]
fn truncated_gzip_names_the_file_and_line() {
    let file = manifest_files(FULL_DIR).remove(0);
    let body = body_of(&file);
    for cut in [8, 200, body.len() / 2] {
        let truncated = &body[..body.len() - cut];
        let err = collect(&file, ExportKind::Full, truncated).expect_err("truncated");
        let ReadError::Gzip { file: key, line, .. } = &err else {
            panic!("cut {cut}: {err:?}")
        };
        assert_eq!(key, &file.data_file_s3_key);
        assert!((1..=19).contains(line), "cut {cut}: line {line}");
        assert_eq!(err.category(), "gzip");
        let message = err.to_string();
        assert!(message.contains(&file.data_file_s3_key) && message.contains(&format!("line {line}")));
    }
}

#[test]
fn corrupt_gzip_is_a_gzip_error() {
    let file = manifest_files(FULL_DIR).remove(0);
    let mut body = body_of(&file);
    let middle = body.len() / 2;
    body[middle] ^= 0xff;
    let err = collect(&file, ExportKind::Full, &body).expect_err("corrupt");
    assert!(
        matches!(err, ReadError::Gzip { .. } | ReadError::MalformedLine { .. }),
        "{err:?}"
    );
    let garbage_after = [gzip(&[r#"{"Item":{}}"#]), b"not gzip".to_vec()].concat();
    let err = collect(&entry_for(&garbage_after, 1), ExportKind::Full, &garbage_after).expect_err("garbage");
    assert!(matches!(err, ReadError::Gzip { line: 2, .. }), "{err:?}");
}

#[test]
fn malformed_json_line_names_the_file_and_line() {
    let body = gzip(&[
        r#"{"Item":{"pk":{"S":"a"}}}"#,
        r#"{"Item":{"pk":{"S":"b"}}"#,
        r#"{"Item":{}}"#,
    ]);
    let mut handed_over = 0;
    let err = read_data_file(
        &entry_for(&body, 3),
        ExportKind::Full,
        body.as_slice(),
        |_: ExportRecord<Item>| {
            handed_over += 1;
            Ok::<_, io::Error>(())
        },
    )
    .expect_err("line 2 is cut short");
    assert_eq!(handed_over, 1);
    assert!(
        matches!(&err, ReadError::MalformedLine { line: 2, .. }),
        "{err:?}"
    );
    assert_eq!(err.category(), "malformed_line");
    assert_eq!(err.file(), "exp/AWSDynamoDB/data/test.json.gz");
    let message = err.to_string();
    assert!(
        message.contains("exp/AWSDynamoDB/data/test.json.gz, line 2"),
        "{message}"
    );
}

#[test]
fn lines_of_the_other_export_kind_or_blank_are_malformed() {
    let incremental = gzip(&[r#"{"Metadata":{},"Keys":{"pk":{"S":"a"}}}"#]);
    let err = collect(&entry_for(&incremental, 1), ExportKind::Full, &incremental).expect_err("wrong kind");
    assert!(matches!(&err, ReadError::MalformedLine { line: 1, message, .. } if message.contains("Item")));

    let full = gzip(&[r#"{"Item":{"pk":{"S":"a"}}}"#]);
    let err = collect(&entry_for(&full, 1), ExportKind::Incremental, &full).expect_err("wrong kind");
    assert!(matches!(&err, ReadError::MalformedLine { line: 1, message, .. } if message.contains("Keys")));

    let blank = gzip(&[r#"{"Item":{}}"#, ""]);
    let err = collect(&entry_for(&blank, 2), ExportKind::Full, &blank).expect_err("blank line");
    assert!(matches!(&err, ReadError::MalformedLine { line: 2, message, .. } if message.contains("empty")));
}

#[test]
fn item_count_mismatch_names_the_file() {
    let mut file = manifest_files(FULL_DIR).remove(1);
    file.item_count = 21;
    let err = collect(&file, ExportKind::Full, &body_of(&file)).expect_err("22 lines, not 21");
    assert!(
        matches!(err, ReadError::ItemCountMismatch { expected: 21, actual: 22, .. }),
        "{err:?}"
    );
    assert_eq!(err.category(), "item_count_mismatch");
    assert!(err.to_string().contains(&file.data_file_s3_key), "{err}");
}

#[test]
fn empty_partition_as_zero_bytes_or_empty_gzip() {
    let zero_bytes = entry_for(b"", 0);
    assert_eq!(zero_bytes.md5_checksum, MD5_OF_NOTHING);
    let (stats, records) = collect(&zero_bytes, ExportKind::Full, b"").expect("0 bytes is an empty file");
    assert_eq!(stats, FileStats::default());
    assert!(records.is_empty());

    let empty_gzip = manifest_files(INC_DIR).remove(2);
    let body = body_of(&empty_gzip);
    assert_eq!(body.len(), 20);
    let (stats, records) = collect(&empty_gzip, ExportKind::Incremental, &body).expect("empty gzip stream");
    assert_eq!(
        stats,
        FileStats { records: 0, compressed_bytes: 20, uncompressed_bytes: 0 }
    );
    assert!(records.is_empty());

    // A 0-byte body still has to match its manifest entry.
    let err = collect(&empty_gzip, ExportKind::Full, b"").expect_err("MD5 of the empty gzip differs");
    assert!(matches!(err, ReadError::Md5Mismatch { .. }), "{err:?}");
}

#[test]
fn concatenated_gzip_members_are_one_file() {
    let body = [
        gzip(&[r#"{"Item":{"n":{"N":"1"}}}"#]),
        gzip(&[]),
        gzip(&[r#"{"Item":{"n":{"N":"2"}}}"#]),
    ]
    .concat();
    let (stats, records) = collect(&entry_for(&body, 2), ExportKind::Full, &body).expect("multi-member gzip");
    assert_eq!(stats.records, 2);
    assert_eq!(stats.compressed_bytes, body.len() as u64);
    assert_eq!(
        records[1],
        ExportRecord::Full(json!({"n": {"N": "2"}}).as_object().cloned().unwrap_or_default())
    );
}

#[test]
fn a_last_line_without_newline_still_counts() {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder
        .write_all(b"{\"Item\":{}}\n{\"Item\":{}}")
        .expect("in memory");
    let body = encoder.finish().expect("in memory");
    let (stats, _) = collect(&entry_for(&body, 2), ExportKind::Full, &body).expect("valid");
    assert_eq!(
        stats,
        FileStats {
            records: 2,
            compressed_bytes: body.len() as u64,
            uncompressed_bytes: 23
        }
    );
}

#[test]
fn handler_error_stops_reading_at_that_line() {
    let file = manifest_files(FULL_DIR).remove(1);
    let mut calls = 0;
    let err = read_data_file(
        &file,
        ExportKind::Full,
        body_of(&file).as_slice(),
        |_: ExportRecord<Item>| {
            calls += 1;
            if calls == 3 {
                Err(io::Error::other("view table throttled"))
            } else {
                Ok(())
            }
        },
    )
    .expect_err("handler fails");
    assert_eq!(calls, 3, "no record after the failing one");
    let ReadError::Callback { file: key, line, source } = &err else {
        panic!("{err:?}")
    };
    assert_eq!((key.as_str(), *line), (file.data_file_s3_key.as_str(), 3));
    assert_eq!(source.to_string(), "view table throttled");
    assert_eq!(err.category(), "callback");
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn records_are_handed_over_while_the_body_is_still_being_read() {
    /// Yields the compressed body a few bytes at a time and records how far it got.
    struct Trickle<'a> {
        body: &'a [u8],
        served: std::rc::Rc<std::cell::Cell<usize>>,
    }
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(64).min(self.body.len());
            buf[..n].copy_from_slice(&self.body[..n]);
            self.body = &self.body[n..];
            self.served.set(self.served.get() + n);
            Ok(n)
        }
    }
    let file = manifest_files(FULL_DIR).remove(1);
    let body = body_of(&file);
    let served = std::rc::Rc::new(std::cell::Cell::new(0));
    let mut served_at_first_record = None;
    read_data_file(
        &file,
        ExportKind::Full,
        Trickle { body: &body, served: served.clone() },
        |_: ExportRecord<Item>| {
            served_at_first_record.get_or_insert(served.get());
            Ok::<_, io::Error>(())
        },
    )
    .expect("verifies");
    assert!(
        served_at_first_record.is_some_and(|n| n < body.len()),
        "{served_at_first_record:?}"
    );
    assert_eq!(served.get(), body.len());
}

#[test]
fn body_errors_are_io_errors_not_gzip_errors() {
    struct Failing<'a>(&'a [u8]);
    impl Read for Failing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "connection reset"));
            }
            let n = buf.len().min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let file = manifest_files(FULL_DIR).remove(0);
    let body = body_of(&file);
    let result = read_data_file(
        &file,
        ExportKind::Full,
        Failing(&body[..1000]),
        |_: ExportRecord<Item>| Ok::<_, io::Error>(()),
    );
    let err = result.expect_err("body fails");
    assert!(matches!(&err, ReadError::Io { source, .. } if source.kind() == io::ErrorKind::ConnectionReset));
    assert_eq!(err.category(), "io");
    assert!(err.to_string().contains(&file.data_file_s3_key), "{err}");
}

#[test]
fn export_dir_reports_missing_files_and_bad_manifests() {
    let root = fixtures();
    let err = read_export_dir(
        &root,
        "nope/manifest-summary.json",
        |_: &DataFileEntry, _: ExportRecord<Item>| Ok::<_, io::Error>(()),
    )
    .expect_err("no such summary");
    assert!(matches!(err, ExportDirError::Open { .. }), "{err:?}");

    // A directory whose manifests are fine but whose data lives elsewhere: the candidates are all tried.
    let summary = ManifestSummary::from_slice(
        "s",
        br#"{"version":"v","exportArn":"a","startTime":"t","endTime":"t","s3Bucket":"b","s3Prefix":"p",
            "manifestFilesS3Key":"missing.json","itemCount":0,"outputFormat":"DYNAMODB_JSON"}"#,
    )
    .expect("valid summary");
    assert_eq!(
        summary.manifest_files_key_candidates(),
        vec!["missing.json".to_owned(), "p/missing.json".to_owned()]
    );
    assert_eq!(
        crate::backfill::export::resolve_key(&root, &summary.manifest_files_key_candidates()),
        None
    );
}
