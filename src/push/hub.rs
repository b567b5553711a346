//! [`Hub`]: the operator's in-memory fan-out of view changes to the connections of its push endpoint, and
//! [`ViewDirectory`]: which reactive views exist, per namespace and views table.
//!
//! Guarantees:
//! - Changes are published per namespace; every connection of that namespace receives them in publish order
//!   and keeps those its subscriptions [`wants`]. A connection sees every change published after it
//!   connected and while it is subscribed.
//! - Nothing is missed silently. Each namespace buffers the last [`Hub::new`]`(buffer)` changes; a connection
//!   that falls further behind (a slow or stalled client) ends with [`HubError::Lagged`], and a feed that
//!   lost stream records ends every connection of its namespace with [`HubError::Lost`]: the server sends
//!   the error and closes, and the client reconnects and re-reads the view.
//! - Best effort across operator restarts: the hub is memory only.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use tokio::sync::broadcast;

use super::message::{Change, Subscriptions, ViewRoutes, wants};

/// How many changes each namespace keeps for connections that are behind, unless set otherwise.
pub const DEFAULT_BUFFER: usize = 1024;

/// What a namespace's connections receive.
#[derive(Clone, Debug)]
enum HubEvent {
    Change(Arc<Change>),
    /// Changes were lost before the hub (the feed's stream gap): every connection must end.
    Lost(Arc<str>),
}

struct Inner {
    buffer: usize,
    namespaces: Mutex<HashMap<String, broadcast::Sender<HubEvent>>>,
    clients: AtomicUsize,
}

/// The fan-out of changes to connections; cheap to clone (all clones are the same hub).
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("buffer", &self.inner.buffer)
            .field("clients", &self.connected_clients())
            .finish()
    }
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new(DEFAULT_BUFFER)
    }
}

impl Hub {
    /// A hub keeping up to `buffer` changes per namespace for connections that are behind (at least 1).
    pub fn new(buffer: usize) -> Self {
        Hub {
            inner: Arc::new(Inner {
                buffer: buffer.max(1),
                namespaces: Mutex::new(HashMap::new()),
                clients: AtomicUsize::new(0),
            }),
        }
    }

    /// Sends `change` to every connection of `namespace`, after every change published before; returns how
    /// many connections it reached (0 when none is connected: the change is dropped).
    pub fn publish(&self, namespace: &str, change: Change) -> usize {
        self.send(namespace, HubEvent::Change(Arc::new(change)))
    }

    /// Ends every connection of `namespace` with [`HubError::Lost`] carrying `message` (changes were lost
    /// before they reached the hub); returns how many connections it reached.
    pub fn report_loss(&self, namespace: &str, message: impl Into<String>) -> usize {
        let message: String = message.into();
        self.send(namespace, HubEvent::Lost(message.into()))
    }

    fn send(&self, namespace: &str, event: HubEvent) -> usize {
        let namespaces = self
            .inner
            .namespaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match namespaces.get(namespace) {
            // `send` fails only when no receiver is left: nobody to reach.
            Some(sender) => sender.send(event).unwrap_or(0),
            None => 0,
        }
    }

    /// A new connection to `namespace`, with no subscription yet; counted until dropped.
    pub fn connect(&self, namespace: &str) -> HubClient {
        let receiver = {
            let mut namespaces = self
                .inner
                .namespaces
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            namespaces
                .entry(namespace.to_string())
                .or_insert_with(|| broadcast::channel(self.inner.buffer).0)
                .subscribe()
        };
        self.inner.clients.fetch_add(1, Ordering::Relaxed);
        HubClient {
            hub: self.clone(),
            namespace: namespace.to_string(),
            receiver: Some(receiver),
            subscriptions: Subscriptions::new(),
        }
    }

    /// The connections open now, all namespaces together.
    pub fn connected_clients(&self) -> usize {
        self.inner.clients.load(Ordering::Relaxed)
    }

