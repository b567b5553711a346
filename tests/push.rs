//! Reactive views on the local stack.
//!
//! - In-cluster runtime, end to end: a WebSocket client subscribed to a view through the operator's push
//!   endpoint receives every change for events written after it subscribed, in order per key, and nothing
//!   of another view of the same table; `kappa-operator watch` prints them.
//! - Lambda runtime: the views table's API Gateway WebSocket API (routes, integration, stage), connections
//!   table, connections and notifier functions and their roles are provisioned, shown in `status.push`, and
//!   removed with the view's `spec.subscribers`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use common::Operator;
use common::scores::{event, log_yaml, scores_table, write_events};
use kappa_operator::crd::{MaterializedView, ViewPhase};
use kappa_operator::push::message::{ChangeEvent, ServerMessage};
use kappa_operator::push::watch::{WatchClient, watch_url};
use kube::Api;
use kube::api::{Patch, PatchParams};

const VIEWS: &str = r#"
apiVersion: kappa.dev/v1alpha1
kind: MaterializedView
metadata: {name: profiles}
spec:
  eventLogRef: {name: scores}
  recordTypes: [profile]
  projector: {runtime: InCluster}
  projection: {mode: Latest, key: {partitionKey: "PLAYER#{playerId}"}}
  backfill: {source: None}
  store: {streams: true}
  subscribers: {}
  deletionPolicy: Delete
---
apiVersion: kappa.dev/v1alpha1
kind: MaterializedView
metadata: {name: feed}
spec:
  eventLogRef: {name: scores}
  recordTypes: [score]
  projector: {runtime: InCluster}
  projection: {mode: Append, key: {partitionKey: "FEED#{playerId}"}}
  backfill: {source: None}
  store: {streams: true}
  subscribers: {}
  deletionPolicy: Delete
"#;

