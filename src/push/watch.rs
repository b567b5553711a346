//! `kappa-operator watch`: a client of the push endpoint (the operator's own, see
//! [`server`](super::server)) that subscribes to one view and prints each change as one JSON line, the
//! [`message`](super::message) protocol's `change` message as the server sent it.
//!
//! [`WatchClient`] is the connection (connect, subscribe, unsubscribe, next message); [`run`] is the whole
//! command: connect to `<url>/v1/namespaces/<namespace>/watch`, subscribe, wait for `subscribed`, print
//! changes until `--count` of them or until none came for `--timeout`.

use std::collections::VecDeque;
use std::io::Write;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::message::{Change, ClientRequest, ServerMessage};

/// What `kappa-operator watch` was asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchOptions {
    /// The push endpoint's base URL, `ws://host:port`.
    pub url: String,
    pub namespace: String,
    pub view: String,
    /// Only the view's changes whose partition key starts with this.
    pub key_prefix: Option<String>,
    /// Stop (successfully) after this many changes.
    pub count: Option<u64>,
    /// Fail when the connection, the subscription or the next change takes longer than this.
    pub timeout: Option<Duration>,
    /// The bearer token the endpoint requires, if any.
    pub token: Option<String>,
}

/// The bearer token of the kubeconfig's current user (its `token`, or the file of its `tokenFile`), which
/// `kappa-operator watch` presents to the push endpoint so the operator can check, as the API server
/// would, that this user may watch the namespace's views. `Err` says why there is none: a user that
/// authenticates with a client certificate or an exec plugin has no token to forward (pass `--token-file`
/// with one, e.g. from `kubectl create token <serviceaccount>`).
pub async fn kubeconfig_token() -> Result<String, TokenError> {
    use secrecy::ExposeSecret;
    let config = kube::Config::infer().await.map_err(TokenError::NoKubeconfig)?;
    if let Some(token) = &config.auth_info.token {
        return Ok(token.expose_secret().trim().to_string());
    }
    if let Some(file) = &config.auth_info.token_file {
        return std::fs::read_to_string(file)
            .map(|t| t.trim().to_string())
            .map_err(|source| TokenError::Unreadable { file: file.clone(), source });
    }
    Err(TokenError::NoToken)
}

/// Why the kubeconfig gives no bearer token to forward ([`kubeconfig_token`]).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no kubeconfig to take a token from: {0}")]
    NoKubeconfig(#[source] kube::config::InferConfigError),
    #[error("cannot read the kubeconfig's tokenFile {file}: {source}")]
    Unreadable {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the kubeconfig's user has no bearer token (a client certificate or exec plugin cannot be forwarded): \
         pass --token-file with a token, e.g. from `kubectl create token <serviceaccount>`"
    )]
    NoToken,
}

/// Why watching failed.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(
        "the push URL {url:?} is not usable: {reason} (set --url or KAPPA_PUSH_URL, e.g. ws://127.0.0.1:8081)"
    )]
    InvalidUrl { url: String, reason: String },
    #[error(
        "namespace {0:?} is not a Kubernetes namespace name (lowercase letters, digits and dashes, at most 63)"
    )]
    InvalidNamespace(String),
    #[error(
        "cannot connect to the push endpoint {url}: {source}; check --url (KAPPA_PUSH_URL) and that the \
         operator serves it (its --push-addr; from outside the cluster, `kubectl port-forward` to that port)"
    )]
    Connect {
        url: String,
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    #[error("the push endpoint refused the request: {0}")]
    Refused(String),
    #[error("the push endpoint ended the watch: {0}")]
    Server(String),
    #[error("the push endpoint sent a frame that is not a protocol message ({reason}): {text}")]
    Protocol { text: String, reason: String },
    #[error("the connection to the push endpoint failed: {0}")]
    Connection(Box<tokio_tungstenite::tungstenite::Error>),
    #[error("the push endpoint closed the connection{0}")]
    Closed(String),
    #[error("{what} for {seconds}s (--timeout)")]
    Timeout { what: String, seconds: u64 },
    #[error("cannot write the change to the output: {0}")]
    Output(#[from] std::io::Error),
}

impl WatchError {
    /// The process's exit code: 2 when repeating the same command cannot help (a bad URL, namespace or
    /// view), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            WatchError::InvalidUrl { .. } | WatchError::InvalidNamespace(_) | WatchError::Refused(_) => 2,
            _ => 1,
        }
    }
}

impl From<tokio_tungstenite::tungstenite::Error> for WatchError {
    fn from(error: tokio_tungstenite::tungstenite::Error) -> Self {
        WatchError::Connection(Box::new(error))
    }
}

