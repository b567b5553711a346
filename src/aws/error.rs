//! One error for every AWS call: the operation, the resource, AWS's error code and message, and whether
//! trying again can help (throttling, 5xx, network) or the user must change something (access denied,
//! validation, limits).

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::client::result::SdkError;

/// The code of [`AwsError::refused`] for a resource whose ownership tags name another owner, or none.
pub const OWNED_BY_ANOTHER: &str = "OwnedByAnother";
/// The code of [`AwsError::refused`] for an adoption the operator's configuration does not allow.
pub const ADOPTION_REFUSED: &str = "AdoptionRefused";

/// The code of [`AwsError::refused`] for a table setting the operator does not change (a stream's view
/// type), or AWS refused to apply (a capacity mode switch or decrease beyond AWS's limits, a
/// `ValidationException`): the message names the field, AWS's error code when AWS refused, and the fix.
pub const TABLE_SETTING_REFUSED: &str = "TableSettingRefused";

/// The code of [`AwsError::refused`] for a name the spec may not use (the operator's own name space).
pub const RESERVED_NAME: &str = "ReservedName";
/// The code of [`AwsError::refused`] for a spec the plan cannot turn into resources
/// ([`crate::plan::PlanError`]): no AWS call was made.
pub const INVALID_SPEC: &str = "InvalidSpec";
/// The code of [`AwsError::refused`] for built-in code the operator's settings do not make usable
/// ([`crate::plan::CodeError`]): no AWS call was made.
pub const OPERATOR_CONFIGURATION: &str = "OperatorConfiguration";
/// The operator refusing to serve (or write) a dedicated views table that holds the items of an earlier
/// view of the same name, retained when it was deleted (see `crate::aws::view_storage`).
pub const RETAINED_STORAGE: &str = "RetainedStorage";

/// An AWS call that failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[error("{operation} {resource} failed: {code}: {message}{hint}")]
pub struct AwsError {
    pub operation: &'static str,
    pub resource: String,
    pub code: String,
    pub message: String,
    pub retryable: bool,
    hint: String,
}

/// Error codes that clear by themselves, of every service the operator calls (each service's own
/// spelling), after vectordotdev/vector's `src/aws/` classifier: throttling, transient server errors,
/// conflicts with an operation still in progress.
/// Sources: DynamoDB "Error handling" (ProvisionedThroughputExceeded, RequestLimitExceeded,
/// ThrottlingException, InternalServerError, TransactionConflict, LimitExceeded, ResourceInUse), S3 error
/// responses (SlowDown, InternalError, ServiceUnavailable, RequestTimeout), SQS/SNS/Lambda/IAM/API Gateway
/// API references (RequestThrottled, Throttled, TooManyRequests, ServiceException, ResourceConflict,
/// ConcurrentModification, ServiceFailure, Conflict).
pub const RETRYABLE_CODES: &[&str] = &[
    // Throttling
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "Throttled",
    "RequestThrottled",
    "RequestThrottledException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "SlowDown",
    "KMSThrottlingException",
    "KMSThrottling",
    "KmsThrottled",
    "EC2ThrottledException",
    "PriorRequestNotComplete",
    // Transient server errors
    "InternalServerError",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "ServiceException",
    "ServiceFailure",
    "RequestTimeout",
    "RequestTimeoutException",
    // An operation still in progress, or a concurrent one
    "TransactionConflictException",
    "TransactionInProgressException",
    "ReplicatedWriteConflictException",
    "ResourceInUseException",
    "LimitExceededException",
    "ResourceConflictException",
    "ConcurrentModification",
    "ConcurrentModificationException",
    "ConflictException",
    "OperationAbortedException",
];

/// The one classifier of AWS failures: whether trying again can help. By error code first (a
/// [`RETRYABLE_CODES`] code), then by HTTP status (429, or any 5xx); `None` for both (no response at all:
/// a timeout, a reset connection) is retryable. Everything else (access denied, validation, not found,
/// a 4xx) needs a change by the user.
pub fn classify(code: Option<&str>, status: Option<u16>) -> bool {
    match (code, status) {
        (None, None) => true,
        (code, status) => {
            code.is_some_and(|c| RETRYABLE_CODES.contains(&c))
                || status.is_some_and(|s| s == 429 || (500..600).contains(&s))
        }
    }
}

