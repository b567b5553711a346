//! Breaker probes of `kappa_operator::plan::topology` (the view's whole desired topology, planned once per
//! reconcile): each compares what `plan_topology` plans with what the apply steps computed for themselves
//! before it existed (`plan_version(..).in_namespace(..)`, `ProjectionConfig::from_spec`,
//! `projector_role`, `projector_function`, `projector_subscriptions`, the failure queue, the push plan),
//! over shapes a user can produce.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kappa_operator::crd::{
    APPROVE_PROMOTION_ANNOTATION, EventLog, MaterializedView, MaterializedViewStatus, ProjectorRuntime,
    VersionState, ViewVersion,
};
use kappa_operator::plan::function::{Architecture, FunctionCode};
use kappa_operator::plan::iam::AwsScope;
use kappa_operator::plan::lambdas::{
    BuiltInCode, projector_function, projector_name, projector_subscriptions,
};
use kappa_operator::plan::log::{plan_log, scope_of_arn};
use kappa_operator::plan::push::{PushPlan, plan_push};
use kappa_operator::plan::topology::{TopologyInput, ViewTopology, plan_topology, push_of};
use kappa_operator::plan::versions::{content_hash, content_of, plan_version, reshape, view_with_content};
use kappa_operator::plan::view::{plan_view, projector_role};
use kappa_operator::projection::ProjectionConfig;
use kube::ResourceExt;

const CLUSTER: &str = "prod";
const LATEST: &str = "{mode: Latest, key: {partitionKey: 'P#{id}'}, orderBy: seq}";
const COUNT: &str = "{mode: Count, key: {partitionKey: 'C#{id}'}}";
const BAD: &str = "{mode: Latest, key: {partitionKey: 'P#{nope'}, orderBy: seq}";

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

fn scope() -> AwsScope {
    scope_of_arn("arn:aws:dynamodb:eu-west-1:123456789012:table/anything").unwrap()
}

fn code() -> BuiltInCode {
    BuiltInCode {
        code: FunctionCode::S3 { bucket: "kappa-code".into(), key: "functions-1.zip".into() },
        architecture: Architecture::default(),
    }
}

/// A view `name` of log `log` in namespace `games`; `extra` is more of the spec (two-space indented).
fn view_of(name: &str, log: &str, projection: Option<&str>, extra: &str) -> MaterializedView {
    let projection = projection
        .map(|p| format!("  projection: {p}\n"))
        .unwrap_or_default();
    serde_yaml::from_str(&format!(
        "apiVersion: kappa.dev/v1alpha1\nkind: MaterializedView\n\
         metadata: {{name: '{name}', namespace: games, uid: 'uid-{name}'}}\n\
         spec:\n  eventLogRef: {{name: {log}}}\n  recordTypes: [player, score]\n{projection}{extra}"
    ))
    .unwrap()
}

fn view(name: &str, projection: &str, extra: &str) -> MaterializedView {
    view_of(name, "log", Some(projection), extra)
}

/// Log `log` with fan-out `mode`; `with_status`: the status reports its table and resolved fan-out.
fn log_of(mode: &str, with_status: bool) -> EventLog {
    let status = if with_status {
        "status: {table: {name: kappa-log-table, arn: 'arn:aws:dynamodb:eu-west-1:123456789012:table/kappa-log-table'}, \
         fanOut: Sns}\n"
    } else {
        ""
    };
    serde_yaml::from_str(&format!(
        "apiVersion: kappa.dev/v1alpha1\nkind: EventLog\nmetadata: {{name: log, namespace: games, uid: uid-log}}\n\
         spec: {{recordTypes: [player, score, match], table: {{}}, fanOut: {{mode: {mode}, topics: [{{name: people, recordTypes: [player]}}]}}}}\n{status}"
    ))
    .unwrap()
}

fn log() -> EventLog {
    log_of("Sns", true)
}

fn topo<V: std::borrow::Borrow<MaterializedView>>(
    view: &MaterializedView,
    log: &EventLog,
    siblings: &[V],
    uid: Option<&str>,
) -> ViewTopology {
    plan_topology(&TopologyInput {
        cluster: CLUSTER,
        view,
        log,
        siblings,
        namespace_uid: uid,
        now: now(),
    })
}

/// The version `n` of `content`, in `state`.
fn version(n: i64, content_of_view: &MaterializedView, state: VersionState) -> ViewVersion {
    let content = content_of(content_of_view);
    ViewVersion {
        version: n,
        content_hash: content_hash(&content),
        state,
        content,
        created_at: Some(Time(Timestamp::from_second(1_700_000_000).unwrap())),
        ..Default::default()
    }
}

fn with_versions(
    mut v: MaterializedView,
    versions: Vec<ViewVersion>,
    active: Option<i64>,
) -> MaterializedView {
    let mut status = v.status.take().unwrap_or_default();
    status.latest_version = versions.iter().map(|v| v.version).max();
    status.active_version = active;
    status.versions = versions;
    v.status = Some(status);
    v
}

fn annotated(mut v: MaterializedView, key: &str, value: &str) -> MaterializedView {
    v.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(key.to_string(), value.to_string());
    v
}

// ----- What the apply steps computed before the topology existed (copied from the code it replaced). ---

/// The old `versions::version_view`.
fn old_version_view(view: &MaterializedView, v: &ViewVersion) -> MaterializedView {
    let mut vv = view_with_content(view, &v.content);
    let mut status = vv.status.take().unwrap_or_default();
    status.backfill = v.backfill.clone();
    vv.status = Some(status);
    vv
}

/// The old `versions::recorded_versions`.
fn old_recorded(view: &MaterializedView, now: Timestamp) -> Vec<ViewVersion> {
    let status = view.status.clone().unwrap_or_default();
    if !status.versions.is_empty() || (status.backfill.is_none() && status.table_name.is_none()) {
        return status.versions;
    }
    let content = content_of(view);
    vec![ViewVersion {
        version: 1,
        content_hash: content_hash(&content),
        state: VersionState::Active,
        content,
        table_name: status.table_name,
        key_prefix: status.key_prefix,
        backfill: status.backfill,
        live: status.live,
        created_at: Some(Time(now)),
        ..ViewVersion::default()
    }]
}

/// The old `subscribers::aws_push_plan`.
/// The version of the spec's content.
fn desired_version(t: &ViewTopology) -> i64 {
    t.versions
        .iter()
        .find(|v| v.content_hash == t.desired_hash)
        .map_or(1, |v| v.version)
}

/// The view with the content of the active version its status records (itself without one).
fn active_view(view: &MaterializedView) -> MaterializedView {
    view.status
        .as_ref()
        .and_then(|s| s.versions.iter().find(|v| Some(v.version) == s.active_version))
        .map_or_else(
            || view.clone(),
            |v| kappa_operator::plan::versions::view_with_content(view, &v.content),
        )
}

fn old_push(
    this: &MaterializedView,
    all: &[&MaterializedView],
    table: &str,
    key_prefix: Option<&str>,
    uid: Option<&str>,
) -> PushPlan {
    let name = this.name_any();
    let mut subscribers: Vec<(String, String)> = all
        .iter()
        .filter(|v| v.name_any() != name && v.metadata.deletion_timestamp.is_none())
        .filter(|v| v.spec.subscribers.is_some() && v.spec.projector.runtime == ProjectorRuntime::Lambda)
        .filter_map(|v| {
            let s = v.status.as_ref()?;
            (s.table_name.as_deref() == Some(table))
                .then(|| (v.name_any(), s.key_prefix.clone().unwrap_or_default()))
        })
        .collect();
    if this.spec.subscribers.is_some() && this.metadata.deletion_timestamp.is_none() {
        subscribers.push((name, key_prefix.unwrap_or_default().to_string()));
    }
    subscribers.sort();
    let mut plan = plan_view(CLUSTER, this, all).in_namespace(uid);
    plan.table.name = table.to_string();
    plan_push(&plan, &subscribers, &scope())
}

