//! A Lambda view's live lag: what the projector function reports of its progress, how often, and what
//! the operator concludes from it (#16 item 3).
//!
//! A projector invoked by Lambda has no reader the operator can watch (an in-cluster view's stream reader
//! reports its watermark in process). So after each invocation the function notes in the views table
//! ([`crate::projection::dynamo::live_progress_key`], one item per view version) when it finished records,
//! how many, and how far behind the log it was: the batch's **lag**, the time from the oldest finished
//! record's `ApproximateCreationDateTime` (when DynamoDB wrote it to the log; epoch seconds, per the
//! DynamoDB Streams `StreamRecord` reference) to the moment the function finished it. That is the
//! conservative end of Lambda's own `IteratorAge` metric (the age of the *last* record of a batch, see
//! "Working with Lambda function metrics", AWS Lambda Developer Guide). A batch whose records fail with a
//! retryable error (throttling, a 5xx) is noted as a failure with its reason.
//!
//! When to report ([`ProgressReporter`]): a report costs one `UpdateItem` on one item per view version.
//! - A **stream batch** (`Direct` fan-out) is reported every time: Lambda invokes a shard's function once
//!   at a time with up to `BatchSize` records, so that is at most one write per batch and shard, and the
//!   count and lag are exact.
//! - An **SNS event** holds one record, so a report per invocation would double a `Latest` view's writes
//!   at volume. A warm instance reports every invocation while it has report tokens: a bucket of
//!   [`REPORT_BURST`] refilled by [`REPORT_RATE_PER_SECOND`] (so a view with little traffic is counted
//!   exactly, and a busy instance writes about one report per second). Beyond that it reports its first
//!   batch, a failure starting or ending, a lag that crossed `spec.promotion.maxLag` (the function's
//!   [`ENV_MAX_LAG_MS`](crate::functions::projector::ENV_MAX_LAG_MS)) or moved by half or double (and by
//!   at least [`LAG_STEP_MS`]), an invocation after a pause of [`PAUSE_MS`], and otherwise at most every
//!   [`REPORT_INTERVAL_MS`]. A Lambda instance is frozen between invocations, so a report cannot be
//!   deferred: when an instance runs out of tokens at the end of a burst, its last records are counted
//!   when it next finishes records. So `status.live.recordsApplied` of an `Sns` view may trail by those
//!   records on a quiet log; its lag and promotion do not (below).
//!
//! The operator ([`assess`]) holds a version back from promotion while the newest report is a failure or
//! a lag over `spec.promotion.maxLag`. No report since the live path started means no record reached the
//! function: nothing to catch up. A **quiet** function — no report for [`quiet_after_ms`], longer than any
//! invocation can run plus the reporting interval — has finished everything Lambda gave it: its lag is 0
//! (the log is quiet), so a quiet log never holds a view back whatever its `maxLag`. A function that
//! times out or crashes reports nothing, but Lambda retries its records and then sends them to the
//! on-failure destination, which `status.deadLetters` counts.

use std::time::SystemTime;

use super::event::StreamRecord;

/// The longest a warm projector instance goes between two reports while it finishes records, in
/// milliseconds.
pub const REPORT_INTERVAL_MS: i64 = 5_000;

/// The smallest change of lag, in milliseconds, that is reported before [`REPORT_INTERVAL_MS`] passed.
pub const LAG_STEP_MS: i64 = 1_000;

/// The report tokens of an instance (SNS events; see the module documentation): at most this many reports
/// in a row beyond the other rules.
pub const REPORT_BURST: f64 = 5.0;

/// How fast an instance's report tokens refill, per second.
pub const REPORT_RATE_PER_SECOND: f64 = 1.0;

/// A pause of an instance, in milliseconds: an invocation ending this long after the instance's previous
/// one is reported (its records are not part of a busy stretch, so reporting them costs little).
pub const PAUSE_MS: i64 = 1_000;

/// How long after a view's newest report, in milliseconds, its projector function counts as quiet (see
/// the module documentation): the function's timeout (no invocation runs longer) plus
/// [`REPORT_INTERVAL_MS`] (a busy instance reports at least that often) plus 5 s for Lambda to poll the
/// stream or deliver from SNS. `function_timeout_seconds`: `spec.projector.timeoutSeconds`.
pub fn quiet_after_ms(function_timeout_seconds: i64) -> i64 {
    function_timeout_seconds.max(1) * 1_000 + REPORT_INTERVAL_MS + 5_000
}

