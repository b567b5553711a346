//! A record too large for SNS travels by reference, through the real SDK adapters on the local AWS API:
//! the writer's `BatchWriteItem` puts a 350 KB log record, the router's `PublishBatch` (SnsPublisher)
//! publishes it as a reference (inline it is refused, exactly as AWS refuses it: the harness counts body and
//! attribute bytes), SNS delivers it to a subscribed queue, and the projector reads the item back with a
//! strongly consistent `GetItem` (DynamoLogStore) and writes the view (DynamoViewStore).

mod common;

use std::collections::BTreeMap;

use kappa_operator::aws::functions::{DynamoLogStore, DynamoLogWriter, DynamoViewStore, SnsPublisher};
use kappa_operator::crd::{EventLogSpec, MaterializedViewSpec};
use kappa_operator::functions::RetryPolicy;
use kappa_operator::functions::event::{
    ProjectorEvent, SnsMessage, SnsRecord, StreamData, StreamEvent, StreamEventName, StreamRecord, sns_event,
};
use kappa_operator::functions::projector::{self, LogStore, ProjectorConfig};
use kappa_operator::functions::router::{self, PublishEntry, PublishError, Publisher, RouterConfig};
use kappa_operator::functions::writer::LogWriter;
use kappa_operator::projection::{Item, Value};

const LOG: &str = "table: {partitionKey: pk, sortKey: sk, recordTypeAttribute: type, orderingAttribute: seq}\nrecordTypes: [player]";

fn record(i: usize, item: &Item) -> StreamRecord {
    let keys: Item = item
        .iter()
        .filter(|(k, _)| *k == "pk" || *k == "sk")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    StreamRecord {
        event_id: Some(format!("e{i}")),
        event_name: StreamEventName::Insert,
        event_version: Some("1.1".into()),
        event_source: Some("aws:dynamodb".into()),
        aws_region: Some("us-east-1".into()),
        dynamodb: StreamData {
            approximate_creation_date_time: Some(serde_json::json!(1_700_000_000 + i)),
            keys,
            new_image: Some(item.clone()),
            old_image: None,
            sequence_number: format!("{:022}", 4_700_000_000_000_000_000_000u128 + i as u128),
            size_bytes: None,
            stream_view_type: Some("NEW_AND_OLD_IMAGES".into()),
        },
        event_source_arn: None,
        user_identity: None,
    }
}

fn player(name: &str, blob_bytes: usize) -> Item {
    serde_json::from_value(serde_json::json!({
        "pk": {"S": format!("PLAYER#{name}")}, "sk": {"S": "LOG#1"}, "type": {"S": "player"},
        "name": {"S": name}, "seq": {"N": "1"}, "blob": {"S": "é".repeat(blob_bytes / 2)},
    }))
    .unwrap()
}

