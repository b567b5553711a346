//! Push provisioning on the local stack's AWS API alone (no Kubernetes): a views table's WebSocket API,
//! its integration, routes, route responses and stage, the connections table with TTL, the connections
//! and notifier functions, roles and mapping are created as planned; converging again makes no mutating
//! call; a route deleted by hand comes back; deletion touches only the owner's API.
//!
//! Needs `AWS_ENDPOINT_URL` (the stack's AWS API server, `hack/stack.sh up`, whose emulator answers the
//! API Gateway v2 calls moto lacks: see `hack/moto-server.py`).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_sdk_apigatewayv2::types::ProtocolType;
use kappa_operator::aws::lambda::{bootstrap_zip, zip_sha256_base64};
use kappa_operator::aws::websocket::{self, ApiState};
use kappa_operator::aws::{CallCounter, Convergence, dynamodb, iam, lambda};
use kappa_operator::crd::MaterializedView;
use kappa_operator::metrics::Metrics;
use kappa_operator::plan::function::{Architecture, FunctionCode};
use kappa_operator::plan::lambdas::BuiltInCode;
use kappa_operator::plan::log::scope_of_arn;
use kappa_operator::plan::push::{PushPlan, plan_push};
use kappa_operator::plan::view::{ViewPlan, plan_view};

/// The AWS clients of the test, every call counted like the operator's.
struct Clients {
    metrics: Arc<Metrics>,
    apigw: aws_sdk_apigatewayv2::Client,
    lambda: aws_sdk_lambda::Client,
    iam: aws_sdk_iam::Client,
    ddb: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
}

impl Clients {
    async fn new() -> Clients {
        if std::env::var("AWS_ENDPOINT_URL").is_err() {
            panic!(
                "AWS_ENDPOINT_URL is not set: start the local stack with `hack/stack.sh up` and `source .stack/env` \
                 (only its AWS API server is needed), or run `make test`"
            );
        }
        let shared = common::aws_config().await;
        let metrics = Arc::new(Metrics::default());
        let counter = CallCounter::new(metrics.clone());
        Clients {
            apigw: aws_sdk_apigatewayv2::Client::from_conf(
                aws_sdk_apigatewayv2::config::Builder::from(&shared)
                    .interceptor(counter.clone())
                    .build(),
            ),
            lambda: aws_sdk_lambda::Client::from_conf(
                aws_sdk_lambda::config::Builder::from(&shared)
                    .interceptor(counter.clone())
                    .build(),
            ),
            iam: aws_sdk_iam::Client::from_conf(
                aws_sdk_iam::config::Builder::from(&shared)
                    .interceptor(counter.clone())
                    .build(),
            ),
            ddb: aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(&shared)
                    .interceptor(counter.clone())
                    .build(),
            ),
            sqs: aws_sdk_sqs::Client::from_conf(
                aws_sdk_sqs::config::Builder::from(&shared)
                    .interceptor(counter)
                    .build(),
            ),
            metrics,
        }
    }

    /// Mutating AWS calls made so far, by `service/operation`.
    fn mutating_calls(&self) -> BTreeMap<String, u64> {
        let text = self.metrics.render();
        let label = |line: &str, name: &str| {
            let start = line.find(&format!("{name}=\""))? + name.len() + 2;
            let len = line[start..].find('"')?;
            Some(line[start..start + len].to_string())
        };
        let mut calls = BTreeMap::new();
        for line in text.lines() {
            if !line.starts_with("kappa_aws_calls_total") || !line.contains(r#"mutating="true""#) {
                continue;
            }
            let (Some(service), Some(operation), Some(n)) = (
                label(line, "service"),
                label(line, "operation"),
                line.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok()),
            ) else {
                continue;
            };
            *calls.entry(format!("{service}/{operation}")).or_default() += n;
        }
        calls
    }
}

fn view(namespace: &str) -> MaterializedView {
    serde_yaml::from_str(&format!(
        "apiVersion: kappa.dev/v1alpha1\nkind: MaterializedView\nmetadata: {{name: players, namespace: {namespace}}}\n\
         spec:\n  eventLogRef: {{name: log}}\n  recordTypes: [player]\n  \
         projection: {{mode: Latest, key: {{partitionKey: \"PLAYER#{{id}}\"}}}}\n  store: {{streams: true}}\n"
    ))
    .unwrap()
}

