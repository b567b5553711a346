//! Tests of `ProjectionConfig::from_spec` and `project`, on specs written as users write them (YAML).

use crate::crd::{EventLogSpec, MaterializedViewSpec};
use crate::projection::*;

const LOG: &str = "
recordTypes: [player, game]
table: {partitionKey: pk, sortKey: sk, recordTypeAttribute: type, orderingAttribute: seq}
";

fn log(yaml: &str) -> EventLogSpec {
    serde_yaml::from_str(yaml).unwrap()
}

fn view(projection: &str) -> MaterializedViewSpec {
    let yaml = format!("eventLogRef: {{name: game-log}}\nrecordTypes: [player]\nprojection: {projection}");
    serde_yaml::from_str(&yaml).unwrap()
}

fn config(projection: &str) -> ProjectionConfig {
    ProjectionConfig::from_spec("players", &view(projection), &log(LOG), "players#").unwrap()
}

fn config_error(projection: &str, log_yaml: &str) -> ProjectionError {
    ProjectionConfig::from_spec("players", &view(projection), &log(log_yaml), "players#").unwrap_err()
}

fn item(json: &str) -> Item {
    serde_json::from_str(json).unwrap()
}

fn ada(seq: &str) -> Item {
    item(&format!(
        r#"{{"pk":{{"S":"PLAYER#ada"}},"sk":{{"S":"LOG#{seq}"}},"type":{{"S":"player"}},
            "seq":{{"N":"{seq}"}},"name":{{"S":"Ada"}},"score":{{"N":"1173.5"}},"premium":{{"BOOL":false}},
            "guild":{{"NULL":true}}}}"#
    ))
}

fn s(v: &str) -> Value {
    Value::S(v.into())
}

/// Projects through both entry points, which must agree.
fn project(config: &ProjectionConfig, record: &Item) -> ViewWrite {
    let write = config.project(record).unwrap().expect("the record is projected");
    assert_eq!(
        config.project_owned(record.clone()).unwrap().as_ref(),
        Some(&write),
        "project_owned agrees with project"
    );
    write
}

#[test]
fn latest_keeps_all_but_the_log_keys_and_adds_provenance() {
    let c = config("{mode: Latest, key: {partitionKey: 'P#{pk}'}}");
    let ViewWrite::PutIfNewer { item: written, order_attribute, order, record } = project(&c, &ada("10"))
    else {
        panic!()
    };
    assert_eq!((order_attribute.as_str(), order.as_str()), ("seq", "10"));
    let id = RecordId::new(&s("PLAYER#ada"), Some(&s("LOG#10"))).unwrap();
    assert_eq!(
        record,
        id.digest(),
        "ties are broken by the log record's whole key"
    );
    let mut expected = item(
        r#"{"pk":{"S":"players#P#PLAYER#ada"},"sk":{"S":"LATEST"},"logPk":{"S":"PLAYER#ada"},
            "logSk":{"S":"LOG#10"},"type":{"S":"player"},"seq":{"N":"10"},"name":{"S":"Ada"},
            "score":{"N":"1173.5"},"premium":{"BOOL":false},"guild":{"NULL":true}}"#,
    );
    expected.insert("logRecordId".into(), s(&id.digest()));
    assert_eq!(written, expected);
}

#[test]
fn other_record_types_and_filtered_records_give_nothing() {
    let c = config(
        "{mode: Latest, key: {partitionKey: '{pk}'},
          filter: [{attribute: premium, operator: Equals, value: 'false'}]}",
    );
    let mut game = ada("1");
    game.insert("type".into(), s("game"));
    assert_eq!(c.project(&game).unwrap(), None);
    let mut untyped = ada("1");
    untyped.remove("type");
    assert_eq!(
        c.project(&untyped).unwrap(),
        None,
        "no type is not one of the view's types"
    );
    untyped.insert("type".into(), Value::N(Number::from(1)));
    assert_eq!(
        c.project(&untyped).unwrap(),
        None,
        "a non-S type is not one of the view's types"
    );
    let mut premium = ada("1");
    premium.insert("premium".into(), Value::Bool(true));
    assert_eq!(c.project(&premium).unwrap(), None);
    assert!(c.project(&ada("1")).unwrap().is_some());
}

