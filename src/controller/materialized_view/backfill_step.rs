//! The backfill as a step machine: what one reconcile does next for a view's backfill, decided by a pure
//! function of the recorded status and what this pass observed ([`next_step`]), and what a finished run
//! means for the status ([`after_run`]). The controller (`super::backfill::backfill`) executes one step per
//! pass; everything it needs to resume is in `status.backfill`, so an operator killed between any two
//! steps takes the same step again.
//!
//! ```text
//!  source None ──────────────────────────────────────────────────────────▶ NoBackfill
//!  Export without the log's spec.export ─────────────────────────────────▶ Invalid
//!  gap in the live path (attempt ≥ 1) ───────────────────────────────────▶ CloseGap (attempt + 1)
//!  finished ─────────────────────────────────────────────────────────────▶ Finished (clean up once)
//!  not started: Manual and not approved ─▶ AwaitApproval
//!               live path not started ───▶ AwaitLivePath
//!               Scan ────────────────────▶ StartScan ───────────────────▶ Run
//!               no log table ARN yet ────▶ AwaitLogTable
//!               otherwise ───────────────▶ StartExport ─▶ Exporting ─▶ Run ─▶ after_run
//! ```

use crate::crd::{BackfillSource, BackfillStatus};
use crate::runtime::BackfillFailure;

/// Whether a `Manual` backfill may start (`spec.backfill.approval` and the approval annotation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Approval {
    /// `spec.backfill.approval: Automatic`.
    NotRequired,
    /// `Manual`, and the annotation names the view's current generation.
    Approved,
    /// `Manual`, and no annotation for the current generation.
    Awaiting,
}

/// What this pass observed, beside `status.backfill`. Pure data, cheap to gather (no AWS call).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Observed<'a> {
    /// `spec.backfill.source`.
    pub source: BackfillSource,
    /// The EventLog has `spec.export` (where exports are written).
    pub log_exports: bool,
    /// A gap the live path found (records trimmed from the stream before it read them).
    pub gap: Option<&'a str>,
    pub approval: Approval,
    /// The live path polled the stream at least once.
    pub live_started: bool,
    /// The EventLog's status reports its table's ARN (what an export is requested for).
    pub log_table_arn: bool,
    /// A backfill task for the current attempt runs (or finished) in this process.
    pub running: bool,
}

/// The step one reconcile takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum BackfillStep {
    /// `spec.backfill.source: None`: nothing to read; the view starts from what the stream holds.
    NoBackfill,
    /// `source: Export` and the log has no `spec.export`: only the user can fix it.
    Invalid,
    /// Retire the current attempt (its task, export, checkpoint), then record `next_attempt` (exported on
    /// a later pass, once the live path switched to it).
    CloseGap {
        next_attempt: i64,
    },
    /// The backfill is recorded finished; `clean_up` says its export and checkpoint are still to remove.
    Finished {
        clean_up: bool,
    },
    AwaitApproval,
    AwaitLivePath,
    /// Record the start of a scan of the log (attempt `attempt`); the scan runs from the next pass.
    StartScan {
        attempt: i64,
    },
    AwaitLogTable,
    /// Request the export of the log for attempt `attempt` (idempotent: its client token is the view's
    /// uid and the attempt).
    StartExport {
        attempt: i64,
    },
    /// The export was requested: read its state ([`export_step`]) and run once it completed.
    Exporting,
    /// Start or follow the task reading the scan or the completed export ([`after_run`] once it stopped).
    Run,
}

/// The next step of a backfill whose status is `b`. See the module docs for the order of the checks.
pub(super) fn next_step(b: &BackfillStatus, seen: &Observed) -> BackfillStep {
    let scan = match seen.source {
        BackfillSource::None => return BackfillStep::NoBackfill,
        BackfillSource::Scan => true,
        BackfillSource::Export => false,
    };
    if !scan && !seen.log_exports {
        return BackfillStep::Invalid;
    }
    if seen.gap.is_some() && b.attempt > 0 {
        return BackfillStep::CloseGap { next_attempt: b.attempt + 1 };
    }
    if b.finished_at.is_some() {
        return BackfillStep::Finished { clean_up: !b.cleaned_up };
    }
    let started = match scan {
        true => b.started_at.is_some(),
        false => b.export_arn.is_some(),
    };
    if started {
        return match scan || seen.running {
            true => BackfillStep::Run,
            false => BackfillStep::Exporting,
        };
    }
    if seen.approval == Approval::Awaiting {
        return BackfillStep::AwaitApproval;
    }
    if !seen.live_started {
        return BackfillStep::AwaitLivePath;
    }
    let attempt = b.attempt.max(1);
    if scan {
        return BackfillStep::StartScan { attempt };
    }
    match seen.log_table_arn {
        true => BackfillStep::StartExport { attempt },
        false => BackfillStep::AwaitLogTable,
    }
}