#[tokio::test]
async fn a_record_too_large_for_sns_is_routed_by_reference_and_projected_from_the_log() {
    let aws = common::aws_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let sns = aws_sdk_sns::Client::new(&aws);
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let log_table = common::fresh_pk_sk_table(&ddb, "kappa-large-log").await;
    let views_table = common::fresh_pk_sk_table(&ddb, "kappa-large-views").await;
    let suffix = log_table.rsplit('-').next().unwrap().to_string();

    // The log: a 350 KB record (UTF-8 bytes) and a small one, written by the writer's adapter.
    let large = player("ada", 350_000);
    let small = player("bo", 10);
    let unwritten = DynamoLogWriter::new(ddb.clone(), &log_table)
        .batch_write(vec![large.clone(), small.clone()])
        .await
        .unwrap();
    assert!(unwritten.is_empty());

    // A topic, delivered to a queue so the test reads what SNS delivers.
    let topic = sns
        .create_topic()
        .name(format!("kappa-large-{suffix}"))
        .send()
        .await
        .unwrap()
        .topic_arn
        .unwrap();
    let queue = sqs
        .create_queue()
        .queue_name(format!("kappa-large-{suffix}"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    sns.subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(&queue_arn)
        .send()
        .await
        .unwrap();

    // Inline, the large record is refused as AWS refuses it: over 256 KiB with its attributes.
    let publisher = SnsPublisher::new(sns.clone());
    let inline = PublishEntry {
        id: "r0".into(),
        message: serde_json::to_string(&kappa_operator::functions::event::RoutedRecord::new(record(
            0, &large,
        )))
        .unwrap(),
        attributes: BTreeMap::from([("recordType".to_string(), "player".to_string())]),
    };
    assert!(inline.size() > 262_144);
    match publisher.publish_batch(&topic, vec![inline]).await {
        Err(PublishError::Permanent(reason)) => {
            assert!(reason.contains("BatchRequestTooLong"), "{reason}")
        }
        other => panic!("an oversize PublishBatch must be refused: {other:?}"),
    }
    let too_long = sns
        .publish()
        .topic_arn(&topic)
        .message("é".repeat(131_072)) // 262,144 bytes
        .message_attributes(
            "a",
            aws_sdk_sns::types::MessageAttributeValue::builder()
                .data_type("String")
                .string_value("b")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_err();
    let service = too_long.as_service_error().map(|e| {
        use aws_sdk_sns::error::ProvideErrorMetadata;
        (e.code().map(str::to_string), e.message().map(str::to_string))
    });
    assert_eq!(
        service,
        Some((
            Some("InvalidParameter".to_string()),
            Some("Invalid parameter: Message too long".to_string())
        ))
    );

    // The router, through the real PublishBatch.
    let topics = serde_json::json!({"player": topic}).to_string();
    let config = RouterConfig::from_lookup(|var| match var {
        "RECORD_TYPE_ATTRIBUTE" => Some("type".to_string()),
        "TOPICS" => Some(topics.clone()),
        _ => None,
    })
    .unwrap();
    let event = StreamEvent { records: vec![record(0, &large), record(1, &small)] };
    let report = router::handle(&config, &publisher, &RetryPolicy::immediate(2), &event).await;
    assert_eq!(
        (report.published, report.by_reference, report.failed),
        (2, 1, 0),
        "{report:?}"
    );
    assert!(report.response.batch_item_failures.is_empty());

    // What SNS delivered, as the projector's SNS event.
    let mut delivered = Vec::new();
    for _ in 0..20 {
        let out = sqs
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for m in out.messages.unwrap_or_default() {
            let message: SnsMessage = serde_json::from_str(m.body.as_deref().unwrap()).unwrap();
            delivered.push(message);
        }
        if delivered.len() >= 2 {
            break;
        }
    }
    assert_eq!(delivered.len(), 2, "both records delivered once");
    let references = delivered
        .iter()
        .filter(|m| {
            m.message_attributes
                .get("logReference")
                .is_some_and(|a| a.value == "1")
        })
        .count();
    assert_eq!(references, 1);
    assert!(
        delivered
            .iter()
            .all(|m| m.message_attributes["recordType"].value == "player"),
        "filter policies still match"
    );

    // The projector reads the large record from the log (consistent GetItem) and projects both.
    let log: EventLogSpec = serde_yaml::from_str(LOG).unwrap();
    let view: MaterializedViewSpec = serde_yaml::from_str(
        "eventLogRef: {name: log}\nrecordTypes: [player]\nprojection: {mode: Latest, key: {partitionKey: 'P#{name}'}}",
    )
    .unwrap();
    let settings = ProjectorConfig::for_view("players", &view, &log, &views_table, "players#")
        .unwrap()
        .with_log_table(&log_table);
    let compiled = settings.compile().unwrap();
    let store = DynamoViewStore::new(ddb.clone(), &views_table, &compiled, settings.fingerprint());
    let reader = DynamoLogStore::new(ddb.clone(), settings.log.table.clone());
    let event = ProjectorEvent::Sns(sns_event(
        delivered
            .into_iter()
            .map(|sns| {
                let mut record = SnsRecord::default();
                record.event_source = "aws:sns".into();
                record.sns = sns;
                record
            })
            .collect(),
    ));
    let report = projector::handle_with_log(&compiled, &store, &reader, &event)
        .await
        .unwrap();
    assert_eq!(
        (
            report.stats.applied,
            report.stats.by_reference,
            report.stats.newer_in_log
        ),
        (2, 1, 0),
        "{report:?}"
    );
    let items = common::scan_all(&ddb, &views_table).await;
    let ada = items
        .iter()
        .find(|i| {
            i.get("pk")
                .is_some_and(|v| v.as_s().is_ok_and(|s| s.ends_with("P#ada")))
        })
        .unwrap_or_else(|| panic!("the large record's view item: {items:?}"));
    assert_eq!(
        ada.get("blob").and_then(|v| v.as_s().ok()).map(String::len),
        Some(350_000),
        "the whole item, read from the log"
    );

    // A key the log does not hold: the consistent read says so (the projector then fails the record).
    let missing: Item = [
        ("pk".to_string(), Value::S("PLAYER#nobody".into())),
        ("sk".to_string(), Value::S("LOG#1".into())),
    ]
    .into();
    assert_eq!(reader.get_item(&missing).await.unwrap(), None);
    let found = reader.get_item(&record(0, &large).dynamodb.keys).await.unwrap();
    assert_eq!(found, Some(large));
}
