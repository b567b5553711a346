//! API Gateway WebSocket APIs (push to WebSocket clients): the API, its Lambda proxy integration, its
//! routes and route responses, its stage, and the permission letting the API invoke its function.
//!
//! Guarantees:
//! - An API is found by name (`GetApis`: AWS chooses API ids), preferring one that carries the planned
//!   tags when hand-made duplicates share the name. An unchanged API, integration, route set and stage
//!   cost only reads; each "does it match" decision is a pure function below, unit-tested.
//! - Drift is repaired: a changed route selection expression, integration URI/type/method, route target
//!   or route response selection expression is updated; a missing route, `$default` route response or
//!   stage is created; auto-deploy is turned back on; missing tags are written (extra tags are left).
//! - Ownership: the API and its stage carry the owner's tags; [`delete_api_if_owned`] deletes only APIs
//!   of that name carrying them (routes, integrations and stages go with the API). The invoke permission
//!   goes with the function.
//!
//! Caveats: routes not in the plan (added by hand) are left alone. The API's protocol cannot change:
//! an HTTP API under the planned name is an error naming the fix.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_apigatewayv2::Client;
use aws_sdk_apigatewayv2::types::{Api, Integration, IntegrationType, ProtocolType, Route};
use serde_json::Value;

use super::error::from_sdk;
use super::{AwsError, Convergence, missing_tags};
use crate::plan::names::{Owner, short_hash};
use crate::plan::push::{
    ApiPlan, DEFAULT_RESPONSE, INTEGRATION_METHOD, INTEGRATION_TYPE, IntegrationPlan, RoutePlan, StagePlan,
};

/// What an API is after [`ensure_api`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiState {
    pub api_id: String,
    /// AWS's `ApiEndpoint` (`wss://{id}.execute-api.{region}.amazonaws.com`), when reported.
    pub api_endpoint: Option<String>,
    pub convergence: Convergence,
}

fn tags_of(api: &Api) -> Option<BTreeMap<String, String>> {
    api.tags()
        .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// The API of that name to keep in line: the first (by id) carrying every `tags`, or else the first its
/// owner owns by [`Owner::ownership`] but lacking some planned tag (one created before uid tags). An API
/// of another owner, or without kappa tags, is never picked (nor tagged): API names are not unique, so
/// ours is created beside it.
///
/// [`Owner::ownership`]: crate::plan::names::Owner::ownership
pub fn pick_api<'a>(apis: &'a [Api], name: &str, tags: &BTreeMap<String, String>) -> Option<&'a Api> {
    let owner = crate::plan::names::Owner::from_tags(tags)?;
    let mut candidates: Vec<(&Api, bool)> = apis
        .iter()
        .filter(|a| a.name() == Some(name))
        .filter_map(|a| {
            let have = tags_of(a).unwrap_or_default();
            let owned = missing_tags(tags, &have).next().is_none();
            owner.owns(&have).then_some((a, owned))
        })
        .collect();
    candidates.sort_by_key(|(a, owned)| (!owned, a.api_id().unwrap_or_default().to_string()));
    candidates.first().map(|(a, _)| *a)
}

/// Whether an existing API's route selection expression must be updated; an error when it is not a
/// WebSocket API (a protocol cannot change).
pub fn api_needs_update(plan: &ApiPlan, api: &Api) -> Result<bool, AwsError> {
    if api.protocol_type() != Some(&ProtocolType::Websocket) {
        return Err(AwsError::permanent(
            "CheckApi",
            &plan.name,
            format!(
                "an API of this name exists with protocol {:?}, not WEBSOCKET: delete it (aws apigatewayv2 \
                 delete-api --api-id {}) so the operator can create the WebSocket API",
                api.protocol_type().map(|p| p.as_str()),
                api.api_id().unwrap_or_default()
            ),
        ));
    }
    Ok(api.route_selection_expression() != Some(plan.route_selection_expression.as_str()))
}

