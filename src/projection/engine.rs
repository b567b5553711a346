//! [`ProjectionConfig::project`]: one log record in, at most one idempotent [`ViewWrite`] out.
//!
//! Guarantees:
//! - Pure and deterministic: the same record always gives the same write.
//! - Every write is idempotent and commutative under the DynamoDB semantics documented on [`ViewWrite`]
//!   (and implemented by [`MemoryStore`](super::MemoryStore)): applying a view's writes in any order, any
//!   number of times each, gives the same view. The one caveat is `Latest` with two different records
//!   that project to the same view key with the same order value: the first one applied wins.
//! - The view item's keys are the strings `pk` (prefixed with the view's key prefix) and `sk`.
//!
//! The caller passes the log item itself: an export's `Item`, or a stream record's `NewImage` (a log is
//! append-only, so `REMOVE` records have nothing to project).

use std::fmt;

use super::config::{LOG_PK, LOG_SK, Mode, TemplatePart, VIEW_PK, VIEW_SK};
use super::error::describe;
use super::{Item, Number, ProjectionConfig, ProjectionError, Template, Value};

/// DynamoDB's limit on a partition key value, in bytes.
pub const MAX_PARTITION_KEY_BYTES: usize = 2048;
/// DynamoDB's limit on a sort key value, in bytes.
pub const MAX_SORT_KEY_BYTES: usize = 1024;
/// The view item attribute holding a `Count` aggregate.
pub const COUNT_ATTRIBUTE: &str = "count";
/// The view item attribute holding a `Sum` aggregate.
pub const SUM_ATTRIBUTE: &str = "sum";
/// Between the key prefix and the log record's `pk` in an idempotency marker's `pk`.
pub const MARKER_INFIX: &str = "~applied#";

/// The sort key of a `Latest` item when no `sortKey` template is set.
pub const LATEST_SK: &str = "LATEST";
/// The sort key of a `Count` or `Sum` item when no `sortKey` template is set.
pub const TOTAL_SK: &str = "TOTAL";

/// One write to the views table, with the DynamoDB semantics that make it idempotent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewWrite {
    /// Mode `Latest`: `PutItem` of `item` with the condition
    /// `attribute_not_exists(pk) OR #o < :o` (`#o` = `order_attribute`, `:o` = `order`): it replaces the
    /// stored item only if there is none or the stored order is strictly lower. A redelivered or older
    /// record fails the condition (`ConditionalCheckFailedException`), which the caller treats as done.
    /// `item` always carries `order_attribute` = `order`.
    PutIfNewer {
        item: Item,
        order_attribute: String,
        order: Number,
    },
    /// Mode `Append`: an unconditional `PutItem` (or `BatchWriteItem` put). The view key derives from the
    /// log record's own key, so a replay overwrites the same item with the same content.
    Put { item: Item },
    /// Modes `Count` (`attribute` = `count`, `delta` = 1) and `Sum` (`attribute` = `sum`, `delta` = the
    /// record's `sumOf`): the record counts once however often it is applied. `marker` identifies the
    /// record (its `sk` is unique per log record and view key). Two ways to carry it out on DynamoDB:
    /// one `TransactWriteItems` with a `Put` of `marker` conditioned on `attribute_not_exists(pk)` and an
    /// `Update` `ADD #a :d` of the item at `key` ([`dynamo::add_transaction`](super::dynamo)); or, as the
    /// views-table adapter does (`crate::aws::views`), the marker as a contribution item holding `delta`
    /// and the aggregate recomputed from its contributions.
    Add {
        key: Item,
        attribute: String,
        delta: Number,
        marker: Item,
    },
}

impl ViewWrite {
    /// The `(pk, sk)` of the view item written (not of the marker).
    pub fn view_key(&self) -> (&str, &str) {
        let item = match self {
            ViewWrite::PutIfNewer { item, .. } | ViewWrite::Put { item } => item,
            ViewWrite::Add { key, .. } => key,
        };
        view_key_of(item)
    }
}

/// The `(pk, sk)` of a view item (`""` for a missing or non-`S` key), as [`ViewWrite::view_key`] reads it.
pub fn view_key_of(item: &Item) -> (&str, &str) {
    let get = |name| item.get(name).and_then(Value::as_s).unwrap_or_default();
    (get(VIEW_PK), get(VIEW_SK))
}