/// Checks every part of the topology against what the apply steps computed before it; returns the
/// topology for more checks.
fn assert_same_as_before(
    view: &MaterializedView,
    log: &EventLog,
    all: &[&MaterializedView],
    uid: Option<&str>,
) -> ViewTopology {
    let t = topo(view, log, all, uid);
    let status = view.status.clone().unwrap_or_default();
    let desired = content_of(view);
    let recorded = old_recorded(view, now());
    assert_eq!(t.recorded, recorded, "recorded versions");
    let (versions, removals, latest) = reshape(
        &recorded,
        status.latest_version.unwrap_or(0),
        &desired,
        &view.spec.promotion,
        now(),
    );
    assert_eq!(t.versions, versions, "reshaped versions");
    assert_eq!(
        t.removals
            .iter()
            .map(|r| (r.version.clone(), r.why.clone()))
            .collect::<Vec<_>>(),
        removals
            .iter()
            .map(|r| (r.version.clone(), r.why.clone()))
            .collect::<Vec<_>>(),
        "removals"
    );
    // A removal deletes the storage remove_version planned for itself before the topology held it.
    assert_eq!(
        t.removed_storage.keys().copied().collect::<Vec<_>>(),
        removals.iter().map(|r| r.version.version).collect::<Vec<_>>(),
        "a storage per removal"
    );
    for r in &removals {
        let before = plan_version(
            CLUSTER,
            &old_version_view(view, &r.version),
            all,
            r.version.version,
        );
        assert_eq!(
            t.removed_storage[&r.version.version],
            before.in_namespace(uid),
            "storage of removed v{}",
            r.version.version
        );
    }
    assert_eq!(t.latest, latest, "latest");
    assert_eq!(t.desired_hash, content_hash(&desired));
    assert_eq!(
        t.plans.keys().copied().collect::<Vec<_>>(),
        versions
            .iter()
            .filter(|v| v.state != VersionState::Failed)
            .map(|v| v.version)
            .collect::<Vec<_>>(),
        "a plan per version that runs"
    );
    for v in versions.iter().filter(|v| v.state != VersionState::Failed) {
        let p = &t.plans[&v.version];
        let vview = old_version_view(view, v);
        let storage = plan_version(CLUSTER, &vview, all, v.version).in_namespace(uid);
        assert_eq!(p.storage, storage, "storage of v{}", v.version);
        let prefix = storage.key_prefix.clone().unwrap_or_default();
        let projection = ProjectionConfig::from_spec(&vview.name_any(), &vview.spec, &log.spec, &prefix);
        match (&p.projection, &projection) {
            (Ok(a), Ok(b)) => assert_eq!(**a, *b, "projection of v{}", v.version),
            (Err(a), Err(b)) => assert_eq!(a, b, "projection error of v{}", v.version),
            (a, b) => panic!("projection of v{}: {a:?} vs before {b:?}", v.version),
        }
        match view.spec.projector.runtime {
            ProjectorRuntime::InCluster => {
                assert!(p.lambda.is_none(), "v{}: in-cluster has no LambdaPlan", v.version)
            }
            ProjectorRuntime::Lambda => {
                let l = p
                    .lambda
                    .as_ref()
                    .unwrap_or_else(|| panic!("v{}: a LambdaPlan", v.version));
                let readers: Vec<&MaterializedView> = all
                    .iter()
                    .copied()
                    .filter(|r| r.spec.event_log_ref.name == vview.spec.event_log_ref.name)
                    .collect();
                let log_plan = plan_log(CLUSTER, log, &readers);
                assert_eq!(
                    l.role(&scope()),
                    projector_role(&vview, &storage, &log_plan, &scope()),
                    "role of v{}",
                    v.version
                );
                let log_table = log
                    .status
                    .as_ref()
                    .and_then(|s| s.table.as_ref())
                    .map_or("", |t| t.name.as_str());
                let role_arn = "arn:aws:iam::123456789012:role/projector";
                let before = projector_function(&vview, &storage, &log.spec, log_table, role_arn, &code());
                let after = l.function(role_arn, &code());
                assert_eq!(
                    format!("{after:?}"),
                    format!("{before:?}"),
                    "function of v{}",
                    v.version
                );
                assert_eq!(
                    l.subscriptions,
                    projector_subscriptions(&vview, &log.spec),
                    "subscriptions of v{}",
                    v.version
                );
                assert_eq!(
                    l.failure_queue,
                    storage.failure_queue(),
                    "failure queue of v{}",
                    v.version
                );
                assert_eq!(
                    l.function_name,
                    projector_name(&storage),
                    "function name of v{}",
                    v.version
                );
                assert_eq!(
                    l.custom_function,
                    vview
                        .spec
                        .projector
                        .code
                        .as_ref()
                        .and_then(|c| c.function_arn.clone()),
                    "custom function of v{}",
                    v.version
                );
                assert_eq!(l.table(), storage.table.name);
                assert_eq!(*l.owner(), storage.owner);
            }
        }
    }
    // The push stack of every table the versions and siblings name, at several prefixes.
    let mut tables: Vec<String> = t.plans.values().map(|p| p.storage.table.name.clone()).collect();
    tables.extend(all.iter().filter_map(|v| v.status.as_ref()?.table_name.clone()));
    tables.push("no-such-table".into());
    for table in &tables {
        for prefix in [None, Some(""), Some("x#"), Some("ü/ñ#")] {
            // The version of the spec's content pushes as the spec-based plan did.
            let before = old_push(view, all, table, prefix, uid);
            assert_eq!(
                t.push(desired_version(&t), table, prefix, &scope()),
                before,
                "push of {table} at {prefix:?}"
            );
            // push_of plans for the active version the status records (as the spec did before, when
            // it records none).
            let active = active_view(view);
            assert_eq!(
                push_of(CLUSTER, view, all, uid, table, prefix, &scope()),
                old_push(&active, all, table, prefix, uid),
                "push_of {table} at {prefix:?}"
            );
        }
    }
    t
}

fn deleting(mut v: MaterializedView) -> MaterializedView {
    v.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1_750_000_000).unwrap()));
    v
}

fn status_table(mut v: MaterializedView, table: &str, prefix: Option<&str>) -> MaterializedView {
    let mut s = v.status.take().unwrap_or_default();
    s.table_name = Some(table.to_string());
    s.key_prefix = prefix.map(str::to_string);
    v.status = Some(s);
    v
}

// ----- Probes. ---------------------------------------------------------------------------------------

#[test]
fn a_view_without_status_plans_as_before_for_every_runtime_store_and_namespace_uid() {
    for runtime in ["InCluster", "Lambda"] {
        for store in [
            "",
            "  store: {table: Dedicated}\n",
            "  store: {sharedTableName: games-2, keyPrefix: 'pl.a:y/er#'}\n",
        ] {
            for uid in [None, Some("uid-ns")] {
                let v = view(
                    "players",
                    LATEST,
                    &format!("  projector: {{runtime: {runtime}}}\n{store}"),
                );
                assert_same_as_before(&v, &log(), &[&v], uid);
                assert_same_as_before(&v, &log(), &[], uid);
            }
        }
    }
}

#[test]
fn a_view_without_status_plans_one_active_version_1() {
    let v = view("players", LATEST, "");
    let t = topo(&v, &log(), &[&v], Some("uid-ns"));
    assert_eq!(t.versions.len(), 1);
    assert_eq!(
        (t.versions[0].version, t.versions[0].state),
        (1, VersionState::Active)
    );
    assert!(t.recorded.is_empty());
    assert!(t.removals.is_empty());
    assert_eq!(t.latest, 1);
    assert_eq!(t.now, now());
    assert_eq!(t.plans[&1].storage.key_prefix.as_deref(), Some("players#"));
}

#[test]
fn a_status_from_before_versions_keeps_its_table_and_prefix_as_version_1() {
    for runtime in ["InCluster", "Lambda"] {
        let mut v = view(
            "players",
            LATEST,
            &format!("  projector: {{runtime: {runtime}}}\n"),
        );
        v = status_table(v, "kappa-prod-games-views", Some("players#"));
        v.status.as_mut().unwrap().backfill =
            Some(kappa_operator::crd::BackfillStatus { attempt: 2, ..Default::default() });
        let t = assert_same_as_before(&v, &log(), &[&v], Some("uid-ns"));
        assert_eq!(t.recorded.len(), 1);
        assert_eq!(
            t.recorded[0].table_name.as_deref(),
            Some("kappa-prod-games-views")
        );
        assert_eq!(t.recorded[0].backfill.as_ref().map(|b| b.attempt), Some(2));
        assert_eq!(t.versions.len(), 1, "the same content: no new version");
        assert!(t.plans.contains_key(&1));
        // Only backfill (no table): still a version 1.
        let mut only_backfill = view("players", LATEST, "");
        only_backfill.status =
            Some(MaterializedViewStatus { backfill: Some(Default::default()), ..Default::default() });
        let t = assert_same_as_before(&only_backfill, &log(), &[&only_backfill], None);
        assert_eq!(t.recorded.len(), 1);
    }
}

#[test]
fn a_changed_spec_plans_the_building_version_beside_the_active_one_in_shared_and_dedicated_tables() {
    for runtime in ["InCluster", "Lambda"] {
        for store in ["", "  store: {table: Dedicated}\n", "  store: {keyPrefix: 'ü'}\n"] {
            let extra = format!("  projector: {{runtime: {runtime}}}\n{store}");
            let old = view("players", LATEST, &extra);
            let v = with_versions(
                view("players", COUNT, &extra),
                vec![version(1, &old, VersionState::Active)],
                Some(1),
            );
            let t = assert_same_as_before(&v, &log(), &[&v], Some("uid-ns"));
            assert_eq!(
                t.versions
                    .iter()
                    .map(|v| (v.version, v.state))
                    .collect::<Vec<_>>(),
                [(1, VersionState::Active), (2, VersionState::Building)]
            );
            let p1 = &t.plans[&1].storage;
            let p2 = &t.plans[&2].storage;
            assert!(
                p1.table.name != p2.table.name || p1.key_prefix != p2.key_prefix,
                "two versions never share storage: {p1:?} / {p2:?}"
            );
            if let (Some(a), Some(b)) = (&t.plans[&1].lambda, &t.plans[&2].lambda) {
                assert_ne!(
                    a.function_name, b.function_name,
                    "each version has its own function"
                );
                assert_ne!(
                    a.failure_queue.name, b.failure_queue.name,
                    "each version has its own failure queue"
                );
                assert_ne!(a.role(&scope()).unwrap().name, b.role(&scope()).unwrap().name);
            }
        }
    }
}