/// The endpoint URL of `namespace` under the base URL `base` (`ws://host:port`, an optional path kept).
pub fn watch_url(base: &str, namespace: &str) -> Result<String, WatchError> {
    let invalid = |reason: &str| WatchError::InvalidUrl { url: base.to_string(), reason: reason.to_string() };
    let rest = if let Some(rest) = base.strip_prefix("ws://") {
        rest
    } else if base.starts_with("wss://") {
        return Err(invalid(
            "wss:// needs TLS, which this build's client lacks; use ws:// to the operator's in-cluster endpoint",
        ));
    } else if base.starts_with("http://") || base.starts_with("https://") {
        return Err(invalid("use the ws:// scheme for a WebSocket endpoint"));
    } else {
        return Err(invalid("it must start with ws://"));
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(invalid("it names no host"));
    }
    if rest.contains(['?', '#']) {
        return Err(invalid("give the base URL only, without query or fragment"));
    }
    let valid_namespace = (1..=63).contains(&namespace.len())
        && namespace
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !namespace.starts_with('-')
        && !namespace.ends_with('-');
    if !valid_namespace {
        return Err(WatchError::InvalidNamespace(namespace.to_string()));
    }
    Ok(format!(
        "{}/v1/namespaces/{namespace}/watch",
        base.trim_end_matches('/')
    ))
}

/// One connection to the push endpoint.
#[derive(Debug)]
pub struct WatchClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Messages received while waiting for a reply, handed out first by [`WatchClient::next_message`].
    pending: VecDeque<ServerMessage>,
}

impl WatchClient {
    /// Connects to the endpoint of `namespace` under `base_url`.
    pub async fn connect(base_url: &str, namespace: &str) -> Result<Self, WatchError> {
        WatchClient::connect_with_token(base_url, namespace, None).await
    }

    /// Connects presenting `token` as `Authorization: Bearer <token>`, when set.
    pub async fn connect_with_token(
        base_url: &str,
        namespace: &str,
        token: Option<&str>,
    ) -> Result<Self, WatchError> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = watch_url(base_url, namespace)?;
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| WatchError::Connect { url: url.clone(), source: Box::new(e) })?;
        if let Some(token) = token {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| WatchError::InvalidUrl {
                    url: url.clone(),
                    reason: "the token holds characters an HTTP header cannot carry".into(),
                })?;
            request.headers_mut().insert("authorization", value);
        }
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| WatchError::Connect { url: url.clone(), source: Box::new(e) })?;
        Ok(WatchClient { socket, pending: VecDeque::new() })
    }

    /// Sends `request` as a text frame.
    pub async fn send(&mut self, request: &ClientRequest) -> Result<(), WatchError> {
        let text = serde_json::to_string(request).map_err(std::io::Error::from)?;
        self.send_text(&text).await
    }

    /// Sends any text frame (a request written by hand).
    pub async fn send_text(&mut self, text: &str) -> Result<(), WatchError> {
        self.socket.send(Message::Text(text.into())).await?;
        Ok(())
    }

    /// Subscribes and waits for the `subscribed` reply; an `error` reply is [`WatchError::Refused`]. Changes
    /// of earlier subscriptions arriving meanwhile are kept for [`WatchClient::next_message`].
    pub async fn subscribe(&mut self, view: &str, key_prefix: Option<&str>) -> Result<(), WatchError> {
        let request = ClientRequest::Subscribe {
            view: view.to_string(),
            key_prefix: key_prefix.map(str::to_string),
        };
        self.send(&request).await?;
        self.await_reply(|m| {
            matches!(m, ServerMessage::Subscribed { view: v, key_prefix: p, .. }
                if v == view && p.as_deref() == key_prefix)
        })
        .await
    }

    /// Unsubscribes and waits for the `unsubscribed` reply.
    pub async fn unsubscribe(&mut self, view: &str, key_prefix: Option<&str>) -> Result<(), WatchError> {
        let request = ClientRequest::Unsubscribe {
            view: view.to_string(),
            key_prefix: key_prefix.map(str::to_string),
        };
        self.send(&request).await?;
        self.await_reply(|m| {
            matches!(m, ServerMessage::Unsubscribed { view: v, key_prefix: p, .. }
                if v == view && p.as_deref() == key_prefix)
        })
        .await
    }

    async fn await_reply(&mut self, is_reply: impl Fn(&ServerMessage) -> bool) -> Result<(), WatchError> {
        loop {
            match self.receive().await? {
                Some(message) if is_reply(&message) => return Ok(()),
                Some(ServerMessage::Error { message, .. }) => return Err(WatchError::Refused(message)),
                Some(other) => self.pending.push_back(other),
                None => return Err(WatchError::Closed(" before replying".into())),
            }
        }
    }

    /// The next protocol message (`None`: the connection is closed). Pings are answered and skipped.
    pub async fn next_message(&mut self) -> Result<Option<ServerMessage>, WatchError> {
        match self.pending.pop_front() {
            Some(message) => Ok(Some(message)),
            None => self.receive().await,
        }
    }

    async fn receive(&mut self) -> Result<Option<ServerMessage>, WatchError> {
        loop {
            let frame = match self.socket.next().await {
                None => return Ok(None),
                Some(frame) => frame?,
            };
            match frame {
                Message::Text(text) => return parse_server_message(text.as_str()).map(Some),
                Message::Close(_) => return Ok(None),
                Message::Binary(bytes) => {
                    return Err(WatchError::Protocol {
                        text: format!("({} bytes)", bytes.len()),
                        reason: "a binary frame".into(),
                    });
                }
                // tungstenite answers pings itself.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            }
        }
    }

    /// Closes the connection politely.
    pub async fn close(mut self) -> Result<(), WatchError> {
        self.socket.close(None).await?;
        Ok(())
    }
}

