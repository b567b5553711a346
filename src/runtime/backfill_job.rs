//! `kappa-operator backfill`: one index of a backfill Indexed Job (see `crate::plan::job`).
//!
//! The pod reads what it needs from the API (the view, its EventLog, the export named in the view's
//! `status.backfill`), projects its share of the export's data files and checkpoints each file in the
//! view's backfill ConfigMap, exactly as the in-process worker does; the operator follows the checkpoint
//! for progress and completion. A pod that fails is retried by the Job and skips the files already done.

use std::sync::{Arc, Mutex};

use kube::{Api, Client};

use super::checkpoints::{self, ConfigMapCheckpoint};
use crate::aws::Aws;
use crate::aws::export::{describe_export, summary_key};
use crate::aws::views::ViewTableWriter;
use crate::backfill::worker::{PreAggregate, PreAggregation, Progress, Worker};
use crate::crd::{EventLog, MaterializedView};
use crate::metrics::Metrics;
use crate::projection::ProjectionConfig;

/// What one index is told to do (the Job's arguments, and the index Kubernetes gives it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobShare {
    pub namespace: String,
    pub view: String,
    /// The view version backfilled.
    pub version: i64,
    pub attempt: i64,
    pub workers: usize,
    pub index: usize,
    /// How records are combined before writing ([`PreAggregation`]).
    pub pre_aggregation: PreAggregation,
}

/// Projects this index's share of the view's export; `Err` says what failed and whether the Job should
/// retry (`true`) or give up.
pub async fn run(share: &JobShare) -> Result<Progress, (String, bool)> {
    match share_run(share).await {
        Ok(progress) => Ok(progress),
        // The other shares may have finished every file meanwhile, and the operator recorded the backfill
        // complete and removed the export this share was reading (or started another attempt): what is
        // recorded decides.
        Err(e) => match recorded_done(share).await {
            true => {
                tracing::info!(view = %share.view, attempt = share.attempt, error = %e.0, "the backfill is recorded complete (or superseded): nothing left for this share");
                Ok(Progress::default())
            }
            false => Err(e),
        },
    }
}

/// Whether the view's status says the backfill of this share's attempt finished, or another attempt
/// replaced it.
async fn recorded_done(share: &JobShare) -> bool {
    let Ok(client) = Client::try_default().await else {
        return false;
    };
    let views: Api<MaterializedView> = Api::namespaced(client, &share.namespace);
    let Ok(view) = views.get(&share.view).await else {
        return false;
    };
    let status = view.status.unwrap_or_default();
    let backfill = match status.versions.iter().find(|v| v.version == share.version) {
        Some(v) => v.backfill.clone(),
        None => status.backfill,
    };
    backfill.is_some_and(|b| b.finished_at.is_some() || b.attempt != share.attempt)
}

