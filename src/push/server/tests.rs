//! The endpoint over real WebSocket connections on 127.0.0.1, with the `watch` client's code: what a client
//! receives as changes are published to the hub.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::*;
use crate::fixtures::players_directory;
use crate::push::message::{Change, ChangeEvent, ChangeKeys, ViewRoutes};
use crate::push::watch::{self, WatchClient, WatchError, WatchOptions};

/// How long a test waits for a message that must come.
const PATIENCE: Duration = Duration::from_secs(10);

/// A server on a free port with views `players` and `games` in `game` (shared table) and `players` in
/// `other`; returns its base URL and hub.
async fn server(buffer: usize) -> (String, Hub) {
    let hub = Hub::new(buffer);
    let views = ViewDirectory::default();
    views.set_table(
        "game",
        "views",
        ViewRoutes {
            views: vec![
                ("players".into(), "players#".into()),
                ("games".into(), "games#".into()),
            ],
        },
    );
    views.set_table(
        "other",
        "views",
        ViewRoutes { views: vec![("players".into(), "players#".into())] },
    );
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    tokio::spawn(serve_on(listener, hub.clone(), views));
    (url, hub)
}

fn change(view: &str, pk: &str, sequence_number: usize) -> Change {
    Change {
        version: PROTOCOL_VERSION,
        view: view.into(),
        event: ChangeEvent::Modify,
        keys: ChangeKeys { pk: pk.into(), sk: Some("STATE".into()) },
        new_image: Some(
            serde_json::json!({"score": sequence_number})
                .as_object()
                .unwrap()
                .clone(),
        ),
        sequence_number: sequence_number.to_string(),
        approximate_creation_time: None,
    }
}

async fn next(client: &mut WatchClient) -> ServerMessage {
    tokio::time::timeout(PATIENCE, client.next_message())
        .await
        .expect("a message within the test's patience")
        .unwrap()
        .expect("an open connection")
}

async fn next_change(client: &mut WatchClient) -> Change {
    match next(client).await {
        ServerMessage::Change(change) => change,
        other => panic!("expected a change, got {other:?}"),
    }
}