#[tokio::test]
async fn a_subscriber_receives_every_later_change_of_its_view_in_order_and_nothing_else() {
    let (client, ns) = common::setup("push").await;
    let aws = common::aws_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    // Push authorization per namespace is tests/tenancy.rs's subject: here, the explicit open mode.
    let op = Operator::start_with_env(&ns, "solo", 5, &[("KAPPA_PUSH_AUTH", "none")]);
    common::create_yaml(
        &client,
        &ns,
        &log_yaml("unused").replace("  export: {bucket: unused, prefix: exports}\n", ""),
    )
    .await
    .unwrap();
    let log_table = scores_table(&client, &ns).await;
    for view in VIEWS.split("\n---\n") {
        common::create_yaml(&client, &ns, view).await.unwrap();
    }
    let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
    let base = format!("ws://127.0.0.1:{}", op.push_port);
    for name in ["profiles", "feed"] {
        let status = common::eventually(
            Duration::from_secs(60),
            &format!("{name} Live with a push URL"),
            || async {
                let s = mvs.get(name).await.ok()?.status?;
                (s.phase == Some(ViewPhase::Live) && s.push.as_ref()?.url.is_some()).then_some(s)
            },
        )
        .await;
        assert_eq!(status.push.unwrap().url.unwrap(), watch_url(&base, &ns).unwrap());
    }

    // Events before the subscription, then the subscription, then the events it must see.
    write_events(&ddb, &log_table, (0..200).map(event).collect()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut feed = WatchClient::connect(&base, &ns)
        .await
        .expect("connecting to the push endpoint");
    feed.subscribe("feed", None).await.expect("subscribing to feed");
    let mut profiles = WatchClient::connect(&base, &ns).await.unwrap();
    profiles.subscribe("profiles", None).await.unwrap();
    let later: Vec<_> = (200..600).map(event).collect();
    let one_player = later.iter().find(|e| e.kind == "profile").unwrap().player.clone();
    let mut prefixed = WatchClient::connect(&base, &ns).await.unwrap();
    prefixed
        .subscribe("profiles", Some(&format!("PLAYER#{one_player}")))
        .await
        .unwrap();
    let cli = tokio::process::Command::new(env!("CARGO_BIN_EXE_kappa-operator"))
        .args([
            "watch",
            "feed",
            "-n",
            &ns,
            "--url",
            &base,
            "--count",
            "5",
            "--timeout",
            "60",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("kappa-operator watch");
    tokio::time::sleep(Duration::from_secs(2)).await;
    for chunk in later.chunks(25) {
        write_events(&ddb, &log_table, chunk.to_vec()).await;
    }

    // feed (Append: one item per score): every later score arrives, once, as an INSERT of feed.
    let want_scores: BTreeSet<i64> = later
        .iter()
        .filter(|e| e.kind == "score")
        .map(|e| e.i as i64)
        .collect();
    let mut got_scores = BTreeSet::new();
    let all_scores = tokio::time::timeout(Duration::from_secs(90), async {
        while !want_scores.is_subset(&got_scores) {
            let c = next_change(&mut feed).await;
            assert_eq!(c.view, "feed", "another view's change: {c:?}");
            assert_eq!(c.event, ChangeEvent::Insert, "{c:?}");
            let seq = seq_of(&c);
            assert!(got_scores.insert(seq) || seq < 200, "score {seq} pushed twice");
        }
    })
    .await;
    assert!(
        all_scores.is_ok(),
        "missing score changes: {:?}",
        want_scores.difference(&got_scores)
    );

    // profiles (Latest): per key, changes in order, ending at the player's last profile.
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for e in later.iter().filter(|e| e.kind == "profile") {
        last.insert(format!("PLAYER#{}", e.player), e.i as i64);
    }
    let mut seen: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let reached = tokio::time::timeout(Duration::from_secs(60), async {
        while last
            .iter()
            .any(|(k, v)| seen.get(k).and_then(|s| s.last()) != Some(v))
        {
            let c = next_change(&mut profiles).await;
            assert_eq!(c.view, "profiles", "another view's change: {c:?}");
            seen.entry(c.keys.pk.clone()).or_default().push(seq_of(&c));
        }
    })
    .await;
    assert!(reached.is_ok(), "profiles did not reach {last:?}: {seen:?}");
    for (key, seqs) in &seen {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{key}: out of order {seqs:?}"
        );
    }
    // The key-prefix subscriber receives only its player's changes, up to its last.
    let key = format!("PLAYER#{one_player}");
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let c = next_change(&mut prefixed).await;
            assert_eq!(c.keys.pk, key);
            if seq_of(&c) == last[&key] {
                break;
            }
        }
    })
    .await
    .expect("the prefixed subscriber's last change");
    // The CLI printed five changes of its view, one JSON line each.
    let out = tokio::time::timeout(Duration::from_secs(60), cli.wait_with_output())
        .await
        .expect("kappa-operator watch --count 5 ends")
        .unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 5);
    assert!(
        lines
            .iter()
            .all(|l| l["view"] == "feed" && l["version"] == 1 && l["type"] == "change")
    );

    // Without subscribers the view is no longer served.
    mvs.patch(
        "profiles",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"subscribers": null}})),
    )
    .await
    .unwrap();
    common::eventually(Duration::from_secs(30), "profiles without a push URL", || async {
        let s = mvs.get("profiles").await.ok()?.status?;
        s.push.is_none().then_some(())
    })
    .await;
    let mut late = WatchClient::connect(&base, &ns).await.unwrap();
    assert!(
        late.subscribe("profiles", None).await.is_err(),
        "an unserved view is refused"
    );
    common::delete_namespace(&client, &ns).await;
}

/// The next change a client receives; anything else fails the test.
async fn next_change(client: &mut WatchClient) -> kappa_operator::push::message::Change {
    match client.next_message().await.expect("reading the push endpoint") {
        Some(ServerMessage::Change(c)) => c,
        other => panic!("expected a change, got {other:?}"),
    }
}

/// The log record's `seq` in a change's new image.
fn seq_of(c: &kappa_operator::push::message::Change) -> i64 {
    let image = c.new_image.as_ref().expect("a new image");
    image["seq"]
        .as_i64()
        .unwrap_or_else(|| panic!("seq in {image:?}"))
}

const LAMBDA_VIEW: &str = r#"
apiVersion: kappa.dev/v1alpha1
kind: MaterializedView
metadata: {name: games}
spec:
  eventLogRef: {name: game-events}
  recordTypes: [game]
  projection: {mode: Latest, key: {partitionKey: "GAME#{gameId}"}}
  backfill: {source: None}
  store: {streams: true}
  subscribers: {}
  deletionPolicy: Delete
"#;

