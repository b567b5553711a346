//! Break probes (branch break15) of the runtime wakes and the pacer's burst, end to end on the local
//! stack.

mod common;

use std::time::Duration;

use common::Operator;
use kappa_operator::crd::MaterializedView;
use kube::Api;

fn view_yaml(name: &str) -> String {
    common::orders_count_view(name)
}

async fn ready(mvs: &Api<MaterializedView>, name: &str) -> bool {
    common::view_ready(mvs, name).await
}

/// A namespace of its own for `test`, an operator on it, the `orders` log and view `name`, once Ready.
async fn one_ready_view(test: &str, name: &str) -> (kube::Client, String, Operator, Api<MaterializedView>) {
    let (client, ns) = common::setup(test).await;
    let op = Operator::start(&ns, "solo", 5);
    eprintln!("operator log: {}", op.log_path.display());
    common::create_yaml(&client, &ns, common::ORDERS_LOG)
        .await
        .unwrap();
    let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
    common::create_yaml(&client, &ns, &view_yaml(name)).await.unwrap();
    common::eventually(Duration::from_secs(120), &format!("{name} Ready"), || async {
        ready(&mvs, name).await.then_some(())
    })
    .await;
    (client, ns, op, mvs)
}

fn reconciled_lines(log: &str, name: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("reconciled") && l.contains("MaterializedView") && l.contains(name))
        .count()
}

