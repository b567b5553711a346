//! [`Value`]: a DynamoDB attribute value, and [`Item`]: an attribute map.
//!
//! Guarantees:
//! - Serde reads and writes exactly DynamoDB's typed JSON, as in exports and stream events: `{"S":"x"}`,
//!   `{"N":"-12.5"}`, `{"B":"<base64>"}`, `{"SS":[..]}`, `{"NS":[..]}`, `{"BS":[..]}`, `{"M":{..}}`,
//!   `{"L":[..]}`, `{"NULL":true}`, `{"BOOL":false}`. An object with zero or several type keys is an error.
//! - Numbers stay exact ([`Number`]); binaries are the decoded bytes (standard base64 with padding on
//!   output; padding optional on input).
//! - Equality follows DynamoDB: numbers compare numerically and sets (`SS`, `NS`, `BS`) compare as sets,
//!   whatever the element order (DynamoDB does not keep set order).
//! - Conversions to and from the SDK types of `aws-sdk-dynamodb` and `aws-sdk-dynamodbstreams` (distinct
//!   types) are lossless; only the SDK's `Unknown` variant and invalid numbers fail.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_PAD_INDIFFERENT};
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::number::{Number, NumberError};

/// An item: attribute names to values. Ordered, so items print and compare deterministically.
pub type Item = BTreeMap<String, Value>;

/// A DynamoDB AttributeValue.
#[derive(Clone, Debug)]
pub enum Value {
    /// String (`S`).
    S(String),
    /// Number (`N`), exact.
    N(Number),
    /// Binary (`B`): the decoded bytes.
    B(Vec<u8>),
    /// String set (`SS`).
    Ss(Vec<String>),
    /// Number set (`NS`).
    Ns(Vec<Number>),
    /// Binary set (`BS`).
    Bs(Vec<Vec<u8>>),
    /// Map (`M`).
    M(Item),
    /// List (`L`).
    L(Vec<Value>),
    /// Null (`{"NULL": true}`).
    Null,
    /// Boolean (`BOOL`).
    Bool(bool),
}

/// A value that cannot be represented: an SDK variant this crate does not know, or an invalid number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The SDK returned `AttributeValue::Unknown` (a type newer than the SDK).
    #[error("an attribute value of a type unknown to the SDK; upgrade aws-sdk-dynamodb")]
    Unknown,
    /// An `N` or `NS` element that is not a DynamoDB number.
    #[error(transparent)]
    Number(#[from] NumberError),
    /// The attribute `attribute` of an item holds such a value.
    #[error("attribute `{attribute}` holds an invalid value")]
    Attribute {
        attribute: String,
        #[source]
        source: Box<ValueError>,
    },
}

impl Value {
    /// The DynamoDB type descriptor: `S`, `N`, `B`, `SS`, `NS`, `BS`, `M`, `L`, `NULL` or `BOOL`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::S(_) => "S",
            Value::N(_) => "N",
            Value::B(_) => "B",
            Value::Ss(_) => "SS",
            Value::Ns(_) => "NS",
            Value::Bs(_) => "BS",
            Value::M(_) => "M",
            Value::L(_) => "L",
            Value::Null => "NULL",
            Value::Bool(_) => "BOOL",
        }
    }

    /// The string, if this is an `S`.
    pub fn as_s(&self) -> Option<&str> {
        match self {
            Value::S(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is an `N`.
    pub fn as_n(&self) -> Option<&Number> {
        match self {
            Value::N(n) => Some(n),
            _ => None,
        }
    }
}

fn same_set<T: Ord>(a: &[T], b: &[T]) -> bool {
    let (mut a, mut b): (Vec<&T>, Vec<&T>) = (a.iter().collect(), b.iter().collect());
    a.sort();
    b.sort();
    a == b
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::S(a), Value::S(b)) => a == b,
            (Value::N(a), Value::N(b)) => a == b,
            (Value::B(a), Value::B(b)) => a == b,
            (Value::Ss(a), Value::Ss(b)) => same_set(a, b),
            (Value::Ns(a), Value::Ns(b)) => same_set(a, b),
            (Value::Bs(a), Value::Bs(b)) => same_set(a, b),
            (Value::M(a), Value::M(b)) => a == b,
            (Value::L(a), Value::L(b)) => a == b,
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            _ => false,
        }
    }
}
impl Eq for Value {}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        match self {
            Value::S(s) => map.serialize_entry("S", s)?,
            Value::N(n) => map.serialize_entry("N", n)?,
            Value::B(b) => map.serialize_entry("B", &STANDARD.encode(b))?,
            Value::Ss(v) => map.serialize_entry("SS", v)?,
            Value::Ns(v) => map.serialize_entry("NS", v)?,
            Value::Bs(v) => {
                let encoded: Vec<String> = v.iter().map(|b| STANDARD.encode(b)).collect();
                map.serialize_entry("BS", &encoded)?
            }
            Value::M(m) => map.serialize_entry("M", m)?,
            Value::L(l) => map.serialize_entry("L", l)?,
            Value::Null => map.serialize_entry("NULL", &true)?,
            Value::Bool(b) => map.serialize_entry("BOOL", b)?,
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ValueVisitor)
    }
}

