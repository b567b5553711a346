//! Following a backfill that runs in this process: its progress copied into the runtime registry and the
//! status.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::backfill::worker::Progress;
use crate::cost::backfill::format_duration;
use crate::crd::BackfillStatus;
use crate::runtime::{BackfillFailure, BackfillRun};

/// Runs one backfill (an export's or a scan's), copying its progress into the registry every second and
/// its outcome at the end, which wakes the view's reconcile (`wake`).
pub(super) async fn track(
    progress: Arc<Mutex<Progress>>,
    transient: crate::aws::retry::TransientLog,
    work: impl Future<Output = Result<Progress, crate::backfill::worker::BackfillError>>,
    (run, wake): (Arc<Mutex<BackfillRun>>, crate::runtime::Wake),
) {
    let copy = |outcome: Option<Result<(), BackfillFailure>>| {
        let mut p = progress.lock().unwrap_or_else(|e| e.into_inner()).clone();
        p.transient = transient.get();
        let mut r = run.lock().unwrap_or_else(|e| e.into_inner());
        r.progress = p;
        r.outcome = outcome;
    };
    tokio::pin!(work);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let result = loop {
        tokio::select! {
            result = &mut work => break result,
            _ = tick.tick() => copy(None),
        }
    };
    copy(Some(result.map(|_| ()).map_err(|e| {
        tracing::warn!(error = %e, retryable = e.retryable(), "backfill stopped");
        BackfillFailure {
            message: e.to_string(),
            retryable: e.retryable(),
            input_gone: matches!(
                e,
                crate::backfill::worker::BackfillError::ManifestMissing { .. }
                    | crate::backfill::worker::BackfillError::DataFileMissing { .. }
            ),
        }
    })));
    wake.wake();
}

pub(super) fn apply_progress(b: &mut BackfillStatus, p: &Progress) {
    b.record_errors = p.record_errors.count as i64;
    b.files_done = p.files_done as i64;
    b.files_total = p.files_total as i64;
    b.items_done = p.items_done as i64;
    b.items_total = p.items_total as i64;
    let percent = (p.items_done * 100)
        .checked_div(p.items_total)
        .or_else(|| (p.files_done * 100).checked_div(p.files_total));
    if let Some(percent) = percent {
        b.progress = Some(format!("{percent}%"));
    }
    b.transient_errors = p.transient.count as i64;
    b.last_transient_error = p.transient.last.clone();
    if p.items_per_second > 0.0 {
        b.items_per_second = Some(p.items_per_second.round() as i64);
        let left = p.items_total.saturating_sub(p.items_done) as f64 / p.items_per_second;
        b.eta = Some(format_duration(left.round() as u64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::backfill::format_duration;

    #[test]
    fn progress_shows_percent_rate_and_eta() {
        let mut b = BackfillStatus::default();
        apply_progress(
            &mut b,
            &Progress {
                record_errors: Default::default(),
                writes_sent: 0,
                files_total: 8,
                files_done: 2,
                items_total: 20_000,
                items_done: 5_000,
                files_resumed: 0,
                items_per_second: 1_000.0,
                transient: crate::aws::retry::Transient {
                    count: 3,
                    last: Some("GetObject s3://b/k failed: SlowDown".into()),
                },
            },
        );
        assert_eq!(b.transient_errors, 3);
        assert!(b.last_transient_error.as_deref().unwrap().contains("SlowDown"));
        assert_eq!(b.progress.as_deref(), Some("25%"));
        assert_eq!(b.items_per_second, Some(1000));
        assert_eq!(b.eta.as_deref(), Some("15s"));
        assert_eq!(format_duration(3725), "1h2m");
        assert_eq!(format_duration(150), "2m30s");
    }
}
