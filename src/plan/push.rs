//! The push topology of one views table: what pushes its views' changes to WebSocket clients.
//!
//! ```text
//! client ──wss──▶ API Gateway WebSocket API (route on $request.body.action), stage `live`
//!                   $connect, $disconnect, subscribe, unsubscribe ──AWS_PROXY──▶ connections λ
//!                                                                               ▼
//!                                                                   connections table (TTL expiresAt)
//! views table stream ──▶ notifier λ ──Query──▶ connections table
//!                              └──POST @connections/{id}──▶ the subscribed clients
//! ```
//!
//! Everything belongs to the views table's owner ([`ViewPlan::table_owner`]): the namespace's shared table
//! (kind `ViewsTable`) or the view of a dedicated table. It exists while some view of the table has
//! subscribers; the caller plans it then, with the subscribing views. Pure: values that only exist once a
//! resource exists (the API's id and endpoint, the role and function ARNs, the stream's ARN) come in as
//! arguments to the methods of [`PushPlan`].
//!
//! Least privilege: the connections function reads and writes only the connections table; the notifier
//! reads only its views table's stream, the connections table, and may post only to its own API's
//! connections on stage `live`; API Gateway may invoke the connections function only from its own API.

use std::collections::BTreeMap;

use serde_json::Value;

use super::function::{FunctionPlan, MappingPlan, StartingPosition, StreamFailurePlan};
use super::iam::{
    AwsScope, allow, failure_queue_statement, lambda_trust_policy, logs_statement, policy,
    stream_read_statement,
};
use super::lambdas::BuiltInCode;
use super::log::{QueuePlan, RolePlan, TablePlan, failure_queue};
use super::names::{NameKind, Owner};
use super::view::ViewPlan;
use crate::crd::BillingMode;
use crate::functions::connections::ConnectionsConfig;
use crate::functions::notifier::NotifierConfig;
use crate::push::message::ViewRoutes;

/// The handler (`_HANDLER`) of the built-in connections function.
pub const CONNECTIONS: &str = "connections";
/// The handler (`_HANDLER`) of the built-in notifier function.
pub const NOTIFIER: &str = "notifier";
/// The notifier's failure queue among the views table's resources.
pub const NOTIFIER_FAILURES: &str = "notifier-failures";
/// The API's one stage; clients connect to `wss://.../live`.
pub const STAGE: &str = "live";
/// How the API picks a route: the `action` of the JSON message (see `crate::push::message`).
pub const ROUTE_SELECTION_EXPRESSION: &str = "$request.body.action";
/// The route response selection expression of two-way routes, and the key of their one route response.
pub const DEFAULT_RESPONSE: &str = "$default";
/// The integration type of the connections function: Lambda proxy.
pub const INTEGRATION_TYPE: &str = "AWS_PROXY";
/// The method API Gateway calls a Lambda integration with (WebSocket APIs need POST).
pub const INTEGRATION_METHOD: &str = "POST";
/// The connections table's TTL attribute: epoch seconds after which a connection's items expire.
pub const TTL_ATTRIBUTE: &str = "expiresAt";

/// The routes of the API: the lifecycle routes and the protocol's actions, all to the connections function.
pub const ROUTE_KEYS: [&str; 4] = ["$connect", "$disconnect", "subscribe", "unsubscribe"];

/// A WebSocket API as it should be (looked up by name: API ids are chosen by AWS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiPlan {
    pub name: String,
    pub route_selection_expression: String,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    /// Where the API lives, for its ARN (`arn:{partition}:apigateway:{region}::/apis/{id}`).
    pub partition: String,
    pub region: String,
}

impl ApiPlan {
    /// The API's ARN, which its tags are read and written by.
    pub fn arn(&self, api_id: &str) -> String {
        format!(
            "arn:{}:apigateway:{}::/apis/{api_id}",
            self.partition, self.region
        )
    }

    /// A stage's ARN, which its tags are written by.
    pub fn stage_arn(&self, api_id: &str, stage: &str) -> String {
        format!("{}/stages/{stage}", self.arn(api_id))
    }
}

