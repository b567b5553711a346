//! The operator's Kubernetes Events (`src/controller/events.rs`) on the real API server: a repeat is
//! counted in the Event already published (`series`), a new message is a new Event, and an Event deleted
//! by hand is created again.

mod common;

use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kappa_operator::controller::events::Events;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::{Client, Resource};

fn warning(note: &str) -> Event {
    Event {
        type_: EventType::Warning,
        reason: "AwsThrottled".into(),
        note: Some(note.into()),
        action: "Reconcile".into(),
        secondary: None,
    }
}

/// A ConfigMap `name` in `ns`, created, and its reference.
async fn object(client: &Client, ns: &str, name: &str) -> ObjectReference {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let map: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    maps.create(&PostParams::default(), &map)
        .await
        .unwrap()
        .object_ref(&())
}

async fn events(client: &Client, ns: &str) -> Vec<K8sEvent> {
    let api: Api<K8sEvent> = Api::namespaced(client.clone(), ns);
    let mut items = api.list(&ListParams::default()).await.unwrap().items;
    items.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    items
}

fn count(e: &K8sEvent) -> i32 {
    e.series.as_ref().map_or(1, |s| s.count)
}

#[tokio::test]
async fn repeats_are_one_series_and_a_new_message_is_a_new_event() {
    let (client, ns) = common::setup("events-series").await;
    let events_api = Events::new(client.clone(), "kappa-operator", "test");
    let mut regarding = object(&client, &ns, "players").await;

    for version in 1..=3 {
        // A reference that names a resourceVersion: one that moved on is the same object.
        regarding.resource_version = Some(version.to_string());
        events_api
            .publish(&warning("throttled: retrying"), &regarding)
            .await
            .unwrap();
    }
    let published = events(&client, &ns).await;
    assert_eq!(published.len(), 1, "three repeats, one Event: {published:?}");
    assert_eq!(count(&published[0]), 3);
    assert_eq!(published[0].note.as_deref(), Some("throttled: retrying"));
    assert_eq!(published[0].type_.as_deref(), Some("Warning"));
    assert_eq!(
        published[0].reporting_controller.as_deref(),
        Some("kappa-operator")
    );
    assert_eq!(published[0].reporting_instance.as_deref(), Some("test"));
    assert_eq!(
        published[0].regarding.as_ref().and_then(|r| r.name.as_deref()),
        Some("players")
    );

    events_api
        .publish(
            &warning("throttled 5 times: the table's write capacity"),
            &regarding,
        )
        .await
        .unwrap();
    let published = events(&client, &ns).await;
    assert_eq!(
        published.len(),
        2,
        "a new message is not folded into the first: {published:?}"
    );
    assert_eq!(
        published[1].note.as_deref(),
        Some("throttled 5 times: the table's write capacity")
    );
    assert_eq!(count(&published[1]), 1);

    // The same for another object: its own Event.
    let other = object(&client, &ns, "scores").await;
    events_api
        .publish(&warning("throttled: retrying"), &other)
        .await
        .unwrap();
    assert_eq!(events(&client, &ns).await.len(), 3);

    // The first series' Event deleted by hand: the next repeat creates it again.
    let api: Api<K8sEvent> = Api::namespaced(client.clone(), &ns);
    let first = events(&client, &ns).await[0].metadata.name.clone().unwrap();
    api.delete(&first, &DeleteParams::default()).await.unwrap();
    events_api
        .publish(&warning("throttled: retrying"), &regarding)
        .await
        .unwrap();
    let published = events(&client, &ns).await;
    assert_eq!(published.len(), 3, "{published:?}");
    let again = published
        .iter()
        .find(|e| {
            e.note.as_deref() == Some("throttled: retrying")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("players")
        })
        .expect("the deleted series' Event again");
    assert_ne!(again.metadata.name.as_deref(), Some(first.as_str()));
    assert_eq!(count(again), 1);
    common::delete_namespace(&client, &ns).await;
}
