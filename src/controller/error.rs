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
        move |source| Error::Kube {
            action,
            object,
            source,
        }
    }
}
