//! What the estimate assumes about the traffic and the functions: every input besides the specs and the
//! prices, each with its default and where the default comes from.
//!
//! COST-MODEL (`shared/aws-reference/COST-MODEL.md`) fixes the unit of the estimate, 10 KB writes, and
//! shows (§3) that the seed post's Lambda memory and duration cannot be recovered; the Lambda defaults
//! here are therefore this module's own assumptions, stated as such. Deserializes from YAML or JSON in
//! camelCase, every field optional, unknown fields rejected. Example override:
//!
//! ```yaml
//! itemSizeKb: 4
//! recordTypeShares: {player: 0.8}      # game gets the remaining 0.2
//! projector: {msPerRecord: 25}
//! views:
//!   players: {itemSizeKb: 1, newKeyShare: 0.01}
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::CostError;
use super::prices::SQS_MAX_MESSAGES_PER_BATCH;

/// Lambda's default for records per invocation of stream- and queue-triggered functions when nothing
/// else decides it: Lambda polls a stream shard about four times a second, so at about 40 writes a second
/// per shard an invocation carries about 10 records. An assumption, not a measurement.
pub const DEFAULT_STREAM_RECORDS_PER_INVOCATION: f64 = 10.0;
/// Memory of the built-in writer, router and notifier Lambdas when not overridden, in MB. `src/plan` does
/// not fix it yet; 128 MB is Lambda's minimum and enough for the thin Rust shells in `src/bin`.
pub const DEFAULT_BUILT_IN_MEMORY_MB: u32 = 128;

/// Every input of the estimate that is neither a spec field nor a price.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Assumptions {
    /// Average size of a log record (an SQS message and a log item), in KB. Default 10: the unit of
    /// COST-MODEL ("1 million SQS writes of about 10 KB each"). A 10 KB item takes 10 write units.
    pub item_size_kb: f64,
    /// The share of the log's writes each record type has, by record type name. Empty (the default):
    /// equal shares across the log's `spec.recordTypes`. Types left out share what the listed ones leave of
    /// 1.0 equally; if the listed shares add up to 1.0 or more (or no type is left out) they are scaled to
    /// add up to 1.0. Names that are not record types of the log are ignored, with a note.
    pub record_type_shares: BTreeMap<String, f64>,
    /// How many months of storage (and PITR) a million writes' data is charged for. Default 1.0: the
    /// first month, as COST-MODEL §2 scenario C shows it. Storage is recurring (COST-MODEL §4.4): data kept
    /// for M months costs M times this, which is what a larger value expresses.
    pub storage_months: f64,
    /// Size of a `Latest` or `Append` view item (and of a custom projector's item), in KB. Default: none,
    /// meaning `itemSizeKb` (the projection keeps the whole record). Smaller when
    /// `spec.projection.attributes` keeps only some attributes.
    pub view_item_size_kb: Option<f64>,
    /// Size of a `Count`/`Sum` idempotency marker item, in KB. Default 0.1 (a key and a timestamp): one
    /// write unit.
    pub marker_item_size_kb: f64,
    /// Size of a `Count`/`Sum` aggregate item, in KB. Default 0.1 (a key and a number): one write unit.
    pub aggregate_item_size_kb: f64,
    /// The share of a view's projected records whose view key is new, so the item stays in storage:
    /// `Latest` and `Count`/`Sum` keep one item per key, overwritten by later records. Default 1.0, the
    /// upper bound (every record a new key); `Append` keeps every record whatever this says.
    pub new_key_share: f64,
    /// Overrides per view, by the MaterializedView's name.
    pub views: BTreeMap<String, ViewAssumptions>,
    /// The ingest queue.
    pub sqs: SqsAssumptions,
    /// The router's SNS topics.
    pub sns: SnsAssumptions,
    /// The operator's in-cluster stream reader (views with `spec.projector.runtime: InCluster`).
    pub in_cluster: InClusterAssumptions,
    /// The built-in writer Lambda (drains the ingest queue into the log).
    pub writer: LambdaAssumptions,
    /// The built-in router Lambda (fan-out `Sns`: reads the log stream, publishes to the topics).
    pub router: LambdaAssumptions,
    /// Every view's projector Lambda (runtime `Lambda`).
    pub projector: LambdaAssumptions,
    /// The notifier Lambda of each views table whose views on the Lambda runtime have `spec.subscribers`
    /// (DESIGN.md: it reads the table's stream and pushes changes to WebSocket subscribers).
    pub notifier: LambdaAssumptions,
    /// WebSocket connections subscribed to each change of a view with `spec.subscribers`: every change is
    /// one API Gateway message per subscriber. Default 1.
    pub subscribers_per_change: f64,
}

impl Default for Assumptions {
    fn default() -> Self {
        Assumptions {
            item_size_kb: 10.0,
            record_type_shares: BTreeMap::new(),
            storage_months: 1.0,
            view_item_size_kb: None,
            marker_item_size_kb: 0.1,
            aggregate_item_size_kb: 0.1,
            new_key_share: 1.0,
            views: BTreeMap::new(),
            sqs: SqsAssumptions::default(),
            sns: SnsAssumptions::default(),
            in_cluster: InClusterAssumptions::default(),
            writer: LambdaAssumptions::default(),
            router: LambdaAssumptions::default(),
            projector: LambdaAssumptions::default(),
            notifier: LambdaAssumptions::default(),
            subscribers_per_change: 1.0,
        }
    }
}

