//! `kubectl kappa redrive <eventlog>` (#16 item 2): after the cause of dead-lettered ingest messages is
//! fixed, SQS's own redrive (a message move task) sends them back to the ingest queue and the writer
//! writes them to the log; a second redrive finds nothing and changes nothing; a log that does not exist
//! is refused with exit code 2.
//!
//! The dead-lettered messages are arranged by sending them to the dead-letter queue: SQS moves a message
//! to the DLQ unchanged (body and attributes), so this is the queue's content after the writer failed
//! them `maxReceiveCount` times, without waiting out the visibility timeouts (tests/lambda_e2e.rs shows a
//! malformed message dead-lettered by the writer itself).

mod common;

use std::process::Command;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::QueueAttributeName;
use common::Operator;
use kappa_operator::crd::{EventLog, EventLogPhase};
use kube::Api;
use serde_json::json;

const LOG: &str = r#"
apiVersion: kappa.dev/v1alpha1
kind: EventLog
metadata: {name: shop}
spec:
  recordTypes: [order]
  table: {sortKey: sk}
  ingest: {queueType: Standard, batchSize: 10, maximumBatchingWindowSeconds: 1, maxReceiveCount: 2}
  deletionPolicy: Delete
"#;

fn redrive(ns: &str, log: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kappa-operator"))
        .args(["redrive", log, "-n", ns, "--timeout", "120"])
        .output()
        .expect("run kappa-operator redrive")
}

async fn visible(sqs: &aws_sdk_sqs::Client, url: &str) -> i64 {
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap();
    attrs
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
        .and_then(|n| n.parse().ok())
        .unwrap_or(-1)
}

/// Waits until EventLog `shop`'s status.deadLetters reads `n`.
async fn dead_letters_shown(logs: &Api<EventLog>, n: i64) {
    common::eventually(
        Duration::from_secs(120),
        &format!("status.deadLetters = {n}"),
        || async {
            let s = logs.get("shop").await.ok()?.status?;
            (s.dead_letters == Some(n)).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn dead_lettered_ingest_messages_are_redriven_to_the_writer_once() {
    common::assert_functions_run_this_binary();
    let (client, ns) = common::setup("redrive").await;
    let aws = common::aws_config().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let _op = Operator::start(&ns, "solo", 15);
    common::create_yaml(&client, &ns, LOG).await.unwrap();
    let logs: Api<EventLog> = Api::namespaced(client.clone(), &ns);
    let status = common::eventually(Duration::from_secs(180), "the EventLog Ready", || async {
        let s = logs.get("shop").await.ok()?.status?;
        (s.phase == Some(EventLogPhase::Ready) && s.resources.contains_key("mapping/writer")).then_some(s)
    })
    .await;
    let table = status.table.clone().unwrap().name;
    let dlq_arn = status.resources["deadLetterQueue"].clone();
    let dlq_name = dlq_arn.rsplit(':').next().unwrap();
    let dlq_url = sqs
        .get_queue_url()
        .queue_name(dlq_name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();

    // Three records the writer could not write while (say) its table was throttled past its retries; one
    // of them twice, as SQS delivers at least once. Unicode and separators in the keys.
    let bodies: Vec<String> = [("ORDER#ü·1", "1"), ("ORDER#ü·1", "2"), ("ORDER#2|x", "1"), ("ORDER#2|x", "1")]
        .iter()
        .map(|(pk, sk)| {
            json!({"Item": {"pk": {"S": pk}, "sk": {"S": sk}, "type": {"S": "order"}, "n": {"N": "12345678901234567890123456789012345678"}}})
                .to_string()
        })
        .collect();
    common::send_messages(&sqs, &dlq_url, &bodies).await;
    dead_letters_shown(&logs, 4).await;

    let out = redrive(&ns, "shop");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "redrive failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("moved 4 message(s)"), "{stdout}");

    // The writer writes them: three distinct records in the log, the number exact.
    let items = common::eventually(
        Duration::from_secs(120),
        "the redriven records in the log",
        || async {
            let scan = ddb.scan().table_name(&table).send().await.ok()?;
            let items = scan.items.unwrap_or_default();
            (items.len() == 3).then_some(items)
        },
    )
    .await;
    for item in &items {
        assert_eq!(
            item.get("n"),
            Some(&AttributeValue::N(
                "12345678901234567890123456789012345678".into()
            )),
            "{item:?}"
        );
    }
    assert_eq!(visible(&sqs, &dlq_url).await, 0, "the dead-letter queue is empty");
    dead_letters_shown(&logs, 0).await;

    // Again: nothing to move, nothing changes.
    let again = redrive(&ns, "shop");
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(
        again.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(stdout.contains("moved 0 message(s)"), "{stdout}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let scan = ddb.scan().table_name(&table).send().await.unwrap();
    assert_eq!(scan.items.unwrap_or_default().len(), 3);

    // A log that does not exist: refused, exit 2, naming it.
    let missing = redrive(&ns, "nope");
    assert_eq!(missing.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains(&format!("EventLog {ns}/nope not found")),
        "{stderr}"
    );
}
