//! View versions: a change to what a view's content depends on is built as a new version beside the active
//! one, and promoted when it has caught up (the Kappa answer to "the view's logic changed").
//!
//! ```text
//!  spec content changes ──▶ vN+1 Building (own storage, live path, backfill) ──ready──▶ vN+1 Active
//!                                 │ fails / abortAfter                                  vN   Retained
//!                                 ▼                                                       │ retainPrevious
//!                              Failed (vN stays Active and Ready)                         ▼ removed
//! ```
//!
//! Pure: [`reshape`] decides which versions exist before they run, [`settle`] what their progress means
//! (failure, promotion) after. A version's storage: version 1 keeps the view's original names; version
//! `n ≥ 2` has a dedicated table of its own (`view-v<n>`) or, in a shared table, the key prefix
//! `~v<n>~<prefix>`: no view's prefix starts with `~` (neither a Kubernetes name nor `spec.store.keyPrefix`
//! may hold one), so versions never share keys with each other or with other views.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use sha2::{Digest, Sha256};

use super::names::NameKind;
use super::view::{ViewPlan, plan_view};
use crate::crd::{
    MaterializedView, PromotionMode, PromotionSpec, VersionState, ViewContent, ViewVersion, parse_duration,
};

/// What the view's content depends on, taken from its spec.
pub fn content_of(view: &MaterializedView) -> ViewContent {
    let mut record_types = view.spec.record_types.clone();
    record_types.sort();
    record_types.dedup();
    ViewContent {
        record_types,
        projection: view.spec.projection.clone(),
        code: view.spec.projector.code.clone(),
        store: view.spec.store.clone(),
    }
}

/// A stable digest of the content: record types (as a set), projection, custom code and where the items
/// are stored. Streams on the views table do not change content, so they are left out.
pub fn content_hash(content: &ViewContent) -> String {
    let mut record_types = content.record_types.clone();
    record_types.sort();
    record_types.dedup();
    let store = &content.store;
    // The record-error policy decides whether a bad record stops the view, not what the view holds.
    let projection = content.projection.clone().map(|mut p| {
        p.on_record_error = Default::default();
        p
    });
    let canonical = serde_json::json!({
        "recordTypes": record_types,
        "projection": projection,
        "code": content.code,
        "store": [format!("{:?}", store.table), store.shared_table_name.clone(), store.key_prefix.clone()],
    });
    let mut hasher = Sha256::new();
    hasher.update(canonical.to_string().as_bytes());
    hex::encode(&hasher.finalize()[..8])
}

/// The view as version `content` describes it: the spec's content fields replaced by the version's.
pub fn view_with_content(view: &MaterializedView, content: &ViewContent) -> MaterializedView {
    let mut v = view.clone();
    v.spec.record_types = content.record_types.clone();
    v.spec.projection = content.projection.clone();
    v.spec.projector.code = content.code.clone();
    // Streams and adoption are the spec's now, whatever version: neither changes what the view holds.
    let (streams, adopt) = (v.spec.store.streams, v.spec.store.adopt);
    v.spec.store = content.store.clone();
    v.spec.store.streams = streams;
    v.spec.store.adopt = adopt;
    v
}

/// The key prefix of `version` in a shared table whose view prefix is `base`.
pub fn version_prefix(base: &str, version: i64) -> String {
    match version {
        ..=1 => base.to_string(),
        n => format!("~v{n}~{base}"),
    }
}

/// Where `version` of the view (with the version's content) keeps its items.
pub fn plan_version(
    cluster: &str,
    view: &MaterializedView,
    siblings: &[impl std::borrow::Borrow<MaterializedView>],
    version: i64,
) -> ViewPlan {
    let mut plan = plan_view(cluster, view, siblings);
    plan.version = version;
    if version > 1 {
        match plan.shared {
            true => plan.key_prefix = plan.key_prefix.map(|p| version_prefix(&p, version)),
            false => {
                plan.table.name = plan
                    .owner
                    .resource_name(&format!("view-v{version}"), NameKind::Table)
            }
        }
    }
    plan
}

/// The runtime registry's key of a version's tasks: `ns/name`, or `ns/name@v<n>` for `n ≥ 2`.
pub fn runtime_key(view_key: &str, version: i64) -> String {
    match version {
        ..=1 => view_key.to_string(),
        n => format!("{view_key}@v{n}"),
    }
}

