//! [`StreamReader`]: follows the DynamoDB stream of an append-only log table across all its shards, the way
//! the Kinesis Client Library does, and hands out batches of records with the [`Checkpoint`] to store
//! once they are applied.
//!
//! Guarantees:
//! - Every record the stream retains is delivered at least once, in order within a shard, and a child
//!   shard's records only after all of its parent's (a key's records stay in order across shard splits).
//!   Consumers must be idempotent: after a restart or a [`StreamReader::rewind`], records after the stored
//!   checkpoint are delivered again, and a shard the checkpoint does not know starts at its oldest
//!   retained record (`TRIM_HORIZON`), so a new reader replays the whole retained stream (24 hours).
//! - A child shard is readable once its parent is [`ShardPosition::Finished`], or when its parent is no
//!   longer listed by the stream and was never in the checkpoint (trimmed before this reader knew it).
//! - Lost records are never skipped silently: a shard the checkpoint is still reading that the stream no
//!   longer lists, or a read past the trim horizon (`TrimmedDataAccessException`), is a
//!   [`StreamError::Gap`]. One blind spot remains, as with the KCL: a shard checkpointed with no record
//!   read yet (`after: null`) whose oldest records were trimmed while the reader was stopped for more
//!   than 24 hours resumes at what is left.
//! - Expired iterators (15 minutes on AWS) are renewed from the checkpoint transparently; a shard whose
//!   `GetRecords` returns no next iterator is finished, and the shard list is then read again to find
//!   its children (it is also re-read at the first poll, after a rewind, and at least every 60 s).
//! - A failed [`StreamReader::poll`] changes no position: the next poll reads the same records again.
//! - A reader made with [`StreamReader::at_tip`] skips what the stream already holds: each shard listed at
//!   its first poll starts at its newest end (`LATEST`; a shard already closed then is finished at once),
//!   shards that appear later start at their oldest record. A shard of which nothing was read yet is
//!   re-positioned at its newest end when its iterator must be renewed (after a failed poll, or expiry), so
//!   records written to it in between are skipped: this reader suits best-effort consumers that keep no
//!   checkpoint (its checkpoints, given to [`StreamReader::new`], would re-read such a shard from its start).
//!
//! Caught up: a reader is caught up when, on every readable shard, it has read everything created more
//! than [`CAUGHT_UP_MAX_LAG`] before the current poll began: it read a record created after that (shard
//! order is write order), or the shard is at its end. DynamoDB Streams may answer `GetRecords` with no
//! records on an open shard that holds more ("it might take multiple calls to get to a portion of the
//! shard that contains stream records", the DynamoDB Streams API Reference, GetRecords), so one empty page
//! is never taken for the end: the reader assumes fewer than [`EMPTY_PAGES_AT_END`] such pages in a row,
//! so of the last [`EMPTY_PAGES_AT_END`] calls in a row that returned nothing at least one was at the end,
//! and everything created before the first of them was read. A shard whose last page with records was
//! full (`limit` records) holds more: the reader is not caught up until it shows a smaller page or its
//! end. A pause between polls changes nothing of this: what a poll long ago showed is dated by that
//! poll. A reader behind a backlog older than the lag is never caught up; one following steady writes
//! is, without ever seeing an empty page.
//! [`Batch::at_end_since`] is the time everything created before was read.
//!
//! Pacing: AWS throttles `GetRecords` above about 5 calls per second per shard. [`StreamReader::poll`]
//! makes one call per readable shard and waits so that polls start at least [`MIN_POLL_INTERVAL`]
//! apart; when a batch is [`Batch::caught_up`], the caller should sleep (about a second) before polling
//! again rather than poll in a loop.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodbstreams::types::{OperationType, Record, ShardIteratorType};
use serde::{Deserialize, Serialize};

use crate::aws::{AwsError, from_sdk};
use crate::projection::{Item, item_from_stream};

