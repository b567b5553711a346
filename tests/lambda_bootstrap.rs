//! The operator's binary started the way Lambda starts `bootstrap`: the test serves the Lambda Runtime API
//! (the local stack has no Lambda service to run functions), hands it one SQS event, and checks the
//! writer's response (partial batch failure) and the record it appended to a log table on the local AWS API.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};

#[derive(Clone, Default)]
struct RuntimeApi {
    served: Arc<Mutex<bool>>,
    responses: Arc<Mutex<Vec<(String, String)>>>,
}

const EVENT: &str = r#"{"Records":[
 {"messageId":"m1","receiptHandle":"r1","body":"{\"Item\":{\"pk\":{\"S\":\"PLAYER#ada\"},\"sk\":{\"S\":\"LOG#1\"},\"type\":{\"S\":\"player\"},\"seq\":{\"N\":\"1\"}}}","attributes":{},"messageAttributes":{},"md5OfBody":"x","eventSource":"aws:sqs","eventSourceARN":"arn:aws:sqs:us-east-1:123456789012:q","awsRegion":"us-east-1"},
 {"messageId":"m2","receiptHandle":"r2","body":"{\"Item\":{\"pk\":{\"S\":\"PLAYER#bo\"}}}","attributes":{},"messageAttributes":{},"md5OfBody":"x","eventSource":"aws:sqs","eventSourceARN":"arn:aws:sqs:us-east-1:123456789012:q","awsRegion":"us-east-1"}
]}"#;

async fn next(State(api): State<RuntimeApi>) -> (StatusCode, HeaderMap, String) {
    let first = !std::mem::replace(&mut *api.served.lock().unwrap(), true);
    if !first {
        // One invocation only: keep the function waiting, as Lambda does between invocations.
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let mut headers = HeaderMap::new();
    headers.insert("Lambda-Runtime-Aws-Request-Id", "req-1".parse().unwrap());
    headers.insert("Lambda-Runtime-Deadline-Ms", "99999999999999".parse().unwrap());
    headers.insert(
        "Lambda-Runtime-Invoked-Function-Arn",
        "arn:aws:lambda:us-east-1:123456789012:function:writer"
            .parse()
            .unwrap(),
    );
    headers.insert("Lambda-Runtime-Trace-Id", "Root=1-0-0".parse().unwrap());
    (StatusCode::OK, headers, EVENT.to_string())
}

async fn respond(State(api): State<RuntimeApi>, Path(id): Path<String>, body: String) -> StatusCode {
    api.responses.lock().unwrap().push((id, body));
    StatusCode::ACCEPTED
}

async fn error(State(api): State<RuntimeApi>, body: String) -> StatusCode {
    api.responses.lock().unwrap().push(("init-error".into(), body));
    StatusCode::ACCEPTED
}

#[tokio::test]
async fn the_binary_serves_the_writer_function_through_the_lambda_runtime_api() {
    let aws = common::aws_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let table = format!(
        "kappa-bootstrap-log-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    common::create_pk_sk_table(&ddb, &table).await;

    let api = RuntimeApi::default();
    let app = axum::Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/response", post(respond))
        .route("/2018-06-01/runtime/init/error", post(error))
        .with_state(api.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut function = std::process::Command::new(env!("CARGO_BIN_EXE_kappa-operator"))
        .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
        .env("_HANDLER", "writer")
        .env("AWS_LAMBDA_FUNCTION_NAME", "writer")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/writer")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
        .env("LOG_TABLE", &table)
        .env("PARTITION_KEY", "pk")
        .env("SORT_KEY", "sk")
        .env("RECORD_TYPE_ATTRIBUTE", "type")
        .env("RECORD_TYPES", "player,game")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the binary as a function");

    let response = common::eventually(Duration::from_secs(30), "the function's response", || async {
        api.responses.lock().unwrap().first().cloned()
    })
    .await;
    let _ = function.kill();
    let _ = function.wait();
    assert_eq!(response.0, "req-1", "{response:?}");
    let body: serde_json::Value = serde_json::from_str(&response.1).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"batchItemFailures": [{"itemIdentifier": "m2"}]}),
        "the invalid message is reported, the valid one is not"
    );
    let item = ddb
        .get_item()
        .table_name(&table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("PLAYER#ada".into()),
        )
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S("LOG#1".into()))
        .send()
        .await
        .unwrap();
    assert!(item.item.is_some(), "the valid record was appended to the log");
    ddb.delete_table().table_name(&table).send().await.unwrap();
}