/// The base of a version's checkpoint ConfigMap names and export prefix: `name`, or `name.v<n>`.
pub fn checkpoint_base(name: &str, version: i64) -> String {
    match version {
        ..=1 => name.to_string(),
        n => format!("{name}.v{n}"),
    }
}

fn elapsed_since(t: &Option<Time>, now: Timestamp) -> Option<Duration> {
    let t = t.as_ref()?.0;
    let secs = now.as_second() - t.as_second();
    Some(Duration::from_secs(secs.max(0) as u64))
}

/// A version to remove, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Removal {
    pub version: ViewVersion,
    pub why: String,
}

/// The versions before this reconcile runs them: the first version of a new view (active at once), a new
/// building version when no version has the desired content, and removals (building or failed versions
/// of another content, retained versions past `retainPrevious`). `latest` is the highest version number
/// ever used; it is returned updated.
pub fn reshape(
    versions: &[ViewVersion],
    latest: i64,
    desired: &ViewContent,
    promotion: &PromotionSpec,
    now: Timestamp,
) -> (Vec<ViewVersion>, Vec<Removal>, i64) {
    let hash = content_hash(desired);
    let now_time = Some(Time(now));
    if versions.is_empty() {
        let first = latest.max(0) + 1;
        let v = ViewVersion {
            version: first,
            content_hash: hash,
            state: VersionState::Active,
            content: desired.clone(),
            created_at: now_time.clone(),
            promoted_at: now_time,
            ..ViewVersion::default()
        };
        return (vec![v], vec![], first);
    }
    let retain = parse_duration(&promotion.retain_previous).unwrap_or(Duration::from_secs(3600));
    let mut keep = Vec::new();
    let mut removals = Vec::new();
    for v in versions {
        let why = match v.state {
            VersionState::Building | VersionState::Failed if v.content_hash != hash => {
                Some("the spec changed again before it was promoted".to_string())
            }
            VersionState::Retained
                if v.content_hash != hash
                    && elapsed_since(&v.superseded_at, now).is_none_or(|e| e >= retain) =>
            {
                Some(format!(
                    "retained for spec.promotion.retainPrevious ({})",
                    promotion.retain_previous
                ))
            }
            _ => None,
        };
        match why {
            Some(why) => removals.push(Removal { version: v.clone(), why }),
            None => keep.push(v.clone()),
        }
    }
    let mut latest = latest.max(versions.iter().map(|v| v.version).max().unwrap_or(0));
    if !keep.iter().any(|v| v.content_hash == hash) {
        latest += 1;
        keep.push(ViewVersion {
            version: latest,
            content_hash: hash,
            state: VersionState::Building,
            content: desired.clone(),
            created_at: now_time,
            ..ViewVersion::default()
        });
    }
    (keep, removals, latest)
}

/// What running a version showed in this reconcile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Readiness {
    /// Backfilled, and the live path is within `spec.promotion.maxLag` of the log.
    pub caught_up: bool,
    /// Why the version cannot become correct (its backfill failed, or records could not be projected).
    pub failure: Option<String>,
}

/// What changed in [`settle`], for events and logs.
#[derive(Clone, Debug, PartialEq)]
pub enum Transition {
    Promoted { version: i64, previous: Option<i64> },
    Failed { version: i64, message: String },
}

