//! What a view's backfill will read, write, cost and take, before it starts: for `kappa-operator plan`
//! (manifests not yet applied, the log's size given or assumed) and for a view waiting for
//! `spec.backfill.approval: Manual` (the log's size from `DescribeTable`).
//!
//! Every figure is an upper bound where the view's content is not known before it is projected: the
//! view writes at most one item per log record of its record types (a reduced or pre-aggregated backfill
//! writes one per view key, far fewer), each taking the write units of its size.

use serde::{Deserialize, Serialize};

use super::prices::{Prices, STORAGE_KB_PER_GB, TRANSACTION_WRITE_MULTIPLIER, WRITE_UNIT_KB};
use crate::crd::{BackfillSource, MaterializedView, ProjectionMode};

/// A new on-demand table serves up to 4,000 write request units per second at once, and more as it
/// scales (DynamoDB developer guide, "On-demand capacity mode: initial throughput"); the ETA of a
/// backfill into an on-demand table without a maximum assumes that rate.
pub const ON_DEMAND_INITIAL_WRITE_UNITS_PER_SECOND: f64 = 4000.0;
/// One read request unit reads up to 4 KB strongly consistent, two eventually consistent reads of that
/// size (DynamoDB developer guide, "Read request units"); a backfill scan reads eventually consistent.
pub const READ_UNIT_KB: f64 = 4.0;

/// The log as `DescribeTable` reports it: `ItemCount` and `TableSizeBytes`, which DynamoDB updates about
/// every six hours (API_TableDescription), so recent writes may be missing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LogSize {
    pub items: u64,
    pub bytes: u64,
}

/// The estimate of one backfill.
#[derive(Clone, Debug, PartialEq)]
pub struct BackfillEstimate {
    pub source: BackfillSource,
    pub log: LogSize,
    /// What reading the log costs: the export's price per GB, or the scan's read units.
    pub read_cost_usd: f64,
    /// At most this many view writes.
    pub view_writes: u64,
    /// At most this many write units (a `Count`/`Sum` write is a transaction: twice the units).
    pub write_units: u64,
    pub write_cost_usd: f64,
    /// Write units per second the backfill may use (`spec.backfill.writeCapacityPercent` of the table's
    /// capacity, or of on-demand's initial throughput).
    pub write_rate: f64,
    /// At most this long, at `write_rate`, in seconds.
    pub eta_seconds: u64,
}

impl BackfillEstimate {
    /// Estimates `view`'s backfill of a log of `log` size, `share` of whose records are of the view's
    /// record types (1.0 when unknown), into a table of `capacity` write units per second (`None`:
    /// on-demand without a maximum).
    pub fn new(
        view: &MaterializedView,
        log: LogSize,
        share: f64,
        capacity: Option<f64>,
        prices: &Prices,
    ) -> BackfillEstimate {
        let source = view.spec.backfill.source;
        let gb = log.bytes as f64 / 1e9;
        let item_kb = match log.items {
            0 => 0.0,
            n => log.bytes as f64 / 1024.0 / n as f64,
        };
        let read_cost_usd = match source {
            BackfillSource::Export => gb * prices.dynamodb_export_gb,
            BackfillSource::Scan => {
                let units = (log.bytes as f64 / 1024.0 / READ_UNIT_KB / 2.0).ceil();
                units / 1e6 * prices.dynamodb_read_units_per_million
            }
            BackfillSource::None => 0.0,
        };
        let view_writes = match source {
            BackfillSource::None => 0,
            _ => (log.items as f64 * share.clamp(0.0, 1.0)).ceil() as u64,
        };
        let mode = view.spec.projection.as_ref().map(|p| p.mode);
        let per_write = match mode {
            Some(ProjectionMode::Count | ProjectionMode::Sum) => TRANSACTION_WRITE_MULTIPLIER,
            _ => (item_kb / WRITE_UNIT_KB).ceil().max(1.0),
        };
        let write_units = (view_writes as f64 * per_write).ceil() as u64;
        let write_cost_usd = write_units as f64 / 1e6 * prices.dynamodb_write_units_per_million;
        let percent = f64::from(view.spec.backfill.write_capacity_percent.clamp(1, 100)) / 100.0;
        let write_rate = (capacity.unwrap_or(ON_DEMAND_INITIAL_WRITE_UNITS_PER_SECOND) * percent).max(1.0);
        BackfillEstimate {
            source,
            log,
            read_cost_usd,
            view_writes,
            write_units,
            write_cost_usd,
            write_rate,
            eta_seconds: (write_units as f64 / write_rate).ceil() as u64,
        }
    }

