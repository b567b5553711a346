//! The push functions' side effects over the SDK: [`DynamoConnections`], the connections table
//! (DynamoDB) behind [`ConnectionStore`], and [`ApiGatewayPoster`], `PostToConnection` (API Gateway's
//! management API) behind [`ConnectionPoster`]. The table's items and the functions' logic are in
//! [`crate::functions::connections`] and [`crate::functions::notifier`].

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_sdk_apigatewaymanagement::operation::post_to_connection::PostToConnectionError;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, ReturnValuesOnConditionCheckFailure, WriteRequest,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use tracing::warn;

use super::error::classify;
use crate::functions::connections::{
    CONNECTION_ID, CONNECTION_SK, ConnectionStore, ConnectionStoreError, EXPIRES_AT, KEY_PREFIX,
    MAX_SUBSCRIPTIONS_PER_CONNECTION, PK, SK, SUBSCRIPTIONS, Subscriber, ViewSubscription, connection_item,
    connection_pk, epoch_seconds, parse_subscription_entry, subscription_entry, subscription_item,
    subscription_pk, subscription_sk,
};
use crate::functions::notifier::{ConnectionPoster, ENV_WS_MANAGEMENT_ENDPOINT, PostError};
use crate::projection::item_to_dynamodb;

/// How often [`DynamoConnections::disconnect`] resends unprocessed deletes.
const BATCH_WRITE_ATTEMPTS: u32 = 4;
/// `BatchWriteItem` takes at most 25 requests.
const BATCH_WRITE_MAX: usize = 25;

/// [`ConnectionStore`] on the DynamoDB connections table.
///
/// Requests: `connect` = `PutItem`; `subscribe` = `UpdateItem` (`ADD subscriptions`, conditioned on the
/// connection item existing and holding fewer than [`MAX_SUBSCRIPTIONS_PER_CONNECTION`] entries) then
/// `PutItem`; `unsubscribe` = `DeleteItem` (one prefix) or `Query` + `BatchWriteItem` deletes (the whole
/// view), then `UpdateItem` (`DELETE subscriptions`, conditioned on the item existing);
/// `disconnect` = consistent `GetItem` + `BatchWriteItem` deletes; `subscribers` = consistent, paginated
/// `Query` on `pk`, skipping expired items.
#[derive(Debug, Clone)]
pub struct DynamoConnections {
    pub client: aws_sdk_dynamodb::Client,
    pub table: String,
}

