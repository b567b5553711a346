//! One stream reader per log, shared by all the in-cluster views (and versions) that read it.
//!
//! DynamoDB Streams allows about 5 `GetRecords` calls per second per shard and advises at most two
//! readers per shard ("DynamoDB Streams low-level API: Java example" and "Using the DynamoDB Streams
//! Kinesis adapter", DynamoDB Developer Guide: "no more than two processes at most should be reading from
//! the same streams shard at the same time"). A reader per view would break that advice from the third
//! view on, so [`SharedStreams`] runs one **leader** reader per stream and keeps its recent batches in a
//! bounded **window**; each view reads the window through its own [`Subscription`], with its own
//! checkpoint:
//!
//! - A view whose checkpoint lies inside the window **joins** it: it gets every window batch after its
//!   position (records it already applied are left out) with the checkpoint to store after it.
//! - A view behind the window (new with an old checkpoint, or slow so that the window dropped what it had
//!   not read) **catches up** with a reader of its own from its own checkpoint, holding the log's one
//!   catch-up permit: at most one catch-up reader per log runs at a time, so with the leader at most two
//!   readers read the stream, however many views there are. After each of its batches it tries to join.
//! - A view ahead of the window (its own reader read past what the leader read) waits for the leader to
//!   pass it, a bounded time ([`AHEAD_WAIT`], [`AHEAD_WAITS`]), and catches up otherwise.
//! - The first subscriber of a stream **seeds** the leader at its own checkpoint. A leader that fails in a
//!   way polling again cannot fix (a gap, an unreadable record, a non-retryable AWS error) is dropped with
//!   its window; its views then catch up one by one with their own readers, which report the failure to
//!   their views exactly as before, and the first of them to catch up seeds a new leader.
//!
//! A [`Subscription`] has the interface and guarantees of a [`StreamReader`] (see [`super::stream`]):
//! every record after its checkpoint at least once, in order within a shard, parents before children;
//! after a failed poll or a [`Subscription::rewind`] it resumes from the given checkpoint. It paces itself:
//! a joined subscription waits for the leader's next batch, a catching-up one sleeps [`SharedStreams`]'s
//! poll interval after a caught-up batch, so its caller polls in a loop.

use std::cmp::Ordering;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::stream::{Batch, Checkpoint, MAX_RECORDS_PER_CALL, ShardPosition, StreamError, StreamReader};
use crate::aws::AwsError;
use crate::projection::item_size;

/// The most records the window keeps: at 1,000 records per `GetRecords` call, several rounds.
pub const WINDOW_RECORDS: usize = 20_000;
/// The most bytes (DynamoDB item sizes of the records' images) the window keeps.
pub const WINDOW_BYTES: usize = 32 * 1024 * 1024;
/// The most batches the window keeps (an idle leader adds an empty one about every second).
pub const WINDOW_BATCHES: usize = 600;
/// How long a view ahead of the leader waits for one of its batches before checking again.
pub const AHEAD_WAIT: Duration = Duration::from_secs(10);
/// How many times a view ahead of the leader checks again before it catches up with its own reader.
pub const AHEAD_WAITS: u32 = 3;

/// One batch the leader read, with the leader's checkpoint after it.
#[derive(Debug)]
struct WindowBatch {
    batch: Batch,
    bytes: usize,
}

/// The leader's recent batches: `batches[i]` has the absolute index `first + i`; `start` is the leader's
/// position before `batches[0]`, `end` after the last one.
#[derive(Debug)]
struct Window {
    limits: Limits,
    start: Checkpoint,
    end: Checkpoint,
    first: u64,
    batches: VecDeque<Arc<WindowBatch>>,
    records: usize,
    bytes: usize,
}

/// How much a window keeps (at least its newest batch).
#[derive(Clone, Copy, Debug)]
struct Limits {
    records: usize,
    bytes: usize,
    batches: usize,
}

