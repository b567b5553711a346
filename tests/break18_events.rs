//! Breaking the operator's Events publisher (`src/controller/events.rs`, `Events::publish`) on the real API
//! server with inputs a real operator meets: long and dotted names, cluster-scoped objects, missing and
//! terminating namespaces, long and unicode notes, long reasons and instances, concurrent repeats, re-created
//! objects, related objects, many keys.
//!
//! The series cache's clock is `Timestamp::now()` taken inside `publish` and the cache is private, so a
//! series expiring (6 minutes) cannot be shown from here without waiting 6 minutes; the unit tests in
//! events.rs cover the cache on its own.

mod common;

use common::events::{count, events, object, warning};

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Method, Request};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ObjectReference};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kappa_operator::controller::events::Events;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::client::Body;
use kube::runtime::events::EventType;
use kube::{Client, Resource};

/// Deletes the test's namespace when the test ends, failed or not (a failing assertion skips the test's
/// own `delete_namespace`).
struct NsGuard(String);

impl Drop for NsGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kubectl")
            .args([
                "delete",
                "namespace",
                &self.0,
                "--wait=false",
                "--ignore-not-found",
            ])
            .output();
    }
}

/// The test's client and namespace, and the guard that deletes the namespace when the test ends.
async fn setup(test: &str) -> (Client, String, NsGuard) {
    let (client, ns) = common::setup(test).await;
    let guard = NsGuard(ns.clone());
    (client, ns, guard)
}

/// The publisher as the operator makes it.
fn publisher(client: &Client) -> Events {
    Events::new(client.clone(), "kappa-operator", "test")
}

/// A reference to a ConfigMap that need not exist (Events about missing objects are accepted).
fn reference(ns: Option<&str>, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("ConfigMap".into()),
        namespace: ns.map(str::to_string),
        name: Some(name.into()),
        uid: Some(format!("uid-{}", name.len())),
        ..Default::default()
    }
}

