//! The export backfill worker: reads an export from S3 file by file, projects every record, writes the
//! view, and checkpoints each data file once all of its writes succeeded.
//!
//! ```text
//! manifest-summary.json ─▶ manifest-files.json ─▶ data files not yet checkpointed, `parallelism` at once:
//!   S3 body ─(blocking thread: gunzip, parse, verify MD5 and count, project)─▶ chunks of ViewWrites
//!   ─(async: ViewTableWriter)─▶ views table ─▶ checkpoint "file done" ─▶ progress
//! ```
//!
//! Guarantees:
//! - A file is checkpointed only after it was read to the end and verified (MD5, line count) **and** every
//!   write projected from it was applied. A failed or interrupted file is read again from its start; the
//!   writes are idempotent, so records applied twice do no harm.
//! - A resumed worker skips the files its checkpoint lists: a restart resumes, it does not start over.
//! - Worker `index` of `count` takes the files whose position in the manifest is `index` modulo `count`,
//!   so the shares of an Indexed Job never overlap and together cover the export.
//! - Errors name the file and, for record errors, the line.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use thiserror::Error;
use tracing::info;

use super::aggregate::{Partials, Unstorable, bucket_prefix, partial_key};
use super::export::{
    DataFileEntry, ExportKind, ExportRecord, ManifestError, ManifestSummary, ReadError, parse_manifest_files,
    read_data_file,
};
use crate::aws::AwsError;
use crate::aws::export::{get_small_object, list_keys, open_object, put_small_object};
use crate::aws::views::{Reducer, ViewTableWriter, WriteStats};
use crate::crd::RecordErrorPolicy;
use crate::projection::{Item, ProjectionConfig, ProjectionError, RecordErrors, ViewWrite};

/// Writes handed from the reading thread to the writer at a time.
const WRITE_CHUNK: usize = 500;
/// `Latest`/`Min`/`Max` writes of one data file held for reduction before they are sent (bounds memory).
const MAX_REDUCED: usize = 50_000;

/// Why a checkpoint could not be read or written. A backfill stopped by one resumes from what was recorded
/// ([`BackfillError::retryable`]).
#[derive(Debug, Error)]
pub enum CheckpointError {
    /// A Kubernetes API call on the checkpoint's ConfigMap failed; `action` names it ("reading ConfigMap").
    #[error("{action} {name}: {source}")]
    Kube {
        action: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// A key holds what the checkpoint did not write there (edited by hand, or damaged).
    #[error("ConfigMap {name}: key {key} is not a {what}: {message}")]
    Corrupt {
        name: String,
        key: String,
        what: &'static str,
        message: String,
    },
    /// Other writers kept changing a key under every attempt of a conditional write.
    #[error("writing ConfigMap {name}: key {key} kept changing under {attempts} attempts")]
    Contended {
        name: String,
        key: String,
        attempts: usize,
    },
    /// What the checkpoint writes could not be serialized (a bug).
    #[error("{0}")]
    Encode(#[from] serde_json::Error),
}

impl CheckpointError {
    /// A short, bounded label (a metric label, a log field): `kubernetes`, `corrupt`, `conflict`,
    /// `encoding`.
    pub fn category(&self) -> &'static str {
        match self {
            CheckpointError::Kube { .. } => "kubernetes",
            CheckpointError::Corrupt { .. } => "corrupt",
            CheckpointError::Contended { .. } => "conflict",
            CheckpointError::Encode(_) => "encoding",
        }
    }
}

/// Where a worker records the data files it finished; the backfill resumes from it.
pub trait FileCheckpoints: Send + Sync {
    /// The keys of the data files already done.
    fn done(&self) -> impl Future<Output = Result<BTreeSet<String>, CheckpointError>> + Send;
    /// Records that `file` is done (all of its `items` projected and written).
    fn mark_done(&self, file: &str, items: u64) -> impl Future<Output = Result<(), CheckpointError>> + Send;
    /// Tells the checkpoint, before [`Self::done`], every file of the backfill in manifest order and the
    /// share (index, count) this process works on, so it can record files by position (compactly).
    fn layout(&self, _files: &[String], _share: (usize, usize)) {}
    /// For files begun but not done: how many of their records (lines) are applied, so a resumed worker
    /// goes on from there rather than from the file's first line.
    fn lines_done(&self) -> impl Future<Output = Result<HashMap<String, u64>, CheckpointError>> + Send {
        async { Ok(HashMap::new()) }
    }
    /// Records that the first `lines` records of `file` are applied (a hint: losing it costs re-reading).
    fn save_lines_done(
        &self,
        _file: &str,
        _lines: u64,
    ) -> impl Future<Output = Result<(), CheckpointError>> + Send {
        async { Ok(()) }
    }
}

/// How often (in records) a worker records how far into a data file it is: AWS export data files hold
/// hundreds of MB, and a restart goes on from the last such point. `Latest`/`Min`/`Max` writes held for
/// reduction are sent at each point, so reduction still works over this many records.
pub const LINES_SAVE_EVERY: u64 = MAX_REDUCED as u64;

/// Live progress of a backfill, shared with whoever reports it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    pub files_total: u64,
    pub files_done: u64,
    pub items_total: u64,
    pub items_done: u64,
    /// Files found done in the checkpoint when the worker started (a resumed backfill).
    pub files_resumed: u64,
    /// Records per second over this worker's run.
    pub items_per_second: f64,
    /// Records left out under `onRecordError: Skip`.
    pub record_errors: RecordErrors,
    /// Transient AWS errors retried in place so far, and the last one.
    pub transient: crate::aws::retry::Transient,
    /// View writes sent to the views table (after reduction; for `Count`/`Sum` with pre-aggregation, the
    /// folded aggregates): the backfill's write amplification is this over the view's distinct items.
    pub writes_sent: u64,
}