/// The log record's own key values, shown in errors as `pk="PLAYER#ada", sk="LOG#10"`.
struct LogRecordKeys<'a> {
    pk_name: &'a str,
    pk: &'a str,
    sk: Option<(&'a str, &'a str)>,
}

impl fmt::Display for LogRecordKeys<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={:?}", self.pk_name, self.pk)?;
        if let Some((name, value)) = self.sk {
            write!(f, ", {name}={value:?}")?;
        }
        Ok(())
    }
}

/// The text a key takes from a value: an `S` as is, an `N` as written.
fn key_text(value: &Value) -> Option<&str> {
    match value {
        Value::S(s) => Some(s),
        Value::N(n) => Some(n.as_str()),
        _ => None,
    }
}

/// What [`ProjectionConfig::project`] and [`ProjectionConfig::project_owned`] work out from the borrowed
/// record before they build the view item: everything but the kept attributes.
enum Prepared<'a> {
    /// `Count` and `Sum`: the write is complete (it keeps no attribute).
    Done(ViewWrite),
    /// `Latest` (with its order) and `Append`: the item still needs the record's kept attributes.
    Item {
        pk: String,
        sk: String,
        log: LogRecordKeys<'a>,
        order: Option<Number>,
    },
}

impl ProjectionConfig {
    /// Projects one log record. `Ok(None)` when the record is not for this view: its record type (an `S`
    /// in the log's `recordTypeAttribute`; missing or another type counts as no type) is not one of the
    /// view's, or a filter condition does not hold. Errors are record errors; see [`ProjectionError`].
    pub fn project(&self, record: &Item) -> Result<Option<ViewWrite>, ProjectionError> {
        let (pk, sk, log, order) = match self.prepare(record)? {
            None => return Ok(None),
            Some(Prepared::Done(write)) => return Ok(Some(write)),
            Some(Prepared::Item { pk, sk, log, order }) => (pk, sk, log, order),
        };
        let kept = if self.attributes.is_empty() {
            record
                .iter()
                .filter(|(name, _)| !self.is_log_key(name))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        } else {
            let kept = self.attributes.iter();
            kept.filter_map(|(from, to)| Some((to.clone(), record.get(from)?.clone())))
                .collect()
        };
        let log_sk = log.sk.map(|(_, s)| s.to_string());
        Ok(Some(self.finish(kept, log.pk.to_string(), log_sk, pk, sk, order)))
    }

    /// [`project`](Self::project) for a caller that owns the record and no longer needs it (the backfill
    /// reads each export item once): the kept attributes and the log's key values move into the view item
    /// instead of being cloned. Gives exactly the same result as `project(&record)`.
    pub fn project_owned(&self, mut record: Item) -> Result<Option<ViewWrite>, ProjectionError> {
        let (pk, sk, log, order) = match self.prepare(&record)? {
            None => return Ok(None),
            Some(Prepared::Done(write)) => return Ok(Some(write)),
            Some(Prepared::Item { pk, sk, log, order }) => (pk, sk, log, order),
        };
        let write = if self.attributes.is_empty() {
            // The record itself becomes the view item: its log keys move out (into `logPk`/`logSk`).
            let log_pk = self.take_log_key(&mut record, &self.log_keys.partition_key)?;
            let log_sk = match &self.log_keys.sort_key {
                Some(name) if *name == self.log_keys.partition_key => Some(log_pk.clone()),
                Some(name) => Some(self.take_log_key(&mut record, name)?),
                None => None,
            };
            self.finish(record, log_pk, log_sk, pk, sk, order)
        } else {
            let (log_pk, log_sk) = (log.pk.to_string(), log.sk.map(|(_, s)| s.to_string()));
            let mut kept = Item::new();
            for (i, (from, to)) in self.attributes.iter().enumerate() {
                // Two mappings may read one attribute: only the last one may take it.
                let read_again = self.attributes[i + 1..].iter().any(|(f, _)| f == from);
                let value = match read_again {
                    true => record.get(from).cloned(),
                    false => record.remove(from),
                };
                if let Some(value) = value {
                    kept.insert(to.clone(), value);
                }
            }
            self.finish(kept, log_pk, log_sk, pk, sk, order)
        };
        Ok(Some(write))
    }