/// The most records one `GetRecords` call may return (the service rejects a larger limit).
pub const MAX_RECORDS_PER_CALL: i32 = 1000;

/// The shortest time between the starts of two polls: at most 4 `GetRecords` per shard and second.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// `GetRecords` calls in a row that return nothing before a shard counts as read to its end (see the
/// module docs).
pub const EMPTY_PAGES_AT_END: u32 = 3;

/// A reader is caught up once every shard has passed what was written this long before the current poll
/// (see the module docs): the most a caught-up reader lags. Stream records carry their creation time in
/// whole seconds (`ApproximateCreationDateTime`), and an idle reader polls about once a second, so a few
/// seconds is the least that a reader at the tip shows.
pub const CAUGHT_UP_MAX_LAG: Duration = Duration::from_secs(5);

/// How long a shard list is trusted before `DescribeStream` is called again.
const SHARD_LIST_MAX_AGE: Duration = Duration::from_secs(60);

/// Where a reader is, per shard; serde (camelCase) so the caller stores it as JSON in a ConfigMap:
/// `{"shards":{"shardId-…":{"state":"reading","after":"4700…01"},"shardId-…":{"state":"finished"}}}`.
///
/// Shards absent from it are unknown and start at their oldest retained record. Finished shards the
/// stream no longer lists are dropped, so it stays small.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    /// Shard id to position.
    pub shards: BTreeMap<String, ShardPosition>,
}

/// The position of a reader in one shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum ShardPosition {
    /// Started: `after` is the sequence number of the last applied record (`None`: none yet, the shard is
    /// read from its oldest retained record).
    Reading { after: Option<String> },
    /// Every record of the shard is applied and the shard is closed.
    Finished,
}

/// What happened to the item, as the stream record's `eventName` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventName {
    Insert,
    Modify,
    Remove,
}

/// One record of the stream, converted to the projection's [`Item`]s.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamRecord {
    pub shard_id: String,
    pub sequence_number: String,
    pub event_name: EventName,
    /// The item's primary key attributes.
    pub keys: Item,
    /// The item after the change; `None` for a `REMOVE`, or when the stream's view type carries no new
    /// image (`KEYS_ONLY`, `OLD_IMAGE`).
    pub new_image: Option<Item>,
    /// ApproximateCreationDateTime as epoch seconds.
    pub approximate_creation_epoch_seconds: Option<f64>,
}

/// The result of one [`StreamReader::poll`].
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// In shard order (parents first), each shard's records in sequence order.
    pub records: Vec<StreamRecord>,
    /// The checkpoint once every record of this batch is applied.
    pub checkpoint: Checkpoint,
    /// True when the reader is at the tip (see the module docs): sleep before polling again.
    pub caught_up: bool,
    /// Every record created before this time was read (the least over the readable shards; `None` while a
    /// shard has not shown it yet).
    pub at_end_since: Option<std::time::SystemTime>,
}

/// Why a poll failed. After any of them the reader's position is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// An AWS call failed; [`AwsError::retryable`] says whether polling again can help.
    #[error("reading the log's stream: {0}")]
    Aws(#[from] AwsError),
    /// Records the checkpoint says were not read are gone from the stream: the shard was trimmed.
    #[error(
        "records of stream shard {shard} after {} are gone: DynamoDB Streams keeps records 24 hours and \
         this reader was stopped or behind for longer; the view misses them until the operator re-reads the \
         log table, after which reading resumes without this shard's checkpoint",
        position_text(after)
    )]
    Gap { shard: String, after: Option<String> },
    /// A record could not be converted. The reader does not move past it; to skip it, rewind to a
    /// checkpoint whose position for `shard` is `Reading { after: Some(sequence_number) }`.
    #[error(
        "stream record {sequence_number} of shard {shard} cannot be read: {message}; the reader stays \
         before this record and fails the same way on every poll (upgrade the operator if the attribute \
         has a type it does not know)"
    )]
    Record {
        shard: String,
        sequence_number: String,
        message: String,
    },
}

