//! [`ProjectionConfig::project`]: one log record in, at most one idempotent [`ViewWrite`] out.
//!
//! Guarantees:
//! - Pure and deterministic: the same record always gives the same write.
//! - Every write is idempotent and commutative under the DynamoDB semantics documented on [`ViewWrite`]
//!   (and implemented by [`MemoryStore`](super::MemoryStore)): applying a view's writes in any order, any
//!   number of times each, gives the same view. Every write carries the log record's [`RecordId`] (its
//!   whole key), which is how `Count`/`Sum` count a record once and how `Latest` breaks ties.
//! - The view item's keys are the strings `pk` (prefixed with the view's key prefix) and `sk`.
//!
//! The caller passes the log item itself: an export's `Item`, or a stream record's `NewImage` (a log is
//! append-only, so `REMOVE` records have nothing to project).

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;

use super::config::{LOG_PK, LOG_SK, Mode, TemplatePart, VIEW_PK, VIEW_SK};
use super::error::describe;
use super::{Item, Number, ProjectionConfig, ProjectionError, RecordId, Template, Value};

/// DynamoDB's limit on a partition key value, in bytes.
pub const MAX_PARTITION_KEY_BYTES: usize = 2048;
/// DynamoDB's limit on a sort key value, in bytes.
pub const MAX_SORT_KEY_BYTES: usize = 1024;
/// The view item attribute holding a `Count` aggregate.
pub const COUNT_ATTRIBUTE: &str = "count";
/// The view item attribute holding a `Sum` aggregate.
pub const SUM_ATTRIBUTE: &str = "sum";
/// The view item attribute holding a `Min` aggregate.
pub const MIN_ATTRIBUTE: &str = "min";
/// The view item attribute holding a `Max` aggregate.
pub const MAX_ATTRIBUTE: &str = "max";
/// The `Latest` item attribute holding the [`RecordId::digest`] of the record it shows: of two records
/// with equal ordering values, the greater digest wins, in every path.
pub const LOG_RECORD_ID: &str = "logRecordId";
/// Between the key prefix and a record's digest in the `pk` of the items the writers keep for
/// themselves (idempotency markers and the like); never a view item.
pub const MARKER_INFIX: &str = "~applied#";

/// The sort key of a `Latest` item when no `sortKey` template is set.
pub const LATEST_SK: &str = "LATEST";
/// The sort key of a `Count` or `Sum` item when no `sortKey` template is set.
pub const TOTAL_SK: &str = "TOTAL";

/// One write to the views table, with the DynamoDB semantics that make it idempotent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewWrite {
    /// Mode `Latest`: `PutItem` of `item` with the condition
    /// `attribute_not_exists(pk) OR #o < :o OR (#o = :o AND #r < :r)` (`#o` = `order_attribute`, `:o` =
    /// `order`, `#r` = [`LOG_RECORD_ID`], `:r` = `record`): it replaces the stored item only if there is
    /// none, the stored order is strictly lower, or the orders are equal and the stored record's digest is
    /// lower. A redelivered or older record fails the condition (`ConditionalCheckFailedException`), which
    /// the caller treats as done. `item` always carries `order_attribute` = `order` and [`LOG_RECORD_ID`] =
    /// `record`.
    PutIfNewer {
        item: Item,
        order_attribute: String,
        order: Number,
        record: String,
    },
    /// Mode `Append`: an unconditional `PutItem` (or `BatchWriteItem` put). The view key derives from the
    /// log record's own key, so a replay overwrites the same item with the same content.
    Put { item: Item },
    /// Modes `Count` (`attribute` = `count`, `delta` = 1) and `Sum` (`attribute` = `sum`, `delta` = the
    /// record's `sumOf`): `ADD #a :d` on the item at `key`, applied once per `record` however often it is
    /// delivered. A writer dedupes by an idempotency marker per record (the views-table writer
    /// `crate::aws::views` puts the marker conditioned on `attribute_not_exists` in the same
    /// `TransactWriteItems` as the `ADD`, so both or neither happen).
    Add {
        key: Item,
        attribute: String,
        delta: Number,
        record: RecordId,
    },
    /// Modes `Min` (`greatest` false, `attribute` = `min`) and `Max` (`greatest` true, `attribute` = `max`):
    /// `UpdateItem SET #a = :v` on the item at `key`, conditioned on `attribute_not_exists(#a) OR #a > :v`
    /// (`<` for `Max`). Naturally idempotent: a replayed or beaten value fails the condition, done.
    Extreme {
        key: Item,
        attribute: String,
        value: Number,
        greatest: bool,
    },
}

