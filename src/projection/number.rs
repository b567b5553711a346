//! [`Number`]: a DynamoDB number, kept exact.
//!
//! Guarantees:
//! - A `Number` never goes through `f64`. It keeps the decimal text it was built from (so a round trip is
//!   byte-identical) and compares and adds through [`BigDecimal`], exactly.
//! - Every `Number` is one DynamoDB accepts: decimal syntax, at most 38 significant digits, magnitude
//!   between 1E-130 and 9.99…E+125 (or zero). A sum outside those limits is an error, as DynamoDB's `ADD`
//!   rejects it.
//! - Equality, ordering and hashing are numeric: `"10"`, `"10.0"` and `"1E1"` are equal.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use bigdecimal::BigDecimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// DynamoDB keeps at most this many significant digits.
pub const MAX_SIGNIFICANT_DIGITS: u64 = 38;
const MIN_MAGNITUDE: i64 = -130;
const MAX_MAGNITUDE: i64 = 125;

/// A DynamoDB number (`{"N": "..."}`): the original decimal text and its exact value.
#[derive(Clone)]
pub struct Number {
    text: String,
    value: BigDecimal,
}

/// A text that is not a number DynamoDB can store, or a sum that DynamoDB could not store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a DynamoDB number: {reason}")]
pub struct NumberError {
    /// The offending text (a sum is shown in plain notation).
    pub text: String,
    /// Why it is rejected.
    pub reason: &'static str,
}

impl Number {
    /// Parses a DynamoDB number such as `-12.5`, `0.000001` or `1E+10`, keeping `text` as written.
    pub fn parse(text: &str) -> Result<Number, NumberError> {
        let invalid = |reason| NumberError { text: text.to_string(), reason };
        if !is_decimal_syntax(text) {
            return Err(invalid(
                "expected digits with an optional sign, decimal point and exponent",
            ));
        }
        let value = BigDecimal::from_str(text).map_err(|_| invalid("not a decimal number"))?;
        check_limits(&value).map_err(invalid)?;
        Ok(Number { text: text.to_string(), value })
    }

    /// The decimal text, exactly as it was given (or, for a sum, in plain normalized notation).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The decimal text, as [`as_str`](Self::as_str) shows it, without copying it.
    pub fn into_string(self) -> String {
        self.text
    }

    /// The exact value.
    pub fn value(&self) -> &BigDecimal {
        &self.value
    }

    /// The exact sum, or an error when DynamoDB could not store it (more than 38 significant digits or
    /// out of range), as DynamoDB's `ADD` would fail.
    pub fn checked_add(&self, other: &Number) -> Result<Number, NumberError> {
        let value = (&self.value + &other.value).normalized();
        let text = value.to_plain_string();
        check_limits(&value).map_err(|reason| NumberError { text: text.clone(), reason })?;
        Ok(Number { text, value })
    }
}

/// `[+-]? (digits [. digits?] | . digits) ([eE] [+-]? digits)?`
fn is_decimal_syntax(text: &str) -> bool {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e)),
        None => (unsigned, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = digits(int) && digits(frac) && !(int.is_empty() && frac.is_empty());
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && e.len() <= 6 && digits(e)
    });
    mantissa_ok && exponent_ok
}

fn check_limits(value: &BigDecimal) -> Result<(), &'static str> {
    let zero = BigDecimal::from(0);
    if *value == zero {
        return Ok(());
    }
    if value.normalized().digits() > MAX_SIGNIFICANT_DIGITS {
        return Err("more than 38 significant digits");
    }
    let magnitude = value.order_of_magnitude();
    if !(MIN_MAGNITUDE..=MAX_MAGNITUDE).contains(&magnitude) {
        return Err("magnitude outside 1E-130 ..= 9.99E+125");
    }
    Ok(())
}

impl From<i64> for Number {
    fn from(n: i64) -> Self {
        Number { text: n.to_string(), value: BigDecimal::from(n) }
    }
}

impl FromStr for Number {
    type Err = NumberError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Number::parse(s)
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Number({})", self.text)
    }
}

impl PartialEq for Number {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}
impl Eq for Number {}

impl PartialOrd for Number {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Number {
    fn cmp(&self, other: &Self) -> Ordering {
        self.value.cmp(&other.value)
    }
}

impl Hash for Number {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Normalized, so numerically equal values hash alike.
        self.value.normalized().hash(state);
    }
}

impl Serialize for Number {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Number::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Number {
        Number::parse(s).unwrap()
    }

    #[test]
    fn keeps_the_text_and_compares_numerically() {
        assert_eq!(n("10.0").as_str(), "10.0");
        assert_eq!(n("10"), n("10.0"));
        assert_eq!(n("1E1"), n("10"));
        assert!(n("9") < n("10"), "numeric, not textual, order");
        assert!(n("-12.5") < n("0.000001"));
        assert_eq!(n("-0"), n("0"));
    }

    #[test]
    fn adds_38_digit_numbers_exactly() {
        let a = n("12345678901234567890123456789012345678");
        let b = n("11111111111111111111111111111111111111");
        assert_eq!(
            a.checked_add(&b).unwrap().as_str(),
            "23456790012345679001234567900123456789"
        );
        assert_eq!(n("0.1").checked_add(&n("0.2")).unwrap().as_str(), "0.3");
        assert_eq!(n("0.5").checked_add(&n("0.5")).unwrap().as_str(), "1");
        assert_eq!(n("1E+2").checked_add(&n("0")).unwrap().as_str(), "100");
    }

    #[test]
    fn rejects_what_dynamodb_rejects() {
        for bad in [
            "",
            "-",
            ".",
            "1.2.3",
            "1e",
            "abc",
            "NaN",
            "inf",
            " 1",
            "1_000",
            "0x10",
            "1e1234567",
        ] {
            assert!(Number::parse(bad).is_err(), "{bad:?} must be rejected");
        }
        let e = Number::parse("123456789012345678901234567890123456789").unwrap_err();
        assert_eq!(e.reason, "more than 38 significant digits");
        assert!(Number::parse("1E+126").is_err() && Number::parse("1E-131").is_err());
        assert!(Number::parse("1E+125").is_ok() && Number::parse("1E-130").is_ok());
        assert!(Number::parse("1000000000000000000000000000000000000000000").is_ok());
        let big = n("99999999999999999999999999999999999999");
        let e = big.checked_add(&n("0.5")).unwrap_err();
        assert_eq!(e.reason, "more than 38 significant digits");
        for ok in ["+5", ".5", "5.", "-1.5e-3", "0"] {
            assert!(Number::parse(ok).is_ok(), "{ok:?} must be accepted");
        }
    }

    #[test]
    fn into_string_is_the_text_as_written() {
        assert_eq!(n("-12.50").into_string(), "-12.50");
        assert_eq!(n("1E+2").checked_add(&n("0")).unwrap().into_string(), "100");
    }

    #[test]
    fn serializes_as_the_original_text() {
        let v: Number = serde_json::from_str("\"-12.50\"").unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"-12.50\"");
        assert!(serde_json::from_str::<Number>("\"x\"").is_err());
    }
}
