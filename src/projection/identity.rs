//! [`RecordId`]: the identity of a log record, the one every idempotency mechanism uses.
//!
//! A log record is identified by its whole key: the partition key and, when the log table has one, the
//! sort key (DynamoDB: "the primary key uniquely identifies each item in the table",
//! <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/HowItWorks.CoreComponents.html>).
//! Event-sourced logs repeat sort keys across partitions (`pk = ORDER#o17`, `sk = 1, 2, 3…`) and some
//! logs have no sort key at all, so neither part alone is an identity.
//!
//! Encoding (unambiguous whatever the values hold: `|`, `#`, `~`, unicode, empty text): each key part is
//! written as `<type>:<byte length>:<text>` and the parts are concatenated, partition key first. The
//! type is `S`, `N` or `B` (DynamoDB's three key types). A number is written in one canonical form, since
//! DynamoDB treats `1`, `1.0` and `1E0` as the same key; binary is written as standard base64.
//!
//! The [`digest`](RecordId::digest) (the first 128 bits of the SHA-256 of the encoding, 32 lowercase hex
//! characters) is what views tables store: it fits every key-size limit and is the same in every path
//! (backfill, in-cluster live path, projector function, in-memory reference store).

use std::fmt;
use std::fmt::Write as _;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use super::Value;

/// The identity of one log record; see the module documentation for its encoding.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId {
    encoded: String,
}

impl RecordId {
    /// The identity of the record whose partition key is `pk` and sort key `sk` (`None`: the log table has
    /// no sort key). `None` when a key part is not an `S`, `N` or `B` (DynamoDB allows no other key type).
    pub fn new(pk: &Value, sk: Option<&Value>) -> Option<RecordId> {
        let mut encoded = String::with_capacity(64);
        push_part(&mut encoded, pk)?;
        if let Some(sk) = sk {
            push_part(&mut encoded, sk)?;
        }
        Some(RecordId { encoded })
    }

    /// The unambiguous encoding.
    pub fn as_str(&self) -> &str {
        &self.encoded
    }

    /// 32 lowercase hex characters: the first 16 bytes of the SHA-256 of [`as_str`](Self::as_str).
    pub fn digest(&self) -> String {
        let hash = Sha256::digest(self.encoded.as_bytes());
        let mut out = String::with_capacity(32);
        for byte in &hash[..16] {
            let _ = write!(out, "{byte:02x}");
        }
        out
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encoded)
    }
}

fn push_part(out: &mut String, value: &Value) -> Option<()> {
    let (kind, text) = match value {
        Value::S(s) => ('S', std::borrow::Cow::Borrowed(s.as_str())),
        Value::N(n) => ('N', std::borrow::Cow::Owned(canonical_number(n))),
        Value::B(b) => (
            'B',
            std::borrow::Cow::Owned(base64::engine::general_purpose::STANDARD.encode(b)),
        ),
        _ => return None,
    };
    let _ = write!(out, "{kind}:{}:{text}", text.len());
    Some(())
}

/// One text per numeric value: `1`, `1.0`, `1E0` and `+1` all give `1`.
fn canonical_number(n: &super::Number) -> String {
    let normalized = n.value().normalized();
    if bigdecimal::Zero::is_zero(&normalized) {
        return "0".to_string();
    }
    normalized.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::Number;

    fn s(text: &str) -> Value {
        Value::S(text.to_string())
    }
    fn n(text: &str) -> Value {
        Value::N(Number::parse(text).unwrap())
    }

    #[test]
    fn partition_and_sort_key_together_identify_a_record() {
        let a = RecordId::new(&s("A"), Some(&s("EVT#1"))).unwrap();
        let b = RecordId::new(&s("B"), Some(&s("EVT#1"))).unwrap();
        assert_ne!(a, b, "a sort key repeated across partitions is not an identity");
        assert_ne!(a.digest(), b.digest());
        assert_eq!(a.as_str(), "S:1:AS:5:EVT#1");
    }

    #[test]
    fn separators_inside_values_never_make_two_keys_equal() {
        let cases = [
            (s("a|b"), Some(s("c"))),
            (s("a"), Some(s("b|c"))),
            (s("a:1:b"), None),
            (s("a"), Some(s("1:b"))),
            (s(""), Some(s("a"))),
            (s("a"), Some(s(""))),
            (s("a"), None),
            (n("1"), Some(s("a"))),
            (s("1"), Some(s("a"))),
            (s("ü~#"), Some(s("é"))),
        ];
        let ids: Vec<RecordId> = cases
            .iter()
            .map(|(p, k)| RecordId::new(p, k.as_ref()).unwrap())
            .collect();
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn equal_numbers_are_one_key() {
        let forms = ["1", "1.0", "1E0", "+1", "0.1E1", "1.000"];
        let ids: Vec<RecordId> = forms
            .iter()
            .map(|f| RecordId::new(&n(f), None).unwrap())
            .collect();
        assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
        assert_eq!(RecordId::new(&n("0"), None), RecordId::new(&n("-0.00"), None));
        assert_ne!(RecordId::new(&n("10"), None), RecordId::new(&n("1"), None));
    }

    #[test]
    fn other_types_are_not_keys() {
        assert_eq!(RecordId::new(&Value::Bool(true), None), None);
        assert_eq!(RecordId::new(&s("a"), Some(&Value::Null)), None);
        assert!(RecordId::new(&Value::B(vec![0, 255]), None).is_some());
    }

    #[test]
    fn the_digest_is_32_hex_characters() {
        let d = RecordId::new(&s("PLAYER#ada"), Some(&n("7"))).unwrap().digest();
        assert_eq!(d.len(), 32);
        assert!(
            d.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }
}
