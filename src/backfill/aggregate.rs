//! Pre-aggregated backfill of `Count`/`Sum` views: the backfill writes about one item per aggregate, not
//! one per log record, and the live path takes over with no record lost and none counted twice.
//!
//! An export is a consistent snapshot of the log at its export time `t1` (DynamoDB: "the export reflects
//! the table's state at the time you specify",
//! <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/S3DataExport.HowItWorks.html>), so it
//! holds each record once, and a log is append-only: a record is in the export exactly when it was written
//! at or before `t1`. The live path reads the stream, whose records carry `ApproximateCreationDateTime`
//! (epoch seconds, rounded down; FORMATS.md). For backfill attempt `n` of a view whose live path the
//! operator runs, each `Count`/`Sum` record the live path reads with creation time `t` is:
//!
//! ```text
//!  t ≤ t1 − margin                 Skip: surely in the export; the backfill counts it
//!  t1 − margin < t ≤ t1 + margin   Band: applied live (marker + ADD) and recorded in the attempt's band,
//!  (or t1 not known yet)                 which the backfill leaves out of its base
//!  t > t1 + margin                 Live: surely not in the export; applied live
//! ```
//!
//! Every `ADD` of the live path of attempt `n` also adds to the aggregate's `kappaLive<n>#<view>`. The backfill
//! starts reading the export only once the live path has read past `t1 + margin` (the band is complete),
//! sums the export's records per aggregate (leaving out the band's), writes one partial object per data
//! file to S3 beside the export (restart-safe: a checkpointed file's partial is there), and finally
//! **folds**: one `UpdateItem` per aggregate, `SET total = kappaLive<n>#<view> + base, kappaFolded = n`, once per
//! attempt. A record is thus counted once: by the base (in the export, not in the band) or by the live
//! path (in the band, or after it). A later attempt (a gap in the stream) folds the same way and drops what
//! earlier attempts counted. The margin ([`BAND_MARGIN_SECONDS`]) absorbs the rounding of creation times
//! and clock differences; the band costs one extra item per record written within it.
//!
//! Views whose live path is a Lambda function, and `Scan` backfills (no snapshot time), use the
//! per-record path instead: the backfill writes each record with its idempotency marker, as the live path
//! does, which is exact but writes one marker per record.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use bigdecimal::BigDecimal;

use crate::projection::{Number, RecordId, ViewWrite, view_key_of};

/// How far around the export time the live path's records are treated as maybe in the export, in
/// seconds.
pub const BAND_MARGIN_SECONDS: f64 = 30.0;

/// The live path's view of backfill attempt `attempt`: its export time, once known.
#[derive(Clone, Debug, PartialEq)]
pub struct Cutoff {
    pub attempt: i64,
    /// The export time `t1` (epoch seconds); `None` until the export is requested.
    pub export_time: Option<f64>,
}

/// What the live path does with a `Count`/`Sum` record; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    Skip,
    Band,
    Live,
}

impl Cutoff {
    /// The disposition of a record created at `t` (epoch seconds; `None`: unknown, treated as band).
    pub fn classify(&self, t: Option<f64>) -> Disposition {
        match (self.export_time, t) {
            (Some(t1), Some(t)) if t <= t1 - BAND_MARGIN_SECONDS => Disposition::Skip,
            (Some(t1), Some(t)) if t > t1 + BAND_MARGIN_SECONDS => Disposition::Live,
            _ => Disposition::Band,
        }
    }

    /// Whether a live path that has read everything created up to `passed` (epoch seconds) has recorded
    /// the whole band.
    pub fn band_closed(&self, passed: Option<f64>) -> bool {
        matches!((self.export_time, passed), (Some(t1), Some(p)) if p > t1 + BAND_MARGIN_SECONDS)
    }
}

/// One partial: `(pk, sk, attribute)` of the aggregate, how it combines (`k`) and its value.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct PartialLine {
    pk: String,
    sk: String,
    #[serde(default)]
    a: String,
    #[serde(default)]
    k: Combine,
    /// `Latest`: the order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    d: Option<Number>,
    /// `Count`/`Sum`/`Min`/`Max`: the exact value, unbounded (decimal text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    v: Option<String>,
    /// `Latest`: the winning record's digest and its view item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    i: Option<crate::projection::Item>,
}