/// The export's summary and its data files, read from its manifests (item counts checked).
pub async fn read_manifests(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    summary_key: &str,
) -> Result<(ManifestSummary, Vec<DataFileEntry>), BackfillError> {
    let summary_bytes =
        get_small_object(s3, bucket, summary_key)
            .await?
            .ok_or_else(|| BackfillError::ManifestMissing {
                bucket: bucket.to_string(),
                key: summary_key.to_string(),
            })?;
    let summary = ManifestSummary::from_slice(summary_key, &summary_bytes)?;
    let candidates = summary.manifest_files_key_candidates();
    for key in &candidates {
        if let Some(bytes) = get_small_object(s3, bucket, key).await? {
            let entries = parse_manifest_files(key, bytes.as_slice())?;
            summary.check_item_count(key, &entries)?;
            return Ok((summary, entries));
        }
    }
    Err(BackfillError::DataFileMissing { bucket: bucket.to_string(), candidates })
}

type FileFuture<'a> = std::pin::Pin<Box<dyn Future<Output = Result<u64, BackfillError>> + Send + 'a>>;

/// Everything one worker needs.
pub struct Worker<C> {
    pub s3: aws_sdk_s3::Client,
    pub bucket: String,
    pub summary_key: String,
    pub projection: Arc<ProjectionConfig>,
    pub writer: ViewTableWriter,
    pub checkpoints: C,
    /// Data files read at once.
    pub parallelism: usize,
    /// This worker's share: `(index, count)`.
    pub share: (usize, usize),
    pub progress: Arc<Mutex<Progress>>,
    /// `Count`/`Sum` views whose live path the operator runs: sum per aggregate instead of writing each
    /// record (see [`super::aggregate`]).
    pub pre_aggregate: Option<PreAggregate>,
}

/// How a backfill combines the export's records before writing them (see [`super::aggregate`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PreAggregation {
    /// Each record is written with its idempotency marker, as the live path writes it: `Count`/`Sum`
    /// views whose live path the operator does not run (a Lambda projector), and `Append` views.
    #[default]
    PerRecord,
    /// `Latest`, `Min`, `Max`: combined per key over the whole export, then set once per key
    /// (idempotent, so no band is needed).
    Reduced,
    /// `Count`/`Sum` views whose live path the operator runs: summed per aggregate leaving out the live
    /// path's band, then folded.
    Banded,
}

impl PreAggregation {
    /// How `projection` is backfilled; `banded`: the operator's live path records a band for the attempt.
    pub fn of(projection: &ProjectionConfig, banded: bool) -> Self {
        use crate::crd::ProjectionMode;
        match projection.mode() {
            ProjectionMode::Latest | ProjectionMode::Min | ProjectionMode::Max => PreAggregation::Reduced,
            _ if projection.is_additive() && banded => PreAggregation::Banded,
            _ => PreAggregation::PerRecord,
        }
    }

    /// The name in the backfill Job's `--pre-aggregation` argument.
    pub fn as_str(self) -> &'static str {
        match self {
            PreAggregation::PerRecord => "per-record",
            PreAggregation::Reduced => "reduced",
            PreAggregation::Banded => "banded",
        }
    }
}

