//! The live path of an `InCluster` view: the operator reads the log's stream and projects each new record
//! into the view, checkpointing its position in a ConfigMap the view owns.
//!
//! Guarantees:
//! - At least once, applied exactly once in effect: the checkpoint moves only after every write of a batch
//!   succeeded, and the writes are idempotent, so a restart re-reads at most one batch without harm.
//! - A new reader starts at the stream's trim horizon: nothing written after the reader started can be
//!   missed, which is what lets the backfill's export begin once the reader runs.
//! - Records the stream no longer holds (a checkpoint older than the stream's 24-hour retention) are a
//!   **gap**: the reader records it in [`LiveProgress::gap`], forgets the lost shard and goes on; the view
//!   then closes the gap from the log itself with a new backfill.
//! - A record that cannot be projected (or whose write DynamoDB refuses, such as a sum it cannot store)
//!   follows the view's `onRecordError`: `Skip` leaves it out and reports it in
//!   [`LiveProgress::record_errors`]; `Fail` stops the reader before the record's batch and reports it in
//!   [`LiveProgress::failed`] (the log is immutable, so only a change of the view can help). Never an
//!   endless retry that stalls every other record, and never `caught_up` while failing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{info, warn};

use super::checkpoints::ConfigMapCheckpoint;
use super::shared_stream::SharedStreams;
use super::stream::{EventName, ShardPosition, StreamError};
use crate::aws::views::ViewTableWriter;
use crate::backfill::aggregate::{Cutoff, Disposition};
use crate::crd::RecordErrorPolicy;
use crate::projection::{ProjectionConfig, RecordErrors, ViewWrite};

/// Records asked for per `GetRecords`.
const RECORDS_PER_CALL: i32 = 1000;
/// Records read before they are applied, while the reader is behind.
const RECORDS_PER_APPLY: usize = 5000;

/// What the live path reports to the reconciler.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LiveProgress {
    /// The reader polled the stream at least once: every record written from now on will be read.
    pub started: bool,
    /// The last poll found no new record on any shard.
    pub caught_up: bool,
    /// `ApproximateCreationDateTime` (epoch seconds) of the newest record applied.
    pub watermark: Option<f64>,
    pub records_applied: u64,
    /// The last transient failure, cleared by the next success.
    pub error: Option<String>,
    /// Records left out under `onRecordError: Skip`.
    pub record_errors: RecordErrors,
    /// Under `onRecordError: Fail`: the record that stopped the reader.
    pub failed: Option<String>,
    /// Records were lost from the stream (see the module docs); set until the reconciler takes it.
    pub gap: Option<String>,
    /// Everything created up to this time (epoch seconds) has been read and applied: the newest applied
    /// record's creation time, or, when the reader found every shard at its end ([`Batch::at_end_since`]),
    /// the start of its run of empty pages (less a second of rounding).
    ///
    /// [`Batch::at_end_since`]: super::stream::Batch::at_end_since
    pub passed: Option<f64>,
}

/// One view's stream reader: a [`super::shared_stream::Subscription`] to the log's shared reader.
pub struct LiveReader {
    pub streams: Arc<SharedStreams>,
    pub stream_arn: String,
    pub projection: Arc<ProjectionConfig>,
    pub writer: ViewTableWriter,
    pub checkpoint: ConfigMapCheckpoint,
    pub progress: Arc<Mutex<LiveProgress>>,
    /// `Count`/`Sum` views with a pre-aggregated backfill: which records to skip, apply, or apply and
    /// record in the band (see [`crate::backfill::aggregate`]).
    pub cutoff: Option<Cutoff>,
    /// Wakes the view's reconcile when [`LiveProgress::state`] changes.
    pub wake: Option<super::Wake>,
}

impl LiveProgress {
    /// What the view's status is made of, as opposed to counters: started, caught up, failing, stopped
    /// at a record, a gap found. A change of it wakes the reconcile.
    pub fn state(&self) -> (bool, bool, bool, bool, bool) {
        (
            self.started,
            self.caught_up,
            self.error.is_some(),
            self.failed.is_some(),
            self.gap.is_some(),
        )
    }
}