/// What [`Partials::split`] gives: the `Count`/`Sum` bases, the conditional writes of the other modes,
/// the aggregates whose base cannot be stored.
pub type Split = (
    BTreeMap<(String, String, String), Number>,
    Vec<ViewWrite>,
    Vec<Unstorable>,
);

/// How partial values of one aggregate combine.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Combine {
    /// `Count`/`Sum`: added up, then folded with the live path's part.
    #[default]
    Sum,
    /// `Min`: the least.
    Min,
    /// `Max`: the greatest.
    Max,
}

/// The export's records combined per view item: `Count`/`Sum`/`Min`/`Max` values per aggregate, and the
/// winning `Latest` write per key; a data file's, or (a bucket of) the whole export's.
#[derive(Clone, Debug, Default, PartialEq)]
///
/// Sums are kept exact and unbounded while partials combine (a sum may leave DynamoDB's range and come
/// back, whatever the order of records and files): only the export's final base must be a number DynamoDB
/// can store.
pub struct Partials(
    BTreeMap<(String, String, String), (Combine, BigDecimal)>,
    BTreeMap<(String, String), ViewWrite>,
);

/// A record whose delta would make its aggregate's base a number DynamoDB cannot store.
#[derive(Clone, Debug, PartialEq)]
pub struct Unstorable {
    pub record: Option<RecordId>,
    pub pk: String,
    pub sk: String,
    pub reason: String,
}

impl Partials {
    /// Takes `write` when it is an `Add` (left out when its record is in `band`, digests) or an
    /// `Extreme`; gives back every other write. An `Add` that would overflow its partial is refused and
    /// left out.
    pub fn take(
        &mut self,
        write: ViewWrite,
        band: &HashSet<String>,
    ) -> Result<Option<ViewWrite>, Unstorable> {
        let (key, attribute, combine, value, record) = match write {
            ViewWrite::Add { key, attribute, delta, record } => {
                if band.contains(&record.digest()) {
                    return Ok(None);
                }
                (key, attribute, Combine::Sum, delta, Some(record))
            }
            ViewWrite::Extreme { key, attribute, value, greatest } => {
                let combine = if greatest { Combine::Max } else { Combine::Min };
                (key, attribute, combine, value, None)
            }
            latest @ ViewWrite::PutIfNewer { .. } => {
                let (pk, sk) = latest.view_key();
                let slot = (pk.to_string(), sk.to_string());
                match self.1.get_mut(&slot) {
                    Some(held) if crate::aws::views::beats(&latest, held) => *held = latest,
                    Some(_) => {}
                    None => {
                        self.1.insert(slot, latest);
                    }
                }
                return Ok(None);
            }
            other => return Ok(Some(other)),
        };
        let (pk, sk) = view_key_of(&key);
        let slot = (pk.to_string(), sk.to_string(), attribute);
        let _ = record;
        let value = value.value().clone();
        let combined = match self.0.get(&slot) {
            None => value,
            Some((_, held)) => combine.apply(held, value),
        };
        self.0.insert(slot, (combine, combined));
        Ok(None)
    }

    /// Combines `other`'s partials in (never fails: sums are unbounded until [`split`](Self::split)).
    pub fn merge(&mut self, other: Partials) -> Vec<Unstorable> {
        let refused = Vec::new();
        for (slot, latest) in other.1 {
            match self.1.get_mut(&slot) {
                Some(held) if crate::aws::views::beats(&latest, held) => *held = latest,
                Some(_) => {}
                None => {
                    self.1.insert(slot, latest);
                }
            }
        }
        for (slot, (combine, value)) in other.0 {
            let combined = match self.0.get(&slot) {
                None => value,
                Some((_, held)) => combine.apply(held, value),
            };
            self.0.insert(slot, (combine, combined));
        }
        refused
    }