fn code() -> BuiltInCode {
    let bytes = bootstrap_zip(b"#!/bin/sh\nexit 0\n");
    BuiltInCode {
        code: FunctionCode::Zip {
            sha256_base64: zip_sha256_base64(&bytes),
            bytes: Arc::new(bytes),
        },
        architecture: Architecture::X86_64,
    }
}

/// Everything [`converge`] made, for the checks.
struct Provisioned {
    api: ApiState,
    integration_id: String,
    route_ids: BTreeMap<String, String>,
    connections_arn: String,
    mapping_uuid: String,
    /// The notifier's failure queue's ARN.
    failure_queue_arn: String,
}

/// One pass over every push resource in the controller's order; `Converged` when no pass step changed
/// anything.
async fn converge_once(
    c: &Clients,
    view: &ViewPlan,
    push: &PushPlan,
    code: &BuiltInCode,
) -> (Provisioned, Convergence) {
    let mut all = Vec::new();
    let views_table = dynamodb::ensure_table(&c.ddb, &view.table).await.unwrap();
    all.push(views_table.convergence);
    let connections_table = dynamodb::ensure_table(&c.ddb, &push.connections_table)
        .await
        .unwrap();
    all.push(connections_table.convergence);
    let boundary = common::ensure_boundary_policy(&c.iam).await;
    let (connections_role, conv) = iam::ensure_role(&c.iam, &push.connections_role, &boundary)
        .await
        .unwrap();
    all.push(conv);
    let (connections_arn, conv) =
        lambda::ensure_function(&c.lambda, &push.connections_function(&connections_role, code))
            .await
            .unwrap();
    all.push(conv);
    let api = websocket::ensure_api(&c.apigw, &push.api).await.unwrap();
    all.push(api.convergence);
    let (integration_id, conv) =
        websocket::ensure_integration(&c.apigw, &api.api_id, &push.integration(&connections_arn))
            .await
            .unwrap();
    all.push(conv);
    let (route_ids, conv) = websocket::ensure_routes(&c.apigw, &api.api_id, &push.routes, &integration_id)
        .await
        .unwrap();
    all.push(conv);
    let conv = websocket::ensure_stage(
        &c.apigw,
        &api.api_id,
        &push.stage,
        &push.api.stage_arn(&api.api_id, &push.stage.name),
    )
    .await
    .unwrap();
    all.push(conv);
    let conv = websocket::allow_apigateway_invoke(
        &c.lambda,
        &push.connections_function,
        &push.invoke_source_arn(&api.api_id),
    )
    .await
    .unwrap();
    all.push(conv);
    let (notifier_role, conv) = iam::ensure_role(&c.iam, &push.notifier_role(&api.api_id), &boundary)
        .await
        .unwrap();
    all.push(conv);
    let notifier = push.notifier_function(&notifier_role, &api.api_id, api.api_endpoint.as_deref(), code);
    let (_, conv) = lambda::ensure_function(&c.lambda, &notifier).await.unwrap();
    all.push(conv);
    let stream = views_table.stream_arn.clone().expect("the views table streams");
    let failures = kappa_operator::aws::sqs::ensure_queue(&c.sqs, &push.notifier_failure_queue, None)
        .await
        .unwrap();
    all.push(failures.convergence);
    let (mapping_uuid, conv) =
        lambda::ensure_mapping(&c.lambda, &push.notifier_mapping(&stream, &failures.arn))
            .await
            .unwrap();
    all.push(conv);
    let convergence = if all.iter().all(|c| *c == Convergence::Converged) {
        Convergence::Converged
    } else {
        Convergence::InProgress
    };
    (
        Provisioned {
            api,
            integration_id,
            route_ids,
            connections_arn,
            mapping_uuid,
            failure_queue_arn: failures.arn,
        },
        convergence,
    )
}

async fn converge(c: &Clients, view: &ViewPlan, push: &PushPlan, code: &BuiltInCode) -> Provisioned {
    for _ in 0..6 {
        let (provisioned, convergence) = converge_once(c, view, push, code).await;
        if convergence == Convergence::Converged {
            return provisioned;
        }
    }
    panic!("the push resources did not converge in 6 passes");
}

fn suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{:05}", nanos % 100_000)
}