#[tokio::test]
async fn a_lambda_view_with_subscribers_gets_a_websocket_api_removed_with_its_subscribers() {
    let (client, ns) = common::setup("push-aws").await;
    let aws = common::aws_config().await;
    let apigw = aws_sdk_apigatewayv2::Client::new(&aws);
    let lambda = aws_sdk_lambda::Client::new(&aws);
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let iam = aws_sdk_iam::Client::new(&aws);
    let _op = Operator::start(&ns, "solo", 5);
    common::create_yaml(&client, &ns, common::GAME_EVENTS_SNS_LOG)
        .await
        .unwrap();
    common::create_yaml(&client, &ns, LAMBDA_VIEW).await.unwrap();
    let mvs: Api<MaterializedView> = Api::namespaced(client.clone(), &ns);
    let status = common::eventually(
        Duration::from_secs(90),
        "games Live with a WebSocket API",
        || async {
            let s = mvs.get("games").await.ok()?.status?;
            (s.phase == Some(ViewPhase::Live) && s.push.as_ref()?.api_id.is_some()).then_some(s)
        },
    )
    .await;
    let push = status.push.clone().unwrap();
    let api_id = push.api_id.unwrap();
    let url = push.url.unwrap();
    assert!(url.starts_with("wss://") && url.ends_with("/live"), "{url}");

    // The API, its routes (all on the connections function's integration) and stage.
    let api = apigw.get_api().api_id(&api_id).send().await.expect("GetApi");
    assert_eq!(api.route_selection_expression(), Some("$request.body.action"));
    assert_eq!(api.tags().unwrap()["kappa.dev/namespace"], ns);
    let routes = apigw.get_routes().api_id(&api_id).send().await.unwrap();
    let mut keys: Vec<&str> = routes.items().iter().filter_map(|r| r.route_key()).collect();
    keys.sort();
    assert_eq!(keys, ["$connect", "$disconnect", "subscribe", "unsubscribe"]);
    let integrations = apigw.get_integrations().api_id(&api_id).send().await.unwrap();
    let integration = &integrations.items()[0];
    let connections_fn = integration
        .integration_uri()
        .and_then(|u| u.split("/functions/").nth(1))
        .and_then(|u| u.strip_suffix("/invocations"))
        .unwrap()
        .to_string();
    assert!(
        routes.items().iter().all(|r| r.target()
            == Some(format!("integrations/{}", integration.integration_id().unwrap()).as_str()))
    );
    let stage = apigw
        .get_stage()
        .api_id(&api_id)
        .stage_name("live")
        .send()
        .await
        .unwrap();
    assert_eq!(stage.auto_deploy(), Some(true));

    // The functions, their roles and the connections table with TTL.
    let connections = lambda
        .get_function_configuration()
        .function_name(&connections_fn)
        .send()
        .await
        .unwrap();
    let env = connections.environment().unwrap().variables().unwrap();
    assert_eq!(connections.handler(), Some("connections"));
    let table = env["KAPPA_CONNECTIONS_TABLE"].clone();
    let routes_env: serde_json::Value = serde_json::from_str(&env["KAPPA_VIEW_ROUTES"]).unwrap();
    assert_eq!(routes_env["views"], serde_json::json!([["games", "games#"]]));
    let ttl = ddb
        .describe_time_to_live()
        .table_name(&table)
        .send()
        .await
        .unwrap();
    assert_eq!(
        ttl.time_to_live_description().unwrap().attribute_name(),
        Some("expiresAt")
    );
    // Every page: the stack holds other tests' functions too.
    let functions: Vec<_> = lambda
        .list_functions()
        .into_paginator()
        .items()
        .send()
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let notifier = functions
        .iter()
        .find(|f| {
            f.handler() == Some("notifier")
                && f.environment()
                    .and_then(|e| e.variables())
                    .is_some_and(|v| v.get("KAPPA_CONNECTIONS_TABLE") == Some(&table))
        })
        .expect("the notifier function");
    let notifier_name = notifier.function_name().unwrap().to_string();
    let notifier_env = notifier.environment().unwrap().variables().unwrap();
    assert!(notifier_env["KAPPA_WS_MANAGEMENT_ENDPOINT"].contains(&api_id));
    let mappings = lambda
        .list_event_source_mappings()
        .function_name(&notifier_name)
        .send()
        .await
        .unwrap();
    let views_table = status.table_name.clone().unwrap();
    assert!(
        mappings.event_source_mappings()[0]
            .event_source_arn()
            .unwrap()
            .contains(&format!("table/{views_table}/stream/")),
        "the notifier reads the views table's stream"
    );
    let roles: Vec<String> = [connections.role().unwrap(), notifier.role().unwrap()]
        .iter()
        .map(|arn| arn.rsplit('/').next().unwrap().to_string())
        .collect();
    let notifier_policy = iam
        .get_role_policy()
        .role_name(&roles[1])
        .policy_name(
            iam.list_role_policies()
                .role_name(&roles[1])
                .send()
                .await
                .unwrap()
                .policy_names()[0]
                .clone(),
        )
        .send()
        .await
        .unwrap();
    let document = kappa_operator::aws::iam::parse_document(notifier_policy.policy_document())
        .unwrap()
        .to_string();
    assert!(
        document.contains("execute-api:ManageConnections") && document.contains(&api_id),
        "{document}"
    );

    // A client connects and subscribes (API Gateway invokes the connections function for each route, in
    // its WebSocket event shape); then every change of the view reaches it: the notifier reads the views
    // table's stream and posts each change to the connection, in order (#16 item 4).
    common::connect_and_subscribe(&lambda, &connections_fn, &api_id, "c1", "games").await;
    let log_table = common::log_table(&client, &ns, "game-events").await;
    // Two games, three results each, written in order: six changes of the view.
    for seq in 1..=3u32 {
        for game in ["g1", "g2"] {
            let item = std::collections::HashMap::from([
                ("pk".to_string(), AttributeValue::S(format!("GAME#{game}"))),
                ("sk".to_string(), AttributeValue::S(format!("LOG#{seq:04}"))),
                ("type".to_string(), AttributeValue::S("game".into())),
                ("gameId".to_string(), AttributeValue::S(game.into())),
                ("seq".to_string(), AttributeValue::N(seq.to_string())),
            ]);
            ddb.put_item()
                .table_name(&log_table)
                .set_item(Some(item))
                .send()
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let changes = || async {
        let body = common::harness_http("GET", &format!("/_connections/{api_id}/c1/posts")).await;
        let posts: serde_json::Value = serde_json::from_str(&body).ok()?;
        let changes: Vec<kappa_operator::push::message::Change> = posts["posts"]
            .as_array()?
            .iter()
            .filter_map(|p| serde_json::from_str::<ServerMessage>(p["data"].as_str()?).ok())
            .filter_map(|m| match m {
                ServerMessage::Change(c) => Some(c),
                _ => None,
            })
            .collect();
        Some(changes)
    };
    // What a client makes of the posts: it drops a change whose sequenceNumber it has seen (delivery is at
    // least once: a notifier batch retried after a timeout posts its changes again, src/functions/notifier.rs),
    // and keeps each game's seq in arrival order.
    let per_game = |posts: &[kappa_operator::push::message::Change]| {
        let mut seen: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        let mut sequence_numbers = std::collections::HashSet::new();
        for change in posts {
            if sequence_numbers.insert(change.sequence_number.clone()) {
                seen.entry(change.keys.pk.clone())
                    .or_default()
                    .push(seq_of(change));
            }
        }
        seen
    };
    // The view is Latest on `Sns` fan-out: SNS delivers asynchronously, so a game's later record may be
    // applied first, and the earlier one then changes nothing (its conditional write loses). Subscribers
    // see the view's changes, not the log's records: each game's seq only goes up, to 3. Records pass router,
    // projector, views table stream and notifier: under a loaded CI, minutes.
    let done = |seen: &BTreeMap<String, Vec<i64>>| {
        ["GAME#g1", "GAME#g2"]
            .iter()
            .all(|g| seen.get(*g).and_then(|s| s.last()) == Some(&3))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    let posts = loop {
        let got = changes().await.unwrap_or_default();
        if done(&per_game(&got)) {
            break got;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "c1 did not get both games at seq 3 in 240 s: {:?} from {got:?}; the functions' logs:{}",
            per_game(&got),
            common::function_logs(&ns, 30)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let seen = per_game(&posts);
    for (game, seqs) in &seen {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]) && seqs.first().is_some_and(|s| *s >= 1),
            "{game}'s changes in order, each once: {seqs:?} from {posts:?}"
        );
    }
    assert_eq!(seen.len(), 2, "changes of both games only: {posts:?}");

    // Subscribers off: everything of the push stack goes.
    mvs.patch(
        "games",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"subscribers": null}})),
    )
    .await
    .unwrap();
    // What remains of the push stack, by name (empty: all of it is gone).
    let remaining = || async {
        let mut left = Vec::new();
        if apigw.get_api().api_id(&api_id).send().await.is_ok() {
            left.push(format!("WebSocket API {api_id}"));
        }
        for f in [&connections_fn, &notifier_name] {
            if lambda.get_function().function_name(f).send().await.is_ok() {
                left.push(format!("function {f}"));
            }
        }
        for role in &roles {
            if iam.get_role().role_name(role).send().await.is_ok() {
                left.push(format!("role {role}"));
            }
        }
        if ddb.describe_table().table_name(&table).send().await.is_ok() {
            left.push(format!("connections table {table}"));
        }
        left
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let status = mvs.get("games").await.ok().and_then(|v| v.status);
        let left = remaining().await;
        if status.as_ref().is_some_and(|s| s.push.is_none()) && left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the push stack is not removed within 120 s: {left:?} remain; status {status:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    common::delete_namespace(&client, &ns).await;
}
