//! Applies projected [`ViewWrite`]s to a views table: the one adapter the backfill and the in-cluster
//! runtime share, so both write a view the same way.
//!
//! Guarantees:
//! - Every write keeps the semantics of [`ViewWrite`]: `Latest` puts are conditional (a failed condition
//!   means "an equal or newer record is already there" and counts as done), `Append` puts go in
//!   `BatchWriteItem`s of at most 25, and aggregates (`Count`, `Sum`) count each record once: its
//!   contribution is an item keyed by the record (its idempotency marker, written by an idempotent put)
//!   and the aggregate is recomputed from its contributions (see [`ViewTableWriter::apply_deferred`]). This costs one put per record plus one query and one put per aggregate touched
//!   per call, instead of a two-item `TransactWriteItems` per record (4 write units each); a hot key with
//!   very many contributions costs more reads per recompute.
//! - [`ViewTableWriter::apply`] returns `Ok` only when every write of the call is applied, so a caller
//!   may advance its checkpoint past them. Unprocessed batch items are retried with exponential backoff
//!   and jitter; when they still fail the call fails as retryable and the caller applies the same writes
//!   again (idempotent).
//! - Writes of one call may be sent concurrently and in any order: the writes commute (see
//!   [`crate::projection`]). Of several `Latest` writes to one view key in a call only the newest is sent.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{AttributeValue, Put, WriteRequest};
use futures::StreamExt;

use super::AwsError;
use super::error::from_sdk;
use crate::backfill::batch::{Request, WriteBatcher};
use crate::projection::{Item, MARKER_INFIX, Number, Value, ViewWrite, view_key_of};

/// A contribution item's attribute holding its record's delta.
pub const DELTA: &str = "delta";
/// The aggregate item's attribute counting the contributions its total covers.
pub const CONTRIBUTIONS: &str = "contributions";
const VIEW_PK: &str = "pk";
const VIEW_SK: &str = "sk";

/// How many times unprocessed items of one `BatchWriteItem` are sent again before the call gives up.
const BATCH_ATTEMPTS: u32 = 8;
/// The first backoff before resending unprocessed items; doubles each time, capped at 5 s.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// What one [`ViewTableWriter::apply`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Writes received.
    pub writes: u64,
    /// Writes that changed the view (or may have: batch puts always count).
    pub applied: u64,
    /// Writes found already applied or superseded (a failed `Latest` condition, a present marker, or a
    /// `Latest` write dropped for a newer one of the same call).
    pub skipped: u64,
    /// Requests sent, retries included.
    pub requests: u64,
}

impl std::ops::AddAssign for WriteStats {
    fn add_assign(&mut self, o: Self) {
        self.writes += o.writes;
        self.applied += o.applied;
        self.skipped += o.skipped;
        self.requests += o.requests;
    }
}

/// Aggregates whose contributions were written but whose totals are not recomputed yet:
/// `(pk, sk)` → `(attribute, contributions pk)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PendingTotals(BTreeMap<(String, String), (String, String)>);

