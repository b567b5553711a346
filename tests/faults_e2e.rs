//! Issue #14 item 7, end to end on the local stack: the backfill + live scenario with every AWS call of the
//! operator (the real binary) going through the project's fault-injection proxy (`hack/fault-proxy.py`),
//! first with no faults, then, in a fresh namespace and log, with 20% of every service's requests failing
//! (throttling, 5xx, connection resets). Each run: a log of 4,000 records of two types (orders and
//! payments, `pk` = entity, `sk` = 1, 2, 3… repeating across partitions), four in-cluster views (Latest,
//! Sum, Count in a dedicated table, Append) backfilled from an export while 1,000 more records arrive, the
//! operator SIGKILLed and restarted once mid-way; every view ends Live, caught up, and exactly equal to what
//! this test computes from the records it wrote; no view is ever Failed or Stalled, faults or not.
//!
//! The test's own writes and reads go straight to the AWS API server (they are not under test); only the
//! operator's calls meet faults. Times are printed, never asserted.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use bigdecimal::BigDecimal;
use common::Operator;
use common::faults::FaultProxy;
use common::scores::export_bucket;
use kappa_operator::crd::{EventLog, MaterializedView, ViewPhase};
use kube::{Api, Client};

const HISTORY: usize = 4_000;
const MORE: usize = 1_000;
/// Entities the records are spread over (`pk`); record `i` is event `i / ENTITIES + 1` of its entity.
const ENTITIES: usize = 101;
const STATUSES: &[&str] = &["new", "paid", "shipped", "cancelled|x#y"];
const PHASE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const KINDS: &[&str] = &["throttle", "5xx", "reset"];

fn log_yaml(bucket: &str) -> String {
    format!(
        r#"
apiVersion: kappa.dev/v1alpha1
kind: EventLog
metadata: {{name: shop}}
spec:
  recordTypes: [order, payment]
  table: {{sortKey: sk, orderingAttribute: seq}}
  fanOut: {{mode: Direct}}
  export: {{bucket: {bucket}, prefix: exports}}
  deletionPolicy: Delete
"#
    )
}

/// The four views: name, record types, projection, store.
const VIEWS: &[(&str, &str, &str, &str)] = &[
    (
        "latest",
        "[order]",
        "{mode: Latest, key: {partitionKey: 'O#{entity}'}, attributes: [{from: status}, {from: amount}, {from: seq}]}",
        "{table: Shared}",
    ),
    (
        "sum",
        "[payment]",
        "{mode: Sum, sumOf: amount, key: {partitionKey: 'C#{customer}'}}",
        "{table: Shared}",
    ),
    (
        "count",
        "[order, payment]",
        "{mode: Count, key: {partitionKey: 'S#{status}'}}",
        "{table: Dedicated}",
    ),
    (
        "append",
        "[payment]",
        "{mode: Append, key: {partitionKey: 'P#{customer}'}}",
        "{table: Shared}",
    ),
];

fn view_yaml(name: &str, types: &str, projection: &str, store: &str) -> String {
    format!(
        r#"
apiVersion: kappa.dev/v1alpha1
kind: MaterializedView
metadata: {{name: {name}}}
spec:
  eventLogRef: {{name: shop}}
  recordTypes: {types}
  projector: {{runtime: InCluster}}
  projection: {projection}
  store: {store}
  backfill: {{parallelism: 2}}
  deletionPolicy: Delete
"#
    )
}

/// Record `i` of the log.
#[derive(Clone, Debug)]
struct Record {
    i: usize,
    kind: &'static str,
    entity: String,
    pk: String,
    sk: String,
    status: &'static str,
    customer: String,
    amount: String,
}

