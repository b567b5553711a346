//! Break probes (branch break-shared, helper 18) of the shared stream reader's pure parts: where a view
//! stands against the leader's window ([`Window::join`]) and what it is given ([`deliver`]), with inputs a
//! hand-edited or stale checkpoint can produce. Each probe says its input, what it expects, and whether
//! it passes; those that failed on 1162f27 pass since its fix.

use std::collections::HashMap;

use super::tests::{batch, checkpoint, reading, record, unlimited};
use super::*;
use crate::runtime::stream::StreamRecord;

fn big_record(shard: &str, seq: &str, bytes: usize) -> StreamRecord {
    let mut image = crate::projection::Item::default();
    image.insert("blob".to_string(), crate::projection::Value::S("x".repeat(bytes)));
    StreamRecord { new_image: Some(image), ..record(shard, seq) }
}

/// Input: the leader was seeded at the checkpoint of the first view to subscribe after a restart, which
/// still names a parent shard `gone` as finished: the stream no longer lists it (trimmed after 24 h, or a
/// hand-edited id), so the leader's own reader forgot it at its first listing
/// (`stream::forget_trimmed_finished`) and every batch checkpoint it produced lacks `gone`. The window
/// (limits as in production, so the seed position stays its `start` until 600 batches or 20,000 records
/// have passed: about 12 minutes of an idle log) holds records 11 and 12 of the live shard `a`. A second
/// view, whose own catch-up reader is at the tip (its checkpoint, saved from that reader, never holds
/// `gone` either: `a` after 12, exactly the leader's end), asks to join.
/// Expected: it joins at the window's end (`Join::At`): the window's own end says the leader no longer
/// knows `gone`, so nothing of it can be owed to the view.
/// PASSES since the fix after 1162f27 (see below); FAILED on 1162f27): `Join::Behind`. `Window::join` (shared_stream.rs, the `None | Some(Reading { after: None })`
/// arm, line 214) treats "the view does not know shard X, the window *start* has X" as behind, even when
/// the window *end* no longer has X. On the stack this keeps every view whose checkpoint lacks `gone`
/// catching up with its own reader; the one holding the log's catch-up permit never joins (it stays
/// Behind while caught up: `after_catch_up` only joins on `Join::At`) and so never gives the permit back,
/// and every other such view waits for the permit and reads nothing until the seed batch leaves the window.
#[test]
fn a_stale_finished_shard_in_the_seed_position_keeps_caught_up_views_out() {
    let seed = checkpoint(&[("a", reading(Some("10"))), ("gone", ShardPosition::Finished)]);
    let mut w = Window::new(seed, 0, LIMITS);
    // The leader's reader dropped `gone` (not listed) from its checkpoint.
    w.push(batch(
        &[("a", "11"), ("a", "12")],
        checkpoint(&[("a", reading(Some("12")))]),
    ));
    w.push(batch(&[], checkpoint(&[("a", reading(Some("12")))])));
    let view = checkpoint(&[("a", reading(Some("12")))]);
    assert!(
        matches!(w.join(&view), Join::At { .. }),
        "a view at the leader's end, lacking only a shard the leader forgot, got {:?}",
        w.join(&view)
    );
}

/// Input: the same, the view one record behind the leader (`a` after 11, record 12 still in the window).
/// Expected: joins and is given record 12 only, with a checkpoint at 12.
/// PASSES since the fix after 1162f27 (see below); FAILED on 1162f27): `Join::Behind`, same cause as above (the stale `gone` in the window's start).
#[test]
fn a_stale_finished_shard_in_the_seed_position_keeps_views_inside_the_window_out() {
    let seed = checkpoint(&[("a", reading(Some("10"))), ("gone", ShardPosition::Finished)]);
    let mut w = Window::new(seed, 0, LIMITS);
    w.push(batch(
        &[("a", "11"), ("a", "12")],
        checkpoint(&[("a", reading(Some("12")))]),
    ));
    let view = checkpoint(&[("a", reading(Some("11")))]);
    let Join::At { next, mut skip } = w.join(&view) else {
        panic!(
            "record 11 is in the window, yet the view is not let in: {:?}",
            w.join(&view)
        )
    };
    let got = deliver(&w.batch(next).unwrap().batch, &mut skip);
    assert_eq!(got.records, vec![record("a", "12")]);
}

/// Input: a view's checkpoint edited by hand to the same sequence number with leading zeros
/// (`a` after `00012` where the leader's window starts after `12`); nothing newer is written, so a
/// catch-up reader from `00012` reads nothing and keeps that position.
/// Expected: joins (the module compares sequence numbers as decimal numerals: `00012` is `12`, the
/// window's start).
/// PASSES since the fix after 1162f27 (see below); FAILED on 1162f27): `Join::Behind`: the start comparison is string equality, `holds` is string equality, and the
/// numeric comparison only lets `Greater` through (`Equal` falls to `_ => return Join::Behind`,
/// shared_stream.rs line 237). The view's catch-up reader, caught up at `00012` while the log is quiet,
/// stays Behind and keeps the catch-up permit: other views needing catch-up wait until a new record is
/// written to the shard.
#[test]
fn the_same_sequence_number_with_leading_zeros_joins() {
    let mut w = Window::new(checkpoint(&[("a", reading(Some("12")))]), 0, unlimited());
    w.push(batch(&[], checkpoint(&[("a", reading(Some("12")))])));
    let view = checkpoint(&[("a", reading(Some("00012")))]);
    assert!(
        matches!(w.join(&view), Join::At { .. }),
        "00012 is 12, the window's start; got {:?}",
        w.join(&view)
    );
}

