//! The controller layer's error: each variant names the operation and the object.

use crate::crd::FINALIZER;

/// A reconcile that could not finish. `category()` is the metric label and the Event reason.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} {object} failed: {source}")]
    Kube {
        action: &'static str,
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("finalizer {FINALIZER}: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error(transparent)]
    Aws(#[from] crate::aws::AwsError),
    #[error("{kind} {name} has no namespace; the kappa.dev kinds are namespaced")]
    NoNamespace { kind: &'static str, name: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short, bounded label: `kubernetes`, `finalizer`, `invalid-object`.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kubernetes",
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.category(),
                _ => "finalizer",
            },
            Error::NoNamespace { .. } => "invalid-object",
            Error::Aws(_) => "aws",
        }
    }

    /// The Event reason for this error, in PascalCase.
    pub fn reason(&self) -> &'static str {
        match self.category() {
            "kubernetes" => "KubernetesApiError",
            "finalizer" => "FinalizerError",
            "invalid-object" => "InvalidObject",
            "aws" => "AwsError",
            _ => "ReconcileError",
        }
    }

    pub(crate) fn kube(action: &'static str, object: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let object = object.into();
        move |source| Error::Kube { action, object, source }
    }
}

/// A refusal found before any AWS call, carried on the provisioning path as the [`AwsError`] it ends in
/// (never retried; reported under its own reason by [`super::status::aws_reason`]).
///
/// [`AwsError`]: crate::aws::AwsError
pub trait Refusal {
    /// The refusal of `resource` (the function that was to be created).
    fn refusal(self, resource: &str) -> crate::aws::AwsError;
}

impl Refusal for crate::plan::PlanError {
    fn refusal(self, resource: &str) -> crate::aws::AwsError {
        crate::aws::AwsError::refused(
            "PlanFunction",
            resource,
            crate::aws::error::INVALID_SPEC,
            self.to_string(),
        )
    }
}

impl Refusal for crate::plan::CodeError {
    fn refusal(self, resource: &str) -> crate::aws::AwsError {
        crate::aws::AwsError::refused(
            "LoadBuiltInCode",
            resource,
            crate::aws::error::OPERATOR_CONFIGURATION,
            self.to_string(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{CodeError, PlanError};

    #[test]
    fn refusals_found_before_any_aws_call_say_so_and_carry_their_own_reason() {
        let missing = CodeError::Unreadable {
            path: "/opt/kappa/bootstrap".into(),
            error: "No such file or directory (os error 2)".into(),
        }
        .refusal("kappa-prod-shop-orders-projector");
        assert_eq!(
            missing.to_string(),
            "LoadBuiltInCode kappa-prod-shop-orders-projector failed: OperatorConfiguration: reading the \
             built-in Lambda code /opt/kappa/bootstrap: No such file or directory (os error 2)"
        );
        assert!(!missing.retryable);
        assert_eq!(
            crate::controller::status::aws_reason(&missing),
            crate::crd::reasons::OPERATOR_CONFIGURATION
        );
        let spec = PlanError::ReservedVariable { name: "PROJECTION".into() };
        assert_eq!(spec.category(), "spec");
        let spec = spec.refusal("f");
        assert!(
            spec.message.contains("spec.projector.environment.PROJECTION"),
            "{spec}"
        );
        assert_eq!(
            crate::controller::status::aws_reason(&spec),
            crate::crd::reasons::INVALID_SPEC
        );
    }
}
