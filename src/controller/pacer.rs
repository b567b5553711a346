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
        // A wake is taken by the run it lets through, not by a trigger deferred before it.
        let woken = self.woken.lock().unwrap_or_else(|e| e.into_inner()).contains(key);
        let wait = self.admit_at(key, (state, woken), generation, deleting, Instant::now());
        if wait.is_none() && woken {
            self.woken.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
        }
        wait
    }

    /// The object `key`'s runtime task changed state (`crate::runtime::Wake`): its state moved on though
    /// the object did not change, so its next run counts as progress. Only for an object that ran and was
    /// not forgotten since (a deleted view's last task may still wake it).
    pub fn wake(&self, key: &str) {
        let known = (self.objects.lock().unwrap_or_else(|e| e.into_inner())).contains_key(key);
        if known {
            (self.woken.lock().unwrap_or_else(|e| e.into_inner())).insert(key.to_string());
        }
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
            Pace { started: now, state, generation, unchanged, burst },
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

/// Break probes (branch break15) of the pacer's burst and wakes.
#[cfg(test)]
mod break15 {
    use super::*;

    /// Runs admitted among triggers every `step` ms for `total` ms, the state given by `state(i)` and
    /// woken when `woken(i)`; returns the admission times (ms).
    fn drive(
        pacer: &Pacer,
        key: &str,
        step: u64,
        total: u64,
        state: impl Fn(u64) -> u64,
        woken: impl Fn(u64) -> bool,
        deleting: bool,
    ) -> Vec<u64> {
        let t0 = Instant::now();
        let mut runs = Vec::new();
        let mut i = 0;
        while i * step < total {
            let at = t0 + Duration::from_millis(i * step);
            if pacer
                .admit_at(key, (state(i), woken(i)), Some(1), deleting, at)
                .is_none()
            {
                runs.push(i * step);
            }
            i += 1;
        }
        runs
    }

    fn after_burst_rate(runs: &[u64], from_ms: u64) -> usize {
        runs.iter().filter(|t| **t >= from_ms).count()
    }

    /// Input: a status that changes on every trigger (a flapping status), triggered every 10 ms for 20 s.
    /// Expected: 6 quick runs, then at most about one a second (≤ ~20 in the last 19 s).
    /// PASSES.
    #[test]
    fn a_flapping_status_every_10ms_is_held_to_one_a_second() {
        let pacer = Pacer::default();
        let runs = drive(&pacer, "mv/ns/a", 10, 20_000, |i| i, |_| false, false);
        let late = after_burst_rate(&runs, 1_000);
        assert!(late <= 20, "{late} runs in 19 s: {runs:?}");
    }

    /// Input: an unchanged object (label patches) woken on every trigger (a live path whose error flips
    /// set/cleared on every retry), every 10 ms for 60 s.
    /// Expected: no hot loop (about one a second at most after the burst).
    /// PASSES (one a second; note the floor never backs off to 15 s while wakes keep coming).
    #[test]
    fn wakes_on_every_trigger_are_held_to_one_a_second() {
        let pacer = Pacer::default();
        let runs = drive(&pacer, "mv/ns/a", 10, 60_000, |_| 7, |_| true, false);
        let late = after_burst_rate(&runs, 1_000);
        assert!(late <= 60, "{late} runs in 59 s");
    }

    /// Input: a burst of progress, then the object flaps exactly every 5 s (the renewal time) with 6 quick
    /// state changes each time (10 ms apart).
    /// Expected: at most BURST quick runs per renewal; with renewal after 5 s quiet, ≤ 7 runs per 5 s.
    /// PASSES.
    #[test]
    fn the_burst_renews_only_after_quiet() {
        let pacer = Pacer::default();
        let t0 = Instant::now();
        let mut runs = 0;
        let mut state = 0;
        for period in 0..10u64 {
            for j in 0..20u64 {
                state += 1;
                let at = t0 + Duration::from_millis(period * 5_000 + j * 10);
                if pacer
                    .admit_at("mv/ns/a", (state, false), Some(1), false, at)
                    .is_none()
                {
                    runs += 1;
                }
            }
        }
        assert!(runs <= 10 * (BURST as usize + 1), "{runs}");
    }

    /// Input: a view deleted (its pacer entry forgotten), then its runtime task stops and wakes it
    /// (the wake arrives after the delete), for 10,000 deleted views.
    /// Expected: no state is kept for views that are gone.
    /// FAILED before the fix (PASSES now; see the commit that fixed it): 10000 wakes kept: each late wake stays in `woken` forever (nothing removes it but a later
    /// run of that key). Also `Pacer::forget` is never called by the product (grep), so `objects` keeps
    /// every object ever reconciled.
    #[test]
    fn wakes_for_deleted_views_are_not_kept() {
        let pacer = Pacer::default();
        for i in 0..10_000 {
            let key = format!("MaterializedView/ns/v{i}");
            assert!(pacer.admit(&key, (1, Some(1), false)).is_none());
            pacer.forget(&key);
            pacer.wake(&key);
        }
        let kept = pacer.woken.lock().unwrap().len();
        assert_eq!(kept, 0, "{kept} wakes kept for deleted views");
    }

    /// Input: a view with a version being rebuilt: wakes for `ns/a` and `ns/a@v2` alternate every 10 ms
    /// (both tasks flapping), the object's state unchanged, for 10 s.
    /// Expected: both wake the one pacer key; at most about one run a second after the burst.
    /// PASSES.
    #[test]
    fn two_versions_waking_one_view_are_paced_together() {
        let pacer = Pacer::default();
        let t0 = Instant::now();
        let mut runs = 0;
        for i in 0..1_000u64 {
            let key = if i % 2 == 0 { "ns/a" } else { "ns/a@v2" };
            let (ns, name) = crate::runtime::view_of_key(key).unwrap();
            let k = format!("MaterializedView/{ns}/{name}");
            pacer.wake(&k);
            let woken = pacer.woken.lock().unwrap().remove(&k);
            let at = t0 + Duration::from_millis(i * 10);
            if pacer.admit_at(&k, (7, woken), Some(1), false, at).is_none() && i * 10 >= 1_000 {
                runs += 1;
            }
        }
        assert!(runs <= 10, "{runs} runs in 9 s");
    }

    /// Input: the burst is spent by a flapping status; then the runtime task wakes the view while its
    /// trigger is deferred; the deferred run comes at the floor; then another trigger at once.
    /// Expected: the wake counts for the run it asked for: the deferred run is admitted at the floor it
    /// was deferred to (1 s), as progress, so a trigger right after it from the same state waits
    /// floor(1) = 2 s (after a run counted as unchanged it would be floor(2) = 4 s).
    /// FAILED before the fix: `admit` took the wake out of `woken` before deciding, so the deferred
    /// trigger consumed it. PASSES: a wake is taken only by the run it lets through.
    #[tokio::test(start_paused = true)]
    async fn a_wake_taken_by_a_deferred_trigger_is_not_lost() {
        let pacer = Pacer::default();
        let key = "MaterializedView/ns/a";
        for s in 0..=BURST as u64 {
            assert!(pacer.admit(key, (s, Some(1), false)).is_none(), "burst run {s}");
        }
        let s = BURST as u64;
        pacer.wake(key);
        let wait = pacer
            .admit(key, (s, Some(1), false))
            .expect("burst spent: deferred");
        tokio::time::advance(wait).await;
        assert!(
            pacer.admit(key, (s, Some(1), false)).is_none(),
            "the deferred run"
        );
        let next = pacer.admit(key, (s, Some(1), false)).expect("paced");
        assert!(
            next <= floor(1),
            "the woken run was counted as unchanged: next floor {next:?}"
        );
    }
}
