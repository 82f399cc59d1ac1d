//! Results in lm-eval's JSON layout (plus an `ember` section), per-task sample files, and the terminal
//! table.

use std::path::{Path, PathBuf};

use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
use serde_json::{json, Map, Value};

use crate::error::IoContext;
use crate::evaluate::{EvalOutput, GroupResult, TaskResult};
use crate::tasks::Aggregate;
use crate::Result;

/// Run-level facts for the results' `config` and `ember` sections.
#[derive(Debug, Clone, Default)]
pub struct RunInfo {
    pub model: String,
    pub model_args: String,
    pub batch_size: usize,
    pub limit: Option<usize>,
    pub seed: u64,
    pub gen_kwargs: String,
    pub apply_chat_template: bool,
    pub engine_config: Value,
}

fn put_aggregates(obj: &mut Map<String, Value>, aggs: &[Aggregate]) {
    for a in aggs {
        obj.insert(a.key.clone(), json!(a.value));
        obj.insert(crate::tasks::stderr_key(&a.key), json!(a.stderr));
    }
}

fn group_json(g: &GroupResult) -> Value {
    let mut o = Map::new();
    o.insert("alias".into(), json!(g.name));
    put_aggregates(&mut o, &g.aggregates);
    Value::Object(o)
}

/// The results document.
pub fn results_json(out: &EvalOutput, info: &RunInfo) -> Value {
    let mut results = Map::new();
    let mut configs = Map::new();
    let mut versions = Map::new();
    let mut n_shot = Map::new();
    let mut hib = Map::new();
    let mut n_samples = Map::new();
    for g in &out.groups {
        results.insert(g.name.clone(), group_json(g));
    }
    for t in &out.tasks {
        let mut o = Map::new();
        o.insert("alias".into(), json!(t.name));
        put_aggregates(&mut o, &t.aggregates);
        results.insert(t.name.clone(), Value::Object(o));
        configs.insert(t.name.clone(), t.config.clone());
        versions.insert(t.name.clone(), json!(t.version));
        n_shot.insert(t.name.clone(), json!(t.num_fewshot));
        hib.insert(
            t.name.clone(),
            Value::Object(
                t.metrics
                    .iter()
                    .map(|m| (m.name().to_string(), json!(m.higher_is_better)))
                    .collect(),
            ),
        );
        n_samples.insert(
            t.name.clone(),
            json!({"original": t.n_original, "effective": t.n_effective}),
        );
    }
    let secs = out.duration.as_secs_f64();
    let st = out.backend_stats;
    let per_min = if secs > 0.0 {
        out.model_calls as f64 * 60.0 / secs
    } else {
        0.0
    };
    let tok_s = if secs > 0.0 {
        (st.prompt_tokens + st.generated_tokens) as f64 / secs
    } else {
        0.0
    };
    let gen_tok_s = if secs > 0.0 {
        st.generated_tokens as f64 / secs
    } else {
        0.0
    };
    json!({
        "results": results,
        "groups": Value::Object(out.groups.iter().map(|g| (g.name.clone(), group_json(g))).collect()),
        "group_subtasks": Value::Object(out.groups.iter().map(|g| (g.name.clone(), json!(g.members))).collect()),
        "configs": configs,
        "versions": versions,
        "n-shot": n_shot,
        "higher_is_better": hib,
        "n-samples": n_samples,
        "config": {
            "model": info.model,
            "model_args": info.model_args,
            "batch_size": info.batch_size,
            "limit": info.limit,
            "random_seed": info.seed,
            "gen_kwargs": info.gen_kwargs,
            "apply_chat_template": info.apply_chat_template,
        },
        "date": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
        "ember": {
            "version": env!("CARGO_PKG_VERSION"),
            "model": info.model,
            "backend": out.backend,
            "engine_config": info.engine_config,
            "duration_s": secs,
            "requests": out.total_requests,
            "model_calls": out.model_calls,
            "cache_hits": out.cache_hits,
            "requests_per_min": per_min,
            "prompt_tokens": st.prompt_tokens,
            "generated_tokens": st.generated_tokens,
            "tokens_per_s": tok_s,
            "generated_tokens_per_s": gen_tok_s,
            "retries": st.retries,
        },
    })
}