/// The Events in `ns` about an object named `name`.
async fn events_about(client: &Client, ns: &str, name: &str) -> Vec<K8sEvent> {
    events(client, ns)
        .await
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------------------
// Names

/// A 253-character name (the most a ConfigMap's or MaterializedView's name may have) whose cut, 236
/// characters for today's 17-character `.<ns in hex>` suffix, falls inside a run of dashes: the Event's
/// name must still be a DNS subdomain (events.k8s.io/v1 validates `metadata.name` with
/// `NameIsDNSSubdomain`: each dot-separated label starts and ends with an alphanumeric).
#[tokio::test]
async fn a_long_name_cut_inside_dashes_still_makes_a_valid_event_name() {
    let (client, ns, _guard) = setup("b18ev-cut-dash").await;
    let name = format!("{}{}{}", "a".repeat(226), "-".repeat(20), "b".repeat(7));
    assert_eq!(name.len(), 253);
    let regarding = object(&client, &ns, &name).await;
    let publisher = publisher(&client);
    let result = publisher.publish(&warning("throttled"), &regarding).await;
    assert!(
        result.is_ok(),
        "an Event about a valid 253-character name is refused: {result:?}"
    );
    let published = events_about(&client, &ns, &name).await;
    assert_eq!(published.len(), 1, "{published:?}");
    common::delete_namespace(&client, &ns).await;
}

/// The same with a dot right before the cut: `<236 chars ending in '.'>.<hex>` has an empty label.
#[tokio::test]
async fn a_long_name_cut_after_a_dot_still_makes_a_valid_event_name() {
    let (client, ns, _guard) = setup("b18ev-cut-dot").await;
    // Dots at every 4th place from 220 on: whatever the suffix's length (16 or 17 hex digits, or fewer),
    // the cut lands on or right after a dot for some; at 236 exactly for today's clock.
    let mut name = String::new();
    while name.len() < 253 {
        let i = name.len();
        name.push(if (220..250).contains(&i) && i % 4 == 3 {
            '.'
        } else {
            'a'
        });
    }
    assert_eq!(&name[235..236], ".");
    let regarding = object(&client, &ns, &name).await;
    let publisher = publisher(&client);
    let result = publisher.publish(&warning("throttled"), &regarding).await;
    assert!(
        result.is_ok(),
        "an Event about a valid 253-character dotted name is refused: {result:?}"
    );
    common::delete_namespace(&client, &ns).await;
}

/// A 253-character name of letters: cut, published, and its repeats counted in the one Event.
#[tokio::test]
async fn a_253_character_name_is_published_and_counted() {
    let (client, ns, _guard) = setup("b18ev-253").await;
    let name = "v".repeat(253);
    let regarding = object(&client, &ns, &name).await;
    let publisher = publisher(&client);
    for _ in 0..3 {
        publisher
            .publish(&warning("throttled"), &regarding)
            .await
            .unwrap();
    }
    let published = events_about(&client, &ns, &name).await;
    assert_eq!(published.len(), 1, "{published:?}");
    assert_eq!(count(&published[0]), 3);
    assert!(published[0].metadata.name.as_ref().unwrap().len() <= 253);
    common::delete_namespace(&client, &ns).await;
}

/// Names with dots, and two long names that differ only after the cut: Events of their own.
#[tokio::test]
async fn dotted_names_and_names_alike_up_to_the_cut_are_events_of_their_own() {
    let (client, ns, _guard) = setup("b18ev-dots").await;
    let publisher = publisher(&client);
    let dotted = object(&client, &ns, "orders.v2.eu-west-1").await;
    publisher.publish(&warning("throttled"), &dotted).await.unwrap();
    let a = format!("{}{}", "x".repeat(245), "aaaaaaaa");
    let b = format!("{}{}", "x".repeat(245), "bbbbbbbb");
    let ra = object(&client, &ns, &a).await;
    let rb = object(&client, &ns, &b).await;
    for _ in 0..2 {
        publisher.publish(&warning("throttled"), &ra).await.unwrap();
        publisher.publish(&warning("throttled"), &rb).await.unwrap();
    }
    let d = events_about(&client, &ns, "orders.v2.eu-west-1").await;
    assert_eq!(d.len(), 1);
    assert!(
        d[0].metadata
            .name
            .as_ref()
            .unwrap()
            .starts_with("orders.v2.eu-west-1.")
    );
    let ea = events_about(&client, &ns, &a).await;
    let eb = events_about(&client, &ns, &b).await;
    assert_eq!((ea.len(), eb.len()), (1, 1));
    assert_eq!((count(&ea[0]), count(&eb[0])), (2, 2));
    assert_ne!(ea[0].metadata.name, eb[0].metadata.name);
    common::delete_namespace(&client, &ns).await;
}

/// An RBAC Role's name needs only be a path segment: `system:kappa-reader` is a valid Role. An Event about
/// it was named `system:kappa-reader.<hex>`, which is no DNS subdomain, and refused; now `system-kappa-reader.<hex>`.
#[tokio::test]
async fn an_event_about_an_object_whose_name_is_no_dns_subdomain_is_published() {
    let (client, ns, _guard) = setup("b18ev-colon").await;
    let publisher = publisher(&client);
    let regarding = ObjectReference {
        api_version: Some("rbac.authorization.k8s.io/v1".into()),
        kind: Some("Role".into()),
        namespace: Some(ns.clone()),
        name: Some("system:kappa-reader".into()),
        uid: Some("uid-role".into()),
        ..Default::default()
    };
    let result = publisher.publish(&warning("throttled"), &regarding).await;
    assert!(result.is_ok(), "{result:?}");
    common::delete_namespace(&client, &ns).await;
}

/// A name that is not ASCII (a Role's name may be any path segment): the cut at a byte index inside a
/// character must not panic the publishing task.
#[tokio::test]
async fn a_long_non_ascii_name_does_not_panic() {
    let (client, ns, _guard) = setup("b18ev-utf8").await;
    let publisher = Arc::new(publisher(&client));
    let regarding = ObjectReference {
        api_version: Some("rbac.authorization.k8s.io/v1".into()),
        kind: Some("Role".into()),
        namespace: Some(ns.clone()),
        // 3 bytes each: 90 of them are 270 bytes; byte 236 is inside the 79th.
        name: Some("€".repeat(90)),
        uid: Some("uid-role".into()),
        ..Default::default()
    };
    let task = {
        let publisher = publisher.clone();
        tokio::spawn(async move { publisher.publish(&warning("throttled"), &regarding).await })
    };
    let joined = task.await;
    assert!(
        !joined.as_ref().is_err_and(|e| e.is_panic()),
        "publish panicked: {joined:?}"
    );
    common::delete_namespace(&client, &ns).await;
}

/// No name in the reference: the Event is named after the controller.
#[tokio::test]
async fn a_reference_without_a_name_is_named_after_the_controller() {
    let (client, ns, _guard) = setup("b18ev-noname").await;
    let publisher = publisher(&client);
    let regarding = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("ConfigMap".into()),
        namespace: Some(ns.clone()),
        ..Default::default()
    };
    publisher
        .publish(&warning("throttled"), &regarding)
        .await
        .unwrap();
    publisher
        .publish(&warning("throttled"), &regarding)
        .await
        .unwrap();
    let published = events(&client, &ns).await;
    assert_eq!(published.len(), 1);
    assert!(
        published[0]
            .metadata
            .name
            .as_ref()
            .unwrap()
            .starts_with("kappa-operator.")
    );
    assert_eq!(count(&published[0]), 2);
    common::delete_namespace(&client, &ns).await;
}

