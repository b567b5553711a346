//! Breaker #13: the per-view record-error ledger (`<prefix>~applied#errors#<view>`, sk `~`) written by
//! the projector function (`functions::projector::handle` + `aws::functions::DynamoViewStore`) and by Job
//! pods (`ViewTableWriter::note_record_errors`), on the local AWS API.

mod common;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use kappa_operator::aws::functions::DynamoViewStore;
use kappa_operator::aws::views::ViewTableWriter;
use kappa_operator::crd::{EventLogSpec, MaterializedViewSpec};
use kappa_operator::functions::event::{ProjectorEvent, SnsEvent, StreamEvent};
use kappa_operator::functions::projector::{self, ProjectorConfig, StoreError, ViewStore};
use kappa_operator::projection::{Applied, ProjectionConfig, ViewWrite};

const LOG: &str = "table: {partitionKey: pk, sortKey: sk, recordTypeAttribute: type}\nrecordTypes: [order]";

fn view(policy: &str) -> MaterializedViewSpec {
    serde_yaml::from_str(&format!(
        "eventLogRef: {{name: log}}\nrecordTypes: [order]\nprojection: {{mode: Sum, sumOf: amount, \
         key: {{partitionKey: 'C#{{customer}}'}}, onRecordError: {policy}}}"
    ))
    .unwrap()
}

async fn ddb() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&common::aws_config().await)
}

async fn table(ddb: &aws_sdk_dynamodb::Client, name: &str) -> String {
    common::fresh_pk_sk_table(ddb, &format!("break13-{name}")).await
}

/// Stream records `(pk, customer, amount)` as JSON; `None` leaves `customer` out (a record error).
fn stream_records(records: &[(&str, Option<&str>, &str)]) -> Vec<serde_json::Value> {
    records
        .iter()
        .enumerate()
        .map(|(i, (pk, customer, amount))| {
            let mut image = serde_json::json!({
                "pk": {"S": pk}, "sk": {"S": "1"}, "type": {"S": "order"}, "amount": {"N": amount},
            });
            if let Some(c) = customer {
                image["customer"] = serde_json::json!({"S": c});
            }
            serde_json::json!({
                "eventID": format!("e{i}"), "eventName": "INSERT", "eventSource": "aws:dynamodb",
                "dynamodb": {
                    "ApproximateCreationDateTime": 1_700_000_000 + i,
                    "Keys": {"pk": {"S": pk}, "sk": {"S": "1"}},
                    "NewImage": image,
                    "SequenceNumber": format!("{:021}", 100 + i),
                    "StreamViewType": "NEW_IMAGE",
                },
            })
        })
        .collect()
}

fn stream_event(records: &[(&str, Option<&str>, &str)]) -> ProjectorEvent {
    let event: StreamEvent =
        serde_json::from_value(serde_json::json!({ "Records": stream_records(records) })).unwrap();
    ProjectorEvent::Stream(event)
}

fn sns_event(records: &[(&str, Option<&str>, &str)]) -> ProjectorEvent {
    let records: Vec<serde_json::Value> = stream_records(records)
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let message = serde_json::json!({"kind": "dynamodb-stream-record", "version": 1, "record": r});
            serde_json::json!({
                "EventSource": "aws:sns", "EventVersion": "1.0",
                "EventSubscriptionArn": "arn:aws:sns:us-east-1:123456789012:t:s",
                "Sns": {
                    "Type": "Notification", "MessageId": format!("m{i}"),
                    "TopicArn": "arn:aws:sns:us-east-1:123456789012:t",
                    "Message": message.to_string(),
                    "Timestamp": "2024-01-01T00:00:00.000Z",
                    "SignatureVersion": "1", "Signature": "EXAMPLE",
                    "SigningCertUrl": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0.pem",
                    "UnsubscribeUrl": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
                },
            })
        })
        .collect();
    let event: SnsEvent = serde_json::from_value(serde_json::json!({ "Records": records })).unwrap();
    ProjectorEvent::Sns(event)
}

