//! Applies an EventLog's plan through the adapters, in dependency order, and removes what it owns.

use std::collections::BTreeMap;

use crate::aws::dynamodb::{self, TableState};
use crate::aws::sqs::{self, QueueState};
use crate::aws::{Aws, AwsError, Convergence, iam, sns};
use crate::plan::log::LogPlan;
use crate::plan::log::{roles as log_roles, scope_of_arn};
use crate::plan::names::NameKind;

/// What exists on AWS for a log after one pass.
#[derive(Clone, Debug, PartialEq)]
pub struct LogResources {
    pub table: TableState,
    pub queue: Option<QueueState>,
    /// Topic ARN per group.
    pub topics: BTreeMap<String, String>,
    /// Role ARN per built-in function (`writer`, `router`).
    pub roles: BTreeMap<String, String>,
    /// Whether everything already matched the plan (no change was made).
    pub converged: bool,
}

pub async fn apply_log(aws: &Aws, plan: &LogPlan) -> Result<LogResources, AwsError> {
    let table = dynamodb::ensure_table(&aws.dynamodb, &plan.table).await?;
    let mut converged = table.convergence == Convergence::Converged;
    let queue = match &plan.queue {
        Some(q) => {
            let state = sqs::ensure_queue(&aws.sqs, q).await?;
            converged &= state.convergence == Convergence::Converged;
            Some(state)
        }
        None => None,
    };
    let mut topics = BTreeMap::new();
    for t in &plan.topics {
        let (arn, convergence) = sns::ensure_topic(&aws.sns, t).await?;
        converged &= convergence == Convergence::Converged;
        topics.insert(t.group.clone(), arn);
    }
    let mut roles = BTreeMap::new();
    // ARNs in the policies need the account: the table's ARN tells it.
    if let Some(scope) = scope_of_arn(&table.arn) {
        for role in log_roles(plan, &scope) {
            let (arn, convergence) = iam::ensure_role(&aws.iam, &role).await?;
            converged &= convergence == Convergence::Converged;
            roles.insert(role.role.to_string(), arn);
        }
    } else {
        converged = false;
    }
    Ok(LogResources {
        table,
        queue,
        topics,
        roles,
        converged,
    })
}

/// Deletes the log's owned resources, dependents first: topics, the queue, then the table (never an
/// adopted one). Returns the names deleted.
pub async fn delete_log(aws: &Aws, plan: &LogPlan) -> Result<Vec<String>, AwsError> {
    let mut deleted = Vec::new();
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
    if let Some(q) = &plan.queue
        && sqs::delete_queue_if_owned(&aws.sqs, &q.name, &plan.owner).await?
    {
        deleted.push(q.name.clone());
    }
    if !plan.table.adopted
        && dynamodb::delete_table_if_owned(&aws.dynamodb, &plan.table.name, &plan.owner).await?
    {
        deleted.push(plan.table.name.clone());
    }
    Ok(deleted)
}
