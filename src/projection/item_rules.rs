//! The rules DynamoDB applies to an item's *content* before it stores it, checked here so that a record
//! breaking one is refused by name (attribute path, value, fix) before any write, instead of by an opaque
//! `ValidationException` for a whole `BatchWriteItem` call.
//!
//! Source (DynamoDB Developer Guide, "Supported data types and naming rules in Amazon DynamoDB",
//! <https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/HowItWorks.NamingRulesDataTypes.html>):
//! - attribute names are at least one character long (and at most 64 KB);
//! - "Empty sets are not supported" and "Each value within a set must be unique" (numbers compare by
//!   value: `1` and `1.0` are the same element);
//! - "DynamoDB supports nested attributes up to 32 levels deep".
//! - An item is at most 400 KB, its size computed as the Developer Guide's "Item sizes and formats"
//!   (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html>)
//!   gives it ([`item_size`]): a number's size is approximate there, so an item within a few bytes of the
//!   limit may pass here and still be refused by DynamoDB.
//!
//! Numbers (38 digits, 1E-130 to 9.99E+125) are already checked by [`super::Number::parse`]; key sizes by
//! the callers that know the key schema.

use std::collections::HashSet;

use super::value::{Item, Value};

/// The longest attribute name DynamoDB accepts, in UTF-8 bytes (64 KB, same source).
pub const MAX_ATTRIBUTE_NAME_BYTES: usize = 65_535;

/// The deepest nesting of maps and lists DynamoDB accepts (same source).
pub const MAX_NESTING_DEPTH: usize = 32;

/// The largest item DynamoDB stores, in bytes (400 KB).
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

/// An item DynamoDB would refuse for its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemRuleError {
    /// An attribute name (of the item or of a nested map) is empty or longer than 64 KB.
    #[error(
        "attribute name {name:?} at `{path}` is {found}; DynamoDB attribute names are 1 byte to 64 KB: \
         rename it"
    )]
    AttributeName {
        path: String,
        name: String,
        found: String,
    },
    /// A set (`SS`, `NS`, `BS`) with no element.
    #[error(
        "attribute `{path}` is an empty {set}; DynamoDB stores no empty set: omit the attribute or use an empty list (L)"
    )]
    EmptySet { path: String, set: &'static str },
    /// A set with the same element twice.
    #[error(
        "attribute `{path}` is a {set} holding {element} more than once; set elements must be unique: \
         remove the repeat, or use a list (L) to keep repeats"
    )]
    DuplicateSetElement {
        path: String,
        set: &'static str,
        element: String,
    },
    /// The item is larger than [`MAX_ITEM_BYTES`].
    #[error(
        "the record is about {size} bytes; DynamoDB stores items of at most {max} bytes (400 KB): keep large \
         payloads elsewhere (e.g. S3) and log a reference"
    )]
    TooLarge { size: usize, max: usize },
    /// Maps and lists nested deeper than [`MAX_NESTING_DEPTH`].
    #[error(
        "attribute `{path}` nests maps and lists {depth} levels deep; DynamoDB allows at most {max}: \
         flatten the record"
    )]
    TooDeep { path: String, depth: usize, max: usize },
}

/// Checks `item` against the rules above; the first broken rule, in attribute-name order.
pub fn check_item(item: &Item) -> Result<(), ItemRuleError> {
    check_map(item, "", 0)?;
    let size = item_size(item);
    if size > MAX_ITEM_BYTES {
        return Err(ItemRuleError::TooLarge { size, max: MAX_ITEM_BYTES });
    }
    Ok(())
}

/// The item's size in bytes as DynamoDB counts it (source above): each attribute name's UTF-8 bytes plus
/// its value's size.
pub fn item_size(item: &Item) -> usize {
    item.iter()
        .map(|(name, value)| name.len() + value_size(value))
        .sum()
}

/// A value's size (source above): strings their UTF-8 bytes, binaries their bytes, a number 1 byte per two
/// significant digits plus 1, `NULL` and `BOOL` 1 byte, sets the sum of their elements, maps and lists 3
/// bytes plus 1 byte per element plus their elements (and a map's names).
fn value_size(value: &Value) -> usize {
    let number = |n: &super::Number| (n.value().normalized().digits() as usize).div_ceil(2) + 1;
    match value {
        Value::S(s) => s.len(),
        Value::N(n) => number(n),
        Value::B(b) => b.len(),
        Value::Ss(v) => v.iter().map(String::len).sum(),
        Value::Ns(v) => v.iter().map(number).sum(),
        Value::Bs(v) => v.iter().map(Vec::len).sum(),
        Value::M(m) => 3 + m.len() + item_size(m),
        Value::L(l) => 3 + l.len() + l.iter().map(value_size).sum::<usize>(),
        Value::Null | Value::Bool(_) => 1,
    }
}

fn check_map(map: &Item, path: &str, depth: usize) -> Result<(), ItemRuleError> {
    for (name, value) in map {
        let here = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        if name.is_empty() || name.len() > MAX_ATTRIBUTE_NAME_BYTES {
            return Err(ItemRuleError::AttributeName {
                path: if path.is_empty() {
                    "<item>".into()
                } else {
                    path.to_string()
                },
                name: shorten(name),
                found: if name.is_empty() {
                    "empty".into()
                } else {
                    format!("{} bytes long", name.len())
                },
            });
        }
        check_value(value, &here, depth)?;
    }
    Ok(())
}

