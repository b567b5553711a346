//! Lambda functions and event source mappings: observe, compare with the plan, apply only what differs.
//!
//! Guarantees:
//! - An unchanged function or mapping costs only reads (`GetFunction`, `ListEventSourceMappings`): every
//!   "does it match" decision is a pure function below ([`code_differs`], [`configuration_differs`],
//!   [`mapping_differs`]), unit-tested field by field.
//! - One update at a time. Lambda rejects an update while the previous one is still being applied
//!   (`ResourceConflictException`), so a function that is `Pending` or whose last update is `InProgress`
//!   is left alone and reported [`Convergence::InProgress`]; otherwise the code is updated first and the
//!   configuration on a later reconcile. A mapping that is `Creating`/`Updating`/... is left alone too.
//! - Transient states are retryable errors: an update in progress, Lambda's 5xx (`ServiceException`), and
//!   a role IAM has not propagated yet ("cannot be assumed by Lambda", right after the role's creation).
//! - Ownership: functions carry the owner's tags; [`delete_function_if_owned`] never deletes a function
//!   without them. Mappings have no tags: [`delete_mappings`] deletes those of one function, which the
//!   caller owns.
//!
//! Caveats: a function's architecture can only change with its code, so an architecture change is a code
//! update. Code from S3 is compared by location (the `kappa.dev/code-source` tag): upload new code under a
//! new key. A mapping's starting position is set at creation and never compared.

mod zip;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aws_sdk_lambda::Client;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{
    Architecture as SdkArchitecture, DestinationConfig, Environment, EventSourceMappingConfiguration,
    EventSourcePosition, Filter, FilterCriteria, FunctionCode as SdkCode, FunctionCodeLocation,
    FunctionConfiguration, FunctionResponseType, LastUpdateStatus, OnFailure, PackageType, Runtime, State,
};
use aws_smithy_runtime_api::client::result::SdkError;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use zip::{bootstrap_zip, crc32};

use super::error::from_sdk;
use super::{AwsError, Convergence};
use crate::plan::function::{
    AsyncFailurePlan, CODE_SOURCE_TAG, FunctionCode, FunctionPlan, MappingPlan, StreamFailurePlan,
};
use crate::plan::names::Owner;

/// The SHA-256 of `bytes`, base64-encoded: what Lambda reports as `CodeSha256` for an uploaded zip.
pub fn zip_sha256_base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes))
}

/// Maps an SDK error, marking Lambda's transient conditions retryable (see the module docs).
fn lambda_err<E, R>(
    operation: &'static str,
    resource: &str,
) -> impl FnOnce(SdkError<E, R>) -> AwsError + use<E, R>
where
    E: aws_sdk_lambda::error::ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug + crate::aws::error::HttpStatus,
{
    let map = from_sdk(operation, resource);
    move |err| {
        let mut e = map(err);
        if is_transient(&e.code, &e.message) {
            e.retryable = true;
        }
        e
    }
}

/// Lambda's errors that clear by themselves. Besides 5xx and conflicts: a role IAM has not propagated
/// yet, either not assumable or not yet granting what Lambda checks when a destination is set (a mapping's
/// or an invoke configuration's on-failure queue: "The provided execution role does not have permissions
/// to call SendMessage on SQS", right after the statement was written).
fn is_transient(code: &str, message: &str) -> bool {
    matches!(
        code,
        "ServiceException"
            | "ResourceConflictException"
            | "ResourceNotReadyException"
            | "EC2ThrottledException"
    ) || (code == "InvalidParameterValueException"
        && (message.contains("cannot be assumed") || message.contains("permissions to call SendMessage")))
}

/// Whether `e` is Lambda refusing an on-failure destination the function's execution role may not send
/// to ("The provided execution role does not have permissions to call SendMessage on SQS"). For a role the
/// operator just wrote, that is IAM propagating (retryable); for a user's function (`functionArn`), only
/// the user can grant it.
pub fn is_destination_refused(e: &AwsError) -> bool {
    e.code == "InvalidParameterValueException" && e.message.contains("permissions to call SendMessage")
}

