//! The built-in Lambda functions of a log (writer, router) and of a view (projector), and how they are
//! wired: event source mappings and SNS subscriptions. Pure: ARNs that only exist once a resource exists
//! (roles, queue, stream, topics) come in as arguments.
//!
//! Every built-in function runs the same code (the operator's binary as `bootstrap`, from the operator's
//! settings); its handler names the part to run (`writer`, `router`, `projector`) and its environment
//! configures it (see `crate::functions`).

use std::collections::{BTreeMap, BTreeSet};

use super::ResolvedFanOut;
use super::function::{
    ASYNC_MAXIMUM_EVENT_AGE_SECONDS, ASYNC_MAXIMUM_RETRY_ATTEMPTS, Architecture, AsyncFailurePlan,
    FunctionCode, FunctionPlan, MappingPlan, PROVIDED_RUNTIME, StartingPosition, StreamFailurePlan,
};
use super::log::LogPlan;
use super::names::NameKind;
use super::routing::{sns_filter_policy, stream_filter_pattern, topic_groups, view_subscriptions};
use super::view::ViewPlan;
use crate::crd::{EventLogSpec, MaterializedView, ProjectorRuntime, QueueType};
use crate::functions::projector::ProjectorConfig;
use crate::functions::router::{DEFAULT_MAX_MESSAGE_BYTES, RouterConfig};
use crate::functions::writer::WriterConfig;

/// The handler of the built-in writer.
pub const WRITER: &str = "writer";
/// The handler of the built-in router.
pub const ROUTER: &str = "router";
/// The handler of the built-in projector.
pub const PROJECTOR: &str = "projector";

/// The code of the built-in functions, from the operator's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltInCode {
    pub code: FunctionCode,
    pub architecture: Architecture,
}

pub(super) fn built_in(
    name: String,
    handler: &str,
    role_arn: &str,
    code: &BuiltInCode,
    tags: BTreeMap<String, String>,
) -> FunctionPlan {
    FunctionPlan {
        name,
        role_arn: role_arn.to_string(),
        runtime: PROVIDED_RUNTIME.to_string(),
        handler: handler.to_string(),
        architecture: code.architecture,
        memory_mb: 256,
        timeout_seconds: 30,
        environment: BTreeMap::new(),
        code: code.code.clone(),
        tags,
    }
}

/// The writer: drains the ingest queue into the log.
pub fn writer_function(
    plan: &LogPlan,
    spec: &EventLogSpec,
    role_arn: &str,
    code: &BuiltInCode,
) -> FunctionPlan {
    let mut f = built_in(
        plan.owner.resource_name(WRITER, NameKind::Function),
        WRITER,
        role_arn,
        code,
        plan.owner.tags(),
    );
    // The ingest queue's visibility timeout is derived from it (plan::log::ingest_visibility_timeout).
    f.timeout_seconds = super::log::WRITER_TIMEOUT_SECONDS;
    f.environment = WriterConfig {
        log_table: plan.table.name.clone(),
        partition_key: spec.table.partition_key.clone(),
        sort_key: spec.table.sort_key.clone(),
        record_type_attribute: spec.table.record_type_attribute.clone(),
        record_types: spec.record_types.iter().map(|r| r.as_str()).collect(),
    }
    .to_env();
    f
}

/// The writer's mapping on the ingest queue, with partial-batch failure reports.
pub fn writer_mapping(plan: &LogPlan, spec: &EventLogSpec, queue_arn: &str) -> Option<MappingPlan> {
    let ingest = spec.ingest.as_ref()?;
    Some(MappingPlan {
        function_name: plan.owner.resource_name(WRITER, NameKind::Function),
        event_source_arn: queue_arn.to_string(),
        batch_size: ingest.batch_size,
        // FIFO queues do not take a batching window.
        maximum_batching_window_seconds: match ingest.queue_type {
            QueueType::Fifo => 0,
            QueueType::Standard => ingest.maximum_batching_window_seconds,
        },
        starting_position: None,
        filter_patterns: Vec::new(),
        report_batch_item_failures: true,
        bisect_batch_on_function_error: false,
        // The ingest queue's own redrive policy sends failures to its dead-letter queue.
        on_failure: None,
    })
}

/// Whether the log needs its router: `Sns` fan-out and at least one view projected by a Lambda (the
/// in-cluster runtime reads the stream itself, so topics nobody subscribes to need no router).
pub fn router_needed(fan_out: ResolvedFanOut, views: &[impl std::borrow::Borrow<MaterializedView>]) -> bool {
    fan_out == ResolvedFanOut::Sns
        && views
            .iter()
            .map(std::borrow::Borrow::borrow)
            .any(|v| v.spec.projector.runtime == ProjectorRuntime::Lambda)
}