/// The API's integration with the connections function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntegrationPlan {
    /// `arn:{partition}:apigateway:{region}:lambda:path/2015-03-31/functions/{functionArn}/invocations`.
    pub uri: String,
}

/// One route of the API, to the connections integration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutePlan {
    pub key: String,
    /// Two-way: route response selection expression `$default` and a `$default` route response, so the
    /// function's response body reaches the client.
    pub two_way: bool,
}

/// The API's stage as it should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagePlan {
    pub name: String,
    pub auto_deploy: bool,
    pub tags: BTreeMap<String, String>,
}

/// Everything that pushes one views table's changes to WebSocket clients.
#[derive(Clone, Debug, PartialEq)]
pub struct PushPlan {
    /// The owner of the views table, and of everything here.
    pub owner: Owner,
    /// The views table whose stream the notifier reads.
    pub views_table: String,
    /// The subscribing views and their key prefixes, sorted by view name.
    pub view_routes: ViewRoutes,
    pub api: ApiPlan,
    pub routes: Vec<RoutePlan>,
    pub stage: StagePlan,
    pub connections_table: TablePlan,
    pub connections_role: RolePlan,
    /// The name of the connections function.
    pub connections_function: String,
    /// The name of the notifier's role (its policy needs the API's id: [`PushPlan::notifier_role`]).
    pub notifier_role_name: String,
    /// The name of the notifier function.
    pub notifier_function: String,
    /// The on-failure destination of the notifier's stream mapping: the changes it could not post after
    /// its retries (`views-notifier-failures`), kept 14 days.
    pub notifier_failure_queue: QueuePlan,
    pub scope: AwsScope,
}

/// Plans the push topology of `view`'s table for its subscribing views (`(view name, key prefix)`, the
/// prefix `""` in a dedicated table). Names and tags come from the table's owner, so every view of a
/// shared table plans the same resources.
///
/// Names are `<table role>-<part>` (`views-notifier` for a shared table, `view-notifier` for a dedicated
/// one), so a shared table and a view of the same name never share a name, as their tables do not.
pub fn plan_push(view: &ViewPlan, subscribers: &[(String, String)], scope: &AwsScope) -> PushPlan {
    let owner = view.table_owner.clone();
    let tags = owner.tags();
    let table_role = if view.shared { "views" } else { "view" };
    let role = |part: &str| format!("{table_role}-{part}");
    let mut views = subscribers.to_vec();
    views.sort();
    views.dedup();
    let connections_table = TablePlan {
        name: owner.resource_name(&role(CONNECTIONS), NameKind::Table),
        owner: owner.clone(),
        partition_key: "pk".into(),
        sort_key: Some("sk".into()),
        billing: BillingMode::OnDemand,
        capacity: None,
        stream: None,
        point_in_time_recovery: false,
        converge_settings: false,
        deletion_protection: false,
        adopted: false,
        adoption: Err(crate::settings::AdoptionRefused::NotConfigured),
        time_to_live_attribute: Some(TTL_ATTRIBUTE.into()),
        take_over_predecessor: false,
        tags: tags.clone(),
    };
    let connections_function = owner.resource_name(&role(CONNECTIONS), NameKind::Function);
    let connections_role = RolePlan {
        role: CONNECTIONS,
        name: owner.resource_name(&role(CONNECTIONS), NameKind::Role),
        policy: connections_policy(scope, &connections_function, &connections_table.name),
        function: connections_function.clone(),
        trust: lambda_trust_policy(),
        tags: tags.clone(),
    };
    let routes = ROUTE_KEYS
        .iter()
        .map(|key| RoutePlan { key: key.to_string(), two_way: !key.starts_with('$') })
        .collect();
    PushPlan {
        views_table: view.table.name.clone(),
        view_routes: ViewRoutes { views },
        api: ApiPlan {
            // API names hold 128 characters; a function's 64 leave room.
            name: owner.resource_name(&role("push"), NameKind::Function),
            route_selection_expression: ROUTE_SELECTION_EXPRESSION.into(),
            description: format!(
                "kappa-operator: changes of {} to WebSocket clients",
                view.table.name
            ),
            tags: tags.clone(),
            partition: scope.partition.clone(),
            region: scope.region.clone(),
        },
        routes,
        stage: StagePlan { name: STAGE.into(), auto_deploy: true, tags: tags.clone() },
        connections_role,
        connections_function,
        notifier_role_name: owner.resource_name(&role(NOTIFIER), NameKind::Role),
        notifier_function: owner.resource_name(&role(NOTIFIER), NameKind::Function),
        notifier_failure_queue: failure_queue(&owner, &role(NOTIFIER_FAILURES)),
        connections_table,
        scope: scope.clone(),
        owner,
    }
}

