//! The whole desired topology of one MaterializedView for one reconcile, planned once, before any call: the
//! **plan** step of `dereference → validate → plan → apply → status` (see
//! `crate::controller::materialized_view`).
//!
//! ```text
//! view + its EventLog + the namespace's views + the namespace's uid + now
//!   ─▶ ViewTopology: the versions (reshaped: kept, new, removed), and per version that runs
//!        its storage (views table, key prefix)   its projection (compiled, or why not)
//!        on Lambda: its role, failure queue, function, live path (topic subscriptions or stream mapping)
//!      and the view's push path (the subscribers of its views table)
//! ```
//!
//! Two facts are known only from AWS's first answer, so the plan holds them as pure functions of that
//! answer rather than as values: the account and region (the views table's ARN) that the projector role's
//! policy and the push stack name ([`LambdaPlan::role`], [`ViewTopology::push`]), and the role's ARN that
//! the projector function runs as ([`LambdaPlan::function`]). The apply step calls them with what it
//! observed; everything else it reads from this value.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::function::FunctionPlan;
use super::iam::AwsScope;
use super::lambdas::{BuiltInCode, projector_name, projector_subscriptions};
use super::log::{LogPlan, QueuePlan, RolePlan, plan_log};
use super::push::PushPlan;
use super::versions::{Removal, content_hash, content_of, plan_version, reshape, view_with_content};
use super::view::{ViewPlan, plan_view, projector_role};
use crate::crd::{
    APPROVE_PROMOTION_ANNOTATION, EventLog, MaterializedView, ProjectorRuntime, VersionState, ViewVersion,
    parse_duration,
};
use crate::projection::{ProjectionConfig, ProjectionError};

/// What the plan is made from: the view, its EventLog, the namespace's views (`siblings`: the sharers of
/// a table and the log's other readers; the view itself may be among them), the namespace's uid (the
/// owner of its shared views tables) and the time of this reconcile.
pub struct TopologyInput<'a, V> {
    /// The operator's cluster id (`--cluster-id`), in every name and ownership tag.
    pub cluster: &'a str,
    pub view: &'a MaterializedView,
    pub log: &'a EventLog,
    pub siblings: &'a [V],
    pub namespace_uid: Option<&'a str>,
    pub now: Timestamp,
}

/// One reconcile's desired topology of a view (see the module docs).
pub struct ViewTopology {
    /// The content hash of the spec (`crate::plan::versions::content_hash`): the version it names is the
    /// one the view wants.
    pub desired_hash: String,
    /// The versions as the status recorded them (a view from before versions existed: one, from its spec).
    pub recorded: Vec<ViewVersion>,
    /// The versions after this reconcile's reshape: kept, and a new one when the content changed.
    pub versions: Vec<ViewVersion>,
    /// The versions that go, each with why.
    pub removals: Vec<Removal>,
    /// The storage of each version that goes, by number: what its removal deletes.
    pub removed_storage: BTreeMap<i64, ViewPlan>,
    /// The highest version number ever used.
    pub latest: i64,
    /// The version `kappa.dev/approve-promotion` names (`"3"` or `"v3"`), when it parses.
    pub approved: Option<i64>,
    /// `spec.promotion.maxLag` (30 s when it does not parse; admission refuses that).
    pub max_lag: Duration,
    /// Per version that runs (every version but a failed one), by number: what it wants.
    pub plans: BTreeMap<i64, VersionPlan>,
    /// The time of this reconcile (the input's), for promotion and retention.
    pub now: Timestamp,
    /// The view's push path: who else has subscribers on which views table.
    push: PushTopology,
}

/// One version's desired topology.
pub struct VersionPlan {
    /// Its storage: the views table and, in a shared one, its key prefix.
    pub storage: ViewPlan,
    /// Its projection compiled for its key prefix, or why the spec cannot be projected (`InvalidSpec`:
    /// the version fails; Lambda views with custom code have none and need none).
    pub projection: Result<Arc<ProjectionConfig>, ProjectionError>,
    /// On the Lambda runtime: its role, function, failure queue and live path.
    pub lambda: Option<LambdaPlan>,
}