    /// The `Count`/`Sum` bases, for [`ViewTableWriter::fold`](crate::aws::views::ViewTableWriter::fold),
    /// the `Min`/`Max`/`Latest` winners as the conditional writes that set them, and the aggregates whose
    /// base DynamoDB cannot store (the export's records of that key total more than 38 significant digits
    /// or 1E+126 or more): those are left out and reported.
    pub fn split(self) -> Split {
        let mut bases = BTreeMap::new();
        let mut refused = Vec::new();
        let mut extremes: Vec<ViewWrite> = self.1.into_values().collect();
        for ((pk, sk, attribute), (combine, value)) in self.0 {
            let text = value.normalized().to_string();
            let value = match Number::parse(&text) {
                Ok(v) => v,
                Err(e) => {
                    refused.push(Unstorable {
                        record: None,
                        reason: format!(
                            "the export's records of this aggregate total {text}, which DynamoDB cannot store ({})",
                            e.reason
                        ),
                        pk,
                        sk,
                    });
                    continue;
                }
            };
            match combine {
                Combine::Sum => {
                    bases.insert((pk, sk, attribute), value);
                }
                Combine::Min | Combine::Max => extremes.push(ViewWrite::Extreme {
                    key: crate::projection::Item::from([
                        ("pk".to_string(), crate::projection::Value::S(pk)),
                        ("sk".to_string(), crate::projection::Value::S(sk)),
                    ]),
                    attribute,
                    value,
                    greatest: combine == Combine::Max,
                }),
            }
        }
        (bases, extremes, refused)
    }

    /// View items held.
    pub fn len(&self) -> usize {
        self.0.len() + self.1.len()
    }

    /// `Latest` items held (the memory-heavy kind).
    pub fn latest_len(&self) -> usize {
        self.1.len()
    }

    /// The `Latest` writes held, to send now (bounding memory); the rest stays.
    pub fn take_latest(&mut self) -> Vec<ViewWrite> {
        std::mem::take(&mut self.1).into_values().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty() && self.1.is_empty()
    }

    /// The partials split into `buckets` by a hash of the view item's key, so a fold can combine one
    /// bucket of the whole export at a time.
    pub fn into_buckets(self, buckets: usize) -> Vec<Partials> {
        let mut out = vec![Partials::default(); buckets.max(1)];
        for (slot, value) in self.0 {
            out[bucket_of(&slot.0, &slot.1, buckets)].0.insert(slot, value);
        }
        for (slot, write) in self.1 {
            out[bucket_of(&slot.0, &slot.1, buckets)].1.insert(slot, write);
        }
        out
    }

    /// Gzip NDJSON, one `{"pk","sk","a","d"}` object a line.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = GzEncoder::new(Vec::new(), Compression::fast());
        for ((pk, sk), write) in &self.1 {
            let ViewWrite::PutIfNewer { item, order_attribute, order, record } = write else {
                continue;
            };
            let line = PartialLine {
                pk: pk.clone(),
                sk: sk.clone(),
                a: order_attribute.clone(),
                k: Combine::Sum,
                d: Some(order.clone()),
                v: None,
                r: Some(record.clone()),
                i: Some(item.clone()),
            };
            let _ = serde_json::to_writer(&mut out, &line);
            let _ = out.write_all(b"\n");
        }
        for ((pk, sk, a), (k, d)) in &self.0 {
            let line = PartialLine {
                pk: pk.clone(),
                sk: sk.clone(),
                a: a.clone(),
                k: *k,
                d: None,
                v: Some(d.normalized().to_string()),
                r: None,
                i: None,
            };
            // Writing to memory cannot fail; the types always serialize.
            let _ = serde_json::to_writer(&mut out, &line);
            let _ = out.write_all(b"\n");
        }
        out.finish().unwrap_or_default()
    }

    /// Reads what [`to_bytes`](Self::to_bytes) wrote.
    pub fn from_bytes(bytes: &[u8]) -> Result<Partials, String> {
        let mut text = String::new();
        GzDecoder::new(bytes)
            .read_to_string(&mut text)
            .map_err(|e| format!("not gzip text: {e}"))?;
        let mut partials = Partials::default();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
            let p: PartialLine = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
            let bad = |what: &str| format!("line {}: {what}", i + 1);
            match (p.r, p.i, p.d, p.v) {
                (Some(record), Some(item), Some(order), _) => {
                    let write = ViewWrite::PutIfNewer { item, order_attribute: p.a, order, record };
                    partials.1.insert((p.pk, p.sk), write);
                }
                (None, None, None, Some(v)) => {
                    let value = v.parse::<BigDecimal>().map_err(|e| bad(&e.to_string()))?;
                    partials.0.insert((p.pk, p.sk, p.a), (p.k, value));
                }
                _ => return Err(bad("neither a Latest item nor a value")),
            }
        }
        Ok(partials)
    }
}

impl Combine {
    fn apply(self, held: &BigDecimal, value: BigDecimal) -> BigDecimal {
        match self {
            Combine::Sum => held + value,
            Combine::Min if value < *held => value,
            Combine::Max if value > *held => value,
            Combine::Min | Combine::Max => held.clone(),
        }
    }
}

