//! The two manifests of an export: `manifest-summary.json` (one JSON object) and `manifest-files.json`
//! (JSON Lines, one line per data file).
//!
//! Unknown summary fields are ignored, so new fields AWS adds do not break reading. Timestamps are kept as
//! the ISO-8601 text AWS wrote. Keys may or may not include `s3Prefix` (the AWS examples disagree): try
//! the candidates from [`ManifestSummary::manifest_files_key_candidates`] and
//! [`ManifestSummary::data_file_key_candidates`] in order and use the first that exists.

use std::io::{self, BufRead, BufReader, Read};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use thiserror::Error;

use super::ExportKind;

/// Errors reading an export's manifests. Each names the manifest's key and says what to do.
#[derive(Debug, Error)]
pub enum ManifestError {
    /// `manifest-summary.json` is not the JSON object AWS documents.
    #[error(
        "manifest summary {key} is malformed: {source}; check that the key names a manifest-summary.json"
    )]
    Summary {
        /// Key of the summary.
        key: String,
        /// What serde_json reported.
        source: serde_json::Error,
    },
    /// The export was written in a format this reader does not read (ION).
    #[error(
        "export {key} is in {format:?} format; only DYNAMODB_JSON exports can be read, \
         export the table again with ExportFormat=DYNAMODB_JSON"
    )]
    UnsupportedOutputFormat {
        /// Key of the summary.
        key: String,
        /// The summary's `outputFormat`.
        format: OutputFormat,
    },
    /// A line of `manifest-files.json` is not a data file entry.
    #[error("manifest files {key}, line {line}: {message}")]
    MalformedLine {
        /// Key of the manifest files.
        key: String,
        /// 1-based line number.
        line: u64,
        /// What is wrong with the line.
        message: String,
    },
    /// The data file entries do not add up to the summary's `itemCount`.
    #[error(
        "manifest files {key} list {actual} items but the summary says {expected}; \
         the two manifests do not belong to the same export, or one of them is incomplete"
    )]
    ItemCountMismatch {
        /// Key of the manifest files.
        key: String,
        /// The summary's `itemCount`.
        expected: u64,
        /// The sum of the entries' `itemCount`.
        actual: u64,
    },
    /// Reading a manifest's body failed.
    #[error("reading manifest {key} failed: {source}")]
    Io {
        /// Key of the manifest being read.
        key: String,
        /// The I/O error from the body.
        source: io::Error,
    },
}

impl ManifestError {
    /// A short, bounded label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Summary { .. } => "malformed_summary",
            Self::UnsupportedOutputFormat { .. } => "unsupported_format",
            Self::MalformedLine { .. } => "malformed_manifest_line",
            Self::ItemCountMismatch { .. } => "manifest_item_count_mismatch",
            Self::Io { .. } => "io",
        }
    }
}

/// The summary's `outputFormat`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum OutputFormat {
    /// `DYNAMODB_JSON`: gzip-compressed JSON Lines, the only format read here.
    #[serde(rename = "DYNAMODB_JSON")]
    DynamodbJson,
    /// `ION`: rejected by [`ManifestSummary::from_reader`].
    #[serde(rename = "ION")]
    Ion,
}

/// The summary's `outputView` (incremental exports only).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum OutputView {
    /// `NEW_IMAGE`: lines carry `Keys` and, unless the item was deleted, `NewImage`.
    #[serde(rename = "NEW_IMAGE", alias = "NEW_IMAGES")]
    NewImage,
    /// `NEW_AND_OLD_IMAGES`: lines carry `Keys`, `NewImage` and/or `OldImage`.
    #[serde(rename = "NEW_AND_OLD_IMAGES")]
    NewAndOldImages,
}

/// `manifest-summary.json`: what the export is and where its file list lives.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ManifestSummary {
    /// Manifest format version, `"2020-06-30"` (full) or `"2023-08-01"` (incremental) so far.
    pub version: String,
    /// ARN of the export; its last path segment is the ExportId.
    pub export_arn: String,
    /// ARN of the exported table, when given.
    #[serde(default)]
    pub table_arn: Option<String>,
    /// When the export started (ISO-8601 UTC).
    pub start_time: String,
    /// When the export ended (ISO-8601 UTC).
    pub end_time: String,
    /// The point in time of a full export's snapshot (ISO-8601 UTC); absent in incremental exports.
    #[serde(default)]
    pub export_time: Option<String>,
    /// Bucket the export was written to.
    pub s3_bucket: String,
    /// Prefix the export was written under, when one was given.
    #[serde(default)]
    pub s3_prefix: Option<String>,
    /// Key of `manifest-files.json`, with or without `s3_prefix`: use
    /// [`Self::manifest_files_key_candidates`].
    pub manifest_files_s3_key: String,
    /// Number of items (lines) in all data files together.
    pub item_count: u64,
    /// Output format; always [`OutputFormat::DynamodbJson`] in a summary that parsed.
    pub output_format: OutputFormat,
    /// Full or incremental; [`ExportKind::Full`] when the summary has no `exportType`.
    #[serde(default, rename = "exportType", deserialize_with = "missing_or_null_is_full")]
    pub export_type: ExportKind,
    /// Which images the lines carry (incremental exports only).
    #[serde(default)]
    pub output_view: Option<OutputView>,
    /// Start of an incremental export's window (ISO-8601 UTC, inclusive).
    #[serde(default)]
    pub export_from_time: Option<String>,
    /// End of an incremental export's window (ISO-8601 UTC, exclusive).
    #[serde(default)]
    pub export_to_time: Option<String>,
}