/// The router: publishes each new log record to its group's topic. `topic_arns`: topic ARN per group.
pub fn router_function(
    plan: &LogPlan,
    spec: &EventLogSpec,
    role_arn: &str,
    topic_arns: &BTreeMap<String, String>,
    code: &BuiltInCode,
) -> FunctionPlan {
    let mut f = built_in(
        plan.owner.resource_name(ROUTER, NameKind::Function),
        ROUTER,
        role_arn,
        code,
        plan.owner.tags(),
    );
    let mut topics = BTreeMap::new();
    for t in &plan.topics {
        if let Some(arn) = topic_arns.get(&t.group) {
            for record_type in &t.record_types {
                topics.insert(record_type.clone(), arn.clone());
            }
        }
    }
    f.environment = RouterConfig {
        record_type_attribute: spec.table.record_type_attribute.clone(),
        topics,
        max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
    }
    .to_env();
    f
}

/// The router's mapping on the log's stream: bisect on error, bounded retries and record age, and the
/// log's router failure queue (`failure_queue_arn`) as on-failure destination (see
/// [`StreamFailurePlan`]).
pub fn router_mapping(plan: &LogPlan, stream_arn: &str, failure_queue_arn: &str) -> MappingPlan {
    MappingPlan {
        function_name: plan.owner.resource_name(ROUTER, NameKind::Function),
        event_source_arn: stream_arn.to_string(),
        batch_size: 100,
        maximum_batching_window_seconds: 0,
        starting_position: Some(StartingPosition::TrimHorizon),
        filter_patterns: Vec::new(),
        report_batch_item_failures: true,
        bisect_batch_on_function_error: true,
        on_failure: Some(StreamFailurePlan::to_queue(failure_queue_arn)),
    }
}

/// The name of a view's built-in projector function.
pub fn projector_name(view: &ViewPlan) -> String {
    match view.version {
        ..=1 => view.owner.resource_name(PROJECTOR, NameKind::Function),
        _ => view
            .owner
            .resource_name(&view.projector_role_name(), NameKind::Function),
    }
}

/// The view's projector function: the built-in one configured with its projection and `log_table` (the
/// log table's name, where it reads records sent by reference), or the user's code (S3 zip or image).
/// `None` for the in-cluster runtime and for an existing function (`functionArn`).
pub fn projector_function(
    view: &MaterializedView,
    plan: &ViewPlan,
    log: &EventLogSpec,
    log_table: &str,
    role_arn: &str,
    code: &BuiltInCode,
) -> Result<Option<FunctionPlan>, super::PlanError> {
    let spec = &view.spec;
    if spec.projector.runtime == ProjectorRuntime::InCluster {
        return Ok(None);
    }
    let name = view.metadata.name.as_deref().unwrap_or_default();
    let mut f = built_in(projector_name(plan), PROJECTOR, role_arn, code, plan.owner.tags());
    f.memory_mb = spec.projector.memory_mb;
    f.timeout_seconds = spec.projector.timeout_seconds;
    match spec.projector.code.as_ref() {
        Some(custom) if custom.function_arn.is_some() => return Ok(None),
        Some(custom) => {
            if let Some(s3) = &custom.s3 {
                f.code = FunctionCode::S3 { bucket: s3.bucket.clone(), key: s3.key.clone() };
                f.runtime = s3.lambda_runtime.clone();
                f.handler = s3.handler.clone();
            } else if let Some(uri) = &custom.image_uri {
                f.code = FunctionCode::Image { uri: uri.clone() };
            }
        }
        None => {
            let table = plan.table.name.clone();
            let prefix = plan.key_prefix.clone().unwrap_or_default();
            let config = ProjectorConfig::for_view(name, spec, log, &table, &prefix)?;
            let config = config.with_log_table(log_table);
            f.environment = config.to_env()?;
            if let Some(max_lag) = crate::crd::parse_duration(&spec.promotion.max_lag) {
                f.environment.insert(
                    crate::functions::projector::ENV_MAX_LAG_MS.to_string(),
                    max_lag.as_millis().to_string(),
                );
            }
        }
    }
    // The operator's own variables (the built-in projector's configuration: which table, which prefix)
    // are never the user's to set: one naming another namespace's table would send the writes there.
    if let Some(reserved) = spec
        .projector
        .environment
        .keys()
        .find(|k| f.environment.contains_key(*k))
    {
        return Err(super::PlanError::ReservedVariable { name: reserved.clone() });
    }
    f.environment.extend(spec.projector.environment.clone());
    Ok(Some(f))
}