const LIMITS: Limits = Limits {
    records: WINDOW_RECORDS,
    bytes: WINDOW_BYTES,
    batches: WINDOW_BATCHES,
};

/// What a view skips of a shard's window records.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Skip {
    /// Up to and including the record with this sequence number (the view applied it).
    Through(String),
    /// Every record: the view finished the shard.
    All,
}

/// Where a view stands against the window (see the module docs).
#[derive(Debug, PartialEq, Eq)]
enum Join {
    /// Reads the window from the batch with absolute index `next`, skipping per shard what it applied.
    At {
        next: u64,
        skip: HashMap<String, Skip>,
    },
    Behind,
    Ahead,
}

/// Compares two sequence numbers of one shard: decimal numerals (the form DynamoDB Streams uses, "up to
/// 40 digits", StreamRecord, DynamoDB Streams API Reference); `None` when one is not a numeral.
fn sequence_cmp(a: &str, b: &str) -> Option<Ordering> {
    if a == b {
        return Some(Ordering::Equal);
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if !digits(a) || !digits(b) {
        return None;
    }
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    Some(a.len().cmp(&b.len()).then_with(|| a.cmp(b)))
}

/// Whether `a` and `b` name the same record of a shard (`00012` and `12` do).
fn same_sequence(a: &str, b: &str) -> bool {
    sequence_cmp(a, b) == Some(Ordering::Equal)
}

impl Window {
    fn new(start: Checkpoint, first: u64, limits: Limits) -> Self {
        Window {
            limits,
            end: start.clone(),
            start,
            first,
            batches: VecDeque::new(),
            records: 0,
            bytes: 0,
        }
    }

    fn next(&self) -> u64 {
        self.first + self.batches.len() as u64
    }

    fn push(&mut self, batch: Batch) {
        let bytes = batch
            .records
            .iter()
            .map(|r| item_size(&r.keys) + r.new_image.as_ref().map_or(0, item_size))
            .sum();
        self.records += batch.records.len();
        self.bytes += bytes;
        self.end = batch.checkpoint.clone();
        self.batches.push_back(Arc::new(WindowBatch { batch, bytes }));
        // Keep the newest batch whatever its size: a view at the leader's position still joins.
        while self.batches.len() > 1
            && (self.records > self.limits.records
                || self.bytes > self.limits.bytes
                || self.batches.len() > self.limits.batches)
        {
            let Some(oldest) = self.batches.pop_front() else {
                break;
            };
            self.records -= oldest.batch.records.len();
            self.bytes -= oldest.bytes;
            self.start = oldest.batch.checkpoint.clone();
            self.first += 1;
        }
    }

    fn batch(&self, index: u64) -> Option<Arc<WindowBatch>> {
        let offset = usize::try_from(index.checked_sub(self.first)?).ok()?;
        self.batches.get(offset).cloned()
    }

    /// The last sequence number the leader read of `shard`, in the window or before it.
    fn last_read(&self, shard: &str) -> Option<&str> {
        let in_window = self
            .batches
            .iter()
            .rev()
            .flat_map(|b| b.batch.records.iter().rev())
            .find(|r| r.shard_id == shard)
            .map(|r| r.sequence_number.as_str());
        in_window.or(match self.start.shards.get(shard) {
            Some(ShardPosition::Reading { after }) => after.as_deref(),
            _ => None,
        })
    }

    fn holds(&self, shard: &str, sequence_number: &str) -> bool {
        self.batches
            .iter()
            .flat_map(|b| b.batch.records.iter())
            .any(|r| r.shard_id == shard && same_sequence(&r.sequence_number, sequence_number))
    }

    /// Where a view at `position` stands: every record it has still to read of every shard must be in the
    /// window after it, or be read by the leader later.
    fn join(&self, position: &Checkpoint) -> Join {
        let mut shards: Vec<&String> = position
            .shards
            .keys()
            .chain(self.start.shards.keys())
            .chain(self.end.shards.keys())
            .collect();
        shards.sort();
        shards.dedup();
        let mut skip = HashMap::new();
        let mut ahead = false;
        for shard in shards {
            let window_start = self.start.shards.get(shard);
            match position.shards.get(shard) {
                Some(ShardPosition::Finished) => {
                    if let Some(ShardPosition::Reading { .. }) = self.end.shards.get(shard) {
                        ahead = true;
                    }
                    skip.insert(shard.clone(), Skip::All);
                }
                // Read from the shard's oldest retained record: so did the leader, unless the window
                // starts past some of it.
                None | Some(ShardPosition::Reading { after: None }) => match window_start {
                    None | Some(ShardPosition::Reading { after: None }) => {}
                    // Finished before the window and since forgotten by the leader's reader (the stream
                    // no longer lists it): nothing of it is owed to anyone.
                    Some(ShardPosition::Finished) if !self.end.shards.contains_key(shard) => {}
                    Some(_) => return Join::Behind,
                },
                Some(ShardPosition::Reading { after: Some(x) }) => {
                    if let Some(ShardPosition::Reading { after: Some(w) }) = window_start
                        && same_sequence(w, x)
                    {
                        continue;
                    }
                    if self.holds(shard, x) {
                        skip.insert(shard.clone(), Skip::Through(x.clone()));
                        continue;
                    }
                    match self.last_read(shard) {
                        Some(last) if sequence_cmp(x, last) == Some(Ordering::Greater) => ahead = true,
                        None if matches!(
                            self.end.shards.get(shard),
                            None | Some(ShardPosition::Reading { .. })
                        ) =>
                        {
                            ahead = true
                        }
                        _ => return Join::Behind,
                    }
                }
            }
        }
        if ahead {
            return Join::Ahead;
        }
        // Start at the first batch with a record for this view (or the newest batch), not at the oldest.
        let mut next = self.first;
        for b in self.batches.iter().take(self.batches.len().saturating_sub(1)) {
            let mut after = skip.clone();
            if !deliver_nothing(&b.batch, &mut after) {
                break;
            }
            skip = after;
            next += 1;
        }
        Join::At { next, skip }
    }
}

/// Whether [`deliver`] would give the view none of `batch`'s records; updates `skip` as it would.
fn deliver_nothing(batch: &Batch, skip: &mut HashMap<String, Skip>) -> bool {
    for record in &batch.records {
        match skip.get(&record.shard_id) {
            None => return false,
            Some(Skip::All) => {}
            Some(Skip::Through(x)) => {
                if same_sequence(x, &record.sequence_number) {
                    skip.remove(&record.shard_id);
                }
            }
        }
    }
    true
}

/// `batch` as a view sees it: without the records `skip` says it applied (a `Through` is cleared once its
/// record passed), with the leader's checkpoint after it, except where the view is still ahead.
fn deliver(batch: &Batch, skip: &mut HashMap<String, Skip>) -> Batch {
    let mut records = Vec::with_capacity(batch.records.len());
    for record in &batch.records {
        match skip.get(&record.shard_id) {
            None => records.push(record.clone()),
            Some(Skip::All) => {}
            Some(Skip::Through(x)) => {
                if same_sequence(x, &record.sequence_number) {
                    skip.remove(&record.shard_id);
                }
            }
        }
    }
    let mut checkpoint = batch.checkpoint.clone();
    for (shard, s) in skip.iter() {
        let position = match s {
            Skip::Through(x) => ShardPosition::Reading { after: Some(x.clone()) },
            Skip::All => ShardPosition::Finished,
        };
        checkpoint.shards.insert(shard.clone(), position);
    }
    Batch {
        records,
        checkpoint,
        caught_up: batch.caught_up,
        at_end_since: batch.at_end_since,
    }
}

/// Whether a stream without a leader may be seeded by any subscriber, or only by one whose own reader
/// caught up (after a leader failed: seeding at the failing position would fail again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seeding {
    Open,
    CaughtUpOnly,
}

