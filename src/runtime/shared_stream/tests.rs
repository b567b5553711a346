//! The window's pure parts: where a view stands against it, and what it is given. The property test
//! models a stream of independent shards read by a leader in random batches, a window that dropped a
//! random number of its oldest batches, and a view at a random position per shard (as its own reader
//! would leave it): a view that joins gets exactly the records after its position, each once, in shard
//! order, and every checkpoint it is given stands right after the last record it was given of each shard.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::runtime::stream::{EventName, StreamRecord};

pub(super) fn record(shard: &str, seq: &str) -> StreamRecord {
    StreamRecord {
        shard_id: shard.to_string(),
        sequence_number: seq.to_string(),
        event_name: EventName::Insert,
        keys: Default::default(),
        new_image: None,
        approximate_creation_epoch_seconds: None,
    }
}

pub(super) fn reading(after: Option<&str>) -> ShardPosition {
    ShardPosition::Reading { after: after.map(str::to_string) }
}

pub(super) fn checkpoint(positions: &[(&str, ShardPosition)]) -> Checkpoint {
    Checkpoint {
        shards: positions
            .iter()
            .map(|(s, p)| (s.to_string(), p.clone()))
            .collect(),
    }
}

pub(super) fn batch(records: &[(&str, &str)], after: Checkpoint) -> Batch {
    Batch {
        records: records.iter().map(|(s, q)| record(s, q)).collect(),
        checkpoint: after,
        caught_up: false,
        at_end_since: None,
    }
}

pub(super) fn unlimited() -> Limits {
    Limits { records: usize::MAX, bytes: usize::MAX, batches: usize::MAX }
}

#[test]
fn sequence_numbers_compare_as_numbers() {
    assert_eq!(sequence_cmp("9", "10"), Some(Ordering::Less));
    assert_eq!(sequence_cmp("000120", "119"), Some(Ordering::Greater));
    assert_eq!(sequence_cmp("0", "000"), Some(Ordering::Equal));
    assert_eq!(sequence_cmp("1a", "2"), None);
    assert_eq!(sequence_cmp("", "2"), None);
}

/// A window over shard `a` holding records 11..=13 in two batches, started after record 10.
fn window() -> Window {
    let mut w = Window::new(checkpoint(&[("a", reading(Some("10")))]), 7, unlimited());
    w.push(batch(
        &[("a", "11"), ("a", "12")],
        checkpoint(&[("a", reading(Some("12")))]),
    ));
    w.push(batch(&[("a", "13")], checkpoint(&[("a", reading(Some("13")))])));
    w
}

#[test]
fn a_view_inside_the_window_joins_after_what_it_applied() {
    let w = window();
    assert_eq!(
        w.join(&checkpoint(&[("a", reading(Some("10")))])),
        Join::At { next: 7, skip: HashMap::new() }
    );
    // After record 12: the first batch holds nothing for it; the join starts at the second.
    assert_eq!(
        w.join(&checkpoint(&[("a", reading(Some("12")))])),
        Join::At { next: 8, skip: HashMap::new() }
    );
    let Join::At { next, mut skip } = w.join(&checkpoint(&[("a", reading(Some("11")))])) else {
        panic!("record 11 is in the window")
    };
    assert_eq!(next, 7);
    let first = deliver(&w.batch(7).unwrap().batch, &mut skip);
    assert_eq!(first.records, vec![record("a", "12")]);
    assert_eq!(first.checkpoint, checkpoint(&[("a", reading(Some("12")))]));
}

#[test]
fn a_view_before_the_window_catches_up_and_one_past_it_waits() {
    let w = window();
    assert_eq!(w.join(&checkpoint(&[("a", reading(Some("9")))])), Join::Behind);
    assert_eq!(
        w.join(&Checkpoint::default()),
        Join::Behind,
        "from the oldest record: behind"
    );
    assert_eq!(w.join(&checkpoint(&[("a", reading(Some("14")))])), Join::Ahead);
    // A shard the leader has not read yet, which the view has.
    assert_eq!(
        w.join(&checkpoint(&[
            ("a", reading(Some("13"))),
            ("b", reading(Some("5")))
        ])),
        Join::Ahead
    );
    // Not a numeral and not in the window: it cannot be placed, so the view reads on its own.
    assert_eq!(w.join(&checkpoint(&[("a", reading(Some("x")))])), Join::Behind);
}

