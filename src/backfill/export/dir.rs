//! Reading a whole export from a local directory that plays the bucket root (tests, benchmarks, and
//! exports copied down with `aws s3 sync`): every key is a path relative to that directory.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use thiserror::Error;

use super::{DataFileEntry, ExportRecord, FileStats, ManifestError, ManifestSummary, ReadError};
use super::{parse_manifest_files, read_data_file};

/// Errors reading an export from a directory.
#[derive(Debug, Error)]
pub enum ExportDirError<E> {
    /// No candidate key of a manifest or data file exists under the root.
    #[error("none of the keys {candidates:?} exists under {}", root.display())]
    Missing {
        /// The directory acting as the bucket root.
        root: PathBuf,
        /// The keys tried, in order.
        candidates: Vec<String>,
    },
    /// A file exists but cannot be opened.
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why it cannot be opened.
        source: io::Error,
    },
    /// A manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A data file is invalid, or the record handler failed.
    #[error(transparent)]
    Read(#[from] ReadError<E>),
}

/// What [`read_export_dir`] read and verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirExport {
    /// The export's summary.
    pub summary: ManifestSummary,
    /// The data files, in manifest order.
    pub files: Vec<DataFileEntry>,
    /// Totals over all data files.
    pub totals: FileStats,
}

/// The first of `candidates` (keys, in the order to try) that is a file under `root`.
pub fn resolve_key(root: &Path, candidates: &[String]) -> Option<PathBuf> {
    candidates
        .iter()
        .map(|key| root.join(key))
        .find(|path| path.is_file())
}

/// Reads and verifies a whole export under `root` (the bucket root), starting from its summary at
/// `summary_key`, handing every record to `on_record` together with its file's manifest entry.
///
/// Checks everything a backfill checks: the manifests' item counts, and each file's MD5 and line count.
/// Files are read one after the other, in manifest order.
pub fn read_export_dir<I, E, F>(
    root: &Path,
    summary_key: &str,
    mut on_record: F,
) -> Result<DirExport, ExportDirError<E>>
where
    I: DeserializeOwned,
    F: FnMut(&DataFileEntry, ExportRecord<I>) -> Result<(), E>,
{
    let summary = ManifestSummary::from_reader(summary_key, open(&root.join(summary_key))?)?;

    let candidates = summary.manifest_files_key_candidates();
    let path = resolve_key(root, &candidates)
        .ok_or_else(|| ExportDirError::Missing { root: root.to_owned(), candidates })?;
    let files = parse_manifest_files(&summary.manifest_files_s3_key, open(&path)?)?;
    summary.check_item_count(&summary.manifest_files_s3_key, &files)?;

    let mut totals = FileStats::default();
    for file in &files {
        let candidates = summary.data_file_key_candidates(file);
        let path = resolve_key(root, &candidates)
            .ok_or_else(|| ExportDirError::Missing { root: root.to_owned(), candidates })?;
        totals += read_data_file(file, summary.export_type, open(&path)?, |record| {
            on_record(file, record)
        })?;
    }
    Ok(DirExport { summary, files, totals })
}

fn open<E>(path: &Path) -> Result<File, ExportDirError<E>> {
    File::open(path).map_err(|source| ExportDirError::Open { path: path.to_owned(), source })
}
