//! Retry in place: a transient AWS error (throttling, 5xx, a timeout or reset; see
//! [`super::error::classify`]) is tried again where it happened, with capped exponential backoff and full
//! jitter, so a backfill never gives up a data file, a scan segment or a view write request because
//! AWS was briefly busy. Permanent errors return at once: only a user can fix them.
//!
//! The unit of retry is one request (its SDK call), never a piece of work that sends many: the chance
//! that n requests all succeed falls as 0.8^n at a 20% failure rate, so work retried whole stalls.
//!
//! Each SDK client already makes up to 3 attempts per call ([`super::Aws::from_env`]); this is the outer
//! loop AWS's "Error retries and exponential backoff" guidance asks of long-running work. The SDK's
//! retry quota (a token bucket, see the SDK's "Retries" guide) runs dry when many calls fail, after
//! which every failure reaches this loop.
//!
//! The backoff is the `backon` crate's exponential builder: 200 ms doubling to 20 s, full jitter, at most
//! [`MAX_RETRIES`] retries (about 5 minutes of waiting) before the error goes to the caller, which then
//! resumes from its checkpoint.

use std::future::Future;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::AwsError;

/// Retries of one call before its transient error is returned to the caller.
pub const MAX_RETRIES: usize = 20;
const MIN_DELAY: Duration = Duration::from_millis(200);
const MAX_DELAY: Duration = Duration::from_secs(20);

/// Labels of `kappa_aws_retries_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct RetryLabels {
    pub operation: String,
}

/// `kappa_aws_retries_total{operation}`: transient AWS errors retried in place, process-wide (registered
/// by [`crate::metrics::Metrics`]).
pub static RETRIES: LazyLock<Family<RetryLabels, Counter>> = LazyLock::new(Family::default);

/// The backoff between retries (see the module docs).
pub fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(MIN_DELAY)
        .with_max_delay(MAX_DELAY)
        .with_factor(2.0)
        .with_max_times(MAX_RETRIES)
        .with_jitter()
}

/// Transient errors seen by one piece of work (a view's backfill or live path), for its status: how many
/// were retried and the last one.
#[derive(Clone, Debug, Default)]
pub struct TransientLog(Arc<Mutex<Transient>>);

/// What a [`TransientLog`] holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transient {
    /// Transient errors retried in place so far.
    pub count: u64,
    /// The newest of them, as `AwsError`'s message.
    pub last: Option<String>,
}

impl TransientLog {
    /// Counts `error`.
    pub fn note(&self, error: &AwsError) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        t.count += 1;
        t.last = Some(error.to_string());
    }

    /// What was counted so far.
    pub fn get(&self) -> Transient {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Notes one retry of a transient error `e`, `wait` from now: logged, counted in
/// `kappa_aws_retries_total` and in `log`. For retry loops of their own (a round of requests, a
/// cancelled transaction); [`transient`] calls it for each of its retries.
pub fn note_retry(log: Option<&TransientLog>, e: &AwsError, wait: Duration) {
    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "transient AWS error; retrying in place");
    RETRIES
        .get_or_create(&RetryLabels { operation: e.operation.to_string() })
        .inc();
    if let Some(log) = log {
        log.note(e);
    }
}

/// Runs `call` until it succeeds, fails permanently, or has been retried [`MAX_RETRIES`] times; each
/// retry is logged, counted in `kappa_aws_retries_total` and noted in `log`.
///
/// `call` must be safe to repeat (idempotent): every AWS call the backfill and live paths make is.
pub async fn transient<T, F, Fut>(log: Option<&TransientLog>, mut call: F) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AwsError>>,
{
    (|| call())
        .retry(backoff())
        .sleep(tokio::time::sleep)
        .when(|e: &AwsError| e.retryable)
        .notify(|e: &AwsError, wait: Duration| note_retry(log, e, wait))
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn throttled() -> AwsError {
        AwsError::new("PutItem", "t", "ThrottlingException", "Rate exceeded")
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_in_place_and_counted() {
        let calls = AtomicU32::new(0);
        let log = TransientLog::default();
        let out = transient(Some(&log), || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0..=4 => Err(throttled()),
                _ => Ok(7),
            }
        })
        .await;
        assert_eq!(out, Ok(7));
        assert_eq!(calls.load(Ordering::SeqCst), 6);
        let t = log.get();
        assert_eq!(t.count, 5);
        assert!(t.last.unwrap().contains("ThrottlingException"));
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_return_at_once() {
        let calls = AtomicU32::new(0);
        let out: Result<(), _> = transient(None, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(AwsError::new("PutItem", "t", "AccessDeniedException", "no"))
        })
        .await;
        assert!(!out.unwrap_err().retryable);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_transient_error_that_lasts_goes_to_the_caller_after_the_cap_with_bounded_waits() {
        let calls = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let out: Result<(), _> = transient(None, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(throttled())
        })
        .await;
        assert!(
            out.unwrap_err().retryable,
            "still transient: the caller resumes later"
        );
        assert_eq!(calls.load(Ordering::SeqCst) as usize, MAX_RETRIES + 1);
        // Full jitter keeps every wait at most twice the cap (backon adds up to one more delay).
        let waited = started.elapsed();
        assert!(waited <= MAX_DELAY * 2 * MAX_RETRIES as u32, "waited {waited:?}");
    }
}
