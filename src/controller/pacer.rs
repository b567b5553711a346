//! A per-object floor on reconcile frequency, so that no object reconciles in a hot loop whatever
//! triggers it (its own status writes, a requeue computed too short, a watch event storm).
//!
//! Each run records what the object looked like when it started (generation, deletion, annotations,
//! finalizers and status: its *state*). A run that starts from the same state as the previous run of
//! the object changed nothing visible, so the object is waiting or failing on something outside it: the
//! floor doubles, from [`FIRST`] up to [`CAP`]. A changed state brings the floor back to [`FIRST`], and a
//! new generation (the user edited the spec) or a deletion is never held back. A trigger that comes
//! before the floor has passed is deferred to it (counted in `kappa_reconciles_deferred_total`).
//!
//! Progress is not held back: a run whose state changed since the previous run (the object moved on: a
//! finalizer added, a status written, a runtime task's wake) runs at once, up to [`BURST`] such runs in a
//! row; the burst is available again once the object was quiet for [`BURST_RENEWAL`]. A view goes from
//! apply to Ready in about five runs, each right after the last; an object whose status flaps forever
//! gets [`BURST`] quick runs, then one a second.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The floor after a run whose state differed from the previous one's.
pub const FIRST: Duration = Duration::from_secs(1);
/// The highest floor: an object waiting on something that does not change reconciles about four times a
/// minute (and notices the change it waits for, an export completing say, at most this late).
pub const CAP: Duration = Duration::from_secs(15);
/// Runs in a row admitted before [`FIRST`] because the object's state changed.
pub const BURST: u32 = 6;
/// How long an object must go without a run for its burst to be renewed.
pub const BURST_RENEWAL: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug)]
struct Pace {
    started: Instant,
    state: u64,
    generation: Option<i64>,
    /// Runs in a row that started from the same state.
    unchanged: u32,
    /// Runs admitted before the floor since the burst was last renewed.
    burst: u32,
}

/// The floors of every object, by key (`kind/namespace/name`).
#[derive(Default)]
pub struct Pacer {
    objects: Mutex<HashMap<String, Pace>>,
    /// Objects whose runtime task changed state since their last run ([`Pacer::wake`]).
    woken: Mutex<std::collections::HashSet<String>>,
}

/// What the object looks like, for the pacer: a digest of its generation, deletion, annotations,
/// finalizers and status.
pub fn state_of<K: serde::Serialize>(obj: &K) -> (u64, Option<i64>, bool) {
    let value = serde_json::to_value(obj).unwrap_or_default();
    let meta = &value["metadata"];
    let mut h = DefaultHasher::new();
    for part in [
        &meta["generation"],
        &meta["deletionTimestamp"],
        &meta["annotations"],
        &meta["finalizers"],
        &value["status"],
    ] {
        part.to_string().hash(&mut h);
    }
    (
        h.finish(),
        meta["generation"].as_i64(),
        !meta["deletionTimestamp"].is_null(),
    )
}

impl Pacer {
    /// Whether the object `key`, now in `state` (see [`state_of`]), may run now: `None` to run (the run
    /// is recorded), or `Some(wait)` to defer it until its floor.
    pub fn admit(
        &self,
        key: &str,
        (state, generation, deleting): (u64, Option<i64>, bool),
    ) -> Option<Duration> {
        let woken = self.woken.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
        self.admit_at(key, (state, woken), generation, deleting, Instant::now())
    }

    /// The object `key`'s runtime task changed state (`crate::runtime::Wake`): its state moved on though
    /// the object did not change, so its next run counts as progress.
    pub fn wake(&self, key: &str) {
        (self.woken.lock().unwrap_or_else(|e| e.into_inner())).insert(key.to_string());
    }

    fn admit_at(
        &self,
        key: &str,
        (state, woken): (u64, bool),
        generation: Option<i64>,
        deleting: bool,
        now: Instant,
    ) -> Option<Duration> {
        let mut objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        let (unchanged, burst) = match objects.get(key) {
            Some(last) if last.generation == generation && !deleting => {
                let since = now.saturating_duration_since(last.started);
                let burst = if since >= BURST_RENEWAL { 0 } else { last.burst };
                let unchanged = if last.state == state && !woken {
                    last.unchanged + 1
                } else {
                    0
                };
                let floor = floor(unchanged);
                match (since < floor, unchanged == 0 && burst < BURST) {
                    (false, _) => (unchanged, burst),
                    // The object moved on: progress runs at once while the burst lasts.
                    (true, true) => (unchanged, burst + 1),
                    (true, false) => return Some(floor - since),
                }
            }
            _ => (0, 0),
        };
        objects.insert(
            key.to_string(),
            Pace {
                started: now,
                state,
                generation,
                unchanged,
                burst,
            },
        );
        None
    }

