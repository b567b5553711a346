//! kappa-operator: runs the Kappa architecture on AWS from two Kubernetes kinds.
//!
//! Layers, outermost first: [`crd`] (what users write) → [`controller`] (orchestrates one pipeline per
//! kind) → `plan` (pure: desired topology) → `aws` (one adapter per service). [`settings`] holds the
//! operator's own configuration, validated at startup; [`metrics`] and [`telemetry`] observe it all.
//!
//! Every folder:
//! - [`crd`]: the two kinds and their shared conditions.
//! - [`controller`]: one reconcile pipeline per kind, status and Events, leader election.
//! - [`plan`]: pure planning: spec in, desired AWS topology out (functions' environments included, written
//!   by the functions' own configuration types); `plan::topology` is a view's whole topology for one
//!   reconcile, the value its apply step executes.
//! - [`aws`]: the only place that calls the AWS SDK (besides the stream reader in [`runtime`]): one
//!   adapter per service, the views-table writer, the export and scan reads, and the side effects of the
//!   built-in functions.
//! - [`functions`]: the five built-in Lambda functions (writer, router, projector, connections, notifier):
//!   their configuration, event types and logic, with every side effect behind a trait; `entry` wires
//!   them to the Lambda runtime and the [`aws`] adapters.
//! - [`projection`]: the projection engine (spec → view writes), shared by every path that writes a view.
//! - [`backfill`]: filling a new view from an export (or a scan) of the log.
//! - [`runtime`]: the in-cluster runtime: stream reader, live path, checkpoints.
//! - [`push`]: the push protocol, the operator's WebSocket endpoint and the `watch` client.
//! - [`cost`]: the cost model behind `kappa-operator cost`.
//! - [`kubectl`]: `kubectl kappa`, the binary as a kubectl plugin.
//! - [`http`], [`metrics`], [`telemetry`], [`settings`]: the operator's own endpoints, metrics, logs and
//!   configuration.
//! - `fixtures` (unit tests only): the fixtures several test modules share.
//!
//! Errors, one type per layer, each with a category (a bounded label for metrics and Event reasons):
//! `controller::Error`; `plan::PlanError` (a spec it cannot plan) and `plan::CodeError` (built-in code
//! the settings make unusable), both found before any AWS call; `aws::AwsError` (operation, resource,
//! AWS's code, retryable by one classifier) and `aws::ConfigError`; `backfill::BackfillError`;
//! `runtime::checkpoints::CheckpointError` and `runtime::backfill_job::ShareError`; and in [`functions`]
//! each side effect's own (`WriteError`, `PublishError`, `LogReadError`, `StoreError`), retryable or not,
//! and what fails a record (`projector::RecordFailure`, `notifier::NotifyRetry`); in [`push`] the
//! endpoint's `ServeError` and the `watch` client's `WatchError` and `TokenError`.

pub mod aws;
pub mod backfill;
pub mod controller;
pub mod cost;
pub mod crd;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod functions;
pub mod http;
pub mod kubectl;
pub mod metrics;
pub mod plan;
pub mod projection;
pub mod push;
pub mod runtime;
pub mod settings;
pub mod telemetry;

/// Crash points for the crash-consistency tests (`tests/crash_points.rs`): built with the `failpoints`
/// feature (as `make test` builds), `FAILPOINTS=<name>=return` makes the operator exit at once, with code
/// [`CRASH_EXIT_CODE`] and no cleanup, as a SIGKILL would, when it reaches the point `<name>`; otherwise
/// nothing is compiled in. The points sit at the step boundaries of a view's lifecycle (see
/// [`CRASH_POINTS`]). Uses the `fail` crate (tikv/fail-rs).
#[macro_export]
macro_rules! fail_point {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        {
            if ::fail::eval($name, |_| ()).is_some() {
                $crate::crash_at($name);
            }
        }
    };
}

/// The exit code of a process stopped at a crash point.
pub const CRASH_EXIT_CODE: i32 = 86;

/// Every crash point, in lifecycle order.
pub const CRASH_POINTS: &[&str] = &[
    "backfill-export-started",
    "backfill-file-checkpointed",
    "backfill-files-done",
    "backfill-gap-found",
    "backfill-export-deleted",
    "version-created",
    "version-promoted",
    "version-retired",
    "deletion-resource-removed",
];

/// Exits the process at crash point `name` (see [`fail_point!`]).
#[cfg(feature = "failpoints")]
pub fn crash_at(name: &str) -> ! {
    eprintln!("crash point {name}: exiting with code {CRASH_EXIT_CODE}");
    std::process::exit(CRASH_EXIT_CODE)
}
