//! The built-in **notifier** Lambda: sends a views table's changes to the WebSocket connections subscribed
//! to them.
//!
//! Input: the views table's stream ([`StreamEvent`], from the function's event source mapping). For each
//! record, in stream order:
//! 1. [`change_of`] makes the protocol's change (the view by key prefix, per `KAPPA_VIEW_ROUTES`); a
//!    record that is no view item's change (an internal `~applied#` item, a key of no served view) is
//!    skipped.
//! 2. The view's subscribers come from [`ConnectionStore::subscribers`], read once per view and
//!    invocation.
//! 3. Every connection with a subscription that [`wants`] the change (the key prefix) gets the
//!    [`ServerMessage::Change`] once, through [`ConnectionPoster::post`] (API Gateway's
//!    `PostToConnection`). The posts of one record go out concurrently (at most [`MAX_CONCURRENT_POSTS`]);
//!    the next record starts when they are all done, so each connection receives changes in stream order.
//!
//! Failures:
//! - [`PostError::Gone`] (HTTP 410: the client left and `$disconnect` was missed or is late): the
//!   connection and its subscriptions are removed ([`ConnectionStore::disconnect`]) and it gets nothing
//!   more in this invocation. Not a failure of the batch.
//! - A retryable [`PostError::Failed`] (throttling, a client's full buffer, a 5xx), retried per
//!   [`RetryPolicy`] in the invocation, and a failure to read the subscribers: the record's
//!   `SequenceNumber` is reported in the partial batch response and later records are left, so the event
//!   source mapping (`ReportBatchItemFailures`) retries from that record and order holds. Connections that
//!   already got that record's change get it again: delivery is at least once, and a client drops a change
//!   whose `sequenceNumber` it has seen.
//! - A permanent [`PostError::Failed`] (a change over API Gateway's message size, a forbidden endpoint)
//!   can never succeed: it is logged with the fix and counted, and that connection misses the change.
//!   Blocking the shard for it would hold every other subscriber's changes.
//!
//! Environment: [`ENV_CONNECTIONS_TABLE`](super::connections::ENV_CONNECTIONS_TABLE),
//! [`ENV_VIEW_ROUTES`](super::connections::ENV_VIEW_ROUTES), [`ENV_WS_MANAGEMENT_ENDPOINT`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;

use futures::StreamExt;
use tracing::{error, warn};

use super::connections::{
    ConnectionStore, ConnectionsConfig, Subscriber, connections_table_from_lookup, view_routes_from_lookup,
};
use super::event::{BatchFailures, BatchResponse, StreamEvent, StreamEventName, StreamRecord};
use super::{ConfigError, RetryPolicy, process_env};
use crate::push::message::{Change, ChangeEvent, ServerMessage, ViewRoutes, change_of, wants};

/// The API Gateway Management API endpoint of the WebSocket API's stage:
/// `https://{apiId}.execute-api.{region}.amazonaws.com/{stage}`.
pub const ENV_WS_MANAGEMENT_ENDPOINT: &str = "KAPPA_WS_MANAGEMENT_ENDPOINT";
/// The most posts of one record in flight at once.
pub const MAX_CONCURRENT_POSTS: usize = 16;

/// The notifier's configuration, from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifierConfig {
    /// `KAPPA_CONNECTIONS_TABLE`.
    pub table: String,
    /// `KAPPA_VIEW_ROUTES`.
    pub routes: ViewRoutes,
    /// [`ENV_WS_MANAGEMENT_ENDPOINT`], without a trailing `/`.
    pub management_endpoint: String,
}