#[test]
fn all_filter_conditions_must_hold() {
    let c = config(
        "{mode: Append, key: {partitionKey: '{pk}'}, filter: [
           {attribute: name, operator: BeginsWith, value: A},
           {attribute: seq, operator: In, values: ['9', '10']},
           {attribute: guild, operator: Exists},
           {attribute: banned, operator: NotExists},
           {attribute: score, operator: NotEquals, value: '0'}]}",
    );
    assert!(c.project(&ada("10")).unwrap().is_some());
    assert_eq!(c.project(&ada("11")).unwrap(), None);
}

#[test]
fn attributes_are_kept_renamed_and_the_order_is_always_carried() {
    let c = config(
        "{mode: Latest, key: {partitionKey: '{pk}', sortKey: 'N#{name}'},
          attributes: [{from: score, to: points}, {from: absent}]}",
    );
    let ViewWrite::PutIfNewer { item: mut written, .. } = project(&c, &ada("10")) else {
        panic!()
    };
    assert!(
        written.remove("logRecordId").is_some(),
        "the tie-breaker is always carried"
    );
    let expected = item(
        r#"{"pk":{"S":"players#PLAYER#ada"},"sk":{"S":"N#Ada"},"logPk":{"S":"PLAYER#ada"},
            "logSk":{"S":"LOG#10"},"points":{"N":"1173.5"},"seq":{"N":"10"}}"#,
    );
    assert_eq!(
        written, expected,
        "a missing attribute is skipped; seq is kept for the condition"
    );

    let c = config(
        "{mode: Latest, orderBy: seq, key: {partitionKey: '{pk}'}, attributes: [{from: seq, to: version}]}",
    );
    let ViewWrite::PutIfNewer { item, order_attribute, .. } = project(&c, &ada("10")) else {
        panic!()
    };
    assert_eq!(order_attribute, "version");
    assert_eq!(item.get("version"), Some(&Value::N(Number::from(10))));
    assert!(!item.contains_key("seq"));
}

#[test]
fn numbers_render_in_keys_as_written() {
    let c = config("{mode: Latest, key: {partitionKey: 'S#{score}', sortKey: '{seq}#{name}'}}");
    assert_eq!(project(&c, &ada("10")).view_key(), ("players#S#1173.5", "10#Ada"));
}

#[test]
fn append_is_keyed_by_the_log_record_and_replays_overwrite() {
    let c = config("{mode: Append, key: {partitionKey: '{pk}'}}");
    let write = project(&c, &ada("9"));
    assert_eq!(write.view_key(), ("players#PLAYER#ada", "PLAYER#ada|LOG#9"));
    let mut store = MemoryStore::new();
    for _ in 0..3 {
        store.apply(&write).unwrap();
        store.apply(&project(&c, &ada("10"))).unwrap();
    }
    assert_eq!(store.len(), 2, "a replay overwrites, never duplicates");

    let no_sort_key = "recordTypes: [player]\ntable: {partitionKey: pk, orderingAttribute: seq}";
    let c = ProjectionConfig::from_spec(
        "players",
        &view("{mode: Append, key: {partitionKey: x}}"),
        &log(no_sort_key),
        "",
    )
    .unwrap();
    let ViewWrite::Put { item: written } = project(&c, &ada("9")) else {
        panic!()
    };
    assert_eq!(written["pk"], s("x"));
    assert_eq!(
        written["sk"],
        s("PLAYER#ada"),
        "the log pk alone; the record's own `sk` is overwritten"
    );
    assert_eq!(written["logPk"], s("PLAYER#ada"));
    assert!(!written.contains_key("logSk"), "no sort key, no logSk");
}

