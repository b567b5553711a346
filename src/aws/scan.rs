//! `Scan` of a log table, one page of one segment at a time: the read of the `Scan` backfill source
//! ([`crate::backfill::scan`]), which keeps the segments, checkpoints and projection.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, Select};

use super::error::{AwsError, from_sdk};

/// A key to start a page after (`ExclusiveStartKey` / `LastEvaluatedKey`).
pub type StartKey = HashMap<String, AttributeValue>;

/// One page of a segmented scan: its items, and where the next page starts (`None`: the segment is done).
pub struct ScanPage {
    pub items: Vec<HashMap<String, AttributeValue>>,
    pub next: Option<StartKey>,
}

/// Reads the page of segment `segment` of `total` in `table` that starts after `start` (all attributes,
/// eventually consistent).
pub async fn segment_page(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    segment: i32,
    total: i32,
    start: Option<StartKey>,
) -> Result<ScanPage, AwsError> {
    let out = client
        .scan()
        .table_name(table)
        .segment(segment)
        .total_segments(total)
        .select(Select::AllAttributes)
        .set_exclusive_start_key(start)
        .send()
        .await
        .map_err(from_sdk("Scan", table))?;
    Ok(ScanPage {
        items: out.items.unwrap_or_default(),
        next: out.last_evaluated_key,
    })
}