impl NotifierConfig {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(process_env)
    }

    /// Reads the configuration through `lookup` (variable name → value).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let table = connections_table_from_lookup(&lookup)?;
        let routes = view_routes_from_lookup(&lookup)?;
        let raw = crate::functions::required(
            &lookup,
            ENV_WS_MANAGEMENT_ENDPOINT,
            "set it to the WebSocket API stage's management endpoint, \
             https://{apiId}.execute-api.{region}.amazonaws.com/{stage} (the operator sets it)",
        )?;
        let endpoint = raw.trim().trim_end_matches('/');
        if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
            return Err(ConfigError::Invalid {
                var: ENV_WS_MANAGEMENT_ENDPOINT,
                value: raw.clone(),
                reason:
                    "it must be an https:// URL, https://{apiId}.execute-api.{region}.amazonaws.com/{stage} \
                         (the management API, not the clients' wss:// URL)"
                        .to_string(),
            });
        }
        Ok(NotifierConfig { table, routes, management_endpoint: endpoint.to_string() })
    }

    /// The function's environment: every variable [`NotifierConfig::from_lookup`] reads.
    pub fn to_env(&self) -> BTreeMap<String, String> {
        let mut env = ConnectionsConfig { table: self.table.clone(), routes: self.routes.clone() }.to_env();
        env.insert(
            ENV_WS_MANAGEMENT_ENDPOINT.to_string(),
            self.management_endpoint.clone(),
        );
        env
    }
}

/// A post to a connection that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    /// The connection no longer exists (HTTP 410 `GoneException`).
    #[error("the connection is gone (HTTP 410)")]
    Gone,
    /// Any other failure; `retryable` when trying again can help.
    #[error("{message}")]
    Failed { retryable: bool, message: String },
}

/// Sends a text frame to one WebSocket connection.
pub trait ConnectionPoster {
    fn post(&self, connection_id: &str, text: &str) -> impl Future<Output = Result<(), PostError>> + Send;
}

/// What one invocation did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NotifierReport {
    /// The response to return to Lambda.
    pub response: BatchResponse,
    /// Records in the event.
    pub records: usize,
    /// Records that were a served view's change (the others: internal items, keys of no served view).
    pub changes: usize,
    /// Messages delivered.
    pub posts: usize,
    /// Connections found gone, and removed.
    pub gone: usize,
    /// Posts that failed: permanent ones (skipped), and the retryable one that stopped the batch.
    pub failed: usize,
}

/// The connections that get `change`: each once, in the order of `subscribers`, except `excluded`.
pub fn recipients(change: &Change, subscribers: &[Subscriber], excluded: &HashSet<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    subscribers
        .iter()
        .filter(|(connection_id, prefix)| {
            !excluded.contains(connection_id) && wants(change, &change.view, prefix.as_deref())
        })
        .filter(|(connection_id, _)| seen.insert(connection_id.as_str()))
        .map(|(connection_id, _)| connection_id.clone())
        .collect()
}

fn change_event(name: StreamEventName) -> ChangeEvent {
    match name {
        StreamEventName::Insert => ChangeEvent::Insert,
        StreamEventName::Modify => ChangeEvent::Modify,
        StreamEventName::Remove => ChangeEvent::Remove,
    }
}

/// `ApproximateCreationDateTime` as epoch seconds (a number, or a string of one).
fn creation_time(record: &StreamRecord) -> Option<f64> {
    let value = record.dynamodb.approximate_creation_date_time.as_ref()?;
    value.as_f64().or_else(|| value.as_str()?.trim().parse().ok())
}

/// One record's change, if it is a served view's.
pub fn change_of_record(routes: &ViewRoutes, record: &StreamRecord) -> Option<Change> {
    change_of(
        routes,
        change_event(record.event_name),
        &record.dynamodb.keys,
        record.dynamodb.new_image.as_ref(),
        &record.dynamodb.sequence_number,
        creation_time(record),
    )
}

/// What an invocation keeps between records.
#[derive(Default)]
struct Progress {
    /// View → its subscribers, read once.
    subscribers: HashMap<String, Vec<Subscriber>>,
    /// Connections found gone.
    gone: HashSet<String>,
}

/// Handles one stream event; see the module documentation.
pub async fn handle<S, P>(
    routes: &ViewRoutes,
    store: &S,
    poster: &P,
    retry: &RetryPolicy,
    event: &StreamEvent,
) -> NotifierReport
where
    S: ConnectionStore + Sync,
    P: ConnectionPoster + Sync,
{
    let mut report = NotifierReport { records: event.records.len(), ..NotifierReport::default() };
    let mut progress = Progress::default();
    for record in &event.records {
        if let Err(reason) = notify(routes, store, poster, retry, record, &mut progress, &mut report).await {
            let sequence = &record.dynamodb.sequence_number;
            warn!(
                sequence_number = %sequence,
                "{reason}; the event source mapping retries from this record"
            );
            report.response = BatchResponse::failed([sequence.clone()]);
            break;
        }
    }
    report
}