fn setup(table: &str, policy: &str) -> (ProjectorConfig, ProjectionConfig) {
    let log: EventLogSpec = serde_yaml::from_str(LOG).unwrap();
    let config = ProjectorConfig::for_view("sums", &view(policy), &log, table, "sums#").unwrap();
    let compiled = config.compile().unwrap();
    (config, compiled)
}

/// A views store whose first write of customer `flaky` fails as retryable (a throttled write), as
/// DynamoDB does under load; everything else goes to the real store.
struct Flaky {
    inner: DynamoViewStore,
    failed_once: AtomicBool,
}

impl ViewStore for Flaky {
    fn apply(
        &self,
        write: ViewWrite,
    ) -> impl std::future::Future<Output = Result<Applied, StoreError>> + Send {
        let flaky = write.view_key().0.contains("flaky") && !self.failed_once.swap(true, Ordering::SeqCst);
        async move {
            if flaky {
                return Err(StoreError::Retryable(
                    "ProvisionedThroughputExceededException".into(),
                ));
            }
            self.inner.apply(write).await
        }
    }

    fn record_error(
        &self,
        id: &str,
        message: &str,
        failing: bool,
    ) -> impl std::future::Future<Output = ()> + Send {
        self.inner.record_error(id, message, failing)
    }
}

/// SNS fan-out: an event of [a record without `customer`, a good record whose write is throttled once].
/// The projector skips the first (onRecordError Skip, noted in the ledger) and fails the invocation for
/// the second; Lambda retries the whole SNS event, which now succeeds. Expected: one record was left
/// out, so `status.recordErrors.count` (the ledger's `count`) is 1, and the sum holds the good record
/// once. Found (if failing): the retry notes the skipped record again (`ADD count 1` per delivery), so
/// the ledger counts 2 records left out for 1.
#[tokio::test]
async fn an_sns_event_retried_after_a_throttled_write_counts_its_skipped_record_once() {
    let ddb = ddb().await;
    let table = table(&ddb, "snsretry").await;
    let (config, compiled) = setup(&table, "Skip");
    let store = Flaky {
        inner: DynamoViewStore::new(ddb.clone(), &table, &compiled, config.fingerprint()),
        failed_once: AtomicBool::new(false),
    };
    let event = sns_event(&[("ORDER#bad", None, "1"), ("ORDER#ok", Some("flaky"), "5")]);
    let first = projector::handle(&compiled, &store, &event).await;
    assert!(
        first.is_err(),
        "the throttled write fails the invocation: {first:?}"
    );
    let second = projector::handle(&compiled, &store, &event).await.unwrap();
    assert_eq!(second.stats.applied, 1, "{second:?}");
    let writer = ViewTableWriter::for_view(ddb.clone(), &table, &compiled, 1);
    let (errors, _) = writer.record_error_ledger().await.unwrap();
    assert_eq!(errors.count, 1, "one record was left out: {errors:?}");
}

/// Lambda delivers stream batches at least once (a timed-out invocation, a crashed runtime): the same
/// batch twice. Expected: the view's sum counts the good record once (markers) and the ledger counts
/// the one malformed record once. Found (if failing): the ledger counts it per delivery.
#[tokio::test]
async fn a_redelivered_stream_batch_counts_its_skipped_record_once() {
    let ddb = ddb().await;
    let table = table(&ddb, "redeliver").await;
    let (config, compiled) = setup(&table, "Skip");
    let store = DynamoViewStore::new(ddb.clone(), &table, &compiled, config.fingerprint());
    let event = stream_event(&[("ORDER#bad", None, "1"), ("ORDER#ok", Some("ada"), "5")]);
    for _ in 0..2 {
        projector::handle(&compiled, &store, &event).await.unwrap();
    }
    let writer = ViewTableWriter::for_view(ddb.clone(), &table, &compiled, 1);
    let (errors, _) = writer.record_error_ledger().await.unwrap();
    assert_eq!(errors.count, 1, "one record was left out: {errors:?}");
}