impl DynamoConnections {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoConnections { client, table: table.into() }
    }

    fn call_error<E>(&self, operation: &'static str, err: &SdkError<E, HttpResponse>) -> ConnectionStoreError
    where
        E: ProvideErrorMetadata + std::fmt::Debug,
    {
        let (retryable, message) = super::functions::sdk_failure(err);
        ConnectionStoreError::Call { operation, table: self.table.clone(), message, retryable }
    }

    fn key(pk: String, sk: String) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (PK.to_string(), AttributeValue::S(pk)),
            (SK.to_string(), AttributeValue::S(sk)),
        ])
    }

    /// An `UpdateItem` of connection `connection_id`'s item, with `#subs` naming its subscription set and
    /// `#pk` its partition key.
    fn update_connection(&self, connection_id: &str) -> UpdateItemFluentBuilder {
        let key = Self::key(connection_pk(connection_id), CONNECTION_SK.to_string());
        (self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key)))
        .expression_attribute_names("#subs", SUBSCRIPTIONS)
        .expression_attribute_names("#pk", PK)
    }

    /// Deletes items by key with `BatchWriteItem`, resending unprocessed ones.
    async fn delete_all(
        &self,
        keys: Vec<HashMap<String, AttributeValue>>,
    ) -> Result<(), ConnectionStoreError> {
        for chunk in keys.chunks(BATCH_WRITE_MAX) {
            let mut requests = chunk
                .iter()
                .map(|key| {
                    DeleteRequest::builder()
                        .set_key(Some(key.clone()))
                        .build()
                        .map(|delete| WriteRequest::builder().delete_request(delete).build())
                        .map_err(|e| ConnectionStoreError::Call {
                            operation: "BatchWriteItem",
                            table: self.table.clone(),
                            message: format!("building a delete request: {e}"),
                            retryable: false,
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            for attempt in 1..=BATCH_WRITE_ATTEMPTS {
                requests = super::dynamodb::batch_write_once(&self.client, &self.table, requests)
                    .await
                    .map_err(|e| self.call_error("BatchWriteItem", &e))?;
                if requests.is_empty() {
                    break;
                }
                if attempt == BATCH_WRITE_ATTEMPTS {
                    return Err(ConnectionStoreError::Call {
                        operation: "BatchWriteItem",
                        table: self.table.clone(),
                        message: format!(
                            "{} delete(s) still unprocessed after {BATCH_WRITE_ATTEMPTS} attempts \
                             (throttled)",
                            requests.len()
                        ),
                        retryable: true,
                    });
                }
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
        }
        Ok(())
    }

    /// Removes `entries` from the connection item's set, if the item exists.
    async fn remove_entries(
        &self,
        connection_id: &str,
        entries: Vec<String>,
    ) -> Result<(), ConnectionStoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let result = (self.update_connection(connection_id))
            .update_expression("DELETE #subs :entries")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_values(":entries", AttributeValue::Ss(entries))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => Ok(()),
            Err(e) => Err(self.call_error("UpdateItem", &e)),
        }
    }
}

impl ConnectionStore for DynamoConnections {
    async fn connect(&self, connection_id: &str, expires_at: i64) -> Result<(), ConnectionStoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item_to_dynamodb(connection_item(connection_id, expires_at))))
            .send()
            .await
            .map_err(|e| self.call_error("PutItem", &e))?;
        Ok(())
    }

    async fn subscribe(&self, on: ViewSubscription<'_>, expires_at: i64) -> Result<(), ConnectionStoreError> {
        let ViewSubscription { connection_id, view, key_prefix } = on.check()?;
        let entry = subscription_entry(view, key_prefix);
        let result = (self.update_connection(connection_id))
            .update_expression("ADD #subs :entries")
            .condition_expression(
                "attribute_exists(#pk) AND (attribute_not_exists(#subs) OR size(#subs) < :max \
                 OR contains(#subs, :entry))",
            )
            .expression_attribute_values(":entries", AttributeValue::Ss(vec![entry.clone()]))
            .expression_attribute_values(":entry", AttributeValue::S(entry))
            .expression_attribute_values(
                ":max",
                AttributeValue::N(MAX_SUBSCRIPTIONS_PER_CONNECTION.to_string()),
            )
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => {}
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                let exists = match e.err() {
                    UpdateItemError::ConditionalCheckFailedException(failed) => {
                        failed.item().is_some_and(|item| !item.is_empty())
                    }
                    _ => false,
                };
                let connection_id = connection_id.to_string();
                return Err(if exists {
                    ConnectionStoreError::TooManySubscriptions {
                        connection_id,
                        limit: MAX_SUBSCRIPTIONS_PER_CONNECTION,
                    }
                } else {
                    ConnectionStoreError::NotConnected { connection_id }
                });
            }
            Err(e) => return Err(self.call_error("UpdateItem", &e)),
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item_to_dynamodb(subscription_item(
                view,
                connection_id,
                key_prefix,
                expires_at,
            ))))
            .send()
            .await
            .map_err(|e| self.call_error("PutItem", &e))?;
        Ok(())
    }

    async fn unsubscribe(&self, on: ViewSubscription<'_>) -> Result<usize, ConnectionStoreError> {
        let ViewSubscription { connection_id, view, key_prefix } = on;
        let pk = subscription_pk(view);
        let removed: Vec<Option<String>> = match key_prefix {
            Some(prefix) => {
                let out = self
                    .client
                    .delete_item()
                    .table_name(&self.table)
                    .set_key(Some(Self::key(pk, subscription_sk(connection_id, key_prefix))))
                    .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
                    .send()
                    .await
                    .map_err(|e| self.call_error("DeleteItem", &e))?;
                if out.attributes.is_some_and(|a| !a.is_empty()) {
                    vec![Some(prefix.to_string())]
                } else {
                    Vec::new()
                }
            }
            None => {
                let mine = self
                    .query_subscriptions(&pk, Some(&subscription_sk(connection_id, None)))
                    .await?;
                let keys = mine
                    .iter()
                    .map(|(_, prefix)| {
                        Self::key(pk.clone(), subscription_sk(connection_id, prefix.as_deref()))
                    })
                    .collect();
                self.delete_all(keys).await?;
                mine.into_iter().map(|(_, prefix)| prefix).collect()
            }
        };
        let entries = removed
            .iter()
            .map(|p| subscription_entry(view, p.as_deref()))
            .collect();
        self.remove_entries(connection_id, entries).await?;
        Ok(removed.len())
    }

    async fn disconnect(&self, connection_id: &str) -> Result<(), ConnectionStoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(
                connection_pk(connection_id),
                CONNECTION_SK.to_string(),
            )))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.call_error("GetItem", &e))?;
        let Some(item) = out.item else {
            return Ok(());
        };
        let entries = match item.get(SUBSCRIPTIONS) {
            Some(AttributeValue::Ss(entries)) => entries.clone(),
            _ => Vec::new(),
        };
        let subscriptions = entries
            .iter()
            .filter_map(|entry| parse_subscription_entry(entry))
            .map(|(view, prefix)| {
                Self::key(
                    subscription_pk(&view),
                    subscription_sk(connection_id, prefix.as_deref()),
                )
            })
            .collect();
        self.delete_all(subscriptions).await?;
        // The connection item last: while it exists, a retried disconnect still finds the subscriptions.
        self.delete_all(vec![Self::key(
            connection_pk(connection_id),
            CONNECTION_SK.to_string(),
        )])
        .await
    }

    async fn subscribers(&self, view: &str) -> Result<Vec<Subscriber>, ConnectionStoreError> {
        self.query_subscriptions(&subscription_pk(view), None).await
    }
}

