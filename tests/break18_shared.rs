//! Break probes (branch break-shared, helper 18) of the shared stream reader (src/runtime/shared_stream.rs)
//! end to end on the local stack: operator restarts with views at different checkpoints, and checkpoints
//! edited by hand. Each probe says its input, what it expects, and whether it passes; the failing ones
//! show real faults and are kept failing.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use common::Operator;
use common::orders_counts::{
    OrdersLog, counts, expected, order, orders_log, readers, sample_readers, wait_ready,
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};

/// Waits until every view in `views` counts `want`; on timeout returns the last counts seen.
async fn all_count(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    views: &[&str],
    want: &BTreeMap<String, i64>,
    timeout: Duration,
) -> Result<(), BTreeMap<String, BTreeMap<String, i64>>> {
    let t = std::time::Instant::now();
    loop {
        let got = counts(ddb, table).await;
        if views.iter().all(|v| got.get(*v) == Some(want)) {
            return Ok(());
        }
        if t.elapsed() > timeout {
            return Err(got);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Rewrites view `view`'s stream checkpoint (ConfigMap `<view>-stream`, key `checkpoint`) with `edit`.
async fn edit_checkpoint(
    client: &kube::Client,
    ns: &str,
    view: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let name = format!("{view}-stream");
    let cm = cms.get(&name).await.unwrap();
    let text = cm.data.unwrap().remove("checkpoint").unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut json);
    eprintln!("{name}: checkpoint {text} edited to {json}");
    cms.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"data": {"checkpoint": json.to_string()}})),
    )
    .await
    .unwrap();
}

/// Input: the `orders` log (one stream shard on the local stack) with 10 records and one in-cluster Count
/// view `a`, which counts them. The operator is stopped; `a`'s stream checkpoint is edited by hand so that
/// its shard is `{"state":"finished"}` (an odd value: the shard is open); the operator is started again
/// with `a` its only view, so `a` subscribes first and seeds the log's leader reader at that position.
/// Then two new Count views `b` and `c` are created (no checkpoint: they read from the stream's oldest
/// record) and 20 more records are written.
/// Expected: `a`'s odd checkpoint is `a`'s business: `b` and `c`, which have their own (empty)
/// checkpoints, each count all 30 records within 90 s, as they would with a reader each; never more than
/// 2 readers of the stream.
/// PASSES since the fix after 1162f27 (see below); FAILED on 1162f27, 100 s): `b` counted all 30, `c` nothing at all in 90 s (no item of `c` in the views
/// table); gauges (readers, joined, catching up) = (2, 1, 2): the leader plus `b`'s own reader still reading
/// after it caught up, `a` joined, `b` reading and `c` waiting for the permit; most readers at once 2. Cause: the leader was seeded at `a`'s position (shared_stream.rs,
/// `Subscription::poll`, `Mode::Unjoined`: "None if state.seeding == Seeding::Open => seed"), so it never
/// reads the "finished" shard and its window start and end say the shard is finished. `Window::join`
/// finds every other view Behind on that shard (its position `Reading`, the window's `Finished`: the
/// `_ => return Join::Behind` arm), so the first of them catches up with its own reader and, caught up,
/// still cannot join: `after_catch_up` only leaves `CatchingUp` on `Join::At` or `Join::Ahead`, so it
/// keeps the log's one catch-up permit forever, and every later view waits in `acquire_owned` without
/// reading a record. One view's bad checkpoint stalls every other view of the log; a reader per view
/// (the old design) would not.
#[tokio::test]
async fn a_view_whose_checkpoint_says_its_open_shard_is_finished_does_not_stall_the_others() {
    let OrdersLog { client, ns, mut op, log_table, ddb, mvs } = orders_log("b18-finished").await;
    common::create_yaml(&client, &ns, &common::orders_count_view("a"))
        .await
        .unwrap();
    wait_ready(&mvs, "a").await;
    let table = mvs.get("a").await.unwrap().status.unwrap().table_name.unwrap();
    common::put_items(&ddb, &log_table, (0..10).map(order).collect()).await;
    all_count(&ddb, &table, &["a"], &expected(10), Duration::from_secs(60))
        .await
        .expect("a counts the first 10 records");
    // Let the checkpoint write land, then stop the operator and edit a's checkpoint.
    tokio::time::sleep(Duration::from_secs(2)).await;
    op.kill();
    edit_checkpoint(&client, &ns, "a", |json| {
        for (_, position) in json["shards"].as_object_mut().unwrap().iter_mut() {
            *position = serde_json::json!({"state": "finished"});
        }
    })
    .await;
    let op = Operator::start(&ns, "solo2", 5);
    eprintln!("restarted operator log: {}", op.log_path.display());
    let (most, sampler) = sample_readers(op.http_port);
    // a alone subscribes first (its reader seeds the leader).
    common::eventually(Duration::from_secs(60), "a's reader subscribed", || async {
        readers(&op).await.filter(|(r, j, _)| *r >= 1 && *j >= 1)
    })
    .await;
    for name in ["b", "c"] {
        common::create_yaml(&client, &ns, &common::orders_count_view(name))
            .await
            .unwrap();
    }
    common::put_items(&ddb, &log_table, (10..30).map(order).collect()).await;
    let result = all_count(&ddb, &table, &["b", "c"], &expected(30), Duration::from_secs(90)).await;
    let gauges = readers(&op).await;
    sampler.abort();
    let most = most.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "gauges (readers, joined, catching up) {gauges:?}; most readers at once {most}; counts {result:?}"
    );
    assert!(
        result.is_ok(),
        "b and c did not both count the 30 records in 90 s (want {:?} each); counts {:?}; gauges (readers, joined, catching up) {gauges:?}",
        expected(30),
        result.err()
    );
    assert!(most <= 2, "{most} readers at once");
    drop(op);
    common::delete_namespace(&client, &ns).await;
}

