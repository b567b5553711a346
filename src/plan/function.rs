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
}

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
