//! Applies an EventLog's plan through the adapters, in dependency order, and removes what it owns.

use crate::controller::Refusal;
use std::collections::BTreeMap;

use crate::aws::dynamodb::{self, TableState};
use crate::aws::sqs::{self, QueueState};
use crate::aws::{Aws, AwsError, Convergence, iam, lambda, sns};
use crate::crd::EventLogSpec;
use crate::plan::lambdas::{
    BuiltInCode, ROUTER, WRITER, router_function, router_mapping, writer_function, writer_mapping,
};
use crate::plan::log::{LogPlan, ROUTER_FAILURES, failure_queue};
use crate::plan::log::{roles as log_roles, scope_of_arn};
use crate::plan::names::NameKind;

/// What exists on AWS for a log after one pass.
#[derive(Clone, Debug, PartialEq)]
pub struct LogResources {
    pub table: TableState,
    pub queue: Option<QueueState>,
    /// The ingest queue's dead-letter queue.
    pub dead_letter_queue: Option<QueueState>,
    /// The router's failure queue (`Sns` fan-out): its stream mapping's on-failure destination.
    pub router_failure_queue: Option<QueueState>,
    /// Topic ARN per group.
    pub topics: BTreeMap<String, String>,
    /// Role ARN per built-in function (`writer`, `router`).
    pub roles: BTreeMap<String, String>,
    /// Function ARN per built-in function, and the UUID of its event source mapping.
    pub functions: BTreeMap<String, (String, String)>,
    /// Whether everything already matched the plan (no change was made).
    pub converged: bool,
    /// A permanent failure of the functions' step: the table, queue and topics above exist regardless.
    pub problem: Option<AwsError>,
}

/// What the log's built-in functions need besides the plan.
pub struct LogFunctions<'a> {
    pub spec: &'a EventLogSpec,
    /// The built-in code, or why it cannot be used.
    pub code: Result<BuiltInCode, crate::plan::CodeError>,
    /// Whether the router runs (`Sns` fan-out and some view on Lambda; see [`crate::plan::lambdas::router_needed`]).
    pub router: bool,
    /// The permissions boundary of the functions' roles: a managed policy's ARN or name (`--permissions-boundary`).
    pub permissions_boundary: &'a str,
}

pub async fn apply_log(
    aws: &Aws,
    plan: &LogPlan,
    functions: &LogFunctions<'_>,
) -> Result<LogResources, AwsError> {
    let table = dynamodb::ensure_table(&aws.dynamodb, &plan.table).await?;
    let mut converged = table.convergence == Convergence::Converged;
    // The dead-letter queue first: the ingest queue's redrive policy names its ARN.
    let dead_letter_queue = ensure_queue(aws, plan.dead_letter_queue.as_ref(), None, &mut converged).await?;
    let dlq_arn = dead_letter_queue.as_ref().map(|d| d.arn.as_str());
    let queue = ensure_queue(aws, plan.queue.as_ref(), dlq_arn, &mut converged).await?;
    // Only while the router runs (nothing else sends to it).
    let router_failures = plan.router_failure_queue.as_ref().filter(|_| functions.router);
    let router_failure_queue = ensure_queue(aws, router_failures, None, &mut converged).await?;
    let mut topics = BTreeMap::new();
    for t in &plan.topics {
        let (arn, convergence) = sns::ensure_topic(&aws.sns, t).await?;
        converged &= convergence == Convergence::Converged;
        topics.insert(t.group.clone(), arn);
    }
    let mut roles = BTreeMap::new();
    // ARNs in the policies need the account: the table's ARN tells it.
    if let Some(scope) = scope_of_arn(&table.arn) {
        let boundary = scope.policy_arn(functions.permissions_boundary);
        for role in log_roles(plan, &scope) {
            let (arn, convergence) = iam::ensure_role(&aws.iam, &role, &boundary).await?;
            converged &= convergence == Convergence::Converged;
            roles.insert(role.role.to_string(), arn);
        }
    } else {
        converged = false;
    }
    let mut built = BTreeMap::new();
    let mut problem = None;
    let inputs = FunctionInputs {
        ingest: &queue,
        router_failures: &router_failure_queue,
        table: &table,
        topics: &topics,
        roles: &roles,
    };
    match apply_functions(aws, plan, functions, &inputs, &mut built).await {
        Ok(done) => converged &= done,
        Err(e) if !e.retryable => {
            converged = false;
            problem = Some(e);
        }
        Err(e) => return Err(e),
    }
    Ok(LogResources {
        table,
        queue,
        dead_letter_queue,
        router_failure_queue,
        topics,
        roles,
        functions: built,
        converged,
        problem,
    })
}

/// The queue `plan` declares, if any (with its dead-letter queue's ARN); `converged` is cleared while it
/// converges.
async fn ensure_queue(
    aws: &Aws,
    plan: Option<&crate::plan::log::QueuePlan>,
    dead_letter_arn: Option<&str>,
    converged: &mut bool,
) -> Result<Option<QueueState>, AwsError> {
    let Some(q) = plan else {
        return Ok(None);
    };
    let state = sqs::ensure_queue(&aws.sqs, q, dead_letter_arn).await?;
    *converged &= state.convergence == Convergence::Converged;
    Ok(Some(state))
}