impl StreamError {
    /// Whether polling again (after a pause) can succeed without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            StreamError::Aws(e) => e.retryable,
            StreamError::Gap { .. } | StreamError::Record { .. } => false,
        }
    }
}

fn position_text(after: &Option<String>) -> String {
    match after {
        Some(sequence_number) => format!("sequence number {sequence_number}"),
        None => "its start".to_string(),
    }
}

/// A shard as `DescribeStream` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ShardInfo {
    id: String,
    parent: Option<String>,
}

/// The listed shards with every shard after its parent when the parent is listed too (otherwise in the
/// listed order).
fn lineage_order(listed: &[ShardInfo]) -> Vec<&ShardInfo> {
    let by_id: HashMap<&str, &ShardInfo> = listed.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut placed: HashSet<&str> = HashSet::new();
    let mut order = Vec::with_capacity(listed.len());
    for shard in listed {
        // The not-yet-placed ancestors of `shard`, youngest first; `placed` also stops on a cycle.
        let mut chain = Vec::new();
        let mut next = Some(shard);
        while let Some(current) = next {
            if !placed.insert(current.id.as_str()) {
                break;
            }
            chain.push(current);
            next = current.parent.as_deref().and_then(|p| by_id.get(p).copied());
        }
        order.extend(chain.into_iter().rev());
    }
    order
}

/// The shards to read now, parents first: not finished, and whose parent is finished, or has none, or
/// was trimmed before this reader knew it (neither listed nor in the checkpoint).
fn readable_shards(listed: &[ShardInfo], checkpoint: &Checkpoint) -> Vec<String> {
    let listed_ids: HashSet<&str> = listed.iter().map(|s| s.id.as_str()).collect();
    lineage_order(listed)
        .into_iter()
        .filter(|shard| checkpoint.shards.get(&shard.id) != Some(&ShardPosition::Finished))
        .filter(|shard| match &shard.parent {
            None => true,
            Some(parent) => match checkpoint.shards.get(parent) {
                Some(ShardPosition::Finished) => true,
                Some(ShardPosition::Reading { .. }) => false,
                None => !listed_ids.contains(parent.as_str()),
            },
        })
        .map(|shard| shard.id.clone())
        .collect()
}

/// The first shard the checkpoint is still reading that the stream no longer lists: its unread records
/// were trimmed.
fn find_gap(listed: &[ShardInfo], checkpoint: &Checkpoint) -> Option<StreamError> {
    let listed_ids: HashSet<&str> = listed.iter().map(|s| s.id.as_str()).collect();
    checkpoint
        .shards
        .iter()
        .find_map(|(shard, position)| match position {
            ShardPosition::Reading { after } if !listed_ids.contains(shard.as_str()) => {
                Some(StreamError::Gap { shard: shard.clone(), after: after.clone() })
            }
            _ => None,
        })
}

/// At the first listing of a reader [`StreamReader::at_tip`]: every listed shard the checkpoint does not
/// know is finished when `closed` (all its records predate the reader), otherwise reading with nothing read
/// yet; the latter are returned, to be started at their newest end.
fn start_at_tip(
    listed: &[ShardInfo],
    closed: &HashSet<String>,
    checkpoint: &mut Checkpoint,
) -> HashSet<String> {
    let mut tip = HashSet::new();
    for shard in listed {
        if checkpoint.shards.contains_key(&shard.id) {
            continue;
        }
        if closed.contains(&shard.id) {
            checkpoint
                .shards
                .insert(shard.id.clone(), ShardPosition::Finished);
        } else {
            checkpoint
                .shards
                .insert(shard.id.clone(), ShardPosition::Reading { after: None });
            tip.insert(shard.id.clone());
        }
    }
    tip
}

