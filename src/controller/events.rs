//! The operator's Kubernetes Events (`events.k8s.io/v1`), with repeats aggregated into series.
//!
//! An Event that repeats one published less than 6 minutes before (same type, action, reason, note,
//! regarding and related object) is not created again: the Event already published gets
//! `series.count` + 1 and `series.lastObservedTime` = now, as client-go's events broadcaster and
//! kube-runtime's `Recorder` do (Kubernetes API reference, `Event` v1 `events.k8s.io`: "series is data about
//! the Event series this event represents"). The note is part of what makes a repeat, so no message is
//! folded into an earlier one; the `resourceVersion` a reference may name is not (the object moved on is
//! the same object).
//!
//! Why not kube-runtime's `Recorder`: its cache keeps each Event it published in the last 6 minutes whole,
//! with its key (about 3 KB per Event once its hash table's slack is counted). With 1,000
//! MaterializedViews publishing two Events each that was 6.7 MiB of the operator's heap (heaptrack, #18
//! item 3, whose goal is 8 MiB per 1,000 views for everything). This cache keeps per series only a
//! 64-bit hash of the key, the Event's name, its count and when it was last seen (about 100 bytes), and
//! gives its memory back once the series have expired.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};

/// How long after its last occurrence a series can still grow (kube-runtime's and client-go's 6 minutes).
const SERIES_TTL: SignedDuration = SignedDuration::from_mins(6);

/// Publishes Events as `controller` (`reportingController`) / `instance` (`reportingInstance`).
pub struct Events {
    client: Client,
    controller: String,
    instance: String,
    series: Mutex<SeriesCache>,
}

impl Events {
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        Events {
            client,
            controller: controller.to_string(),
            instance: instance.to_string(),
            series: Mutex::default(),
        }
    }

    /// Publishes `event` about `regarding`, in the regarding object's namespace (`default` for a
    /// cluster-scoped one): creates it, or counts a repeat in the Event already published.
    ///
    /// Errors: the API server's refusal of the create or patch (a patched Event deleted in the meantime is
    /// created again instead).
    pub async fn publish(&self, event: &Event, regarding: &ObjectReference) -> Result<(), kube::Error> {
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        let key = series_key(event, regarding);
        let now = Timestamp::now();
        let repeat = self.cache().repeat(key, now);
        if let Some((name, count)) = repeat {
            let patch = serde_json::json!({
                "series": EventSeries { count, last_observed_time: MicroTime(now) },
            });
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(e)) if e.code == 404 => self.cache().forget(key),
                Err(e) => return Err(e),
            }
        }
        let created = api
            .create(&PostParams::default(), &self.event(event, regarding, now))
            .await?;
        if let Some(name) = created.metadata.name {
            self.cache().record(key, name, now);
        }
        Ok(())
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, SeriesCache> {
        self.series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The new Event, named by [`event_name`].
    fn event(&self, event: &Event, regarding: &ObjectReference, now: Timestamp) -> K8sEvent {
        let owner = regarding.name.as_deref().unwrap_or(&self.controller);
        K8sEvent {
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: event.secondary.clone(),
            note: event.note.clone(),
            metadata: ObjectMeta {
                namespace: regarding.namespace.clone(),
                name: Some(event_name(owner, now)),
                ..Default::default()
            },
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(
                match event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_string(),
            ),
            ..Default::default()
        }
    }
}

/// An Event's name, like kube-runtime's and client-go's: `<regarding name>.<now in ns, hex>`, the
/// regarding name cut so the whole stays within the 253 characters of a Kubernetes object name (a
/// MaterializedView's name may have 253 itself; names are ASCII, so the cut is on a character).
fn event_name(owner: &str, now: Timestamp) -> String {
    let suffix = format!(".{:x}", now.as_nanosecond());
    let keep = owner.len().min(253 - suffix.len());
    format!("{}{suffix}", &owner[..keep])
}

/// What makes two Events one series: type, action, reason, note and the regarding and related objects
/// (all of their reference but the `resourceVersion` and `fieldPath`), hashed.
fn series_key(event: &Event, regarding: &ObjectReference) -> u64 {
    fn object(r: &ObjectReference, h: &mut DefaultHasher) {
        (&r.api_version, &r.kind, &r.namespace, &r.name, &r.uid).hash(h);
    }
    let mut h = DefaultHasher::new();
    (event.type_, &event.action, &event.reason, &event.note).hash(&mut h);
    object(regarding, &mut h);
    if let Some(related) = &event.secondary {
        object(related, &mut h);
    }
    h.finish()
}

