//! [`Tolerant`]: an object of a custom resource as listed or watched, whether or not this operator's types
//! can read it, so that one unreadable object never stops the others.
//!
//! A list or watch of a typed `Api<K>` fails as a whole when one object does not deserialize (kube-rs
//! decodes the list in one piece): one MaterializedView whose status a newer operator wrote (an enum value
//! this version does not know) stopped every reconcile in its namespace. Through `Api<Tolerant<K>>` each
//! object is decoded alone: the readable ones reconcile, and the unreadable one keeps its metadata (to name
//! it in a Warning Event, and to run or refuse its deletion) and the JSON path of what could not be read.
//!
//! An unreadable part of the `status` (the operator's own record, written by another version) is dropped,
//! the smallest enclosing field or list element at a time (the whole status at worst), and noted in
//! [`Tolerant::status_dropped`]: the spec and what stays of the status (a backfill's export location, the
//! other versions' tables) say what the object owns, so its deletion still cleans up.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::de::{DeserializeOwned, Error as _};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What could not be read: the JSON path (`status.versions[0].content.projection.mode`) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreadable {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "field {}: {}", self.path, self.message)
    }
}

/// One object of kind `K`, read one at a time (see the module docs).
#[derive(Clone, Debug)]
pub struct Tolerant<K> {
    /// An unreadable object's metadata ([`Resource::meta`] is a readable object's own: kept once, as
    /// watch caches hold every object).
    unreadable_metadata: Option<Box<ObjectMeta>>,
    /// The object, or what stops this operator version from reading its spec.
    pub object: Result<K, Unreadable>,
    /// The object's status could not be read and was dropped from `object`.
    pub status_dropped: Option<Unreadable>,
}

impl<K> Tolerant<K> {
    /// The readable object, its status dropped if that was unreadable.
    pub fn readable(&self) -> Option<&K> {
        self.object.as_ref().ok()
    }
}

fn decode<K: DeserializeOwned>(value: &serde_json::Value) -> Result<K, Unreadable> {
    serde_path_to_error::deserialize(value).map_err(|e| Unreadable {
        path: e.path().to_string(),
        message: e.into_inner().to_string(),
    })
}

/// The most parts of an object's status salvaged after `first` could not be read: the smallest enclosing
/// part that cannot be read is removed (a field, or one element of a list), again while others fail, up to
/// [`MAX_SALVAGE`] times, and at last the whole status. What stays (a backfill's export location, the other
/// versions' tables) is what a deletion needs to clean up.
fn salvage_status<K: DeserializeOwned>(
    value: &mut serde_json::Value,
    first: &Unreadable,
) -> Result<K, Unreadable> {
    let mut error = first.clone();
    for _ in 0..MAX_SALVAGE {
        if !remove_at(value, &error.path) {
            break;
        }
        match decode::<K>(value) {
            Ok(k) => return Ok(k),
            Err(e) if e.path.starts_with("status.") => error = e,
            Err(_) => break,
        }
    }
    if let Some(map) = value.as_object_mut() {
        map.remove("status");
    }
    decode::<K>(value)
}

/// How many unreadable parts of one status are removed one by one before the whole status is dropped.
const MAX_SALVAGE: usize = 16;