// ---------------------------------------------------------------------------------------------------------
// Namespaces

/// A cluster-scoped object (a Namespace): its Event goes to `default`, valid, and repeats count.
#[tokio::test]
async fn a_cluster_scoped_objects_event_goes_to_default_and_counts() {
    let (client, ns, _guard) = setup("b18ev-cluster").await;
    let regarding = Api::<Namespace>::all(client.clone())
        .get(&ns)
        .await
        .unwrap()
        .object_ref(&());
    assert_eq!(regarding.namespace, None);
    let publisher = publisher(&client);
    for _ in 0..2 {
        publisher
            .publish(&warning("throttled"), &regarding)
            .await
            .unwrap();
    }
    let published = events_about(&client, "default", &ns).await;
    let default_api: Api<K8sEvent> = Api::namespaced(client.clone(), "default");
    for e in &published {
        let _ = default_api
            .delete(e.metadata.name.as_ref().unwrap(), &DeleteParams::default())
            .await;
    }
    assert_eq!(published.len(), 1, "{published:?}");
    assert_eq!(count(&published[0]), 2);
    assert_eq!(published[0].metadata.namespace.as_deref(), Some("default"));
    common::delete_namespace(&client, &ns).await;
}

/// A reference whose namespace is `""` (as a reference read from Go-written JSON names a cluster-scoped
/// object: Go has no absent string) is a cluster-scoped object: its Event goes to `default` too.
#[tokio::test]
async fn an_empty_namespace_in_the_reference_is_cluster_scoped() {
    let (client, ns, _guard) = setup("b18ev-emptyns").await;
    let mut regarding = Api::<Namespace>::all(client.clone())
        .get(&ns)
        .await
        .unwrap()
        .object_ref(&());
    regarding.namespace = Some(String::new());
    let publisher = publisher(&client);
    let result = publisher.publish(&warning("throttled"), &regarding).await;
    let published = events_about(&client, "default", &ns).await;
    let default_api: Api<K8sEvent> = Api::namespaced(client.clone(), "default");
    for e in &published {
        let _ = default_api
            .delete(e.metadata.name.as_ref().unwrap(), &DeleteParams::default())
            .await;
    }
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(published.len(), 1, "{published:?}");
    common::delete_namespace(&client, &ns).await;
}

/// Objects of the same name in two namespaces: one Event each, in its own namespace.
#[tokio::test]
async fn the_same_name_in_two_namespaces_is_two_events() {
    let (client, ns1, _guard) = setup("b18ev-two-ns").await;
    let ns2 = common::namespace(&client, "b18ev-two-ns").await;
    let _guard_ns2 = NsGuard(ns2.clone());
    let publisher = publisher(&client);
    let r1 = object(&client, &ns1, "players").await;
    let r2 = object(&client, &ns2, "players").await;
    for _ in 0..2 {
        publisher.publish(&warning("throttled"), &r1).await.unwrap();
    }
    publisher.publish(&warning("throttled"), &r2).await.unwrap();
    let e1 = events(&client, &ns1).await;
    let e2 = events(&client, &ns2).await;
    assert_eq!((e1.len(), e2.len()), (1, 1));
    assert_eq!((count(&e1[0]), count(&e2[0])), (2, 1));
    common::delete_namespace(&client, &ns1).await;
    common::delete_namespace(&client, &ns2).await;
}

