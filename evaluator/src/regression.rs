//! `--baseline OLD.json --max-drop D` and `ember eval compare A B`: per-metric deltas between two
//! results files; a drop larger than D (absolute) fails the gate.

use serde_json::Value;

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    pub task: String,
    pub metric: String,
    pub old: f64,
    pub new: f64,
    pub stderr: Option<f64>,
}

impl Delta {
    pub fn change(&self) -> f64 {
        self.new - self.old
    }
}

fn is_metric(key: &str) -> bool {
    key != "alias" && !key.contains("_stderr")
}

/// Deltas of every metric present in both results documents (by task and metric key).
pub fn compare(old: &Value, new: &Value) -> Result<Vec<Delta>> {
    let get = |v: &Value, which: &str| {
        v.get("results")
            .and_then(Value::as_object)
            .cloned()
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "the {which} file has no `results` object (not an lm-eval results file?)"
                ))
            })
    };
    let (o, n) = (get(old, "baseline")?, get(new, "new")?);
    let mut out = Vec::new();
    for (task, nm) in &n {
        let (Some(om), Some(nm)) = (o.get(task).and_then(Value::as_object), nm.as_object()) else {
            continue;
        };
        for (key, nv) in nm {
            if !is_metric(key) {
                continue;
            }
            let (Some(nv), Some(ov)) = (nv.as_f64(), om.get(key).and_then(Value::as_f64)) else {
                continue;
            };
            let se_key = crate::tasks::stderr_key(key);
            let stderr = nm.get(&se_key).and_then(Value::as_f64);
            out.push(Delta {
                task: task.clone(),
                metric: key.clone(),
                old: ov,
                new: nv,
                stderr,
            });
        }
    }
    Ok(out)
}

/// Deltas that drop more than `max_drop`.
pub fn failures(deltas: &[Delta], max_drop: f64) -> Vec<&Delta> {
    deltas.iter().filter(|d| d.change() < -max_drop).collect()
}

pub fn render(deltas: &[Delta], max_drop: Option<f64>) -> String {
    use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "Task",
        "Metric",
        "Baseline",
        "New",
        "Delta",
        "± Stderr",
        "Status",
    ]);
    for d in deltas {
        let status = match max_drop {
            Some(m) if d.change() < -m => "REGRESSION",
            _ => "ok",
        };
        t.add_row(vec![
            d.task.clone(),
            d.metric.clone(),
            format!("{:.4}", d.old),
            format!("{:.4}", d.new),
            format!("{:+.4}", d.change()),
            d.stderr.map(|s| format!("{s:.4}")).unwrap_or_default(),
            status.to_string(),
        ]);
    }
    t.to_string()
}

pub fn read_results(path: &std::path::Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        context: format!("reading {}", path.display()),
        source,
    })?;
    serde_json::from_str(&text)
        .map_err(|e| Error::InvalidArgument(format!("{} is not JSON: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_planted_drop_fails_and_no_drop_passes() {
        let old = json!({"results": {"arc_easy": {"alias": "arc_easy", "acc,none": 0.60, "acc_stderr,none": 0.02}}});
        let same = compare(&old, &old).unwrap();
        assert_eq!(same.len(), 1);
        assert!(failures(&same, 0.02).is_empty());
        let new = json!({"results": {"arc_easy": {"acc,none": 0.55, "acc_stderr,none": 0.02}}});
        let d = compare(&old, &new).unwrap();
        assert_eq!(failures(&d, 0.02).len(), 1);
        assert!(failures(&d, 0.06).is_empty());
        assert!(compare(&json!({}), &new).is_err());
    }
}