impl VersionPlan {
    /// Why the version cannot run at all, known without any AWS call: it needs its projection (the
    /// in-cluster runtime, our projector function, or a backfill of `spec.projection`) and the spec cannot
    /// be compiled into one. The version fails before its storage is created.
    pub fn refusal(&self) -> Option<&ProjectionError> {
        let needed = self.lambda.as_ref().is_none_or(|l| l.needs_projection);
        self.projection.as_ref().err().filter(|_| needed)
    }
}

/// A version's projector on the Lambda runtime.
pub struct LambdaPlan {
    /// The view as the version sees it (its content).
    view: MaterializedView,
    storage: ViewPlan,
    /// The log as the version's role sees it (its table, fan-out and the namespace's readers of it).
    log: LogPlan,
    log_spec: crate::crd::EventLogSpec,
    /// The log table's name as the EventLog's status reports it (`""` before it does): where the built-in
    /// projector reads records sent by reference.
    log_table: String,
    /// With `Sns` fan-out: the topic groups the projector subscribes to, and each subscription's filter
    /// policy.
    pub subscriptions: BTreeMap<String, serde_json::Value>,
    /// The on-failure destination of its stream mapping or of its asynchronous invocations.
    pub failure_queue: QueuePlan,
    /// Our projector function's name (`crate::plan::lambdas::projector_name`).
    pub function_name: String,
    /// The user's existing function (`spec.projector.code.functionArn`), used as it is.
    pub custom_function: Option<String>,
    /// Whether the version runs the view's projection: our projector function (no `spec.projector.code`)
    /// or the operator's backfill of `spec.projection`.
    needs_projection: bool,
}

impl LambdaPlan {
    /// The version's views table.
    pub fn table(&self) -> &str {
        &self.storage.table.name
    }

    /// The version's owner (the view), whose tags mark what the operator may change.
    pub fn owner(&self) -> &super::names::Owner {
        &self.storage.owner
    }

    /// The projector role in the account and region `scope` (the views table's ARN names them); `None` for
    /// a view that needs no role of ours (an existing function the user brings).
    pub fn role(&self, scope: &AwsScope) -> Option<RolePlan> {
        projector_role(&self.view, &self.storage, &self.log, scope)
    }

    /// The projector function running as `role_arn` with `code` (the built-in functions' package); `None`
    /// for an existing function (`functionArn`). Errors: a projection or environment the function cannot
    /// be configured with ([`super::PlanError`]), found before any AWS call.
    pub fn function(
        &self,
        role_arn: &str,
        code: &BuiltInCode,
    ) -> Result<Option<FunctionPlan>, super::PlanError> {
        super::lambdas::projector_function(
            &self.view,
            &self.storage,
            &self.log_spec,
            &self.log_table,
            role_arn,
            code,
        )
    }
}

/// The view's push path as planned: its plan (the owner of the push stack) and the namespace's other
/// Lambda-runtime views with subscribers, by the views table and key prefix their status reports.
struct PushTopology {
    plan: ViewPlan,
    /// This view's own name, when it has subscribers and is not being deleted.
    own: Option<String>,
    /// (view name, views table, key prefix) of each other view whose changes a table's stack pushes.
    others: Vec<(String, String, String)>,
}

impl ViewTopology {
    /// The push stack of the views table `table` of version `active` (the active one, at `key_prefix`) in
    /// the account and region `scope`: the table's Lambda-runtime views with subscribers, this one included
    /// when it has them. Its names and owner are the active version's storage's: a store change still
    /// building beside it moves nothing before its promotion.
    pub fn push(&self, active: i64, table: &str, key_prefix: Option<&str>, scope: &AwsScope) -> PushPlan {
        let storage = self.plans.get(&active).map(|p| &p.storage);
        push_plan(&self.push, storage, table, key_prefix, scope)
    }
}

