//! The local stack is real: a kube-apiserver with authentication and RBAC on, and an AWS API server
//! whose DynamoDB tables have working streams.

mod common;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    StreamSpecification, StreamViewType,
};
use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use kube::{Api, Client, Config};

#[tokio::test]
async fn kubernetes_stores_and_returns_objects() {
    let client = common::kube_client().await;
    let ns = common::namespace(&client, "stack-configmap").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "greeting"},
        "data": {"hello": "kappa"}
    }))
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let back = cms.get("greeting").await.unwrap();
    assert_eq!(back.data.unwrap()["hello"], "kappa");
    assert!(back.metadata.uid.is_some(), "a real API server assigns a uid");
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn kubernetes_refuses_unauthenticated_requests() {
    common::kube_client().await;
    let mut config = Config::infer().await.unwrap();
    config.auth_info = Default::default(); // no client certificate, no token
    let anonymous = Client::try_from(config).unwrap();
    let err = Api::<ConfigMap>::namespaced(anonymous, "default")
        .list(&Default::default())
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(status) => assert_eq!(status.code, 401, "{status:?}"),
        other => panic!("expected 401 Unauthorized, got {other}"),
    }
}

#[tokio::test]
async fn dynamodb_streams_deliver_written_items() {
    let config = common::aws_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&config);
    let streams = aws_sdk_dynamodbstreams::Client::new(&config);
    let table = format!("stack-test-{}", common::free_port());
    let created = ddb
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("create table: {e:?}; {}", common::START_STACK));
    let stream_arn = created
        .table_description()
        .unwrap()
        .latest_stream_arn()
        .unwrap()
        .to_string();
    ddb.put_item()
        .table_name(&table)
        .item("pk", AttributeValue::S("PLAYER#ada".into()))
        .item("score", AttributeValue::N("42".into()))
        .send()
        .await
        .unwrap();

    let described = streams
        .describe_stream()
        .stream_arn(&stream_arn)
        .send()
        .await
        .unwrap();
    let shard = described.stream_description().unwrap().shards()[0]
        .shard_id()
        .unwrap()
        .to_string();
    let iterator = streams
        .get_shard_iterator()
        .stream_arn(&stream_arn)
        .shard_id(&shard)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();
    let records = streams
        .get_records()
        .shard_iterator(iterator)
        .send()
        .await
        .unwrap();
    let record = &records.records()[0];
    assert_eq!(record.event_name().unwrap().as_str(), "INSERT");
    let image = record.dynamodb().unwrap().new_image().unwrap();
    assert_eq!(image["pk"].as_s().unwrap(), "PLAYER#ada");
    assert_eq!(image["score"].as_n().unwrap(), "42");
    ddb.delete_table().table_name(&table).send().await.unwrap();
}
