//! Scenario tests of the cost model: each line against arithmetic written out in the comments.
//!
//! Unless a test says otherwise: default prices (SQS $0.40/M, Lambda $0.20/M and $0.0000166667/GB-s, SNS
//! $0.50/M, DynamoDB $0.625/M write units, $0.25/GB-month, PITR $0.20/GB-month, Streams $0.20/M) and
//! default assumptions (10 KB records, equal record-type shares, Lambda 20 ms per invocation + 10 ms per
//! record, 10 records per stream-triggered invocation, built-in functions at 128 MB = 0.125 GB).

use super::*;
use crate::crd::{EventLog, MaterializedView};
use crate::plan::ResolvedFanOut;
use Component::*;

const GB_S: f64 = 0.000_016_666_7;

fn event_log(spec: &str) -> EventLog {
    let yaml =
        format!("apiVersion: kappa.dev/v1alpha1\nkind: EventLog\nmetadata: {{name: events}}\nspec: {spec}\n");
    serde_yaml::from_str(&yaml).expect("test EventLog")
}

fn view(name: &str, spec: &str) -> MaterializedView {
    let yaml = format!(
        "apiVersion: kappa.dev/v1alpha1\nkind: MaterializedView\nmetadata: {{name: {name}}}\nspec: {spec}\n"
    );
    serde_yaml::from_str(&yaml).expect("test MaterializedView")
}

/// A declarative view of `events` projecting `types` in `mode`, with `extra` spec fields (`, a: b`).
fn view_of(name: &str, types: &str, mode: &str, extra: &str) -> MaterializedView {
    let sum_of = if mode == "Sum" { ", sumOf: points" } else { "" };
    view(
        name,
        &format!(
            "{{eventLogRef: {{name: events}}, recordTypes: [{types}], \
             projection: {{mode: {mode}, key: {{partitionKey: 'K#{{id}}'}}{sum_of}}}{extra}}}"
        ),
    )
}

fn approx(actual: f64, expected: f64, what: &str) {
    let tolerance = 1e-9 * expected.abs().max(1.0);
    assert!(
        (actual - expected).abs() <= tolerance,
        "{what}: {actual} != {expected}"
    );
}

fn line<'a>(est: &'a Estimate, component: Component, resource: &str) -> &'a Line {
    est.line(component, resource)
        .unwrap_or_else(|| panic!("no {component} line on {resource}; lines: {:#?}", est.lines))
}

/// Checks one line's quantity and dollars.
fn check(est: &Estimate, component: Component, resource: &str, quantity: f64, usd: f64) {
    let l = line(est, component, resource);
    approx(
        l.quantity,
        quantity,
        &format!("{component} on {resource}: quantity"),
    );
    approx(l.usd, usd, &format!("{component} on {resource}: USD"));
}

/// Checks several lines of an estimate: `est.has_lines(&[(component, resource, quantity, usd), ...])`,
/// each row as in [`check`].
trait HasLines {
    fn has_lines(&self, rows: &[(Component, &str, f64, f64)]);
}

impl HasLines for Estimate {
    fn has_lines(&self, rows: &[(Component, &str, f64, f64)]) {
        for &(component, resource, quantity, usd) in rows {
            check(self, component, resource, quantity, usd);
        }
    }
}

fn sum(est: &Estimate, keep: impl Fn(&Line) -> bool) -> f64 {
    est.lines.iter().filter(|l| keep(l)).map(|l| l.usd).sum()
}

fn cents(x: f64) -> String {
    format!("{x:.2}")
}