#[test]
fn a_finished_shard_is_skipped_and_stays_finished() {
    let mut w = Window::new(Checkpoint::default(), 0, unlimited());
    w.push(batch(
        &[("a", "1"), ("b", "2")],
        checkpoint(&[("a", ShardPosition::Finished), ("b", reading(Some("2")))]),
    ));
    let view = checkpoint(&[("a", ShardPosition::Finished)]);
    let Join::At { mut skip, .. } = w.join(&view) else {
        panic!("joins")
    };
    let got = deliver(&w.batch(0).unwrap().batch, &mut skip);
    assert_eq!(got.records, vec![record("b", "2")]);
    assert_eq!(got.checkpoint.shards["a"], ShardPosition::Finished);
    // A view that finished a shard the leader still reads is ahead of it.
    let mut w = Window::new(Checkpoint::default(), 0, unlimited());
    w.push(batch(&[("a", "1")], checkpoint(&[("a", reading(Some("1")))])));
    assert_eq!(w.join(&view), Join::Ahead);
}

#[test]
fn the_window_drops_its_oldest_batches_but_keeps_the_newest() {
    let limits = Limits { records: 2, bytes: usize::MAX, batches: usize::MAX };
    let mut w = Window::new(Checkpoint::default(), 0, limits);
    w.push(batch(
        &[("a", "1"), ("a", "2")],
        checkpoint(&[("a", reading(Some("2")))]),
    ));
    w.push(batch(
        &[("a", "3"), ("a", "4"), ("a", "5")],
        checkpoint(&[("a", reading(Some("5")))]),
    ));
    assert_eq!((w.first, w.batches.len(), w.records), (1, 1, 3));
    assert_eq!(w.start, checkpoint(&[("a", reading(Some("2")))]));
    assert_eq!(
        w.join(&Checkpoint::default()),
        Join::Behind,
        "records 1 and 2 are gone"
    );
    assert!(matches!(
        w.join(&checkpoint(&[("a", reading(Some("2")))])),
        Join::At { next: 1, .. }
    ));
}

/// A stream of independent shards, each a list of increasing sequence numbers (random widths), the cut
/// points at which the leader's batches end per shard, how many batches the window dropped, and the view's
/// position per shard (records it applied).
#[derive(Debug, Clone)]
struct Case {
    shards: Vec<Vec<String>>,
    /// `cuts[s][k]`: records of shard `s` read by the end of batch `k` (non-decreasing).
    cuts: Vec<Vec<usize>>,
    finished: Vec<bool>,
    dropped: usize,
    view: Vec<usize>,
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..4, 1usize..6).prop_flat_map(|(shards, batches)| {
        let shard = prop::collection::vec((1u64..1_000_000, 0usize..30), 0..12).prop_map(|steps| {
            let mut n: u128 = 100_000_000_000_000_000_000;
            steps
                .into_iter()
                .map(|(step, width)| {
                    n += step as u128;
                    format!("{:0width$}", n, width = width)
                })
                .collect::<Vec<_>>()
        });
        (
            prop::collection::vec(shard, shards),
            prop::collection::vec(prop::collection::vec(0.0f64..1.0, batches), shards),
            prop::collection::vec(any::<bool>(), shards),
            0..batches,
            prop::collection::vec(0.0f64..1.0, shards),
        )
            .prop_map(|(shards, fractions, finished, dropped, view)| {
                let cuts = shards
                    .iter()
                    .zip(&fractions)
                    .map(|(records, f)| {
                        let mut c: Vec<usize> = f
                            .iter()
                            .map(|x| (x * (records.len() + 1) as f64) as usize)
                            .collect();
                        c.sort();
                        // The leader read every record by its last batch.
                        *c.last_mut().unwrap() = records.len();
                        c
                    })
                    .collect();
                let view = shards
                    .iter()
                    .zip(view)
                    .map(|(r, x)| (x * (r.len() + 1) as f64) as usize)
                    .collect();
                Case { shards, cuts, finished, dropped, view }
            })
    })
}

