//! The fault-injection proxy (hack/fault-proxy.py) against the real SDKs: every error shape it answers
//! with, for every service the operator calls, is parsed by that service's SDK into the injected code and
//! classified retryable by the operator's one classifier (`aws::error::classify_sdk`); reset and held
//! connections are retryable too; with no faults the same calls go through; a share of faults is counted.
//! SDK retries are off, so each call shows the first answer.

mod common;

use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use common::faults::FaultProxy;
use kappa_operator::aws::error::classify_sdk;

/// The services the operator calls, by the proxy's names (`streams`: DynamoDB Streams; `apigateway`: API
/// Gateway v2).
const SERVICES: &[&str] = &[
    "dynamodb",
    "streams",
    "s3",
    "sns",
    "sqs",
    "lambda",
    "iam",
    "apigateway",
];

/// What the calls need on the emulator, made directly (not through the proxy).
struct Resources {
    table: String,
    bucket: String,
    topic_arn: String,
    queue_url: String,
}

async fn resources(stem: &str) -> Resources {
    let aws = common::aws_config().await;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let ddb = aws_sdk_dynamodb::Client::new(&aws);
    let table = common::fresh_pk_sk_table(&ddb, &format!("faults-{stem}")).await;
    let s3 = s3_client(&aws);
    let bucket = format!("faults-{stem}-{nanos}");
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("CreateBucket");
    s3.put_object()
        .bucket(&bucket)
        .key("object")
        .body(b"hello".to_vec().into())
        .send()
        .await
        .expect("PutObject");
    let topic_arn = aws_sdk_sns::Client::new(&aws)
        .create_topic()
        .name(format!("faults-{stem}-{nanos}"))
        .send()
        .await
        .expect("CreateTopic")
        .topic_arn
        .expect("a topic ARN");
    let queue_url = aws_sdk_sqs::Client::new(&aws)
        .create_queue()
        .queue_name(format!("faults-{stem}-{nanos}"))
        .send()
        .await
        .expect("CreateQueue")
        .queue_url
        .expect("a queue URL");
    Resources { table, bucket, topic_arn, queue_url }
}

fn s3_client(aws: &SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(aws)
            .force_path_style(true)
            .build(),
    )
}

/// A failed call as the operator would see it.
#[derive(Debug)]
struct Failure {
    /// The SDK's error kind: service, timeout, dispatch, response, construction.
    kind: &'static str,
    /// `ProvideErrorMetadata::code()`, for a service error.
    code: Option<String>,
    status: Option<u16>,
    /// What the proxy says it injected (`x-kappa-fault: KIND CODE`), for a service error.
    injected: Option<String>,
    retryable: bool,
    text: String,
}

fn outcome<T, E>(result: Result<T, SdkError<E, HttpResponse>>) -> Result<(), Failure>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let err = match result {
        Ok(_) => return Ok(()),
        Err(err) => err,
    };
    let retryable = classify_sdk(&err);
    let (kind, code, status, injected) = match &err {
        SdkError::ServiceError(service) => (
            "service",
            service.err().code().map(str::to_string),
            Some(service.raw().status().as_u16()),
            service.raw().headers().get("x-kappa-fault").map(str::to_string),
        ),
        SdkError::TimeoutError(_) => ("timeout", None, None, None),
        SdkError::DispatchFailure(_) => ("dispatch", None, None, None),
        SdkError::ResponseError(_) => ("response", None, None, None),
        SdkError::ConstructionFailure(_) => ("construction", None, None, None),
        _ => ("other", None, None, None),
    };
    Err(Failure {
        kind,
        code,
        status,
        injected,
        retryable,
        text: DisplayErrorContext(&err).to_string(),
    })
}

/// One real call to `service` with `aws` (the proxy's endpoint), on the resources made for it.
async fn call(service: &str, aws: &SdkConfig, r: &Resources) -> Result<(), Failure> {
    use aws_sdk_dynamodb::types::AttributeValue;
    match service {
        "dynamodb" => outcome(
            aws_sdk_dynamodb::Client::new(aws)
                .get_item()
                .table_name(&r.table)
                .key("pk", AttributeValue::S("p".into()))
                .key("sk", AttributeValue::S("s".into()))
                .send()
                .await,
        ),
        "streams" => outcome(
            aws_sdk_dynamodbstreams::Client::new(aws)
                .list_streams()
                .table_name(&r.table)
                .send()
                .await,
        ),
        "s3" => {
            let got = s3_client(aws)
                .get_object()
                .bucket(&r.bucket)
                .key("object")
                .send()
                .await;
            match got {
                Ok(o) => {
                    let body = o.body.collect().await.expect("the object's body").into_bytes();
                    assert_eq!(&body[..], b"hello", "GetObject through the proxy");
                    Ok(())
                }
                Err(e) => outcome::<(), _>(Err(e)),
            }
        }
        "sns" => outcome(
            aws_sdk_sns::Client::new(aws)
                .get_topic_attributes()
                .topic_arn(&r.topic_arn)
                .send()
                .await,
        ),
        "sqs" => outcome(
            aws_sdk_sqs::Client::new(aws)
                .get_queue_attributes()
                .queue_url(&r.queue_url)
                .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
                .send()
                .await,
        ),
        "lambda" => outcome(aws_sdk_lambda::Client::new(aws).list_functions().send().await),
        "iam" => outcome(
            aws_sdk_iam::Client::new(aws)
                .list_roles()
                .max_items(1)
                .send()
                .await,
        ),
        "apigateway" => outcome(aws_sdk_apigatewayv2::Client::new(aws).get_apis().send().await),
        other => panic!("no call for service {other}"),
    }
}

