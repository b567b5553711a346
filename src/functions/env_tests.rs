//! Each built-in function's configuration survives its environment: `from_lookup(to_env(c)) == c`, the
//! plan's side and the handler's side of one contract. Values are free-form where AWS allows it (table
//! and attribute names, view names and key prefixes, topic ARNs: any Unicode, commas, `|`, `#`, quotes,
//! spaces inside); record types are what the CRD admits.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::connections::ConnectionsConfig;
use super::notifier::NotifierConfig;
use super::projector::{LogSchema, ProjectorConfig};
use super::router::{DEFAULT_MAX_MESSAGE_BYTES, LARGEST_MAX_MESSAGE_BYTES, RouterConfig};
use super::writer::WriterConfig;
use crate::push::message::ViewRoutes;

/// Any non-control text that is not blank (a blank value reads as unset).
fn text() -> impl Strategy<Value = String> {
    "\\PC{1,24}".prop_filter("not blank", |s| !s.trim().is_empty())
}

/// A record type as the CRD admits it (`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$`).
fn record_type() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}"
}

/// A view name as the connections table needs it (no `|`).
fn view_name() -> impl Strategy<Value = String> {
    "[^|\\p{C}]{1,24}"
}

fn read(env: &BTreeMap<String, String>) -> impl Fn(&str) -> Option<String> + '_ {
    |var| env.get(var).cloned()
}

proptest! {
    #[test]
    fn writer_config_round_trips(
        log_table in text(),
        partition_key in text(),
        sort_key in proptest::option::of(text()),
        record_type_attribute in text(),
        record_types in proptest::collection::vec(record_type(), 1..6),
    ) {
        let config = WriterConfig {
            log_table,
            partition_key,
            sort_key,
            record_type_attribute,
            record_types: record_types.into_iter().collect(),
        };
        let env = config.to_env();
        prop_assert_eq!(WriterConfig::from_lookup(read(&env)).unwrap(), config);
    }

    #[test]
    fn router_config_round_trips(
        record_type_attribute in text(),
        topics in proptest::collection::btree_map(text(), text().prop_map(|t| format!("arn:{t}")), 0..5),
        max_message_bytes in prop_oneof![
            Just(DEFAULT_MAX_MESSAGE_BYTES),
            1024..=LARGEST_MAX_MESSAGE_BYTES,
        ],
    ) {
        let config = RouterConfig { record_type_attribute, topics, max_message_bytes };
        let env = config.to_env();
        prop_assert_eq!(RouterConfig::from_lookup(read(&env)).unwrap(), config);
    }

    #[test]
    fn projector_config_round_trips(
        view in text(),
        table in text(),
        key_prefix in "\\PC{0,24}",
        record_types in proptest::collection::vec(record_type(), 1..4),
        log_table in proptest::option::of("[a-zA-Z0-9_.-]{3,255}"),
    ) {
        let config = ProjectorConfig {
            view,
            table,
            key_prefix,
            record_types: record_types.into_iter().map(crate::crd::RecordType).collect(),
            projection: serde_yaml::from_str("{mode: Latest, key: {partitionKey: 'PLAYER#{name}'}}").unwrap(),
            log: LogSchema {
                partition_key: "pk".into(),
                sort_key: Some("sk".into()),
                record_type_attribute: "type".into(),
                ordering_attribute: Some("seq".into()),
                table: log_table,
            },
        };
        let env = config.to_env().unwrap();
        prop_assert_eq!(ProjectorConfig::from_lookup(read(&env)).unwrap(), config);
    }

    #[test]
    fn connections_and_notifier_configs_round_trip(
        table in text(),
        views in proptest::collection::btree_map(view_name(), "\\PC{0,24}", 1..5),
        endpoint in "[a-z0-9.-]{1,30}/[a-z0-9]{1,10}",
    ) {
        let routes = ViewRoutes { views: views.into_iter().collect() };
        let connections = ConnectionsConfig { table: table.clone(), routes: routes.clone() };
        let env = connections.to_env();
        prop_assert_eq!(ConnectionsConfig::from_lookup(read(&env)).unwrap(), connections);

        let notifier = NotifierConfig { table, routes, management_endpoint: format!("https://{endpoint}") };
        let env = notifier.to_env();
        prop_assert_eq!(NotifierConfig::from_lookup(read(&env)).unwrap(), notifier);
    }
}