/// Whether the deployed code (or architecture) differs from the plan's.
pub fn code_differs(
    plan: &FunctionPlan,
    config: &FunctionConfiguration,
    code: Option<&FunctionCodeLocation>,
    tags: &BTreeMap<String, String>,
) -> bool {
    let architecture = config.architectures().first().map_or("x86_64", |a| a.as_str());
    if architecture != plan.architecture.as_str() {
        return true;
    }
    match &plan.code {
        FunctionCode::Zip { sha256_base64, .. } => config.code_sha256() != Some(sha256_base64.as_str()),
        FunctionCode::S3 { bucket, key } => {
            tags.get(CODE_SOURCE_TAG) != Some(&FunctionCode::s3_source_tag(bucket, key))
        }
        FunctionCode::Image { uri } => code.and_then(|c| c.image_uri()) != Some(uri.as_str()),
    }
}

/// Whether role, memory, timeout, environment, handler or runtime differ from the plan's (handler and
/// runtime only for zip packages: an image has neither).
pub fn configuration_differs(plan: &FunctionPlan, config: &FunctionConfiguration) -> bool {
    let empty = HashMap::new();
    let env = config.environment().and_then(|e| e.variables()).unwrap_or(&empty);
    let env_differs =
        env.len() != plan.environment.len() || plan.environment.iter().any(|(k, v)| env.get(k) != Some(v));
    let zip_differs = !matches!(plan.code, FunctionCode::Image { .. })
        && (config.handler() != Some(plan.handler.as_str())
            || config.runtime().map(|r| r.as_str()) != Some(plan.runtime.as_str()));
    config.role() != Some(plan.role_arn.as_str())
        || config.memory_size() != Some(plan.memory_mb)
        || config.timeout() != Some(plan.timeout_seconds)
        || env_differs
        || zip_differs
}

/// Whether Lambda is still applying a creation or an update (another update would be rejected).
pub fn is_busy(config: &FunctionConfiguration) -> bool {
    config.state() == Some(&State::Pending)
        || config.last_update_status() == Some(&LastUpdateStatus::InProgress)
}

fn environment(plan: &FunctionPlan) -> Environment {
    Environment::builder()
        .set_variables(Some(plan.environment.clone().into_iter().collect()))
        .build()
}

fn architecture(plan: &FunctionPlan) -> SdkArchitecture {
    SdkArchitecture::from(plan.architecture.as_str())
}

/// The function's tags as planned, plus the code-source tag of S3 code.
fn planned_tags(plan: &FunctionPlan) -> BTreeMap<String, String> {
    let mut tags = plan.tags.clone();
    if let FunctionCode::S3 { bucket, key } = &plan.code {
        tags.insert(
            CODE_SOURCE_TAG.to_string(),
            FunctionCode::s3_source_tag(bucket, key),
        );
    }
    tags
}

