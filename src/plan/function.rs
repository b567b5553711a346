//! The desired state of a Lambda function and of an event source mapping: pure data, filled in by the
//! log and view plans, applied by `crate::aws::lambda`.
//!
//! A function's code is one of three sources. Only a zip carries a hash Lambda reports back
//! (`CodeSha256`), so only a zip's code is compared byte for byte; an image is compared by URI, and an S3
//! object by its location (recorded in the [`CODE_SOURCE_TAG`] tag, since Lambda does not report it).

use std::collections::BTreeMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// The runtime of the built-in functions: a custom runtime running the `bootstrap` executable.
pub const PROVIDED_RUNTIME: &str = "provided.al2023";
/// The handler of a custom runtime (Lambda runs the `bootstrap` file of the archive).
pub const BOOTSTRAP_HANDLER: &str = "bootstrap";
/// The tag recording an S3-sourced function's code location, hashed (tag values hold 256 characters at
/// most, S3 keys 1024).
pub const CODE_SOURCE_TAG: &str = "kappa.dev/code-source";

/// The instruction set a function runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Architecture {
    #[default]
    X86_64,
    Arm64,
}

impl Architecture {
    /// The name Lambda uses (`x86_64`, `arm64`).
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::X86_64 => "x86_64",
            Architecture::Arm64 => "arm64",
        }
    }
}

/// Where a function's code comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FunctionCode {
    /// A zip archive uploaded with the call; `sha256_base64` is what Lambda reports as `CodeSha256`
    /// (see `crate::aws::lambda::zip_sha256_base64`).
    Zip {
        bytes: Arc<Vec<u8>>,
        sha256_base64: String,
    },
    /// A zip archive in S3. Give a new version of the code a new key: the key is what is compared.
    S3 { bucket: String, key: String },
    /// A container image (`runtime` and `handler` of the plan are then not used).
    Image { uri: String },
}

impl FunctionCode {
    /// The value of [`CODE_SOURCE_TAG`] for S3 code: the first 16 hex digits of the location's SHA-256.
    pub fn s3_source_tag(bucket: &str, key: &str) -> String {
        let digest = Sha256::digest(format!("s3://{bucket}/{key}").as_bytes());
        hex::encode(&digest[..8])
    }
}

/// A Lambda function as it should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionPlan {
    pub name: String,
    /// The execution role's ARN.
    pub role_arn: String,
    /// [`PROVIDED_RUNTIME`] for the built-in functions.
    pub runtime: String,
    /// [`BOOTSTRAP_HANDLER`] for the built-in functions.
    pub handler: String,
    pub architecture: Architecture,
    pub memory_mb: i32,
    pub timeout_seconds: i32,
    /// At most 4 KB in all (Lambda's limit).
    pub environment: BTreeMap<String, String>,
    pub code: FunctionCode,
    /// The owner's tags ([`Owner::tags`](super::names::Owner::tags)).
    pub tags: BTreeMap<String, String>,
}

/// Where a stream mapping starts reading when it is created (it cannot be changed afterwards).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartingPosition {
    TrimHorizon,
    Latest,
}

impl StartingPosition {
    pub fn as_str(self) -> &'static str {
        match self {
            StartingPosition::TrimHorizon => "TRIM_HORIZON",
            StartingPosition::Latest => "LATEST",
        }
    }
}

/// An event source mapping (a queue or a stream feeding a function) as it should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappingPlan {
    /// The function's name (or ARN).
    pub function_name: String,
    /// The queue's or the stream's ARN.
    pub event_source_arn: String,
    pub batch_size: i32,
    pub maximum_batching_window_seconds: i32,
    /// Streams only; `None` for queues.
    pub starting_position: Option<StartingPosition>,
    /// Filter patterns (JSON text, e.g. [`stream_filter_pattern`](super::routing::stream_filter_pattern));
    /// compared as JSON, in any order.
    pub filter_patterns: Vec<String>,
    /// `FunctionResponseTypes: ["ReportBatchItemFailures"]`, which the built-in functions need for their
    /// partial batch responses to count.
    pub report_batch_item_failures: bool,
    /// Streams only: on a function error, split the batch in two and retry each half, so one bad
    /// record does not hold back the records beside it.
    pub bisect_batch_on_function_error: bool,
    /// Streams only: what happens to a record the function keeps failing (`None` for queues, whose
    /// failures go to the queue's own redrive policy).
    pub on_failure: Option<StreamFailurePlan>,
}

