//! Kubernetes Events in the tests of the operator's Events publisher (`tests/events.rs`,
//! `tests/break18_events.rs`): the Event they publish, an object for it to regard, and what was published.

use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::{Client, Resource};

/// A Warning `AwsThrottled` (action `Reconcile`) with `note`.
pub fn warning(note: &str) -> Event {
    Event {
        type_: EventType::Warning,
        reason: "AwsThrottled".into(),
        note: Some(note.into()),
        action: "Reconcile".into(),
        secondary: None,
    }
}

/// A ConfigMap `name` in `ns`, created, and its reference.
pub async fn object(client: &Client, ns: &str, name: &str) -> ObjectReference {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let map: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    maps.create(&PostParams::default(), &map)
        .await
        .unwrap()
        .object_ref(&())
}

/// The Events in `ns`, oldest first.
pub async fn events(client: &Client, ns: &str) -> Vec<K8sEvent> {
    let api: Api<K8sEvent> = Api::namespaced(client.clone(), ns);
    let mut items = api.list(&ListParams::default()).await.unwrap().items;
    items.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    items
}

/// How many occurrences an Event counts: its `series.count`, 1 without a series.
pub fn count(e: &K8sEvent) -> i32 {
    e.series.as_ref().map_or(1, |s| s.count)
}
