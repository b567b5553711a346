//! Applies an EventLog's plan through the adapters, in dependency order, and removes what it owns.

use std::collections::BTreeMap;

use crate::aws::dynamodb::{self, TableState};
use crate::aws::sqs::{self, QueueState};
use crate::aws::{Aws, AwsError, Convergence, sns};
use crate::plan::log::LogPlan;

/// What exists on AWS for a log after one pass.
#[derive(Clone, Debug, PartialEq)]
pub struct LogResources {
    pub table: TableState,
    pub queue: Option<QueueState>,
    /// Topic ARN per group.
    pub topics: BTreeMap<String, String>,
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
    Ok(LogResources {
        table,
        queue,
        topics,
        converged,
    })
}

/// Deletes the log's owned resources, dependents first: topics, the queue, then the table (never an
/// adopted one). Returns the names deleted.
pub async fn delete_log(aws: &Aws, plan: &LogPlan) -> Result<Vec<String>, AwsError> {
    let mut deleted = Vec::new();
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
