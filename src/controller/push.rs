//! Push on the in-cluster runtime: the operator serves the push protocol itself
//! (`crate::push::server`), fed by one feed per views table whose views have `spec.subscribers`.
//!
//! The reconcile of such a view routes it (its active version's key prefix in its table) in the
//! [`ViewDirectory`] and makes sure the table's feed runs; `status.push.url` is written once the feed reads
//! from the stream's tip, so a client that subscribes after it appeared receives every later change. A
//! promotion re-routes the view to the new version's prefix. A view without subscribers, or deleted, is
//! unrouted, and a table left without reactive views loses its feed.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::push::feed::ViewsTableFeed;
use crate::push::hub::{Hub, ViewDirectory};

/// One views table's running feed.
struct Feed {
    stream_arn: String,
    handle: JoinHandle<()>,
    positioned: watch::Receiver<bool>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// The operator's push endpoint state: the hub clients are served from, the directory of reactive views,
/// and the feeds.
pub struct PushRuntime {
    pub hub: Hub,
    pub views: ViewDirectory,
    base_url: String,
    /// (namespace, table) → its feed.
    feeds: Mutex<BTreeMap<(String, String), Feed>>,
}

impl PushRuntime {
    pub fn new(base_url: &str) -> Self {
        PushRuntime {
            hub: Hub::default(),
            views: ViewDirectory::default(),
            base_url: base_url.trim_end_matches('/').to_string(),
            feeds: Mutex::new(BTreeMap::new()),
        }
    }

    /// The URL clients of `namespace` connect to.
    pub fn url(&self, namespace: &str) -> String {
        format!("{}/v1/namespaces/{namespace}/watch", self.base_url)
    }

    /// Routes `view` to `key_prefix` of `table` and runs the table's feed on `stream_arn`. True once the
    /// feed reads from the stream's tip.
    pub fn serve_view(
        &self,
        streams: &aws_sdk_dynamodbstreams::Client,
        namespace: &str,
        view: &str,
        table: &str,
        key_prefix: &str,
        stream_arn: &str,
    ) -> bool {
        for other in self.views.tables(namespace) {
            if other != table {
                self.unroute(namespace, view, &other);
            }
        }
        let mut routes = self.views.routes(namespace, table).unwrap_or_default();
        let entry = (view.to_string(), key_prefix.to_string());
        if !routes.views.contains(&entry) {
            routes.views.retain(|(v, _)| v != view);
            routes.views.push(entry);
            self.views.set_table(namespace, table, routes);
            info!(%namespace, %view, %table, %key_prefix, "pushing the view's changes to subscribers");
        }
        let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        let key = (namespace.to_string(), table.to_string());
        let running = feeds
            .get(&key)
            .is_some_and(|f| f.stream_arn == stream_arn && !f.handle.is_finished());
        if !running {
            let feed = ViewsTableFeed::new(namespace, table, stream_arn);
            let positioned = feed.positioned();
            let handle = feed.spawn(streams.clone(), self.views.clone(), self.hub.clone());
            feeds.insert(
                key.clone(),
                Feed { stream_arn: stream_arn.to_string(), handle, positioned },
            );
        }
        feeds.get(&key).is_some_and(|f| *f.positioned.borrow())
    }

    /// Stops pushing `view` of `namespace` (no subscribers any more, or deleted).
    pub fn forget_view(&self, namespace: &str, view: &str) {
        for table in self.views.tables(namespace) {
            self.unroute(namespace, view, &table);
        }
    }

