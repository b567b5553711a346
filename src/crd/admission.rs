//! What the API server would refuse of a manifest, checked without one: the CRD's OpenAPI v3 schema
//! (`enum`, `minimum`/`maximum`, `minLength`/`maxLength`, `minItems`/`maxItems`, `pattern`, `required`)
//! and its CEL rules (`x-kubernetes-validations`, evaluated by `kube::core::cel::Validator` after the
//! schema's defaults are applied, as the API server defaults before it validates). `kappa-operator
//! plan`/`cost` use it so they never estimate an object `kubectl apply` would refuse.
//!
//! Source: Kubernetes docs, "Extend the Kubernetes API with CustomResourceDefinitions", Validation
//! (<https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#validation>).
//! Not checked: `format`, `multipleOf`, `uniqueItems` and `x-kubernetes-list-type` (the kappa.dev schemas
//! use none of them for a limit a user can cross).

use kube::CustomResourceExt;
use serde_json::Value;

/// The problems the API server would report for `object` (a manifest as JSON) of kind `K`, each as
/// `<field path>: <what is wrong>`; empty when it would be admitted.
pub fn problems<K: CustomResourceExt>(object: &Value) -> Vec<String> {
    let crd = K::crd();
    let Some(schema) = crd
        .spec
        .versions
        .iter()
        .find(|v| v.storage)
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| serde_json::to_value(s).ok())
    else {
        return Vec::new();
    };
    let defaulted = kube::core::cel::apply_defaults(&schema, object);
    let mut out = Vec::new();
    check(&schema, &defaulted, "", &mut out);
    if out.is_empty()
        && let Err(errors) = kube::core::cel::Validator::new().validate(&schema, object, None)
    {
        // Only a rule that evaluated to false: a rule this evaluator cannot run (a CEL function it lacks)
        // is left to the API server rather than refused here.
        out.extend(
            errors
                .iter()
                .filter(|e| e.kind == kube::core::cel::ErrorKind::ValidationFailure)
                .map(|e| e.to_string()),
        );
    }
    out
}

fn check(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    if value.is_null() {
        return;
    }
    let at = |path: &str| {
        if path.is_empty() {
            "<object>".to_string()
        } else {
            path.to_string()
        }
    };
    let number = |key: &str| schema.get(key).and_then(Value::as_f64);
    let count = |key: &str| schema.get(key).and_then(Value::as_u64);
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        out.push(format!("{}: {value} is not one of {}", at(path), list.join(", ")));
    }
    match value {
        Value::Number(n) => {
            let n = n.as_f64().unwrap_or_default();
            if let Some(min) = number("minimum").filter(|min| n < *min) {
                out.push(format!("{}: {value} is less than the minimum {min}", at(path)));
            }
            if let Some(max) = number("maximum").filter(|max| n > *max) {
                out.push(format!("{}: {value} is more than the maximum {max}", at(path)));
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(min) = count("minLength").filter(|min| len < *min) {
                out.push(format!("{}: {value} is shorter than {min} characters", at(path)));
            }
            if let Some(max) = count("maxLength").filter(|max| len > *max) {
                out.push(format!(
                    "{}: a string of {len} characters is longer than {max}",
                    at(path)
                ));
            }
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
                && regex::Regex::new(pattern).is_ok_and(|re| !re.is_match(s))
            {
                out.push(format!("{}: {value} does not match {pattern}", at(path)));
            }
        }
        Value::Array(items) => {
            let len = items.len() as u64;
            if let Some(min) = count("minItems").filter(|min| len < *min) {
                out.push(format!(
                    "{}: {len} item(s), fewer than the minimum {min}",
                    at(path)
                ));
            }
            if let Some(max) = count("maxItems").filter(|max| len > *max) {
                out.push(format!("{}: {len} items, more than the maximum {max}", at(path)));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item_schema, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        Value::Object(fields) => {
            let join = |key: &str| {
                if path.is_empty() {
                    key.to_string()
                } else {
                    format!("{path}.{key}")
                }
            };
            for required in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(key) = required.as_str()
                    && fields.get(key).is_none_or(Value::is_null)
                {
                    out.push(format!("{}: required", join(key)));
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, field) in fields {
                if let Some(sub) = properties.and_then(|p| p.get(key)).or(additional) {
                    check(sub, field, &join(key), out);
                }
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{EventLog, MaterializedView};
    use serde_json::json;

    fn log(spec: Value) -> Value {
        let mut spec = spec;
        spec["table"] = json!({});
        json!({"apiVersion": "kappa.dev/v1alpha1", "kind": "EventLog", "metadata": {"name": "l"}, "spec": spec})
    }

    #[test]
    fn a_valid_log_has_no_problem() {
        assert_eq!(
            problems::<EventLog>(&log(json!({"recordTypes": ["player"]}))),
            Vec::<String>::new()
        );
    }

    #[test]
    fn schema_limits_and_cel_rules_are_reported_by_field() {
        let cases = [
            (
                json!({"recordTypes": ["p"], "ingest": {"maxReceiveCount": 0}}),
                "spec.ingest.maxReceiveCount: 0 is less than the minimum 1",
            ),
            (
                json!({"recordTypes": ["p"], "ingest": {"batchSize": 10001, "maximumBatchingWindowSeconds": 1}}),
                "spec.ingest.batchSize: 10001 is more than the maximum",
            ),
            (
                json!({"recordTypes": ["p"], "ingest": {"queueType": "Fifo", "batchSize": 50}}),
                "batchSize must be at most 10 for a Fifo queue",
            ),
            (
                json!({"recordTypes": ["p"], "ingest": {"queueType": "fifo"}}),
                "spec.ingest.queueType: \"fifo\" is not one of",
            ),
        ];
        for (spec, expected) in cases {
            let found = problems::<EventLog>(&log(spec.clone()));
            assert!(found.iter().any(|p| p.contains(expected)), "{spec}: {found:?}");
        }
        let view = json!({"apiVersion": "kappa.dev/v1alpha1", "kind": "MaterializedView", "metadata": {"name": "v"},
            "spec": {"eventLogRef": {"name": "l"}, "recordTypes": ["p"], "projection": {"mode": "Count", "key": {"partitionKey": "C#{id}"}}}});
        assert_eq!(problems::<MaterializedView>(&view), Vec::<String>::new());
    }
}
