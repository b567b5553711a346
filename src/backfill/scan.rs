//! The `Scan` backfill source, for logs without point-in-time recovery: a parallel segmented `Scan` of the
//! log table, projected and written like an export, checkpointed per segment.
//!
//! Consistency: a scan is not a snapshot. An item written while the scan runs may or may not be seen,
//! depending on whether the scan already passed its key. That loses nothing here, because the view's live
//! path starts before the scan: whatever the scan misses arrives through the stream, and whatever both
//! deliver is applied once (idempotent writes). What a scan costs instead is read capacity on the log
//! table (eventually consistent reads, half a unit per 4 KB), and its pages are not verified the way an
//! export's files are (no MD5, no item count).
//!
//! A segment is checkpointed (key `scan-<segment>-of-<total>`) only after all its pages were written;
//! an interrupted segment is scanned again from its start.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tracing::info;

use super::worker::{BackfillError, FileCheckpoints, Pace, Progress, RecordError, run_units};
use crate::aws::scan;
use crate::aws::views::ViewTableWriter;
use crate::crd::RecordErrorPolicy;
use crate::projection::{ProjectionConfig, item_from_dynamodb};

/// A scan backfill of one log table.
pub struct ScanWorker<C> {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub log_table: String,
    /// Segments in all (DynamoDB allows up to 1,000,000).
    pub total_segments: i32,
    pub projection: Arc<ProjectionConfig>,
    pub writer: ViewTableWriter,
    pub checkpoints: C,
    /// Segments scanned at once.
    pub parallelism: usize,
    pub progress: Arc<Mutex<Progress>>,
}

/// The checkpoint key of a segment.
pub fn segment_key(segment: i32, total: i32) -> String {
    format!("scan-{segment}-of-{total}")
}

impl<C: FileCheckpoints> ScanWorker<C> {
    /// Scans every segment not yet checkpointed; `Ok` once all are.
    pub async fn run(&self) -> Result<Progress, BackfillError> {
        let total = self.total_segments.max(1);
        let segments: Vec<String> = (0..total).map(|s| segment_key(s, total)).collect();
        self.checkpoints.layout(&segments, (0, 1));
        let done = self.checkpoints.done().await.map_err(BackfillError::Checkpoint)?;
        let todo: Vec<i32> = (0..total)
            .filter(|s| !done.contains(&segment_key(*s, total)))
            .collect();
        {
            let mut p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
            p.files_total = total as u64;
            p.files_done = (total as usize - todo.len()) as u64;
            p.files_resumed = p.files_done;
        }
        if !done.is_empty() {
            info!(table = %self.log_table, segments_done = done.len(), segments_left = todo.len(), "resuming the backfill from its checkpoint");
        }
        let started = Instant::now();
        // A scan does not know its item total in advance: progress counts segments.
        let segments = todo.into_iter().map(|segment| self.scan_segment(segment, total));
        let items_resumed = self.progress.lock().unwrap_or_else(|e| e.into_inner()).items_done;
        let pace = Pace { started, items_resumed };
        run_units(segments, self.parallelism, &self.progress, pace).await?;
        let mut p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        p.items_total = p.items_done;
        Ok(p.clone())
    }

    async fn scan_segment(&self, segment: i32, total: i32) -> Result<u64, BackfillError> {
        let mut start = None;
        let mut items = 0u64;
        loop {
            // A transient error is retried in place: the segment goes on from this page.
            let page = crate::aws::retry::transient(Some(self.writer.transient_log()), || {
                scan::segment_page(&self.dynamodb, &self.log_table, segment, total, start.clone())
            })
            .await?;
            let mut writes = Vec::with_capacity(page.items.len());
            for (line, raw) in page.items.into_iter().enumerate() {
                let item = item_from_dynamodb(raw).map_err(|e| BackfillError::Scan {
                    segment,
                    message: format!("item {}: {e}", items + line as u64 + 1),
                })?;
                match self.projection.project_owned(item) {
                    Ok(Some(write)) => writes.push(write),
                    Ok(None) => {}
                    Err(e) if self.projection.on_record_error() == RecordErrorPolicy::Skip => {
                        let mut p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
                        p.record_errors.push(e.to_string());
                    }
                    Err(e) => {
                        return Err(BackfillError::Scan {
                            segment,
                            message: RecordError::Projection(e).to_string(),
                        });
                    }
                }
                items += 1;
            }
            let stats = self.writer.apply(writes).await?;
            super::worker::take_rejected(&self.projection, &self.progress, stats).map_err(|e| *e)?;
            start = page.next;
            if start.is_none() {
                break;
            }
        }
        self.checkpoints
            .mark_done(&segment_key(segment, total), items)
            .await
            .map_err(BackfillError::Checkpoint)?;
        Ok(items)
    }
}