/// `depth`: how many maps and lists enclose `value`.
fn check_value(value: &Value, path: &str, depth: usize) -> Result<(), ItemRuleError> {
    let nested = |depth: usize| -> Result<usize, ItemRuleError> {
        let depth = depth + 1;
        if depth > MAX_NESTING_DEPTH {
            return Err(ItemRuleError::TooDeep { path: path.to_string(), depth, max: MAX_NESTING_DEPTH });
        }
        Ok(depth)
    };
    match value {
        Value::Ss(v) => unique(path, "string set (SS)", v.iter(), |s| format!("{:?}", shorten(s))),
        Value::Ns(v) => unique(path, "number set (NS)", v.iter(), |n| n.as_str().to_string()),
        Value::Bs(v) => unique(path, "binary set (BS)", v.iter(), |b| {
            format!("{} bytes", b.len())
        }),
        Value::M(m) => check_map(m, path, nested(depth)?),
        Value::L(l) => {
            let depth = nested(depth)?;
            for (i, v) in l.iter().enumerate() {
                check_value(v, &format!("{path}[{i}]"), depth)?;
            }
            Ok(())
        }
        Value::S(_) | Value::N(_) | Value::B(_) | Value::Null | Value::Bool(_) => Ok(()),
    }
}

fn unique<'a, T: Eq + std::hash::Hash + 'a>(
    path: &str,
    set: &'static str,
    elements: impl ExactSizeIterator<Item = &'a T>,
    show: impl Fn(&T) -> String,
) -> Result<(), ItemRuleError> {
    if elements.len() == 0 {
        return Err(ItemRuleError::EmptySet { path: path.to_string(), set });
    }
    let mut seen = HashSet::new();
    for element in elements {
        if !seen.insert(element) {
            return Err(ItemRuleError::DuplicateSetElement {
                path: path.to_string(),
                set,
                element: show(element),
            });
        }
    }
    Ok(())
}

/// At most 64 characters of `text`, for messages.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::Number;
    use proptest::prelude::*;

    fn item(pairs: &[(&str, Value)]) -> Item {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    fn n(text: &str) -> Number {
        Number::parse(text).unwrap()
    }

    fn nest(depth: usize) -> Value {
        (0..depth).fold(Value::S("x".into()), |v, i| {
            if i % 2 == 0 {
                Value::L(vec![v])
            } else {
                Value::M(item(&[("m", v)]))
            }
        })
    }

    #[test]
    fn each_rule_is_named_with_its_path() {
        let cases = [
            (item(&[("", Value::S("a".into()))]), "empty"),
            (
                item(&[("tags", Value::Ss(vec![]))]),
                "`tags` is an empty string set",
            ),
            (
                item(&[("ids", Value::Ns(vec![n("1"), n("1.0")]))]),
                "`ids` is a number set (NS) holding 1.0",
            ),
            (
                item(&[("m", Value::M(item(&[("bs", Value::Bs(vec![vec![1], vec![1]]))])))]),
                "`m.bs` is a binary set (BS)",
            ),
            (item(&[("deep", nest(MAX_NESTING_DEPTH + 1))]), "33 levels deep"),
            (
                item(&[("big", Value::S("x".repeat(MAX_ITEM_BYTES)))]),
                "the record is about 409603 bytes",
            ),
        ];
        for (item, expected) in cases {
            let err = check_item(&item).expect_err(expected).to_string();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn what_dynamodb_stores_passes() {
        let ok = item(&[
            ("empty", Value::S(String::new())),
            ("list", Value::L(vec![])),
            ("map", Value::M(Item::new())),
            ("ns", Value::Ns(vec![n("1"), n("1.5"), n("-1")])),
            ("ss", Value::Ss(vec!["a".into(), "A".into()])),
            ("deep", nest(MAX_NESTING_DEPTH)),
        ]);
        assert_eq!(check_item(&ok), Ok(()));
        let at_limit = item(&[("big", Value::S("x".repeat(MAX_ITEM_BYTES - 3)))]);
        assert_eq!(item_size(&at_limit), MAX_ITEM_BYTES);
        assert_eq!(check_item(&at_limit), Ok(()));
    }

    #[test]
    fn sizes_follow_the_documented_formula() {
        let m = item(&[
            ("a", Value::N(n("12345"))),
            ("bb", Value::Bool(true)),
            ("l", Value::L(vec![Value::Null, Value::S("xyz".into())])),
        ]);
        // a: 1 + (5 digits → 3 + 1); bb: 2 + 1; l: 1 + 3 + 2 + (1 + 3)
        assert_eq!(item_size(&m), 5 + 3 + 10);
        assert_eq!(
            value_size(&Value::N(n("1.2300E+5"))),
            3,
            "trailing zeros are not significant"
        );
    }

    proptest! {
        /// A set passes exactly when it is non-empty and its elements distinct.
        #[test]
        fn sets_pass_iff_non_empty_and_distinct(elements in proptest::collection::vec(0u8..6, 0..6)) {
            let ss = Value::Ss(elements.iter().map(|e| e.to_string()).collect());
            let ns = Value::Ns(elements.iter().map(|e| n(&format!("{e}.0"))).collect());
            let distinct = elements.iter().collect::<HashSet<_>>().len() == elements.len();
            let expected = !elements.is_empty() && distinct;
            prop_assert_eq!(check_item(&item(&[("s", ss)])).is_ok(), expected);
            prop_assert_eq!(check_item(&item(&[("s", ns)])).is_ok(), expected);
        }

        /// Nesting passes exactly up to the limit, wherever the nesting sits.
        #[test]
        fn nesting_passes_iff_within_the_limit(depth in 0usize..40, under in 0usize..3) {
            let value = (0..under).fold(nest(depth), |v, _| Value::L(vec![Value::Null, v]));
            prop_assert_eq!(check_item(&item(&[("a", value)])).is_ok(), depth + under <= MAX_NESTING_DEPTH);
        }
    }
}