/// Creates the function or brings its code, configuration and tags in line with the plan; returns its
/// ARN. See the module docs for the order of updates. An existing function of another owner is refused
/// before anything changes.
pub async fn ensure_function(
    client: &Client,
    plan: &FunctionPlan,
) -> Result<(String, Convergence), AwsError> {
    let name = plan.name.as_str();
    let existing = match client
        .get_function()
        .function_name(name)
        .send()
        .await
        .map_err(lambda_err("GetFunction", name))
    {
        Ok(out) => out,
        Err(e) if e.is_not_found() => return create_function(client, plan).await,
        Err(e) => return Err(e),
    };
    let Some(config) = existing.configuration() else {
        return Err(AwsError::permanent(
            "GetFunction",
            name,
            "Lambda returned no configuration for the function",
        ));
    };
    let arn = config.function_arn().unwrap_or_default().to_string();
    let have: BTreeMap<String, String> = existing
        .tags()
        .map(|t| t.clone().into_iter().collect())
        .unwrap_or_default();
    super::check_planned_owner(
        "CheckOwner",
        &format!("Lambda function {name}"),
        &plan.tags,
        &have,
    )?;
    let mut convergence = Convergence::Converged;

    let busy = is_busy(config);
    if busy {
        convergence = Convergence::InProgress;
    } else if code_differs(plan, config, existing.code(), &have) {
        let mut req = client
            .update_function_code()
            .function_name(name)
            .architectures(architecture(plan));
        req = match &plan.code {
            FunctionCode::Zip { bytes, .. } => req.zip_file(Blob::new(bytes.as_ref().clone())),
            FunctionCode::S3 { bucket, key } => req.s3_bucket(bucket).s3_key(key),
            FunctionCode::Image { uri } => req.image_uri(uri),
        };
        req.send().await.map_err(lambda_err("UpdateFunctionCode", name))?;
        convergence = Convergence::InProgress;
    } else if configuration_differs(plan, config) {
        let mut req = client
            .update_function_configuration()
            .function_name(name)
            .role(&plan.role_arn)
            .memory_size(plan.memory_mb)
            .timeout(plan.timeout_seconds)
            .environment(environment(plan));
        if !matches!(plan.code, FunctionCode::Image { .. }) {
            req = req
                .handler(&plan.handler)
                .runtime(Runtime::from(plan.runtime.as_str()));
        }
        req.send()
            .await
            .map_err(lambda_err("UpdateFunctionConfiguration", name))?;
        convergence = Convergence::InProgress;
    }

    // The code-source tag follows the code: not written while a busy function kept its old code.
    let planned = planned_tags(plan);
    let missing: HashMap<String, String> = super::missing_tags(&planned, &have)
        .filter(|(k, _)| !(busy && k.as_str() == CODE_SOURCE_TAG))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !missing.is_empty() {
        client
            .tag_resource()
            .resource(&arn)
            .set_tags(Some(missing))
            .send()
            .await
            .map_err(lambda_err("TagResource", name))?;
        convergence = Convergence::InProgress;
    }
    Ok((arn, convergence))
}

async fn create_function(client: &Client, plan: &FunctionPlan) -> Result<(String, Convergence), AwsError> {
    let code = match &plan.code {
        FunctionCode::Zip { bytes, .. } => SdkCode::builder().zip_file(Blob::new(bytes.as_ref().clone())),
        FunctionCode::S3 { bucket, key } => SdkCode::builder().s3_bucket(bucket).s3_key(key),
        FunctionCode::Image { uri } => SdkCode::builder().image_uri(uri),
    }
    .build();
    let mut req = client
        .create_function()
        .function_name(&plan.name)
        .role(&plan.role_arn)
        .architectures(architecture(plan))
        .memory_size(plan.memory_mb)
        .timeout(plan.timeout_seconds)
        .environment(environment(plan))
        .description("kappa-operator")
        .code(code)
        .set_tags(Some(planned_tags(plan).into_iter().collect()));
    req = match plan.code {
        FunctionCode::Image { .. } => req.package_type(PackageType::Image),
        _ => req
            .package_type(PackageType::Zip)
            .handler(&plan.handler)
            .runtime(Runtime::from(plan.runtime.as_str())),
    };
    let out = req
        .send()
        .await
        .map_err(lambda_err("CreateFunction", &plan.name))?;
    Ok((
        out.function_arn().unwrap_or_default().to_string(),
        Convergence::InProgress,
    ))
}