    /// Forgets an object (deleted).
    pub fn forget(&self, key: &str) {
        self.objects.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
        self.woken.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

/// The floor after `unchanged` runs in a row from the same state: [`FIRST`], doubling, at most [`CAP`].
pub fn floor(unchanged: u32) -> Duration {
    FIRST
        .saturating_mul(2u32.saturating_pow(unchanged.min(16)))
        .min(CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_doubles_while_nothing_changes_and_resets_when_something_does() {
        let floors: Vec<u64> = (0..8).map(|n| floor(n).as_secs()).collect();
        assert_eq!(floors, [1, 2, 4, 8, 15, 15, 15, 15]);
        let pacer = Pacer::default();
        let t0 = Instant::now();
        assert_eq!(
            pacer.admit_at("mv/ns/a", (7, false), Some(1), false, t0),
            None,
            "the first run"
        );
        // A hot loop: triggers 40 ms apart from the same state are held back to the floor.
        let wait = pacer.admit_at(
            "mv/ns/a",
            (7, false),
            Some(1),
            false,
            t0 + Duration::from_millis(40),
        );
        assert_eq!(wait, Some(Duration::from_millis(1_960)));
        assert_eq!(
            pacer.admit_at("mv/ns/a", (7, false), Some(1), false, t0 + Duration::from_secs(2)),
            None
        );
        let wait = pacer.admit_at("mv/ns/a", (7, false), Some(1), false, t0 + Duration::from_secs(3));
        assert_eq!(
            wait,
            Some(Duration::from_secs(3)),
            "4 s after the second unchanged run"
        );
        // The state changed (a status write): back to the first floor.
        assert_eq!(
            pacer.admit_at("mv/ns/a", (8, false), Some(1), false, t0 + Duration::from_secs(6)),
            None
        );
        let wait = pacer.admit_at(
            "mv/ns/a",
            (8, false),
            Some(1),
            false,
            t0 + Duration::from_millis(6_500),
        );
        assert_eq!(wait, Some(Duration::from_millis(1_500)), "unchanged again: 2 s");
        // A spec edit or a deletion runs at once.
        assert_eq!(
            pacer.admit_at(
                "mv/ns/a",
                (9, false),
                Some(2),
                false,
                t0 + Duration::from_millis(6_600)
            ),
            None
        );
        assert_eq!(
            pacer.admit_at(
                "mv/ns/a",
                (9, false),
                Some(2),
                true,
                t0 + Duration::from_millis(6_700)
            ),
            None
        );
        assert_eq!(
            pacer.admit_at(
                "mv/ns/b",
                (9, false),
                Some(2),
                false,
                t0 + Duration::from_millis(6_700)
            ),
            None,
            "objects are paced apart"
        );
    }

    #[test]
    fn progress_runs_at_once_for_a_burst_then_a_flapping_object_is_paced() {
        let pacer = Pacer::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(pacer.admit_at("mv/ns/a", (0, false), Some(1), false, at(0)), None);
        // Each run 10 ms after the last, from a new state (a finalizer, a status, a wake): at once...
        for i in 1..=BURST {
            assert_eq!(
                pacer.admit_at(
                    "mv/ns/a",
                    (u64::from(i), false),
                    Some(1),
                    false,
                    at(u64::from(i) * 10)
                ),
                None,
                "run {i} of the burst"
            );
        }
        // ...until the burst is spent: a status that keeps flapping is held to the first floor.
        let next = u64::from(BURST) * 10 + 10;
        assert_eq!(
            pacer.admit_at("mv/ns/a", (100, false), Some(1), false, at(next)),
            Some(FIRST - Duration::from_millis(10))
        );
        assert_eq!(
            pacer.admit_at("mv/ns/a", (100, false), Some(1), false, at(next + 990)),
            None
        );
        assert_eq!(
            pacer.admit_at("mv/ns/a", (101, false), Some(1), false, at(next + 1_000)),
            Some(Duration::from_millis(990)),
            "still paced: the object was never quiet"
        );
        // Quiet for the renewal time: the burst is back.
        let later = next + 990 + BURST_RENEWAL.as_millis() as u64;
        assert_eq!(
            pacer.admit_at("mv/ns/a", (102, false), Some(1), false, at(later)),
            None
        );
        assert_eq!(
            pacer.admit_at("mv/ns/a", (103, false), Some(1), false, at(later + 5)),
            None
        );
        // A woken object moved on (its runtime task changed state) though it looks the same.
        assert_eq!(
            pacer.admit_at("mv/ns/a", (103, true), Some(1), false, at(later + 8)),
            None,
            "woken"
        );
        // A run from the same state as the last is never part of a burst.
        assert_eq!(
            pacer.admit_at("mv/ns/a", (103, false), Some(1), false, at(later + 10)),
            Some(Duration::from_millis(1_998))
        );
        // A wake is taken by the object's next run only.
        assert_eq!(pacer.admit("mv/ns/c", (1, Some(1), false)), None);
        assert!(pacer.admit("mv/ns/c", (1, Some(1), false)).is_some());
        pacer.wake("mv/ns/c");
        assert_eq!(pacer.admit("mv/ns/c", (1, Some(1), false)), None, "woken");
        assert!(pacer.admit("mv/ns/c", (1, Some(1), false)).is_some());
    }
}
