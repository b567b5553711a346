//! The push protocol, version 1: JSON text frames, one request or one change per message.
//!
//! A client subscribes to a view (optionally to the keys starting with a prefix) and receives every change
//! to it from then on, in order per key:
//!
//! ```text
//! client → {"action":"subscribe","view":"players","keyPrefix":"PLAYER#1"}
//! server ← {"version":1,"type":"subscribed","view":"players","keyPrefix":"PLAYER#1"}
//! server ← {"version":1,"type":"change","view":"players","event":"MODIFY",
//!           "keys":{"pk":"PLAYER#1","sk":"STATE"},"newImage":{"score":12,"name":"Ana"},
//!           "sequenceNumber":"4900...","approximateCreationTime":1732492800.0}
//! client → {"action":"unsubscribe","view":"players"}
//! ```
//!
//! - `action` selects the API Gateway route (`$request.body.action`): `subscribe` or `unsubscribe`.
//! - `keys.pk` is the view's own partition key: a shared table's key prefix of the view is removed. A
//!   subscription's `keyPrefix` matches the start of that key.
//! - `newImage` is the item after the change as plain JSON (numbers as JSON numbers when they fit exactly,
//!   otherwise strings; binaries as base64), without `pk` and `sk`; absent for `REMOVE`.
//! - The operator's internal items (a `Count`/`Sum` view's per-record contributions, `~applied#`) are
//!   never sent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::projection::{Item, Value};

/// The protocol version every server message carries.
pub const PROTOCOL_VERSION: u32 = 1;

/// The marker of the operator's internal per-record items in a view's partition key.
const INTERNAL_MARKER: &str = "~applied#";

/// A client's request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum ClientRequest {
    /// Receive the view's changes (those whose key starts with `key_prefix`, when set).
    #[serde(rename_all = "camelCase")]
    Subscribe {
        view: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_prefix: Option<String>,
    },
    /// Stop receiving the view's changes (of that `key_prefix` subscription, or all of the view's).
    #[serde(rename_all = "camelCase")]
    Unsubscribe {
        view: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_prefix: Option<String>,
    },
}

/// What changed, as the views table's stream says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ChangeEvent {
    Insert,
    Modify,
    Remove,
}

/// The view item's keys, the view's prefix removed from `pk`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeKeys {
    pub pk: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sk: Option<String>,
}

/// A message from the server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ServerMessage {
    /// A subscription is in place.
    #[serde(rename_all = "camelCase")]
    Subscribed {
        version: u32,
        view: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_prefix: Option<String>,
    },
    /// A subscription is gone.
    #[serde(rename_all = "camelCase")]
    Unsubscribed {
        version: u32,
        view: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_prefix: Option<String>,
    },
    /// One change to a view's item.
    Change(Change),
    /// A request was not understood; the message says why.
    Error { version: u32, message: String },
}

/// One change to a view's item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    pub version: u32,
    pub view: String,
    pub event: ChangeEvent,
    pub keys: ChangeKeys,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_image: Option<serde_json::Map<String, serde_json::Value>>,
    pub sequence_number: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approximate_creation_time: Option<f64>,
}

impl ServerMessage {
    pub fn error(message: impl Into<String>) -> Self {
        ServerMessage::Error { version: PROTOCOL_VERSION, message: message.into() }
    }

    /// The JSON text frame.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"version\":1,\"type\":\"error\",\"message\":\"{e}\"}}"))
    }
}

/// Which view an item of a views table belongs to: views by key prefix (a shared table), or the one view
/// of a dedicated table (prefix `""`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewRoutes {
    /// `(view name, key prefix)`; the longest matching prefix wins.
    pub views: Vec<(String, String)>,
}

impl ViewRoutes {
    /// The view holding partition key `pk`, and `pk` without the view's prefix.
    pub fn route<'a>(&'a self, pk: &'a str) -> Option<(&'a str, &'a str)> {
        self.views
            .iter()
            .filter(|(_, prefix)| pk.starts_with(prefix.as_str()))
            .max_by_key(|(_, prefix)| prefix.len())
            .map(|(view, prefix)| (view.as_str(), &pk[prefix.len()..]))
    }
}

/// The change message of one views-table stream record, or `None` when it is not a view's item (an internal
/// item, or a key of no known view).
pub fn change_of(
    routes: &ViewRoutes,
    event: ChangeEvent,
    keys: &Item,
    new_image: Option<&Item>,
    sequence_number: &str,
    approximate_creation_time: Option<f64>,
) -> Option<Change> {
    let pk = keys.get("pk")?.as_s()?;
    if pk.contains(INTERNAL_MARKER) {
        return None;
    }
    let (view, own_pk) = routes.route(pk)?;
    let sk = keys.get("sk").map(plain_text);
    let new_image = match event {
        ChangeEvent::Remove => None,
        _ => new_image.map(|image| {
            image
                .iter()
                .filter(|(name, _)| name.as_str() != "pk" && name.as_str() != "sk")
                .map(|(name, value)| (name.clone(), plain(value)))
                .collect()
        }),
    };
    Some(Change {
        version: PROTOCOL_VERSION,
        view: view.to_string(),
        event,
        keys: ChangeKeys { pk: own_pk.to_string(), sk },
        new_image,
        sequence_number: sequence_number.to_string(),
        approximate_creation_time,
    })
}

