//! Plain text tables for humans (`--json` prints the API's JSON instead).

use serde_json::Value;

/// Prints rows under headers, columns padded to their widest cell.
pub fn print(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(headers.iter().map(|h| h.to_uppercase()).collect());
    let empty = rows.is_empty();
    for r in rows {
        line(r);
    }
    if empty {
        println!("(none)");
    }
}

/// A field as a cell: strings bare, null as "-", anything else as JSON.
pub fn cell(v: &Value, key: &str) -> String {
    match v.get(key) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Prints `key  value` lines, keys padded to the widest; multi-line values are indented.
pub fn fields(rows: &[(String, String)]) {
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    for (k, v) in rows {
        let pad = " ".repeat(width + 2);
        let v = v.replace('\n', &format!("\n{pad}"));
        println!("{}", format!("{k:<width$}  {v}").trim_end());
    }
}

/// A list of strings as words: `["send","read"]` → `send, read`; "-" when empty.
pub fn words(v: &Value, key: &str) -> String {
    let words: Vec<String> = v[key]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| w.as_str().map_or_else(|| w.to_string(), str::to_string))
        .collect();
    if words.is_empty() {
        "-".into()
    } else {
        words.join(", ")
    }
}

/// Why a pending delivery waits (`waiting.detail` of the API's delivery view), or "-".
pub fn waiting(d: &Value) -> String {
    d["waiting"]["detail"]
        .as_str()
        .map_or_else(|| "-".to_string(), str::to_string)
}

/// A JSON object flattened into `a.b` keys and scalar cells, for a human view of settings.
pub fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::Null => {}
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_flatten_into_dotted_keys_without_nulls() {
        let mut out = Vec::new();
        flatten(
            "",
            &json!({"url": "http://h/", "retry": {"schedule": ["1s", "5s"], "jitter": false}, "ordered": null}),
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                ("retry.jitter".to_string(), "false".to_string()),
                ("retry.schedule".to_string(), "[\"1s\",\"5s\"]".to_string()),
                ("url".to_string(), "http://h/".to_string()),
            ]
        );
    }

    #[test]
    fn scopes_read_as_words() {
        assert_eq!(words(&json!({"s": ["send", "read"]}), "s"), "send, read");
        assert_eq!(words(&json!({"s": []}), "s"), "-");
    }
}
