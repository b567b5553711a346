//! Thin adapters, one per AWS service: observe the actual resource, compare it with the plan, apply only
//! what differs. Every client comes from one shared SDK configuration (the standard `AWS_*` variables,
//! `AWS_ENDPOINT_URL` included) with few retries, since the controller requeues anyway; every call is
//! counted by service and operation on `/metrics`.

/// `fn tag(key, value) -> Result<$tag, AwsError>` and `fn tag_map(&[$tag]) -> BTreeMap<String, String>` for
/// an SDK's key/value `Tag` type (IAM's, SNS's and DynamoDB's share the shape, not a trait).
macro_rules! key_value_tags {
    ($tag:ty, $list:ident($by:ident) = $operation:literal) => {
        /// The tags on the resource `id`, key to value.
        async fn tags_of(client: &Client, id: &str) -> Result<BTreeMap<String, String>, AwsError> {
            let out = client
                .$list()
                .$by(id)
                .send()
                .await
                .map_err(from_sdk($operation, id))?;
            Ok(tag_map(out.tags()))
        }

        /// The SDK's tags for `pairs` (key, value). Errors: the builder's, as a permanent `BuildRequest`
        /// error.
        fn tags<'a>(pairs: impl Iterator<Item = (&'a String, &'a String)>) -> Result<Vec<$tag>, AwsError> {
            pairs
                .map(|(k, v)| {
                    <$tag>::builder()
                        .key(k)
                        .value(v)
                        .build()
                        .map_err(|e| AwsError::permanent("BuildRequest", k, e.to_string()))
                })
                .collect()
        }

        /// The tags as a map, key to value.
        fn tag_map(tags: &[$tag]) -> BTreeMap<String, String> {
            tags.iter()
                .map(|t| (t.key().to_string(), t.value().to_string()))
                .collect()
        }
    };
}
pub(crate) use key_value_tags;

/// Sends `TagResource` of `missing` (the SDK's tag collection) to `arn` with `client` (DynamoDB's and API
/// Gateway's clients take the same request shape) unless `missing` is empty. Evaluates to
/// `Result<bool, AwsError>`: `true` when it tagged.
macro_rules! tag_resource_with {
    ($client:expr, $arn:expr, $missing:expr) => {{
        let missing = $missing;
        if missing.is_empty() {
            Ok(false)
        } else {
            let request = $client.tag_resource().resource_arn($arn).set_tags(Some(missing));
            request
                .send()
                .await
                .map(|_| true)
                .map_err(from_sdk("TagResource", $arn))
        }
    }};
}
pub(crate) use tag_resource_with;

mod calls;
pub mod connections;
pub mod dynamodb;
pub mod error;
pub mod export;
pub mod functions;
pub mod iam;
pub mod lambda;
pub mod retry;
pub mod scan;
pub mod sns;
pub mod sqs;
pub mod subscriptions;
pub mod view_storage;
pub mod views;
pub mod websocket;

use std::sync::Arc;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;

pub use calls::CallCounter;
pub use error::{AwsError, from_sdk};

use crate::metrics::Metrics;

/// The AWS clients the controllers use.
#[derive(Clone, Debug)]
pub struct Aws {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub sns: aws_sdk_sns::Client,
    pub iam: aws_sdk_iam::Client,
    pub lambda: aws_sdk_lambda::Client,
    pub s3: aws_sdk_s3::Client,
    pub streams: aws_sdk_dynamodbstreams::Client,
    pub apigatewayv2: aws_sdk_apigatewayv2::Client,
    pub region: String,
}

/// The SDK configuration cannot make clients: the operator's installer fixes it (category
/// `configuration`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No region from the environment, profile or instance metadata (the SDK's region provider chain).
    #[error("no AWS region configured: set AWS_REGION (the chart's aws.region value)")]
    NoRegion,
}

impl ConfigError {
    /// A short, bounded label (metrics, logs).
    pub fn category(&self) -> &'static str {
        "configuration"
    }
}

