//! Request and response bodies (contract: "Resource: a record") and the rules on keys and values that
//! the schema alone cannot express: control characters, exactly storable numbers, no `\u0000`.

use chrono::{DateTime, SecondsFormat, Utc};
use std::borrow::Cow;

use poem_openapi::{
    Object,
    registry::{MetaSchema, MetaSchemaRef},
    types::{Example, ParseError, ParseFromJSON, ParseFromParameter, ParseResult, ToJSON, Type},
};
use serde::{Serialize, Serializer};
use serde_json::{Value, json};

/// The longest key, in Unicode scalar values.
pub const MAX_KEY_CHARS: usize = 200;

/// A stored record.
#[derive(Object, Serialize, Clone, Debug, PartialEq)]
#[oai(example)]
pub struct Record {
    /// Assigned by the database, increasing.
    pub id: i64,
    /// Unique key, 1..=200 characters, no control characters.
    pub key: String,
    /// Any JSON value.
    pub value: Value,
    /// When the record was created (RFC 3339, UTC, microseconds).
    #[serde(serialize_with = "rfc3339_micros")]
    pub created_at: DateTime<Utc>,
    /// When the record was last written (RFC 3339, UTC, microseconds).
    #[serde(serialize_with = "rfc3339_micros")]
    pub updated_at: DateTime<Utc>,
}

impl Example for Record {
    fn example() -> Self {
        let at = DateTime::parse_from_rfc3339("2026-11-23T19:00:00.123456Z").map(|t| t.to_utc()).unwrap_or_default();
        Self { id: 42, key: "user:1001".into(), value: example_value(), created_at: at, updated_at: at }
    }
}

fn example_value() -> Value {
    json!({"name": "Ada", "langs": ["en", "fr"], "admin": true, "score": 1.5, "manager": null})
}

fn rfc3339_micros<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
}

/// One page of records, ordered by id.
#[derive(Object, Serialize, Clone, Debug)]
#[oai(example)]
pub struct RecordPage {
    /// The records on this page, ordered by id ascending.
    pub items: Vec<Record>,
    /// The last id of this page when another record follows (pass it as `after`), else null.
    #[oai(nullable)]
    pub next_after: Option<i64>,
}

impl Example for RecordPage {
    fn example() -> Self {
        Self { items: vec![Record::example()], next_after: None }
    }
}

/// The body of `POST /data`.
#[derive(Object, Clone, Debug)]
#[oai(deny_unknown_fields, example)]
pub struct NewRecord {
    /// Unique key, 1..=200 characters, no control characters; stored exactly as sent.
    pub key: Key,
    /// Any JSON value (`null` included); required.
    #[oai(deserialize_with = "required_value")]
    pub value: Value,
}

impl Example for NewRecord {
    fn example() -> Self {
        Self { key: Key("user:1001".into()), value: example_value() }
    }
}

/// The body of `PUT /data/{id}`.
#[derive(Object, Clone, Debug)]
#[oai(deny_unknown_fields, example)]
pub struct RecordUpdate {
    /// The new value: any JSON value (`null` included); required.
    #[oai(deserialize_with = "required_value")]
    pub value: Value,
}

impl Example for RecordUpdate {
    fn example() -> Self {
        Self { value: json!({"name": "Ada Lovelace", "langs": ["en"], "admin": false}) }
    }
}

// poem-openapi reads a missing `Value` field as null; the contract makes `value` required.
fn required_value(v: Option<Value>) -> ParseResult<Value> {
    v.ok_or_else(|| ParseError::custom("field `value` is required (send `\"value\": null` for null)"))
}

/// A record key (body field or `key=` filter): 1..=200 Unicode scalar values, no control characters.
///
/// A type of its own rather than `String` with validators: poem-openapi's `pattern` validator compiles
/// its regex on every request (`validation/pattern.rs`), which profiled as the largest cost of a POST;
/// and its `String` parser would turn `"key": 5` into "5", where the contract wants a 400.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key(pub String);

/// The schema's spelling of the control-character rule (documentation; `key_problem` enforces it).
const KEY_PATTERN: &str = r"^[^\x00-\x1F\x7F-\x9F]*$";

impl Type for Key {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "string(key)".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            min_length: Some(1),
            max_length: Some(MAX_KEY_CHARS),
            pattern: Some(KEY_PATTERN.into()),
            example: Some(Value::String("user:1001".into())),
            ..MetaSchema::new("string")
        }))
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(std::iter::once(self))
    }
}

impl Key {
    fn parse(s: String) -> ParseResult<Self> {
        match key_problem(&s) {
            None => Ok(Self(s)),
            Some(problem) => Err(ParseError::custom(problem)),
        }
    }
}

impl ParseFromJSON for Key {
    fn parse_from_json(v: Option<Value>) -> ParseResult<Self> {
        match v {
            Some(Value::String(s)) => Self::parse(s),
            Some(other) => Err(ParseError::custom(format!("`key` must be a string, got {}", json_kind(&other)))),
            None => Err(ParseError::custom("field `key` is required")),
        }
    }
}

