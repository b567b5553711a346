//! The operator at scale (#18), on the local stack (kube-apiserver + etcd + the AWS API server): memory
//! and apply → Ready of `kappa-operator run`, each figure printed beside its goal as a ratio (measured ÷
//! goal: ≤ 1.00 meets it).
//!
//! - **idle RSS**: the operator watching an empty namespace, settled for 5 s. Goal ≤ 24 MiB.
//! - **RSS per 1,000 views**: `VIEWS` MaterializedViews whose EventLog does not exist (each reconciled
//!   once: it has a status), RSS less idle RSS, scaled to 1,000. Goal ≤ 8 MiB.
//! - **apply → Ready, one at a time**: an in-cluster view without backfill on the log's existing shared
//!   table, created, then polled every 20 ms until its `Ready` condition is true; p50 and p99 over
//!   `SINGLES` views. Goal p99 ≤ 1 s (when AWS answers at once, as the local AWS API does).
//! - **in-cluster views on one log**: `IN_CLUSTER` in-cluster views created at once: time until all are
//!   Ready, and RSS then. Goals 30 s and 64 MiB for 100 views.
//!
//! RSS is `VmRSS` of /proc/<pid>/status, the most of three samples a second apart. `cargo bench --bench
//! operator_scale` runs the release build at full size (`make bench`); under `cargo test` it is a smoke
//! run on the debug build with a few views, which checks that every step works and prints what it saw:
//! its figures are no measurement. `KAPPA_OPERATOR_BINARY=target/release/kappa-operator cargo test --bench
//! operator_scale -- --bench` measures the release operator at full size with a debug-built harness
//! (no release build of the test dependencies). Needs the local stack (`make stack-up && source .stack/env`); fails with
//! that command when it is not running. Tests assert behaviour, never timings: this prints, and asserts
//! only that every view reached the state it waits for.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;
use kappa_operator::crd::MaterializedView;
use kube::Api;

const MIB: f64 = 1024.0 * 1024.0;

/// How big each step is: full (`cargo bench`) or smoke (`cargo test`).
struct Size {
    views: usize,
    singles: usize,
    in_cluster: usize,
}

const FULL: Size = Size {
    views: 1_000,
    singles: 20,
    in_cluster: 100,
};
const SMOKE: Size = Size {
    views: 20,
    singles: 3,
    in_cluster: 3,
};

const LOG: &str = common::ORDERS_LOG;

fn view_yaml(name: &str, log: &str) -> String {
    common::in_cluster_order_view(
        log,
        name,
        "{mode: Count, key: {partitionKey: 'C#{id}'}}",
        "  backfill: {source: None}\n",
    )
}

/// `field` (in kB) of the operator's /proc/<pid>/status, in bytes.
fn status_bytes(op: &common::Operator, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", op.child.id())).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no {field} for the operator (pid {}): has it exited?",
                op.child.id()
            )
        });
    kib * 1024.0
}

/// The operator's resident set in bytes: the most of three samples a second apart.
async fn rss(op: &common::Operator) -> f64 {
    let mut most = 0.0f64;
    for i in 0..3 {
        if i > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        most = most.max(status_bytes(op, "VmRSS:"));
    }
    most
}

async fn ready(mvs: &Api<MaterializedView>, name: &str) -> bool {
    common::view_ready(mvs, name).await
}