/// Where a shard's iterator starts: after the last record read, else at the shard's newest end for a shard
/// started `at_tip`, else at its oldest retained record.
fn iterator_kind(after: &Option<String>, at_tip: bool) -> ShardIteratorType {
    match after {
        Some(_) => ShardIteratorType::AfterSequenceNumber,
        None if at_tip => ShardIteratorType::Latest,
        None => ShardIteratorType::TrimHorizon,
    }
}

/// Drops the finished shards the stream no longer lists: nothing refers to them any more (a child whose
/// parent is neither listed nor checkpointed is readable, as it was with the parent finished).
fn forget_trimmed_finished(listed: &[ShardInfo], checkpoint: &mut Checkpoint) {
    let listed_ids: HashSet<&str> = listed.iter().map(|s| s.id.as_str()).collect();
    checkpoint.shards.retain(|shard, position| {
        *position != ShardPosition::Finished || listed_ids.contains(shard.as_str())
    });
}

/// The error and its causes, outermost first, joined by ": ".
/// The caught-up rule (see the module docs), from each readable shard's `passed` time (everything created
/// before it was read): the reader is caught up when every readable shard passed `check_point` (see
/// [`check_point`]; `None`: never); and the time everything was read up to is the least of the shards' (`None` while a
/// shard has none). No readable shard (every one finished, children not listed yet) is caught up as of
/// `now`.
fn caught_up_rule(
    readable: &[String],
    passed: &HashMap<String, SystemTime>,
    check_point: Option<SystemTime>,
    now: SystemTime,
) -> (bool, Option<SystemTime>) {
    if readable.is_empty() {
        return (true, Some(now));
    }
    let least = readable
        .iter()
        .map(|s| passed.get(s).copied())
        .collect::<Option<Vec<_>>>()
        .and_then(|all| all.into_iter().min());
    let caught_up = match (least, check_point) {
        (Some(least), Some(check)) => least >= check,
        _ => false,
    };
    (caught_up, least)
}

/// The caught-up check point of a round that starts `now`: [`CAUGHT_UP_MAX_LAG`] before it.
fn check_point(now: SystemTime) -> Option<SystemTime> {
    now.checked_sub(CAUGHT_UP_MAX_LAG)
}

/// What one `GetRecords` call showed of a shard, for the caught-up rule.
#[derive(Clone, Copy, Debug)]
struct Page {
    /// How many records it returned.
    records: usize,
    /// The newest record's ApproximateCreationDateTime, epoch seconds.
    newest_created: Option<f64>,
    /// It returned the call's `limit`: more records are waiting.
    full: bool,
}

/// One round of polls in progress: what it showed, committed by [`Progress::end_round`].
#[derive(Debug)]
struct Round {
    started: SystemTime,
    passed: HashMap<String, SystemTime>,
}

/// The reader's bookkeeping for the caught-up rule (see the module docs), without I/O.
#[derive(Debug, Default)]
struct Progress {
    /// Per shard: when the last (at most [`EMPTY_PAGES_AT_END`]) `GetRecords` of its current run of empty
    /// pages started, oldest first.
    empty_pages: HashMap<String, VecDeque<SystemTime>>,
    /// Per shard: everything created before this time was read (its newest record's creation second, or
    /// the first of the last [`EMPTY_PAGES_AT_END`] calls of a run of empty pages).
    passed: HashMap<String, SystemTime>,
    /// Shards whose last page with records was full (more records wait) and that have not shown their end
    /// since.
    waiting: HashSet<String>,
}

impl Progress {
    fn begin_round(&self, started: SystemTime) -> Round {
        Round { started, passed: HashMap::new() }
    }