#[derive(Debug)]
struct HubState {
    /// Changes whenever the leader is dropped or seeded: a joined view of another generation rejoins.
    generation: u64,
    /// `None`: no leader runs.
    window: Option<Window>,
    seeding: Seeding,
    /// The leader's last poll failed with this transient error (cleared by its next success).
    error: Option<AwsError>,
    /// Absolute batch indices keep growing across leaders.
    next_index: u64,
    joined: usize,
    /// Subscriptions waiting for the catch-up permit.
    waiting: usize,
    /// Subscriptions reading on their own, each holding the permit (at most one).
    reading: usize,
}

/// One stream's leader, window and catch-up permit.
struct Hub {
    client: aws_sdk_dynamodbstreams::Client,
    stream_arn: String,
    poll_interval: Duration,
    state: Mutex<HubState>,
    changed: watch::Sender<u64>,
    catch_up: Arc<Semaphore>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// What [`SharedStreams::reader`] reports of a stream's sharing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// A leader reads the stream.
    pub leading: bool,
    /// Shards the leader knows (reading or finished).
    pub shards: usize,
    /// Subscriptions reading the leader's window.
    pub joined: usize,
    /// Subscriptions waiting for the catch-up permit.
    pub waiting: usize,
    /// Catch-up readers running (at most one).
    pub reading: usize,
    /// Records in the window.
    pub window_records: usize,
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Sets `kappa_stream_lag_seconds` from a batch's [`Batch::at_end_since`] (unchanged without one).
    fn publish_lag(&self, at_end_since: Option<std::time::SystemTime>) {
        let (Some(metrics), Some(since)) = (&self.metrics, at_end_since) else {
            return;
        };
        let lag = std::time::SystemTime::now()
            .duration_since(since)
            .unwrap_or_default();
        metrics
            .stream_lag
            .get_or_create(&crate::metrics::StreamLabels { stream: self.stream_arn.clone() })
            .set(lag.as_secs_f64());
    }

