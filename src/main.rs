//! The `kappa-operator` binary: wiring only. Each subcommand delegates to the library.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::{Parser, Subcommand};
use kappa_operator::push::auth::PushAuth;
use kappa_operator::settings::PushAuthMode;
use kappa_operator::{controller, crd, http, metrics::Metrics, settings::Settings, telemetry};

/// Runs the Kappa architecture on AWS: an append-only log (EventLog) and the materialized views derived
/// from it (MaterializedView).
#[derive(Parser)]
#[command(name = "kappa-operator", version, about)]
struct Cli {
    /// Log format.
    #[arg(long, env = "KAPPA_LOG_FORMAT", value_enum, default_value_t = telemetry::LogFormat::Text, global = true)]
    log_format: telemetry::LogFormat,
    #[command(flatten)]
    kube: KubeArgs,
    #[command(subcommand)]
    command: Command,
}

/// Which cluster a command talks to, with kubectl's own flags (kubectl hands a plugin its arguments as
/// they are: `kubectl kappa status v --context prod`).
#[derive(clap::Args, Clone, Debug, Default)]
struct KubeArgs {
    /// The kubeconfig file (default: KUBECONFIG, then ~/.kube/config, then the pod's ServiceAccount).
    #[arg(long, global = true)]
    kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true)]
    context: Option<String>,
}