impl ManifestSummary {
    /// Parses `manifest-summary.json` read from `body`; `key` is only used to name the summary in errors.
    ///
    /// Rejects ION exports with [`ManifestError::UnsupportedOutputFormat`].
    pub fn from_reader(key: &str, mut body: impl Read) -> Result<Self, ManifestError> {
        let mut bytes = Vec::new();
        body.read_to_end(&mut bytes)
            .map_err(|source| ManifestError::Io { key: key.to_owned(), source })?;
        Self::from_slice(key, &bytes)
    }

    /// Parses `manifest-summary.json` from its bytes; see [`Self::from_reader`].
    pub fn from_slice(key: &str, bytes: &[u8]) -> Result<Self, ManifestError> {
        let summary: Self = serde_json::from_slice(bytes)
            .map_err(|source| ManifestError::Summary { key: key.to_owned(), source })?;
        if summary.output_format != OutputFormat::DynamodbJson {
            return Err(ManifestError::UnsupportedOutputFormat {
                key: key.to_owned(),
                format: summary.output_format,
            });
        }
        Ok(summary)
    }

    /// Keys to try, in order, for an object the manifests name by `key`: the key as given, then
    /// `s3Prefix/key` when there is a prefix (the AWS examples disagree on whether keys include it).
    pub fn key_candidates(&self, key: &str) -> Vec<String> {
        let mut candidates = vec![key.to_owned()];
        let prefix = self.s3_prefix.as_deref().unwrap_or("").trim_end_matches('/');
        if !prefix.is_empty() {
            let prefixed = format!("{prefix}/{}", key.trim_start_matches('/'));
            if prefixed != key {
                candidates.push(prefixed);
            }
        }
        candidates
    }

    /// Keys to try, in order, for `manifest-files.json`; see [`Self::key_candidates`].
    pub fn manifest_files_key_candidates(&self) -> Vec<String> {
        self.key_candidates(&self.manifest_files_s3_key)
    }

    /// Keys to try, in order, for a data file; see [`Self::key_candidates`].
    pub fn data_file_key_candidates(&self, file: &DataFileEntry) -> Vec<String> {
        self.key_candidates(&file.data_file_s3_key)
    }

    /// Checks that the data file entries read from `manifest-files.json` (at `key`) add up to the summary's
    /// `itemCount`.
    pub fn check_item_count(&self, key: &str, files: &[DataFileEntry]) -> Result<(), ManifestError> {
        let actual = files
            .iter()
            .fold(0u64, |sum, file| sum.saturating_add(file.item_count));
        if actual == self.item_count {
            Ok(())
        } else {
            Err(ManifestError::ItemCountMismatch { key: key.to_owned(), expected: self.item_count, actual })
        }
    }
}

/// `exportType` absent or `null` means a full export: the documented full-export example has no such field.
fn missing_or_null_is_full<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<ExportKind, D::Error> {
    Ok(Option::<ExportKind>::deserialize(deserializer)?.unwrap_or_default())
}

/// One line of `manifest-files.json`: one data file of the export.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct DataFileEntry {
    /// Number of items (lines) in the file.
    pub item_count: u64,
    /// base64 of the MD5 of the object's bytes as stored (compressed); checked by
    /// [`read_data_file`](super::read_data_file).
    pub md5_checksum: String,
    /// S3 ETag of the object, when given (a one-part multipart ETag, `<hex>-1`).
    #[serde(default)]
    pub etag: Option<String>,
    /// Key of the data file, with or without `s3Prefix`: use
    /// [`ManifestSummary::data_file_key_candidates`].
    #[serde(rename = "dataFileS3Key")]
    pub data_file_s3_key: String,
}

/// Parses `manifest-files.json` (JSON Lines) read from `body`; `key` names it in errors.
///
/// Blank lines (a trailing newline included) and `\r\n` line ends are tolerated. A line that is not an
/// entry, or whose `md5Checksum` is not the base64 of 16 bytes, is an error naming its line number.
pub fn parse_manifest_files(key: &str, body: impl Read) -> Result<Vec<DataFileEntry>, ManifestError> {
    let mut body = BufReader::new(body);
    let mut files = Vec::new();
    let mut buf = Vec::new();
    let mut line = 0u64;
    loop {
        buf.clear();
        let read = body
            .read_until(b'\n', &mut buf)
            .map_err(|source| ManifestError::Io { key: key.to_owned(), source })?;
        if read == 0 {
            return Ok(files);
        }
        line += 1;
        let text = buf.trim_ascii();
        if text.is_empty() {
            continue;
        }
        let malformed = |message: String| ManifestError::MalformedLine { key: key.to_owned(), line, message };
        let entry: DataFileEntry =
            serde_json::from_slice(text).map_err(|e| malformed(format!("not a data file entry: {e}")))?;
        match BASE64.decode(entry.md5_checksum.trim()) {
            Ok(digest) if digest.len() == 16 => {}
            _ => {
                return Err(malformed(format!(
                    "md5Checksum {:?} is not the base64 of a 16-byte MD5",
                    entry.md5_checksum
                )));
            }
        }
        files.push(entry);
    }
}

#[cfg(test)]
mod tests;