/// What an export's state means for the backfill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum ExportStep {
    Wait,
    /// The export failed (AWS's code and message): only a fix of its cause helps.
    Failed,
    Read,
}

/// The step for an export in `state`.
pub(super) fn export_step(state: &crate::aws::export::ExportState) -> ExportStep {
    use crate::aws::export::ExportState;
    match state {
        ExportState::InProgress => ExportStep::Wait,
        ExportState::Failed { .. } => ExportStep::Failed,
        ExportState::Completed => ExportStep::Read,
    }
}

/// What a backfill task's outcome means for the status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RunStep {
    /// Still running: record its progress.
    Running,
    /// Done: record `finishedAt`; its export and checkpoint are removed on a later pass.
    Finished,
    /// What it read is gone (an export's files deleted): retire the attempt and export again.
    ExportAgain,
    /// A transient failure: the task starts again from its checkpoint.
    Resume,
    /// A failure only the user can fix; no file is marked done past it.
    Failed,
}

/// The step for a task whose outcome is `outcome` (`None` while it runs).
pub(super) fn after_run(outcome: Option<&Result<(), BackfillFailure>>) -> RunStep {
    match outcome {
        None => RunStep::Running,
        Some(Ok(())) => RunStep::Finished,
        Some(Err(f)) if f.input_gone => RunStep::ExportAgain,
        Some(Err(f)) if f.retryable => RunStep::Resume,
        Some(Err(_)) => RunStep::Failed,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use proptest::prelude::*;

    use super::*;

    fn time() -> Time {
        Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
    }

    fn seen(source: BackfillSource) -> Observed<'static> {
        Observed {
            source,
            log_exports: true,
            gap: None,
            approval: Approval::NotRequired,
            live_started: true,
            log_table_arn: true,
            running: false,
        }
    }

    #[test]
    fn a_new_export_backfill_waits_for_approval_then_the_live_path_then_the_table_then_exports() {
        let b = BackfillStatus::default();
        let mut s = seen(BackfillSource::Export);
        s.approval = Approval::Awaiting;
        s.live_started = false;
        s.log_table_arn = false;
        assert_eq!(next_step(&b, &s), BackfillStep::AwaitApproval);
        s.approval = Approval::Approved;
        assert_eq!(next_step(&b, &s), BackfillStep::AwaitLivePath);
        s.live_started = true;
        assert_eq!(next_step(&b, &s), BackfillStep::AwaitLogTable);
        s.log_table_arn = true;
        assert_eq!(next_step(&b, &s), BackfillStep::StartExport { attempt: 1 });
    }

    #[test]
    fn a_requested_export_is_followed_then_read() {
        let b = BackfillStatus {
            attempt: 1,
            export_arn: Some("arn:export".into()),
            started_at: Some(time()),
            ..Default::default()
        };
        let mut s = seen(BackfillSource::Export);
        assert_eq!(next_step(&b, &s), BackfillStep::Exporting);
        s.running = true;
        assert_eq!(next_step(&b, &s), BackfillStep::Run);
        // Approval and the live path were checked before the export was requested.
        s.approval = Approval::Awaiting;
        s.live_started = false;
        assert_eq!(next_step(&b, &s), BackfillStep::Run);
    }

    #[test]
    fn a_scan_starts_without_an_export_and_runs() {
        let mut s = seen(BackfillSource::Scan);
        s.log_exports = false;
        s.log_table_arn = false;
        assert_eq!(
            next_step(&BackfillStatus::default(), &s),
            BackfillStep::StartScan { attempt: 1 }
        );
        let b = BackfillStatus { attempt: 1, started_at: Some(time()), ..Default::default() };
        assert_eq!(next_step(&b, &s), BackfillStep::Run);
    }

    #[test]
    fn none_and_invalid_come_first() {
        let b = BackfillStatus { attempt: 3, ..Default::default() };
        let mut s = seen(BackfillSource::None);
        s.gap = Some("trimmed");
        assert_eq!(next_step(&b, &s), BackfillStep::NoBackfill);
        s.source = BackfillSource::Export;
        s.log_exports = false;
        assert_eq!(next_step(&b, &s), BackfillStep::Invalid);
    }

    #[test]
    fn a_gap_closes_with_a_new_attempt_even_after_the_backfill_finished() {
        let b = BackfillStatus {
            attempt: 2,
            finished_at: Some(time()),
            cleaned_up: true,
            ..Default::default()
        };
        let mut s = seen(BackfillSource::Export);
        assert_eq!(next_step(&b, &s), BackfillStep::Finished { clean_up: false });
        s.gap = Some("records trimmed");
        assert_eq!(next_step(&b, &s), BackfillStep::CloseGap { next_attempt: 3 });
        // Before the first attempt there is nothing to close: the first backfill covers the gap.
        assert_eq!(
            next_step(&BackfillStatus::default(), &s),
            BackfillStep::StartExport { attempt: 1 }
        );
    }

    #[test]
    fn outcomes_map_to_steps() {
        let f = |retryable, input_gone| Err(BackfillFailure { message: "m".into(), retryable, input_gone });
        assert_eq!(after_run(None), RunStep::Running);
        assert_eq!(after_run(Some(&Ok(()))), RunStep::Finished);
        assert_eq!(after_run(Some(&f(true, true))), RunStep::ExportAgain);
        assert_eq!(after_run(Some(&f(false, true))), RunStep::ExportAgain);
        assert_eq!(after_run(Some(&f(true, false))), RunStep::Resume);
        assert_eq!(after_run(Some(&f(false, false))), RunStep::Failed);
    }

    fn any_status() -> impl Strategy<Value = BackfillStatus> {
        (
            0i64..4,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                |(attempt, started, exported, finished, cleaned_up)| BackfillStatus {
                    attempt,
                    started_at: started.then(time),
                    export_arn: exported.then(|| "arn:export".to_string()),
                    finished_at: finished.then(time),
                    cleaned_up,
                    ..Default::default()
                },
            )
    }

    fn any_seen() -> impl Strategy<Value = Observed<'static>> {
        (
            prop_oneof![
                Just(BackfillSource::None),
                Just(BackfillSource::Scan),
                Just(BackfillSource::Export)
            ],
            any::<[bool; 5]>(),
            prop_oneof![
                Just(Approval::NotRequired),
                Just(Approval::Approved),
                Just(Approval::Awaiting)
            ],
        )
            .prop_map(
                |(source, [exports, gap, live, arn, running], approval)| Observed {
                    source,
                    log_exports: exports,
                    gap: gap.then_some("gap"),
                    approval,
                    live_started: live,
                    log_table_arn: arn,
                    running,
                },
            )
    }

    proptest! {
        /// The machine's safety rules, over every status and observation: nothing is read before the live
        /// path runs (or a record could fall between the two), a Manual backfill never starts unapproved,
        /// a finished backfill never runs again without a gap, and attempts only grow.
        #[test]
        fn steps_keep_the_backfills_rules(b in any_status(), s in any_seen()) {
            let step = next_step(&b, &s);
            match &step {
                BackfillStep::StartScan { attempt } | BackfillStep::StartExport { attempt } => {
                    prop_assert!(s.live_started);
                    prop_assert!(s.approval != Approval::Awaiting);
                    prop_assert!(b.finished_at.is_none());
                    prop_assert!(*attempt >= b.attempt.max(1));
                }
                BackfillStep::CloseGap { next_attempt } => {
                    prop_assert!(s.gap.is_some());
                    prop_assert_eq!(*next_attempt, b.attempt + 1);
                }
                BackfillStep::Run | BackfillStep::Exporting => prop_assert!(b.finished_at.is_none()),
                BackfillStep::Finished { clean_up } => prop_assert_eq!(*clean_up, !b.cleaned_up),
                _ => {}
            }
            if b.finished_at.is_some() && s.gap.is_none() && s.source != BackfillSource::None {
                let done = matches!(step, BackfillStep::Finished { .. } | BackfillStep::Invalid);
                prop_assert!(done, "{:?}", step);
            }
            if s.source == BackfillSource::Scan {
                let export = matches!(step, BackfillStep::StartExport { .. } | BackfillStep::Exporting
                    | BackfillStep::AwaitLogTable | BackfillStep::Invalid);
                prop_assert!(!export, "{:?}", step);
            }
        }
    }
}