/// How long a noted failure counts without being noted again, in milliseconds: Lambda retries a failed
/// stream batch with backoff and an SNS event twice within minutes, so an older failure is over.
pub const FAILURE_FRESH_MS: i64 = 900_000;

/// What one invocation finished: counted by the projector as it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchProgress {
    /// Records finished (applied, unchanged, not for this view, ignored or skipped as record errors).
    pub records: u64,
    /// The oldest finished record's `ApproximateCreationDateTime`, epoch milliseconds.
    pub oldest_created_ms: Option<i64>,
    /// The newest finished record's `ApproximateCreationDateTime`, epoch milliseconds.
    pub newest_created_ms: Option<i64>,
    /// The invocation was a stream batch (`Direct` fan-out), which is always reported.
    pub stream: bool,
}

impl BatchProgress {
    /// Counts `record` as finished.
    pub fn finished(&mut self, record: &StreamRecord) {
        self.records += 1;
        if let Some(created) = created_ms(record) {
            self.oldest_created_ms = Some(self.oldest_created_ms.map_or(created, |o| o.min(created)));
            self.newest_created_ms = Some(self.newest_created_ms.map_or(created, |n| n.max(created)));
        }
    }
}

/// A record's `ApproximateCreationDateTime` in epoch milliseconds: a number of seconds (AWS's events), or
/// a string of one (some examples). `None` when missing or not a number.
pub fn created_ms(record: &StreamRecord) -> Option<i64> {
    let seconds = match record.dynamodb.approximate_creation_date_time.as_ref()? {
        serde_json::Value::Number(n) => n.as_f64()?,
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (seconds.is_finite() && seconds >= 0.0).then(|| (seconds * 1_000.0).round() as i64)
}

/// One report of a projector instance, written to the view's live-progress item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveReport {
    /// When the instance reported, epoch milliseconds.
    pub at_ms: i64,
    /// Records finished since the instance's previous report.
    pub records: u64,
    /// The lag of the batch reported: `at_ms` minus its oldest finished record's creation time (0 when
    /// that lies in the future by clock skew). `None` when no finished record had a creation time.
    pub lag_ms: Option<i64>,
    /// The newest finished record's creation time, epoch milliseconds.
    pub newest_created_ms: Option<i64>,
    /// The retryable failure of the batch (Lambda retries it), if any.
    pub failure: Option<String>,
}

/// The reporting rule of one warm instance (module documentation): fed every invocation's outcome, it
/// says when to write a report.
#[derive(Debug, Clone, Default)]
pub struct ProgressReporter {
    last: Option<Reported>,
    pending: u64,
    /// `spec.promotion.maxLag` in milliseconds, when the function was told it.
    max_lag_ms: Option<i64>,
    /// When the instance's previous invocation ended, epoch milliseconds.
    previous_ms: Option<i64>,
    /// Report tokens left, and when they were counted (epoch milliseconds; `None`: a full bucket).
    tokens: f64,
    tokens_at: Option<i64>,
}

#[derive(Debug, Clone, Copy)]
struct Reported {
    at_ms: i64,
    lag_ms: Option<i64>,
    failing: bool,
}

impl ProgressReporter {
    /// The rule of an instance whose view promotes within `max_lag_ms` (`spec.promotion.maxLag`,
    /// milliseconds; `None` when unknown: a lag crossing it is then reported at the next interval).
    pub fn new(max_lag_ms: Option<i64>) -> Self {
        ProgressReporter { max_lag_ms, ..Default::default() }
    }

    /// The report to write after an invocation that finished `batch` and failed with `failure` (a
    /// retryable one), at `now_ms`; `None` when nothing needs saying yet (the records are counted into
    /// the next report).
    pub fn observe(
        &mut self,
        now_ms: i64,
        batch: &BatchProgress,
        failure: Option<&str>,
    ) -> Option<LiveReport> {
        let paused = self.previous_ms.is_none_or(|p| now_ms - p >= PAUSE_MS);
        self.previous_ms = Some(now_ms);
        self.pending += batch.records;
        if batch.records == 0 && failure.is_none() {
            return None;
        }
        let lag_ms = batch.oldest_created_ms.map(|c| (now_ms - c).max(0));
        let failing = failure.is_some();
        let due = match self.last {
            None => true,
            Some(last) => {
                batch.stream
                    || paused
                    || now_ms - last.at_ms >= REPORT_INTERVAL_MS
                    || last.failing != failing
                    || lag_moved(last.lag_ms, lag_ms)
                    || lag_crossed(self.max_lag_ms, last.lag_ms, lag_ms)
                    || (batch.records > 0 && self.take_token(now_ms))
            }
        };
        if !due {
            return None;
        }
        // A failed batch with no finished record keeps the previous lag on the item.
        self.last = Some(Reported {
            at_ms: now_ms,
            lag_ms: lag_ms.or(self.last.and_then(|l| l.lag_ms)),
            failing,
        });
        Some(LiveReport {
            at_ms: now_ms,
            records: std::mem::take(&mut self.pending),
            lag_ms,
            newest_created_ms: batch.newest_created_ms,
            failure: failure.map(str::to_string),
        })
    }
}