fn record(i: usize) -> Record {
    let e = i % ENTITIES;
    let payment = e.is_multiple_of(3);
    let entity = format!("{}{e}", if payment { "p" } else { "o" });
    let sign = if i.is_multiple_of(7) { "-" } else { "" };
    Record {
        i,
        kind: if payment { "payment" } else { "order" },
        pk: format!("{}#{entity}", if payment { "PAY" } else { "ORDER" }),
        entity,
        sk: (i / ENTITIES + 1).to_string(),
        status: STATUSES[i * 7 % STATUSES.len()],
        customer: format!("c{}", i % 13),
        amount: format!("{sign}{}.{:02}", i % 1000, i % 97),
    }
}

fn item(r: &Record) -> HashMap<String, AttributeValue> {
    let s = |v: &str| AttributeValue::S(v.to_string());
    HashMap::from([
        ("pk".to_string(), s(&r.pk)),
        ("sk".to_string(), s(&r.sk)),
        ("type".to_string(), s(r.kind)),
        ("entity".to_string(), s(&r.entity)),
        ("status".to_string(), s(r.status)),
        ("customer".to_string(), s(&r.customer)),
        ("amount".to_string(), AttributeValue::N(r.amount.clone())),
        ("seq".to_string(), AttributeValue::N(r.i.to_string())),
    ])
}

fn dec(v: &str) -> BigDecimal {
    BigDecimal::from_str(v).unwrap_or_else(|e| panic!("{v:?} is not a number: {e}"))
}

/// What the four views hold (or must hold).
#[derive(Debug, Default, PartialEq)]
struct Views {
    /// entity → (status, amount, seq) of its order with the greatest seq.
    latest: BTreeMap<String, (String, BigDecimal, u64)>,
    /// customer → sum of its payments' amounts.
    sum: BTreeMap<String, BigDecimal>,
    /// status → number of records (orders and payments).
    count: BTreeMap<String, BigDecimal>,
    /// seq → (customer, entity, amount) of every payment.
    append: BTreeMap<u64, (String, String, BigDecimal)>,
    /// Items of the Append view (one per payment: no duplicate).
    append_items: usize,
}

fn expected(records: &[Record]) -> Views {
    let mut out = Views::default();
    for r in records {
        *out.count.entry(r.status.to_string()).or_default() += BigDecimal::from(1);
        if r.kind == "order" {
            let value = (r.status.to_string(), dec(&r.amount), r.i as u64);
            let slot = out.latest.entry(r.entity.clone()).or_insert(value.clone());
            if value.2 > slot.2 {
                *slot = value;
            }
        } else {
            *out.sum.entry(r.customer.clone()).or_default() += dec(&r.amount);
            out.append
                .insert(r.i as u64, (r.customer.clone(), r.entity.clone(), dec(&r.amount)));
            out.append_items += 1;
        }
    }
    out
}

/// Where each view lives: name → (table, key prefix), from its status.
async fn locations(mvs: &Api<MaterializedView>) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for (name, ..) in VIEWS {
        let status = mvs.get(name).await.unwrap().status.unwrap();
        out.insert(
            name.to_string(),
            (
                status.table_name.expect("a Live view names its table"),
                status.key_prefix.unwrap_or_default(),
            ),
        );
    }
    out
}