impl KubeArgs {
    /// The client configuration these flags select. Errors name the flag and the fix.
    async fn config(&self) -> Result<kube::Config, String> {
        use kube::config::{KubeConfigOptions, Kubeconfig};
        let options = KubeConfigOptions { context: self.context.clone(), cluster: None, user: None };
        let context = |e: String| match &self.context {
            Some(c) => format!("--context {c:?}: {e}; `kubectl config get-contexts` lists the contexts"),
            None => e,
        };
        match &self.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path)
                    .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|e| context(e.to_string()))
            }
            None if self.context.is_some() => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| context(e.to_string())),
            None => kube::Config::infer()
                .await
                .map_err(|e| format!("{e}; set KUBECONFIG, --kubeconfig or the current context")),
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator: connect to the cluster (KUBECONFIG or in-cluster), elect a leader, reconcile.
    Run(Box<Settings>),
    /// Print the CustomResourceDefinitions as YAML (what `crds/` and the chart hold).
    Crds {
        /// Print the Markdown reference of every field instead (docs/api-reference.md).
        #[arg(long)]
        reference: bool,
    },
    /// One index of a backfill Indexed Job (the operator creates the Job; this is what its pods run).
    Backfill {
        /// The view's namespace.
        #[arg(long)]
        namespace: String,
        /// The view.
        #[arg(long)]
        view: String,
        /// The view version backfilled (status.versions[].version; 1 for a view never rebuilt).
        #[arg(long, default_value_t = 1)]
        version: i64,
        /// The backfill attempt (status.backfill.attempt) the Job was created for.
        #[arg(long)]
        attempt: i64,
        /// Indexes in all.
        #[arg(long)]
        workers: usize,
        /// How records are combined before writing: per-record, reduced (Latest/Min/Max) or banded
        /// (Count/Sum beside the operator's live path); the operator folds the partials.
        #[arg(long, default_value = "per-record")]
        pre_aggregation: kappa_operator::backfill::worker::PreAggregation,
        /// This pod's index (Kubernetes sets JOB_COMPLETION_INDEX in an Indexed Job).
        #[arg(long, env = "JOB_COMPLETION_INDEX")]
        index: usize,
    },
    /// Estimate the cost per million writes of the EventLogs and views in manifests, before applying them.
    Cost {
        /// Manifest files, or directories of *.yaml files, holding EventLogs and their MaterializedViews.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<std::path::PathBuf>,
        /// YAML overriding unit prices (camelCase fields of the price list; defaults: us-east-1).
        #[arg(long)]
        prices: Option<std::path::PathBuf>,
        /// YAML overriding assumptions (item size, record-type shares, Lambda durations, ...).
        #[arg(long)]
        assumptions: Option<std::path::PathBuf>,
    },
    /// What applying manifests would do, before they are applied: the AWS resources each EventLog and
    /// view creates, the cost per million writes, each view's backfill (read, written, paid, how long) and
    /// the topology as a Mermaid flowchart.
    Plan {
        /// Manifest files, or directories of *.yaml files, holding EventLogs and their MaterializedViews.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<std::path::PathBuf>,
        /// The operator's cluster id (the chart's clusterId): AWS names start `kappa-<clusterId>-`.
        #[arg(long, env = "KAPPA_CLUSTER_ID", default_value = "my-cluster")]
        cluster_id: String,
        /// Items already in the log (an existing log gaining views); 0 for a new log.
        #[arg(long, default_value_t = 0)]
        log_items: u64,
        /// Average size of a log item in KB, with --log-items.
        #[arg(long, default_value_t = 1.0)]
        log_item_kb: f64,
        /// YAML overriding unit prices (as for `cost`).
        #[arg(long)]
        prices: Option<std::path::PathBuf>,
        /// YAML overriding assumptions (as for `cost`).
        #[arg(long)]
        assumptions: Option<std::path::PathBuf>,
    },
    /// Print a reactive view's changes as JSON lines, from the operator's push endpoint.
    Watch {
        /// The view (a MaterializedView with spec.store.streams true).
        view: String,
        /// The view's namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// The push endpoint (the operator's --push-addr).
        #[arg(long, env = "KAPPA_PUSH_URL", default_value = "ws://127.0.0.1:8081")]
        url: String,
        /// Only the changes whose partition key (without the view's prefix) starts with this.
        #[arg(long)]
        key_prefix: Option<String>,
        /// Exit (successfully) after this many changes.
        #[arg(long)]
        count: Option<u64>,
        /// Fail when no change came for this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
        /// A file holding the bearer token to present. Unset: the kubeconfig's own token (the operator
        /// checks that its user may watch the namespace's views), or the shared token of a single-tenant
        /// endpoint (the chart's push.tokenSecret).
        #[arg(long, env = "KAPPA_PUSH_TOKEN_FILE")]
        token_file: Option<std::path::PathBuf>,
    },
    /// Send an EventLog's dead-lettered ingest messages back to its ingest queue, once their cause is
    /// fixed (SQS's dead-letter redrive; the writer writes them again, idempotently).
    Redrive {
        /// The EventLog.
        eventlog: String,
        /// The log's namespace (default: the kubeconfig context's).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Fail when SQS has not finished the move within this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Rebuild a view from the log in place: record a new backfill attempt, which the operator exports and
    /// projects into the view's storage (what it holds is rewritten unchanged, what it lost comes back).
    Replay {
        /// The view (a MaterializedView with spec.backfill.source Export or Scan, Live).
        view: String,
        /// The view's namespace (default: the kubeconfig context's).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Show the backfill's progress until the view is Live again.
        #[arg(short = 'f', long)]
        follow: bool,
        /// With --follow: fail when the view is not Live within this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// A view's phase and backfill progress; with --watch, a progress bar until it is Live.
    Status {
        /// The view.
        view: String,
        /// The view's namespace (default: the kubeconfig context's).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Follow the backfill until the view is Live (fails if it is Failed or Stalled).
        #[arg(short = 'w', long)]
        watch: bool,
        /// With --watch: fail when the view is not Live within this many seconds.
        #[arg(long)]
        timeout: Option<u64>,
    },
}

/// The command line as the binary was started: `kappa-operator`, or the kubectl plugin `kubectl-kappa`
/// (`kubectl kappa ...`), which names itself so and leaves out what only the operator's pods run.
/// How the user ran this binary, for the start of its messages: `kubectl kappa` when kubectl ran it as
/// the plugin `kubectl-kappa`, else `kappa-operator`.
fn program() -> &'static str {
    let argv0 = std::env::args().next().unwrap_or_default();
    match kappa_operator::kubectl::invoked_as_plugin(&argv0) {
        true => "kubectl kappa",
        false => "kappa-operator",
    }
}