/// The topics (by group) a Lambda-projected view subscribes to with `Sns` fan-out, and the SNS filter
/// policy of each subscription.
pub fn projector_subscriptions(
    view: &MaterializedView,
    log: &EventLogSpec,
) -> BTreeMap<String, serde_json::Value> {
    let groups = topic_groups(log);
    view_subscriptions(&groups, &view.spec.record_types)
        .into_iter()
        .map(|(group, types): (String, BTreeSet<String>)| (group, sns_filter_policy(&types)))
        .collect()
}

/// The mapping of a Lambda-projected view on the log's stream with `Direct` fan-out: filter criteria on
/// the record-type attribute, so the projector only runs for its types; bisect on error, bounded retries
/// and record age, and the view version's failure queue (`failure_queue_arn`) as on-failure destination.
pub fn projector_mapping(
    view: &MaterializedView,
    log: &EventLogSpec,
    function: &str,
    stream_arn: &str,
    failure_queue_arn: &str,
) -> MappingPlan {
    MappingPlan {
        function_name: function.to_string(),
        event_source_arn: stream_arn.to_string(),
        batch_size: 100,
        maximum_batching_window_seconds: 0,
        starting_position: Some(StartingPosition::TrimHorizon),
        filter_patterns: vec![stream_filter_pattern(
            &log.table.record_type_attribute,
            &view.spec.record_types,
        )],
        report_batch_item_failures: true,
        bisect_batch_on_function_error: true,
        on_failure: Some(StreamFailurePlan::to_queue(failure_queue_arn)),
    }
}