/// The live series: per key hash, the Event's name, its count and when it was last seen.
#[derive(Debug, Default)]
struct SeriesCache {
    live: HashMap<u64, Series>,
}

#[derive(Debug)]
struct Series {
    name: String,
    count: i32,
    last: Timestamp,
}

impl SeriesCache {
    /// Drops the series last seen `SERIES_TTL` or more before `now` (giving their memory back once at most
    /// a quarter of the table is in use); then, when `key` is a live series, counts one more occurrence
    /// at `now` and returns its Event's name and new count.
    fn repeat(&mut self, key: u64, now: Timestamp) -> Option<(String, i32)> {
        self.live.retain(|_, s| s.last + SERIES_TTL > now);
        if self.live.capacity() > 64 && self.live.len() < self.live.capacity() / 4 {
            self.live.shrink_to_fit();
        }
        let series = self.live.get_mut(&key)?;
        series.count = series.count.saturating_add(1);
        series.last = now;
        Some((series.name.clone(), series.count))
    }

    /// A new series: Event `name` created at `now` (count 1).
    fn record(&mut self, key: u64, name: String, now: Timestamp) {
        self.live.insert(
            key,
            Series {
                name,
                count: 1,
                last: now,
            },
        );
    }

    /// The series whose Event is gone.
    fn forget(&mut self, key: u64) {
        self.live.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warning(reason: &str, note: &str) -> Event {
        Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note.into()),
            action: "Reconcile".into(),
            secondary: None,
        }
    }

    fn view(name: &str, resource_version: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("kappa.dev/v1alpha1".into()),
            kind: Some("MaterializedView".into()),
            namespace: Some("ns".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            resource_version: Some(resource_version.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_repeat_is_the_same_series_whatever_the_objects_resource_version() {
        let a = series_key(&warning("R", "n"), &view("v", "1"));
        assert_eq!(a, series_key(&warning("R", "n"), &view("v", "2")));
        assert_ne!(
            a,
            series_key(&warning("R", "other note"), &view("v", "1")),
            "a new message is a new Event"
        );
        assert_ne!(a, series_key(&warning("Other", "n"), &view("v", "1")));
        assert_ne!(a, series_key(&warning("R", "n"), &view("w", "1")));
        let mut normal = warning("R", "n");
        normal.type_ = EventType::Normal;
        assert_ne!(a, series_key(&normal, &view("v", "1")));
        let mut related = warning("R", "n");
        related.secondary = Some(view("log", "1"));
        assert_ne!(a, series_key(&related, &view("v", "1")));
    }

    #[test]
    fn an_event_name_stays_within_253_characters() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        assert_eq!(
            event_name("players", now),
            format!("players.{:x}", now.as_nanosecond())
        );
        let long = "v".repeat(253);
        let name = event_name(&long, now);
        assert_eq!(name.len(), 253);
        assert!(name.ends_with(&format!(".{:x}", now.as_nanosecond())));
    }

    #[test]
    fn a_series_counts_its_repeats_until_it_expires() {
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let mut cache = SeriesCache::default();
        assert_eq!(cache.repeat(7, t0), None, "the first occurrence creates an Event");
        cache.record(7, "v.1".into(), t0);
        let later = t0 + SignedDuration::from_mins(5);
        assert_eq!(cache.repeat(7, later), Some(("v.1".into(), 2)));
        let after_second = later + SignedDuration::from_mins(5);
        assert_eq!(
            cache.repeat(7, after_second),
            Some(("v.1".into(), 3)),
            "6 minutes from the last one"
        );
        let expired = after_second + SERIES_TTL;
        assert_eq!(
            cache.repeat(7, expired),
            None,
            "6 minutes after the last occurrence: a new Event"
        );
        cache.record(7, "v.2".into(), expired);
        cache.forget(7);
        assert_eq!(cache.repeat(7, expired), None, "a deleted Event is created again");
    }

    #[test]
    fn expired_series_give_their_memory_back() {
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let mut cache = SeriesCache::default();
        for key in 0..10_000 {
            cache.record(key, format!("v{key}.1"), t0);
        }
        let grown = cache.live.capacity();
        assert!(cache.repeat(1, t0 + SERIES_TTL).is_none());
        assert!(cache.live.is_empty());
        assert!(
            cache.live.capacity() < grown / 4,
            "{} of {grown}",
            cache.live.capacity()
        );
    }
}
