//! The built-in **connections** Lambda: keeps the connections table of a views table's WebSocket API.
//!
//! API Gateway (WebSocket API, route selection `$request.body.action`) invokes it (`AWS_PROXY`) for the
//! routes `$connect`, `$disconnect`, `subscribe` and `unsubscribe` with a [`WebSocketEvent`]; it answers
//! with a [`ProxyResponse`] whose body, a [`ServerMessage`] as JSON, API Gateway sends back to the client
//! through the routes' `$default` route response. The requests are the protocol's [`ClientRequest`]s.
//!
//! | route | does | answers |
//! |---|---|---|
//! | `$connect` | puts the connection item | 200 (no body); 500 rejects the connection when the put failed |
//! | `subscribe` | adds the subscription (a known view only) | 200 `subscribed`; 400 `error` (unknown view, invalid request, too many subscriptions) |
//! | `unsubscribe` | removes that subscription, or all of the view's without `keyPrefix` (any view name: idempotent) | 200 `unsubscribed` |
//! | `$disconnect` | removes the connection and all its subscriptions | 200 (API Gateway ignores it) |
//! | `$default` or anything else | nothing | 400 `error` naming the accepted requests |
//!
//! Messages are dispatched by their body, not by the route key: whatever route brought a valid
//! `subscribe`/`unsubscribe`, it is served.
//!
//! # The connections table
//!
//! Partition key `pk` (S), sort key `sk` (S), TTL attribute `expiresAt` (epoch seconds). Two kinds of item:
//!
//! | item | `pk` | `sk` | other attributes |
//! |---|---|---|---|
//! | connection | `conn#<connectionId>` | `conn` | `expiresAt`; `subscriptions` (SS of `<view>\|<keyPrefix>`, absent while empty) |
//! | subscription | `view#<view>` | `<connectionId>\|<keyPrefix or empty>` | `connectionId`, `keyPrefix` (absent for the whole view), `expiresAt` |
//!
//! - The notifier finds a view's subscribers with one `Query` on `pk = view#<view>`
//!   ([`ConnectionStore::subscribers`]); `$disconnect` finds a connection's subscriptions in its
//!   connection item's `subscriptions` set.
//! - `expiresAt` is the connection's start (`requestContext.connectedAt`) plus [`MAX_CONNECTION_SECONDS`]
//!   (API Gateway closes every WebSocket connection after 2 hours) plus [`EXPIRY_MARGIN_SECONDS`] (clock
//!   skew, and the time between the start and the write). `$disconnect` is best effort in API Gateway:
//!   when it never comes, TTL deletes the items (TTL deletion is lazy, so readers also ignore expired
//!   items), and a post to the connection before then gets `410 Gone`, after which the notifier removes
//!   them itself.
//! - A connection holds at most [`MAX_SUBSCRIPTIONS_PER_CONNECTION`] subscriptions (it bounds the
//!   connection item and the work of `$disconnect`); a key prefix is at most [`MAX_KEY_PREFIX_BYTES`]
//!   (the sort key's limit is 1024 bytes). View names never contain `|` (Kubernetes names cannot).
//! - Write order keeps the set a superset of the subscription items: `subscribe` adds to the set before
//!   it puts the item; `unsubscribe` deletes the item before it removes it from the set.
//!
//! # Environment
//!
//! - [`ENV_CONNECTIONS_TABLE`]: the connections table's name.
//! - [`ENV_VIEW_ROUTES`]: the JSON of [`ViewRoutes`], the views this API serves and their key prefixes
//!   in the views table, e.g. `{"views":[["players","players#"],["games","games#"]]}`.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{error, info, warn};

use super::{ConfigError, process_env};
use crate::projection::{Item, Number, Value};
use crate::push::message::{ClientRequest, ServerMessage, ViewRoutes};

/// The connections table's name.
pub const ENV_CONNECTIONS_TABLE: &str = "KAPPA_CONNECTIONS_TABLE";
/// The views served, as the JSON of [`ViewRoutes`].
pub const ENV_VIEW_ROUTES: &str = "KAPPA_VIEW_ROUTES";

/// API Gateway's maximum WebSocket connection duration: 2 hours.
pub const MAX_CONNECTION_SECONDS: i64 = 2 * 60 * 60;
/// Added to [`MAX_CONNECTION_SECONDS`] in `expiresAt`: 15 minutes.
pub const EXPIRY_MARGIN_SECONDS: i64 = 15 * 60;
/// The most subscriptions one connection may hold.
pub const MAX_SUBSCRIPTIONS_PER_CONNECTION: usize = 100;
/// The longest key prefix, in bytes (it is part of a sort key, at most 1024 bytes).
pub const MAX_KEY_PREFIX_BYTES: usize = 512;

/// The partition key attribute.
pub const PK: &str = "pk";
/// The sort key attribute.
pub const SK: &str = "sk";
/// The TTL attribute, epoch seconds.
pub const EXPIRES_AT: &str = "expiresAt";
/// A connection item's set of `<view>|<keyPrefix>` entries.
pub const SUBSCRIPTIONS: &str = "subscriptions";
/// A subscription item's connection id.
pub const CONNECTION_ID: &str = "connectionId";
/// A subscription item's key prefix (absent: the whole view).
pub const KEY_PREFIX: &str = "keyPrefix";
/// The sort key of a connection item.
pub const CONNECTION_SK: &str = "conn";

