//! Pure builders: a [`ViewWrite`](super::ViewWrite) as the `aws-sdk-dynamodb` request parts that carry out its semantics,
//! and the layout of the items a writer keeps for itself (idempotency markers).
//!
//! Nothing here sends a request. The caller sends:
//! - `Latest` as a `PutItem` of [`put_if_newer_owned`]; a `ConditionalCheckFailedException` means "an
//!   equal or newer record is already there": done.
//! - `Append` in a `BatchWriteItem` ([`write_request_owned`]). One batch must not hold two writes for the
//!   same `(pk, sk)` ([`ViewWrite::view_key`](super::ViewWrite::view_key) tells).
//! - `Min`/`Max` as an `UpdateItem` of [`extreme_update`]; a failed condition means "an equal or more
//!   extreme value is there": done.
//! - `Count`/`Sum` as one `TransactWriteItems` of [`aggregate_transaction`]: a marker put per record
//!   ([`marker_key`], conditioned on [`MARKER_CONDITION`]) and one `ADD` per aggregate of the sum of its
//!   records' deltas. A `TransactionCanceledException` whose reason for a marker is
//!   `ConditionalCheckFailed` names a record applied already: drop it and send the rest again.
//!
//! Every builder here sets all required fields, so a `BuildError` would be a bug in this module.

use aws_sdk_dynamodb::error::BuildError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, PutRequest, TransactWriteItem, Update, WriteRequest};

use super::{Item, LOG_RECORD_ID, MARKER_INFIX, Number, RecordId, Value, item_to_dynamodb};

/// The condition of a `Latest` put: no item yet, a strictly lower stored order, or an equal order and a
/// lower stored record digest ([`LOG_RECORD_ID`]).
pub const PUT_IF_NEWER_CONDITION: &str = "attribute_not_exists(pk) OR #o < :o OR (#o = :o AND #r < :r)";
/// The condition of an idempotency marker's put: the record was not applied yet.
pub const MARKER_CONDITION: &str = "attribute_not_exists(pk)";
/// The update of an aggregate.
pub const ADD_EXPRESSION: &str = "ADD #a :d";
/// The condition of a `Min` update (`Max`: [`MAX_CONDITION`]).
pub const MIN_CONDITION: &str = "attribute_not_exists(#a) OR #a > :v";
/// The condition of a `Max` update.
pub const MAX_CONDITION: &str = "attribute_not_exists(#a) OR #a < :v";
/// DynamoDB's limit of actions in one `TransactWriteItems`
/// (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html>).
pub const MAX_TRANSACTION_ACTIONS: usize = 100;
/// The sort key of every idempotency marker.
pub const MARKER_SK: &str = "~";
/// The aggregate attribute recording the backfill attempt whose base is folded into the total.
pub const FOLDED_ATTRIBUTE: &str = "kappaFolded";
/// Partitions of a backfill attempt's band (spreads the band's writes).
pub const BAND_PARTITIONS: usize = 16;

/// The aggregate attribute in which the live path of view `view`'s backfill attempt `attempt` also adds
/// its deltas, so the backfill's fold can set the total to "the export's base plus what the live path
/// applied" in one update, whatever an earlier attempt left: `kappaLive<attempt>#<view>`. Named for the
/// view so a fold only ever finds its own view's aggregates, even among views sharing a key prefix (or
/// whose prefixes nest).
pub fn live_attribute(view: &str, attempt: i64) -> String {
    format!("kappaLive{attempt}#{view}")
}

/// The partition keys of backfill attempt `attempt`'s band in view `view` whose key prefix is
/// `key_prefix`: the records its live path applied itself while they might also be in the export (see
/// `crate::backfill::aggregate`). `<key_prefix>~applied#band#<view>#<attempt>#<0..f>`, sort key the
/// record's digest.
pub fn band_partitions(key_prefix: &str, view: &str, attempt: i64) -> Vec<String> {
    (0..BAND_PARTITIONS)
        .map(|i| format!("{key_prefix}{MARKER_INFIX}band#{view}#{attempt}#{i:x}"))
        .collect()
}