/// The seed post's topology mapped onto this operator's, with COST-MODEL §2's corrected inputs:
/// two record types, two views that each project both (n = 2) into a shared views table with Streams.
fn seed() -> (EventLog, Vec<MaterializedView>, Assumptions) {
    let log = event_log(
        "{recordTypes: [a, b], table: {pointInTimeRecovery: false}, \
         ingest: {queueType: Standard, batchSize: 10}, fanOut: {mode: Sns}}",
    );
    let views = ["p", "q"]
        .map(|name| {
            view_of(
                name,
                "a, b",
                "Append",
                ", projector: {memoryMb: 1024}, store: {streams: true}, subscribers: {}",
            )
        })
        .to_vec();
    let mut a = Assumptions::default();
    // §1 i2: one SQS read per 10 writes; §1 i4: every Lambda runs once per write ("1 + 1 + k·n" + n = 6).
    a.sqs.messages_per_receive = Some(10.0);
    // §4.5: "a write causes 2 SNS messages", billed as 2 publishes.
    a.sns.publish_requests_per_record = Some(2.0);
    // §1 i9: each view costs 0.5× the base table: half-size items (5 KB = 5 write units).
    a.view_item_size_kb = Some(5.0);
    // §3: the smaller Lambda is 0.19 GB-s per write over 4 invocations (writer, router, 2 notifier
    // invocations): 128 MB × 380 ms = 0.0475 GB-s each; the bigger one 1.5 GB-s over the n = 2
    // projector invocations: 1024 MB × 750 ms = 0.75 GB-s each.
    for lambda in [&mut a.writer, &mut a.router, &mut a.notifier] {
        lambda.memory_mb = Some(128);
        lambda.records_per_invocation = Some(1.0);
        lambda.ms_per_invocation = 380.0;
        lambda.ms_per_record = 0.0;
    }
    a.projector.ms_per_invocation = 750.0;
    // COST-MODEL prices no API Gateway: no WebSocket messages to subscribers in its scenarios.
    a.subscribers_per_change = 0.0;
    a.projector.ms_per_record = 0.0;
    (log, views, a)
}

/// The prices of the seed post's era ($1.25 per million write units) with its truncated GB-s price (§3).
fn post_era_prices() -> Prices {
    Prices {
        lambda_gb_second: 0.000_016_6,
        ..Prices::before_november_2024()
    }
}

/// The [`seed`] topology's estimate at `prices`.
fn seed_estimate(prices: &Prices) -> Estimate {
    let (log, views, a) = seed();
    estimate(&log, &views, prices, &a)
}

#[test]
fn seed_scenario_reproduces_cost_model_scenarios_c_and_d_to_the_cent() {
    // Scenario C: the post's era ($1.25 per million write units) and its truncated GB-s price (§3).
    let prices = post_era_prices();
    let est = seed_estimate(&prices);
    assert_eq!(est.fan_out, ResolvedFanOut::Sns);

    // SQS: 1M sends + 0.1M receives + 0.1M deletes = 1.2M × $0.40/M = 0.48.
    est.has_lines(&[
        (SqsSend, "ingest queue", 1e6, 0.40),
        (SqsReceive, "ingest queue", 1e5, 0.04),
        (SqsDelete, "ingest queue", 1e5, 0.04),
    ]);
    approx(sum(&est, |l| l.resource == "ingest queue"), 0.48, "SQS");

    // Lambda requests: writer 1M + router 1M + 2 projectors × 1M + notifier 2M = 6M × $0.20/M = 1.20.
    let requests: f64 = est
        .lines
        .iter()
        .filter(|l| l.component == LambdaRequests)
        .map(|l| l.quantity)
        .sum();
    approx(requests, 6e6, "Lambda invocations");
    approx(
        sum(&est, |l| l.component == LambdaRequests),
        1.20,
        "Lambda requests",
    );
    // Duration: smaller 4 × 0.0475 = 0.19 GB-s per write → 190,000 GB-s × $0.0000166 = 3.154;
    // bigger 2 × 0.75 = 1.5 GB-s per write → 1,500,000 GB-s × $0.0000166 = 24.90.
    est.has_lines(&[
        (LambdaDuration, "writer Lambda", 47_500.0, 0.7885),
        (LambdaDuration, "router Lambda", 47_500.0, 0.7885),
        (LambdaDuration, "notifier of views table views", 95_000.0, 1.577),
        (LambdaDuration, "projector p", 750_000.0, 12.45),
        (LambdaDuration, "projector q", 750_000.0, 12.45),
    ]);
    // Lambda total: 1.20 + 3.154 + 24.90 = 29.254 ("29.25" in scenario C).
    let lambda = sum(&est, |l| matches!(l.component, LambdaRequests | LambdaDuration));
    approx(lambda, 29.254, "Lambda");
    assert_eq!(cents(lambda), "29.25");

    // SNS: 1M records × 2 publishes × $0.50/M = 1.00 (topics a and b get half each); deliveries free.
    est.has_lines(&[
        (SnsPublishes, "topic a", 1e6, 0.50),
        (SnsPublishes, "topic b", 1e6, 0.50),
        (SnsDeliveries, "projector p", 1e6, 0.0),
    ]);

    // DynamoDB writes: log 10M + views 2 × 1M × 5 = 20M write units × $1.25/M = 25.00.
    est.has_lines(&[
        (DynamoDbWrites, "log table", 10e6, 12.50),
        (DynamoDbWrites, "view p", 5e6, 6.25),
        (DynamoDbWrites, "view q", 5e6, 6.25),
        // Storage, first month: (10 + 5 + 5) GB × $0.25 = 5.00. Streams read by Lambda: 0.
        (DynamoDbStorage, "log table", 10.0, 2.50),
        (DynamoDbStorage, "view p", 5.0, 1.25),
    ]);
    approx(sum(&est, |l| l.component == StreamReads), 0.0, "Streams");
    assert!(
        est.line(PitrStorage, "log table").is_none(),
        "the seed has no PITR"
    );
    let dynamodb = sum(&est, |l| {
        matches!(l.component, DynamoDbWrites | DynamoDbStorage | StreamReads)
    });
    approx(dynamodb, 30.0, "DynamoDB");

    // Total C: 0.48 + 29.254 + 1.00 + 30.00 = 60.734 → $60.73, as COST-MODEL §2 scenario C.
    approx(est.total(), 60.734, "scenario C");
    assert_eq!(est.summary(), "$60.73 per million writes");

    // Scenario D: writes at $0.625/M: 20M × 0.625 = 12.50 instead of 25.00 → 48.234 → $48.23.
    let est = seed_estimate(&Prices { dynamodb_write_units_per_million: 0.625, ..prices });
    approx(est.total(), 48.234, "scenario D");
    assert_eq!(est.summary(), "$48.23 per million writes");
}