    /// Moves the text of the log key `name` out of `record` (checked by [`prepare`](Self::prepare)). An
    /// attribute the view item sets anyway keeps its place, holding `NULL` until it is overwritten, which
    /// spares the map a removal and an insertion.
    fn take_log_key(&self, record: &mut Item, name: &str) -> Result<String, ProjectionError> {
        let value = match self.sets_attribute(name) {
            true => record
                .get_mut(name)
                .map(|slot| std::mem::replace(slot, Value::Null)),
            false => record.remove(name),
        };
        match value {
            Some(Value::S(s)) => Ok(s),
            Some(Value::N(n)) => Ok(n.into_string()),
            other => Err(ProjectionError::LogKey {
                view: self.view.clone(),
                attribute: name.to_string(),
                found: describe(other.as_ref()),
            }),
        }
    }

    /// Whether [`finish`](Self::finish) sets the view item's attribute `name`.
    fn sets_attribute(&self, name: &str) -> bool {
        [LOG_PK, VIEW_PK, VIEW_SK].contains(&name)
            || (name == LOG_SK && self.log_keys.sort_key.is_some())
            || matches!(&self.mode, Mode::Latest { stored_as, .. } if stored_as == name)
    }

    /// Every check and every key of the write, from the borrowed record.
    fn prepare<'a>(&'a self, record: &'a Item) -> Result<Option<Prepared<'a>>, ProjectionError> {
        let record_type = record.get(&self.record_type_attribute).and_then(Value::as_s);
        if !record_type.is_some_and(|t| self.record_types.contains(t)) {
            return Ok(None);
        }
        if !self.filter.iter().all(|c| c.holds(record)) {
            return Ok(None);
        }
        let log = self.log_record_keys(record)?;
        // Room for a typical key, so that rendering does not grow the string piece by piece.
        let mut pk = String::with_capacity(self.key_prefix.len() + 64);
        pk.push_str(&self.key_prefix);
        self.render_into(&mut pk, &self.partition_key, "partitionKey", record, &log)?;
        let sk = match (&self.sort_key, &self.mode) {
            (Some(template), _) => {
                let mut sk = String::new();
                self.render_into(&mut sk, template, "sortKey", record, &log)?;
                sk
            }
            (None, Mode::Latest { .. }) => LATEST_SK.to_string(),
            (None, Mode::Append) => match log.sk {
                Some((_, log_sk)) => format!("{}|{log_sk}", log.pk),
                None => log.pk.to_string(),
            },
            (None, Mode::Count | Mode::Sum { .. }) => TOTAL_SK.to_string(),
        };
        self.check_key("pk", &pk, MAX_PARTITION_KEY_BYTES, &log)?;
        self.check_key("sk", &sk, MAX_SORT_KEY_BYTES, &log)?;

        let order = match &self.mode {
            Mode::Latest { order_by, .. } => Some(self.number(
                record,
                order_by,
                &log,
                |view, attribute, found, record| ProjectionError::OrderAttribute {
                    view,
                    attribute,
                    found,
                    record,
                },
            )?),
            Mode::Append => None,
            Mode::Count => {
                return Ok(Some(Prepared::Done(self.add(
                    COUNT_ATTRIBUTE,
                    Number::from(1),
                    &log,
                    pk,
                    sk,
                )?)));
            }
            Mode::Sum { sum_of } => {
                let delta = self.number(record, sum_of, &log, |view, attribute, found, record| {
                    ProjectionError::SumAttribute {
                        view,
                        attribute,
                        found,
                        record,
                    }
                })?;
                return Ok(Some(Prepared::Done(self.add(
                    SUM_ATTRIBUTE,
                    delta,
                    &log,
                    pk,
                    sk,
                )?)));
            }
        };
        Ok(Some(Prepared::Item { pk, sk, log, order }))
    }

    /// The view item from its kept attributes: then `logPk`/`logSk`, then `pk`/`sk` (each later step wins
    /// a name clash), then, for `Latest`, the order.
    fn finish(
        &self,
        mut item: Item,
        log_pk: String,
        log_sk: Option<String>,
        pk: String,
        sk: String,
        order: Option<Number>,
    ) -> ViewWrite {
        // A log item rarely has `logPk`/`logSk` already, but often has `pk`/`sk`.
        item.insert(LOG_PK.to_string(), Value::S(log_pk));
        if let Some(log_sk) = log_sk {
            item.insert(LOG_SK.to_string(), Value::S(log_sk));
        }
        set(&mut item, VIEW_PK, Value::S(pk));
        set(&mut item, VIEW_SK, Value::S(sk));
        match (&self.mode, order) {
            (Mode::Latest { stored_as, .. }, Some(order)) => {
                // Often the kept attributes hold the very same number already (same text, same value).
                let holds_it =
                    matches!(item.get(stored_as), Some(Value::N(n)) if n.as_str() == order.as_str());
                if !holds_it {
                    set(&mut item, stored_as, Value::N(order.clone()));
                }
                ViewWrite::PutIfNewer {
                    item,
                    order_attribute: stored_as.clone(),
                    order,
                }
            }
            _ => ViewWrite::Put { item },
        }
    }