/// The API's endpoint host: AWS's `ApiEndpoint` without its scheme, or the public execute-api name.
fn api_host(scope: &AwsScope, api_id: &str, api_endpoint: Option<&str>) -> String {
    match api_endpoint.filter(|e| !e.is_empty()) {
        Some(endpoint) => {
            let host = endpoint.split_once("://").map_or(endpoint, |(_, rest)| rest);
            host.trim_end_matches('/').to_string()
        }
        None => format!("{api_id}.execute-api.{}.amazonaws.com", scope.region),
    }
}

impl PushPlan {
    /// The integration with the connections function (`function_arn`, from `ensure_function`).
    pub fn integration(&self, function_arn: &str) -> IntegrationPlan {
        IntegrationPlan {
            uri: format!(
                "arn:{}:apigateway:{}:lambda:path/2015-03-31/functions/{function_arn}/invocations",
                self.scope.partition, self.scope.region
            ),
        }
    }

    /// The source ARN of API Gateway's permission to invoke the connections function: any route and
    /// stage of this API only.
    pub fn invoke_source_arn(&self, api_id: &str) -> String {
        format!("{}/*", self.execute_api_arn(api_id))
    }

    fn execute_api_arn(&self, api_id: &str) -> String {
        let s = &self.scope;
        format!(
            "arn:{}:execute-api:{}:{}:{api_id}",
            s.partition, s.region, s.account
        )
    }

    /// The URL clients connect to: `wss://{host}/live`, the host from the API's `ApiEndpoint` when AWS
    /// reports one.
    pub fn client_url(&self, api_id: &str, api_endpoint: Option<&str>) -> String {
        format!("wss://{}/{STAGE}", api_host(&self.scope, api_id, api_endpoint))
    }

    /// The notifier's `@connections` endpoint: `https://{host}/live`.
    pub fn management_endpoint(&self, api_id: &str, api_endpoint: Option<&str>) -> String {
        format!("https://{}/{STAGE}", api_host(&self.scope, api_id, api_endpoint))
    }

    /// The notifier's role: it reads the views table's stream and the connections table, and posts to
    /// the connections of API `api_id`.
    pub fn notifier_role(&self, api_id: &str) -> RolePlan {
        RolePlan {
            role: NOTIFIER,
            name: self.notifier_role_name.clone(),
            policy: notifier_policy(
                &self.scope,
                &self.notifier_function,
                &self.views_table,
                &self.connections_table.name,
                api_id,
                &self.notifier_failure_queue.name,
            ),
            function: self.notifier_function.clone(),
            trust: lambda_trust_policy(),
            tags: self.owner.tags(),
        }
    }

    /// The configuration the connections function reads from its environment.
    fn connections_config(&self) -> ConnectionsConfig {
        ConnectionsConfig {
            table: self.connections_table.name.clone(),
            routes: self.view_routes.clone(),
        }
    }

    fn function(&self, name: &str, handler: &str, role_arn: &str, code: &BuiltInCode) -> FunctionPlan {
        let mut f = super::lambdas::built_in(name.to_string(), handler, role_arn, code, self.owner.tags());
        f.environment = self.connections_config().to_env();
        f
    }

