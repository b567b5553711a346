//! The projector function's record errors reach the operator: the built-in projector, writing a views
//! table on the local AWS API, notes each record it leaves out (`onRecordError: Skip`) or stops at
//! (`Fail`) in the view's record-error ledger, which the operator reads for `status.recordErrors` and the
//! view's `Failed` condition.

mod common;

use kappa_operator::aws::functions::DynamoViewStore;
use kappa_operator::aws::views::ViewTableWriter;
use kappa_operator::crd::{EventLogSpec, MaterializedViewSpec};
use kappa_operator::functions::event::{ProjectorEvent, StreamEvent};
use kappa_operator::functions::projector::{self, ProjectorConfig};

const LOG: &str = "table: {partitionKey: pk, sortKey: sk, recordTypeAttribute: type}\nrecordTypes: [order]";

fn view(policy: &str) -> MaterializedViewSpec {
    serde_yaml::from_str(&format!(
        "eventLogRef: {{name: log}}\nrecordTypes: [order]\nprojection: {{mode: Sum, sumOf: amount, \
         key: {{partitionKey: 'C#{{customer}}'}}, onRecordError: {policy}}}"
    ))
    .unwrap()
}

/// A stream event of `records` INSERTs `(pk, sk, customer, amount)`; `None` leaves the attribute out.
fn event(records: &[(&str, &str, Option<&str>, &str)]) -> ProjectorEvent {
    let records: Vec<serde_json::Value> = records
        .iter()
        .enumerate()
        .map(|(i, (pk, sk, customer, amount))| {
            let mut image = serde_json::json!({
                "pk": {"S": pk}, "sk": {"S": sk}, "type": {"S": "order"}, "amount": {"N": amount},
            });
            if let Some(c) = customer {
                image["customer"] = serde_json::json!({"S": c});
            }
            serde_json::json!({
                "eventID": format!("e{i}"), "eventName": "INSERT", "eventSource": "aws:dynamodb",
                "dynamodb": {
                    "ApproximateCreationDateTime": 1_700_000_000 + i,
                    "Keys": {"pk": {"S": pk}, "sk": {"S": sk}},
                    "NewImage": image,
                    "SequenceNumber": format!("{:021}", 100 + i),
                    "StreamViewType": "NEW_IMAGE",
                },
            })
        })
        .collect();
    let event: StreamEvent = serde_json::from_value(serde_json::json!({ "Records": records })).unwrap();
    ProjectorEvent::Stream(event)
}

#[tokio::test]
async fn a_projector_notes_what_it_leaves_out_and_what_it_stops_at_for_the_operator() {
    let aws = common::aws_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let table = format!("kappa-record-errors-{}", std::process::id());
    common::create_pk_sk_table(&ddb, &table).await;
    let log: EventLogSpec = serde_yaml::from_str(LOG).unwrap();

    // Skip: seven records without `customer` among good ones; the ledger counts all seven and keeps the
    // newest five, each naming the record's log keys.
    let spec = view("Skip");
    let config = ProjectorConfig::for_view("sums", &spec, &log, &table, "sums#").unwrap();
    let compiled = config.compile().unwrap();
    let store = DynamoViewStore::new(ddb.clone(), &table, &compiled, config.fingerprint());
    let mut records = vec![("ORDER#1", "1", Some("ada"), "5")];
    let bad: Vec<String> = (0..7).map(|i| format!("ORDER#|~é{i}")).collect();
    for pk in &bad {
        records.push((pk.as_str(), "1", None, "1"));
    }
    records.push(("ORDER#2", "1", Some("ada"), "7"));
    let report = projector::handle(&compiled, &store, &event(&records))
        .await
        .unwrap();
    assert_eq!(
        (report.stats.applied, report.stats.rejected),
        (2, 7),
        "{report:?}"
    );
    assert!(report.response.batch_item_failures.is_empty());
    let writer = ViewTableWriter::for_view(ddb.clone(), &table, &compiled, 1);
    let (errors, failing) = writer.record_error_ledger().await.unwrap();
    assert_eq!(errors.count, 7);
    assert_eq!(errors.last.len(), kappa_operator::projection::KEPT_RECORD_ERRORS);
    assert!(errors.last.back().unwrap().contains("ORDER#|~é6"), "{errors:?}");
    assert!(errors.last.front().unwrap().contains("ORDER#|~é2"), "{errors:?}");
    assert!(
        errors.last.iter().all(|m| m.contains("customer")),
        "names the attribute: {errors:?}"
    );
    assert_eq!(failing, None);

    // Fail: the batch stops at the bad record, and the ledger names it with this projection's fingerprint.
    let spec = view("Fail");
    let config = ProjectorConfig::for_view("sums", &spec, &log, &table, "sums#").unwrap();
    let compiled = config.compile().unwrap();
    let store = DynamoViewStore::new(ddb.clone(), &table, &compiled, config.fingerprint());
    let records = [("ORDER#3", "1", Some("bo"), "1"), ("ORDER#4", "2", None, "1")];
    let report = projector::handle(&compiled, &store, &event(&records))
        .await
        .unwrap();
    assert_eq!(report.response.batch_item_failures.len(), 1, "{report:?}");
    let (errors, failing) = writer.record_error_ledger().await.unwrap();
    assert_eq!(errors.count, 7, "a record the view stops at is not one left out");
    let (message, noted) = failing.expect("the failing record is noted");
    assert!(message.contains("ORDER#4"), "{message}");
    assert!(
        noted.starts_with(&format!("{}@", config.fingerprint())),
        "{noted}"
    );
    assert_ne!(
        config.fingerprint(),
        ProjectorConfig::for_view("sums", &view("Skip"), &log, &table, "sums#")
            .unwrap()
            .fingerprint(),
        "another projection has another fingerprint"
    );
}
