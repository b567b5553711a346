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
//! - **bulk: views of backfill None on a shared table**: `BULK` in-cluster views (1,000; the environment
//!   variable `BULK` overrides it, in the smoke run too) created at once on a log whose shared views table
//!   exists, time until all are Ready ÷ the floor set by the calls they need. Goal ≤ 1.2. The calls one
//!   view *needs* are counted first: one view alone, from its creation until it is Ready, by the
//!   operator's own counters (`kappa_aws_calls_total`, `kappa_kubernetes_calls_total`; watches, opened
//!   once per controller, are left out), less the background (the calls of a quiet 5 s before it: lease
//!   renewals, the warm view's stream reads) over as long. Each call is put in a class (Kubernetes read
//!   or write, AWS read or write), and each class's time per call is measured by the bench itself: 400
//!   calls of the class against the same servers, 64 at a time (a ConfigMap GET and merge PATCH; a
//!   DescribeTable of the log table and a PutItem into a scratch table), elapsed ÷ 400: the servers' time
//!   per call when kept busy (the operator reconciles every view at once), not one call's round trip. The floor is BULK × Σ (calls needed × time per call) over
//!   the classes: how long the servers take to answer just the calls the views need. What the bulk
//!   itself called, per view, is printed beside what one view needs: calls beyond it are waste.
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
    bulk: usize,
}

const FULL: Size = Size { views: 1_000, singles: 20, in_cluster: 100, bulk: 1_000 };
const SMOKE: Size = Size { views: 20, singles: 3, in_cluster: 3, bulk: 3 };

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

/// The operator's call counters (`kappa_aws_calls_total`, `kappa_kubernetes_calls_total`): each series
/// (its labels) with its count; watches are left out.
async fn series(op: &common::Operator) -> std::collections::BTreeMap<String, f64> {
    let text = op.metrics().await.unwrap_or_default();
    text.lines()
        .filter(|l| class(l).is_some())
        .filter_map(|l| {
            let (labels, n) = l.rsplit_once(' ')?;
            Some((labels.to_string(), n.parse().ok()?))
        })
        .collect()
}

/// The calls of `series`, per class (see [`class`]).
fn by_class(
    series: &std::collections::BTreeMap<String, f64>,
) -> std::collections::BTreeMap<&'static str, f64> {
    let mut by_class = std::collections::BTreeMap::new();
    for (labels, n) in series {
        if let Some(class) = class(labels) {
            *by_class.entry(class).or_insert(0.0) += n;
        }
    }
    by_class
}

/// The class of a call counter's series: `kubernetes read` (get, list), `kubernetes write` (create,
/// update, patch, delete), `aws read`, `aws write`; None for watches and other lines.
fn class(line: &str) -> Option<&'static str> {
    if line.starts_with("kappa_aws_calls_total{") {
        return Some(match line.contains("mutating=\"true\"") {
            true => "aws write",
            false => "aws read",
        });
    }
    if !line.starts_with("kappa_kubernetes_calls_total{") {
        return None;
    }
    ["get", "list"]
        .iter()
        .any(|v| line.contains(&format!("verb=\"{v}\"")))
        .then_some("kubernetes read")
        .or_else(|| {
            ["create", "update", "patch", "delete"]
                .iter()
                .any(|v| line.contains(&format!("verb=\"{v}\"")))
                .then_some("kubernetes write")
        })
}

/// `after` less `before`, per series; the series that did not change are left out.
fn delta(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
) -> std::collections::BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, n)| *n != 0.0)
        .collect()
}

/// The servers' time per call of each class: `PROBES` calls, 64 at a time, elapsed ÷ `PROBES`.
async fn time_per_call(client: &kube::Client, ns: &str) -> std::collections::BTreeMap<&'static str, f64> {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Patch, PatchParams};
    const PROBES: usize = 400;
    async fn timed<F, Fut>(call: F) -> f64
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let start = Instant::now();
        futures::stream::iter(0..PROBES)
            .map(call)
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await;
        start.elapsed().as_secs_f64() / PROBES as f64
    }
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let probe: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bench-probe"}, "data": {"n": "0"}
    }))
    .unwrap();
    maps.create(&Default::default(), &probe).await.unwrap();
    let mut per_call = std::collections::BTreeMap::new();
    per_call.insert(
        "kubernetes read",
        timed(|_| {
            let maps = maps.clone();
            async move {
                maps.get("bench-probe").await.unwrap();
            }
        })
        .await,
    );
    per_call.insert(
        "kubernetes write",
        timed(|i| {
            let maps = maps.clone();
            async move {
                let patch = serde_json::json!({"data": {"n": i.to_string()}});
                maps.patch("bench-probe", &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .unwrap();
            }
        })
        .await,
    );
    let ddb = aws_sdk_dynamodb::Client::new(&common::aws_config().await);
    let log_table = common::log_table(client, ns, "orders").await;
    per_call.insert(
        "aws read",
        timed(|_| {
            let (ddb, table) = (ddb.clone(), log_table.clone());
            async move {
                ddb.describe_table().table_name(table).send().await.unwrap();
            }
        })
        .await,
    );
    let scratch = common::fresh_pk_sk_table(&ddb, "bench-probe").await;
    per_call.insert(
        "aws write",
        timed(|i| {
            let (ddb, table) = (ddb.clone(), scratch.clone());
            async move {
                use aws_sdk_dynamodb::types::AttributeValue::S;
                ddb.put_item()
                    .table_name(table)
                    .item("pk", S(format!("p{i}")))
                    .item("sk", S("s".into()))
                    .send()
                    .await
                    .unwrap();
            }
        })
        .await,
    );
    let _ = ddb.delete_table().table_name(&scratch).send().await;
    per_call
}

