//! The desired AWS resources of one EventLog: the log table, the ingest queue and the fan-out topics.
//!
//! Pure: the same spec and views give the same plan, names included. The writer and router Lambdas, the
//! projectors and their IAM roles are planned by later steps.

use std::borrow::Borrow;
use std::collections::BTreeMap;

use super::iam::{
    AwsScope, failure_queue_statement, lambda_trust_policy, router_policy, with_statement, writer_policy,
};
use super::names::{NameKind, Owner};
use super::routing::topic_groups;
use super::{ResolvedFanOut, StreamReaders, resolve_fan_out};
use crate::crd::{BillingMode, DeletionPolicy, EventLog, MaterializedView, QueueType, StreamViewType};
use crate::settings::AdoptionRefused;

pub const KIND: &str = "EventLog";

/// Everything an EventLog needs on AWS.
#[derive(Clone, Debug, PartialEq)]
pub struct LogPlan {
    pub owner: Owner,
    pub table: TablePlan,
    pub queue: Option<QueuePlan>,
    /// The ingest queue's dead-letter queue (with the ingest queue).
    pub dead_letter_queue: Option<QueuePlan>,
    /// The router's failure queue (with `Sns` fan-out): the on-failure destination of its stream mapping.
    pub router_failure_queue: Option<QueuePlan>,
    pub fan_out: ResolvedFanOut,
    /// With `Sns` fan-out: one topic per record-type group.
    pub topics: Vec<TopicPlan>,
    pub deletion_policy: DeletionPolicy,
}

/// A DynamoDB table as it should be.
#[derive(Clone, Debug, PartialEq)]
pub struct TablePlan {
    pub name: String,
    /// Who the table belongs to: the only owner whose tags let the operator change or delete it.
    pub owner: Owner,
    pub partition_key: String,
    pub sort_key: Option<String>,
    pub billing: BillingMode,
    /// (read, write) capacity units with `Provisioned` billing.
    pub capacity: Option<(i64, i64)>,
    /// Streams with this view type, or no stream.
    pub stream: Option<StreamViewType>,
    pub point_in_time_recovery: bool,
    /// Whether billing, capacity and point-in-time recovery are converged on an existing table, both
    /// ways (an EventLog's own table: its spec declares them). Off for an adopted table (the user's:
    /// left as it is, the differences reported, see [`crate::aws::dynamodb::settings_not_applied`]) and
    /// for views and connections tables, whose specs declare none: there they only shape a new table.
    pub converge_settings: bool,
    /// On while the owner's deletion policy is `Retain`, so nobody deletes the log by accident.
    pub deletion_protection: bool,
    /// An existing table the operator uses but never created or deletes (`spec.table.adoptExisting`); it
    /// only gets the `kappa.dev/adopted-by` tag.
    pub adopted: bool,
    /// Whether the operator's configuration lets this owner adopt a table of this name: `Err` holds the
    /// refusal, naming the setting (see [`crate::settings::AdoptionRules`]). Filled in by the controller;
    /// a plan alone allows no adoption.
    pub adoption: Result<(), AdoptionRefused>,
    /// The attribute whose epoch-seconds value expires an item (DynamoDB TTL), or `None` to leave TTL
    /// as it is.
    pub time_to_live_attribute: Option<String>,
    /// A table tagged for an earlier object of the owner's name (deleted with its table retained) is
    /// taken over: re-tagged for this owner, and its items deleted before anything is written (see
    /// `crate::aws::view_storage`). Only a dedicated views table whose view sets `spec.store.adopt`;
    /// otherwise such a table is refused with `RetainedStorage`.
    pub take_over_predecessor: bool,
    pub tags: BTreeMap<String, String>,
}

