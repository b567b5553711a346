//! Groups projected writes into DynamoDB requests for the backfill.
//!
//! Unconditional puts (`Append`) go into `BatchWriteItem` requests of at most 25 items; a request never
//! holds two writes of one key (DynamoDB refuses that), so a repeated key starts a new request and the
//! later write still lands last. Conditional puts (`Latest`) and conditional updates (`Min`, `Max`)
//! cannot be batched and pass through one by one, in order. `Count`/`Sum` writes are not for this
//! batcher: the views-table writer groups them per key into transactions.

use std::hash::{DefaultHasher, Hash, Hasher};

use aws_sdk_dynamodb::error::BuildError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, Update, WriteRequest};

use crate::projection::dynamo;
use crate::projection::{ViewWrite, view_key_of};

/// DynamoDB's limit of put/delete requests in one `BatchWriteItem`.
pub const MAX_BATCH_ITEMS: usize = 25;

/// A request ready to send.
#[derive(Clone, Debug)]
pub enum Request {
    /// One `BatchWriteItem` of up to 25 puts with distinct keys.
    Batch(Vec<WriteRequest>),
    /// One conditional `PutItem`.
    Conditional(Put),
    /// One conditional `UpdateItem` (`Min`, `Max`).
    Extreme(Update),
}

/// Collects writes for one views table and hands out requests as they fill.
pub struct WriteBatcher {
    table: String,
    pending: Vec<WriteRequest>,
    /// A hash of each pending request's `(pk, sk)`, in the same order: a cheap first test for a repeated
    /// key, confirmed on the request itself (a hash collision must not split a batch for nothing, nor
    /// may it ever let two writes of one key into one batch).
    pending_keys: Vec<u64>,
}

fn key_hash(pk: &str, sk: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    (pk, sk).hash(&mut hasher);
    hasher.finish()
}

/// The `(pk, sk)` of a pending put, as [`view_key_of`] reads it (`""` when missing).
fn request_key(request: &WriteRequest) -> (&str, &str) {
    let item = request.put_request().map(|p| p.item());
    let get = |name: &str| match item.and_then(|i| i.get(name)) {
        Some(AttributeValue::S(s)) => s.as_str(),
        _ => "",
    };
    (get("pk"), get("sk"))
}

impl WriteBatcher {
    pub fn new(table: impl Into<String>) -> Self {
        WriteBatcher {
            table: table.into(),
            pending: Vec::with_capacity(MAX_BATCH_ITEMS),
            pending_keys: Vec::with_capacity(MAX_BATCH_ITEMS),
        }
    }

    /// Adds a write; appends to `ready` every request it completes, in the order they must be sent.
    pub fn push(&mut self, write: &ViewWrite, ready: &mut Vec<Request>) -> Result<(), BuildError> {
        self.push_owned(write.clone(), ready)
    }

    /// [`push`](Self::push) for a caller that no longer needs the write: its items move into the SDK
    /// requests instead of being cloned.
    pub fn push_owned(&mut self, write: ViewWrite, ready: &mut Vec<Request>) -> Result<(), BuildError> {
        match write {
            ViewWrite::Put { item } => {
                let (hash, repeated) = {
                    let key = view_key_of(&item);
                    let hash = key_hash(key.0, key.1);
                    let repeated = (self.pending_keys.iter().zip(&self.pending))
                        .any(|(&h, pending)| h == hash && request_key(pending) == key);
                    (hash, repeated)
                };
                let request = dynamo::write_request_owned(item)?;
                if repeated {
                    ready.extend(self.flush());
                }
                self.pending_keys.push(hash);
                self.pending.push(request);
                if self.pending.len() == MAX_BATCH_ITEMS {
                    ready.extend(self.flush());
                }
            }
            ViewWrite::PutIfNewer { item, order_attribute, order, record } => {
                let put = dynamo::put_if_newer_owned(&self.table, item, order_attribute, order, record)?;
                ready.extend(self.flush());
                ready.push(Request::Conditional(put));
            }
            ViewWrite::Extreme { key, attribute, value, greatest } => {
                let update = dynamo::extreme_update(&self.table, key, attribute, value, greatest)?;
                ready.extend(self.flush());
                ready.push(Request::Extreme(update));
            }
            // Aggregates are grouped per key into transactions by the views-table writer, never batched.
            ViewWrite::Add { .. } => {
                return Err(BuildError::other(
                    "Count/Sum writes go through the aggregate transactions",
                ));
            }
        }
        Ok(())
    }