/// All APIs (every page of `GetApis`).
async fn list_apis(client: &Client) -> Result<Vec<Api>, AwsError> {
    let mut apis = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = client
            .get_apis()
            .set_next_token(token.take())
            .send()
            .await
            .map_err(from_sdk("GetApis", ""))?;
        apis.extend(out.items().iter().cloned());
        match out.next_token() {
            Some(next) if !next.is_empty() => token = Some(next.to_string()),
            _ => return Ok(apis),
        }
    }
}

/// The API [`ensure_api`] keeps in line for `plan`, if there is one.
pub async fn find_api(client: &Client, plan: &ApiPlan) -> Result<Option<Api>, AwsError> {
    let apis = list_apis(client).await?;
    Ok(pick_api(&apis, &plan.name, &plan.tags).cloned())
}

/// Creates the WebSocket API, or brings its route selection expression and tags in line; returns its id
/// and endpoint.
pub async fn ensure_api(client: &Client, plan: &ApiPlan) -> Result<ApiState, AwsError> {
    let Some(api) = find_api(client, plan).await? else {
        let out = client
            .create_api()
            .name(&plan.name)
            .protocol_type(ProtocolType::Websocket)
            .route_selection_expression(&plan.route_selection_expression)
            .description(&plan.description)
            .set_tags(Some(plan.tags.clone().into_iter().collect()))
            .send()
            .await
            .map_err(from_sdk("CreateApi", &plan.name))?;
        return Ok(ApiState {
            api_id: out.api_id().unwrap_or_default().to_string(),
            api_endpoint: out.api_endpoint().map(str::to_string),
            convergence: Convergence::InProgress,
        });
    };
    let api_id = api.api_id().unwrap_or_default().to_string();
    let mut convergence = Convergence::Converged;
    if api_needs_update(plan, &api)? {
        client
            .update_api()
            .api_id(&api_id)
            .route_selection_expression(&plan.route_selection_expression)
            .send()
            .await
            .map_err(from_sdk("UpdateApi", &plan.name))?;
        convergence = Convergence::InProgress;
    }
    let arn = plan.arn(&api_id);
    let have = match tags_of(&api) {
        Some(tags) => tags,
        None => client
            .get_tags()
            .resource_arn(&arn)
            .send()
            .await
            .map_err(from_sdk("GetTags", &arn))?
            .tags()
            .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
    };
    if tag_missing(client, &arn, &plan.tags, &have).await? {
        convergence = Convergence::InProgress;
    }
    Ok(ApiState {
        api_id,
        api_endpoint: api.api_endpoint().map(str::to_string),
        convergence,
    })
}

/// Writes the planned tags `have` lacks; `true` when it wrote some.
async fn tag_missing(
    client: &Client,
    arn: &str,
    want: &BTreeMap<String, String>,
    have: &BTreeMap<String, String>,
) -> Result<bool, AwsError> {
    let missing: HashMap<String, String> = missing_tags(want, have)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    super::tag_resource_with!(client, arn, missing)
}

/// Whether an integration differs from the plan: not a Lambda proxy, another URI, or another method.
pub fn integration_differs(plan: &IntegrationPlan, have: &Integration) -> bool {
    have.integration_type().map(|t| t.as_str()) != Some(INTEGRATION_TYPE)
        || have.integration_uri() != Some(plan.uri.as_str())
        || have.integration_method() != Some(INTEGRATION_METHOD)
}

async fn list_integrations(client: &Client, api_id: &str) -> Result<Vec<Integration>, AwsError> {
    let mut found = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = client
            .get_integrations()
            .api_id(api_id)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(from_sdk("GetIntegrations", api_id))?;
        found.extend(out.items().iter().cloned());
        match out.next_token() {
            Some(next) if !next.is_empty() => token = Some(next.to_string()),
            _ => break,
        }
    }
    found.sort_by_key(|i| i.integration_id().unwrap_or_default().to_string());
    Ok(found)
}