/// The `pk` of connection `connection_id`'s item.
pub fn connection_pk(connection_id: &str) -> String {
    format!("conn#{connection_id}")
}

/// The `pk` of view `view`'s subscription items.
pub fn subscription_pk(view: &str) -> String {
    format!("view#{view}")
}

/// The `sk` of a subscription item.
pub fn subscription_sk(connection_id: &str, key_prefix: Option<&str>) -> String {
    format!("{connection_id}|{}", key_prefix.unwrap_or_default())
}

/// An entry of a connection item's `subscriptions` set.
pub fn subscription_entry(view: &str, key_prefix: Option<&str>) -> String {
    format!("{view}|{}", key_prefix.unwrap_or_default())
}

/// `(view, key prefix)` of a `subscriptions` entry; `None` when it has no `|`.
pub fn parse_subscription_entry(entry: &str) -> Option<(String, Option<String>)> {
    let (view, prefix) = entry.split_once('|')?;
    Some((view.to_string(), non_empty(prefix)))
}

/// `expiresAt` of a connection that started at `connected_at` (epoch seconds).
pub fn expires_at(connected_at: i64) -> i64 {
    connected_at + MAX_CONNECTION_SECONDS + EXPIRY_MARGIN_SECONDS
}

/// Seconds since the Unix epoch.
pub fn epoch_seconds(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A connection item, without subscriptions.
pub fn connection_item(connection_id: &str, expires_at: i64) -> Item {
    Item::from([
        (PK.to_string(), Value::S(connection_pk(connection_id))),
        (SK.to_string(), Value::S(CONNECTION_SK.to_string())),
        (EXPIRES_AT.to_string(), Value::N(Number::from(expires_at))),
    ])
}

/// A subscription item.
pub fn subscription_item(view: &str, connection_id: &str, key_prefix: Option<&str>, expires_at: i64) -> Item {
    let mut item = Item::from([
        (PK.to_string(), Value::S(subscription_pk(view))),
        (
            SK.to_string(),
            Value::S(subscription_sk(connection_id, key_prefix)),
        ),
        (CONNECTION_ID.to_string(), Value::S(connection_id.to_string())),
        (EXPIRES_AT.to_string(), Value::N(Number::from(expires_at))),
    ]);
    if let Some(prefix) = key_prefix {
        item.insert(KEY_PREFIX.to_string(), Value::S(prefix.to_string()));
    }
    item
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_string())
}

/// A connections-table operation that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionStoreError {
    /// The connection already holds the most subscriptions allowed.
    #[error(
        "connection {connection_id} already holds {limit} subscriptions, the most one connection may hold: \
         unsubscribe from one first"
    )]
    TooManySubscriptions { connection_id: String, limit: usize },
    /// The connection has no item (it never connected, or its item expired).
    #[error("connection {connection_id} is not registered (its item is missing or expired): reconnect")]
    NotConnected { connection_id: String },
    /// The view name holds the separator of a connection item's subscription entries.
    #[error(
        "view {view:?} contains '|', which separates a view from its key prefix in the connections table: \
         subscribe to a MaterializedView by its name (Kubernetes names have no '|')"
    )]
    InvalidView { view: String },
    /// A DynamoDB call failed.
    #[error("{operation} on connections table {table} failed: {message}")]
    Call {
        operation: &'static str,
        table: String,
        message: String,
        /// Throttling, a 5xx, a timeout: worth another try.
        retryable: bool,
    },
}

impl ConnectionStoreError {
    /// Whether trying again can help.
    pub fn retryable(&self) -> bool {
        matches!(self, ConnectionStoreError::Call { retryable: true, .. })
    }
}

/// A view's subscriber: `(connection id, key prefix)`; `None`: the whole view.
pub type Subscriber = (String, Option<String>);

/// A connection's subscription to a view's changes: those of keys starting with `key_prefix`, or
/// (`None`) all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ViewSubscription<'a> {
    pub connection_id: &'a str,
    pub view: &'a str,
    pub key_prefix: Option<&'a str>,
}

impl<'a> ViewSubscription<'a> {
    /// Refuses a view name an entry could not be parsed back from ([`parse_subscription_entry`] splits at
    /// the first `|`; a key prefix may hold `|`, a view name may not).
    pub fn check(self) -> Result<Self, ConnectionStoreError> {
        match self.view.contains('|') {
            true => Err(ConnectionStoreError::InvalidView { view: self.view.to_string() }),
            false => Ok(self),
        }
    }

    pub fn new(connection_id: &'a str, view: &'a str, key_prefix: Option<&'a str>) -> Self {
        Self { connection_id, view, key_prefix }
    }
}

