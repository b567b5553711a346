//! Applies projected [`ViewWrite`]s to a views table: the one adapter the backfill, the in-cluster
//! runtime and the projector function share, so every path writes a view the same way.
//!
//! Guarantees:
//! - Every write keeps the semantics of [`ViewWrite`]: `Latest` puts are conditional (a failed condition
//!   means "an equal or newer record is already there" and counts as done), `Append` puts go in
//!   `BatchWriteItem`s of at most 25, `Min`/`Max` are conditional updates.
//! - `Count`/`Sum` apply each log record once, at a cost that does not grow with a key's history: the
//!   records of one call are grouped by aggregate, and each `TransactWriteItems` (at most 100 actions)
//!   puts one idempotency marker per record ([`dynamo::marker_key`], conditioned on its absence) and
//!   `ADD`s the sum of the new records' deltas to each aggregate once. A record costs one marker put (2
//!   write units, transactional) plus its share of its aggregate's `ADD` (2 write units per aggregate and
//!   transaction): at most 4 write units and no read, whatever the key's history. A cancelled transaction
//!   whose reasons name markers that exist already (records applied before, by any path) is sent again
//!   without them; conflicts and throttling are retried with capped exponential backoff and jitter.
//! - A record whose `ADD` DynamoDB rejects (a sum it cannot store) is applied alone to find it, and is
//!   returned in [`WriteStats::rejected`]: a record error for the caller's `onRecordError` policy, never a
//!   stall of the other records or keys.
//! - [`ViewTableWriter::apply`] returns `Ok` only when every write of the call is applied (or rejected),
//!   so a caller may advance its checkpoint past them. A transient error is retried in place for the one
//!   request it failed (never the whole call: at a 20% failure rate a call of many requests would almost
//!   never succeed whole); when AWS keeps failing one request past [`super::retry::MAX_RETRIES`], the
//!   call fails as retryable and the caller applies the same writes again (idempotent).
//! - Writes other than `Count`/`Sum` of one call may be sent concurrently and in any order: they commute.
//!   Of several `Latest` writes to one view key in a call only the newest is sent, of several `Min`/`Max`
//!   writes the most extreme.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{AttributeValue, WriteRequest};
use futures::{StreamExt, TryStreamExt};

use super::AwsError;
use super::error::from_sdk;
use crate::backfill::batch::{Request, WriteBatcher};
use crate::functions::progress::{LiveReport, ProgressItem};
use crate::projection::dynamo::{self, AggregateAdd, MAX_TRANSACTION_ACTIONS};
use crate::projection::{Item, Number, RecordId, ViewWrite, view_key_of};

/// Sets a `PutItem` or `UpdateItem` request's table, condition expression, attribute names and attribute
/// values, the last three from the same fields of a transaction's `Put` or `Update` (the SDK's builders
/// share no trait).
macro_rules! with_condition {
    ($request:expr, $write:expr, $table:expr) => {
        $request
            .table_name($table)
            .set_condition_expression($write.condition_expression)
            .set_expression_attribute_names($write.expression_attribute_names)
            .set_expression_attribute_values($write.expression_attribute_values)
    };
}

/// How many times unprocessed items of one `BatchWriteItem` are sent again before the call gives up.
const BATCH_ATTEMPTS: u32 = 8;
/// The first backoff before resending unprocessed items; doubles each time, capped at 5 s.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// What one [`ViewTableWriter::apply`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Writes received.
    pub writes: u64,
    /// Writes that changed the view (or may have: batch puts always count).
    pub applied: u64,
    /// Writes found already applied or superseded (a failed `Latest`/`Min`/`Max` condition, a present
    /// marker, or a write dropped for a newer or more extreme one of the same call).
    pub skipped: u64,
    /// Requests sent, retries included.
    pub requests: u64,
    /// Write capacity units of the requests that succeeded, by DynamoDB's rules for items up to 1 KB (1
    /// per put or update, 2 per transactional action; see
    /// <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/read-write-operations.html>).
    pub write_units: u64,
    /// Records DynamoDB refused to apply (a sum it cannot store): record errors.
    pub rejected: Vec<RejectedWrite>,
}

/// A `Count`/`Sum` record DynamoDB refused: the record, the aggregate it was for and DynamoDB's reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedWrite {
    pub record: RecordId,
    pub pk: String,
    pub sk: String,
    pub reason: String,
}

impl std::ops::AddAssign for WriteStats {
    fn add_assign(&mut self, o: Self) {
        self.writes += o.writes;
        self.applied += o.applied;
        self.skipped += o.skipped;
        self.requests += o.requests;
        self.write_units += o.write_units;
        self.rejected.extend(o.rejected);
    }
}

/// Sends a `Query` or `Scan` request for one page and returns its items and `LastEvaluatedKey`, for
/// `ViewTableWriter::pages`.
macro_rules! page_of {
    ($request:expr, $operation:literal, $table:expr) => {{
        let page = $request.send().await.map_err(from_sdk($operation, $table))?;
        Ok((page.items.unwrap_or_default(), page.last_evaluated_key))
    }};
}

/// Deletes every item whose partition key starts with `prefix` (a view's items and markers in a shared
/// table) with a filtered `Scan` and `BatchWriteItem` deletes; returns how many. Other views' items, under
/// other prefixes, are never touched.
pub async fn delete_items_with_prefix(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    prefix: &str,
) -> Result<u64, AwsError> {
    if prefix.is_empty() {
        // Every item of the table: never what deleting one view of a shared table means.
        return Err(AwsError::permanent(
            "DeleteItems",
            table,
            "refusing to delete items by an empty key prefix (that is every item of the table)",
        ));
    }
    delete_items_with_prefix_but(client, table, prefix, None).await
}