#[test]
fn high_version_numbers_get_their_own_prefix_or_table() {
    let old = view("players", LATEST, "");
    let mut v7 = version(7, &old, VersionState::Active);
    v7.table_name = Some("whatever".into());
    let v = with_versions(view("players", COUNT, ""), vec![v7], Some(7));
    let t = assert_same_as_before(&v, &log(), &[&v], Some("uid-ns"));
    assert_eq!(t.plans[&7].storage.key_prefix.as_deref(), Some("~v7~players#"));
    assert_eq!(t.plans[&8].storage.key_prefix.as_deref(), Some("~v8~players#"));
    assert_eq!(t.latest, 8);

    let ded = "  store: {table: Dedicated}\n";
    let old = view("players", LATEST, ded);
    let v = with_versions(
        view("players", COUNT, ded),
        vec![version(12, &old, VersionState::Active)],
        Some(12),
    );
    let t = assert_same_as_before(&v, &log(), &[&v], Some("uid-ns"));
    assert_ne!(t.plans[&12].storage.table.name, t.plans[&13].storage.table.name);
}

#[test]
fn a_latest_version_above_every_recorded_one_numbers_the_next_version_after_it() {
    let old = view("players", LATEST, "");
    let mut v = with_versions(
        view("players", COUNT, ""),
        vec![version(2, &old, VersionState::Active)],
        Some(2),
    );
    v.status.as_mut().unwrap().latest_version = Some(5);
    let t = assert_same_as_before(&v, &log(), &[&v], None);
    assert_eq!(t.latest, 6);
    assert!(t.plans.contains_key(&6));
}

#[test]
fn a_failed_version_has_no_plan_the_others_keep_theirs() {
    for runtime in ["InCluster", "Lambda"] {
        let extra = format!("  projector: {{runtime: {runtime}}}\n");
        let v1 = view("players", LATEST, &extra);
        let wanted = view("players", COUNT, &extra);
        let mut failed = version(2, &wanted, VersionState::Failed);
        failed.message = Some("backfill failed".into());
        let v = with_versions(
            wanted.clone(),
            vec![version(1, &v1, VersionState::Active), failed],
            Some(1),
        );
        let t = assert_same_as_before(&v, &log(), &[&v], Some("uid-ns"));
        assert!(!t.plans.contains_key(&2));
        assert!(t.plans.contains_key(&1));
        assert_eq!(
            t.latest, 2,
            "a failed version of the wanted content is kept, no new one"
        );
        // The spec changes again: the failed version goes, a new one is built.
        let again = with_versions(
            view(
                "players",
                "{mode: Latest, key: {partitionKey: 'Q#{id}'}, orderBy: seq}",
                &extra,
            ),
            v.status.clone().unwrap().versions,
            Some(1),
        );
        let t = assert_same_as_before(&again, &log(), &[&again], Some("uid-ns"));
        assert_eq!(t.removals.len(), 1);
        assert_eq!(t.removals[0].version.version, 2);
        assert!(t.plans.contains_key(&3));
    }
}

#[test]
fn a_retained_version_is_planned_until_its_retention_ends() {
    let v1 = view("players", LATEST, "  promotion: {retainPrevious: 1h}\n");
    let v2 = view("players", COUNT, "  promotion: {retainPrevious: 1h}\n");
    let mut retained = version(1, &v1, VersionState::Retained);
    retained.superseded_at = Some(Time(Timestamp::from_second(now().as_second() - 600).unwrap()));
    let v = with_versions(
        v2.clone(),
        vec![retained.clone(), version(2, &v2, VersionState::Active)],
        Some(2),
    );
    let t = assert_same_as_before(&v, &log(), &[&v], Some("uid-ns"));
    assert!(t.plans.contains_key(&1), "retained for another 50 minutes");
    assert!(t.removals.is_empty());
    // Retention over.
    retained.superseded_at = Some(Time(Timestamp::from_second(now().as_second() - 7200).unwrap()));
    let v = with_versions(
        v2.clone(),
        vec![retained, version(2, &v2, VersionState::Active)],
        Some(2),
    );
    let t = assert_same_as_before(&v, &log(), &[&v], Some("uid-ns"));
    assert!(!t.plans.contains_key(&1));
    assert_eq!(t.removals.len(), 1);
}

#[test]
fn siblings_sharing_the_table_with_streams_turn_streams_on_for_every_version() {
    let me = view("players", LATEST, "  projector: {runtime: Lambda}\n");
    let other = view(
        "scores",
        LATEST,
        "  projector: {runtime: Lambda}\n  store: {streams: true}\n  subscribers: {}\n",
    );
    let other_store = view(
        "teams",
        LATEST,
        "  store: {sharedTableName: other, streams: true}\n",
    );
    let going = deleting(view("gone", LATEST, "  store: {streams: true}\n"));
    for all in [
        vec![&me, &other],
        vec![&other, &me],
        vec![&other],
        vec![&me, &other_store],
        vec![&me, &going],
        vec![&me, &other, &other_store, &going],
    ] {
        let t = assert_same_as_before(&me, &log(), &all, Some("uid-ns"));
        let wants = all
            .iter()
            .any(|v| v.spec.store.streams && v.spec.store.shared_table_name == "views");
        assert_eq!(
            t.plans[&1].storage.table.stream.is_some(),
            wants,
            "{:?}",
            all.iter().map(|v| v.name_any()).collect::<Vec<_>>()
        );
    }
}

#[test]
fn the_log_readers_of_other_logs_do_not_change_the_role_or_the_fan_out() {
    // Auto fan-out: Direct with at most two readers of the stream, Sns beyond.
    let auto = log_of("Auto", true);
    let me = view("players", LATEST, "  projector: {runtime: Lambda}\n");
    let a = view("a", LATEST, "  projector: {runtime: Lambda}\n");
    let b = view("b", LATEST, "  projector: {runtime: Lambda}\n");
    let elsewhere: Vec<MaterializedView> = (0..4)
        .map(|i| {
            view_of(
                &format!("other-{i}"),
                "another-log",
                Some(LATEST),
                "  projector: {runtime: Lambda}\n",
            )
        })
        .collect();
    let mut all: Vec<&MaterializedView> = vec![&me];
    all.extend(elsewhere.iter());
    let t = assert_same_as_before(&me, &auto, &all, Some("uid-ns"));
    let alone = t.plans[&1].lambda.as_ref().unwrap().role(&scope()).unwrap();
    let t = assert_same_as_before(&me, &auto, &[&me], Some("uid-ns"));
    assert_eq!(
        t.plans[&1].lambda.as_ref().unwrap().role(&scope()).unwrap(),
        alone,
        "other logs' readers change nothing"
    );
    // Three readers of this log: the policy changes (Sns) as before.
    assert_same_as_before(&me, &auto, &[&me, &a, &b], Some("uid-ns"));
    assert_same_as_before(&me, &auto, &[&a, &b], Some("uid-ns"));
    assert_same_as_before(&me, &log_of("Direct", true), &[&me, &a, &b], None);
}

#[test]
fn a_log_without_status_plans_an_empty_log_table_for_the_projector() {
    for mode in ["Sns", "Direct", "Auto"] {
        let me = view("players", LATEST, "  projector: {runtime: Lambda}\n");
        let log = log_of(mode, false);
        let t = assert_same_as_before(&me, &log, &[&me], None);
        let f = t.plans[&1]
            .lambda
            .as_ref()
            .unwrap()
            .function("arn:aws:iam::1:role/r", &code())
            .unwrap()
            .unwrap();
        assert!(
            !f.environment.values().any(|v| v.contains("kappa-log-table")),
            "{:?}",
            f.environment
        );
    }
}

#[test]
fn a_users_function_arn_plans_no_role_no_function_but_its_arn() {
    let arn = "arn:aws:lambda:eu-west-1:123456789012:function:mine:live";
    let v = view_of(
        "players",
        "log",
        None,
        &format!("  projector: {{runtime: Lambda, code: {{functionArn: '{arn}'}}}}\n"),
    );
    let t = assert_same_as_before(&v, &log(), &[&v], Some("uid-ns"));
    let l = t.plans[&1].lambda.as_ref().unwrap();
    assert_eq!(l.custom_function.as_deref(), Some(arn));
    assert!(l.role(&scope()).is_none());
    assert_eq!(l.function("arn:aws:iam::1:role/r", &code()).unwrap(), None);
    assert!(
        t.plans[&1].projection.is_err(),
        "a custom function has no declarative projection"
    );
}

#[test]
fn custom_s3_code_plans_the_users_zip_and_a_changed_key_builds_a_new_version() {
    let s3 = |key: &str| {
        format!(
            "  projector: {{runtime: Lambda, code: {{s3: {{bucket: my-bucket, key: '{key}', lambdaRuntime: python3.12, handler: app.handler}}}}}}\n"
        )
    };
    let v1 = view_of("players", "log", None, &s3("code/v1.zip"));
    let t = assert_same_as_before(&v1, &log(), &[&v1], Some("uid-ns"));
    let f = t.plans[&1]
        .lambda
        .as_ref()
        .unwrap()
        .function("arn:aws:iam::1:role/r", &code())
        .unwrap()
        .unwrap();
    assert_eq!(
        f.code,
        FunctionCode::S3 { bucket: "my-bucket".into(), key: "code/v1.zip".into() }
    );
    assert_eq!(f.runtime, "python3.12");
    let v = with_versions(
        view_of("players", "log", None, &s3("code/v2.zip")),
        vec![version(1, &v1, VersionState::Active)],
        Some(1),
    );
    let t = assert_same_as_before(&v, &log(), &[&v], Some("uid-ns"));
    let f1 = t.plans[&1]
        .lambda
        .as_ref()
        .unwrap()
        .function("arn:aws:iam::1:role/r", &code())
        .unwrap()
        .unwrap();
    let f2 = t.plans[&2]
        .lambda
        .as_ref()
        .unwrap()
        .function("arn:aws:iam::1:role/r", &code())
        .unwrap()
        .unwrap();
    assert_eq!(
        f1.code,
        FunctionCode::S3 { bucket: "my-bucket".into(), key: "code/v1.zip".into() },
        "v1 keeps its code"
    );
    assert_eq!(
        f2.code,
        FunctionCode::S3 { bucket: "my-bucket".into(), key: "code/v2.zip".into() }
    );
}