/// What the views hold, read back with full scans (marker items left out).
async fn actual(ddb: &aws_sdk_dynamodb::Client, at: &BTreeMap<String, (String, String)>) -> Views {
    let text = |item: &HashMap<String, AttributeValue>, name: &str| match item.get(name) {
        Some(AttributeValue::S(s)) | Some(AttributeValue::N(s)) => s.clone(),
        other => format!("{other:?}"),
    };
    let mut scans: BTreeMap<String, Vec<HashMap<String, AttributeValue>>> = BTreeMap::new();
    for (table, _) in at.values() {
        if !scans.contains_key(table) {
            scans.insert(table.clone(), common::scan_all(ddb, table).await);
        }
    }
    let mut out = Views::default();
    for (view, (table, prefix)) in at {
        for item in &scans[table] {
            let pk = text(item, "pk");
            if pk.contains("~applied#") {
                continue;
            }
            let Some(key) = pk.strip_prefix(prefix.as_str()) else {
                continue;
            };
            match view.as_str() {
                "latest" => {
                    let Some(entity) = key.strip_prefix("O#") else {
                        continue;
                    };
                    let value = (
                        text(item, "status"),
                        dec(&text(item, "amount")),
                        text(item, "seq").parse().unwrap(),
                    );
                    out.latest.insert(entity.to_string(), value);
                }
                "sum" => {
                    if let (Some(customer), Some(AttributeValue::N(sum))) =
                        (key.strip_prefix("C#"), item.get("sum"))
                    {
                        out.sum.insert(customer.to_string(), dec(sum));
                    }
                }
                "count" => {
                    if let (Some(status), Some(AttributeValue::N(count))) =
                        (key.strip_prefix("S#"), item.get("count"))
                    {
                        out.count.insert(status.to_string(), dec(count));
                    }
                }
                "append" => {
                    let Some(customer) = key.strip_prefix("P#") else {
                        continue;
                    };
                    let value = (
                        customer.to_string(),
                        text(item, "entity"),
                        dec(&text(item, "amount")),
                    );
                    out.append.insert(text(item, "seq").parse().unwrap(), value);
                    out.append_items += 1;
                }
                _ => unreachable!(),
            }
        }
    }
    out
}

/// Up to five keys where two maps differ, for a failure message.
fn diff<K: Ord + std::fmt::Debug, V: PartialEq + std::fmt::Debug>(
    got: &BTreeMap<K, V>,
    want: &BTreeMap<K, V>,
) -> String {
    let mut lines = Vec::new();
    for (k, v) in want {
        match got.get(k) {
            Some(g) if g == v => {}
            g => lines.push(format!("  {k:?}: want {v:?}, got {g:?}")),
        }
    }
    for (k, g) in got {
        if !want.contains_key(k) {
            lines.push(format!("  {k:?}: want nothing, got {g:?}"));
        }
    }
    let n = lines.len();
    lines.truncate(5);
    format!("{n} keys differ\n{}", lines.join("\n"))
}

fn describe(got: &Views, want: &Views) -> String {
    format!(
        "latest: {}\nsum: {}\ncount: {}\nappend: {} ({} items for {} payments)",
        diff(&got.latest, &want.latest),
        diff(&got.sum, &want.sum),
        diff(&got.count, &want.count),
        diff(&got.append, &want.append),
        got.append_items,
        want.append_items
    )
}

