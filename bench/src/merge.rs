//! Several rounds of one scenario into one result: the median of each figure, with the
//! lowest and highest kept beside it, so that one slow or fast moment of a shared machine
//! neither makes nor breaks a figure.

use serde_json::{Map, Value, json};

/// Figures that add up over rounds instead (an error in any round must show).
const SUMMED: &[&str] = &["errors_total"];

pub fn merge(runs: &[Value]) -> Result<Value, String> {
    let first = runs.first().and_then(Value::as_object).ok_or("no rounds to merge")?;
    let mut out = first.clone();
    let mut spread = Map::new();
    for (key, value) in first {
        if !value.is_number() {
            continue;
        }
        let mut values: Vec<f64> = runs.iter().filter_map(|r| r.get(key)).filter_map(Value::as_f64).collect();
        values.sort_by(f64::total_cmp);
        let (Some(&low), Some(&high)) = (values.first(), values.last()) else { continue };
        let merged = if SUMMED.contains(&key.as_str()) {
            values.iter().sum()
        } else {
            let mid = values.len() / 2;
            if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 }
        };
        out.insert(key.clone(), json!(merged));
        spread.insert(key.clone(), json!([low, high]));
    }
    // The error details of the round with the most errors.
    if let Some(worst) =
        runs.iter().max_by_key(|r| r.get("errors_total").and_then(Value::as_u64).unwrap_or(0))
        && let Some(errors) = worst.get("errors")
    {
        out.insert("errors".into(), errors.clone());
    }
    out.insert("rounds".into(), json!(runs.len()));
    out.insert("spread".into(), Value::Object(spread));
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_spread_and_summed_errors() {
        let runs = [
            json!({"label": "x", "msgs_per_s": 10.0, "errors_total": 0, "errors": {"eof": 0}}),
            json!({"label": "x", "msgs_per_s": 30.0, "errors_total": 2, "errors": {"eof": 2}}),
            json!({"label": "x", "msgs_per_s": 20.0, "errors_total": 1, "errors": {"eof": 1}}),
        ];
        let m = merge(&runs).expect("merged");
        assert_eq!(m["msgs_per_s"], json!(20.0));
        assert_eq!(m["spread"]["msgs_per_s"], json!([10.0, 30.0]));
        assert_eq!(m["errors_total"], json!(3.0));
        assert_eq!(m["errors"], json!({"eof": 2}));
        assert_eq!(m["rounds"], json!(3));
        assert_eq!(m["label"], json!("x"));
        let even = merge(&runs[..2]).expect("merged");
        assert_eq!(even["msgs_per_s"], json!(20.0));
    }
}