/// The `examples/game` topology at defaults, every line by hand.
fn game() -> (EventLog, Vec<MaterializedView>) {
    let log = event_log(
        "{recordTypes: [player, game], table: {}, ingest: {queueType: Standard, batchSize: 10}, \
         fanOut: {mode: Sns, topics: [{name: players, recordTypes: [player]}, \
         {name: games, recordTypes: [game]}]}}",
    );
    let views = vec![
        view_of("players", "player", "Latest", ""),
        view_of("player-scores", "player", "Sum", ""),
        view_of("game-feed", "game", "Append", ""),
        view_of(
            "games",
            "game",
            "Latest",
            ", store: {table: Dedicated, streams: true}, subscribers: {}",
        ),
    ];
    (log, views)
}

#[test]
fn every_line_of_the_game_example_at_defaults() {
    let (log, views) = game();
    let est = estimate(&log, &views, &Prices::default(), &Assumptions::default());
    assert_eq!(est.event_log, "default/events");
    assert_eq!(est.fan_out, ResolvedFanOut::Sns);

    // Ingest: 10 records per batch → 100k receives and 100k deletes; 1M sends of one 64 KB chunk each.
    est.has_lines(&[
        (SqsSend, "ingest queue", 1e6, 0.40),
        (SqsReceive, "ingest queue", 1e5, 0.04),
        (SqsDelete, "ingest queue", 1e5, 0.04),
        // Writer: 1M / 10 = 100k invocations × $0.20/M = 0.02; 100k × 0.125 GB × (20 + 10 × 10) ms = 1,500 GB-s.
        (LambdaRequests, "writer Lambda", 1e5, 0.02),
        (LambdaDuration, "writer Lambda", 1_500.0, 1_500.0 * GB_S),
        // Log: 10 write units per 10 KB record → 10M × $0.625/M = 6.25; 10 GB × $0.25 = 2.50; PITR 10 × 0.20.
        (DynamoDbWrites, "log table", 10e6, 6.25),
        (DynamoDbStorage, "log table", 10.0, 2.50),
        (PitrStorage, "log table", 10.0, 2.00),
        // Router: reads 1M records free; 100k invocations; 1,500 GB-s like the writer.
        (StreamReads, "log stream (router Lambda)", 1e6, 0.0),
        (LambdaRequests, "router Lambda", 1e5, 0.02),
        (LambdaDuration, "router Lambda", 1_500.0, 1_500.0 * GB_S),
        // Topics: half the records each → 500k publishes × $0.50/M = 0.25.
        (SnsPublishes, "topic players", 5e5, 0.25),
        (SnsPublishes, "topic games", 5e5, 0.25),
    ]);
    // Projectors: 500k deliveries (free) → 500k invocations × $0.20/M = 0.10;
    // 500k × 0.25 GB (spec default 256 MB) × (20 + 10) ms = 3,750 GB-s.
    for p in ["players", "player-scores", "game-feed", "games"] {
        let projector = format!("projector {p}");
        est.has_lines(&[
            (SnsDeliveries, &projector, 5e5, 0.0),
            (LambdaRequests, &projector, 5e5, 0.10),
            (LambdaDuration, &projector, 3_750.0, 3_750.0 * GB_S),
        ]);
    }
    // Latest and Append: 500k records × 10 write units = 5M × $0.625/M = 3.125; 500k × 10 KB = 5 GB → 1.25.
    for v in ["view players", "view game-feed", "view games"] {
        est.has_lines(&[(DynamoDbWrites, v, 5e6, 3.125), (DynamoDbStorage, v, 5.0, 1.25)]);
    }
    // Sum: 500k × (1 contribution + 1 aggregate put) = 1M write units → 0.625;
    // storage 500k × 0.1 KB markers + 500k × 0.1 KB aggregates = 0.1 GB → 0.025.
    est.has_lines(&[
        (DynamoDbWrites, "view player-scores", 2e6, 1.25),
        (DynamoDbStorage, "view player-scores", 0.1, 0.025),
        // games' dedicated table has Streams: 500k changes read free by the notifier; 50k invocations → 0.01;
        // 50k × 0.125 GB × 120 ms = 750 GB-s. The shared table `views` has no Streams: no lines.
        (StreamReads, "views table games (dedicated) stream", 5e5, 0.0),
        (
            LambdaRequests,
            "notifier of views table games (dedicated)",
            5e4,
            0.01,
        ),
        (
            LambdaDuration,
            "notifier of views table games (dedicated)",
            750.0,
            750.0 * GB_S,
        ),
    ]);
    assert_eq!(est.lines_for("notifier of views table views").count(), 0);
    // games has subscribers: each of its 500k changes is a WebSocket message to 1 subscriber → 0.50.
    check(
        &est,
        WebSocketMessages,
        "views table games (dedicated) WebSocket API",
        5e5,
        0.5,
    );

    // Total: SQS 0.48 + writer 0.02 + log 10.75 + router 0.02 + SNS 0.50 + projectors 0.40 + views writes
    // 10.625 (the Sum view's transactional marker and ADD: 4 units a record) + views storage 3.775 +
    // notifier 0.01 + WebSocket 0.50 = 27.08, plus 18,750 GB-s × $0.0000166667 = 0.3125.
    approx(est.total(), 27.08 + 18_750.0 * GB_S, "total");
    assert_eq!(est.summary(), "$27.39 per million writes");
}