fn parse_cli() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let argv0 = std::env::args().next().unwrap_or_default();
    if !kappa_operator::kubectl::invoked_as_plugin(&argv0) {
        return Cli::parse();
    }
    let command = Cli::command()
        .name("kubectl kappa")
        .bin_name("kubectl kappa")
        .mut_subcommand("run", |c| c.hide(true))
        .mut_subcommand("backfill", |c| c.hide(true));
    let matches = command.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// A client for the kubeconfig's cluster and the namespace to use (`-n`, or the context's); when there
/// is none, says why on stderr for `command`.
async fn cluster(
    namespace: Option<String>,
    kube_args: &KubeArgs,
    command: &str,
) -> Result<(kube::Client, String), ()> {
    let config = kube_args.config().await.map_err(|e| {
        eprintln!(
            "{} {command}: cannot configure a Kubernetes client: {e}",
            program()
        )
    })?;
    let client = kube::Client::try_from(config).map_err(|e| {
        eprintln!(
            "{} {command}: cannot configure a Kubernetes client: {e}",
            program()
        )
    })?;
    let ns = namespace.unwrap_or_else(|| client.default_namespace().to_string());
    Ok((client, ns))
}

#[tokio::main]
async fn main() -> ExitCode {
    // Crash points from FAILPOINTS (test builds only; see `kappa_operator::fail_point!`).
    #[cfg(feature = "failpoints")]
    let _crash_points = fail::FailScenario::setup();
    // Started by Lambda as `bootstrap` (no arguments): serve the built-in function the handler names.
    if kappa_operator::functions::entry::started_by_lambda() {
        kappa_operator::telemetry::init_lambda();
        // Each command's future is boxed: inlined into one `main` future their nested async types pass the
        // compiler's query depth limit ("queries overflow the depth limit").
        return match Box::pin(kappa_operator::functions::entry::run()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kappa-operator function: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let cli = parse_cli();
    match cli.command {
        Command::Crds { reference } => {
            match reference {
                true => print!("{}", crd::reference::reference_markdown()),
                false => print!("{}", crd::crds_yaml()),
            }
            ExitCode::SUCCESS
        }
        Command::Backfill {
            namespace,
            view,
            version,
            attempt,
            workers,
            pre_aggregation,
            index,
        } => {
            telemetry::init(cli.log_format);
            let share = kappa_operator::runtime::backfill_job::JobShare {
                namespace,
                view,
                version,
                attempt,
                workers,
                index,
                pre_aggregation,
            };
            match Box::pin(kappa_operator::runtime::backfill_job::run(&share)).await {
                Ok(p) => {
                    tracing::info!(
                        index,
                        files = p.files_done,
                        records = p.items_done,
                        "backfill share done"
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("kappa-operator backfill: index {index}: {e}");
                    tracing::error!(index, category = e.category(), error = %e, "backfill share failed");
                    // 1: the Job retries this index; 2: it will not help.
                    ExitCode::from(if e.retryable() { 1 } else { 2 })
                }
            }
        }
        Command::Cost { files, prices, assumptions } => {
            match kappa_operator::cost::report(&files, prices.as_deref(), assumptions.as_deref()) {
                Ok(table) => {
                    print!("{table}");
                    ExitCode::SUCCESS
                }
                Err(message) => {
                    eprintln!("{} cost: {message}", program());
                    ExitCode::from(2)
                }
            }
        }
        Command::Plan {
            files,
            cluster_id,
            log_items,
            log_item_kb,
            prices,
            assumptions,
        } => {
            if !log_item_kb.is_finite() || log_item_kb < 0.0 {
                eprintln!(
                    "{} plan: --log-item-kb {log_item_kb} is not a size: give KB as a finite number, 0 or more",
                    program()
                );
                return ExitCode::from(2);
            }
            let log = kappa_operator::cost::backfill::LogSize {
                items: log_items,
                bytes: (log_items as f64 * log_item_kb * 1024.0).min(u64::MAX as f64) as u64,
            };
            match kappa_operator::cost::plan::plan_report(
                &files,
                prices.as_deref(),
                assumptions.as_deref(),
                &cluster_id,
                log,
            ) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(message) => {
                    eprintln!("{} plan: {message}", program());
                    ExitCode::from(2)
                }
            }
        }
        Command::Watch { view, namespace, url, key_prefix, count, timeout, token_file } => {
            let token = match token_file.as_deref().map(|p| read_token(p, "--token-file")) {
                Some(Ok(token)) => Some(token),
                Some(Err(e)) => {
                    eprintln!("{} watch: {e}", program());
                    return ExitCode::from(2);
                }
                // The endpoint may need none (push auth none); if it does, it says so.
                None => match kappa_operator::push::watch::kubeconfig_token().await {
                    Ok(token) => Some(token),
                    Err(note) => {
                        tracing::debug!(%note, "watching without a bearer token");
                        None
                    }
                },
            };
            let options = kappa_operator::push::watch::WatchOptions {
                url,
                namespace,
                view,
                key_prefix,
                count,
                timeout: timeout.map(std::time::Duration::from_secs),
                token,
            };
            match kappa_operator::push::watch::run(&options, &mut std::io::stdout().lock()).await {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{} watch: {e}", program());
                    ExitCode::from(e.exit_code())
                }
            }
        }
        Command::Redrive { eventlog, namespace, timeout } => {
            let Ok((client, ns)) = cluster(namespace, &cli.kube, "redrive").await else {
                return ExitCode::from(2);
            };
            let metrics = Arc::new(kappa_operator::metrics::Metrics::default());
            let aws = match kappa_operator::aws::Aws::from_env(metrics).await {
                Ok(aws) => aws,
                Err(e) => {
                    eprintln!("{} redrive: {e}", program());
                    return ExitCode::from(2);
                }
            };
            let timeout = std::time::Duration::from_secs(timeout);
            match kappa_operator::kubectl::redrive::redrive(&client, &aws.sqs, &ns, &eventlog, timeout).await
            {
                Ok(done) => {
                    println!(
                        "{eventlog}: moved {} message(s) from {} back to the ingest queue",
                        done.task.moved, done.dead_letter_queue
                    );
                    if let Some(note) = done.router_note {
                        println!("{eventlog}: {note}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{} redrive: {}", program(), e.message);
                    ExitCode::from(e.code)
                }
            }
        }
        Command::Replay { view, namespace, follow, timeout } => {
            let Ok((client, ns)) = cluster(namespace, &cli.kube, "replay").await else {
                return ExitCode::from(2);
            };
            let by = kappa_operator::kubectl::requester();
            let attempt = match kappa_operator::kubectl::replay(&client, &ns, &view, &by).await {
                Ok(attempt) => attempt,
                Err(e) => {
                    eprintln!("{} replay: {}", program(), e.message);
                    return ExitCode::from(e.code);
                }
            };
            println!("{view}: replaying the log as backfill attempt {attempt}");
            if !follow {
                return ExitCode::SUCCESS;
            }
            follow_view(&client, &ns, &view, attempt, timeout).await
        }
        Command::Status { view, namespace, watch, timeout } => {
            let Ok((client, ns)) = cluster(namespace, &cli.kube, "status").await else {
                return ExitCode::from(2);
            };
            if watch {
                return follow_view(&client, &ns, &view, 0, timeout).await;
            }
            let mvs: kube::Api<crd::MaterializedView> = kube::Api::namespaced(client, &ns);
            match mvs.get_opt(&view).await {
                Ok(Some(mv)) => {
                    println!(
                        "{}",
                        kappa_operator::kubectl::summary(&view, &mv.status.unwrap_or_default())
                    );
                    ExitCode::SUCCESS
                }
                Ok(None) => {
                    eprintln!("{} status: MaterializedView {ns}/{view} not found", program());
                    ExitCode::from(2)
                }
                Err(e) => {
                    eprintln!(
                        "{} status: cannot read MaterializedView {ns}/{view}: {e}",
                        program()
                    );
                    ExitCode::from(1)
                }
            }
        }
        Command::Run(settings) => {
            telemetry::init(cli.log_format);
            match Box::pin(run(*settings, &cli.kube)).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => {
                    tracing::error!("{message}");
                    eprintln!("kappa-operator: {message}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// Follows `view` until it is Live with backfill attempt `attempt` (or later) finished.
async fn follow_view(
    client: &kube::Client,
    ns: &str,
    view: &str,
    attempt: i64,
    timeout: Option<u64>,
) -> ExitCode {
    let timeout = timeout.map(std::time::Duration::from_secs);
    match kappa_operator::kubectl::follow(client, ns, view, attempt, timeout, &mut std::io::stdout()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: {}", program(), e.message);
            ExitCode::from(e.code)
        }
    }
}

/// A bearer token from `path` (surrounding whitespace dropped); `setting` names where the path came from.
fn read_token(path: &std::path::Path, setting: &str) -> Result<String, String> {
    let token = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read the push token file {}: {e}; fix {setting}",
            path.display()
        )
    })?;
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(format!(
            "the push token file {} is empty; fix {setting}",
            path.display()
        ));
    }
    Ok(token)
}

async fn run(settings: Settings, kube_args: &KubeArgs) -> Result<(), String> {
    let config = settings.validate().map_err(|e| e.to_string())?;
    let metrics = Arc::new(Metrics::default());
    let kube_config = match kube_args.kubeconfig.is_some() || kube_args.context.is_some() {
        true => kube_args
            .config()
            .await
            .map_err(|e| format!("cannot configure a Kubernetes client: {e}"))?,
        false => kube::Config::infer().await.map_err(|e| {
            format!(
                "cannot configure a Kubernetes client: {e}; set KUBECONFIG, or run in a pod with a ServiceAccount"
            )
        })?,
    };
    // Every request is counted (`kappa_kubernetes_calls_total`), as every AWS call is.
    let counted = metrics.clone();
    let count = tower::util::MapRequestLayer::new(move |req: ::http::Request<kube::client::Body>| {
        counted.kubernetes_call(req.method().as_str(), req.uri().path(), req.uri().query());
        req
    });
    let client = kube::client::ClientBuilder::try_from(kube_config)
        .map_err(|e| format!("cannot configure a Kubernetes client: {e}"))?
        .with_layer(&count)
        .build();
    let version = client.apiserver_version().await.map_err(|e| {
        format!("cannot reach the Kubernetes API server: {e}; check KUBECONFIG and that the server is up")
    })?;
    tracing::info!(server = %version.git_version, cluster_id = %config.cluster_id, "connected to Kubernetes");
    let push_auth = match &config.push_auth {
        PushAuthMode::Kubernetes => PushAuth::Kubernetes(client.clone()),
        PushAuthMode::Token(path) => PushAuth::StaticToken(Arc::from(read_token(
            path,
            "--push-token-file (KAPPA_PUSH_TOKEN_FILE)",
        )?)),
        PushAuthMode::None => PushAuth::None,
    };
    let installed_crds = controller::check_crds(&client).await.map_err(|e| e.to_string())?;

    // CRDs of another schema do not stop the start: the process runs, /readyz says what is wrong, and
    // reconciling starts once they are applied.
    let crd_skew = controller::crd_skew::CrdSkew::new(&installed_crds, metrics.crd_skew.clone());
    let aws = kappa_operator::aws::Aws::from_env(metrics.clone())
        .await
        .map_err(|e| e.to_string())?;
    let ready = Arc::new(AtomicBool::new(false));
    let health = http::Health {
        metrics: metrics.clone(),
        ready: ready.clone(),
        crd_skew: crd_skew.clone(),
    };
    let addr = config.http_addr;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        format!("cannot listen on {addr} for /metrics: {e}; set --http-addr or KAPPA_HTTP_ADDR")
    })?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, http::router(health)).await {
            tracing::error!(error = %e, "the HTTP server stopped");
        }
    });
    // The push endpoint (WebSocket watch of in-cluster reactive views): bound now, so a taken port fails
    // the start with the setting to change.
    let push = Arc::new(controller::push::PushRuntime::new(&config.push_url));
    let push_listener = kappa_operator::push::server::bind(config.push_addr)
        .await
        .map_err(|e| e.to_string())?;
    let (hub, views) = (push.hub.clone(), push.views.clone());
    tokio::spawn(async move {
        if let Err(e) =
            kappa_operator::push::server::serve_on_with_auth(push_listener, hub, views, push_auth).await
        {
            tracing::error!(error = %e, "the push endpoint stopped");
        }
    });
    controller::run(client, config, metrics, ready, aws, push, crd_skew).await;
    Ok(())
}
