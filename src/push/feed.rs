//! [`ViewsTableFeed`]: reads one views table's DynamoDB stream and publishes each record's change to the
//! [`Hub`] for the table's namespace, in stream order (shard order, parents first, as [`StreamReader`]
//! reads it).
//!
//! - Starts at the stream's tip ([`StreamReader::at_tip`]): records written after the feed is positioned
//!   ([`ViewsTableFeed::positioned`] turns true after its first successful poll) are published, older ones
//!   are not; a client that subscribes after that receives every change written after it subscribed.
//! - Best effort across operator restarts: no checkpoint is stored. A restarted operator's feed starts at
//!   the tip again; the changes written while no feed ran are never pushed (connections were closed by the
//!   restart anyway, and a reconnecting client re-reads the view).
//! - Items are named by the table's [`ViewRoutes`] in the [`ViewDirectory`], read at every batch, so a view
//!   added to a shared table is pushed from its next batch on; items of no known view and the operator's
//!   internal items are not changes (see [`change_of`]).
//! - Errors are logged and retried with backoff (1 s doubling to 30 s). When records are lost to the feed
//!   (a stream gap, an unreadable record) it restarts at the tip and ends every connection of the namespace
//!   with an error ([`Hub::report_loss`]), so no client misses changes silently.
//! - Stops when its [`tokio::task::JoinHandle`] is aborted.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::hub::{Hub, ViewDirectory};
use super::message::{Change, ChangeEvent, ViewRoutes, change_of};
use crate::runtime::stream::{EventName, MAX_RECORDS_PER_CALL, StreamReader, StreamRecord};

/// How long the feed sleeps when it is at the stream's tip.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// The first pause after an error; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The feed of one views table: which stream, and where its changes go.
#[derive(Debug)]
pub struct ViewsTableFeed {
    /// The views table's namespace: its changes go to the hub's connections of that namespace.
    pub namespace: String,
    /// The views table, as the [`ViewDirectory`] names it.
    pub table: String,
    /// The table's stream (`LatestStreamArn`).
    pub stream_arn: String,
    positioned: watch::Sender<bool>,
}

impl ViewsTableFeed {
    pub fn new(
        namespace: impl Into<String>,
        table: impl Into<String>,
        stream_arn: impl Into<String>,
    ) -> Self {
        ViewsTableFeed {
            namespace: namespace.into(),
            table: table.into(),
            stream_arn: stream_arn.into(),
            positioned: watch::Sender::new(false),
        }
    }

    /// Turns true once the feed reads from the stream's tip (after its first successful poll): changes
    /// written from then on are published.
    pub fn positioned(&self) -> watch::Receiver<bool> {
        self.positioned.subscribe()
    }

    /// Starts reading on a task of its own; abort the handle to stop it.
    pub fn spawn(
        self,
        streams: aws_sdk_dynamodbstreams::Client,
        views: ViewDirectory,
        hub: Hub,
    ) -> JoinHandle<()> {
        tokio::spawn(self.run(streams, views, hub))
    }