/// Input: records near DynamoDB's 400 KB item limit: one batch of 100 records of 390,000 bytes each
/// (~39 MB, more than the window's 32 MiB), then a second batch of 2 such records.
/// Expected: the window keeps the newest batch whatever its size, drops the older one once the second
/// is in (bytes over the limit), keeps its byte count equal to what it holds, and a view at the end
/// of the first batch still joins at the newest batch with nothing skipped.
/// PASSES.
#[test]
fn records_near_400_kb_respect_the_byte_bound_and_keep_the_newest_batch() {
    let size = 390_000;
    let mut w = Window::new(checkpoint(&[("a", reading(None))]), 0, LIMITS);
    let first = Batch {
        records: (1..=100).map(|i| big_record("a", &i.to_string(), size)).collect(),
        checkpoint: checkpoint(&[("a", reading(Some("100")))]),
        caught_up: false,
        at_end_since: None,
    };
    w.push(first);
    assert_eq!(w.batches.len(), 1, "the newest batch stays whatever its size");
    assert!(w.bytes > WINDOW_BYTES);
    let second = Batch {
        records: (101..=102)
            .map(|i| big_record("a", &i.to_string(), size))
            .collect(),
        checkpoint: checkpoint(&[("a", reading(Some("102")))]),
        caught_up: true,
        at_end_since: None,
    };
    w.push(second);
    assert_eq!(w.batches.len(), 1);
    assert_eq!(w.first, 1);
    assert_eq!(w.records, 2);
    assert_eq!(w.bytes, w.batches.iter().map(|b| b.bytes).sum::<usize>());
    assert_eq!(w.start, checkpoint(&[("a", reading(Some("100")))]));
    let view = checkpoint(&[("a", reading(Some("100")))]);
    assert_eq!(w.join(&view), Join::At { next: 1, skip: HashMap::new() });
    // One record further back is gone from the window: behind.
    assert_eq!(w.join(&checkpoint(&[("a", reading(Some("99")))])), Join::Behind);
}

/// Input: the record bound exactly: 21 batches of 1,000 records (21,000 > 20,000), one shard.
/// Expected: exactly 20,000 records kept (the oldest batch dropped), start after record 1,000; a view
/// after record 1,000 joins at index 1, one after 999 is behind, one after 21,000 joins at the newest
/// batch (it cannot be ahead of what the leader read).
/// PASSES.
#[test]
fn the_record_bound_drops_exactly_the_oldest_batch() {
    let mut w = Window::new(Checkpoint::default(), 0, LIMITS);
    for b in 0..21u64 {
        let records: Vec<StreamRecord> = (b * 1000 + 1..=b * 1000 + 1000)
            .map(|i| record("a", &i.to_string()))
            .collect();
        let last = records.last().unwrap().sequence_number.clone();
        w.push(Batch {
            records,
            checkpoint: checkpoint(&[("a", reading(Some(&last)))]),
            caught_up: false,
            at_end_since: None,
        });
    }
    assert_eq!(w.records, 20_000);
    assert_eq!(w.first, 1);
    assert_eq!(w.start, checkpoint(&[("a", reading(Some("1000")))]));
    assert_eq!(
        w.join(&checkpoint(&[("a", reading(Some("1000")))])),
        Join::At { next: 1, skip: HashMap::new() }
    );
    assert_eq!(w.join(&checkpoint(&[("a", reading(Some("999")))])), Join::Behind);
    assert_eq!(w.join(&Checkpoint::default()), Join::Behind);
    assert!(matches!(
        w.join(&checkpoint(&[("a", reading(Some("21000")))])),
        Join::At { next: 20, .. }
    ));
    assert_eq!(w.join(&checkpoint(&[("a", reading(Some("21001")))])), Join::Ahead);
}

/// Input: two shards (parent `p` finished in the window, child `c` read after it); a view that finished
/// `p` and read `c` through its second record (in the window), given every batch from where it joins.
/// Expected: it gets `c`'s records after 2 exactly once, none of `p`'s, `p` stays finished in every
/// checkpoint, and each checkpoint stands after the last `c` record delivered.
/// PASSES.
#[test]
fn a_view_past_a_split_gets_each_child_record_once() {
    let mut w = Window::new(Checkpoint::default(), 0, unlimited());
    w.push(batch(
        &[("p", "1"), ("p", "2")],
        checkpoint(&[("p", ShardPosition::Finished)]),
    ));
    w.push(batch(
        &[("c", "1"), ("c", "2")],
        checkpoint(&[("p", ShardPosition::Finished), ("c", reading(Some("2")))]),
    ));
    w.push(batch(
        &[("c", "3")],
        checkpoint(&[("p", ShardPosition::Finished), ("c", reading(Some("3")))]),
    ));
    let view = checkpoint(&[("p", ShardPosition::Finished), ("c", reading(Some("2")))]);
    let Join::At { mut next, mut skip } = w.join(&view) else {
        panic!("joins: {:?}", w.join(&view))
    };
    let mut got = Vec::new();
    while let Some(b) = w.batch(next) {
        let d = deliver(&b.batch, &mut skip);
        got.extend(
            d.records
                .iter()
                .map(|r| (r.shard_id.clone(), r.sequence_number.clone())),
        );
        assert_eq!(d.checkpoint.shards["p"], ShardPosition::Finished);
        next += 1;
        if next == 3 {
            assert_eq!(d.checkpoint.shards["c"], reading(Some("3")));
        }
    }
    assert_eq!(got, vec![("c".to_string(), "3".to_string())]);
}
