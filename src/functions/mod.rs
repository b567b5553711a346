//! The five built-in Lambda functions, with every side effect behind a narrow trait so that they run
//! in-process in tests: the log's writer and router, each view's projector, and the push functions
//! [`connections`] and [`notifier`] (see their modules). [`entry`] wires these handlers to the Lambda
//! runtime and to the SDK adapters in [`crate::aws::functions`] and [`crate::aws::connections`]; nothing
//! else here talks to the network.
//!
//! Each function's configuration is one struct ([`writer::WriterConfig`], [`router::RouterConfig`],
//! [`projector::ProjectorConfig`], [`connections::ConnectionsConfig`], [`notifier::NotifierConfig`]) and
//! its module defines the names of its variables: the operator's plan writes the environment with
//! `to_env()`, the function reads it back with `from_lookup()` (`from_env()` for the process environment).
//!
//! ```text
//! producers ──SQS──▶ writer ──BatchWriteItem──▶ log table ──stream──▶ router ──PublishBatch──▶ topic per group
//!                                                        │                                      │ filter policy
//!                                                        └─────────(Direct fan-out)──▶ projector ◀┘ (Sns fan-out)
//!                                                                                        │
//!                                                                                        ▼ views table
//! ```
//!
//! - [`writer`]: drains the ingest queue. Each SQS message body is one log record in DynamoDB typed JSON
//!   wrapped as `{"Item": {...}}` (the line format of a DynamoDB export). It validates the record against
//!   the log (keys, record type), writes valid ones with `BatchWriteItem` puts ([`writer::LogWriter`]),
//!   retries unprocessed items a bounded number of times, and reports every message it could not write
//!   (invalid or failed) as a batch item failure, so SQS redelivers it and, after the queue's
//!   `maxReceiveCount`, moves it to the dead-letter queue.
//! - [`router`]: reads the log's stream (`Sns` fan-out). Each `INSERT` is published to the SNS topic of its
//!   record type's group ([`router::Publisher`]) with the message attribute `recordType` that the views'
//!   filter policies match. `MODIFY`/`REMOVE` are ignored (the log is append-only) and counted. A record
//!   whose message would exceed SNS's limit is published by reference ([`event::LogReference`]: its keys).
//! - [`projector`]: one per view. It takes the SNS event of its subscriptions (`Sns` fan-out) or the
//!   stream event of its own event source mapping (`Direct` fan-out), projects each `INSERT`'s `NewImage`
//!   with the projection engine and applies the write ([`projector::ViewStore`]); a record sent by
//!   reference is first read from the log table ([`projector::LogStore`], a consistent `GetItem`).
//!
//! Guarantees, common to the writer, router and projector:
//! - At-least-once: a record is only acknowledged once its side effect succeeded. Every side effect is
//!   idempotent (a put of the record's own key; a publish whose consumers are idempotent; the engine's
//!   idempotent view writes), so redelivery never changes the outcome.
//! - Partial batch responses ([`event::BatchResponse`]): for SQS the failed messages' ids; for streams
//!   the `SequenceNumber` of the earliest failed record (the event source mapping checkpoints there and
//!   retries it and everything after it). The event source mappings must have
//!   `FunctionResponseTypes: ["ReportBatchItemFailures"]`, or the response is ignored.
//! - A record that can never succeed (malformed, not projectable) never blocks a stream shard: the router
//!   and projector log it, count it and move on. The writer instead fails it, because SQS has a
//!   dead-letter queue that keeps it for inspection.
//! - Configuration comes from environment variables, read once at cold start and validated with
//!   messages that name the variable, the value and the fix ([`ConfigError`]).

pub mod connections;
pub mod entry;
pub mod event;
pub mod notifier;
pub mod progress;
pub mod projector;
pub mod router;
pub mod writer;

#[cfg(test)]
mod break19_tests;
#[cfg(test)]
mod env_tests;
#[cfg(test)]
mod tests;

use std::time::Duration;

/// A function's configuration is missing or invalid: the function cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required environment variable is not set (or empty).
    #[error("environment variable {var} is not set: {hint}")]
    Missing { var: &'static str, hint: &'static str },
    /// An environment variable holds a value that cannot be used.
    #[error("environment variable {var}={value:?} is invalid: {reason}")]
    Invalid {
        var: &'static str,
        value: String,
        reason: String,
    },
}

/// Reads a required variable through `lookup` (the process environment in production).
pub(crate) fn required(
    lookup: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    hint: &'static str,
) -> Result<String, ConfigError> {
    optional(lookup, var).ok_or(ConfigError::Missing { var, hint })
}

/// Reads an optional variable; unset and empty are the same.
pub(crate) fn optional(lookup: &impl Fn(&str) -> Option<String>, var: &str) -> Option<String> {
    lookup(var).filter(|v| !v.trim().is_empty())
}

/// The process environment, as a lookup for the `from_lookup` constructors.
pub fn process_env(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

/// How often a function retries a side effect inside one invocation before it reports the records as
/// failed (and lets Lambda's own redelivery take over).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Calls in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The wait before the second call; it doubles before each further one.
    pub base_delay: Duration,
}

impl Default for RetryPolicy {
    /// 4 calls, waiting 50, 100 and 200 ms between them: throttling usually clears within that, and the
    /// invocation stays far from any sensible timeout.
    fn default() -> Self {
        RetryPolicy { max_attempts: 4, base_delay: Duration::from_millis(50) }
    }
}

impl RetryPolicy {
    /// No waiting (tests).
    pub fn immediate(max_attempts: u32) -> Self {
        RetryPolicy { max_attempts, base_delay: Duration::ZERO }
    }

    /// Waits before attempt `attempt` (2, 3, ...).
    pub(crate) async fn wait_before(&self, attempt: u32) {
        let exponent = attempt.saturating_sub(2).min(16);
        let delay = self.base_delay.saturating_mul(1 << exponent);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
}