/// The function's tags; `None` when there is no such function. Errors: GetFunction's, classified.
pub async fn function_tags(
    client: &Client,
    name: &str,
) -> Result<Option<BTreeMap<String, String>>, AwsError> {
    match client
        .get_function()
        .function_name(name)
        .send()
        .await
        .map_err(lambda_err("GetFunction", name))
    {
        Ok(out) => Ok(Some(
            out.tags()
                .map(|t| t.clone().into_iter().collect())
                .unwrap_or_default(),
        )),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Deletes the function if `owner` created it (all of its tags are on it); `Ok(false)` when it is absent
/// or not ours. Its event source mappings are not deleted with it: call [`delete_mappings`] first.
pub async fn delete_function_if_owned(client: &Client, name: &str, owner: &Owner) -> Result<bool, AwsError> {
    let Some(tags) = function_tags(client, name).await? else {
        return Ok(false);
    };
    if !owner.owns(&tags) {
        return Ok(false);
    }
    match client
        .delete_function()
        .function_name(name)
        .send()
        .await
        .map_err(lambda_err("DeleteFunction", name))
    {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Checks a function a user brings (`spec.projector.code.functionArn`) before the operator subscribes it
/// or adds an invoke permission to it: a function carrying kappa ownership tags of another owner (another
/// namespace's projector, say) is refused with [`super::error::OWNED_BY_ANOTHER`]; the user's own function
/// (no kappa tags) or one of `owner`'s is fine. A function the operator cannot read is left to the calls
/// that follow, which fail with AWS's own error.
pub async fn check_custom_function(client: &Client, function: &str, owner: &Owner) -> Result<(), AwsError> {
    let out = match client
        .get_function()
        .function_name(function)
        .send()
        .await
        .map_err(lambda_err("GetFunction", function))
    {
        Ok(out) => out,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e),
    };
    let tags: BTreeMap<String, String> = out
        .tags()
        .map(|t| t.clone().into_iter().collect())
        .unwrap_or_default();
    match owner.ownership(&tags) {
        crate::plan::names::Ownership::Unclaimed => Ok(()),
        _ => super::check_owned("CheckOwner", &format!("Lambda function {function}"), owner, &tags),
    }
}

/// Whether the mapping's batch size, batching window, filter patterns, response types or (for a stream)
/// bisect-on-error setting and failure handling (retries, record age, on-failure destination; only
/// when the plan has them) differ from the plan's, or it is disabled.
pub fn mapping_differs(plan: &MappingPlan, have: &EventSourceMappingConfiguration) -> bool {
    let want_patterns = normalized_patterns(plan.filter_patterns.iter().map(String::as_str));
    let have_patterns = normalized_patterns(
        have.filter_criteria()
            .map(|c| c.filters())
            .unwrap_or_default()
            .iter()
            .filter_map(|f| f.pattern()),
    );
    let reports = have
        .function_response_types()
        .contains(&FunctionResponseType::ReportBatchItemFailures);
    have.batch_size() != Some(plan.batch_size)
        || have.maximum_batching_window_in_seconds().unwrap_or(0) != plan.maximum_batching_window_seconds
        || !same_patterns(&want_patterns, &have_patterns)
        || reports != plan.report_batch_item_failures
        || bisect(plan).is_some_and(|want| have.bisect_batch_on_function_error().unwrap_or(false) != want)
        || stream_failure(plan).is_some_and(|want| stream_failure_differs(want, have))
        || have.state() == Some("Disabled")
}

/// Whether a stream mapping's retries, record age or on-failure destination differ from `want`.
fn stream_failure_differs(want: &StreamFailurePlan, have: &EventSourceMappingConfiguration) -> bool {
    have.maximum_retry_attempts() != Some(want.maximum_retry_attempts)
        || have.maximum_record_age_in_seconds() != Some(want.maximum_record_age_seconds)
        || have
            .destination_config()
            .and_then(|d| d.on_failure())
            .and_then(|o| o.destination())
            != Some(want.destination_arn.as_str())
}

/// The failure handling to send: streams only (a queue's failures follow its redrive policy).
/// The settings `CreateEventSourceMapping` and `UpdateEventSourceMapping` share, applied to either request
/// builder (the SDK's two builders have no trait in common): batching, filter criteria, partial batch
/// responses, bisection, failure handling, enabled.
macro_rules! with_mapping_settings {
    ($builder:expr, $plan:expr) => {{
        let plan: &MappingPlan = $plan;
        let failure = stream_failure(plan);
        $builder
            .batch_size(plan.batch_size)
            .maximum_batching_window_in_seconds(plan.maximum_batching_window_seconds)
            .filter_criteria(filter_criteria(plan))
            .set_function_response_types(Some(response_types(plan)))
            .set_bisect_batch_on_function_error(bisect(plan))
            .set_maximum_retry_attempts(failure.map(|f| f.maximum_retry_attempts))
            .set_maximum_record_age_in_seconds(failure.map(|f| f.maximum_record_age_seconds))
            .set_destination_config(failure.map(|f| on_failure_destination(&f.destination_arn)))
            .enabled(true)
    }};
}

fn stream_failure(plan: &MappingPlan) -> Option<&StreamFailurePlan> {
    plan.starting_position.and(plan.on_failure.as_ref())
}

/// `DestinationConfig` with `OnFailure` sending to `arn`.
fn on_failure_destination(arn: &str) -> DestinationConfig {
    DestinationConfig::builder()
        .on_failure(OnFailure::builder().destination(arn).build())
        .build()
}

/// Filter patterns as parsed JSON (a pattern that is not JSON is kept as text).
fn normalized_patterns<'a>(texts: impl Iterator<Item = &'a str>) -> Vec<Value> {
    texts
        .map(|t| serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.to_string())))
        .collect()
}