/// Creates the API's Lambda proxy integration, or brings one in line: the integration with the planned
/// URI, else the first one (by id), is kept and updated. Returns its id.
pub async fn ensure_integration(
    client: &Client,
    api_id: &str,
    plan: &IntegrationPlan,
) -> Result<(String, Convergence), AwsError> {
    let found = list_integrations(client, api_id).await?;
    let kept = found
        .iter()
        .find(|i| i.integration_uri() == Some(plan.uri.as_str()))
        .or(found.first());
    let Some(have) = kept else {
        let out = client
            .create_integration()
            .api_id(api_id)
            .integration_type(IntegrationType::from(INTEGRATION_TYPE))
            .integration_method(INTEGRATION_METHOD)
            .integration_uri(&plan.uri)
            .send()
            .await
            .map_err(from_sdk("CreateIntegration", api_id))?;
        return Ok((
            out.integration_id().unwrap_or_default().to_string(),
            Convergence::InProgress,
        ));
    };
    let id = have.integration_id().unwrap_or_default().to_string();
    if !integration_differs(plan, have) {
        return Ok((id, Convergence::Converged));
    }
    client
        .update_integration()
        .api_id(api_id)
        .integration_id(&id)
        .integration_type(IntegrationType::from(INTEGRATION_TYPE))
        .integration_method(INTEGRATION_METHOD)
        .integration_uri(&plan.uri)
        .send()
        .await
        .map_err(from_sdk("UpdateIntegration", api_id))?;
    Ok((id, Convergence::InProgress))
}

/// A route's target: the integration it sends to.
pub fn route_target(integration_id: &str) -> String {
    format!("integrations/{integration_id}")
}

/// Whether an existing route differs from the plan: another target, or (two-way) another route response
/// selection expression.
pub fn route_differs(plan: &RoutePlan, have: &Route, integration_id: &str) -> bool {
    have.target() != Some(route_target(integration_id).as_str())
        || (plan.two_way && have.route_response_selection_expression() != Some(DEFAULT_RESPONSE))
}

async fn list_routes(client: &Client, api_id: &str) -> Result<Vec<Route>, AwsError> {
    let mut found = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let out = client
            .get_routes()
            .api_id(api_id)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(from_sdk("GetRoutes", api_id))?;
        found.extend(out.items().iter().cloned());
        match out.next_token() {
            Some(next) if !next.is_empty() => token = Some(next.to_string()),
            _ => return Ok(found),
        }
    }
}

/// Whether the route has a `$default` route response (every page of `GetRouteResponses`).
async fn has_default_response(client: &Client, api_id: &str, route_id: &str) -> Result<bool, AwsError> {
    let resource = format!("{api_id}/routes/{route_id}");
    let mut token: Option<String> = None;
    loop {
        let out = client
            .get_route_responses()
            .api_id(api_id)
            .route_id(route_id)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(from_sdk("GetRouteResponses", &resource))?;
        if out
            .items()
            .iter()
            .any(|r| r.route_response_key() == Some(DEFAULT_RESPONSE))
        {
            return Ok(true);
        }
        match out.next_token() {
            Some(next) if !next.is_empty() => token = Some(next.to_string()),
            _ => return Ok(false),
        }
    }
}

async fn create_default_response(client: &Client, api_id: &str, route_id: &str) -> Result<(), AwsError> {
    client
        .create_route_response()
        .api_id(api_id)
        .route_id(route_id)
        .route_response_key(DEFAULT_RESPONSE)
        .send()
        .await
        .map_err(from_sdk(
            "CreateRouteResponse",
            &format!("{api_id}/routes/{route_id}"),
        ))?;
    Ok(())
}

