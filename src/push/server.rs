//! The operator's own push endpoint (the in-cluster runtime): the protocol an API Gateway WebSocket API
//! serves on AWS, served by the operator itself.
//!
//! `GET /v1/namespaces/{namespace}/watch` upgrades to a WebSocket speaking the protocol of
//! [`message`](super::message) (version 1): the client sends `subscribe` / `unsubscribe` requests as JSON
//! text frames and receives `subscribed` / `unsubscribed` replies, then one text frame per change of its
//! subscriptions, in publish order (see [`Hub`]). A frame that is not a request gets an `error` frame
//! naming what is wrong and the accepted actions, and the connection stays open; subscribing to a view
//! that is not a reactive view of the namespace (per [`ViewDirectory`]) gets an `error` frame too. Pings are
//! answered with pongs. A connection that falls behind, or whose changes were lost upstream, gets an
//! `error` frame saying so and is closed (close code 1013, try again later): it never misses changes
//! silently.
//!
//! Listens on `--push-addr` (`KAPPA_PUSH_ADDR`, default `0.0.0.0:8081`). Every upgrade request is
//! authorized by [`PushAuth`] before it is upgraded: by default the client's Kubernetes bearer token must
//! belong to a subject that may `watch` MaterializedViews in the requested namespace (401 or 403
//! otherwise); a shared static token or no check at all are explicit single-tenant options. Access is
//! checked again at every request an open connection sends and every [`REAUTHORIZE_EVERY`] while it only
//! listens: once revoked (a RoleBinding deleted, a token expired or its ServiceAccount deleted) the client
//! gets an `error` frame saying so and the connection is closed (close code [`CLOSE_ACCESS_REVOKED`]).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;

use super::auth::PushAuth;
use super::hub::{Hub, HubClient, ViewDirectory};
use super::message::{ClientRequest, PROTOCOL_VERSION, ServerMessage};

/// The path of the endpoint, `{namespace}` being the views' namespace.
pub const WATCH_PATH: &str = "/v1/namespaces/{namespace}/watch";

/// The largest request frame accepted; requests are a few hundred bytes.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// How much of a bad frame an error message quotes.
const QUOTED_CHARS: usize = 120;

/// The close code of a connection ended by the server because it lagged or lost changes: try again later.
const CLOSE_TRY_AGAIN_LATER: u16 = 1013;

/// What the endpoint's handlers share.
#[derive(Clone, Debug)]
pub struct PushState {
    pub hub: Hub,
    pub views: ViewDirectory,
    /// Who may watch which namespace.
    pub auth: PushAuth,
}

/// The endpoint's routes, open to every client.
pub fn router(hub: Hub, views: ViewDirectory) -> Router {
    router_with_auth(hub, views, PushAuth::None)
}

/// The endpoint's routes; with `token`, a client must send `Authorization: Bearer <token>`.
pub fn router_with_token(hub: Hub, views: ViewDirectory, token: Option<String>) -> Router {
    let auth = match token {
        Some(token) => PushAuth::StaticToken(std::sync::Arc::from(token)),
        None => PushAuth::None,
    };
    router_with_auth(hub, views, auth)
}

/// The endpoint's routes, every client authorized by `auth`.
pub fn router_with_auth(hub: Hub, views: ViewDirectory, auth: PushAuth) -> Router {
    Router::new()
        .route(WATCH_PATH, get(watch))
        .with_state(PushState { hub, views, auth })
}

/// Why the push endpoint could not start or stopped. `category()` is its metric label.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address is taken or not ours: the user changes the setting.
    #[error(
        "cannot listen on {addr} for the push endpoint (WebSocket watch of reactive views): {source}; set \
         --push-addr or KAPPA_PUSH_ADDR to a free address"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The server stopped accepting connections.
    #[error("the push endpoint on {addr} stopped: {source}")]
    Stopped {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

impl ServeError {
    /// A short, bounded label: `bind`, `stopped`.
    pub fn category(&self) -> &'static str {
        match self {
            ServeError::Bind { .. } => "bind",
            ServeError::Stopped { .. } => "stopped",
        }
    }
}

/// Binds `addr` for the push endpoint; the error names the address and the setting to change.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ServeError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Serves the push endpoint on `listener` until the task is aborted or the listener fails.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    hub: Hub,
    views: ViewDirectory,
) -> Result<(), ServeError> {
    serve_on_with_token(listener, hub, views, None).await
}