/// Whether `a` and `b` hold the same values, in any order.
fn same_patterns(a: &[Value], b: &[Value]) -> bool {
    let mut unused: Vec<&Value> = b.iter().collect();
    a.len() == b.len()
        && a.iter().all(|v| match unused.iter().position(|u| *u == v) {
            Some(i) => {
                unused.swap_remove(i);
                true
            }
            None => false,
        })
}

/// Whether a mapping is between states (an update would be rejected).
fn mapping_busy(have: &EventSourceMappingConfiguration) -> bool {
    matches!(
        have.state(),
        Some("Creating" | "Enabling" | "Disabling" | "Updating" | "Deleting")
    )
}

fn filter_criteria(plan: &MappingPlan) -> FilterCriteria {
    FilterCriteria::builder()
        .set_filters(Some(
            plan.filter_patterns
                .iter()
                .map(|p| Filter::builder().pattern(p).build())
                .collect(),
        ))
        .build()
}

/// The bisect-on-error setting to send: streams only (a queue mapping takes none).
fn bisect(plan: &MappingPlan) -> Option<bool> {
    plan.starting_position
        .map(|_| plan.bisect_batch_on_function_error)
}

fn response_types(plan: &MappingPlan) -> Vec<FunctionResponseType> {
    if plan.report_batch_item_failures {
        vec![FunctionResponseType::ReportBatchItemFailures]
    } else {
        Vec::new()
    }
}

/// Whether a listed mapping belongs to `function` (a name or an ARN; listed mappings name the ARN).
fn is_of_function(mapping: &EventSourceMappingConfiguration, function: &str) -> bool {
    mapping
        .function_arn()
        .is_some_and(|arn| arn == function || arn.ends_with(&format!(":function:{function}")))
}

async fn list_mappings(
    client: &Client,
    function: &str,
    source: Option<&str>,
) -> Result<Vec<EventSourceMappingConfiguration>, AwsError> {
    let mut found = Vec::new();
    let mut pages = client
        .list_event_source_mappings()
        .function_name(function)
        .set_event_source_arn(source.map(str::to_string))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(lambda_err("ListEventSourceMappings", function))?;
        found.extend(
            page.event_source_mappings()
                .iter()
                .filter(|m| is_of_function(m, function))
                .filter(|m| source.is_none_or(|s| m.event_source_arn() == Some(s)))
                .cloned(),
        );
    }
    found.sort_by(|a, b| a.uuid().cmp(&b.uuid()));
    Ok(found)
}

