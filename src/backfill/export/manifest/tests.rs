use std::path::{Path, PathBuf};

use super::*;

const FULL_DIR: &str = "full-export/AWSDynamoDB/01700000000000-abcd1234";
const INC_DIR: &str = "incremental-export/AWSDynamoDB/01700004000000-5e6f7a8b";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture(key: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(key)).expect("fixture exists")
}

fn summary_json(dir: &str) -> serde_json::Map<String, serde_json::Value> {
    serde_json::from_slice(&fixture(&format!("{dir}/manifest-summary.json"))).expect("fixture is JSON")
}

fn summary_from(json: &serde_json::Map<String, serde_json::Value>) -> Result<ManifestSummary, ManifestError> {
    ManifestSummary::from_slice(
        "test/manifest-summary.json",
        &serde_json::to_vec(json).expect("json"),
    )
}

#[test]
fn reads_full_export_summary() {
    let key = format!("{FULL_DIR}/manifest-summary.json");
    let summary = ManifestSummary::from_reader(&key, fixture(&key).as_slice()).expect("valid summary");
    assert_eq!(summary.version, "2020-06-30");
    assert_eq!(
        summary.export_arn,
        "arn:aws:dynamodb:us-east-1:123456789012:table/GameLog/export/01700000000000-abcd1234"
    );
    assert_eq!(
        summary.table_arn.as_deref(),
        Some("arn:aws:dynamodb:us-east-1:123456789012:table/GameLog")
    );
    assert_eq!(summary.start_time, "2023-11-14T22:13:20.000Z");
    assert_eq!(summary.end_time, "2023-11-14T22:19:47.318Z");
    assert_eq!(summary.export_time.as_deref(), Some("2023-11-14T22:13:20.000Z"));
    assert_eq!(summary.s3_bucket, "game-log-exports");
    assert_eq!(summary.s3_prefix.as_deref(), Some("full-export"));
    assert_eq!(
        summary.manifest_files_s3_key,
        format!("{FULL_DIR}/manifest-files.json")
    );
    assert_eq!(summary.item_count, 40);
    assert_eq!(summary.output_format, OutputFormat::DynamodbJson);
    assert_eq!(summary.export_type, ExportKind::Full);
    assert_eq!(summary.output_view, None);
    assert_eq!(summary.export_from_time, None);
    assert_eq!(summary.export_to_time, None);
}

#[test]
fn reads_incremental_export_summary() {
    let key = format!("{INC_DIR}/manifest-summary.json");
    let summary = ManifestSummary::from_reader(&key, fixture(&key).as_slice()).expect("valid summary");
    assert_eq!(summary.version, "2023-08-01");
    assert_eq!(summary.export_type, ExportKind::Incremental);
    assert_eq!(summary.output_view, Some(OutputView::NewAndOldImages));
    assert_eq!(summary.export_time, None);
    assert_eq!(
        summary.export_from_time.as_deref(),
        Some("2023-11-14T22:13:20.000Z")
    );
    assert_eq!(
        summary.export_to_time.as_deref(),
        Some("2023-11-14T23:13:20.000Z")
    );
    assert_eq!(summary.item_count, 8);
}

#[test]
fn summary_without_export_type_is_a_full_export() {
    let mut json = summary_json(FULL_DIR);
    json.remove("exportType");
    assert_eq!(
        summary_from(&json).expect("valid summary").export_type,
        ExportKind::Full
    );
    json.insert("exportType".into(), serde_json::Value::Null);
    assert_eq!(
        summary_from(&json).expect("valid summary").export_type,
        ExportKind::Full
    );
    json.insert("exportType".into(), "SOMETHING_NEW".into());
    assert!(
        summary_from(&json).is_err(),
        "an unknown export type must not be read as full"
    );
}

#[test]
fn summary_accepts_optional_fields_missing_or_null_and_ignores_unknown_ones() {
    let mut json = summary_json(FULL_DIR);
    for field in ["exportTime", "tableArn", "exportType"] {
        json.remove(field);
    }
    json.insert("s3Prefix".into(), serde_json::Value::Null);
    json.insert("someFutureField".into(), serde_json::json!({"nested": [1, 2]}));
    let summary = summary_from(&json).expect("valid summary");
    assert_eq!(summary.s3_prefix, None);
    assert_eq!(summary.export_time, None);
    assert_eq!(
        summary.manifest_files_key_candidates(),
        vec![summary.manifest_files_s3_key.clone()]
    );
}

