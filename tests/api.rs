//! The API as users meet it: the CRDs installed on the real kube-apiserver accept valid manifests, refuse
//! invalid ones with a message naming the field, refuse changes to immutable fields, and print the
//! columns `kubectl get` promises.

mod common;

const LOG: &str = r#"
apiVersion: kappa.dev/v1alpha1
kind: EventLog
metadata: {name: game-events}
spec:
  recordTypes: [player, game]
  table: {orderingAttribute: seq}
  ingest: {queueType: Standard, batchSize: 10}
  fanOut:
    mode: Sns
    topics:
    - {name: players, recordTypes: [player]}
    - {name: games, recordTypes: [game]}
  export: {bucket: kappa-exports}
"#;

const VIEW: &str = r#"
apiVersion: kappa.dev/v1alpha1
kind: MaterializedView
metadata: {name: players}
spec:
  eventLogRef: {name: game-events}
  recordTypes: [player]
  projection:
    mode: Latest
    key: {partitionKey: "PLAYER#{playerId}"}
    attributes: [{from: name}, {from: score, to: points}]
"#;

/// Replaces `from` with `to` in `base`, failing loudly if `from` is not there (so a case cannot
/// silently test the valid manifest).
fn edit(base: &str, from: &str, to: &str) -> String {
    assert!(
        base.contains(from),
        "test case edits {from:?}, which the base manifest lacks"
    );
    base.replacen(from, to, 1)
}

/// Appends lines to the spec (the base manifests end inside `spec`).
fn with(base: &str, extra: &str) -> String {
    format!("{base}{extra}")
}

#[tokio::test]
async fn valid_manifests_are_accepted() {
    let (client, ns) = common::setup("api-valid").await;
    common::create_yaml(&client, &ns, LOG)
        .await
        .expect("the example EventLog is valid");
    common::create_yaml(&client, &ns, VIEW)
        .await
        .expect("the example view is valid");
    let custom = with(
        &edit(
            &edit(VIEW, "name: players", "name: custom"),
            "  projection:\n    mode: Latest\n    key: {partitionKey: \"PLAYER#{playerId}\"}\n    attributes: [{from: name}, {from: score, to: points}]\n",
            "",
        ),
        "  projector:\n    memoryMb: 512\n    code: {functionArn: \"arn:aws:lambda:us-east-1:123456789012:function:my-projector\"}\n  store: {table: Dedicated, streams: true}\n  backfill: {source: Scan, parallelism: 8, approval: Manual}\n",
    );
    common::create_yaml(&client, &ns, &custom)
        .await
        .expect("a custom projector view is valid");
    let sum = edit(
        &edit(VIEW, "name: players", "name: scores"),
        "    mode: Latest\n    key: {partitionKey: \"PLAYER#{playerId}\"}\n    attributes: [{from: name}, {from: score, to: points}]\n",
        "    mode: Sum\n    sumOf: points\n    key: {partitionKey: \"SCORE#{playerId}\", sortKey: TOTAL}\n    filter: [{attribute: kind, operator: In, values: [win, draw]}, {attribute: points, operator: Exists}]\n",
    );
    common::create_yaml(&client, &ns, &sum)
        .await
        .expect("a Sum view is valid");
    common::delete_namespace(&client, &ns).await;
}