#[test]
fn count_writes_an_add_identified_by_the_whole_log_key() {
    let c = config("{mode: Count, key: {partitionKey: 'C#{type}'}}");
    let expected = ViewWrite::Add {
        key: item(r#"{"pk":{"S":"players#C#player"},"sk":{"S":"TOTAL"}}"#),
        attribute: "count".into(),
        delta: Number::from(1),
        record: RecordId::new(&s("PLAYER#ada"), Some(&s("LOG#9"))).unwrap(),
    };
    assert_eq!(project(&c, &ada("9")), expected);
}

#[test]
fn count_and_sum_count_each_record_once() {
    let count = config("{mode: Count, key: {partitionKey: '{pk}'}}");
    let sum = ProjectionConfig::from_spec(
        "scores",
        &view("{mode: Sum, sumOf: score, key: {partitionKey: '{pk}'}}"),
        &log(LOG),
        "scores#",
    )
    .unwrap();
    let mut store = MemoryStore::new();
    for _ in 0..2 {
        for seq in ["7", "9", "10"] {
            store.apply(&project(&count, &ada(seq))).unwrap();
            store.apply(&project(&sum, &ada(seq))).unwrap();
        }
    }
    let count = store.get("players#PLAYER#ada", "TOTAL").unwrap();
    assert_eq!(count.get("count"), Some(&Value::N(Number::from(3))));
    let sum = store.get("scores#PLAYER#ada", "TOTAL").unwrap();
    assert_eq!(
        sum.get("sum").and_then(Value::as_n).map(Number::as_str),
        Some("3520.5")
    );
    assert_eq!(store.len(), 2, "two aggregates; markers are not view items");
}

#[test]
fn sums_of_38_digit_numbers_are_exact() {
    let c = config("{mode: Sum, sumOf: big, key: {partitionKey: '{pk}'}}");
    let mut store = MemoryStore::new();
    let record = |seq: &str, big: &str| {
        let mut record = ada(seq);
        record.insert("big".into(), Value::N(big.parse().unwrap()));
        record
    };
    for (seq, big) in [
        ("1", "12345678901234567890123456789012345678"),
        ("2", "11111111111111111111111111111111111111"),
        ("3", "-1"),
    ] {
        store.apply(&project(&c, &record(seq, big))).unwrap();
    }
    let sum = store.get("players#PLAYER#ada", "TOTAL").unwrap()["sum"].clone();
    assert_eq!(
        sum.as_n().unwrap().as_str(),
        "23456790012345679001234567900123456788"
    );
    // 39 significant digits: DynamoDB's ADD fails, and so does the reference store.
    let err = store.apply(&project(&c, &record("4", "0.5"))).unwrap_err();
    assert!(matches!(err, MemoryStoreError::Overflow { .. }), "{err}");
}

#[test]
fn key_errors_name_the_view_attribute_and_record() {
    let c = config("{mode: Latest, key: {partitionKey: 'P#{playerId}'}}");
    let err = c.project(&ada("10")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "view players: record pk=\"PLAYER#ada\", sk=\"LOG#10\": attribute `playerId` of \
         spec.projection.key.partitionKey is missing, not a string or a number; the log is immutable, so \
         leave such records out with spec.projection.filter (`playerId` Exists), or change \
         spec.projection.key.partitionKey"
    );
    assert_eq!(err.category(), "invalid-key");

    let c = config("{mode: Latest, key: {partitionKey: '{pk}', sortKey: '{premium}'}}");
    let err = c.project(&ada("10")).unwrap_err();
    assert!(
        matches!(&err, ProjectionError::KeyAttribute { template: "sortKey", attribute, found, .. }
            if attribute == "premium" && found == "a BOOL"),
        "{err:?}"
    );

    let mut record = ada("10");
    record.insert("empty".into(), s(""));
    let c = ProjectionConfig::from_spec(
        "players",
        &view("{mode: Latest, key: {partitionKey: '{empty}'}}"),
        &log(LOG),
        "",
    )
    .unwrap();
    let err = c.project(&record).unwrap_err();
    assert_eq!(
        err,
        ProjectionError::EmptyKey {
            view: "players".into(),
            key: "pk",
            record: r#"pk="PLAYER#ada", sk="LOG#10""#.into()
        }
    );

    record.insert("long".into(), s(&"x".repeat(1025)));
    let c = config("{mode: Latest, key: {partitionKey: '{pk}', sortKey: '{long}'}}");
    let err = c.project(&record).unwrap_err();
    assert!(
        matches!(
            err,
            ProjectionError::KeyTooLong { key: "sk", bytes: 1025, max: 1024, .. }
        ),
        "{err:?}"
    );
}

#[test]
fn order_sum_and_log_key_errors() {
    let c = config("{mode: Latest, key: {partitionKey: '{pk}'}}");
    let mut record = ada("10");
    record.insert("seq".into(), s("10"));
    let err = c.project(&record).unwrap_err();
    assert_eq!(
        err.to_string(),
        "view players: record pk=\"PLAYER#ada\", sk=\"LOG#10\": ordering attribute `seq` is a S, \
         not a number; mode Latest keeps the record with the greatest `seq`: leave such records out with \
         spec.projection.filter (`seq` Exists), or change spec.projection.orderBy (default: the \
         EventLog's spec.table.orderingAttribute)"
    );
    assert_eq!(err.category(), "invalid-order");

    let c = config("{mode: Sum, sumOf: coins, key: {partitionKey: '{pk}'}}");
    let err = c.project(&ada("10")).unwrap_err();
    assert!(
        err.to_string()
            .contains("attribute `coins` (spec.projection.sumOf) is missing, not a number"),
        "{err}"
    );
    assert_eq!(err.category(), "invalid-number");

    let mut record = ada("10");
    record.remove("sk");
    let err = c.project(&record).unwrap_err();
    assert_eq!(
        err.to_string(),
        "view players: a log record has no string `sk` (missing); every record of the log must carry the \
         EventLog's key attribute `sk` as a string: fix the producer"
    );
    assert_eq!(err.category(), "invalid-log-key");
}

#[test]
fn spec_errors_say_what_to_fix() {
    let custom: MaterializedViewSpec = serde_yaml::from_str(
        "eventLogRef: {name: l}
recordTypes: [player]
projector: {code: {functionArn: 'arn:aws:lambda:us-east-1:123456789012:function:f'}}",
    )
    .unwrap();
    let err = ProjectionConfig::from_spec("players", &custom, &log(LOG), "").unwrap_err();
    assert_eq!(err, ProjectionError::CustomProjector { view: "players".into() });
    assert!(
        err.to_string().contains("custom projector (spec.projector.code)"),
        "{err}"
    );
    assert_eq!(err.category(), "custom-projector");
    assert!(err.is_spec_error());

    let no_order = "recordTypes: [player]\ntable: {partitionKey: pk, sortKey: sk}";
    let err = config_error("{mode: Latest, key: {partitionKey: '{pk}'}}", no_order);
    assert!(
        err.to_string()
            .starts_with("view players: spec.projection.orderBy: mode Latest needs a number attribute"),
        "{err}"
    );
    assert_eq!(err.category(), "invalid-spec");
    let c = ProjectionConfig::from_spec(
        "v",
        &view("{mode: Latest, orderBy: v, key: {partitionKey: x}}"),
        &log(no_order),
        "",
    )
    .unwrap();
    assert_eq!(c.order_by(), Some("v"));
    assert_eq!(
        config("{mode: Latest, orderBy: ts, key: {partitionKey: x}}").order_by(),
        Some("ts"),
        "view wins"
    );
    assert!(
        ProjectionConfig::from_spec(
            "v",
            &view("{mode: Append, key: {partitionKey: x}}"),
            &log(no_order),
            ""
        )
        .is_ok()
    );

    for (projection, needle) in [
        (
            "{mode: Latest, key: {partitionKey: 'P#{id'}}",
            "spec.projection.key.partitionKey: template `P#{id`: a `{` is never closed",
        ),
        (
            "{mode: Latest, key: {partitionKey: 'P#id}'}}",
            "a `}` closes no placeholder",
        ),
        (
            "{mode: Latest, key: {partitionKey: x, sortKey: 'a{}'}}",
            "spec.projection.key.sortKey: template `a{}`: a placeholder",
        ),
        (
            "{mode: Latest, key: {partitionKey: x}, attributes: [{from: a, to: logPk}]}",
            "`logPk` is set by the projector",
        ),
        (
            "{mode: Latest, key: {partitionKey: x}, attributes: [{from: a, to: sk}]}",
            "`sk` is set by the projector",
        ),
        (
            "{mode: Latest, key: {partitionKey: x}, attributes: [{from: a, to: b}, {from: b}]}",
            "two entries write `b`",
        ),
        (
            "{mode: Latest, key: {partitionKey: x}, attributes: [{from: version, to: seq}]}",
            "writes another attribute there",
        ),
        (
            "{mode: Count, key: {partitionKey: x}, attributes: [{from: a}]}",
            "only modes Latest and Append keep",
        ),
        ("{mode: Sum, key: {partitionKey: x}}", "mode Sum needs sumOf"),
        (
            "{mode: Latest, key: {partitionKey: x}, filter: [{attribute: a, operator: In}]}",
            "In on `a` takes `values`",
        ),
    ] {
        let err = config_error(projection, LOG);
        assert!(err.to_string().contains(needle), "{projection}: {err}");
        assert_eq!(err.category(), "invalid-spec");
    }
}

#[test]
fn templates_parse_into_literals_and_placeholders() {
    let t = Template::parse("P#{a}-{b_c}{d}x").unwrap();
    use TemplatePart::*;
    let expected = [
        Literal("P#".into()),
        Attribute("a".into()),
        Literal("-".into()),
        Attribute("b_c".into()),
        Attribute("d".into()),
        Literal("x".into()),
    ];
    assert_eq!(t.parts(), &expected);
    assert_eq!(t.attributes().collect::<Vec<_>>(), ["a", "b_c", "d"]);
    for bad in ["", "{", "}", "{1a}", "{a b}", "{{a}}"] {
        assert!(Template::parse(bad).is_err(), "{bad:?} must be rejected");
    }
}

#[test]
fn config_exposes_what_callers_need() {
    let c = config("{mode: Sum, sumOf: score, key: {partitionKey: '{pk}'}}");
    assert_eq!(c.view_name(), "players");
    assert_eq!(c.mode(), crate::crd::ProjectionMode::Sum);
    assert_eq!(c.sum_of(), Some("score"));
    assert_eq!(c.order_by(), None);
    assert_eq!(c.key_prefix(), "players#");
    assert_eq!(c.record_type_attribute(), "type");
    assert!(c.record_types().contains("player") && !c.record_types().contains("game"));
    assert_eq!(
        c.log_keys(),
        &LogKeys { partition_key: "pk".into(), sort_key: Some("sk".into()) }
    );
    assert!(c.sort_key().is_none());
    assert_eq!(c.partition_key().attributes().collect::<Vec<_>>(), ["pk"]);
}

#[test]
fn project_owned_gives_what_project_gives_for_every_shape() {
    let mut numeric_keys = ada("10");
    numeric_keys.insert("pk".into(), Value::N(Number::from(7)));
    numeric_keys.insert("sk".into(), Value::N(Number::from(10)));
    let mut clashing = ada("10");
    clashing.insert("logPk".into(), s("mine"));
    clashing.insert("logSk".into(), s("also mine"));
    let mut no_order = ada("10");
    no_order.remove("seq");
    let mut versioned = ada("10");
    versioned.insert("version".into(), Value::N(Number::from(3)));
    let records = [
        ada("10"),
        versioned,
        numeric_keys,
        clashing,
        no_order,
        item(r#"{"type":{"S":"player"}}"#),
    ];
    let numeric_sk_log = "
recordTypes: [player]
table: {partitionKey: pk, sortKey: version, recordTypeAttribute: type, orderingAttribute: version}
";
    let no_sk_log = "
recordTypes: [player]
table: {partitionKey: pk, recordTypeAttribute: type, orderingAttribute: seq}
";
    let mut configs: Vec<ProjectionConfig> = [
        "{mode: Latest, key: {partitionKey: 'P#{pk}'}}",
        "{mode: Append, key: {partitionKey: 'P#{pk}'}}",
        "{mode: Append, key: {partitionKey: 'P#{name}', sortKey: '{sk}'}}",
        "{mode: Latest, key: {partitionKey: x}, attributes: [{from: score, to: a}, {from: score, to: b}]}",
        "{mode: Latest, key: {partitionKey: x}, attributes: [{from: pk, to: player}, {from: sk, to: at}, {from: seq}]}",
        "{mode: Append, key: {partitionKey: x}, attributes: [{from: name}, {from: pk, to: p}, {from: pk, to: q}]}",
        "{mode: Count, key: {partitionKey: x}}",
        "{mode: Sum, sumOf: score, key: {partitionKey: x}}",
    ]
    .iter()
    .map(|p| config(p))
    .collect();
    let log_sk_named_log = "
recordTypes: [player]
table: {partitionKey: logSk, recordTypeAttribute: type, orderingAttribute: seq}
";
    for (projection, log_yaml) in [
        ("{mode: Latest, key: {partitionKey: '{pk}'}}", log_sk_named_log),
        ("{mode: Append, key: {partitionKey: '{pk}'}}", log_sk_named_log),
        ("{mode: Latest, key: {partitionKey: x}}", numeric_sk_log),
        ("{mode: Latest, key: {partitionKey: '{pk}'}}", no_sk_log),
        ("{mode: Append, key: {partitionKey: '{pk}'}}", no_sk_log),
    ] {
        configs
            .push(ProjectionConfig::from_spec("players", &view(projection), &log(log_yaml), "v#").unwrap());
    }
    for c in &configs {
        for record in &records {
            assert_eq!(
                c.project_owned(record.clone()),
                c.project(record),
                "{c:?} on {record:?}"
            );
        }
    }
}
