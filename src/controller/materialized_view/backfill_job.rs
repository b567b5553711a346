//! A backfill run as a Kubernetes Job (`spec.backfill.job`): its Job, its checkpoints and its progress.

use super::backfill_run::track;
use super::version::Target;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{DeleteParams, PostParams, PropagationPolicy};
use kube::{Api, ResourceExt};
use tracing::info;

use crate::aws::views::ViewTableWriter;
use crate::backfill::worker::PreAggregation;
use crate::backfill::worker::{BackfillError, FileCheckpoints, Progress, Worker};
use crate::controller::Context;
use crate::crd::MaterializedView;
use crate::projection::RecordErrors;
use crate::runtime::checkpoints::{self, ConfigMapCheckpoint};
use crate::runtime::{BackfillFailure, BackfillRun};

/// What [`job_backfill`] is given.
pub(super) struct JobBackfill<'a> {
    pub(super) jobs: &'a crate::settings::BackfillJobs,
    pub(super) attempt: i64,
    pub(super) bucket: &'a str,
    pub(super) summary_key: &'a str,
    /// How the Job's pods combine records (they write partials unless `PerRecord`).
    pub(super) pre_aggregation: PreAggregation,
    /// The fold of the pods' partials once every file is done, and its run's fingerprint.
    pub(super) fold: Option<(Worker<()>, String)>,
    /// The view's writer, to read its record-error ledger.
    pub(super) ledger: ViewTableWriter,
}

/// A large export's backfill as an Indexed Job of the operator's image (see `crate::plan::job`): creates the
/// Job once, and reads progress and completion from the view's backfill checkpoint, which the Job's pods
/// write. The Job is deleted once every data file is done.
pub(super) async fn job_backfill(
    view: &MaterializedView,
    target: &Target,
    ctx: &Context,
    ns: &str,
    job: JobBackfill<'_>,
) -> BackfillRun {
    let spec = job_spec(view, target, ctx, ns, &job);
    // The manifests first: pods started before the export's files are readable would only fail.
    let files = match manifests(ctx, &job).await {
        Ok(files) => files,
        Err(run) => return run,
    };
    let checkpoint = ConfigMapCheckpoint::new(
        ctx.client.clone(),
        ns,
        checkpoints::backfill_name(&target.base, job.attempt),
        None,
    );
    let keys: Vec<String> = files.iter().map(|f| f.data_file_s3_key.clone()).collect();
    FileCheckpoints::layout(&checkpoint, &keys, (0, 1));
    let done = match FileCheckpoints::done(&checkpoint).await {
        Ok(done) => done,
        Err(e) => return failure(e.to_string(), true),
    };
    let progress = progress_of(&files, &done);
    let finished = files.len() as u64 == progress.files_done;
    // The Job runs until the checkpoint holds every file; after that it is never (re)created, whatever
    // happened to it (the operator may have deleted it and stopped before recording the backfill).
    let job_name = crate::plan::job::job_name(ns, &target.base, job.attempt);
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &spec.namespace);
    if !finished {
        return match run_job(&api, &spec, &job_name, &job).await {
            Ok(()) => BackfillRun { progress, outcome: None },
            Err(run) => run,
        };
    }
    // Every share wrote its partials: fold them, once, here (idempotent if the operator restarts).
    let mut record_errors = RecordErrors::default();
    if let Some((worker, fingerprint)) = job.fold {
        match fold(worker, &fingerprint, target, ctx, job.attempt) {
            FoldRun::Running => {
                return BackfillRun { progress, outcome: None };
            }
            // The caller forgets the run, so the next pass folds again.
            FoldRun::Failed(e) => {
                return BackfillRun { progress, outcome: Some(Err(e)) };
            }
            FoldRun::Done(errors) => record_errors = errors,
        }
    }
    delete_finished_job(&api, &job_name).await;
    BackfillRun {
        progress: Progress { record_errors, ..progress },
        outcome: Some(Ok(())),
    }
}

/// The export's data files, from its manifests; the failed run when they cannot be read (`input_gone`
/// when the export's files are missing: a new export is needed).
async fn manifests(
    ctx: &Context,
    job: &JobBackfill<'_>,
) -> std::result::Result<Vec<crate::backfill::export::DataFileEntry>, BackfillRun> {
    match crate::backfill::worker::read_manifests(&ctx.aws.s3, job.bucket, job.summary_key).await {
        Ok((_, files)) => Ok(files),
        Err(e) => {
            let gone = matches!(
                e,
                BackfillError::ManifestMissing { .. } | BackfillError::DataFileMissing { .. }
            );
            let mut run = failure(e.to_string(), e.retryable());
            if let Some(Err(f)) = run.outcome.as_mut() {
                f.input_gone = gone;
            }
            Err(run)
        }
    }
}