fn name(s: usize) -> String {
    format!("shard-{s}")
}

/// A position after `read` records of shard `s`; finished when it read all of a closed shard.
fn position(case: &Case, s: usize, read: usize, leader_done: bool) -> Option<ShardPosition> {
    let records = &case.shards[s];
    if read == records.len() && case.finished[s] && leader_done {
        return Some(ShardPosition::Finished);
    }
    match read {
        0 => None,
        n => Some(reading(Some(&records[n - 1]))),
    }
}

fn leader_checkpoint(case: &Case, batch: Option<usize>) -> Checkpoint {
    let last = case.cuts.first().map_or(0, |c| c.len() - 1);
    let mut cp = Checkpoint::default();
    for s in 0..case.shards.len() {
        let read = batch.map_or(0, |k| case.cuts[s][k]);
        if let Some(p) = position(case, s, read, batch == Some(last)) {
            cp.shards.insert(name(s), p);
        }
    }
    cp
}

proptest! {
    #[test]
    fn a_joined_view_gets_each_record_after_its_position_once(case in case()) {
        let batches = case.cuts[0].len();
        let mut w = Window::new(leader_checkpoint(&case, None), 0, unlimited());
        for k in 0..batches {
            let mut records = Vec::new();
            for s in 0..case.shards.len() {
                let from = if k == 0 { 0 } else { case.cuts[s][k - 1] };
                for seq in &case.shards[s][from..case.cuts[s][k]] {
                    records.push(record(&name(s), seq));
                }
            }
            w.push(Batch { records, checkpoint: leader_checkpoint(&case, Some(k)), caught_up: false, at_end_since: None });
        }
        // Drop the oldest batches as a smaller window would have.
        for _ in 0..case.dropped {
            let oldest = w.batches.pop_front().unwrap();
            w.start = oldest.batch.checkpoint.clone();
            w.first += 1;
        }
        let window_start: Vec<usize> = (0..case.shards.len())
            .map(|s| if case.dropped == 0 { 0 } else { case.cuts[s][case.dropped - 1] })
            .collect();
        let view_position = {
            let mut cp = Checkpoint::default();
            for (s, read) in case.view.iter().enumerate() {
                // A view that read all of a closed shard has finished it (its reader saw the shard end).
                if let Some(p) = position(&case, s, *read, true) {
                    cp.shards.insert(name(s), p);
                }
            }
            cp
        };
        let behind = (0..case.shards.len()).any(|s| case.view[s] < window_start[s]);
        let ahead = !behind && (0..case.shards.len()).any(|s| {
            // Finished while the leader's window starts before the end: not ahead of its last batch,
            // which read every record; only the last batch's checkpoint says so.
            case.view[s] > case.cuts[s][batches - 1]
        });
        match w.join(&view_position) {
            Join::Behind => prop_assert!(behind, "{view_position:?} called behind"),
            Join::Ahead => prop_assert!(ahead, "{view_position:?} called ahead"),
            Join::At { next, mut skip } => {
                prop_assert!(!behind && !ahead);
                let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for k in next..w.next() {
                    let b = deliver(&w.batch(k).unwrap().batch, &mut skip);
                    for r in &b.records {
                        got.entry(r.shard_id.clone()).or_default().push(r.sequence_number.clone());
                    }
                    // The checkpoint stands right after the last record given of each shard.
                    for s in 0..case.shards.len() {
                        let given = got.get(&name(s)).map_or(0, Vec::len);
                        let read = case.view[s] + given;
                        let expected = match b.checkpoint.shards.get(&name(s)) {
                            Some(ShardPosition::Finished) => {
                                prop_assert_eq!(read, case.shards[s].len(), "shard {} finished early", s);
                                continue;
                            }
                            Some(ShardPosition::Reading { after }) => after.clone(),
                            None => None,
                        };
                        prop_assert_eq!(expected, read.checked_sub(1).map(|i| case.shards[s][i].clone()), "shard {} after batch {}", s, k);
                    }
                }
                for s in 0..case.shards.len() {
                    let want = case.shards[s][case.view[s]..].to_vec();
                    prop_assert_eq!(got.remove(&name(s)).unwrap_or_default(), want, "shard {}", s);
                }
            }
        }
    }
}