impl DynamoConnections {
    /// The unexpired subscription items under `pk` (whose `sk` starts with `sk_prefix`), all pages.
    async fn query_subscriptions(
        &self,
        pk: &str,
        sk_prefix: Option<&str>,
    ) -> Result<Vec<Subscriber>, ConnectionStoreError> {
        let now = epoch_seconds(SystemTime::now());
        let mut subscribers = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#exp", EXPIRES_AT)
                .expression_attribute_names("#cid", CONNECTION_ID)
                .expression_attribute_names("#kp", KEY_PREFIX)
                .expression_attribute_values(":pk", AttributeValue::S(pk.to_string()))
                .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
                .filter_expression("#exp > :now")
                .projection_expression("#cid, #kp")
                .set_exclusive_start_key(start.take());
            query = match sk_prefix {
                Some(prefix) => query
                    .key_condition_expression("#pk = :pk AND begins_with(#sk, :skp)")
                    .expression_attribute_names("#sk", SK)
                    .expression_attribute_values(":skp", AttributeValue::S(prefix.to_string())),
                None => query.key_condition_expression("#pk = :pk"),
            };
            let out = query.send().await.map_err(|e| self.call_error("Query", &e))?;
            for item in out.items.unwrap_or_default() {
                let text = |name: &str| match item.get(name) {
                    Some(AttributeValue::S(s)) => Some(s.clone()),
                    _ => None,
                };
                match text(CONNECTION_ID) {
                    Some(connection_id) => {
                        subscribers.push((connection_id, text(KEY_PREFIX).filter(|p| !p.is_empty())))
                    }
                    None => {
                        warn!(table = %self.table, pk, "skipping a subscription item without connectionId")
                    }
                }
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(subscribers)
    }
}

/// [`ConnectionPoster`] over API Gateway's `PostToConnection`.
#[derive(Debug, Clone)]
pub struct ApiGatewayPoster {
    client: aws_sdk_apigatewaymanagement::Client,
    endpoint: String,
}

impl ApiGatewayPoster {
    /// A client from the shared AWS configuration, its endpoint set to `endpoint` (the stage's
    /// management endpoint, [`ENV_WS_MANAGEMENT_ENDPOINT`]).
    pub fn new(shared: &aws_config::SdkConfig, endpoint: &str) -> Self {
        let config = aws_sdk_apigatewaymanagement::config::Builder::from(shared)
            .endpoint_url(endpoint)
            .build();
        ApiGatewayPoster {
            client: aws_sdk_apigatewaymanagement::Client::from_conf(config),
            endpoint: endpoint.to_string(),
        }
    }

    fn post_error(&self, err: &SdkError<PostToConnectionError, HttpResponse>) -> PostError {
        let SdkError::ServiceError(service) = err else {
            return PostError::Failed {
                retryable: true,
                message: format!("PostToConnection on {}: {err:?}", self.endpoint),
            };
        };
        let (e, status) = (service.err(), service.raw().status().as_u16());
        if e.is_gone_exception() || status == 410 {
            return PostError::Gone;
        }
        let hint = if e.is_forbidden_exception() {
            format!(
                "; check that {ENV_WS_MANAGEMENT_ENDPOINT} is the stage's management endpoint \
                 (https://{{apiId}}.execute-api.{{region}}.amazonaws.com/{{stage}}) and that the function's \
                 role allows execute-api:ManageConnections on \
                 arn:aws:execute-api:{{region}}:{{account}}:{{apiId}}/{{stage}}/POST/@connections/*"
            )
        } else if e.is_payload_too_large_exception() {
            "; API Gateway takes at most 128 KB per WebSocket message: keep the view's items smaller"
                .to_string()
        } else {
            String::new()
        };
        PostError::Failed {
            retryable: e.is_limit_exceeded_exception() || classify(e.code(), Some(status)),
            message: format!(
                "PostToConnection on {}: {}: {} (HTTP {status}){hint}",
                self.endpoint,
                e.code().unwrap_or("Unknown"),
                e.message().unwrap_or_default()
            ),
        }
    }
}

impl ConnectionPoster for ApiGatewayPoster {
    async fn post(&self, connection_id: &str, text: &str) -> Result<(), PostError> {
        self.client
            .post_to_connection()
            .connection_id(connection_id)
            .data(Blob::new(text.as_bytes()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.post_error(&e))
    }
}
