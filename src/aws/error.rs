//! One error for every AWS call: the operation, the resource, AWS's error code and message, and whether
//! trying again can help (throttling, 5xx, network) or the user must change something (access denied,
//! validation, limits).

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::client::result::SdkError;

/// The code of [`AwsError::refused`] for a resource whose ownership tags name another owner, or none.
pub const OWNED_BY_ANOTHER: &str = "OwnedByAnother";
/// The code of [`AwsError::refused`] for an adoption the operator's configuration does not allow.
pub const ADOPTION_REFUSED: &str = "AdoptionRefused";

/// The code of [`AwsError::refused`] for a name the spec may not use (the operator's own name space).
pub const RESERVED_NAME: &str = "ReservedName";

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

const RETRYABLE: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "InternalServerError",
    "InternalFailure",
    "ServiceUnavailable",
    "ResourceInUseException",
    "LimitExceededException",
];

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
            retryable: RETRYABLE.contains(&code) || code.is_empty(),
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
            OWNED_BY_ANOTHER | ADOPTION_REFUSED | RESERVED_NAME
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
    R: std::fmt::Debug,
{
    let resource = resource.to_string();
    move |err| match &err {
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
        other => {
            let mut e = AwsError::new(operation, resource, "", &format!("{other:?}"));
            e.retryable = true;
            e
        }
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