    fn is_log_key(&self, name: &str) -> bool {
        name == self.log_keys.partition_key || self.log_keys.sort_key.as_deref() == Some(name)
    }

    fn log_record_keys<'a>(&'a self, record: &'a Item) -> Result<LogRecordKeys<'a>, ProjectionError> {
        let read = |name: &str| {
            let value = record.get(name);
            value.and_then(key_text).ok_or_else(|| ProjectionError::LogKey {
                view: self.view.clone(),
                attribute: name.to_string(),
                found: describe(value),
            })
        };
        let pk_name = self.log_keys.partition_key.as_str();
        let pk = read(pk_name)?;
        let sk = match &self.log_keys.sort_key {
            Some(name) => Some((name.as_str(), read(name)?)),
            None => None,
        };
        Ok(LogRecordKeys { pk_name, pk, sk })
    }

    fn render_into(
        &self,
        out: &mut String,
        template: &Template,
        which: &'static str,
        record: &Item,
        log: &LogRecordKeys,
    ) -> Result<(), ProjectionError> {
        for part in template.parts() {
            match part {
                TemplatePart::Literal(text) => out.push_str(text),
                TemplatePart::Attribute(name) => {
                    let value = record.get(name);
                    let text = value
                        .and_then(key_text)
                        .ok_or_else(|| ProjectionError::KeyAttribute {
                            view: self.view.clone(),
                            template: which,
                            attribute: name.clone(),
                            found: describe(value),
                            record: log.to_string(),
                        })?;
                    out.push_str(text);
                }
            }
        }
        Ok(())
    }

    fn check_key(
        &self,
        key: &'static str,
        value: &str,
        max: usize,
        log: &LogRecordKeys,
    ) -> Result<(), ProjectionError> {
        if value.is_empty() {
            return Err(ProjectionError::EmptyKey {
                view: self.view.clone(),
                key,
                record: log.to_string(),
            });
        }
        if value.len() > max {
            let (view, bytes, record) = (self.view.clone(), value.len(), log.to_string());
            return Err(ProjectionError::KeyTooLong {
                view,
                key,
                bytes,
                max,
                record,
            });
        }
        Ok(())
    }

    /// The record's number attribute `name`, or the error `make` builds from
    /// (view, attribute, found, record).
    fn number(
        &self,
        record: &Item,
        name: &str,
        log: &LogRecordKeys,
        make: impl FnOnce(String, String, String, String) -> ProjectionError,
    ) -> Result<Number, ProjectionError> {
        match record.get(name) {
            Some(Value::N(n)) => Ok(n.clone()),
            other => Err(make(
                self.view.clone(),
                name.to_string(),
                describe(other),
                log.to_string(),
            )),
        }
    }

    fn add(
        &self,
        attribute: &str,
        delta: Number,
        log: &LogRecordKeys,
        pk: String,
        sk: String,
    ) -> Result<ViewWrite, ProjectionError> {
        let marker_pk = format!("{}{MARKER_INFIX}{}", self.key_prefix, log.pk);
        let marker_sk = format!("{}|{pk}|{sk}", log.sk.map_or("-", |(_, s)| s));
        self.check_key("marker pk", &marker_pk, MAX_PARTITION_KEY_BYTES, log)?;
        self.check_key("marker sk", &marker_sk, MAX_SORT_KEY_BYTES, log)?;
        Ok(ViewWrite::Add {
            key: key_item(pk, sk),
            attribute: attribute.to_string(),
            delta,
            marker: key_item(marker_pk, marker_sk),
        })
    }
}

/// `item[name] = value`, reusing the attribute's name when it is there already.
fn set(item: &mut Item, name: &str, value: Value) {
    match item.get_mut(name) {
        Some(slot) => *slot = value,
        None => {
            item.insert(name.to_string(), value);
        }
    }
}

fn key_item(pk: String, sk: String) -> Item {
    Item::from([
        (VIEW_PK.to_string(), Value::S(pk)),
        (VIEW_SK.to_string(), Value::S(sk)),
    ])
}

#[cfg(test)]
mod tests;