    /// The connections function: records connections and their subscriptions. API Gateway waits for it
    /// at most 29 seconds, so it gets 10.
    pub fn connections_function(&self, role_arn: &str, code: &BuiltInCode) -> FunctionPlan {
        let mut f = self.function(&self.connections_function, CONNECTIONS, role_arn, code);
        f.timeout_seconds = 10;
        f
    }

    /// The notifier function: posts each change of a subscribing view to its subscribers through API
    /// `api_id` (`api_endpoint`: the API's `ApiEndpoint`, when AWS reports one).
    pub fn notifier_function(
        &self,
        role_arn: &str,
        api_id: &str,
        api_endpoint: Option<&str>,
        code: &BuiltInCode,
    ) -> FunctionPlan {
        let mut f = self.function(&self.notifier_function, NOTIFIER, role_arn, code);
        let ConnectionsConfig { table, routes } = self.connections_config();
        f.environment = NotifierConfig {
            table,
            routes,
            management_endpoint: self.management_endpoint(api_id, api_endpoint),
        }
        .to_env();
        f
    }

    /// The notifier's mapping on the views table's stream: from the latest record (changes from now on
    /// are what subscribers want), a failing batch bisected so one bad record holds back no others, and,
    /// as the projectors' mappings, bounded retries and record age with the notifier's failure queue
    /// (`failure_queue_arn`) as on-failure destination ([`StreamFailurePlan`]): a change that cannot be
    /// posted is recorded there instead of holding its shard back until the stream trims it.
    pub fn notifier_mapping(&self, stream_arn: &str, failure_queue_arn: &str) -> MappingPlan {
        MappingPlan {
            function_name: self.notifier_function.clone(),
            event_source_arn: stream_arn.to_string(),
            batch_size: 100,
            maximum_batching_window_seconds: 0,
            starting_position: Some(StartingPosition::Latest),
            filter_patterns: Vec::new(),
            report_batch_item_failures: true,
            bisect_batch_on_function_error: true,
            on_failure: Some(StreamFailurePlan::to_queue(failure_queue_arn)),
        }
    }
}

/// The connections function keeps connections and subscriptions in the connections table, nothing else.
pub fn connections_policy(scope: &AwsScope, function: &str, connections_table: &str) -> Value {
    policy(vec![
        allow(
            "KeepConnections",
            &[
                "dynamodb:DeleteItem",
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:Query",
                "dynamodb:UpdateItem",
            ],
            vec![scope.table_arn(connections_table)],
        ),
        logs_statement(scope, function),
    ])
}