#[test]
fn direct_drops_the_router_and_topics_and_batches_the_projectors() {
    let spec = |mode: &str| {
        format!("{{recordTypes: [a, b], table: {{pointInTimeRecovery: false}}, fanOut: {{mode: {mode}}}}}")
    };
    let views = vec![view_of("x", "a", "Append", ""), view_of("y", "b", "Append", "")];
    let p = Prices::default();
    let a = Assumptions::default();
    let sns = estimate(&event_log(&spec("Sns")), &views, &p, &a);
    let auto = estimate(&event_log(&spec("Auto")), &views, &p, &a);
    assert_eq!(sns.fan_out, ResolvedFanOut::Sns);
    // Two Lambda readers are within DynamoDB's advice of two per shard: Auto is Direct.
    assert_eq!(auto.fan_out, ResolvedFanOut::Direct);
    let direct = auto;

    assert!(direct.lines_for("router Lambda").next().is_none());
    assert!(
        direct
            .lines
            .iter()
            .all(|l| !matches!(l.component, SnsPublishes | SnsDeliveries))
    );
    // Direct: each projector reads the whole stream (free) but is invoked only for its 500k records,
    // 10 per invocation: 50k invocations × $0.20/M = 0.01; 50k × 0.25 GB × 120 ms = 1,500 GB-s.
    direct.has_lines(&[
        (StreamReads, "log stream (projector x)", 1e6, 0.0),
        (LambdaRequests, "projector x", 5e4, 0.01),
        (LambdaDuration, "projector x", 1_500.0, 1_500.0 * GB_S),
    ]);
    // Sns: one invocation per delivered record: 500k × $0.20/M = 0.10; 500k × 0.25 GB × 30 ms = 3,750 GB-s.
    sns.has_lines(&[
        (LambdaRequests, "projector x", 5e5, 0.10),
        (LambdaDuration, "projector x", 3_750.0, 3_750.0 * GB_S),
    ]);

    // Sns − Direct = router (0.02 + 1,500 GB-s) + publishes (1M × $0.50/M = 0.50)
    //              + 2 projectors × (0.10 − 0.01 + (3,750 − 1,500) GB-s) = 0.70 + 6,000 GB-s.
    approx(
        sns.total() - direct.total(),
        0.70 + 6_000.0 * GB_S,
        "Sns − Direct",
    );

    // A third Lambda reader tips Auto over to Sns.
    let mut three = views.clone();
    three.push(view_of("z", "a", "Latest", ""));
    assert_eq!(
        estimate(&event_log(&spec("Auto")), &three, &p, &a).fan_out,
        ResolvedFanOut::Sns
    );
}