/// Job pods and the projector note concurrently (several pods end at once, or a projector with a
/// parallelization factor). Input: 24 concurrent notes of one record error each. Expected: the count
/// is 24 and the ledger keeps the newest five messages (`KEPT_RECORD_ERRORS`), as documented.
/// Found (if failing): each writer appends, then trims `last[0..extra]` by the length it saw; trims
/// racing each other remove more than needed, so fewer than five (possibly none) are kept.
#[tokio::test]
async fn concurrent_record_error_notes_keep_the_newest_five() {
    let ddb = ddb().await;
    let table = table(&ddb, "concurrent").await;
    let (_, compiled) = setup(&table, "Skip");
    let writer = ViewTableWriter::for_view(ddb.clone(), &table, &compiled, 1);
    let notes = (0..24).map(|i| {
        let writer = writer.clone();
        async move {
            let id = format!("id{i}");
            let named = [(id.clone(), format!("record ORDER#{i}: missing customer"))];
            writer.note_record_errors(&[id], &named, 0).await.unwrap()
        }
    });
    futures::future::join_all(notes).await;
    let (errors, _) = writer.record_error_ledger().await.unwrap();
    assert_eq!(errors.count, 24);
    assert_eq!(
        errors.last.len(),
        kappa_operator::projection::KEPT_RECORD_ERRORS,
        "the ledger keeps the newest five: {errors:?}"
    );
}

/// Odd messages: a projector's record error for a record whose key is ~2 KB of 4-byte unicode with
/// NUL, newlines and separators, noted 7 times. Expected: each kept message is at most 1,000
/// characters, the count is 7, the ledger item stays small (DynamoDB's 400 KB item limit), and Fail
/// then Skip: a `failing` note of one projection does not hide what Skip notes.
#[tokio::test]
async fn huge_unicode_messages_are_cut_and_counted() {
    let ddb = ddb().await;
    let table = table(&ddb, "huge").await;
    let (config, compiled) = setup(&table, "Skip");
    let store = DynamoViewStore::new(ddb.clone(), &table, &compiled, config.fingerprint());
    let key: String = "🎮\0\n|#~é".repeat(200);
    let records: Vec<(String, Option<&str>, &str)> =
        (0..7).map(|i| (format!("{key}{i}"), None, "1")).collect();
    let refs: Vec<(&str, Option<&str>, &str)> =
        records.iter().map(|(k, c, a)| (k.as_str(), *c, *a)).collect();
    let report = projector::handle(&compiled, &store, &stream_event(&refs))
        .await
        .unwrap();
    assert_eq!(report.stats.rejected, 7);
    let writer = ViewTableWriter::for_view(ddb.clone(), &table, &compiled, 1);
    let (errors, failing) = writer.record_error_ledger().await.unwrap();
    assert_eq!(errors.count, 7);
    assert_eq!(errors.last.len(), 5);
    assert!(
        errors.last.iter().all(|m| m.chars().count() <= 1_000),
        "{errors:?}"
    );
    assert_eq!(failing, None);
    // A Fail projection stops at one, then the view switches back to Skip and skips another.
    let (fconfig, fcompiled) = setup(&table, "Fail");
    let fstore = DynamoViewStore::new(ddb.clone(), &table, &fcompiled, fconfig.fingerprint());
    let report = projector::handle(&fcompiled, &fstore, &stream_event(&[("ORDER#x", None, "1")]))
        .await
        .unwrap();
    assert_eq!(report.response.batch_item_failures.len(), 1);
    projector::handle(&compiled, &store, &stream_event(&[("ORDER#x", None, "1")]))
        .await
        .unwrap();
    let (errors, failing) = writer.record_error_ledger().await.unwrap();
    assert_eq!(errors.count, 8);
    let (_, noted) = failing.expect("the Fail projection's note stays for the operator to judge");
    assert!(noted.starts_with(&fconfig.fingerprint()), "{noted}");
    let _ = Mutex::new(());
}
