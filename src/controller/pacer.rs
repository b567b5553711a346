//! A per-object floor on reconcile frequency, so that no object reconciles in a hot loop whatever
//! triggers it (its own status writes, a requeue computed too short, a watch event storm).
//!
//! Each run records what the object looked like when it started (generation, deletion, annotations,
//! finalizers and status: its *state*). A run that starts from the same state as the previous run of
//! the object changed nothing visible, so the object is waiting or failing on something outside it: the
//! floor doubles, from [`FIRST`] up to [`CAP`]. A changed state brings the floor back to [`FIRST`], and a
//! new generation (the user edited the spec) or a deletion is never held back. A trigger that comes
//! before the floor has passed is deferred to it (counted in `kappa_reconciles_deferred_total`).

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

#[derive(Clone, Copy, Debug)]
struct Pace {
    started: Instant,
    state: u64,
    generation: Option<i64>,
    /// Runs in a row that started from the same state.
    unchanged: u32,
}

/// The floors of every object, by key (`kind/namespace/name`).
#[derive(Default)]
pub struct Pacer {
    objects: Mutex<HashMap<String, Pace>>,
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
        self.admit_at(key, state, generation, deleting, Instant::now())
    }

    fn admit_at(
        &self,
        key: &str,
        state: u64,
        generation: Option<i64>,
        deleting: bool,
        now: Instant,
    ) -> Option<Duration> {
        let mut objects = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        let unchanged = match objects.get(key) {
            Some(last) if last.generation == generation && !deleting => {
                let unchanged = if last.state == state {
                    last.unchanged + 1
                } else {
                    0
                };
                let floor = floor(unchanged);
                let since = now.saturating_duration_since(last.started);
                if since < floor {
                    return Some(floor - since);
                }
                unchanged
            }
            _ => 0,
        };
        objects.insert(
            key.to_string(),
            Pace {
                started: now,
                state,
                generation,
                unchanged,
            },
        );
        None
    }

    /// Forgets an object (deleted).
    pub fn forget(&self, key: &str) {
        self.objects.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
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
            pacer.admit_at("mv/ns/a", 7, Some(1), false, t0),
            None,
            "the first run"
        );
        // A hot loop: triggers 40 ms apart from the same state are held back to the floor.
        let wait = pacer.admit_at("mv/ns/a", 7, Some(1), false, t0 + Duration::from_millis(40));
        assert_eq!(wait, Some(Duration::from_millis(1_960)));
        assert_eq!(
            pacer.admit_at("mv/ns/a", 7, Some(1), false, t0 + Duration::from_secs(2)),
            None
        );
        let wait = pacer.admit_at("mv/ns/a", 7, Some(1), false, t0 + Duration::from_secs(3));
        assert_eq!(
            wait,
            Some(Duration::from_secs(3)),
            "4 s after the second unchanged run"
        );
        // The state changed (a status write): back to the first floor.
        assert_eq!(
            pacer.admit_at("mv/ns/a", 8, Some(1), false, t0 + Duration::from_secs(6)),
            None
        );
        let wait = pacer.admit_at("mv/ns/a", 9, Some(1), false, t0 + Duration::from_millis(6_500));
        assert_eq!(wait, Some(Duration::from_millis(500)));
        // A spec edit or a deletion runs at once.
        assert_eq!(
            pacer.admit_at("mv/ns/a", 9, Some(2), false, t0 + Duration::from_millis(6_600)),
            None
        );
        assert_eq!(
            pacer.admit_at("mv/ns/a", 9, Some(2), true, t0 + Duration::from_millis(6_700)),
            None
        );
        assert_eq!(
            pacer.admit_at("mv/ns/b", 9, Some(2), false, t0 + Duration::from_millis(6_700)),
            None,
            "objects are paced apart"
        );
    }
}