/// Removes the value at `path` (serde_path_to_error's `a.b[0].c`) from `value`; false when there is none
/// or the path is the status itself.
fn remove_at(value: &mut serde_json::Value, path: &str) -> bool {
    let mut segments: Vec<Result<usize, String>> = Vec::new();
    for part in path.split('.') {
        let (name, rest) = part.split_once('[').unwrap_or((part, ""));
        if !name.is_empty() {
            segments.push(Err(name.to_string()));
        }
        for index in rest.split('[').filter(|r| !r.is_empty()) {
            match index.trim_end_matches(']').parse() {
                Ok(i) => segments.push(Ok(i)),
                Err(_) => return false,
            }
        }
    }
    let Some(last) = segments.pop() else { return false };
    if segments.is_empty() {
        return false; // the status itself: dropped by the caller
    }
    let mut parent = value;
    for segment in &segments {
        parent = match (segment, parent) {
            (Err(name), serde_json::Value::Object(map)) => match map.get_mut(name) {
                Some(v) => v,
                None => return false,
            },
            (Ok(i), serde_json::Value::Array(list)) => match list.get_mut(*i) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, parent) {
        (Err(name), serde_json::Value::Object(map)) => map.remove(&name).is_some(),
        (Ok(i), serde_json::Value::Array(list)) if i < list.len() => {
            list.remove(i);
            true
        }
        _ => false,
    }
}

impl<'de, K: DeserializeOwned> Deserialize<'de> for Tolerant<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut value = serde_json::Value::deserialize(deserializer)?;
        drop_unused_metadata(&mut value);
        let metadata: ObjectMeta = match value.get("metadata") {
            Some(m) => serde_json::from_value(m.clone()).map_err(D::Error::custom)?,
            None => return Err(D::Error::missing_field("metadata")),
        };
        let (object, status_dropped) = match decode::<K>(&value) {
            Ok(k) => (Ok(k), None),
            Err(e) if e.path == "status" || e.path.starts_with("status.") => {
                (salvage_status(&mut value, &e), Some(e))
            }
            Err(e) => (Err(e), None),
        };
        Ok(Tolerant {
            unreadable_metadata: object.is_err().then(|| Box::new(metadata)),
            object,
            status_dropped,
        })
    }
}

/// The annotation `kubectl apply` keeps a whole copy of the object's last applied manifest in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Removes what the operator never reads and is often most of an object's size: `metadata.managedFields`
/// (server-side apply's field ownership, one entry per manager) and `kubectl apply`'s [`LAST_APPLIED`]
/// annotation. Every object the operator lists or watches passes here, so its watch caches hold neither
/// (#18 item 3); nothing the operator writes back is computed from them (status goes by server-side apply
/// of the status alone, finalizers by JSON patch of `metadata.finalizers`).
fn drop_unused_metadata(value: &mut serde_json::Value) {
    let Some(metadata) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) else {
        return;
    };
    metadata.remove("managedFields");
    if let Some(annotations) = metadata.get_mut("annotations").and_then(|a| a.as_object_mut()) {
        annotations.remove(LAST_APPLIED);
    }
}

/// The readable object as it is (its dropped status left out), or only the metadata of an unreadable one:
/// what the finalizer's patches are computed from.
impl<K: Serialize + Resource> Serialize for Tolerant<K> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.object {
            Ok(k) => k.serialize(serializer),
            Err(_) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("metadata", self.meta())?;
                map.end()
            }
        }
    }
}