#[test]
fn an_invalid_projection_is_the_versions_error_on_either_runtime_and_the_active_one_is_unaffected() {
    for runtime in ["InCluster", "Lambda"] {
        let extra = format!("  projector: {{runtime: {runtime}}}\n");
        let v = view("players", BAD, &extra);
        let t = assert_same_as_before(&v, &log(), &[&v], Some("uid-ns"));
        assert!(t.plans[&1].projection.is_err());
        let old = view("players", LATEST, &extra);
        let v = with_versions(
            view("players", BAD, &extra),
            vec![version(1, &old, VersionState::Active)],
            Some(1),
        );
        let t = assert_same_as_before(&v, &log(), &[&v], Some("uid-ns"));
        assert!(t.plans[&1].projection.is_ok());
        assert!(t.plans[&2].projection.is_err());
        if runtime == "Lambda" {
            assert!(
                t.plans[&2]
                    .lambda
                    .as_ref()
                    .unwrap()
                    .function("arn:aws:iam::1:role/r", &code())
                    .is_err()
            );
        }
    }
}

#[test]
fn a_reserved_environment_variable_is_refused_by_the_planned_function_as_before() {
    let v = view(
        "players",
        LATEST,
        "  projector: {runtime: Lambda, environment: {KAPPA_VIEWS_TABLE: other, FINE: '1'}}\n",
    );
    let t = assert_same_as_before(&v, &log(), &[&v], None);
    let f = t.plans[&1]
        .lambda
        .as_ref()
        .unwrap()
        .function("arn:aws:iam::1:role/r", &code());
    // Whatever the variable's name, the planned function says the same as before (checked above).
    let _ = f;
}

#[test]
fn odd_and_unicode_names_and_prefixes_plan_as_before() {
    for (name, prefix) in [
        ("a", None),
        (
            "a-very-long-view-name-that-goes-on-and-on-and-on-and-on-and-on-x",
            None,
        ),
        ("players", Some("ü/ñ#")),
        ("players", Some("#")),
        ("players", Some("a:b.c/d_e-f#")),
        ("players", Some("~v2~players#")),
    ] {
        let store = prefix
            .map(|p| format!("  store: {{keyPrefix: '{p}'}}\n"))
            .unwrap_or_default();
        for runtime in ["InCluster", "Lambda"] {
            let extra = format!("  projector: {{runtime: {runtime}}}\n{store}");
            let old = view(name, LATEST, &extra);
            let v = with_versions(
                view(name, COUNT, &extra),
                vec![version(1, &old, VersionState::Active)],
                Some(1),
            );
            assert_same_as_before(&v, &log(), &[&v], Some("uid-ns"));
            assert_same_as_before(&old, &log(), &[&old], None);
        }
    }
}

#[test]
fn a_prefix_chosen_like_a_version_prefix_is_refused_by_the_schema() {
    // Version n >= 2 of view `a` writes under `~v<n>~a#` in the shared table; another view choosing that
    // prefix would write the same items. The CRD's keyPrefix pattern must refuse it (`~` is not allowed).
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(MaterializedView::crd()).unwrap();
    let pattern = crd.pointer(
        "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/store/properties/keyPrefix/pattern",
    );
    let pattern = pattern.and_then(|p| p.as_str()).expect("a keyPrefix pattern");
    let re = regex::Regex::new(pattern).unwrap();
    assert!(!re.is_match("~v2~a#"), "{pattern} admits a version prefix");
    assert!(re.is_match("a#"));
    // With the version prefix out of reach, version 2 of `a` and a view `b` at `v2a#` never meet.
    let a_old = view("a", LATEST, "");
    let a = with_versions(
        view("a", COUNT, ""),
        vec![version(1, &a_old, VersionState::Active)],
        Some(1),
    );
    let b = view("b", LATEST, "  store: {keyPrefix: 'v2a#'}\n");
    let t = assert_same_as_before(&a, &log(), &[&a, &b], None);
    let tb = assert_same_as_before(&b, &log(), &[&a, &b], None);
    assert_ne!(t.plans[&2].storage.key_prefix, tb.plans[&1].storage.key_prefix);
}

#[test]
fn the_approval_annotation_names_a_version_with_or_without_v_and_nothing_else() {
    for (annotation, approved) in [
        ("3", Some(3)),
        ("v3", Some(3)),
        (" v3 ", Some(3)),
        ("\tv3\n", Some(3)),
        ("3x", None),
        ("", None),
        ("v", None),
        ("three", None),
        ("99999999999999999999", None),
    ] {
        let v = annotated(
            view("players", LATEST, ""),
            APPROVE_PROMOTION_ANNOTATION,
            annotation,
        );
        assert_eq!(topo(&v, &log(), &[&v], None).approved, approved, "{annotation:?}");
    }
    // Without the annotation, or another annotation: nothing approved.
    let v = view("players", LATEST, "");
    assert_eq!(topo(&v, &log(), &[&v], None).approved, None);
    let v = annotated(view("players", LATEST, ""), "kappa.dev/approve-backfill", "3");
    assert_eq!(topo(&v, &log(), &[&v], None).approved, None);
    // A negative number names no version.
    let v = annotated(view("players", LATEST, ""), APPROVE_PROMOTION_ANNOTATION, "-1");
    let approved = topo(&v, &log(), &[&v], None).approved;
    assert!(approved.is_none_or(|n| n < 1), "{approved:?}");
}

/// FAILS (pre-existing, also before 18f8b51): `trim_start_matches('v')` strips any number of `v`s and `parse` takes `+3`.
#[test]
fn the_approval_annotation_only_names_a_version_as_documented() {
    // The docs: set to the version's number, `3` or `v3`. `vv3`, `+3` and `V3` are not that.
    for annotation in ["vv3", "+3", "v+3", "vvvv3"] {
        let v = annotated(
            view("players", LATEST, ""),
            APPROVE_PROMOTION_ANNOTATION,
            annotation,
        );
        assert_eq!(
            topo(&v, &log(), &[&v], None).approved,
            None,
            "{annotation:?} approves version 3"
        );
    }
}

#[test]
fn max_lag_parses_or_falls_back_to_30_seconds() {
    for (lag, want) in [
        ("30s", Duration::from_secs(30)),
        ("5m", Duration::from_secs(300)),
        ("1h", Duration::from_secs(3600)),
        ("soon", Duration::from_secs(30)),
        ("", Duration::from_secs(30)),
        ("-5s", Duration::from_secs(30)),
    ] {
        let v = view("players", LATEST, &format!("  promotion: {{maxLag: '{lag}'}}\n"));
        let t = topo(&v, &log(), &[&v], None);
        assert_eq!(
            t.max_lag,
            kappa_operator::crd::parse_duration(&v.spec.promotion.max_lag).unwrap_or(Duration::from_secs(30)),
            "{lag:?}"
        );
        assert_eq!(t.max_lag, want, "{lag:?}");
    }
}

#[test]
fn the_push_stack_lists_the_tables_lambda_subscribers_as_before() {
    let sub = "  projector: {runtime: Lambda}\n  store: {streams: true}\n  subscribers: {}\n";
    let me = view("players", LATEST, sub);
    let same = status_table(
        view("scores", LATEST, sub),
        "kappa-prod-games-views",
        Some("scores#"),
    );
    let no_prefix = status_table(view("zeta", LATEST, sub), "kappa-prod-games-views", None);
    let in_cluster = status_table(
        view(
            "ic",
            LATEST,
            "  projector: {runtime: InCluster}\n  store: {streams: true}\n  subscribers: {}\n",
        ),
        "kappa-prod-games-views",
        Some("ic#"),
    );
    let no_subs = status_table(
        view("quiet", LATEST, "  projector: {runtime: Lambda}\n"),
        "kappa-prod-games-views",
        Some("quiet#"),
    );
    let elsewhere = status_table(view("far", LATEST, sub), "another-table", Some("far#"));
    let going = deleting(status_table(
        view("going", LATEST, sub),
        "kappa-prod-games-views",
        Some("going#"),
    ));
    let no_status = view("fresh", LATEST, sub);
    let me_in_siblings_with_status = status_table(me.clone(), "kappa-prod-games-views", Some("stale#"));
    for all in [
        vec![
            &me,
            &same,
            &no_prefix,
            &in_cluster,
            &no_subs,
            &elsewhere,
            &going,
            &no_status,
        ],
        vec![&same],
        vec![],
        vec![&me_in_siblings_with_status, &same],
    ] {
        let t = assert_same_as_before(&me, &log(), &all, Some("uid-ns"));
        let p = t.push(
            desired_version(&t),
            "kappa-prod-games-views",
            Some("players#"),
            &scope(),
        );
        let names: Vec<&str> = p.view_routes.views.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"players"));
        assert!(
            !names.contains(&"going")
                && !names.contains(&"ic")
                && !names.contains(&"quiet")
                && !names.contains(&"far")
        );
        assert_eq!(names.iter().filter(|n| **n == "players").count(), 1, "{names:?}");
    }
    // The view itself being deleted: it is not among its table's subscribers.
    let me_going = deleting(me.clone());
    let t = assert_same_as_before(&me_going, &log(), &[&me_going, &same], Some("uid-ns"));
    let p = t.push(
        desired_version(&t),
        "kappa-prod-games-views",
        Some("players#"),
        &scope(),
    );
    assert_eq!(
        p.view_routes.views,
        [("scores".to_string(), "scores#".to_string())]
    );
    // Without subscribers: the others only.
    let quiet = view("players", LATEST, "  projector: {runtime: Lambda}\n");
    assert_same_as_before(&quiet, &log(), &[&quiet, &same], None);
}