#[test]
fn ion_export_is_rejected_clearly() {
    let mut json = summary_json(FULL_DIR);
    json.insert("outputFormat".into(), "ION".into());
    let err = summary_from(&json).expect_err("ION is not supported");
    assert!(matches!(
        err,
        ManifestError::UnsupportedOutputFormat { format: OutputFormat::Ion, .. }
    ));
    assert_eq!(err.category(), "unsupported_format");
    let message = err.to_string();
    assert!(message.contains("test/manifest-summary.json"), "{message}");
    assert!(
        message.contains("Ion") && message.contains("DYNAMODB_JSON"),
        "{message}"
    );
}

#[test]
fn malformed_summary_names_its_key() {
    let err = ManifestSummary::from_slice("x/manifest-summary.json", b"{\"version\":").expect_err("bad");
    assert_eq!(err.category(), "malformed_summary");
    assert!(err.to_string().contains("x/manifest-summary.json"), "{err}");
    let mut json = summary_json(FULL_DIR);
    json.remove("itemCount");
    let err = summary_from(&json).expect_err("itemCount is required");
    assert!(err.to_string().contains("itemCount"), "{err}");
}

#[test]
fn manifest_files_key_resolves_with_and_without_prefix() {
    let root = fixtures();
    let exists = |key: &String| root.join(key).is_file();

    // As in the fixtures (and the AWS incremental example): the key already includes the prefix.
    let mut json = summary_json(FULL_DIR);
    let with_prefix = summary_from(&json).expect("valid summary");
    let candidates = with_prefix.manifest_files_key_candidates();
    assert_eq!(candidates[0], format!("{FULL_DIR}/manifest-files.json"));
    assert_eq!(candidates.iter().find(|key| exists(key)), Some(&candidates[0]));

    // As in the AWS full-export example: the key leaves the prefix out.
    json.insert(
        "manifestFilesS3Key".into(),
        "AWSDynamoDB/01700000000000-abcd1234/manifest-files.json".into(),
    );
    let without_prefix = summary_from(&json).expect("valid summary");
    let candidates = without_prefix.manifest_files_key_candidates();
    assert_eq!(
        candidates,
        vec![
            "AWSDynamoDB/01700000000000-abcd1234/manifest-files.json".to_owned(),
            format!("{FULL_DIR}/manifest-files.json"),
        ]
    );
    assert_eq!(candidates.iter().find(|key| exists(key)), Some(&candidates[1]));
}

#[test]
fn key_candidates_normalise_slashes() {
    let mut json = summary_json(FULL_DIR);
    json.insert("s3Prefix".into(), "a/b/".into());
    let summary = summary_from(&json).expect("valid summary");
    assert_eq!(
        summary.key_candidates("/k.json"),
        vec!["/k.json".to_owned(), "a/b/k.json".to_owned()]
    );
    json.insert("s3Prefix".into(), "".into());
    let summary = summary_from(&json).expect("valid summary");
    assert_eq!(summary.key_candidates("k.json"), vec!["k.json".to_owned()]);
}

#[test]
fn data_file_key_candidates_use_the_same_rule() {
    let summary = summary_from(&summary_json(INC_DIR)).expect("valid summary");
    let entry = DataFileEntry {
        item_count: 0,
        md5_checksum: "1B2M2Y8AsgTpgAmY7PhCfg==".into(),
        etag: None,
        data_file_s3_key: "AWSDynamoDB/data/x.json.gz".into(),
    };
    assert_eq!(
        summary.data_file_key_candidates(&entry),
        vec![
            "AWSDynamoDB/data/x.json.gz".to_owned(),
            "incremental-export/AWSDynamoDB/data/x.json.gz".to_owned()
        ]
    );
}

