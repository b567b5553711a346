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
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};

/// How long after its last occurrence a series can still grow (kube-runtime's and client-go's 6 minutes).
const SERIES_TTL: SignedDuration = SignedDuration::from_mins(6);

/// The API's limits on an Event (Kubernetes `pkg/apis/events/validation`, `events.k8s.io/v1`), in bytes:
/// `note` at most 1 KB; `reason`, `action`, `reportingController` and `reportingInstance` at most 128.
const NOTE_MAX: usize = 1024;
const FIELD_MAX: usize = 128;
/// The longest object name (a DNS subdomain, RFC 1123).
const NAME_MAX: usize = 253;

/// Publishes Events as `controller` (`reportingController`) / `instance` (`reportingInstance`).
///
/// What the API would refuse is cut to fit before it is sent (a long note, reason, action or identity, a
/// regarding name that is no DNS subdomain), so an Event is never lost to its size. Occurrences of one
/// series are published one at a time (the first creates the Event, the next ones count in it): client-go
/// does the same with one goroutine for all Events; here publishes of different series run at once.
pub struct Events {
    client: Client,
    controller: String,
    instance: String,
    series: Mutex<SeriesCache>,
    /// The series being published now: one lock each, held over its create or patch.
    publishing: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>,
}

impl Events {
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        Events {
            client,
            controller: cut(controller, FIELD_MAX).to_string(),
            instance: cut(instance, FIELD_MAX).to_string(),
            series: Mutex::default(),
            publishing: Mutex::default(),
        }
    }

    /// Publishes `event` about `regarding`, in the regarding object's namespace (`default` for a
    /// cluster-scoped one): creates it, or counts a repeat in the Event already published.
    ///
    /// Errors: the API server's refusal of the create or patch (a patched Event deleted in the meantime is
    /// created again instead).
    pub async fn publish(&self, event: &Event, regarding: &ObjectReference) -> Result<(), kube::Error> {
        let (event, regarding) = (within_limits(event), cluster_scoped_if_empty(regarding));
        let key = series_key(&event, &regarding);
        let lock = self.series_lock(key);
        let result = {
            let _publishing = lock.lock().await;
            self.publish_one(&event, &regarding, key).await
        };
        self.release(key, lock);
        result
    }

    /// The lock of series `key`, shared by the publishes of it running now.
    fn series_lock(&self, key: u64) -> Arc<tokio::sync::Mutex<()>> {
        let mut publishing = self.publishing.lock().unwrap_or_else(PoisonError::into_inner);
        publishing.entry(key).or_default().clone()
    }

    /// Forgets series `key`'s lock when no other publish of it holds or awaits it.
    fn release(&self, key: u64, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut publishing = self.publishing.lock().unwrap_or_else(PoisonError::into_inner);
        // Clones are made only under this lock: the map's and ours are the last two.
        if Arc::strong_count(&lock) == 2 {
            publishing.remove(&key);
        }
    }

    async fn publish_one(
        &self,
        event: &Event,
        regarding: &ObjectReference,
        key: u64,
    ) -> Result<(), kube::Error> {
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
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
        // A name is taken only by an Event created in the same nanosecond (or a clock stepped back): the
        // next nanoseconds' names are tried.
        let mut attempt = 0;
        let created = loop {
            let at = now + SignedDuration::from_nanos(attempt);
            match api
                .create(&PostParams::default(), &self.event(event, regarding, at))
                .await
            {
                Err(kube::Error::Api(e)) if e.code == 409 && attempt < 3 => attempt += 1,
                created => break created?,
            }
        };
        if let Some(name) = created.metadata.name {
            self.cache().record(key, name, now);
        }
        Ok(())
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, SeriesCache> {
        self.series.lock().unwrap_or_else(PoisonError::into_inner)
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

/// An Event's name, like kube-runtime's and client-go's: `<regarding name>.<now in ns, hex>`, a DNS
/// subdomain of at most 253 characters whatever the regarding name (a MaterializedView's may have 253
/// itself; other kinds' names, a Role's `system:…`, need not be subdomains): lowercased, each character
/// outside `[a-z0-9.-]` a `-`, each dot-separated label starting and ending with a letter or digit, and
/// cut to leave room for the suffix.
fn event_name(owner: &str, now: Timestamp) -> String {
    let suffix = format!(".{:x}", now.as_nanosecond());
    let mapped: String = owner
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '.' | '-') => c,
            _ => '-',
        })
        .collect();
    let labels = |s: &str| -> String {
        let labels: Vec<&str> = s
            .split('.')
            .map(|l| l.trim_matches('-'))
            .filter(|l| !l.is_empty())
            .collect();
        labels.join(".")
    };
    // The cut may end a label on a `-`: the labels are tidied again after it.
    let prefix = labels(cut(&labels(&mapped), NAME_MAX - suffix.len()));
    match prefix.is_empty() {
        true => format!("event{suffix}"),
        false => format!("{prefix}{suffix}"),
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    &s[..s.floor_char_boundary(max)]
}

