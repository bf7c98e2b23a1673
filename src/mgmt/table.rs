//! Aligned text tables for `sipedge ctl --format table`.
//!
//! Owns [`render`], which picks a layout from the shape of a JSON result:
//! - an array of objects (dialog lists): one row per object, one column per scalar field of
//!   the first object (nested objects/arrays are shown as compact JSON);
//! - an object of objects (`stats.latency`): one row per key, columns from the inner keys;
//! - an object of scalars (`dlg.stats_active`, `stats.fetch`): `name  value` rows;
//! - an array of scalars (`stats.get_statistics`): one per line;
//! - a scalar: printed as is.
//!
//! ## Invariants
//! - Output always ends with a newline; numbers are right-aligned, text left-aligned.

use serde_json::Value;

/// Render a JSON result as text.
pub fn render(v: &Value) -> String {
    match v {
        Value::Array(items) if items.iter().all(Value::is_object) && !items.is_empty() => {
            let cols: Vec<String> = items
                .first()
                .and_then(Value::as_object)
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default();
            let rows = items
                .iter()
                .map(|it| cols.iter().map(|c| cell(it.get(c))).collect())
                .collect();
            grid(&cols, rows)
        }
        Value::Array(items) => {
            let mut s: String = items.iter().map(|i| cell(Some(i)) + "\n").collect();
            if s.is_empty() {
                s.push_str("(empty)\n");
            }
            s
        }
        Value::Object(m) if !m.is_empty() && m.values().all(Value::is_object) => {
            let mut cols = vec!["name".to_owned()];
            if let Some(Value::Object(first)) = m.values().next() {
                cols.extend(first.keys().cloned());
            }
            let rows = m
                .iter()
                .map(|(k, inner)| {
                    let mut r = vec![k.clone()];
                    r.extend(cols.iter().skip(1).map(|c| cell(inner.get(c))));
                    r
                })
                .collect();
            grid(&cols, rows)
        }
        Value::Object(m) => {
            let cols = vec!["name".to_owned(), "value".to_owned()];
            let rows = m
                .iter()
                .map(|(k, v)| vec![k.clone(), cell(Some(v))])
                .collect();
            grid(&cols, rows)
        }
        other => cell(Some(other)) + "\n",
    }
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn is_numeric(s: &str) -> bool {
    !s.is_empty() && s.parse::<f64>().is_ok()
}

fn grid(cols: &[String], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = cols.iter().map(|c| c.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String], align_numbers: bool| {
        let mut parts = Vec::with_capacity(cells.len());
        for (c, w) in cells.iter().zip(widths.iter()) {
            if align_numbers && is_numeric(c) {
                parts.push(format!("{c:>w$}"));
            } else {
                parts.push(format!("{c:<w$}"));
            }
        }
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(&mut out, cols, false);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(&mut out, &rule, false);
    for r in &rows {
        line(&mut out, r, true);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn latency_object_becomes_percentile_table() {
        let v = json!({"packet_processing": {"p50": 12, "p99": 1500, "count": 3}});
        let s = render(&v);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("name"));
        assert!(lines[0].contains("p50") && lines[0].contains("p99"));
        assert!(lines[2].starts_with("packet_processing"));
        assert!(lines[2].contains("1500"));
    }

    #[test]
    fn list_of_objects_has_columns_and_aligned_rows() {
        let v = json!([{"h_entry": 1, "call-id": "a"}, {"h_entry": 100, "call-id": "bbb"}]);
        let s = render(&v);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 4);
        // Numbers right-aligned to the widest value.
        assert!(lines[2].contains("      1") || lines[2].starts_with("      1"));
        assert_eq!(lines[2].len(), lines[3].len());
    }

    #[test]
    fn scalars_and_empty_lists() {
        assert_eq!(render(&json!("Alive")), "Alive\n");
        assert_eq!(render(&json!([])), "(empty)\n");
        assert_eq!(render(&json!(["a = 1", "b = 2"])), "a = 1\nb = 2\n");
    }
}