async fn next_error(client: &mut WatchClient) -> String {
    match next(client).await {
        ServerMessage::Error { message, .. } => message,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_client_receives_exactly_its_views_changes_of_its_namespace() {
    let (url, hub) = server(1024).await;
    let mut client = WatchClient::connect(&url, "game").await.unwrap();
    client.subscribe("players", None).await.unwrap();
    hub.publish("game", change("games", "G1", 1));
    hub.publish("other", change("players", "P1", 2));
    hub.publish("game", change("players", "P1", 3));
    hub.publish("game", change("players", "P2", 4));
    let first = next_change(&mut client).await;
    assert_eq!(
        (first.view.as_str(), first.sequence_number.as_str()),
        ("players", "3")
    );
    assert_eq!(next_change(&mut client).await.sequence_number, "4");
    assert_eq!(hub.connected_clients(), 1);
    client.close().await.unwrap();
}

#[tokio::test]
async fn a_key_prefix_keeps_only_the_keys_starting_with_it() {
    let (url, hub) = server(1024).await;
    let mut client = WatchClient::connect(&url, "game").await.unwrap();
    client.subscribe("players", Some("P1")).await.unwrap();
    for (n, pk) in ["P1", "P2", "P10", "X-P1", "P1"].iter().enumerate() {
        hub.publish("game", change("players", pk, n));
    }
    let received: Vec<String> = [
        next_change(&mut client).await,
        next_change(&mut client).await,
        next_change(&mut client).await,
    ]
    .iter()
    .map(|c| format!("{}@{}", c.keys.pk, c.sequence_number))
    .collect();
    assert_eq!(received, ["P1@0", "P10@2", "P1@4"]);
}

#[tokio::test]
async fn a_hundred_changes_arrive_in_publish_order() {
    let (url, hub) = server(1024).await;
    let mut client = WatchClient::connect(&url, "game").await.unwrap();
    client.subscribe("players", None).await.unwrap();
    client.subscribe("games", None).await.unwrap();
    for n in 0..100 {
        let view = if n % 3 == 0 { "games" } else { "players" };
        hub.publish("game", change(view, &format!("K{}", n % 7), n));
    }
    for n in 0..100 {
        assert_eq!(next_change(&mut client).await.sequence_number, n.to_string());
    }
}

#[tokio::test]
async fn subscribing_to_an_unknown_view_is_refused_with_the_known_ones() {
    let (url, _hub) = server(1024).await;
    let mut client = WatchClient::connect(&url, "game").await.unwrap();
    match client.subscribe("nope", None).await {
        Err(WatchError::Refused(message)) => {
            assert!(message.contains("`nope`"), "{message}");
            assert!(message.contains("games, players"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let mut elsewhere = WatchClient::connect(&url, "empty").await.unwrap();
    assert!(matches!(
        elsewhere.subscribe("players", None).await,
        Err(WatchError::Refused(m)) if m.contains("none")
    ));
}

#[tokio::test]
async fn a_bad_frame_gets_an_error_and_the_connection_stays_usable() {
    let (url, hub) = server(1024).await;
    let mut client = WatchClient::connect(&url, "game").await.unwrap();
    for bad in [
        "not json",
        r#"{"action":"dance","view":"players"}"#,
        r#"{"action":"subscribe"}"#,
    ] {
        client.send_text(bad).await.unwrap();
        let message = next_error(&mut client).await;
        assert!(
            message.contains("subscribe") && message.contains("unsubscribe"),
            "{message}"
        );
        assert!(
            message.contains(&bad[..6]),
            "the error quotes the frame: {message}"
        );
    }
    client.subscribe("players", None).await.unwrap();
    hub.publish("game", change("players", "P1", 1));
    assert_eq!(next_change(&mut client).await.sequence_number, "1");
}

#[tokio::test]
async fn unsubscribing_stops_delivery() {
    let (url, hub) = server(1024).await;
    let mut client = WatchClient::connect(&url, "game").await.unwrap();
    client.subscribe("players", Some("P")).await.unwrap();
    client.subscribe("games", None).await.unwrap();
    hub.publish("game", change("players", "P1", 1));
    assert_eq!(next_change(&mut client).await.sequence_number, "1");
    client.unsubscribe("players", None).await.unwrap();
    hub.publish("game", change("players", "P1", 2));
    hub.publish("game", change("games", "G1", 3));
    assert_eq!(
        next_change(&mut client).await.sequence_number,
        "3",
        "the unsubscribed view's change is not sent"
    );
}

#[tokio::test]
async fn a_lagging_client_is_told_what_it_missed_and_closed() {
    let (url, hub) = server(4).await;
    let mut client = WatchClient::connect(&url, "game").await.unwrap();
    client.subscribe("players", None).await.unwrap();
    // No await in between: the connection's task cannot forward any of them before the buffer overflows.
    for n in 0..20 {
        hub.publish("game", change("players", "P1", n));
    }
    let message = next_error(&mut client).await;
    assert!(message.contains("missed 16 changes"), "{message}");
    assert!(message.contains("reconnect"), "{message}");
    let end = tokio::time::timeout(PATIENCE, client.next_message())
        .await
        .unwrap();
    assert!(matches!(end, Ok(None) | Err(_)), "the connection ends: {end:?}");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while hub.connected_clients() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server dropped the client"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn pings_are_answered_and_binary_frames_refused() {
    let (url, _hub) = server(1024).await;
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("{url}/v1/namespaces/game/watch"))
        .await
        .unwrap();
    socket.send(Message::Ping("are you there".into())).await.unwrap();
    let pong = tokio::time::timeout(PATIENCE, socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pong, Message::Pong("are you there".into()));
    socket.send(Message::Binary(vec![1u8, 2].into())).await.unwrap();
    let reply = tokio::time::timeout(PATIENCE, socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let text = reply.into_text().unwrap();
    assert!(text.contains("binary frames"), "{text}");
}

#[tokio::test]
async fn the_watch_command_prints_count_changes_as_json_lines() {
    let (url, hub) = server(1024).await;
    let options = WatchOptions {
        url,
        namespace: "game".into(),
        view: "players".into(),
        key_prefix: Some("P".into()),
        count: Some(3),
        timeout: Some(PATIENCE),
        token: None,
    };
    let watching = tokio::spawn(async move {
        let mut out = Vec::new();
        let printed = watch::run(&options, &mut out).await;
        (
            printed.map_err(|e| e.to_string()),
            String::from_utf8(out).unwrap(),
        )
    });
    // The subscription's moment is not observable from here: publish until the command has its three.
    let mut n = 0;
    while !watching.is_finished() {
        hub.publish("game", change("games", "P1", n));
        hub.publish("game", change("players", "P1", n + 1));
        n += 2;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (printed, out) = watching.await.unwrap();
    assert_eq!(printed, Ok(3));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3);
    let mut previous = None;
    for line in lines {
        let message = watch::parse_server_message(line).unwrap();
        let ServerMessage::Change(change) = message else {
            panic!("not a change: {line}");
        };
        assert_eq!(change.view, "players");
        let sequence_number: usize = change.sequence_number.parse().unwrap();
        assert!(
            previous.is_none_or(|p| sequence_number == p + 2),
            "consecutive: {out}"
        );
        previous = Some(sequence_number);
    }
}

#[tokio::test]
async fn the_watch_command_fails_on_an_unknown_view_and_on_silence() {
    let (url, _hub) = server(1024).await;
    let mut options = WatchOptions {
        url,
        namespace: "game".into(),
        view: "nope".into(),
        key_prefix: None,
        count: None,
        timeout: Some(Duration::from_secs(1)),
        token: None,
    };
    let error = watch::run(&options, &mut Vec::new()).await.unwrap_err();
    assert!(matches!(error, WatchError::Refused(_)), "{error}");
    assert_eq!(error.exit_code(), 2);
    options.view = "players".into();
    let error = watch::run(&options, &mut Vec::new()).await.unwrap_err();
    assert!(matches!(error, WatchError::Timeout { seconds: 1, .. }), "{error}");
    assert!(
        error.to_string().contains("no change of view `players`"),
        "{error}"
    );
    options.url = "ws://127.0.0.1:1".into();
    let error = watch::run(&options, &mut Vec::new()).await.unwrap_err();
    assert!(error.to_string().contains("KAPPA_PUSH_URL"), "{error}");
}

#[tokio::test]
async fn with_a_token_only_clients_presenting_it_connect() {
    let hub = Hub::new(16);
    let views = players_directory();
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    tokio::spawn(super::serve_on_with_token(
        listener,
        hub.clone(),
        views,
        Some("s3cret".into()),
    ));
    let refused = WatchClient::connect(&url, "game").await.unwrap_err();
    assert!(refused.to_string().contains("401"), "{refused}");
    let wrong = WatchClient::connect_with_token(&url, "game", Some("guess"))
        .await
        .unwrap_err();
    assert!(wrong.to_string().contains("401"), "{wrong}");
    let mut client = WatchClient::connect_with_token(&url, "game", Some("s3cret"))
        .await
        .unwrap();
    client.subscribe("players", None).await.unwrap();
    hub.publish("game", change("players", "P1", 1));
    assert!(matches!(
        client.next_message().await.unwrap(),
        Some(ServerMessage::Change(_))
    ));
}