impl ParseFromParameter for Key {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Self::parse(value.to_owned())
    }
}

impl ToJSON for Key {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks a key beyond what the schema validators cover; returns the problem detail if invalid.
pub fn key_problem(key: &str) -> Option<String> {
    let n = key.chars().count();
    if n == 0 || n > MAX_KEY_CHARS {
        return Some(format!("`key` must be 1..={MAX_KEY_CHARS} characters, got {n}"));
    }
    if key.chars().any(char::is_control) {
        return Some("`key` must not contain control characters".into());
    }
    None
}

/// Scans raw JSON text for values Postgres jsonb or this service could not store exactly: numbers
/// that do not survive the round trip through i64/u64/f64, and `\u0000` in strings or object keys.
/// Malformed JSON is left to the JSON parser, which reports it as 400 itself.
pub fn json_text_problem(text: &[u8]) -> Option<String> {
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'"' => {
                i += 1;
                while i < text.len() && text[i] != b'"' {
                    if text[i] == b'\\' {
                        if text.get(i + 1) == Some(&b'u') && text.get(i + 2..i + 6) == Some(b"0000") {
                            return Some("strings cannot contain \\u0000 (Postgres jsonb cannot store it)".into());
                        }
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                i += 1;
                while i < text.len() && matches!(text[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') {
                    i += 1;
                }
                let token = std::str::from_utf8(&text[start..i]).unwrap_or("");
                if !number_is_exact(token) {
                    return Some(format!(
                        "number {} cannot be stored exactly (integers must fit in 64 bits, \
                         decimals in an IEEE-754 double)",
                        shorten(token)
                    ));
                }
            }
            _ => i += 1,
        }
    }
    None
}

fn shorten(token: &str) -> String {
    if token.len() > 40 { format!("{}…", &token[..40]) } else { token.to_owned() }
}

/// True when the decimal `token` equals the value serde_json will hold for it.
fn number_is_exact(token: &str) -> bool {
    if !token.contains(['.', 'e', 'E']) {
        return token.parse::<i64>().is_ok() || token.parse::<u64>().is_ok() || is_negative_zero(token);
    }
    let Ok(f) = token.parse::<f64>() else { return true }; // malformed: the JSON parser reports it
    if !f.is_finite() {
        return false;
    }
    match (decimal_digits(token), decimal_digits(&format!("{f:e}"))) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

fn is_negative_zero(token: &str) -> bool {
    token.strip_prefix('-').is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b == b'0'))
}

/// Canonical (sign, significant digits, exponent) of a decimal literal; zero is ("", 0) whatever its sign.
fn decimal_digits(s: &str) -> Option<(bool, String, i64)> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(p) => (&s[..p], s[p + 1..].parse::<i64>().ok()?),
        None => (s, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{frac}");
    let mut exp = exp.checked_sub(i64::try_from(frac.len()).ok()?)?;
    let trimmed = digits.trim_start_matches('0');
    let significant = trimmed.trim_end_matches('0');
    if significant.is_empty() {
        return Some((false, String::new(), 0));
    }
    exp = exp.checked_add(i64::try_from(trimmed.len() - significant.len()).ok()?)?;
    Some((neg, significant.to_owned(), exp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_counted_in_scalar_values_and_reject_controls() {
        assert!(key_problem(&"é".repeat(200)).is_none());
        assert!(key_problem(&"é".repeat(201)).is_some());
        assert!(key_problem("").is_some());
        assert!(key_problem("a\u{7}b").is_some());
        assert!(key_problem("a\u{85}b").is_some(), "C1 controls are Cc too");
        assert!(key_problem("user:1001 ünïcödé 🚀").is_none());
    }

    #[test]
    fn exact_numbers_pass() {
        for ok in [
            r#"{"a": 1}"#,
            "-9223372036854775808",
            "18446744073709551615",
            "0.1",
            "1.5e300",
            "-0",
            "-0.0",
            "1e2",
            "100.000",
            "3.141592653589793",
            r#"["1e999 inside a string is text", 2]"#,
            r#""escaped quote \" then 123456789012345678901234567890""#,
        ] {
            assert_eq!(json_text_problem(ok.as_bytes()), None, "{ok}");
        }
    }

    #[test]
    fn inexact_numbers_and_nul_are_rejected() {
        for bad in [
            "18446744073709551616",
            "-9223372036854775809",
            "3.14159265358979323846",
            "1e400",
            "1e-400",
            "0.10000000000000000001",
            r#"{"s": "a\u0000b"}"#,
            r#"{"a\u0000": 1}"#,
        ] {
            assert!(json_text_problem(bad.as_bytes()).is_some(), "{bad}");
        }
        // An escaped backslash followed by u0000 is the text `\u0000`, which is storable.
        assert_eq!(json_text_problem(br#""\\u0000""#), None);
    }
}