    /// Sets the `kappa_stream_readers` and `kappa_stream_views` gauges from `state`.
    fn publish(&self, state: &HubState) {
        let Some(metrics) = &self.metrics else { return };
        let stream = self.stream_arn.clone();
        let readers = i64::from(state.window.is_some()) + state.reading as i64;
        metrics
            .stream_readers
            .get_or_create(&crate::metrics::StreamLabels { stream: stream.clone() })
            .set(readers);
        for (label, n) in [
            ("joined", state.joined),
            ("catching_up", state.waiting + state.reading),
        ] {
            metrics
                .stream_views
                .get_or_create(&crate::metrics::StreamViewLabels { stream: stream.clone(), state: label })
                .set(n as i64);
        }
    }

    /// Starts a leader at `position` in `state` (which must have none) and returns the new generation and
    /// the index of its first batch.
    fn seed(self: &Arc<Self>, state: &mut HubState, position: &Checkpoint) -> (u64, u64) {
        state.generation += 1;
        state.window = Some(Window::new(position.clone(), state.next_index, LIMITS));
        state.error = None;
        let reader = StreamReader::new(self.client.clone(), self.stream_arn.clone(), position.clone());
        tokio::spawn(lead(Arc::downgrade(self), reader, state.generation));
        self.publish(state);
        (state.generation, state.next_index)
    }
}

impl Drop for Hub {
    /// Nobody reads the stream any more: its gauges go.
    fn drop(&mut self) {
        let Some(metrics) = &self.metrics else { return };
        let stream = self.stream_arn.clone();
        metrics
            .stream_readers
            .remove(&crate::metrics::StreamLabels { stream: stream.clone() });
        metrics
            .stream_lag
            .remove(&crate::metrics::StreamLabels { stream: stream.clone() });
        for state in ["joined", "catching_up"] {
            metrics
                .stream_views
                .remove(&crate::metrics::StreamViewLabels { stream: stream.clone(), state });
        }
    }
}