/// An SQS queue as it should be.
#[derive(Clone, Debug, PartialEq)]
pub struct QueuePlan {
    pub name: String,
    pub fifo: bool,
    /// Attributes set at creation and converged after (by their SQS names, e.g. `VisibilityTimeout`).
    pub attributes: BTreeMap<String, String>,
    /// Where messages received too often go (the queue's `RedrivePolicy`).
    pub redrive: Option<Redrive>,
    pub tags: BTreeMap<String, String>,
}

/// A queue's redrive policy: after `max_receive_count` receives a message moves to the queue named
/// `dead_letter_queue` (its ARN is known once it exists).
#[derive(Clone, Debug, PartialEq)]
pub struct Redrive {
    pub dead_letter_queue: String,
    pub max_receive_count: i32,
}

/// The built-in writer's timeout, seconds.
pub const WRITER_TIMEOUT_SECONDS: i32 = 30;

/// The longest SQS keeps a message: 14 days, for the dead-letter queue (SQS `MessageRetentionPeriod`).
pub const DEAD_LETTER_RETENTION_SECONDS: i32 = 14 * 24 * 3600;

/// The ingest queue's visibility timeout: at least six times the writer's timeout plus the mapping's
/// batching window, as AWS advises for a queue drained by Lambda (Lambda developer guide, "Using Lambda
/// with Amazon SQS": "set the source queue's visibility timeout to at least six times the timeout that
/// you configure on your function", plus `MaximumBatchingWindowInSeconds`), so a message is not received
/// again while an invocation that throttled or retried may still hold it.
pub fn ingest_visibility_timeout(batching_window_seconds: i32) -> i32 {
    6 * WRITER_TIMEOUT_SECONDS + batching_window_seconds
}

/// The role name of the router's failure queue among the log's resources.
pub const ROUTER_FAILURES: &str = "router-failures";

/// A failure queue: the on-failure destination of a function's stream mapping or asynchronous
/// invocations (a standard queue: Lambda takes no FIFO destination,
/// <https://docs.aws.amazon.com/lambda/latest/dg/services-ddb-params.html>), keeping what it receives
/// for SQS's longest retention (14 days), tagged for `owner`. `role` names it among the owner's
/// resources (`router-failures`, `projector-failures`, `projector-v2-failures`).
pub fn failure_queue(owner: &Owner, role: &str) -> QueuePlan {
    QueuePlan {
        name: owner.resource_name(role, NameKind::Queue { fifo: false }),
        fifo: false,
        attributes: BTreeMap::from([(
            "MessageRetentionPeriod".to_string(),
            DEAD_LETTER_RETENTION_SECONDS.to_string(),
        )]),
        redrive: None,
        tags: owner.tags(),
    }
}

/// An SNS topic as it should be.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicPlan {
    pub group: String,
    pub name: String,
    pub record_types: Vec<String>,
    pub tags: BTreeMap<String, String>,
}

/// The IAM role of one built-in function, with its documents.
#[derive(Clone, Debug, PartialEq)]
pub struct RolePlan {
    /// `writer` or `router`.
    pub role: &'static str,
    pub name: String,
    /// The function that assumes the role.
    pub function: String,
    pub trust: serde_json::Value,
    pub policy: serde_json::Value,
    pub tags: BTreeMap<String, String>,
}

/// The roles of the log's built-in functions: the writer's when the log has an ingest queue, the
/// router's with `Sns` fan-out. ARNs need the account, known once the table exists (`scope`).
pub fn roles(plan: &LogPlan, scope: &AwsScope) -> Vec<RolePlan> {
    let role = |role: &'static str, policy: &dyn Fn(&str) -> serde_json::Value| {
        let function = plan.owner.resource_name(role, NameKind::Function);
        RolePlan {
            role,
            name: plan.owner.resource_name(role, NameKind::Role),
            policy: policy(&function),
            function,
            trust: lambda_trust_policy(),
            tags: plan.owner.tags(),
        }
    };
    let mut roles = Vec::new();
    if let Some(q) = &plan.queue {
        roles.push(role("writer", &|function| {
            writer_policy(scope, function, &q.name, &plan.table.name)
        }));
    }
    if plan.fan_out == ResolvedFanOut::Sns {
        let topics: Vec<String> = plan.topics.iter().map(|t| t.name.clone()).collect();
        roles.push(role("router", &|function| {
            let policy = router_policy(scope, function, &plan.table.name, &topics);
            match &plan.router_failure_queue {
                Some(q) => with_statement(policy, failure_queue_statement(scope, &q.name)),
                None => policy,
            }
        }));
    }
    roles
}

