//! Filter conditions (`spec.projection.filter`), compiled once and tested against each record.
//!
//! Semantics, per operator, for the record's attribute `a` and the condition's text value `v`:
//! - `Equals`: `a` is an `S` equal to `v`; or an `N` numerically equal to `v` parsed as a number (a `v`
//!   that is not a number never equals an `N`); or a `BOOL` and `v` is `"true"` / `"false"` accordingly.
//!   Any other type, or a missing `a`, is not equal.
//! - `NotEquals`: exactly the negation of `Equals`, so a missing attribute is "not equal".
//! - `BeginsWith`: `a` is an `S` starting with `v` (other types never match).
//! - `In`: `Equals` holds for at least one of `values`.
//! - `Exists` / `NotExists`: `a` is present / absent (a `NULL` value is present).

use crate::crd::{FilterCondition, FilterOperator};

use super::{Item, Number, Value};

/// One compiled condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Condition {
    attribute: String,
    test: Test,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Test {
    Equals(Operand),
    NotEquals(Operand),
    BeginsWith(String),
    In(Vec<Operand>),
    Exists,
    NotExists,
}

/// A condition value, pre-parsed for each type it can equal.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Operand {
    text: String,
    number: Option<Number>,
    boolean: Option<bool>,
}

impl Operand {
    fn new(text: &str) -> Operand {
        Operand {
            text: text.to_string(),
            number: Number::parse(text).ok(),
            boolean: match text {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            },
        }
    }

    fn equals(&self, value: Option<&Value>) -> bool {
        match value {
            Some(Value::S(s)) => *s == self.text,
            Some(Value::N(n)) => self.number.as_ref() == Some(n),
            Some(Value::Bool(b)) => self.boolean == Some(*b),
            _ => false,
        }
    }
}

impl Condition {
    /// Compiles a condition; the error says what is wrong with it.
    pub(super) fn compile(c: &FilterCondition) -> Result<Condition, String> {
        let value = || match (&c.value, c.values.is_empty()) {
            (Some(v), true) => Ok(v.as_str()),
            _ => Err(format!(
                "{:?} on `{}` takes `value` (and no `values`)",
                c.operator, c.attribute
            )),
        };
        let no_value = || match (&c.value, c.values.is_empty()) {
            (None, true) => Ok(()),
            _ => Err(format!("{:?} on `{}` takes no value", c.operator, c.attribute)),
        };
        let test = match c.operator {
            FilterOperator::Equals => Test::Equals(Operand::new(value()?)),
            FilterOperator::NotEquals => Test::NotEquals(Operand::new(value()?)),
            FilterOperator::BeginsWith => Test::BeginsWith(value()?.to_string()),
            FilterOperator::In => {
                if c.value.is_some() || c.values.is_empty() {
                    return Err(format!(
                        "In on `{}` takes `values` (a non-empty list)",
                        c.attribute
                    ));
                }
                Test::In(c.values.iter().map(|v| Operand::new(v)).collect())
            }
            FilterOperator::Exists => no_value().map(|_| Test::Exists)?,
            FilterOperator::NotExists => no_value().map(|_| Test::NotExists)?,
        };
        Ok(Condition { attribute: c.attribute.clone(), test })
    }

