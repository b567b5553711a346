//! The in-cluster runtime: work that runs inside the operator's (leading) process rather than in
//! Lambda — a view's live stream reader ([`live`], reading the log's one shared reader,
//! [`shared_stream`]) and its export backfill
//! ([`crate::backfill::worker`]) — and the registry the reconciler starts, watches and stops them through.
//!
//! The reconciler stays level-based: each reconcile asks the registry for a view's task by a
//! *fingerprint* of everything the task depends on (table, key prefix, stream, projection). The same
//! fingerprint returns the running task's progress; another one stops the old task and starts a new one.
//! Tasks only report progress; the reconciler turns it into status. A task whose state changes (the live
//! path started, caught up or fell behind, failed or recovered, found a gap; a backfill finished) wakes
//! its view's reconcile through [`Wake`] at once, instead of leaving it to the next requeue.

pub mod backfill_job;
pub mod checkpoints;
pub mod live;
pub mod shared_stream;
pub mod stream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use crate::backfill::worker::Progress;
use live::LiveProgress;

/// A running backfill's progress and, once it stopped, its outcome.
#[derive(Clone, Debug, Default)]
pub struct BackfillRun {
    pub progress: Progress,
    pub outcome: Option<Result<(), BackfillFailure>>,
}

/// Why a backfill task stopped.
#[derive(Clone, Debug, PartialEq)]
pub struct BackfillFailure {
    pub message: String,
    /// Whether starting the task again can succeed without a change by the user.
    pub retryable: bool,
    /// What the task reads is gone (an export's manifest or data files deleted): only a new attempt can
    /// succeed.
    pub input_gone: bool,
}

struct Running<P> {
    fingerprint: String,
    progress: Arc<Mutex<P>>,
    handle: JoinHandle<()>,
}