/// The leader: polls the stream while anyone subscribes, and adds each batch to the window.
async fn lead(hub: Weak<Hub>, mut reader: StreamReader, generation: u64) {
    let mut failures = 0u32;
    loop {
        let result = reader.poll(MAX_RECORDS_PER_CALL).await;
        let Some(h) = hub.upgrade() else { return };
        let pause = {
            let mut state = h.lock();
            if state.generation != generation {
                return;
            }
            match result {
                Ok(batch) => {
                    failures = 0;
                    state.error = None;
                    let caught_up = batch.caught_up;
                    h.publish_lag(batch.at_end_since);
                    if let Some(window) = state.window.as_mut() {
                        window.push(batch);
                        state.next_index = window.next();
                    }
                    caught_up.then_some(h.poll_interval)
                }
                Err(StreamError::Aws(e)) if e.retryable => {
                    tracing::warn!(stream = %h.stream_arn, error = %e, "shared stream reader: retrying");
                    state.error = Some(e);
                    failures += 1;
                    Some(Duration::from_secs(1u64 << failures.min(6)).min(Duration::from_secs(60)))
                }
                Err(e) => {
                    tracing::warn!(stream = %h.stream_arn, error = %e, "shared stream reader: stopped; its views catch up with their own readers");
                    state.generation += 1;
                    state.window = None;
                    state.error = None;
                    state.seeding = Seeding::CaughtUpOnly;
                    h.publish(&state);
                    drop(state);
                    h.notify();
                    return;
                }
            }
        };
        h.notify();
        drop(h);
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
    }
}

/// The shared readers of this process, one per stream ARN (see the module docs).
pub struct SharedStreams {
    client: aws_sdk_dynamodbstreams::Client,
    poll_interval: Duration,
    hubs: Mutex<HashMap<String, Weak<Hub>>>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl SharedStreams {
    /// Readers with `client`; a leader or catch-up reader at the stream's tip polls every `poll_interval`.
    pub fn new(client: aws_sdk_dynamodbstreams::Client, poll_interval: Duration) -> Self {
        SharedStreams { client, poll_interval, hubs: Mutex::default(), metrics: None }
    }

    /// The same, publishing each stream's readers to `metrics` (`kappa_stream_readers`,
    /// `kappa_stream_views`).
    pub fn with_metrics(self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        SharedStreams { metrics: Some(metrics), ..self }
    }

    fn hub(&self, stream_arn: &str) -> Option<Arc<Hub>> {
        let hubs = self.hubs.lock().unwrap_or_else(|e| e.into_inner());
        hubs.get(stream_arn).and_then(Weak::upgrade)
    }

    /// A subscription to `stream_arn` from `from` (see [`Subscription`]). No AWS call until its first poll.
    pub fn subscribe(&self, stream_arn: &str, from: Checkpoint) -> Subscription {
        let mut hubs = self.hubs.lock().unwrap_or_else(|e| e.into_inner());
        hubs.retain(|_, hub| hub.strong_count() > 0);
        let hub = match hubs.get(stream_arn).and_then(Weak::upgrade) {
            Some(hub) => hub,
            None => {
                let hub = Arc::new(Hub {
                    client: self.client.clone(),
                    stream_arn: stream_arn.to_string(),
                    poll_interval: self.poll_interval,
                    state: Mutex::new(HubState {
                        generation: 0,
                        window: None,
                        seeding: Seeding::Open,
                        error: None,
                        next_index: 0,
                        joined: 0,
                        waiting: 0,
                        reading: 0,
                    }),
                    changed: watch::channel(0).0,
                    catch_up: Arc::new(Semaphore::new(1)),
                    metrics: self.metrics.clone(),
                });
                hubs.insert(stream_arn.to_string(), Arc::downgrade(&hub));
                hub
            }
        };
        Subscription {
            hub,
            position: from,
            mode: Mode::Unjoined { ahead_waits: 0 },
            pause: false,
        }
    }

    /// How `stream_arn` is read in this process; `None` when nobody subscribes to it.
    pub fn reader(&self, stream_arn: &str) -> Option<ReaderStats> {
        let hub = self.hub(stream_arn)?;
        let state = hub.lock();
        Some(ReaderStats {
            leading: state.window.is_some(),
            shards: state.window.as_ref().map_or(0, |w| w.end.shards.len()),
            joined: state.joined,
            waiting: state.waiting,
            reading: state.reading,
            window_records: state.window.as_ref().map_or(0, |w| w.records),
        })
    }
}

/// What a subscription is doing, as counted in its hub's [`ReaderStats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Joined,
    Waiting,
    Reading,
}