/// lm-eval's layout: `--output-path` ending in `.json` is the results file; otherwise a directory that
/// receives `results_<date>.json` (and the sample files).
pub fn results_path(output: &Path, stamp: &str) -> (PathBuf, PathBuf) {
    if output.extension().is_some_and(|e| e == "json") {
        let dir = output.parent().map(Path::to_path_buf).unwrap_or_default();
        (output.to_path_buf(), dir)
    } else {
        (
            output.join(format!("results_{stamp}.json")),
            output.to_path_buf(),
        )
    }
}

/// A timestamp usable in file names (UTC, seconds).
pub fn stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}-{:02}-{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + (m <= 2) as i64, m, d)
}

pub fn write_json(path: &Path, value: &Value) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).io_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text).io_context(|| format!("writing {}", path.display()))
}

/// `samples_<task>_<stamp>.jsonl` for every task with logged samples; returns the paths written.
pub fn write_samples(dir: &Path, tasks: &[TaskResult], stamp: &str) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for t in tasks.iter().filter(|t| !t.samples.is_empty()) {
        let path = dir.join(format!("samples_{}_{stamp}.jsonl", t.name));
        let rows: Vec<Value> = t.samples.iter().map(|s| s.to_json()).collect();
        crate::data::write_jsonl_file(&path, &rows)?;
        paths.push(path);
    }
    Ok(paths)
}

/// The terminal table: one row per metric of every group and task, then the run's throughput.
pub fn table(out: &EvalOutput) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "Task",
        "n-shot",
        "n",
        "Metric",
        "Filter",
        "Value",
        "± Stderr",
    ]);
    let mut row = |name: &str, shot: String, n: usize, a: &Aggregate| {
        let (metric, filter) = a.key.split_once(',').unwrap_or((&a.key, "none"));
        t.add_row(vec![
            Cell::new(name),
            Cell::new(shot).set_alignment(CellAlignment::Right),
            Cell::new(n).set_alignment(CellAlignment::Right),
            Cell::new(metric),
            Cell::new(filter),
            Cell::new(format!("{:.4}", a.value)).set_alignment(CellAlignment::Right),
            Cell::new(format!("{:.4}", a.stderr)).set_alignment(CellAlignment::Right),
        ]);
    };
    let in_group = |name: &str| {
        out.groups
            .iter()
            .any(|g| g.members.iter().any(|m| m == name))
    };
    for g in &out.groups {
        for a in &g.aggregates {
            row(&g.name, String::new(), g.n, a);
        }
    }
    // Group members are summarised by their groups; list them only when there are few.
    let show_members = out.tasks.len() <= 8;
    let mut firsts = Vec::new();
    for task in &out.tasks {
        if in_group(&task.name) && !show_members {
            continue;
        }
        for a in &task.aggregates {
            row(
                &task.name,
                task.num_fewshot.to_string(),
                task.n_effective,
                a,
            );
        }
        if let Some(a) = task.aggregates.first() {
            firsts.push(a.value);
        }
    }
    let secs = out.duration.as_secs_f64().max(1e-9);
    let st = out.backend_stats;
    let mut s = t.to_string();
    if firsts.len() > 1 {
        s.push_str(&format!(
            "\naverage of the first metric over {} tasks: {:.4}",
            firsts.len(),
            crate::metrics::mean(&firsts)
        ));
    }
    s.push_str(&format!(
        "\n{} requests ({} model calls, {} from cache) in {:.1} s: {:.1} requests/min, {:.1} tokens/s ({:.1} generated tokens/s)\n",
        out.total_requests,
        out.model_calls,
        out.cache_hits,
        secs,
        out.model_calls as f64 * 60.0 / secs,
        (st.prompt_tokens + st.generated_tokens) as f64 / secs,
        st.generated_tokens as f64 / secs,
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_415), (2025, 11, 23));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
