//! Reconciler tests without a cluster: a view's reconcile (`apply`, `cleanup`) against a scripted
//! Kubernetes API (a tower service that answers from the objects it holds and records every request) and
//! a fake AWS (an HTTP client under the SDK that answers each DynamoDB operation as the test scripts it and
//! records every call). They pin the reconcile's logic: which calls it makes, in what order, and the
//! status it writes. That it works is shown by the tests on the real stack (`tests/`); these run in
//! milliseconds and need nothing started.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use http::{Request, Response};
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::*;
use crate::controller::Context;

const NS: &str = "shop";
const NS_UID: &str = "0b5e6a1c-ns";
const VIEW_UID: &str = "7f1c2d3e-view";

// ------------------------------------------------------------------ the scripted Kubernetes API

/// One request the scripted API saw: method, path and JSON body (`Null` without one).
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    body: Value,
}

/// A scripted Kubernetes API: GET answers the object stored at the path (a collection path lists the
/// objects under it), writes are accepted and answered with the object as written, everything is
/// recorded. Paths are the API server's (`/apis/kappa.dev/v1alpha1/namespaces/shop/eventlogs/orders`).
#[derive(Clone, Default)]
struct ScriptedApi {
    objects: Arc<Mutex<BTreeMap<String, Value>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// The last path segments of collections (a GET there lists).
const COLLECTIONS: &[&str] = &["materializedviews", "eventlogs", "configmaps", "jobs", "events"];

impl ScriptedApi {
    fn put(&self, path: &str, object: Value) {
        self.objects.lock().unwrap().insert(path.to_string(), object);
    }

    fn client(&self) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |req: Request<Body>| {
            let api = api.clone();
            async move { Ok::<_, std::convert::Infallible>(api.answer(req).await) }
        });
        kube::Client::new(service, "default")
    }

    async fn answer(&self, req: Request<Body>) -> Response<Body> {
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let bytes = req.into_body().collect_bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        self.seen.lock().unwrap().push(Seen {
            method: method.clone(),
            path: path.clone(),
            body: body.clone(),
        });
        let objects = self.objects.lock().unwrap();
        let (status, answer) = match method.as_str() {
            "GET" => match objects.get(&path) {
                Some(object) => (200, object.clone()),
                None if COLLECTIONS.iter().any(|c| path.ends_with(&format!("/{c}"))) => {
                    let prefix = format!("{path}/");
                    let items: Vec<Value> = objects
                        .iter()
                        .filter(|(p, _)| p.strip_prefix(&prefix).is_some_and(|rest| !rest.contains('/')))
                        .map(|(_, o)| o.clone())
                        .collect();
                    (200, json!({"metadata": {"resourceVersion": "1"}, "items": items}))
                }
                None => (404, not_found(&path)),
            },
            "DELETE" => (
                200,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
            ),
            // A write: the stored object (the status subresource's parent) with the written fields.
            _ => {
                let stored = objects.get(path.trim_end_matches("/status")).cloned();
                let mut answer = stored.unwrap_or(Value::Null);
                match (&mut answer, &body) {
                    (Value::Object(o), Value::Object(b)) => {
                        for (k, v) in b {
                            if k != "metadata" {
                                o.insert(k.clone(), v.clone());
                            }
                        }
                    }
                    _ => answer = body.clone(),
                }
                (if method == "POST" { 201 } else { 200 }, answer)
            }
        };
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&answer).unwrap()))
            .unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The bodies of the writes to the view's status, in order.
    fn status_writes(&self, view: &str) -> Vec<Value> {
        let path = format!("{}/{view}/status", views_path());
        self.seen()
            .into_iter()
            .filter(|s| s.method == "PATCH" && s.path == path)
            .map(|s| s.body)
            .collect()
    }

    /// The Events posted: (reason, note).
    fn events(&self) -> Vec<(String, String)> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == "POST" && s.path.ends_with("/events"))
            .map(|s| {
                let text = |k: &str| s.body[k].as_str().unwrap_or_default().to_string();
                (text("reason"), text("note"))
            })
            .collect()
    }
}

fn not_found(path: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
           "message": format!("{path} not found")})
}

fn views_path() -> String {
    format!("/apis/kappa.dev/v1alpha1/namespaces/{NS}/materializedviews")
}

fn logs_path() -> String {
    format!("/apis/kappa.dev/v1alpha1/namespaces/{NS}/eventlogs")
}

// ------------------------------------------------------------------ the fake AWS

/// One AWS call: the operation (from the JSON protocol's `X-Amz-Target`) and its request body.
#[derive(Clone, Debug)]
struct Call {
    operation: String,
    body: Value,
}

