//! The desired views table of a MaterializedView: a dedicated table, or the namespace's shared table of
//! its `sharedTableName` with the view's key prefix (single-table design).
//!
//! A shared table belongs to the namespace (owner kind `ViewsTable`, named by the shared name), not to any
//! one view: it has Streams on when any view sharing it asks for them, and it is deleted only when the last
//! view using it is deleted with `deletionPolicy: Delete`. Its uid tag is the Namespace object's
//! ([`ViewPlan::in_namespace`]).

use std::borrow::Borrow;

use super::ResolvedFanOut;
use super::iam::{
    AwsScope, ProjectorSource, ViewItems, failure_queue_statement, lambda_trust_policy, projector_policy,
    with_statement,
};
use super::log::{LogPlan, QueuePlan, RolePlan, TablePlan};
use super::names::{NameKind, Owner};
use crate::crd::{
    BillingMode, DeletionPolicy, MaterializedView, ProjectorRuntime, StoreTable, StreamViewType,
};

pub const VIEW_KIND: &str = "MaterializedView";
pub const SHARED_TABLE_KIND: &str = "ViewsTable";

/// Where one view's items live.
#[derive(Clone, Debug, PartialEq)]
pub struct ViewPlan {
    pub owner: Owner,
    /// The owner of the table: the view itself, or the namespace's shared table.
    pub table_owner: Owner,
    pub table: TablePlan,
    /// The view's partition-key prefix in a shared table.
    pub key_prefix: Option<String>,
    pub shared: bool,
    pub deletion_policy: DeletionPolicy,
    /// The view version this plan is for (1 unless rebuilt; see `crate::plan::versions`).
    pub version: i64,
}

impl ViewPlan {
    /// The plan with its shared views table owned by the namespace object of uid `namespace_uid`, so a
    /// namespace deleted and created again (perhaps for another team) never claims the tables its
    /// predecessor retained. A dedicated table already carries its view's uid.
    pub fn in_namespace(mut self, namespace_uid: Option<&str>) -> ViewPlan {
        if self.shared {
            self.table_owner = self.table_owner.with_uid(namespace_uid);
            self.table.owner = self.table_owner.clone();
            self.table.tags = self.table_owner.tags();
        }
        self
    }

    /// The role name of the version's projector function and IAM role: `projector`, or `projector-v<n>`.
    pub fn projector_role_name(&self) -> String {
        match self.version {
            ..=1 => "projector".to_string(),
            n => format!("projector-v{n}"),
        }
    }
    /// The failure queue of the version's projector (Lambda runtime): the on-failure destination of its
    /// stream mapping (`Direct`) or of its asynchronous invocations and the dead-letter queue of its SNS
    /// subscriptions (`Sns`). One per version, as each version has its own function:
    /// `<projector role name>-failures`.
    pub fn failure_queue(&self) -> QueuePlan {
        super::log::failure_queue(&self.owner, &format!("{}-failures", self.projector_role_name()))
    }
}

/// The role of the view's built-in projector: it reads its live source (nothing to grant for an SNS
/// subscription; stream reads with `Direct` fan-out) and writes only its view's items, confined to its key
/// prefix in a shared table. `None` for views that need no role of ours (in-cluster, or an existing
/// function the user brings).
pub fn projector_role(
    view: &MaterializedView,
    plan: &ViewPlan,
    log: &LogPlan,
    scope: &AwsScope,
) -> Option<RolePlan> {
    if view.spec.projector.runtime == ProjectorRuntime::InCluster
        || view
            .spec
            .projector
            .code
            .as_ref()
            .is_some_and(|c| c.function_arn.is_some())
    {
        return None;
    }
    let function = plan
        .owner
        .resource_name(&plan.projector_role_name(), NameKind::Function);
    let source = match log.fan_out {
        ResolvedFanOut::Sns => ProjectorSource::Topic { log_table: &log.table.name },
        ResolvedFanOut::Direct => ProjectorSource::LogStream { log_table: &log.table.name },
    };
    let items = ViewItems {
        table: &plan.table.name,
        key_prefix: plan.key_prefix.as_deref(),
    };
    Some(RolePlan {
        role: "projector",
        name: plan
            .owner
            .resource_name(&plan.projector_role_name(), NameKind::Role),
        policy: with_statement(
            projector_policy(scope, &function, &source, &items),
            failure_queue_statement(scope, &plan.failure_queue().name),
        ),
        function,
        trust: lambda_trust_policy(),
        tags: plan.owner.tags(),
    })
}