impl ProgressReporter {
    /// Takes a report token if one is left at `now_ms` (the bucket refilled since it was last counted).
    fn take_token(&mut self, now_ms: i64) -> bool {
        self.tokens = match self.tokens_at {
            None => REPORT_BURST,
            Some(at) => (self.tokens + (now_ms - at).max(0) as f64 / 1_000.0 * REPORT_RATE_PER_SECOND)
                .min(REPORT_BURST),
        };
        self.tokens_at = Some(now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Whether the lag moved enough to report at once: by [`LAG_STEP_MS`] and by half or double.
fn lag_moved(before: Option<i64>, now: Option<i64>) -> bool {
    match (before, now) {
        (Some(b), Some(n)) => (n - b).abs() >= LAG_STEP_MS && (n >= 2 * b || 2 * n <= b),
        (None, Some(_)) => true,
        _ => false,
    }
}

/// Whether the lag went from over `max_lag` to within it, or back.
fn lag_crossed(max_lag: Option<i64>, before: Option<i64>, now: Option<i64>) -> bool {
    match (max_lag, before, now) {
        (Some(max), Some(b), Some(n)) => (b > max) != (n > max),
        _ => false,
    }
}

/// The milliseconds since the Unix epoch now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What the views table's live-progress item holds: the newest report of any instance of the view's
/// projector (reports overwrite each other; records add up).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProgressItem {
    /// When a report with finished records was last written, epoch milliseconds.
    pub applied_at_ms: Option<i64>,
    /// That report's lag, milliseconds.
    pub lag_ms: Option<i64>,
    /// That report's newest record creation time, epoch milliseconds.
    pub newest_created_ms: Option<i64>,
    /// Records finished, all reports added up.
    pub records: u64,
    /// When a failure was last reported, epoch milliseconds, and its reason.
    pub failed_at_ms: Option<i64>,
    pub failure: Option<String>,
}

/// The operator's reading of a Lambda view version's live path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveAssessment {
    /// Within `maxLag`, and not failing: the version may be promoted.
    pub caught_up: bool,
    /// The newest reported lag, milliseconds.
    pub lag_ms: Option<i64>,
    /// The failure the function reports and Lambda retries, when it is newer than the last success and
    /// fresh ([`FAILURE_FRESH_MS`]).
    pub failing: Option<String>,
}

/// Reads `item` (`None`: the function never reported, so no record reached it) at `now_ms` against
/// `max_lag_ms` (`spec.promotion.maxLag`); no report for `quiet_after_ms` ([`quiet_after_ms`]) means
/// the function finished what it was given: lag 0.
pub fn assess(
    item: Option<&ProgressItem>,
    now_ms: i64,
    max_lag_ms: i64,
    quiet_after_ms: i64,
) -> LiveAssessment {
    let Some(item) = item else {
        return LiveAssessment { caught_up: true, lag_ms: None, failing: None };
    };
    let failing = match (item.failed_at_ms, &item.failure) {
        (Some(failed), Some(reason))
            if failed >= item.applied_at_ms.unwrap_or(i64::MIN) && now_ms - failed <= FAILURE_FRESH_MS =>
        {
            Some(reason.clone())
        }
        _ => None,
    };
    let newest = item.applied_at_ms.max(item.failed_at_ms);
    let quiet = failing.is_none() && newest.is_some_and(|t| now_ms - t >= quiet_after_ms);
    let lag_ms = if quiet {
        item.lag_ms.map(|_| 0)
    } else {
        item.lag_ms
    };
    LiveAssessment {
        caught_up: failing.is_none() && lag_ms.is_none_or(|l| l <= max_lag_ms),
        lag_ms,
        failing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn batch(records: u64, oldest: i64) -> BatchProgress {
        BatchProgress {
            records,
            oldest_created_ms: Some(oldest),
            newest_created_ms: Some(oldest + 100),
            stream: false,
        }
    }

    #[test]
    fn the_first_batch_reports_then_while_tokens_last_then_at_most_every_interval() {
        let mut r = ProgressReporter::default();
        let first = r.observe(10_000, &batch(3, 9_500), None).unwrap();
        assert_eq!((first.records, first.lag_ms), (3, Some(500)));
        for i in 1..=5 {
            let t = 10_000 + 100 * i;
            assert!(
                r.observe(t, &batch(1, t - 400), None).is_some(),
                "invocation {i}: a token left"
            );
        }
        assert_eq!(
            r.observe(10_600, &batch(2, 10_200), None),
            None,
            "out of tokens, busy"
        );
        assert_eq!(
            r.observe(10_900, &batch(0, 0), None),
            None,
            "an empty batch never reports"
        );
        let next = r.observe(15_000, &batch(1, 14_800), None).unwrap();
        assert_eq!((next.records, next.lag_ms), (3, Some(200)), "counts carried over");
    }

    /// Spends the instance's report tokens at `now_ms`.
    fn spend_tokens(r: &mut ProgressReporter, now_ms: i64) {
        r.tokens = 0.0;
        r.tokens_at = Some(now_ms);
    }

    #[test]
    fn a_burst_ending_reports_its_caught_up_batch_at_once() {
        let mut r = ProgressReporter::default();
        r.observe(100_000, &batch(100, 40_000), None).unwrap(); // 60 s behind
        let caught_up = r
            .observe(100_500, &batch(5, 100_200), None)
            .expect("lag fell 60 s -> 0.3 s");
        assert_eq!(caught_up.lag_ms, Some(300));
    }

    #[test]
    fn stream_batches_pauses_and_max_lag_crossings_report_at_once() {
        let mut r = ProgressReporter::new(Some(30_000));
        r.observe(100_000, &batch(100, 65_000), None).unwrap(); // 35 s behind
        spend_tokens(&mut r, 100_000);
        let within = r
            .observe(103_000 - 500, &batch(50, 78_000 - 500), None)
            .expect("35 s -> 25 s crossed maxLag 30 s");
        assert_eq!((within.records, within.lag_ms), (50, Some(25_000)));
        spend_tokens(&mut r, 102_800);
        assert_eq!(
            r.observe(102_900, &batch(1, 80_000), None),
            None,
            "busy, similar lag"
        );
        let after_pause = r
            .observe(104_000, &batch(1, 81_000), None)
            .expect("an invocation after a pause reports");
        assert_eq!(after_pause.records, 2, "with the record carried over");
        let stream = BatchProgress { stream: true, ..batch(7, 103_900) };
        assert_eq!(r.observe(104_100, &stream, None).map(|r| r.records), Some(7));
    }

    #[test]
    fn a_quiet_function_has_lag_zero_whatever_it_reported_last() {
        let quiet = quiet_after_ms(30);
        assert_eq!(quiet, 40_000);
        let item = ProgressItem {
            applied_at_ms: Some(1_000),
            lag_ms: Some(1_200),
            records: 5,
            ..Default::default()
        };
        let busy = assess(Some(&item), 1_000 + quiet - 1, 0, quiet);
        assert_eq!((busy.caught_up, busy.lag_ms), (false, Some(1_200)));
        let later = assess(Some(&item), 1_000 + quiet, 0, quiet);
        assert_eq!((later.caught_up, later.lag_ms), (true, Some(0)));
        let failing = ProgressItem {
            failed_at_ms: Some(2_000),
            failure: Some("throttled".into()),
            ..item
        };
        let still = assess(Some(&failing), 2_000 + quiet, 0, quiet);
        assert!(!still.caught_up, "a fresh failure is never quiet: {still:?}");
    }

    #[test]
    fn failures_report_when_they_start_and_end() {
        let mut r = ProgressReporter::default();
        r.observe(0, &batch(1, 0), None).unwrap();
        let failed = r
            .observe(100, &BatchProgress::default(), Some("throttled"))
            .unwrap();
        assert_eq!(
            (failed.failure.as_deref(), failed.lag_ms),
            (Some("throttled"), None)
        );
        assert_eq!(r.observe(200, &BatchProgress::default(), Some("throttled")), None);
        assert!(r.observe(300, &batch(1, 250), None).unwrap().failure.is_none());
    }

    #[test]
    fn created_times_come_as_numbers_or_strings() {
        let mut record: StreamRecord = serde_json::from_value(serde_json::json!({
            "eventName": "INSERT",
            "dynamodb": {"ApproximateCreationDateTime": 1_700_000_305.5, "SequenceNumber": "1"}
        }))
        .unwrap();
        assert_eq!(created_ms(&record), Some(1_700_000_305_500));
        record.dynamodb.approximate_creation_date_time = Some(serde_json::json!("1700000305"));
        assert_eq!(created_ms(&record), Some(1_700_000_305_000));
        record.dynamodb.approximate_creation_date_time = Some(serde_json::json!("soon"));
        assert_eq!(created_ms(&record), None);
        record.dynamodb.approximate_creation_date_time = None;
        assert_eq!(created_ms(&record), None);
    }

    const Q: i64 = 40_000;

    #[test]
    fn the_operator_reads_failures_lag_and_silence() {
        assert!(
            assess(None, 0, 30_000, Q).caught_up,
            "no record reached the function"
        );
        let behind = ProgressItem {
            applied_at_ms: Some(1_000),
            lag_ms: Some(45_000),
            ..Default::default()
        };
        assert!(!assess(Some(&behind), 2_000, 30_000, Q).caught_up);
        assert!(assess(Some(&behind), 2_000, 60_000, Q).caught_up);
        let failing = ProgressItem {
            lag_ms: Some(10),
            failed_at_ms: Some(1_500),
            failure: Some("throttled".into()),
            ..behind.clone()
        };
        let a = assess(Some(&failing), 2_000, 60_000, Q);
        assert_eq!((a.caught_up, a.failing.as_deref()), (false, Some("throttled")));
        assert!(
            assess(Some(&failing), 1_500 + FAILURE_FRESH_MS + 1, 60_000, Q).caught_up,
            "an old failure is over"
        );
        let recovered = ProgressItem { applied_at_ms: Some(1_600), ..failing };
        assert!(assess(Some(&recovered), 2_000, 60_000, Q).caught_up);
    }

    proptest! {
        /// Whatever the invocations, every finished record is counted in exactly one report once a report
        /// follows it; reports are at least the interval apart unless their news differs; and the last
        /// report's lag is never more than twice (plus a step) the true lag of the newest batch when that
        /// batch is unreported — so a view whose projector caught up is never held back by a stale lag.
        #[test]
        fn reports_count_every_record_and_never_hide_a_caught_up_batch(
            steps in proptest::collection::vec(
                (1i64..20_000, 0u64..50, 0i64..120_000, any::<bool>(), any::<bool>()), 1..60),
            max_lag in proptest::option::of(0i64..120_000),
        ) {
            let mut r = ProgressReporter::new(max_lag);
            let mut now = 1_000_000i64;
            let (mut finished, mut reported) = (0u64, 0u64);
            let mut last_report: Option<LiveReport> = None;
            for (dt, records, lag, fails, stream) in steps {
                // Busy stretches (invocations less than a pause apart) as often as pauses.
                let dt = if dt % 2 == 0 { dt % PAUSE_MS } else { dt };
                now += dt;
                let b = BatchProgress {
                    records,
                    oldest_created_ms: (records > 0).then_some(now - lag),
                    newest_created_ms: (records > 0).then_some(now - lag / 2),
                    stream,
                };
                finished += records;
                let failure = fails.then_some("throttled");
                match r.observe(now, &b, failure) {
                    Some(report) => {
                        reported += report.records;
                        prop_assert_eq!(report.lag_ms, b.oldest_created_ms.map(|c| now - c));
                        last_report = Some(report);
                    }
                    None if records == 0 && !fails => {}
                    None => {
                        let last = last_report.as_ref().expect("the first non-empty batch reports");
                        prop_assert!(!stream, "a stream batch always reports");
                        prop_assert!(dt < PAUSE_MS, "an invocation after a pause reports");
                        prop_assert!(now - last.at_ms < REPORT_INTERVAL_MS);
                        prop_assert_eq!(last.failure.is_some(), fails, "a failure starting or ending reports");
                        if let (Some(l), true) = (last.lag_ms, records > 0) {
                            prop_assert!(l < 2 * lag + LAG_STEP_MS, "reported {} true {}", l, lag);
                            if let Some(max) = max_lag {
                                prop_assert_eq!(l > max, lag > max, "a crossing of maxLag reports");
                            }
                        }
                    }
                }
            }
            prop_assert!(reported <= finished);
            prop_assert_eq!(finished - reported, r.pending);
        }
    }
}
