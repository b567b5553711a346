//! Push on the in-cluster runtime: the operator serves the push protocol itself
//! (`crate::push::server`), fed by one feed per views table whose views have `spec.subscribers`.
//!
//! The reconcile of such a view routes it (its active version's key prefix in its table) in the
//! [`ViewDirectory`] and makes sure the table's feed runs; `status.push.url` is written once the feed reads
//! from the stream's tip, so a client that subscribes after it appeared receives every later change. A
//! promotion re-routes the view to the new version's prefix. A view without subscribers, or deleted, is
//! unrouted, and a table left without reactive views loses its feed.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::push::feed::ViewsTableFeed;
use crate::push::hub::{Hub, ViewDirectory};
use crate::push::message::ViewRoutes;

/// One views table's running feed.
struct Feed {
    stream_arn: String,
    handle: JoinHandle<()>,
    positioned: watch::Receiver<bool>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// The operator's push endpoint state: the hub clients are served from, the directory of reactive views,
/// and the feeds.
pub struct PushRuntime {
    pub hub: Hub,
    pub views: ViewDirectory,
    base_url: String,
    /// (namespace, table) → its feed.
    feeds: Mutex<BTreeMap<(String, String), Feed>>,
}

impl PushRuntime {
    pub fn new(base_url: &str) -> Self {
        PushRuntime {
            hub: Hub::default(),
            views: ViewDirectory::default(),
            base_url: base_url.trim_end_matches('/').to_string(),
            feeds: Mutex::new(BTreeMap::new()),
        }
    }

    /// The URL clients of `namespace` connect to.
    pub fn url(&self, namespace: &str) -> String {
        format!("{}/v1/namespaces/{namespace}/watch", self.base_url)
    }

    /// Routes `view` to `key_prefix` of `table` and runs the table's feed on `stream_arn`. True once the
    /// feed reads from the stream's tip.
    pub fn serve_view(
        &self,
        streams: &aws_sdk_dynamodbstreams::Client,
        namespace: &str,
        view: &str,
        table: &str,
        key_prefix: &str,
        stream_arn: &str,
    ) -> bool {
        for other in self.views.tables(namespace) {
            if other != table {
                self.unroute(namespace, view, &other);
            }
        }
        let mut routes = self.views.routes(namespace, table).unwrap_or_default();
        let entry = (view.to_string(), key_prefix.to_string());
        if !routes.views.contains(&entry) {
            routes.views.retain(|(v, _)| v != view);
            routes.views.push(entry);
            self.views.set_table(namespace, table, routes);
            info!(%namespace, %view, %table, %key_prefix, "pushing the view's changes to subscribers");
        }
        let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        let key = (namespace.to_string(), table.to_string());
        let running = feeds
            .get(&key)
            .is_some_and(|f| f.stream_arn == stream_arn && !f.handle.is_finished());
        if !running {
            let feed = ViewsTableFeed::new(namespace, table, stream_arn);
            let positioned = feed.positioned();
            let handle = feed.spawn(streams.clone(), self.views.clone(), self.hub.clone());
            feeds.insert(
                key.clone(),
                Feed {
                    stream_arn: stream_arn.to_string(),
                    handle,
                    positioned,
                },
            );
        }
        feeds.get(&key).is_some_and(|f| *f.positioned.borrow())
    }

    /// Stops pushing `view` of `namespace` (no subscribers any more, or deleted).
    pub fn forget_view(&self, namespace: &str, view: &str) {
        for table in self.views.tables(namespace) {
            self.unroute(namespace, view, &table);
        }
    }

    fn unroute(&self, namespace: &str, view: &str, table: &str) {
        let Some(mut routes) = self.views.routes(namespace, table) else {
            return;
        };
        let before = routes.views.len();
        routes.views.retain(|(v, _)| v != view);
        if routes.views.len() == before {
            return;
        }
        info!(%namespace, %view, %table, "no longer pushing the view's changes");
        let empty = routes.views.is_empty();
        self.views.set_table(namespace, table, routes);
        if empty {
            let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
            feeds.remove(&(namespace.to_string(), table.to_string()));
        }
    }

    /// The routes of `table` (for tests and logs).
    pub fn routes(&self, namespace: &str, table: &str) -> Option<ViewRoutes> {
        self.views.routes(namespace, table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn views_are_routed_per_table_and_a_table_without_views_loses_its_feed() {
        let push = PushRuntime::new("ws://push:8081/");
        assert_eq!(push.url("games"), "ws://push:8081/v1/namespaces/games/watch");
        let conf = aws_sdk_dynamodbstreams::Config::builder()
            .behavior_version(aws_sdk_dynamodbstreams::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodbstreams::config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:9")
            .build();
        let streams = aws_sdk_dynamodbstreams::Client::from_conf(conf);
        assert!(!push.serve_view(&streams, "games", "players", "t1", "players#", "arn:s1"));
        push.serve_view(&streams, "games", "scores", "t1", "S#", "arn:s1");
        assert_eq!(
            push.routes("games", "t1").unwrap().views,
            vec![
                ("players".into(), "players#".into()),
                ("scores".into(), "S#".into())
            ]
        );
        // A promotion moves the view to its new version's prefix.
        push.serve_view(&streams, "games", "players", "t1", "~v2~players#", "arn:s1");
        assert!(
            push.routes("games", "t1")
                .unwrap()
                .views
                .contains(&("players".into(), "~v2~players#".into()))
        );
        assert_eq!(push.routes("games", "t1").unwrap().views.len(), 2);
        // Moving to a dedicated table unroutes it from the shared one.
        push.serve_view(&streams, "games", "players", "t2", "", "arn:s2");
        assert_eq!(push.routes("games", "t1").unwrap().views.len(), 1);
        push.forget_view("games", "scores");
        assert!(push.routes("games", "t1").is_none());
        assert!(
            !push
                .feeds
                .lock()
                .unwrap()
                .contains_key(&("games".into(), "t1".into()))
        );
        assert!(
            push.feeds
                .lock()
                .unwrap()
                .contains_key(&("games".into(), "t2".into()))
        );
    }
}