#[test]
fn a_fifo_queue_costs_its_own_request_price() {
    let log = event_log("{recordTypes: [a], table: {}, ingest: {queueType: Fifo, batchSize: 5}}");
    let est = estimate(&log, &[], &Prices::default(), &Assumptions::default());
    // 1M sends + 1M / 5 = 200k receives + 200k deletes = 1.4M × $0.50/M = 0.70.
    est.has_lines(&[
        (SqsSend, "ingest queue (FIFO)", 1e6, 0.50),
        (SqsReceive, "ingest queue (FIFO)", 2e5, 0.10),
        (SqsDelete, "ingest queue (FIFO)", 2e5, 0.10),
        // The writer takes 5 per invocation: 200k invocations, 200k × 0.125 GB × (20 + 50) ms = 1,750 GB-s.
        (LambdaRequests, "writer Lambda", 2e5, 0.04),
        (LambdaDuration, "writer Lambda", 1_750.0, 1_750.0 * GB_S),
    ]);
    assert!(est.lines_for("ingest queue").next().is_none());
}

#[test]
fn sqs_batching_and_payload_chunks() {
    // batchSize 100: receives still return at most 10 messages; 1M / 10 = 100k receives and deletes.
    let log =
        event_log("{recordTypes: [a], table: {}, ingest: {batchSize: 100, maximumBatchingWindowSeconds: 5}}");
    let mut a = Assumptions::default();
    let est = estimate(&log, &[], &Prices::default(), &a);
    est.has_lines(&[
        (SqsReceive, "ingest queue", 1e5, 0.04),
        // The writer gets 100 per invocation: 10k invocations; 10k × 0.125 GB × (20 + 1000) ms = 1,275 GB-s.
        (LambdaRequests, "writer Lambda", 1e4, 0.002),
        (LambdaDuration, "writer Lambda", 1_275.0, 1_275.0 * GB_S),
    ]);

    // SendMessageBatch of 10 × 10 KB = 100 KB = 2 chunks per 10 messages: 200k send requests.
    // Receive payload chunks: 10 × 10 KB = 2 chunks per receive: 200k receive requests.
    a.sqs.messages_per_send = 10.0;
    a.sqs.bill_receive_payload_chunks = true;
    let est = estimate(&log, &[], &Prices::default(), &a);
    est.has_lines(&[
        (SqsSend, "ingest queue", 2e5, 0.08),
        (SqsReceive, "ingest queue", 2e5, 0.08),
        (SqsDelete, "ingest queue", 1e5, 0.04),
    ]);
}