/// `storage`: the storage plan of the version whose table it is (`None`: the view's spec's).
fn push_plan(
    push: &PushTopology,
    storage: Option<&ViewPlan>,
    table: &str,
    key_prefix: Option<&str>,
    scope: &AwsScope,
) -> PushPlan {
    let mut subscribers: Vec<(String, String)> = push
        .others
        .iter()
        .filter(|(_, t, _)| t == table)
        .map(|(name, _, prefix)| (name.clone(), prefix.clone()))
        .collect();
    if let Some(own) = &push.own {
        subscribers.push((own.clone(), key_prefix.unwrap_or_default().to_string()));
    }
    subscribers.sort();
    let mut plan = storage.unwrap_or(&push.plan).clone();
    plan.table.name = table.to_string();
    super::push::plan_push(&plan, &subscribers, scope)
}

/// The push stack of views table `table` for `view` among `siblings` (a view being deleted, or one whose
/// reconcile did not plan a topology): the same plan [`ViewTopology::push`] makes for the active version
/// its status records.
pub fn push_of(
    cluster: &str,
    view: &MaterializedView,
    siblings: &[impl Borrow<MaterializedView>],
    namespace_uid: Option<&str>,
    table: &str,
    key_prefix: Option<&str>,
    scope: &AwsScope,
) -> PushPlan {
    let status = view.status.as_ref();
    let active = status.and_then(|s| s.versions.iter().find(|v| Some(v.version) == s.active_version));
    let storage = active.map(|v| {
        plan_version(cluster, &version_view(view, v), siblings, v.version).in_namespace(namespace_uid)
    });
    let push = push_topology(cluster, view, siblings, namespace_uid);
    push_plan(&push, storage.as_ref(), table, key_prefix, scope)
}

fn push_topology(
    cluster: &str,
    view: &MaterializedView,
    siblings: &[impl Borrow<MaterializedView>],
    namespace_uid: Option<&str>,
) -> PushTopology {
    let name = view.name_any();
    let others = siblings
        .iter()
        .map(Borrow::borrow)
        .filter(|v| v.name_any() != name && v.metadata.deletion_timestamp.is_none())
        .filter(|v| v.spec.subscribers.is_some() && v.spec.projector.runtime == ProjectorRuntime::Lambda)
        .filter_map(|v| {
            let s = v.status.as_ref()?;
            Some((
                v.name_any(),
                s.table_name.clone()?,
                s.key_prefix.clone().unwrap_or_default(),
            ))
        })
        .collect();
    let own = (view.spec.subscribers.is_some() && view.metadata.deletion_timestamp.is_none()).then_some(name);
    PushTopology {
        plan: plan_view(cluster, view, siblings).in_namespace(namespace_uid),
        own,
        others,
    }
}

/// The versions recorded in the status; a view from before versions existed has one, built from its spec.
pub fn recorded_versions(view: &MaterializedView, now: Timestamp) -> Vec<ViewVersion> {
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
        created_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
        ..ViewVersion::default()
    }]
}

/// The view as version `v` sees it: the version's content, and its backfill in `status.backfill`.
pub fn version_view(view: &MaterializedView, v: &ViewVersion) -> MaterializedView {
    let mut vv = view_with_content(view, &v.content);
    let mut status = vv.status.take().unwrap_or_default();
    status.backfill = v.backfill.clone();
    vv.status = Some(status);
    vv
}

/// Plans the view's whole topology for this reconcile (see the module docs). Pure.
pub fn plan_topology<V: Borrow<MaterializedView>>(input: &TopologyInput<'_, V>) -> ViewTopology {
    let TopologyInput { cluster, view, siblings, namespace_uid, now, .. } = *input;
    let status = view.status.clone().unwrap_or_default();
    let promotion = &view.spec.promotion;
    let desired = content_of(view);
    let desired_hash = content_hash(&desired);
    let recorded = recorded_versions(view, now);
    let (versions, removals, latest) = reshape(
        &recorded,
        status.latest_version.unwrap_or(0),
        &desired,
        promotion,
        now,
    );
    let removed_storage = removals
        .iter()
        .map(|r| (r.version.version, storage_of(input, &r.version)))
        .collect();
    let plans = versions
        .iter()
        .filter(|v| v.state != VersionState::Failed)
        .map(|v| (v.version, plan_of_version(input, v)))
        .collect();
    let approved = view
        .annotations()
        .get(APPROVE_PROMOTION_ANNOTATION)
        .and_then(|a| approved_version(a));
    ViewTopology {
        desired_hash,
        recorded,
        versions,
        removals,
        removed_storage,
        latest,
        approved,
        max_lag: parse_duration(&promotion.max_lag).unwrap_or(Duration::from_secs(30)),
        plans,
        now,
        push: push_topology(cluster, view, siblings, namespace_uid),
    }
}