    /// How many changes each namespace keeps for connections that are behind.
    pub fn buffer(&self) -> usize {
        self.inner.buffer
    }

    /// Drops the channel of `namespace` when no connection is left on it.
    fn forget_if_unused(&self, namespace: &str) {
        let mut namespaces = self
            .inner
            .namespaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if namespaces.get(namespace).is_some_and(|s| s.receiver_count() == 0) {
            namespaces.remove(namespace);
        }
    }
}

/// Why a connection's changes end.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// The connection read changes slower than they were published.
    #[error(
        "this connection fell behind and missed {missed} changes of namespace `{namespace}` (the server keeps \
         the last {buffer} changes per namespace for a slow reader); it is closed: reconnect, subscribe again \
         and re-read the view for its current state"
    )]
    Lagged {
        namespace: String,
        missed: u64,
        buffer: usize,
    },
    /// Changes were lost before they reached the hub.
    #[error(
        "changes of namespace `{namespace}` were lost ({message}); the connection is closed: reconnect, \
         subscribe again and re-read the view for its current state"
    )]
    Lost { namespace: String, message: String },
    /// The hub is gone (the server is stopping).
    #[error("the push server is stopping")]
    Closed,
}

/// One connection's view of the hub: its subscriptions, and the changes of its namespace it wants.
#[derive(Debug)]
pub struct HubClient {
    hub: Hub,
    namespace: String,
    /// `None` only while dropping.
    receiver: Option<broadcast::Receiver<HubEvent>>,
    subscriptions: Subscriptions,
}

impl HubClient {
    /// The namespace this connection receives the changes of.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Adds the subscription (`view`, `key_prefix`); a repeated one changes nothing.
    pub fn subscribe(&mut self, view: &str, key_prefix: Option<&str>) {
        subscribe(&mut self.subscriptions, view, key_prefix);
    }

    /// Removes the subscription (`view`, `key_prefix`), or every subscription to `view` when `key_prefix` is
    /// `None`; returns whether one was removed.
    pub fn unsubscribe(&mut self, view: &str, key_prefix: Option<&str>) -> bool {
        unsubscribe(&mut self.subscriptions, view, key_prefix)
    }

    /// The subscriptions in place.
    pub fn subscriptions(&self) -> &Subscriptions {
        &self.subscriptions
    }

    /// The next published change some subscription wants (each change once, however many want it).
    /// Cancel safe: a change is consumed only when returned.
    pub async fn next_change(&mut self) -> Result<Arc<Change>, HubError> {
        let Some(receiver) = self.receiver.as_mut() else {
            return Err(HubError::Closed);
        };
        loop {
            match receiver.recv().await {
                Ok(HubEvent::Change(change)) => {
                    if subscriptions_want(&self.subscriptions, &change) {
                        return Ok(change);
                    }
                }
                Ok(HubEvent::Lost(message)) => {
                    return Err(HubError::Lost {
                        namespace: self.namespace.clone(),
                        message: message.to_string(),
                    });
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    return Err(HubError::Lagged {
                        namespace: self.namespace.clone(),
                        missed,
                        buffer: self.hub.buffer(),
                    });
                }
                Err(broadcast::error::RecvError::Closed) => return Err(HubError::Closed),
            }
        }
    }
}

impl Drop for HubClient {
    fn drop(&mut self) {
        drop(self.receiver.take());
        self.hub.inner.clients.fetch_sub(1, Ordering::Relaxed);
        self.hub.forget_if_unused(&self.namespace);
    }
}

/// Adds (`view`, `key_prefix`) to `subscriptions`, once.
pub fn subscribe(subscriptions: &mut Subscriptions, view: &str, key_prefix: Option<&str>) {
    let prefixes = subscriptions.entry(view.to_string()).or_default();
    let prefix = key_prefix.map(str::to_string);
    if !prefixes.contains(&prefix) {
        prefixes.push(prefix);
    }
}