    /// The partly filled batch, if any.
    pub fn flush(&mut self) -> Option<Request> {
        self.pending_keys.clear();
        (!self.pending.is_empty()).then(|| {
            let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(MAX_BATCH_ITEMS));
            Request::Batch(batch)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::{Item, Number, Value};

    fn put(pk: &str, sk: &str) -> ViewWrite {
        let item: Item = [("pk", pk), ("sk", sk)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::S(v.into())))
            .collect();
        ViewWrite::Put { item }
    }

    fn sizes(requests: &[Request]) -> Vec<String> {
        requests
            .iter()
            .map(|r| match r {
                Request::Batch(b) => format!("batch{}", b.len()),
                Request::Conditional(_) => "conditional".into(),
                Request::Extreme(_) => "extreme".into(),
            })
            .collect()
    }

    #[test]
    fn puts_fill_batches_of_25() {
        let mut b = WriteBatcher::new("views");
        let mut ready = Vec::new();
        for i in 0..60 {
            b.push(&put(&format!("p{i}"), "s"), &mut ready).unwrap();
        }
        ready.extend(b.flush());
        assert_eq!(sizes(&ready), ["batch25", "batch25", "batch10"]);
        assert!(b.flush().is_none());
    }

    #[test]
    fn a_repeated_key_starts_a_new_batch() {
        let mut b = WriteBatcher::new("views");
        let mut ready = Vec::new();
        for key in ["a", "b", "a", "c"] {
            b.push(&put(key, "s"), &mut ready).unwrap();
        }
        ready.extend(b.flush());
        assert_eq!(sizes(&ready), ["batch2", "batch2"]);
    }

    #[test]
    fn conditional_writes_keep_their_place_in_the_order() {
        let mut b = WriteBatcher::new("views");
        let mut ready = Vec::new();
        b.push(&put("a", "s"), &mut ready).unwrap();
        let mut item = match put("b", "LATEST") {
            ViewWrite::Put { item } => item,
            _ => unreachable!(),
        };
        item.insert("seq".into(), Value::N(Number::from(3)));
        let newer = ViewWrite::PutIfNewer {
            item,
            order_attribute: "seq".into(),
            order: Number::from(3),
            record: "r".into(),
        };
        b.push(&newer, &mut ready).unwrap();
        b.push(&put("c", "s"), &mut ready).unwrap();
        ready.extend(b.flush());
        assert_eq!(sizes(&ready), ["batch1", "conditional", "batch1"]);
    }

    #[test]
    fn push_owned_builds_the_same_requests_as_push() {
        let writes = [put("a", "s"), put("b", "s"), put("a", "s"), put("a", "t")];
        let (mut borrowed, mut owned) = (WriteBatcher::new("views"), WriteBatcher::new("views"));
        let (mut by_ref, mut by_value) = (Vec::new(), Vec::new());
        for w in &writes {
            borrowed.push(w, &mut by_ref).unwrap();
            owned.push_owned(w.clone(), &mut by_value).unwrap();
        }
        by_ref.extend(borrowed.flush());
        by_value.extend(owned.flush());
        assert_eq!(
            sizes(&by_value),
            ["batch2", "batch2"],
            "(a, t) is another key than (a, s)"
        );
        let batches = |requests: &[Request]| -> Vec<Vec<WriteRequest>> {
            requests
                .iter()
                .map(|r| match r {
                    Request::Batch(b) => b.clone(),
                    other => panic!("expected a batch: {other:?}"),
                })
                .collect()
        };
        assert_eq!(batches(&by_ref), batches(&by_value));
        assert_eq!(request_key(&batches(&by_value)[0][1]), ("b", "s"));
    }
}