    fn unroute(&self, namespace: &str, view: &str, table: &str) {
        let Some(mut routes) = self.views.routes(namespace, table) else {
            return;
        };
        let before = routes.views.len();
        routes.views.retain(|(v, _)| v != view);
        if routes.views.len() == before {
            return;
        }
        info!(%namespace, %view, %table, "no longer pushing the view's changes");
        let empty = routes.views.is_empty();
        self.views.set_table(namespace, table, routes);
        if empty {
            let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
            feeds.remove(&(namespace.to_string(), table.to_string()));
        }
    }
}

/// The push stack of a views table on AWS (views on the Lambda runtime), as provisioned.
pub struct AwsPush {
    pub api_id: String,
    /// What clients connect to (`wss://…/live`).
    pub url: String,
    /// Everything exists as planned.
    pub converged: bool,
}

/// Provisions a views table's push stack, in dependency order: the connections table, role and function,
/// the WebSocket API with its integration, routes and stage, the permission for API Gateway to invoke the
/// connections function, then the notifier's role, function, failure queue and mapping on the views
/// table's stream.
/// `permissions_boundary` (a managed policy's ARN or name) bounds both roles.
pub async fn ensure_aws_push(
    aws: &crate::aws::Aws,
    plan: &crate::plan::push::PushPlan,
    code: &crate::plan::lambdas::BuiltInCode,
    views_stream_arn: &str,
    permissions_boundary: &str,
) -> Result<AwsPush, crate::aws::AwsError> {
    use crate::aws::{Convergence, dynamodb, iam, lambda, websocket};
    let boundary = plan.scope.policy_arn(permissions_boundary);
    let mut all = Vec::new();
    all.push(
        dynamodb::ensure_table(&aws.dynamodb, &plan.connections_table)
            .await?
            .convergence,
    );
    let (connections_role, c) = iam::ensure_role(&aws.iam, &plan.connections_role, &boundary).await?;
    all.push(c);
    let (connections_arn, c) =
        lambda::ensure_function(&aws.lambda, &plan.connections_function(&connections_role, code)).await?;
    all.push(c);
    let api = websocket::ensure_api(&aws.apigatewayv2, &plan.api).await?;
    all.push(api.convergence);
    let (integration, c) = websocket::ensure_integration(
        &aws.apigatewayv2,
        &api.api_id,
        &plan.integration(&connections_arn),
    )
    .await?;
    all.push(c);
    let (_, c) = websocket::ensure_routes(&aws.apigatewayv2, &api.api_id, &plan.routes, &integration).await?;
    all.push(c);
    let stage_arn = plan.api.stage_arn(&api.api_id, &plan.stage.name);
    all.push(websocket::ensure_stage(&aws.apigatewayv2, &api.api_id, &plan.stage, &stage_arn).await?);
    all.push(
        websocket::allow_apigateway_invoke(
            &aws.lambda,
            &plan.connections_function,
            &plan.invoke_source_arn(&api.api_id),
        )
        .await?,
    );
    let (notifier_role, c) = iam::ensure_role(&aws.iam, &plan.notifier_role(&api.api_id), &boundary).await?;
    all.push(c);
    let notifier = plan.notifier_function(&notifier_role, &api.api_id, api.api_endpoint.as_deref(), code);
    let (_, c) = lambda::ensure_function(&aws.lambda, &notifier).await?;
    all.push(c);
    let failures = crate::aws::sqs::ensure_queue(&aws.sqs, &plan.notifier_failure_queue, None).await?;
    all.push(failures.convergence);
    let mapping = plan.notifier_mapping(views_stream_arn, &failures.arn);
    let (_, c) = lambda::ensure_mapping(&aws.lambda, &mapping).await?;
    all.push(c);
    Ok(AwsPush {
        url: plan.client_url(&api.api_id, api.api_endpoint.as_deref()),
        api_id: api.api_id,
        converged: all.iter().all(|c| *c == Convergence::Converged),
    })
}

/// Removes a views table's push stack (only what carries its owner's tags): the API first, so no client
/// connects any more, then the notifier's mapping, the functions, the notifier's failure queue, the roles
/// and the connections table.
/// Returns what was deleted.
pub async fn delete_aws_push(
    aws: &crate::aws::Aws,
    plan: &crate::plan::push::PushPlan,
) -> Result<Vec<String>, crate::aws::AwsError> {
    use crate::aws::{dynamodb, iam, lambda, websocket};
    let mut deleted = Vec::new();
    if websocket::delete_api_if_owned(&aws.apigatewayv2, &plan.api.name, &plan.owner).await? {
        deleted.push(format!("WebSocket API {}", plan.api.name));
    }
    let mappings = lambda::delete_mappings(&aws.lambda, &plan.notifier_function).await?;
    if mappings > 0 {
        deleted.push(format!("{mappings} notifier mapping(s)"));
    }
    for f in [&plan.notifier_function, &plan.connections_function] {
        if lambda::delete_function_if_owned(&aws.lambda, f, &plan.owner).await? {
            deleted.push(format!("function {f}"));
        }
    }
    // After the mapping and the function: nothing sends to it any more.
    let queue = &plan.notifier_failure_queue.name;
    if crate::aws::sqs::delete_queue_if_owned(&aws.sqs, queue, &plan.owner).await? {
        deleted.push(format!("notifier failure queue {queue}"));
    }
    for role in [&plan.notifier_role_name, &plan.connections_role.name] {
        if iam::delete_role_if_owned(&aws.iam, role, &plan.owner).await? {
            deleted.push(format!("role {role}"));
        }
    }
    if dynamodb::delete_table_if_owned(&aws.dynamodb, &plan.connections_table.name, &plan.owner).await? {
        deleted.push(format!("connections table {}", plan.connections_table.name));
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn views_are_routed_per_table_and_a_table_without_views_loses_its_feed() {
        let push = PushRuntime::new("ws://push:8081/");
        assert_eq!(push.url("games"), "ws://push:8081/v1/namespaces/games/watch");
        let conf = aws_sdk_dynamodbstreams::Config::builder()
            .behavior_version(aws_sdk_dynamodbstreams::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodbstreams::config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:9")
            .build();
        let streams = aws_sdk_dynamodbstreams::Client::from_conf(conf);
        assert!(!push.serve_view(&streams, "games", "players", "t1", "players#", "arn:s1"));
        push.serve_view(&streams, "games", "scores", "t1", "S#", "arn:s1");
        assert_eq!(
            push.views.routes("games", "t1").unwrap().views,
            vec![
                ("players".into(), "players#".into()),
                ("scores".into(), "S#".into())
            ]
        );
        // A promotion moves the view to its new version's prefix.
        push.serve_view(&streams, "games", "players", "t1", "~v2~players#", "arn:s1");
        assert!(
            push.views
                .routes("games", "t1")
                .unwrap()
                .views
                .contains(&("players".into(), "~v2~players#".into()))
        );
        assert_eq!(push.views.routes("games", "t1").unwrap().views.len(), 2);
        // Moving to a dedicated table unroutes it from the shared one.
        push.serve_view(&streams, "games", "players", "t2", "", "arn:s2");
        assert_eq!(push.views.routes("games", "t1").unwrap().views.len(), 1);
        push.forget_view("games", "scores");
        assert!(push.views.routes("games", "t1").is_none());
        assert!(
            !push
                .feeds
                .lock()
                .unwrap()
                .contains_key(&("games".into(), "t1".into()))
        );
        assert!(
            push.feeds
                .lock()
                .unwrap()
                .contains_key(&("games".into(), "t2".into()))
        );
    }
}