/// Watches the views every second from its start: the first time one is `Failed` or has `Stalled=True`
/// is kept (and fails the test at the next [`Watch::check`]); the greatest
/// `status.backfill.transientErrors` seen is kept.
struct Watch {
    bad: Arc<Mutex<Option<String>>>,
    max_transient: Arc<AtomicI64>,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    fn start(mvs: Api<MaterializedView>) -> Watch {
        let bad = Arc::new(Mutex::new(None));
        let max_transient = Arc::new(AtomicI64::new(0));
        let (b, m) = (bad.clone(), max_transient.clone());
        let task = tokio::spawn(async move {
            loop {
                if let Ok(list) = mvs.list(&Default::default()).await {
                    for v in list.items {
                        let name = v.metadata.name.clone().unwrap_or_default();
                        let Some(s) = v.status else { continue };
                        if let Some(t) = s.backfill.as_ref().map(|b| b.transient_errors) {
                            m.fetch_max(t, Ordering::Relaxed);
                        }
                        let stalled = s.conditions.iter().find(|c| c.type_ == "Stalled" && c.is_true());
                        let failed = s.phase == Some(ViewPhase::Failed);
                        if (failed || stalled.is_some()) && b.lock().unwrap().is_none() {
                            *b.lock().unwrap() = Some(format!(
                                "view {name} is {:?}{}; its status: {}",
                                s.phase,
                                stalled
                                    .map(|c| format!(" with Stalled=True ({}: {})", c.reason, c.message))
                                    .unwrap_or_default(),
                                serde_json::to_string(&s).unwrap()
                            ));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Watch { bad, max_transient, task }
    }

    /// Fails the test, with the operator's log, if a view was ever seen Failed or Stalled.
    fn check(&self, op: &Operator) {
        if let Some(bad) = self.bad.lock().unwrap().clone() {
            panic!(
                "{bad}\noperator log {} (last lines):\n{}",
                op.log_path.display(),
                tail(&op.log(), 40)
            );
        }
    }

    fn max_transient(&self) -> i64 {
        self.max_transient.load(Ordering::Relaxed)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Polls `check` every second (checking the watch too) until it answers `Some`, or fails after `timeout`
/// with `what` and `explain()`.
async fn wait_for<T, F, Fut>(
    watch: &Watch,
    op: &Operator,
    timeout: Duration,
    what: &str,
    mut check: F,
    explain: impl AsyncFnOnce() -> String,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        watch.check(op);
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            let why = explain().await;
            panic!(
                "timed out after {timeout:?} waiting for {what}: {why}\noperator log {} (last lines):\n{}",
                op.log_path.display(),
                tail(&op.log(), 40)
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn view_states(mvs: &Api<MaterializedView>) -> String {
    let Ok(list) = mvs.list(&Default::default()).await else {
        return "cannot list the views".into();
    };
    list.items
        .iter()
        .map(|v| {
            format!(
                "{}: {}",
                v.metadata.name.clone().unwrap_or_default(),
                serde_json::to_string(&v.status).unwrap()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One run of the scenario in a namespace of its own, the operator's AWS endpoint being `endpoint`.
/// Returns the time from the views' creation until all four were exact, and the greatest
/// `transientErrors` seen.
async fn run(client: &Client, aws: &aws_config::SdkConfig, endpoint: &str, label: &str) -> (Duration, i64) {
    let ns = common::namespace(client, &format!("faults-e2e-{label}")).await;
    let ddb = aws_sdk_dynamodb::Client::new(aws);
    let (_s3, bucket) = export_bucket(aws, &ns).await;
    let env = [("AWS_ENDPOINT_URL", endpoint)];
    let mut op = Operator::start_with_env(&ns, "run0", 5, &env);
    println!("{label}: namespace {ns}, operator log {}", op.log_path.display());
    let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
    let watch = Watch::start(mvs.clone());

    common::create_yaml(client, &ns, &log_yaml(&bucket))
        .await
        .unwrap();
    let logs: Api<EventLog> = Api::namespaced(client.clone(), &ns);
    let table = wait_for(
        &watch,
        &op,
        Duration::from_secs(300),
        "the EventLog's table and stream",
        || async {
            let t = logs.get("shop").await.ok()?.status?.table?;
            t.stream_arn?;
            Some(t.name)
        },
        async || format!("{:?}", logs.get("shop").await.map(|l| l.status)),
    )
    .await;
    let all: Vec<Record> = (0..HISTORY + MORE).map(record).collect();
    common::put_items(&ddb, &table, all[..HISTORY].iter().map(item).collect()).await;
    // The history is older than the export time minus the band margin (30 s): the backfill counts it.
    tokio::time::sleep(Duration::from_secs(35)).await;

    let started = Instant::now();
    for (name, types, projection, store) in VIEWS {
        common::create_yaml(client, &ns, &view_yaml(name, types, projection, store))
            .await
            .unwrap();
    }
    wait_for(
        &watch,
        &op,
        Duration::from_secs(300),
        "every view's export to start",
        || async {
            let vs = mvs.list(&Default::default()).await.ok()?.items;
            let started = vs
                .iter()
                .filter(|v| {
                    v.status
                        .as_ref()
                        .and_then(|s| s.backfill.as_ref()?.export_arn.clone())
                        .is_some()
                })
                .count();
            (started == VIEWS.len()).then_some(())
        },
        async || view_states(&mvs).await,
    )
    .await;
    // More records while the backfills run; the operator is SIGKILLed and restarted half-way.
    for (i, chunk) in all[HISTORY..].chunks(100).enumerate() {
        common::put_items(&ddb, &table, chunk.iter().map(item).collect()).await;
        if i == 4 {
            op.kill();
            op = Operator::start_with_env(&ns, "run1", 5, &env);
            println!(
                "{label}: operator killed, restarted; log {}",
                op.log_path.display()
            );
        }
        watch.check(&op);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    wait_for(
        &watch,
        &op,
        Duration::from_secs(600),
        "every view Live and caught up",
        || async {
            let vs = mvs.list(&Default::default()).await.ok()?.items;
            let done = vs
                .iter()
                .filter(|v| {
                    let s = v.status.as_ref();
                    s.and_then(|s| s.phase) == Some(ViewPhase::Live)
                        && s.and_then(|s| s.live.as_ref()).is_some_and(|l| l.caught_up)
                })
                .count();
            (done == VIEWS.len()).then_some(())
        },
        async || view_states(&mvs).await,
    )
    .await;
    let at = locations(&mvs).await;
    let want = expected(&all);
    let last = Mutex::new(Views::default());
    wait_for(
        &watch,
        &op,
        Duration::from_secs(180),
        "the four views exact",
        || async {
            let got = actual(&ddb, &at).await;
            let exact = got == want;
            *last.lock().unwrap() = got;
            exact.then_some(())
        },
        async || describe(&last.lock().unwrap(), &want),
    )
    .await;
    let elapsed = started.elapsed();
    watch.check(&op);
    let max_transient = watch.max_transient();
    println!(
        "{label}: exact after {:.1}s; max status.backfill.transientErrors seen: {max_transient}",
        elapsed.as_secs_f64()
    );
    drop(watch);
    drop(op);
    common::delete_namespace(client, &ns).await;
    (elapsed, max_transient)
}

/// The sum of the proxy's injected faults over services and kinds.
fn faults_injected(counts: &serde_json::Value) -> u64 {
    counts["counts"]
        .as_object()
        .map(|services| {
            services
                .values()
                .flat_map(|c| c["faults"].as_object().into_iter().flat_map(|f| f.values()))
                .filter_map(|n| n.as_u64())
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn backfill_and_live_stay_exact_through_a_fifth_of_aws_calls_failing() {
    let client = common::kube_client().await;
    common::install_crds(&client).await;
    let aws = common::aws_config().await;
    let proxy = FaultProxy::start(&common::stack_var("AWS_ENDPOINT_URL"));
    let endpoint = proxy.endpoint();

    proxy.set(&[("*", 0.0)], KINDS).await;
    let (clean, clean_transient) =
        tokio::time::timeout(PHASE_TIMEOUT, run(&client, &aws, &endpoint, "clean"))
            .await
            .expect("the fault-free run within 15 minutes");
    let counts = proxy.counts().await;
    assert_eq!(faults_injected(&counts), 0, "no fault at rate 0: {counts}");

    proxy
        .configure(serde_json::json!({"rate": {"*": 0.2}, "kinds": KINDS, "resetCounts": true}))
        .await;
    let (faulted, faulted_transient) =
        tokio::time::timeout(PHASE_TIMEOUT, run(&client, &aws, &endpoint, "faulted"))
            .await
            .expect("the faulted run within 15 minutes");
    let counts = proxy.counts().await;
    let injected = faults_injected(&counts);
    let per_service: BTreeMap<&String, (&serde_json::Value, &serde_json::Value)> = counts["counts"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(s, c)| (s, (&c["requests"], &c["faults"])))
                .collect()
        })
        .unwrap_or_default();
    println!("faults injected: {injected}; per service (requests, faults): {per_service:?}");
    println!(
        "max status.backfill.transientErrors seen: fault-free {clean_transient}, faulted {faulted_transient}"
    );
    println!(
        "fault-free: {:.1}s, faulted: {:.1}s, ratio: {:.2} (goal <= 3)",
        clean.as_secs_f64(),
        faulted.as_secs_f64(),
        faulted.as_secs_f64() / clean.as_secs_f64()
    );
    assert!(
        injected > 0,
        "the proxy injected no fault in the faulted run: {counts}"
    );
}