/// An HTTP client under the SDK answering DynamoDB's JSON protocol as scripted: per operation, the
/// status and body to answer (an unscripted operation gets a 400 naming it, which the test then sees).
#[derive(Clone, Debug, Default)]
struct FakeAws {
    answers: Arc<Mutex<BTreeMap<String, (u16, Value)>>>,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl FakeAws {
    fn answer(&self, operation: &str, status: u16, body: Value) {
        self.answers
            .lock()
            .unwrap()
            .insert(operation.to_string(), (status, body));
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn operations(&self) -> Vec<String> {
        self.calls().into_iter().map(|c| c.operation).collect()
    }
}

impl HttpConnector for FakeAws {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let target = request.headers().get("x-amz-target").unwrap_or_default();
        let operation = target.rsplit('.').next().unwrap_or_default().to_string();
        let body = request
            .body()
            .bytes()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or(Value::Null);
        self.calls
            .lock()
            .unwrap()
            .push(Call { operation: operation.clone(), body });
        let (status, answer) = self.answers.lock().unwrap().get(&operation).cloned().unwrap_or((
            400,
            json!({"__type": "com.amazon.coral.validate#ValidationException",
                   "message": format!("the test scripted no answer to {operation}")}),
        ));
        let mut response = HttpResponse::new(
            status.try_into().unwrap(),
            SdkBody::from(serde_json::to_vec(&answer).unwrap()),
        );
        response
            .headers_mut()
            .insert("content-type", "application/x-amz-json-1.0");
        HttpConnectorFuture::ready(Ok(response))
    }
}

impl HttpClient for FakeAws {
    fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

// ------------------------------------------------------------------ fixtures

/// The operator's context on the scripted API and the fake AWS (no retries: a call answered is final).
async fn context(api: &ScriptedApi, aws: &FakeAws) -> Context {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        settings: crate::settings::Settings,
    }
    use clap::Parser;
    let config = Cli::parse_from([
        "kappa-operator",
        "--cluster-id",
        "test",
        "--lease-namespace",
        "kappa-system",
        "--identity",
        "reconciler-test",
    ])
    .settings
    .validate()
    .unwrap();
    let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("eu-west-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "AKIDTEST", "secret", None, None, "test",
        ))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .http_client(aws.clone())
        .load()
        .await;
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let aws = crate::aws::Aws::from_sdk_config(&shared, metrics.clone()).unwrap();
    let crd_skew = super::super::crd_skew::CrdSkew::new(&[], Default::default());
    let push = Arc::new(super::super::push::PushRuntime::new("ws://127.0.0.1:1"));
    Context::new(api.client(), metrics, config, aws, push, crd_skew)
}

/// The namespace and an EventLog `orders` whose table and stream exist.
fn scripted_api() -> ScriptedApi {
    let api = ScriptedApi::default();
    api.put(
        &format!("/api/v1/namespaces/{NS}"),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "uid": NS_UID}}),
    );
    api.put(
        &format!("{}/orders", logs_path()),
        json!({
            "apiVersion": "kappa.dev/v1alpha1", "kind": "EventLog",
            "metadata": {"name": "orders", "namespace": NS, "uid": "log-uid", "generation": 1},
            "spec": {"recordTypes": ["OrderPlaced", "OrderPaid"], "table": {"sortKey": "sk", "orderingAttribute": "seq"}},
            "status": {"table": {
                "name": "kappa-test-shop-orders-log",
                "arn": "arn:aws:dynamodb:eu-west-1:123456789012:table/kappa-test-shop-orders-log",
                "streamArn": "arn:aws:dynamodb:eu-west-1:123456789012:table/kappa-test-shop-orders-log/stream/2026-12-01T00:00:00.000"
            }}
        }),
    );
    api
}

/// The view `order-latest` (in-cluster, nothing to backfill, the namespace's shared views table), as
/// stored: with the finalizer, and `status` when given.
fn view(spec_extra: Value, status: Option<Value>) -> MaterializedView {
    let mut spec = json!({
        "eventLogRef": {"name": "orders"},
        "recordTypes": ["OrderPlaced", "OrderPaid"],
        "projection": {"mode": "Latest", "key": {"partitionKey": "ORDER#{pk}"}},
        "backfill": {"source": "None"},
    });
    if let (Value::Object(s), Value::Object(extra)) = (&mut spec, spec_extra) {
        s.extend(extra);
    }
    let mut object = json!({
        "apiVersion": "kappa.dev/v1alpha1", "kind": "MaterializedView",
        "metadata": {"name": "order-latest", "namespace": NS, "uid": VIEW_UID, "generation": 2,
                     "finalizers": [crate::crd::FINALIZER]},
        "spec": spec,
    });
    if let Some(status) = status {
        object["status"] = status;
    }
    serde_json::from_value(object).unwrap()
}