/// The connections table, as the connections and notifier functions use it (see the module docs for the
/// items). Every operation is idempotent.
pub trait ConnectionStore {
    /// Registers a connection that stays for at most until `expires_at` (epoch seconds).
    fn connect(
        &self,
        connection_id: &str,
        expires_at: i64,
    ) -> impl Future<Output = Result<(), ConnectionStoreError>> + Send;

    /// Adds `subscription` of a registered connection, kept at most until `expires_at` (epoch seconds).
    fn subscribe(
        &self,
        subscription: ViewSubscription<'_>,
        expires_at: i64,
    ) -> impl Future<Output = Result<(), ConnectionStoreError>> + Send;

    /// Removes `subscription`; with no key prefix, all of the connection's subscriptions to the view.
    /// Returns how many were removed.
    fn unsubscribe(
        &self,
        subscription: ViewSubscription<'_>,
    ) -> impl Future<Output = Result<usize, ConnectionStoreError>> + Send;

    /// Removes the connection and all its subscriptions (nothing when it is already gone).
    fn disconnect(
        &self,
        connection_id: &str,
    ) -> impl Future<Output = Result<(), ConnectionStoreError>> + Send;

    /// The subscriptions to `view`, ordered by connection id then key prefix.
    fn subscribers(
        &self,
        view: &str,
    ) -> impl Future<Output = Result<Vec<Subscriber>, ConnectionStoreError>> + Send;
}

/// The connections table in memory: the same items as in DynamoDB, keyed by `(pk, sk)`, changed the way
/// [`DynamoConnections`](crate::aws::connections::DynamoConnections) changes them. Expiry is not modelled (items never expire).
#[derive(Debug, Default)]
pub struct MemoryConnections {
    items: Mutex<Table>,
}

/// Items by `(pk, sk)`.
type Table = BTreeMap<(String, String), Item>;

impl MemoryConnections {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every item, ordered by `(pk, sk)`.
    pub fn items(&self) -> Vec<Item> {
        self.lock()
            .map(|items| items.values().cloned().collect())
            .unwrap_or_default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Table>, ConnectionStoreError> {
        self.items.lock().map_err(|_| ConnectionStoreError::Call {
            operation: "lock",
            table: "(in memory)".to_string(),
            message: "the in-memory table's lock is poisoned".to_string(),
            retryable: false,
        })
    }

    fn key_of(item: &Item) -> (String, String) {
        let get = |name| {
            item.get(name)
                .and_then(Value::as_s)
                .unwrap_or_default()
                .to_string()
        };
        (get(PK), get(SK))
    }

    fn entries_of(item: &Item) -> Vec<String> {
        match item.get(SUBSCRIPTIONS) {
            Some(Value::Ss(entries)) => entries.clone(),
            _ => Vec::new(),
        }
    }

    fn set_entries(item: &mut Item, mut entries: Vec<String>) {
        entries.sort();
        entries.dedup();
        if entries.is_empty() {
            item.remove(SUBSCRIPTIONS);
        } else {
            item.insert(SUBSCRIPTIONS.to_string(), Value::Ss(entries));
        }
    }
}

fn connection_key(connection_id: &str) -> (String, String) {
    (connection_pk(connection_id), CONNECTION_SK.to_string())
}

impl ConnectionStore for MemoryConnections {
    async fn connect(&self, connection_id: &str, expires_at: i64) -> Result<(), ConnectionStoreError> {
        let item = connection_item(connection_id, expires_at);
        self.lock()?.insert(Self::key_of(&item), item);
        Ok(())
    }

    async fn subscribe(&self, on: ViewSubscription<'_>, expires_at: i64) -> Result<(), ConnectionStoreError> {
        let ViewSubscription { connection_id, view, key_prefix } = on.check()?;
        let mut items = self.lock()?;
        let entry = subscription_entry(view, key_prefix);
        let Some(connection) = items.get_mut(&connection_key(connection_id)) else {
            return Err(ConnectionStoreError::NotConnected { connection_id: connection_id.to_string() });
        };
        let mut entries = Self::entries_of(connection);
        if !entries.contains(&entry) {
            if entries.len() >= MAX_SUBSCRIPTIONS_PER_CONNECTION {
                return Err(ConnectionStoreError::TooManySubscriptions {
                    connection_id: connection_id.to_string(),
                    limit: MAX_SUBSCRIPTIONS_PER_CONNECTION,
                });
            }
            entries.push(entry);
        }
        Self::set_entries(connection, entries);
        let item = subscription_item(view, connection_id, key_prefix, expires_at);
        items.insert(Self::key_of(&item), item);
        Ok(())
    }

    async fn unsubscribe(&self, on: ViewSubscription<'_>) -> Result<usize, ConnectionStoreError> {
        let ViewSubscription { connection_id, view, key_prefix } = on;
        let mut items = self.lock()?;
        let pk = subscription_pk(view);
        let doomed: Vec<(String, String)> = match key_prefix {
            Some(_) => vec![(pk, subscription_sk(connection_id, key_prefix))],
            None => {
                let start = subscription_sk(connection_id, None);
                items
                    .range((pk.clone(), start.clone())..)
                    .take_while(|((p, s), _)| *p == pk && s.starts_with(&start))
                    .map(|(key, _)| key.clone())
                    .collect()
            }
        };
        let mut removed = Vec::new();
        for key in doomed {
            if let Some(item) = items.remove(&key) {
                let prefix = item.get(KEY_PREFIX).and_then(Value::as_s);
                removed.push(subscription_entry(view, prefix));
            }
        }
        if let Some(connection) = items.get_mut(&connection_key(connection_id)) {
            let entries = Self::entries_of(connection)
                .into_iter()
                .filter(|e| !removed.contains(e))
                .collect();
            Self::set_entries(connection, entries);
        }
        Ok(removed.len())
    }

