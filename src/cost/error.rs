//! The cost layer's error: each variant names the file or the input, and what to fix.

use std::path::PathBuf;

/// Loading manifests or checking the estimate's inputs failed.
#[derive(Debug, thiserror::Error)]
pub enum CostError {
    #[error("cannot read {path}: {source}; check that the path exists and is readable")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not UTF-8 text (a binary, or another encoding): manifests are YAML.
    #[error("{path} is not UTF-8 text; a manifest is a YAML file (save it as UTF-8)")]
    NotText { path: PathBuf },
    #[error(
        "{path}: document {document} is not valid YAML: {source}; fix the syntax (documents are \
         separated by `---`)"
    )]
    Yaml {
        path: PathBuf,
        /// 1-based position of the document in the file.
        document: usize,
        #[source]
        source: serde_yaml::Error,
    },
    #[error(
        "{path}: document {document}, {kind} {name}, does not match kappa.dev/v1alpha1: {source}; fix the \
         field the message names (`kubectl explain {kind_lower}.spec` shows the schema)"
    )]
    InvalidObject {
        path: PathBuf,
        document: usize,
        kind: &'static str,
        kind_lower: String,
        name: String,
        #[source]
        source: serde_yaml::Error,
    },
    #[error(
        "{path}: document {document}, {kind} {name}, would be refused by the API server: {problems}; fix \
         these fields (`kubectl explain {kind_lower}.spec` shows the limits)"
    )]
    Refused {
        path: PathBuf,
        document: usize,
        kind: &'static str,
        kind_lower: String,
        name: String,
        /// `<field path>: <what is wrong>`, joined by "; ".
        problems: String,
    },
    #[error("{path}: document {document}, a {kind}, has no metadata.name; add one")]
    MissingName {
        path: PathBuf,
        document: usize,
        kind: &'static str,
    },
    #[error("{kind} {namespace}/{name} is defined twice, in {first} and in {second}; remove one of them")]
    Duplicate {
        kind: &'static str,
        namespace: String,
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error(
        "{path}: MaterializedView {namespace}/{view} reads EventLog {namespace}/{log} \
         (spec.eventLogRef.name), which is not in the given files; add the EventLog's manifest or fix \
         spec.eventLogRef.name"
    )]
    MissingEventLog {
        path: PathBuf,
        namespace: String,
        view: String,
        log: String,
    },
    #[error("{field} is {value}; expected {expected}")]
    InvalidInput {
        field: String,
        value: String,
        expected: &'static str,
    },
}

impl CostError {
    /// A short, bounded label: `io`, `invalid-manifest`, `invalid-input`.
    pub fn category(&self) -> &'static str {
        match self {
            CostError::Read { .. } => "io",
            CostError::NotText { .. } => "invalid-manifest",
            CostError::Yaml { .. }
            | CostError::InvalidObject { .. }
            | CostError::Refused { .. }
            | CostError::MissingName { .. }
            | CostError::Duplicate { .. }
            | CostError::MissingEventLog { .. } => "invalid-manifest",
            CostError::InvalidInput { .. } => "invalid-input",
        }
    }
}