fn store(api: &ScriptedApi, view: &MaterializedView) {
    api.put(
        &format!("{}/{}", views_path(), view.name_any()),
        serde_json::to_value(view).unwrap(),
    );
}

fn condition(status: &Value, type_: crate::crd::ConditionType) -> &Value {
    status["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_.as_str()))
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

/// DynamoDB's answer to a DescribeTable of a table that does not exist.
fn no_such_table() -> (u16, Value) {
    (
        400,
        json!({"__type": "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException",
               "message": "Requested resource not found"}),
    )
}

/// DynamoDB's description of table `name`, `status` (CREATING, ACTIVE).
fn table_description(name: &str, status: &str) -> Value {
    json!({
        "TableName": name,
        "TableArn": format!("arn:aws:dynamodb:eu-west-1:123456789012:table/{name}"),
        "TableStatus": status,
        "CreationDateTime": 1_764_547_200.0,
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"},
                                 {"AttributeName": "sk", "AttributeType": "S"}],
        "BillingModeSummary": {"BillingMode": "PAY_PER_REQUEST"},
    })
}

// ------------------------------------------------------------------ the scenarios

#[tokio::test]
async fn a_view_whose_event_log_is_missing_stalls_naming_the_field_and_calls_no_aws() {
    let api = scripted_api();
    let aws = FakeAws::default();
    let ctx = context(&api, &aws).await;
    let v = view(json!({"eventLogRef": {"name": "payments"}}), None);
    store(&api, &v);

    let action = apply(Arc::new(v), &ctx, NS).await.unwrap();

    assert_eq!(action, Action::requeue(ctx.config.resync));
    assert!(aws.calls().is_empty(), "{:?}", aws.calls());
    let writes = api.status_writes("order-latest");
    assert_eq!(writes.len(), 1, "{:?}", api.seen());
    let stalled = condition(&writes[0], crate::crd::ConditionType::Stalled);
    assert_eq!(stalled["status"], "True");
    assert_eq!(stalled["reason"], reasons::EVENT_LOG_NOT_FOUND);
    let message = stalled["message"].as_str().unwrap();
    assert!(
        message.starts_with("spec.eventLogRef.name: EventLog \"payments\" does not exist in namespace shop"),
        "{message}"
    );
    assert_eq!(
        condition(&writes[0], crate::crd::ConditionType::Ready)["status"],
        "False"
    );
    assert!(
        api.events()
            .iter()
            .any(|(reason, _)| reason == reasons::EVENT_LOG_NOT_FOUND),
        "{:?}",
        api.events()
    );
}

#[tokio::test]
async fn a_new_view_creates_its_shared_views_table_owned_by_the_namespace_and_says_it_is_provisioning() {
    let api = scripted_api();
    let aws = FakeAws::default();
    let (status, body) = no_such_table();
    aws.answer("DescribeTable", status, body);
    let ctx = context(&api, &aws).await;
    let v = view(json!({}), None);
    store(&api, &v);
    let planned = crate::plan::versions::plan_version("test", &v, std::slice::from_ref(&v), 1)
        .in_namespace(Some(NS_UID));
    aws.answer(
        "CreateTable",
        200,
        json!({"TableDescription": table_description(&planned.table.name, "CREATING")}),
    );

    let action = apply(Arc::new(v), &ctx, NS).await.unwrap();

    // Only the table: nothing reads or writes it before it is ACTIVE.
    assert_eq!(aws.operations(), ["DescribeTable", "CreateTable"]);
    let create = &aws.calls()[1].body;
    assert_eq!(create["TableName"], planned.table.name.as_str());
    let tags: BTreeMap<String, String> = create["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["Key"].as_str().unwrap().into(),
                t["Value"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(tags, planned.table.tags, "the table carries its owner's tags");
    assert_eq!(tags.get("kappa.dev/uid").map(String::as_str), Some(NS_UID));
    // Looked at again soon, not at the resync.
    assert_ne!(action, Action::requeue(ctx.config.resync));
    let writes = api.status_writes("order-latest");
    assert_eq!(writes.len(), 1, "{:?}", api.seen());
    assert_eq!(writes[0]["status"]["phase"], "Provisioning");
    let reconciling = condition(&writes[0], crate::crd::ConditionType::Reconciling);
    assert_eq!(reconciling["status"], "True");
    assert!(
        reconciling["message"]
            .as_str()
            .unwrap()
            .contains(&format!("creating views table {}", planned.table.name)),
        "{reconciling}"
    );
    let versions = writes[0]["status"]["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0]["version"], 1);
    assert_eq!(versions[0]["state"], "Active");
    // No pointer ConfigMap until the active version's table is ready.
    assert!(!api.seen().iter().any(|s| s.path.contains("/configmaps")));
}

#[tokio::test]
async fn a_changed_view_builds_a_new_version_beside_the_active_one_which_keeps_serving() {
    let api = scripted_api();
    let aws = FakeAws::default();
    let ctx = context(&api, &aws).await;
    // Version 1 was built from other content (another projection mode) and is active.
    let before = view(
        json!({"projection": {"mode": "Count", "key": {"partitionKey": "ORDER#{pk}"}}}),
        None,
    );
    let content = crate::plan::versions::content_of(&before);
    let v1_plan = crate::plan::versions::plan_version("test", &before, std::slice::from_ref(&before), 1)
        .in_namespace(Some(NS_UID));
    let status = json!({
        "phase": "Live",
        "activeVersion": 1,
        "latestVersion": 1,
        "tableName": v1_plan.table.name,
        "keyPrefix": v1_plan.key_prefix,
        "versions": [{
            "version": 1,
            "contentHash": crate::plan::versions::content_hash(&content),
            "content": serde_json::to_value(&content).unwrap(),
            "state": "Active",
            "phase": "Live",
            "tableName": v1_plan.table.name,
            "keyPrefix": v1_plan.key_prefix,
        }],
    });
    let v = view(json!({}), Some(status));
    store(&api, &v);
    // The shared table exists, ours, still being updated: each version's pass stops at it.
    aws.answer(
        "DescribeTable",
        200,
        json!({"Table": table_description(&v1_plan.table.name, "UPDATING")}),
    );
    let tags: Vec<Value> = v1_plan
        .table
        .tags
        .iter()
        .map(|(k, val)| json!({"Key": k, "Value": val}))
        .collect();
    aws.answer("ListTagsOfResource", 200, json!({"Tags": tags}));

    apply(Arc::new(v), &ctx, NS).await.unwrap();

    // Nothing is created or deleted: both versions use the shared table that exists.
    assert!(
        aws.operations()
            .iter()
            .all(|o| o == "DescribeTable" || o == "ListTagsOfResource"),
        "{:?}",
        aws.operations()
    );
    let writes = api.status_writes("order-latest");
    assert_eq!(writes.len(), 1, "{:?}", api.seen());
    let status = &writes[0]["status"];
    let versions = status["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "{status}");
    assert_eq!(
        (versions[0]["version"].clone(), versions[0]["state"].clone()),
        (json!(1), json!("Active"))
    );
    assert_eq!(
        (versions[1]["version"].clone(), versions[1]["state"].clone()),
        (json!(2), json!("Building"))
    );
    assert_ne!(versions[0]["keyPrefix"], versions[1]["keyPrefix"], "{status}");
    assert_eq!(status["activeVersion"], 1);
    let rebuilding = condition(&writes[0], crate::crd::ConditionType::Rebuilding);
    assert_eq!(rebuilding["status"], "True");
    assert_eq!(rebuilding["reason"], reasons::REBUILDING);
    assert!(
        rebuilding["message"]
            .as_str()
            .unwrap()
            .contains("version 1 keeps serving"),
        "{rebuilding}"
    );
    let events = api.events();
    assert!(
        events.iter().any(|(reason, note)| reason == reasons::REBUILDING
            && note.contains("building version 2 beside the active version 1")),
        "{events:?}"
    );
}

#[tokio::test]
async fn deleting_a_retained_view_keeps_its_aws_resources_and_says_so() {
    let api = scripted_api();
    let aws = FakeAws::default();
    let ctx = context(&api, &aws).await;
    let mut v = view(json!({"deletionPolicy": "Retain"}), None);
    let plan = crate::plan::versions::plan_version("test", &v, std::slice::from_ref(&v), 1)
        .in_namespace(Some(NS_UID));
    v.status = Some(
        serde_json::from_value(json!({
            "phase": "Live",
            "activeVersion": 1,
            "latestVersion": 1,
            "tableName": plan.table.name,
            "versions": [{"version": 1, "contentHash": "h", "state": "Active", "phase": "Live",
                          "content": crate::plan::versions::content_of(&v),
                          "tableName": plan.table.name, "keyPrefix": plan.key_prefix}],
        }))
        .unwrap(),
    );
    v.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    store(&api, &v);

    let action = cleanup(Arc::new(v), &ctx, NS).await.unwrap();

    assert_eq!(action, Action::await_change());
    assert!(
        aws.calls().is_empty(),
        "Retain touches nothing on AWS: {:?}",
        aws.calls()
    );
    let writes = api.status_writes("order-latest");
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0]["status"]["phase"], "Deleting");
    let events = api.events();
    let (_, note) = events
        .iter()
        .find(|(reason, _)| reason == "Deleted")
        .unwrap_or_else(|| panic!("no Deleted Event: {events:?}"));
    assert!(note.contains(&plan.table.name), "{note}");
}