/// Creates the mapping from the plan's source to its function, or brings its batching, filters, response
/// types, failure handling and state in line; returns its UUID. With several mappings for the pair (made by hand), the
/// first by UUID is the one kept in line.
pub async fn ensure_mapping(client: &Client, plan: &MappingPlan) -> Result<(String, Convergence), AwsError> {
    let resource = format!("{} -> {}", plan.event_source_arn, plan.function_name);
    let found = list_mappings(client, &plan.function_name, Some(&plan.event_source_arn)).await?;
    let Some(have) = found.first() else {
        let create = client
            .create_event_source_mapping()
            .function_name(&plan.function_name)
            .event_source_arn(&plan.event_source_arn)
            .set_starting_position(
                plan.starting_position
                    .map(|p| EventSourcePosition::from(p.as_str())),
            );
        let out = with_mapping_settings!(create, plan)
            .send()
            .await
            .map_err(lambda_err("CreateEventSourceMapping", &resource))?;
        return Ok((
            out.uuid().unwrap_or_default().to_string(),
            Convergence::InProgress,
        ));
    };
    let uuid = have.uuid().unwrap_or_default().to_string();
    if mapping_busy(have) {
        return Ok((uuid, Convergence::InProgress));
    }
    if !mapping_differs(plan, have) {
        return Ok((uuid, Convergence::Converged));
    }
    let update = client.update_event_source_mapping().uuid(&uuid);
    with_mapping_settings!(update, plan)
        .send()
        .await
        .map_err(lambda_err("UpdateEventSourceMapping", &resource))?;
    Ok((uuid, Convergence::InProgress))
}

/// Whether a function's asynchronous-invocation configuration (`GetFunctionEventInvokeConfig`'s retries,
/// event age and on-failure destination; `None` where unset) differs from `want`.
pub fn async_failures_differ(
    want: &AsyncFailurePlan,
    retries: Option<i32>,
    event_age_seconds: Option<i32>,
    destination: Option<&str>,
) -> bool {
    retries != Some(want.maximum_retry_attempts)
        || event_age_seconds != Some(want.maximum_event_age_seconds)
        || destination != Some(want.destination_arn.as_str())
}

/// Sets the function's asynchronous-invocation failure handling (`PutFunctionEventInvokeConfig`, which
/// replaces the whole configuration) when it differs from the plan; an equal one costs one read.
/// <https://docs.aws.amazon.com/lambda/latest/api/API_PutFunctionEventInvokeConfig.html>
pub async fn ensure_async_failures(
    client: &Client,
    plan: &AsyncFailurePlan,
) -> Result<Convergence, AwsError> {
    let name = plan.function_name.as_str();
    let have = match client
        .get_function_event_invoke_config()
        .function_name(name)
        .send()
        .await
        .map_err(lambda_err("GetFunctionEventInvokeConfig", name))
    {
        Ok(out) => Some(out),
        // No configuration yet: Lambda's defaults, no destination.
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e),
    };
    let differs = match &have {
        Some(h) => async_failures_differ(
            plan,
            h.maximum_retry_attempts(),
            h.maximum_event_age_in_seconds(),
            h.destination_config()
                .and_then(|d| d.on_failure())
                .and_then(|o| o.destination()),
        ),
        None => true,
    };
    if !differs {
        return Ok(Convergence::Converged);
    }
    client
        .put_function_event_invoke_config()
        .function_name(name)
        .maximum_retry_attempts(plan.maximum_retry_attempts)
        .maximum_event_age_in_seconds(plan.maximum_event_age_seconds)
        .destination_config(on_failure_destination(&plan.destination_arn))
        .send()
        .await
        .map_err(lambda_err("PutFunctionEventInvokeConfig", name))?;
    Ok(Convergence::InProgress)
}

/// Deletes every event source mapping of the function; returns how many it deleted (one already gone
/// counts as deleted by someone else, not here). Deletion is asynchronous on Lambda's side.
pub async fn delete_mappings(client: &Client, function_name: &str) -> Result<usize, AwsError> {
    let mut deleted = 0;
    let mut seen = BTreeSet::new();
    for mapping in list_mappings(client, function_name, None).await? {
        let Some(uuid) = mapping.uuid() else { continue };
        if !seen.insert(uuid.to_string()) || mapping.state() == Some("Deleting") {
            continue;
        }
        match client
            .delete_event_source_mapping()
            .uuid(uuid)
            .send()
            .await
            .map_err(lambda_err("DeleteEventSourceMapping", uuid))
        {
            Ok(_) => deleted += 1,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests;