struct ValueVisitor;

fn decode_b64<E: de::Error>(text: &str) -> Result<Vec<u8>, E> {
    STANDARD_PAD_INDIFFERENT
        .decode(text)
        .map_err(|e| E::custom(format!("invalid base64 in a B or BS value: {e}")))
}

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a DynamoDB AttributeValue such as {\"S\":\"x\"} or {\"N\":\"1\"}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let Some(tag) = map.next_key::<std::borrow::Cow<'de, str>>()? else {
            return Err(de::Error::custom(
                "an AttributeValue needs exactly one type key, found none",
            ));
        };
        let value = match tag.as_ref() {
            "S" => Value::S(map.next_value()?),
            "N" => Value::N(map.next_value()?),
            "B" => Value::B(decode_b64(&map.next_value::<String>()?)?),
            "SS" => Value::Ss(map.next_value()?),
            "NS" => Value::Ns(map.next_value()?),
            "BS" => {
                let encoded: Vec<String> = map.next_value()?;
                Value::Bs(encoded.iter().map(|s| decode_b64(s)).collect::<Result<_, _>>()?)
            }
            "M" => Value::M(map.next_value()?),
            "L" => Value::L(map.next_value()?),
            "NULL" => match map.next_value::<bool>()? {
                true => Value::Null,
                false => return Err(de::Error::custom("NULL must be true")),
            },
            "BOOL" => Value::Bool(map.next_value()?),
            other => {
                return Err(de::Error::unknown_variant(
                    other,
                    &["S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL"],
                ));
            }
        };
        if map.next_key::<IgnoredAny>()?.is_some() {
            return Err(de::Error::custom(
                "an AttributeValue needs exactly one type key, found several",
            ));
        }
        Ok(value)
    }
}

fn parse_numbers(texts: Vec<String>) -> Result<Vec<Number>, ValueError> {
    texts
        .iter()
        .map(|t| Number::parse(t).map_err(ValueError::from))
        .collect()
}

/// The SDK conversions, identical for the two SDK crates' distinct `AttributeValue` types.
macro_rules! sdk_conversions {
    ($sdk:ident, $to_item:ident, $from_item:ident) => {
        impl From<Value> for $sdk::types::AttributeValue {
            fn from(value: Value) -> Self {
                use $sdk::primitives::Blob;
                use $sdk::types::AttributeValue as A;
                match value {
                    Value::S(s) => A::S(s),
                    Value::N(n) => A::N(n.into_string()),
                    Value::B(b) => A::B(Blob::new(b)),
                    Value::Ss(v) => A::Ss(v),
                    Value::Ns(v) => A::Ns(v.into_iter().map(Number::into_string).collect()),
                    Value::Bs(v) => A::Bs(v.into_iter().map(Blob::new).collect()),
                    Value::M(m) => A::M(m.into_iter().map(|(k, v)| (k, v.into())).collect()),
                    Value::L(l) => A::L(l.into_iter().map(Into::into).collect()),
                    Value::Null => A::Null(true),
                    Value::Bool(b) => A::Bool(b),
                }
            }
        }

        impl TryFrom<$sdk::types::AttributeValue> for Value {
            type Error = ValueError;
            fn try_from(value: $sdk::types::AttributeValue) -> Result<Self, ValueError> {
                use $sdk::types::AttributeValue as A;
                Ok(match value {
                    A::S(s) => Value::S(s),
                    A::N(n) => Value::N(Number::parse(&n)?),
                    A::B(b) => Value::B(b.into_inner()),
                    A::Ss(v) => Value::Ss(v),
                    A::Ns(v) => Value::Ns(parse_numbers(v)?),
                    A::Bs(v) => Value::Bs(v.into_iter().map(|b| b.into_inner()).collect()),
                    A::M(m) => Value::M(
                        m.into_iter()
                            .map(|(k, v)| Ok((k, Value::try_from(v)?)))
                            .collect::<Result<_, ValueError>>()?,
                    ),
                    A::L(l) => Value::L(
                        l.into_iter()
                            .map(Value::try_from)
                            .collect::<Result<_, _>>()?,
                    ),
                    A::Null(_) => Value::Null,
                    A::Bool(b) => Value::Bool(b),
                    _ => return Err(ValueError::Unknown),
                })
            }
        }

        #[doc = concat!("An [`Item`] as the attribute map of `", stringify!($sdk), "`.")]
        pub fn $to_item(item: Item) -> HashMap<String, $sdk::types::AttributeValue> {
            item.into_iter().map(|(k, v)| (k, v.into())).collect()
        }

        #[doc = concat!("An attribute map of `", stringify!($sdk), "` as an [`Item`]; the error names the")]
        /// attribute that holds an invalid value.
        pub fn $from_item(map: HashMap<String, $sdk::types::AttributeValue>) -> Result<Item, ValueError> {
            map.into_iter()
                .map(|(attribute, v)| match Value::try_from(v) {
                    Ok(v) => Ok((attribute, v)),
                    Err(e) => Err(ValueError::Attribute { attribute, source: Box::new(e) }),
                })
                .collect()
        }
    };
}