/// The partition, region and account of an ARN such as a table's.
pub fn scope_of_arn(arn: &str) -> Option<AwsScope> {
    let mut parts = arn.split(':');
    let (_, partition, _, region, account) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    Some(AwsScope {
        partition: partition.into(),
        region: region.into(),
        account: account.into(),
    })
}

/// Where every export of an EventLog lives in its bucket: `kappa-exports/<cluster>/<namespace>/<name>/<uid>`,
/// derived from the log's owner alone. `spec.export.prefix` only adds below it, and the operator deletes
/// export files only below it, so logs sharing a bucket (in any namespace, or an earlier log of the same
/// name) never reach each other's exports. The operator's IAM policy scopes S3 to `kappa-exports/*`.
pub fn export_root(cluster: &str, log: &EventLog) -> String {
    let namespace = log.metadata.namespace.as_deref().unwrap_or("default");
    let name = log.metadata.name.as_deref().unwrap_or_default();
    let uid = log
        .metadata
        .uid
        .as_deref()
        .filter(|u| !u.is_empty())
        .unwrap_or("-");
    format!("kappa-exports/{cluster}/{namespace}/{name}/{uid}")
}

/// Refuses a `spec.table.name` in the operator's own name space (`kappa-...`) other than the name it
/// derives for this log: such names belong to other objects (a squatter could otherwise take another
/// namespace's future log table name). The error names the field, the value and the fix.
pub fn check_table_name(plan: &LogPlan, explicit: Option<&str>) -> Result<(), super::PlanError> {
    let Some(name) = explicit else { return Ok(()) };
    let own = plan.owner.resource_name("log", NameKind::Table);
    if name.starts_with(&format!("{}-", super::names::NAME_PREFIX)) && name != own {
        return Err(super::PlanError::ReservedTableName { name: name.to_string(), own });
    }
    Ok(())
}

