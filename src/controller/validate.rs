//! Semantic checks that need more than one object (a view and its EventLog). Pure: no I/O.
//!
//! What one object alone can get wrong is refused at admission by the CRD schema; what is left is found
//! here and reported as a `Stalled` condition whose message names the field, the value and the fix.

use std::borrow::Borrow;

use crate::crd::{BackfillSource, EventLog, MaterializedView, ProjectionMode};

/// Problems of a view against its log, each a sentence naming the field, the value and the fix. What an
/// Export backfill needs of the log (`spec.export`, point-in-time recovery) is checked only while the
/// view's current content still has a backfill to run ([`backfill_pending`]): turning PITR off under a
/// view whose backfill finished changes nothing for it.
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
    if view.spec.backfill.source == BackfillSource::Export && backfill_pending(view) {
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

/// Whether the view's current content (its spec's record types, projection, code and store) has no
/// finished backfill yet: no version of that content in `status.versions` records `backfill.finishedAt`.
/// A view with no status (a new one, or a manifest given to `kappa-operator plan`) has one pending.
pub fn backfill_pending(view: &MaterializedView) -> bool {
    use crate::plan::versions::{content_hash, content_of};
    let Some(status) = &view.status else {
        return true;
    };
    let hash = content_hash(&content_of(view));
    !status
        .versions
        .iter()
        .any(|v| v.content_hash == hash && v.backfill.as_ref().is_some_and(|b| b.finished_at.is_some()))
}

/// The view among `views` (the namespace's) whose key prefix in the same shared views table overlaps
/// `view`'s (one is a prefix of the other, or they are equal) and that takes precedence (provisioned
/// already, then created earlier, then by name), with a sentence naming both views, the prefixes and the fix. Overlapping prefixes would
/// let one view read, overwrite and (deleting itself) remove the other's items, and their projector roles'
/// `dynamodb:LeadingKeys` would overlap the same way. Views being deleted do not count.
pub fn prefix_overlap(view: &MaterializedView, views: &[impl Borrow<MaterializedView>]) -> Option<String> {
    use crate::crd::StoreTable;
    let store = &view.spec.store;
    if store.table != StoreTable::Shared {
        return None;
    }
    let name = view.metadata.name.as_deref().unwrap_or_default();
    let mine = crate::plan::view::key_prefix(view);
    // Precedence: a view already provisioned (it may hold items), then the one created first, then by name.
    let order = |v: &MaterializedView| {
        (
            v.status.as_ref().and_then(|s| s.table_name.as_ref()).is_none(),
            v.metadata.creation_timestamp.as_ref().map(|t| t.0),
            v.metadata.name.clone().unwrap_or_default(),
        )
    };
    let mut earlier: Vec<&MaterializedView> = views
        .iter()
        .map(Borrow::borrow)
        .filter(|o| o.metadata.name.as_deref() != Some(name))
        .filter(|o| o.metadata.deletion_timestamp.is_none())
        .filter(|o| {
            o.spec.store.table == StoreTable::Shared
                && o.spec.store.shared_table_name == store.shared_table_name
        })
        .filter(|o| order(o) < order(view))
        .collect();
    // The earliest first: the view that has held its prefix longest.
    earlier.sort_by_key(|o| order(o));
    earlier.into_iter().find_map(|other| {
            let theirs = crate::plan::view::key_prefix(other);
            (theirs.starts_with(&mine) || mine.starts_with(&theirs)).then(|| {
                let other_name = other.metadata.name.as_deref().unwrap_or_default();
                format!(
                    "spec.store.keyPrefix: {mine:?} overlaps the key prefix {theirs:?} of view {other_name:?} in the \
                     shared views table {:?} (one starts with the other), so each could read, overwrite or delete \
                     the other's items: choose a prefix that neither starts with nor is the start of {theirs:?} \
                     (the default `<view name>#` of distinct views never overlaps), or store the view in a \
                     Dedicated table",
                    store.shared_table_name
                )
            })
        })
}

/// The first of `others` (views of the namespace, without the view itself) whose key prefix in the shared
/// views table `table` overlaps `prefix` (a view's or a version's): deleting items by `begins_with(prefix)`
/// would then remove some of theirs, so it must not be done.
pub fn overlapping_sibling(
    prefix: &str,
    table: &str,
    others: &[impl Borrow<MaterializedView>],
) -> Option<String> {
    use crate::crd::StoreTable;
    others
        .iter()
        .map(Borrow::borrow)
        .filter(|o| o.spec.store.table == StoreTable::Shared && o.spec.store.shared_table_name == table)
        .find(|o| {
            let theirs = crate::plan::view::key_prefix(o);
            // A version's prefix is `~v<n>~<base>`: compare the bases.
            let base = prefix
                .strip_prefix("~v")
                .and_then(|p| p.split_once('~'))
                .map_or(prefix, |(_, b)| b);
            theirs.starts_with(base) || base.starts_with(&theirs)
        })
        .and_then(|o| o.metadata.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_key_prefixes_in_one_shared_table_are_refused_for_the_later_view() {
        let at = |name: &str, prefix: Option<&str>, t: &str| -> MaterializedView {
            let prefix = prefix.map(|p| format!(", keyPrefix: '{p}'")).unwrap_or_default();
            view(&format!(
                "apiVersion: kappa.dev/v1alpha1\nkind: MaterializedView\nmetadata: {{name: {name}, \
                 creationTimestamp: '{t}'}}\nspec:\n  eventLogRef: {{name: log}}\n  recordTypes: [score]\n  \
                 store: {{table: Shared{prefix}}}\n"
            ))
        };
        let scores = at("scores", None, "2026-01-01T00:00:00Z");
        let sc = at("sc", Some("sc"), "2026-01-02T00:00:00Z");
        let same = at("third", Some("scores#"), "2026-01-03T00:00:00Z");
        let apart = at("apart", Some("sd#"), "2026-01-03T00:00:00Z");
        let all = vec![scores.clone(), sc.clone(), same.clone(), apart.clone()];
        assert_eq!(prefix_overlap(&scores, &all), None, "the first keeps running");
        let m = prefix_overlap(&sc, &all).expect("sc starts scores#");
        assert!(
            m.contains("\"sc\"") && m.contains("\"scores#\"") && m.contains("scores"),
            "{m}"
        );
        assert!(prefix_overlap(&same, &all).is_some(), "an equal prefix");
        assert_eq!(prefix_overlap(&apart, &all), None);
        // Another shared table, or a dedicated one, never overlaps.
        let mut elsewhere = sc.clone();
        elsewhere.spec.store.shared_table_name = "other".into();
        assert_eq!(prefix_overlap(&elsewhere, &all), None);
    }

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

    #[test]
    fn a_finished_export_backfill_needs_neither_pitr_nor_the_export_bucket_again() {
        use crate::crd::{BackfillStatus, MaterializedViewStatus, VersionState, ViewVersion};
        use crate::plan::versions::{content_hash, content_of};
        let l = log(&LOG.replace("  export: {bucket: exports}\n", "").replace(
            "{orderingAttribute: seq}",
            "{orderingAttribute: seq, pointInTimeRecovery: false}",
        ));
        let mut v = view(VIEW);
        let version = |content, finished: bool| ViewVersion {
            version: 1,
            content_hash: content_hash(&content),
            state: VersionState::Active,
            content,
            backfill: Some(BackfillStatus {
                finished_at: finished.then(|| {
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        v.status = Some(MaterializedViewStatus {
            versions: vec![version(content_of(&v), false)],
            ..Default::default()
        });
        assert_eq!(view_against_log(&v, &l).len(), 2, "still backfilling");
        v.status.as_mut().unwrap().versions = vec![version(content_of(&v), true)];
        assert!(view_against_log(&v, &l).is_empty(), "backfilled");
        let changed = view(&VIEW.replace("[player]", "[player, game]"));
        let mut changed = MaterializedView { status: v.status.clone(), ..changed };
        assert_eq!(
            view_against_log(&changed, &l).len(),
            2,
            "a changed content is a new version with a backfill of its own"
        );
        changed.status = None;
        assert_eq!(view_against_log(&changed, &l).len(), 2, "a new view");
    }
}
