//! Reading a DynamoDB export to S3 (`DYNAMODB_JSON` format), full or incremental, exactly as AWS writes it.
//!
//! Pure and synchronous: everything reads from [`std::io::Read`], so the caller bridges S3 object bodies
//! (or local files, in tests and benchmarks) and decides how many files to read in parallel. No AWS calls.
//!
//! ```text
//! <prefix>/AWSDynamoDB/<ExportId>/manifest-summary.json ──ManifestSummary::from_reader──▶ ManifestSummary
//!        manifestFilesS3Key (try manifest_files_key_candidates in order)
//! manifest-files.json ──parse_manifest_files──▶ Vec<DataFileEntry> ──ManifestSummary::check_item_count
//! each dataFileS3Key (try data_file_key_candidates) ──read_data_file──▶ ExportRecord<I>, one at a time
//! ```
//!
//! Guarantees and caveats:
//! - Data files are located only through `dataFileS3Key`, never by listing a folder: incremental exports
//!   share one data folder between exports.
//! - Every form the AWS documentation leaves open is accepted: a missing `exportType` (read as a full
//!   export), keys with or without `s3Prefix`, an empty partition as a 0-byte object or an empty gzip
//!   stream, and `WriteTimestampMicros` as `{"N":"…"}`, a string or a number.
//! - Each data file is verified while it streams: its MD5 (of the compressed object) and its line count are
//!   only known at the end, so a file counts as done only once [`read_data_file`] returned `Ok` (see
//!   [`reader`]).
//! - Values are not interpreted here: the item type `I` decides (the projection engine's item keeps
//!   numbers as exact text).

mod dir;
pub mod manifest;
pub mod reader;

use serde::Deserialize;

pub use dir::{DirExport, ExportDirError, read_export_dir, resolve_key};
pub use manifest::{
    DataFileEntry, ManifestError, ManifestSummary, OutputFormat, OutputView, parse_manifest_files,
};
pub use reader::{ExportRecord, FileStats, ReadError, read_data_file};

/// Which kind of export wrote the files, from the summary's `exportType`; it decides the data line shape.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, Hash)]
pub enum ExportKind {
    /// `FULL_EXPORT`: every line is `{"Item":{…}}`. Also what a summary without `exportType` means (the
    /// documented full-export example has no such field).
    #[default]
    #[serde(rename = "FULL_EXPORT")]
    Full,
    /// `INCREMENTAL_EXPORT`: every line is `{"Metadata":{…},"Keys":{…},"NewImage"?:{…},"OldImage"?:{…}}`.
    #[serde(rename = "INCREMENTAL_EXPORT")]
    Incremental,
}