/// (case, manifest, text the API server's refusal must contain: the offending field).
fn invalid_manifests() -> Vec<(&'static str, String, &'static str)> {
    let v = VIEW;
    let l = LOG;
    let view_projection = "    mode: Latest\n    key: {partitionKey: \"PLAYER#{playerId}\"}\n    attributes: [{from: name}, {from: score, to: points}]\n";
    vec![
        // EventLog
        (
            "log without record types",
            edit(l, "recordTypes: [player, game]", "recordTypes: []"),
            "spec.recordTypes",
        ),
        (
            "log with a duplicate record type",
            edit(
                l,
                "recordTypes: [player, game]",
                "recordTypes: [player, game, player]",
            ),
            "spec.recordTypes[2]",
        ),
        (
            "log record type with a space",
            edit(
                l,
                "recordTypes: [player, game]",
                "recordTypes: [player, \"big game\"]",
            ),
            "spec.recordTypes[1]",
        ),
        (
            "log table name too short",
            edit(
                l,
                "table: {orderingAttribute: seq}",
                "table: {name: ab, orderingAttribute: seq}",
            ),
            "spec.table.name",
        ),
        (
            "log partition key starting with a digit",
            edit(l, "table: {orderingAttribute: seq}", "table: {partitionKey: 1pk}"),
            "spec.table.partitionKey",
        ),
        (
            "provisioned billing without capacity",
            edit(
                l,
                "table: {orderingAttribute: seq}",
                "table: {billing: {mode: Provisioned}}",
            ),
            "spec.table.billing",
        ),
        (
            "on-demand billing with capacity",
            edit(
                l,
                "table: {orderingAttribute: seq}",
                "table: {billing: {mode: OnDemand, readCapacityUnits: 5, writeCapacityUnits: 5}}",
            ),
            "spec.table.billing",
        ),
        (
            "zero read capacity",
            edit(
                l,
                "table: {orderingAttribute: seq}",
                "table: {billing: {mode: Provisioned, readCapacityUnits: 0, writeCapacityUnits: 5}}",
            ),
            "spec.table.billing.readCapacityUnits",
        ),
        (
            "keys-only stream view type",
            edit(
                l,
                "table: {orderingAttribute: seq}",
                "table: {streamViewType: KeysOnly}",
            ),
            "spec.table.streamViewType",
        ),
        (
            "adopting a table without its name",
            edit(
                l,
                "table: {orderingAttribute: seq}",
                "table: {adoptExisting: true}",
            ),
            "spec.table.name",
        ),
        (
            "fifo ingest batch of 20",
            edit(
                l,
                "ingest: {queueType: Standard, batchSize: 10}",
                "ingest: {queueType: Fifo, batchSize: 20}",
            ),
            "spec.ingest.batchSize",
        ),
        (
            "ingest batch of 0",
            edit(
                l,
                "ingest: {queueType: Standard, batchSize: 10}",
                "ingest: {batchSize: 0}",
            ),
            "spec.ingest.batchSize",
        ),
        (
            "ingest batching window over 300s",
            edit(
                l,
                "ingest: {queueType: Standard, batchSize: 10}",
                "ingest: {maximumBatchingWindowSeconds: 301}",
            ),
            "spec.ingest.maximumBatchingWindowSeconds",
        ),
        (
            "large ingest batch without a window",
            edit(
                l,
                "ingest: {queueType: Standard, batchSize: 10}",
                "ingest: {batchSize: 100}",
            ),
            "spec.ingest.maximumBatchingWindowSeconds",
        ),
        (
            "unknown fan-out mode",
            edit(l, "mode: Sns", "mode: Kinesis"),
            "spec.fanOut.mode",
        ),
        (
            "duplicate topic names",
            edit(
                l,
                "{name: games, recordTypes: [game]}",
                "{name: players, recordTypes: [game]}",
            ),
            "spec.fanOut.topics",
        ),
        (
            "record type in two topics",
            edit(
                l,
                "{name: games, recordTypes: [game]}",
                "{name: games, recordTypes: [game, player]}",
            ),
            "spec.fanOut.topics",
        ),
        (
            "topics with direct fan-out",
            edit(l, "mode: Sns", "mode: Direct"),
            "spec.fanOut.topics",
        ),
        (
            "topic for a record type the log lacks",
            edit(
                l,
                "{name: games, recordTypes: [game]}",
                "{name: games, recordTypes: [game, chat]}",
            ),
            "spec.fanOut.topics",
        ),
        (
            "upper-case topic name",
            edit(l, "{name: games,", "{name: Games,"),
            "spec.fanOut.topics[1].name",
        ),
        (
            "invalid export bucket",
            edit(
                l,
                "export: {bucket: kappa-exports}",
                "export: {bucket: My_Bucket}",
            ),
            "spec.export.bucket",
        ),
        (
            "unknown deletion policy",
            with(l, "  deletionPolicy: Destroy\n"),
            "spec.deletionPolicy",
        ),
        // MaterializedView
        (
            "view without eventLogRef",
            edit(v, "  eventLogRef: {name: game-events}\n", ""),
            "spec.eventLogRef",
        ),
        (
            "view without record types",
            edit(v, "recordTypes: [player]", "recordTypes: []"),
            "spec.recordTypes",
        ),
        (
            "view with a duplicate record type",
            edit(v, "recordTypes: [player]", "recordTypes: [player, player]"),
            "spec.recordTypes[1]",
        ),
        (
            "projection and custom code",
            with(
                v,
                "  projector:\n    code: {functionArn: \"arn:aws:lambda:us-east-1:123456789012:function:p\"}\n",
            ),
            "spec.projection",
        ),
        (
            "neither projection nor code",
            edit(v, &format!("  projection:\n{view_projection}"), ""),
            "spec.projector.code",
        ),
        (
            "sum without sumOf",
            edit(
                v,
                view_projection,
                "    mode: Sum\n    key: {partitionKey: \"S#{playerId}\"}\n",
            ),
            "spec.projection.sumOf",
        ),
        (
            "sumOf with latest",
            edit(v, "    mode: Latest\n", "    mode: Latest\n    sumOf: score\n"),
            "spec.projection.sumOf",
        ),
        (
            "min without minOf",
            edit(
                v,
                view_projection,
                "    mode: Min\n    key: {partitionKey: \"S#{playerId}\"}\n",
            ),
            "spec.projection.minOf",
        ),
        (
            "maxOf with min",
            edit(
                v,
                view_projection,
                "    mode: Min\n    minOf: score\n    maxOf: score\n    key: {partitionKey: \"S#{playerId}\"}\n",
            ),
            "spec.projection.maxOf",
        ),
        (
            "an unknown record-error policy",
            edit(
                v,
                "    mode: Latest\n",
                "    mode: Latest\n    onRecordError: Ignore\n",
            ),
            "spec.projection.onRecordError",
        ),
        (
            "orderBy with append",
            edit(v, "    mode: Latest\n", "    mode: Append\n    orderBy: seq\n"),
            "spec.projection.orderBy",
        ),
        (
            "attributes with count",
            edit(v, "    mode: Latest\n", "    mode: Count\n"),
            "spec.projection.attributes",
        ),
        (
            "two attributes written to one name",
            edit(v, "{from: score, to: points}", "{from: score, to: name}"),
            "spec.projection.attributes",
        ),
        (
            "attribute renamed to the partition key",
            edit(v, "{from: score, to: points}", "{from: score, to: pk}"),
            "spec.projection.attributes",
        ),
        (
            "unclosed key template",
            edit(v, "PLAYER#{playerId}", "PLAYER#{playerId"),
            "spec.projection.key.partitionKey",
        ),
        (
            "key template placeholder starting with a digit",
            edit(v, "PLAYER#{playerId}", "PLAYER#{1id}"),
            "spec.projection.key.partitionKey",
        ),
        (
            "exists filter with a value",
            edit(
                v,
                "    mode: Latest\n",
                "    mode: Latest\n    filter: [{attribute: name, operator: Exists, value: x}]\n",
            ),
            "spec.projection.filter[0]",
        ),
        (
            "in filter without values",
            edit(
                v,
                "    mode: Latest\n",
                "    mode: Latest\n    filter: [{attribute: name, operator: In}]\n",
            ),
            "spec.projection.filter[0]",
        ),
        (
            "unknown filter operator",
            edit(
                v,
                "    mode: Latest\n",
                "    mode: Latest\n    filter: [{attribute: name, operator: Like, value: x}]\n",
            ),
            "spec.projection.filter[0].operator",
        ),
        (
            "projector memory of 64 MB",
            with(v, "  projector: {memoryMb: 64}\n"),
            "spec.projector.memoryMb",
        ),
        (
            "projector timeout over 900s",
            with(v, "  projector: {timeoutSeconds: 901}\n"),
            "spec.projector.timeoutSeconds",
        ),
        (
            "custom code from two sources",
            edit(
                v,
                &format!("  projection:\n{view_projection}"),
                "  projector:\n    code:\n      functionArn: \"arn:aws:lambda:us-east-1:123456789012:function:p\"\n      imageUri: \"123456789012.dkr.ecr.us-east-1.amazonaws.com/p:1\"\n",
            ),
            "spec.projector.code",
        ),
        (
            "malformed function ARN",
            edit(
                v,
                &format!("  projection:\n{view_projection}"),
                "  projector:\n    code: {functionArn: \"my-function\"}\n",
            ),
            "spec.projector.code.functionArn",
        ),
        (
            "in-cluster runtime with custom code",
            edit(
                v,
                &format!("  projection:\n{view_projection}"),
                "  projector:\n    runtime: InCluster\n    code: {functionArn: \"arn:aws:lambda:us-east-1:123456789012:function:p\"}\n",
            ),
            "spec.projector.runtime",
        ),
        (
            "key prefix on a dedicated table",
            with(v, "  store: {table: Dedicated, keyPrefix: \"players#\"}\n"),
            "spec.store.keyPrefix",
        ),
        (
            "upper-case shared table name",
            with(v, "  store: {sharedTableName: Views}\n"),
            "spec.store.sharedTableName",
        ),
        (
            "backfill parallelism 0",
            with(v, "  backfill: {parallelism: 0}\n"),
            "spec.backfill.parallelism",
        ),
        (
            "backfill parallelism 65",
            with(v, "  backfill: {parallelism: 65}\n"),
            "spec.backfill.parallelism",
        ),
        (
            "unknown backfill source",
            with(v, "  backfill: {source: Snapshot}\n"),
            "spec.backfill.source",
        ),
        (
            "backfill write capacity 0%",
            with(v, "  backfill: {writeCapacityPercent: 0}\n"),
            "spec.backfill.writeCapacityPercent",
        ),
        (
            "unknown backfill approval",
            with(v, "  backfill: {approval: Sometimes}\n"),
            "spec.backfill.approval",
        ),
        (
            "subscribers on a views table without Streams",
            with(v, "  subscribers: {}\n"),
            "spec.store.streams",
        ),
        (
            "unknown subscriber protocol",
            with(v, "  store: {streams: true}\n  subscribers: {protocol: Smoke}\n"),
            "spec.subscribers.protocol",
        ),
        (
            "malformed promotion maxLag",
            with(v, "  promotion: {maxLag: 30 seconds}\n"),
            "spec.promotion.maxLag",
        ),
        (
            "unknown promotion mode",
            with(v, "  promotion: {mode: Eventually}\n"),
            "spec.promotion.mode",
        ),
    ]
}