/// Creates the planned routes to the integration, or brings their targets, route response selection
/// expressions and (two-way) `$default` route responses in line. Returns the route ids by key.
pub async fn ensure_routes(
    client: &Client,
    api_id: &str,
    routes: &[RoutePlan],
    integration_id: &str,
) -> Result<(BTreeMap<String, String>, Convergence), AwsError> {
    let existing = list_routes(client, api_id).await?;
    let target = route_target(integration_id);
    let mut ids = BTreeMap::new();
    let mut convergence = Convergence::Converged;
    for plan in routes {
        let resource = format!("{api_id}/{}", plan.key);
        let rrse = plan.two_way.then_some(DEFAULT_RESPONSE);
        let Some(have) = existing.iter().find(|r| r.route_key() == Some(plan.key.as_str())) else {
            let out = client
                .create_route()
                .api_id(api_id)
                .route_key(&plan.key)
                .target(&target)
                .set_route_response_selection_expression(rrse.map(str::to_string))
                .send()
                .await
                .map_err(from_sdk("CreateRoute", &resource))?;
            let id = out.route_id().unwrap_or_default().to_string();
            if plan.two_way {
                create_default_response(client, api_id, &id).await?;
            }
            ids.insert(plan.key.clone(), id);
            convergence = Convergence::InProgress;
            continue;
        };
        let route_id = have.route_id().unwrap_or_default().to_string();
        if route_differs(plan, have, integration_id) {
            client
                .update_route()
                .api_id(api_id)
                .route_id(&route_id)
                .target(&target)
                .set_route_response_selection_expression(rrse.map(str::to_string))
                .send()
                .await
                .map_err(from_sdk("UpdateRoute", &resource))?;
            convergence = Convergence::InProgress;
        }
        if plan.two_way && !has_default_response(client, api_id, &route_id).await? {
            create_default_response(client, api_id, &route_id).await?;
            convergence = Convergence::InProgress;
        }
        ids.insert(plan.key.clone(), route_id);
    }
    Ok((ids, convergence))
}

/// Creates the stage (auto-deploy, tags), or turns auto-deploy back on and writes missing tags.
/// `stage_arn`: [`ApiPlan::stage_arn`].
pub async fn ensure_stage(
    client: &Client,
    api_id: &str,
    plan: &StagePlan,
    stage_arn: &str,
) -> Result<Convergence, AwsError> {
    let resource = format!("{api_id}/stages/{}", plan.name);
    let stage = match client
        .get_stage()
        .api_id(api_id)
        .stage_name(&plan.name)
        .send()
        .await
        .map_err(from_sdk("GetStage", &resource))
    {
        Ok(stage) => stage,
        Err(e) if e.is_not_found() => {
            client
                .create_stage()
                .api_id(api_id)
                .stage_name(&plan.name)
                .auto_deploy(plan.auto_deploy)
                .set_tags(Some(plan.tags.clone().into_iter().collect()))
                .send()
                .await
                .map_err(from_sdk("CreateStage", &resource))?;
            return Ok(Convergence::InProgress);
        }
        Err(e) => return Err(e),
    };
    let mut convergence = Convergence::Converged;
    if stage.auto_deploy().unwrap_or(false) != plan.auto_deploy {
        client
            .update_stage()
            .api_id(api_id)
            .stage_name(&plan.name)
            .auto_deploy(plan.auto_deploy)
            .send()
            .await
            .map_err(from_sdk("UpdateStage", &resource))?;
        convergence = Convergence::InProgress;
    }
    let have: BTreeMap<String, String> = stage
        .tags()
        .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    if tag_missing(client, stage_arn, &plan.tags, &have).await? {
        convergence = Convergence::InProgress;
    }
    Ok(convergence)
}

/// Prefix of the ids of the statements letting an API invoke a function.
const APIGATEWAY_SID_PREFIX: &str = "apigateway-";

/// The statement id of the permission letting `source_arn` (an API's `execute-api` ARN) invoke a function.
pub fn apigateway_statement_id(source_arn: &str) -> String {
    format!("{APIGATEWAY_SID_PREFIX}{}", short_hash(&[source_arn]))
}

/// The ids of a function policy's API Gateway statements other than `keep`: left by an API that was
/// replaced.
pub fn stale_apigateway_statements(policy: &str, keep: &str) -> Vec<String> {
    serde_json::from_str::<Value>(policy)
        .ok()
        .and_then(|p| p.get("Statement").and_then(Value::as_array).cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s.get("Sid").and_then(Value::as_str))
        .filter(|sid| sid.starts_with(APIGATEWAY_SID_PREFIX) && *sid != keep)
        .map(str::to_string)
        .collect()
}