/// The key of `record`'s band item (see [`band_partitions`]).
pub fn band_key(key_prefix: &str, view: &str, attempt: i64, record: &RecordId) -> Item {
    let digest = record.digest();
    let partition = usize::from_str_radix(&digest[..1], 16).unwrap_or(0) % BAND_PARTITIONS;
    Item::from([
        (
            "pk".to_string(),
            Value::S(format!(
                "{key_prefix}{MARKER_INFIX}band#{view}#{attempt}#{partition:x}"
            )),
        ),
        ("sk".to_string(), Value::S(digest)),
    ])
}

/// The key of view `view`'s record-error ledger: what processes other than the operator (the view's
/// projector function, a backfill Job's pods) left out under `onRecordError`, for the operator to report
/// in `status.recordErrors`. `pk = <key_prefix>~applied#errors#<view>`, `sk = ~` (a view name is a DNS
/// label, without `#`, so no marker or band key is the same).
pub fn record_errors_key(key_prefix: &str, view: &str) -> Item {
    Item::from([
        (
            "pk".to_string(),
            Value::S(format!("{key_prefix}{MARKER_INFIX}errors#{view}")),
        ),
        ("sk".to_string(), Value::S(MARKER_SK.to_string())),
    ])
}

/// The key of view `view`'s live-progress item: what its projector function reports of its progress and
/// lag (`crate::functions::progress`), for the operator's `status.live` of a Lambda view.
/// `pk = <key_prefix>~applied#live#<view>`, `sk = ~` (no marker, band, ledger or owner key is the same:
/// a view name is a DNS label, without `#` or `/`).
pub fn live_progress_key(key_prefix: &str, view: &str) -> Item {
    Item::from([
        (
            "pk".to_string(),
            Value::S(format!("{key_prefix}{MARKER_INFIX}live#{view}")),
        ),
        ("sk".to_string(), Value::S(MARKER_SK.to_string())),
    ])
}

/// The key of the owner item of the storage at `key_prefix` (`""` for a dedicated table): which view
/// object (by uid) projected the items under the prefix. `pk = <key_prefix>~applied#owner`, `sk = ~`;
/// no marker (`~applied#<view>/…`, a view name never holds `/` or `#`), band or ledger key is the same.
/// See `crate::aws::view_storage`.
pub fn storage_owner_key(key_prefix: &str) -> Item {
    Item::from([
        (
            "pk".to_string(),
            Value::S(format!("{key_prefix}{MARKER_INFIX}owner")),
        ),
        ("sk".to_string(), Value::S(MARKER_SK.to_string())),
    ])
}

/// The key of the idempotency marker of `record` in view `view` (its name: a DNS label) whose key
/// prefix is `key_prefix`: `pk = <key_prefix>~applied#<view>/<digest>`, `sk = ~`. One item per record and
/// view (version): a record counts once in a view for the view's whole life, whichever path (backfill,
/// live, a gap's new backfill, a redelivery) brings it, and views that share a table (even a prefix)
/// never share markers. Under the view's prefix, so its IAM policy allows it and deleting the view's
/// items removes it.
pub fn marker_key(key_prefix: &str, view: &str, record: &RecordId) -> Item {
    Item::from([
        (
            "pk".to_string(),
            Value::S(format!("{key_prefix}{MARKER_INFIX}{view}/{}", record.digest())),
        ),
        ("sk".to_string(), Value::S(MARKER_SK.to_string())),
    ])
}