/// Input: the `orders` log with 60 records and four in-cluster Count views `v0`..`v3`, all counting them.
/// The operator is stopped; 60 more records are written while it is down; then the views' checkpoints are
/// put at different places by hand: `v1`'s ConfigMap checkpoint emptied (`{"shards":{}}`: read from the
/// stream's oldest record), `v2`'s shard put after the stream's first record (read from the stream),
/// `v0` and `v3` left where they were. The operator is started again and 60 more records written at once.
/// Expected: the views catch up (at most one catch-up reader beside the leader: never more than 2
/// readers sampled every 100 ms) and every view counts each of the 180 records exactly once (the
/// idempotency markers absorb what is read again), within 120 s; then all joined.
/// PASSES (run on 1162f27, 14 s): every view counted 180 exactly; most readers sampled at once 1 (the
/// catch-ups were quicker than the 100 ms sampling); settled (readers, joined, catching up) = (1, 4, 0).
#[tokio::test]
async fn a_restart_with_views_at_different_checkpoints_catches_up_one_at_a_time_and_counts_exactly() {
    let OrdersLog { client, ns, mut op, log_table, ddb, mvs } = orders_log("b18-restart").await;
    common::put_items(&ddb, &log_table, (0..60).map(order).collect()).await;
    let names = ["v0", "v1", "v2", "v3"];
    for name in names {
        common::create_yaml(&client, &ns, &common::orders_count_view(name))
            .await
            .unwrap();
    }
    for name in names {
        wait_ready(&mvs, name).await;
    }
    let table = mvs.get("v0").await.unwrap().status.unwrap().table_name.unwrap();
    all_count(&ddb, &table, &names, &expected(60), Duration::from_secs(90))
        .await
        .expect("the views count the first 60 records");
    tokio::time::sleep(Duration::from_secs(2)).await;
    op.kill();
    common::put_items(&ddb, &log_table, (60..120).map(order).collect()).await;
    // The stream's first record, for v2's checkpoint.
    let logs: Api<kappa_operator::crd::EventLog> = Api::namespaced(client.clone(), &ns);
    let arn = logs
        .get("orders")
        .await
        .unwrap()
        .status
        .unwrap()
        .table
        .unwrap()
        .stream_arn
        .unwrap();
    let streams = aws_sdk_dynamodbstreams::Client::new(&common::aws_config().await);
    let shard = streams
        .describe_stream()
        .stream_arn(&arn)
        .send()
        .await
        .unwrap()
        .stream_description
        .unwrap()
        .shards
        .unwrap()[0]
        .shard_id
        .clone()
        .unwrap();
    let it = streams
        .get_shard_iterator()
        .stream_arn(&arn)
        .shard_id(&shard)
        .shard_iterator_type(aws_sdk_dynamodbstreams::types::ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();
    let first = streams
        .get_records()
        .shard_iterator(it)
        .limit(1)
        .send()
        .await
        .unwrap()
        .records
        .unwrap()[0]
        .dynamodb
        .as_ref()
        .unwrap()
        .sequence_number
        .clone()
        .unwrap();
    edit_checkpoint(&client, &ns, "v1", |json| {
        *json = serde_json::json!({"shards": {}})
    })
    .await;
    edit_checkpoint(&client, &ns, "v2", |json| {
        let mut shards = serde_json::Map::new();
        shards.insert(
            shard.clone(),
            serde_json::json!({"state": "reading", "after": first}),
        );
        *json = serde_json::json!({"shards": shards})
    })
    .await;
    let op = Operator::start(&ns, "solo2", 5);
    eprintln!("restarted operator log: {}", op.log_path.display());
    let (most, sampler) = sample_readers(op.http_port);
    common::put_items(&ddb, &log_table, (120..180).map(order).collect()).await;
    let result = all_count(&ddb, &table, &names, &expected(180), Duration::from_secs(120)).await;
    let settled = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Some(g) = readers(&op).await.filter(|(_, j, c)| *j >= 4 && *c == 0) {
                return g;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    sampler.abort();
    let most = most.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("settled gauges {settled:?}; most readers at once {most}; counts {result:?}");
    assert!(
        result.is_ok(),
        "not every view counted the 180 records exactly once (want {:?}): {:?}",
        expected(180),
        result.err()
    );
    assert!(most <= 2, "{most} readers at once");
    assert!(
        settled.is_ok(),
        "the views did not all join: {:?}",
        readers(&op).await
    );
    drop(op);
    common::delete_namespace(&client, &ns).await;
}

/// Input: one in-cluster Count view of the `orders` log, Ready and joined to the shared reader; then the
/// view is deleted (the log's only reader of the stream), and the gauges are read for 30 s.
/// Expected: nobody reads the log's stream any more, so `kappa_stream_readers` for it drops to 0 (the
/// leader stops at its next poll), and the views gauges to 0.
/// PASSES since the fix after 1162f27 (see below); FAILED on 1162f27): 30 s after the view was gone the gauges still say (readers, joined, catching up)
/// = (1, 0, 0): they keep the last value published with a leader
/// present. Cause: shared_stream.rs publishes the gauges only from `Hub::publish`, called on seed, on a
/// leader's failure and from `Member::new/set/drop`; the last view's `Member::drop` publishes while
/// `state.window` is still `Some` (readers = 1), then the `Hub` is dropped with no `Drop` that sets the
/// gauges to 0 (or removes the stream's series), and `lead` returns on `hub.upgrade()` failing without
/// publishing. A dashboard or alert on `kappa_stream_readers` then counts a reader for a log nobody reads.
#[tokio::test]
async fn deleting_the_last_view_of_a_log_sets_its_reader_gauge_to_zero() {
    let OrdersLog { client, ns, op, mvs, .. } = orders_log("b18-gauge").await;
    common::create_yaml(&client, &ns, &common::orders_count_view("only"))
        .await
        .unwrap();
    wait_ready(&mvs, "only").await;
    common::eventually(Duration::from_secs(60), "the view joined", || async {
        readers(&op).await.filter(|(r, j, _)| *r == 1 && *j == 1)
    })
    .await;
    mvs.delete("only", &Default::default()).await.unwrap();
    common::eventually(Duration::from_secs(60), "the view gone", || async {
        mvs.get("only").await.is_err().then_some(())
    })
    .await;
    let t = std::time::Instant::now();
    let mut last = None;
    while t.elapsed() < Duration::from_secs(30) {
        last = readers(&op).await;
        if last == Some((0, 0, 0)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("gauges (readers, joined, catching up) 30 s after the last view went: {last:?}");
    assert_eq!(
        last,
        Some((0, 0, 0)),
        "the log's stream is read by nobody, yet the gauges say (readers, joined, catching up) = {last:?}"
    );
    drop(op);
    common::delete_namespace(&client, &ns).await;
}

/// Input: the `orders` log; a Sum view `sum` (`sumOf: amount`, `onRecordError: Fail`) and two Count views
/// `c1`, `c2`, all in-cluster and joined to the shared reader; then 20 records with a numeric `amount`,
/// one whose `amount` is the string "abc" (the Sum view cannot apply it and stops before its batch,
/// rewinding and retrying every 30 s), and 20 more numeric ones.
/// Expected: `c1` and `c2` count all 41 records within 60 s (the stopped view holds neither the leader
/// nor the catch-up permit); `sum` reports the record in `status.live.failed` (or a condition).
/// PASSES (run on 1162f27, 6 s): `c1` and `c2` counted 41 each; `sum` Ready False / Stalled True, reason
/// RecordError, naming record order#20 and its stream sequence number.
#[tokio::test]
async fn a_sum_view_stopped_by_a_bad_record_does_not_hold_up_count_views() {
    let OrdersLog { client, ns, op, log_table, ddb, mvs } = orders_log("b18-fail").await;
    common::create_yaml(
        &client,
        &ns,
        &common::in_cluster_order_view(
            "orders",
            "sum",
            "{mode: Sum, sumOf: amount, key: {partitionKey: 'S#{id}'}, onRecordError: Fail}",
            "  backfill: {source: None}\n",
        ),
    )
    .await
    .unwrap();
    for name in ["c1", "c2"] {
        common::create_yaml(&client, &ns, &common::orders_count_view(name))
            .await
            .unwrap();
    }
    for name in ["sum", "c1", "c2"] {
        wait_ready(&mvs, name).await;
    }
    let table = mvs.get("c1").await.unwrap().status.unwrap().table_name.unwrap();
    let with_amount = |i: usize, amount: AttributeValue| {
        let mut item = order(i);
        item.insert("amount".to_string(), amount);
        item
    };
    common::put_items(
        &ddb,
        &log_table,
        (0..20)
            .map(|i| with_amount(i, AttributeValue::N("1".into())))
            .collect(),
    )
    .await;
    common::put_items(
        &ddb,
        &log_table,
        vec![with_amount(20, AttributeValue::S("abc".into()))],
    )
    .await;
    common::put_items(
        &ddb,
        &log_table,
        (21..41)
            .map(|i| with_amount(i, AttributeValue::N("1".into())))
            .collect(),
    )
    .await;
    let result = all_count(
        &ddb,
        &table,
        &["c1", "c2"],
        &expected(41),
        Duration::from_secs(60),
    )
    .await;
    let sum = mvs.get("sum").await.unwrap().status.unwrap();
    eprintln!(
        "counts {result:?}; sum view live {:?}; conditions {:?}; gauges {:?}",
        sum.live,
        sum.conditions
            .iter()
            .map(|c| (&c.type_, &c.status, &c.reason, &c.message))
            .collect::<Vec<_>>(),
        readers(&op).await
    );
    assert!(result.is_ok(), "the Count views stalled: {:?}", result.err());
    drop(op);
    common::delete_namespace(&client, &ns).await;
}