/// Counts a subscription in its hub's [`ReaderStats`] (and gauges) while it lives.
struct Member {
    hub: Arc<Hub>,
    role: Role,
}

fn count(state: &mut HubState, role: Role) -> &mut usize {
    match role {
        Role::Joined => &mut state.joined,
        Role::Waiting => &mut state.waiting,
        Role::Reading => &mut state.reading,
    }
}

impl Member {
    fn new(hub: &Arc<Hub>, role: Role) -> Self {
        let mut state = hub.lock();
        *count(&mut state, role) += 1;
        hub.publish(&state);
        Member { hub: hub.clone(), role }
    }

    fn set(&mut self, role: Role) {
        let mut state = self.hub.lock();
        *count(&mut state, self.role) -= 1;
        *count(&mut state, role) += 1;
        self.hub.publish(&state);
        self.role = role;
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let mut state = self.hub.lock();
        *count(&mut state, self.role) -= 1;
        self.hub.publish(&state);
    }
}

enum Mode {
    Unjoined {
        ahead_waits: u32,
    },
    Joined {
        generation: u64,
        next: u64,
        skip: HashMap<String, Skip>,
        _member: Member,
    },
    CatchingUp {
        reader: Box<StreamReader>,
        idle: bool,
        _permit: OwnedSemaphorePermit,
        _member: Member,
    },
}

/// One view's read of a shared stream: [`StreamReader`]'s `poll` and `rewind` (see the module docs).
pub struct Subscription {
    hub: Arc<Hub>,
    position: Checkpoint,
    mode: Mode,
    /// Sleep the poll interval before the next attempt to join or catch up.
    pause: bool,
}

enum Step {
    Deliver(Arc<WindowBatch>),
    Rejoin,
    Fail(AwsError),
    Wait,
}