#[tokio::test]
async fn invalid_manifests_are_refused_naming_the_field() {
    let (client, ns) = common::setup("api-invalid").await;
    let cases = invalid_manifests();
    assert!(
        cases.len() >= 25,
        "the issue asks for at least 25 distinct invalid manifests"
    );
    let mut failures = Vec::new();
    for (case, manifest, field) in &cases {
        match common::create_yaml(&client, &ns, manifest).await {
            Ok(()) => failures.push(format!("{case}: accepted, but must be refused")),
            Err(message) if !message.contains(field) => failures.push(format!(
                "{case}: refused, but the message does not name {field}: {message}"
            )),
            Err(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn immutable_fields_are_refused_with_the_crd_message() {
    let (client, ns) = common::setup("api-immutable").await;
    common::create_yaml(
        &client,
        &ns,
        &edit(
            LOG,
            "table: {orderingAttribute: seq}",
            "table: {orderingAttribute: seq, sortKey: sk, name: kappa-immutable-log}",
        ),
    )
    .await
    .unwrap();
    common::create_yaml(&client, &ns, VIEW).await.unwrap();
    let patch = |kind: &str, name: &str, json: &str| {
        let out = std::process::Command::new("kubectl")
            .args(["-n", &ns, "patch", kind, name, "--type=merge", "-p", json])
            .output()
            .expect("kubectl");
        assert!(
            !out.status.success(),
            "patch {json} on {kind}/{name} must be refused"
        );
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = patch(
        "mv",
        "players",
        r#"{"spec":{"eventLogRef":{"name":"other-log"}}}"#,
    );
    assert!(
        err.contains("spec.eventLogRef is immutable: create a new MaterializedView"),
        "{err}"
    );
    let err = patch(
        "elog",
        "game-events",
        r#"{"spec":{"table":{"partitionKey":"id"}}}"#,
    );
    assert!(err.contains("spec.table.partitionKey is immutable"), "{err}");
    let err = patch("elog", "game-events", r#"{"spec":{"table":{"sortKey":"seq"}}}"#);
    assert!(err.contains("spec.table.sortKey is immutable"), "{err}");
    let err = patch(
        "elog",
        "game-events",
        r#"{"spec":{"table":{"name":"another-table"}}}"#,
    );
    assert!(err.contains("spec.table.name is immutable"), "{err}");
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn kubectl_get_prints_the_promised_columns() {
    let (client, ns) = common::setup("api-columns").await;
    common::create_yaml(&client, &ns, LOG).await.unwrap();
    common::create_yaml(&client, &ns, VIEW).await.unwrap();
    let header = |out: &str| {
        out.lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mv = common::kubectl(&["-n", &ns, "get", "mv"]);
    assert_eq!(
        header(&mv),
        "NAME LOG PHASE BACKFILL VERSION REBUILD READY AGE",
        "{mv}"
    );
    assert!(mv.lines().nth(1).unwrap().starts_with("players"), "{mv}");
    assert!(mv.contains("game-events"), "{mv}");
    let wide = common::kubectl(&["-n", &ns, "get", "mv", "-o", "wide"]);
    assert!(header(&wide).ends_with("READY AGE PUSH"), "{wide}");
    let elog = common::kubectl(&["-n", &ns, "get", "elog"]);
    assert_eq!(header(&elog), "NAME TABLE FANOUT VIEWS READY AGE", "{elog}");
    let all = common::kubectl(&["-n", &ns, "get", "kappa"]);
    assert!(all.contains("eventlog.kappa.dev/game-events"), "{all}");
    assert!(all.contains("materializedview.kappa.dev/players"), "{all}");
    let mview = common::kubectl(&["-n", &ns, "get", "mview", "players", "-o", "name"]);
    assert_eq!(mview.trim(), "materializedview.kappa.dev/players");
    let explain = common::kubectl(&["explain", "materializedview.spec.projection"]);
    assert!(explain.contains("A declarative projection"), "{explain}");
    common::delete_namespace(&client, &ns).await;
}

#[tokio::test]
async fn the_examples_are_accepted_by_the_api_server() {
    let (client, ns) = common::setup("api-examples").await;
    let out = common::kubectl(&["-n", &ns, "apply", "--dry-run=server", "-k", "examples/game"]);
    for name in [
        "eventlog.kappa.dev/game-events",
        "materializedview.kappa.dev/players",
        "materializedview.kappa.dev/games",
        "materializedview.kappa.dev/player-scores",
        "materializedview.kappa.dev/game-feed",
    ] {
        assert!(out.contains(name), "{name} missing from: {out}");
    }
    common::delete_namespace(&client, &ns).await;
}
