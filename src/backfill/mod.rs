//! The backfill layer: fills a new materialized view from a point-in-time export of the log table.
//!
//! A backfill exports the DynamoDB log table to S3 (full, or incremental to catch up), reads every data file
//! the export's manifest lists, and hands each item to the projection engine. It is built from export
//! reading, workers and checkpoints; only [`export`] (reading one export exactly as AWS writes it) exists
//! so far.

pub mod export;