/// Why a record's change must be sent again (the event source mapping retries from its record).
#[derive(Debug, thiserror::Error)]
pub enum NotifyRetry {
    #[error("reading the subscribers of view {view}: {source}")]
    Subscribers {
        view: String,
        #[source]
        source: super::connections::ConnectionStoreError,
    },
    #[error("posting to connection {connection_id}: {message}")]
    Post { connection_id: String, message: String },
}

/// Sends one record's change. `Err` when the record must be retried.
async fn notify<S, P>(
    routes: &ViewRoutes,
    store: &S,
    poster: &P,
    retry: &RetryPolicy,
    record: &StreamRecord,
    progress: &mut Progress,
    report: &mut NotifierReport,
) -> Result<(), NotifyRetry>
where
    S: ConnectionStore + Sync,
    P: ConnectionPoster + Sync,
{
    let Some(change) = change_of_record(routes, record) else {
        return Ok(());
    };
    report.changes += 1;
    if !progress.subscribers.contains_key(&change.view) {
        let subscribers = store
            .subscribers(&change.view)
            .await
            .map_err(|source| NotifyRetry::Subscribers { view: change.view.clone(), source })?;
        progress.subscribers.insert(change.view.clone(), subscribers);
    }
    let targets = progress
        .subscribers
        .get(&change.view)
        .map(|subscribers| recipients(&change, subscribers, &progress.gone))
        .unwrap_or_default();
    if targets.is_empty() {
        return Ok(());
    }
    let view = change.view.clone();
    let text = ServerMessage::Change(change).to_text();
    let results: Vec<(String, Result<(), PostError>)> = futures::stream::iter(targets)
        .map(|connection_id| {
            let text = text.as_str();
            async move {
                let result = post_with_retry(poster, retry, &connection_id, text).await;
                (connection_id, result)
            }
        })
        .buffered(MAX_CONCURRENT_POSTS)
        .collect()
        .await;
    let mut retry_reason = None;
    for (connection_id, result) in results {
        match result {
            Ok(()) => report.posts += 1,
            Err(PostError::Gone) => {
                report.gone += 1;
                if let Err(e) = store.disconnect(&connection_id).await {
                    warn!(
                        connection_id,
                        "a gone connection's items stay until they expire: {e}"
                    );
                }
                progress.gone.insert(connection_id);
            }
            Err(PostError::Failed { retryable: false, message }) => {
                report.failed += 1;
                error!(connection_id, view, "a change is not delivered: {message}");
            }
            Err(PostError::Failed { retryable: true, message }) => {
                report.failed += 1;
                retry_reason.get_or_insert(NotifyRetry::Post { connection_id, message });
            }
        }
    }
    retry_reason.map_or(Ok(()), Err)
}