/// The bucket of the view item `(pk, sk)` among `buckets`.
pub fn bucket_of(pk: &str, sk: &str, buckets: usize) -> usize {
    let hash = Sha256::digest(format!("{}:{pk}{sk}", pk.len()).as_bytes());
    (u64::from_be_bytes(hash[..8].try_into().unwrap_or_default()) % buckets.max(1) as u64) as usize
}

/// How many buckets a fold of an export of `items` records combines one at a time: about a million
/// records a bucket, at most 64.
pub fn buckets_for(items: u64) -> usize {
    (items.div_ceil(1_000_000) as usize).clamp(1, 64)
}

/// Where backfill attempt `attempt`'s partial objects live: beside the export, under its location, so
/// they go with it.
pub fn partials_prefix(export_prefix: &str, attempt: i64) -> String {
    format!(
        "{}/kappa-partials/a{attempt}/",
        export_prefix.trim_end_matches('/')
    )
}

/// The partial object of bucket `bucket` of the data file `data_file_key`.
pub fn partial_key(partials_prefix: &str, bucket: usize, data_file_key: &str) -> String {
    let hash = Sha256::digest(data_file_key.as_bytes());
    format!(
        "{}{}.json.gz",
        bucket_prefix(partials_prefix, bucket),
        hex::encode(&hash[..12])
    )
}

