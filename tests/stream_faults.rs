//! The stream reader against DynamoDB Streams' empty pages, injected by the fault proxy
//! (hack/fault-proxy.py, kind `empty`, `emptyPages: 2`): every new shard iterator is first answered
//! `{"Records": [], "NextShardIterator": <the same>}` twice, as GetRecords may answer on an open shard
//! that still holds records ("it might take multiple calls to get to a portion of the shard that contains
//! stream records", GetRecords API reference). A batch must be `caught_up` only after every record was
//! returned, each exactly once: a reader that took one empty page for the end would report caught up
//! with nothing read.

mod common;

use std::collections::BTreeSet;
use std::time::SystemTime;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    StreamSpecification, StreamViewType,
};
use common::faults::FaultProxy;
use kappa_operator::runtime::stream::{Batch, Checkpoint, EventName, StreamReader};

/// Polls at most this many times before giving up on `caught_up`.
const MAX_POLLS: usize = 200;

/// A new pk/sk table with a NEW_IMAGE stream; returns its name and stream ARN.
async fn table_with_stream(ddb: &aws_sdk_dynamodb::Client, stem: &str) -> (String, String) {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let table = format!("{stem}-{nanos}");
    let key = |n: &str, t| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(t)
            .build()
            .unwrap()
    };
    let attr = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    let created = ddb
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .attribute_definitions(attr("pk"))
        .attribute_definitions(attr("sk"))
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewImage)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateTable {table}: {e:?}"));
    let arn = created
        .table_description()
        .and_then(|d| d.latest_stream_arn())
        .expect("the table's stream ARN")
        .to_string();
    (table, arn)
}

/// Writes items `PLAYER#<i>` / `EVENT#<i>` for `i` in `range`; returns their (pk, sk).
async fn write_items(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    range: std::ops::Range<usize>,
) -> BTreeSet<(String, String)> {
    let keys: Vec<(String, String)> = range
        .map(|i| (format!("PLAYER#{i:05}"), format!("EVENT#{i:05}")))
        .collect();
    let items = keys
        .iter()
        .map(|(pk, sk)| {
            [
                ("pk".to_string(), AttributeValue::S(pk.clone())),
                ("sk".to_string(), AttributeValue::S(sk.clone())),
                ("score".to_string(), AttributeValue::N("1".into())),
            ]
            .into_iter()
            .collect()
        })
        .collect();
    common::put_items(ddb, table, items).await;
    keys.into_iter().collect()
}

/// A proxy in front of the stack's AWS API answering every new GetRecords iterator empty twice, and a
/// Streams client through it.
async fn proxy_with_empty_pages() -> (FaultProxy, aws_sdk_dynamodbstreams::Client) {
    let proxy = FaultProxy::start(&common::stack_var("AWS_ENDPOINT_URL"));
    let view = proxy
        .configure(serde_json::json!({"emptyPages": 2, "resetCounts": true}))
        .await;
    assert_eq!(view["emptyPages"], 2);
    let streams = aws_sdk_dynamodbstreams::Client::new(&proxy.aws_config_through().await);
    (proxy, streams)
}

/// What a reader returned up to and including its first `caught_up` batch.
struct Read {
    /// (pk, sk) of each record's NewImage, in the order returned.
    keys: Vec<(String, String)>,
    /// The first caught-up batch.
    caught_up: Batch,
    polls: usize,
}

/// Polls `reader` (limit 1000) until a batch is `caught_up`, collecting every record's NewImage key.
async fn read_until_caught_up(reader: &mut StreamReader) -> Read {
    let mut keys = Vec::new();
    for polls in 1..=MAX_POLLS {
        let batch = reader.poll(1000).await.expect("poll");
        // Caught up means a small lag (every shard read what was created CAUGHT_UP_MAX_LAG before the
        // poll), not an empty page: a caught-up batch may still carry records.
        if batch.caught_up {
            for record in &batch.records {
                keys.push(image_key(record));
            }
            return Read { keys, caught_up: batch, polls };
        }
        for record in &batch.records {
            keys.push(image_key(record));
        }
    }
    panic!(
        "not caught up after {MAX_POLLS} polls ({} records read)",
        keys.len()
    );
}

fn image_key(record: &kappa_operator::runtime::stream::StreamRecord) -> (String, String) {
    assert_eq!(record.event_name, EventName::Insert, "{record:?}");
    let image = record
        .new_image
        .as_ref()
        .unwrap_or_else(|| panic!("a NEW_IMAGE stream record without NewImage: {record:?}"));
    let s = |name: &str| {
        image
            .get(name)
            .and_then(|v| v.as_s())
            .unwrap_or_else(|| panic!("NewImage without string {name}: {record:?}"))
            .to_string()
    };
    (s("pk"), s("sk"))
}

/// Every key of `expected` exactly once in `got`, and nothing else.
fn assert_exactly_once(got: &[(String, String)], expected: &BTreeSet<(String, String)>, what: &str) {
    let distinct: BTreeSet<_> = got.iter().cloned().collect();
    assert_eq!(
        distinct.len(),
        got.len(),
        "{what}: {} records duplicated",
        got.len() - distinct.len()
    );
    let lost: Vec<_> = expected.difference(&distinct).take(5).collect();
    let extra: Vec<_> = distinct.difference(expected).take(5).collect();
    assert!(
        lost.is_empty() && extra.is_empty(),
        "{what}: {} of {} records before caught_up; lost (first 5) {lost:?}, unexpected {extra:?}",
        got.len(),
        expected.len()
    );
}