/// Lets API Gateway invoke the function from `source_arn` only (`arn:...:execute-api:{region}:{account}:
/// {apiId}/*`), unless the function's policy already does; removes the statements of earlier APIs.
pub async fn allow_apigateway_invoke(
    lambda: &aws_sdk_lambda::Client,
    function_name: &str,
    source_arn: &str,
) -> Result<Convergence, AwsError> {
    let sid = apigateway_statement_id(source_arn);
    let policy = super::subscriptions::function_policy(lambda, function_name).await?;
    let mut convergence = Convergence::Converged;
    for stale in stale_apigateway_statements(policy.as_deref().unwrap_or("{}"), &sid) {
        match lambda
            .remove_permission()
            .function_name(function_name)
            .statement_id(&stale)
            .send()
            .await
            .map_err(from_sdk("RemovePermission", function_name))
        {
            Ok(_) => convergence = Convergence::InProgress,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    if policy
        .as_deref()
        .is_some_and(|p| super::subscriptions::policy_has_statement(p, &sid))
    {
        return Ok(convergence);
    }
    match lambda
        .add_permission()
        .function_name(function_name)
        .statement_id(&sid)
        .action("lambda:InvokeFunction")
        .principal("apigateway.amazonaws.com")
        .source_arn(source_arn)
        .send()
        .await
        .map_err(from_sdk("AddPermission", function_name))
    {
        Ok(_) => Ok(Convergence::InProgress),
        // Added concurrently: present.
        Err(e) if e.code == "ResourceConflictException" => Ok(convergence),
        Err(e) => Err(e),
    }
}

/// Deletes the APIs named `name` that carry `owner`'s tags (with their routes, integrations and stages);
/// `Ok(false)` when there is none, or none is ours.
pub async fn delete_api_if_owned(client: &Client, name: &str, owner: &Owner) -> Result<bool, AwsError> {
    let mut deleted = false;
    for api in list_apis(client).await? {
        if api.name() != Some(name) || !tags_of(&api).is_some_and(|t| owner.owns(&t)) {
            continue;
        }
        let id = api.api_id().unwrap_or_default();
        match client
            .delete_api()
            .api_id(id)
            .send()
            .await
            .map_err(from_sdk("DeleteApi", id))
        {
            Ok(_) => deleted = true,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use aws_sdk_apigatewayv2::types::RouteResponse;
    use aws_sdk_apigatewayv2::types::builders::ApiBuilder;

    use super::*;

    fn plan() -> ApiPlan {
        ApiPlan {
            name: "kappa-prod-ns-views-views-push-1a2b3c4d".into(),
            route_selection_expression: "$request.body.action".into(),
            description: "d".into(),
            tags: Owner::new("prod", "ns", "ViewsTable", "views").tags(),
            partition: "aws".into(),
            region: "us-east-1".into(),
        }
    }

    fn api_builder(id: &str, name: &str, tags: &BTreeMap<String, String>) -> ApiBuilder {
        Api::builder()
            .api_id(id)
            .name(name)
            .protocol_type(ProtocolType::Websocket)
            .route_selection_expression("$request.body.action")
            .set_tags(Some(tags.clone().into_iter().collect()))
    }

    fn api(id: &str, name: &str, tags: &BTreeMap<String, String>) -> Api {
        api_builder(id, name, tags).build()
    }

    #[test]
    fn the_api_of_the_name_carrying_the_tags_is_kept_and_another_owners_never() {
        let p = plan();
        let ours = api("c", &p.name, &p.tags);
        let untagged = api("b", &p.name, &BTreeMap::new());
        let mut foreign_tags = p.tags.clone();
        foreign_tags.insert("kappa.dev/cluster".into(), "someone-else".into());
        let foreign = api("a", &p.name, &foreign_tags);
        let other_name = api("0", "other", &p.tags);
        let apis = [
            other_name.clone(),
            foreign.clone(),
            untagged.clone(),
            ours.clone(),
        ];
        assert_eq!(pick_api(&apis, &p.name, &p.tags), Some(&ours));
        assert_eq!(
            pick_api(&[untagged.clone(), other_name.clone()], &p.name, &p.tags),
            None,
            "an untagged API of our name is not kappa's: never taken over, ours is created beside it"
        );
        let mut legacy_tags = p.tags.clone();
        legacy_tags.remove("kappa.dev/uid");
        let legacy = api("d", &p.name, &legacy_tags);
        assert_eq!(
            pick_api(&[untagged.clone(), legacy.clone()], &p.name, &p.tags),
            Some(&legacy),
            "ours from before uid tags: kept, the uid is written"
        );
        assert_eq!(
            pick_api(&[foreign, other_name], &p.name, &p.tags),
            None,
            "another owner's API of the same name is left alone"
        );
    }

    #[test]
    fn an_api_as_planned_needs_no_update_and_an_http_api_is_refused() {
        let p = plan();
        assert!(!api_needs_update(&p, &api("a", &p.name, &p.tags)).unwrap());
        let drifted = api_builder("a", &p.name, &p.tags)
            .route_selection_expression("$request.body.type")
            .build();
        assert!(api_needs_update(&p, &drifted).unwrap());
        let http = api_builder("a", &p.name, &p.tags)
            .protocol_type(ProtocolType::Http)
            .build();
        let err = api_needs_update(&p, &http).unwrap_err();
        assert!(!err.retryable);
        assert!(err.to_string().contains("delete-api --api-id a"), "{err}");
    }

    #[test]
    fn each_integration_setting_is_compared() {
        let p = IntegrationPlan {
            uri: "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/f/invocations".into(),
        };
        let have = Integration::builder()
            .integration_id("i")
            .integration_type(IntegrationType::AwsProxy)
            .integration_method("POST")
            .integration_uri(&p.uri);
        assert!(!integration_differs(&p, &have.clone().build()));
        for drifted in [
            have.clone().integration_type(IntegrationType::Aws).build(),
            have.clone().integration_method("GET").build(),
            have.clone().integration_uri("arn:other").build(),
        ] {
            assert!(integration_differs(&p, &drifted), "{drifted:?}");
        }
    }

    #[test]
    fn routes_are_compared_by_target_and_two_way_routes_by_their_response_expression() {
        let one_way = RoutePlan { key: "$connect".into(), two_way: false };
        let two_way = RoutePlan { key: "subscribe".into(), two_way: true };
        let builder = Route::builder().route_key("subscribe").target("integrations/i1");
        let route = builder.clone().build();
        assert!(!route_differs(&one_way, &route, "i1"));
        assert!(route_differs(&one_way, &route, "i2"), "another integration");
        assert!(route_differs(&two_way, &route, "i1"), "no response expression");
        let answered = builder.route_response_selection_expression("$default").build();
        assert!(!route_differs(&two_way, &answered, "i1"));
        assert_eq!(route_target("i1"), "integrations/i1");
        // The response key the adapter looks for is the one it creates.
        let response = RouteResponse::builder()
            .route_response_key(DEFAULT_RESPONSE)
            .build();
        assert_eq!(response.route_response_key(), Some("$default"));
    }

    #[test]
    fn permission_statements_are_per_api_and_those_of_replaced_apis_are_stale() {
        let a = apigateway_statement_id("arn:aws:execute-api:us-east-1:1:aaa/*");
        let b = apigateway_statement_id("arn:aws:execute-api:us-east-1:1:bbb/*");
        assert_ne!(a, b);
        assert!(a.starts_with("apigateway-") && a.len() <= 100);
        let policy = serde_json::json!({"Statement": [
            {"Sid": a}, {"Sid": b}, {"Sid": "sns-topic-1"}
        ]})
        .to_string();
        assert_eq!(stale_apigateway_statements(&policy, &a), [b]);
        assert!(stale_apigateway_statements("not json", &a).is_empty());
    }
}