#[test]
fn dedicated_and_shared_tables_with_and_without_streams() {
    let log = event_log("{recordTypes: [a, b], table: {pointInTimeRecovery: false}, fanOut: {mode: Direct}}");
    let p = Prices::default();
    let a = Assumptions::default();

    // Streams off everywhere: no stream or notifier lines for any views table.
    let off = vec![view_of("x", "a", "Append", ""), view_of("y", "b", "Append", "")];
    let est_off = estimate(&log, &off, &p, &a);
    assert!(
        est_off
            .lines
            .iter()
            .all(|l| !l.resource.contains("notifier") && !l.resource.starts_with("views table"))
    );

    // x asks for Streams in the shared table: the table's stream carries y's changes too,
    // 500k + 500k = 1M records → 100k notifier invocations × $0.20/M = 0.02; 1,500 GB-s.
    let shared = vec![
        view_of("x", "a", "Append", ", store: {streams: true}, subscribers: {}"),
        view_of("y", "b", "Append", ""),
    ];
    let est_shared = estimate(&log, &shared, &p, &a);
    est_shared.has_lines(&[
        (StreamReads, "views table views stream", 1e6, 0.0),
        (LambdaRequests, "notifier of views table views", 1e5, 0.02),
        (
            LambdaDuration,
            "notifier of views table views",
            1_500.0,
            1_500.0 * GB_S,
        ),
    ]);

    // In a dedicated table, only x's 500k changes: 50k invocations → 0.01; 750 GB-s.
    let dedicated = vec![
        view_of(
            "x",
            "a",
            "Append",
            ", store: {table: Dedicated, streams: true}, subscribers: {}",
        ),
        view_of("y", "b", "Append", ""),
    ];
    let est_dedicated = estimate(&log, &dedicated, &p, &a);
    let notifier = "notifier of views table x (dedicated)";
    est_dedicated.has_lines(&[
        (LambdaRequests, notifier, 5e4, 0.01),
        (LambdaDuration, notifier, 750.0, 750.0 * GB_S),
    ]);
    assert!(
        est_dedicated
            .lines_for("notifier of views table views")
            .next()
            .is_none()
    );

    // The items cost the same wherever they live: 500k × 10 write units each.
    for est in [&est_off, &est_shared, &est_dedicated] {
        check(est, DynamoDbWrites, "view x", 5e6, 3.125);
    }
    // x's 500k changes are WebSocket messages to its 1 subscriber (y has none): 0.50 either way.
    for (est, table) in [
        (&est_shared, "views table views"),
        (&est_dedicated, "views table x (dedicated)"),
    ] {
        check(
            est,
            WebSocketMessages,
            &format!("{table} WebSocket API"),
            5e5,
            0.5,
        );
    }
    approx(
        est_shared.total() - est_off.total(),
        0.02 + 1_500.0 * GB_S + 0.5,
        "streams on, shared",
    );
    approx(
        est_dedicated.total() - est_off.total(),
        0.01 + 750.0 * GB_S + 0.5,
        "streams on, dedicated",
    );
    // Streams without subscribers: the stream exists, nothing reads it, nothing is charged.
    let quiet = vec![view_of("x", "a", "Append", ", store: {streams: true}")];
    let est_quiet = estimate(&log, &quiet, &p, &a);
    check(&est_quiet, StreamReads, "views table views stream", 5e5, 0.0);
    assert!(
        est_quiet
            .lines
            .iter()
            .all(|l| !l.resource.contains("notifier") && l.component != WebSocketMessages)
    );
    assert!(
        est_quiet
            .notes
            .iter()
            .any(|n| n.contains("no view of it has spec.subscribers"))
    );
}

#[test]
fn count_and_sum_pay_for_a_contribution_and_the_aggregate_per_record() {
    let log = event_log("{recordTypes: [a, b], table: {}, fanOut: {mode: Direct}}");
    let views = vec![view_of("c", "a", "Count", ""), view_of("s", "b", "Sum", "")];
    let mut a = Assumptions::default();
    let est = estimate(&log, &views, &Prices::default(), &a);
    // 500k records × (2 for the transactional marker put + 2 for the transactional ADD) = 2M units ×
    // $0.625/M; no reads, whatever a key's history.
    est.has_lines(&[
        (DynamoDbWrites, "view c", 2e6, 1.25),
        (DynamoDbWrites, "view s", 2e6, 1.25),
    ]);
    assert!(!est.notes.iter().any(|n| n.contains("recomputes")));

    // A 1.5 KB marker takes 2 units, 4 in a transaction: 500k × (4 + 2) = 3M units → 1.875.
    a.marker_item_size_kb = 1.5;
    let est = estimate(&log, &views, &Prices::default(), &a);
    check(&est, DynamoDbWrites, "view c", 3e6, 1.875);
}

