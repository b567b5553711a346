//! [`MemoryStore`]: an in-memory views table that applies [`ViewWrite`]s with DynamoDB's semantics.
//!
//! It is the reference the real writes are checked against: tests compute the expected content of a view
//! with it, independently of AWS. Semantics, as DynamoDB's:
//! - `PutIfNewer`: replace the item at its key if none is stored, or if the stored `order_attribute` is a
//!   number strictly lower than `order` (a missing or non-number stored attribute fails the comparison).
//! - `Put`: replace unconditionally.
//! - `Add`: all or nothing. If the marker exists, nothing happens (the transaction is cancelled by its
//!   condition). Otherwise the marker is stored as an item and `attribute` of the item at `key` becomes
//!   `delta` (item or attribute missing) or its sum with `delta`; an existing non-number attribute or a
//!   sum DynamoDB cannot store is an error and changes nothing.

use std::collections::BTreeMap;

use super::config::{VIEW_PK, VIEW_SK};
use super::{Item, Number, NumberError, Value, ViewWrite};

/// An in-memory views table: items by `(pk, sk)`, idempotency markers included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStore {
    items: BTreeMap<(String, String), Item>,
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
            ViewWrite::PutIfNewer {
                item,
                order_attribute,
                order,
            } => {
                let key = key_of(item)?;
                let newer = match self.items.get(&key) {
                    None => true,
                    Some(stored) => matches!(stored.get(order_attribute), Some(Value::N(o)) if o < order),
                };
                if !newer {
                    return Ok(Applied::ConditionFailed);
                }
                self.items.insert(key, item.clone());
            }
            ViewWrite::Put { item } => {
                self.items.insert(key_of(item)?, item.clone());
            }
            ViewWrite::Add {
                key,
                attribute,
                delta,
                marker,
            } => {
                let marker_key = key_of(marker)?;
                let item_key = key_of(key)?;
                if self.items.contains_key(&marker_key) {
                    return Ok(Applied::ConditionFailed);
                }
                let total = self.added(&item_key, attribute, delta)?;
                self.items
                    .entry(item_key)
                    .or_insert_with(|| key.clone())
                    .insert(attribute.clone(), total);
                self.items.insert(marker_key, marker.clone());
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
            Some(Value::N(current)) => {
                current
                    .checked_add(delta)
                    .map(Value::N)
                    .map_err(|source| MemoryStoreError::Overflow {
                        pk,
                        sk,
                        attribute: attribute_name,
                        source,
                    })
            }
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

    /// Every item, markers included, in `(pk, sk)` order.
    pub fn items(&self) -> impl Iterator<Item = &Item> {
        self.items.values()
    }

    /// The number of items, markers included.
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
            .apply(&ViewWrite::Put {
                item: item(r#"{"pk":{"S":"p"},"sk":{"S":"LATEST"}}"#),
            })
            .unwrap();
        assert_eq!(
            store.apply(&put_if_newer("1", "one")).unwrap(),
            Applied::ConditionFailed
        );
    }

    fn add(attribute: &str, delta: &str, marker_sk: &str) -> ViewWrite {
        ViewWrite::Add {
            key: item(r#"{"pk":{"S":"v#p"},"sk":{"S":"TOTAL"}}"#),
            attribute: attribute.into(),
            delta: delta.parse().unwrap(),
            marker: item(&format!(
                r#"{{"pk":{{"S":"v#~applied#x"}},"sk":{{"S":"{marker_sk}"}}}}"#
            )),
        }
    }

    #[test]
    fn add_counts_each_marker_once_and_stores_markers() {
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
        assert!(store.get("v#~applied#x", "a").is_some() && store.get("v#~applied#x", "b").is_some());
        assert_eq!(store.len(), 3);
    }

    #[test]
    fn failed_add_changes_nothing() {
        let mut store = MemoryStore::new();
        store
            .apply(&add("sum", "99999999999999999999999999999999999999", "a"))
            .unwrap();
        let before = store.clone();
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
        assert!(store.get("v#~applied#x", "b").is_none() && store.get("v#~applied#x", "c").is_none());
        assert_eq!(before.len(), 2);
    }

    #[test]
    fn writes_without_keys_are_rejected() {
        let mut store = MemoryStore::new();
        let err = store
            .apply(&ViewWrite::Put {
                item: item(r#"{"pk":{"S":"p"}}"#),
            })
            .unwrap_err();
        assert_eq!(err, MemoryStoreError::InvalidKey);
        let err = store
            .apply(&ViewWrite::Put {
                item: item(r#"{"pk":{"S":"p"},"sk":{"N":"1"}}"#),
            })
            .unwrap_err();
        assert_eq!(err, MemoryStoreError::InvalidKey);
    }
}