/// Posts, retrying retryable failures per `retry`.
async fn post_with_retry<P: ConnectionPoster + Sync>(
    poster: &P,
    retry: &RetryPolicy,
    connection_id: &str,
    text: &str,
) -> Result<(), PostError> {
    let mut attempt = 1;
    loop {
        match poster.post(connection_id, text).await {
            Err(PostError::Failed { retryable: true, .. }) if attempt < retry.max_attempts => {
                attempt += 1;
                retry.wait_before(attempt).await;
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;
    use crate::functions::connections::{
        ConnectionStoreError, ENV_CONNECTIONS_TABLE, ENV_VIEW_ROUTES, MemoryConnections, ViewSubscription,
    };

    fn event() -> StreamEvent {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/views-stream-event.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn routes() -> ViewRoutes {
        ViewRoutes {
            views: vec![
                ("players".into(), "players#".into()),
                ("games".into(), "games#".into()),
            ],
        }
    }

    /// Records the delivered posts; answers a connection's next posts from its script, and `Gone` for
    /// the connections in `gone`.
    #[derive(Default)]
    struct RecordingPoster {
        delivered: Mutex<Vec<(String, String)>>,
        script: Mutex<HashMap<String, VecDeque<PostError>>>,
        gone: HashSet<String>,
    }

    impl RecordingPoster {
        fn failing(connection_id: &str, errors: Vec<PostError>) -> Self {
            let poster = RecordingPoster::default();
            poster
                .script
                .lock()
                .unwrap()
                .insert(connection_id.to_string(), errors.into());
            poster
        }

        /// `(event, own pk, sequence number)` of the changes each connection got, in order.
        fn received(&self, connection_id: &str) -> Vec<(ChangeEvent, String, String)> {
            self.delivered
                .lock()
                .unwrap()
                .iter()
                .filter(|(id, _)| id == connection_id)
                .map(|(_, text)| match serde_json::from_str(text).unwrap() {
                    ServerMessage::Change(c) => (c.event, c.keys.pk, c.sequence_number),
                    other => panic!("not a change: {other:?}"),
                })
                .collect()
        }
    }

    impl ConnectionPoster for RecordingPoster {
        async fn post(&self, connection_id: &str, text: &str) -> Result<(), PostError> {
            if self.gone.contains(connection_id) {
                return Err(PostError::Gone);
            }
            let scripted = self
                .script
                .lock()
                .unwrap()
                .get_mut(connection_id)
                .and_then(VecDeque::pop_front);
            if let Some(e) = scripted {
                return Err(e);
            }
            self.delivered
                .lock()
                .unwrap()
                .push((connection_id.to_string(), text.to_string()));
            Ok(())
        }
    }

    /// The in-memory table, counting subscriber queries; `fail_subscribers` makes them fail.
    #[derive(Default)]
    struct TestStore {
        table: MemoryConnections,
        queries: Mutex<Vec<String>>,
        fail_subscribers: bool,
    }

    impl ConnectionStore for TestStore {
        async fn connect(&self, id: &str, expires_at: i64) -> Result<(), ConnectionStoreError> {
            self.table.connect(id, expires_at).await
        }
        async fn subscribe(
            &self,
            on: ViewSubscription<'_>,
            expires_at: i64,
        ) -> Result<(), ConnectionStoreError> {
            self.table.subscribe(on, expires_at).await
        }
        async fn unsubscribe(&self, on: ViewSubscription<'_>) -> Result<usize, ConnectionStoreError> {
            self.table.unsubscribe(on).await
        }
        async fn disconnect(&self, id: &str) -> Result<(), ConnectionStoreError> {
            self.table.disconnect(id).await
        }
        async fn subscribers(&self, view: &str) -> Result<Vec<Subscriber>, ConnectionStoreError> {
            self.queries.lock().unwrap().push(view.to_string());
            if self.fail_subscribers {
                return Err(ConnectionStoreError::Call {
                    operation: "Query",
                    table: "ws-connections".into(),
                    message: "ProvisionedThroughputExceededException (HTTP 400)".into(),
                    retryable: true,
                });
            }
            self.table.subscribers(view).await
        }
    }

    /// A: all players (and players' PLAYER#a: still one message per change); B: players' PLAYER#bo;
    /// C: games; D: connected, no subscription.
    async fn store() -> TestStore {
        let store = TestStore::default();
        for id in ["A", "B", "C", "D"] {
            store.connect(id, 1).await.unwrap();
        }
        store
            .subscribe(ViewSubscription::new("A", "players", None), 1)
            .await
            .unwrap();
        store
            .subscribe(ViewSubscription::new("A", "players", Some("PLAYER#a")), 1)
            .await
            .unwrap();
        store
            .subscribe(ViewSubscription::new("B", "players", Some("PLAYER#bo")), 1)
            .await
            .unwrap();
        store
            .subscribe(ViewSubscription::new("C", "games", None), 1)
            .await
            .unwrap();
        store
    }

    fn got(items: &[(ChangeEvent, &str, &str)]) -> Vec<(ChangeEvent, String, String)> {
        items
            .iter()
            .map(|(e, pk, seq)| (*e, pk.to_string(), seq.to_string()))
            .collect()
    }

    const SEQ: [&str; 8] = [
        "",
        "5100000000000000000001",
        "5100000000000000000002",
        "5100000000000000000003",
        "5100000000000000000004",
        "5100000000000000000005",
        "5100000000000000000006",
        "5100000000000000000007",
    ];

    use ChangeEvent::{Insert, Modify, Remove};

    #[tokio::test]
    async fn changes_go_to_the_views_subscribers_in_record_order_filtered_by_key_prefix() {
        let (store, poster) = (store().await, RecordingPoster::default());
        let report = handle(&routes(), &store, &poster, &RetryPolicy::immediate(1), &event()).await;

        assert_eq!(
            report,
            NotifierReport {
                response: BatchResponse::success(),
                records: 7,
                changes: 6,
                posts: 8,
                gone: 0,
                failed: 0
            }
        );
        assert_eq!(
            poster.received("A"),
            got(&[
                (Insert, "PLAYER#ada", SEQ[1]),
                (Modify, "PLAYER#bo", SEQ[4]),
                (Modify, "PLAYER#ada", SEQ[5]),
                (Remove, "PLAYER#bo", SEQ[6]),
            ])
        );
        assert_eq!(
            poster.received("B"),
            got(&[(Modify, "PLAYER#bo", SEQ[4]), (Remove, "PLAYER#bo", SEQ[6])])
        );
        assert_eq!(
            poster.received("C"),
            got(&[(Insert, "GAME#g001", SEQ[2]), (Modify, "GAME#g001", SEQ[7])])
        );
        assert_eq!(poster.received("D"), vec![]);
        // The internal item (record 3) is never sent; subscribers are read once per view.
        assert!(
            !poster
                .delivered
                .lock()
                .unwrap()
                .iter()
                .any(|(_, t)| t.contains("applied"))
        );
        assert_eq!(*store.queries.lock().unwrap(), vec!["players", "games"]);

        let first: serde_json::Value = serde_json::from_str(&poster.delivered.lock().unwrap()[0].1).unwrap();
        assert_eq!(
            first,
            serde_json::json!({"version":1,"type":"change","view":"players","event":"INSERT",
                "keys":{"pk":"PLAYER#ada","sk":"LATEST"},
                "newImage":{"type":"player","seq":10,"name":"Ada","score":120,"tags":["pvp","ranked"]},
                "sequenceNumber":SEQ[1],"approximateCreationTime":1732492800.0})
        );
    }

    #[tokio::test]
    async fn a_gone_connection_is_removed_with_its_subscriptions_and_the_batch_succeeds() {
        let store = store().await;
        let poster = RecordingPoster {
            gone: HashSet::from(["B".to_string()]),
            ..RecordingPoster::default()
        };
        let report = handle(&routes(), &store, &poster, &RetryPolicy::immediate(1), &event()).await;

        assert_eq!(report.response, BatchResponse::success());
        assert_eq!((report.posts, report.gone, report.failed), (6, 1, 0));
        assert_eq!(
            store.table.subscribers("players").await.unwrap(),
            vec![
                ("A".to_string(), None),
                ("A".to_string(), Some("PLAYER#a".to_string()))
            ]
        );
        let left = store.table.items();
        let text = |item: &crate::projection::Item, name: &str| {
            item.get(name)
                .and_then(crate::projection::Value::as_s)
                .map(str::to_string)
        };
        assert!(
            left.iter()
                .all(|item| text(item, "pk").as_deref() != Some("conn#B")
                    && text(item, "connectionId").as_deref() != Some("B")),
            "B's items are gone: {left:?}"
        );
        assert_eq!(poster.received("A").len(), 4);
        assert_eq!(poster.received("C").len(), 2);
    }

    #[tokio::test]
    async fn a_retryable_failure_reports_its_record_and_stops() {
        let store = store().await;
        let throttled = PostError::Failed {
            retryable: true,
            message: "LimitExceededException (HTTP 429)".into(),
        };
        let poster = RecordingPoster::failing("B", vec![throttled.clone()]);
        let report = handle(&routes(), &store, &poster, &RetryPolicy::immediate(1), &event()).await;

        // B's first change is record 4: reported, and nothing after it is sent.
        assert_eq!(report.response.failed_ids(), vec![SEQ[4]]);
        assert_eq!((report.posts, report.failed), (3, 1));
        assert_eq!(
            poster.received("A"),
            got(&[(Insert, "PLAYER#ada", SEQ[1]), (Modify, "PLAYER#bo", SEQ[4])])
        );
        assert_eq!(poster.received("B"), vec![]);
        assert_eq!(poster.received("C"), got(&[(Insert, "GAME#g001", SEQ[2])]));

        // Retried within the invocation, the same failure costs nothing.
        let poster = RecordingPoster::failing("B", vec![throttled]);
        let report = handle(&routes(), &store, &poster, &RetryPolicy::immediate(2), &event()).await;
        assert_eq!(report.response, BatchResponse::success());
        assert_eq!(poster.received("B").len(), 2);
    }

    #[tokio::test]
    async fn a_permanent_failure_skips_that_message_only() {
        let store = store().await;
        let too_large = PostError::Failed {
            retryable: false,
            message: "PayloadTooLargeException (HTTP 413)".into(),
        };
        let poster = RecordingPoster::failing("B", vec![too_large]);
        let report = handle(&routes(), &store, &poster, &RetryPolicy::immediate(3), &event()).await;
        assert_eq!(report.response, BatchResponse::success());
        assert_eq!((report.posts, report.failed), (7, 1));
        assert_eq!(poster.received("B"), got(&[(Remove, "PLAYER#bo", SEQ[6])]));
    }

    #[tokio::test]
    async fn a_failure_to_read_subscribers_reports_the_first_change() {
        let store = TestStore { fail_subscribers: true, ..TestStore::default() };
        let poster = RecordingPoster::default();
        let report = handle(&routes(), &store, &poster, &RetryPolicy::immediate(1), &event()).await;
        assert_eq!(report.response.failed_ids(), vec![SEQ[1]]);
        assert_eq!(report.posts, 0);
    }

    #[test]
    fn recipients_are_unique_and_exclude_gone_connections() {
        let change = change_of_record(&routes(), &event().records[3]).unwrap();
        let subscribers: Vec<Subscriber> = vec![
            ("A".into(), None),
            ("A".into(), Some("PLAYER#b".into())),
            ("B".into(), Some("PLAYER#a".into())),
            ("C".into(), Some("PLAYER#bo".into())),
            ("D".into(), None),
        ];
        assert_eq!(
            recipients(&change, &subscribers, &HashSet::new()),
            vec!["A", "C", "D"]
        );
        assert_eq!(
            recipients(&change, &subscribers, &HashSet::from(["C".to_string()])),
            vec!["A", "D"]
        );
        assert_eq!(
            change_of_record(&routes(), &event().records[2]),
            None,
            "an internal item"
        );
    }

    #[test]
    fn configuration_needs_an_https_management_endpoint() {
        let env = |endpoint: &'static str| {
            move |var: &str| match var {
                ENV_CONNECTIONS_TABLE => Some("ws-connections".to_string()),
                ENV_VIEW_ROUTES => Some(r#"{"views":[["players","players#"]]}"#.to_string()),
                ENV_WS_MANAGEMENT_ENDPOINT => Some(endpoint.to_string()),
                _ => None,
            }
        };
        let config = NotifierConfig::from_lookup(env(
            "https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/live/",
        ))
        .unwrap();
        assert_eq!(
            config.management_endpoint,
            "https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/live"
        );
        let e = NotifierConfig::from_lookup(env("wss://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/live"))
            .unwrap_err();
        assert!(
            matches!(e, ConfigError::Invalid { var: ENV_WS_MANAGEMENT_ENDPOINT, .. }),
            "{e}"
        );
        let e = NotifierConfig::from_lookup(env("")).unwrap_err();
        assert!(e.to_string().contains(ENV_WS_MANAGEMENT_ENDPOINT), "{e}");
    }
}