impl LiveReader {
    fn update(&self, f: impl FnOnce(&mut LiveProgress)) {
        let changed = {
            let mut p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
            let before = p.state();
            f(&mut p);
            p.state() != before
        };
        if changed && let Some(wake) = &self.wake {
            wake.wake();
        }
    }

    /// Runs until the task is aborted; transient failures are retried with backoff.
    pub async fn run(self) {
        let mut backoff = Backoff::default();
        // A gap found before a restart whose backfill attempt was not recorded yet: report it again.
        match self.checkpoint.stream_gap(&self.stream_arn).await {
            Ok(Some(gap)) => self.update(|p| p.gap = Some(gap)),
            Ok(None) => {}
            Err(e) => warn!(error = %e, "live path: could not read a pending gap from the checkpoint"),
        }
        if let Some(cutoff) = &self.cutoff
            && cutoff.export_time.is_none()
            && self.projection.is_additive()
        {
            // A pre-aggregated backfill's export is not requested yet: hold at the checkpoint (the stream
            // keeps what follows it), so the export, not this reader, counts the history. The reconciler
            // starts a new reader once the export time is known.
            info!(stream = %self.stream_arn, "live path: holding at its checkpoint until the backfill's export time is known");
            self.update(|p| p.started = true);
            std::future::pending::<()>().await;
        }
        loop {
            let position = match self.checkpoint.stream_position(&self.stream_arn).await {
                Ok(p) => p,
                Err(e) => {
                    self.update(|p| p.error = Some(e.to_string()));
                    backoff.wait().await;
                    continue;
                }
            };
            info!(stream = %self.stream_arn, shards = position.shards.len(), checkpoint = %self.checkpoint.name(), "live path: reading the log's stream");
            let mut saved = position.clone();
            let mut reader = self.streams.subscribe(&self.stream_arn, position);
            let mut pending = Vec::new();
            loop {
                match reader.poll(RECORDS_PER_CALL).await {
                    Ok(mut batch) => {
                        // Behind: read on, up to RECORDS_PER_APPLY, so aggregates are recomputed once per
                        // many records rather than once per call.
                        pending.append(&mut batch.records);
                        if !batch.caught_up && pending.len() < RECORDS_PER_APPLY {
                            continue;
                        }
                        batch.records = std::mem::take(&mut pending);
                        let count = batch.records.len() as u64;
                        let mut newest = None::<f64>;
                        let mut writes: Vec<ViewWrite> = Vec::new();
                        let mut band = std::collections::HashSet::new();
                        let mut rejected = Vec::new();
                        for record in batch.records {
                            let created = record.approximate_creation_epoch_seconds;
                            if let Some(t) = created {
                                newest = Some(newest.map_or(t, |n| n.max(t)));
                            }
                            // A log is append-only: only inserted records carry something to project. A
                            // MODIFY is a record put again (a producer's retried write): it was applied when
                            // inserted, or is in the export; projecting it again would count it twice. The
                            // projector function ignores it the same way.
                            let EventName::Insert = record.event_name else {
                                continue;
                            };
                            let Some(image) = record.new_image else { continue };
                            let disposition = match &self.cutoff {
                                Some(cutoff) if self.projection.is_additive() => cutoff.classify(created),
                                _ => Disposition::Live,
                            };
                            if disposition == Disposition::Skip {
                                continue; // in the export: the backfill counts it
                            }
                            match self.projection.project_owned(image) {
                                Ok(Some(write)) => {
                                    if let (Disposition::Band, ViewWrite::Add { record, .. }) =
                                        (disposition, &write)
                                    {
                                        band.insert(record.clone());
                                    }
                                    writes.push(write)
                                }
                                Ok(None) => {}
                                Err(e) => {
                                    rejected.push(format!("{} (stream record {})", e, record.sequence_number))
                                }
                            }
                        }
                        let fail = self.projection.on_record_error() == RecordErrorPolicy::Fail;
                        let stats = match rejected.first() {
                            Some(first) if fail => Err(first.clone()),
                            _ => match self.writer.apply_with_band(writes, &band).await {
                                Ok(stats) => {
                                    for r in &stats.rejected {
                                        rejected.push(format!(
                                            "view {}: record {}: DynamoDB refused its write to pk={:?}, sk={:?}: {}",
                                            self.projection.view_name(),
                                            r.record,
                                            r.pk,
                                            r.sk,
                                            r.reason
                                        ));
                                    }
                                    match rejected.first() {
                                        Some(first) if fail => Err(first.clone()),
                                        _ => Ok(stats),
                                    }
                                }
                                Err(e) => {
                                    warn!(error = %e, "live path: writing the view failed; re-reading from the checkpoint");
                                    self.update(|p| {
                                        p.error = Some(e.to_string());
                                        p.caught_up = false;
                                    });
                                    pending.clear();
                                    reader.rewind(saved.clone());
                                    backoff.wait().await;
                                    continue;
                                }
                            },
                        };
                        if let Err(record) = stats {
                            warn!(error = %record, "live path: a record cannot be applied and spec.projection.onRecordError is Fail; stopped before it");
                            self.update(|p| {
                                p.failed = Some(record);
                                p.caught_up = false;
                            });
                            pending.clear();
                            reader.rewind(saved.clone());
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            continue;
                        }
                        if count > 0 && batch.checkpoint != saved {
                            if let Err(e) = self
                                .checkpoint
                                .save_stream_position(&self.stream_arn, &batch.checkpoint)
                                .await
                            {
                                self.update(|p| p.error = Some(e.to_string()));
                                pending.clear();
                                reader.rewind(saved.clone());
                                backoff.wait().await;
                                continue;
                            }
                            saved = batch.checkpoint;
                        }
                        backoff.reset();
                        let caught_up = batch.caught_up;
                        let at_end_since = (batch.at_end_since)
                            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                            .map(|d| d.as_secs_f64());
                        self.update(|p| {
                            p.started = true;
                            p.caught_up = caught_up;
                            p.error = None;
                            p.failed = None;
                            p.records_applied += count;
                            if let Some(t) = newest {
                                p.watermark = Some(p.watermark.map_or(t, |w| w.max(t)));
                            }
                            let passed = match at_end_since {
                                Some(since) => newest.unwrap_or(0.0).max(since - 1.0),
                                None => newest.unwrap_or(0.0),
                            };
                            if passed > 0.0 {
                                p.passed = Some(p.passed.map_or(passed, |w| w.max(passed)));
                            }
                            for e in rejected.drain(..) {
                                warn!(error = %e, "live path: a log record cannot be applied; it is left out (onRecordError Skip)");
                                p.record_errors.push(e);
                            }
                        });
                    }
                    Err(StreamError::Gap { shard, after }) => {
                        let message = format!(
                            "the log's stream no longer holds the records of shard {shard} after sequence number {}: \
                             they are older than the stream's retention",
                            after.as_deref().unwrap_or("(start)")
                        );
                        warn!(%message, "live path: gap; the view backfills from the log again");
                        saved.shards.remove(&shard);
                        // The gap and the position past it in one write: a restart finds both or neither.
                        if let Err(e) = self
                            .checkpoint
                            .save_stream_gap(&self.stream_arn, &saved, &message)
                            .await
                        {
                            self.update(|p| p.error = Some(e.to_string()));
                            backoff.wait().await;
                        }
                        self.update(|p| p.gap = Some(message));
                        break;
                    }
                    Err(StreamError::Record { shard, sequence_number, message }) => {
                        // The log is immutable: an unreadable record stays unreadable. Skip it, and say so.
                        let error = format!("stream record {sequence_number} of shard {shard}: {message}");
                        warn!(%error, "live path: a stream record cannot be read; it is skipped");
                        saved
                            .shards
                            .insert(shard, ShardPosition::Reading { after: Some(sequence_number) });
                        pending.clear();
                        reader.rewind(saved.clone());
                        self.update(|p| p.record_errors.push(error));
                    }
                    Err(e) => {
                        warn!(error = %e, "live path: reading the stream failed; trying again");
                        self.update(|p| p.error = Some(e.to_string()));
                        pending.clear();
                        reader.rewind(saved.clone());
                        backoff.wait().await;
                    }
                }
            }
        }
    }
}

/// 1 s doubling to 60 s.
#[derive(Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    async fn wait(&mut self) {
        let secs = 1u64 << self.failures.min(6);
        self.failures += 1;
        tokio::time::sleep(Duration::from_secs(secs.min(60))).await;
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}