    /// Whether `record` meets the condition.
    pub(super) fn holds(&self, record: &Item) -> bool {
        let value = record.get(&self.attribute);
        match &self.test {
            Test::Equals(o) => o.equals(value),
            Test::NotEquals(o) => !o.equals(value),
            Test::BeginsWith(prefix) => value.and_then(Value::as_s).is_some_and(|s| s.starts_with(prefix)),
            Test::In(operands) => operands.iter().any(|o| o.equals(value)),
            Test::Exists => value.is_some(),
            Test::NotExists => value.is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(yaml: &str) -> Condition {
        Condition::compile(&serde_yaml::from_str(yaml).unwrap()).unwrap()
    }

    fn record() -> Item {
        serde_json::from_str(
            r#"{"status":{"S":"finished"},"seq":{"N":"10.0"},"ranked":{"BOOL":true},
                "winner":{"NULL":true},"tags":{"SS":["pvp"]},
                "big":{"N":"12345678901234567890123456789012345678"}}"#,
        )
        .unwrap()
    }

    fn holds(yaml: &str) -> bool {
        condition(yaml).holds(&record())
    }

    #[test]
    fn equals_compares_strings_numbers_and_booleans() {
        assert!(holds("{attribute: status, operator: Equals, value: finished}"));
        assert!(!holds("{attribute: status, operator: Equals, value: Finished}"));
        assert!(
            holds("{attribute: seq, operator: Equals, value: '10'}"),
            "numeric: 10 == 10.0"
        );
        assert!(!holds(
            "{attribute: seq, operator: Equals, value: '10.0000000001'}"
        ));
        assert!(
            !holds("{attribute: seq, operator: Equals, value: ten}"),
            "a non-number never equals N"
        );
        assert!(holds(
            "{attribute: big, operator: Equals, value: '12345678901234567890123456789012345678'}"
        ));
        assert!(!holds(
            "{attribute: big, operator: Equals, value: '12345678901234567890123456789012345679'}"
        ));
        assert!(holds("{attribute: ranked, operator: Equals, value: 'true'}"));
        assert!(!holds("{attribute: ranked, operator: Equals, value: 'false'}"));
        assert!(!holds("{attribute: ranked, operator: Equals, value: 'True'}"));
        assert!(
            !holds("{attribute: winner, operator: Equals, value: 'null'}"),
            "NULL equals nothing"
        );
        assert!(
            !holds("{attribute: tags, operator: Equals, value: pvp}"),
            "sets equal nothing"
        );
        assert!(!holds("{attribute: absent, operator: Equals, value: x}"));
    }

    #[test]
    fn not_equals_is_the_negation_of_equals() {
        assert!(!holds(
            "{attribute: status, operator: NotEquals, value: finished}"
        ));
        assert!(holds("{attribute: status, operator: NotEquals, value: lobby}"));
        assert!(!holds("{attribute: seq, operator: NotEquals, value: '1E1'}"));
        assert!(holds("{attribute: seq, operator: NotEquals, value: ten}"));
        assert!(
            holds("{attribute: absent, operator: NotEquals, value: x}"),
            "missing is not equal"
        );
    }

    #[test]
    fn begins_with_in_exists() {
        assert!(holds("{attribute: status, operator: BeginsWith, value: fin}"));
        assert!(!holds("{attribute: status, operator: BeginsWith, value: lob}"));
        assert!(
            !holds("{attribute: seq, operator: BeginsWith, value: '1'}"),
            "S only"
        );
        assert!(holds(
            "{attribute: status, operator: In, values: [lobby, finished]}"
        ));
        assert!(holds("{attribute: seq, operator: In, values: ['3', '10']}"));
        assert!(!holds(
            "{attribute: status, operator: In, values: [lobby, running]}"
        ));
        assert!(holds("{attribute: winner, operator: Exists}"), "NULL is present");
        assert!(!holds("{attribute: absent, operator: Exists}"));
        assert!(holds("{attribute: absent, operator: NotExists}"));
        assert!(!holds("{attribute: status, operator: NotExists}"));
    }

    #[test]
    fn malformed_conditions_are_rejected() {
        for yaml in [
            "{attribute: a, operator: Equals}",
            "{attribute: a, operator: Equals, value: x, values: [y]}",
            "{attribute: a, operator: In, values: []}",
            "{attribute: a, operator: In, value: x, values: [x]}",
            "{attribute: a, operator: Exists, value: x}",
            "{attribute: a, operator: NotExists, values: [x]}",
        ] {
            let c: FilterCondition = serde_yaml::from_str(yaml).unwrap();
            assert!(Condition::compile(&c).is_err(), "{yaml} must be rejected");
        }
    }
}