/// The version `kappa.dev/approve-promotion` names: `3` or `v3` (spaces around it ignored); anything else
/// names none.
fn approved_version(annotation: &str) -> Option<i64> {
    let a = annotation.trim();
    let digits = a.strip_prefix('v').unwrap_or(a);
    match !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        true => digits.parse().ok(),
        false => None,
    }
}

/// Version `v`'s storage: its views table and, in a shared one, its key prefix.
fn storage_of<V: Borrow<MaterializedView>>(input: &TopologyInput<'_, V>, v: &ViewVersion) -> ViewPlan {
    let TopologyInput { cluster, view, siblings, namespace_uid, .. } = *input;
    plan_version(cluster, &version_view(view, v), siblings, v.version).in_namespace(namespace_uid)
}

/// What deleting a view (`deletionPolicy: Delete`) removes, planned before any call: the storage its
/// spec names, and every recorded version with its storage.
pub struct DeletionPlan {
    /// The spec's storage (`crate::plan::view::plan_view`).
    pub storage: ViewPlan,
    /// The recorded versions, each with its storage.
    pub versions: Vec<(ViewVersion, ViewPlan)>,
}

impl DeletionPlan {
    /// Whether `version_storage` is elsewhere than the spec's storage (another table or key prefix):
    /// the version's items or table go with the version.
    pub fn elsewhere(&self, version_storage: &ViewPlan) -> bool {
        (
            version_storage.table.name.as_str(),
            version_storage.key_prefix.as_deref(),
        ) != (
            self.storage.table.name.as_str(),
            self.storage.key_prefix.as_deref(),
        )
    }
}

/// Plans the deletion of `view`, whose status recorded `recorded`, among `siblings` (the namespace's other
/// views). Pure.
pub fn plan_deletion(
    cluster: &str,
    view: &MaterializedView,
    recorded: &[ViewVersion],
    siblings: &[impl Borrow<MaterializedView>],
    namespace_uid: Option<&str>,
) -> DeletionPlan {
    let storage = plan_view(cluster, view, siblings).in_namespace(namespace_uid);
    let versions = recorded
        .iter()
        .map(|v| {
            let vplan = plan_version(cluster, &version_view(view, v), siblings, v.version);
            (v.clone(), vplan.in_namespace(namespace_uid))
        })
        .collect();
    DeletionPlan { storage, versions }
}

