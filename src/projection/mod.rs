//! The projection engine: log records in, idempotent view writes out. Pure: no network, no AWS calls.
//!
//! Shared by the backfill workers (export items), the built-in projector Lambda (stream records, directly
//! or through SNS) and the in-cluster stream consumer (stream `NewImage`s), so all three write the same
//! view for the same log.
//!
//! ```text
//! MaterializedViewSpec + EventLogSpec ──ProjectionConfig::from_spec──▶ ProjectionConfig
//! log Item ──ProjectionConfig::project──▶ Option<ViewWrite> ──dynamo::build──▶ SDK request parts
//!                                                         └──MemoryStore::apply (tests: the reference)
//! ```
//!
//! Guarantees:
//! - Idempotent and order-independent: a view built from any interleaving of backfill and live delivery,
//!   with any record delivered more than once, ends up the same (`Latest` writes are conditional on the
//!   ordering attribute, then the record's identity; `Append` items are keyed by the log record's key;
//!   `Count`/`Sum` apply each [`RecordId`] once; `Min`/`Max` are conditional sets). See [`ViewWrite`] for
//!   the exact DynamoDB semantics.
//! - Exact: DynamoDB numbers never go through `f64` ([`Number`]).
//! - Everything a view writes, its markers included, lives under its key prefix, as its IAM policy
//!   requires.
//! - Spec errors surface from [`ProjectionConfig::from_spec`]; [`ProjectionConfig::project`] only fails on
//!   records that cannot be projected, naming the view, the attribute and the record's log keys.

mod config;
pub mod dynamo;
mod engine;
mod error;
mod filter;
mod identity;
mod item_rules;
mod memory;
mod number;
mod value;

#[cfg(test)]
mod fixture_tests;

pub use config::{LogKeys, ProjectionConfig, Template, TemplateError, TemplatePart};
pub use engine::{
    COUNT_ATTRIBUTE, LATEST_SK, LOG_RECORD_ID, MARKER_INFIX, MAX_ATTRIBUTE, MAX_PARTITION_KEY_BYTES,
    MAX_SORT_KEY_BYTES, MIN_ATTRIBUTE, SUM_ATTRIBUTE, TOTAL_SK, ViewWrite, view_key_of,
};
pub use error::{KEPT_RECORD_ERRORS, KEPT_RECORD_IDS, ProjectionError, RecordErrors};
pub use identity::RecordId;
pub use item_rules::{
    ItemRuleError, MAX_ATTRIBUTE_NAME_BYTES, MAX_ITEM_BYTES, MAX_NESTING_DEPTH, check_item, item_size,
};
pub use memory::{Applied, MemoryStore, MemoryStoreError};
pub use number::{MAX_SIGNIFICANT_DIGITS, Number, NumberError};
pub use value::{
    Item, Value, ValueError, item_from_dynamodb, item_from_stream, item_to_dynamodb, item_to_stream,
};