/// A namespace that does not exist: an error (404), no panic; the next try errs the same way.
#[tokio::test]
async fn a_missing_namespace_is_an_error() {
    let client = common::kube_client().await;
    let publisher = publisher(&client);
    let regarding = reference(Some("b18ev-no-such-namespace-7f3a"), "players");
    for _ in 0..2 {
        let e = publisher
            .publish(&warning("throttled"), &regarding)
            .await
            .unwrap_err();
        assert_eq!(code(&e), Some(404), "{e:?}");
    }
}

/// A namespace being deleted (held Terminating by a finalizer): its Event is refused (403,
/// NamespaceTerminating), an error and no panic, before and after a series started there.
#[tokio::test]
async fn a_terminating_namespace_is_an_error() {
    let (client, ns, _guard) = setup("b18ev-terminating").await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let map: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "held", "finalizers": ["kappa.dev/b18-hold"]}
    }))
    .unwrap();
    let regarding = maps
        .create(&PostParams::default(), &map)
        .await
        .unwrap()
        .object_ref(&());
    let publisher = publisher(&client);
    publisher.publish(&warning("before"), &regarding).await.unwrap();
    common::delete_namespace(&client, &ns).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    common::eventually(Duration::from_secs(30), "namespace terminating", || {
        let namespaces = namespaces.clone();
        let ns = ns.clone();
        async move {
            let n = namespaces.get(&ns).await.ok()?;
            (n.status.and_then(|s| s.phase).as_deref() == Some("Terminating")).then_some(())
        }
    })
    .await;
    // A new Event: refused.
    let e = publisher
        .publish(&warning("during"), &regarding)
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(403), "{e:?}");
    // A repeat of the series started before: its Event is patched if it is still there (or re-created,
    // refused), never a panic.
    let repeat = publisher.publish(&warning("before"), &regarding).await;
    if let Err(e) = &repeat {
        assert!(matches!(code(e), Some(403) | Some(404)), "{e:?}");
    }
    maps.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------------------------------------
// Notes, reasons, actions, instances

/// A note over the API's 1 KB (`note` "must be at most 1kB in size"; 1024 bytes): the Event is published
/// with its note cut to fit, not refused and lost.
#[tokio::test]
async fn a_note_over_1kb_is_cut_not_refused() {
    let (client, ns, _guard) = setup("b18ev-long-note").await;
    let publisher = publisher(&client);
    let regarding = object(&client, &ns, "players").await;
    let note = "e".repeat(2000);
    let result = publisher.publish(&warning(&note), &regarding).await;
    assert!(result.is_ok(), "{result:?}");
    let published = events(&client, &ns).await;
    assert_eq!(published.len(), 1);
    assert!(published[0].note.as_ref().unwrap().len() <= 1024);
    common::delete_namespace(&client, &ns).await;
}

/// 500 characters of 3 bytes each: 500 characters, 1500 bytes. The API counts bytes.
#[tokio::test]
async fn a_unicode_note_of_500_characters_but_1500_bytes_is_cut_not_refused() {
    let (client, ns, _guard) = setup("b18ev-utf8-note").await;
    let publisher = publisher(&client);
    let regarding = object(&client, &ns, "players").await;
    let note = "€".repeat(500);
    let result = publisher.publish(&warning(&note), &regarding).await;
    assert!(result.is_ok(), "{result:?}");
    common::delete_namespace(&client, &ns).await;
}