#[tokio::test]
async fn a_views_tables_websocket_api_is_provisioned_idempotently_repaired_and_deleted_only_when_owned() {
    let c = Clients::new().await;
    let cluster = format!("t{}", suffix());
    let view = plan_view(&cluster, &view("games"), kappa_operator::plan::NO_VIEWS);
    // ARNs need the account: the views table's ARN gives it, as in the controller.
    let table = dynamodb::ensure_table(&c.ddb, &view.table).await.unwrap();
    let scope = scope_of_arn(&table.arn).expect("a table ARN");
    let push = plan_push(&view, &[("players".into(), "players#".into())], &scope);
    let code = code();
    let p = converge(&c, &view, &push, &code).await;
    let api_id = p.api.api_id.clone();

    // The API: WebSocket, routed on the action, tagged with the owner's tags.
    let api = c.apigw.get_api().api_id(&api_id).send().await.unwrap();
    assert_eq!(api.name(), Some(push.api.name.as_str()));
    assert_eq!(api.protocol_type(), Some(&ProtocolType::Websocket));
    assert_eq!(api.route_selection_expression(), Some("$request.body.action"));
    let tags: BTreeMap<String, String> = api
        .tags()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(tags, push.owner.tags());
    assert_eq!(tags["kappa.dev/kind"], "ViewsTable");
    let url = push.client_url(&api_id, p.api.api_endpoint.as_deref());
    assert_eq!(
        url,
        format!("wss://{api_id}.execute-api.{}.amazonaws.com/live", scope.region)
    );

    // The integration: Lambda proxy to the connections function.
    let integration = c
        .apigw
        .get_integration()
        .api_id(&api_id)
        .integration_id(&p.integration_id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        integration.integration_uri(),
        Some(
            format!(
                "arn:aws:apigateway:{}:lambda:path/2015-03-31/functions/{}/invocations",
                scope.region, p.connections_arn
            )
            .as_str()
        )
    );
    assert_eq!(
        integration.integration_type().map(|t| t.as_str()),
        Some("AWS_PROXY")
    );
    assert_eq!(integration.integration_method(), Some("POST"));

    // The four routes to it; subscribe and unsubscribe two-way with a $default route response.
    let routes = c.apigw.get_routes().api_id(&api_id).send().await.unwrap();
    let mut keys: Vec<&str> = routes.items().iter().filter_map(|r| r.route_key()).collect();
    keys.sort();
    assert_eq!(keys, ["$connect", "$disconnect", "subscribe", "unsubscribe"]);
    let target = format!("integrations/{}", p.integration_id);
    for route in routes.items() {
        let key = route.route_key().unwrap();
        assert_eq!(route.target(), Some(target.as_str()), "{key}");
        assert_eq!(p.route_ids.get(key).map(String::as_str), route.route_id());
        let responses = c
            .apigw
            .get_route_responses()
            .api_id(&api_id)
            .route_id(route.route_id().unwrap())
            .send()
            .await
            .unwrap();
        let response_keys: Vec<&str> = responses
            .items()
            .iter()
            .filter_map(|r| r.route_response_key())
            .collect();
        if key.starts_with('$') {
            assert!(response_keys.is_empty(), "{key}: one-way");
        } else {
            assert_eq!(
                route.route_response_selection_expression(),
                Some("$default"),
                "{key}"
            );
            assert_eq!(response_keys, ["$default"], "{key}");
        }
    }

    // The stage: live, auto-deployed, tagged.
    let stage = c
        .apigw
        .get_stage()
        .api_id(&api_id)
        .stage_name("live")
        .send()
        .await
        .unwrap();
    assert_eq!(stage.auto_deploy(), Some(true));
    assert_eq!(
        stage
            .tags()
            .and_then(|t| t.get("kappa.dev/kind"))
            .map(String::as_str),
        Some("ViewsTable")
    );

    // API Gateway may invoke the connections function from this API only.
    let policy = c
        .lambda
        .get_policy()
        .function_name(&push.connections_function)
        .send()
        .await
        .unwrap();
    let policy: serde_json::Value = serde_json::from_str(policy.policy().unwrap()).unwrap();
    let statement = &policy["Statement"][0];
    assert_eq!(statement["Principal"]["Service"], "apigateway.amazonaws.com");
    assert_eq!(
        statement["Condition"]["ArnLike"]["AWS:SourceArn"],
        push.invoke_source_arn(&api_id)
    );
    assert!(push.invoke_source_arn(&api_id).ends_with(&format!(":{api_id}/*")));

    // The connections table expires items on expiresAt.
    let ttl = c
        .ddb
        .describe_time_to_live()
        .table_name(&push.connections_table.name)
        .send()
        .await
        .unwrap();
    let ttl = ttl.time_to_live_description().unwrap();
    assert_eq!(ttl.attribute_name(), Some("expiresAt"));
    assert_eq!(ttl.time_to_live_status().map(|s| s.as_str()), Some("ENABLED"));

    // The notifier reads the views stream from LATEST, bisecting failed batches, knowing the endpoint.
    let mapping = c
        .lambda
        .get_event_source_mapping()
        .uuid(&p.mapping_uuid)
        .send()
        .await
        .unwrap();
    assert_eq!(mapping.starting_position().map(|s| s.as_str()), Some("LATEST"));
    assert_eq!(mapping.bisect_batch_on_function_error(), Some(true));
    assert_eq!(mapping.event_source_arn(), table.stream_arn.as_deref());
    // A change it cannot post goes to its own failure queue (owned, tagged) after bounded retries,
    // instead of holding the shard back until the stream trims it.
    assert_eq!(mapping.maximum_retry_attempts(), Some(10), "{mapping:?}");
    assert_eq!(
        mapping.maximum_record_age_in_seconds(),
        Some(82_800),
        "{mapping:?}"
    );
    assert_eq!(
        mapping
            .destination_config()
            .and_then(|d| d.on_failure())
            .and_then(|o| o.destination()),
        Some(p.failure_queue_arn.as_str())
    );
    let queue_url = c
        .sqs
        .get_queue_url()
        .queue_name(&push.notifier_failure_queue.name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let queue_tags: BTreeMap<String, String> = c
        .sqs
        .list_queue_tags()
        .queue_url(&queue_url)
        .send()
        .await
        .unwrap()
        .tags
        .unwrap_or_default()
        .into_iter()
        .collect();
    assert_eq!(queue_tags, push.owner.tags());
    let notifier = c
        .lambda
        .get_function()
        .function_name(&push.notifier_function)
        .send()
        .await
        .unwrap();
    let env = notifier
        .configuration()
        .and_then(|f| f.environment())
        .and_then(|e| e.variables())
        .unwrap();
    assert_eq!(
        env["KAPPA_WS_MANAGEMENT_ENDPOINT"],
        format!("https://{api_id}.execute-api.{}.amazonaws.com/live", scope.region)
    );
    assert_eq!(env["KAPPA_VIEW_ROUTES"], r#"{"views":[["players","players#"]]}"#);

    // Converging again changes nothing on AWS.
    let before = c.mutating_calls();
    eprintln!("mutating calls so far: {before:?}");
    for op in [
        "CreateApi",
        "CreateIntegration",
        "CreateRoute",
        "CreateRouteResponse",
        "CreateStage",
    ] {
        assert!(
            before.keys().any(|k| k.ends_with(&format!("/{op}"))),
            "{op} was counted: {before:?}"
        );
    }
    let (again, convergence) = converge_once(&c, &view, &push, &code).await;
    assert_eq!(convergence, Convergence::Converged);
    assert_eq!(
        again.api.api_id, api_id,
        "the API is found by name, not created again"
    );
    assert_eq!(
        c.mutating_calls(),
        before,
        "an unchanged push topology costs only reads"
    );

    // A route deleted by hand is recreated with its route response; a lost route response comes back.
    c.apigw
        .delete_route()
        .api_id(&api_id)
        .route_id(&p.route_ids["subscribe"])
        .send()
        .await
        .unwrap();
    let unsubscribe = p.route_ids["unsubscribe"].clone();
    let responses = c
        .apigw
        .get_route_responses()
        .api_id(&api_id)
        .route_id(&unsubscribe)
        .send()
        .await
        .unwrap();
    for r in responses.items() {
        c.apigw
            .delete_route_response()
            .api_id(&api_id)
            .route_id(&unsubscribe)
            .route_response_id(r.route_response_id().unwrap())
            .send()
            .await
            .unwrap();
    }
    let (ids, convergence) = websocket::ensure_routes(&c.apigw, &api_id, &push.routes, &p.integration_id)
        .await
        .unwrap();
    assert_eq!(convergence, Convergence::InProgress);
    assert_ne!(ids["subscribe"], p.route_ids["subscribe"], "a new route");
    for key in ["subscribe", "unsubscribe"] {
        let route = c
            .apigw
            .get_route()
            .api_id(&api_id)
            .route_id(&ids[key])
            .send()
            .await
            .unwrap();
        assert_eq!(route.route_key(), Some(key));
        assert_eq!(route.target(), Some(target.as_str()));
        assert_eq!(route.route_response_selection_expression(), Some("$default"));
        let responses = c
            .apigw
            .get_route_responses()
            .api_id(&api_id)
            .route_id(&ids[key])
            .send()
            .await
            .unwrap();
        assert_eq!(responses.items().len(), 1, "{key}");
        assert_eq!(responses.items()[0].route_response_key(), Some("$default"));
    }
    let (_, convergence) = websocket::ensure_routes(&c.apigw, &api_id, &push.routes, &p.integration_id)
        .await
        .unwrap();
    assert_eq!(convergence, Convergence::Converged);

    // Auto-deploy turned off by hand is turned back on.
    c.apigw
        .update_stage()
        .api_id(&api_id)
        .stage_name("live")
        .auto_deploy(false)
        .send()
        .await
        .unwrap();
    let stage_arn = push.api.stage_arn(&api_id, "live");
    let convergence = websocket::ensure_stage(&c.apigw, &api_id, &push.stage, &stage_arn)
        .await
        .unwrap();
    assert_eq!(convergence, Convergence::InProgress);
    let stage = c
        .apigw
        .get_stage()
        .api_id(&api_id)
        .stage_name("live")
        .send()
        .await
        .unwrap();
    assert_eq!(stage.auto_deploy(), Some(true));

    // Deletion: an API of the same name with another owner's tags is refused; ours is deleted.
    let stranger = c
        .apigw
        .create_api()
        .name(&push.api.name)
        .protocol_type(ProtocolType::Websocket)
        .route_selection_expression("$request.body.action")
        .tags("kappa.dev/managed-by", "kappa-operator")
        .tags("kappa.dev/cluster", "someone-else")
        .send()
        .await
        .unwrap();
    let stranger_id = stranger.api_id().unwrap().to_string();
    let before = c.mutating_calls();
    let found = websocket::ensure_api(&c.apigw, &push.api).await.unwrap();
    assert_eq!(
        (found.api_id.as_str(), found.convergence),
        (api_id.as_str(), Convergence::Converged),
        "another owner's API of the same name is neither picked nor tagged"
    );
    assert_eq!(c.mutating_calls(), before);
    assert!(
        websocket::delete_api_if_owned(&c.apigw, &push.api.name, &push.owner)
            .await
            .unwrap()
    );
    assert!(
        c.apigw.get_api().api_id(&api_id).send().await.is_err(),
        "our API is gone"
    );
    assert!(
        !websocket::delete_api_if_owned(&c.apigw, &push.api.name, &push.owner)
            .await
            .unwrap(),
        "none of ours is left"
    );
    let kept = c.apigw.get_api().api_id(&stranger_id).send().await.unwrap();
    assert_eq!(
        kept.name(),
        Some(push.api.name.as_str()),
        "another owner's API stays"
    );

    // Clean up what the test made.
    c.apigw.delete_api().api_id(&stranger_id).send().await.unwrap();
    lambda::delete_mappings(&c.lambda, &push.notifier_function)
        .await
        .unwrap();
    for f in [&push.connections_function, &push.notifier_function] {
        assert!(
            lambda::delete_function_if_owned(&c.lambda, f, &push.owner)
                .await
                .unwrap()
        );
    }
    assert!(
        kappa_operator::aws::sqs::delete_queue_if_owned(
            &c.sqs,
            &push.notifier_failure_queue.name,
            &push.owner
        )
        .await
        .unwrap()
    );
    for role in [&push.connections_role.name, &push.notifier_role_name] {
        assert!(
            iam::delete_role_if_owned(&c.iam, role, &push.owner)
                .await
                .unwrap()
        );
    }
    for t in [&push.connections_table.name, &view.table.name] {
        assert!(
            dynamodb::delete_table_if_owned(&c.ddb, t, &push.owner)
                .await
                .unwrap()
        );
    }
}
