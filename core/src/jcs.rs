//! RFC 8785 JSON Canonicalization Scheme (JCS) over `serde_json::Value`.
//!
//! Object members are sorted by their names' UTF-16 code units, strings are escaped as RFC 8785
//! section 3.2.2.2 says (only `"`, `\` and control characters, with `\b \t \n \f \r` and
//! lowercase `\u00xx`), no whitespace is written. Numbers: this project puts money and units in
//! strings, so canonical numbers are limited to integers of magnitude at most 2^53, whose ES6
//! form is their plain decimal digits; any other number is refused rather than printed in a
//! form another implementation might not reproduce.

use serde_json::Value;
use std::fmt::Write;

/// The largest integer magnitude JCS prints as plain digits without precision loss (2^53).
pub const INTEGER_MAGNITUDE_MAX: u64 = 1 << 53;
/// Nesting deeper than this is refused (receipts nest two levels).
pub const DEPTH_MAX: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JcsError {
    #[error("number {0} is not an integer of magnitude at most 2^53")]
    Number(String),
    #[error("nesting deeper than {DEPTH_MAX} levels")]
    TooDeep,
}

/// The canonical bytes of `value`.
pub fn canonicalize(value: &Value) -> Result<Vec<u8>, JcsError> {
    let mut out = String::with_capacity(512);
    write_value(value, &mut out, 0)?;
    Ok(out.into_bytes())
}

/// Appends the canonical form of `value` to `out`.
pub fn write_value(value: &Value, out: &mut String, depth: usize) -> Result<(), JcsError> {
    if depth > DEPTH_MAX {
        return Err(JcsError::TooDeep);
    }
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let in_range = n.as_u64().map(|v| v <= INTEGER_MAGNITUDE_MAX).or_else(|| n.as_i64().map(|v| v.unsigned_abs() <= INTEGER_MAGNITUDE_MAX));
            match in_range {
                Some(true) => write!(out, "{n}").expect("writing to a String"),
                _ => return Err(JcsError::Number(n.to_string())),
            }
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out, depth + 1)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            // UTF-16 code unit order; for names below U+D800 (all of ours) it equals byte order.
            members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push('{');
            for (i, (name, member)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(name, out);
                out.push(':');
                write_value(member, out, depth + 1)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{0c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32).expect("writing to a String"),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(v: &Value) -> String {
        String::from_utf8(canonicalize(v).unwrap()).unwrap()
    }

    #[test]
    fn sorts_members_and_drops_whitespace() {
        let v: Value = serde_json::from_str(r#"{ "b": 1, "a": [true, null, {"d": "x", "c": -3}] }"#).unwrap();
        assert_eq!(canon(&v), r#"{"a":[true,null,{"c":-3,"d":"x"}],"b":1}"#);
    }

    #[test]
    fn escapes_strings_as_rfc_8785_says() {
        let v = json!({"s": "\u{0}\u{8}\t\n\u{b}\u{c}\r\u{1f}\"\\/€😀\u{7f}"});
        assert_eq!(canon(&v), "{\"s\":\"\\u0000\\b\\t\\n\\u000b\\f\\r\\u001f\\\"\\\\/€😀\u{7f}\"}");
    }

    #[test]
    fn sorts_by_utf16_code_units() {
        // U+1F600 is the surrogate pair D83D DE00 in UTF-16, which sorts before U+E000; in UTF-8
        // bytes (F0.. against EE..) the order is the other way round.
        let v = json!({"\u{e000}": 1, "\u{1f600}": 2, "a": 3});
        assert_eq!(canon(&v), "{\"a\":3,\"\u{1f600}\":2,\"\u{e000}\":1}");
    }

    #[test]
    fn numbers_are_safe_integers_only() {
        assert_eq!(canon(&json!([0, -1, 9007199254740992u64])), "[0,-1,9007199254740992]");
        assert!(matches!(canonicalize(&json!(9007199254740993u64)), Err(JcsError::Number(_))));
        assert!(matches!(canonicalize(&json!(2.5)), Err(JcsError::Number(_))));
    }

    #[test]
    fn refuses_deep_nesting() {
        let mut v = json!(1);
        for _ in 0..40 {
            v = json!([v]);
        }
        assert_eq!(canonicalize(&v), Err(JcsError::TooDeep));
    }
}