impl<K: Resource> Resource for Tolerant<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        static NONE: std::sync::LazyLock<ObjectMeta> = std::sync::LazyLock::new(ObjectMeta::default);
        match (&self.object, &self.unreadable_metadata) {
            (Ok(k), _) => k.meta(),
            (Err(_), m) => m.as_deref().unwrap_or(&NONE),
        }
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match (&mut self.object, &mut self.unreadable_metadata) {
            (Ok(k), _) => k.meta_mut(),
            (Err(_), m) => m.get_or_insert_with(Default::default),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::MaterializedView;

    fn view(status: serde_json::Value, mode: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "kappa.dev/v1alpha1", "kind": "MaterializedView",
            "metadata": {"name": "v", "namespace": "ns", "uid": "u1"},
            "spec": {
                "eventLogRef": {"name": "log"}, "recordTypes": ["game"],
                "projection": {"mode": mode, "key": {"partitionKey": "A#{gameId}"}},
            },
            "status": status,
        })
    }

    #[test]
    fn managed_fields_and_the_last_applied_manifest_are_not_kept() {
        let mut value = view(serde_json::json!({"phase": "Live"}), "Latest");
        value["metadata"]["managedFields"] = serde_json::json!([
            {"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}
        ]);
        value["metadata"]["annotations"] = serde_json::json!({
            LAST_APPLIED: "{\"spec\":{}}",
            "team": "payments",
        });
        let t: Tolerant<MaterializedView> = serde_json::from_value(value).unwrap();
        let v = t.readable().expect("readable");
        for meta in [t.meta(), &v.metadata] {
            assert_eq!(meta.managed_fields, None);
            let annotations = meta.annotations.as_ref().expect("the other annotations stay");
            assert_eq!(annotations.keys().collect::<Vec<_>>(), ["team"]);
        }
        assert_eq!(v.spec.record_types.len(), 1, "the spec is whole");
    }

    #[test]
    fn a_status_written_by_a_newer_operator_is_salvaged_and_named() {
        let value = view(
            serde_json::json!({"phase": "Live", "versions": [{"version": 1, "phase": "Hibernating"}]}),
            "Latest",
        );
        let t: Tolerant<MaterializedView> = serde_json::from_value(value).unwrap();
        let v = t.object.as_ref().expect("the spec is readable");
        let status = v
            .status
            .as_ref()
            .expect("the readable rest of the status is kept");
        assert!(status.versions.is_empty(), "the unreadable version is left out");
        let dropped = t.status_dropped.expect("the status was dropped");
        assert!(dropped.path.starts_with("status.versions[0]"), "{dropped}");
    }

    #[test]
    fn what_can_be_read_of_a_status_is_kept() {
        let value = view(
            serde_json::json!({
                "phase": "Live",
                "backfill": {"attempt": 2, "exportLocation": "s3://b/kappa-exports/x"},
                "versions": [
                    {"version": 1, "contentHash": "a", "state": "Active", "tableName": "t1",
                     "content": {"projection": {"mode": "Median", "key": {"partitionKey": "P#{id}"}}}},
                    {"version": 2, "contentHash": "b", "state": "Hibernating", "tableName": "t2", "content": {}},
                ],
            }),
            "Latest",
        );
        let t: Tolerant<MaterializedView> = serde_json::from_value(value).unwrap();
        assert!(t.status_dropped.is_some());
        let status = t
            .object
            .unwrap()
            .status
            .expect("the readable part of the status is kept");
        assert_eq!(
            status.backfill.and_then(|b| b.export_location).as_deref(),
            Some("s3://b/kappa-exports/x"),
            "what a deletion needs to clean up"
        );
        assert!(
            status.versions.len() < 2,
            "the unreadable versions are left out: {:?}",
            status.versions
        );
    }

    #[test]
    fn an_unreadable_spec_keeps_the_metadata_and_names_the_field() {
        let t: Tolerant<MaterializedView> =
            serde_json::from_value(view(serde_json::json!({}), "Median")).unwrap();
        assert_eq!(t.meta().name.as_deref(), Some("v"));
        let e = t.object.unwrap_err();
        assert_eq!(e.path, "spec.projection.mode");
        assert!(e.message.contains("Median"), "{e}");
    }

    #[test]
    fn a_readable_object_reads_as_the_typed_api_would() {
        let t: Tolerant<MaterializedView> =
            serde_json::from_value(view(serde_json::json!({"phase": "Live"}), "Latest")).unwrap();
        assert!(t.status_dropped.is_none());
        assert!(
            t.object.as_ref().unwrap().status.is_some(),
            "{:?}",
            t.status_dropped
        );
    }
}

#[cfg(test)]
mod break16 {
    use super::*;
    use crate::crd::{EventLog, MaterializedView};
    use serde_json::{Value, json};

