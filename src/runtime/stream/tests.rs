//! The pure parts of the reader: shard order, gap detection, the checkpoint's JSON, record conversion.
//! The AWS calls themselves are not exercised here.

use std::collections::HashMap;

use aws_sdk_dynamodbstreams::types::{
    AttributeValue, OperationType, Record, StreamRecord as SdkStreamRecord,
};

use super::*;
use crate::projection::{Value, item_to_stream};

fn shard(id: &str, parent: Option<&str>) -> ShardInfo {
    ShardInfo { id: id.to_string(), parent: parent.map(str::to_string) }
}

fn checkpoint(positions: &[(&str, ShardPosition)]) -> Checkpoint {
    Checkpoint {
        shards: positions
            .iter()
            .map(|(id, position)| (id.to_string(), position.clone()))
            .collect(),
    }
}

fn reading(after: &str) -> ShardPosition {
    ShardPosition::Reading { after: Some(after.to_string()) }
}

#[test]
fn a_child_waits_until_its_parent_is_finished() {
    // Listed child first: the order must not depend on DescribeStream's.
    let listed = [shard("child", Some("parent")), shard("parent", None)];
    assert_eq!(readable_shards(&listed, &Checkpoint::default()), ["parent"]);
    assert_eq!(
        readable_shards(&listed, &checkpoint(&[("parent", reading("10"))])),
        ["parent"]
    );
    assert_eq!(
        readable_shards(&listed, &checkpoint(&[("parent", ShardPosition::Finished)])),
        ["child"]
    );
}

#[test]
fn both_children_of_a_split_are_read_after_the_parent() {
    let listed = [
        shard("left", Some("parent")),
        shard("parent", None),
        shard("right", Some("parent")),
    ];
    assert_eq!(readable_shards(&listed, &Checkpoint::default()), ["parent"]);
    assert_eq!(
        readable_shards(&listed, &checkpoint(&[("parent", ShardPosition::Finished)])),
        ["left", "right"]
    );
    assert_eq!(
        readable_shards(
            &listed,
            &checkpoint(&[
                ("parent", ShardPosition::Finished),
                ("left", ShardPosition::Finished)
            ])
        ),
        ["right"],
        "a finished child is not read again, its sibling still is"
    );
}

