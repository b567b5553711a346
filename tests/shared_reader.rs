//! One stream reader per log (#18), end to end on the local stack: many in-cluster views of one log, some
//! created while records arrive, one rebuilt, one deleted, all read the log's stream through the
//! operator's one shared reader, never more than two readers at once (DynamoDB Streams' advice: at most
//! two readers per shard), and every view counts every record exactly once.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use common::orders_counts::{OrdersLog, counts, expected, order, orders_log, readers, sample_readers};
use kube::Api;
use kube::api::{Patch, PatchParams};

fn view_yaml(name: &str) -> String {
    common::orders_count_view(name)
}

/// Input: the `orders` log with 300 records; 6 in-cluster Count views created at once; 200 more records
/// written while 2 more views are created; then one view's projection changed (rebuilt as version 2
/// beside version 1) and one view deleted, while 100 more records arrive. The operator's reader gauges
/// are sampled every 100 ms throughout.
/// Expected: never more than 2 readers of the stream; the live views joined to the shared reader once
/// settled; every view (the rebuilt one's new version too) counts each of the 600 records exactly once.
#[tokio::test]
async fn in_cluster_views_of_one_log_share_one_stream_reader_and_count_every_record_once() {
    let OrdersLog { client, ns, op, log_table, ddb, mvs } = orders_log("shared-reader").await;
    common::put_items(&ddb, &log_table, (0..300).map(order).collect()).await;

    // Sample the gauges in the background: the most readers seen at once.
    let (most, sampler) = sample_readers(op.http_port);

    let first: Vec<String> = (0..6).map(|i| format!("v{i}")).collect();
    for name in &first {
        common::create_yaml(&client, &ns, &view_yaml(name)).await.unwrap();
    }
    let more = tokio::spawn({
        let ddb = ddb.clone();
        let log_table = log_table.clone();
        async move { common::put_items(&ddb, &log_table, (300..500).map(order).collect()).await }
    });
    for name in ["late0", "late1"] {
        common::create_yaml(&client, &ns, &view_yaml(name)).await.unwrap();
    }
    more.await.unwrap();
    let all: Vec<String> = first
        .iter()
        .cloned()
        .chain(["late0".into(), "late1".into()])
        .collect();
    for name in &all {
        common::eventually(Duration::from_secs(180), &format!("{name} Ready"), || async {
            common::view_ready(&mvs, name).await.then_some(())
        })
        .await;
    }
    let table = mvs.get("v0").await.unwrap().status.unwrap().table_name.unwrap();

    // v1 re-keyed (rebuilt beside its active version), v2 deleted, 100 more records.
    mvs.patch(
        "v1",
        &PatchParams::default(),
        &Patch::Merge(
            serde_json::json!({"spec": {"projection": {"mode": "Count", "key": {"partitionKey": "K#{id}"}}}}),
        ),
    )
    .await
    .unwrap();
    mvs.delete("v2", &Default::default()).await.unwrap();
    common::put_items(&ddb, &log_table, (500..600).map(order).collect()).await;

    let want = expected(600);
    let live: Vec<&String> = all.iter().filter(|n| *n != "v1" && *n != "v2").collect();
    let last = std::sync::Mutex::new((BTreeMap::new(), BTreeMap::new()));
    let settled = tokio::time::timeout(Duration::from_secs(240), async {
        loop {
            let got = counts(&ddb, &table).await;
            // Version 2 of v1 writes under its own key prefix (status.keyPrefix once promoted).
            let prefix = mvs.get("v1").await.ok().and_then(|v| v.status?.key_prefix);
            let rebuilt = common::scan_all(&ddb, &table)
                .await
                .into_iter()
                .filter_map(|item| match (item.get("pk"), item.get("count"), &prefix) {
                    (Some(AttributeValue::S(pk)), Some(AttributeValue::N(n)), Some(prefix)) => pk
                        .strip_prefix(&format!("{prefix}K#"))
                        .map(|k| (k.to_string(), n.parse::<i64>().unwrap())),
                    _ => None,
                })
                .collect::<BTreeMap<_, _>>();
            let done = live.iter().all(|v| got.get(v.as_str()) == Some(&want)) && rebuilt == want;
            *last.lock().unwrap() = (got.clone(), rebuilt.clone());
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    assert!(
        settled.is_ok(),
        "not every view counted each of the 600 records once: want {want:?} per view, got (views, v1's version 2) {:?}",
        last.lock().unwrap()
    );
    // Settled: the live readers read the shared reader's window, and one reader reads the stream.
    let (readers_now, joined, catching_up) =
        common::eventually(Duration::from_secs(60), "the live readers joined", || async {
            readers(&op)
                .await
                .filter(|(_, j, c)| *j >= live.len() as i64 && *c == 0)
        })
        .await;
    // The log's status shows the same (as of its last reconcile).
    let logs: Api<kappa_operator::crd::EventLog> = Api::namespaced(client.clone(), &ns);
    let reader = common::eventually(
        Duration::from_secs(90),
        "status.inClusterReader of the log",
        || async {
            let r = logs.get("orders").await.ok()?.status?.in_cluster_reader?;
            (r.joined >= live.len() as i32 && r.catching_up == 0).then_some(r)
        },
    )
    .await;
    assert!(reader.shards >= 1, "{reader:?}");
    sampler.abort();
    let most = most.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "readers now {readers_now}, joined {joined}, catching up {catching_up}; most readers at once {most}"
    );
    assert!(
        most <= 2,
        "{most} readers of the log's stream at once (at most 2: the shared reader and one catch-up reader)"
    );
    assert_eq!(readers_now, 1, "one reader once every view joined");
    drop(op);
    common::delete_namespace(&client, &ns).await;
}