/// Applies this reconcile's readiness to the versions: a building version that failed (or did not catch up
/// within `abortAfter`) is `Failed`; the version of the desired content that is ready (and approved, with
/// `mode: Manual`: the annotation's value is its number) becomes `Active`, and the active one `Retained`.
pub fn settle(
    versions: &mut [ViewVersion],
    desired_hash: &str,
    promotion: &PromotionSpec,
    approved: Option<i64>,
    readiness: &dyn Fn(i64) -> Readiness,
    now: Timestamp,
) -> Vec<Transition> {
    let mut transitions = Vec::new();
    let abort_after = promotion.abort_after.as_deref().and_then(parse_duration);
    for v in versions.iter_mut() {
        if v.state != VersionState::Building {
            continue;
        }
        let r = readiness(v.version);
        let message = match r.failure {
            Some(m) => Some(m),
            None => match abort_after {
                Some(limit)
                    if !r.caught_up && elapsed_since(&v.created_at, now).is_some_and(|e| e >= limit) =>
                {
                    Some(format!(
                        "did not catch up within spec.promotion.abortAfter ({}); raise it or fix the cause, then \
                         change the spec to try again",
                        promotion.abort_after.as_deref().unwrap_or_default()
                    ))
                }
                _ => None,
            },
        };
        if let Some(message) = message {
            v.state = VersionState::Failed;
            v.message = Some(message.clone());
            transitions.push(Transition::Failed { version: v.version, message });
        }
    }
    let candidate = versions.iter().position(|v| {
        v.content_hash == desired_hash
            && matches!(v.state, VersionState::Building | VersionState::Retained)
            && readiness(v.version).caught_up
            && (promotion.mode == PromotionMode::Automatic || approved == Some(v.version))
    });
    if let Some(i) = candidate {
        let mut previous = None;
        for v in versions.iter_mut() {
            if v.state == VersionState::Active {
                v.state = VersionState::Retained;
                v.superseded_at = Some(Time(now));
                previous = Some(v.version);
            }
        }
        let v = &mut versions[i];
        v.state = VersionState::Active;
        v.promoted_at = Some(Time(now));
        v.superseded_at = None;
        v.message = None;
        transitions.push(Transition::Promoted { version: v.version, previous });
    }
    transitions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(projection: &str) -> MaterializedView {
        serde_yaml::from_str(&format!(
            "apiVersion: kappa.dev/v1alpha1\nkind: MaterializedView\nmetadata: {{name: players, namespace: games}}\n\
             spec:\n  eventLogRef: {{name: log}}\n  recordTypes: [player, game]\n  projection: {projection}\n"
        ))
        .unwrap()
    }

    /// Specs whose content hashes earlier releases recorded in `status.versions[].contentHash`: a change to
    /// how a content serializes would give every such view a new hash, so a rebuild of every view on
    /// upgrade. Each hash was computed by release d9e1803.
    const PINNED_CONTENTS: [&str; 7] = [
        "recordTypes: [player]\n  projection: {mode: Latest, key: {partitionKey: 'P#{id}'}, orderBy: seq}",
        "recordTypes: [game, player]\n  projection: {mode: Count, key: {partitionKey: 'G#{gameId}', sortKey: total}, \
         filter: [{attribute: status, operator: Equals, value: done}, {attribute: tier, operator: In, values: [a, b]}]}\n  store: {table: Dedicated}",
        "recordTypes: [score]\n  projection: {mode: Sum, sumOf: points, key: {partitionKey: 'S#{team}'}}\n  \
         store: {sharedTableName: scores, keyPrefix: 'T#'}",
        "recordTypes: [score]\n  projection: {mode: Max, maxOf: points, key: {partitionKey: 'M#{team}'}, \
         attributes: [{from: player, to: who}, {from: team}]}",
        "recordTypes: [player]\n  projector: {runtime: Lambda, code: {imageUri: \
         '123456789012.dkr.ecr.eu-west-1.amazonaws.com/p:1'}}",
        "recordTypes: [player]\n  projector: {runtime: Lambda, code: {functionArn: \
         'arn:aws:lambda:eu-west-1:123456789012:function:mine'}}",
        "recordTypes: [player]\n  projector: {runtime: Lambda, code: {s3: {bucket: b, key: k.zip, \
         lambdaRuntime: python3.12, handler: app.handler}}}",
    ];

    fn pinned_hashes() -> Vec<String> {
        PINNED_CONTENTS
            .iter()
            .map(|spec| {
                let v: MaterializedView = serde_yaml::from_str(&format!(
                    "apiVersion: kappa.dev/v1alpha1\nkind: MaterializedView\nmetadata: {{name: v, namespace: n}}\n\
                     spec:\n  eventLogRef: {{name: log}}\n  {spec}\n"
                ))
                .unwrap_or_else(|e| panic!("{spec}: {e}"));
                content_hash(&content_of(&v))
            })
            .collect()
    }

    #[test]
    fn content_hashes_are_those_earlier_releases_recorded() {
        assert_eq!(
            pinned_hashes(),
            [
                "d56927040af56679",
                "7779949ec83d713b",
                "dbd3c86acb780738",
                "4ac815ffd9b8f24b",
                "d07c80074928850d",
                "4724880da71ef30a",
                "4ad9e7ee3a84d8af"
            ]
        );
    }

    const LATEST: &str = "{mode: Latest, key: {partitionKey: \"P#{id}\"}}";
    const COUNT: &str = "{mode: Count, key: {partitionKey: \"P#{id}\"}}";

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn promotion(yaml: &str) -> PromotionSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn content_ignores_what_does_not_change_items() {
        let a = view(LATEST);
        let mut b = a.clone();
        b.spec.record_types.reverse();
        b.spec.projector.memory_mb = 1024;
        b.spec.backfill.parallelism = 16;
        b.spec.store.streams = true;
        assert_eq!(content_hash(&content_of(&a)), content_hash(&content_of(&b)));
        assert_ne!(
            content_hash(&content_of(&a)),
            content_hash(&content_of(&view(COUNT)))
        );
        let mut c = a.clone();
        c.spec.store.key_prefix = Some("P2#".into());
        assert_ne!(content_hash(&content_of(&a)), content_hash(&content_of(&c)));
    }

    #[test]
    fn versions_have_storage_of_their_own() {
        let v = view(LATEST);
        let one = plan_version("prod", &v, crate::plan::NO_VIEWS, 1);
        let two = plan_version("prod", &v, crate::plan::NO_VIEWS, 2);
        assert_eq!(
            one,
            plan_view("prod", &v, crate::plan::NO_VIEWS),
            "version 1 keeps the original names"
        );
        assert_eq!(one.table.name, two.table.name, "a shared table stays shared");
        assert_eq!(two.key_prefix.as_deref(), Some("~v2~players#"));
        assert!(!two.key_prefix.as_deref().unwrap().starts_with("players#"));
        let mut d = v.clone();
        d.spec.store.table = crate::crd::StoreTable::Dedicated;
        d.spec.store.key_prefix = None;
        let (d1, d2) = (
            plan_version("prod", &d, crate::plan::NO_VIEWS, 1),
            plan_version("prod", &d, crate::plan::NO_VIEWS, 2),
        );
        assert_ne!(d1.table.name, d2.table.name);
        assert!(d2.table.name.contains("-view-v2-"), "{}", d2.table.name);
        assert_eq!(d2.table.tags, d1.table.tags, "owned by the view");
        assert_eq!(runtime_key("games/players", 1), "games/players");
        assert_eq!(runtime_key("games/players", 3), "games/players@v3");
        assert_eq!(checkpoint_base("players", 2), "players.v2");
        assert_eq!(two.projector_role_name(), "projector-v2");
        assert_eq!(
            crate::plan::lambdas::projector_name(&one),
            crate::plan::lambdas::projector_name(&plan_view("prod", &v, crate::plan::NO_VIEWS))
        );
        assert!(crate::plan::lambdas::projector_name(&two).contains("-projector-v2-"));
    }

    #[test]
    fn a_new_view_starts_active_and_a_content_change_builds_beside_it() {
        let p = PromotionSpec::default();
        let v1 = content_of(&view(LATEST));
        let (versions, removals, latest) = reshape(&[], 0, &v1, &p, at(0));
        assert_eq!((versions.len(), removals.len(), latest), (1, 0, 1));
        assert_eq!(versions[0].state, VersionState::Active);
        let (same, _, latest) = reshape(&versions, latest, &v1, &p, at(1));
        assert_eq!((same.clone(), latest), (versions.clone(), 1), "nothing to do");
        let v2 = content_of(&view(COUNT));
        let (two, removals, latest) = reshape(&same, latest, &v2, &p, at(2));
        assert!(removals.is_empty());
        assert_eq!(latest, 2);
        assert_eq!(
            two.iter().map(|v| (v.version, v.state)).collect::<Vec<_>>(),
            vec![(1, VersionState::Active), (2, VersionState::Building)]
        );
    }

    #[test]
    fn promotion_waits_for_readiness_and_retains_the_previous_version() {
        let p = promotion("{retainPrevious: 10m}");
        let (v1, v2) = (content_of(&view(LATEST)), content_of(&view(COUNT)));
        let (versions, _, latest) = reshape(&[], 0, &v1, &p, at(0));
        let (mut versions, _, latest) = reshape(&versions, latest, &v2, &p, at(1));
        let h2 = content_hash(&v2);
        let not_yet = |_| Readiness::default();
        assert!(settle(&mut versions, &h2, &p, None, &not_yet, at(2)).is_empty());
        let ready = |v| Readiness { caught_up: v == 2, failure: None };
        let t = settle(&mut versions, &h2, &p, None, &ready, at(3));
        assert_eq!(t, vec![Transition::Promoted { version: 2, previous: Some(1) }]);
        assert_eq!(versions[0].state, VersionState::Retained);
        assert_eq!(versions[1].state, VersionState::Active);
        let (kept, removals, _) = reshape(&versions, latest, &v2, &p, at(3 + 599));
        assert!(removals.is_empty() && kept.len() == 2, "within retainPrevious");
        let (kept, removals, _) = reshape(&versions, latest, &v2, &p, at(3 + 600));
        assert_eq!(kept.len(), 1);
        assert_eq!(removals[0].version.version, 1);
    }

    #[test]
    fn reverting_within_retention_promotes_the_retained_version_without_a_rebuild() {
        let p = PromotionSpec::default();
        let (v1, v2) = (content_of(&view(LATEST)), content_of(&view(COUNT)));
        let (versions, _, latest) = reshape(&[], 0, &v1, &p, at(0));
        let (mut versions, _, latest) = reshape(&versions, latest, &v2, &p, at(1));
        let all_ready = |_| Readiness { caught_up: true, failure: None };
        settle(&mut versions, &content_hash(&v2), &p, None, &all_ready, at(2));
        let (mut back, removals, latest) = reshape(&versions, latest, &v1, &p, at(3));
        assert!(removals.is_empty());
        assert_eq!((back.len(), latest), (2, 2), "no third version");
        let t = settle(&mut back, &content_hash(&v1), &p, None, &all_ready, at(4));
        assert_eq!(t, vec![Transition::Promoted { version: 1, previous: Some(2) }]);
    }

    #[test]
    fn a_failed_rebuild_leaves_the_active_version_and_a_fixed_spec_tries_again() {
        let p = promotion("{abortAfter: 1h}");
        let (v1, v2) = (content_of(&view(LATEST)), content_of(&view(COUNT)));
        let (versions, _, latest) = reshape(&[], 0, &v1, &p, at(0));
        let (mut versions, _, latest) = reshape(&versions, latest, &v2, &p, at(1));
        let broken = |v| Readiness {
            caught_up: false,
            failure: (v == 2).then(|| "record LOG#7: sumOf score is not a number".to_string()),
        };
        let t = settle(&mut versions, &content_hash(&v2), &p, None, &broken, at(2));
        assert!(matches!(&t[0], Transition::Failed { version: 2, .. }));
        assert_eq!(versions[0].state, VersionState::Active);
        let (same, removals, _) = reshape(&versions, latest, &v2, &p, at(3));
        assert!(
            removals.is_empty() && same.len() == 2,
            "the same spec does not retry by itself"
        );
        let v3 = content_of(&view("{mode: Count, key: {partitionKey: \"Q#{id}\"}}"));
        let (next, removals, latest) = reshape(&versions, latest, &v3, &p, at(4));
        assert_eq!(removals[0].version.version, 2, "the failed version goes");
        assert_eq!(latest, 3);
        assert_eq!(next.last().unwrap().state, VersionState::Building);
        let mut slow = next.clone();
        let lagging = |_| Readiness::default();
        assert!(settle(&mut slow, &content_hash(&v3), &p, None, &lagging, at(4 + 3599)).is_empty());
        let t = settle(&mut slow, &content_hash(&v3), &p, None, &lagging, at(4 + 3600));
        assert!(
            matches!(&t[0], Transition::Failed { version: 3, message } if message.contains("abortAfter"))
        );
    }

    #[test]
    fn manual_promotion_waits_for_the_approval_of_that_version() {
        let p = promotion("{mode: Manual}");
        let (v1, v2) = (content_of(&view(LATEST)), content_of(&view(COUNT)));
        let (versions, _, latest) = reshape(&[], 0, &v1, &p, at(0));
        let (mut versions, _, _) = reshape(&versions, latest, &v2, &p, at(1));
        let ready = |_| Readiness { caught_up: true, failure: None };
        let h2 = content_hash(&v2);
        assert!(settle(&mut versions, &h2, &p, None, &ready, at(2)).is_empty());
        assert!(settle(&mut versions, &h2, &p, Some(1), &ready, at(2)).is_empty());
        assert_eq!(settle(&mut versions, &h2, &p, Some(2), &ready, at(2)).len(), 1);
    }
}
