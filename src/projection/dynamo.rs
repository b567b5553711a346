//! Pure builders: a [`ViewWrite`] as the `aws-sdk-dynamodb` request parts that carry out its semantics.
//!
//! Nothing here sends a request. The caller sends:
//! - [`DynamoWrite::ConditionalPut`] as a `PutItem` (copy the `Put`'s item, condition, names and values);
//!   a `ConditionalCheckFailedException` means "an equal or newer record is already there": done.
//! - [`DynamoWrite::Put`] in a `BatchWriteItem` (the `WriteRequest`) or a `TransactWriteItems` (the
//!   `Put`). One batch must not hold two writes for the same `(pk, sk)`
//!   ([`ViewWrite::view_key`](super::ViewWrite::view_key) tells).
//! - [`DynamoWrite::Transaction`] as one `TransactWriteItems` call; a `TransactionCanceledException`
//!   whose first cancellation reason is `ConditionalCheckFailed` means "already counted": done.
//!
//! Every builder here sets all required fields, so a `BuildError` would be a bug in this module.

use aws_sdk_dynamodb::error::BuildError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, PutRequest, TransactWriteItem, Update, WriteRequest};

use super::{Item, Number, ViewWrite, item_to_dynamodb};

/// The condition of a `Latest` put: no item yet, or a strictly lower stored order.
pub const PUT_IF_NEWER_CONDITION: &str = "attribute_not_exists(pk) OR #o < :o";
/// The condition of an idempotency marker's put: the record was not applied yet.
pub const MARKER_CONDITION: &str = "attribute_not_exists(pk)";
/// The update of an aggregate.
pub const ADD_EXPRESSION: &str = "ADD #a :d";

/// The request parts for one [`ViewWrite`].
#[derive(Debug, Clone, PartialEq)]
pub enum DynamoWrite {
    /// From `PutIfNewer`: a conditional put.
    ConditionalPut(Put),
    /// From `Put`: the same unconditional put for `BatchWriteItem` and for `TransactWriteItems`.
    Put { request: WriteRequest, put: Put },
    /// From `Add`: the marker's conditional put, then the aggregate's update.
    Transaction(Vec<TransactWriteItem>),
}

/// The request parts for `write` on the views table `table`.
pub fn build(table: &str, write: &ViewWrite) -> Result<DynamoWrite, BuildError> {
    Ok(match write {
        ViewWrite::PutIfNewer {
            item,
            order_attribute,
            order,
        } => DynamoWrite::ConditionalPut(put_if_newer(table, item, order_attribute, order)?),
        ViewWrite::Put { item } => DynamoWrite::Put {
            request: write_request(item)?,
            put: put(table, item)?,
        },
        ViewWrite::Add {
            key,
            attribute,
            delta,
            marker,
        } => DynamoWrite::Transaction(add_transaction(table, key, attribute, delta, marker)?),
    })
}

/// A put of `item` conditioned on [`PUT_IF_NEWER_CONDITION`], `#o` = `order_attribute`, `:o` = `order`.
pub fn put_if_newer(
    table: &str,
    item: &Item,
    order_attribute: &str,
    order: &Number,
) -> Result<Put, BuildError> {
    put_if_newer_owned(table, item.clone(), order_attribute.to_string(), order.clone())
}

/// [`put_if_newer`], moving its parts into the request.
pub fn put_if_newer_owned(
    table: &str,
    item: Item,
    order_attribute: String,
    order: Number,
) -> Result<Put, BuildError> {
    Put::builder()
        .table_name(table)
        .set_item(Some(item_to_dynamodb(item)))
        .condition_expression(PUT_IF_NEWER_CONDITION)
        .expression_attribute_names("#o", order_attribute)
        .expression_attribute_values(":o", AttributeValue::N(order.into_string()))
        .build()
}

/// An unconditional put of `item`, for `TransactWriteItems`.
pub fn put(table: &str, item: &Item) -> Result<Put, BuildError> {
    Put::builder()
        .table_name(table)
        .set_item(Some(item_to_dynamodb(item.clone())))
        .build()
}

/// An unconditional put of `item`, for `BatchWriteItem` (which names the table outside the request).
pub fn write_request(item: &Item) -> Result<WriteRequest, BuildError> {
    write_request_owned(item.clone())
}

/// [`write_request`], moving `item` into the request.
pub fn write_request_owned(item: Item) -> Result<WriteRequest, BuildError> {
    let put = PutRequest::builder()
        .set_item(Some(item_to_dynamodb(item)))
        .build()?;
    Ok(WriteRequest::builder().put_request(put).build())
}

/// The two items of an aggregate's `TransactWriteItems`: the marker's put conditioned on
/// [`MARKER_CONDITION`], then [`ADD_EXPRESSION`] on the item at `key` (`#a` = `attribute`, `:d` = `delta`).
pub fn add_transaction(
    table: &str,
    key: &Item,
    attribute: &str,
    delta: &Number,
    marker: &Item,
) -> Result<Vec<TransactWriteItem>, BuildError> {
    let (attribute, delta) = (attribute.to_string(), delta.clone());
    add_transaction_owned(table, key.clone(), attribute, delta, marker.clone())
}