/// Whether a subscription (`view`, `key_prefix`) wants `change`.
pub fn wants(change: &Change, view: &str, key_prefix: Option<&str>) -> bool {
    change.view == view && key_prefix.is_none_or(|p| change.keys.pk.starts_with(p))
}

fn plain_text(value: &Value) -> String {
    match value {
        Value::S(s) => s.clone(),
        other => match plain(other) {
            serde_json::Value::String(s) => s,
            v => v.to_string(),
        },
    }
}

/// A DynamoDB value as plain JSON.
pub fn plain(value: &Value) -> serde_json::Value {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde_json::Value as J;
    let number = |n: &crate::projection::Number| {
        let text = n.to_string();
        match text.parse::<i64>() {
            Ok(i) => J::from(i),
            Err(_) => match text.parse::<f64>() {
                Ok(f) if f.is_finite() && f.to_string() == text => J::from(f),
                _ => J::String(text),
            },
        }
    };
    match value {
        Value::S(s) => J::String(s.clone()),
        Value::N(n) => number(n),
        Value::B(b) => J::String(STANDARD.encode(b)),
        Value::Ss(v) => J::Array(v.iter().cloned().map(J::String).collect()),
        Value::Ns(v) => J::Array(v.iter().map(number).collect()),
        Value::Bs(v) => J::Array(v.iter().map(|b| J::String(STANDARD.encode(b))).collect()),
        Value::M(m) => J::Object(m.iter().map(|(k, v)| (k.clone(), plain(v))).collect()),
        Value::L(l) => J::Array(l.iter().map(plain).collect()),
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
    }
}

/// Subscriptions of one connection: view → key prefixes (`None`: the whole view).
pub type Subscriptions = BTreeMap<String, Vec<Option<String>>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::routes;

    fn item(json: &str) -> Item {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_change_names_its_view_and_drops_the_prefix_and_keys_from_the_image() {
        let keys = item(r#"{"pk":{"S":"players#PLAYER#1"},"sk":{"S":"STATE"}}"#);
        let image = item(
            r#"{"pk":{"S":"players#PLAYER#1"},"sk":{"S":"STATE"},"score":{"N":"12"},"ratio":{"N":"0.5"},"name":{"S":"Ana"}}"#,
        );
        let change = change_of(
            &routes(),
            ChangeEvent::Modify,
            &keys,
            Some(&image),
            "42",
            Some(1.5),
        )
        .unwrap();
        let text = ServerMessage::Change(change.clone()).to_text();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"version":1,"type":"change","view":"players","event":"MODIFY",
                "keys":{"pk":"PLAYER#1","sk":"STATE"},"newImage":{"score":12,"ratio":0.5,"name":"Ana"},
                "sequenceNumber":"42","approximateCreationTime":1.5})
        );
        assert!(wants(&change, "players", Some("PLAYER#")));
        assert!(!wants(&change, "players", Some("PLAYER#2")));
        assert!(!wants(&change, "games", None));
    }

    #[test]
    fn removals_carry_no_image_and_internal_items_are_not_changes() {
        let keys = item(r#"{"pk":{"S":"games#G1"},"sk":{"S":"TOTAL"}}"#);
        let c = change_of(&routes(), ChangeEvent::Remove, &keys, Some(&keys), "1", None).unwrap();
        assert_eq!(c.new_image, None);
        let marker = item(r#"{"pk":{"S":"games#G1~applied#TOTAL"},"sk":{"S":"LOG#1"}}"#);
        assert_eq!(
            change_of(&routes(), ChangeEvent::Insert, &marker, None, "2", None),
            None
        );
        let stranger = item(r#"{"pk":{"S":"other#1"}}"#);
        assert_eq!(
            change_of(&routes(), ChangeEvent::Insert, &stranger, None, "3", None),
            None
        );
    }

    #[test]
    fn requests_parse_by_action() {
        let r: ClientRequest =
            serde_json::from_str(r#"{"action":"subscribe","view":"players","keyPrefix":"P#"}"#).unwrap();
        assert_eq!(
            r,
            ClientRequest::Subscribe { view: "players".into(), key_prefix: Some("P#".into()) }
        );
        assert!(serde_json::from_str::<ClientRequest>(r#"{"action":"dance"}"#).is_err());
    }
}