#[test]
fn push_of_a_view_without_subscribers_is_the_retire_check_as_before() {
    let sub = "  projector: {runtime: Lambda}\n  store: {streams: true}\n  subscribers: {}\n";
    let mut gone = view("players", LATEST, sub);
    gone.spec.subscribers = None;
    let same = status_table(
        view("scores", LATEST, sub),
        "kappa-prod-games-views",
        Some("scores#"),
    );
    for all in [vec![], vec![&same], vec![&gone, &same]] {
        let p = push_of(
            CLUSTER,
            &gone,
            &all,
            Some("uid-ns"),
            "kappa-prod-games-views",
            None,
            &scope(),
        );
        assert_eq!(
            p,
            old_push(&gone, &all, "kappa-prod-games-views", None, Some("uid-ns"))
        );
        assert_eq!(
            p.view_routes.views.is_empty(),
            all.iter().all(|v| v.name_any() != "scores")
        );
    }
}

/// FAILS (pre-existing, carried over from `aws_push_plan`): the push stack is planned from the spec's store, not the active version's.
#[test]
fn the_push_stack_of_a_dedicated_active_version_is_owned_like_before_when_the_spec_moved_to_shared() {
    // Version 1 in a dedicated table is active; the spec now asks for the shared table (v2 building).
    let sub = "  projector: {runtime: Lambda}\n  subscribers: {}\n";
    let v1 = view(
        "players",
        LATEST,
        &format!("{sub}  store: {{table: Dedicated, streams: true}}\n"),
    );
    let v = with_versions(
        view("players", LATEST, &format!("{sub}  store: {{streams: true}}\n")),
        vec![version(1, &v1, VersionState::Active)],
        Some(1),
    );
    let t = assert_same_as_before(&v, &log(), &[&v], Some("uid-ns"));
    let active = &t.plans[&1].storage;
    assert!(!active.shared);
    let p = t.push(1, &active.table.name, None, &scope());
    // The stack that pushes the dedicated table belongs to that table's owner (the view), as the table does.
    assert_eq!(
        p.owner, active.table_owner,
        "the push stack of {} is owned by the shared table's owner",
        active.table.name
    );
}

#[test]
fn the_namespace_uid_owns_the_shared_table_of_every_version_and_none_is_the_same_as_before() {
    let old = view("players", LATEST, "");
    let v = with_versions(
        view("players", COUNT, ""),
        vec![version(1, &old, VersionState::Active)],
        Some(1),
    );
    let with = assert_same_as_before(&v, &log(), &[&v], Some("the-ns-uid"));
    let without = assert_same_as_before(&v, &log(), &[&v], None);
    for n in [1, 2] {
        assert_eq!(
            with.plans[&n].storage.table_owner.uid.as_deref(),
            Some("the-ns-uid")
        );
        assert_eq!(
            with.plans[&n]
                .storage
                .table
                .tags
                .get("kappa.dev/uid")
                .map(String::as_str),
            Some("the-ns-uid")
        );
        assert_eq!(without.plans[&n].storage.table_owner.uid, None);
        assert_eq!(
            with.plans[&n].storage.table.name,
            without.plans[&n].storage.table.name
        );
    }
}

#[test]
fn planning_is_pure_the_same_input_twice_plans_the_same() {
    let old = view(
        "players",
        LATEST,
        "  projector: {runtime: Lambda}\n  subscribers: {}\n",
    );
    let v = with_versions(
        view(
            "players",
            COUNT,
            "  projector: {runtime: Lambda}\n  subscribers: {}\n",
        ),
        vec![version(1, &old, VersionState::Active)],
        Some(1),
    );
    let a = topo(&v, &log(), &[&v], Some("u"));
    let b = topo(&v, &log(), &[&v], Some("u"));
    assert_eq!(a.versions, b.versions);
    for (n, p) in &a.plans {
        assert_eq!(p.storage, b.plans[n].storage);
        assert_eq!(
            format!("{:?}", p.projection),
            format!("{:?}", b.plans[n].projection)
        );
    }
    assert_eq!(
        a.push(1, "t", Some("players#"), &scope()),
        b.push(1, "t", Some("players#"), &scope())
    );
}

// ----- Real-stack probes: the topology applied by a running operator. ----------------------------------

mod common;

/// What the stack probes' modules import.
mod stack_prelude {
    pub(super) use std::time::Duration;

    pub(super) use super::common;
    pub(super) use super::common::Operator;
    pub(super) use super::common::scores::{Event, event, write_events};
    pub(super) use kappa_operator::crd::{EventLog, MaterializedView, VersionState, ViewPhase};
    pub(super) use kube::Api;
    pub(super) use kube::api::{DeleteParams, Patch, PatchParams};

    /// View `name` on `runtime` whose projection writes the projector's own `logPk`: admission and
    /// validation let it through, the projection does not. `extra`: more lines of its spec.
    pub(super) fn clashing(name: &str, runtime: &str, store: &str, extra: &str) -> String {
        format!(
            r#"
apiVersion: kappa.dev/v1alpha1
kind: MaterializedView
metadata: {{name: {name}}}
spec:
  eventLogRef: {{name: game-events}}
  recordTypes: [player]
  projector: {{runtime: {runtime}}}
  projection: {{mode: Append, key: {{partitionKey: "P#{{playerId}}"}}, attributes: [{{from: name, to: logPk}}]}}
  backfill: {{source: None}}
  store: {store}
{extra}  deletionPolicy: Delete
"#
        )
    }
}

mod stack {
    use std::time::Duration;

    use super::common;
    use super::common::Operator;
    use super::common::scores::{Event, event, export_bucket, log_yaml, scores_table, write_events};
    use k8s_openapi::api::core::v1::ConfigMap;
    use kappa_operator::crd::{MaterializedView, MaterializedViewStatus, VersionState, ViewPhase};
    use kube::Api;
    use kube::api::{Patch, PatchParams};

    const POINTS: &str = r#"
apiVersion: kappa.dev/v1alpha1
kind: MaterializedView
metadata: {name: points}
spec:
  eventLogRef: {name: scores}
  recordTypes: [score]
  projector: {runtime: InCluster}
  projection: {mode: Count, key: {partitionKey: "PLAYER#{playerId}"}}
  backfill: {source: Scan, parallelism: 2}
  promotion: {maxLag: 30s, retainPrevious: 20s}
  deletionPolicy: Delete
"#;

    fn version(s: &MaterializedViewStatus, n: i64) -> Option<&kappa_operator::crd::ViewVersion> {
        s.versions.iter().find(|v| v.version == n)
    }