/// Creates `names` (views of `log`), eight at a time.
async fn create_views(client: &kube::Client, ns: &str, names: &[String], log: &str) {
    futures::stream::iter(names)
        .map(|n| async move {
            common::create_yaml(client, ns, &view_yaml(n, log))
                .await
                .unwrap_or_else(|e| panic!("creating view {n}: {e}"))
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
}

/// Waits until every view of `names` passes `done`, polling each every 200 ms, for at most `timeout`;
/// returns how long it took.
async fn all<F, Fut>(names: &[String], timeout: Duration, what: &str, done: F) -> Duration
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    let mut left: Vec<String> = names.to_vec();
    while !left.is_empty() {
        assert!(
            start.elapsed() < timeout,
            "{} of {} views not {what} after {timeout:?}: {:?}…",
            left.len(),
            names.len(),
            &left[..left.len().min(5)]
        );
        let mut still = Vec::new();
        for n in left {
            if !done(n.clone()).await {
                still.push(n);
            }
        }
        left = still;
        if !left.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    start.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

struct Row {
    figure: String,
    measured: f64,
    goal: f64,
    unit: &'static str,
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let size = if benching { FULL } else { SMOKE };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(size, benching));
}

async fn run(size: Size, benching: bool) {
    let mut rows = Vec::new();

    // Idle, then views waiting for a log that does not exist.
    let (client, ns) = common::setup("bench-memory").await;
    let op = common::Operator::start_with_env(&ns, "bench", 15, &[("RUST_LOG", "info")]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = rss(&op).await;
    let (anonymous, file) = (status_bytes(&op, "RssAnon:"), status_bytes(&op, "RssFile:"));
    rows.push(Row {
        figure: "idle RSS".into(),
        measured: idle / MIB,
        goal: 24.0,
        unit: "MiB",
    });
    let names: Vec<String> = (0..size.views).map(|i| format!("w{i}")).collect();
    create_views(&client, &ns, &names, "missing").await;
    let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
    all(&names, Duration::from_secs(600), "reconciled", |n| {
        let mvs = mvs.clone();
        async move {
            mvs.get(&n)
                .await
                .ok()
                .and_then(|v| v.status)
                .is_some_and(|s| !s.conditions.is_empty())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let waiting = rss(&op).await;
    rows.push(Row {
        figure: format!("RSS per 1,000 views ({} waiting for a missing log)", size.views),
        measured: (waiting - idle).max(0.0) / MIB * 1_000.0 / size.views as f64,
        goal: 8.0,
        unit: "MiB",
    });
    drop(op);
    common::delete_namespace(&client, &ns).await;

    // apply → Ready, one at a time, then many in-cluster views on one log.
    let (client, ns) = common::setup("bench-ready").await;
    let op = common::Operator::start_with_env(&ns, "bench", 15, &[("RUST_LOG", "info")]);
    common::create_yaml(&client, &ns, LOG).await.unwrap();
    let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
    let warm = vec!["warm".to_string()];
    create_views(&client, &ns, &warm, "orders").await;
    all(&warm, Duration::from_secs(300), "Ready", |n| {
        let mvs = mvs.clone();
        async move { ready(&mvs, &n).await }
    })
    .await;
    let mut times = Vec::new();
    for i in 0..size.singles {
        let name = format!("s{i}");
        let start = Instant::now();
        create_views(&client, &ns, std::slice::from_ref(&name), "orders").await;
        while !ready(&mvs, &name).await {
            assert!(start.elapsed() < Duration::from_secs(120), "{name} never Ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        times.push(start.elapsed());
    }
    times.sort();
    for (p, label) in [(0.5, "p50"), (0.99, "p99")] {
        rows.push(Row {
            figure: format!("apply → Ready, one view at a time, {label} of {}", size.singles),
            measured: percentile(&times, p).as_secs_f64(),
            goal: 1.0,
            unit: "s",
        });
    }
    let names: Vec<String> = (0..size.in_cluster).map(|i| format!("c{i}")).collect();
    let start = Instant::now();
    create_views(&client, &ns, &names, "orders").await;
    all(&names, Duration::from_secs(900), "Ready", |n| {
        let mvs = mvs.clone();
        async move { ready(&mvs, &n).await }
    })
    .await;
    let took = start.elapsed();
    let memory = rss(&op).await;
    let scale = 100.0 / size.in_cluster as f64;
    rows.push(Row {
        figure: format!(
            "{} in-cluster views on one log: all Ready (scaled to 100)",
            size.in_cluster
        ),
        measured: took.as_secs_f64() * scale,
        goal: 30.0,
        unit: "s",
    });
    rows.push(Row {
        figure: format!("{} in-cluster views on one log: RSS", size.in_cluster),
        measured: memory / MIB,
        goal: 64.0,
        unit: "MiB",
    });
    drop(op);
    common::delete_namespace(&client, &ns).await;

    if benching {
        println!("\noperator at scale (release build; ratio = measured / goal, ≤ 1.00 meets the goal)");
    } else {
        println!(
            "operator_scale: smoke run ok on the debug build with a few views: no measurement (`cargo bench` measures)"
        );
    }
    println!("{:<66} {:>10} {:>8} {:>6}", "figure", "measured", "goal", "ratio");
    for r in &rows {
        println!(
            "{:<66} {:>6.2} {:<3} {:>4.0} {:<3} {:>6.2}",
            r.figure,
            r.measured,
            r.unit,
            r.goal,
            r.unit,
            r.measured / r.goal
        );
    }
    println!(
        "idle RSS is {:.2} MiB anonymous (heap, stacks) and {:.2} MiB file-backed (pages of the binary's code and \
         data mapped from disk)",
        anonymous / MIB,
        file / MIB
    );
}