/// Like [`serve_on`], requiring `token` from every client when set.
pub async fn serve_on_with_token(
    listener: tokio::net::TcpListener,
    hub: Hub,
    views: ViewDirectory,
    token: Option<String>,
) -> Result<(), ServeError> {
    let auth = match token {
        Some(token) => PushAuth::StaticToken(std::sync::Arc::from(token)),
        None => PushAuth::None,
    };
    serve_on_with_auth(listener, hub, views, auth).await
}

/// Like [`serve_on`], every client authorized by `auth`.
pub async fn serve_on_with_auth(
    listener: tokio::net::TcpListener,
    hub: Hub,
    views: ViewDirectory,
    auth: PushAuth,
) -> Result<(), ServeError> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "(unknown address)".into());
    tracing::info!(%addr, path = WATCH_PATH, auth = ?auth, "push endpoint listening");
    axum::serve(listener, router_with_auth(hub, views, auth))
        .await
        .map_err(|source| ServeError::Stopped { addr, source })
}

/// Binds `addr` and serves the push endpoint until the task is aborted.
pub async fn serve(addr: SocketAddr, hub: Hub, views: ViewDirectory) -> Result<(), ServeError> {
    serve_on(bind(addr).await?, hub, views).await
}

async fn watch(
    upgrade: WebSocketUpgrade,
    Path(namespace): Path<String>,
    State(state): State<PushState>,
    headers: axum::http::HeaderMap,
) -> Response {
    use axum::response::IntoResponse;
    match state.auth.authorize(&headers, &namespace).await {
        Ok(subject) => tracing::debug!(%namespace, %subject, "push client authorized"),
        Err(refusal) => {
            tracing::info!(%namespace, status = refusal.status, reason = %refusal.message, "push client refused");
            let status =
                axum::http::StatusCode::from_u16(refusal.status).unwrap_or(axum::http::StatusCode::FORBIDDEN);
            return (status, refusal.message).into_response();
        }
    }
    upgrade
        .max_message_size(MAX_REQUEST_BYTES)
        .on_upgrade(move |socket| connection(socket, namespace, state, headers))
}

/// How often an open connection's access is checked again while the client only listens (every request
/// it sends is checked too): access revoked (a RoleBinding deleted, a token expired) ends the connection.
pub const REAUTHORIZE_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// WebSocket close code for a connection whose access was revoked (4000-4999: the application's own).
pub const CLOSE_ACCESS_REVOKED: u16 = 4403;

/// Whether the client of `headers` may still watch `namespace`: `Err` (the reason) when access is
/// revoked; a check that cannot be made now (503) keeps the connection.
async fn still_authorized(
    state: &PushState,
    headers: &axum::http::HeaderMap,
    namespace: &str,
) -> Result<(), String> {
    match state.auth.authorize(headers, namespace).await {
        Ok(_) => Ok(()),
        Err(refusal) if refusal.status == 503 => {
            tracing::warn!(%namespace, reason = %refusal.message, "could not check a push client's access again; keeping it");
            Ok(())
        }
        Err(refusal) => Err(refusal.message),
    }
}