/// The Job's progress: the files (and their items) its checkpoint holds as done.
fn progress_of(
    files: &[crate::backfill::export::DataFileEntry],
    done: &std::collections::BTreeSet<String>,
) -> Progress {
    let finished: Vec<_> = files
        .iter()
        .filter(|f| done.contains(&f.data_file_s3_key))
        .collect();
    Progress {
        files_total: files.len() as u64,
        files_done: finished.len() as u64,
        items_total: files.iter().map(|f| f.item_count).sum(),
        items_done: finished.iter().map(|f| f.item_count).sum(),
        files_resumed: 0,
        items_per_second: 0.0,
        writes_sent: 0,
        ..Progress::default()
    }
}

/// A run that failed before the Job did any work.
fn failure(message: String, retryable: bool) -> BackfillRun {
    BackfillRun {
        progress: Progress::default(),
        outcome: Some(Err(BackfillFailure { message, retryable, input_gone: false })),
    }
}

/// The Job's specification: the view's version and attempt, `spec.backfill.parallelism` pods, and the
/// operator's AWS endpoint settings passed on to them.
fn job_spec(
    view: &MaterializedView,
    target: &Target,
    ctx: &Context,
    ns: &str,
    job: &JobBackfill<'_>,
) -> crate::plan::job::BackfillJob {
    let env = [
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "KAPPA_S3_PATH_STYLE",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
    .collect();
    crate::plan::job::BackfillJob {
        namespace: ctx.config.lease_namespace.clone(),
        image: job.jobs.image.clone(),
        service_account: job.jobs.service_account.clone(),
        view_namespace: ns.to_string(),
        view: view.name_any(),
        version: target.version,
        attempt: job.attempt,
        workers: view.spec.backfill.parallelism.max(1),
        pre_aggregation: job.pre_aggregation,
        env,
    }
}

/// Creates the Job if it does not exist, and reports it failed (`Failed=True`) with the error its pods
/// noted in the view's record-error ledger. `Ok` while it runs.
async fn run_job(
    api: &Api<Job>,
    spec: &crate::plan::job::BackfillJob,
    job_name: &str,
    job: &JobBackfill<'_>,
) -> Result<(), BackfillRun> {
    let found = match api.get_opt(job_name).await {
        Ok(Some(found)) => found,
        Ok(None) => match api
            .create(&PostParams::default(), &crate::plan::job::backfill_job(spec))
            .await
        {
            Ok(created) => {
                info!(view = %spec.view, job = %job_name, workers = spec.workers, "backfilling with an Indexed Job");
                created
            }
            Err(e) => return Err(failure(format!("creating backfill Job {job_name}: {e}"), true)),
        },
        Err(e) => return Err(failure(format!("reading backfill Job {job_name}: {e}"), true)),
    };
    let failed = found
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Failed" && c.status == "True"));
    let Some(condition) = failed else {
        return Ok(());
    };
    // Why: a pod notes the error that stopped it in the view's record-error ledger.
    // Only this attempt's pods' note (`job@a<attempt>i<index>`), not an older failure.
    let why = job.ledger.record_error_ledger().await.ok().and_then(|l| l.1);
    let why = why
        .filter(|(_, noted)| noted.starts_with(&format!("job@a{}i", job.attempt)))
        .map(|(m, _)| format!(" ({m})"))
        .unwrap_or_default();
    Err(failure(
        format!(
            "backfill Job {}/{job_name} failed: {}{why}; see `kubectl -n {} logs job/{job_name}`, fix the \
             cause and delete the Job to run it again",
            spec.namespace,
            condition.message.clone().unwrap_or_default(),
            spec.namespace
        ),
        false,
    ))
}

/// Where the fold of the pods' partials stands.
enum FoldRun {
    Running,
    Failed(BackfillFailure),
    /// Folded; what the fold left out.
    Done(RecordErrors),
}

/// Folds the pods' partials into the views table in this process (a runtime task, started once per
/// `fingerprint`).
fn fold(worker: Worker<()>, fingerprint: &str, target: &Target, ctx: &Context, attempt: i64) -> FoldRun {
    let tracked = worker.progress.clone();
    let transient = worker.writer.transient_log().clone();
    let wake = ctx.runtime.waker(&target.key);
    let run = ctx.runtime.backfill(&target.key, fingerprint, |run| {
        let work = async move {
            worker.fold(attempt).await?;
            Ok(worker.progress.lock().unwrap_or_else(|e| e.into_inner()).clone())
        };
        tokio::spawn(async move { track(tracked, transient, work, (run, wake)).await })
    });
    match run.outcome {
        None => FoldRun::Running,
        Some(Err(e)) => FoldRun::Failed(e),
        Some(Ok(())) => FoldRun::Done(run.progress.record_errors),
    }
}

/// Deletes the finished Job and its pods (in the background); one already gone is fine, another error is
/// logged (the Job has finished; nothing waits on its deletion).
async fn delete_finished_job(api: &Api<Job>, job_name: &str) {
    let background = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    match api.delete(job_name, &background).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => tracing::warn!(job = %job_name, error = %e, "could not delete the finished backfill Job"),
    }
}