impl<P> Drop for Running<P> {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

#[derive(Default)]
struct ViewTasks {
    live: Option<Running<LiveProgress>>,
    backfill: Option<Running<BackfillRun>>,
}

/// The tasks of every view this process runs.
pub struct Runtime {
    views: Mutex<HashMap<String, ViewTasks>>,
    /// The runtime keys of views whose task changed state (see [`Wake`]).
    wakes: tokio::sync::broadcast::Sender<String>,
}

/// How many wakes wait for a slow controller before the oldest are dropped (each view still has its
/// requeue): more than the views one operator runs at once.
const WAKE_BUFFER: usize = 4096;

impl Default for Runtime {
    fn default() -> Self {
        Runtime {
            views: Mutex::default(),
            wakes: tokio::sync::broadcast::channel(WAKE_BUFFER).0,
        }
    }
}

/// A task's handle to wake its view's reconcile: sends the task's runtime key (`namespace/name`, with
/// `@v<n>` for a version being rebuilt) to every [`Runtime::wakes`] receiver. Sending never blocks; with
/// no receiver it does nothing.
#[derive(Clone, Debug)]
pub struct Wake {
    key: String,
    tx: tokio::sync::broadcast::Sender<String>,
}

impl Wake {
    /// Wakes the view's reconcile.
    pub fn wake(&self) {
        let _ = self.tx.send(self.key.clone());
    }
}

/// The view a runtime key belongs to: `(namespace, name)` of `namespace/name` or `namespace/name@v<n>`.
pub fn view_of_key(key: &str) -> Option<(&str, &str)> {
    let view = key.rsplit_once("@v").map_or(key, |(view, _)| view);
    view.split_once('/')
}

fn snapshot<P: Clone>(progress: &Arc<Mutex<P>>) -> P {
    progress.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn ensure<P: Clone + Default>(
    slot: &mut Option<Running<P>>,
    fingerprint: &str,
    start: impl FnOnce(Arc<Mutex<P>>) -> JoinHandle<()>,
) -> P {
    if let Some(running) = slot
        && running.fingerprint == fingerprint
    {
        return snapshot(&running.progress);
    }
    let progress = Arc::new(Mutex::new(P::default()));
    let handle = start(progress.clone());
    // Replacing the slot drops (aborts) the task of the old fingerprint.
    *slot = Some(Running {
        fingerprint: fingerprint.to_string(),
        progress: progress.clone(),
        handle,
    });
    snapshot(&progress)
}

impl Runtime {
    /// The [`Wake`] of the task under runtime key `key`.
    pub fn waker(&self, key: &str) -> Wake {
        Wake { key: key.to_string(), tx: self.wakes.clone() }
    }

    /// Every wake from now on: the runtime keys of views whose task changed state.
    pub fn wakes(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.wakes.subscribe()
    }

    fn with<T>(&self, view: &str, f: impl FnOnce(&mut ViewTasks) -> T) -> T {
        let mut views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        f(views.entry(view.to_string()).or_default())
    }

    /// The view's live reader for `fingerprint`, started by `start` unless it runs already.
    pub fn live(
        &self,
        view: &str,
        fingerprint: &str,
        start: impl FnOnce(Arc<Mutex<LiveProgress>>) -> JoinHandle<()>,
    ) -> LiveProgress {
        self.with(view, |t| ensure(&mut t.live, fingerprint, start))
    }

    /// The gap the view's live reader reported and nobody acknowledged yet ([`Self::ack_gap`]).
    pub fn gap(&self, view: &str) -> Option<String> {
        self.with(view, |t| {
            let live = t.live.as_ref()?;
            live.progress
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .gap
                .clone()
        })
    }

    /// Forgets the reported gap `gap` (a backfill attempt for it is recorded), unless another replaced it.
    pub fn ack_gap(&self, view: &str, gap: &str) {
        self.with(view, |t| {
            if let Some(live) = t.live.as_ref() {
                let mut p = live.progress.lock().unwrap_or_else(|e| e.into_inner());
                if p.gap.as_deref() == Some(gap) {
                    p.gap = None;
                }
            }
        })
    }

    /// The view's backfill for `fingerprint`, started by `start` unless it runs (or ran) already.
    pub fn backfill(
        &self,
        view: &str,
        fingerprint: &str,
        start: impl FnOnce(Arc<Mutex<BackfillRun>>) -> JoinHandle<()>,
    ) -> BackfillRun {
        self.with(view, |t| ensure(&mut t.backfill, fingerprint, start))
    }

    /// The progress of the view's backfill for `fingerprint`, if it runs or ran in this process.
    pub fn backfill_progress(&self, view: &str, fingerprint: &str) -> Option<BackfillRun> {
        self.with(view, |t| {
            let running = t.backfill.as_ref().filter(|r| r.fingerprint == fingerprint)?;
            Some(snapshot(&running.progress))
        })
    }

    /// Forgets the view's backfill task (stopping it if it still runs), so the next call starts afresh.
    pub fn forget_backfill(&self, view: &str) {
        self.with(view, |t| t.backfill = None);
    }

    /// Stops every task of the view.
    pub fn stop(&self, view: &str) {
        let mut views = self.views.lock().unwrap_or_else(|e| e.into_inner());
        views.remove(view);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_runs_once_per_fingerprint_and_a_new_fingerprint_replaces_it() {
        let runtime = Runtime::default();
        let started = Arc::new(Mutex::new(0));
        let start = |s: Arc<Mutex<i32>>| {
            move |progress: Arc<Mutex<LiveProgress>>| {
                *s.lock().unwrap() += 1;
                progress.lock().unwrap().started = true;
                tokio::spawn(std::future::pending())
            }
        };
        assert!(runtime.live("ns/v", "a", start(started.clone())).started);
        runtime.live("ns/v", "a", start(started.clone()));
        assert_eq!(*started.lock().unwrap(), 1);
        runtime.live("ns/v", "b", start(started.clone()));
        assert_eq!(*started.lock().unwrap(), 2);
        runtime.stop("ns/v");
        runtime.live("ns/v", "b", start(started.clone()));
        assert_eq!(*started.lock().unwrap(), 3);
    }

    #[tokio::test]
    async fn a_wake_names_the_view_of_its_task() {
        let runtime = Runtime::default();
        let mut wakes = runtime.wakes();
        runtime.waker("shop/orders@v2").wake();
        runtime.waker("shop/orders").wake();
        assert_eq!(wakes.recv().await.unwrap(), "shop/orders@v2");
        assert_eq!(wakes.recv().await.unwrap(), "shop/orders");
        assert_eq!(view_of_key("shop/orders@v2"), Some(("shop", "orders")));
        assert_eq!(view_of_key("shop/orders"), Some(("shop", "orders")));
        assert_eq!(view_of_key("shop/v@vx@v3"), Some(("shop", "v@vx")));
        // Nobody listening: waking does nothing.
        drop(wakes);
        runtime.waker("shop/orders").wake();
    }

    #[tokio::test]
    async fn a_gap_is_reported_until_acknowledged() {
        let runtime = Runtime::default();
        runtime.live("ns/v", "a", |p| {
            p.lock().unwrap().gap = Some("lost".into());
            tokio::spawn(std::future::pending())
        });
        assert_eq!(runtime.gap("ns/v").as_deref(), Some("lost"));
        assert_eq!(runtime.gap("ns/v").as_deref(), Some("lost"), "until acknowledged");
        runtime.ack_gap("ns/v", "another");
        assert_eq!(
            runtime.gap("ns/v").as_deref(),
            Some("lost"),
            "only the gap itself is acknowledged"
        );
        runtime.ack_gap("ns/v", "lost");
        assert_eq!(runtime.gap("ns/v"), None);
    }
}