/// The asynchronous-invocation failure handling of an SNS-invoked projector (`Sns` fan-out): Lambda's
/// two retries over at most 6 hours, then the event to the view version's failure queue (see
/// [`AsyncFailurePlan`]).
pub fn projector_async_failures(function: &str, failure_queue_arn: &str) -> AsyncFailurePlan {
    AsyncFailurePlan {
        function_name: function.to_string(),
        maximum_retry_attempts: ASYNC_MAXIMUM_RETRY_ATTEMPTS,
        maximum_event_age_seconds: ASYNC_MAXIMUM_EVENT_AGE_SECONDS,
        destination_arn: failure_queue_arn.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::EventLog;
    use crate::fixtures::code;
    use crate::plan::log::plan_log;
    use crate::plan::view::plan_view;

    fn log() -> EventLog {
        serde_yaml::from_str(
            "apiVersion: kappa.dev/v1alpha1\nkind: EventLog\nmetadata: {name: game, namespace: ns}\nspec:\n  \
             recordTypes: [player, game]\n  table: {sortKey: sk, orderingAttribute: seq}\n  \
             ingest: {queueType: Standard, batchSize: 10, maximumBatchingWindowSeconds: 2}\n  \
             fanOut: {mode: Sns, topics: [{name: players, recordTypes: [player]}, {name: games, recordTypes: [game]}]}\n",
        )
        .unwrap()
    }

    fn view(runtime: &str) -> MaterializedView {
        serde_yaml::from_str(&format!(
            "apiVersion: kappa.dev/v1alpha1\nkind: MaterializedView\nmetadata: {{name: players, namespace: ns}}\nspec:\n  \
             eventLogRef: {{name: game}}\n  recordTypes: [player]\n  projector: {{runtime: {runtime}, memoryMb: 512}}\n  \
             projection: {{mode: Latest, key: {{partitionKey: 'PLAYER#{{playerId}}'}}}}\n"
        ))
        .unwrap()
    }

    #[test]
    fn the_writer_is_configured_for_its_log_and_mapped_on_the_queue() {
        let log = log();
        let plan = plan_log("c", &log, crate::plan::NO_VIEWS);
        let f = writer_function(&plan, &log.spec, "arn:role", &code());
        assert_eq!(f.handler, WRITER);
        assert_eq!(f.runtime, "provided.al2023");
        assert_eq!(f.architecture, Architecture::Arm64);
        assert_eq!(f.environment["LOG_TABLE"], plan.table.name);
        assert_eq!(f.environment["SORT_KEY"], "sk");
        assert_eq!(f.environment["RECORD_TYPES"], "player,game");
        let m = writer_mapping(&plan, &log.spec, "arn:queue").unwrap();
        assert_eq!((m.batch_size, m.maximum_batching_window_seconds), (10, 2));
        assert!(m.report_batch_item_failures && m.starting_position.is_none());
    }

    #[test]
    fn the_router_maps_each_record_type_to_its_groups_topic_and_runs_only_for_lambda_views() {
        let log = log();
        let plan = plan_log("c", &log, crate::plan::NO_VIEWS);
        let arns = BTreeMap::from([
            ("players".to_string(), "arn:t-players".to_string()),
            ("games".to_string(), "arn:t-games".to_string()),
        ]);
        let f = router_function(&plan, &log.spec, "arn:role", &arns, &code());
        let topics: BTreeMap<String, String> = serde_json::from_str(&f.environment["TOPICS"]).unwrap();
        assert_eq!(topics["player"], "arn:t-players");
        assert_eq!(topics["game"], "arn:t-games");
        assert!(router_needed(ResolvedFanOut::Sns, &[view("Lambda")]));
        assert!(!router_needed(ResolvedFanOut::Sns, &[view("InCluster")]));
        assert!(!router_needed(ResolvedFanOut::Direct, &[view("Lambda")]));
        let m = router_mapping(&plan, "arn:stream", "arn:failures");
        assert_eq!(m.starting_position, Some(StartingPosition::TrimHorizon));
        assert!(m.bisect_batch_on_function_error && m.report_batch_item_failures);
        assert_eq!(
            m.on_failure,
            Some(StreamFailurePlan {
                maximum_retry_attempts: 10,
                maximum_record_age_seconds: 82_800,
                destination_arn: "arn:failures".into(),
            })
        );
        let q = plan.router_failure_queue.as_ref().unwrap();
        assert!(q.name.contains("-router-failures-") && !q.fifo, "{}", q.name);
        assert_eq!(q.tags, plan.owner.tags());
    }

    #[test]
    fn a_projector_carries_its_projection_and_subscribes_with_a_filter_policy() {
        let log = log();
        let v = view("Lambda");
        let plan = plan_view("c", &v, crate::plan::NO_VIEWS);
        let f = projector_function(&v, &plan, &log.spec, "kappa-log", "arn:role", &code())
            .unwrap()
            .unwrap();
        assert_eq!((f.handler.as_str(), f.memory_mb), (PROJECTOR, 512));
        let config: ProjectorConfig = serde_json::from_str(&f.environment["PROJECTION"]).unwrap();
        assert_eq!(config.view, "players");
        assert_eq!(config.log.table.as_deref(), Some("kappa-log"));
        let subs = projector_subscriptions(&v, &log.spec);
        assert_eq!(subs.len(), 1);
        assert_eq!(subs["players"], serde_json::json!({"recordType": ["player"]}));
        let m = projector_mapping(&v, &log.spec, &f.name, "arn:stream", "arn:view-failures");
        assert_eq!(
            m.filter_patterns,
            vec![r#"{"dynamodb":{"NewImage":{"type":{"S":["player"]}}}}"#]
        );
        assert!(m.bisect_batch_on_function_error);
        let on_failure = m.on_failure.unwrap();
        assert_eq!(on_failure.destination_arn, "arn:view-failures");
        assert!((0..=10_000).contains(&on_failure.maximum_retry_attempts));
        assert!(
            on_failure.maximum_record_age_seconds < 86_400,
            "before the stream trims the record"
        );
        let a = projector_async_failures(&f.name, "arn:view-failures");
        assert_eq!(
            (a.maximum_retry_attempts, a.maximum_event_age_seconds),
            (2, 21_600)
        );
        assert_eq!(a.destination_arn, "arn:view-failures");
        assert!(
            projector_function(&view("InCluster"), &plan, &log.spec, "kappa-log", "r", &code())
                .unwrap()
                .is_none()
        );
    }

    /// Found by the #20 breaker: a view's environment could replace the built-in projector's
    /// configuration, pointing it at another namespace's views table.
    #[test]
    fn a_view_cannot_override_the_built_in_projectors_configuration() {
        let log = log();
        let mut v = view("Lambda");
        v.spec.projector.environment.insert(
            "PROJECTION".into(),
            r#"{"table":"kappa-other-namespace-views"}"#.into(),
        );
        let plan = plan_view("c", &v, crate::plan::NO_VIEWS);
        let err = (projector_function(&v, &plan, &log.spec, "kappa-log", "arn:role", &code()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("spec.projector.environment.PROJECTION"), "{err}");
        v.spec.projector.environment = [("LOG_LEVEL".to_string(), "debug".to_string())].into();
        let f = projector_function(&v, &plan, &log.spec, "kappa-log", "arn:role", &code())
            .unwrap()
            .unwrap();
        assert_eq!(
            f.environment["LOG_LEVEL"], "debug",
            "other variables are the user's"
        );
    }
}