/// [`add_transaction`], moving its parts into the requests.
pub fn add_transaction_owned(
    table: &str,
    key: Item,
    attribute: String,
    delta: Number,
    marker: Item,
) -> Result<Vec<TransactWriteItem>, BuildError> {
    let marker_put = Put::builder()
        .table_name(table)
        .set_item(Some(item_to_dynamodb(marker)))
        .condition_expression(MARKER_CONDITION)
        .build()?;
    let update = Update::builder()
        .table_name(table)
        .set_key(Some(item_to_dynamodb(key)))
        .update_expression(ADD_EXPRESSION)
        .expression_attribute_names("#a", attribute)
        .expression_attribute_values(":d", AttributeValue::N(delta.into_string()))
        .build()?;
    Ok(vec![
        TransactWriteItem::builder().put(marker_put).build(),
        TransactWriteItem::builder().update(update).build(),
    ])
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn item(json: &str) -> Item {
        serde_json::from_str(json).unwrap()
    }

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.into())
    }

    #[test]
    fn put_if_newer_is_conditional_on_the_order() {
        let write = ViewWrite::PutIfNewer {
            item: item(r#"{"pk":{"S":"v#PLAYER#ada"},"sk":{"S":"LATEST"},"seq":{"N":"10"}}"#),
            order_attribute: "seq".into(),
            order: "10".parse().unwrap(),
        };
        let DynamoWrite::ConditionalPut(put) = build("views", &write).unwrap() else {
            panic!("{write:?}")
        };
        assert_eq!(put.table_name(), "views");
        assert_eq!(
            put.condition_expression(),
            Some("attribute_not_exists(pk) OR #o < :o")
        );
        assert_eq!(
            put.expression_attribute_names(),
            Some(&HashMap::from([("#o".into(), "seq".into())]))
        );
        let values = HashMap::from([(":o".to_string(), AttributeValue::N("10".into()))]);
        assert_eq!(put.expression_attribute_values(), Some(&values));
        let expected = HashMap::from([
            ("pk".to_string(), s("v#PLAYER#ada")),
            ("sk".to_string(), s("LATEST")),
            ("seq".to_string(), AttributeValue::N("10".into())),
        ]);
        assert_eq!(put.item(), &expected);
    }

    #[test]
    fn put_is_unconditional_in_both_forms() {
        let it = item(r#"{"pk":{"S":"p"},"sk":{"S":"a|b"},"x":{"B":"AAE="}}"#);
        let DynamoWrite::Put { request, put } = build("views", &ViewWrite::Put { item: it }).unwrap() else {
            panic!("expected Put")
        };
        let expected = HashMap::from([
            ("pk".to_string(), s("p")),
            ("sk".to_string(), s("a|b")),
            (
                "x".to_string(),
                AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(vec![0, 1])),
            ),
        ]);
        assert_eq!(request.put_request().map(|p| p.item()), Some(&expected));
        assert!(request.delete_request().is_none());
        assert_eq!(put.item(), &expected);
        assert_eq!(put.table_name(), "views");
        assert!(put.condition_expression().is_none() && put.expression_attribute_names().is_none());
    }

    #[test]
    fn add_is_a_marker_put_then_an_add_in_one_transaction() {
        let write = ViewWrite::Add {
            key: item(r#"{"pk":{"S":"v#GAME#g001"},"sk":{"S":"TOTAL"}}"#),
            attribute: "sum".into(),
            delta: "-12.5".parse().unwrap(),
            marker: item(r#"{"pk":{"S":"v#~applied#GAME#g001"},"sk":{"S":"LOG#1|v#GAME#g001|TOTAL"}}"#),
        };
        let DynamoWrite::Transaction(items) = build("views", &write).unwrap() else {
            panic!("{write:?}")
        };
        assert_eq!(items.len(), 2);
        let marker = items[0].put().expect("first: the marker put");
        assert_eq!(marker.table_name(), "views");
        assert_eq!(marker.condition_expression(), Some("attribute_not_exists(pk)"));
        assert!(
            marker.expression_attribute_names().is_none() && marker.expression_attribute_values().is_none()
        );
        let marker_item = HashMap::from([
            ("pk".to_string(), s("v#~applied#GAME#g001")),
            ("sk".to_string(), s("LOG#1|v#GAME#g001|TOTAL")),
        ]);
        assert_eq!(marker.item(), &marker_item);
        let update = items[1].update().expect("second: the aggregate update");
        assert_eq!(update.table_name(), "views");
        assert_eq!(update.update_expression(), "ADD #a :d");
        assert!(update.condition_expression().is_none());
        let key = HashMap::from([
            ("pk".to_string(), s("v#GAME#g001")),
            ("sk".to_string(), s("TOTAL")),
        ]);
        assert_eq!(update.key(), &key);
        assert_eq!(
            update.expression_attribute_names(),
            Some(&HashMap::from([("#a".into(), "sum".into())]))
        );
        let values = HashMap::from([(":d".to_string(), AttributeValue::N("-12.5".into()))]);
        assert_eq!(update.expression_attribute_values(), Some(&values));
    }

    #[test]
    fn owned_builders_give_what_the_borrowing_ones_give() {
        let it = item(r#"{"pk":{"S":"p"},"sk":{"S":"LATEST"},"seq":{"N":"10.0"},"ns":{"NS":["1","2.5"]}}"#);
        let order: Number = "10.0".parse().unwrap();
        assert_eq!(
            put_if_newer_owned("views", it.clone(), "seq".into(), order.clone()).unwrap(),
            put_if_newer("views", &it, "seq", &order).unwrap()
        );
        assert_eq!(
            write_request_owned(it.clone()).unwrap(),
            write_request(&it).unwrap()
        );
        let key = item(r#"{"pk":{"S":"v#g"},"sk":{"S":"TOTAL"}}"#);
        let marker = item(r#"{"pk":{"S":"v#~applied#g"},"sk":{"S":"LOG#1|v#g|TOTAL"}}"#);
        let delta: Number = "-1.50".parse().unwrap();
        let owned = add_transaction_owned("views", key.clone(), "sum".into(), delta.clone(), marker.clone());
        assert_eq!(
            owned.unwrap(),
            add_transaction("views", &key, "sum", &delta, &marker).unwrap()
        );
    }
}