fn empty_faults(counts: &serde_json::Value) -> u64 {
    counts["counts"]["streams"]["faults"]["empty"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test]
async fn empty_pages_before_each_page_never_report_caught_up_before_every_record() {
    let ddb = aws_sdk_dynamodb::Client::new(&common::aws_config().await);
    let (table, stream_arn) = table_with_stream(&ddb, "stream-empty").await;
    let written = write_items(&ddb, &table, 0..2_500).await;
    let (proxy, streams) = proxy_with_empty_pages().await;

    let mut reader = StreamReader::new(streams, &stream_arn, Checkpoint::default());
    let read = read_until_caught_up(&mut reader).await;
    assert_exactly_once(&read.keys, &written, "a new reader");
    // 3 pages of at most 1000 records, each after 2 empty answers. (The last page is not full and its
    // records are fresh, so the reader may be caught up with it, within CAUGHT_UP_MAX_LAG, before it
    // meets the shard's end.)
    assert!(
        read.polls >= 3 * 3,
        "{} polls: the injected empty pages were not met",
        read.polls
    );
    let counts = proxy.counts().await;
    assert!(
        empty_faults(&counts) >= 6,
        "the proxy answered few GetRecords empty: {counts}"
    );
    assert!(read.caught_up.at_end_since.is_some());

    // Still caught up on the next polls, and nothing more comes.
    for _ in 0..3 {
        let batch = reader.poll(1000).await.expect("poll at the tip");
        assert!(batch.records.is_empty(), "{:?}", batch.records);
    }
}

#[tokio::test]
async fn a_reader_resumed_from_a_checkpoint_reads_the_rest_and_what_came_since_before_caught_up() {
    let ddb = aws_sdk_dynamodb::Client::new(&common::aws_config().await);
    let (table, stream_arn) = table_with_stream(&ddb, "stream-empty-resume").await;
    let first = write_items(&ddb, &table, 0..1_500).await;
    let (proxy, streams) = proxy_with_empty_pages().await;

    // A first reader stops after its first non-empty batch (at most 1000 records), keeping the checkpoint.
    let mut reader = StreamReader::new(streams.clone(), &stream_arn, Checkpoint::default());
    let (mut applied, checkpoint) = loop {
        let batch = reader.poll(1000).await.expect("poll");
        assert!(!batch.caught_up, "caught up before any of 1500 records was read");
        if !batch.records.is_empty() {
            let keys: Vec<_> = batch.records.iter().map(image_key).collect();
            break (keys, batch.checkpoint);
        }
    };
    assert!(!applied.is_empty() && applied.len() < first.len());
    drop(reader);

    let second = write_items(&ddb, &table, 1_500..2_000).await;
    let written_by = SystemTime::now();
    let mut resumed = StreamReader::new(streams, &stream_arn, checkpoint);
    let read = read_until_caught_up(&mut resumed).await;
    let expected: BTreeSet<_> = first
        .union(&second)
        .filter(|k| !applied.contains(k))
        .cloned()
        .collect();
    assert_exactly_once(&read.keys, &expected, "the resumed reader");
    applied.extend(read.keys);
    assert_exactly_once(&applied, &first.union(&second).cloned().collect(), "both readers");
    // Caught up allows a lag (CAUGHT_UP_MAX_LAG): at_end_since may still be before the last write, but
    // polling on dates the end after it, with nothing more to read.
    let mut since = read.caught_up.at_end_since.expect("at_end_since when caught up");
    for _ in 0..MAX_POLLS {
        if since >= written_by {
            break;
        }
        let batch = resumed.poll(1000).await.expect("poll at the tip");
        assert!(batch.records.is_empty(), "{:?}", batch.records);
        since = batch.at_end_since.expect("at_end_since at the tip");
    }
    assert!(
        since >= written_by,
        "at_end_since {since:?} is before the last write ({written_by:?}) though every record was read"
    );
    assert!(empty_faults(&proxy.counts().await) > 0);
}

#[tokio::test]
async fn a_reader_at_the_tip_returns_records_written_after_its_first_poll_before_caught_up() {
    let ddb = aws_sdk_dynamodb::Client::new(&common::aws_config().await);
    let (table, stream_arn) = table_with_stream(&ddb, "stream-empty-tip").await;
    let before = write_items(&ddb, &table, 0..200).await;
    let (proxy, streams) = proxy_with_empty_pages().await;

    let mut reader = StreamReader::at_tip(streams, &stream_arn);
    let first = reader.poll(1000).await.expect("first poll");
    assert!(
        first.records.is_empty() && !first.caught_up,
        "the first poll at the tip: {} records, caught_up {}",
        first.records.len(),
        first.caught_up
    );
    let after = write_items(&ddb, &table, 200..1_400).await;
    let read = read_until_caught_up(&mut reader).await;
    assert_exactly_once(&read.keys, &after, "a reader at the tip");
    assert!(before.iter().all(|k| !read.keys.contains(k)));
    assert!(empty_faults(&proxy.counts().await) > 0);
}
