//! The controllers: one reconcile pipeline per kind, run only by the replica that holds the leader Lease.
//!
//! Each reconcile is a pipeline: dereference (fetch related objects) → validate (pure) → plan (pure) →
//! apply (only the differences) → status. The finalizer is the single top-level switch between Apply and
//! Cleanup. Status is written by server-side apply with one field manager, and only when it changed.

mod backoff;
pub mod crd_skew;
mod error;
mod event_log;
pub mod events;
pub mod leader;
mod materialized_view;
mod pacer;
mod provision;
pub mod push;
pub mod status;
pub mod validate;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, CustomResourceExt};
use tracing::info;

pub use error::{Error, Refusal, Result};

use crate::crd::{EventLog, MaterializedView};
use crate::metrics::Metrics;
use crate::plan::CodeError;
use crate::settings::Config;

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "kappa-operator";

/// What every reconcile needs, shared as `Arc<Context>`.
pub struct Context {
    pub client: Client,
    /// Kubernetes Events, repeats aggregated into series.
    pub events: events::Events,
    pub metrics: Arc<Metrics>,
    pub config: Config,
    pub backoff: backoff::Backoff,
    /// The per-object floor on reconcile frequency.
    pub pacer: pacer::Pacer,
    pub aws: crate::aws::Aws,
    /// The in-cluster runtime's tasks (live readers and backfills) of this process.
    pub runtime: crate::runtime::Runtime,
    /// One stream reader per log, shared by its in-cluster views' live readers.
    pub shared_streams: Arc<crate::runtime::shared_stream::SharedStreams>,
    /// The push endpoint's hub, view directory and feeds (in-cluster reactive views).
    pub push: Arc<push::PushRuntime>,
    /// Whether the installed CRDs are this operator's: nothing is reconciled while they are not.
    pub crd_skew: crd_skew::CrdSkew,
    /// The views controllers' caches of the views, read by the reconciles for a namespace's views.
    view_stores: materialized_view::ViewStores,
    /// The built-in Lambda functions' code, loaded (and zipped) the first time a function needs it.
    lambda_code: tokio::sync::OnceCell<std::result::Result<crate::plan::lambdas::BuiltInCode, CodeError>>,
}

/// Lambda's limit on a zip uploaded with the call.
const MAX_DIRECT_UPLOAD_BYTES: usize = 50 * 1024 * 1024;

impl Context {
    /// The uid of the Namespace object `ns` (the owner of its shared views tables), read on every call:
    /// a namespace deleted and created again has another uid, which a cache would hide.
    pub async fn namespace_uid(&self, ns: &str) -> Result<Option<String>> {
        let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
            kube::Api::all(self.client.clone());
        let namespace = namespaces
            .get_metadata(ns)
            .await
            .map_err(Error::kube("reading the uid of", format!("Namespace {ns}")))?;
        Ok(namespace.metadata.uid)
    }

    /// The built-in functions' code (see `--lambda-code`), or why it cannot be used.
    pub async fn built_in_code(&self) -> std::result::Result<crate::plan::lambdas::BuiltInCode, CodeError> {
        use crate::plan::function::FunctionCode;
        use crate::settings::LambdaCodeSource;
        let load = || async {
            let code = match &self.config.lambda_code {
                LambdaCodeSource::S3 { bucket, key } => {
                    FunctionCode::S3 { bucket: bucket.clone(), key: key.clone() }
                }
                LambdaCodeSource::File(path) => {
                    let binary = tokio::fs::read(path)
                        .await
                        .map_err(|e| CodeError::Unreadable { path: path.clone(), error: e.to_string() })?;
                    let zip = crate::aws::lambda::bootstrap_zip(&binary);
                    if zip.len() > MAX_DIRECT_UPLOAD_BYTES {
                        return Err(CodeError::TooLarge {
                            path: path.clone(),
                            megabytes: zip.len() / (1024 * 1024),
                        });
                    }
                    FunctionCode::Zip {
                        sha256_base64: crate::aws::lambda::zip_sha256_base64(&zip),
                        bytes: Arc::new(zip),
                    }
                }
            };
            Ok(crate::plan::lambdas::BuiltInCode { code, architecture: self.config.lambda_architecture })
        };
        self.lambda_code.get_or_init(load).await.clone()
    }
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        config: Config,
        aws: crate::aws::Aws,
        push: Arc<push::PushRuntime>,
        crd_skew: crd_skew::CrdSkew,
    ) -> Self {
        let events = events::Events::new(client.clone(), "kappa-operator", &config.identity);
        let shared_streams = Arc::new(
            crate::runtime::shared_stream::SharedStreams::new(aws.streams.clone(), Duration::from_secs(1))
                .with_metrics(metrics.clone()),
        );
        Context {
            client,
            events,
            metrics,
            config,
            backoff: backoff::Backoff::default(),
            pacer: pacer::Pacer::default(),
            aws,
            runtime: crate::runtime::Runtime::default(),
            shared_streams,
            push,
            crd_skew,
            view_stores: Default::default(),
            lambda_code: tokio::sync::OnceCell::new(),
        }
    }
}

