//! The keys of `status.resources` (EventLog, MaterializedView and each view version): which AWS resource an
//! ARN or id recorded there is. The status keeps a plain string map (what `kubectl get -o yaml` shows and
//! what earlier operator versions wrote); the code reads and writes it only through [`ResourceKey`] and
//! [`Resources`], so a key is spelled in one place.

use std::collections::BTreeMap;
use std::fmt;

/// One key of `status.resources`, as written: `queue`, `deadLetterQueue`, `routerFailureQueue`,
/// `viewsTable`, `failureQueue`, `mapping`, or `<kind>/<name>` for `role`, `function`, `mapping`, `topic`
/// and `subscription` (`topic/<group>`: the SNS topic of a topic group).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ResourceKey {
    /// The log's ingest SQS queue (ARN).
    Queue,
    /// The ingest queue's dead-letter queue (ARN).
    DeadLetterQueue,
    /// The router's failure queue, `Sns` fan-out (ARN).
    RouterFailureQueue,
    /// The view's views table (ARN).
    ViewsTable,
    /// A Lambda view's failure queue (ARN).
    FailureQueue,
    /// A Lambda view's event source mapping on the log's stream, `Direct` fan-out (UUID).
    Mapping,
    /// An IAM role of the object's (ARN): `writer`, `router`, `projector`.
    Role(String),
    /// A Lambda function of the object's (ARN): `writer`, `router`, `projector`.
    Function(String),
    /// The event source mapping of one of the log's functions (UUID).
    MappingOf(String),
    /// The SNS topic of a topic group (ARN).
    Topic(String),
    /// A Lambda view's SNS subscription to a topic group's topic (subscription ARN).
    Subscription(String),
}

impl ResourceKey {
    /// Reads a key as [`fmt::Display`] writes it; `None` for a key this version does not know (kept in
    /// the map as it is, never dropped).
    pub fn parse(key: &str) -> Option<Self> {
        Some(match key.split_once('/') {
            None => match key {
                "queue" => ResourceKey::Queue,
                "deadLetterQueue" => ResourceKey::DeadLetterQueue,
                "routerFailureQueue" => ResourceKey::RouterFailureQueue,
                "viewsTable" => ResourceKey::ViewsTable,
                "failureQueue" => ResourceKey::FailureQueue,
                "mapping" => ResourceKey::Mapping,
                _ => return None,
            },
            Some((kind, name)) => {
                let name = name.to_string();
                match kind {
                    "role" => ResourceKey::Role(name),
                    "function" => ResourceKey::Function(name),
                    "mapping" => ResourceKey::MappingOf(name),
                    "topic" => ResourceKey::Topic(name),
                    "subscription" => ResourceKey::Subscription(name),
                    _ => return None,
                }
            }
        })
    }
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourceKey::Queue => f.write_str("queue"),
            ResourceKey::DeadLetterQueue => f.write_str("deadLetterQueue"),
            ResourceKey::RouterFailureQueue => f.write_str("routerFailureQueue"),
            ResourceKey::ViewsTable => f.write_str("viewsTable"),
            ResourceKey::FailureQueue => f.write_str("failureQueue"),
            ResourceKey::Mapping => f.write_str("mapping"),
            ResourceKey::Role(name) => write!(f, "role/{name}"),
            ResourceKey::Function(name) => write!(f, "function/{name}"),
            ResourceKey::MappingOf(name) => write!(f, "mapping/{name}"),
            ResourceKey::Topic(group) => write!(f, "topic/{group}"),
            ResourceKey::Subscription(group) => write!(f, "subscription/{group}"),
        }
    }
}

/// Typed access to a `status.resources` map.
pub trait Resources {
    /// The ARN (or id) recorded under `key`.
    fn arn(&self, key: &ResourceKey) -> Option<&String>;
    /// Records `arn` under `key`, replacing what was there.
    fn record(&mut self, key: ResourceKey, arn: impl Into<String>);
    /// The recorded entries whose key parses, in key order.
    fn typed(&self) -> impl Iterator<Item = (ResourceKey, &String)>;
}

impl Resources for BTreeMap<String, String> {
    fn arn(&self, key: &ResourceKey) -> Option<&String> {
        self.get(&key.to_string())
    }

    fn record(&mut self, key: ResourceKey, arn: impl Into<String>) {
        self.insert(key.to_string(), arn.into());
    }

    fn typed(&self) -> impl Iterator<Item = (ResourceKey, &String)> {
        self.iter()
            .filter_map(|(k, v)| ResourceKey::parse(k).map(|k| (k, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> impl Strategy<Value = ResourceKey> {
        let name = "[a-z0-9/-]{0,12}";
        prop_oneof![
            Just(ResourceKey::Queue),
            Just(ResourceKey::DeadLetterQueue),
            Just(ResourceKey::RouterFailureQueue),
            Just(ResourceKey::ViewsTable),
            Just(ResourceKey::FailureQueue),
            Just(ResourceKey::Mapping),
            name.prop_map(ResourceKey::Role),
            name.prop_map(ResourceKey::Function),
            name.prop_map(ResourceKey::MappingOf),
            name.prop_map(ResourceKey::Topic),
            name.prop_map(ResourceKey::Subscription),
        ]
    }

    proptest! {
        /// Every key reads back as written, whatever its name holds (a `/` included).
        #[test]
        fn a_key_round_trips(key in key()) {
            prop_assert_eq!(ResourceKey::parse(&key.to_string()), Some(key));
        }
    }

    #[test]
    fn the_keys_earlier_versions_wrote_are_read() {
        assert_eq!(
            ResourceKey::parse("topic/scores"),
            Some(ResourceKey::Topic("scores".into()))
        );
        assert_eq!(
            ResourceKey::parse("subscription/all"),
            Some(ResourceKey::Subscription("all".into()))
        );
        assert_eq!(ResourceKey::parse("mapping"), Some(ResourceKey::Mapping));
        assert_eq!(
            ResourceKey::parse("mapping/router"),
            Some(ResourceKey::MappingOf("router".into()))
        );
        assert_eq!(
            ResourceKey::parse("deadLetterQueue"),
            Some(ResourceKey::DeadLetterQueue)
        );
        assert_eq!(ResourceKey::parse("somethingNew"), None);
        assert_eq!(ResourceKey::parse("widget/x"), None);
    }

    #[test]
    fn an_unknown_key_stays_in_the_map() {
        let mut m = BTreeMap::from([("somethingNew".to_string(), "arn:x".to_string())]);
        m.record(ResourceKey::Topic("a".into()), "arn:t");
        assert_eq!(
            m.arn(&ResourceKey::Topic("a".into())).map(String::as_str),
            Some("arn:t")
        );
        assert_eq!(m.len(), 2);
        assert_eq!(m.typed().count(), 1);
    }
}