impl ViewWrite {
    /// The `(pk, sk)` of the view item written.
    pub fn view_key(&self) -> (&str, &str) {
        let item = match self {
            ViewWrite::PutIfNewer { item, .. } | ViewWrite::Put { item } => item,
            ViewWrite::Add { key, .. } | ViewWrite::Extreme { key, .. } => key,
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
    pk: Cow<'a, str>,
    sk: Option<(&'a str, Cow<'a, str>)>,
    id: RecordId,
}

impl fmt::Display for LogRecordKeys<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={:?}", self.pk_name, self.pk)?;
        if let Some((name, value)) = &self.sk {
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

/// The text a log key shows in `logPk`/`logSk` and in errors: an `S` as is, an `N` as written, a `B` as
/// standard base64 (DynamoDB's three key types).
fn log_key_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::B(b) => Some(Cow::Owned(base64::engine::general_purpose::STANDARD.encode(b))),
        other => key_text(other).map(Cow::Borrowed),
    }
}

/// `text` with `\` and `|` escaped by a `\`, so that `escape(a)|escape(b)` is unambiguous.
fn escape_separator(text: &str) -> Cow<'_, str> {
    match text.contains(['|', '\\']) {
        false => Cow::Borrowed(text),
        true => Cow::Owned(text.replace('\\', "\\\\").replace('|', "\\|")),
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
        let record = log.id.digest();
        Ok(Some(self.finish(
            kept,
            (log.pk.to_string(), log_sk, record),
            pk,
            sk,
            order,
        )))
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
        let record_digest = log.id.digest();
        let write = if self.attributes.is_empty() {
            // The record itself becomes the view item: its log keys move out (into `logPk`/`logSk`).
            let log_pk = self.take_log_key(&mut record, &self.log_keys.partition_key)?;
            let log_sk = match &self.log_keys.sort_key {
                Some(name) if *name == self.log_keys.partition_key => Some(log_pk.clone()),
                Some(name) => Some(self.take_log_key(&mut record, name)?),
                None => None,
            };
            self.finish(record, (log_pk, log_sk, record_digest), pk, sk, order)
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
            self.finish(kept, (log_pk, log_sk, record_digest), pk, sk, order)
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
            Some(Value::B(b)) => Ok(base64::engine::general_purpose::STANDARD.encode(b)),
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
            // Both keys, each escaped: two records never share an item.
            (None, Mode::Append) => match &log.sk {
                Some((_, log_sk)) => {
                    format!("{}|{}", escape_separator(&log.pk), escape_separator(log_sk))
                }
                None => log.pk.to_string(),
            },
            (None, Mode::Count | Mode::Sum { .. } | Mode::Extreme { .. }) => TOTAL_SK.to_string(),
        };
        self.check_key("pk", &pk, MAX_PARTITION_KEY_BYTES, &log)?;
        self.check_key("sk", &sk, MAX_SORT_KEY_BYTES, &log)?;
        if pk.contains(MARKER_INFIX) {
            return Err(ProjectionError::ReservedKey { view: self.view.clone(), record: log.to_string() });
        }

        let order = match &self.mode {
            Mode::Latest { order_by, .. } => {
                Some(
                    self.number(record, order_by, &log, |view, attribute, found, record| {
                        ProjectionError::OrderAttribute { view, attribute, found, record }
                    })?,
                )
            }
            Mode::Append => None,
            Mode::Count => {
                let write = add(COUNT_ATTRIBUTE, Number::from(1), log.id, pk, sk);
                return Ok(Some(Prepared::Done(write)));
            }
            Mode::Sum { sum_of } => {
                let delta = self.number(record, sum_of, &log, |view, attribute, found, record| {
                    ProjectionError::NumberAttribute { view, field: "sumOf", attribute, found, record }
                })?;
                return Ok(Some(Prepared::Done(add(SUM_ATTRIBUTE, delta, log.id, pk, sk))));
            }
            Mode::Extreme { of, greatest } => {
                let field = if *greatest { "maxOf" } else { "minOf" };
                let value = self.number(record, of, &log, |view, attribute, found, record| {
                    ProjectionError::NumberAttribute { view, field, attribute, found, record }
                })?;
                let attribute = match greatest {
                    true => MAX_ATTRIBUTE,
                    false => MIN_ATTRIBUTE,
                };
                return Ok(Some(Prepared::Done(ViewWrite::Extreme {
                    key: key_item(pk, sk),
                    attribute: attribute.to_string(),
                    value,
                    greatest: *greatest,
                })));
            }
        };
        Ok(Some(Prepared::Item { pk, sk, log, order }))
    }

    /// The view item from its kept attributes: then `logPk`/`logSk`, then `pk`/`sk` (each later step wins
    /// a name clash), then, for `Latest`, the order and the record's digest. `log` is the log record's
    /// `(pk text, sk text, digest)`.
    fn finish(
        &self,
        mut item: Item,
        log: (String, Option<String>, String),
        pk: String,
        sk: String,
        order: Option<Number>,
    ) -> ViewWrite {
        let (log_pk, log_sk, record) = log;
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
                set(&mut item, LOG_RECORD_ID, Value::S(record.clone()));
                ViewWrite::PutIfNewer { item, order_attribute: stored_as.clone(), order, record }
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
            value
                .and_then(log_key_text)
                .ok_or_else(|| ProjectionError::LogKey {
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
        let sk_value = self.log_keys.sort_key.as_ref().and_then(|name| record.get(name));
        let id = record
            .get(pk_name)
            .and_then(|pk| RecordId::new(pk, sk_value))
            .ok_or_else(|| ProjectionError::LogKey {
                view: self.view.clone(),
                attribute: pk_name.to_string(),
                found: describe(record.get(pk_name)),
            })?;
        Ok(LogRecordKeys { pk_name, pk, sk, id })
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
            return Err(ProjectionError::EmptyKey { view: self.view.clone(), key, record: log.to_string() });
        }
        if value.len() > max {
            let (view, bytes, record) = (self.view.clone(), value.len(), log.to_string());
            return Err(ProjectionError::KeyTooLong { view, key, bytes, max, record });
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
}

/// The `Count`/`Sum` write of `record` to the item at `(pk, sk)`.
fn add(attribute: &str, delta: Number, record: RecordId, pk: String, sk: String) -> ViewWrite {
    ViewWrite::Add {
        key: key_item(pk, sk),
        attribute: attribute.to_string(),
        delta,
        record,
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