#[test]
fn in_cluster_projectors_have_no_lambda_lines_but_pay_for_get_records() {
    let log = event_log("{recordTypes: [a, b], table: {}, fanOut: {mode: Auto}}");
    let views = vec![
        view_of("lam", "a", "Append", ""),
        view_of("inc", "b", "Latest", ", projector: {runtime: InCluster}"),
    ];
    let est = estimate(&log, &views, &Prices::default(), &Assumptions::default());
    // One Lambda reader plus the operator: two readers, Auto stays Direct.
    assert_eq!(est.fan_out, ResolvedFanOut::Direct);
    assert!(
        est.lines_for("projector inc").next().is_none(),
        "no Lambda for an in-cluster view"
    );
    assert!(est.lines_for("log stream (projector inc)").next().is_none());
    assert!(est.line(LambdaRequests, "projector lam").is_some());
    // GetRecords returns 1 MB / 10 KB = 102 records per call: 1M / 102 = 9,803.92 calls × $0.20/M.
    let calls = 1e6 / 102.0;
    est.has_lines(&[
        (
            StreamReads,
            "log stream (in-cluster reader)",
            calls,
            calls * 0.20 / 1e6,
        ),
        // Its writes are billed as any view's: 500k × 10 units.
        (DynamoDbWrites, "view inc", 5e6, 3.125),
    ]);

    // Several in-cluster views share one reader, and no Lambda runs at all (no ingest queue here).
    let all_in_cluster = vec![
        view_of("i1", "a", "Append", ", projector: {runtime: InCluster}"),
        view_of("i2", "b", "Append", ", projector: {runtime: InCluster}"),
    ];
    let est = estimate(&log, &all_in_cluster, &Prices::default(), &Assumptions::default());
    let readers = est
        .lines
        .iter()
        .filter(|l| l.resource == "log stream (in-cluster reader)")
        .count();
    assert_eq!(readers, 1);
    assert!(
        est.lines
            .iter()
            .all(|l| l.component != LambdaRequests || l.resource == "writer Lambda")
    );
}

#[test]
fn no_ingest_queue_means_no_sqs_and_no_writer() {
    let log = event_log("{recordTypes: [a], table: {}}");
    let est = estimate(&log, &[], &Prices::default(), &Assumptions::default());
    assert!(
        est.lines
            .iter()
            .all(|l| !matches!(l.component, SqsSend | SqsReceive | SqsDelete))
    );
    assert!(est.lines_for("writer Lambda").next().is_none());
    // Log only: 6.25 writes + 2.50 storage + 2.00 PITR.
    approx(est.total(), 10.75, "log only");
    assert!(est.notes.iter().any(|n| n.contains("no ingest queue")));
}

#[test]
fn record_type_shares_fill_up_and_scale() {
    let log = event_log("{recordTypes: [a, b, c], table: {}, fanOut: {mode: Direct}}");
    let views = vec![view_of("va", "a", "Append", ""), view_of("vb", "b", "Append", "")];
    let mut a = Assumptions::default();
    // a 0.8; b and c share the remaining 0.2: 0.1 each.
    a.record_type_shares.insert("a".into(), 0.8);
    a.record_type_shares.insert("zzz".into(), 0.5);
    let est = estimate(&log, &views, &Prices::default(), &a);
    est.has_lines(&[
        (DynamoDbWrites, "view va", 8e6, 5.0),
        (DynamoDbWrites, "view vb", 1e6, 0.625),
    ]);
    assert!(est.notes.iter().any(|n| n.contains("zzz")), "{:?}", est.notes);

    // Shares adding up to more than 1 are scaled: a 3, b 1 → 0.75 and 0.25, c 0.
    a.record_type_shares.clear();
    a.record_type_shares.insert("a".into(), 3.0);
    a.record_type_shares.insert("b".into(), 1.0);
    let est = estimate(&log, &views, &Prices::default(), &a);
    est.has_lines(&[
        (DynamoDbWrites, "view va", 7.5e6, 4.6875),
        (DynamoDbWrites, "view vb", 2.5e6, 1.5625),
    ]);
}

