//! What users write: the `kappa.dev/v1alpha1` kinds and the status types they share.
//!
//! Every field carries a doc comment because it becomes `kubectl explain`. Validation that needs no lookup
//! lives here, as OpenAPI constraints and CEL rules evaluated by the API server at admission; validation
//! that needs another object (the view's EventLog) lives in the controllers and surfaces as a `Stalled`
//! condition.

pub mod admission;
pub mod conditions;
// Each `printcolumn(...)` repeats `type_ = ...`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
mod event_log;
#[allow(clippy::duplicated_attributes)]
mod materialized_view;
pub mod reference;
pub mod resources;
pub mod tolerant;

pub use conditions::{Condition, ConditionStatus, ConditionType, reasons};
pub use event_log::*;
pub use materialized_view::*;
pub use resources::{ResourceKey, Resources};
pub use tolerant::{Tolerant, Unreadable};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionSpec,
};
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every kind in this crate.
pub const GROUP: &str = "kappa.dev";
/// The finalizer that holds an object until its AWS resources are cleaned up.
pub const FINALIZER: &str = "kappa.dev/cleanup";

/// What happens to AWS resources when the object that owns them is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the AWS resources (the default: a log is the canonical store). An Event says what was kept.
    #[default]
    Retain,
    /// Delete the AWS resources that carry this object's ownership tags, and nothing else.
    Delete,
}

/// The annotation on each generated CRD holding the SHA-256 (hex) of its `spec` as generated: what the
/// operator compares with the installed CRD's to catch version skew (`src/controller/crd_skew.rs`).
pub const SCHEMA_DIGEST_ANNOTATION: &str = "kappa.dev/schema-digest";
/// The annotation on each generated CRD naming the operator version that generated it (for humans: a patch
/// release that keeps the schema keeps the digest, and runs on the CRDs of its predecessor).
pub const OPERATOR_VERSION_ANNOTATION: &str = "kappa.dev/operator-version";
/// This operator's version.
pub const OPERATOR_VERSION: &str = env!("CARGO_PKG_VERSION");

/// All CRDs of the operator, in the order they are printed by `kappa-operator crds`, each annotated with
/// its schema digest and this operator's version.
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![
        fingerprinted(EventLog::crd()),
        fingerprinted(MaterializedView::crd()),
    ]
}

/// A CRD with its schema digest and the operator version in its annotations.
fn fingerprinted(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let digest = schema_digest(&crd.spec);
    let annotations = crd.metadata.annotations.get_or_insert_with(Default::default);
    annotations.insert(SCHEMA_DIGEST_ANNOTATION.to_string(), digest);
    annotations.insert(
        OPERATOR_VERSION_ANNOTATION.to_string(),
        OPERATOR_VERSION.to_string(),
    );
    crd
}

/// The SHA-256 (lower-case hex) of a CRD's `spec`, serialized as JSON with every object's keys sorted:
/// the metadata (and so the annotations that carry it) is not part of it, nor is the operator version.
pub fn schema_digest(spec: &CustomResourceDefinitionSpec) -> String {
    let value = serde_json::to_value(spec).expect("a CRD spec always serializes to JSON");
    canonical_digest(&value)
}

/// The SHA-256 (lower-case hex) of `value` serialized as JSON with every object's keys sorted.
fn canonical_digest(value: &serde_json::Value) -> String {
    use sha2::{Digest, Sha256};
    let mut canonical = String::new();
    write_canonical(value, &mut canonical);
    Sha256::digest(canonical.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The SHA-256 (lower-case hex) of what of a CRD's `spec` decides admission and what clients see: its
/// group, scope, kind and plural, and per version its name, `served`, `storage`, schema (with its CEL
/// rules), subresources and printer columns. Unlike [`schema_digest`] it leaves out what the API server
/// fills in on its own (`conversion`, `names.listKind`, ...), so it can be recomputed from a CRD read back
/// from the cluster: an installed CRD that carries this operator's digest annotation but whose
/// fingerprint differs from the generated one's was edited by hand.
pub fn schema_fingerprint(spec: &CustomResourceDefinitionSpec) -> String {
    let versions: Vec<serde_json::Value> = spec
        .versions
        .iter()
        .map(|v| {
            serde_json::json!({
                "name": v.name,
                "served": v.served,
                "storage": v.storage,
                "schema": v.schema,
                "subresources": v.subresources,
                "additionalPrinterColumns": v.additional_printer_columns,
            })
        })
        .collect();
    let value = serde_json::json!({
        "group": spec.group,
        "scope": spec.scope,
        "kind": spec.names.kind,
        "plural": spec.names.plural,
        "versions": versions,
    });
    canonical_digest(&value)
}

/// `value` as compact JSON with the keys of every object in sorted order (whatever the map's order).
fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The CRDs as one multi-document YAML stream, exactly as committed under `crds/`.
pub fn crds_yaml() -> String {
    let header = "# Generated by `kappa-operator crds` from src/crd; do not edit by hand.\n";
    let docs: Vec<String> = all_crds()
        .iter()
        .map(|crd| serde_yaml::to_string(crd).expect("a CRD always serializes to YAML"))
        .collect();
    format!("{header}---\n{}", docs.join("---\n"))
}

#[cfg(test)]
mod tests {
    /// `crds/` must be what the Rust types generate; regenerate with `make crds`.
    #[test]
    fn committed_crds_are_up_to_date() {
        let committed = include_str!("../../crds/kappa.dev_crds.yaml");
        assert!(
            committed == super::crds_yaml(),
            "crds/kappa.dev_crds.yaml is stale: run `make crds` and commit the result"
        );
    }

    /// Each generated CRD carries the digest of its own spec and this version; the digest leaves the
    /// annotations (and so the version) out, and changes with the schema.
    #[test]
    fn generated_crds_carry_the_digest_of_their_spec() {
        for crd in super::all_crds() {
            let annotations = crd.metadata.annotations.as_ref().unwrap();
            let digest = &annotations[super::SCHEMA_DIGEST_ANNOTATION];
            assert_eq!(digest, &super::schema_digest(&crd.spec));
            assert_eq!(digest.len(), 64);
            assert!(
                digest
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            );
            assert_eq!(
                annotations[super::OPERATOR_VERSION_ANNOTATION],
                env!("CARGO_PKG_VERSION")
            );
            let mut changed = crd.spec.clone();
            changed.versions[0].served = !changed.versions[0].served;
            assert_ne!(
                super::schema_digest(&changed),
                *digest,
                "the digest follows the spec"
            );
        }
        let [log, view] = &super::all_crds()[..] else {
            unreachable!()
        };
        assert_ne!(
            super::schema_digest(&log.spec),
            super::schema_digest(&view.spec),
            "one digest per CRD"
        );
    }

    /// The digest does not depend on the order of an object's keys (a map's iteration order).
    #[test]
    fn the_digest_is_independent_of_key_order() {
        let mut a = String::new();
        let mut b = String::new();
        super::write_canonical(
            &serde_json::json!({"b": 1, "a": [{"y": "\"", "x": null}]}),
            &mut a,
        );
        super::write_canonical(
            &serde_json::json!({"a": [{"x": null, "y": "\""}], "b": 1}),
            &mut b,
        );
        assert_eq!(a, b);
        assert_eq!(a, r#"{"a":[{"x":null,"y":"\""}],"b":1}"#);
    }
}