/// Unicode notes within 1 KB (1024 bytes exactly, emoji, combining marks, RTL, NUL and newlines): published
/// as they are, and repeats counted.
#[tokio::test]
async fn unicode_notes_within_1kb_round_trip_and_count() {
    let (client, ns, _guard) = setup("b18ev-utf8-ok").await;
    let publisher = publisher(&client);
    let regarding = object(&client, &ns, "players").await;
    let exact = format!("{}{}", "€".repeat(341), "x"); // 1023 + 1 bytes
    assert_eq!(exact.len(), 1024);
    let notes = [
        exact,
        "🦀 table «orders» — throttled\nretrying\tin 5s \u{0}".to_string(),
        "e\u{301}\u{301} שלום مرحبا".to_string(),
    ];
    for note in &notes {
        for _ in 0..2 {
            publisher.publish(&warning(note), &regarding).await.unwrap();
        }
    }
    let published = events(&client, &ns).await;
    assert_eq!(published.len(), notes.len(), "{published:?}");
    for note in &notes {
        let e = published
            .iter()
            .find(|e| e.note.as_deref() == Some(note.as_str()))
            .unwrap_or_else(|| panic!("no Event with note {note:?}"));
        assert_eq!(count(e), 2);
    }
    common::delete_namespace(&client, &ns).await;
}

/// A reason or action over the API's 128 characters: published with them cut, not refused.
#[tokio::test]
async fn a_reason_or_action_over_128_characters_is_cut_not_refused() {
    let (client, ns, _guard) = setup("b18ev-long-reason").await;
    let publisher = publisher(&client);
    let regarding = object(&client, &ns, "players").await;
    let mut ev = warning("throttled");
    ev.reason = "R".repeat(200);
    let reason = publisher.publish(&ev, &regarding).await;
    let mut ev = warning("throttled");
    ev.action = "A".repeat(200);
    let action = publisher.publish(&ev, &regarding).await;
    assert!(
        reason.is_ok() && action.is_ok(),
        "reason: {reason:?}\naction: {action:?}"
    );
    common::delete_namespace(&client, &ns).await;
}

/// Reasons with characters other than letters (spaces, colons, unicode): the API does not check them;
/// published.
#[tokio::test]
async fn reasons_with_odd_characters_are_published() {
    let (client, ns, _guard) = setup("b18ev-odd-reason").await;
    let publisher = publisher(&client);
    let regarding = object(&client, &ns, "players").await;
    for reason in ["Aws Throttled", "aws:throttled/retry", "Überlastet"] {
        let mut ev = warning("throttled");
        ev.reason = reason.into();
        publisher.publish(&ev, &regarding).await.unwrap();
    }
    assert_eq!(events(&client, &ns).await.len(), 3);
    common::delete_namespace(&client, &ns).await;
}

/// The reporting instance is the replica's identity (settings: `--identity`, POD_NAME or the host name);
/// a pod's name may have up to 253 characters, `reportingInstance` at most 128. Every Event is refused.
#[tokio::test]
async fn an_identity_over_128_characters_still_publishes() {
    let (client, ns, _guard) = setup("b18ev-long-instance").await;
    let identity = format!("kappa-operator-{}", "p".repeat(150));
    let publisher = Events::new(client.clone(), "kappa-operator", &identity);
    let regarding = object(&client, &ns, "players").await;
    let result = publisher.publish(&warning("throttled"), &regarding).await;
    assert!(result.is_ok(), "{result:?}");
    common::delete_namespace(&client, &ns).await;
}

/// Normal and Warning of the same reason and note: two Events.
#[tokio::test]
async fn normal_and_warning_alike_are_two_events() {
    let (client, ns, _guard) = setup("b18ev-types").await;
    let publisher = publisher(&client);
    let regarding = object(&client, &ns, "players").await;
    let mut normal = warning("throttled");
    normal.type_ = EventType::Normal;
    publisher
        .publish(&warning("throttled"), &regarding)
        .await
        .unwrap();
    publisher.publish(&normal, &regarding).await.unwrap();
    publisher.publish(&normal, &regarding).await.unwrap();
    let published = events(&client, &ns).await;
    assert_eq!(published.len(), 2);
    let n = published
        .iter()
        .find(|e| e.type_.as_deref() == Some("Normal"))
        .unwrap();
    assert_eq!(count(n), 2);
    common::delete_namespace(&client, &ns).await;
}

// ---------------------------------------------------------------------------------------------------------
// Objects: re-created, related