/// A put of `item` conditioned on [`PUT_IF_NEWER_CONDITION`], `#o` = `order_attribute`, `:o` = `order`,
/// `#r` = [`LOG_RECORD_ID`], `:r` = `record`.
pub fn put_if_newer_owned(
    table: &str,
    item: Item,
    order_attribute: String,
    order: Number,
    record: String,
) -> Result<Put, BuildError> {
    Put::builder()
        .table_name(table)
        .set_item(Some(item_to_dynamodb(item)))
        .condition_expression(PUT_IF_NEWER_CONDITION)
        .expression_attribute_names("#o", order_attribute)
        .expression_attribute_names("#r", LOG_RECORD_ID)
        .expression_attribute_values(":o", AttributeValue::N(order.into_string()))
        .expression_attribute_values(":r", AttributeValue::S(record))
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

/// `SET #a = :v` on the item at `key`, conditioned on [`MIN_CONDITION`] (or [`MAX_CONDITION`] when
/// `greatest`).
pub fn extreme_update(
    table: &str,
    key: Item,
    attribute: String,
    value: Number,
    greatest: bool,
) -> Result<Update, BuildError> {
    Update::builder()
        .table_name(table)
        .set_key(Some(item_to_dynamodb(key)))
        .update_expression("SET #a = :v")
        .condition_expression(if greatest { MAX_CONDITION } else { MIN_CONDITION })
        .expression_attribute_names("#a", attribute)
        .expression_attribute_values(":v", AttributeValue::N(value.into_string()))
        .build()
}

/// One aggregate of an [`aggregate_transaction`]: the item at `key` gets `ADD attribute delta`, where
/// `delta` is the sum of its `records`' deltas; each record's marker is put in the same transaction.
#[derive(Clone, Debug, PartialEq)]
pub struct AggregateAdd {
    pub key: Item,
    pub attribute: String,
    pub delta: Number,
    /// The marker keys ([`marker_key`]) of the records summed into `delta`.
    pub markers: Vec<Item>,
    /// Band items ([`band_key`]) put in the same transaction.
    pub bands: Vec<Item>,
    /// A second attribute the `ADD` adds `delta` to ([`live_attribute`]).
    pub shadow: Option<String>,
}

impl AggregateAdd {
    /// The actions it takes in a transaction: one per marker and band item, one for the `ADD`.
    pub fn actions(&self) -> usize {
        self.markers.len() + self.bands.len() + 1
    }
}

/// The actions of one `TransactWriteItems`: for each aggregate, its markers' conditional puts, then its
/// `ADD`. The caller keeps the total at most [`MAX_TRANSACTION_ACTIONS`].
pub fn aggregate_transaction(
    table: &str,
    adds: &[AggregateAdd],
) -> Result<Vec<TransactWriteItem>, BuildError> {
    let mut actions = Vec::with_capacity(adds.iter().map(AggregateAdd::actions).sum());
    for add in adds {
        for marker in &add.markers {
            let put = Put::builder()
                .table_name(table)
                .set_item(Some(item_to_dynamodb(marker.clone())))
                .condition_expression(MARKER_CONDITION)
                .build()?;
            actions.push(TransactWriteItem::builder().put(put).build());
        }
        for band in &add.bands {
            let put = Put::builder()
                .table_name(table)
                .set_item(Some(item_to_dynamodb(band.clone())))
                .build()?;
            actions.push(TransactWriteItem::builder().put(put).build());
        }
        let mut update = Update::builder()
            .table_name(table)
            .set_key(Some(item_to_dynamodb(add.key.clone())))
            .update_expression(ADD_EXPRESSION)
            .expression_attribute_names("#a", add.attribute.clone())
            .expression_attribute_values(":d", AttributeValue::N(add.delta.as_str().to_string()));
        if let Some(shadow) = &add.shadow {
            update = update
                .update_expression("ADD #a :d, #l :d")
                .expression_attribute_names("#l", shadow.clone());
        }
        let update = update.build()?;
        actions.push(TransactWriteItem::builder().update(update).build());
    }
    Ok(actions)
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
    fn put_if_newer_is_conditional_on_the_order_then_the_record() {
        let it = item(r#"{"pk":{"S":"v#PLAYER#ada"},"sk":{"S":"LATEST"},"seq":{"N":"10"}}"#);
        let put = put_if_newer_owned("views", it, "seq".into(), "10".parse().unwrap(), "ab".into()).unwrap();
        assert_eq!(put.table_name(), "views");
        assert_eq!(
            put.condition_expression(),
            Some("attribute_not_exists(pk) OR #o < :o OR (#o = :o AND #r < :r)")
        );
        assert_eq!(
            put.expression_attribute_names(),
            Some(&HashMap::from([
                ("#o".into(), "seq".into()),
                ("#r".into(), "logRecordId".into())
            ]))
        );
        let values = HashMap::from([
            (":o".to_string(), AttributeValue::N("10".into())),
            (":r".to_string(), s("ab")),
        ]);
        assert_eq!(put.expression_attribute_values(), Some(&values));
    }

    #[test]
    fn put_is_unconditional_in_both_forms() {
        let it = item(r#"{"pk":{"S":"p"},"sk":{"S":"a|b"},"x":{"B":"AAE="}}"#);
        let request = write_request(&it).unwrap();
        let put = put("views", &it).unwrap();
        let expected = HashMap::from([
            ("pk".to_string(), s("p")),
            ("sk".to_string(), s("a|b")),
            (
                "x".to_string(),
                AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(vec![0, 1])),
            ),
        ]);
        assert_eq!(request.put_request().map(|p| p.item()), Some(&expected));
        assert_eq!(put.item(), &expected);
        assert!(put.condition_expression().is_none() && put.expression_attribute_names().is_none());
    }

    #[test]
    fn markers_are_one_item_per_record_under_the_view_prefix() {
        let a = RecordId::new(&Value::S("A".into()), Some(&Value::S("EVT#1".into()))).unwrap();
        let b = RecordId::new(&Value::S("B".into()), Some(&Value::S("EVT#1".into()))).unwrap();
        let (ma, mb) = (marker_key("v#", "view", &a), marker_key("v#", "view", &b));
        assert_ne!(
            ma, mb,
            "a sort key repeated across partitions must not share a marker"
        );
        assert_eq!(ma["pk"], Value::S(format!("v#~applied#view/{}", a.digest())));
        assert_ne!(
            ma,
            marker_key("v#", "other", &a),
            "views sharing a prefix never share markers"
        );
        assert_eq!(ma["sk"], Value::S("~".into()));
    }

    #[test]
    fn an_aggregate_transaction_puts_each_marker_then_adds_the_summed_delta() {
        let add = AggregateAdd {
            key: item(r#"{"pk":{"S":"v#GAME#g001"},"sk":{"S":"TOTAL"}}"#),
            attribute: "sum".into(),
            delta: "-12.5".parse().unwrap(),
            markers: vec![
                item(r#"{"pk":{"S":"v#~applied#01"},"sk":{"S":"~"}}"#),
                item(r#"{"pk":{"S":"v#~applied#02"},"sk":{"S":"~"}}"#),
            ],
            bands: vec![],
            shadow: None,
        };
        let items = aggregate_transaction("views", std::slice::from_ref(&add)).unwrap();
        assert_eq!(items.len(), add.actions());
        for marker in &items[..2] {
            let put = marker.put().expect("markers first");
            assert_eq!(put.condition_expression(), Some("attribute_not_exists(pk)"));
        }
        let update = items[2].update().expect("then the aggregate update");
        assert_eq!(update.update_expression(), "ADD #a :d");
        assert!(update.condition_expression().is_none());
        let values = HashMap::from([(":d".to_string(), AttributeValue::N("-12.5".into()))]);
        assert_eq!(update.expression_attribute_values(), Some(&values));
    }

    #[test]
    fn min_and_max_are_conditional_sets() {
        let key = item(r#"{"pk":{"S":"v#g"},"sk":{"S":"TOTAL"}}"#);
        let max = extreme_update("views", key.clone(), "max".into(), "7".parse().unwrap(), true).unwrap();
        assert_eq!(max.update_expression(), "SET #a = :v");
        assert_eq!(
            max.condition_expression(),
            Some("attribute_not_exists(#a) OR #a < :v")
        );
        let min = extreme_update("views", key, "min".into(), "7".parse().unwrap(), false).unwrap();
        assert_eq!(
            min.condition_expression(),
            Some("attribute_not_exists(#a) OR #a > :v")
        );
    }
}