/// The proxy's SDK configuration with the SDK's own retries off.
async fn no_retries(proxy: &FaultProxy) -> SdkConfig {
    proxy
        .aws_config_through()
        .await
        .to_builder()
        .retry_config(RetryConfig::disabled())
        .build()
}

fn start_proxy() -> FaultProxy {
    FaultProxy::start(&common::stack_var("AWS_ENDPOINT_URL"))
}

/// Every throttling and 5xx shape of every service: the SDK parses the injected code, and the classifier
/// says retry. Shapes that are not classified retryable are all listed in one failure.
#[tokio::test]
async fn every_services_throttling_and_5xx_shapes_are_parsed_and_retryable() {
    let r = resources("shapes").await;
    let proxy = start_proxy();
    let aws = no_retries(&proxy).await;
    let shapes = proxy.shapes().await;

    let mut seen = Vec::new();
    let mut wrong = Vec::new();
    for service in SERVICES {
        for kind in ["throttle", "5xx"] {
            let list = shapes[*service][kind]
                .as_array()
                .unwrap_or_else(|| panic!("no {kind} shapes for {service}"));
            assert!(!list.is_empty(), "{service} {kind}");
            for shape in list {
                let code = shape["code"].as_str().unwrap();
                let status = shape["status"].as_u64().unwrap() as u16;
                proxy
                    .configure(serde_json::json!({
                        "rate": {*service: 1.0}, "kinds": [kind], "codes": [code]
                    }))
                    .await;
                let failure = call(service, &aws, &r)
                    .await
                    .expect_err(&format!("{service} {kind} {code}: the call went through"));
                let line = format!(
                    "{service} {kind} {code} {status}: SDK {} code {:?} status {:?} retryable {}",
                    failure.kind, failure.code, failure.status, failure.retryable
                );
                eprintln!("{line}");
                if failure.kind != "service"
                    || failure.code.as_deref() != Some(code)
                    || failure.status != Some(status)
                    || failure.injected.as_deref() != Some(&format!("{kind} {code}"))
                {
                    wrong.push(format!("{line}: not the injected shape: {}", failure.text));
                }
                if !failure.retryable {
                    wrong.push(format!("{line}: NOT classified retryable"));
                }
                seen.push((service.to_string(), kind, code.to_string()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "shapes the SDKs or the classifier got wrong:\n{}",
        wrong.join("\n")
    );

    // S3 answers a HEAD request's error without a body, as AWS does: the SDK has no code, only the
    // status, and the classifier retries by the status.
    proxy
        .configure(serde_json::json!({"rate": {"s3": 1.0}, "kinds": ["throttle"], "codes": []}))
        .await;
    let head = s3_client(&aws)
        .head_object()
        .bucket(&r.bucket)
        .key("object")
        .send()
        .await;
    let f = outcome(head).expect_err("HeadObject went through");
    assert!(
        f.kind == "service" && f.status == Some(503) && f.code.is_none(),
        "{f:?}"
    );
    assert!(f.retryable, "S3 HEAD 503 without a body: {f:?}");
    seen.push(("s3".to_string(), "throttle", "SlowDown".to_string()));

    // The proxy counted each one under its service, kind and code, and forwarded none of them.
    let counts = proxy.counts().await["counts"].clone();
    for service in SERVICES {
        let c = &counts[*service];
        let mine: Vec<_> = seen.iter().filter(|(s, _, _)| s == service).collect();
        assert_eq!(c["requests"], mine.len(), "{service}: {c}");
        assert_eq!(c["forwarded"], 0, "{service}: {c}");
        for kind in ["throttle", "5xx"] {
            let n = mine.iter().filter(|(_, k, _)| *k == kind).count();
            assert_eq!(c["faults"][kind], n, "{service} {kind}: {c}");
        }
    }
}

/// With no faults the same calls go through the proxy and answer as the emulator does; with half of
/// DynamoDB's requests failed (seeded), the failures the client saw are the ones the proxy counted, and
/// every one is retryable.
#[tokio::test]
async fn without_faults_every_call_goes_through_and_a_share_of_faults_is_counted() {
    let r = resources("through").await;
    let proxy = start_proxy();
    let aws = no_retries(&proxy).await;
    proxy.set(&[("*", 0.0)], &["throttle", "5xx"]).await;
    for service in SERVICES {
        if let Err(f) = call(service, &aws, &r).await {
            panic!("{service} through the proxy without faults: {f:?}");
        }
    }
    let counts = proxy.counts().await["counts"].clone();
    for service in SERVICES {
        assert_eq!(counts[*service]["forwarded"], 1, "{service}: {counts}");
    }

    proxy
        .configure(serde_json::json!({
            "rate": {"dynamodb": 0.5}, "kinds": ["throttle", "5xx"], "codes": [], "seed": 42, "resetCounts": true
        }))
        .await;
    let (mut failed, mut ok) = (0, 0);
    for _ in 0..40 {
        match call("dynamodb", &aws, &r).await {
            Ok(()) => ok += 1,
            Err(f) => {
                assert!(f.retryable && f.kind == "service", "{f:?}");
                failed += 1;
            }
        }
    }
    let c = proxy.counts().await["counts"]["dynamodb"].clone();
    assert_eq!(c["requests"], 40, "{c}");
    assert_eq!(c["forwarded"], ok, "{c}");
    let faults: u64 = c["faults"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(faults, failed, "{c}");
    assert!((8..=32).contains(&failed), "about half of 40 failed: {failed}");
}

/// A connection closed without an answer (TCP reset, before the request reached the emulator) is a
/// dispatch failure or a response error the classifier retries, for every service.
#[tokio::test]
async fn a_reset_connection_is_retryable_for_every_service() {
    let r = resources("reset").await;
    let proxy = start_proxy();
    let aws = no_retries(&proxy).await;
    proxy.set(&[("*", 1.0)], &["reset"]).await;
    for service in SERVICES {
        let f = call(service, &aws, &r)
            .await
            .expect_err(&format!("{service}: went through a reset"));
        eprintln!(
            "{service} reset: SDK {} retryable {}: {}",
            f.kind, f.retryable, f.text
        );
        assert!(matches!(f.kind, "dispatch" | "response"), "{service}: {f:?}");
        assert!(
            f.retryable,
            "{service}: a reset connection is not retryable: {f:?}"
        );
    }
    let counts = proxy.counts().await["counts"].clone();
    for service in SERVICES {
        assert_eq!(counts[*service]["faults"]["reset"], 1, "{service}: {counts}");
        assert_eq!(counts[*service]["forwarded"], 0, "{service}: {counts}");
    }
}

/// A request held without an answer: with an SDK operation timeout shorter than the hold, a timeout
/// error; with a longer one, the reset that ends the hold. Both retryable.
#[tokio::test]
async fn a_held_request_times_out_and_is_retryable() {
    let r = resources("timeout").await;
    let proxy = start_proxy();
    proxy
        .configure(serde_json::json!({"rate": {"*": 1.0}, "kinds": ["timeout"], "timeoutSeconds": 4}))
        .await;

    let short = no_retries(&proxy)
        .await
        .to_builder()
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(1))
                .build(),
        )
        .build();
    for service in SERVICES {
        let started = Instant::now();
        let f = call(service, &short, &r)
            .await
            .expect_err(&format!("{service}: answered while held"));
        let took = started.elapsed();
        eprintln!(
            "{service} timeout: SDK {} after {took:?} retryable {}",
            f.kind, f.retryable
        );
        assert_eq!(f.kind, "timeout", "{service}: {f:?}");
        assert!(
            took < Duration::from_secs(3),
            "{service}: the operation timeout took {took:?}"
        );
        assert!(f.retryable, "{service}: a timeout is not retryable: {f:?}");
    }

    // The hold ends with a reset before the SDK gives up.
    proxy.configure(serde_json::json!({"timeoutSeconds": 1})).await;
    let long = no_retries(&proxy)
        .await
        .to_builder()
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(20))
                .build(),
        )
        .build();
    let started = Instant::now();
    let f = call("dynamodb", &long, &r)
        .await
        .expect_err("dynamodb answered while held");
    assert!(
        matches!(f.kind, "dispatch" | "response") && started.elapsed() >= Duration::from_millis(900),
        "{f:?} after {:?}",
        started.elapsed()
    );
    assert!(f.retryable, "{f:?}");

    let counts = proxy.counts().await["counts"].clone();
    for service in SERVICES {
        assert!(
            counts[*service]["faults"]["timeout"].as_u64() >= Some(1),
            "{service}: {counts}"
        );
        assert_eq!(counts[*service]["forwarded"], 0, "{service}: {counts}");
    }
}
