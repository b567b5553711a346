//! Groups projected writes into DynamoDB requests for the backfill.
//!
//! Unconditional puts (`Append`) go into `BatchWriteItem` requests of at most 25 items; a request never
//! holds two writes of one key (DynamoDB refuses that), so a repeated key starts a new request and the
//! later write still lands last. Conditional puts (`Latest`) and marker transactions (`Count`, `Sum`)
//! cannot be batched and pass through one by one, in order.

use std::collections::HashSet;

use aws_sdk_dynamodb::types::{Put, TransactWriteItem, WriteRequest};

use crate::projection::ViewWrite;
use aws_sdk_dynamodb::error::BuildError;

use crate::projection::dynamo::{self, DynamoWrite};

/// DynamoDB's limit of put/delete requests in one `BatchWriteItem`.
pub const MAX_BATCH_ITEMS: usize = 25;

/// A request ready to send.
#[derive(Debug)]
pub enum Request {
    /// One `BatchWriteItem` of up to 25 puts with distinct keys.
    Batch(Vec<WriteRequest>),
    /// One conditional `PutItem`.
    Conditional(Put),
    /// One `TransactWriteItems` (marker and aggregate).
    Transaction(Vec<TransactWriteItem>),
}

/// Collects writes for one views table and hands out requests as they fill.
pub struct WriteBatcher {
    table: String,
    pending: Vec<WriteRequest>,
    pending_keys: HashSet<(String, String)>,
}

impl WriteBatcher {
    pub fn new(table: impl Into<String>) -> Self {
        WriteBatcher {
            table: table.into(),
            pending: Vec::new(),
            pending_keys: HashSet::new(),
        }
    }

    /// Adds a write; appends to `ready` every request it completes, in the order they must be sent.
    pub fn push(&mut self, write: &ViewWrite, ready: &mut Vec<Request>) -> Result<(), BuildError> {
        match dynamo::build(&self.table, write)? {
            DynamoWrite::Put { request, .. } => {
                let (pk, sk) = write.view_key();
                let key = (pk.to_string(), sk.to_string());
                if self.pending_keys.contains(&key) {
                    ready.extend(self.flush());
                }
                self.pending_keys.insert(key);
                self.pending.push(request);
                if self.pending.len() == MAX_BATCH_ITEMS {
                    ready.extend(self.flush());
                }
            }
            DynamoWrite::ConditionalPut(put) => {
                ready.extend(self.flush());
                ready.push(Request::Conditional(put));
            }
            DynamoWrite::Transaction(items) => {
                ready.extend(self.flush());
                ready.push(Request::Transaction(items));
            }
        }
        Ok(())
    }

    /// The partly filled batch, if any.
    pub fn flush(&mut self) -> Option<Request> {
        self.pending_keys.clear();
        (!self.pending.is_empty()).then(|| Request::Batch(std::mem::take(&mut self.pending)))
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
                Request::Transaction(_) => "transaction".into(),
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
        };
        b.push(&newer, &mut ready).unwrap();
        b.push(&put("c", "s"), &mut ready).unwrap();
        ready.extend(b.flush());
        assert_eq!(sizes(&ready), ["batch1", "conditional", "batch1"]);
    }
}
