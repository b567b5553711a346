//! [`MemoryStore`]: an in-memory views table that applies [`ViewWrite`]s with DynamoDB's semantics.
//!
//! It is the reference the real writes are checked against: tests compute the expected content of a view
//! with it, independently of AWS. Semantics, as DynamoDB's:
//! - `PutIfNewer`: replace the item at its key if none is stored, or if the stored `order_attribute` is a
//!   number strictly lower than `order` (a missing or non-number stored attribute fails the comparison).
//! - `Put`: replace unconditionally.
//!   Of equal orders, the greater [`LOG_RECORD_ID`](super::LOG_RECORD_ID) wins (a stored item without one
//!   keeps its place).
//! - `Add`: all or nothing, once per record. If the record was applied to the item at `key` already,
//!   nothing happens (the transaction is cancelled by its marker's condition). Otherwise the record is
//!   remembered and `attribute` of the item at `key` becomes `delta` (item or attribute missing) or its
//!   sum with `delta`; an existing non-number attribute or a sum DynamoDB cannot store is an error and
//!   changes nothing.
//! - `Extreme`: `attribute` becomes `value` when missing or when `value` is strictly lower (`Min`) or
//!   greater (`Max`); otherwise the condition fails.
//!
//! Idempotency markers are kept apart from the items: [`MemoryStore::items`] is the view as readers see
//! it.

use std::collections::{BTreeMap, BTreeSet};

use super::config::{VIEW_PK, VIEW_SK};
use super::{Item, Number, NumberError, Value, ViewWrite};

/// An in-memory views table: items by `(pk, sk)`, idempotency markers included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStore {
    items: BTreeMap<(String, String), Item>,
    /// `(pk, sk, record digest)` of every `Add` applied.
    markers: BTreeSet<(String, String, String)>,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The table changed (or was rewritten with the same content).
    Written,
    /// A condition failed: an older or replayed `Latest` record, or an aggregate record already counted.
    ConditionFailed,
}

/// A write DynamoDB would reject with a `ValidationException`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryStoreError {
    /// An item or key without string `pk` and `sk`.
    #[error("an item or key without non-empty string `pk` and `sk`")]
    InvalidKey,
    /// `ADD` to an attribute that holds another type.
    #[error("item pk={pk:?}, sk={sk:?}: ADD to `{attribute}`, which is a {found}, not a number")]
    NotANumber {
        pk: String,
        sk: String,
        attribute: String,
        found: &'static str,
    },
    /// `ADD` whose result DynamoDB cannot store.
    #[error("item pk={pk:?}, sk={sk:?}: ADD to `{attribute}`: {source}")]
    Overflow {
        pk: String,
        sk: String,
        attribute: String,
        #[source]
        source: NumberError,
    },
}