/// Problems found before the controllers can start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(
        "the CRD {name} is not installed or not established within 30s: install the chart, or run \
         `kappa-operator crds | kubectl apply -f -`"
    )]
    CrdMissing { name: String },
    #[error("cannot read CRD {name}: {source}")]
    CrdUnreadable {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Checks that both CRDs are installed and established; the operator refuses to start otherwise. Returns
/// them as read, for the CRD skew check ([`crd_skew::CrdSkew::new`]), which does not stop the start.
pub async fn check_crds(client: &Client) -> std::result::Result<Vec<CustomResourceDefinition>, StartupError> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut installed = Vec::new();
    for name in [EventLog::crd_name(), MaterializedView::crd_name()] {
        match crds.get_opt(name).await {
            Ok(Some(crd)) => installed.push(crd),
            Ok(None) => {
                return Err(StartupError::CrdMissing { name: name.to_string() });
            }
            Err(source) => {
                return Err(StartupError::CrdUnreadable { name: name.to_string(), source });
            }
        }
        let established = await_condition(crds.clone(), name, conditions::is_crd_established());
        if tokio::time::timeout(Duration::from_secs(30), established)
            .await
            .is_err()
        {
            return Err(StartupError::CrdMissing { name: name.to_string() });
        }
    }
    Ok(installed)
}

/// Runs both controllers until shutdown (SIGTERM or Ctrl-C), while this replica leads. Every replica
/// watches the CRDs (`crd_skew`, also read by `/readyz`); nothing is reconciled while they differ.
pub async fn run(
    client: Client,
    config: Config,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    aws: crate::aws::Aws,
    push: Arc<push::PushRuntime>,
    crd_skew: crd_skew::CrdSkew,
) {
    tokio::spawn(crd_skew.clone().watch(client.clone()));
    let elector = leader::LeaderElector::new(
        client.clone(),
        &config.lease_namespace,
        &config.lease_name,
        &config.identity,
        config.lease_duration,
    );
    let ctx = Arc::new(Context::new(client, metrics.clone(), config, aws, push, crd_skew));
    ready.store(true, Ordering::Relaxed);
    info!(identity = %elector.identity(), "waiting to lead; standing by");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler cannot fail on unix");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    };
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let leading = elector.run(
            || {
                let ctx = ctx.clone();
                let shutdown = shutdown.clone();
                async move {
                    info!(namespaces = ?ctx.config.watch_namespaces, "watching EventLogs and MaterializedViews");
                    tokio::select! {
                        _ = futures::future::join(event_log::run(ctx.clone()), materialized_view::run(ctx.clone())) => {},
                        _ = shutdown => info!("shutting down"),
                    }
                }
            },
            shutdown.clone(),
            |leading| {
                metrics.leader.set(i64::from(leading));
            },
        );
    leading.await;
}

/// The Api of a kind in every watched namespace: one per namespace, or one cluster-wide.
fn watched_apis<K>(ctx: &Context) -> Vec<Api<K>>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    if ctx.config.watch_namespaces.is_empty() {
        vec![Api::all(ctx.client.clone())]
    } else {
        ctx.config
            .watch_namespaces
            .iter()
            .map(|ns| Api::namespaced(ctx.client.clone(), ns))
            .collect()
    }
}

