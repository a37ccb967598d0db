//! Output for people: aligned tables and key-value blocks. (`--json` prints the API's JSON.)

use serde_json::Value;

/// A column's cell from a JSON value: strings unquoted, null as "-".
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints rows under headers, each column as wide as its widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// Prints `key: value` lines with aligned values.
pub fn pairs(items: &[(&str, String)]) {
    let width = items.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in items {
        println!("{:<width$}  {v}", format!("{k}:"), width = width + 1);
    }
}

pub fn json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).expect("JSON prints"));
}
