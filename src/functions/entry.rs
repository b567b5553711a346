//! The operator's binary as a Lambda function (`provided.al2023`, file `bootstrap`): when Lambda starts it
//! (`AWS_LAMBDA_RUNTIME_API` is set), `main` hands over to [`run`], which reads the function's handler
//! (`_HANDLER`: `writer`, `router`, `projector`, or the push functions `connections` and `notifier`),
//! loads its configuration from the environment once, builds the SDK clients once, and serves invocations
//! with the `lambda_runtime` crate.
//!
//! A configuration error stops the function at cold start with the variable and the fix in the message
//! (it shows in the function's logs and as an `Runtime.ExitError`), rather than failing every invocation.

use std::sync::Arc;

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

use super::connections::{self, ConnectionsConfig, WebSocketEvent};
use super::event::{ProjectorEvent, SqsEvent, StreamEvent};
use super::notifier::{self, NotifierConfig};
use super::progress::{self, ProgressReporter};
use super::projector::{self, ProjectorConfig};
use super::router::{self, RouterConfig};
use super::writer::{self, WriterConfig};
use super::{ConfigError, RetryPolicy};
use crate::aws::connections::{ApiGatewayPoster, DynamoConnections};
use crate::aws::functions::{DynamoLogStore, DynamoLogWriter, DynamoViewStore, SnsPublisher};

/// Whether this process was started by Lambda.
pub fn started_by_lambda() -> bool {
    std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some()
}

fn config_error(e: ConfigError) -> Error {
    Box::new(e)
}

/// Serves the function named by `_HANDLER` until Lambda stops the process.
pub async fn run() -> Result<(), Error> {
    let handler = std::env::var("_HANDLER").unwrap_or_default();
    let shared = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    match handler.as_str() {
        "writer" => {
            let config = Arc::new(WriterConfig::from_env().map_err(config_error)?);
            let writer = Arc::new(DynamoLogWriter::new(
                aws_sdk_dynamodb::Client::new(&shared),
                config.log_table.clone(),
            ));
            lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
                let (config, writer) = (config.clone(), writer.clone());
                async move {
                    let report =
                        writer::handle(&config, &*writer, &RetryPolicy::default(), &event.payload).await;
                    tracing::info!(
                        written = report.written,
                        invalid = report.invalid,
                        failed = report.failed,
                        "writer"
                    );
                    Ok::<Value, Error>(serde_json::to_value(report.response)?)
                }
            }))
            .await
        }
        "router" => {
            let config = Arc::new(RouterConfig::from_env().map_err(config_error)?);
            let publisher = Arc::new(SnsPublisher::new(aws_sdk_sns::Client::new(&shared)));
            lambda_runtime::run(service_fn(move |event: LambdaEvent<StreamEvent>| {
                let (config, publisher) = (config.clone(), publisher.clone());
                async move {
                    let report =
                        router::handle(&config, &*publisher, &RetryPolicy::default(), &event.payload).await;
                    tracing::info!(
                        published = report.published,
                        by_reference = report.by_reference,
                        failed = report.failed,
                        "router"
                    );
                    Ok::<Value, Error>(serde_json::to_value(report.response)?)
                }
            }))
            .await
        }
        "projector" => {
            let settings = ProjectorConfig::from_env().map_err(config_error)?;
            let compiled = Arc::new(settings.compile().map_err(|e| -> Error { Box::new(e) })?);
            let dynamodb = aws_sdk_dynamodb::Client::new(&shared);
            let store = Arc::new(DynamoViewStore::new(
                dynamodb.clone(),
                settings.table.clone(),
                &compiled,
                settings.fingerprint(),
            ));
            let log = Arc::new(DynamoLogStore::new(dynamodb, settings.log.table.clone()));
            let reporter = Arc::new(std::sync::Mutex::new(ProgressReporter::new(
                projector::max_lag_from_lookup(super::process_env),
            )));
            lambda_runtime::run(service_fn(move |event: LambdaEvent<ProjectorEvent>| {
                let (compiled, store, log, reporter) =
                    (compiled.clone(), store.clone(), log.clone(), reporter.clone());
                async move {
                    let outcome = projector::handle_with_log(&compiled, &*store, &*log, &event.payload).await;
                    projector::report_progress(&*store, &reporter, &outcome, progress::now_ms()).await;
                    let report = outcome?;
                    if report.stats.by_reference > 0 {
                        tracing::info!(
                            by_reference = report.stats.by_reference,
                            newer_in_log = report.stats.newer_in_log,
                            "projector read records sent by reference from the log"
                        );
                    }
                    Ok::<Value, Error>(serde_json::to_value(report.response)?)
                }
            }))
            .await
        }
        "connections" => {
            let config = Arc::new(ConnectionsConfig::from_env().map_err(config_error)?);
            let store = Arc::new(DynamoConnections::new(
                aws_sdk_dynamodb::Client::new(&shared),
                config.table.clone(),
            ));
            lambda_runtime::run(service_fn(move |event: LambdaEvent<WebSocketEvent>| {
                let (config, store) = (config.clone(), store.clone());
                async move {
                    let now = connections::epoch_seconds(std::time::SystemTime::now());
                    let response = connections::handle(&config.routes, &*store, &event.payload, now).await;
                    Ok::<Value, Error>(serde_json::to_value(response)?)
                }
            }))
            .await
        }
        "notifier" => {
            let config = Arc::new(NotifierConfig::from_env().map_err(config_error)?);
            let store = Arc::new(DynamoConnections::new(
                aws_sdk_dynamodb::Client::new(&shared),
                config.table.clone(),
            ));
            let poster = Arc::new(ApiGatewayPoster::new(&shared, &config.management_endpoint));
            lambda_runtime::run(service_fn(move |event: LambdaEvent<StreamEvent>| {
                let (config, store, poster) = (config.clone(), store.clone(), poster.clone());
                async move {
                    let report = notifier::handle(
                        &config.routes,
                        &*store,
                        &*poster,
                        &RetryPolicy::default(),
                        &event.payload,
                    )
                    .await;
                    tracing::info!(
                        records = report.records,
                        changes = report.changes,
                        posts = report.posts,
                        gone = report.gone,
                        failed = report.failed,
                        "notifier"
                    );
                    Ok::<Value, Error>(serde_json::to_value(report.response)?)
                }
            }))
            .await
        }
        other => Err(format!(
            "this kappa-operator function has handler {other:?}: the built-in functions are `writer`, \
             `router`, `projector`, `connections` and `notifier` (the operator sets the handler when it \
             creates the function)"
        )
        .into()),
    }
}