/// `event` with what the API limits cut to fit: the note to 1 KB, reason and action to 128 bytes.
fn within_limits(event: &Event) -> Event {
    Event {
        type_: event.type_,
        reason: cut(&event.reason, FIELD_MAX).to_string(),
        note: event.note.as_deref().map(|n| cut(n, NOTE_MAX).to_string()),
        action: cut(&event.action, FIELD_MAX).to_string(),
        secondary: event.secondary.clone(),
    }
}

/// `regarding` with an empty namespace (what Go's references write for a cluster-scoped object) as none.
fn cluster_scoped_if_empty(regarding: &ObjectReference) -> ObjectReference {
    let mut r = regarding.clone();
    r.namespace = r.namespace.filter(|n| !n.is_empty());
    r
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
    /// When the expired series were last dropped.
    swept: Option<Timestamp>,
}

#[derive(Debug)]
struct Series {
    name: String,
    count: i32,
    last: Timestamp,
}

impl SeriesCache {
    /// Drops the series last seen `SERIES_TTL` or more before `now`, at most every 30 seconds (giving
    /// their memory back once at most a quarter of the table is in use); then, when `key` is a live series,
    /// counts one more occurrence at `now` and returns its Event's name and new count.
    fn repeat(&mut self, key: u64, now: Timestamp) -> Option<(String, i32)> {
        let alive = |s: &Series| s.last + SERIES_TTL > now;
        if self.swept.is_none_or(|t| t + SERIES_TTL / 12 <= now) {
            self.live.retain(|_, s| alive(s));
            if self.live.capacity() > 64 && self.live.len() < self.live.capacity() / 4 {
                self.live.shrink_to_fit();
            }
            self.swept = Some(now);
        }
        if self.live.get(&key).is_some_and(|s| !alive(s)) {
            self.live.remove(&key);
        }
        let series = self.live.get_mut(&key)?;
        series.count = series.count.saturating_add(1);
        series.last = now;
        Some((series.name.clone(), series.count))
    }

    /// A new series: Event `name` created at `now` (count 1).
    fn record(&mut self, key: u64, name: String, now: Timestamp) {
        self.live.insert(key, Series { name, count: 1, last: now });
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

    /// A DNS subdomain (RFC 1123): at most 253 characters, dot-separated labels of `[a-z0-9-]` each
    /// starting and ending with a letter or digit.
    fn is_subdomain(name: &str) -> bool {
        name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    }

    #[test]
    fn an_event_name_is_a_dns_subdomain_whatever_the_regarding_name() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let cut_at = 253 - format!(".{:x}", now.as_nanosecond()).len();
        let names = [
            format!("{}-tail", "a".repeat(cut_at - 1)),
            format!("{}.tail", "a".repeat(cut_at - 1)),
            format!("{}..x", "a".repeat(cut_at - 2)),
            "€".repeat(90),
            "system:kappa-reader".into(),
            "Upper.Case_Name".into(),
            "-.-".into(),
            String::new(),
        ];
        for owner in names {
            let name = event_name(&owner, now);
            assert!(is_subdomain(&name), "{owner:?} gave {name:?}");
        }
        assert!(event_name("system:kappa-reader", now).starts_with("system-kappa-reader."));
    }

    #[test]
    fn what_the_api_limits_is_cut_on_a_character() {
        let mut event = warning(&"R".repeat(200), &"€".repeat(500));
        event.action = "A".repeat(129);
        let bounded = within_limits(&event);
        assert_eq!(bounded.reason.len(), 128);
        assert_eq!(bounded.action.len(), 128);
        let note = bounded.note.unwrap();
        assert!(note.len() <= 1024 && note.len() > 1020, "{}", note.len());
        assert!(note.chars().all(|c| c == '€'));
        assert_eq!(
            within_limits(&warning("R", "short")).note.as_deref(),
            Some("short")
        );
        let mut empty = view("v", "1");
        empty.namespace = Some(String::new());
        assert_eq!(cluster_scoped_if_empty(&empty).namespace, None);
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
        cache.record(8, "w.1".into(), expired);
        // Last seen 6 minutes before `expired`, recorded after the sweep at `expired`.
        cache.record(9, "x.1".into(), expired - SERIES_TTL);
        let soon = expired + SignedDuration::from_secs(1);
        assert_eq!(
            cache.repeat(8, soon),
            Some(("w.1".into(), 2)),
            "no sweep a second later"
        );
        assert_eq!(
            cache.repeat(9, soon),
            None,
            "expired, though the table was swept less than 30 s before"
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