impl Subscription {
    /// The next batch after this subscription's position, and the checkpoint after it; waits for the
    /// leader's next batch when the view read all the window holds. Errors as [`StreamReader::poll`]'s;
    /// after one, the position is unchanged.
    pub async fn poll(&mut self, limit: i32) -> Result<Batch, StreamError> {
        loop {
            let mut changed = self.hub.changed.subscribe();
            match &mut self.mode {
                Mode::Joined { generation, next, skip, .. } => {
                    let step = {
                        let state = self.hub.lock();
                        match state.window.as_ref() {
                            Some(w) if state.generation == *generation && *next >= w.first => {
                                match (w.batch(*next), &state.error) {
                                    (Some(b), _) => Step::Deliver(b),
                                    (None, Some(e)) => Step::Fail(e.clone()),
                                    (None, None) => Step::Wait,
                                }
                            }
                            _ => Step::Rejoin,
                        }
                    };
                    match step {
                        Step::Deliver(b) => {
                            *next += 1;
                            let batch = deliver(&b.batch, skip);
                            self.position = batch.checkpoint.clone();
                            return Ok(batch);
                        }
                        Step::Rejoin => self.mode = Mode::Unjoined { ahead_waits: 0 },
                        Step::Fail(e) => return Err(StreamError::Aws(e)),
                        Step::Wait => {
                            let _ = changed.changed().await;
                        }
                    }
                }
                Mode::CatchingUp { reader, idle, .. } => {
                    if *idle {
                        tokio::time::sleep(self.hub.poll_interval).await;
                    }
                    let batch = reader.poll(limit).await?;
                    *idle = batch.caught_up;
                    self.position = batch.checkpoint.clone();
                    self.after_catch_up(batch.caught_up);
                    return Ok(batch);
                }
                Mode::Unjoined { ahead_waits } => {
                    if std::mem::take(&mut self.pause) {
                        tokio::time::sleep(self.hub.poll_interval).await;
                        continue;
                    }
                    let join = {
                        let mut state = self.hub.lock();
                        match state.window.as_ref().map(|w| w.join(&self.position)) {
                            Some(Join::At { next, skip }) => Some(Ok((state.generation, next, skip))),
                            None if state.seeding == Seeding::Open => {
                                let (generation, next) = self.hub.seed(&mut state, &self.position);
                                Some(Ok((generation, next, HashMap::new())))
                            }
                            Some(Join::Ahead) if *ahead_waits < AHEAD_WAITS => Some(Err(())),
                            _ => None,
                        }
                    };
                    match join {
                        Some(Ok((generation, next, skip))) => self.join(generation, next, skip),
                        Some(Err(())) => {
                            *ahead_waits += 1;
                            let _ = tokio::time::timeout(AHEAD_WAIT, changed.changed()).await;
                        }
                        None => {
                            let mut member = Member::new(&self.hub, Role::Waiting);
                            let permit = self
                                .hub
                                .catch_up
                                .clone()
                                .acquire_owned()
                                .await
                                .expect("the catch-up semaphore is never closed");
                            member.set(Role::Reading);
                            let reader = StreamReader::new(
                                self.hub.client.clone(),
                                self.hub.stream_arn.clone(),
                                self.position.clone(),
                            );
                            self.mode = Mode::CatchingUp {
                                reader: Box::new(reader),
                                idle: false,
                                _permit: permit,
                                _member: member,
                            };
                            // The window may have come to cover this view while it waited for the permit.
                            self.after_catch_up(false);
                        }
                    }
                }
            }
        }
    }

    fn join(&mut self, generation: u64, next: u64, skip: HashMap<String, Skip>) {
        self.mode = Mode::Joined {
            generation,
            next,
            skip,
            _member: Member::new(&self.hub, Role::Joined),
        };
    }

    /// After a catch-up batch: joins the window if it covers this view now, seeds a leader if none runs
    /// and this view's reader `caught_up`, or, ahead of the leader, gives back the permit to wait for it.
    fn after_catch_up(&mut self, caught_up: bool) {
        let next = {
            let mut state = self.hub.lock();
            match state.window.as_ref().map(|w| w.join(&self.position)) {
                Some(Join::At { next, skip }) => Some((state.generation, next, skip)),
                None if caught_up => {
                    let (generation, next) = self.hub.seed(&mut state, &self.position);
                    Some((generation, next, HashMap::new()))
                }
                Some(Join::Ahead) if caught_up => {
                    drop(state);
                    self.mode = Mode::Unjoined { ahead_waits: 0 };
                    return;
                }
                // At the stream's tip, yet the window cannot take this view (its checkpoint and the
                // leader's disagree on a shard, say one calls an open shard finished): it reads on its
                // own, but gives the permit to the next view after each caught-up batch and pauses.
                Some(Join::Behind) if caught_up => {
                    drop(state);
                    self.mode = Mode::Unjoined { ahead_waits: AHEAD_WAITS };
                    self.pause = true;
                    return;
                }
                _ => None,
            }
        };
        if let Some((generation, next, skip)) = next {
            self.join(generation, next, skip);
        }
    }

    /// Resumes from `checkpoint` (the caller could not apply what it was given).
    pub fn rewind(&mut self, checkpoint: Checkpoint) {
        self.position = checkpoint;
        self.mode = Mode::Unjoined { ahead_waits: 0 };
    }

    /// Whether this subscription reads the leader's window now (else it catches up or waits).
    pub fn joined(&self) -> bool {
        matches!(self.mode, Mode::Joined { .. })
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod break18;