    async fn run(self, streams: aws_sdk_dynamodbstreams::Client, views: ViewDirectory, hub: Hub) {
        let (namespace, table) = (self.namespace.as_str(), self.table.as_str());
        tracing::info!(%namespace, %table, stream = %self.stream_arn, "push feed starting at the stream's tip");
        let mut reader = StreamReader::at_tip(streams.clone(), &self.stream_arn);
        let mut backoff = FIRST_BACKOFF;
        loop {
            match reader.poll(MAX_RECORDS_PER_CALL).await {
                Ok(batch) => {
                    self.positioned.send_replace(true);
                    backoff = FIRST_BACKOFF;
                    let routes = views.routes(namespace, table).unwrap_or_default();
                    let published = publish_records(&hub, namespace, &routes, &batch.records);
                    if !batch.records.is_empty() {
                        tracing::debug!(%namespace, %table, records = batch.records.len(), published, "push feed batch");
                    }
                    if batch.caught_up {
                        tokio::time::sleep(IDLE_POLL).await;
                    }
                }
                Err(error) if error.is_retryable() => {
                    tracing::warn!(%namespace, %table, %error, retry_in = ?backoff, "push feed: reading the views table's stream failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(error) => {
                    let reached = hub.report_loss(
                        namespace,
                        format!("the push feed of views table `{table}` lost stream records: {error}"),
                    );
                    tracing::error!(%namespace, %table, %error, connections_closed = reached, retry_in = ?backoff,
                        "push feed: stream records lost; restarting at the stream's tip");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    reader = StreamReader::at_tip(streams.clone(), &self.stream_arn);
                }
            }
        }
    }
}

/// The protocol's event of a stream record's event.
pub fn change_event(event: EventName) -> ChangeEvent {
    match event {
        EventName::Insert => ChangeEvent::Insert,
        EventName::Modify => ChangeEvent::Modify,
        EventName::Remove => ChangeEvent::Remove,
    }
}

/// The change message of one views-table stream record, named by the table's `routes`; `None` when the item
/// is no view's (see [`change_of`]).
pub fn record_change(routes: &ViewRoutes, record: &StreamRecord) -> Option<Change> {
    change_of(
        routes,
        change_event(record.event_name),
        &record.keys,
        record.new_image.as_ref(),
        &record.sequence_number,
        record.approximate_creation_epoch_seconds,
    )
}

/// Publishes the changes of `records`, in order, to the connections of `namespace`; returns how many
/// records were changes of a view.
pub fn publish_records(hub: &Hub, namespace: &str, routes: &ViewRoutes, records: &[StreamRecord]) -> usize {
    let mut changes = 0;
    for change in records.iter().filter_map(|record| record_change(routes, record)) {
        hub.publish(namespace, change);
        changes += 1;
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::routes;
    use crate::projection::Item;

    fn item(json: &str) -> Item {
        serde_json::from_str(json).unwrap()
    }

    fn record(sequence_number: &str, event_name: EventName, pk: &str, score: Option<i64>) -> StreamRecord {
        let keys = item(&format!(r#"{{"pk":{{"S":"{pk}"}},"sk":{{"S":"STATE"}}}}"#));
        let new_image = score.map(|score| {
            item(&format!(
                r#"{{"pk":{{"S":"{pk}"}},"sk":{{"S":"STATE"}},"score":{{"N":"{score}"}}}}"#
            ))
        });
        StreamRecord {
            shard_id: "shardId-1".into(),
            sequence_number: sequence_number.into(),
            event_name,
            keys,
            new_image,
            approximate_creation_epoch_seconds: Some(1_732_492_800.0),
        }
    }

    #[test]
    fn a_record_becomes_its_views_change_with_the_streams_event_and_times() {
        let change =
            record_change(&routes(), &record("7", EventName::Modify, "players#P1", Some(12))).unwrap();
        assert_eq!(change.view, "players");
        assert_eq!(change.event, ChangeEvent::Modify);
        assert_eq!(change.keys.pk, "P1");
        assert_eq!(change.keys.sk.as_deref(), Some("STATE"));
        assert_eq!(change.sequence_number, "7");
        assert_eq!(change.approximate_creation_time, Some(1_732_492_800.0));
        assert_eq!(
            serde_json::Value::Object(change.new_image.unwrap()),
            serde_json::json!({"score": 12})
        );
        let removed = record_change(&routes(), &record("8", EventName::Remove, "games#G1", None)).unwrap();
        assert_eq!(
            (removed.view.as_str(), removed.event),
            ("games", ChangeEvent::Remove)
        );
        assert_eq!(change_event(EventName::Insert), ChangeEvent::Insert);
    }

    #[tokio::test]
    async fn records_are_published_in_order_and_non_view_items_are_skipped() {
        let hub = Hub::default();
        let mut client = hub.connect("game");
        client.subscribe("players", None);
        client.subscribe("games", None);
        let records = [
            record("1", EventName::Insert, "players#P1", Some(1)),
            record("2", EventName::Insert, "players#P1~applied#STATE", Some(1)),
            record("3", EventName::Insert, "unknown#X", Some(1)),
            record("4", EventName::Modify, "games#G1", Some(2)),
            record("5", EventName::Remove, "players#P1", None),
        ];
        assert_eq!(publish_records(&hub, "game", &routes(), &records), 3);
        let mut received = Vec::new();
        for _ in 0..3 {
            received.push(client.next_change().await.unwrap().sequence_number.clone());
        }
        assert_eq!(received, ["1", "4", "5"]);
        assert_eq!(
            publish_records(&hub, "game", &ViewRoutes::default(), &records),
            0,
            "a table the directory does not know publishes nothing"
        );
    }
}
