//! Unit prices, and the AWS billing rules that turn usage into billed units.
//!
//! Every default is a us-east-1 list price as checked (and, where the seed blog post was wrong, corrected)
//! in `shared/aws-reference/COST-MODEL.md`, cited below as "COST-MODEL". COST-MODEL §5 says plainly that
//! these prices were **not** read from AWS's pricing pages but are the widely quoted list prices; the two
//! prices COST-MODEL does not mention (SQS FIFO requests, PITR storage) are marked as such. Free tiers are
//! ignored throughout: they are per account and month, not per write.

use serde::{Deserialize, Serialize};

use super::CostError;

/// SQS bills each 64 KB chunk of a request's payload as one request (COST-MODEL §4.5, §5).
pub const SQS_BILLING_CHUNK_KB: f64 = 64.0;
/// SNS bills each 64 KB chunk of a published payload as one publish request (COST-MODEL §4.5).
pub const SNS_BILLING_CHUNK_KB: f64 = 64.0;
/// One DynamoDB write unit covers an item of up to 1 KB; larger items take one unit per started KB
/// (COST-MODEL §4.2, "Capacity unit sizes").
pub const WRITE_UNIT_KB: f64 = 1.0;
/// Transactional writes (`TransactWriteItems`) consume twice the write units of plain writes.
pub const TRANSACTION_WRITE_MULTIPLIER: f64 = 2.0;
/// `SendMessageBatch`, `ReceiveMessage` and `DeleteMessageBatch` handle at most 10 messages each.
pub const SQS_MAX_MESSAGES_PER_BATCH: f64 = 10.0;
/// One `GetRecords` call returns at most 1000 records (COST-MODEL §4.6).
pub const GET_RECORDS_MAX_RECORDS: f64 = 1000.0;
/// One `GetRecords` call returns at most 1 MB (COST-MODEL §4.6), taken as 1024 KB.
pub const GET_RECORDS_MAX_KB: f64 = 1024.0;
/// KB per GB for storage, decimal as in COST-MODEL ("10 KB per write = 10 GB per million writes").
/// AWS bills binary GB, which would make storage lines about 4.6 % lower.
pub const STORAGE_KB_PER_GB: f64 = 1_000_000.0;
/// MB per GB for Lambda memory: Lambda bills GB-seconds of configured memory, 1024 MB to the GB.
pub const LAMBDA_MB_PER_GB: f64 = 1024.0;

/// Unit prices in US dollars. Deserializes from YAML or JSON in camelCase; every field is optional there
/// and defaults to the value documented on it, and unknown fields are rejected so a typo cannot go
/// unnoticed. Example override: `{dynamodbWriteUnitsPerMillion: 1.25}` (the price before November 2024).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Prices {
    /// SQS standard queue, per million requests (send, receive, delete; each 64 KB chunk is one request).
    /// Default 0.40: COST-MODEL §1 i1 and §5.
    pub sqs_standard_requests_per_million: f64,
    /// SQS FIFO queue, per million requests. Default 0.50: **not in COST-MODEL**; the widely quoted
    /// us-east-1 list price, unverified.
    pub sqs_fifo_requests_per_million: f64,
    /// Lambda, per million invocations (requests). Default 0.20: COST-MODEL §1 i3 and §5.
    pub lambda_requests_per_million: f64,
    /// Lambda compute, per GB-second of configured memory (x86, first tier). Default 0.0000166667:
    /// COST-MODEL §3 and §5. The seed post used the truncated 0.0000166 (COST-MODEL §3); arm64 is cheaper.
    pub lambda_gb_second: f64,
    /// SNS, per million publish requests (each 64 KB chunk of a message is one request). Default 0.50:
    /// COST-MODEL §4.5 and §5, replacing the post's $0.09/GB, which is the internet data-transfer rate.
    pub sns_publishes_per_million: f64,
    /// SNS, per million deliveries to Lambda subscribers. Default 0.00: COST-MODEL §4.5 and §5, deliveries
    /// to Lambda in the same Region carry neither a delivery nor a data-transfer charge (unverified there).
    pub sns_lambda_deliveries_per_million: f64,
    /// DynamoDB on-demand, per million write request units. Default 0.625: COST-MODEL §2 scenario D and §5,
    /// the price since the 50 % cut of November 2024 (1.25 before; the post's era, scenario C).
    pub dynamodb_write_units_per_million: f64,
    /// DynamoDB standard table class storage, per GB-month. Default 0.25: COST-MODEL §1 i8 and §5.
    pub dynamodb_storage_gb_month: f64,
    /// DynamoDB point-in-time recovery (continuous backups), per GB-month of table size. Default 0.20:
    /// **not in COST-MODEL**; the widely quoted us-east-1 list price, unverified.
    pub dynamodb_pitr_gb_month: f64,
    /// DynamoDB Streams, per million streams read request units; each `GetRecords` call is one unit.
    /// Billed only for readers that are not Lambda: Lambda's reads are free (COST-MODEL §4.6). Default
    /// 0.20 ($0.02 per 100,000): COST-MODEL §1 i10 ("1.5 × $0.2").
    pub dynamodb_streams_reads_per_million: f64,
    /// API Gateway WebSocket APIs, per million messages (each 32 KB of a message is one; the notifier's
    /// posts to subscribers are messages). Default 1.00: **not in COST-MODEL**; the widely quoted us-east-1
    /// list price for the first billion messages, unverified.
    pub apigateway_websocket_messages_per_million: f64,
    /// DynamoDB export to S3 (a backfill's `Export` source), per GB of table size exported. Default 0.10:
    /// **not in COST-MODEL**; the widely quoted us-east-1 list price for full exports, unverified.
    pub dynamodb_export_gb: f64,
    /// DynamoDB on-demand, per million read request units (a backfill's `Scan` source). Default 0.125:
    /// **not in COST-MODEL**; the widely quoted us-east-1 list price since November 2024, unverified.
    pub dynamodb_read_units_per_million: f64,
}