sdk_conversions!(aws_sdk_dynamodb, item_to_dynamodb, item_from_dynamodb);
sdk_conversions!(aws_sdk_dynamodbstreams, item_to_stream, item_from_stream);

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip_json(json: &str) -> Value {
        let v: Value = serde_json::from_str(json).unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), json, "JSON round trip");
        let sdk: aws_sdk_dynamodb::types::AttributeValue = v.clone().into();
        assert_eq!(Value::try_from(sdk).unwrap(), v, "aws-sdk-dynamodb round trip");
        let stream: aws_sdk_dynamodbstreams::types::AttributeValue = v.clone().into();
        assert_eq!(
            Value::try_from(stream).unwrap(),
            v,
            "aws-sdk-dynamodbstreams round trip"
        );
        v
    }

    #[test]
    fn every_type_round_trips() {
        assert_eq!(
            roundtrip_json(r#"{"S":"gg #10 — Zoë 🎮"}"#),
            Value::S("gg #10 — Zoë 🎮".into())
        );
        roundtrip_json(r#"{"S":""}"#);
        roundtrip_json(r#"{"N":"-12.5"}"#);
        let big = roundtrip_json(r#"{"N":"12345678901234567890123456789012345678"}"#);
        assert_eq!(
            big.as_n().unwrap().as_str(),
            "12345678901234567890123456789012345678"
        );
        assert_eq!(roundtrip_json(r#"{"B":"AAEK"}"#), Value::B(vec![0, 1, 10]));
        roundtrip_json(r#"{"B":"MtWpK4Gv+9BRsLKuPTK99w=="}"#);
        roundtrip_json(r#"{"SS":["a","b"]}"#);
        roundtrip_json(r#"{"NS":["-12.5","0.000001","1501"]}"#);
        roundtrip_json(r#"{"BS":["AAE=","//4="]}"#);
        roundtrip_json(r#"{"M":{}}"#);
        roundtrip_json(r#"{"M":{"a":{"L":[{"N":"1"},{"NULL":true}]},"b":{"M":{"c":{"BOOL":true}}}}}"#);
        roundtrip_json(r#"{"L":[]}"#);
        assert_eq!(roundtrip_json(r#"{"NULL":true}"#), Value::Null);
        assert_eq!(roundtrip_json(r#"{"BOOL":false}"#), Value::Bool(false));
    }

    #[test]
    fn malformed_json_is_rejected() {
        for bad in [
            r#"{}"#,
            r#"{"S":"a","N":"1"}"#,
            r#"{"X":"a"}"#,
            r#"{"N":"one"}"#,
            r#"{"N":1}"#,
            r#"{"B":"!!"}"#,
            r#"{"NULL":false}"#,
            r#""S""#,
        ] {
            assert!(
                serde_json::from_str::<Value>(bad).is_err(),
                "{bad} must be rejected"
            );
        }
    }

    #[test]
    fn sets_compare_as_sets_and_numbers_numerically() {
        let a: Value = serde_json::from_str(r#"{"NS":["1","2.50"]}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"NS":["2.5","1.0"]}"#).unwrap();
        assert_eq!(a, b);
        let a: Value = serde_json::from_str(r#"{"SS":["x","y"]}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"SS":["y","x"]}"#).unwrap();
        assert_eq!(a, b);
        let l1: Value = serde_json::from_str(r#"{"L":[{"S":"x"},{"S":"y"}]}"#).unwrap();
        let l2: Value = serde_json::from_str(r#"{"L":[{"S":"y"},{"S":"x"}]}"#).unwrap();
        assert_ne!(l1, l2, "lists keep their order");
        assert_ne!(Value::S("1".into()), Value::N(Number::from(1)));
    }

    #[test]
    fn items_convert_and_name_the_bad_attribute() {
        let item: Item =
            serde_json::from_str(r#"{"pk":{"S":"a"},"n":{"N":"1.5"},"b":{"BS":["AAE="]}}"#).unwrap();
        let sdk = item_to_dynamodb(item.clone());
        assert_eq!(item_from_dynamodb(sdk).unwrap(), item);
        let stream = item_to_stream(item.clone());
        assert_eq!(item_from_stream(stream).unwrap(), item);

        use aws_sdk_dynamodbstreams::types::AttributeValue as A;
        let bad = HashMap::from([("score".to_string(), A::N("1.2.3".into()))]);
        let err = item_from_stream(bad).unwrap_err();
        assert!(err.to_string().contains("`score`"), "{err}");
        let ValueError::Attribute { source, .. } = err else {
            panic!("expected Attribute")
        };
        assert!(matches!(*source, ValueError::Number(_)));
    }
}