    /// Records what a call in `round` showed of `shard`.
    fn note_page(&mut self, round: &mut Round, shard: &str, page: Page) {
        if page.records == 0 {
            let run = self.empty_pages.entry(shard.to_string()).or_default();
            run.push_back(round.started);
            if run.len() > EMPTY_PAGES_AT_END as usize {
                run.pop_front();
            }
            if let Some(first) = run.front().filter(|_| run.len() >= EMPTY_PAGES_AT_END as usize) {
                // One of these calls was at the end (see the module docs): everything created before the
                // first of them was read.
                round.passed.insert(shard.to_string(), *first);
                self.waiting.remove(shard);
            }
            return;
        }
        self.empty_pages.remove(shard);
        match page.full {
            true => self.waiting.insert(shard.to_string()),
            false => self.waiting.remove(shard),
        };
        // Shard order is write order: everything created before the newest record's second was read.
        if let Some(t) = page.newest_created.filter(|t| *t >= 0.0) {
            round.passed.insert(
                shard.to_string(),
                UNIX_EPOCH + Duration::from_secs(t.floor() as u64),
            );
        }
    }

    /// Commits a round that read every shard in `readable`: whether the reader is caught up, and the time
    /// everything created before was read (see [`caught_up_rule`]). Not caught up while a shard's last page
    /// with records was full (until it shows a smaller page or its end), nor in a round that finished a
    /// shard (its children are not listed yet).
    fn end_round(
        &mut self,
        round: Round,
        readable: &[String],
        finished_any: bool,
    ) -> (bool, Option<SystemTime>) {
        self.empty_pages.retain(|shard, _| readable.contains(shard));
        for (shard, at) in round.passed {
            let p = self.passed.entry(shard).or_insert(at);
            *p = (*p).max(at);
        }
        self.passed.retain(|shard, _| readable.contains(shard));
        self.waiting.retain(|shard| readable.contains(shard));
        let check = check_point(round.started);
        let (caught_up, at_end_since) = caught_up_rule(readable, &self.passed, check, round.started);
        (
            caught_up && !finished_any && self.waiting.is_empty(),
            at_end_since,
        )
    }