impl std::str::FromStr for PreAggregation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            PreAggregation::PerRecord,
            PreAggregation::Reduced,
            PreAggregation::Banded,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
        .ok_or_else(|| format!("unknown pre-aggregation {s:?}: per-record, reduced or banded"))
    }
}

/// What a pre-aggregating worker needs: the live path's band (record digests to leave out) and where to
/// put each data file's partial sums.
#[derive(Clone, Debug)]
pub struct PreAggregate {
    pub band: Arc<HashSet<String>>,
    /// The S3 prefix of the partial objects ([`super::aggregate::partials_prefix`]), in the worker's
    /// bucket.
    pub partials_prefix: String,
    /// How many buckets the partials are split into ([`super::aggregate::buckets_for`] of the export's
    /// item count): the fold holds one bucket of the export's view items at a time.
    pub buckets: usize,
}

/// Why a backfill stopped.
#[derive(Debug, Error)]
pub enum BackfillError {
    /// The export's summary is not there (yet).
    #[error(
        "the export's manifest s3://{bucket}/{key} does not exist yet; the operator looks again shortly (if \
         the export completed long ago, its files were deleted: delete status.backfill to start another)"
    )]
    ManifestMissing { bucket: String, key: String },
    /// A data file listed by the manifest is not there.
    #[error("data file {candidates:?} listed by the export's manifest is missing from bucket {bucket}")]
    DataFileMissing { bucket: String, candidates: Vec<String> },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A data file is corrupt, or one of its records cannot be projected.
    #[error(transparent)]
    Read(#[from] ReadError<RecordError>),
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("the backfill checkpoint cannot be read or written: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// A `Scan` backfill's segment holds an item that cannot be read or projected.
    #[error("scan segment {segment} of the log: {message}")]
    Scan { segment: i32, message: String },
    /// DynamoDB refused a record's write (a sum it cannot store) and the view's `onRecordError` is `Fail`.
    #[error("{0}")]
    Rejected(String),
    /// The thread reading `file` panicked or was cancelled: a bug, reported as such.
    #[error("reading data file {file} stopped unexpectedly: {message}")]
    Internal { file: String, message: String },
}

impl BackfillError {
    /// Whether trying again later can succeed without a change by the user.
    pub fn retryable(&self) -> bool {
        match self {
            BackfillError::ManifestMissing { .. }
            | BackfillError::Checkpoint(_)
            | BackfillError::Internal { .. } => true,
            BackfillError::Aws(e) => e.retryable,
            BackfillError::Read(ReadError::Io { .. }) => true,
            BackfillError::Read(ReadError::Callback { source: RecordError::WriterStopped, .. }) => true,
            _ => false,
        }
    }
}

/// Why one record stopped the reading of its file.
#[derive(Debug, Error)]
pub enum RecordError {
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    /// Writing failed, so reading stopped (the write error is reported instead).
    #[error("writing the view failed")]
    WriterStopped,
}

impl<C: FileCheckpoints> Worker<C> {
    /// Runs the backfill to the end: `Ok` once every file of this worker's share is checkpointed.
    pub async fn run(&self) -> Result<Progress, BackfillError> {
        let (summary, files) = read_manifests(&self.s3, &self.bucket, &self.summary_key).await?;
        let (index, count) = (self.share.0, self.share.1.max(1));
        let mine: Vec<DataFileEntry> = files
            .iter()
            .cloned()
            .enumerate()
            .filter(|(i, _)| i % count == index)
            .map(|(_, f)| f)
            .collect();
        let all: Vec<String> = files.iter().map(|f| f.data_file_s3_key.clone()).collect();
        self.checkpoints.layout(&all, (index, count));
        let done = self.checkpoints.done().await.map_err(BackfillError::Checkpoint)?;
        let begun = match self.pre_aggregate {
            // Partial sums are whole files' (see `aggregate`): such files start over.
            Some(_) => HashMap::new(),
            None => self
                .checkpoints
                .lines_done()
                .await
                .map_err(BackfillError::Checkpoint)?,
        };
        let started = Instant::now();
        let items_resumed;
        {
            let mut p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
            p.files_total = mine.len() as u64;
            p.items_total = mine.iter().map(|f| f.item_count).sum();
            let finished: Vec<&DataFileEntry> = mine
                .iter()
                .filter(|f| done.contains(&f.data_file_s3_key))
                .collect();
            p.files_done = finished.len() as u64;
            p.files_resumed = p.files_done;
            p.items_done = finished.iter().map(|f| f.item_count).sum();
            items_resumed = p.items_done;
        }
        let todo: Vec<DataFileEntry> = mine
            .into_iter()
            .filter(|f| !done.contains(&f.data_file_s3_key))
            .collect();
        if !done.is_empty() {
            info!(
                summary = %self.summary_key,
                files_done = done.len(),
                files_left = todo.len(),
                "resuming the backfill from its checkpoint"
            );
        }
        let kind = summary.export_type;
        // Boxed: a stream of borrowing futures is otherwise not provably `Send` for every lifetime.
        let files: Vec<FileFuture<'_>> = todo
            .iter()
            .map(|file| {
                // A position at or past the file's end (from another export, or edited) is not trusted:
                // the file is read from its start.
                let skip = match begun.get(&file.data_file_s3_key).copied().unwrap_or(0) {
                    s if s < file.item_count => s,
                    s => {
                        tracing::warn!(file = %file.data_file_s3_key, saved = s, records = file.item_count, "a saved position is not within the data file; reading it from its start");
                        0
                    }
                };
                Box::pin(self.project_file(&summary, kind, file, skip)) as FileFuture<'_>
            })
            .collect();
        let pace = Pace { started, items_resumed };
        run_units(files, self.parallelism, &self.progress, pace).await?;
        Ok(self.progress.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Reads, projects and writes one data file, then checkpoints it; returns its record count. The first
    /// `skip` records were applied by an earlier run: they are read (the file is verified whole) but not
    /// projected again.
    async fn project_file(
        &self,
        summary: &ManifestSummary,
        kind: ExportKind,
        file: &DataFileEntry,
        skip: u64,
    ) -> Result<u64, BackfillError> {
        if skip > 0 {
            info!(file = %file.data_file_s3_key, skip, "resuming a data file after the records an earlier run applied");
        }
        let candidates = summary.data_file_key_candidates(file);
        let (_, body) = open_object(
            &self.s3,
            &self.bucket,
            &candidates,
            Some(self.writer.transient_log()),
        )
        .await?
        .ok_or_else(|| BackfillError::DataFileMissing {
            bucket: self.bucket.clone(),
            candidates: candidates.clone(),
        })?;
        // Each chunk with the number of records read when it was cut.
        let (chunks_tx, mut chunks) = tokio::sync::mpsc::channel::<(Vec<ViewWrite>, u64)>(4);
        let projection = self.projection.clone();
        let entry = file.clone();
        let progress = self.progress.clone();
        let reading = tokio::task::spawn_blocking(move || {
            let mut chunk = Vec::with_capacity(WRITE_CHUNK);
            let mut read = 0u64;
            let stats = read_data_file::<_, Item, RecordError, _>(&entry, kind, body, |record| {
                read += 1;
                if read <= skip {
                    return Ok(());
                }
                let item = match record {
                    ExportRecord::Full(item) => item,
                    // A log is append-only: an incremental line without a new image has nothing to project.
                    ExportRecord::Incremental { new_image, .. } => match new_image {
                        Some(item) => item,
                        None => return Ok(()),
                    },
                };
                // The record's key, kept only for a record error's identity (a record noted by several
                // processes, or twice, counts once).
                let keys = (
                    item.get(&projection.log_keys().partition_key).cloned(),
                    (projection.log_keys().sort_key.as_ref()).and_then(|s| item.get(s).cloned()),
                );
                let projected = match projection.project_owned(item) {
                    Err(e) if projection.on_record_error() == RecordErrorPolicy::Skip => {
                        let id = keys
                            .0
                            .as_ref()
                            .and_then(|pk| crate::projection::RecordId::new(pk, keys.1.as_ref()));
                        let mut p = progress.lock().unwrap_or_else(|e| e.into_inner());
                        p.record_errors.push_record(id.map(|i| i.digest()), e.to_string());
                        None
                    }
                    other => other?,
                };
                if let Some(write) = projected {
                    chunk.push(write);
                    if chunk.len() == WRITE_CHUNK {
                        let full = std::mem::replace(&mut chunk, Vec::with_capacity(WRITE_CHUNK));
                        chunks_tx
                            .blocking_send((full, read))
                            .map_err(|_| RecordError::WriterStopped)?;
                    }
                }
                Ok(())
            })?;
            if !chunk.is_empty() {
                chunks_tx
                    .blocking_send((chunk, read))
                    .map_err(|_| ReadError::Callback {
                        file: entry.data_file_s3_key.clone(),
                        line: stats.records,
                        source: RecordError::WriterStopped,
                    })?;
            }
            Ok::<_, Box<ReadError<RecordError>>>(stats)
        });
        let mut write_error = None;
        let mut partials = Partials::default();
        let mut reducer = Reducer::default();
        let mut last = false;
        let (mut lines, mut saved_lines) = (skip, skip);
        loop {
            let mut chunk = match chunks.recv().await {
                Some((chunk, read)) => {
                    lines = read;
                    chunk
                }
                None if last || reducer.is_empty() => break,
                // The file is read: what the reducer holds is sent last.
                None => {
                    last = true;
                    reducer.take()
                }
            };
            // Time to record how far into the file the worker is: everything read so far goes out now.
            let save_point = !last && self.pre_aggregate.is_none() && lines - saved_lines >= LINES_SAVE_EVERY;
            if !last && self.pre_aggregate.is_none() {
                let mut rest = Vec::with_capacity(chunk.len());
                for write in chunk {
                    rest.extend(reducer.push(write));
                }
                chunk = rest;
                if reducer.len() >= MAX_REDUCED || save_point {
                    chunk.extend(reducer.take());
                }
            }
            if let Some(pre) = &self.pre_aggregate {
                let mut rest = Vec::with_capacity(chunk.len());
                for write in chunk {
                    match partials.take(write, &pre.band) {
                        Ok(Some(other)) => rest.push(other),
                        Ok(None) => {}
                        Err(refused) => {
                            if let Err(e) = self.refuse(refused) {
                                write_error = Some(*e);
                            }
                        }
                    }
                }
                // A file with very many distinct `Latest` keys: send them now rather than hold them all.
                if partials.latest_len() >= MAX_REDUCED {
                    rest.extend(partials.take_latest());
                }
                chunk = rest;
            }
            if write_error.is_some() {
                break;
            }
            match self.writer.apply(chunk).await {
                Ok(stats) => {
                    let sent = stats.writes;
                    self.progress
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .writes_sent += sent;
                    if let Err(e) = take_rejected(&self.projection, &self.progress, stats) {
                        write_error = Some(*e);
                        break;
                    }
                    if save_point {
                        // Every record read so far is applied (the reducer was emptied above).
                        match (self.checkpoints)
                            .save_lines_done(&file.data_file_s3_key, lines)
                            .await
                        {
                            Ok(()) => saved_lines = lines,
                            Err(e) => {
                                tracing::warn!(file = %file.data_file_s3_key, error = %e, "could not record how far into the file the backfill is; a restart re-reads more of it")
                            }
                        }
                    }
                }
                Err(e) => {
                    write_error = Some(e.into());
                    break;
                }
            }
        }
        drop(chunks);
        let read = reading.await.map_err(|e| BackfillError::Internal {
            file: file.data_file_s3_key.clone(),
            message: e.to_string(),
        })?;
        if let Some(e) = write_error {
            return Err(e);
        }
        let stats = read.map_err(|e| BackfillError::Read(*e))?;
        if let Some(pre) = &self.pre_aggregate {
            // The file's partials go to S3 before the file counts as done: a resumed backfill folds them.
            for (bucket, part) in partials.into_buckets(pre.buckets).into_iter().enumerate() {
                if !part.is_empty() {
                    let key = partial_key(&pre.partials_prefix, bucket, &file.data_file_s3_key);
                    put_small_object(&self.s3, &self.bucket, &key, part.to_bytes()).await?;
                }
            }
        }
        self.checkpoints
            .mark_done(&file.data_file_s3_key, stats.records)
            .await
            .map_err(BackfillError::Checkpoint)?;
        crate::fail_point!("backfill-file-checkpointed");
        Ok(stats.records)
    }
}

impl<C> Worker<C> {
    /// A record (or, `record` `None`, an aggregate) whose sum DynamoDB could not store, under the view's
    /// `onRecordError`.
    fn refuse(&self, refused: Unstorable) -> Result<(), Box<BackfillError>> {
        let stats = WriteStats {
            rejected: vec![crate::aws::views::RejectedWrite {
                record: refused.record.unwrap_or_else(|| {
                    crate::projection::RecordId::new(&crate::projection::Value::S("(several)".into()), None)
                        .expect("a string key")
                }),
                pk: refused.pk,
                sk: refused.sk,
                reason: refused.reason,
            }],
            ..WriteStats::default()
        };
        take_rejected(&self.projection, &self.progress, stats)
    }

    /// After every file of every share is done: sums the partial objects under the worker's
    /// `partials_prefix` and folds them into the view (see [`super::aggregate`]); returns the aggregates
    /// written. Idempotent: an aggregate folded by an earlier run is not folded again.
    pub async fn fold(&self, attempt: i64) -> Result<u64, BackfillError> {
        let Some(pre) = &self.pre_aggregate else {
            return Ok(0);
        };
        let mut aggregates = 0;
        for bucket in 0..pre.buckets.max(1) {
            aggregates += self
                .fold_bucket(attempt, &bucket_prefix(&pre.partials_prefix, bucket))
                .await?;
        }
        // Only once every bucket's bases are folded: the view's other aggregates of a later attempt.
        aggregates += self.writer.fold_rest(attempt).await?.applied;
        info!(aggregates, "folded the backfill's partials into the view");
        Ok(aggregates)
    }

    /// One bucket of [`Self::fold`]: its partials from every data file, combined, written once each.
    async fn fold_bucket(&self, attempt: i64, prefix: &str) -> Result<u64, BackfillError> {
        let mut total = Partials::default();
        for key in list_keys(&self.s3, &self.bucket, prefix).await? {
            let bytes = get_small_object(&self.s3, &self.bucket, &key)
                .await?
                .unwrap_or_default();
            let partials = Partials::from_bytes(&bytes)
                .map_err(|e| BackfillError::Internal { file: key.clone(), message: e })?;
            for refused in total.merge(partials) {
                self.refuse(refused).map_err(|e| *e)?;
            }
        }
        let aggregates = total.len() as u64;
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .writes_sent += aggregates;
        let (bases, others, unstorable) = total.split();
        for refused in unstorable {
            self.refuse(refused).map_err(|e| *e)?;
        }
        let stats = self.writer.apply(others).await?;
        take_rejected(&self.projection, &self.progress, stats).map_err(|e| *e)?;
        let refused = match bases.is_empty() {
            true => Vec::new(),
            false => self.writer.fold(attempt, bases).await?.1,
        };
        for reason in refused {
            self.refuse(Unstorable { record: None, pk: String::new(), sk: String::new(), reason })
                .map_err(|e| *e)?;
        }
        Ok(aggregates)
    }
}

/// Applies the view's `onRecordError` policy to the records DynamoDB refused in `stats`: `Skip` counts
/// them in `progress`, `Fail` stops with the first ([`BackfillError::Rejected`]).
pub fn take_rejected(
    projection: &ProjectionConfig,
    progress: &Mutex<Progress>,
    stats: WriteStats,
) -> Result<(), Box<BackfillError>> {
    for r in stats.rejected {
        let message = format!(
            "view {}: record {}: DynamoDB refused its write to pk={:?}, sk={:?}: {}; leave such records out \
             with spec.projection.filter, or change the projection",
            projection.view_name(),
            r.record,
            r.pk,
            r.sk,
            r.reason
        );
        match projection.on_record_error() {
            RecordErrorPolicy::Skip => progress
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record_errors
                .push_record(Some(r.record.digest()), message),
            RecordErrorPolicy::Fail => return Err(Box::new(BackfillError::Rejected(message))),
        }
    }
    Ok(())
}

/// When a backfill run started, and the items an earlier run did (left out of its rate).
#[derive(Clone, Copy)]
pub(crate) struct Pace {
    pub started: Instant,
    pub items_resumed: u64,
}

/// Runs `units` (data files or scan segments, each yielding its item count) `parallelism` at a time,
/// counting each finished one in `progress` (`files_done`, `items_done`, `items_per_second`). Every unit
/// runs to its end; the first error is returned after.
pub(crate) async fn run_units<F>(
    units: impl IntoIterator<Item = F>,
    parallelism: usize,
    progress: &Mutex<Progress>,
    pace: Pace,
) -> Result<(), BackfillError>
where
    F: std::future::Future<Output = Result<u64, BackfillError>>,
{
    let mut results = futures::stream::iter(units).buffer_unordered(parallelism.max(1));
    let mut first_error = None;
    while let Some(result) = results.next().await {
        match result {
            Ok(items) => {
                let mut p = progress.lock().unwrap_or_else(|e| e.into_inner());
                p.files_done += 1;
                p.items_done += items;
                let elapsed = pace.started.elapsed().as_secs_f64().max(0.001);
                p.items_per_second = (p.items_done - pace.items_resumed) as f64 / elapsed;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}