/// One version's plan: its storage, projection and, on Lambda, its projector.
fn plan_of_version<V: Borrow<MaterializedView>>(
    input: &TopologyInput<'_, V>,
    v: &ViewVersion,
) -> VersionPlan {
    let TopologyInput { cluster, view, log, siblings, .. } = *input;
    let vview = version_view(view, v);
    let storage = storage_of(input, v);
    let key_prefix = storage.key_prefix.clone().unwrap_or_default();
    let projection =
        ProjectionConfig::from_spec(&vview.name_any(), &vview.spec, &log.spec, &key_prefix).map(Arc::new);
    let lambda = (vview.spec.projector.runtime == ProjectorRuntime::Lambda).then(|| {
        let readers: Vec<&MaterializedView> = siblings
            .iter()
            .map(Borrow::borrow)
            .filter(|s| s.spec.event_log_ref.name == vview.spec.event_log_ref.name)
            .collect();
        LambdaPlan {
            log: plan_log(cluster, log, &readers),
            log_spec: log.spec.clone(),
            log_table: log
                .status
                .as_ref()
                .and_then(|s| s.table.as_ref())
                .map_or(String::new(), |t| t.name.clone()),
            subscriptions: projector_subscriptions(&vview, &log.spec),
            failure_queue: storage.failure_queue(),
            function_name: projector_name(&storage),
            custom_function: vview
                .spec
                .projector
                .code
                .as_ref()
                .and_then(|c| c.function_arn.clone()),
            needs_projection: vview.spec.projector.code.is_none() || vview.spec.projection.is_some(),
            storage: storage.clone(),
            view: vview,
        }
    });
    VersionPlan { storage, projection, lambda }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ProjectorRuntime, VersionState};

    const LATEST: &str = "{mode: Latest, key: {partitionKey: \"P#{id}\"}, orderBy: seq}";
    const COUNT: &str = "{mode: Count, key: {partitionKey: \"P#{id}\"}}";

    fn view(name: &str, projection: &str, extra: &str) -> MaterializedView {
        serde_yaml::from_str(&format!(
            "apiVersion: kappa.dev/v1alpha1\nkind: MaterializedView\n\
             metadata: {{name: {name}, namespace: games, uid: uid-{name}}}\n\
             spec:\n  eventLogRef: {{name: log}}\n  recordTypes: [player]\n  projection: {projection}\n{extra}"
        ))
        .unwrap()
    }

    fn log() -> EventLog {
        serde_yaml::from_str(
            "apiVersion: kappa.dev/v1alpha1\nkind: EventLog\nmetadata: {name: log, namespace: games, uid: uid-log}\n\
             spec: {recordTypes: [player], table: {}, fanOut: {mode: Sns}}\n\
             status: {table: {name: kappa-log-table, arn: 'arn:aws:dynamodb:eu-west-1:123456789012:table/kappa-log-table'}}\n",
        )
        .unwrap()
    }

    fn plan(view: &MaterializedView, siblings: &[MaterializedView]) -> ViewTopology {
        plan_topology(&TopologyInput {
            cluster: "prod",
            view,
            log: &log(),
            siblings,
            namespace_uid: Some("uid-ns"),
            now: Timestamp::from_second(1_700_000_000).unwrap(),
        })
    }

    fn scope() -> AwsScope {
        super::super::log::scope_of_arn("arn:aws:dynamodb:eu-west-1:123456789012:table/x").unwrap()
    }

    /// The view as it stands once version 1 (of `projection`) is active.
    fn with_active_v1(mut v: MaterializedView, projection: &str) -> MaterializedView {
        let before = view(&v.name_any(), projection, "");
        let content = content_of(&before);
        v.status = Some(crate::crd::MaterializedViewStatus {
            versions: vec![ViewVersion {
                version: 1,
                content_hash: content_hash(&content),
                state: VersionState::Active,
                content,
                ..Default::default()
            }],
            latest_version: Some(1),
            active_version: Some(1),
            ..Default::default()
        });
        v
    }

    #[test]
    fn a_new_view_plans_one_active_version_in_its_shared_table_owned_by_the_namespace() {
        let v = view("players", LATEST, "  projector: {runtime: InCluster}\n");
        let t = plan(&v, std::slice::from_ref(&v));
        assert_eq!(t.versions.len(), 1);
        assert_eq!(t.versions[0].state, VersionState::Active);
        assert_eq!(t.latest, 1);
        let p = &t.plans[&1];
        // The same storage the apply step used to plan for itself.
        let before = plan_version("prod", &v, std::slice::from_ref(&v), 1).in_namespace(Some("uid-ns"));
        assert_eq!(p.storage, before);
        assert_eq!(p.storage.key_prefix.as_deref(), Some("players#"));
        assert_eq!(p.storage.table.tags["kappa.dev/uid"], "uid-ns");
        let projection = p.projection.as_ref().unwrap();
        assert_eq!(
            **projection,
            ProjectionConfig::from_spec("players", &v.spec, &log().spec, "players#").unwrap()
        );
        assert!(
            p.lambda.is_none(),
            "the in-cluster runtime has no projector of ours"
        );
    }

    #[test]
    fn a_changed_view_plans_the_building_version_beside_the_active_one_each_with_its_own_prefix() {
        let v = with_active_v1(view("players", COUNT, ""), LATEST);
        let t = plan(&v, std::slice::from_ref(&v));
        let states: Vec<_> = t.versions.iter().map(|v| (v.version, v.state)).collect();
        assert_eq!(states, [(1, VersionState::Active), (2, VersionState::Building)]);
        assert_eq!(t.plans[&1].storage.key_prefix.as_deref(), Some("players#"));
        assert_eq!(t.plans[&2].storage.key_prefix.as_deref(), Some("~v2~players#"));
        // Each version's projection is its own content's, compiled for its own prefix.
        let v1 = t.plans[&1].projection.as_ref().unwrap();
        let v2 = t.plans[&2].projection.as_ref().unwrap();
        assert!(!v1.is_additive() && v2.is_additive());
        assert_eq!(t.desired_hash, t.versions[1].content_hash);
    }

    #[test]
    fn a_failed_version_has_no_plan_and_the_active_one_keeps_its_own() {
        let mut v = with_active_v1(view("players", COUNT, ""), LATEST);
        let mut failed = ViewVersion {
            version: 2,
            state: VersionState::Failed,
            content: content_of(&v),
            ..Default::default()
        };
        failed.content_hash = content_hash(&failed.content);
        let status = v.status.as_mut().unwrap();
        status.versions.push(failed);
        status.latest_version = Some(2);
        let t = plan(&v, std::slice::from_ref(&v));
        assert!(
            t.versions
                .iter()
                .any(|v| v.version == 2 && v.state == VersionState::Failed)
        );
        assert!(!t.plans.contains_key(&2), "a failed version is stopped, not run");
        assert!(t.plans.contains_key(&1));
    }

    #[test]
    fn a_spec_that_cannot_be_projected_is_planned_as_the_versions_error_before_any_call() {
        let v = view("players", "{mode: Latest, key: {partitionKey: \"P#{nope\"}}", "");
        let t = plan(&v, std::slice::from_ref(&v));
        let err = t.plans[&1].projection.as_ref().unwrap_err();
        assert!(err.to_string().contains("partitionKey"), "{err}");
    }

    #[test]
    fn a_version_that_needs_its_projection_is_refused_before_any_call_and_one_that_does_not_is_not() {
        let bad = "{mode: Latest, key: {partitionKey: \"P#{nope\"}}";
        let arn = "arn:aws:lambda:eu-west-1:123456789012:function:mine";
        for (extra, refused) in [
            ("  projector: {runtime: InCluster}\n", true),
            ("  projector: {runtime: Lambda}\n", true),
            (
                &*format!("  projector: {{runtime: Lambda, code: {{functionArn: '{arn}'}}}}\n"),
                true,
            ),
        ] {
            let v = view("players", bad, extra);
            let t = plan(&v, crate::plan::NO_VIEWS);
            assert_eq!(t.plans[&1].refusal().is_some(), refused, "{extra}");
        }
        // A user's function without spec.projection: nothing of ours projects, nothing to refuse.
        let mut v = view(
            "players",
            LATEST,
            &format!("  projector: {{runtime: Lambda, code: {{functionArn: '{arn}'}}}}\n"),
        );
        v.spec.projection = None;
        let t = plan(&v, crate::plan::NO_VIEWS);
        assert!(t.plans[&1].projection.is_err());
        assert!(t.plans[&1].refusal().is_none());
        let ok = view("players", LATEST, "");
        assert!(plan(&ok, crate::plan::NO_VIEWS).plans[&1].refusal().is_none());
    }

    #[test]
    fn a_lambda_version_plans_its_role_function_queue_and_subscriptions_from_the_views_own_plans() {
        let v = view("players", LATEST, "  projector: {runtime: Lambda}\n");
        assert_eq!(v.spec.projector.runtime, ProjectorRuntime::Lambda);
        let t = plan(&v, std::slice::from_ref(&v));
        let p = &t.plans[&1];
        let lambda = p.lambda.as_ref().unwrap();
        let log_plan = plan_log("prod", &log(), std::slice::from_ref(&v));
        assert_eq!(
            lambda.role(&scope()),
            projector_role(&v, &p.storage, &log_plan, &scope())
        );
        assert!(lambda.role(&scope()).is_some());
        assert_eq!(lambda.function_name, projector_name(&p.storage));
        assert_eq!(lambda.failure_queue, p.storage.failure_queue());
        assert_eq!(lambda.subscriptions, projector_subscriptions(&v, &log().spec));
        assert_eq!(lambda.table(), p.storage.table.name);
        assert!(lambda.custom_function.is_none());
    }

    #[test]
    fn a_users_function_needs_no_role_of_ours() {
        let v = view(
            "players",
            LATEST,
            "  projector: {runtime: Lambda, code: {functionArn: 'arn:aws:lambda:eu-west-1:123456789012:function:mine'}}\n",
        );
        let t = plan(&v, std::slice::from_ref(&v));
        let lambda = t.plans[&1].lambda.as_ref().unwrap();
        assert_eq!(
            lambda.custom_function.as_deref(),
            Some("arn:aws:lambda:eu-west-1:123456789012:function:mine")
        );
        assert_eq!(lambda.role(&scope()), None);
    }

    #[test]
    fn the_push_stack_serves_the_tables_lambda_views_with_subscribers_and_not_one_being_deleted() {
        let subscribed = "  projector: {runtime: Lambda}\n  store: {streams: true}\n  subscribers: {}\n";
        let me = view("players", LATEST, subscribed);
        let mut other = view("scores", LATEST, subscribed);
        other.status = Some(crate::crd::MaterializedViewStatus {
            table_name: Some("the-table".into()),
            key_prefix: Some("scores#".into()),
            ..Default::default()
        });
        let mut going = other.clone();
        going.metadata.name = Some("going".into());
        going.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::from_second(1).unwrap(),
        ));
        let t = plan(&me, &[me.clone(), other, going]);
        let push = t.push(1, "the-table", Some("players#"), &scope());
        assert_eq!(
            push.view_routes.views,
            [
                ("players".to_string(), "players#".to_string()),
                ("scores".to_string(), "scores#".to_string())
            ]
        );
        assert_eq!(push.views_table, "the-table");
        assert!(t.push(1, "another-table", None, &scope()).view_routes.views.len() == 1);
    }

    #[test]
    fn the_approval_annotation_is_read_with_or_without_its_v() {
        for (annotation, approved) in [
            (" v3 ", Some(3)),
            ("3", Some(3)),
            ("3x", None),
            ("", None),
            ("vv3", None),
            ("+3", None),
            ("v", None),
        ] {
            let mut v = view("players", LATEST, "");
            v.metadata.annotations = Some(
                [(APPROVE_PROMOTION_ANNOTATION.to_string(), annotation.to_string())]
                    .into_iter()
                    .collect(),
            );
            assert_eq!(
                plan(&v, crate::plan::NO_VIEWS).approved,
                approved,
                "{annotation:?}"
            );
        }
    }

    #[test]
    fn a_deletion_removes_each_recorded_version_with_the_storage_it_was_planned() {
        let mut v = with_active_v1(view("players", COUNT, ""), LATEST);
        let status = v.status.as_mut().unwrap();
        let v2 = ViewVersion {
            version: 2,
            state: VersionState::Building,
            ..status.versions[0].clone()
        };
        status.versions.push(v2);
        let recorded = status.versions.clone();
        let d = plan_deletion("prod", &v, &recorded, &[&v], Some("uid-ns"));
        assert_eq!(
            d.storage,
            plan_view("prod", &v, &[&v]).in_namespace(Some("uid-ns"))
        );
        assert_eq!(d.versions.len(), 2);
        for (version, storage) in &d.versions {
            let before = plan_version("prod", &version_view(&v, version), &[&v], version.version);
            assert_eq!(
                *storage,
                before.in_namespace(Some("uid-ns")),
                "v{}",
                version.version
            );
        }
        // Version 1 is stored where the spec says (its prefix); version 2 under its own, elsewhere.
        assert_eq!(d.versions[0].1.key_prefix.as_deref(), Some("players#"));
        assert!(!d.elsewhere(&d.versions[0].1));
        assert!(d.elsewhere(&d.versions[1].1), "{:?}", d.versions[1].1.key_prefix);
    }
}