/// Removes (`view`, `key_prefix`), or all of `view`'s subscriptions when `key_prefix` is `None`; returns
/// whether one was removed.
pub fn unsubscribe(subscriptions: &mut Subscriptions, view: &str, key_prefix: Option<&str>) -> bool {
    let Some(prefixes) = subscriptions.get_mut(view) else {
        return false;
    };
    let removed = match key_prefix {
        None => !prefixes.is_empty(),
        Some(prefix) => {
            let before = prefixes.len();
            prefixes.retain(|p| p.as_deref() != Some(prefix));
            prefixes.len() != before
        }
    };
    if key_prefix.is_none() || prefixes.is_empty() {
        subscriptions.remove(view);
    }
    removed
}

/// Whether any of `subscriptions` wants `change`.
pub fn subscriptions_want(subscriptions: &Subscriptions, change: &Change) -> bool {
    subscriptions.get(&change.view).is_some_and(|prefixes| {
        prefixes
            .iter()
            .any(|prefix| wants(change, &change.view, prefix.as_deref()))
    })
}

/// The reactive views (views tables with Streams on) the operator knows, per namespace and views table:
/// what a client may subscribe to, and how a table's feed names the view of an item. Cheap to clone (all
/// clones are the same directory); the operator keeps it current as views come and go.
#[derive(Clone, Debug, Default)]
pub struct ViewDirectory {
    /// Namespace → views table name → the table's views.
    inner: Arc<RwLock<BTreeMap<String, BTreeMap<String, ViewRoutes>>>>,
}

impl ViewDirectory {
    /// Sets the views of `table` in `namespace` (no views: forgets the table).
    pub fn set_table(&self, namespace: &str, table: &str, routes: ViewRoutes) {
        let mut all = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if routes.views.is_empty() {
            drop(all);
            self.remove_table(namespace, table);
            return;
        }
        all.entry(namespace.to_string())
            .or_default()
            .insert(table.to_string(), routes);
    }

    /// Forgets `table` of `namespace` and its views.
    pub fn remove_table(&self, namespace: &str, table: &str) {
        let mut all = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(tables) = all.get_mut(namespace) {
            tables.remove(table);
            if tables.is_empty() {
                all.remove(namespace);
            }
        }
    }

    /// The views of `table` in `namespace`, if the table is known.
    pub fn routes(&self, namespace: &str, table: &str) -> Option<ViewRoutes> {
        let all = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        all.get(namespace).and_then(|tables| tables.get(table)).cloned()
    }