/// Input: an EventLog and one in-cluster view (shared table exists), then 16 more in-cluster views
/// (`backfill: {source: None}`) created at once; apply → Ready measured per view (polled every 50 ms),
/// then reconciles counted over 20 s of quiet.
/// Expected: each view Ready within a few seconds (the claim is ~1 s for one view); quiet afterwards
/// (≤ ~2 reconciles per view per 20 s: floor doubling to 15 s).
/// PASSES: single view Ready in 0.77 s; 16 at once Ready in 1.8-4.1 s (slowest 4.11 s, so ~1 s holds
/// for one view only); 0 reconciles (metric) in 20 s of quiet afterwards.
#[tokio::test]
async fn many_in_cluster_views_at_once_are_ready_fast_and_then_quiet() {
    let (client, ns, op, mvs) = one_ready_view("b15-many", "warm").await;
    // One alone, on the existing table: the claim.
    let t = std::time::Instant::now();
    common::create_yaml(&client, &ns, &view_yaml("single"))
        .await
        .unwrap();
    while !ready(&mvs, "single").await {
        assert!(t.elapsed() < Duration::from_secs(60), "single never Ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let single = t.elapsed();
    let names: Vec<String> = (0..16).map(|i| format!("v{i}")).collect();
    let t = std::time::Instant::now();
    for n in &names {
        common::create_yaml(&client, &ns, &view_yaml(n)).await.unwrap();
    }
    let mut times = std::collections::BTreeMap::new();
    while times.len() < names.len() {
        assert!(t.elapsed() < Duration::from_secs(90), "not all Ready: {times:?}");
        for n in &names {
            if !times.contains_key(n) && ready(&mvs, n).await {
                times.insert(n.clone(), t.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let slowest = times.values().max().copied().unwrap();
    let before = op.reconciles_of("MaterializedView").await;
    let log_before = op.log();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let quiet = op.reconciles_of("MaterializedView").await - before;
    let log_after = op.log();
    let per_view: Vec<usize> = names
        .iter()
        .map(|n| {
            reconciled_lines(&log_after, &format!("\"{n}\""))
                - reconciled_lines(&log_before, &format!("\"{n}\""))
        })
        .collect();
    eprintln!(
        "single {single:?}; 16 at once: slowest {slowest:?} {times:?}; quiet 20 s: {quiet} reconciles; per view from log {per_view:?}"
    );
    // The times are printed, not asserted (tests assert behaviour, never timings; they were 0.77 s and
    // 1.8-4.1 s alone on 2 cores): every view became Ready (above), and they are quiet afterwards.
    assert!(
        quiet <= 18 * 3,
        "{quiet} reconciles in 20 s of quiet for 18 views"
    );
    drop(op);
    common::delete_namespace(&client, &ns).await;
}

/// Input: one in-cluster view, Ready; then its shared views table is deleted by hand, so the live path
/// keeps failing (its state flips failing / retrying, each flip a wake). Reconciles counted for 30 s.
/// Expected: no hot loop: ≤ ~1 reconcile a second after the burst (≤ 36 in 30 s); the live path goes
/// on projecting the records written (status.live.recordsApplied reaches the number written).
/// PASSES: the live path logs one ResourceNotFoundException, the next reconcile re-creates the table,
/// 3-5 reconciles in 30 s, Ready/Live throughout; written 142, applied 142.
#[tokio::test]
async fn a_view_whose_table_is_deleted_is_not_reconciled_in_a_hot_loop() {
    let (client, ns, op, mvs) = one_ready_view("b15-gone", "gone").await;
    let ddb = aws_sdk_dynamodb::Client::new(&common::aws_config().await);
    let table = mvs.get("gone").await.unwrap().status.unwrap().table_name.unwrap();
    ddb.delete_table().table_name(&table).send().await.unwrap();
    // Something for the live path to write (and fail on): records in the log.
    let log_table = common::log_table(&client, &ns, "orders").await;
    let before = op.reconciles_of("MaterializedView").await;
    let t = std::time::Instant::now();
    let mut i = 0;
    let mut written = 0i64;
    while t.elapsed() < Duration::from_secs(30) {
        let out = ddb
            .put_item()
            .table_name(&log_table)
            .item(
                "pk",
                aws_sdk_dynamodb::types::AttributeValue::S(format!("order#{i}")),
            )
            .item("sk", aws_sdk_dynamodb::types::AttributeValue::S("order".into()))
            .item("type", aws_sdk_dynamodb::types::AttributeValue::S("order".into()))
            .item(
                "id",
                aws_sdk_dynamodb::types::AttributeValue::S(format!("{}", i % 3)),
            )
            .send()
            .await;
        if out.is_ok() {
            written += 1;
        } else {
            eprintln!("put {i}: {out:?}");
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let runs = op.reconciles_of("MaterializedView").await - before;
    let s = mvs.get("gone").await.unwrap().status.unwrap();
    eprintln!(
        "{runs} reconciles in 30 s; phase {:?}; live {:?}; conditions {:?}",
        s.phase,
        s.live,
        s.conditions
            .iter()
            .map(|c| (&c.type_, &c.status, &c.reason))
            .collect::<Vec<_>>()
    );
    assert!(runs <= 36, "{runs} reconciles in 30 s");
    // Correct results unchanged: every record written after the table came back is projected
    // (the views table is re-created by the operator; records before that may be lost with it).
    let applied = common::eventually(
        Duration::from_secs(30),
        "live path applied every record",
        || async {
            let s = mvs.get("gone").await.ok()?.status?;
            let n = s.live?.records_applied;
            (n >= written).then_some(n)
        },
    )
    .await;
    eprintln!("written {written}, applied {applied}");
    drop(op);
    common::delete_namespace(&client, &ns).await;
}

/// Input: a Ready in-cluster view whose labels are patched every 100 ms for 20 s (watch events that
/// change nothing the pacer reads), then the view deleted and re-created at once under the same name
/// (the pacer still holds the old object's entry, same generation 1; a late wake of the old task).
/// Expected: ≤ ~6 reconciles in the 20 s of patches (floor 1, 2, 4, 8 s); the re-created view Ready
/// within ~2 s.
/// PASSES: 2 reconciles under 180 label patches in 20 s; deleted in 0.43 s; re-created Ready in 0.67 s.
#[tokio::test]
async fn label_patches_on_a_ready_view_then_recreate_under_the_same_name() {
    use kube::api::{DeleteParams, Patch, PatchParams};
    let (client, ns, op, mvs) = one_ready_view("b15-labels", "lbl").await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let before = op.reconciles_of("MaterializedView").await;
    let t = std::time::Instant::now();
    let mut i = 0;
    while t.elapsed() < Duration::from_secs(20) {
        let patch = serde_json::json!({"metadata": {"labels": {"poke": i.to_string()}}});
        let _ = mvs
            .patch("lbl", &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let runs = op.reconciles_of("MaterializedView").await - before;
    mvs.delete("lbl", &DeleteParams::default()).await.unwrap();
    let gone = std::time::Instant::now();
    while mvs.get("lbl").await.is_ok() {
        assert!(gone.elapsed() < Duration::from_secs(60), "lbl not deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deleted_in = gone.elapsed();
    let t = std::time::Instant::now();
    common::create_yaml(&client, &ns, &view_yaml("lbl"))
        .await
        .unwrap();
    while !ready(&mvs, "lbl").await {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "re-created lbl never Ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = t.elapsed();
    eprintln!(
        "{runs} reconciles under {i} label patches in 20 s; deleted in {deleted_in:?}; re-created Ready in {again:?}"
    );
    // The re-created view's time to Ready is printed, not asserted (0.67 s alone on 2 cores): it became
    // Ready (above) under its old name.
    assert!(runs <= 6, "{runs} reconciles in 20 s of label patches");
    drop(op);
    common::delete_namespace(&client, &ns).await;
}