    fn meta_full() -> Value {
        json!({
            "name": "v", "namespace": "ns", "uid": "u-1", "resourceVersion": "12345", "generation": 7,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "deletionTimestamp": "2026-01-02T03:04:05Z", "deletionGracePeriodSeconds": 0,
            "labels": {"app": "x", "kubectl.kubernetes.io/last-applied-configuration": "label-kept"},
            "annotations": {LAST_APPLIED: "{\"big\":1}", "team": "payments", "empty": ""},
            "finalizers": ["kappa.dev/cleanup", "other.io/f"],
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "cm", "uid": "o-1",
                                 "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [{"manager": "kubectl", "operation": "Apply", "apiVersion": "kappa.dev/v1alpha1",
                               "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1",
                               "fieldsV1": {"f:spec": {}}},
                              {"manager": "kappa", "operation": "Update", "subresource": "status",
                               "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:phase": {}}}}]
        })
    }

    fn expected_meta() -> Value {
        let mut m = meta_full();
        m.as_object_mut().unwrap().remove("managedFields");
        m["annotations"].as_object_mut().unwrap().remove(LAST_APPLIED);
        m
    }

    fn view_with(meta: Value, mode: &str, status: Value) -> Value {
        json!({
            "apiVersion": "kappa.dev/v1alpha1", "kind": "MaterializedView",
            "metadata": meta,
            "spec": {
                "eventLogRef": {"name": "log"}, "recordTypes": ["game"],
                "projection": {"mode": mode, "key": {"partitionKey": "A#{gameId}"}},
            },
            "status": status,
        })
    }

    fn log_with(meta: Value, status: Value) -> Value {
        json!({
            "apiVersion": "kappa.dev/v1alpha1", "kind": "EventLog",
            "metadata": meta,
            "spec": {"recordTypes": ["game"], "table": {}},
            "status": status,
        })
    }

    fn mv(v: Value) -> Tolerant<MaterializedView> {
        serde_json::from_value(v).expect("decodes as Tolerant")
    }

    // P1: full metadata on a readable view: everything but managedFields/last-applied is kept exactly.
    #[test]
    fn p1_full_metadata_kept_exactly() {
        let t = mv(view_with(meta_full(), "Latest", json!({"phase": "Live"})));
        assert_eq!(serde_json::to_value(t.meta()).unwrap(), expected_meta());
        let k = t.readable().expect("readable");
        assert_eq!(serde_json::to_value(&k.metadata).unwrap(), expected_meta());
    }

    // P2: annotations null.
    #[test]
    fn p2_annotations_null() {
        let mut m = meta_full();
        m["annotations"] = Value::Null;
        let t = mv(view_with(m, "Latest", json!({})));
        assert_eq!(t.meta().annotations, None);
        assert!(t.readable().is_some());
        assert_eq!(t.meta().managed_fields, None);
    }

    // P3: annotations absent.
    #[test]
    fn p3_annotations_absent() {
        let mut m = meta_full();
        m.as_object_mut().unwrap().remove("annotations");
        let t = mv(view_with(m, "Latest", json!({})));
        assert_eq!(t.meta().annotations, None);
        assert!(t.readable().is_some());
    }

    // P4: only the last-applied annotation: it goes, leaving an empty (or no) map.
    #[test]
    fn p4_only_last_applied() {
        let mut m = meta_full();
        m["annotations"] = json!({LAST_APPLIED: "{}"});
        let t = mv(view_with(m, "Latest", json!({})));
        assert!(
            t.meta().annotations.as_ref().is_none_or(|a| a.is_empty()),
            "{:?}",
            t.meta().annotations
        );
        let k = t.readable().unwrap();
        assert!(k.metadata.annotations.as_ref().is_none_or(|a| a.is_empty()));
    }

    // P5: managedFields null / empty list / odd shapes (object, string, list of junk).
    #[test]
    fn p5_managed_fields_odd_shapes() {
        for mf in [
            Value::Null,
            json!([]),
            json!({"a": 1}),
            json!("x"),
            json!([1, "two", null]),
            json!([{"manager": 5, "time": "not-a-time"}]),
        ] {
            let mut m = meta_full();
            m["managedFields"] = mf.clone();
            let t = mv(view_with(m, "Latest", json!({"phase": "Live"})));
            assert_eq!(t.meta().managed_fields, None, "{mf}");
            assert_eq!(serde_json::to_value(t.meta()).unwrap(), expected_meta(), "{mf}");
            assert!(t.readable().is_some(), "{mf}: {:?}", t.object);
        }
    }

    // P6: metadata not an object / null / absent: no panic; Err or decode, never a crash.
    #[test]
    fn p6_metadata_not_an_object() {
        for meta in [json!("s"), json!(5), json!([]), Value::Null] {
            let r: Result<Tolerant<MaterializedView>, _> =
                serde_json::from_value(view_with(meta.clone(), "Latest", json!({})));
            // ObjectMeta from null? report what happens
            eprintln!(
                "P6 meta={meta}: {:?}",
                r.as_ref()
                    .map(|t| (t.meta(), t.object.is_ok()))
                    .map_err(|e| e.to_string())
            );
        }
        let mut v = view_with(json!({}), "Latest", json!({}));
        v.as_object_mut().unwrap().remove("metadata");
        let r: Result<Tolerant<MaterializedView>, _> = serde_json::from_value(v);
        assert!(r.is_err());
    }

    // P7: unreadable spec together with managedFields and last-applied.
    #[test]
    fn p7_unreadable_spec_with_managed_fields() {
        let t = mv(view_with(meta_full(), "Median", json!({"phase": "Live"})));
        let e = t.object.as_ref().unwrap_err();
        assert_eq!(e.path, "spec.projection.mode");
        assert_eq!(serde_json::to_value(t.meta()).unwrap(), expected_meta());
        // Serialize of the unreadable one: only the metadata, without managedFields/last-applied.
        let s = serde_json::to_value(&t).unwrap();
        assert_eq!(s, json!({"metadata": expected_meta()}));
    }

    // P8: unreadable status together with managedFields: metadata kept, status salvaged.
    #[test]
    fn p8_unreadable_status_with_managed_fields() {
        let t = mv(view_with(
            meta_full(),
            "Latest",
            json!({"phase": "Live", "versions": [{"version": 1, "phase": "Hibernating"}]}),
        ));
        assert!(t.status_dropped.is_some());
        let k = t.readable().expect("readable");
        assert_eq!(serde_json::to_value(&k.metadata).unwrap(), expected_meta());
        assert_eq!(serde_json::to_value(t.meta()).unwrap(), expected_meta());
    }

    // P9: Serialize round trip after decode: serialize -> decode again yields the same.
    #[test]
    fn p9_serialize_round_trip() {
        let t = mv(view_with(meta_full(), "Latest", json!({"phase": "Live"})));
        let s = serde_json::to_value(&t).unwrap();
        assert_eq!(s["metadata"], expected_meta());
        assert_eq!(s["spec"]["recordTypes"], json!(["game"]));
        let t2 = mv(s.clone());
        assert_eq!(serde_json::to_value(&t2).unwrap(), s);
        assert_eq!(t2.meta(), t.meta());
    }

    // P10: finalizer patch pattern: add/remove a finalizer on the serialized form; only finalizers differ.
    #[test]
    fn p10_finalizer_patch_diff_only_finalizers() {
        let t = mv(view_with(meta_full(), "Latest", json!({"phase": "Live"})));
        let before = serde_json::to_value(&t).unwrap();
        let mut t2 = t.clone();
        t2.meta_mut().finalizers = Some(vec!["other.io/f".into()]);
        let after = serde_json::to_value(&t2).unwrap();
        let patch = json_patch::diff(&before, &after);
        let s = serde_json::to_string(&patch).unwrap();
        assert!(!s.contains("managedFields") && !s.contains("last-applied"), "{s}");
        for op in patch.0.iter() {
            let p = serde_json::to_value(op).unwrap();
            assert!(
                p["path"].as_str().unwrap().starts_with("/metadata/finalizers"),
                "{p}"
            );
        }
    }

    // P11: EventLog with everything, readable and with an unreadable status phase.
    #[test]
    fn p11_event_log() {
        let t: Tolerant<EventLog> =
            serde_json::from_value(log_with(meta_full(), json!({"phase": "Ready"}))).unwrap();
        assert_eq!(serde_json::to_value(t.meta()).unwrap(), expected_meta());
        let k = t.readable().expect("readable");
        assert_eq!(serde_json::to_value(&k.metadata).unwrap(), expected_meta());
        let t: Tolerant<EventLog> =
            serde_json::from_value(log_with(meta_full(), json!({"phase": "Hibernating"}))).unwrap();
        assert!(t.status_dropped.is_some());
        assert_eq!(serde_json::to_value(t.meta()).unwrap(), expected_meta());
        // unreadable spec
        let mut v = log_with(meta_full(), json!({}));
        v["spec"]["table"]["billing"] = json!({"mode": "Quantum"});
        let t: Tolerant<EventLog> = serde_json::from_value(v).unwrap();
        assert!(t.object.is_err(), "{:?}", t.object);
        assert_eq!(serde_json::to_value(t.meta()).unwrap(), expected_meta());
    }

    // P12: annotations as a non-object (odd) -> decode error vs. Tolerant?
    #[test]
    fn p12_annotations_odd_shapes() {
        for a in [json!([]), json!("x")] {
            let mut m = meta_full();
            m["annotations"] = a.clone();
            let r: Result<Tolerant<MaterializedView>, _> =
                serde_json::from_value(view_with(m, "Latest", json!({})));
            eprintln!(
                "P12 annotations={a}: {:?}",
                r.as_ref().map(|t| t.object.is_ok()).map_err(|e| e.to_string())
            );
        }
    }

    // P13: the same key in labels / spec fields is untouched; a spec field named managedFields is kept.
    #[test]
    fn p13_nested_names_untouched() {
        let mut v = view_with(meta_full(), "Latest", json!({"phase": "Live"}));
        v["spec"]["managedFields"] = json!("spec-extra");
        v["status"]["annotations"] = json!({LAST_APPLIED: "x"});
        let t = mv(v);
        assert_eq!(t.meta().labels.as_ref().unwrap()[LAST_APPLIED], "label-kept");
        assert!(t.readable().is_some());
    }

    // P14: decoding through a list (as kube does) and via from_slice (borrowed deserializer).
    #[test]
    fn p14_list_and_slice() {
        let items = json!({"apiVersion": "kappa.dev/v1alpha1", "kind": "MaterializedViewList",
            "metadata": {"resourceVersion": "9"},
            "items": [view_with(meta_full(), "Latest", json!({})), view_with(meta_full(), "Median", json!({}))]});
        let bytes = serde_json::to_vec(&items).unwrap();
        let list: kube::core::ObjectList<Tolerant<MaterializedView>> =
            serde_json::from_slice(&bytes).unwrap();
        assert_eq!(list.items.len(), 2);
        for t in &list.items {
            assert_eq!(serde_json::to_value(t.meta()).unwrap(), expected_meta());
        }
        assert!(list.items[0].object.is_ok() && list.items[1].object.is_err());
        // watch event
        let ev = json!({"type": "MODIFIED", "object": view_with(meta_full(), "Latest", json!({}))});
        let e: kube::core::WatchEvent<Tolerant<MaterializedView>> =
            serde_json::from_slice(&serde_json::to_vec(&ev).unwrap()).unwrap();
        match e {
            kube::core::WatchEvent::Modified(t) => {
                assert_eq!(serde_json::to_value(t.meta()).unwrap(), expected_meta())
            }
            _ => panic!(),
        }
    }
}