/// Overrides for one view; unset fields take the global assumption.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ViewAssumptions {
    /// This view's item size in KB (see `viewItemSizeKb`).
    pub item_size_kb: Option<f64>,
    /// The share of this view's projected records whose key is new (see `newKeyShare`).
    pub new_key_share: Option<f64>,
    /// The share of the records of the view's types that pass `spec.projection.filter` and are written.
    /// Default 1.0: every record passes (the upper bound). The projector is still invoked for the others.
    pub filter_pass_share: Option<f64>,
}

/// How producers and the writer use the ingest queue.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct SqsAssumptions {
    /// Messages per send request: 1 (the default, `SendMessage` per record, as COST-MODEL §2 counts it)
    /// up to 10 (`SendMessageBatch`, billed per 64 KB chunk of the whole batch).
    pub messages_per_send: f64,
    /// Messages returned per `ReceiveMessage`, 1 to 10; each receive is followed by one
    /// `DeleteMessageBatch` (COST-MODEL §4.7). Default: none, meaning the writer's records per invocation,
    /// at most 10. COST-MODEL's scenarios use 10 ("1 read per 10 writes", §1 i2).
    pub messages_per_receive: Option<f64>,
    /// Bill a receive per 64 KB chunk of the messages it returns, as the 64 KB rule reads. Default false:
    /// COST-MODEL §2 scenario C counts one request per receive; true adds one request for every further
    /// 64 KB (10 messages of 10 KB are 2 requests). Unverified either way.
    pub bill_receive_payload_chunks: bool,
}

impl Default for SqsAssumptions {
    fn default() -> Self {
        SqsAssumptions {
            messages_per_send: 1.0,
            messages_per_receive: None,
            bill_receive_payload_chunks: false,
        }
    }
}

/// How the router publishes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct SnsAssumptions {
    /// Billed publish requests per record the router publishes. Default: none, meaning one `Publish` per
    /// record billed per 64 KB chunk of the record (1 for records up to 64 KB). Lower with `PublishBatch`
    /// (up to 10 messages per request, billed per 64 KB of the batch); COST-MODEL §2 scenario C counts 2
    /// (the seed post's "2 SNS messages" per write).
    pub publish_requests_per_record: Option<f64>,
}

/// How the operator reads the log stream for its `InCluster` projectors.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct InClusterAssumptions {
    /// Records returned per `GetRecords` call, 1 to 1000. Default: none, meaning full responses: 1000
    /// records or 1 MB of them, whichever is fewer (102 records of 10 KB). That is the busy-stream bound;
    /// a quiet stream returns fewer per call, and polls that return nothing are a fixed monthly cost
    /// (about one call a second per shard when idle, for all of a log's in-cluster views together), not
    /// a cost per write, and are left out.
    pub records_per_get_records: Option<f64>,
}

/// Memory and duration of one kind of Lambda function. Lambda bills requests and GB-seconds: memory
/// (MB / 1024) × billed duration. The defaults (the same for every kind) are this module's assumptions for
/// the built-in Rust functions, not measurements: override them with what CloudWatch shows.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct LambdaAssumptions {
    /// Configured memory in MB. Default: none, meaning the view's `spec.projector.memoryMb` for
    /// projectors and 128 MB ([`DEFAULT_BUILT_IN_MEMORY_MB`]) for the built-in functions.
    pub memory_mb: Option<u32>,
    /// Average records per invocation. Default: none, meaning the ingest's `batchSize` (full batches) for
    /// the writer and 10 ([`DEFAULT_STREAM_RECORDS_PER_INVOCATION`]) for stream readers. Projectors behind
    /// SNS always get one record per invocation (SNS invokes once per message), whatever this says.
    pub records_per_invocation: Option<f64>,
    /// Billed milliseconds per invocation that do not depend on the batch (start-up, SDK round trips).
    /// Default 20.
    pub ms_per_invocation: f64,
    /// Billed milliseconds per record in the batch. Default 10 (about one DynamoDB or SNS round trip).
    pub ms_per_record: f64,
}

impl Default for LambdaAssumptions {
    fn default() -> Self {
        LambdaAssumptions {
            memory_mb: None,
            records_per_invocation: None,
            ms_per_invocation: 20.0,
            ms_per_record: 10.0,
        }
    }
}