#[test]
fn reads_full_export_manifest_files() {
    let key = format!("{FULL_DIR}/manifest-files.json");
    let files = parse_manifest_files(&key, fixture(&key).as_slice()).expect("valid manifest");
    assert_eq!(files.len(), 3);
    assert_eq!(
        files[0],
        DataFileEntry {
            item_count: 18,
            md5_checksum: "FQBMY19pIkf6PEnAdhMRWw==".into(),
            etag: Some("f6f7a9248cbc270d989d8658bc6f4b8a-1".into()),
            data_file_s3_key: format!("{FULL_DIR}/data/4l4iiunwlfdbhxkvkr6efyfxbz.json.gz"),
        }
    );
    assert_eq!(
        files.iter().map(|f| f.item_count).collect::<Vec<_>>(),
        vec![18, 22, 0]
    );
    let summary = summary_from(&summary_json(FULL_DIR)).expect("valid summary");
    summary.check_item_count(&key, &files).expect("counts add up");
}

#[test]
fn reads_incremental_manifest_files_in_the_shared_data_folder() {
    let key = format!("{INC_DIR}/manifest-files.json");
    let files = parse_manifest_files(&key, fixture(&key).as_slice()).expect("valid manifest");
    assert_eq!(
        files.iter().map(|f| f.item_count).collect::<Vec<_>>(),
        vec![5, 3, 0]
    );
    assert!(files.iter().all(|f| {
        f.data_file_s3_key
            .starts_with("incremental-export/AWSDynamoDB/data/")
    }));
    let summary = summary_from(&summary_json(INC_DIR)).expect("valid summary");
    summary.check_item_count(&key, &files).expect("counts add up");
}

#[test]
fn manifest_files_tolerate_blank_lines_crlf_and_a_missing_etag() {
    let entry = |n: u8| {
        format!(r#"{{"itemCount":{n},"md5Checksum":"1B2M2Y8AsgTpgAmY7PhCfg==","dataFileS3Key":"{n}"}}"#)
    };
    let body = format!("\n{}\r\n\n{}\n\n", entry(1), entry(2));
    let files = parse_manifest_files("m", body.as_bytes()).expect("valid manifest");
    assert_eq!(files.len(), 2);
    assert_eq!(files[0].etag, None);
    assert_eq!(files[1].data_file_s3_key, "2");
    assert!(
        parse_manifest_files("m", &b""[..])
            .expect("empty is valid")
            .is_empty()
    );
}

#[test]
fn malformed_manifest_line_names_the_line() {
    let body = "{\"itemCount\":1,\"md5Checksum\":\"1B2M2Y8AsgTpgAmY7PhCfg==\",\"dataFileS3Key\":\"a\"}\n\
                {\"itemCount\":\"two\",\"md5Checksum\":\"x\",\"dataFileS3Key\":\"b\"}\n";
    let err = parse_manifest_files("exp/manifest-files.json", body.as_bytes()).expect_err("bad line");
    assert!(
        matches!(err, ManifestError::MalformedLine { line: 2, .. }),
        "{err:?}"
    );
    assert_eq!(err.category(), "malformed_manifest_line");
    let message = err.to_string();
    assert!(
        message.contains("exp/manifest-files.json") && message.contains("line 2"),
        "{message}"
    );

    let bad_md5 = "{\"itemCount\":1,\"md5Checksum\":\"not-base64!\",\"dataFileS3Key\":\"a\"}\n";
    let err = parse_manifest_files("m", bad_md5.as_bytes()).expect_err("bad md5");
    assert!(
        matches!(err, ManifestError::MalformedLine { line: 1, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("md5Checksum"), "{err}");
}

#[test]
fn item_count_mismatch_between_manifests() {
    let key = format!("{FULL_DIR}/manifest-files.json");
    let mut files = parse_manifest_files(&key, fixture(&key).as_slice()).expect("valid manifest");
    files.pop();
    files[0].item_count = 17;
    let summary = summary_from(&summary_json(FULL_DIR)).expect("valid summary");
    let err = summary.check_item_count(&key, &files).expect_err("39 != 40");
    assert!(
        matches!(
            err,
            ManifestError::ItemCountMismatch { expected: 40, actual: 39, .. }
        ),
        "{err:?}"
    );
    assert_eq!(err.category(), "manifest_item_count_mismatch");
    assert!(err.to_string().contains(&key), "{err}");
}