#[test]
fn storage_months_filters_and_view_overrides() {
    let log = event_log("{recordTypes: [a], table: {}, fanOut: {mode: Direct}}");
    let views = vec![view(
        "latest",
        "{eventLogRef: {name: events}, recordTypes: [a], \
         projection: {mode: Latest, key: {partitionKey: 'K#{id}'}, \
         filter: [{attribute: x, operator: Exists}]}}",
    )];
    let mut a = Assumptions { storage_months: 3.0, ..Assumptions::default() };
    let est = estimate(&log, &views, &Prices::default(), &a);
    // 10 GB × 3 months × $0.25 = 7.50; PITR 10 × 3 × $0.20 = 6.00.
    est.has_lines(&[
        (DynamoDbStorage, "log table", 30.0, 7.50),
        (PitrStorage, "log table", 30.0, 6.00),
    ]);
    assert!(
        est.notes.iter().any(|n| n.contains("filterPassShare")),
        "{:?}",
        est.notes
    );

    // Half the records pass the filter, items are 2 KB, 1 % of records are new keys:
    // writes 500k × 2 units = 1M → 0.625; storage 500k × 0.01 × 2 KB = 0.01 GB × 3 months = 0.03 GB-month.
    a.views.insert(
        "latest".into(),
        ViewAssumptions {
            item_size_kb: Some(2.0),
            new_key_share: Some(0.01),
            filter_pass_share: Some(0.5),
        },
    );
    let est = estimate(&log, &views, &Prices::default(), &a);
    est.has_lines(&[
        (DynamoDbWrites, "view latest", 1e6, 0.625),
        (DynamoDbStorage, "view latest", 0.03, 0.0075),
        // The projector still receives every record of its type: 1M / 10 = 100k invocations.
        (LambdaRequests, "projector latest", 1e5, 0.02),
    ]);
}

#[test]
fn views_of_other_logs_are_left_out_and_provisioned_logs_noted() {
    let log = event_log(
        "{recordTypes: [a], \
         table: {billing: {mode: Provisioned, readCapacityUnits: 5, writeCapacityUnits: 5}}}",
    );
    let other = view(
        "other",
        "{eventLogRef: {name: elsewhere}, recordTypes: [a], \
         projection: {mode: Append, key: {partitionKey: k}}}",
    );
    let est = estimate(&log, &[other], &Prices::default(), &Assumptions::default());
    assert!(est.lines_for("view other").next().is_none());
    assert!(
        est.notes
            .iter()
            .any(|n| n.contains("view other reads another EventLog")),
        "{:?}",
        est.notes
    );
    assert!(
        est.notes.iter().any(|n| n.contains("Provisioned")),
        "{:?}",
        est.notes
    );
}

#[test]
fn the_table_is_aligned_and_totals_the_lines() {
    let est = seed_estimate(&post_era_prices());
    let table = est.render_table();
    assert!(
        table.starts_with("Cost per million writes to EventLog default/events (fan-out Sns)\n"),
        "{table}"
    );
    let rows: Vec<&str> = table.lines().skip(2).take_while(|l| !l.is_empty()).collect();
    // Header, rule, one row per line, rule, total.
    assert_eq!(rows.len(), est.lines.len() + 4, "{table}");
    // The USD column is right-aligned: every row ends at the same column.
    let width = rows[0].len();
    assert!(rows.iter().all(|r| r.len() == width), "{table}");
    assert!(
        rows[0].starts_with("Component") && rows[0].ends_with("USD"),
        "{table}"
    );
    let total = rows.last().copied().unwrap_or_default();
    assert!(total.starts_with("Total") && total.ends_with("60.73"), "{table}");
    assert!(table.contains("SQS send requests"), "{table}");
    assert!(table.contains("$0.40/M"), "{table}");
    assert!(table.contains("$0.0000166/GB-s"), "{table}");
    assert!(table.contains("47,500"), "{table}");
    assert!(table.contains("\nNotes:\n- "), "{table}");
}

#[test]
fn the_estimate_serializes_for_machines() {
    let (log, views) = game();
    let est = estimate(&log, &views, &Prices::default(), &Assumptions::default());
    let json = serde_json::to_value(&est).expect("an estimate serializes");
    assert_eq!(json["fanOut"], "Sns");
    assert_eq!(json["lines"][0]["component"], "SqsSend");
    assert_eq!(json["lines"][0]["unitPrice"], 0.4);
}