/// [`classify`] for an SDK error: a service error by its code and HTTP status; a timeout, a dispatch
/// (network) or response error is retryable; a request the SDK could not even build is not (a bug, or
/// bad input such as an invalid name).
pub fn classify_sdk<E, R>(err: &SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata,
    R: HttpStatus,
{
    match err {
        SdkError::ServiceError(service) => classify(service.err().code(), service.raw().http_status()),
        SdkError::ConstructionFailure(_) => false,
        _ => true,
    }
}

/// The HTTP status of a raw response, when there is one.
pub trait HttpStatus {
    fn http_status(&self) -> Option<u16>;
}

impl HttpStatus for aws_smithy_runtime_api::client::orchestrator::HttpResponse {
    fn http_status(&self) -> Option<u16> {
        Some(self.status().as_u16())
    }
}

impl AwsError {
    pub fn new(operation: &'static str, resource: impl Into<String>, code: &str, message: &str) -> Self {
        let hint = match code {
            "AccessDeniedException"
            | "AccessDenied"
            | "AuthorizationError"
            | "UnrecognizedClientException" => {
                format!(
                    " (the operator's IAM role needs {operation} on this resource: see the chart's docs/iam-policy.json)"
                )
            }
            _ => String::new(),
        };
        AwsError {
            operation,
            resource: resource.into(),
            code: code.to_string(),
            message: message.to_string(),
            retryable: code.is_empty() || classify(Some(code), None),
            hint,
        }
    }

    /// A failure the operator detects itself (no AWS error code), never retried.
    pub fn permanent(
        operation: &'static str,
        resource: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let mut e = AwsError::new(operation, resource, "InvalidState", &message.into());
        e.retryable = false;
        e
    }

    /// The operator refusing to touch a resource (never retried): `code` is [`OWNED_BY_ANOTHER`] or
    /// [`ADOPTION_REFUSED`], so the controller can report it under its own reason.
    pub fn refused(
        operation: &'static str,
        resource: impl Into<String>,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        let mut e = AwsError::new(operation, resource, code, &message.into());
        e.retryable = false;
        e
    }

    /// Whether this is the operator's own refusal to touch another owner's resource or to adopt one.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self.code.as_str(),
            OWNED_BY_ANOTHER | ADOPTION_REFUSED | RESERVED_NAME | RETAINED_STORAGE | TABLE_SETTING_REFUSED
        )
    }

    /// Whether the service said the resource does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.code.as_str(),
            "ResourceNotFoundException"
                | "NotFound"
                | "NotFoundException"
                | "AWS.SimpleQueueService.NonExistentQueue"
                | "QueueDoesNotExist"
                | "TableNotFoundException"
        )
    }
}

/// Maps an SDK error to an [`AwsError`] naming the operation and the resource.
pub fn from_sdk<E, R>(
    operation: &'static str,
    resource: &str,
) -> impl FnOnce(SdkError<E, R>) -> AwsError + use<E, R>
where
    E: ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug + HttpStatus,
{
    let resource = resource.to_string();
    move |err| {
        let retryable = classify_sdk(&err);
        let mut e = match &err {
            SdkError::ServiceError(service) => {
                let e = service.err();
                AwsError::new(
                    operation,
                    resource,
                    e.code().unwrap_or("Unknown"),
                    e.message().unwrap_or_default(),
                )
            }
            // Timeouts, dispatch (network) and response errors: transient, try again.
            other => AwsError::new(operation, resource, "", &format!("{other:?}")),
        };
        e.retryable = retryable;
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_is_retried_and_access_denied_says_what_to_grant() {
        assert!(AwsError::new("CreateTable", "t", "ThrottlingException", "slow down").retryable);
        let denied = AwsError::new("CreateTable", "kappa-x", "AccessDeniedException", "no");
        assert!(!denied.retryable);
        let text = denied.to_string();
        assert!(
            text.contains("CreateTable kappa-x failed: AccessDeniedException") && text.contains("iam-policy")
        );
    }

    /// Each service's own spelling of "try again", by service; and what only the user can fix.
    #[test]
    fn one_classifier_for_every_service() {
        let retryable = [
            ("DynamoDB", "ProvisionedThroughputExceededException", 400),
            ("DynamoDB", "ThrottlingException", 400),
            ("DynamoDB", "RequestLimitExceeded", 400),
            ("DynamoDB", "TransactionConflictException", 400),
            ("DynamoDB", "InternalServerError", 500),
            ("Streams", "LimitExceededException", 400),
            ("S3", "SlowDown", 503),
            ("S3", "InternalError", 500),
            ("S3", "RequestTimeout", 400),
            ("SQS", "RequestThrottled", 403),
            ("SQS", "ThrottlingException", 400),
            ("SNS", "Throttled", 400),
            ("SNS", "KMSThrottling", 400),
            ("Lambda", "TooManyRequestsException", 429),
            ("Lambda", "ServiceException", 500),
            ("Lambda", "ResourceConflictException", 409),
            ("IAM", "Throttling", 400),
            ("IAM", "ServiceFailure", 500),
            ("IAM", "ConcurrentModification", 409),
            ("API Gateway", "TooManyRequestsException", 429),
            ("API Gateway", "ConflictException", 409),
            ("any", "SomethingNew", 503),
            ("any", "SomethingNew", 429),
        ];
        for (service, code, status) in retryable {
            assert!(classify(Some(code), Some(status)), "{service} {code} {status}");
        }
        assert!(
            AwsError::new("GetObject", "b/k", "SlowDown", "").retryable,
            "by code alone too"
        );
        let permanent = [
            ("DynamoDB", "AccessDeniedException", 400),
            ("DynamoDB", "ValidationException", 400),
            ("DynamoDB", "ResourceNotFoundException", 400),
            ("S3", "NoSuchBucket", 404),
            ("S3", "AccessDenied", 403),
            ("SQS", "AWS.SimpleQueueService.NonExistentQueue", 400),
            ("SNS", "AuthorizationError", 403),
            ("Lambda", "InvalidParameterValueException", 400),
            ("IAM", "MalformedPolicyDocument", 400),
        ];
        for (service, code, status) in permanent {
            assert!(!classify(Some(code), Some(status)), "{service} {code} {status}");
        }
        assert!(classify(None, None), "no response at all (timeout, reset)");
    }

    #[test]
    fn not_found_codes_of_every_service_are_recognized() {
        for code in [
            "ResourceNotFoundException",
            "AWS.SimpleQueueService.NonExistentQueue",
            "NotFound",
        ] {
            assert!(AwsError::new("Describe", "x", code, "").is_not_found(), "{code}");
        }
    }
}