    async fn disconnect(&self, connection_id: &str) -> Result<(), ConnectionStoreError> {
        let mut items = self.lock()?;
        let Some(connection) = items.remove(&connection_key(connection_id)) else {
            return Ok(());
        };
        for entry in Self::entries_of(&connection) {
            if let Some((view, prefix)) = parse_subscription_entry(&entry) {
                items.remove(&(
                    subscription_pk(&view),
                    subscription_sk(connection_id, prefix.as_deref()),
                ));
            }
        }
        Ok(())
    }

    async fn subscribers(&self, view: &str) -> Result<Vec<Subscriber>, ConnectionStoreError> {
        let items = self.lock()?;
        let pk = subscription_pk(view);
        Ok(items
            .range((pk.clone(), String::new())..)
            .take_while(|((p, _), _)| *p == pk)
            .filter_map(|(_, item)| subscriber_of(item))
            .collect())
    }
}

/// The `(connectionId, keyPrefix)` of a subscription item.
fn subscriber_of(item: &Item) -> Option<Subscriber> {
    let connection_id = item.get(CONNECTION_ID)?.as_s()?.to_string();
    let prefix = item.get(KEY_PREFIX).and_then(Value::as_s).and_then(non_empty);
    Some((connection_id, prefix))
}

/// The connections function's configuration, from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionsConfig {
    /// [`ENV_CONNECTIONS_TABLE`].
    pub table: String,
    /// [`ENV_VIEW_ROUTES`].
    pub routes: ViewRoutes,
}

impl ConnectionsConfig {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(process_env)
    }

    /// Reads the configuration through `lookup` (variable name → value).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(ConnectionsConfig {
            table: connections_table_from_lookup(&lookup)?,
            routes: view_routes_from_lookup(&lookup)?,
        })
    }

    /// The function's environment: every variable [`ConnectionsConfig::from_lookup`] reads.
    pub fn to_env(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (ENV_CONNECTIONS_TABLE.to_string(), self.table.clone()),
            (ENV_VIEW_ROUTES.to_string(), view_routes_env_value(&self.routes)),
        ])
    }
}