impl Default for Prices {
    fn default() -> Self {
        Prices {
            sqs_standard_requests_per_million: 0.40,
            sqs_fifo_requests_per_million: 0.50,
            lambda_requests_per_million: 0.20,
            lambda_gb_second: 0.000_016_666_7,
            sns_publishes_per_million: 0.50,
            sns_lambda_deliveries_per_million: 0.0,
            dynamodb_write_units_per_million: 0.625,
            dynamodb_storage_gb_month: 0.25,
            dynamodb_pitr_gb_month: 0.20,
            dynamodb_streams_reads_per_million: 0.20,
            apigateway_websocket_messages_per_million: 1.00,
            dynamodb_export_gb: 0.10,
            dynamodb_read_units_per_million: 0.125,
        }
    }
}

impl Prices {
    /// The prices of the seed post's era, as COST-MODEL §2 scenario C uses them: DynamoDB writes at $1.25
    /// per million write units (before November 2024); everything else as [`Prices::default`].
    pub fn before_november_2024() -> Self {
        Prices { dynamodb_write_units_per_million: 1.25, ..Prices::default() }
    }

    /// Every price must be a finite number, zero or more.
    pub fn validate(&self) -> Result<(), CostError> {
        let fields = [
            (
                "sqsStandardRequestsPerMillion",
                self.sqs_standard_requests_per_million,
            ),
            ("sqsFifoRequestsPerMillion", self.sqs_fifo_requests_per_million),
            ("lambdaRequestsPerMillion", self.lambda_requests_per_million),
            ("lambdaGbSecond", self.lambda_gb_second),
            ("snsPublishesPerMillion", self.sns_publishes_per_million),
            (
                "snsLambdaDeliveriesPerMillion",
                self.sns_lambda_deliveries_per_million,
            ),
            (
                "dynamodbWriteUnitsPerMillion",
                self.dynamodb_write_units_per_million,
            ),
            ("dynamodbStorageGbMonth", self.dynamodb_storage_gb_month),
            ("dynamodbPitrGbMonth", self.dynamodb_pitr_gb_month),
            (
                "dynamodbStreamsReadsPerMillion",
                self.dynamodb_streams_reads_per_million,
            ),
            (
                "apigatewayWebsocketMessagesPerMillion",
                self.apigateway_websocket_messages_per_million,
            ),
            ("dynamodbExportGb", self.dynamodb_export_gb),
            (
                "dynamodbReadUnitsPerMillion",
                self.dynamodb_read_units_per_million,
            ),
        ];
        for (field, value) in fields {
            if !value.is_finite() || value < 0.0 {
                return Err(CostError::InvalidInput {
                    field: format!("prices.{field}"),
                    value: value.to_string(),
                    expected: "a price in US dollars, zero or more",
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_corrected_list_prices() {
        let p = Prices::default();
        assert_eq!(p.sqs_standard_requests_per_million, 0.40);
        assert_eq!(p.lambda_requests_per_million, 0.20);
        assert_eq!(p.lambda_gb_second, 0.0000166667);
        assert_eq!(p.sns_publishes_per_million, 0.50);
        assert_eq!(p.sns_lambda_deliveries_per_million, 0.0);
        assert_eq!(p.dynamodb_write_units_per_million, 0.625);
        assert_eq!(p.dynamodb_storage_gb_month, 0.25);
        assert_eq!(
            Prices::before_november_2024().dynamodb_write_units_per_million,
            1.25
        );
        assert!(p.validate().is_ok());
    }

    #[test]
    fn yaml_overrides_keep_the_other_defaults_and_reject_typos() {
        let p: Prices =
            serde_yaml::from_str("dynamodbWriteUnitsPerMillion: 1.25\nlambdaGbSecond: 0.0000166\n")
                .expect("valid overrides");
        assert_eq!(p.dynamodb_write_units_per_million, 1.25);
        assert_eq!(p.lambda_gb_second, 0.0000166);
        assert_eq!(p.sqs_standard_requests_per_million, 0.40);

        let typo = serde_yaml::from_str::<Prices>("dynamodbWriteUnitPerMillion: 1.25\n");
        assert!(typo.is_err(), "an unknown field must be rejected");
    }

    #[test]
    fn negative_prices_are_rejected() {
        let p = Prices { lambda_gb_second: -1.0, ..Prices::default() };
        let err = p.validate().expect_err("negative price");
        assert!(err.to_string().contains("prices.lambdaGbSecond"), "{err}");
    }
}