    fn condition<'a>(
        s: &'a MaterializedViewStatus,
        type_: &str,
    ) -> Option<&'a kappa_operator::crd::Condition> {
        s.conditions.iter().find(|c| c.type_ == type_)
    }

    async fn patch_spec(api: &Api<MaterializedView>, name: &str, spec: serde_json::Value) {
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": spec })),
        )
        .await
        .expect("patching the view's spec");
    }

    #[tokio::test]
    async fn stack_an_in_cluster_rebuild_whose_spec_cannot_be_projected_fails_with_the_planned_error_and_v1_keeps_serving()
     {
        let (client, ns) = common::setup("b15-topo-invalid").await;
        let aws = common::aws_config().await;
        let ddb = aws_sdk_dynamodb::Client::new(&aws);
        let (_s3, bucket) = export_bucket(&aws, &ns).await;
        let _op = Operator::start(&ns, "solo", 5);
        common::create_yaml(&client, &ns, &log_yaml(&bucket))
            .await
            .unwrap();
        let log_table = scores_table(&client, &ns).await;
        let events: Vec<Event> = (0..200).map(event).collect();
        write_events(&ddb, &log_table, events).await;
        common::create_yaml(&client, &ns, POINTS).await.unwrap();
        let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let first = common::eventually(Duration::from_secs(120), "points Live", || async {
            let s = mvs.get("points").await.ok()?.status?;
            (s.phase == Some(ViewPhase::Live)).then_some(s)
        })
        .await;
        let table = first.table_name.clone().unwrap();
        assert_eq!(first.key_prefix.as_deref(), Some("points#"));

        // Append writing the projector's own `logPk`: admission (which only knows pk and sk) and validation let
        // it through; the projection does not.
        let patched = mvs
            .patch(
                "points",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"projection": {
                    "mode": "Append", "key": {"partitionKey": "A#{playerId}"},
                    "attributes": [{"from": "points", "to": "logPk"}]}}})),
            )
            .await;
        patched.expect("admission lets a projection attribute named logPk through");
        let failed = common::eventually(Duration::from_secs(90), "version 2 failed", || async {
            let s = mvs.get("points").await.ok()?.status?;
            let stalled = condition(&s, "Stalled").is_some_and(|c| c.is_true());
            ((version(&s, 2)?.state == VersionState::Failed) || (stalled && s.versions.len() <= 1))
                .then_some(s)
        })
        .await;
        if let Some(v2) = version(&failed, 2) {
            let message = v2.message.clone().unwrap_or_default();
            assert!(message.contains("logPk"), "v2's failure says why: {message:?}");
            assert_eq!(failed.active_version, Some(1));
            assert_eq!(failed.phase, Some(ViewPhase::Live), "{failed:?}");
            assert_eq!(condition(&failed, "Rebuilding").unwrap().reason, "RebuildFailed");
            let data = cms.get("points").await.unwrap().data.unwrap();
            assert_eq!(data.get("version").map(String::as_str), Some("1"));
            assert_eq!(data.get("tableName"), Some(&table));
        }

        // The fix: a Sum. Version 3 builds and is promoted; the failed one goes.
        patch_spec(
            &mvs,
            "points",
            serde_json::json!({"projection": {"mode": "Sum", "sumOf": "points", "attributes": null,
                "key": {"partitionKey": "PLAYER#{playerId}"}}}),
        )
        .await;
        let fixed = common::eventually(Duration::from_secs(180), "version 3 promoted", || async {
            let s = mvs.get("points").await.ok()?.status?;
            (s.active_version == Some(3) && s.phase == Some(ViewPhase::Live)).then_some(s)
        })
        .await;
        assert!(version(&fixed, 2).is_none(), "{fixed:?}");
        assert_eq!(fixed.key_prefix.as_deref(), Some("~v3~points#"));
        assert_eq!(fixed.table_name.as_deref(), Some(table.as_str()));
        common::delete_namespace(&client, &ns).await;
    }

    const PLAYERS: &str = r#"
apiVersion: kappa.dev/v1alpha1
kind: MaterializedView
metadata: {name: players}
spec:
  eventLogRef: {name: game-events}
  recordTypes: [player]
  projection: {mode: Append, key: {partitionKey: "P#{playerId}"}}
  backfill: {source: None}
  promotion: {retainPrevious: 1h}
  deletionPolicy: Delete
"#;

    const GAMES: &str = r#"
apiVersion: kappa.dev/v1alpha1
kind: MaterializedView
metadata: {name: games}
spec:
  eventLogRef: {name: game-events}
  recordTypes: [game]
  projection: {mode: Append, key: {partitionKey: "G#{gameId}"}}
  store: {table: Dedicated}
  backfill: {source: None}
  deletionPolicy: Delete
"#;

    async fn env_of(
        lambda: &aws_sdk_lambda::Client,
        arn: &str,
    ) -> Option<std::collections::HashMap<String, String>> {
        let f = lambda
            .get_function_configuration()
            .function_name(arn)
            .send()
            .await
            .ok()?;
        Some(f.environment()?.variables()?.clone())
    }

    async fn role_policy(iam: &aws_sdk_iam::Client, role_arn: &str) -> String {
        let name = role_arn.rsplit('/').next().unwrap();
        let names = iam
            .list_role_policies()
            .role_name(name)
            .send()
            .await
            .expect("ListRolePolicies");
        let mut out = String::new();
        for p in names.policy_names() {
            let doc = iam
                .get_role_policy()
                .role_name(name)
                .policy_name(p)
                .send()
                .await
                .expect("GetRolePolicy");
            out.push_str(&urlencoding_decode(doc.policy_document()));
        }
        out
    }

    fn urlencoding_decode(s: &str) -> String {
        urlencoding::decode(s)
            .expect("IAM's policy document is UTF-8")
            .into_owned()
    }

    #[tokio::test]
    async fn stack_a_lambda_rebuild_beside_a_sibling_reader_gets_the_functions_and_roles_of_its_own_version()
    {
        let (client, ns) = common::setup("b15-topo-lambda").await;
        let aws = common::aws_config().await;
        let lambda = aws_sdk_lambda::Client::new(&aws);
        let iam = aws_sdk_iam::Client::new(&aws);
        let _op = Operator::start(&ns, "solo", 5);
        common::create_yaml(&client, &ns, common::GAME_EVENTS_SNS_LOG)
            .await
            .unwrap();
        common::create_yaml(&client, &ns, PLAYERS).await.unwrap();
        common::create_yaml(&client, &ns, GAMES).await.unwrap();
        let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
        let live = |name: &'static str| {
            let mvs = mvs.clone();
            async move {
                let s = mvs.get(name).await.ok()?.status?;
                (s.phase == Some(ViewPhase::Live) && s.resources.contains_key("function/projector"))
                    .then_some(s)
            }
        };
        let p1 = common::eventually(Duration::from_secs(120), "players Live on v1", || live("players")).await;
        let g1 = common::eventually(Duration::from_secs(120), "games Live", || live("games")).await;
        let f1 = p1.resources["function/projector"].clone();
        let gf = g1.resources["function/projector"].clone();
        let env1 = env_of(&lambda, &f1).await.expect("v1 function");
        assert!(env1.values().any(|v| v.contains("players#")), "{env1:?}");

        patch_spec(
            &mvs,
            "players",
            serde_json::json!({"projection": {"key": {"partitionKey": "Q#{playerId}"}}}),
        )
        .await;
        let p2 = common::eventually(Duration::from_secs(120), "players Live on v2", || async {
            let s = mvs.get("players").await.ok()?.status?;
            (s.active_version == Some(2) && s.phase == Some(ViewPhase::Live)).then_some(s)
        })
        .await;
        let f2 = p2.resources["function/projector"].clone();
        assert_ne!(f1, f2);
        let env2 = env_of(&lambda, &f2).await.expect("v2 function");
        assert!(
            env2.values().any(|v| v.contains("~v2~players#")),
            "v2's function writes under v2's prefix: {env2:?}"
        );
        assert!(env2.values().any(|v| v.contains("Q#")), "{env2:?}");
        // v1 is retained and unchanged.
        let env1_after = env_of(&lambda, &f1).await.expect("v1 retained");
        assert_eq!(env1_after, env1, "version 1's function was reconfigured");
        let v1 = version(&p2, 1).expect("v1 retained");
        assert_eq!(v1.state, VersionState::Retained);
        assert_eq!(v1.key_prefix.as_deref(), Some("players#"));
        // Each version's role confines its writes to its own prefix.
        let r1 = v1.resources.get("role/projector").cloned().unwrap_or_default();
        let r2 = p2.resources.get("role/projector").cloned().unwrap_or_default();
        assert!(!r1.is_empty() && !r2.is_empty() && r1 != r2, "{r1:?} {r2:?}");
        let pol2 = role_policy(&iam, &r2).await;
        assert!(pol2.contains("~v2~players#"), "{pol2}");
        // The sibling on another (dedicated) table keeps its function and prefix-free storage.
        let g2 = mvs.get("games").await.unwrap().status.unwrap();
        assert_eq!(g2.resources["function/projector"], gf);
        assert_eq!(g2.key_prefix, None);
        assert!(env_of(&lambda, &gf).await.is_some());
        common::delete_namespace(&client, &ns).await;
    }
}

/// FAILS (pre-existing, carried over from `aws_push_plan`): src/plan/topology.rs:237 plans the push owner from the spec.
#[test]
fn a_store_change_that_only_builds_version_2_does_not_rehome_the_active_tables_push_stack() {
    // Version 1 is active and pushed; the spec moves to another store, so version 2 builds elsewhere. Until
    // it is promoted, the push stack of version 1's table must stay the one it was (same owner, same API,
    // same connections table), not be re-planned under the new store's owner.
    let sub = "  projector: {runtime: Lambda}\n  subscribers: {}\n";
    for (before, after) in [
        (
            "  store: {streams: true}\n",
            "  store: {table: Dedicated, streams: true}\n",
        ),
        (
            "  store: {table: Dedicated, streams: true}\n",
            "  store: {streams: true}\n",
        ),
        (
            "  store: {streams: true}\n",
            "  store: {sharedTableName: second, streams: true}\n",
        ),
    ] {
        let v1 = view("players", LATEST, &format!("{sub}{before}"));
        let t_before = topo(&v1, &log(), &[&v1], Some("uid-ns"));
        let active = t_before.plans[&1].storage.clone();
        let prefix = active.key_prefix.as_deref();
        let stack_before = t_before.push(1, &active.table.name, prefix, &scope());

        let changed = with_versions(
            view("players", LATEST, &format!("{sub}{after}")),
            vec![version(1, &v1, VersionState::Active)],
            Some(1),
        );
        let t_after = assert_same_as_before(&changed, &log(), &[&changed], Some("uid-ns"));
        assert_eq!(t_after.plans[&1].storage, active, "version 1 keeps its storage");
        let stack_after = t_after.push(1, &active.table.name, prefix, &scope());
        assert_eq!(
            (
                &stack_after.owner,
                &stack_after.api.name,
                &stack_after.connections_table.name
            ),
            (
                &stack_before.owner,
                &stack_before.api.name,
                &stack_before.connections_table.name
            ),
            "{before:?} -> {after:?}: the push stack of {} moved",
            active.table.name
        );
    }
}

mod stack_refused {
    use super::stack_prelude::*;