async fn share_run(share: &JobShare) -> Result<Progress, (String, bool)> {
    let permanent = |m: String| (m, false);
    let client = Client::try_default()
        .await
        .map_err(|e| (format!("cannot reach the Kubernetes API: {e}"), true))?;
    let views: Api<MaterializedView> = Api::namespaced(client.clone(), &share.namespace);
    let view = views.get(&share.view).await.map_err(|e| {
        (
            format!("reading MaterializedView {}/{}: {e}", share.namespace, share.view),
            true,
        )
    })?;
    let logs: Api<EventLog> = Api::namespaced(client.clone(), &share.namespace);
    let log = logs
        .get(&view.spec.event_log_ref.name)
        .await
        .map_err(|e| (format!("reading its EventLog: {e}"), true))?;
    let status = view.status.clone().unwrap_or_default();
    // The version's own status (a view rebuilt beside its active version has several).
    let version = status.versions.iter().find(|v| v.version == share.version);
    let (backfill, table, key_prefix) = match version {
        Some(v) => (v.backfill.clone(), v.table_name.clone(), v.key_prefix.clone()),
        None => (
            status.backfill.clone(),
            status.table_name.clone(),
            status.key_prefix.clone(),
        ),
    };
    let view = match version {
        Some(v) => crate::plan::versions::view_with_content(&view, &v.content),
        None => view,
    };
    let backfill = backfill.unwrap_or_default();
    if backfill.attempt != share.attempt {
        return Err(permanent(format!(
            "the view's backfill is attempt {}, this Job was started for attempt {}: nothing to do",
            backfill.attempt, share.attempt
        )));
    }
    if backfill.finished_at.is_some() {
        // Other shares finished every file and the operator recorded the backfill complete (and may have
        // deleted the export): what is recorded decides, there is nothing left to read.
        tracing::info!(view = %share.view, attempt = share.attempt, "the backfill is complete: nothing left for this share");
        return Ok(Progress::default());
    }
    let export_arn = backfill
        .export_arn
        .clone()
        .ok_or_else(|| permanent("the view's status.backfill names no export".into()))?;
    let table = table.ok_or_else(|| permanent("the view's status names no views table".into()))?;
    let key_prefix = key_prefix.unwrap_or_default();
    let projection = ProjectionConfig::from_spec(&share.view, &view.spec, &log.spec, &key_prefix)
        .map_err(|e| permanent(e.to_string()))?;
    let aws = Aws::from_env(Arc::new(Metrics::default()))
        .await
        .map_err(permanent)?;
    let export = describe_export(&aws.dynamodb, &export_arn)
        .await
        .map_err(|e| (e.to_string(), e.retryable))?;
    let bucket = export
        .bucket
        .clone()
        .or_else(|| log.spec.export.as_ref().map(|e| e.bucket.clone()))
        .unwrap_or_default();
    let prefix = backfill
        .export_location
        .as_deref()
        .and_then(|l| l.strip_prefix(&format!("s3://{bucket}/")))
        .unwrap_or_default()
        .to_string();
    let limit = crate::aws::views::backfill_limit(
        &aws.dynamodb,
        &table,
        view.spec.backfill.write_capacity_percent,
        share.workers,
    )
    .await
    .map_err(|e| (e.to_string(), e.retryable))?;
    let writer =
        ViewTableWriter::for_view(aws.dynamodb.clone(), table, &projection, 16).with_rate_limit(limit);
    // Pre-aggregated: this share's partials go to S3 beside the export, and the operator folds them once
    // every share is done. The operator created the Job only once the live path's band was complete.
    let pre_aggregate = match share.pre_aggregation {
        PreAggregation::PerRecord => None,
        how => Some(PreAggregate {
            band: Arc::new(match how {
                PreAggregation::Banded => writer
                    .load_band(share.attempt)
                    .await
                    .map_err(|e| (e.to_string(), e.retryable))?,
                _ => Default::default(),
            }),
            partials_prefix: crate::backfill::aggregate::partials_prefix(&prefix, share.attempt),
            buckets: crate::backfill::aggregate::buckets_for(export.item_count.unwrap_or(0).max(0) as u64),
        }),
    };
    let worker = Worker {
        s3: aws.s3.clone(),
        bucket,
        summary_key: summary_key(&export, &prefix),
        writer,
        projection: Arc::new(projection),
        checkpoints: ConfigMapCheckpoint::new(
            client,
            &share.namespace,
            checkpoints::backfill_name(
                &crate::plan::versions::checkpoint_base(&share.view, share.version),
                share.attempt,
            ),
            checkpoints::owner_of(&view),
        ),
        parallelism: 2,
        share: (share.index, share.workers.max(1)),
        progress: Arc::new(Mutex::new(Progress::default())),
        pre_aggregate,
    };
    let result = worker.run().await;
    // What this share left out (or the record it stops at), for the operator's status.recordErrors.
    let errors = worker
        .progress
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .record_errors
        .clone();
    let noted = match &result {
        // Permanent: the Job fails and the operator reports why (the Job's own condition does not say).
        Err(e) if !e.retryable() => {
            let noted = format!("job@a{}i{}", share.attempt, share.index);
            worker.writer.note_failing_record(&e.to_string(), &noted).await
        }
        _ => Ok(()),
    };
    // What this share left out (also before a failure): by identity, so an index run again counts a
    // record once.
    let noted = match noted {
        Ok(()) if errors.count > 0 => {
            use sha2::Digest as _;
            let named: Vec<(String, String)> = (errors.last.iter())
                .map(|m| (hex::encode(&sha2::Sha256::digest(m.as_bytes())[..16]), m.clone()))
                .collect();
            let ids: Vec<String> = errors.ids.iter().cloned().collect();
            let unnamed = errors.count.saturating_sub(ids.len() as u64);
            worker.writer.note_record_errors(&ids, &named, unnamed).await
        }
        other => other,
    };
    if let Err(e) = noted {
        // The share is done (or failed) regardless; a retry of the index re-reads only unfinished files.
        tracing::warn!(error = %e, "could not note this share's record errors for the operator");
    }
    result.map_err(|e| (e.to_string(), e.retryable()))
}
