//! What an estimate is: lines of billed quantities, each on one AWS resource, per million log writes.

use serde::{Serialize, Serializer};

use super::prices::{LAMBDA_MB_PER_GB, Prices};
use crate::plan::ResolvedFanOut;

/// What a line is for; its `name()` is the first column of the table.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// SQS `SendMessage`/`SendMessageBatch` requests by producers.
    SqsSend,
    /// SQS `ReceiveMessage` requests by the writer's event source mapping.
    SqsReceive,
    /// SQS `DeleteMessageBatch` requests after each batch received.
    SqsDelete,
    /// Lambda invocations.
    LambdaRequests,
    /// Lambda compute (GB-seconds).
    LambdaDuration,
    /// DynamoDB write request units.
    DynamoDbWrites,
    /// DynamoDB table storage.
    DynamoDbStorage,
    /// DynamoDB point-in-time recovery (continuous backup) storage.
    PitrStorage,
    /// DynamoDB Streams reads: free for Lambda, per `GetRecords` call for other readers.
    StreamReads,
    /// SNS publish requests.
    SnsPublishes,
    /// SNS deliveries to Lambda subscribers.
    SnsDeliveries,
    /// API Gateway WebSocket messages (the notifier's posts to subscribers).
    WebSocketMessages,
}

impl Component {
    /// The human-readable name shown in the table.
    pub fn name(self) -> &'static str {
        match self {
            Component::SqsSend => "SQS send requests",
            Component::SqsReceive => "SQS receive requests",
            Component::SqsDelete => "SQS delete requests",
            Component::LambdaRequests => "Lambda requests",
            Component::LambdaDuration => "Lambda duration",
            Component::DynamoDbWrites => "DynamoDB writes",
            Component::DynamoDbStorage => "DynamoDB storage",
            Component::PitrStorage => "PITR backup storage",
            Component::StreamReads => "Streams reads",
            Component::SnsPublishes => "SNS publishes",
            Component::SnsDeliveries => "SNS deliveries",
            Component::WebSocketMessages => "WebSocket messages",
        }
    }
}

impl std::fmt::Display for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The unit a line's quantity is counted in, and the basis its price is quoted on.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// API requests or Lambda invocations, priced per million.
    Requests,
    /// GB-seconds of Lambda memory × duration, priced per GB-second.
    GbSeconds,
    /// DynamoDB write request units, priced per million.
    WriteUnits,
    /// GB-months of storage, priced per GB-month.
    GbMonths,
    /// SNS deliveries, priced per million.
    Deliveries,
    /// Stream records read by Lambda (free), priced per million.
    StreamRecords,
    /// DynamoDB Streams read request units (`GetRecords` calls), priced per million.
    ReadRequests,
    /// API Gateway WebSocket messages (32 KB each), priced per million.
    Messages,
}

impl Unit {
    /// The unit's name as shown in the table.
    pub fn label(self) -> &'static str {
        match self {
            Unit::Requests => "requests",
            Unit::GbSeconds => "GB-s",
            Unit::WriteUnits => "write units",
            Unit::GbMonths => "GB-month",
            Unit::Deliveries => "deliveries",
            Unit::StreamRecords => "records",
            Unit::ReadRequests => "read requests",
            Unit::Messages => "messages",
        }
    }

    /// How many units the price is quoted for: a million for counts, one for GB-s and GB-months.
    pub fn price_basis(self) -> f64 {
        match self {
            Unit::GbSeconds | Unit::GbMonths => 1.0,
            _ => 1_000_000.0,
        }
    }
}

/// One billed quantity of one AWS resource, per million log writes.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Line {
    /// What is billed.
    pub component: Component,
    /// The AWS resource it is billed on, for example `view players` or `router Lambda`.
    pub resource: String,
    /// Units per million log writes.
    pub quantity: f64,
    /// The unit of `quantity`.
    pub unit: Unit,
    /// US dollars per `unit.price_basis()` units (per million requests, per GB-second, ...).
    pub unit_price: f64,
    /// US dollars per million log writes: `quantity × unit_price / unit.price_basis()`.
    pub usd: f64,
}

impl Line {
    pub(super) fn new(
        component: Component,
        resource: impl Into<String>,
        quantity: f64,
        unit: Unit,
        price: f64,
    ) -> Line {
        Line {
            component,
            resource: resource.into(),
            quantity,
            unit,
            unit_price: price,
            usd: quantity * price / unit.price_basis(),
        }
    }
}

/// The cost of a million writes to one EventLog, with every line that makes it up.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Estimate {
    /// The EventLog, as `namespace/name`.
    pub event_log: String,
    /// The fan-out in effect (`Auto` resolved as the operator would).
    #[serde(serialize_with = "fan_out_as_str")]
    pub fan_out: ResolvedFanOut,
    /// The lines, in the order of the topology: ingest, log, fan-out, views, views tables.
    pub lines: Vec<Line>,
    /// What the estimate assumed or left out, for this topology in particular.
    pub notes: Vec<String>,
}

fn fan_out_as_str<S: Serializer>(fan_out: &ResolvedFanOut, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(fan_out.as_str())
}

impl Estimate {
    /// US dollars per million log writes, all lines together.
    pub fn total(&self) -> f64 {
        self.lines.iter().map(|l| l.usd).sum()
    }

    /// The line of `component` on `resource`, if there is one.
    pub fn line(&self, component: Component, resource: &str) -> Option<&Line> {
        self.lines
            .iter()
            .find(|l| l.component == component && l.resource == resource)
    }

    /// Every line billed on `resource`.
    pub fn lines_for<'a>(&'a self, resource: &'a str) -> impl Iterator<Item = &'a Line> + 'a {
        self.lines.iter().filter(move |l| l.resource == resource)
    }

    pub(super) fn push(&mut self, line: Line) {
        self.lines.push(line);
    }

    pub(super) fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// A request line and a duration line for `invocations` of one function.
    pub(super) fn lambda(
        &mut self,
        resource: &str,
        invocations: f64,
        memory_mb: f64,
        ms_per_invocation: f64,
        p: &Prices,
    ) {
        self.push(Line::new(
            Component::LambdaRequests,
            resource,
            invocations,
            Unit::Requests,
            p.lambda_requests_per_million,
        ));
        let gb_seconds = invocations * (memory_mb / LAMBDA_MB_PER_GB) * (ms_per_invocation / 1000.0);
        self.push(Line::new(
            Component::LambdaDuration,
            resource,
            gb_seconds,
            Unit::GbSeconds,
            p.lambda_gb_second,
        ));
    }
}