/// What the log's functions are wired to, as the earlier steps left it.
#[derive(Clone, Copy)]
struct FunctionInputs<'a> {
    /// The queue the writer reads (the ingest queue).
    ingest: &'a Option<QueueState>,
    /// The queue the router sends its failures to.
    router_failures: &'a Option<QueueState>,
    /// The log's table (the router reads its stream).
    table: &'a TableState,
    /// Topic ARNs by group (the router publishes to them).
    topics: &'a BTreeMap<String, String>,
    /// Role ARNs by function (`writer`, `router`).
    roles: &'a BTreeMap<String, String>,
}

/// The writer and router functions and their mappings, recorded in `built` (function ARN and mapping id by
/// function); `Ok(true)` when nothing had to change.
async fn apply_functions(
    aws: &Aws,
    plan: &LogPlan,
    functions: &LogFunctions<'_>,
    inputs: &FunctionInputs<'_>,
    built: &mut BTreeMap<String, (String, String)>,
) -> Result<bool, AwsError> {
    let FunctionInputs { ingest, router_failures, table, topics, roles } = *inputs;
    let mut converged = true;
    let code = || functions.code.clone().map_err(|e| e.refusal(&plan.owner.name));
    if let (Some(q), Some(role)) = (ingest, roles.get(WRITER)) {
        let function = writer_function(plan, functions.spec, role, &code()?);
        let (arn, c1) = lambda::ensure_function(&aws.lambda, &function).await?;
        let mut mapping_id = String::new();
        if let Some(mapping) = writer_mapping(plan, functions.spec, &q.arn) {
            let (id, c2) = lambda::ensure_mapping(&aws.lambda, &mapping).await?;
            converged &= c2 == Convergence::Converged;
            mapping_id = id;
        }
        converged &= c1 == Convergence::Converged;
        built.insert(WRITER.to_string(), (arn, mapping_id));
    }
    let router_name = plan.owner.resource_name(ROUTER, NameKind::Function);
    match (&table.stream_arn, roles.get(ROUTER), router_failures) {
        (Some(stream), Some(role), Some(failures)) if functions.router => {
            let function = router_function(plan, functions.spec, role, topics, &code()?);
            let (arn, c1) = lambda::ensure_function(&aws.lambda, &function).await?;
            let mapping = router_mapping(plan, stream, &failures.arn);
            let (id, c2) = lambda::ensure_mapping(&aws.lambda, &mapping).await?;
            converged &= c1 == Convergence::Converged && c2 == Convergence::Converged;
            built.insert(ROUTER.to_string(), (arn, id));
        }
        // No view needs the router (any more): make sure none runs.
        _ => {
            lambda::delete_mappings(&aws.lambda, &router_name).await?;
            lambda::delete_function_if_owned(&aws.lambda, &router_name, &plan.owner).await?;
        }
    }
    Ok(converged)
}

/// Deletes the log's owned resources, dependents first: mappings and functions, roles, topics, the queues,
/// then the table (never an adopted one: it only loses its `kappa.dev/adopted-by` tag). Only resources
/// carrying the log's ownership tags, uid included, are deleted. Returns the names deleted.
pub async fn delete_log(aws: &Aws, plan: &LogPlan) -> Result<Vec<String>, AwsError> {
    let mut deleted = Vec::new();
    for function in [WRITER, ROUTER] {
        let name = plan.owner.resource_name(function, NameKind::Function);
        lambda::delete_mappings(&aws.lambda, &name).await?;
        if lambda::delete_function_if_owned(&aws.lambda, &name, &plan.owner).await? {
            deleted.push(name);
        }
    }
    for role in ["writer", "router"] {
        let name = plan.owner.resource_name(role, NameKind::Role);
        if iam::delete_role_if_owned(&aws.iam, &name, &plan.owner).await? {
            deleted.push(name);
        }
    }
    for t in &plan.topics {
        if sns::delete_topic_if_owned(&aws.sns, &t.name, &plan.owner).await? {
            deleted.push(t.name.clone());
        }
    }
    // The ingest queue before its dead-letter queue (the dead letters go with the log they were meant for);
    // the router's failure queue after the router (whose mapping sends to it) is gone, whatever the
    // fan-out is now (it may have been `Sns` before).
    let router_failures = failure_queue(&plan.owner, ROUTER_FAILURES);
    for q in plan
        .queue
        .iter()
        .chain(&plan.dead_letter_queue)
        .chain(std::iter::once(&router_failures))
    {
        if sqs::delete_queue_if_owned(&aws.sqs, &q.name, &plan.owner).await? {
            deleted.push(q.name.clone());
        }
    }
    if plan.table.adopted {
        dynamodb::release_adopted_table(&aws.dynamodb, &plan.table.name, &plan.owner).await?;
    } else if dynamodb::delete_table_if_owned(&aws.dynamodb, &plan.table.name, &plan.owner).await? {
        deleted.push(plan.table.name.clone());
    }
    Ok(deleted)
}