/// The key prefix of a view in a shared table: `spec.store.keyPrefix`, or `<view name>#`.
pub fn key_prefix(view: &MaterializedView) -> String {
    view.spec
        .store
        .key_prefix
        .clone()
        .unwrap_or_else(|| format!("{}#", view.metadata.name.as_deref().unwrap_or_default()))
}

/// Plans `view`'s table; `siblings` are the namespace's views (any of them sharing the table may ask for
/// Streams).
pub fn plan_view(
    cluster: &str,
    view: &MaterializedView,
    siblings: &[impl Borrow<MaterializedView>],
) -> ViewPlan {
    let namespace = view.metadata.namespace.as_deref().unwrap_or("default");
    let name = view.metadata.name.as_deref().unwrap_or_default();
    let owner = Owner::new(cluster, namespace, VIEW_KIND, name).with_uid(view.metadata.uid.as_deref());
    let store = &view.spec.store;
    let shared = store.table == StoreTable::Shared;
    let (table_owner, streams) = if shared {
        let shares = |v: &&MaterializedView| {
            v.spec.store.table == StoreTable::Shared
                && v.spec.store.shared_table_name == store.shared_table_name
        };
        let streams = store.streams
            || siblings
                .iter()
                .map(Borrow::borrow)
                .filter(shares)
                .any(|v| v.spec.store.streams);
        (
            Owner::new(cluster, namespace, SHARED_TABLE_KIND, &store.shared_table_name),
            streams,
        )
    } else {
        (owner.clone(), store.streams)
    };
    let role = if shared { "views" } else { "view" };
    let table = TablePlan {
        name: table_owner.resource_name(role, NameKind::Table),
        owner: table_owner.clone(),
        partition_key: "pk".into(),
        sort_key: Some("sk".into()),
        billing: BillingMode::OnDemand,
        capacity: None,
        stream: streams.then_some(StreamViewType::NewAndOldImages),
        point_in_time_recovery: false,
        converge_settings: false,
        deletion_protection: false,
        adopted: false,
        adoption: Err(crate::settings::AdoptionRefused::NotConfigured),
        time_to_live_attribute: None,
        take_over_predecessor: !shared && store.adopt,
        tags: table_owner.tags(),
    };
    ViewPlan {
        owner,
        table_owner,
        table,
        key_prefix: shared.then(|| key_prefix(view)),
        shared,
        deletion_policy: view.spec.deletion_policy,
        version: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::view;

    #[test]
    fn views_of_one_shared_name_share_one_table_with_their_own_prefixes() {
        let a = view("players", "{}");
        let b = view("scores", "{keyPrefix: \"S#\"}");
        let (pa, pb) = (
            plan_view("prod", &a, crate::plan::NO_VIEWS),
            plan_view("prod", &b, crate::plan::NO_VIEWS),
        );
        assert_eq!(pa.table.name, pb.table.name);
        assert!(
            pa.table.name.starts_with("kappa-prod-games-views-views-"),
            "{}",
            pa.table.name
        );
        assert_eq!(pa.key_prefix.as_deref(), Some("players#"));
        assert_eq!(pb.key_prefix.as_deref(), Some("S#"));
        assert_eq!(pa.table.tags["kappa.dev/kind"], "ViewsTable");
        assert_eq!(
            (pa.table.partition_key.as_str(), pa.table.sort_key.as_deref()),
            ("pk", Some("sk"))
        );
    }

    #[test]
    fn a_shared_table_streams_when_any_sharer_asks() {
        let quiet = view("players", "{}");
        let loud = view("games", "{streams: true}");
        assert_eq!(
            plan_view("prod", &quiet, crate::plan::NO_VIEWS).table.stream,
            None
        );
        let p = plan_view("prod", &quiet, &[quiet.clone(), loud.clone()]);
        assert_eq!(p.table.stream, Some(StreamViewType::NewAndOldImages));
        let other = view("feed", "{sharedTableName: quiet}");
        assert_eq!(
            plan_view("prod", &other, &[loud]).table.stream,
            None,
            "another shared name is another table"
        );
    }

    fn log_plan(fan_out: &str) -> LogPlan {
        let log: crate::crd::EventLog = serde_yaml::from_str(&format!(
            "apiVersion: kappa.dev/v1alpha1\nkind: EventLog\nmetadata: {{name: log, namespace: games}}\n\
             spec: {{recordTypes: [player], table: {{}}, fanOut: {{mode: {fan_out}}}}}\n"
        ))
        .unwrap();
        super::super::log::plan_log("prod", &log, crate::plan::NO_VIEWS)
    }

    #[test]
    fn a_projector_is_confined_to_its_prefix_and_reads_the_stream_only_with_direct_fan_out() {
        let scope = AwsScope {
            partition: "aws".into(),
            region: "eu-west-1".into(),
            account: "123456789012".into(),
        };
        let v = view("players", "{}");
        let p = plan_view("prod", &v, crate::plan::NO_VIEWS);
        let role = projector_role(&v, &p, &log_plan("Sns"), &scope).unwrap();
        let write = &role.policy["Statement"][0];
        assert_eq!(
            write["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"],
            serde_json::json!(["players#*"])
        );
        assert!(
            !role.policy.to_string().contains("GetRecords"),
            "an SNS-fed projector reads no stream"
        );
        let direct = projector_role(&v, &p, &log_plan("Direct"), &scope).unwrap();
        assert!(direct.policy.to_string().contains("GetRecords"));
        let dedicated = view("games", "{table: Dedicated}");
        let dp = plan_view("prod", &dedicated, crate::plan::NO_VIEWS);
        let role = projector_role(&dedicated, &dp, &log_plan("Sns"), &scope).unwrap();
        assert!(
            role.policy["Statement"][0].get("Condition").is_none(),
            "its own table: no prefix condition"
        );
    }

    #[test]
    fn a_shared_table_belongs_to_its_namespace_object_and_a_dedicated_one_to_its_view() {
        let mut v = view("players", "{}");
        v.metadata.uid = Some("view-uid".into());
        let shared = plan_view("prod", &v, crate::plan::NO_VIEWS).in_namespace(Some("ns-uid"));
        assert_eq!(shared.table.tags["kappa.dev/uid"], "ns-uid");
        assert_eq!(shared.table.owner, shared.table_owner);
        assert_eq!(shared.owner.uid.as_deref(), Some("view-uid"));
        let recreated = plan_view("prod", &v, crate::plan::NO_VIEWS).in_namespace(Some("ns-uid-2"));
        assert!(
            !recreated.table_owner.owns(&shared.table.tags),
            "a namespace created again does not own its predecessor's table"
        );
        let mut d = view("games", "{table: Dedicated}");
        d.metadata.uid = Some("games-uid".into());
        let dedicated = plan_view("prod", &d, crate::plan::NO_VIEWS).in_namespace(Some("ns-uid"));
        assert_eq!(dedicated.table.tags["kappa.dev/uid"], "games-uid");
    }

    #[test]
    fn each_projector_version_has_its_own_failure_queue_and_may_send_only_to_it() {
        let scope = AwsScope {
            partition: "aws".into(),
            region: "eu-west-1".into(),
            account: "123456789012".into(),
        };
        let v = view("players", "{}");
        let v1 = plan_view("prod", &v, crate::plan::NO_VIEWS);
        let v2 = super::super::versions::plan_version("prod", &v, crate::plan::NO_VIEWS, 2);
        let (q1, q2) = (v1.failure_queue(), v2.failure_queue());
        assert!(q1.name.contains("-projector-failures-"), "{}", q1.name);
        assert!(q2.name.contains("-projector-v2-failures-"), "{}", q2.name);
        assert!(!q1.fifo && q1.name.len() <= 80);
        assert_eq!(q1.attributes["MessageRetentionPeriod"], "1209600");
        assert_eq!(q2.tags, v2.owner.tags());
        for (plan, queue) in [(&v1, &q1), (&v2, &q2)] {
            let role = projector_role(&v, plan, &log_plan("Direct"), &scope).unwrap();
            let sends: Vec<&serde_json::Value> = role.policy["Statement"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s.to_string().contains("sqs:"))
                .collect();
            assert_eq!(sends.len(), 1, "{}", role.policy);
            assert_eq!(sends[0]["Action"], serde_json::json!(["sqs:SendMessage"]));
            assert_eq!(
                sends[0]["Resource"],
                serde_json::json!([scope.queue_arn(&queue.name)])
            );
        }
    }

    #[test]
    fn a_dedicated_table_belongs_to_its_view() {
        let p = plan_view(
            "prod",
            &view("games", "{table: Dedicated, streams: true}"),
            crate::plan::NO_VIEWS,
        );
        assert!(!p.shared && p.key_prefix.is_none());
        assert!(
            p.table.name.starts_with("kappa-prod-games-games-view-"),
            "{}",
            p.table.name
        );
        assert_eq!(p.table_owner, p.owner);
        assert_eq!(p.table.stream, Some(StreamViewType::NewAndOldImages));
    }
}