    const CLASHING: &str = r#"
apiVersion: kappa.dev/v1alpha1
kind: MaterializedView
metadata: {name: players}
spec:
  eventLogRef: {name: game-events}
  recordTypes: [player]
  projection: {mode: Append, key: {partitionKey: "P#{playerId}"}, attributes: [{from: name, to: logPk}]}
  backfill: {source: None}
  promotion: {retainPrevious: 10s}
  deletionPolicy: Delete
"#;

    #[tokio::test]
    async fn stack_a_lambda_view_that_cannot_be_projected_creates_nothing_on_aws_and_a_fix_makes_it_live() {
        let (client, ns) = common::setup("b15-topo-refused").await;
        let aws = common::aws_config().await;
        let ddb = aws_sdk_dynamodb::Client::new(&aws);
        let _op = Operator::start(&ns, "solo", 5);
        common::create_yaml(&client, &ns, common::GAME_EVENTS_SNS_LOG)
            .await
            .unwrap();
        common::create_yaml(&client, &ns, CLASHING)
            .await
            .expect("admission lets logPk through");
        let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
        let failed = common::eventually(Duration::from_secs(90), "players Failed", || async {
            let s = mvs.get("players").await.ok()?.status?;
            (s.phase == Some(ViewPhase::Failed)).then_some(s)
        })
        .await;
        let stalled = failed
            .conditions
            .iter()
            .find(|c| c.type_ == "Stalled")
            .expect("Stalled");
        assert_eq!(stalled.reason, "InvalidSpec", "{failed:?}");
        assert!(stalled.message.contains("logPk"), "{}", stalled.message);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let s = mvs.get("players").await.unwrap().status.unwrap();
        assert!(
            !s.resources.keys().any(|k| k.starts_with("function/")
                || k.starts_with("role/")
                || k.starts_with("failureQueue")),
            "resources of a version that cannot run: {:?}",
            s.resources
        );
        let tables = ddb.list_tables().send().await.unwrap();
        let views_tables: Vec<&String> = tables
            .table_names()
            .iter()
            .filter(|t| t.contains(&ns) && !t.contains("game-events"))
            .collect();
        assert!(
            views_tables.is_empty(),
            "views tables created for a view that cannot run: {views_tables:?}"
        );

        // The fix: no clash. The view becomes Live and serves from a views table.
        mvs.patch(
            "players",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"projection": {"attributes": [{"from": "name", "to": "playerName"}]}}})),
        )
        .await
        .unwrap();
        let live = common::eventually(Duration::from_secs(120), "players Live after the fix", || async {
            let s = mvs.get("players").await.ok()?.status?;
            (s.phase == Some(ViewPhase::Live) && s.table_name.is_some()).then_some(s)
        })
        .await;
        assert!(live.resources.contains_key("function/projector"), "{live:?}");
        common::delete_namespace(&client, &ns).await;
    }
}

mod stack_refused_delete {
    use super::stack_prelude::*;

    #[tokio::test]
    async fn stack_a_view_refused_before_its_storage_existed_can_be_deleted() {
        let (client, ns) = common::setup("b15-topo-refdel").await;
        let _op = Operator::start(&ns, "solo", 5);
        common::create_yaml(&client, &ns, common::GAME_EVENTS_SNS_LOG)
            .await
            .unwrap();
        let shapes = [
            ("lambda-shared", "Lambda", "{}"),
            ("lambda-dedicated", "Lambda", "{table: Dedicated}"),
            ("incluster-shared", "InCluster", "{sharedTableName: other}"),
            ("incluster-dedicated", "InCluster", "{table: Dedicated}"),
        ];
        for (name, runtime, store) in shapes {
            common::create_yaml(&client, &ns, &clashing(name, runtime, store, ""))
                .await
                .unwrap();
        }
        let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
        for (name, _, _) in shapes {
            common::eventually(Duration::from_secs(90), &format!("{name} Failed"), || async {
                let s = mvs.get(name).await.ok()?.status?;
                (s.phase == Some(ViewPhase::Failed)).then_some(())
            })
            .await;
        }
        for (name, _, _) in shapes {
            mvs.delete(name, &DeleteParams::default()).await.unwrap();
        }
        for (name, _, _) in shapes {
            common::eventually(Duration::from_secs(90), &format!("{name} gone"), || async {
                match mvs.get_opt(name).await {
                    Ok(None) => Some(()),
                    _ => None,
                }
            })
            .await;
        }
        common::delete_namespace(&client, &ns).await;
    }
}

mod stack_refused_active {
    use super::stack_prelude::*;

    const LOG: &str = r#"
apiVersion: kappa.dev/v1alpha1
kind: EventLog
metadata: {name: scores}
spec:
  recordTypes: [profile, score]
  table: {sortKey: sk, orderingAttribute: seq}
  fanOut: {mode: Direct}
  deletionPolicy: Delete
"#;

    /// Latest per player, ordered by the log's orderingAttribute, keeping `points` as `rank`.
    const VIEW: &str = r#"
apiVersion: kappa.dev/v1alpha1
kind: MaterializedView
metadata: {name: best}
spec:
  eventLogRef: {name: scores}
  recordTypes: [score]
  projector: {runtime: InCluster}
  projection: {mode: Latest, key: {partitionKey: "PLAYER#{playerId}"}, attributes: [{from: points, to: rank}]}
  backfill: {source: Scan}
  deletionPolicy: Delete
"#;

    /// FAILS (new in 18f8b51): versions.rs:292-296 returns before `record_outcome`, so the entry keeps `Live`.
    #[tokio::test]
    async fn stack_an_active_version_refused_after_an_eventlog_edit_records_its_failure_in_its_version_entry()
    {
        let (client, ns) = common::setup("b15-topo-refact").await;
        let aws = common::aws_config().await;
        let ddb = aws_sdk_dynamodb::Client::new(&aws);
        let _op = Operator::start(&ns, "solo", 5);
        common::create_yaml(&client, &ns, LOG).await.unwrap();
        let log_table = common::scores::scores_table(&client, &ns).await;
        let events: Vec<Event> = (0..100).map(event).collect();
        write_events(&ddb, &log_table, events).await;
        common::create_yaml(&client, &ns, VIEW).await.unwrap();
        let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
        let live = common::eventually(Duration::from_secs(120), "best Live", || async {
            let s = mvs.get("best").await.ok()?.status?;
            (s.phase == Some(ViewPhase::Live)).then_some(s)
        })
        .await;
        assert_eq!(live.versions.len(), 1);
        assert_eq!(live.versions[0].phase, Some(ViewPhase::Live));

        // The log now orders by `rank`, which the view writes from `points`: its projection no longer compiles.
        let logs: Api<EventLog> = Api::namespaced(client.clone(), &ns);
        logs.patch(
            "scores",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"table": {"orderingAttribute": "rank"}}})),
        )
        .await
        .expect("orderingAttribute may change");
        let failed = common::eventually(Duration::from_secs(90), "best Failed", || async {
            let s = mvs.get("best").await.ok()?.status?;
            (s.phase == Some(ViewPhase::Failed)).then_some(s)
        })
        .await;
        let stalled = failed.conditions.iter().find(|c| c.type_ == "Stalled").unwrap();
        assert_eq!(stalled.reason, "InvalidSpec", "{failed:?}");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let s = mvs.get("best").await.unwrap().status.unwrap();
        let v1 = &s.versions[0];
        assert_eq!(
            (
                v1.phase,
                v1.message.as_deref().is_some_and(|m| m.contains("rank"))
            ),
            (Some(ViewPhase::Failed), true),
            "version 1's entry says {:?} / {:?} / live {:?} while the view is {:?}: {}",
            v1.phase,
            v1.message,
            v1.live,
            s.phase,
            stalled.message
        );
        common::delete_namespace(&client, &ns).await;
    }
}

mod stack_refused_subscribers {
    use super::stack_prelude::*;