/// [`delete_items_with_prefix`], keeping the item whose partition key is `keep` (when given); an empty
/// `prefix` deletes every item of the table (a dedicated views table being taken over).
pub(crate) async fn delete_items_with_prefix_but(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    prefix: &str,
    keep: Option<&str>,
) -> Result<u64, AwsError> {
    use aws_sdk_dynamodb::types::DeleteRequest;
    let mut deleted = 0;
    let mut start = None;
    // An empty prefix (a dedicated table) is every item: no `begins_with` on an empty string, whose
    // meaning the DynamoDB docs leave open.
    let mut conditions = Vec::new();
    let mut values = HashMap::new();
    if !prefix.is_empty() {
        conditions.push("begins_with(pk, :p)");
        values.insert(":p".to_string(), AttributeValue::S(prefix.to_string()));
    }
    if let Some(keep) = keep {
        conditions.push("pk <> :k");
        values.insert(":k".to_string(), AttributeValue::S(keep.to_string()));
    }
    let filter = (!conditions.is_empty()).then(|| conditions.join(" AND "));
    loop {
        let page = client
            .scan()
            .table_name(table)
            .set_filter_expression(filter.clone())
            .set_expression_attribute_values((!values.is_empty()).then(|| values.clone()))
            .projection_expression("pk, sk")
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(from_sdk("Scan", table))?;
        for chunk in page.items().chunks(25) {
            let mut requests: Vec<WriteRequest> = chunk
                .iter()
                .map(|key| {
                    let delete = DeleteRequest::builder()
                        .set_key(Some(key.clone()))
                        .build()
                        .map_err(|e| AwsError::permanent("BuildRequest", table, e.to_string()))?;
                    Ok(WriteRequest::builder().delete_request(delete).build())
                })
                .collect::<Result<_, AwsError>>()?;
            deleted += requests.len() as u64;
            let mut backoff = FIRST_BACKOFF;
            while !requests.is_empty() {
                requests = super::dynamodb::batch_write_once(client, table, requests)
                    .await
                    .map_err(from_sdk("BatchWriteItem", table))?;
                if !requests.is_empty() {
                    tokio::time::sleep(jittered(backoff)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        start = page.last_evaluated_key;
        if start.is_none() {
            return Ok(deleted);
        }
    }
}

/// Writes one views table.
#[derive(Clone, Debug)]
pub struct ViewTableWriter {
    client: aws_sdk_dynamodb::Client,
    table: String,
    /// The view's key prefix, under which its idempotency markers live.
    key_prefix: String,
    /// The view's name: its markers and band are its own even when views share a prefix.
    view: String,
    concurrency: usize,
    /// A backfill's share of the table's write capacity, when it has one.
    limit: Option<std::sync::Arc<RateLimiter>>,
    /// The live path of this backfill attempt: its `ADD`s also go to [`dynamo::live_attribute`].
    live_attempt: Option<i64>,
    /// Where transient errors retried in place are noted, for the view's status.
    transient: super::retry::TransientLog,
}

/// How many record identities a view's record-error ledger holds (32 characters each, well under
/// DynamoDB's 400 KB item limit): as many as one process keeps ([`crate::projection::KEPT_RECORD_IDS`]);
/// records left out beyond are only counted.
pub const LEDGER_MAX_IDS: usize = crate::projection::KEPT_RECORD_IDS;

/// The time of a ledger `last` entry (`{t, m}`), 0 if unreadable.
fn entry_time(v: &AttributeValue) -> u128 {
    match v {
        AttributeValue::M(m) => match m.get("t") {
            Some(AttributeValue::N(t)) => t.parse().unwrap_or(0),
            _ => 0,
        },
        _ => 0,
    }
}

/// A token bucket of write requests per second (one token per item written), holding at most one
/// second's worth.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    state: tokio::sync::Mutex<(f64, tokio::time::Instant)>,
}

impl RateLimiter {
    pub fn new(per_second: f64) -> Self {
        let per_second = per_second.max(1.0);
        RateLimiter {
            per_second,
            state: tokio::sync::Mutex::new((per_second, tokio::time::Instant::now())),
        }
    }

    /// Waits until `units` may be written.
    pub async fn acquire(&self, units: f64) {
        loop {
            let wait = {
                let mut state = self.state.lock().await;
                let now = tokio::time::Instant::now();
                let elapsed = now.duration_since(state.1).as_secs_f64();
                state.1 = now;
                let (tokens, wait) = take(state.0, elapsed, units, self.per_second);
                state.0 = tokens;
                match wait {
                    None => return,
                    Some(wait) => wait,
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// The bucket after `elapsed` seconds of refill and a request for `units`: the tokens left, and `None`
/// when the request is granted or how long to wait before asking again.
fn take(tokens: f64, elapsed: f64, units: f64, per_second: f64) -> (f64, Option<Duration>) {
    let units = units.min(per_second);
    let tokens = (tokens + elapsed * per_second).min(per_second);
    if tokens >= units {
        (tokens - units, None)
    } else {
        (
            tokens,
            Some(Duration::from_secs_f64((units - tokens) / per_second)),
        )
    }
}

/// The write units per second a backfill may use: `percent` of the table's provisioned write capacity, or
/// of its on-demand maximum when one is set. `None`: an on-demand table without a maximum, which scales by
/// itself (unprocessed writes are retried with backoff).
pub fn write_limit(provisioned_wcu: Option<i64>, on_demand_max: Option<i64>, percent: i32) -> Option<f64> {
    let capacity = provisioned_wcu
        .filter(|c| *c > 0)
        .or(on_demand_max.filter(|c| *c > 0))?;
    Some((capacity as f64 * f64::from(percent.clamp(1, 100)) / 100.0).max(1.0))
}

/// The rate limit of a backfill writing `table` with `spec.backfill.writeCapacityPercent` = `percent`,
/// split among `workers`; from `DescribeTable`.
pub async fn backfill_limit(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    percent: i32,
    workers: usize,
) -> Result<Option<f64>, AwsError> {
    let out = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(from_sdk("DescribeTable", table))?;
    let t = out.table.as_ref();
    let provisioned = t
        .and_then(|t| t.provisioned_throughput())
        .and_then(|p| p.write_capacity_units());
    let on_demand = t
        .and_then(|t| t.on_demand_throughput())
        .and_then(|o| o.max_write_request_units());
    Ok(write_limit(provisioned, on_demand, percent).map(|l| l / workers.max(1) as f64))
}

impl ViewTableWriter {
    /// A writer of the view whose key prefix is `key_prefix` (`""` in a dedicated table) in `table`,
    /// sending at most `concurrency` requests at a time.
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
        key_prefix: impl Into<String>,
        concurrency: usize,
    ) -> Self {
        ViewTableWriter {
            client,
            table: table.into(),
            key_prefix: key_prefix.into(),
            view: String::new(),
            concurrency: concurrency.max(1),
            limit: None,
            live_attempt: None,
            transient: super::retry::TransientLog::default(),
        }
    }

    /// The writer of `view` (its projection gives the key prefix and the name) in `table`, sending at most
    /// `concurrency` requests at a time: what every path of the operator uses.
    pub fn for_view(
        client: aws_sdk_dynamodb::Client,
        table: impl Into<String>,
        view: &crate::projection::ProjectionConfig,
        concurrency: usize,
    ) -> Self {
        let mut writer = Self::new(client, table, view.key_prefix(), concurrency);
        writer.view = view.view_name().to_string();
        writer
    }

    /// The writer of the live path during and after backfill attempt `attempt` (a pre-aggregated one):
    /// each `ADD` also adds to the attempt's live attribute, which the backfill's fold reads.
    pub fn with_live_attempt(mut self, attempt: Option<i64>) -> Self {
        self.live_attempt = attempt;
        self
    }

    /// Writes at most `per_second` items per second (`None`: no limit).
    pub fn with_rate_limit(mut self, per_second: Option<f64>) -> Self {
        self.limit = per_second.map(|p| std::sync::Arc::new(RateLimiter::new(p)));
        self
    }

    /// The table written.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Applies all `writes`; `Ok` only when every one of them is applied or rejected (see the module
    /// docs).
    pub async fn apply(&self, writes: Vec<ViewWrite>) -> Result<WriteStats, AwsError> {
        self.apply_with_band(writes, &HashSet::new()).await
    }

    /// Where this writer (and its clones) note the transient errors they retried in place (see
    /// [`super::retry`]), for the view's status.
    pub fn transient_log(&self) -> &super::retry::TransientLog {
        &self.transient
    }

    /// [`Self::apply`], also putting a band item ([`dynamo::band_key`], of the live attempt) for each
    /// `Count`/`Sum` record in `band`, in the same transaction as its marker.
    ///
    /// Transient errors are retried in place, request by request (`Self::retried`).
    pub async fn apply_with_band(
        &self,
        writes: Vec<ViewWrite>,
        band: &HashSet<RecordId>,
    ) -> Result<WriteStats, AwsError> {
        let mut stats = WriteStats { writes: writes.len() as u64, ..WriteStats::default() };
        let (writes, dropped) = newest_only(writes);
        stats.skipped += dropped;
        let (adds, writes): (Vec<ViewWrite>, Vec<ViewWrite>) = writes
            .into_iter()
            .partition(|w| matches!(w, ViewWrite::Add { .. }));
        if !adds.is_empty() {
            let applied = self.apply_adds(adds, band).await?;
            // A band record DynamoDB refused is a record error of the live path: it stays in the band
            // all the same, or the backfill would count it from the export as well.
            let refused: Vec<RecordId> = (applied.rejected.iter())
                .filter(|r| band.contains(&r.record))
                .map(|r| r.record.clone())
                .collect();
            if let (Some(attempt), false) = (self.live_attempt, refused.is_empty()) {
                self.mark_band(attempt, &refused).await?;
            }
            stats += applied;
        }
        stats += self.send_all(writes).await?;
        Ok(stats)
    }

    /// `Count`/`Sum`: grouped per aggregate into marker + `ADD` transactions (see the module docs).
    async fn apply_adds(
        &self,
        adds: Vec<ViewWrite>,
        band: &HashSet<RecordId>,
    ) -> Result<WriteStats, AwsError> {
        let mut stats = WriteStats::default();
        let mut seen = HashSet::new();
        let mut groups: BTreeMap<(String, String, String), Vec<Contribution>> = BTreeMap::new();
        for write in adds {
            let ViewWrite::Add { key, attribute, delta, record } = write else {
                continue;
            };
            if !seen.insert(record.clone()) {
                stats.skipped += 1; // the same record twice in one call
                continue;
            }
            let (pk, sk) = view_key_of(&key);
            let in_band = band.contains(&record);
            groups
                .entry((pk.to_string(), sk.to_string(), attribute))
                .or_default()
                .push((record, delta, in_band));
        }
        // Pack whole groups (split when larger than a transaction) into transactions of at most 100
        // actions; a key is in one transaction at a time, and transactions go one after the other.
        let mut pending: Vec<Group> = Vec::new();
        let mut actions = 0;
        for ((pk, sk, attribute), records) in groups {
            // Two actions per band record (marker and band item), one per other record, one for the ADD.
            let per_chunk = match records.iter().any(|r| r.2) {
                true => (MAX_TRANSACTION_ACTIONS - 1) / 2,
                false => MAX_TRANSACTION_ACTIONS - 1,
            };
            for (i, chunk) in records.chunks(per_chunk).enumerate() {
                let chunk_actions = chunk.len() + chunk.iter().filter(|r| r.2).count();
                // A transaction may not touch an item twice: a key's next chunk starts a new one.
                if i > 0 || actions + chunk_actions + 1 > MAX_TRANSACTION_ACTIONS {
                    stats += self.transact(std::mem::take(&mut pending)).await?;
                    actions = 0;
                }
                actions += chunk_actions + 1;
                pending.push(Group {
                    pk: pk.clone(),
                    sk: sk.clone(),
                    attribute: attribute.clone(),
                    records: chunk.to_vec(),
                });
            }
        }
        if !pending.is_empty() {
            stats += self.transact(pending).await?;
        }
        Ok(stats)
    }

    /// Runs one AWS request, retried in place while its error is transient ([`super::retry::transient`]),
    /// each retry noted in this writer's [`Self::transient_log`].
    ///
    /// The unit of retry is one request, never a call that sends many: at a 20% failure rate a call of
    /// 50 requests succeeds whole once in about 70,000 tries (0.8^50), so retrying it whole never ends.
    /// Every request the writer sends is idempotent (markers, conditions, puts of the same item).
    async fn retried<T, F, Fut>(&self, call: F) -> Result<T, AwsError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, AwsError>>,
    {
        super::retry::transient(Some(&self.transient), call).await
    }

    /// The pages of a `Query` or `Scan`, as a stream of their items: `send(start)` sends one page from
    /// `ExclusiveStartKey` `start` and returns its items and `LastEvaluatedKey`. Each page is retried while
    /// its errors are transient; the stream ends after the page whose `LastEvaluatedKey` is empty.
    fn pages<'a, Fut>(
        &'a self,
        send: &'a (impl Fn(Option<DynamoKey>) -> Fut + Sync),
    ) -> impl futures::Stream<Item = Result<Vec<DynamoKey>, AwsError>> + Send + 'a
    where
        Fut: std::future::Future<Output = Result<(Vec<DynamoKey>, Option<DynamoKey>), AwsError>> + Send + 'a,
    {
        futures::stream::try_unfold(Some(None), move |start: Option<Option<DynamoKey>>| async move {
            let Some(start) = start else {
                return Ok(None);
            };
            let (items, next) = self.retried(|| send(start.clone())).await?;
            Ok(Some((items, next.map(Some))))
        })
    }

    /// Whether `record`'s idempotency marker is in the table (a strongly consistent read).
    async fn marker_exists(&self, record: &RecordId) -> Result<bool, AwsError> {
        let key =
            crate::projection::item_to_dynamodb(dynamo::marker_key(&self.key_prefix, &self.view, record));
        let out = self
            .retried(|| async {
                self.client
                    .get_item()
                    .table_name(&self.table)
                    .set_key(Some(key.clone()))
                    .consistent_read(true)
                    .projection_expression("pk")
                    .send()
                    .await
                    .map_err(from_sdk("GetItem", &self.table))
            })
            .await?;
        Ok(out.item.is_some())
    }

    /// Applies the records of `groups` each in a transaction of its own, to find those DynamoDB refuses
    /// (`reason`: why the grouped transaction failed).
    async fn one_by_one(&self, groups: Vec<Group>, reason: String) -> Result<WriteStats, AwsError> {
        let mut stats = WriteStats::default();
        if let [group] = groups.as_slice()
            && let [(record, _, _)] = group.records.as_slice()
        {
            // A refusal in the plain `ValidationException` form does not say whether the marker's condition
            // failed too: a record applied before is not a record error.
            if self.marker_exists(record).await? {
                stats.skipped += 1;
                return Ok(stats);
            }
            stats.rejected.push(RejectedWrite {
                record: record.clone(),
                pk: group.pk.clone(),
                sk: group.sk.clone(),
                reason,
            });
            return Ok(stats);
        }
        for group in groups {
            for record in group.records.iter().cloned() {
                let single = Group { records: vec![record], ..group.clone() };
                stats += self.transact(vec![single]).await?;
            }
        }
        Ok(stats)
    }

    /// Sends one transaction of `groups`, dropping records found applied already, until it commits; a
    /// group DynamoDB refuses to `ADD` is applied record by record to find the records it refuses.
    fn transact(&self, groups: Vec<Group>) -> futures::future::BoxFuture<'_, Result<WriteStats, AwsError>> {
        Box::pin(async move {
            let mut stats = WriteStats::default();
            let mut groups = groups;
            let mut backoff = FIRST_BACKOFF;
            let mut attempt = 0;
            loop {
                groups.retain(|g| !g.records.is_empty());
                if groups.is_empty() {
                    return Ok(stats);
                }
                let adds = match groups
                    .iter()
                    .map(|g| g.add(&self.key_prefix, &self.view, self.live_attempt))
                    .collect::<Result<Vec<_>, _>>()
                {
                    Ok(adds) => adds,
                    // The records' deltas together make a number DynamoDB cannot store: apply them one by
                    // one (a single record's delta always can be, it came from DynamoDB).
                    Err(reason) => {
                        stats += self.one_by_one(groups, reason).await?;
                        return Ok(stats);
                    }
                };
                let actions = dynamo::aggregate_transaction(&self.table, &adds)
                    .map_err(|e| AwsError::permanent("BuildRequest", &self.table, e.to_string()))?;
                let units = 2 * actions.len() as u64;
                if let Some(limit) = &self.limit {
                    limit.acquire(units as f64).await;
                }
                stats.requests += 1;
                // A cancellation is handled below; any other error is retried in place when transient.
                let result = self
                    .retried(|| async {
                        match (self.client.transact_write_items())
                            .set_transact_items(Some(actions.clone()))
                            .send()
                            .await
                        {
                            Err(e) if matches!(cancellation(&e), Cancelled::Other) => {
                                Err(from_sdk("TransactWriteItems", &self.table)(e))
                            }
                            other => Ok(other),
                        }
                    })
                    .await?;
                let err = match result {
                    Ok(_) => {
                        stats.applied += groups.iter().map(|g| g.records.len() as u64).sum::<u64>();
                        stats.write_units += units;
                        return Ok(stats);
                    }
                    Err(e) => e,
                };
                match cancellation(&err) {
                    Cancelled::Applied(indexes) => {
                        // Markers that exist already: those records were applied before.
                        let mut at = 0;
                        for group in &mut groups {
                            let n = group.records.len();
                            let bands = group.records.iter().filter(|r| r.2).count();
                            let mut i = 0;
                            group.records.retain(|_| {
                                let applied = indexes.contains(&(at + i));
                                i += 1;
                                applied.then(|| stats.skipped += 1);
                                !applied
                            });
                            at += n + bands + 1;
                        }
                    }
                    Cancelled::Refused(message) => {
                        stats += self.one_by_one(groups, message).await?;
                        return Ok(stats);
                    }
                    // Throttling or a conflict, reported in the cancellation: transient like any other,
                    // retried as often and noted for the status.
                    Cancelled::Retry(reason) => {
                        attempt += 1;
                        let mut e = AwsError::new(
                            "TransactWriteItems",
                            &self.table,
                            "TransactionCanceledException",
                            &format!("still cancelled after {attempt} attempts: {reason}"),
                        );
                        e.retryable = true;
                        if attempt > super::retry::MAX_RETRIES {
                            return Err(e);
                        }
                        let wait = jittered(backoff);
                        super::retry::note_retry(Some(&self.transient), &e, wait);
                        tokio::time::sleep(wait).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                    Cancelled::Other => return Err(from_sdk("TransactWriteItems", &self.table)(err)),
                }
            }
        })
    }

    /// Groups `writes` into requests and sends them, `concurrency` at a time, in rounds: every request
    /// once, then those that failed transiently again after a backoff ([`super::retry::backoff`]), each
    /// retry noted. A permanent error is returned after the round it came in (never hidden behind
    /// requests still retrying); after [`super::retry::MAX_RETRIES`] rounds the last transient error is.
    /// So an outage gives up after the backoff's total (about 5 minutes) whatever the number of requests.
    async fn send_all(&self, writes: Vec<ViewWrite>) -> Result<WriteStats, AwsError> {
        use backon::BackoffBuilder;
        let mut batcher = WriteBatcher::new(&self.table);
        let mut requests = Vec::new();
        for write in writes {
            batcher
                .push_owned(write, &mut requests)
                .map_err(|e| AwsError::permanent("BuildRequest", &self.table, e.to_string()))?;
        }
        requests.extend(batcher.flush());
        let mut backoff = super::retry::backoff().build();
        let mut stats = WriteStats::default();
        loop {
            let mut sent = futures::stream::iter(
                (requests.into_iter()).map(|r| async move { (self.send(r.clone()).await, r) }),
            )
            .buffer_unordered(self.concurrency);
            let (mut failed, mut transient, mut permanent) = (Vec::new(), Vec::new(), None);
            while let Some((result, request)) = sent.next().await {
                match result {
                    Ok(s) => stats += s,
                    Err(e) if e.retryable => {
                        failed.push(request);
                        transient.push(e);
                    }
                    Err(e) => {
                        permanent.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = permanent {
                return Err(e);
            }
            let Some(last) = transient.last() else {
                return Ok(stats);
            };
            let Some(wait) = backoff.next() else {
                return Err(last.clone());
            };
            for e in &transient {
                super::retry::note_retry(Some(&self.transient), e, wait);
            }
            tokio::time::sleep(wait).await;
            requests = failed;
        }
    }

    /// The digests of backfill attempt `attempt`'s band: the `Count`/`Sum` records its live path applied
    /// while they might also be in the export (strongly consistent `Query`s of the band partitions).
    pub async fn load_band(&self, attempt: i64) -> Result<HashSet<String>, AwsError> {
        let mut band = HashSet::new();
        for partition in dynamo::band_partitions(&self.key_prefix, &self.view, attempt) {
            let partition = &partition;
            let query = |start| async move {
                let request = (self.client.query())
                    .table_name(&self.table)
                    .consistent_read(true)
                    .key_condition_expression("pk = :p")
                    .expression_attribute_values(":p", AttributeValue::S(partition.clone()))
                    .projection_expression("sk")
                    .set_exclusive_start_key(start);
                page_of!(request, "Query", &self.table)
            };
            let mut pages = std::pin::pin!(self.pages(&query));
            while let Some(items) = pages.try_next().await? {
                for item in items {
                    if let Some(AttributeValue::S(digest)) = item.get("sk") {
                        band.insert(digest.clone());
                    }
                }
            }
        }
        Ok(band)
    }

    /// Records `records` in backfill attempt `attempt`'s band (see `crate::backfill::aggregate`) without
    /// applying them: band records the live path refused (a sum DynamoDB cannot store) and reported as
    /// record errors, which the backfill must then leave out of its base too. Idempotent puts.
    pub async fn mark_band(&self, attempt: i64, records: &[RecordId]) -> Result<(), AwsError> {
        let items: Vec<WriteRequest> = records
            .iter()
            .map(|r| dynamo::band_key(&self.key_prefix, &self.view, attempt, r))
            .map(|key| {
                dynamo::write_request_owned(key)
                    .map_err(|e| AwsError::permanent("BatchWriteItem", &self.table, e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        for chunk in items.chunks(25) {
            self.retried(|| self.batch_write(chunk.to_vec())).await?;
        }
        Ok(())
    }

    /// The key of the view's record-error ledger ([`dynamo::record_errors_key`]).
    fn ledger_key(&self) -> HashMap<String, AttributeValue> {
        crate::projection::item_to_dynamodb(dynamo::record_errors_key(&self.key_prefix, &self.view))
    }

    /// An `UpdateItem` of the ledger's `last` map (`#l`), its expression still to set.
    fn ledger_last_update(
        &self,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.ledger_key()))
            .expression_attribute_names("#l", "last")
    }

    /// Notes in the view's record-error ledger ([`dynamo::record_errors_key`]) records left out under
    /// `onRecordError: Skip`, for the operator's `status.recordErrors`:
    /// - `ids`: the records' identities (the log record's key digest, [`RecordId::digest`]), added to
    ///   the string set `ids`, so a record noted again (a redelivered batch, a retried SNS event, a Job
    ///   index run again, the export and the stream both holding it) counts once. Beyond
    ///   [`LEDGER_MAX_IDS`] identities, further records are only counted (`more`).
    /// - `named`: the newest messages, each under a key (its record's identity), in the map `last`, which
    ///   keeps the newest [`crate::projection::KEPT_RECORD_ERRORS`] (older keys removed by name: safe
    ///   among concurrent writers; a message noted again keeps its place).
    /// - `unnamed`: records left out whose identity is not known, added to `more` (not idempotent).
    ///
    /// A few `UpdateItem`s per call; record errors are rare. Errors: the AWS call's.
    pub async fn note_record_errors(
        &self,
        ids: &[String],
        named: &[(String, String)],
        unnamed: u64,
    ) -> Result<(), AwsError> {
        if ids.is_empty() && named.is_empty() && unnamed == 0 {
            return Ok(());
        }
        let key = self.ledger_key();
        let ids: Vec<String> = ids
            .iter()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key.clone()))
            .expression_attribute_names("#l", "last")
            .expression_attribute_names("#m", "more")
            .expression_attribute_values(":empty", AttributeValue::M(HashMap::new()))
            .expression_attribute_values(":u", AttributeValue::N(unnamed.to_string()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew);
        update = match ids.is_empty() {
            true => update.update_expression("ADD #m :u SET #l = if_not_exists(#l, :empty)"),
            false => update
                .update_expression("ADD #i :ids, #m :u SET #l = if_not_exists(#l, :empty)")
                .condition_expression("attribute_not_exists(#i) OR size(#i) < :cap")
                .expression_attribute_names("#i", "ids")
                .expression_attribute_values(":ids", AttributeValue::Ss(ids.clone()))
                .expression_attribute_values(":cap", AttributeValue::N(LEDGER_MAX_IDS.to_string())),
        };
        let item = match update.send().await {
            Ok(out) => out.attributes.unwrap_or_default(),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => {
                // Full: count the rest without identity.
                self.client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(key))
                    .update_expression("ADD #m :n")
                    .expression_attribute_names("#m", "more")
                    .expression_attribute_values(
                        ":n",
                        AttributeValue::N((unnamed + ids.len() as u64).to_string()),
                    )
                    .send()
                    .await
                    .map_err(from_sdk("UpdateItem", &self.table))?;
                return Ok(());
            }
            Err(e) => return Err(from_sdk("UpdateItem", &self.table)(e)),
        };
        let mut last = match item.get("last") {
            Some(AttributeValue::M(m)) => m.clone(),
            _ => HashMap::new(),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let fresh: Vec<&(String, String)> = named
            .iter()
            .rev()
            .take(crate::projection::KEPT_RECORD_ERRORS)
            .filter(|(id, _)| !last.contains_key(id))
            .collect();
        if !fresh.is_empty() {
            let mut set = self.ledger_last_update();
            let mut parts = Vec::new();
            for (i, (id, message)) in fresh.iter().enumerate() {
                let entry = AttributeValue::M(HashMap::from([
                    (
                        "t".to_string(),
                        AttributeValue::N((now + (fresh.len() - i) as u128).to_string()),
                    ),
                    (
                        "m".to_string(),
                        AttributeValue::S(message.chars().take(1_000).collect()),
                    ),
                ]));
                set = set
                    .expression_attribute_names(format!("#k{i}"), id.clone())
                    .expression_attribute_values(format!(":v{i}"), entry.clone());
                parts.push(format!("#l.#k{i} = :v{i}"));
                last.insert(id.clone(), entry);
            }
            set.update_expression(format!("SET {}", parts.join(", ")))
                .send()
                .await
                .map_err(from_sdk("UpdateItem", &self.table))?;
        }
        // Keep the newest few: remove the others by name (a key removed twice is no error).
        let mut by_time: Vec<(u128, String)> =
            last.iter().map(|(id, v)| (entry_time(v), id.clone())).collect();
        by_time.sort();
        let extra = by_time
            .len()
            .saturating_sub(crate::projection::KEPT_RECORD_ERRORS);
        if extra > 0 {
            let mut remove = self.ledger_last_update();
            let mut parts = Vec::new();
            for (i, (_, id)) in by_time.iter().take(extra).enumerate() {
                remove = remove.expression_attribute_names(format!("#k{i}"), id.clone());
                parts.push(format!("#l.#k{i}"));
            }
            remove
                .update_expression(format!("REMOVE {}", parts.join(", ")))
                .send()
                .await
                .map_err(from_sdk("UpdateItem", &self.table))?;
        }
        Ok(())
    }

    /// Notes the record the view stops at under `onRecordError: Fail`: `failing` = `message` (at most 1,000
    /// characters), `failingConfig` = `noted` (who failed and when, e.g. `<projection fingerprint>@<epoch
    /// seconds>`), so the operator reports it only while it is current.
    pub async fn note_failing_record(&self, message: &str, noted: &str) -> Result<(), AwsError> {
        let key = self.ledger_key();
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression("SET #f = :m, #c = :c")
            .expression_attribute_names("#f", "failing")
            .expression_attribute_names("#c", "failingConfig")
            .expression_attribute_values(":m", AttributeValue::S(message.chars().take(1_000).collect()))
            .expression_attribute_values(":c", AttributeValue::S(noted.to_string()))
            .send()
            .await
            .map_err(from_sdk("UpdateItem", &self.table))?;
        Ok(())
    }

    /// The view's record-error ledger (see [`Self::note_record_errors`]): what was left out (count: the
    /// identities noted plus `more`; messages oldest first), and the record the view stops at with who
    /// noted it, if any.
    pub async fn record_error_ledger(
        &self,
    ) -> Result<(crate::projection::RecordErrors, Option<(String, String)>), AwsError> {
        let key = self.ledger_key();
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(from_sdk("GetItem", &self.table))?;
        let mut errors = crate::projection::RecordErrors::default();
        let Some(item) = out.item else {
            return Ok((errors, None));
        };
        if let Some(AttributeValue::M(last)) = item.get("last") {
            let mut entries: Vec<(u128, String)> = last
                .values()
                .filter_map(|v| match v {
                    AttributeValue::M(m) => match m.get("m") {
                        Some(AttributeValue::S(text)) => Some((entry_time(v), text.clone())),
                        _ => None,
                    },
                    _ => None,
                })
                .collect();
            entries.sort();
            for (_, m) in entries {
                errors.push(m);
            }
        }
        let ids = match item.get("ids") {
            Some(AttributeValue::Ss(ids)) => ids.len() as u64,
            _ => 0,
        };
        let more = match item.get("more") {
            Some(AttributeValue::N(n)) => n.parse().unwrap_or(0),
            _ => 0,
        };
        errors.count = ids + more;
        let failing = match (item.get("failing"), item.get("failingConfig")) {
            (Some(AttributeValue::S(m)), Some(AttributeValue::S(c))) => Some((m.clone(), c.clone())),
            _ => None,
        };
        Ok((errors, failing))
    }

    /// The key of the view's live-progress item ([`dynamo::live_progress_key`]).
    fn progress_key(&self) -> HashMap<String, AttributeValue> {
        crate::projection::item_to_dynamodb(dynamo::live_progress_key(&self.key_prefix, &self.view))
    }

    /// Writes a projector function's progress report to the view's live-progress item (see
    /// [`crate::functions::progress`]): one `UpdateItem`. Finished records set `appliedAt`, `lagMs` and
    /// `newestCreatedMs` (epoch milliseconds) and add to `records`; a failure sets `failedAt` and
    /// `failure` (its first 1,000 characters). Reports of concurrent instances overwrite each other.
    /// Errors: the AWS call's.
    pub async fn note_live_progress(&self, report: &LiveReport) -> Result<(), AwsError> {
        let n = |v: i64| AttributeValue::N(v.to_string());
        let mut sets = Vec::new();
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.progress_key()));
        if report.records > 0 {
            sets.push("appliedAt = :t");
            update = update.expression_attribute_values(":t", n(report.at_ms));
            if let Some(lag) = report.lag_ms {
                sets.push("lagMs = :l");
                update = update.expression_attribute_values(":l", n(lag));
            }
            if let Some(newest) = report.newest_created_ms {
                sets.push("newestCreatedMs = :c");
                update = update.expression_attribute_values(":c", n(newest));
            }
        }
        if let Some(failure) = &report.failure {
            sets.extend(["failedAt = :f", "failure = :m"]);
            update = update
                .expression_attribute_values(":f", n(report.at_ms))
                .expression_attribute_values(":m", AttributeValue::S(failure.chars().take(1_000).collect()));
        }
        // Neither records nor a failure: nothing to report.
        if sets.is_empty() {
            return Ok(());
        }
        let mut expression = format!("SET {}", sets.join(", "));
        if report.records > 0 {
            expression.push_str(" ADD records :r");
            update = update.expression_attribute_values(":r", n(report.records as i64));
        }
        update
            .update_expression(expression)
            .send()
            .await
            .map_err(from_sdk("UpdateItem", &self.table))?;
        Ok(())
    }

    /// The view's live-progress item (see [`Self::note_live_progress`]), read strongly consistently;
    /// `None` when no projector function reported. Errors: the AWS call's.
    pub async fn live_progress(&self) -> Result<Option<ProgressItem>, AwsError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(self.progress_key()))
            .consistent_read(true)
            .send()
            .await
            .map_err(from_sdk("GetItem", &self.table))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let number = |name: &str| match item.get(name) {
            Some(AttributeValue::N(v)) => v.parse::<i64>().ok(),
            _ => None,
        };
        Ok(Some(ProgressItem {
            applied_at_ms: number("appliedAt"),
            lag_ms: number("lagMs"),
            newest_created_ms: number("newestCreatedMs"),
            records: number("records").unwrap_or(0).max(0) as u64,
            failed_at_ms: number("failedAt"),
            failure: match item.get("failure") {
                Some(AttributeValue::S(m)) => Some(m.clone()),
                _ => None,
            },
        }))
    }

    /// Folds backfill attempt `attempt`'s base into each aggregate: `SET #a = <live attribute> + :base`
    /// (the records the live path of this attempt applied, plus the export's records it did not), once
    /// per attempt (`kappaFolded`). For a later attempt, aggregates with live records but no base are set
    /// to their live part too, so nothing an earlier attempt counted stays. `bases`: `(pk, sk, attribute)`
    /// → base. Aggregates DynamoDB cannot store come back in [`WriteStats::rejected`]-like form in the
    /// error list of the result.
    pub async fn fold(
        &self,
        attempt: i64,
        bases: BTreeMap<(String, String, String), Number>,
    ) -> Result<(WriteStats, Vec<String>), AwsError> {
        let live = dynamo::live_attribute(&self.view, attempt);
        let mut stats = WriteStats::default();
        let mut refused = Vec::new();
        let mut updates = futures::stream::iter(
            bases
                .into_iter()
                .map(|((pk, sk, attribute), base)| self.fold_one(pk, sk, attribute, base, attempt, &live)),
        )
        .buffer_unordered(self.concurrency);
        while let Some(result) = updates.next().await {
            match result? {
                Ok(s) => stats += s,
                Err(message) => refused.push(message),
            }
        }
        drop(updates);
        Ok((stats, refused))
    }

    /// After every base of backfill attempt `attempt` is folded ([`Self::fold`], possibly in several
    /// calls, one per bucket): a later attempt also sets the aggregates that got live records but no base
    /// to their live part, so nothing an earlier attempt counted stays. Only this view's aggregates (those
    /// with its [`dynamo::live_attribute`]) not folded yet. Nothing to do for attempt 1.
    pub async fn fold_rest(&self, attempt: i64) -> Result<WriteStats, AwsError> {
        match attempt > 1 {
            true => {
                let live = dynamo::live_attribute(&self.view, attempt);
                self.fold_live_only(attempt, &live).await
            }
            false => Ok(WriteStats::default()),
        }
    }

    async fn fold_one(
        &self,
        pk: String,
        sk: String,
        attribute: String,
        base: Number,
        attempt: i64,
        live: &str,
    ) -> Result<Result<WriteStats, String>, AwsError> {
        let key = HashMap::from([
            ("pk".to_string(), AttributeValue::S(pk.clone())),
            ("sk".to_string(), AttributeValue::S(sk.clone())),
        ]);
        if let Some(limit) = &self.limit {
            limit.acquire(1.0).await;
        }
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression("SET #a = if_not_exists(#l, :z) + :b, #f = :n")
            .condition_expression("attribute_not_exists(#f) OR #f < :n")
            .expression_attribute_names("#a", attribute)
            .expression_attribute_names("#l", live)
            .expression_attribute_names("#f", dynamo::FOLDED_ATTRIBUTE)
            .expression_attribute_values(":z", AttributeValue::N("0".into()))
            .expression_attribute_values(":b", AttributeValue::N(base.into_string()))
            .expression_attribute_values(":n", AttributeValue::N(attempt.to_string()));
        if attempt > 1 {
            update = update
                .update_expression("SET #a = if_not_exists(#l, :z) + :b, #f = :n REMOVE #p")
                .expression_attribute_names("#p", dynamo::live_attribute(&self.view, attempt - 1));
        }
        let mut stats = WriteStats { requests: 1, ..WriteStats::default() };
        // A failed condition (folded already) and a refusal are answers; other errors are retried in
        // place when transient.
        let answer = self
            .retried(|| async {
                match update.clone().send().await {
                    Ok(_) => Ok(Ok(())),
                    Err(e)
                        if matches!(
                            e.code(),
                            Some("ConditionalCheckFailedException" | "ValidationException")
                        ) =>
                    {
                        Ok(Err(e))
                    }
                    Err(e) => Err(from_sdk("UpdateItem", &self.table)(e)),
                }
            })
            .await?;
        match answer {
            Ok(()) => {
                stats.applied = 1;
                stats.write_units = 1;
            }
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => stats.skipped = 1,
            Err(e) => {
                return Ok(Err(format!(
                    "the total of pk={pk:?}, sk={sk:?} cannot be stored: {}",
                    e.message().unwrap_or_default()
                )));
            }
        }
        Ok(Ok(stats))
    }

    /// Attempt `attempt` > 1: aggregates its live path touched that the export had no record for.
    async fn fold_live_only(&self, attempt: i64, live: &str) -> Result<WriteStats, AwsError> {
        let mut stats = WriteStats::default();
        let scan = |start| async move {
            let request = (self.client.scan())
                .table_name(&self.table)
                .filter_expression(
                    "begins_with(pk, :p) AND attribute_exists(#l) AND (attribute_not_exists(#f) OR #f < :n)",
                )
                .expression_attribute_names("#l", live)
                .expression_attribute_names("#f", dynamo::FOLDED_ATTRIBUTE)
                .expression_attribute_values(":p", AttributeValue::S(self.key_prefix.clone()))
                .expression_attribute_values(":n", AttributeValue::N(attempt.to_string()))
                .set_exclusive_start_key(start);
            page_of!(request, "Scan", &self.table)
        };
        let mut pages = std::pin::pin!(self.pages(&scan));
        while let Some(items) = pages.try_next().await? {
            for item in items {
                let (Some(AttributeValue::S(pk)), Some(AttributeValue::S(sk))) =
                    (item.get("pk"), item.get("sk"))
                else {
                    continue;
                };
                for attribute in [
                    crate::projection::COUNT_ATTRIBUTE,
                    crate::projection::SUM_ATTRIBUTE,
                ] {
                    if item.contains_key(attribute) {
                        let zero = Number::from(0);
                        if let Ok(s) = self
                            .fold_one(pk.clone(), sk.clone(), attribute.to_string(), zero, attempt, live)
                            .await?
                        {
                            stats += s;
                        }
                    }
                }
            }
        }
        Ok(stats)
    }

    async fn send(&self, request: Request) -> Result<WriteStats, AwsError> {
        if let Some(limit) = &self.limit {
            let units = match &request {
                Request::Batch(items) => items.len(),
                Request::Conditional(_) | Request::Extreme(_) => 1,
            };
            limit.acquire(units as f64).await;
        }
        match request {
            Request::Batch(items) => self.batch_write(items).await,
            Request::Conditional(put) => {
                let request = self.client.put_item().set_item(Some(put.item));
                let result = with_condition!(request, put, &self.table).send().await;
                self.conditional_outcome("PutItem", result)
            }
            Request::Extreme(update) => {
                let request = (self.client.update_item()).set_key(Some(update.key));
                let request = request.update_expression(update.update_expression);
                let result = with_condition!(request, update, &self.table).send().await;
                self.conditional_outcome("UpdateItem", result)
            }
        }
    }

    async fn batch_write(&self, mut items: Vec<WriteRequest>) -> Result<WriteStats, AwsError> {
        let mut stats = WriteStats { applied: items.len() as u64, ..WriteStats::default() };
        let mut backoff = FIRST_BACKOFF;
        let mut items_len = items.len();
        for attempt in 1..=BATCH_ATTEMPTS {
            stats.requests += 1;
            let sent = items_len;
            items = super::dynamodb::batch_write_once(&self.client, &self.table, items)
                .await
                .map_err(from_sdk("BatchWriteItem", &self.table))?;
            stats.write_units += (sent - items.len()) as u64;
            items_len = items.len();
            if items.is_empty() {
                return Ok(stats);
            }
            if attempt < BATCH_ATTEMPTS {
                tokio::time::sleep(jittered(backoff)).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        let mut e = AwsError::new(
            "BatchWriteItem",
            &self.table,
            "UnprocessedItems",
            &format!(
                "{} items were still unprocessed after {BATCH_ATTEMPTS} attempts: the table is throttled; \
                 the operator retries them later (raise the table's capacity or lower \
                 spec.backfill.writeCapacityPercent)",
                items.len()
            ),
        );
        e.retryable = true;
        Err(e)
    }

    /// The stats of one conditional write: applied, or skipped when its condition failed (an equal or
    /// better value is stored).
    fn conditional_outcome<O, E>(
        &self,
        operation: &'static str,
        result: Result<O, aws_sdk_dynamodb::error::SdkError<E, aws_smithy_runtime_api::http::Response>>,
    ) -> Result<WriteStats, AwsError>
    where
        E: ProvideErrorMetadata + std::fmt::Debug,
    {
        let mut stats = WriteStats { requests: 1, write_units: 1, ..WriteStats::default() };
        match result {
            Ok(_) => stats.applied = 1,
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => stats.skipped = 1,
            Err(e) => return Err(from_sdk(operation, &self.table)(e)),
        }
        Ok(stats)
    }
}

/// Of several `Latest` writes to one view key, keeps the one the table would keep (greatest order, then
/// greatest record digest); of several `Min`/`Max` writes to one attribute of one key, the most extreme.
/// Returns the writes to send and how many were dropped. Other writes pass unchanged.
fn newest_only(writes: Vec<ViewWrite>) -> (Vec<ViewWrite>, u64) {
    let mut newest: HashMap<(String, String, String), usize> = HashMap::new();
    let mut keep: Vec<Option<ViewWrite>> = Vec::with_capacity(writes.len());
    let mut dropped = 0;
    for write in writes {
        let slot = match &write {
            ViewWrite::PutIfNewer { .. } => String::new(),
            ViewWrite::Extreme { attribute, .. } => attribute.clone(),
            _ => {
                keep.push(Some(write));
                continue;
            }
        };
        let (pk, sk) = write.view_key();
        let key = (pk.to_string(), sk.to_string(), slot);
        if let Some(&at) = newest.get(&key) {
            dropped += 1;
            let held = keep[at].as_ref().expect("the index points at a kept write");
            if beats(&write, held) {
                keep[at] = Some(write);
            }
            continue;
        }
        newest.insert(key, keep.len());
        keep.push(Some(write));
    }
    (keep.into_iter().flatten().collect(), dropped)
}

/// Keeps, of the `Latest`/`Min`/`Max` writes given to it, only the one per view item and attribute the
/// table would keep in the end ([`beats`]); a backfill reduces a data file's writes with it before
/// sending them, so it writes about one item per key instead of one per record.
#[derive(Debug, Default)]
pub struct Reducer {
    slots: HashMap<(String, String, String), ViewWrite>,
    /// Writes dropped for a winning one.
    pub dropped: u64,
}

impl Reducer {
    /// Takes `write` if it reduces (gives `None`), else gives it back.
    pub fn push(&mut self, write: ViewWrite) -> Option<ViewWrite> {
        let slot = match &write {
            ViewWrite::PutIfNewer { .. } => String::new(),
            ViewWrite::Extreme { attribute, .. } => attribute.clone(),
            _ => return Some(write),
        };
        let (pk, sk) = write.view_key();
        let key = (pk.to_string(), sk.to_string(), slot);
        match self.slots.get_mut(&key) {
            Some(held) => {
                self.dropped += 1;
                if beats(&write, held) {
                    *held = write;
                }
            }
            None => {
                self.slots.insert(key, write);
            }
        }
        None
    }

    /// How many writes it holds.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The writes it holds, emptying it.
    pub fn take(&mut self) -> Vec<ViewWrite> {
        self.slots.drain().map(|(_, w)| w).collect()
    }
}

/// Whether `a` would replace `b` in the table (same key, both `Latest` or both the same extreme).
pub fn beats(a: &ViewWrite, b: &ViewWrite) -> bool {
    match (a, b) {
        (
            ViewWrite::PutIfNewer { order, record, .. },
            ViewWrite::PutIfNewer { order: held, record: held_record, .. },
        ) => (order.value(), record) > (held.value(), held_record),
        (ViewWrite::Extreme { value, greatest, .. }, ViewWrite::Extreme { value: held, .. }) => {
            match greatest {
                true => value > held,
                false => value < held,
            }
        }
        _ => false,
    }
}

/// One record's part in an aggregate: its identity, its delta, whether it is in the live path's band.
type Contribution = (RecordId, Number, bool);

/// A DynamoDB item or key in the SDK's form.
type DynamoKey = HashMap<String, AttributeValue>;

/// The records of one aggregate in a transaction.
#[derive(Clone, Debug)]
struct Group {
    pk: String,
    sk: String,
    attribute: String,
    records: Vec<Contribution>,
}

impl Group {
    fn add(&self, key_prefix: &str, view: &str, live_attempt: Option<i64>) -> Result<AggregateAdd, String> {
        let mut delta = Number::from(0);
        for (_, d, _) in &self.records {
            delta = delta.checked_add(d).map_err(|e| e.to_string())?;
        }
        Ok(AggregateAdd {
            key: Item::from([
                ("pk".to_string(), crate::projection::Value::S(self.pk.clone())),
                ("sk".to_string(), crate::projection::Value::S(self.sk.clone())),
            ]),
            attribute: self.attribute.clone(),
            delta,
            markers: self
                .records
                .iter()
                .map(|(r, _, _)| dynamo::marker_key(key_prefix, view, r))
                .collect(),
            bands: match live_attempt {
                Some(attempt) => (self.records.iter().filter(|r| r.2))
                    .map(|(r, _, _)| dynamo::band_key(key_prefix, view, attempt, r))
                    .collect(),
                None => Vec::new(),
            },
            shadow: live_attempt.map(|a| dynamo::live_attribute(view, a)),
        })
    }
}

/// What a failed `TransactWriteItems` means for its records.
#[derive(Debug, PartialEq)]
enum Cancelled {
    /// The actions at these indexes are markers that exist: their records were applied before.
    Applied(HashSet<usize>),
    /// DynamoDB refused an action's values (a sum it cannot store): find the record.
    Refused(String),
    /// A conflict with another transaction, throttling, capacity: send it again later.
    Retry(String),
    /// Anything else: the SDK error decides.
    Other,
}

/// Reads a failed `TransactWriteItems`: its `CancellationReasons` (one per action, in order; codes per
/// <https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_TransactWriteItems.html>), or a
/// plain `ValidationException` about a number, which some implementations return instead of a
/// `ValidationError` reason.
fn cancellation<R>(
    err: &aws_sdk_dynamodb::error::SdkError<
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError,
        R,
    >,
) -> Cancelled {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError as E;
    let Some(service) = err.as_service_error() else {
        return Cancelled::Other;
    };
    match service {
        E::TransactionCanceledException(c) => {
            let reasons = c.cancellation_reasons();
            let code =
                |r: &aws_sdk_dynamodb::types::CancellationReason| r.code().unwrap_or("None").to_string();
            let applied: HashSet<usize> = reasons
                .iter()
                .enumerate()
                .filter(|(_, r)| code(r) == "ConditionalCheckFailed")
                .map(|(i, _)| i)
                .collect();
            // Records applied before are dropped first: the rest may well be accepted.
            if !applied.is_empty() {
                return Cancelled::Applied(applied);
            }
            if let Some(r) = reasons.iter().find(|r| code(r) == "ValidationError") {
                return Cancelled::Refused(r.message().unwrap_or("ValidationError").to_string());
            }
            let codes: Vec<String> = reasons.iter().map(code).filter(|c| c != "None").collect();
            Cancelled::Retry(format!("cancellation reasons {codes:?}"))
        }
        E::TransactionInProgressException(e) => Cancelled::Retry(e.to_string()),
        other if other.code() == Some("ValidationException") => {
            let message = other.message().unwrap_or_default();
            let lower = message.to_ascii_lowercase();
            if lower.contains("number") || lower.contains("significant digits") || lower.contains("overflow")
            {
                Cancelled::Refused(message.to_string())
            } else {
                Cancelled::Other
            }
        }
        _ => Cancelled::Other,
    }
}

/// `base` plus up to 100% random jitter (from the clock: good enough to spread retries).
fn jittered(base: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    base + base.mul_f64(f64::from(nanos % 1000) / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::{Item, Value};

    /// A `Count` contribution of 1 to the view item `pk`/`COUNT` from the record with digest source `record`.
    pub(super) fn count_add(pk: &str, record: &str) -> ViewWrite {
        ViewWrite::Add {
            key: Item::from([
                ("pk".into(), Value::S(pk.into())),
                ("sk".into(), Value::S("COUNT".into())),
            ]),
            attribute: "count".into(),
            delta: Number::from(1),
            record: RecordId::new(&Value::S(record.into()), None).unwrap(),
        }
    }

    fn latest(pk: &str, order: &str, tag: &str) -> ViewWrite {
        let mut item = Item::new();
        item.insert("pk".into(), Value::S(pk.into()));
        item.insert("sk".into(), Value::S("LATEST".into()));
        item.insert("tag".into(), Value::S(tag.into()));
        ViewWrite::PutIfNewer {
            item,
            order_attribute: "seq".into(),
            order: order.parse().unwrap(),
            record: tag.into(),
        }
    }

    fn tag(w: &ViewWrite) -> &str {
        match w {
            ViewWrite::PutIfNewer { item, .. } => item["tag"].as_s().unwrap(),
            _ => "put",
        }
    }

    #[test]
    fn only_the_newest_latest_write_per_key_is_sent() {
        // (`b1` < `b2-again` as record digests stand-ins.)
        let put = ViewWrite::Put {
            item: Item::from([
                ("pk".into(), Value::S("a".into())),
                ("sk".into(), Value::S("1".into())),
            ]),
        };
        let writes = vec![
            latest("p#1", "5", "a5"),
            put.clone(),
            latest("p#2", "1", "b1"),
            latest("p#1", "9", "a9"),
            latest("p#1", "7", "a7"),
            latest("p#2", "1.0", "b0-again"),
            latest("p#2", "1.0", "b2-again"),
        ];
        let (kept, dropped) = newest_only(writes);
        assert_eq!(dropped, 4);
        let tags: Vec<&str> = kept.iter().map(tag).collect();
        // The newest of each key, in the place of the key's first write; equal orders keep the greater
        // record, as the table's condition does.
        assert_eq!(tags, ["a9", "put", "b2-again"]);
    }

    #[test]
    fn the_limit_is_a_share_of_provisioned_or_on_demand_maximum_capacity() {
        assert_eq!(write_limit(Some(1000), None, 50), Some(500.0));
        assert_eq!(write_limit(None, Some(4000), 25), Some(1000.0));
        assert_eq!(
            write_limit(Some(0), None, 50),
            None,
            "on demand without a maximum: no limit"
        );
        assert_eq!(write_limit(None, None, 50), None);
        assert_eq!(
            write_limit(Some(1), None, 1),
            Some(1.0),
            "never below one write a second"
        );
    }

    #[test]
    fn the_bucket_grants_a_seconds_burst_then_refills_at_its_rate() {
        // A full bucket of 10 a second grants 10 at once, then asks the next 10 to wait a second.
        let (left, wait) = take(10.0, 0.0, 10.0, 10.0);
        assert_eq!((left, wait), (0.0, None));
        let (left, wait) = take(left, 0.0, 10.0, 10.0);
        assert_eq!((left, wait), (0.0, Some(Duration::from_secs(1))));
        // Half a second later, 5 units are there: a request for 5 is granted.
        assert_eq!(take(0.0, 0.5, 5.0, 10.0), (0.0, None));
        // The bucket never holds more than a second's worth, and a request larger than that is capped.
        assert_eq!(take(0.0, 60.0, 25.0, 10.0), (0.0, None));
    }

    #[test]
    fn jitter_stays_within_double_the_base() {
        let base = Duration::from_millis(100);
        let j = jittered(base);
        assert!(j >= base && j < base * 2, "{j:?}");
    }

    /// A DynamoDB that answers every third request with a 500 `InternalServerError` and the others with
    /// success (`{}`), counting requests per operation (the `X-Amz-Target`).
    #[derive(Clone, Debug, Default)]
    struct EveryThirdFails {
        requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl aws_smithy_runtime_api::client::http::HttpConnector for EveryThirdFails {
        fn call(
            &self,
            request: aws_smithy_runtime_api::client::orchestrator::HttpRequest,
        ) -> aws_smithy_runtime_api::client::http::HttpConnectorFuture {
            let target = request.headers().get("x-amz-target").unwrap_or_default();
            let mut requests = self.requests.lock().unwrap();
            requests.push(target.rsplit('.').next().unwrap_or_default().to_string());
            let (status, body) = match requests.len() % 3 {
                0 => (
                    500,
                    r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"boom"}"#,
                ),
                _ => (200, "{}"),
            };
            respond(status, body.to_string())
        }
    }

    /// A DynamoDB JSON answer of `status` with `body`.
    pub(super) fn respond(
        status: u16,
        body: String,
    ) -> aws_smithy_runtime_api::client::http::HttpConnectorFuture {
        let mut response = aws_smithy_runtime_api::client::orchestrator::HttpResponse::new(
            status.try_into().unwrap(),
            aws_smithy_types::body::SdkBody::from(body),
        );
        response
            .headers_mut()
            .insert("content-type", "application/x-amz-json-1.0");
        aws_smithy_runtime_api::client::http::HttpConnectorFuture::ready(Ok(response))
    }

    /// A DynamoDB client over `http`, without the SDK's own retries (an answer is final).
    /// Serves every request of a client through one scripted connector.
    #[derive(Debug)]
    struct ConnectorClient<C>(C);

    impl<C> aws_smithy_runtime_api::client::http::HttpClient for ConnectorClient<C>
    where
        C: aws_smithy_runtime_api::client::http::HttpConnector + Clone + 'static,
    {
        fn http_connector(
            &self,
            _: &aws_smithy_runtime_api::client::http::HttpConnectorSettings,
            _: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        ) -> aws_smithy_runtime_api::client::http::SharedHttpConnector {
            aws_smithy_runtime_api::client::http::SharedHttpConnector::new(self.0.clone())
        }
    }

    /// A DynamoDB client (no retries, test credentials) whose every request `connector` answers.
    pub(super) fn dynamodb_over(
        connector: impl aws_smithy_runtime_api::client::http::HttpConnector + Clone + 'static,
    ) -> aws_sdk_dynamodb::Client {
        let http = ConnectorClient(connector);
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("eu-west-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "AKIDTEST", "secret", None, None, "test",
            ))
            .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
            .http_client(http)
            .build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }

    /// The fault-injection end-to-end run of CI stop 31: under a steady share of failing requests, a call
    /// of many requests retried whole never finished (each pass met a failure somewhere), its backoff
    /// growing to 40 s. Retried request by request, every write lands, each failure retried once.
    #[tokio::test(start_paused = true)]
    async fn a_call_of_many_requests_finishes_when_every_third_request_fails() {
        let dynamodb = EveryThirdFails::default();
        let writer = ViewTableWriter::new(dynamodb_over(dynamodb.clone()), "views", "v#", 1);
        let mut writes: Vec<ViewWrite> = (0..30)
            .map(|i| latest(&format!("p#{i}"), "1", &format!("r{i}")))
            .collect();
        writes.extend((0..60).map(|i| ViewWrite::Put {
            item: Item::from([
                ("pk".into(), Value::S("log".into())),
                ("sk".into(), Value::S(format!("{i:03}"))),
            ]),
        }));
        writes.extend((0..3).map(|i| count_add(&format!("c#{i}"), &format!("a{i}"))));
        let stats = writer.apply(writes).await.expect("every write applied");
        assert_eq!(stats.applied, 30 + 60 + 3, "{stats:?}");
        let requests = dynamodb.requests.lock().unwrap().clone();
        let count = |op: &str| requests.iter().filter(|r| *r == op).count();
        // 1 TransactWriteItems, 30 PutItems and 3 BatchWriteItems succeeded; every third request failed
        // and was retried alone (a retry follows a failure, so it succeeds).
        let failed = requests.len() / 3;
        assert_eq!(requests.len() - failed, 1 + 30 + 3, "{requests:?}");
        assert_eq!(
            (
                count("TransactWriteItems"),
                count("PutItem") + count("BatchWriteItem")
            ),
            (1, requests.len() - 1),
            "{requests:?}"
        );
        assert_eq!(writer.transient_log().get().count as usize, failed);
    }
}

/// Break probes (branch break15) of the per-request retry of [`ViewTableWriter`], against a fake
/// DynamoDB that keeps idempotency markers and counters as a real table would.
#[cfg(test)]
mod break15 {
    use std::collections::{HashMap, HashSet};
    use std::sync::{Arc, Mutex};

    use super::tests::count_add;
    use super::*;
    use crate::projection::{Item, Value};

    /// What the fake does with request number `n` (0-based, all operations) of operation `op`.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Fault {
        None,
        /// A 500 before anything is applied.
        Fail,
        /// Applies the request, then answers 500 (the response is lost).
        LoseResponse,
        /// A 400 ValidationException (permanent).
        Permanent,
        /// A TransactionCanceledException whose reasons are all ThrottlingError (nothing applied).
        CancelThrottled,
    }

    type Policy = Arc<dyn Fn(usize, &str, &str) -> Fault + Send + Sync>;

    #[derive(Clone)]
    struct Fake {
        policy: Policy,
        requests: Arc<Mutex<Vec<String>>>,
        markers: Arc<Mutex<HashSet<String>>>,
        counters: Arc<Mutex<HashMap<String, i64>>>,
    }

    impl Fake {
        /// The counters' values, in no particular order.
        fn counter_values(&self) -> Vec<i64> {
            self.counters.lock().unwrap().values().copied().collect()
        }
    }

    impl std::fmt::Debug for Fake {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Fake")
        }
    }

    /// DynamoDB's TransactionCanceledException with `reasons`, one per action.
    fn cancelled(
        reasons: Vec<serde_json::Value>,
    ) -> aws_smithy_runtime_api::client::http::HttpConnectorFuture {
        respond(
            400,
            serde_json::json!({
                "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
                "message": "Transaction cancelled",
                "CancellationReasons": reasons,
            })
            .to_string(),
        )
    }

    fn key_of(item: &serde_json::Value) -> String {
        format!("{}|{}", item["pk"], item["sk"])
    }

    use super::tests::{dynamodb_over, respond};

    impl aws_smithy_runtime_api::client::http::HttpConnector for Fake {
        fn call(
            &self,
            request: aws_smithy_runtime_api::client::orchestrator::HttpRequest,
        ) -> aws_smithy_runtime_api::client::http::HttpConnectorFuture {
            let target = request.headers().get("x-amz-target").unwrap_or_default();
            let op = target.rsplit('.').next().unwrap_or_default().to_string();
            let body: serde_json::Value =
                serde_json::from_slice(request.body().bytes().unwrap_or_default()).unwrap_or_default();
            let n = {
                let mut r = self.requests.lock().unwrap();
                r.push(op.clone());
                r.len() - 1
            };
            let pk = body["Item"]["pk"]["S"].as_str().unwrap_or_default().to_string();
            let fault = (self.policy)(n, &op, &pk);
            let err500 =
                r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"boom"}"#;
            match fault {
                Fault::Fail => return respond(500, err500.into()),
                Fault::Permanent => {
                    return respond(
                        400,
                        r#"{"__type":"com.amazon.coral.validate#ValidationException","message":"bad item"}"#
                            .into(),
                    );
                }
                Fault::CancelThrottled => {
                    let k = body["TransactItems"].as_array().map_or(0, Vec::len);
                    let reasons: Vec<_> = (0..k)
                        .map(|_| serde_json::json!({"Code": "ThrottlingError", "Message": "slow down"}))
                        .collect();
                    return cancelled(reasons);
                }
                _ => {}
            }
            if op == "TransactWriteItems" {
                let actions = body["TransactItems"].as_array().cloned().unwrap_or_default();
                let mut markers = self.markers.lock().unwrap();
                let reasons: Vec<bool> = actions
                    .iter()
                    .map(|a| {
                        a["Put"]["ConditionExpression"].is_string()
                            && markers.contains(&key_of(&a["Put"]["Item"]))
                    })
                    .collect();
                if reasons.iter().any(|r| *r) {
                    let reasons: Vec<_> = reasons
                        .iter()
                        .map(|r| match r {
                            true => {
                                serde_json::json!({"Code": "ConditionalCheckFailed", "Message": "exists"})
                            }
                            false => serde_json::json!({"Code": "None"}),
                        })
                        .collect();
                    return cancelled(reasons);
                }
                let mut counters = self.counters.lock().unwrap();
                for a in &actions {
                    if a["Put"]["ConditionExpression"].is_string() {
                        markers.insert(key_of(&a["Put"]["Item"]));
                    }
                    if a["Update"].is_object() {
                        let d: i64 = a["Update"]["ExpressionAttributeValues"][":d"]["N"]
                            .as_str()
                            .unwrap()
                            .parse()
                            .unwrap();
                        *counters.entry(key_of(&a["Update"]["Key"])).or_default() += d;
                    }
                }
            }
            match fault {
                Fault::LoseResponse => respond(500, err500.into()),
                _ => respond(200, "{}".into()),
            }
        }
    }

    fn fake(
        policy: impl Fn(usize, &str, &str) -> Fault + Send + Sync + 'static,
        concurrency: usize,
    ) -> (Fake, ViewTableWriter) {
        let fake = Fake {
            policy: Arc::new(policy),
            requests: Arc::default(),
            markers: Arc::default(),
            counters: Arc::default(),
        };
        let writer = ViewTableWriter::new(dynamodb_over(fake.clone()), "views", "v#", concurrency);
        (fake, writer)
    }

    fn count_adds(keys: usize, per_key: usize) -> Vec<ViewWrite> {
        (0..keys)
            .flat_map(|k| (0..per_key).map(move |r| count_add(&format!("c#{k}"), &format!("k{k}r{r}"))))
            .collect()
    }

    fn latests(n: usize) -> Vec<ViewWrite> {
        (0..n)
            .map(|i| {
                let mut item = Item::new();
                item.insert("pk".into(), Value::S(format!("p#{i}")));
                item.insert("sk".into(), Value::S("LATEST".into()));
                ViewWrite::PutIfNewer {
                    item,
                    order_attribute: "seq".into(),
                    order: "1".parse().unwrap(),
                    record: format!("r{i}"),
                }
            })
            .collect()
    }

    fn puts(n: usize) -> Vec<ViewWrite> {
        (0..n)
            .map(|i| ViewWrite::Put {
                item: Item::from([
                    ("pk".into(), Value::S(format!("p{i}"))),
                    ("sk".into(), Value::S("x".into())),
                ]),
            })
            .collect()
    }

    /// Input: Count adds, 3 keys × 150 records (several transactions, a key split over two), where every
    /// TransactWriteItems is applied by the fake but its first response is lost (500 after commit).
    /// Expected: each counter is 150 (the retry finds the markers, nothing counted twice), the call
    /// succeeds, and the lost responses are counted as transient errors.
    /// PASSES.
    #[tokio::test(start_paused = true)]
    async fn count_adds_whose_committed_response_is_lost_are_counted_once() {
        let lose = Arc::new(Mutex::new(HashSet::<usize>::new()));
        let seen_tx = Arc::new(Mutex::new(0usize));
        let (seen, l) = (seen_tx.clone(), lose.clone());
        let (fake, writer) = fake(
            move |n, op, _| {
                if op != "TransactWriteItems" {
                    return Fault::None;
                }
                let mut s = seen.lock().unwrap();
                *s += 1;
                // Odd-numbered transaction requests (1st, 3rd, ...) lose their response.
                if *s % 2 == 1 {
                    l.lock().unwrap().insert(n);
                    Fault::LoseResponse
                } else {
                    Fault::None
                }
            },
            4,
        );
        let stats = writer.apply(count_adds(3, 150)).await.expect("applied");
        let counters = fake.counters.lock().unwrap().clone();
        assert_eq!(counters.len(), 3, "{counters:?}");
        for (k, v) in &counters {
            assert_eq!(*v, 150, "counter {k} counted twice or lost: {counters:?}");
        }
        assert_eq!(stats.applied + stats.skipped, 450, "{stats:?}");
        assert_eq!(
            writer.transient_log().get().count as usize,
            lose.lock().unwrap().len()
        );
    }

    /// Input: 40 Puts and 20 Count adds, every request fails with a 500, forever.
    /// Expected: the call gives up with a retryable error after MAX_RETRIES per request, in bounded
    /// (virtual) time, without hanging; no counter changed.
    /// PASSES (the Count transaction goes first and gives up after 21 attempts, 444 s virtual).
    #[tokio::test(start_paused = true)]
    async fn every_request_failing_gives_up_with_a_retryable_error() {
        let (fake, writer) = fake(|_, _, _| Fault::Fail, 4);
        let mut writes = puts(40);
        writes.extend(count_adds(2, 10));
        let started = tokio::time::Instant::now();
        let out = writer.apply(writes).await;
        let waited = started.elapsed();
        let err = out.expect_err("cannot succeed");
        assert!(err.retryable, "{err:?}");
        assert!(waited < Duration::from_secs(30 * 60), "waited {waited:?}");
        assert!(fake.counters.lock().unwrap().is_empty());
        eprintln!(
            "requests {} waited {waited:?} transient {}",
            fake.requests.lock().unwrap().len(),
            writer.transient_log().get().count
        );
    }

    /// Input: 20 Latest writes (conditional PutItems); the one of `p#7` is refused (400 ValidationException), every other Put fails with a
    /// 500 forever.
    /// Expected (claim: "permanent errors return at once"): the call returns the permanent error promptly.
    /// FAILED before the fix (PASSES now; see the commit that fixed it): the call returns a *retryable* InternalServerError, the permanent ValidationException is
    /// hidden: `send_all` keeps the first error in completion order, and p#7 starts only after requests
    /// 0-3 (concurrency 4) have spent ~7 min each exhausting their retries. The caller will retry the
    /// whole call as transient instead of surfacing the refusal.
    #[tokio::test(start_paused = true)]
    async fn a_permanent_error_among_persistently_failing_requests_returns_at_once() {
        let (_fake, writer) = fake(
            |_, _, pk| match pk {
                "p#7" => Fault::Permanent,
                _ => Fault::Fail,
            },
            4,
        );
        let started = tokio::time::Instant::now();
        let err = writer.apply(latests(20)).await.expect_err("refused");
        let waited = started.elapsed();
        assert!(!err.retryable, "the permanent error is returned: {err:?}");
        assert!(
            waited < Duration::from_secs(10),
            "a permanent error returned only after {waited:?} of retrying the other requests"
        );
    }

    /// Input: 20 Latest writes (conditional PutItems); `p#7` is refused (400), every other succeeds.
    /// Expected: the permanent error is returned, not retried (one request for p#7), others applied.
    /// PASSES.
    #[tokio::test(start_paused = true)]
    async fn a_permanent_error_mid_batch_is_not_retried() {
        let (fake, writer) = fake(
            |_, _, pk| match pk {
                "p#7" => Fault::Permanent,
                _ => Fault::None,
            },
            4,
        );
        let err = writer.apply(latests(20)).await.expect_err("refused");
        assert!(!err.retryable, "{err:?}");
        assert_eq!(fake.requests.lock().unwrap().len(), 20, "p7 sent once, no retry");
        assert_eq!(writer.transient_log().get().count, 0);
    }

    /// A policy: the first `n` TransactWriteItems are cancelled for throttling, the rest succeed.
    fn first_transactions_throttled(n: usize) -> impl Fn(usize, &str, &str) -> Fault + Send + Sync + 'static {
        let seen = Arc::new(Mutex::new(0usize));
        move |_, op, _| {
            if op != "TransactWriteItems" {
                return Fault::None;
            }
            let mut s = seen.lock().unwrap();
            *s += 1;
            if *s <= n {
                Fault::CancelThrottled
            } else {
                Fault::None
            }
        }
    }

    /// Input: 10 Count adds on one key; the first 3 TransactWriteItems are cancelled with reasons
    /// `ThrottlingError` (DynamoDB's form of throttling inside a transaction), then they succeed.
    /// Expected (claim: the status counts transient errors): the counter is 10 and the transient log
    /// counts the 3 throttled attempts.
    /// FAILED before the fix (PASSES now; see the commit that fixed it): counter 10, but transient count 0: `Cancelled::Retry` (throttling/conflict reasons in a
    /// TransactionCanceledException) is retried by `transact`'s own loop, never noted in the log.
    #[tokio::test(start_paused = true)]
    async fn throttling_inside_a_transaction_is_counted_as_transient() {
        let (fake, writer) = fake(first_transactions_throttled(3), 1);
        writer.apply(count_adds(1, 10)).await.expect("applied");
        assert_eq!(fake.counter_values(), [10]);
        assert_eq!(
            writer.transient_log().get().count,
            3,
            "throttled transaction attempts missing from status.backfill.transientErrors"
        );
    }

    /// Input: 9 Count adds on one key; every TransactWriteItems is cancelled with `ThrottlingError` for
    /// 9 attempts in a row (a steady throttle), then it would succeed.
    /// Expected (claim: a call finishes under a steady share of failing requests / retried like any
    /// transient error, MAX_RETRIES = 20): the call succeeds with the counter at 9.
    /// FAILED before the fix (PASSES now; see the commit that fixed it): "still cancelled after 8 attempts" (BATCH_ATTEMPTS, backoff 50 ms doubling to 5 s, ~15 s
    /// in all): throttled transactions get 8 tries, not the 21 of other transient errors.
    #[tokio::test(start_paused = true)]
    async fn a_transaction_throttled_nine_times_still_finishes() {
        let (fake, writer) = fake(first_transactions_throttled(9), 1);
        let out = writer.apply(count_adds(1, 9)).await;
        assert!(out.is_ok(), "gave up: {out:?}");
        assert_eq!(fake.counter_values(), [9]);
    }

    /// Input: 40 Latest writes (40 conditional PutItems) at concurrency 4, every request fails with a
    /// 500 forever (a regional outage).
    /// Expected (retry.rs: "about 5 minutes of waiting before the error goes to the caller"): the call
    /// returns its retryable error after about 5 minutes.
    /// FAILED before the fix (PASSES now; see the commit that fixed it): 840 requests, gave up after 4386 s (73 min, virtual): `send_all` waits for every request
    /// and each spends ~7 min on its 21 attempts, 4 at a time (10 rounds).
    #[tokio::test(start_paused = true)]
    async fn an_outage_returns_within_minutes_not_hours() {
        let (fake, writer) = fake(|_, _, _| Fault::Fail, 4);
        let writes = latests(40);
        let started = tokio::time::Instant::now();
        let err = writer.apply(writes).await.expect_err("outage");
        let waited = started.elapsed();
        eprintln!(
            "outage: {} requests, gave up after {waited:?} (virtual)",
            fake.requests.lock().unwrap().len()
        );
        assert!(err.retryable);
        assert!(
            waited < Duration::from_secs(10 * 60),
            "gave up only after {waited:?}"
        );
    }
}
