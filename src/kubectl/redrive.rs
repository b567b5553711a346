//! `kubectl kappa redrive <eventlog>`: sends the log's dead-lettered ingest messages back to its ingest
//! queue after their cause is fixed, for the writer to write them again.
//!
//! The move is SQS's own dead-letter redrive, a message move task (SQS Developer Guide, "Configuring a
//! dead-letter queue redrive"; API: StartMessageMoveTask, ListMessageMoveTasks): the messages go back to
//! the queue that dead-lettered them, and the writer receives them as any other. Writing a message twice
//! is safe: the writer's puts are idempotent per record (the same item, the same key). The caller needs
//! `sqs:StartMessageMoveTask`, `sqs:ListMessageMoveTasks`, `sqs:ReceiveMessage`, `sqs:DeleteMessage` and
//! `sqs:GetQueueAttributes` on the dead-letter queue and `sqs:SendMessage` on the ingest queue.
//!
//! Stream failures are not messages to move: the router's and projectors' failure queues hold where a
//! batch failed (shard and sequence numbers), and the records themselves are in the log, the canonical
//! store. What fixes a view that missed them is a rebuild from the log, `kubectl kappa replay <view>`;
//! this command says so when the log's router has failures on record.

use std::time::Duration;

use kube::{Api, Client};

use super::Failure;
use crate::aws::sqs::{MoveTask, newest_redrive, start_redrive};
use crate::crd::{EventLog, ResourceKey, Resources};

/// What a finished redrive did.
#[derive(Debug)]
pub struct Redriven {
    pub dead_letter_queue: String,
    pub task: MoveTask,
    /// A note for the user when the log's router failed batches (their fix is a replay, not a redrive).
    pub router_note: Option<String>,
}

/// Starts the redrive of EventLog `ns/log`'s ingest dead-letter queue and waits until SQS reports it
/// finished, or `timeout` passed. Refused (exit 2) when the log has no dead-letter queue on record;
/// failed (exit 1) when SQS refuses the move or reports it failed, with SQS's reason.
pub async fn redrive(
    client: &Client,
    sqs: &aws_sdk_sqs::Client,
    ns: &str,
    log: &str,
    timeout: Duration,
) -> Result<Redriven, Failure> {
    let logs: Api<EventLog> = Api::namespaced(client.clone(), ns);
    let found = logs.get_opt(log).await.map_err(|e| {
        Failure::failed(format!(
            "cannot read EventLog {ns}/{log}: {e}; check KUBECONFIG and the current context"
        ))
    })?;
    let status = found
        .ok_or_else(|| Failure::refused(format!("EventLog {ns}/{log} not found")))?
        .status
        .unwrap_or_default();
    let dead_letter_queue = status
        .resources
        .arn(&ResourceKey::DeadLetterQueue)
        .cloned()
        .ok_or_else(|| {
            Failure::refused(format!(
                "EventLog {ns}/{log} has no ingest dead-letter queue on record (status.resources.{}; \
             phase {}): wait until the log is Ready, see `kubectl describe eventlog {log} -n {ns}`",
                ResourceKey::DeadLetterQueue,
                status.phase.map_or("unknown".to_string(), |p| format!("{p:?}"))
            ))
        })?;
    let handle = start_redrive(sqs, &dead_letter_queue).await.map_err(|e| {
        Failure::failed(format!(
            "SQS refused to redrive {dead_letter_queue}: {e} (the caller needs sqs:StartMessageMoveTask on \
             the dead-letter queue and sqs:SendMessage on the ingest queue; SQS runs one move task per queue \
             at a time)"
        ))
    })?;
    let deadline = tokio::time::Instant::now() + timeout;
    let task = loop {
        let newest = newest_redrive(sqs, &dead_letter_queue)
            .await
            .map_err(|e| Failure::failed(format!("reading the redrive of {dead_letter_queue}: {e}")))?;
        match newest {
            Some(task) if task.handle.as_deref() == Some(handle.as_str()) && task.finished() => break task,
            _ if tokio::time::Instant::now() > deadline => {
                return Err(Failure::failed(format!(
                    "the redrive of {dead_letter_queue} (task {handle}) did not finish within {timeout:?}; it \
                     goes on in SQS: see `aws sqs list-message-move-tasks --source-arn {dead_letter_queue}`"
                )));
            }
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    };
    if task.status != "COMPLETED" {
        return Err(Failure::failed(format!(
            "the redrive of {dead_letter_queue} ended {} after moving {} message(s): {}",
            task.status,
            task.moved,
            task.failure.as_deref().unwrap_or("SQS gave no reason")
        )));
    }
    let router_note = status.router_dead_letters.filter(|n| *n > 0).map(|n| {
        format!(
            "the log's router also has {n} failed batch(es) on record (status.routerDeadLetters): their records \
             are in the log and reached no Lambda view; rebuild each Lambda view of {log} with \
             `kubectl kappa replay <view> -n {ns}`"
        )
    });
    Ok(Redriven { dead_letter_queue, task, router_note })
}