impl Aws {
    /// Loads the SDK configuration once; fails with the fix when no region is configured.
    pub async fn from_env(metrics: Arc<Metrics>) -> Result<Aws, ConfigError> {
        let shared = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::adaptive().with_max_attempts(3))
            .load()
            .await;
        Aws::from_sdk_config(&shared, metrics)
    }

    /// Every service's client from one SDK configuration, each counting its calls in `metrics`
    /// (`kappa_aws_calls_total`); fails with the fix when the configuration has no region.
    pub fn from_sdk_config(
        shared: &aws_config::SdkConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Aws, ConfigError> {
        let region = shared
            .region()
            .map(|r| r.to_string())
            .ok_or(ConfigError::NoRegion)?;
        let counter = CallCounter::new(metrics);
        let dynamodb = aws_sdk_dynamodb::config::Builder::from(shared)
            .interceptor(counter.clone())
            .build();
        let sqs = aws_sdk_sqs::config::Builder::from(shared)
            .interceptor(counter.clone())
            .build();
        let sns = aws_sdk_sns::config::Builder::from(shared)
            .interceptor(counter.clone())
            .build();
        let iam = aws_sdk_iam::config::Builder::from(shared)
            .interceptor(counter.clone())
            .build();
        let lambda = aws_sdk_lambda::config::Builder::from(shared)
            .interceptor(counter.clone())
            .build();
        let s3 = aws_sdk_s3::config::Builder::from(shared)
            .interceptor(counter.clone())
            // `KAPPA_S3_PATH_STYLE=true`: bucket names in the path rather than the host name, for S3
            // endpoints without per-bucket DNS names (the chart's aws.s3PathStyle).
            .force_path_style(std::env::var("KAPPA_S3_PATH_STYLE").is_ok_and(|v| v == "true"))
            .build();
        let streams = aws_sdk_dynamodbstreams::config::Builder::from(shared)
            .interceptor(counter.clone())
            .build();
        let apigatewayv2 = aws_sdk_apigatewayv2::config::Builder::from(shared)
            .interceptor(counter)
            .build();
        Ok(Aws {
            dynamodb: aws_sdk_dynamodb::Client::from_conf(dynamodb),
            sqs: aws_sdk_sqs::Client::from_conf(sqs),
            sns: aws_sdk_sns::Client::from_conf(sns),
            iam: aws_sdk_iam::Client::from_conf(iam),
            lambda: aws_sdk_lambda::Client::from_conf(lambda),
            s3: aws_sdk_s3::Client::from_conf(s3),
            streams: aws_sdk_dynamodbstreams::Client::from_conf(streams),
            apigatewayv2: aws_sdk_apigatewayv2::Client::from_conf(apigatewayv2),
            region,
        })
    }
}

/// The planned tags a resource lacks, or carries with another value: what a `Tag*` call must write.
/// Extra tags someone else put on the resource are left alone.
pub(crate) fn missing_tags<'a>(
    want: &'a std::collections::BTreeMap<String, String>,
    have: &std::collections::BTreeMap<String, String>,
) -> impl Iterator<Item = (&'a String, &'a String)> {
    want.iter().filter(move |(k, v)| have.get(*k) != Some(*v))
}

/// Checks, before any change to an existing resource, that `tags` (read from it) say `owner` created it.
/// `what` names the resource for people ("DynamoDB table kappa-..."). Anything else is refused with
/// [`error::OWNED_BY_ANOTHER`], naming the owner found and what to do; the resource is left untouched.
pub(crate) fn check_owned(
    operation: &'static str,
    what: &str,
    owner: &crate::plan::names::Owner,
    tags: &std::collections::BTreeMap<String, String>,
) -> Result<(), AwsError> {
    use crate::plan::names::Ownership;
    let found = match owner.ownership(tags) {
        Ownership::Ours => return Ok(()),
        Ownership::Other(who) => format!("belongs to {who}"),
        Ownership::AdoptedByUs => "was adopted, not created, by this object".to_string(),
        Ownership::Unclaimed => {
            "exists but was not created by kappa-operator (it has no kappa.dev tags)".into()
        }
    };
    Err(refusal(operation, what, owner, &found))
}

/// [`check_owned`] for a resource planned with `planned` tags (the owner's [`Owner::tags`] and maybe more).
///
/// [`Owner::tags`]: crate::plan::names::Owner::tags
pub(crate) fn check_planned_owner(
    operation: &'static str,
    what: &str,
    planned: &std::collections::BTreeMap<String, String>,
    have: &std::collections::BTreeMap<String, String>,
) -> Result<(), AwsError> {
    match crate::plan::names::Owner::from_tags(planned) {
        Some(owner) => check_owned(operation, what, &owner, have),
        None => Err(AwsError::permanent(
            operation,
            what,
            "the plan carries no ownership tags (a bug: every planned resource names its owner)",
        )),
    }
}

/// The refusal of [`check_owned`]: what was found, who asked, and what to do.
pub(crate) fn refusal(
    operation: &'static str,
    what: &str,
    owner: &crate::plan::names::Owner,
    found: &str,
) -> AwsError {
    AwsError::refused(
        operation,
        what,
        error::OWNED_BY_ANOTHER,
        format!(
            "{what} {found}, not to {} {}/{}: the operator never tags, changes, adopts or deletes another \
             owner's resource. Use another name (for a log table, another spec.table.name, or none for a \
             generated one), or ask the cluster administrator to remove the conflicting resource",
            owner.kind, owner.namespace, owner.name
        ),
    )
}

/// Whether the current state already matches the plan, or a later reconcile must continue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Convergence {
    Converged,
    /// A change was made or is under way (a table still creating, one update at a time).
    InProgress,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    #[test]
    fn missing_tags_are_the_absent_and_the_changed_ones() {
        let want: BTreeMap<String, String> = [("a", "1"), ("b", "2"), ("c", "3")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        let have: BTreeMap<String, String> = [("a", "1"), ("b", "x"), ("z", "9")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        let missing: Vec<_> = super::missing_tags(&want, &have)
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(missing, [("b", "2"), ("c", "3")]);
    }
}