    /// Forgets what the shards showed (after a rewind).
    fn reset(&mut self) {
        self.empty_pages.clear();
        self.passed.clear();
        self.waiting.clear();
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Converts one SDK stream record of shard `shard_id`.
fn convert_record(shard_id: &str, record: Record) -> Result<StreamRecord, StreamError> {
    let Some(change) = record.dynamodb else {
        return Err(StreamError::Record {
            shard: shard_id.to_string(),
            sequence_number: "(none)".to_string(),
            message: "the record has no `dynamodb` part".to_string(),
        });
    };
    let Some(sequence_number) = change.sequence_number else {
        return Err(StreamError::Record {
            shard: shard_id.to_string(),
            sequence_number: "(none)".to_string(),
            message: "the record has no SequenceNumber".to_string(),
        });
    };
    let invalid = |message: String| StreamError::Record {
        shard: shard_id.to_string(),
        sequence_number: sequence_number.clone(),
        message,
    };
    let event_name = match record.event_name {
        Some(OperationType::Insert) => EventName::Insert,
        Some(OperationType::Modify) => EventName::Modify,
        Some(OperationType::Remove) => EventName::Remove,
        Some(other) => {
            return Err(invalid(format!(
                "eventName `{}` is none of INSERT, MODIFY, REMOVE",
                other.as_str()
            )));
        }
        None => return Err(invalid("the record has no eventName".to_string())),
    };
    let keys = change
        .keys
        .ok_or_else(|| invalid("the record has no Keys".to_string()))
        .and_then(|keys| item_from_stream(keys).map_err(|e| invalid(format!("Keys: {}", error_chain(&e)))))?;
    let new_image = change
        .new_image
        .map(|image| item_from_stream(image).map_err(|e| invalid(format!("NewImage: {}", error_chain(&e)))))
        .transpose()?;
    Ok(StreamRecord {
        shard_id: shard_id.to_string(),
        sequence_number,
        event_name,
        keys,
        new_image,
        approximate_creation_epoch_seconds: change.approximate_creation_date_time.map(|t| t.as_secs_f64()),
    })
}

/// How a failed `GetRecords` or `GetShardIterator` is handled.
#[derive(Debug)]
enum ReadFailure {
    /// The iterator expired: get a new one from the checkpoint and read again.
    IteratorExpired,
    /// Give up this poll.
    Fail(StreamError),
}

fn classify_read_failure(shard: &str, after: &Option<String>, error: AwsError) -> ReadFailure {
    match error.code.as_str() {
        "ExpiredIteratorException" => ReadFailure::IteratorExpired,
        "TrimmedDataAccessException" => {
            ReadFailure::Fail(StreamError::Gap { shard: shard.to_string(), after: after.clone() })
        }
        _ => ReadFailure::Fail(StreamError::Aws(error)),
    }
}

impl From<ReadFailure> for StreamError {
    fn from(failure: ReadFailure) -> Self {
        match failure {
            ReadFailure::Fail(error) => error,
            // Only reached when a fresh iterator expires at once, which the service should never do.
            ReadFailure::IteratorExpired => StreamError::Aws(AwsError::permanent(
                "GetRecords",
                "a fresh shard iterator",
                "the iterator expired right after GetShardIterator returned it; check the clock and the endpoint",
            )),
        }
    }
}

/// Follows one DynamoDB stream across its shards; see the module documentation for the guarantees.
#[derive(Debug)]
pub struct StreamReader {
    client: aws_sdk_dynamodbstreams::Client,
    stream_arn: String,
    /// The position after the last batch returned (or the one rewound to).
    checkpoint: Checkpoint,
    /// The shards `DescribeStream` listed last.
    listed: Vec<ShardInfo>,
    /// When `listed` was read; `None` when it must be read again before the next reads.
    listed_at: Option<Instant>,
    /// The next iterator of each shard being read, as the last `GetRecords` returned it.
    iterators: HashMap<String, String>,
    last_poll_started: Option<Instant>,
    /// Set by [`StreamReader::at_tip`] until the first listing positions the shards.
    start_at_tip: bool,
    /// What the caught-up rule needs (see the module docs).
    progress: Progress,
    /// The shards started at their newest end: with nothing read yet, their iterator is `LATEST`.
    tip_shards: HashSet<String>,
}

impl StreamReader {
    /// A reader of the stream `stream_arn` that resumes at `from` (`Checkpoint::default()`: the oldest
    /// retained records). No AWS call until the first poll.
    pub fn new(
        client: aws_sdk_dynamodbstreams::Client,
        stream_arn: impl Into<String>,
        from: Checkpoint,
    ) -> Self {
        StreamReader {
            client,
            stream_arn: stream_arn.into(),
            checkpoint: from,
            listed: Vec::new(),
            listed_at: None,
            iterators: HashMap::new(),
            last_poll_started: None,
            start_at_tip: false,
            tip_shards: HashSet::new(),
            progress: Progress::default(),
        }
    }

    /// A reader of the records written to the stream `stream_arn` from its first poll on (see the module
    /// documentation: shards listed then start at their newest end). No AWS call until the first poll.
    pub fn at_tip(client: aws_sdk_dynamodbstreams::Client, stream_arn: impl Into<String>) -> Self {
        StreamReader {
            start_at_tip: true,
            ..StreamReader::new(client, stream_arn, Checkpoint::default())
        }
    }

    /// One round: refresh the shard list when needed (at the first poll, after a shard finished or a
    /// rewind, and when it is 60 s old), call `GetRecords` once on each readable shard with `limit`
    /// (clamped to 1..=1000), and return all records in shard order (parents first) with the checkpoint
    /// after them. Waits first if the previous poll started less than [`MIN_POLL_INTERVAL`] ago.
    ///
    /// The reader moves on to the returned checkpoint; if the caller cannot apply the batch it must
    /// [`rewind`](Self::rewind) to its previous checkpoint. On error the position is unchanged.
    pub async fn poll(&mut self, limit: i32) -> Result<Batch, StreamError> {
        if let Some(started) = self.last_poll_started {
            let since = started.elapsed();
            if since < MIN_POLL_INTERVAL {
                tokio::time::sleep(MIN_POLL_INTERVAL - since).await;
            }
        }
        self.last_poll_started = Some(Instant::now());
        let result = self.read_round(limit.clamp(1, MAX_RECORDS_PER_CALL)).await;
        if result.is_err() {
            // Some iterators may have moved past records this failed poll did not return.
            self.iterators.clear();
        }
        result
    }

    /// Forget iterators and restart from `checkpoint` (the caller failed to apply a batch).
    pub fn rewind(&mut self, checkpoint: Checkpoint) {
        self.checkpoint = checkpoint;
        self.iterators.clear();
        self.listed_at = None;
        self.progress.reset();
    }

    async fn read_round(&mut self, limit: i32) -> Result<Batch, StreamError> {
        if self.listed_at.is_none_or(|at| at.elapsed() >= SHARD_LIST_MAX_AGE) {
            self.refresh_shards().await?;
        }
        let mut checkpoint = self.checkpoint.clone();
        let mut records = Vec::new();
        let mut finished_any = false;
        let readable = readable_shards(&self.listed, &checkpoint);
        // Committed only when the whole round succeeds.
        let mut round = self.progress.begin_round(SystemTime::now());
        for shard in readable.iter().cloned() {
            let after = match checkpoint.shards.get(&shard) {
                Some(ShardPosition::Reading { after }) => after.clone(),
                _ => None,
            };
            let (shard_records, next_iterator) = self.read_shard(&shard, &after, limit).await?;
            let position = checkpoint
                .shards
                .entry(shard.clone())
                .or_insert(ShardPosition::Reading { after: None });
            if let Some(last) = shard_records.last() {
                *position = ShardPosition::Reading { after: Some(last.sequence_number.clone()) };
            }
            let page = Page {
                records: shard_records.len(),
                newest_created: (shard_records.iter())
                    .filter_map(|r| r.approximate_creation_epoch_seconds)
                    .fold(None::<f64>, |m, t| Some(m.map_or(t, |m| m.max(t)))),
                full: shard_records.len() >= limit as usize,
            };
            self.progress.note_page(&mut round, &shard, page);
            match next_iterator {
                Some(iterator) => {
                    self.iterators.insert(shard, iterator);
                }
                None => {
                    tracing::info!(stream = %self.stream_arn, %shard, "stream shard finished");
                    *position = ShardPosition::Finished;
                    self.iterators.remove(&shard);
                    finished_any = true;
                }
            }
            records.extend(shard_records);
        }
        if finished_any {
            // Its children become readable: list them.
            self.listed_at = None;
        }
        self.checkpoint = checkpoint.clone();
        let (caught_up, at_end_since) = self.progress.end_round(round, &readable, finished_any);
        Ok(Batch { caught_up, at_end_since, records, checkpoint })
    }

    /// Lists every shard of the stream (all `DescribeStream` pages), fails on a gap, and drops what the
    /// stream no longer lists.
    async fn refresh_shards(&mut self) -> Result<(), StreamError> {
        let mut listed = Vec::new();
        let mut closed = HashSet::new();
        let mut start_after: Option<String> = None;
        loop {
            let output = self
                .client
                .describe_stream()
                .stream_arn(&self.stream_arn)
                .set_exclusive_start_shard_id(start_after.take())
                .send()
                .await
                .map_err(from_sdk("DescribeStream", &self.stream_arn))?;
            let Some(description) = output.stream_description else {
                break;
            };
            closed.extend(
                description
                    .shards()
                    .iter()
                    .filter(|s| {
                        s.sequence_number_range()
                            .is_some_and(|r| r.ending_sequence_number().is_some())
                    })
                    .filter_map(|s| s.shard_id().map(str::to_string)),
            );
            listed.extend(description.shards().iter().filter_map(|shard| {
                Some(ShardInfo {
                    id: shard.shard_id()?.to_string(),
                    parent: shard.parent_shard_id().map(str::to_string),
                })
            }));
            match description.last_evaluated_shard_id() {
                Some(last) => start_after = Some(last.to_string()),
                None => break,
            }
        }
        tracing::debug!(stream = %self.stream_arn, shards = listed.len(), "listed stream shards");
        if let Some(gap) = find_gap(&listed, &self.checkpoint) {
            return Err(gap);
        }
        forget_trimmed_finished(&listed, &mut self.checkpoint);
        if std::mem::take(&mut self.start_at_tip) {
            self.tip_shards = start_at_tip(&listed, &closed, &mut self.checkpoint);
        }
        let listed_ids: HashSet<&str> = listed.iter().map(|s| s.id.as_str()).collect();
        self.iterators
            .retain(|shard, _| listed_ids.contains(shard.as_str()));
        self.listed = listed;
        self.listed_at = Some(Instant::now());
        Ok(())
    }

    /// One `GetRecords` on `shard` (renewing an expired iterator once): its records and its next
    /// iterator (`None`: the shard is finished).
    async fn read_shard(
        &mut self,
        shard: &str,
        after: &Option<String>,
        limit: i32,
    ) -> Result<(Vec<StreamRecord>, Option<String>), StreamError> {
        let iterator = match self.iterators.remove(shard) {
            Some(iterator) => iterator,
            None => match self.shard_iterator(shard, after).await? {
                Some(iterator) => iterator,
                None => return Ok((Vec::new(), None)),
            },
        };
        let output = match self.get_records(shard, after, &iterator, limit).await {
            Err(ReadFailure::IteratorExpired) => {
                tracing::debug!(stream = %self.stream_arn, %shard, "shard iterator expired; renewing it");
                match self.shard_iterator(shard, after).await? {
                    Some(fresh) => self.get_records(shard, after, &fresh, limit).await?,
                    None => return Ok((Vec::new(), None)),
                }
            }
            other => other?,
        };
        let records = output
            .records
            .unwrap_or_default()
            .into_iter()
            .map(|record| convert_record(shard, record))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((records, output.next_shard_iterator))
    }

    /// An iterator just after `after`, or at the oldest retained record (the newest end of a shard started
    /// at the tip); `None` when the service gives none (the shard is closed and read to its end).
    async fn shard_iterator(
        &self,
        shard: &str,
        after: &Option<String>,
    ) -> Result<Option<String>, StreamError> {
        let kind = iterator_kind(after, self.tip_shards.contains(shard));
        let output = self
            .client
            .get_shard_iterator()
            .stream_arn(&self.stream_arn)
            .shard_id(shard)
            .shard_iterator_type(kind)
            .set_sequence_number(after.clone())
            .send()
            .await
            .map_err(from_sdk("GetShardIterator", &self.shard_resource(shard)))
            .map_err(|e| classify_read_failure(shard, after, e))?;
        Ok(output.shard_iterator)
    }

    async fn get_records(
        &self,
        shard: &str,
        after: &Option<String>,
        iterator: &str,
        limit: i32,
    ) -> Result<aws_sdk_dynamodbstreams::operation::get_records::GetRecordsOutput, ReadFailure> {
        self.client
            .get_records()
            .shard_iterator(iterator)
            .limit(limit)
            .send()
            .await
            .map_err(from_sdk("GetRecords", &self.shard_resource(shard)))
            .map_err(|e| classify_read_failure(shard, after, e))
    }

    fn shard_resource(&self, shard: &str) -> String {
        format!("{shard} of {}", self.stream_arn)
    }
}

#[cfg(test)]
mod tests;