/// One connection, until either side closes it.
async fn connection(
    mut socket: WebSocket,
    namespace: String,
    state: PushState,
    headers: axum::http::HeaderMap,
) {
    let mut client = state.hub.connect(&namespace);
    tracing::info!(%namespace, clients = state.hub.connected_clients(), "push client connected");
    let mut recheck = tokio::time::interval(REAUTHORIZE_EVERY);
    recheck.tick().await; // the first tick is now: the upgrade was just authorized
    let revoked = |reason: String| format!("access to namespace {namespace} was revoked: {reason}");
    let end = loop {
        tokio::select! {
            incoming = socket.recv() => {
                let reply = match incoming {
                    Some(Ok(Message::Text(text))) => match still_authorized(&state, &headers, &namespace).await {
                        Ok(()) => answer(text.as_str(), &state.views, &mut client),
                        Err(reason) => break close_revoked(&mut socket, revoked(reason)).await,
                    },
                    Some(Ok(Message::Binary(_))) => ServerMessage::error(format!(
                        "binary frames are not understood: send requests as JSON text frames; {}",
                        ACCEPTED
                    )),
                    // Pings are answered by the WebSocket layer itself.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => break "the client closed the connection".to_string(),
                    Some(Err(e)) => break format!("reading from the client failed: {e}"),
                };
                if let Err(e) = send(&mut socket, &reply).await {
                    break format!("writing to the client failed: {e}");
                }
            }
            _ = recheck.tick() => {
                if let Err(reason) = still_authorized(&state, &headers, &namespace).await {
                    break close_revoked(&mut socket, revoked(reason)).await;
                }
            }
            next = client.next_change() => match next {
                Ok(change) => {
                    if let Err(e) = send(&mut socket, &ServerMessage::Change((*change).clone())).await {
                        break format!("writing to the client failed: {e}");
                    }
                }
                Err(error) => {
                    let reason = error.to_string();
                    tracing::warn!(%namespace, error = %reason, "closing a push connection");
                    // Best effort: the connection ends either way.
                    let _ = send(&mut socket, &ServerMessage::error(reason.clone())).await;
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame {
                            code: CLOSE_TRY_AGAIN_LATER,
                            reason: "changes were missed; reconnect and re-read the view".into(),
                        })))
                        .await;
                    break reason;
                }
            }
        }
    };
    drop(client);
    tracing::info!(%namespace, clients = state.hub.connected_clients(), reason = %end, "push client disconnected");
}

/// Tells the client its access was revoked and closes the connection ([`CLOSE_ACCESS_REVOKED`]);
/// returns `reason`.
async fn close_revoked(socket: &mut WebSocket, reason: String) -> String {
    tracing::info!(%reason, "closing a push connection");
    // Best effort: the connection ends either way.
    let _ = send(socket, &ServerMessage::error(reason.clone())).await;
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: CLOSE_ACCESS_REVOKED,
            reason: "access revoked".into(),
        })))
        .await;
    reason
}

async fn send(socket: &mut WebSocket, message: &ServerMessage) -> Result<(), axum::Error> {
    socket.send(Message::Text(message.to_text().into())).await
}

/// The accepted requests, for error messages.
const ACCEPTED: &str = r#"accepted actions: `subscribe` and `unsubscribe`, as {"action":"subscribe","view":"<view>"} with an optional "keyPrefix":"<start of the view's partition key>""#;

/// The reply to one text frame: apply the request to `client`'s subscriptions, or say what is wrong.
pub fn answer(text: &str, views: &ViewDirectory, client: &mut HubClient) -> ServerMessage {
    let request = match serde_json::from_str::<ClientRequest>(text) {
        Ok(request) => request,
        Err(e) => return ServerMessage::error(bad_request(text, &e)),
    };
    match request {
        ClientRequest::Subscribe { view, key_prefix } => {
            let namespace = client.namespace().to_string();
            if !views.has_view(&namespace, &view) {
                return ServerMessage::error(unknown_view(&namespace, &view, views));
            }
            client.subscribe(&view, key_prefix.as_deref());
            ServerMessage::Subscribed { version: PROTOCOL_VERSION, view, key_prefix }
        }
        ClientRequest::Unsubscribe { view, key_prefix } => {
            client.unsubscribe(&view, key_prefix.as_deref());
            ServerMessage::Unsubscribed { version: PROTOCOL_VERSION, view, key_prefix }
        }
    }
}

/// Why a frame is not a request, quoting its start.
fn bad_request(text: &str, error: &serde_json::Error) -> String {
    let quoted: String = text.chars().take(QUOTED_CHARS).collect();
    let ellipsis = if text.chars().count() > QUOTED_CHARS {
        "…"
    } else {
        ""
    };
    format!("cannot read the request `{quoted}{ellipsis}`: {error}; {ACCEPTED}")
}

fn unknown_view(namespace: &str, view: &str, views: &ViewDirectory) -> String {
    let known = views.views(namespace);
    let known = match known.is_empty() {
        true => "none".to_string(),
        false => known.into_iter().collect::<Vec<_>>().join(", "),
    };
    format!(
        "view `{view}` is not a reactive view of namespace `{namespace}` (reactive views there: {known}); a \
         MaterializedView is reactive when its spec.store.streams is true"
    )
}

#[cfg(test)]
mod tests;