/// The top-level switch both kinds share: the finalizer chooses Apply or Cleanup; every reconcile is
/// counted and timed; a failure is counted by category, published as a Warning Event and backed off per
/// object; a success resets the backoff.
async fn reconcile_with_finalizer<K>(
    listed: Arc<crate::crd::Tolerant<K>>,
    ctx: Arc<Context>,
    kind: &'static str,
    apply: impl AsyncFnOnce(Arc<K>, &Context, &str) -> Result<kube::runtime::controller::Action>,
    cleanup: impl AsyncFnOnce(Arc<K>, &Context, &str) -> Result<kube::runtime::controller::Action>,
) -> Result<kube::runtime::controller::Action>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    use kube::ResourceExt;
    use kube::runtime::finalizer::{Event as Finalizer, finalizer};
    // Only readable objects come here (see `reconcile_tolerant`).
    let obj = match &listed.object {
        Ok(k) => Arc::new(k.clone()),
        Err(_) => return Ok(kube::runtime::controller::Action::requeue(UNREADABLE_RETRY)),
    };
    if let Some(wait) = ctx
        .pacer
        .admit(&backoff_key(obj.as_ref()), pacer::state_of(obj.as_ref()))
    {
        ctx.metrics
            .deferred
            .get_or_create(&crate::metrics::KindLabels { kind })
            .inc();
        return Ok(kube::runtime::controller::Action::requeue(wait));
    }
    let _timer = ctx.metrics.reconcile_started(kind);
    let ns = obj
        .namespace()
        .ok_or_else(|| Error::NoNamespace { kind, name: obj.name_any() })?;
    // Through `Tolerant`: the finalizer's patches return the object, which may hold a status this
    // version cannot read.
    let api: Api<crate::crd::Tolerant<K>> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, crate::crd::FINALIZER, listed, |event| {
        let cleaning = matches!(event, Finalizer::Cleanup(_));
        let (obj, ctx, ns) = (obj.clone(), &ctx, &ns);
        async move {
            match cleaning {
                false => apply(obj, ctx, ns).await,
                true => cleanup(obj, ctx, ns).await,
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    match &result {
        // A cleanup that succeeded removed the finalizer: the object is gone, and so is its pace.
        Ok(_) if obj.meta().deletion_timestamp.is_some() => {
            ctx.backoff.succeeded(&backoff_key(obj.as_ref()));
            ctx.pacer.forget(&backoff_key(obj.as_ref()));
        }
        Ok(_) => ctx.backoff.succeeded(&backoff_key(obj.as_ref())),
        Err(e) => {
            ctx.metrics.reconcile_failed(kind, e.category());
            status::warn_reconcile(&ctx, obj.as_ref(), e.reason(), e.to_string()).await;
        }
    }
    result
}

/// How often an object this operator cannot read is looked at again (and its Warning repeated).
const UNREADABLE_RETRY: std::time::Duration = std::time::Duration::from_secs(300);

/// How often an object left alone for CRD skew is looked at again (and its Warning repeated); the end of
/// the skew reconciles every object at once ([`crd_skew::CrdSkew::cleared`]).
const CRD_SKEW_RETRY: std::time::Duration = std::time::Duration::from_secs(60);

/// The entry of both controllers, which list and watch through [`crate::crd::Tolerant`] so that one
/// unreadable object never stops the others: a readable object goes to `reconcile`; an unreadable one is
/// left alone with a Warning Event naming the field and the fix. An object whose status only is
/// unreadable (written by another operator version) is not reconciled either (its status is not
/// overwritten), except for its deletion, which needs only the spec.
async fn reconcile_tolerant<K>(
    obj: Arc<crate::crd::Tolerant<K>>,
    ctx: Arc<Context>,
    kind: &'static str,
    reconcile: impl AsyncFnOnce(
        Arc<crate::crd::Tolerant<K>>,
        Arc<Context>,
    ) -> Result<kube::runtime::controller::Action>,
) -> Result<kube::runtime::controller::Action>
where
    K: kube::Resource<DynamicType = ()> + Clone,
{
    use kube::ResourceExt;
    // Installed CRDs that are not this operator's may have pruned what the user wrote (or would prune what
    // the operator writes): nothing is reconciled, deletions included, until they match.
    if let Some(problem) = ctx.crd_skew.problem() {
        let note = format!(
            "{kind} {}/{} is not reconciled: {problem}",
            obj.namespace().unwrap_or_default(),
            obj.name_any()
        );
        tracing::warn!(kind, name = %obj.name_any(), "not reconciled: the installed CRDs are not this operator's");
        status::warn_reconcile(&ctx, obj.as_ref(), crate::crd::reasons::CRD_SKEW, note).await;
        return Ok(kube::runtime::controller::Action::requeue(CRD_SKEW_RETRY));
    }
    let Some((reason, note)) = left_alone(&obj, kind) else {
        return reconcile(obj, ctx).await;
    };
    tracing::warn!(kind, name = %obj.name_any(), %note, "an object cannot be read; it is left alone");
    status::warn_reconcile(&ctx, obj.as_ref(), reason, note).await;
    Ok(kube::runtime::controller::Action::requeue(UNREADABLE_RETRY))
}

/// Why an object is left alone, and the Warning's note (reason, note); `None` when it is reconciled: it is
/// readable, or only its status is unreadable and it is being deleted (the cleanup needs only the spec).
fn left_alone<K>(obj: &crate::crd::Tolerant<K>, kind: &'static str) -> Option<(&'static str, String)>
where
    K: kube::Resource<DynamicType = ()> + Clone,
{
    use kube::ResourceExt;
    let deleting = kube::Resource::meta(obj).deletion_timestamp.is_some();
    Some(match (&obj.object, &obj.status_dropped) {
        (Ok(_), None) => return None,
        (Ok(_), Some(dropped)) if deleting => {
            tracing::warn!(kind, name = %obj.name_any(), %dropped, "deleting an object whose status this operator cannot read; cleaning up from its spec");
            return None;
        }
        (Ok(_), Some(dropped)) => (
            "UnreadableStatus",
            format!(
                "this operator version cannot read the status of {kind} {}/{}: {dropped}. Another operator \
                 version probably wrote it; the object is left alone (its status is not overwritten) until \
                 the operator that wrote it runs again, or until the status is removed (`kubectl patch {} {} \
                 --subresource=status --type=json -p '[{{\"op\":\"remove\",\"path\":\"/status\"}}]'`), \
                 after which it is reconciled afresh. Deleting it still cleans up.",
                obj.namespace().unwrap_or_default(),
                obj.name_any(),
                K::plural(&()),
                obj.name_any(),
            ),
        ),
        (Err(unreadable), _) => (
            "Unreadable",
            format!(
                "this operator version cannot read {kind} {}/{}: {unreadable}. Fix the field (kubectl \
                 edit), or run the operator version whose CRD accepted it.{}",
                obj.namespace().unwrap_or_default(),
                obj.name_any(),
                match deleting {
                    true => format!(
                        " It is being deleted but cannot be cleaned up until it is readable: to delete it \
                         without cleaning up what it owns on AWS, remove the finalizer {} by hand.",
                        crate::crd::FINALIZER
                    ),
                    false => String::new(),
                }
            ),
        ),
    })
}

/// The objects of a list this operator can read (their status dropped if that was unreadable); the others
/// are logged here and reported by their own reconcile.
fn readable<K: kube::Resource<DynamicType = ()>>(items: Vec<crate::crd::Tolerant<K>>) -> Vec<K> {
    use kube::ResourceExt;
    items
        .into_iter()
        .filter_map(|t| match t.object {
            Ok(k) => Some(k),
            Err(ref e) => {
                tracing::warn!(kind = %K::kind(&()), name = %t.name_any(), error = %e, "left out of a list: this operator cannot read it");
                None
            }
        })
        .collect()
}

/// The key objects are tracked by in the backoff table.
fn backoff_key<K: kube::Resource<DynamicType = ()>>(obj: &K) -> String {
    use kube::ResourceExt;
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// Records the outcome of a reconcile; on failure returns the per-object backoff delay.
fn requeue_after_error<K: kube::Resource<DynamicType = ()>>(
    obj: &K,
    ctx: &Context,
) -> kube::runtime::controller::Action {
    kube::runtime::controller::Action::requeue(ctx.backoff.failed(&backoff_key(obj)))
}

/// Drains a controller's result stream, logging what each reconcile did.
async fn drain<S, T, E>(stream: S, kind: &'static str)
where
    S: futures::Stream<Item = std::result::Result<T, E>>,
    T: std::fmt::Debug,
    E: std::fmt::Display,
{
    stream
        .for_each(|res| async move {
            match res {
                Ok(o) => tracing::debug!(kind, object = ?o, "reconciled"),
                Err(e) => tracing::warn!(kind, error = %e, "reconcile failed"),
            }
        })
        .await;
}