/// How many of `names` are Ready, by one list of the namespace's views.
async fn ready_among(mvs: &Api<MaterializedView>, names: &std::collections::BTreeSet<String>) -> usize {
    let Ok(list) = mvs.list(&Default::default()).await else {
        return 0;
    };
    list.items
        .iter()
        .filter(|v| v.metadata.name.as_ref().is_some_and(|n| names.contains(n)))
        .filter(|v| {
            v.status
                .as_ref()
                .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.is_true()))
        })
        .count()
}

/// A namespace of its own for `test`, an operator on it, the `orders` log and a first view `warm`, once
/// Ready: the shared views table exists before the measured views come.
async fn warm_namespace(test: &str) -> (kube::Client, String, common::Operator, Api<MaterializedView>) {
    let (client, ns) = common::setup(test).await;
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
    (client, ns, op, mvs)
}

/// The bulk phase (see the header): returns its rows, and prints the calls and the floor.
async fn bulk(bulk: usize) -> Vec<Row> {
    let (client, ns, op, mvs) = warm_namespace("bench-bulk").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The calls made with nothing to do (lease renewals, the warm view's stream reads), per second.
    let quiet = Duration::from_secs(5);
    let before = series(&op).await;
    tokio::time::sleep(quiet).await;
    let background = delta(&before, &series(&op).await);
    // What one view needs, alone: its calls from creation until it is Ready, less the background.
    let before = series(&op).await;
    let one = "one".to_string();
    let start = Instant::now();
    create_views(&client, &ns, std::slice::from_ref(&one), "orders").await;
    while !ready(&mvs, &one).await {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let window = start.elapsed().as_secs_f64() / quiet.as_secs_f64();
    let one_view: std::collections::BTreeMap<String, f64> = delta(&before, &series(&op).await)
        .into_iter()
        .map(|(l, n)| {
            let bg = background.get(&l).copied().unwrap_or(0.0) * window;
            (l, (n - bg).max(0.0))
        })
        .collect();
    let needed = by_class(&one_view);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let per_call = time_per_call(&client, &ns).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let names: Vec<String> = (0..bulk).map(|i| format!("b{i}")).collect();
    let waiting: std::collections::BTreeSet<String> = names.iter().cloned().collect();
    let before = series(&op).await;
    let reconciles = op.reconciles_of("MaterializedView").await;
    let start = Instant::now();
    create_views(&client, &ns, &names, "orders").await;
    loop {
        let done = ready_among(&mvs, &waiting).await;
        if done == bulk {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1800),
            "{} of {bulk} views not Ready after 30 minutes",
            bulk - done
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = start.elapsed().as_secs_f64();
    let bulk_calls = delta(&before, &series(&op).await);
    let reconciles = op.reconciles_of("MaterializedView").await - reconciles;
    let made = by_class(&bulk_calls);
    drop(op);
    common::delete_namespace(&client, &ns).await;

    let floor: f64 = needed
        .iter()
        .map(|(class, n)| bulk as f64 * n * per_call.get(class).copied().unwrap_or(0.0))
        .sum();
    println!(
        "\nbulk: {bulk} views of backfill None on a shared table; calls per view (watches left out), and the \
         servers' time per call (64 at a time)"
    );
    println!(
        "{:<18} {:>14} {:>16} {:>14}",
        "class", "one view needs", "the bulk made", "time per call"
    );
    for class in ["kubernetes read", "kubernetes write", "aws read", "aws write"] {
        println!(
            "{:<18} {:>14.1} {:>16.2} {:>11.2} ms",
            class,
            needed.get(class).copied().unwrap_or(0.0),
            made.get(class).copied().unwrap_or(0.0) / bulk as f64,
            per_call.get(class).copied().unwrap_or(0.0) * 1e3
        );
    }
    println!(
        "bulk: all Ready in {took:.2} s; floor {floor:.2} s (BULK × Σ calls needed × time per call); {:.2} \
         reconciles per view",
        reconciles as f64 / bulk as f64
    );
    println!("bulk: the calls, one view alone (less the background) | the bulk per view:");
    let mut labels: Vec<&String> = one_view.keys().chain(bulk_calls.keys()).collect();
    labels.sort();
    labels.dedup();
    for l in labels {
        println!(
            "  {:>5.1} | {:>7.2}  {l}",
            one_view.get(l).copied().unwrap_or(0.0),
            bulk_calls.get(l).copied().unwrap_or(0.0) / bulk as f64
        );
    }
    vec![Row {
        figure: format!("bulk: {bulk} views (backfill None, shared table) all Ready ÷ floor"),
        measured: took / floor.max(f64::MIN_POSITIVE),
        goal: 1.2,
        unit: "×",
    }]
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let mut size = if benching { FULL } else { SMOKE };
    if let Some(n) = std::env::var("BULK").ok().and_then(|n| n.parse().ok()) {
        size.bulk = n;
    }
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
    let (client, ns, op, mvs) = warm_namespace("bench-ready").await;
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

    rows.extend(bulk(size.bulk).await);

    if benching {
        // The binary measured: `cargo bench`'s own (bench profile, optimized like release) or
        // `KAPPA_OPERATOR_BINARY`.
        println!(
            "\noperator at scale ({}; ratio = measured / goal, ≤ 1.00 meets the goal)",
            common::operator_binary()
        );
    } else {
        println!(
            "operator_scale: smoke run ok on the debug build with a few views: no measurement (`cargo bench` measures)"
        );
    }
    println!("{:<66} {:>10} {:>8} {:>6}", "figure", "measured", "goal", "ratio");
    for r in &rows {
        println!(
            "{:<66} {:>6.2} {:<3} {:>5.1} {:<3} {:>6.2}",
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