/// The prefix of bucket `bucket`'s partial objects.
pub fn bucket_prefix(partials_prefix: &str, bucket: usize) -> String {
    format!("{partials_prefix}b{bucket:02}/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::{Item, Value};

    fn add(g: &str, delta: &str, id: &str) -> ViewWrite {
        ViewWrite::Add {
            key: Item::from([
                ("pk".into(), Value::S(format!("v#{g}"))),
                ("sk".into(), Value::S("TOTAL".into())),
            ]),
            attribute: "sum".into(),
            delta: delta.parse().unwrap(),
            record: RecordId::new(&Value::S(id.into()), None).unwrap(),
        }
    }

    #[test]
    fn records_around_the_export_time_are_band_and_unknown_times_too() {
        let c = Cutoff { attempt: 1, export_time: Some(1000.0) };
        assert_eq!(c.classify(Some(969.0)), Disposition::Skip);
        assert_eq!(c.classify(Some(970.0)), Disposition::Skip);
        assert_eq!(c.classify(Some(970.5)), Disposition::Band);
        assert_eq!(c.classify(Some(1030.0)), Disposition::Band);
        assert_eq!(c.classify(Some(1030.5)), Disposition::Live);
        assert_eq!(c.classify(None), Disposition::Band);
        let unknown = Cutoff { attempt: 1, export_time: None };
        assert_eq!(unknown.classify(Some(1.0)), Disposition::Band, "band when unsure");
        assert!(!c.band_closed(Some(1030.0)) && c.band_closed(Some(1031.0)));
        assert!(!unknown.band_closed(Some(1e12)));
    }

    #[test]
    fn partials_sum_per_aggregate_leave_out_the_band_and_round_trip() {
        let band: HashSet<String> = [RecordId::new(&Value::S("r3".into()), None).unwrap().digest()].into();
        let mut p = Partials::default();
        for (g, d, id) in [
            ("a", "1.5", "r1"),
            ("a", "2", "r2"),
            ("a", "100", "r3"),
            ("b|~#", "-1", "r4"),
        ] {
            assert_eq!(p.take(add(g, d, id), &band).unwrap(), None);
        }
        let put = ViewWrite::Put { item: Item::new() };
        assert_eq!(p.take(put.clone(), &band).unwrap(), Some(put));
        let back = Partials::from_bytes(&p.to_bytes()).unwrap();
        assert_eq!(back, p);
        let (bases, extremes, _) = back.split();
        assert_eq!(
            bases[&("v#a".into(), "TOTAL".into(), "sum".into())].as_str(),
            "3.5"
        );
        assert_eq!(bases.len(), 2);
        assert!(extremes.is_empty());
    }

    #[test]
    fn min_and_max_partials_keep_the_extreme_across_files() {
        let extreme = |v: &str, greatest| ViewWrite::Extreme {
            key: Item::from([
                ("pk".into(), Value::S("v#a".into())),
                ("sk".into(), Value::S("TOTAL".into())),
            ]),
            attribute: if greatest { "max" } else { "min" }.into(),
            value: v.parse().unwrap(),
            greatest,
        };
        let (mut one, mut two) = (Partials::default(), Partials::default());
        for v in ["3", "-1", "7"] {
            one.take(extreme(v, true), &HashSet::new()).unwrap();
            one.take(extreme(v, false), &HashSet::new()).unwrap();
        }
        for v in ["9", "-4"] {
            two.take(extreme(v, true), &HashSet::new()).unwrap();
            two.take(extreme(v, false), &HashSet::new()).unwrap();
        }
        let two = Partials::from_bytes(&two.to_bytes()).unwrap();
        assert!(one.merge(two).is_empty());
        let (bases, mut extremes, _) = one.split();
        assert!(bases.is_empty());
        extremes.sort_by_key(|w| format!("{w:?}"));
        assert_eq!(extremes, vec![extreme("9", true), extreme("-4", false)]);
    }

    #[test]
    fn sums_may_leave_the_range_between_files_only_the_base_must_be_storable() {
        let mut one = Partials::default();
        one.take(add("a", "9E125", "r1"), &HashSet::new()).unwrap();
        let mut two = Partials::default();
        for (d, id) in [("9E125", "r2"), ("-9E125", "r3"), ("-1E125", "r4")] {
            two.take(add("a", d, id), &HashSet::new()).unwrap();
        }
        two.take(add("b", "9E125", "r5"), &HashSet::new()).unwrap();
        two.take(add("b", "9E125", "r6"), &HashSet::new()).unwrap();
        let two = Partials::from_bytes(&two.to_bytes()).unwrap();
        assert!(one.merge(two).is_empty(), "merging never leaves a file out");
        let (bases, _, refused) = one.split();
        let a = &bases[&("v#a".into(), "TOTAL".into(), "sum".into())];
        assert_eq!(
            *a.value(),
            "8E125".parse::<BigDecimal>().unwrap(),
            "9E125 + 9E125 − 9E125 − 1E125"
        );
        assert_eq!(
            refused.len(),
            1,
            "b's base, 1.8E+126, cannot be stored: {refused:?}"
        );
        assert_eq!(refused[0].pk, "v#b");
    }

    #[test]
    fn partials_live_under_the_export_per_attempt_and_file() {
        let prefix = partials_prefix("exports/views/ns/v/1", 2);
        assert_eq!(prefix, "exports/views/ns/v/1/kappa-partials/a2/");
        let a = partial_key(&prefix, 3, "AWSDynamoDB/x/data/a.json.gz");
        assert!(a.starts_with(&bucket_prefix(&prefix, 3)) && a.ends_with(".json.gz"));
        assert_ne!(a, partial_key(&prefix, 3, "AWSDynamoDB/x/data/b.json.gz"));
        assert_eq!(buckets_for(0), 1);
        assert_eq!(buckets_for(2_500_000), 3);
        assert_eq!(buckets_for(u64::MAX), 64);
    }

    #[test]
    fn latest_partials_keep_the_winner_across_files_and_buckets() {
        let latest = |key: &str, seq: &str, record: &str| ViewWrite::PutIfNewer {
            item: Item::from([
                ("pk".into(), Value::S(key.into())),
                ("sk".into(), Value::S("LATEST".into())),
                ("seq".into(), Value::N(seq.parse().unwrap())),
            ]),
            order_attribute: "seq".into(),
            order: seq.parse().unwrap(),
            record: record.into(),
        };
        let (mut one, mut two) = (Partials::default(), Partials::default());
        one.take(latest("v#a", "5", "r1"), &HashSet::new()).unwrap();
        one.take(latest("v#b", "1", "r2"), &HashSet::new()).unwrap();
        two.take(latest("v#a", "5", "r9"), &HashSet::new()).unwrap();
        two.take(latest("v#b", "0", "r3"), &HashSet::new()).unwrap();
        let two = Partials::from_bytes(&two.to_bytes()).unwrap();
        assert!(one.merge(two).is_empty());
        assert_eq!(one.latest_len(), 2);
        let buckets = one.clone().into_buckets(4);
        assert_eq!(buckets.iter().map(Partials::len).sum::<usize>(), 2);
        let (_, mut winners, _) = one.split();
        winners.sort_by_key(|w| w.view_key().0.to_string());
        assert_eq!(winners, vec![latest("v#a", "5", "r9"), latest("v#b", "1", "r2")]);
    }
}