#[test]
fn a_lineage_chain_is_read_one_generation_at_a_time() {
    let listed = [shard("c", Some("b")), shard("b", Some("a")), shard("a", None)];
    assert_eq!(
        lineage_order(&listed)
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    assert_eq!(readable_shards(&listed, &Checkpoint::default()), ["a"]);
    assert_eq!(
        readable_shards(&listed, &checkpoint(&[("a", ShardPosition::Finished)])),
        ["b"]
    );
    assert_eq!(
        readable_shards(
            &listed,
            &checkpoint(&[("a", ShardPosition::Finished), ("b", ShardPosition::Finished)])
        ),
        ["c"]
    );
    let all_finished = checkpoint(&[
        ("a", ShardPosition::Finished),
        ("b", ShardPosition::Finished),
        ("c", ShardPosition::Finished),
    ]);
    assert!(readable_shards(&listed, &all_finished).is_empty());
}

#[test]
fn independent_lineages_are_read_side_by_side() {
    let listed = [
        shard("x2", Some("x1")),
        shard("y1", None),
        shard("x1", None),
        shard("y2", Some("y1")),
    ];
    assert_eq!(readable_shards(&listed, &Checkpoint::default()), ["x1", "y1"]);
    assert_eq!(
        readable_shards(&listed, &checkpoint(&[("x1", ShardPosition::Finished)])),
        ["x2", "y1"]
    );
}

#[test]
fn a_child_of_a_parent_trimmed_before_we_knew_it_is_readable() {
    let listed = [shard("child", Some("trimmed-long-ago"))];
    assert_eq!(readable_shards(&listed, &Checkpoint::default()), ["child"]);
    assert!(find_gap(&listed, &Checkpoint::default()).is_none());
}

#[test]
fn a_checkpointed_shard_that_vanished_unfinished_is_a_gap() {
    let listed = [shard("child", Some("parent"))];
    let mut behind = checkpoint(&[("parent", reading("41"))]);
    match find_gap(&listed, &behind) {
        Some(StreamError::Gap { shard, after }) => {
            assert_eq!(shard, "parent");
            assert_eq!(after.as_deref(), Some("41"));
        }
        other => panic!("expected a gap, got {other:?}"),
    }
    assert!(
        readable_shards(&listed, &behind).is_empty(),
        "the child waits: its parent's records are missing"
    );
    behind
        .shards
        .insert("parent".into(), ShardPosition::Reading { after: None });
    assert!(
        matches!(
            find_gap(&listed, &behind),
            Some(StreamError::Gap { after: None, .. })
        ),
        "a shard started but with nothing read yet may have lost records too"
    );
}

#[test]
fn a_finished_shard_that_vanished_is_no_gap_and_is_forgotten() {
    let listed = [shard("child", Some("parent"))];
    let mut done = checkpoint(&[("parent", ShardPosition::Finished), ("child", reading("7"))]);
    assert!(find_gap(&listed, &done).is_none());
    assert_eq!(readable_shards(&listed, &done), ["child"]);
    forget_trimmed_finished(&listed, &mut done);
    assert_eq!(done, checkpoint(&[("child", reading("7"))]));
    assert_eq!(
        readable_shards(&listed, &done),
        ["child"],
        "forgetting the parent changes nothing"
    );
}

#[test]
fn a_reader_at_the_tip_finishes_closed_shards_and_starts_open_ones_at_their_newest_end() {
    let listed = [
        shard("child", Some("parent")),
        shard("parent", None),
        shard("other", None),
        shard("known", None),
    ];
    let closed: HashSet<String> = ["parent".to_string()].into();
    let mut position = checkpoint(&[("known", reading("5"))]);
    let tip = start_at_tip(&listed, &closed, &mut position);
    assert_eq!(tip, HashSet::from(["child".to_string(), "other".to_string()]));
    assert_eq!(
        position,
        checkpoint(&[
            ("child", ShardPosition::Reading { after: None }),
            ("parent", ShardPosition::Finished),
            ("other", ShardPosition::Reading { after: None }),
            ("known", reading("5")),
        ])
    );
    assert_eq!(
        readable_shards(&listed, &position),
        ["child", "other", "known"],
        "the open child is read at once: its closed parent holds only older records"
    );
    let none = None;
    let some = Some("5".to_string());
    assert_eq!(iterator_kind(&none, true), ShardIteratorType::Latest);
    assert_eq!(iterator_kind(&none, false), ShardIteratorType::TrimHorizon);
    assert_eq!(iterator_kind(&some, true), ShardIteratorType::AfterSequenceNumber);
    let client = aws_sdk_dynamodbstreams::Client::from_conf(
        aws_sdk_dynamodbstreams::Config::builder()
            .behavior_version(aws_sdk_dynamodbstreams::config::BehaviorVersion::latest())
            .build(),
    );
    assert!(StreamReader::at_tip(client.clone(), "arn").start_at_tip);
    assert!(!StreamReader::new(client, "arn", Checkpoint::default()).start_at_tip);
}

#[test]
fn finished_shards_are_not_read_again() {
    let listed = [shard("old", None), shard("new", None)];
    assert_eq!(
        readable_shards(&listed, &checkpoint(&[("old", ShardPosition::Finished)])),
        ["new"]
    );
}

#[test]
fn a_parent_cycle_does_not_hang_and_reads_nothing() {
    let listed = [shard("a", Some("b")), shard("b", Some("a"))];
    assert_eq!(lineage_order(&listed).len(), 2);
    assert!(readable_shards(&listed, &Checkpoint::default()).is_empty());
}

#[test]
fn the_checkpoint_json_has_a_stable_shape_and_round_trips() {
    let position = checkpoint(&[
        ("shardId-a", reading("4700000000000000000001")),
        ("shardId-b", ShardPosition::Finished),
        ("shardId-c", ShardPosition::Reading { after: None }),
    ]);
    let json = serde_json::to_string(&position).unwrap();
    assert_eq!(
        json,
        r#"{"shards":{"shardId-a":{"state":"reading","after":"4700000000000000000001"},"shardId-b":{"state":"finished"},"shardId-c":{"state":"reading","after":null}}}"#
    );
    assert_eq!(serde_json::from_str::<Checkpoint>(&json).unwrap(), position);
    assert_eq!(
        serde_json::from_str::<Checkpoint>(r#"{"shards":{}}"#).unwrap(),
        Checkpoint::default()
    );
    assert!(serde_json::from_str::<Checkpoint>(r#"{"shards":{"s":{"state":"done"}}}"#).is_err());
}

#[test]
fn a_trimmed_read_is_a_gap_and_an_expired_iterator_is_renewed() {
    let after = Some("12".to_string());
    let trimmed = AwsError::new("GetRecords", "s", "TrimmedDataAccessException", "trimmed");
    assert!(matches!(
        classify_read_failure("s", &after, trimmed),
        ReadFailure::Fail(StreamError::Gap { ref shard, after: Some(ref a) }) if shard == "s" && a == "12"
    ));
    let expired = AwsError::new("GetRecords", "s", "ExpiredIteratorException", "expired");
    assert!(matches!(
        classify_read_failure("s", &after, expired),
        ReadFailure::IteratorExpired
    ));
    let throttled = AwsError::new("GetRecords", "s", "LimitExceededException", "slow down");
    match classify_read_failure("s", &after, throttled) {
        ReadFailure::Fail(error) => assert!(error.is_retryable()),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn errors_say_what_happened_and_what_follows() {
    let gap = StreamError::Gap { shard: "shardId-1".into(), after: Some("99".into()) }.to_string();
    assert!(
        gap.contains("shardId-1") && gap.contains("sequence number 99") && gap.contains("24 hours"),
        "{gap}"
    );
    assert!(gap.contains("re-reads the log table"), "{gap}");
    let from_start = StreamError::Gap { shard: "s".into(), after: None }.to_string();
    assert!(from_start.contains("after its start"), "{from_start}");
}

/// A stream record of the Lambda event fixture: the part of `Records[].dynamodb` the reader uses.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct FixtureChange {
    approximate_creation_date_time: i64,
    keys: Item,
    new_image: Option<Item>,
    sequence_number: String,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct FixtureRecord {
    event_name: String,
    dynamodb: FixtureChange,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct FixtureEvent {
    records: Vec<FixtureRecord>,
}

fn fixture_records() -> Vec<FixtureRecord> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/stream-event.json");
    let event: FixtureEvent = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    event.records
}

/// The SDK record the fixture record stands for. The fixture's typed JSON goes through this crate's
/// `Value` serde and `item_to_stream`: this tests `convert_record`, not the SDK's wire format.
fn sdk_record(fixture: &FixtureRecord) -> Record {
    let change = SdkStreamRecord::builder()
        .approximate_creation_date_time(aws_smithy_types::DateTime::from_secs(
            fixture.dynamodb.approximate_creation_date_time,
        ))
        .set_keys(Some(item_to_stream(fixture.dynamodb.keys.clone())))
        .set_new_image(fixture.dynamodb.new_image.clone().map(item_to_stream))
        .sequence_number(&fixture.dynamodb.sequence_number)
        .build();
    Record::builder()
        .event_name(OperationType::from(fixture.event_name.as_str()))
        .dynamodb(change)
        .build()
}

#[test]
fn fixture_stream_records_convert_with_their_images() {
    let fixtures = fixture_records();
    assert_eq!(fixtures.len(), 3);
    let converted: Vec<StreamRecord> = fixtures
        .iter()
        .map(|f| convert_record("shardId-1", sdk_record(f)).unwrap())
        .collect();
    assert_eq!(
        converted.iter().map(|r| r.event_name).collect::<Vec<_>>(),
        [EventName::Insert, EventName::Modify, EventName::Remove]
    );
    for (record, fixture) in converted.iter().zip(&fixtures) {
        assert_eq!(record.shard_id, "shardId-1");
        assert_eq!(record.sequence_number, fixture.dynamodb.sequence_number);
        assert_eq!(record.keys, fixture.dynamodb.keys);
        assert_eq!(record.new_image, fixture.dynamodb.new_image);
        assert_eq!(
            record.approximate_creation_epoch_seconds,
            Some(fixture.dynamodb.approximate_creation_date_time as f64)
        );
    }
    let insert = &converted[0];
    assert_eq!(insert.keys["pk"], Value::S("PLAYER#ivy".into()));
    assert_eq!(insert.approximate_creation_epoch_seconds, Some(1_700_000_305.0));
    let image = insert.new_image.as_ref().unwrap();
    assert_eq!(image["motto"], Value::S("gg #1 — Zoë 🎮".into()));
    assert_eq!(image["avatar"].type_name(), "B");
    assert!(converted[2].new_image.is_none(), "a REMOVE has no new image");
}

fn record_with_new_image(sequence_number: &str, image: HashMap<String, AttributeValue>) -> Record {
    Record::builder()
        .event_name(OperationType::Insert)
        .dynamodb(
            SdkStreamRecord::builder()
                .keys("pk", AttributeValue::S("a".into()))
                .set_new_image(Some(image))
                .sequence_number(sequence_number)
                .build(),
        )
        .build()
}

#[test]
fn an_invalid_image_names_the_shard_the_record_and_the_attribute() {
    let image = HashMap::from([
        ("pk".to_string(), AttributeValue::S("a".into())),
        ("score".to_string(), AttributeValue::N("not-a-number".into())),
    ]);
    match convert_record("shardId-9", record_with_new_image("55", image)) {
        Err(ref error @ StreamError::Record { ref shard, ref sequence_number, ref message }) => {
            assert_eq!((shard.as_str(), sequence_number.as_str()), ("shardId-9", "55"));
            assert!(
                message.contains("NewImage") && message.contains("`score`"),
                "{message}"
            );
            let text = error.to_string();
            assert!(text.contains("stream record 55 of shard shardId-9"), "{text}");
            assert!(!error.is_retryable());
        }
        other => panic!("expected a record error, got {other:?}"),
    }
}

#[test]
fn a_record_without_sequence_number_or_known_event_name_is_refused() {
    let no_sequence = Record::builder()
        .event_name(OperationType::Insert)
        .dynamodb(
            SdkStreamRecord::builder()
                .keys("pk", AttributeValue::S("a".into()))
                .build(),
        )
        .build();
    assert!(matches!(
        convert_record("s", no_sequence),
        Err(StreamError::Record { ref message, .. }) if message.contains("SequenceNumber")
    ));
    let mut unknown = record_with_new_image("3", HashMap::new());
    unknown.event_name = Some(OperationType::from("TRUNCATE"));
    assert!(matches!(
        convert_record("s", unknown),
        Err(StreamError::Record { ref message, ref sequence_number, .. })
            if message.contains("TRUNCATE") && sequence_number == "3"
    ));
}

#[test]
fn the_reader_is_caught_up_once_every_shard_passed_the_check_point() {
    use std::time::{Duration, SystemTime};
    let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s);
    let shards = vec!["a".to_string(), "b".to_string()];
    let now = at(100);
    let mut passed = HashMap::new();
    assert_eq!(
        caught_up_rule(&shards, &passed, Some(at(99)), now),
        (false, None),
        "nothing shown yet"
    );
    passed.insert("a".to_string(), at(99));
    assert_eq!(
        caught_up_rule(&shards, &passed, Some(at(99)), now),
        (false, None),
        "shard b has shown nothing"
    );
    passed.insert("b".to_string(), at(50));
    assert_eq!(
        caught_up_rule(&shards, &passed, Some(at(99)), now),
        (false, Some(at(50))),
        "shard b is behind: a backlog, however fresh, is not caught up"
    );
    passed.insert("b".to_string(), at(99));
    assert_eq!(
        caught_up_rule(&shards, &passed, Some(at(99)), now),
        (true, Some(at(99)))
    );
    assert_eq!(
        caught_up_rule(&shards, &passed, None, now),
        (false, Some(at(99))),
        "no round began long enough ago"
    );
    assert_eq!(
        caught_up_rule(&[], &passed, None, now),
        (true, Some(now)),
        "no readable shard"
    );
}

/// One shard of the simulated stream: creation times (seconds after the epoch, ascending) and how many
/// were read.
#[derive(Clone, Debug)]
struct SimShard {
    created: Vec<f64>,
    read: usize,
    /// Empty pages injected in a row while records wait.
    injected_run: u32,
}

fn simulate_round(
    progress: &mut Progress,
    shards: &mut [SimShard],
    now: f64,
    limit: usize,
    inject_empty: &[bool],
) -> (bool, Option<SystemTime>) {
    let started = UNIX_EPOCH + Duration::from_secs_f64(now);
    let mut round = progress.begin_round(started);
    let names: Vec<String> = (0..shards.len()).map(|i| format!("shard-{i}")).collect();
    for (i, shard) in shards.iter_mut().enumerate() {
        let visible = shard.created.iter().filter(|c| **c < now).count();
        let waiting = visible - shard.read;
        // AWS may answer an empty page while records wait, but (the reader's assumption, see the module
        // docs) not EMPTY_PAGES_AT_END times in a row.
        let inject = inject_empty[i % inject_empty.len()]
            && waiting > 0
            && shard.injected_run + 1 < EMPTY_PAGES_AT_END;
        let n = if inject { 0 } else { waiting.min(limit) };
        shard.injected_run = if inject { shard.injected_run + 1 } else { 0 };
        let page = Page {
            records: n,
            newest_created: (n > 0).then(|| shard.created[shard.read + n - 1]),
            full: n >= limit,
        };
        shard.read += n;
        progress.note_page(&mut round, &names[i], page);
    }
    progress.end_round(round, &names, false)
}

proptest::proptest! {
    /// Whatever the write times and the gaps between polls (pauses of up to 40 s included), a reader that
    /// says it is caught up has read everything created CAUGHT_UP_MAX_LAG before its poll; and once
    /// writes stop, polling on makes it caught up.
    #[test]
    fn caught_up_means_everything_older_than_the_max_lag_was_read(
        writes in proptest::collection::vec(proptest::collection::vec(0.0f64..60.0, 0..120), 1..4),
        gaps in proptest::collection::vec(
            proptest::prop_oneof![0.25f64..1.5, 1.5f64..8.0, 8.0f64..40.0],
            1..80,
        ),
        limit in 1usize..40,
        inject in proptest::collection::vec(proptest::bool::ANY, 1..7),
    ) {
        let base = 1_700_000_000.0;
        let mut shards: Vec<SimShard> = writes
            .into_iter()
            .map(|mut w| {
                w.sort_by(f64::total_cmp);
                SimShard { created: w.into_iter().map(|c| base + c).collect(), read: 0, injected_run: 0 }
            })
            .collect();
        let mut progress = Progress::default();
        let mut now = base;
        let max_age = CAUGHT_UP_MAX_LAG.as_secs_f64();
        for (k, gap) in gaps.iter().enumerate() {
            now += gap;
            let flags: Vec<bool> = (0..shards.len()).map(|i| inject[(k + i) % inject.len()]).collect();
            let (caught_up, _) = simulate_round(&mut progress, &mut shards, now, limit, &flags);
            if caught_up {
                for (i, s) in shards.iter().enumerate() {
                    let due = s.created.iter().filter(|c| **c < now - max_age).count();
                    proptest::prop_assert!(
                        s.read >= due,
                        "caught up at {:.2} but shard {} read {} of the {} records created before {:.2}",
                        now - base, i, s.read, due, now - max_age - base
                    );
                }
            }
        }
        // Writes stopped (all are before base + 60): polls every 1.25 s, no injected empty pages.
        now = now.max(base + 60.0);
        let left: usize = shards.iter().map(|s| s.created.len() - s.read).sum();
        let enough = left / limit + EMPTY_PAGES_AT_END as usize + 8;
        let mut caught = false;
        for _ in 0..enough {
            now += 1.25;
            let n = shards.len();
            if simulate_round(&mut progress, &mut shards, now, limit, &vec![false; n]).0 {
                caught = true;
                break;
            }
        }
        proptest::prop_assert!(caught, "not caught up within {enough} polls after writes stopped");
        proptest::prop_assert!(shards.iter().all(|s| s.read == s.created.len()));
    }
}