fn key_of(item: &Item) -> Result<(String, String), MemoryStoreError> {
    let get = |name| match item.get(name) {
        Some(Value::S(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(MemoryStoreError::InvalidKey),
    };
    Ok((get(VIEW_PK)?, get(VIEW_SK)?))
}

impl MemoryStore {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one write; see the module documentation for the semantics.
    pub fn apply(&mut self, write: &ViewWrite) -> Result<Applied, MemoryStoreError> {
        match write {
            ViewWrite::PutIfNewer { item, order_attribute, order, record } => {
                let key = key_of(item)?;
                let newer = match self.items.get(&key) {
                    None => true,
                    Some(stored) => match stored.get(order_attribute) {
                        Some(Value::N(o)) if o < order => true,
                        Some(Value::N(o)) if o == order => matches!(
                            stored.get(super::LOG_RECORD_ID),
                            Some(Value::S(r)) if r < record
                        ),
                        _ => false,
                    },
                };
                if !newer {
                    return Ok(Applied::ConditionFailed);
                }
                self.items.insert(key, item.clone());
            }
            ViewWrite::Put { item } => {
                self.items.insert(key_of(item)?, item.clone());
            }
            ViewWrite::Add { key, attribute, delta, record } => {
                let item_key = key_of(key)?;
                let marker = (item_key.0.clone(), item_key.1.clone(), record.digest());
                if self.markers.contains(&marker) {
                    return Ok(Applied::ConditionFailed);
                }
                let total = self.added(&item_key, attribute, delta)?;
                self.items
                    .entry(item_key)
                    .or_insert_with(|| key.clone())
                    .insert(attribute.clone(), total);
                self.markers.insert(marker);
            }
            ViewWrite::Extreme { key, attribute, value, greatest } => {
                let item_key = key_of(key)?;
                let beats = match self.items.get(&item_key).and_then(|i| i.get(attribute)) {
                    None => true,
                    Some(Value::N(stored)) => match greatest {
                        true => value > stored,
                        false => value < stored,
                    },
                    Some(other) => {
                        return Err(MemoryStoreError::NotANumber {
                            pk: item_key.0,
                            sk: item_key.1,
                            attribute: attribute.clone(),
                            found: other.type_name(),
                        });
                    }
                };
                if !beats {
                    return Ok(Applied::ConditionFailed);
                }
                self.items
                    .entry(item_key)
                    .or_insert_with(|| key.clone())
                    .insert(attribute.clone(), Value::N(value.clone()));
            }
        }
        Ok(Applied::Written)
    }

    /// The value `ADD attribute delta` would leave at `key`, or DynamoDB's error.
    fn added(
        &self,
        key: &(String, String),
        attribute: &str,
        delta: &Number,
    ) -> Result<Value, MemoryStoreError> {
        let (pk, sk) = (key.0.clone(), key.1.clone());
        let attribute_name = attribute.to_string();
        match self.items.get(key).and_then(|item| item.get(attribute)) {
            None => Ok(Value::N(delta.clone())),
            Some(Value::N(current)) => current
                .checked_add(delta)
                .map(Value::N)
                .map_err(|source| MemoryStoreError::Overflow { pk, sk, attribute: attribute_name, source }),
            Some(other) => Err(MemoryStoreError::NotANumber {
                pk,
                sk,
                attribute: attribute_name,
                found: other.type_name(),
            }),
        }
    }

    /// Applies writes in order, stopping at the first error. Returns how many were [`Applied::Written`].
    pub fn apply_all<'a>(
        &mut self,
        writes: impl IntoIterator<Item = &'a ViewWrite>,
    ) -> Result<usize, MemoryStoreError> {
        let mut written = 0;
        for write in writes {
            if self.apply(write)? == Applied::Written {
                written += 1;
            }
        }
        Ok(written)
    }

    /// The item at `(pk, sk)`.
    pub fn get(&self, pk: &str, sk: &str) -> Option<&Item> {
        self.items.get(&(pk.to_string(), sk.to_string()))
    }

    /// Every view item (no idempotency markers), in `(pk, sk)` order.
    pub fn items(&self) -> impl Iterator<Item = &Item> {
        self.items.values()
    }

    /// The number of view items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(json: &str) -> Item {
        serde_json::from_str(json).unwrap()
    }

    fn put_if_newer(seq: &str, name: &str) -> ViewWrite {
        let json = format!(
            r#"{{"pk":{{"S":"p"}},"sk":{{"S":"LATEST"}},"seq":{{"N":"{seq}"}},"n":{{"S":"{name}"}}}}"#
        );
        ViewWrite::PutIfNewer {
            item: item(&json),
            order_attribute: "seq".into(),
            order: seq.parse().unwrap(),
            record: name.into(),
        }
    }

    #[test]
    fn equal_orders_keep_the_greater_record_digest_whatever_the_order_of_arrival() {
        let tagged = |seq: &str, record: &str| {
            let mut w = put_if_newer(seq, record);
            if let ViewWrite::PutIfNewer { item, .. } = &mut w {
                item.insert(crate::projection::LOG_RECORD_ID.into(), Value::S(record.into()));
            }
            w
        };
        for order in [["a", "b"], ["b", "a"]] {
            let mut store = MemoryStore::new();
            for r in order {
                store.apply(&tagged("5", r)).unwrap();
            }
            assert_eq!(store.get("p", "LATEST").unwrap()["n"], Value::S("b".into()));
        }
    }

    #[test]
    fn put_if_newer_keeps_the_greatest_order() {
        let mut store = MemoryStore::new();
        assert_eq!(store.apply(&put_if_newer("9", "nine")).unwrap(), Applied::Written);
        assert_eq!(store.apply(&put_if_newer("10", "ten")).unwrap(), Applied::Written);
        assert_eq!(
            store.apply(&put_if_newer("9", "nine")).unwrap(),
            Applied::ConditionFailed
        );
        assert_eq!(
            store.apply(&put_if_newer("10", "again")).unwrap(),
            Applied::ConditionFailed,
            "strictly"
        );
        assert_eq!(store.get("p", "LATEST").unwrap()["n"], Value::S("ten".into()));
    }

    #[test]
    fn put_if_newer_fails_against_a_stored_item_without_a_number_order() {
        let mut store = MemoryStore::new();
        store
            .apply(&ViewWrite::Put { item: item(r#"{"pk":{"S":"p"},"sk":{"S":"LATEST"}}"#) })
            .unwrap();
        assert_eq!(
            store.apply(&put_if_newer("1", "one")).unwrap(),
            Applied::ConditionFailed
        );
    }

    fn add(attribute: &str, delta: &str, record: &str) -> ViewWrite {
        ViewWrite::Add {
            key: item(r#"{"pk":{"S":"v#p"},"sk":{"S":"TOTAL"}}"#),
            attribute: attribute.into(),
            delta: delta.parse().unwrap(),
            record: crate::projection::RecordId::new(&Value::S(record.into()), None).unwrap(),
        }
    }

    #[test]
    fn add_counts_each_record_once() {
        let mut store = MemoryStore::new();
        assert_eq!(store.apply(&add("sum", "1.5", "a")).unwrap(), Applied::Written);
        assert_eq!(
            store.apply(&add("sum", "1.5", "a")).unwrap(),
            Applied::ConditionFailed
        );
        assert_eq!(store.apply(&add("sum", "-0.25", "b")).unwrap(), Applied::Written);
        assert_eq!(
            store.get("v#p", "TOTAL").unwrap()["sum"],
            Value::N("1.25".parse().unwrap())
        );
        assert_eq!(store.len(), 1, "markers are not view items");
    }

    #[test]
    fn failed_add_changes_nothing() {
        let mut store = MemoryStore::new();
        store
            .apply(&add("sum", "99999999999999999999999999999999999999", "a"))
            .unwrap();
        let err = store.apply(&add("sum", "0.5", "b")).unwrap_err();
        assert!(matches!(err, MemoryStoreError::Overflow { .. }), "{err}");
        store
            .apply(&ViewWrite::Put {
                item: item(r#"{"pk":{"S":"v#p"},"sk":{"S":"TOTAL"},"n":{"S":"x"}}"#),
            })
            .unwrap();
        let err = store.apply(&add("n", "1", "c")).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"item pk="v#p", sk="TOTAL": ADD to `n`, which is a S, not a number"#
        );
        // Neither failed record was remembered: once fixed, they apply.
        store
            .apply(&ViewWrite::Put { item: item(r#"{"pk":{"S":"v#p"},"sk":{"S":"TOTAL"}}"#) })
            .unwrap();
        assert_eq!(store.apply(&add("sum", "0.5", "b")).unwrap(), Applied::Written);
    }

    #[test]
    fn min_and_max_keep_the_extreme_and_ignore_replays() {
        let extreme = |value: &str, greatest: bool| ViewWrite::Extreme {
            key: item(r#"{"pk":{"S":"v#p"},"sk":{"S":"TOTAL"}}"#),
            attribute: if greatest { "max" } else { "min" }.into(),
            value: value.parse().unwrap(),
            greatest,
        };
        let mut store = MemoryStore::new();
        for v in ["5", "-2.5", "7", "7.0", "-2.5", "6"] {
            store.apply(&extreme(v, true)).unwrap();
            store.apply(&extreme(v, false)).unwrap();
        }
        let stored = store.get("v#p", "TOTAL").unwrap();
        assert_eq!(stored["max"], Value::N("7".parse().unwrap()));
        assert_eq!(stored["min"], Value::N("-2.5".parse().unwrap()));
        assert_eq!(
            store.apply(&extreme("7", true)).unwrap(),
            Applied::ConditionFailed
        );
    }

    #[test]
    fn writes_without_keys_are_rejected() {
        let mut store = MemoryStore::new();
        let err = store
            .apply(&ViewWrite::Put { item: item(r#"{"pk":{"S":"p"}}"#) })
            .unwrap_err();
        assert_eq!(err, MemoryStoreError::InvalidKey);
        let err = store
            .apply(&ViewWrite::Put { item: item(r#"{"pk":{"S":"p"},"sk":{"N":"1"}}"#) })
            .unwrap_err();
        assert_eq!(err, MemoryStoreError::InvalidKey);
    }
}