/// Plans an EventLog's resources from its spec, the views that read it, and the cluster id.
pub fn plan_log(cluster: &str, log: &EventLog, views: &[impl Borrow<MaterializedView>]) -> LogPlan {
    let namespace = log.metadata.namespace.as_deref().unwrap_or("default");
    let name = log.metadata.name.as_deref().unwrap_or_default();
    let owner = Owner::new(cluster, namespace, KIND, name).with_uid(log.metadata.uid.as_deref());
    let tags = owner.tags();
    let spec = &log.spec;
    let table = TablePlan {
        name: spec
            .table
            .name
            .clone()
            .unwrap_or_else(|| owner.resource_name("log", NameKind::Table)),
        owner: owner.clone(),
        partition_key: spec.table.partition_key.clone(),
        sort_key: spec.table.sort_key.clone(),
        billing: spec.table.billing.mode,
        capacity: spec
            .table
            .billing
            .read_capacity_units
            .zip(spec.table.billing.write_capacity_units),
        stream: Some(spec.table.stream_view_type),
        point_in_time_recovery: spec.table.point_in_time_recovery,
        converge_settings: !spec.table.adopt_existing,
        deletion_protection: spec.deletion_policy == DeletionPolicy::Retain && !spec.table.adopt_existing,
        adopted: spec.table.adopt_existing,
        adoption: Err(AdoptionRefused::NotConfigured),
        time_to_live_attribute: None,
        take_over_predecessor: false,
        tags: tags.clone(),
    };
    let dead_letter_queue = spec.ingest.as_ref().map(|ingest| {
        // A FIFO queue's dead-letter queue must be FIFO too.
        let fifo = ingest.queue_type == QueueType::Fifo;
        QueuePlan {
            name: owner.resource_name("ingest-dlq", NameKind::Queue { fifo }),
            fifo,
            attributes: BTreeMap::from([(
                "MessageRetentionPeriod".to_string(),
                DEAD_LETTER_RETENTION_SECONDS.to_string(),
            )]),
            redrive: None,
            tags: tags.clone(),
        }
    });
    let queue = spec
        .ingest
        .as_ref()
        .zip(dead_letter_queue.as_ref())
        .map(|(ingest, dlq)| {
            let fifo = ingest.queue_type == QueueType::Fifo;
            QueuePlan {
                name: owner.resource_name("ingest", NameKind::Queue { fifo }),
                fifo,
                attributes: BTreeMap::from([(
                    "VisibilityTimeout".to_string(),
                    ingest_visibility_timeout(ingest.maximum_batching_window_seconds).to_string(),
                )]),
                redrive: Some(Redrive {
                    dead_letter_queue: dlq.name.clone(),
                    max_receive_count: ingest.max_receive_count,
                }),
                tags: tags.clone(),
            }
        });
    let fan_out = resolve_fan_out(
        spec.fan_out.mode,
        StreamReaders::of(views.iter().map(Borrow::borrow)),
    );
    let topics = match fan_out {
        ResolvedFanOut::Direct => Vec::new(),
        ResolvedFanOut::Sns => topic_groups(spec)
            .into_iter()
            .map(|g| TopicPlan {
                name: owner.resource_name(&format!("topic-{}", g.group), NameKind::Topic),
                record_types: g.record_types.into_iter().collect(),
                group: g.group,
                tags: tags.clone(),
            })
            .collect(),
    };
    let router_failure_queue =
        (fan_out == ResolvedFanOut::Sns).then(|| failure_queue(&owner, ROUTER_FAILURES));
    LogPlan {
        owner,
        table,
        queue,
        dead_letter_queue,
        router_failure_queue,
        fan_out,
        topics,
        deletion_policy: spec.deletion_policy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(spec: &str) -> EventLog {
        serde_yaml::from_str(&format!(
            "apiVersion: kappa.dev/v1alpha1\nkind: EventLog\nmetadata: {{name: game-events, namespace: games}}\nspec:\n{spec}"
        ))
        .unwrap()
    }

    const SPEC: &str = "  recordTypes: [player, game]\n  table: {sortKey: sk}\n  ingest: {queueType: Fifo}\n  fanOut: {mode: Sns}\n";

    #[test]
    fn a_log_gets_a_table_a_queue_and_a_topic_per_group() {
        let p = plan_log("prod", &log(SPEC), crate::plan::NO_VIEWS);
        assert!(
            p.table.name.starts_with("kappa-prod-games-game-events-log-"),
            "{}",
            p.table.name
        );
        assert_eq!(p.table.partition_key, "pk");
        assert_eq!(p.table.sort_key.as_deref(), Some("sk"));
        assert_eq!(p.table.stream, Some(StreamViewType::NewAndOldImages));
        assert!(p.table.point_in_time_recovery && p.table.deletion_protection && !p.table.adopted);
        let q = p.queue.unwrap();
        assert!(q.fifo && q.name.ends_with(".fifo"));
        assert_eq!(p.fan_out, ResolvedFanOut::Sns);
        let groups: Vec<_> = p.topics.iter().map(|t| t.group.as_str()).collect();
        assert_eq!(groups, ["t-player", "t-game"]);
        assert!(p.topics.iter().all(|t| t.tags == p.owner.tags()));
        assert_eq!(p.table.tags["kappa.dev/kind"], "EventLog");
    }

    #[test]
    fn direct_fan_out_has_no_topics_and_delete_policy_no_protection() {
        let p = plan_log(
            "prod",
            &log("  recordTypes: [player]\n  table: {}\n  deletionPolicy: Delete\n"),
            crate::plan::NO_VIEWS,
        );
        assert_eq!(p.fan_out, ResolvedFanOut::Direct);
        assert!(p.topics.is_empty() && p.queue.is_none());
        assert!(!p.table.deletion_protection);
    }

    #[test]
    fn an_adopted_table_keeps_its_name_and_is_never_protected_by_us() {
        let p = plan_log(
            "prod",
            &log("  recordTypes: [a]\n  table: {name: legacy-log, adoptExisting: true}\n"),
            crate::plan::NO_VIEWS,
        );
        assert_eq!(p.table.name, "legacy-log");
        assert!(p.table.adopted && !p.table.deletion_protection);
    }

    #[test]
    fn the_writer_and_router_roles_carry_the_planned_documents() {
        let p = plan_log("prod", &log(SPEC), crate::plan::NO_VIEWS);
        let scope = scope_of_arn("arn:aws:dynamodb:eu-west-1:123456789012:table/x").unwrap();
        assert_eq!(scope.account, "123456789012");
        let roles = roles(&p, &scope);
        assert_eq!(
            roles.iter().map(|r| r.role).collect::<Vec<_>>(),
            ["writer", "router"]
        );
        let writer = &roles[0];
        assert!(writer.name.len() <= 64 && writer.name.starts_with("kappa-prod-games-game-events-writer-"));
        let append = &writer.policy["Statement"][1];
        assert_eq!(
            append["Resource"][0],
            format!("arn:aws:dynamodb:eu-west-1:123456789012:table/{}", p.table.name)
        );
        let publish = &roles[1].policy["Statement"][1];
        assert_eq!(publish["Resource"].as_array().unwrap().len(), 2);
        let direct = plan_log(
            "prod",
            &log("  recordTypes: [a]\n  table: {}\n"),
            crate::plan::NO_VIEWS,
        );
        assert!(
            super::roles(&direct, &scope).is_empty(),
            "no ingest, Direct fan-out: no roles"
        );
    }

    #[test]
    fn a_table_name_of_the_operators_own_name_space_is_refused_unless_it_is_the_logs_own() {
        let p = plan_log("prod", &log(SPEC), crate::plan::NO_VIEWS);
        assert!(check_table_name(&p, None).is_ok());
        assert!(check_table_name(&p, Some("payroll-log")).is_ok());
        assert!(check_table_name(&p, Some(&p.table.name.clone())).is_ok());
        let other = resource_name_of("tenant-a", "payroll");
        let e = check_table_name(&p, Some(&other)).unwrap_err().to_string();
        assert!(e.contains("spec.table.name") && e.contains(&other), "{e}");
    }

    #[test]
    fn each_log_exports_under_a_root_of_its_own_owner() {
        let mut a = log(SPEC);
        a.metadata.uid = Some("uid-1".into());
        assert_eq!(
            export_root("prod", &a),
            "kappa-exports/prod/games/game-events/uid-1"
        );
        let mut b = a.clone();
        b.metadata.namespace = Some("games-b".into());
        b.metadata.uid = Some("uid-2".into());
        let (ra, rb) = (export_root("prod", &a) + "/", export_root("prod", &b) + "/");
        assert!(!ra.starts_with(&rb) && !rb.starts_with(&ra), "{ra} and {rb} nest");
    }

    fn resource_name_of(ns: &str, name: &str) -> String {
        super::super::names::resource_name("prod", ns, name, "log", NameKind::Table)
    }

    #[test]
    fn the_plan_is_deterministic() {
        assert_eq!(
            plan_log("prod", &log(SPEC), crate::plan::NO_VIEWS),
            plan_log("prod", &log(SPEC), crate::plan::NO_VIEWS)
        );
    }
}
