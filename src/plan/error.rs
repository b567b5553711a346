//! The plan layer's errors: a spec the plan cannot turn into resources, and built-in code the operator
//! cannot use. Found without any AWS call; the controller reports each as a Stalled condition and an
//! Event under the reason [`PlanError::reason`] / [`CodeError::reason`].

use std::path::PathBuf;

use crate::crd::reasons;

/// A spec the plan refuses. Every variant is the user's to fix (category `spec`); its message names the
/// field, the value and the fix.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// `spec.table.name` in the operator's reserved name space (`kappa-...`) other than this log's own.
    #[error(
        "spec.table.name {name:?} starts with \"kappa-\", which is reserved for the names the operator \
         derives for each object (this log's would be {own:?}): choose a name outside it, or leave \
         spec.table.name out"
    )]
    ReservedTableName { name: String, own: String },
    /// `spec.projector.environment` sets a variable the operator sets for the built-in projector.
    #[error(
        "spec.projector.environment.{name} is set by the operator for the built-in projector (its table, \
         key prefix and projection); remove it from spec.projector.environment"
    )]
    ReservedVariable { name: String },
    /// The built-in projector's configuration cannot be made from the view's spec.
    #[error(transparent)]
    Projection(#[from] crate::projection::ProjectionError),
    /// The projector's configuration could not be encoded as its environment (JSON).
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
}

impl PlanError {
    /// A short, bounded label (metrics, logs): `spec`, or `internal` for an encoding failure.
    pub fn category(&self) -> &'static str {
        match self {
            PlanError::ReservedTableName { .. }
            | PlanError::ReservedVariable { .. }
            | PlanError::Projection(_) => "spec",
            PlanError::Encode(_) => "internal",
        }
    }

    /// The condition and Event reason.
    pub fn reason(&self) -> &'static str {
        reasons::INVALID_SPEC
    }
}

/// The built-in functions' code (the operator's `--lambda-code` setting) cannot be used. The operator's
/// installer fixes it (category `configuration`), not the object's author; no AWS call was made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    /// The file could not be read.
    #[error("reading the built-in Lambda code {}: {error}", path.display())]
    Unreadable { path: PathBuf, error: String },
    /// The zip is over Lambda's 50 MB limit for code uploaded with the call (Lambda quotas: "Deployment
    /// package (.zip file archive) size: 50 MB (zipped, when uploaded through the Lambda API)").
    #[error(
        "the built-in Lambda code {} is {megabytes} MB zipped; Lambda takes at most 50 MB uploaded \
         directly: set --lambda-code (KAPPA_LAMBDA_CODE) to a release build or to s3://bucket/key of a zip \
         holding it as bootstrap",
        path.display()
    )]
    TooLarge { path: PathBuf, megabytes: usize },
}

impl CodeError {
    /// A short, bounded label (metrics, logs).
    pub fn category(&self) -> &'static str {
        "configuration"
    }

    /// The condition and Event reason.
    pub fn reason(&self) -> &'static str {
        reasons::OPERATOR_CONFIGURATION
    }
}
