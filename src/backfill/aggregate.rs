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
//! Every `ADD` of the live path of attempt `n` also adds to the aggregate's `kappaLive<n>`. The backfill
//! starts reading the export only once the live path has read past `t1 + margin` (the band is complete),
//! sums the export's records per aggregate (leaving out the band's), writes one partial object per data
//! file to S3 beside the export (restart-safe: a checkpointed file's partial is there), and finally
//! **folds**: one `UpdateItem` per aggregate, `SET total = kappaLive<n> + base, kappaFolded = n`, once per
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
    a: String,
    #[serde(default)]
    k: Combine,
    d: Number,
}

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

/// The export's `Count`/`Sum`/`Min`/`Max` records combined per aggregate: a data file's, or the whole
/// export's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Partials(BTreeMap<(String, String, String), (Combine, Number)>);

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
            ViewWrite::Add {
                key,
                attribute,
                delta,
                record,
            } => {
                if band.contains(&record.digest()) {
                    return Ok(None);
                }
                (key, attribute, Combine::Sum, delta, Some(record))
            }
            ViewWrite::Extreme {
                key,
                attribute,
                value,
                greatest,
            } => {
                let combine = if greatest { Combine::Max } else { Combine::Min };
                (key, attribute, combine, value, None)
            }
            other => return Ok(Some(other)),
        };
        let (pk, sk) = view_key_of(&key);
        let slot = (pk.to_string(), sk.to_string(), attribute);
        let combined = match self.0.get(&slot) {
            None => value,
            Some((_, held)) => combine.apply(held, value).map_err(|reason| Unstorable {
                record,
                pk: slot.0.clone(),
                sk: slot.1.clone(),
                reason,
            })?,
        };
        self.0.insert(slot, (combine, combined));
        Ok(None)
    }

    /// Combines `other`'s partials in; the aggregates whose sum DynamoDB could not store are left out and
    /// returned.
    pub fn merge(&mut self, other: Partials) -> Vec<Unstorable> {
        let mut refused = Vec::new();
        for (slot, (combine, value)) in other.0 {
            let combined = match self.0.get(&slot) {
                None => Ok(value),
                Some((_, held)) => combine.apply(held, value),
            };
            match combined {
                Ok(v) => {
                    self.0.insert(slot, (combine, v));
                }
                Err(reason) => refused.push(Unstorable {
                    record: None,
                    pk: slot.0.clone(),
                    sk: slot.1.clone(),
                    reason,
                }),
            }
        }
        refused
    }

    /// The `Count`/`Sum` bases, for [`ViewTableWriter::fold`](crate::aws::views::ViewTableWriter::fold),
    /// and the `Min`/`Max` values as the conditional writes that set them.
    pub fn split(self) -> (BTreeMap<(String, String, String), Number>, Vec<ViewWrite>) {
        let mut bases = BTreeMap::new();
        let mut extremes = Vec::new();
        for ((pk, sk, attribute), (combine, value)) in self.0 {
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
        (bases, extremes)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }


    /// Gzip NDJSON, one `{"pk","sk","a","d"}` object a line.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = GzEncoder::new(Vec::new(), Compression::fast());
        for ((pk, sk, a), (k, d)) in &self.0 {
            let line = PartialLine {
                pk: pk.clone(),
                sk: sk.clone(),
                a: a.clone(),
                k: *k,
                d: d.clone(),
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
            partials.0.insert((p.pk, p.sk, p.a), (p.k, p.d));
        }
        Ok(partials)
    }
}

impl Combine {
    fn apply(self, held: &Number, value: Number) -> Result<Number, String> {
        Ok(match self {
            Combine::Sum => held.checked_add(&value).map_err(|e| e.to_string())?,
            Combine::Min if value < *held => value,
            Combine::Max if value > *held => value,
            Combine::Min | Combine::Max => held.clone(),
        })
    }
}

/// Where backfill attempt `attempt`'s partial objects live: beside the export, under its location, so
/// they go with it.
pub fn partials_prefix(export_prefix: &str, attempt: i64) -> String {
    format!("{}/kappa-partials/a{attempt}/", export_prefix.trim_end_matches('/'))
}

/// The partial object of the data file `data_file_key`.
pub fn partial_key(partials_prefix: &str, data_file_key: &str) -> String {
    let hash = Sha256::digest(data_file_key.as_bytes());
    format!("{partials_prefix}{}.json.gz", hex::encode(&hash[..12]))
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
        let c = Cutoff {
            attempt: 1,
            export_time: Some(1000.0),
        };
        assert_eq!(c.classify(Some(969.0)), Disposition::Skip);
        assert_eq!(c.classify(Some(970.0)), Disposition::Skip);
        assert_eq!(c.classify(Some(970.5)), Disposition::Band);
        assert_eq!(c.classify(Some(1030.0)), Disposition::Band);
        assert_eq!(c.classify(Some(1030.5)), Disposition::Live);
        assert_eq!(c.classify(None), Disposition::Band);
        let unknown = Cutoff {
            attempt: 1,
            export_time: None,
        };
        assert_eq!(unknown.classify(Some(1.0)), Disposition::Band, "band when unsure");
        assert!(!c.band_closed(Some(1030.0)) && c.band_closed(Some(1031.0)));
        assert!(!unknown.band_closed(Some(1e12)));
    }

    #[test]
    fn partials_sum_per_aggregate_leave_out_the_band_and_round_trip() {
        let band: HashSet<String> = [RecordId::new(&Value::S("r3".into()), None).unwrap().digest()].into();
        let mut p = Partials::default();
        for (g, d, id) in [("a", "1.5", "r1"), ("a", "2", "r2"), ("a", "100", "r3"), ("b|~#", "-1", "r4")] {
            assert_eq!(p.take(add(g, d, id), &band).unwrap(), None);
        }
        let put = ViewWrite::Put { item: Item::new() };
        assert_eq!(p.take(put.clone(), &band).unwrap(), Some(put));
        let back = Partials::from_bytes(&p.to_bytes()).unwrap();
        assert_eq!(back, p);
        let (bases, extremes) = back.split();
        assert_eq!(bases[&("v#a".into(), "TOTAL".into(), "sum".into())].as_str(), "3.5");
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
        let (bases, mut extremes) = one.split();
        assert!(bases.is_empty());
        extremes.sort_by_key(|w| format!("{w:?}"));
        assert_eq!(extremes, vec![extreme("9", true), extreme("-4", false)]);
    }

    #[test]
    fn an_unstorable_partial_is_refused_not_stored() {
        let mut p = Partials::default();
        p.take(add("a", &"9".repeat(38), "r1"), &HashSet::new()).unwrap();
        let refused = p.take(add("a", "0.5", "r2"), &HashSet::new()).unwrap_err();
        assert_eq!(refused.record, Some(RecordId::new(&Value::S("r2".into()), None).unwrap()));
        let mut q = Partials::default();
        q.take(add("a", "0.5", "r3"), &HashSet::new()).unwrap();
        assert_eq!(p.merge(q).len(), 1);
    }

    #[test]
    fn partials_live_under_the_export_per_attempt_and_file() {
        let prefix = partials_prefix("exports/views/ns/v/1", 2);
        assert_eq!(prefix, "exports/views/ns/v/1/kappa-partials/a2/");
        let a = partial_key(&prefix, "AWSDynamoDB/x/data/a.json.gz");
        assert!(a.starts_with(&prefix) && a.ends_with(".json.gz"));
        assert_ne!(a, partial_key(&prefix, "AWSDynamoDB/x/data/b.json.gz"));
    }
}