/// A server's text frame as a protocol message.
pub fn parse_server_message(text: &str) -> Result<ServerMessage, WatchError> {
    serde_json::from_str(text).map_err(|e| WatchError::Protocol {
        text: text.chars().take(200).collect(),
        reason: e.to_string(),
    })
}

/// The line printed for one change: the `change` message as JSON.
pub fn change_line(change: &Change) -> String {
    ServerMessage::Change(change.clone()).to_text()
}

/// Bounds `future` by `timeout` (when set), failing with "`what` for N s".
async fn within<T>(
    timeout: Option<Duration>,
    what: &str,
    future: impl Future<Output = Result<T, WatchError>>,
) -> Result<T, WatchError> {
    match timeout {
        None => future.await,
        Some(limit) => tokio::time::timeout(limit, future).await.unwrap_or_else(|_| {
            Err(WatchError::Timeout { what: what.to_string(), seconds: limit.as_secs() })
        }),
    }
}

/// The whole `watch` command: connect, subscribe, then [`print_changes`]. Returns how many changes were
/// printed.
pub async fn run(options: &WatchOptions, out: &mut impl Write) -> Result<u64, WatchError> {
    let mut client = within(
        options.timeout,
        "no connection to the push endpoint",
        WatchClient::connect_with_token(&options.url, &options.namespace, options.token.as_deref()),
    )
    .await?;
    within(
        options.timeout,
        "no reply to the subscription",
        client.subscribe(&options.view, options.key_prefix.as_deref()),
    )
    .await?;
    print_changes(&mut client, options, out).await
}

/// Prints each change the subscribed `client` receives as one JSON line on `out` (flushed per line) until
/// `options.count` changes (then closes and returns the count), an `error` message
/// ([`WatchError::Server`]), the connection's end, or `options.timeout` without a change.
pub async fn print_changes(
    client: &mut WatchClient,
    options: &WatchOptions,
    out: &mut impl Write,
) -> Result<u64, WatchError> {
    let mut printed = 0;
    while options.count.is_none_or(|count| printed < count) {
        let message = within(
            options.timeout,
            &format!(
                "no change of view `{}` in namespace `{}` after {printed} changes",
                options.view, options.namespace
            ),
            client.next_message(),
        )
        .await?;
        match message {
            Some(ServerMessage::Change(change)) => {
                writeln!(out, "{}", change_line(&change))?;
                out.flush()?;
                printed += 1;
            }
            Some(ServerMessage::Error { message, .. }) => return Err(WatchError::Server(message)),
            // Replies to requests this client did not make now: nothing to print.
            Some(ServerMessage::Subscribed { .. } | ServerMessage::Unsubscribed { .. }) => {}
            None => return Err(WatchError::Closed(format!(" after {printed} changes"))),
        }
    }
    // Best effort: the changes asked for are printed.
    let _ = client.socket.close(None).await;
    Ok(printed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_is_the_base_and_the_namespace_path() {
        assert_eq!(
            watch_url("ws://127.0.0.1:8081", "game").unwrap(),
            "ws://127.0.0.1:8081/v1/namespaces/game/watch"
        );
        assert_eq!(
            watch_url("ws://push.kappa.svc:8081/proxy/", "game").unwrap(),
            "ws://push.kappa.svc:8081/proxy/v1/namespaces/game/watch"
        );
        for (base, says) in [
            ("http://x:1", "ws://"),
            ("wss://x:1", "TLS"),
            ("x:1", "ws://"),
            ("ws://", "no host"),
            ("ws://x:1/?a=b", "query"),
        ] {
            let error = watch_url(base, "game").unwrap_err();
            assert!(
                matches!(error, WatchError::InvalidUrl { .. }) && error.to_string().contains(says),
                "{base}: {error}"
            );
            assert!(error.to_string().contains("KAPPA_PUSH_URL"));
        }
        assert!(matches!(
            watch_url("ws://x:1", "Game/../x"),
            Err(WatchError::InvalidNamespace(_))
        ));
    }

    #[test]
    fn errors_that_repeat_exit_with_2() {
        assert_eq!(WatchError::Refused("no view".into()).exit_code(), 2);
        assert_eq!(
            WatchError::Timeout { what: "x".into(), seconds: 1 }.exit_code(),
            1
        );
    }
}
