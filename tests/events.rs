//! The operator's Kubernetes Events (`src/controller/events.rs`) on the real API server: a repeat is
//! counted in the Event already published (`series`), a new message is a new Event, and an Event deleted
//! by hand is created again.

mod common;

use common::events::{count, events, object, warning};

use k8s_openapi::api::events::v1::Event as K8sEvent;
use kappa_operator::controller::events::Events;
use kube::api::{Api, DeleteParams};

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