/// The object deleted and created again (new uid): a new series, a new Event naming the new uid; the old
/// Event keeps its count.
#[tokio::test]
async fn a_recreated_object_is_a_new_series() {
    let (client, ns, _guard) = setup("b18ev-recreated").await;
    let publisher = publisher(&client);
    let first = object(&client, &ns, "players").await;
    publisher.publish(&warning("throttled"), &first).await.unwrap();
    publisher.publish(&warning("throttled"), &first).await.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    maps.delete("players", &DeleteParams::default()).await.unwrap();
    let second = object(&client, &ns, "players").await;
    assert_ne!(first.uid, second.uid);
    publisher.publish(&warning("throttled"), &second).await.unwrap();
    let published = events(&client, &ns).await;
    assert_eq!(published.len(), 2, "{published:?}");
    assert_eq!(count(&published[0]), 2);
    assert_eq!(count(&published[1]), 1);
    assert_eq!(published[1].regarding.as_ref().unwrap().uid, second.uid);
    common::delete_namespace(&client, &ns).await;
}

/// A related object (in another namespace): kept on the Event; a repeat with it counts; without it, a new
/// Event.
#[tokio::test]
async fn a_related_object_is_kept_and_its_repeats_count() {
    let (client, ns, _guard) = setup("b18ev-related").await;
    let other_ns = common::namespace(&client, "b18ev-related").await;
    let _guard_other_ns = NsGuard(other_ns.clone());
    let publisher = publisher(&client);
    let regarding = object(&client, &ns, "players").await;
    let log = object(&client, &other_ns, "game-events").await;
    let mut ev = warning("throttled");
    ev.secondary = Some(log.clone());
    publisher.publish(&ev, &regarding).await.unwrap();
    publisher.publish(&ev, &regarding).await.unwrap();
    publisher
        .publish(&warning("throttled"), &regarding)
        .await
        .unwrap();
    let published = events(&client, &ns).await;
    assert_eq!(published.len(), 2, "{published:?}");
    let with = published.iter().find(|e| e.related.is_some()).unwrap();
    assert_eq!(count(with), 2);
    assert_eq!(
        with.related.as_ref().unwrap().namespace.as_deref(),
        Some(other_ns.as_str())
    );
    assert!(events(&client, &other_ns).await.is_empty());
    common::delete_namespace(&client, &ns).await;
    common::delete_namespace(&client, &other_ns).await;
}

/// An Event deleted by hand twice: each next repeat creates it again, and the one after counts in it.
#[tokio::test]
async fn an_event_deleted_twice_is_created_again_and_counts_again() {
    let (client, ns, _guard) = setup("b18ev-deleted-twice").await;
    let publisher = publisher(&client);
    let regarding = object(&client, &ns, "players").await;
    let api: Api<K8sEvent> = Api::namespaced(client.clone(), &ns);
    publisher
        .publish(&warning("throttled"), &regarding)
        .await
        .unwrap();
    for _ in 0..2 {
        let name = events(&client, &ns).await[0].metadata.name.clone().unwrap();
        api.delete(&name, &DeleteParams::default()).await.unwrap();
        publisher
            .publish(&warning("throttled"), &regarding)
            .await
            .unwrap();
        let published = events(&client, &ns).await;
        assert_eq!(published.len(), 1);
        assert_ne!(published[0].metadata.name.as_deref(), Some(name.as_str()));
        assert_eq!(count(&published[0]), 1);
    }
    publisher
        .publish(&warning("throttled"), &regarding)
        .await
        .unwrap();
    let published = events(&client, &ns).await;
    assert_eq!(published.len(), 1);
    assert_eq!(count(&published[0]), 2);
    common::delete_namespace(&client, &ns).await;
}

/// Many distinct keys (400 objects, one Event each), then each repeated: 400 Events of count 2.
#[tokio::test]
async fn many_distinct_keys_each_get_one_series() {
    let (client, ns, _guard) = setup("b18ev-many").await;
    let publisher = publisher(&client);
    let refs: Vec<_> = (0..400)
        .map(|i| reference(Some(&ns), &format!("view-{i}")))
        .collect();
    let ev = warning("throttled");
    for _ in 0..2 {
        for chunk in refs.chunks(40) {
            let all = chunk.iter().map(|r| publisher.publish(&ev, r));
            for r in futures::future::join_all(all).await {
                r.unwrap();
            }
        }
    }
    let published = events(&client, &ns).await;
    assert_eq!(published.len(), 400);
    assert!(published.iter().all(|e| count(e) == 2));
    common::delete_namespace(&client, &ns).await;
}

// ---------------------------------------------------------------------------------------------------------
// Concurrency

