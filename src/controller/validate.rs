//! Semantic checks that need more than one object (a view and its EventLog). Pure: no I/O.
//!
//! What one object alone can get wrong is refused at admission by the CRD schema; what is left is found
//! here and reported as a `Stalled` condition whose message names the field, the value and the fix.

use crate::crd::{BackfillSource, EventLog, MaterializedView, ProjectionMode};

/// Problems of a view against its log, each a sentence naming the field, the value and the fix.
pub fn view_against_log(view: &MaterializedView, log: &EventLog) -> Vec<String> {
    let log_name = log.metadata.name.as_deref().unwrap_or_default();
    let mut problems = Vec::new();
    let carried: Vec<&str> = log.spec.record_types.iter().map(|r| r.as_str()).collect();
    for rt in &view.spec.record_types {
        if !carried.contains(&rt.as_str()) {
            problems.push(format!(
                "spec.recordTypes: {:?} is not a record type of EventLog {log_name:?} (it carries {}); add it to \
                 the EventLog's spec.recordTypes or remove it from the view",
                rt.as_str(),
                carried.join(", ")
            ));
        }
    }
    if let Some(p) = &view.spec.projection
        && p.mode == ProjectionMode::Latest
        && p.order_by.is_none()
        && log.spec.table.ordering_attribute.is_none()
    {
        problems.push(format!(
            "spec.projection.orderBy is not set and EventLog {log_name:?} has no spec.table.orderingAttribute: \
             mode Latest needs one of them to know which record of a key is the newest"
        ));
    }
    if view.spec.backfill.source == BackfillSource::Export {
        if log.spec.export.is_none() {
            problems.push(format!(
                "spec.backfill.source is Export but EventLog {log_name:?} has no spec.export: add spec.export.bucket \
                 to the EventLog, or set spec.backfill.source to Scan or None"
            ));
        }
        if !log.spec.table.point_in_time_recovery {
            problems.push(format!(
                "spec.backfill.source is Export but EventLog {log_name:?} has spec.table.pointInTimeRecovery false: \
                 turn it on, or set spec.backfill.source to Scan or None"
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(yaml: &str) -> EventLog {
        serde_yaml::from_str(yaml).unwrap()
    }
    fn view(yaml: &str) -> MaterializedView {
        serde_yaml::from_str(yaml).unwrap()
    }

    const LOG: &str = r#"
apiVersion: kappa.dev/v1alpha1
kind: EventLog
metadata: {name: game-events, namespace: ns}
spec:
  recordTypes: [player, game]
  table: {orderingAttribute: seq}
  export: {bucket: exports}
"#;

    const VIEW: &str = r#"
apiVersion: kappa.dev/v1alpha1
kind: MaterializedView
metadata: {name: players, namespace: ns}
spec:
  eventLogRef: {name: game-events}
  recordTypes: [player]
  projection: {mode: Latest, key: {partitionKey: "PLAYER#{playerId}"}}
"#;

    #[test]
    fn a_consistent_view_has_no_problems() {
        assert!(view_against_log(&view(VIEW), &log(LOG)).is_empty());
    }

    #[test]
    fn an_unknown_record_type_is_named_with_the_fix() {
        let v = view(&VIEW.replace("[player]", "[player, scores]"));
        let problems = view_against_log(&v, &log(LOG));
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("spec.recordTypes") && problems[0].contains("\"scores\""));
        assert!(problems[0].contains("player, game"));
    }

    #[test]
    fn latest_needs_an_ordering_attribute() {
        let l = log(&LOG.replace("{orderingAttribute: seq}", "{}"));
        let problems = view_against_log(&view(VIEW), &l);
        assert!(problems[0].contains("spec.projection.orderBy"), "{problems:?}");
        let v = view(&VIEW.replace("mode: Latest,", "mode: Latest, orderBy: version,"));
        assert!(view_against_log(&v, &l).is_empty());
    }

    #[test]
    fn export_backfill_needs_an_export_bucket_and_pitr() {
        let l = log(&LOG.replace("  export: {bucket: exports}\n", "").replace(
            "{orderingAttribute: seq}",
            "{orderingAttribute: seq, pointInTimeRecovery: false}",
        ));
        let problems = view_against_log(&view(VIEW), &l);
        assert_eq!(problems.len(), 2, "{problems:?}");
        let v = view(&format!("{VIEW}  backfill: {{source: None}}\n"));
        assert!(view_against_log(&v, &l).is_empty());
    }
}
