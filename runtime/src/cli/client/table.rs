//! Text for people: rows in aligned columns, and values shown as the API
//! names them (`always`, `compact`), with `-` for nothing.

use serde::Serialize;
use serde_json::Value;

/// Prints rows under headers, in columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// A JSON value as a cell: a string as itself, `null` as `-`, anything
/// else as its JSON text.
pub fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// A value of an answer's type as a cell, the way the API writes it: an
/// enum by its JSON name, `None` as `-`.
pub fn cell(value: &impl Serialize) -> String {
    text(&serde_json::to_value(value).expect("the API's types are JSON"))
}
