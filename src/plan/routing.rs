//! How records reach a view: topic groups, SNS filter policies, and stream filter criteria.
//!
//! With `Sns` fan-out every record type of the log belongs to exactly one topic: the group the user
//! declared for it, or a topic of its own (`t-<type>`). A view subscribes to each topic that carries one
//! of its record types, with a filter policy on the `recordType` message attribute listing only its
//! types there. With `Direct` fan-out a view's event source mapping carries filter criteria on the log
//! record's type attribute in the stream record's `NewImage`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::crd::{EventLogSpec, RecordType};

/// The SNS message attribute the router sets to the record's type.
pub const RECORD_TYPE_MESSAGE_ATTRIBUTE: &str = "recordType";

/// A topic and the record types the router publishes to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicGroup {
    /// The group name (declared, or `t-<type>` for an undeclared record type); part of the topic name.
    pub group: String,
    pub record_types: BTreeSet<String>,
}

/// Every record type of the log in exactly one group: declared groups first, then one per remaining type.
pub fn topic_groups(log: &EventLogSpec) -> Vec<TopicGroup> {
    let mut groups: Vec<TopicGroup> = log
        .fan_out
        .topics
        .iter()
        .map(|t| TopicGroup {
            group: t.name.clone(),
            record_types: t.record_types.iter().map(|r| r.as_str().to_string()).collect(),
        })
        .collect();
    let grouped: BTreeSet<String> = groups
        .iter()
        .flat_map(|g| g.record_types.iter().cloned())
        .collect();
    let mut taken: BTreeSet<String> = groups.iter().map(|g| g.group.clone()).collect();
    for rt in &log.record_types {
        if grouped.contains(rt.as_str()) {
            continue;
        }
        let group = own_group_name(rt.as_str(), &taken);
        taken.insert(group.clone());
        groups.push(TopicGroup {
            group,
            record_types: BTreeSet::from([rt.as_str().to_string()]),
        });
    }
    groups
}

/// `t-<type>` when the type is already a valid, free group name; otherwise sanitized plus a short hash.
fn own_group_name(record_type: &str, taken: &BTreeSet<String>) -> String {
    let plain = format!("t-{record_type}");
    let valid = plain.len() <= 40
        && plain
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid && !plain.ends_with('-') && !taken.contains(&plain) {
        return plain;
    }
    let sanitized: String = record_type
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(24)
        .collect();
    format!(
        "t-{}-{}",
        sanitized.trim_matches('-'),
        super::names::short_hash(&[record_type])
    )
}

/// For each group carrying some of the view's record types: the group and the view's types in it.
pub fn view_subscriptions(
    groups: &[TopicGroup],
    view_types: &[RecordType],
) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for g in groups {
        let mine: BTreeSet<String> = view_types
            .iter()
            .map(|r| r.as_str().to_string())
            .filter(|r| g.record_types.contains(r))
            .collect();
        if !mine.is_empty() {
            out.insert(g.group.clone(), mine);
        }
    }
    out
}

/// The SNS filter policy (scope `MessageAttributes`) that lets only `types` through.
pub fn sns_filter_policy(types: &BTreeSet<String>) -> Value {
    json!({ RECORD_TYPE_MESSAGE_ATTRIBUTE: types.iter().collect::<Vec<_>>() })
}

/// The event source mapping filter pattern matching stream records whose new image has one of `types` in
/// the log's record-type attribute (an `S` value). One pattern with a list of values: one of the five
/// filters a mapping may have.
pub fn stream_filter_pattern(record_type_attribute: &str, types: &[RecordType]) -> String {
    let values: Vec<&str> = types.iter().map(|r| r.as_str()).collect();
    json!({"dynamodb": {"NewImage": {record_type_attribute: {"S": values}}}}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(yaml: &str) -> EventLogSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn types(names: &[&str]) -> Vec<RecordType> {
        names.iter().map(|n| RecordType(n.to_string())).collect()
    }

    #[test]
    fn undeclared_record_types_get_a_topic_of_their_own() {
        let l = log(
            "recordTypes: [player, game, chat]\ntable: {}\nfanOut: {topics: [{name: play, recordTypes: [player, game]}]}",
        );
        let groups = topic_groups(&l);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].group, "play");
        assert_eq!(groups[1].group, "t-chat");
        assert_eq!(groups[1].record_types, BTreeSet::from(["chat".to_string()]));
    }

    #[test]
    fn every_record_type_is_in_exactly_one_group() {
        let l = log(
            "recordTypes: [a, B, c.d, t-x]\ntable: {}\nfanOut: {topics: [{name: t-a, recordTypes: [c.d]}]}",
        );
        let groups = topic_groups(&l);
        for rt in ["a", "B", "c.d", "t-x"] {
            assert_eq!(
                groups.iter().filter(|g| g.record_types.contains(rt)).count(),
                1,
                "{rt}: {groups:?}"
            );
        }
        let names: BTreeSet<_> = groups.iter().map(|g| g.group.clone()).collect();
        assert_eq!(names.len(), groups.len(), "group names are unique: {groups:?}");
        // "a" would be t-a, which the user took: it gets a hashed name instead.
        assert!(
            groups
                .iter()
                .any(|g| g.group.starts_with("t-a-") && g.record_types.contains("a")),
            "{groups:?}"
        );
        for g in &groups {
            assert!(
                g.group
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{g:?}"
            );
        }
    }

    #[test]
    fn a_view_subscribes_to_the_groups_of_its_types_with_a_narrow_policy() {
        let l = log(
            "recordTypes: [player, game, chat]\ntable: {}\nfanOut: {topics: [{name: play, recordTypes: [player, game]}]}",
        );
        let subs = view_subscriptions(&topic_groups(&l), &types(&["player", "chat"]));
        assert_eq!(subs.len(), 2);
        assert_eq!(
            sns_filter_policy(&subs["play"]),
            json!({"recordType": ["player"]})
        );
        assert_eq!(
            sns_filter_policy(&subs["t-chat"]),
            json!({"recordType": ["chat"]})
        );
    }

    #[test]
    fn stream_filter_criteria_match_the_type_in_the_new_image() {
        let p = stream_filter_pattern("type", &types(&["player", "game"]));
        assert_eq!(p, r#"{"dynamodb":{"NewImage":{"type":{"S":["player","game"]}}}}"#);
        assert!(p.len() <= 4096, "a pattern is at most 4096 characters");
    }
}