    async fn refused_view_with_subscribers_is_not_reconciled_in_a_hot_loop(runtime: &str) {
        let (client, ns) = common::setup(&format!("b15-topo-hot-{}", runtime.to_lowercase())).await;
        let op = Operator::start_with_env(&ns, "solo", 5, &[("KAPPA_PUSH_AUTH", "none")]);
        common::create_yaml(&client, &ns, common::GAME_EVENTS_SNS_LOG)
            .await
            .unwrap();
        common::create_yaml(
            &client,
            &ns,
            &clashing("watched", runtime, "{streams: true}", "  subscribers: {}\n"),
        )
        .await
        .unwrap();
        let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
        common::eventually(Duration::from_secs(90), "watched Failed", || async {
            let s = mvs.get("watched").await.ok()?.status?;
            (s.phase == Some(ViewPhase::Failed)).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let before = op.reconciles_of("MaterializedView").await;
        tokio::time::sleep(Duration::from_secs(12)).await;
        let after = op.reconciles_of("MaterializedView").await;
        let status = mvs.get("watched").await.unwrap().status.unwrap();
        eprintln!("{runtime}: reconciles {before} -> {after}");
        assert!(before > 0, "the operator counts its reconciles");
        assert!(
            after - before <= 4,
            "{runtime}: a view whose version cannot run (Stalled, nothing changes) was reconciled {} times in 12 s; \
             status: {status:?}",
            after - before
        );
        common::delete_namespace(&client, &ns).await;
    }

    #[tokio::test]
    async fn stack_an_in_cluster_view_with_subscribers_that_cannot_be_projected_is_not_reconciled_every_second()
     {
        refused_view_with_subscribers_is_not_reconciled_in_a_hot_loop("InCluster").await;
    }

    #[tokio::test]
    async fn stack_a_lambda_view_with_subscribers_that_cannot_be_projected_is_not_reconciled_every_second() {
        refused_view_with_subscribers_is_not_reconciled_in_a_hot_loop("Lambda").await;
    }
}

mod stack_refused_entry {
    use super::stack_prelude::*;

    const VIEW: &str = r#"
apiVersion: kappa.dev/v1alpha1
kind: MaterializedView
metadata: {name: players}
spec:
  eventLogRef: {name: game-events}
  recordTypes: [player]
  projector: {runtime: InCluster}
  projection: {mode: Append, key: {partitionKey: "P#{playerId}"}}
  backfill: {source: None}
  deletionPolicy: Delete
"#;

    /// FAILS (new in 18f8b51): versions.rs:292-296 returns before `record_outcome`, so the entry's phase stays empty.
    #[tokio::test]
    async fn stack_a_rebuild_refused_before_its_storage_shows_phase_failed_and_why_in_its_version_entry() {
        let (client, ns) = common::setup("b15-topo-entry").await;
        let _op = Operator::start(&ns, "solo", 5);
        common::create_yaml(&client, &ns, common::GAME_EVENTS_SNS_LOG)
            .await
            .unwrap();
        common::create_yaml(&client, &ns, VIEW).await.unwrap();
        let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
        common::eventually(Duration::from_secs(90), "players Live", || async {
            let s = mvs.get("players").await.ok()?.status?;
            (s.phase == Some(ViewPhase::Live)).then_some(())
        })
        .await;
        mvs.patch(
            "players",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"projection": {"attributes": [{"from": "name", "to": "logSk"}]}}})),
        )
        .await
        .expect("admission lets logSk through");
        let s = common::eventually(Duration::from_secs(90), "version 2 failed", || async {
            let s = mvs.get("players").await.ok()?.status?;
            let v2 = s.versions.iter().find(|v| v.version == 2)?;
            (v2.state == VersionState::Failed).then_some(s)
        })
        .await;
        let v2 = s.versions.iter().find(|v| v.version == 2).unwrap();
        assert!(
            v2.message.as_deref().is_some_and(|m| m.contains("logSk")),
            "{v2:?}"
        );
        assert_eq!(s.active_version, Some(1));
        assert_eq!(v2.phase, Some(ViewPhase::Failed), "version 2's entry: {v2:?}");
        common::delete_namespace(&client, &ns).await;
    }
}

mod stack_push {
    use super::stack_prelude::*;

    const GAMES: &str = r#"
apiVersion: kappa.dev/v1alpha1
kind: MaterializedView
metadata: {name: games}
spec:
  eventLogRef: {name: game-events}
  recordTypes: [game]
  projection: {mode: Latest, key: {partitionKey: "GAME#{gameId}"}}
  backfill: {source: None}
  store: {streams: true}
  subscribers: {}
  promotion: {mode: Manual}
  deletionPolicy: Delete
"#;

    /// The ids and names of the WebSocket APIs tagged with namespace `ns`.
    async fn apis_of(apigw: &aws_sdk_apigatewayv2::Client, ns: &str) -> Vec<(String, String)> {
        let out = apigw.get_apis().send().await.expect("GetApis");
        out.items()
            .iter()
            .filter(|a| {
                a.tags()
                    .and_then(|t| t.get("kappa.dev/namespace"))
                    .map(String::as_str)
                    == Some(ns)
            })
            .map(|a| {
                (
                    a.api_id().unwrap_or_default().to_string(),
                    a.name().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// FAILS (pre-existing): a second WebSocket API is created for version 1's table and `status.push` moves to it.
    #[tokio::test]
    async fn stack_a_store_change_waiting_for_promotion_keeps_the_active_tables_websocket_api() {
        let (client, ns) = common::setup("b15-topo-push").await;
        let aws = common::aws_config().await;
        let apigw = aws_sdk_apigatewayv2::Client::new(&aws);
        let _op = Operator::start(&ns, "solo", 5);
        common::create_yaml(&client, &ns, common::GAME_EVENTS_SNS_LOG)
            .await
            .unwrap();
        common::create_yaml(&client, &ns, GAMES).await.unwrap();
        let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
        let first = common::eventually(
            Duration::from_secs(120),
            "games Live with a WebSocket API",
            || async {
                let s = mvs.get("games").await.ok()?.status?;
                (s.phase == Some(ViewPhase::Live) && s.push.as_ref()?.api_id.is_some()).then_some(s)
            },
        )
        .await;
        let api = first.push.clone().unwrap().api_id.unwrap();
        let url = first.push.clone().unwrap().url.unwrap();
        let table = first.table_name.clone().unwrap();
        assert_eq!(apis_of(&apigw, &ns).await.len(), 1);

        // The store moves to a dedicated table: version 2 builds there and waits for approval; version 1
        // (in the shared table) stays active, and so should its push stack.
        mvs.patch(
            "games",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"store": {"table": "Dedicated", "streams": true}}})),
        )
        .await
        .unwrap();
        let waiting = common::eventually(
            Duration::from_secs(120),
            "version 2 waiting for approval",
            || async {
                let s = mvs.get("games").await.ok()?.status?;
                let c = s.conditions.iter().find(|c| c.type_ == "Rebuilding")?;
                (c.reason == "WaitingForApproval").then_some(s)
            },
        )
        .await;
        // A few more reconciles of the waiting view.
        tokio::time::sleep(Duration::from_secs(8)).await;
        let now = mvs.get("games").await.unwrap().status.unwrap();
        assert_eq!(now.active_version, Some(1));
        assert_eq!(now.table_name.as_deref(), Some(table.as_str()));
        let apis = apis_of(&apigw, &ns).await;
        let push = now.push.clone().unwrap_or_default();
        assert_eq!(
            (push.api_id.as_deref(), push.url.as_deref()),
            (Some(api.as_str()), Some(url.as_str())),
            "the subscribers' endpoint of version 1's table moved before any promotion; APIs of the namespace: \
             {apis:?}; waiting status: {waiting:?}"
        );
        assert_eq!(
            apis.len(),
            1,
            "a second WebSocket API for the same views table: {apis:?}"
        );
        common::delete_namespace(&client, &ns).await;
    }
}

#[test]
fn a_version_is_refused_before_any_call_exactly_when_it_needs_a_projection_that_does_not_compile() {
    // Append writing the projector's own `logPk`: admission (pk and sk only) lets it through.
    const CLASH: &str =
        "{mode: Append, key: {partitionKey: 'A#{id}'}, attributes: [{from: points, to: logPk}]}";
    for (runtime, projection, code, refused) in [
        ("InCluster", Some(CLASH), "", true),
        ("InCluster", Some(BAD), "", true),
        ("InCluster", Some(LATEST), "", false),
        ("Lambda", Some(CLASH), "", true),
        ("Lambda", Some(LATEST), "", false),
        (
            "Lambda",
            None,
            ", code: {s3: {bucket: my-bucket, key: k.zip}}",
            false,
        ),
        (
            "Lambda",
            None,
            ", code: {functionArn: 'arn:aws:lambda:eu-west-1:123456789012:function:mine'}",
            false,
        ),
        (
            "Lambda",
            None,
            ", code: {imageUri: '123456789012.dkr.ecr.eu-west-1.amazonaws.com/p:1'}",
            false,
        ),
    ] {
        let v = view_of(
            "players",
            "log",
            projection,
            &format!("  projector: {{runtime: {runtime}{code}}}\n"),
        );
        let t = assert_same_as_before(&v, &log(), &[&v], None);
        assert_eq!(
            t.plans[&1].refusal().is_some(),
            refused,
            "{runtime} {projection:?} {code}"
        );
        if let Some(e) = t.plans[&1].refusal() {
            assert_eq!(
                Err(e),
                t.plans[&1].projection.as_ref().map(|_| ()),
                "the refusal is the planned projection error"
            );
        }
    }
}

#[test]
fn a_retained_version_whose_projection_stops_compiling_after_an_eventlog_edit_is_refused_alone() {
    // v1 (Latest ordered by the log's orderingAttribute) is retained, v2 (Count) active; the EventLog then
    // drops its orderingAttribute. Only v1 is refused; v2 keeps running.
    let latest_no_order = "{mode: Latest, key: {partitionKey: 'P#{id}'}}";
    let v1 = view("players", latest_no_order, "");
    let v2 = view("players", COUNT, "");
    let mut retained = version(1, &v1, VersionState::Retained);
    retained.superseded_at = Some(Time(Timestamp::from_second(now().as_second() - 60).unwrap()));
    let v = with_versions(
        v2.clone(),
        vec![retained, version(2, &v2, VersionState::Active)],
        Some(2),
    );
    let mut ordered = log();
    ordered.spec.table.ordering_attribute = Some("seq".into());
    let t = assert_same_as_before(&v, &ordered, &[&v], None);
    assert!(t.plans[&1].refusal().is_none() && t.plans[&2].refusal().is_none());
    let t = assert_same_as_before(&v, &log(), &[&v], None);
    assert!(
        t.plans[&1].refusal().is_some(),
        "v1 cannot find its order any more"
    );
    assert!(t.plans[&2].refusal().is_none());
}