/// The notifier reads its views table's stream, finds and prunes subscribers in the connections table,
/// posts only to its own API's connections on stage `live`, and may send to its own failure queue
/// (`failure_queue`, a name) only.
pub fn notifier_policy(
    scope: &AwsScope,
    function: &str,
    views_table: &str,
    connections_table: &str,
    api_id: &str,
    failure_queue: &str,
) -> Value {
    policy(vec![
        stream_read_statement("ReadViewsStream", scope, views_table),
        allow(
            "FindSubscribers",
            &[
                "dynamodb:DeleteItem",
                "dynamodb:GetItem",
                "dynamodb:Query",
                "dynamodb:UpdateItem",
            ],
            vec![scope.table_arn(connections_table)],
        ),
        allow(
            "PostToOwnConnections",
            &["execute-api:ManageConnections"],
            vec![format!(
                "arn:{}:execute-api:{}:{}:{api_id}/{STAGE}/POST/@connections/*",
                scope.partition, scope.region, scope.account
            )],
        ),
        failure_queue_statement(scope, failure_queue),
        logs_statement(scope, function),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{code, scope, statement, view};
    use crate::plan::function::Architecture;
    use crate::plan::view::plan_view;

    fn shared() -> PushPlan {
        let v = view("players", "{streams: true}");
        let subscribers = [
            ("scores".to_string(), "S#".to_string()),
            ("players".to_string(), "players#".to_string()),
        ];
        plan_push(
            &plan_view("prod", &v, crate::plan::NO_VIEWS),
            &subscribers,
            &scope(),
        )
    }

    fn strings(v: &Value) -> Vec<&str> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect()
    }

    #[test]
    fn a_shared_tables_push_resources_belong_to_the_table_and_every_sharer_plans_the_same() {
        let p = shared();
        assert_eq!(p.owner.kind, "ViewsTable");
        for (name, max) in [
            (&p.api.name, 64),
            (&p.connections_table.name, 255),
            (&p.connections_function, 64),
            (&p.connections_role.name, 64),
            (&p.notifier_function, 64),
            (&p.notifier_role_name, 64),
        ] {
            assert!(
                name.starts_with("kappa-prod-games-views-views-") && name.len() <= max,
                "{name}"
            );
        }
        assert!(p.api.name.contains("-views-push-"), "{}", p.api.name);
        assert!(p.notifier_function.contains("-views-notifier-"));
        let tags = p.owner.tags();
        assert_eq!(p.api.tags, tags);
        assert_eq!(p.stage.tags, tags);
        assert_eq!(p.connections_table.tags, tags);
        assert_eq!(p.connections_role.tags, tags);
        let other = view("scores", "{keyPrefix: \"S#\"}");
        let subscribers = [
            ("players".to_string(), "players#".to_string()),
            ("scores".to_string(), "S#".to_string()),
        ];
        let from_other = plan_push(
            &plan_view("prod", &other, crate::plan::NO_VIEWS),
            &subscribers,
            &scope(),
        );
        assert_eq!(from_other.api, p.api, "any view of the table plans the same API");
        assert_eq!(from_other.view_routes, p.view_routes, "subscribers in any order");
        assert_eq!(
            p.view_routes.views,
            [
                ("players".to_string(), "players#".to_string()),
                ("scores".to_string(), "S#".to_string())
            ]
        );
    }

    #[test]
    fn a_dedicated_tables_push_belongs_to_its_view_and_never_shares_a_name_with_a_shared_table() {
        let dedicated = view("views", "{table: Dedicated, streams: true}");
        let p = plan_push(
            &plan_view("prod", &dedicated, crate::plan::NO_VIEWS),
            &[("views".to_string(), String::new())],
            &scope(),
        );
        assert_eq!(p.owner.kind, "MaterializedView");
        assert!(p.api.name.contains("-view-push-"), "{}", p.api.name);
        let shared_named_views = plan_push(
            &plan_view(
                "prod",
                &view("x", "{sharedTableName: views}"),
                crate::plan::NO_VIEWS,
            ),
            &[("x".to_string(), "x#".to_string())],
            &scope(),
        );
        for (a, b) in [
            (&p.api.name, &shared_named_views.api.name),
            (
                &p.connections_table.name,
                &shared_named_views.connections_table.name,
            ),
            (&p.notifier_function, &shared_named_views.notifier_function),
        ] {
            assert_ne!(a, b);
        }
    }

    #[test]
    fn the_api_routes_on_the_action_with_two_way_protocol_routes_and_an_auto_deployed_live_stage() {
        let p = shared();
        assert_eq!(p.api.route_selection_expression, "$request.body.action");
        let routes: Vec<(&str, bool)> = p.routes.iter().map(|r| (r.key.as_str(), r.two_way)).collect();
        assert_eq!(
            routes,
            [
                ("$connect", false),
                ("$disconnect", false),
                ("subscribe", true),
                ("unsubscribe", true)
            ]
        );
        assert_eq!((p.stage.name.as_str(), p.stage.auto_deploy), ("live", true));
        assert_eq!(p.api.arn("abc123"), "arn:aws:apigateway:eu-west-1::/apis/abc123");
        assert_eq!(
            p.api.stage_arn("abc123", "live"),
            "arn:aws:apigateway:eu-west-1::/apis/abc123/stages/live"
        );
        let f = "arn:aws:lambda:eu-west-1:123456789012:function:kappa-c";
        assert_eq!(
            p.integration(f).uri,
            format!("arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/{f}/invocations")
        );
        assert_eq!(
            p.invoke_source_arn("abc123"),
            "arn:aws:execute-api:eu-west-1:123456789012:abc123/*"
        );
    }

    #[test]
    fn urls_come_from_the_api_endpoint_when_aws_reports_one() {
        let p = shared();
        assert_eq!(
            p.client_url("abc123", None),
            "wss://abc123.execute-api.eu-west-1.amazonaws.com/live"
        );
        assert_eq!(
            p.client_url(
                "abc123",
                Some("wss://abc123.execute-api.cn-north-1.amazonaws.com.cn")
            ),
            "wss://abc123.execute-api.cn-north-1.amazonaws.com.cn/live"
        );
        assert_eq!(
            p.management_endpoint(
                "abc123",
                Some("https://abc123.execute-api.eu-west-1.amazonaws.com/")
            ),
            "https://abc123.execute-api.eu-west-1.amazonaws.com/live"
        );
        assert_eq!(
            p.management_endpoint("abc123", Some("")),
            "https://abc123.execute-api.eu-west-1.amazonaws.com/live"
        );
    }

    #[test]
    fn the_connections_table_expires_items_and_the_connections_role_touches_only_it() {
        let p = shared();
        let t = &p.connections_table;
        assert_eq!(
            (t.partition_key.as_str(), t.sort_key.as_deref()),
            ("pk", Some("sk"))
        );
        assert_eq!(t.billing, BillingMode::OnDemand);
        assert_eq!(t.time_to_live_attribute.as_deref(), Some("expiresAt"));
        assert!(t.stream.is_none() && !t.deletion_protection && !t.adopted);
        let doc = &p.connections_role.policy;
        let keep = statement(doc, "KeepConnections");
        assert_eq!(
            strings(&keep["Action"]),
            [
                "dynamodb:DeleteItem",
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:Query",
                "dynamodb:UpdateItem"
            ]
        );
        assert_eq!(
            strings(&keep["Resource"]),
            [format!(
                "arn:aws:dynamodb:eu-west-1:123456789012:table/{}",
                t.name
            )]
        );
        assert_eq!(doc["Statement"].as_array().unwrap().len(), 2, "{doc}");
        assert_eq!(
            strings(&statement(doc, "OwnLogs")["Resource"]),
            [format!(
                "arn:aws:logs:eu-west-1:123456789012:log-group:/aws/lambda/{}:*",
                p.connections_function
            )]
        );
        assert_eq!(p.connections_role.function, p.connections_function);
        assert!(
            !doc.to_string().contains(&p.views_table),
            "no access to the views"
        );
    }

    #[test]
    fn the_notifier_reads_its_stream_and_posts_only_to_its_apis_live_connections() {
        let p = shared();
        let role = p.notifier_role("abc123");
        assert_eq!(role.name, p.notifier_role_name);
        assert_eq!(role.role, "notifier");
        let doc = &role.policy;
        let stream = statement(doc, "ReadViewsStream");
        assert_eq!(
            strings(&stream["Resource"]),
            [format!(
                "arn:aws:dynamodb:eu-west-1:123456789012:table/{}/stream/*",
                p.views_table
            )]
        );
        assert!(strings(&stream["Action"]).iter().all(|a| {
            [
                "dynamodb:DescribeStream",
                "dynamodb:GetRecords",
                "dynamodb:GetShardIterator",
                "dynamodb:ListStreams",
            ]
            .contains(a)
        }));
        let connections = statement(doc, "FindSubscribers");
        assert_eq!(
            strings(&connections["Resource"]),
            [format!(
                "arn:aws:dynamodb:eu-west-1:123456789012:table/{}",
                p.connections_table.name
            )]
        );
        assert!(!strings(&connections["Action"]).contains(&"dynamodb:PutItem"));
        let post = statement(doc, "PostToOwnConnections");
        assert_eq!(strings(&post["Action"]), ["execute-api:ManageConnections"]);
        assert_eq!(
            strings(&post["Resource"]),
            ["arn:aws:execute-api:eu-west-1:123456789012:abc123/live/POST/@connections/*"]
        );
        let failures = statement(doc, "SendToOwnFailureQueue");
        assert_eq!(strings(&failures["Action"]), ["sqs:SendMessage"]);
        assert_eq!(
            strings(&failures["Resource"]),
            [format!(
                "arn:aws:sqs:eu-west-1:123456789012:{}",
                p.notifier_failure_queue.name
            )]
        );
        assert_eq!(doc["Statement"].as_array().unwrap().len(), 5, "{doc}");
        let text = doc.to_string();
        assert!(
            !text.contains("\"*\"") && !text.contains("dynamodb:*") && !text.contains("Scan"),
            "{text}"
        );
        assert!(
            !text.contains(&format!("table/{}\"", p.views_table)),
            "the views table's items are not the notifier's to read"
        );
    }

    #[test]
    fn the_functions_are_built_in_and_configured_by_their_environment() {
        let p = shared();
        let c = p.connections_function("arn:role-c", &code());
        assert_eq!(
            (c.name.as_str(), c.handler.as_str(), c.runtime.as_str()),
            (p.connections_function.as_str(), "connections", "provided.al2023")
        );
        assert_eq!(c.architecture, Architecture::Arm64);
        assert_eq!(c.role_arn, "arn:role-c");
        assert_eq!(c.environment["KAPPA_CONNECTIONS_TABLE"], p.connections_table.name);
        let routes: ViewRoutes = serde_json::from_str(&c.environment["KAPPA_VIEW_ROUTES"]).unwrap();
        assert_eq!(routes, p.view_routes);
        assert_eq!(c.environment.len(), 2);
        assert_eq!(c.tags, p.owner.tags());

        let n = p.notifier_function("arn:role-n", "abc123", None, &code());
        assert_eq!(
            (n.name.as_str(), n.handler.as_str()),
            (p.notifier_function.as_str(), "notifier")
        );
        assert_eq!(
            n.environment["KAPPA_WS_MANAGEMENT_ENDPOINT"],
            "https://abc123.execute-api.eu-west-1.amazonaws.com/live"
        );
        assert_eq!(
            n.environment["KAPPA_VIEW_ROUTES"],
            c.environment["KAPPA_VIEW_ROUTES"]
        );
        assert_eq!(n.environment["KAPPA_CONNECTIONS_TABLE"], p.connections_table.name);
        assert_eq!(n.environment.len(), 3);

        let m = p.notifier_mapping("arn:stream", "arn:notifier-failures");
        assert_eq!(m.function_name, p.notifier_function);
        assert_eq!(m.event_source_arn, "arn:stream");
        assert_eq!(m.starting_position, Some(StartingPosition::Latest));
        assert!(m.bisect_batch_on_function_error && m.report_batch_item_failures);
        assert!(m.filter_patterns.is_empty());
        assert_eq!(
            m.on_failure,
            Some(StreamFailurePlan::to_queue("arn:notifier-failures")),
            "a change that cannot be posted goes to the notifier's failure queue, not back to the shard"
        );
        let q = &p.notifier_failure_queue;
        assert!(q.name.contains("notifier-failures"), "{}", q.name);
        assert_eq!(q.tags, p.owner.tags());
        let policy = p.notifier_role("abc123").policy;
        let send: Vec<&serde_json::Value> = policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|st| st["Action"].to_string().contains("sqs:"))
            .collect();
        assert_eq!(send.len(), 1, "{policy}");
        assert_eq!(send[0]["Action"], serde_json::json!(["sqs:SendMessage"]));
        assert!(send[0]["Resource"].to_string().contains(&q.name), "{policy}");
    }

    #[test]
    fn the_plan_is_deterministic() {
        assert_eq!(shared(), shared());
    }
}