/// Eight publishes of the same Event about the same object at once (one `Events`, as the operator shares
/// it among its reconciles): they are eight occurrences of one series, so one Event counting 8.
#[tokio::test]
async fn concurrent_first_publishes_of_one_event_are_one_series() {
    let (client, ns, _guard) = setup("b18ev-concurrent").await;
    let publisher = publisher(&client);
    let regarding = object(&client, &ns, "players").await;
    let ev = warning("throttled");
    let all = (0..8).map(|_| publisher.publish(&ev, &regarding));
    let results = futures::future::join_all(all).await;
    for r in &results {
        assert!(r.is_ok(), "{r:?}");
    }
    let published = events(&client, &ns).await;
    let counts: Vec<i32> = published.iter().map(count).collect();
    assert_eq!(counts.iter().sum::<i32>(), 8, "occurrences counted: {counts:?}");
    assert_eq!(published.len(), 1, "one series, Events with counts {counts:?}");
    common::delete_namespace(&client, &ns).await;
}

/// A client in front of the real one that holds the series patch carrying `"count":2` until the one
/// carrying `"count":3` has been answered (3 s at most): two concurrent repeats whose patches reach the API
/// server in the other order (two connections, no ordering between them), unless the publisher orders them.
fn reordering_client(real: Client) -> Client {
    let third_done = Arc::new(tokio::sync::Semaphore::new(0));
    let patches = Arc::new(AtomicUsize::new(0));
    let service = tower::service_fn(move |req: Request<Body>| {
        let real = real.clone();
        let third_done = third_done.clone();
        let patches = patches.clone();
        async move {
            if req.method() != Method::PATCH {
                return real.send(req).await;
            }
            patches.fetch_add(1, Ordering::SeqCst);
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes).to_string();
            let req = Request::from_parts(parts, Body::from(bytes.to_vec()));
            if text.contains("\"count\":2") {
                // A publisher that sends one series' patches one at a time never sends the third while
                // the second waits: after 3 s the second goes (the order is then the right one).
                let third = tokio::time::timeout(Duration::from_secs(3), third_done.acquire()).await;
                if let Ok(permit) = third {
                    permit.unwrap().forget();
                }
                return real.send(req).await;
            }
            let res = real.send(req).await;
            if text.contains("\"count\":3") {
                third_done.add_permits(1);
            }
            res
        }
    });
    Client::new(service, "default")
}

/// Two repeats at once: counts 2 and 3 are handed out, but the patch of 2 lands last (merge patch, no
/// precondition): the Event says 2 occurrences where there were 3, and its lastObservedTime goes back.
#[tokio::test]
async fn concurrent_repeats_landing_out_of_order_keep_the_highest_count() {
    let (client, ns, _guard) = setup("b18ev-reorder").await;
    let publisher = Events::new(reordering_client(client.clone()), "kappa-operator", "test");
    let regarding = object(&client, &ns, "players").await;
    let ev = warning("throttled");
    publisher.publish(&ev, &regarding).await.unwrap();
    let (a, b) = tokio::join!(
        publisher.publish(&ev, &regarding),
        publisher.publish(&ev, &regarding)
    );
    a.unwrap();
    b.unwrap();
    let published = events(&client, &ns).await;
    assert_eq!(published.len(), 1);
    assert_eq!(
        count(&published[0]),
        3,
        "3 occurrences: {:?}",
        published[0].series
    );
    common::delete_namespace(&client, &ns).await;
}

/// Ten sequential repeats: one Event counting 10, last observed no earlier than it was created.
#[tokio::test]
async fn sequential_repeats_count_right() {
    let (client, ns, _guard) = setup("b18ev-seq").await;
    let publisher = publisher(&client);
    let regarding = object(&client, &ns, "players").await;
    for _ in 0..10 {
        publisher
            .publish(&warning("throttled"), &regarding)
            .await
            .unwrap();
    }
    let published = events(&client, &ns).await;
    assert_eq!(published.len(), 1);
    assert_eq!(count(&published[0]), 10);
    let s = published[0].series.as_ref().unwrap();
    assert!(s.last_observed_time.0 >= published[0].event_time.as_ref().unwrap().0);
    common::delete_namespace(&client, &ns).await;
}