impl Assumptions {
    /// Checks every value's range. [`estimate()`](super::model::estimate) never fails: it falls back to
    /// the nearest sensible value instead. Call this on user overrides to report mistakes, not hide them.
    pub fn validate(&self) -> Result<(), CostError> {
        positive("itemSizeKb", self.item_size_kb)?;
        for (name, share) in &self.record_type_shares {
            at_least(&format!("recordTypeShares.{name}"), *share, 0.0)?;
        }
        at_least("storageMonths", self.storage_months, 0.0)?;
        if let Some(kb) = self.view_item_size_kb {
            positive("viewItemSizeKb", kb)?;
        }
        positive("markerItemSizeKb", self.marker_item_size_kb)?;
        positive("aggregateItemSizeKb", self.aggregate_item_size_kb)?;
        share("newKeyShare", self.new_key_share)?;
        for (name, view) in &self.views {
            if let Some(kb) = view.item_size_kb {
                positive(&format!("views.{name}.itemSizeKb"), kb)?;
            }
            if let Some(s) = view.new_key_share {
                share(&format!("views.{name}.newKeyShare"), s)?;
            }
            if let Some(s) = view.filter_pass_share {
                share(&format!("views.{name}.filterPassShare"), s)?;
            }
        }
        between("sqs.messagesPerSend", self.sqs.messages_per_send, 1.0, 10.0)?;
        if let Some(m) = self.sqs.messages_per_receive {
            between("sqs.messagesPerReceive", m, 1.0, SQS_MAX_MESSAGES_PER_BATCH)?;
        }
        if let Some(r) = self.sns.publish_requests_per_record {
            at_least("sns.publishRequestsPerRecord", r, 0.0)?;
        }
        if let Some(r) = self.in_cluster.records_per_get_records {
            between("inCluster.recordsPerGetRecords", r, 1.0, 1000.0)?;
        }
        at_least("subscribersPerChange", self.subscribers_per_change, 0.0)?;
        for (kind, lambda) in [
            ("writer", &self.writer),
            ("router", &self.router),
            ("projector", &self.projector),
            ("notifier", &self.notifier),
        ] {
            if let Some(mb) = lambda.memory_mb {
                between(&format!("{kind}.memoryMb"), f64::from(mb), 128.0, 10240.0)?;
            }
            if let Some(r) = lambda.records_per_invocation {
                at_least(&format!("{kind}.recordsPerInvocation"), r, 1.0)?;
            }
            at_least(&format!("{kind}.msPerInvocation"), lambda.ms_per_invocation, 0.0)?;
            at_least(&format!("{kind}.msPerRecord"), lambda.ms_per_record, 0.0)?;
        }
        Ok(())
    }
}

fn invalid(field: &str, value: f64, expected: &'static str) -> CostError {
    CostError::InvalidInput {
        field: format!("assumptions.{field}"),
        value: value.to_string(),
        expected,
    }
}

fn positive(field: &str, value: f64) -> Result<(), CostError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(invalid(field, value, "a number greater than 0"))
    }
}

fn at_least(field: &str, value: f64, min: f64) -> Result<(), CostError> {
    if value.is_finite() && value >= min {
        Ok(())
    } else if min == 0.0 {
        Err(invalid(field, value, "a number, 0 or more"))
    } else {
        Err(invalid(field, value, "a number, 1 or more"))
    }
}

fn share(field: &str, value: f64) -> Result<(), CostError> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(invalid(field, value, "a share between 0 and 1"))
    }
}

fn between(field: &str, value: f64, min: f64, max: f64) -> Result<(), CostError> {
    if value.is_finite() && (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(CostError::InvalidInput {
            field: format!("assumptions.{field}"),
            value: value.to_string(),
            expected: if max <= 10.0 {
                "a number from 1 to 10"
            } else if max <= 1000.0 {
                "a number from 1 to 1000"
            } else {
                "a memory size from 128 to 10240 MB"
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        assert!(Assumptions::default().validate().is_ok());
        assert_eq!(Assumptions::default().item_size_kb, 10.0);
    }

    #[test]
    fn yaml_overrides_nest_and_keep_other_defaults() {
        let a: Assumptions = serde_yaml::from_str(
            "itemSizeKb: 4\nrecordTypeShares: {player: 0.8}\nprojector: {msPerRecord: 25}\n\
             views: {players: {itemSizeKb: 1, newKeyShare: 0.01}}\nsqs: {messagesPerReceive: 10}\n",
        )
        .expect("valid overrides");
        assert_eq!(a.item_size_kb, 4.0);
        assert_eq!(a.record_type_shares.get("player"), Some(&0.8));
        assert_eq!(a.projector.ms_per_record, 25.0);
        assert_eq!(
            a.projector.ms_per_invocation, 20.0,
            "unset fields keep their defaults"
        );
        assert_eq!(a.views["players"].new_key_share, Some(0.01));
        assert_eq!(a.sqs.messages_per_receive, Some(10.0));
        assert_eq!(a.storage_months, 1.0);
        assert!(a.validate().is_ok());
        assert!(
            serde_yaml::from_str::<Assumptions>("itemSize: 4\n").is_err(),
            "typo rejected"
        );
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        let a = Assumptions { new_key_share: 1.5, ..Assumptions::default() };
        let err = a.validate().expect_err("share above 1");
        assert!(err.to_string().contains("assumptions.newKeyShare"), "{err}");

        let mut a = Assumptions::default();
        a.writer.memory_mb = Some(64);
        let err = a.validate().expect_err("memory below 128 MB");
        assert!(err.to_string().contains("assumptions.writer.memoryMb"), "{err}");
    }
}