    /// The views tables of `namespace` that have reactive views.
    pub fn tables(&self, namespace: &str) -> Vec<String> {
        let all = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        all.get(namespace)
            .map(|tables| tables.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The names of the reactive views of `namespace`, all tables together.
    pub fn views(&self, namespace: &str) -> BTreeSet<String> {
        let all = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        all.get(namespace)
            .into_iter()
            .flat_map(|tables| tables.values())
            .flat_map(|routes| routes.views.iter().map(|(view, _)| view.clone()))
            .collect()
    }

    /// Whether `view` is a reactive view of `namespace`.
    pub fn has_view(&self, namespace: &str, view: &str) -> bool {
        let all = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        all.get(namespace).is_some_and(|tables| {
            tables
                .values()
                .any(|routes| routes.views.iter().any(|(name, _)| name == view))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::players_directory;
    use crate::push::message::{ChangeEvent, ChangeKeys, PROTOCOL_VERSION};

    fn change(view: &str, pk: &str, sequence_number: u32) -> Change {
        Change {
            version: PROTOCOL_VERSION,
            view: view.into(),
            event: ChangeEvent::Insert,
            keys: ChangeKeys { pk: pk.into(), sk: None },
            new_image: None,
            sequence_number: sequence_number.to_string(),
            approximate_creation_time: None,
        }
    }

    #[tokio::test]
    async fn a_client_gets_what_it_wants_of_its_namespace_in_order() {
        let hub = Hub::new(16);
        let mut client = hub.connect("game");
        client.subscribe("players", Some("P#1"));
        client.subscribe("players", None);
        assert_eq!(hub.connected_clients(), 1);
        hub.publish("game", change("players", "P#1", 1));
        hub.publish("game", change("games", "G#1", 2));
        hub.publish("other", change("players", "P#1", 3));
        hub.publish("game", change("players", "P#2", 4));
        assert_eq!(client.next_change().await.unwrap().sequence_number, "1");
        assert_eq!(
            client.next_change().await.unwrap().sequence_number,
            "4",
            "another view's and another namespace's changes are skipped, a change wanted twice comes once"
        );
        drop(client);
        assert_eq!(hub.connected_clients(), 0);
        assert_eq!(hub.publish("game", change("players", "P#1", 5)), 0);
        assert!(hub.inner.namespaces.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_client_behind_by_more_than_the_buffer_is_told_how_much_it_missed() {
        let hub = Hub::new(4);
        let mut client = hub.connect("game");
        client.subscribe("players", None);
        for n in 0..10 {
            hub.publish("game", change("players", "P#1", n));
        }
        let error = client.next_change().await.unwrap_err();
        assert_eq!(
            error,
            HubError::Lagged { namespace: "game".into(), missed: 6, buffer: 4 }
        );
        assert!(error.to_string().contains("missed 6 changes"));
    }

    #[tokio::test]
    async fn a_reported_loss_ends_every_connection_of_the_namespace() {
        let hub = Hub::default();
        let mut a = hub.connect("game");
        let mut b = hub.connect("game");
        let mut other = hub.connect("other");
        other.subscribe("players", None);
        assert_eq!(hub.report_loss("game", "stream records trimmed"), 2);
        for client in [&mut a, &mut b] {
            assert!(matches!(client.next_change().await, Err(HubError::Lost { .. })));
        }
        hub.publish("other", change("players", "P#1", 1));
        assert_eq!(other.next_change().await.unwrap().sequence_number, "1");
    }

    #[test]
    fn unsubscribing_removes_one_prefix_or_the_whole_view() {
        let mut subscriptions = Subscriptions::new();
        subscribe(&mut subscriptions, "players", Some("A"));
        subscribe(&mut subscriptions, "players", Some("A"));
        subscribe(&mut subscriptions, "players", Some("B"));
        assert_eq!(subscriptions["players"].len(), 2);
        assert!(subscriptions_want(&subscriptions, &change("players", "B1", 1)));
        assert!(!subscriptions_want(&subscriptions, &change("players", "C1", 1)));
        assert!(unsubscribe(&mut subscriptions, "players", Some("A")));
        assert!(!unsubscribe(&mut subscriptions, "players", Some("A")));
        assert!(!subscriptions_want(&subscriptions, &change("players", "A1", 1)));
        assert!(unsubscribe(&mut subscriptions, "players", None));
        assert!(subscriptions.is_empty());
        assert!(!unsubscribe(&mut subscriptions, "players", None));
    }

    #[test]
    fn the_directory_knows_views_per_namespace_across_tables() {
        let views = players_directory();
        views.set_table(
            "game",
            "scores",
            ViewRoutes { views: vec![("scores".into(), "".into())] },
        );
        assert!(views.has_view("game", "players") && views.has_view("game", "scores"));
        assert!(!views.has_view("other", "players"));
        assert_eq!(
            views.views("game").into_iter().collect::<Vec<_>>(),
            ["players", "scores"]
        );
        assert_eq!(views.routes("game", "scores").unwrap().views.len(), 1);
        views.set_table("game", "scores", ViewRoutes::default());
        assert!(!views.has_view("game", "scores"));
        views.remove_table("game", "views");
        assert!(views.views("game").is_empty());
        assert!(views.inner.read().unwrap().is_empty());
    }
}
