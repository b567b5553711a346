//! The backfill layer: fills a new materialized view from a point-in-time export of the log table.
//!
//! A backfill exports the DynamoDB log table to S3 (full, or incremental to catch up), reads every data file
//! the export's manifest lists, and hands each item to the projection engine. It is built from export
//! reading ([`export`], exactly as AWS writes it), write batching ([`batch`]) and the [`worker`] that
//! projects an export from S3 with per-file checkpoints; `Count`/`Sum` views whose live path the operator
//! runs are pre-aggregated and folded ([`aggregate`]).

pub mod aggregate;
pub mod batch;
pub mod export;
pub mod scan;
pub mod worker;