impl PendingTotals {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Deletes every item whose partition key starts with `prefix` (a view's items and markers in a shared
/// table) with a filtered `Scan` and `BatchWriteItem` deletes; returns how many. Other views' items, under
/// other prefixes, are never touched.
pub async fn delete_items_with_prefix(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    prefix: &str,
) -> Result<u64, AwsError> {
    use aws_sdk_dynamodb::types::DeleteRequest;
    let mut deleted = 0;
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .filter_expression("begins_with(pk, :p)")
            .expression_attribute_values(":p", AttributeValue::S(prefix.to_string()))
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
                let out = client
                    .batch_write_item()
                    .request_items(table, requests)
                    .send()
                    .await
                    .map_err(from_sdk("BatchWriteItem", table))?;
                requests = out
                    .unprocessed_items
                    .unwrap_or_default()
                    .remove(table)
                    .unwrap_or_default();
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
    concurrency: usize,
    /// A backfill's share of the table's write capacity, when it has one.
    limit: Option<std::sync::Arc<RateLimiter>>,
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
    /// A writer of `table` sending at most `concurrency` requests at a time.
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>, concurrency: usize) -> Self {
        ViewTableWriter {
            client,
            table: table.into(),
            concurrency: concurrency.max(1),
            limit: None,
        }
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

    /// Applies all `writes`; `Ok` only when every one of them is applied (see the module docs).
    pub async fn apply(&self, writes: Vec<ViewWrite>) -> Result<WriteStats, AwsError> {
        let mut totals = PendingTotals::default();
        let mut stats = self.apply_deferred(writes, &mut totals).await?;
        stats += self.finish(totals).await?;
        Ok(stats)
    }

    /// Recomputes the aggregates `totals` names (see [`Self::apply_deferred`]).
    pub async fn finish(&self, totals: PendingTotals) -> Result<WriteStats, AwsError> {
        let mut stats = WriteStats::default();
        let mut recomputed = futures::stream::iter(totals.0.into_iter().map(
            |((pk, sk), (attribute, contributions_pk))| self.recompute(pk, sk, attribute, contributions_pk),
        ))
        .buffer_unordered(self.concurrency);
        while let Some(result) = recomputed.next().await {
            stats += result?;
        }
        Ok(stats)
    }

    /// [`Self::apply`] without recomputing the aggregates the writes touched: they are added to `totals`
    /// for one [`Self::finish`] after many calls (a backfill recomputes once per data file). Until then
    /// the aggregates lag; nothing is lost, since the contributions are written.
    pub async fn apply_deferred(
        &self,
        writes: Vec<ViewWrite>,
        totals: &mut PendingTotals,
    ) -> Result<WriteStats, AwsError> {
        let mut stats = WriteStats {
            writes: writes.len() as u64,
            ..WriteStats::default()
        };
        let (writes, dropped) = newest_latest_only(writes);
        stats.skipped += dropped;
        let (aggregates, writes): (Vec<ViewWrite>, Vec<ViewWrite>) = writes
            .into_iter()
            .partition(|w| matches!(w, ViewWrite::Add { .. }));
        if !aggregates.is_empty() {
            stats += self.write_contributions(aggregates, totals).await?;
        }
        stats += self.send_all(writes).await?;
        Ok(stats)
    }

    /// Groups `writes` into requests and sends them, `concurrency` at a time; the first error after all
    /// requests were tried.
    async fn send_all(&self, writes: Vec<ViewWrite>) -> Result<WriteStats, AwsError> {
        let mut batcher = WriteBatcher::new(&self.table);
        let mut requests = Vec::new();
        for write in writes {
            batcher
                .push_owned(write, &mut requests)
                .map_err(|e| AwsError::permanent("BuildRequest", &self.table, e.to_string()))?;
        }
        requests.extend(batcher.flush());
        let mut sent = futures::stream::iter(requests.into_iter().map(|r| self.send(r)))
            .buffer_unordered(self.concurrency);
        let (mut stats, mut first_error) = (WriteStats::default(), None);
        while let Some(result) = sent.next().await {
            match result {
                Ok(s) => stats += s,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(stats),
        }
    }

    /// `Count` and `Sum`: each record's contribution becomes an item of its own (its idempotency marker,
    /// holding the delta), written by an idempotent put; then each aggregate touched is recomputed from all
    /// its contributions (a strongly consistent `Query`) and written with a put conditioned on having
    /// counted at least as many contributions as the stored total. Contributions are only ever added, so a
    /// total over more of them is the more complete one; the last recompute after the last contribution
    /// sees them all. A redelivered record rewrites the same contribution: counted once.
    async fn write_contributions(
        &self,
        adds: Vec<ViewWrite>,
        totals: &mut PendingTotals,
    ) -> Result<WriteStats, AwsError> {
        let mut stats = WriteStats::default();
        let mut contributions = Vec::with_capacity(adds.len());
        for write in adds {
            let ViewWrite::Add {
                key,
                attribute,
                delta,
                marker,
            } = write
            else {
                continue;
            };
            let (pk, sk) = view_key_of(&key);
            let (pk, sk) = (pk.to_string(), sk.to_string());
            let contributions_pk = format!("{pk}{MARKER_INFIX}{sk}");
            let marker_sk = view_key_of(&marker).1.to_string();
            let item = Item::from([
                (VIEW_PK.to_string(), Value::S(contributions_pk.clone())),
                (VIEW_SK.to_string(), Value::S(marker_sk)),
                (DELTA.to_string(), Value::N(delta)),
            ]);
            contributions.push(ViewWrite::Put { item });
            totals.0.insert((pk, sk), (attribute, contributions_pk));
        }
        // Contributions are markers, not view items: only their requests count.
        stats.requests += self.send_all(contributions).await?.requests;
        Ok(stats)
    }

    /// Sums the contributions under `contributions_pk` and stores the total at `(pk, sk)`.
    async fn recompute(
        &self,
        pk: String,
        sk: String,
        attribute: String,
        contributions_pk: String,
    ) -> Result<WriteStats, AwsError> {
        let mut stats = WriteStats::default();
        let mut total = Number::from(0);
        let mut count: u64 = 0;
        let mut start = None;
        loop {
            stats.requests += 1;
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("pk = :p")
                .expression_attribute_values(":p", AttributeValue::S(contributions_pk.clone()))
                .projection_expression(DELTA)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(from_sdk("Query", &self.table))?;
            for item in page.items() {
                let Some(AttributeValue::N(delta)) = item.get(DELTA) else {
                    continue;
                };
                let delta = Number::parse(delta)
                    .and_then(|d| total.checked_add(&d))
                    .map_err(|e| {
                        AwsError::permanent("Query", &contributions_pk, format!("contribution: {e}"))
                    })?;
                total = delta;
                count += 1;
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        stats.requests += 1;
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(VIEW_PK, AttributeValue::S(pk))
            .item(VIEW_SK, AttributeValue::S(sk))
            .item(&attribute, AttributeValue::N(total.into_string()))
            .item(CONTRIBUTIONS, AttributeValue::N(count.to_string()))
            .condition_expression("attribute_not_exists(pk) OR #n <= :n")
            .expression_attribute_names("#n", CONTRIBUTIONS)
            .expression_attribute_values(":n", AttributeValue::N(count.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => stats.applied += 1,
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => stats.skipped += 1,
            Err(e) => return Err(from_sdk("PutItem", &self.table)(e)),
        }
        Ok(stats)
    }

    async fn send(&self, request: Request) -> Result<WriteStats, AwsError> {
        if let Some(limit) = &self.limit {
            let units = match &request {
                Request::Batch(items) => items.len(),
                Request::Conditional(_) => 1,
                Request::Transaction(items) => 2 * items.len(),
            };
            limit.acquire(units as f64).await;
        }
        match request {
            Request::Batch(items) => self.batch_write(items).await,
            Request::Conditional(put) => self.conditional_put(put).await,
            // Aggregates never reach the batcher here: they are written as contributions.
            Request::Transaction(_) => Err(AwsError::permanent(
                "TransactWriteItems",
                &self.table,
                "internal error: an aggregate write was batched as a transaction; please report it",
            )),
        }
    }

    async fn batch_write(&self, mut items: Vec<WriteRequest>) -> Result<WriteStats, AwsError> {
        let mut stats = WriteStats {
            applied: items.len() as u64,
            ..WriteStats::default()
        };
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=BATCH_ATTEMPTS {
            stats.requests += 1;
            let out = self
                .client
                .batch_write_item()
                .request_items(&self.table, items)
                .send()
                .await
                .map_err(from_sdk("BatchWriteItem", &self.table))?;
            let mut unprocessed = out.unprocessed_items.unwrap_or_default();
            items = unprocessed.remove(&self.table).unwrap_or_default();
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

    async fn conditional_put(&self, put: Put) -> Result<WriteStats, AwsError> {
        let mut stats = WriteStats {
            requests: 1,
            ..WriteStats::default()
        };
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(put.item))
            .set_condition_expression(put.condition_expression)
            .set_expression_attribute_names(put.expression_attribute_names)
            .set_expression_attribute_values(put.expression_attribute_values)
            .send()
            .await;
        match result {
            Ok(_) => stats.applied = 1,
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => stats.skipped = 1,
            Err(e) => return Err(from_sdk("PutItem", &self.table)(e)),
        }
        Ok(stats)
    }
}

/// Of several `Latest` writes to one view key, keeps the one with the greatest order (the first of equal
/// ones, as the table would); the others are superseded. Returns the writes to send and how many were
/// dropped. Other writes pass unchanged.
fn newest_latest_only(writes: Vec<ViewWrite>) -> (Vec<ViewWrite>, u64) {
    let mut newest: HashMap<(String, String), usize> = HashMap::new();
    let mut keep: Vec<Option<ViewWrite>> = Vec::with_capacity(writes.len());
    let mut dropped = 0;
    for write in writes {
        if let ViewWrite::PutIfNewer { order, .. } = &write {
            let (pk, sk) = write.view_key();
            let key = (pk.to_string(), sk.to_string());
            if let Some(&at) = newest.get(&key) {
                let Some(ViewWrite::PutIfNewer { order: held, .. }) = &keep[at] else {
                    unreachable!("the index points at a kept Latest write")
                };
                dropped += 1;
                if order.value() > held.value() {
                    keep[at] = Some(write);
                }
                continue;
            }
            newest.insert(key, keep.len());
        }
        keep.push(Some(write));
    }
    (keep.into_iter().flatten().collect(), dropped)
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

    fn latest(pk: &str, order: &str, tag: &str) -> ViewWrite {
        let mut item = Item::new();
        item.insert("pk".into(), Value::S(pk.into()));
        item.insert("sk".into(), Value::S("LATEST".into()));
        item.insert("tag".into(), Value::S(tag.into()));
        ViewWrite::PutIfNewer {
            item,
            order_attribute: "seq".into(),
            order: order.parse().unwrap(),
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
            latest("p#2", "1.0", "b1-again"),
        ];
        let (kept, dropped) = newest_latest_only(writes);
        assert_eq!(dropped, 3);
        let tags: Vec<&str> = kept.iter().map(tag).collect();
        // The newest of each key, in the place of the key's first write; equal orders keep the first.
        assert_eq!(tags, ["a9", "put", "b1"]);
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
}