    /// One line: what is read, written, paid and how long it takes.
    pub fn summary(&self) -> String {
        let read = match self.source {
            BackfillSource::Export => format!(
                "exports {} items ({}) of the log to S3 (${:.4})",
                self.log.items,
                human_bytes(self.log.bytes),
                self.read_cost_usd
            ),
            BackfillSource::Scan => format!(
                "scans {} items ({}) of the log (${:.4} of read units)",
                self.log.items,
                human_bytes(self.log.bytes),
                self.read_cost_usd
            ),
            BackfillSource::None => {
                return "no backfill (spec.backfill.source None): the view starts empty".into();
            }
        };
        format!(
            "{read}, writes at most {} view items ({} write units, ${:.4}), at most {} at {:.0} write units/s",
            self.view_writes,
            self.write_units,
            self.write_cost_usd,
            format_duration(self.eta_seconds),
            self.write_rate
        )
    }
}

/// `secs` as `1h2m`, `2m30s` or `15s`.
pub fn format_duration(secs: u64) -> String {
    match secs {
        s if s >= 3600 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// `bytes` as B, KB, MB or GB (decimal, as DynamoDB and S3 bill).
pub fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} KB", b / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b / 1e6),
        _ => format!("{:.2} GB", b / STORAGE_KB_PER_GB / 1e3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(spec: &str) -> MaterializedView {
        serde_yaml::from_str(&format!(
            "apiVersion: kappa.dev/v1alpha1\nkind: MaterializedView\nmetadata: {{name: v, namespace: n}}\nspec:\n  \
             eventLogRef: {{name: orders}}\n  recordTypes: [order]\n{spec}"
        ))
        .unwrap()
    }

    #[test]
    fn an_export_backfill_of_ten_million_one_kb_records() {
        let v = view("  projection: {mode: Latest, key: {partitionKey: 'O#{id}'}}\n");
        let log = LogSize { items: 10_000_000, bytes: 10_000_000 * 1024 };
        let e = BackfillEstimate::new(&v, log, 1.0, None, &Prices::default());
        assert_eq!(e.view_writes, 10_000_000);
        assert_eq!(e.write_units, 10_000_000, "one unit per 1 KB item");
        assert!(
            (e.read_cost_usd - 10.24 * 0.10).abs() < 1e-9,
            "{}",
            e.read_cost_usd
        );
        assert!((e.write_cost_usd - 6.25).abs() < 1e-9);
        // 50 % of on-demand's initial 4,000 units per second.
        assert_eq!(e.write_rate, 2000.0);
        assert_eq!(e.eta_seconds, 5000);
        let s = e.summary();
        assert!(
            s.contains("exports 10000000 items (10.24 GB)") && s.contains("1h23m"),
            "{s}"
        );
    }

    #[test]
    fn aggregates_are_transactions_and_a_share_of_the_log() {
        let v = view(
            "  projection: {mode: Count, key: {partitionKey: 'C#{id}'}}\n  backfill: {source: Scan, writeCapacityPercent: 10}\n",
        );
        let log = LogSize { items: 1000, bytes: 1000 * 3 * 1024 };
        let e = BackfillEstimate::new(&v, log, 0.25, Some(100.0), &Prices::default());
        assert_eq!(e.view_writes, 250);
        assert_eq!(e.write_units, 500);
        assert_eq!(e.write_rate, 10.0);
        assert_eq!(e.eta_seconds, 50);
        // 3,000 KB read eventually consistent: 375 read units.
        assert!(
            (e.read_cost_usd - 375.0 / 1e6 * Prices::default().dynamodb_read_units_per_million).abs() < 1e-12
        );
    }

    #[test]
    fn no_backfill_and_an_empty_log_cost_nothing() {
        let none = view("  backfill: {source: None}\n");
        let e = BackfillEstimate::new(
            &none,
            LogSize { items: 5, bytes: 500 },
            1.0,
            None,
            &Prices::default(),
        );
        assert_eq!((e.view_writes, e.write_units, e.eta_seconds), (0, 0, 0));
        assert!(e.summary().contains("no backfill"));
        let empty = view("");
        let e = BackfillEstimate::new(&empty, LogSize::default(), 1.0, None, &Prices::default());
        assert_eq!((e.view_writes, e.read_cost_usd, e.eta_seconds), (0, 0.0, 0));
    }
}
