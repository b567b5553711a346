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

/// Why a share of a backfill Job failed; [`ShareError::retryable`] decides the pod's exit code (1: the
/// Job retries the index; 2: retrying will not help).
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// The Kubernetes API is out of reach (in-cluster configuration, network).
    #[error("cannot reach the Kubernetes API: {0}")]
    Connect(#[source] kube::Error),
    /// Reading an object the share needs failed.
    #[error("reading {what}: {source}")]
    Read {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// The view's status no longer asks for this share's work, or does not say enough to do it.
    #[error("{0}")]
    Status(String),
    /// The view's projection is invalid (its admission and the operator's validation should have said so).
    #[error(transparent)]
    Spec(#[from] crate::projection::ProjectionError),
    /// The operator's AWS configuration (region, credentials) is missing.
    #[error("{0}")]
    Settings(String),
    #[error(transparent)]
    Aws(#[from] crate::aws::AwsError),
    #[error(transparent)]
    Backfill(#[from] crate::backfill::worker::BackfillError),
}

impl ShareError {
    /// Whether the Job should run this index again.
    pub fn retryable(&self) -> bool {
        match self {
            ShareError::Connect(_) | ShareError::Read { .. } => true,
            ShareError::Status(_) | ShareError::Spec(_) | ShareError::Settings(_) => false,
            ShareError::Aws(e) => e.retryable,
            ShareError::Backfill(e) => e.retryable(),
        }
    }

    /// A short, bounded label (a metric label, a log field): `kubernetes`, `status`, `invalid-spec`,
    /// `settings`, `aws`, `backfill`.
    pub fn category(&self) -> &'static str {
        match self {
            ShareError::Connect(_) | ShareError::Read { .. } => "kubernetes",
            ShareError::Status(_) => "status",
            ShareError::Spec(_) => "invalid-spec",
            ShareError::Settings(_) => "settings",
            ShareError::Aws(_) => "aws",
            ShareError::Backfill(_) => "backfill",
        }
    }
}

/// Projects this index's share of the view's export; `Err` says what failed and whether the Job should
/// retry it ([`ShareError::retryable`]).
pub async fn run(share: &JobShare) -> Result<Progress, ShareError> {
    match share_run(share).await {
        Ok(progress) => Ok(progress),
        // The other shares may have finished every file meanwhile, and the operator recorded the backfill
        // complete and removed the export this share was reading (or started another attempt): what is
        // recorded decides.
        Err(e) => match recorded_done(share).await {
            true => {
                tracing::info!(view = %share.view, attempt = share.attempt, error = %e, "the backfill is recorded complete (or superseded): nothing left for this share");
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

async fn share_run(share: &JobShare) -> Result<Progress, ShareError> {
    let client = Client::try_default().await.map_err(ShareError::Connect)?;
    let views: Api<MaterializedView> = Api::namespaced(client.clone(), &share.namespace);
    let view = views.get(&share.view).await.map_err(|source| ShareError::Read {
        what: format!("MaterializedView {}/{}", share.namespace, share.view),
        source,
    })?;
    let logs: Api<EventLog> = Api::namespaced(client.clone(), &share.namespace);
    let log = logs
        .get(&view.spec.event_log_ref.name)
        .await
        .map_err(|source| ShareError::Read { what: "its EventLog".into(), source })?;
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
        return Err(ShareError::Status(format!(
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
        .ok_or_else(|| ShareError::Status("the view's status.backfill names no export".into()))?;
    let table = table.ok_or_else(|| ShareError::Status("the view's status names no views table".into()))?;
    let key_prefix = key_prefix.unwrap_or_default();
    let projection = ProjectionConfig::from_spec(&share.view, &view.spec, &log.spec, &key_prefix)?;
    let aws = Aws::from_env(Arc::new(Metrics::default()))
        .await
        .map_err(|e| ShareError::Settings(e.to_string()))?;
    let export = describe_export(&aws.dynamodb, &export_arn).await?;
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
    .await?;
    let writer =
        ViewTableWriter::for_view(aws.dynamodb.clone(), table, &projection, 16).with_rate_limit(limit);
    // Pre-aggregated: this share's partials go to S3 beside the export, and the operator folds them once
    // every share is done. The operator created the Job only once the live path's band was complete.
    let pre_aggregate = match share.pre_aggregation {
        PreAggregation::PerRecord => None,
        how => Some(PreAggregate {
            band: Arc::new(match how {
                PreAggregation::Banded => writer.load_band(share.attempt).await?,
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
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_retries_what_may_pass_and_gives_up_on_what_only_a_user_can_fix() {
        let status = ShareError::Status("the view's status names no views table".into());
        assert!(!status.retryable());
        assert_eq!(status.category(), "status");
        assert_eq!(status.to_string(), "the view's status names no views table");
        let settings = ShareError::Settings("no AWS region".into());
        assert!(!settings.retryable());
        let throttled = ShareError::from(crate::aws::AwsError::new(
            "DescribeExport",
            "arn",
            "ThrottlingException",
            "slow down",
        ));
        assert!(throttled.retryable());
        assert_eq!(throttled.category(), "aws");
        let refused = ShareError::from(crate::aws::AwsError::permanent("DescribeExport", "arn", "gone"));
        assert!(!refused.retryable());
        let missing = ShareError::from(crate::backfill::worker::BackfillError::ManifestMissing {
            bucket: "b".into(),
            key: "k".into(),
        });
        assert!(missing.retryable());
        assert_eq!(missing.category(), "backfill");
    }
}