/// The failure handling of a stream mapping: bounded retries, a bounded record age, and where the
/// metadata of a discarded batch goes (Lambda's `DestinationConfig.OnFailure`). Without it a record
/// the function cannot process is retried until DynamoDB Streams trims it (24 hours), blocking its shard,
/// and is then lost silently.
/// <https://docs.aws.amazon.com/lambda/latest/dg/services-ddb-params.html>,
/// <https://docs.aws.amazon.com/lambda/latest/dg/services-dynamodb-errors.html>
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamFailurePlan {
    /// `MaximumRetryAttempts` (Lambda: 0..=10,000, or -1 for "until the record expires").
    pub maximum_retry_attempts: i32,
    /// `MaximumRecordAgeInSeconds` (Lambda: 60..=604,800, or -1).
    pub maximum_record_age_seconds: i32,
    /// The ARN of the SQS queue that receives a discarded batch's metadata (shard, sequence numbers,
    /// arrival times); empty until the queue exists.
    pub destination_arn: String,
}

/// Retries of a failing stream batch before it goes to the on-failure destination. Bisecting a batch
/// does not count against it (Lambda splits first, then retries the halves), so with 100 records a
/// poison record is alone in its batch after 7 splits and then retried this often: enough to ride out
/// throttling and a deploy, bounded so one record holds its shard back minutes, not the 24 hours until
/// the stream trims it. AWS's own example configuration uses 10
/// (<https://docs.aws.amazon.com/cdk/api/v2/docs/aws-cdk-lib.aws_lambda_event_sources.DynamoEventSource.html>).
pub const STREAM_MAXIMUM_RETRY_ATTEMPTS: i32 = 10;

/// The oldest record a stream mapping still sends to its function: 23 hours. DynamoDB Streams keeps a
/// record 24 hours, so a record that could not be processed for this long goes to the on-failure
/// destination (where it is counted) an hour before the stream would trim it unseen; and a new mapping
/// starting at `TRIM_HORIZON` skips only the oldest hour of the stream, which the view's backfill from
/// the log covers.
pub const STREAM_MAXIMUM_RECORD_AGE_SECONDS: i32 = 23 * 3600;

impl StreamFailurePlan {
    /// The operator's settings (see the constants) with `destination_arn`.
    pub fn to_queue(destination_arn: &str) -> StreamFailurePlan {
        StreamFailurePlan {
            maximum_retry_attempts: STREAM_MAXIMUM_RETRY_ATTEMPTS,
            maximum_record_age_seconds: STREAM_MAXIMUM_RECORD_AGE_SECONDS,
            destination_arn: destination_arn.to_string(),
        }
    }
}

/// How Lambda handles an asynchronous invocation (an SNS delivery) that fails: Lambda's
/// `PutFunctionEventInvokeConfig`. An on-failure destination rather than the function's
/// `DeadLetterConfig`: AWS recommends destinations over dead-letter queues for new designs, a destination
/// record carries the event with the failure's context (the error, the attempt count, the reason:
/// retries exhausted or event too old) where a dead letter carries the event alone, and it is set without
/// touching the function's configuration (no function update, so no `ResourceConflictException` with a
/// code update in progress).
/// <https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-retain-records.html>,
/// <https://docs.aws.amazon.com/lambda/latest/api/API_PutFunctionEventInvokeConfig.html>
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AsyncFailurePlan {
    pub function_name: String,
    /// `MaximumRetryAttempts` (Lambda: 0..=2).
    pub maximum_retry_attempts: i32,
    /// `MaximumEventAgeInSeconds` (Lambda: 60..=21,600).
    pub maximum_event_age_seconds: i32,
    /// The ARN of the SQS queue that receives a failed event.
    pub destination_arn: String,
}

/// Lambda's own (and highest) retry count for asynchronous invocations: two retries, a minute then two
/// minutes apart (<https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-error-handling.html>).
pub const ASYNC_MAXIMUM_RETRY_ATTEMPTS: i32 = 2;
/// Lambda's own (and highest) event age for asynchronous invocations: 6 hours, so an event waiting
/// through throttling is kept as long as Lambda can keep it.
pub const ASYNC_MAXIMUM_EVENT_AGE_SECONDS: i32 = 21_600;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lambdas() {
        assert_eq!(Architecture::Arm64.as_str(), "arm64");
        assert_eq!(Architecture::default().as_str(), "x86_64");
        assert_eq!(StartingPosition::TrimHorizon.as_str(), "TRIM_HORIZON");
    }

    #[test]
    fn the_s3_source_tag_is_short_and_tells_locations_apart() {
        let a = FunctionCode::s3_source_tag("bucket", "code/v1.zip");
        assert_eq!(a.len(), 16);
        assert_eq!(a, FunctionCode::s3_source_tag("bucket", "code/v1.zip"));
        assert_ne!(a, FunctionCode::s3_source_tag("bucket", "code/v2.zip"));
    }
}
