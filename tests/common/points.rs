//! The `points` view of the crash-consistency tests (tests/crash_points.rs, tests/break21_lifecycle.rs): a
//! `Sum` of the `scores` log's points per player, what it must hold, and how to wait for an operator's
//! crash and for the view to converge.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use bigdecimal::BigDecimal;
use kappa_operator::crd::{MaterializedView, MaterializedViewStatus, ViewPhase};
use kube::Api;

use super::Operator;
use super::scores::Event;

/// Events written before the view exists.
pub const HISTORY: usize = 6_000;

/// A `Sum` view with its own table; `key` is its key template's partition key.
pub fn view_yaml(key: &str) -> String {
    format!(
        r#"
apiVersion: kappa.dev/v1alpha1
kind: MaterializedView
metadata: {{name: points}}
spec:
  eventLogRef: {{name: scores}}
  recordTypes: [score]
  projector: {{runtime: InCluster}}
  projection: {{mode: Sum, sumOf: points, key: {{partitionKey: "{key}"}}}}
  store: {{table: Dedicated}}
  promotion: {{retainPrevious: 5s}}
  deletionPolicy: Delete
"#
    )
}

/// player → sum of points, from the events alone.
pub fn expected(events: &[Event]) -> BTreeMap<String, BigDecimal> {
    let mut out: BTreeMap<String, BigDecimal> = BTreeMap::new();
    for e in events.iter().filter(|e| e.kind == "score") {
        *out.entry(e.player.clone()).or_default() += BigDecimal::from_str(&e.points).unwrap();
    }
    out
}

/// player → `sum` of the items keyed `<prefix><player>` in `table`.
pub async fn actual(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    prefix: &str,
) -> BTreeMap<String, BigDecimal> {
    let mut out = BTreeMap::new();
    // A table that is gone (deleted by hand) holds nothing.
    if ddb.describe_table().table_name(table).send().await.is_err() {
        return out;
    }
    for item in super::scan_all(ddb, table).await {
        let (Some(AttributeValue::S(pk)), Some(AttributeValue::N(sum))) = (item.get("pk"), item.get("sum"))
        else {
            continue;
        };
        if let Some(player) = pk.strip_prefix(prefix) {
            out.insert(player.to_string(), BigDecimal::from_str(sum).unwrap());
        }
    }
    out
}

/// Waits for `op` to exit at its crash point; fails with its log otherwise.
pub async fn crashed(op: &mut Operator, point: &str) {
    for _ in 0..360 {
        if let Some(status) = op.child.try_wait().unwrap() {
            assert_eq!(
                status.code(),
                Some(kappa_operator::CRASH_EXIT_CODE),
                "the operator stopped otherwise than at {point}: {}",
                op.log()
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!(
        "the operator never reached crash point {point} (crash points are compiled in only with \
         `cargo test --features failpoints`, as `make test` runs): {}",
        op.log()
    );
}

pub async fn status_of(mvs: &Api<MaterializedView>) -> Option<MaterializedViewStatus> {
    mvs.get_opt("points").await.ok()??.status
}

/// The view Live, with its backfill finished and cleaned up, exact over `events` under `prefix`.
pub async fn converged(
    mvs: &Api<MaterializedView>,
    ddb: &aws_sdk_dynamodb::Client,
    events: &[Event],
    prefix: &str,
    what: &str,
) -> MaterializedViewStatus {
    let want = expected(events);
    super::eventually(Duration::from_secs(240), what, || async {
        let s = status_of(mvs).await?;
        let b = s.backfill.as_ref()?;
        if s.phase != Some(ViewPhase::Live) || b.finished_at.is_none() || !b.cleaned_up {
            return None;
        }
        let table = s.table_name.clone()?;
        (actual(ddb, &table, prefix).await == want).then_some(s)
    })
    .await
}

/// The keys left in `bucket` (exports the operator should have removed).
pub async fn objects(s3: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    let out = s3.list_objects_v2().bucket(bucket).send().await.unwrap();
    out.contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect()
}