/// The value of [`ENV_VIEW_ROUTES`]: the routes as JSON.
pub fn view_routes_env_value(routes: &ViewRoutes) -> String {
    serde_json::to_string(routes).unwrap_or_else(|_| r#"{"views":[]}"#.into())
}

/// [`ENV_CONNECTIONS_TABLE`], required.
pub fn connections_table_from_lookup(
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    crate::functions::required(
        lookup,
        ENV_CONNECTIONS_TABLE,
        "set it to the name of the view's WebSocket connections table (the operator sets it when it creates \
         the function)",
    )
}

/// [`ENV_VIEW_ROUTES`], required: at least one view, names non-empty, distinct and without `|`.
pub fn view_routes_from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<ViewRoutes, ConfigError> {
    let raw = crate::functions::required(
        lookup,
        ENV_VIEW_ROUTES,
        "set it to the views served and their key prefixes, e.g. {\"views\":[[\"players\",\"players#\"]]} \
         (the operator sets it when it creates the function)",
    )?;
    let invalid = |reason: String| ConfigError::Invalid { var: ENV_VIEW_ROUTES, value: raw.clone(), reason };
    let routes: ViewRoutes = serde_json::from_str(&raw).map_err(|e| {
        invalid(format!(
            "{e}; it must be {{\"views\":[[\"<view>\",\"<key prefix>\"],...]}}, e.g. \
             {{\"views\":[[\"players\",\"players#\"],[\"games\",\"games#\"]]}}"
        ))
    })?;
    if routes.views.is_empty() {
        return Err(invalid(
            "it lists no view: name at least one view with push enabled".to_string(),
        ));
    }
    let mut seen = BTreeSet::new();
    for (view, _) in &routes.views {
        if view.is_empty() || view.contains('|') {
            return Err(invalid(format!(
                "view name {view:?} is empty or contains '|': use the MaterializedView's name"
            )));
        }
        if !seen.insert(view.as_str()) {
            return Err(invalid(format!(
                "view {view:?} is listed twice: list each view once"
            )));
        }
    }
    Ok(routes)
}

/// An API Gateway WebSocket proxy event: the `aws_lambda_events` crate's. The function reads
/// `requestContext.routeKey` (`$connect`, `$disconnect`, `$default` or a message route: `subscribe`,
/// `unsubscribe`), `eventType` (`CONNECT`, `MESSAGE` or `DISCONNECT`), `connectionId`, `connectedAt`
/// (epoch milliseconds) and the `body` of `MESSAGE` events. The crate requires `connectedAt` and
/// `requestTimeEpoch`, which API Gateway sends with every WebSocket event (every event of the fixture
/// `tests/fixtures/websocket-events.json` has both); an event without them fails before [`handle`].
pub type WebSocketEvent = aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;

/// The function's answer to API Gateway: the `aws_lambda_events` crate's proxy response. 200 accepts (a
/// `$connect`: the connection), 4xx/5xx refuses; the body, a [`ServerMessage`] as JSON, is sent to the
/// client by the route response.
pub type ProxyResponse = aws_lambda_events::apigw::ApiGatewayProxyResponse;

/// Builds and reads the function's [`ProxyResponse`]s.
pub trait ProxyResponseExt {
    /// 200 without a body.
    fn ok() -> Self;
    /// `status_code` with `message` as the body.
    fn message(status_code: u16, message: &ServerMessage) -> Self;
    /// `status_code` with an error message as the body.
    fn error(status_code: u16, message: impl Into<String>) -> Self;
    /// The body's text, if it has one.
    fn body_text(&self) -> Option<&str>;
    /// The body as a server message, if it is one.
    fn server_message(&self) -> Option<ServerMessage>;
}

impl ProxyResponseExt for ProxyResponse {
    fn ok() -> Self {
        let mut response = ProxyResponse::default();
        response.status_code = 200;
        response
    }

    fn message(status_code: u16, message: &ServerMessage) -> Self {
        let mut response = ProxyResponse::default();
        response.status_code = i64::from(status_code);
        response.body = Some(aws_lambda_events::encodings::Body::Text(message.to_text()));
        response
    }

    fn error(status_code: u16, message: impl Into<String>) -> Self {
        Self::message(status_code, &ServerMessage::error(message))
    }

    fn body_text(&self) -> Option<&str> {
        match self.body.as_ref()? {
            aws_lambda_events::encodings::Body::Text(text) => Some(text),
            aws_lambda_events::encodings::Body::Binary(bytes) => std::str::from_utf8(bytes).ok(),
            aws_lambda_events::encodings::Body::Empty => None,
            _ => None,
        }
    }

    fn server_message(&self) -> Option<ServerMessage> {
        self.body_text().and_then(|b| serde_json::from_str(b).ok())
    }
}

fn accepted_requests(routes: &ViewRoutes) -> String {
    format!(
        "accepted: {{\"action\":\"subscribe\",\"view\":\"<view>\",\"keyPrefix\":\"<optional key prefix>\"}} \
         and {{\"action\":\"unsubscribe\",\"view\":\"<view>\",\"keyPrefix\":\"<optional>\"}}, \
         where <view> is one of: {}",
        view_names(routes)
    )
}

fn view_names(routes: &ViewRoutes) -> String {
    routes
        .views
        .iter()
        .map(|(view, _)| view.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Handles one API Gateway event; see the module docs. `now` (epoch seconds) stands in for the
/// connection's start when the event has no `connectedAt`.
pub async fn handle<S: ConnectionStore>(
    routes: &ViewRoutes,
    store: &S,
    event: &WebSocketEvent,
    now: i64,
) -> ProxyResponse {
    let context = &event.request_context;
    let connection_id = context.connection_id.as_deref().unwrap_or_default();
    if connection_id.is_empty() {
        return ProxyResponse::error(400, "the event has no requestContext.connectionId");
    }
    // API Gateway always sends `connectedAt`; 0 (not set) stands for now.
    let connected_at = match context.connected_at {
        ms if ms > 0 => ms.div_euclid(1000),
        _ => now,
    };
    let expiry = expires_at(connected_at);
    let route_key = context.route_key.as_deref().unwrap_or_default();
    let event_type = context.event_type.as_deref().unwrap_or_default();
    match (route_key, event_type) {
        ("$connect", _) | (_, "CONNECT") => match store.connect(connection_id, expiry).await {
            Ok(()) => {
                info!(connection_id, "connected");
                ProxyResponse::ok()
            }
            Err(e) => {
                error!(connection_id, "refusing a connection: {e}");
                ProxyResponse::error(500, "the connection could not be registered; connect again")
            }
        },
        ("$disconnect", _) | (_, "DISCONNECT") => match store.disconnect(connection_id).await {
            Ok(()) => {
                info!(connection_id, "disconnected");
                ProxyResponse::ok()
            }
            Err(e) => {
                // Its items expire by TTL, and the notifier removes them on its first `410 Gone`.
                warn!(
                    connection_id,
                    "a disconnected connection's items stay until they expire: {e}"
                );
                ProxyResponse::error(500, e.to_string())
            }
        },
        _ => match message_body(event) {
            Ok(body) => handle_message(routes, store, connection_id, body.as_deref(), expiry).await,
            Err(reason) => ProxyResponse::error(400, reason),
        },
    }
}

/// A message event's body as the client sent it: `body` decoded from base64 when `isBase64Encoded` says
/// API Gateway encoded it (an integration with `contentHandlingStrategy` set), else `body` as it is.
fn message_body(event: &WebSocketEvent) -> Result<Option<std::borrow::Cow<'_, str>>, String> {
    use base64::Engine;
    let Some(body) = event.body.as_deref() else {
        return Ok(None);
    };
    if !event.is_base64_encoded {
        return Ok(Some(std::borrow::Cow::Borrowed(body)));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|e| format!("the message's body is marked base64-encoded but is not base64 ({e})"))?;
    String::from_utf8(bytes)
        .map(|text| Some(std::borrow::Cow::Owned(text)))
        .map_err(|_| "the message is not UTF-8 text: send requests as JSON text frames".to_string())
}

async fn handle_message<S: ConnectionStore>(
    routes: &ViewRoutes,
    store: &S,
    connection_id: &str,
    body: Option<&str>,
    expiry: i64,
) -> ProxyResponse {
    let body = body.unwrap_or_default();
    let request = match serde_json::from_str::<ClientRequest>(body) {
        Ok(request) => request,
        Err(e) => {
            return ProxyResponse::error(
                400,
                format!(
                    "this message is not a request ({e}); {}",
                    accepted_requests(routes)
                ),
            );
        }
    };
    match request {
        ClientRequest::Subscribe { view, key_prefix } => {
            let key_prefix = key_prefix.as_deref().and_then(non_empty);
            if !routes.views.iter().any(|(name, _)| *name == view) {
                return ProxyResponse::error(
                    400,
                    format!("unknown view {view:?}: this API serves {}", view_names(routes)),
                );
            }
            if key_prefix
                .as_ref()
                .is_some_and(|p| p.len() > MAX_KEY_PREFIX_BYTES)
            {
                return ProxyResponse::error(
                    400,
                    format!("keyPrefix is longer than {MAX_KEY_PREFIX_BYTES} bytes: use a shorter prefix"),
                );
            }
            match store
                .subscribe(
                    ViewSubscription::new(connection_id, &view, key_prefix.as_deref()),
                    expiry,
                )
                .await
            {
                Ok(()) => {
                    info!(connection_id, view, key_prefix, "subscribed");
                    ProxyResponse::message(
                        200,
                        &ServerMessage::Subscribed {
                            version: crate::push::message::PROTOCOL_VERSION,
                            view,
                            key_prefix,
                        },
                    )
                }
                Err(e @ ConnectionStoreError::Call { .. }) => {
                    error!(connection_id, view, "subscribe failed: {e}");
                    ProxyResponse::error(500, "the subscription could not be saved; send it again")
                }
                Err(e) => ProxyResponse::error(400, e.to_string()),
            }
        }
        ClientRequest::Unsubscribe { view, key_prefix } => {
            let key_prefix = key_prefix.as_deref().and_then(non_empty);
            match store
                .unsubscribe(ViewSubscription::new(connection_id, &view, key_prefix.as_deref()))
                .await
            {
                Ok(removed) => {
                    info!(connection_id, view, key_prefix, removed, "unsubscribed");
                    ProxyResponse::message(
                        200,
                        &ServerMessage::Unsubscribed {
                            version: crate::push::message::PROTOCOL_VERSION,
                            view,
                            key_prefix,
                        },
                    )
                }
                Err(e) => {
                    error!(connection_id, view, "unsubscribe failed: {e}");
                    ProxyResponse::error(500, "the subscription could not be removed; send it again")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::message::PROTOCOL_VERSION;

    fn fixture() -> serde_json::Value {
        let path =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/websocket-events.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn event(name: &str) -> WebSocketEvent {
        serde_json::from_value(fixture()[name].clone()).unwrap()
    }

    fn with_body(name: &str, body: &str) -> WebSocketEvent {
        let mut e = event(name);
        e.body = Some(body.to_string());
        e
    }

    fn routes() -> ViewRoutes {
        ViewRoutes {
            views: vec![
                ("players".into(), "players#".into()),
                ("games".into(), "games#".into()),
            ],
        }
    }

    const NOW: i64 = 1_732_492_800;

    #[tokio::test]
    async fn the_fixture_events_have_aws_shape() {
        let connect = event("connect");
        assert_eq!(connect.request_context.route_key.as_deref(), Some("$connect"));
        assert_eq!(connect.request_context.event_type.as_deref(), Some("CONNECT"));
        assert_eq!(
            connect.request_context.connection_id.as_deref(),
            Some("Vq2PbcfvoAMCLkg=")
        );
        assert_eq!(connect.request_context.apiid.as_deref(), Some("a1b2c3d4e5"));
        let subscribe = event("subscribe");
        assert_eq!(subscribe.request_context.event_type.as_deref(), Some("MESSAGE"));
        assert!(subscribe.body.unwrap().contains("\"action\":\"subscribe\""));
        assert_eq!(
            event("disconnect").request_context.event_type.as_deref(),
            Some("DISCONNECT")
        );
    }

    /// The crate's types read every fixture event (all five routes) and answer in the `AWS_PROXY` shape
    /// API Gateway reads: `statusCode` a number, `body` a string (absent when there is none).
    #[tokio::test]
    async fn the_crate_types_read_every_fixture_event_and_answer_in_proxy_shape() {
        let all = fixture();
        let names: Vec<&str> = all.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(names.len(), 5, "{names:?}");
        for name in names {
            let e = event(name);
            assert!(e.request_context.connected_at > 0, "{name}");
            assert!(e.request_context.connection_id.is_some(), "{name}");
        }
        let ok = serde_json::to_value(ProxyResponse::ok()).unwrap();
        assert_eq!(ok["statusCode"], serde_json::json!(200));
        assert!(ok.get("body").is_none(), "{ok}");
        let refused = serde_json::to_value(ProxyResponse::error(400, "no")).unwrap();
        assert_eq!(refused["statusCode"], serde_json::json!(400));
        let body = refused["body"].as_str().unwrap();
        assert_eq!(
            serde_json::from_str::<ServerMessage>(body).unwrap(),
            ServerMessage::error("no")
        );
        // API Gateway always sends `connectedAt` and `requestTimeEpoch`; the crate requires them.
        let mut without = all["connect"].clone();
        without["requestContext"]
            .as_object_mut()
            .unwrap()
            .remove("connectedAt");
        assert!(serde_json::from_value::<WebSocketEvent>(without).is_err());
    }

    #[tokio::test]
    async fn connect_subscribe_unsubscribe_disconnect_round_trip() {
        let store = MemoryConnections::new();
        let connected_at = event("connect").request_context.connected_at / 1000;
        let expiry = connected_at + MAX_CONNECTION_SECONDS + EXPIRY_MARGIN_SECONDS;

        let r = handle(&routes(), &store, &event("connect"), NOW).await;
        assert_eq!(r, ProxyResponse::ok());
        assert_eq!((r.status_code, r.body.as_ref()), (200, None));
        assert_eq!(store.items(), vec![connection_item("Vq2PbcfvoAMCLkg=", expiry)]);

        // The fixture subscribes to players' keys starting with PLAYER#bo.
        let r = handle(&routes(), &store, &event("subscribe"), NOW).await;
        assert_eq!(r.status_code, 200);
        assert_eq!(
            r.server_message(),
            Some(ServerMessage::Subscribed {
                version: PROTOCOL_VERSION,
                view: "players".into(),
                key_prefix: Some("PLAYER#bo".into())
            })
        );
        let whole = with_body("subscribe", r#"{"action":"subscribe","view":"players"}"#);
        assert_eq!(handle(&routes(), &store, &whole, NOW).await.status_code, 200);
        let games = with_body(
            "subscribe",
            r#"{"action":"subscribe","view":"games","keyPrefix":""}"#,
        );
        assert_eq!(handle(&routes(), &store, &games, NOW).await.status_code, 200);

        let mut connection = connection_item("Vq2PbcfvoAMCLkg=", expiry);
        connection.insert(
            SUBSCRIPTIONS.into(),
            Value::Ss(vec![
                "games|".into(),
                "players|".into(),
                "players|PLAYER#bo".into(),
            ]),
        );
        assert_eq!(
            store.items(),
            vec![
                connection.clone(),
                subscription_item("games", "Vq2PbcfvoAMCLkg=", None, expiry),
                subscription_item("players", "Vq2PbcfvoAMCLkg=", None, expiry),
                subscription_item("players", "Vq2PbcfvoAMCLkg=", Some("PLAYER#bo"), expiry),
            ]
        );
        assert_eq!(
            store.subscribers("players").await.unwrap(),
            vec![
                ("Vq2PbcfvoAMCLkg=".to_string(), None),
                ("Vq2PbcfvoAMCLkg=".to_string(), Some("PLAYER#bo".to_string()))
            ]
        );

        // The fixture unsubscribes from players' PLAYER#bo only.
        let r = handle(&routes(), &store, &event("unsubscribe"), NOW).await;
        assert_eq!(
            r.server_message(),
            Some(ServerMessage::Unsubscribed {
                version: PROTOCOL_VERSION,
                view: "players".into(),
                key_prefix: Some("PLAYER#bo".into())
            })
        );
        assert_eq!(
            store.subscribers("players").await.unwrap(),
            vec![("Vq2PbcfvoAMCLkg=".to_string(), None)]
        );
        let all_players = with_body("unsubscribe", r#"{"action":"unsubscribe","view":"players"}"#);
        assert_eq!(
            handle(&routes(), &store, &all_players, NOW).await.status_code,
            200
        );
        assert_eq!(store.subscribers("players").await.unwrap(), vec![]);
        connection.insert(SUBSCRIPTIONS.into(), Value::Ss(vec!["games|".into()]));
        assert_eq!(
            store.items(),
            vec![
                connection,
                subscription_item("games", "Vq2PbcfvoAMCLkg=", None, expiry)
            ]
        );

        let r = handle(&routes(), &store, &event("disconnect"), NOW).await;
        assert_eq!(r.status_code, 200);
        assert_eq!(store.items(), vec![]);
        // Idempotent.
        assert_eq!(
            handle(&routes(), &store, &event("disconnect"), NOW)
                .await
                .status_code,
            200
        );
    }

    #[tokio::test]
    async fn a_subscription_to_an_unknown_view_is_refused_with_the_views_served() {
        let store = MemoryConnections::new();
        handle(&routes(), &store, &event("connect"), NOW).await;
        let r = handle(
            &routes(),
            &store,
            &with_body("subscribe", r#"{"action":"subscribe","view":"scores"}"#),
            NOW,
        )
        .await;
        assert_eq!(r.status_code, 400);
        let Some(ServerMessage::Error { message, .. }) = r.server_message() else {
            panic!("{r:?}")
        };
        assert!(
            message.contains("\"scores\"") && message.contains("players, games"),
            "{message}"
        );
        assert_eq!(store.subscribers("scores").await.unwrap(), vec![]);
    }

    #[tokio::test]
    async fn invalid_messages_and_the_default_route_get_an_error_naming_what_is_accepted() {
        let store = MemoryConnections::new();
        handle(&routes(), &store, &event("connect"), NOW).await;
        for body in ["not json", r#"{"action":"subscribe"}"#, r#"{"action":"dance"}"#] {
            let r = handle(&routes(), &store, &with_body("subscribe", body), NOW).await;
            assert_eq!(r.status_code, 400, "{body}");
            let Some(ServerMessage::Error { message, .. }) = r.server_message() else {
                panic!("{r:?}")
            };
            assert!(
                message.contains("accepted") && message.contains("players, games"),
                "{message}"
            );
        }
        let r = handle(&routes(), &store, &event("default"), NOW).await;
        assert_eq!(r.status_code, 400);
        let long = format!(
            r#"{{"action":"subscribe","view":"players","keyPrefix":"{}"}}"#,
            "x".repeat(MAX_KEY_PREFIX_BYTES + 1)
        );
        assert_eq!(
            handle(&routes(), &store, &with_body("subscribe", &long), NOW)
                .await
                .status_code,
            400
        );
    }

    #[tokio::test]
    async fn subscriptions_need_a_connection_and_are_bounded() {
        let store = MemoryConnections::new();
        let r = handle(&routes(), &store, &event("subscribe"), NOW).await;
        assert_eq!(r.status_code, 400, "not connected");
        handle(&routes(), &store, &event("connect"), NOW).await;
        for i in 0..MAX_SUBSCRIPTIONS_PER_CONNECTION {
            store
                .subscribe(
                    ViewSubscription::new("Vq2PbcfvoAMCLkg=", "players", Some(&format!("P{i}"))),
                    1,
                )
                .await
                .unwrap();
        }
        // Subscribing again to one held is fine; a new one is not.
        store
            .subscribe(
                ViewSubscription::new("Vq2PbcfvoAMCLkg=", "players", Some("P0")),
                1,
            )
            .await
            .unwrap();
        let r = handle(&routes(), &store, &event("subscribe"), NOW).await;
        assert_eq!(r.status_code, 400);
        assert!(r.body_text().unwrap().contains("unsubscribe from one first"));
    }

    #[test]
    fn entries_and_keys_round_trip() {
        assert_eq!(subscription_entry("players", Some("A|B")), "players|A|B");
        assert_eq!(
            parse_subscription_entry("players|A|B"),
            Some(("players".to_string(), Some("A|B".to_string())))
        );
        assert_eq!(
            parse_subscription_entry("games|"),
            Some(("games".to_string(), None))
        );
        assert_eq!(parse_subscription_entry("games"), None);
        assert_eq!(subscription_sk("c1", None), "c1|");
        assert_eq!(expires_at(1_000), 1_000 + 7_200 + 900);
    }

    #[test]
    fn configuration_names_the_missing_or_invalid_variable() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |var: &str| pairs.iter().find(|(k, _)| *k == var).map(|(_, v)| v.to_string())
        };
        let ok = ConnectionsConfig::from_lookup(env(&[
            (ENV_CONNECTIONS_TABLE, "ws-connections"),
            (ENV_VIEW_ROUTES, r#"{"views":[["players","players#"]]}"#),
        ]))
        .unwrap();
        assert_eq!(ok.table, "ws-connections");
        assert_eq!(
            ok.routes.views,
            vec![("players".to_string(), "players#".to_string())]
        );

        let e = ConnectionsConfig::from_lookup(env(&[(ENV_VIEW_ROUTES, r#"{"views":[]}"#)])).unwrap_err();
        assert!(
            matches!(e, ConfigError::Missing { var: ENV_CONNECTIONS_TABLE, .. }),
            "{e}"
        );
        for bad in [
            r#"{"views":[]}"#,
            "players",
            r#"{"views":[["a|b",""]]}"#,
            r#"{"views":[["a",""],["a","x"]]}"#,
        ] {
            let e = view_routes_from_lookup(&|var: &str| (var == ENV_VIEW_ROUTES).then(|| bad.to_string()))
                .unwrap_err();
            assert!(
                matches!(e, ConfigError::Invalid { var: ENV_VIEW_ROUTES, .. }),
                "{bad}: {e}"
            );
        }
    }
}
