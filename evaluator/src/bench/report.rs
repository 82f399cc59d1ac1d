//! The terminal report: benchmark_serving's figures per run, then one summary line per run (success
//! rate, req/s, tok/s, TTFT/TPOT mean and P95) with a letter grade against configurable thresholds.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, Table};
use serde::{Deserialize, Serialize};

use super::metrics::percentile_word;
use super::RunResult;

/// What a run must meet for an A (`--grade-*` flags, or per scenario in a scenarios file).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Thresholds {
    pub min_success_rate: f64,
    pub ttft_p95_ms: f64,
    pub tpot_p95_ms: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            min_success_rate: 0.99,
            ttft_p95_ms: 1000.0,
            tpot_p95_ms: 100.0,
        }
    }
}

/// A: every threshold met; B / C: P95 latencies within 2x / 4x of theirs; D: worse;
/// F: too many failures (or nothing completed).
pub fn grade(run: &RunResult, t: &Thresholds) -> char {
    let m = &run.metrics;
    if m.completed == 0 || m.success_rate() < t.min_success_rate {
        return 'F';
    }
    let ttft = m.ttft.at(95.0).unwrap_or(m.ttft.mean_ms) / t.ttft_p95_ms;
    let tpot = m.tpot.at(95.0).unwrap_or(m.tpot.mean_ms) / t.tpot_p95_ms;
    let worst = ttft.max(tpot);
    if worst <= 1.0 {
        'A'
    } else if worst <= 2.0 {
        'B'
    } else if worst <= 4.0 {
        'C'
    } else {
        'D'
    }
}

fn f(x: f64) -> String {
    format!("{x:.2}")
}

/// benchmark_serving's block of figures for one run, as a table.
pub fn run_table(run: &RunResult, percentile_metrics: &[String]) -> Table {
    let m = &run.metrics;
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec![
        Cell::new(format!("Serving benchmark: {}", run.options.label)),
        Cell::new(""),
    ]);
    let mut row = |k: &str, v: String| {
        t.add_row(vec![Cell::new(k), Cell::new(v)]);
    };
    row("Successful requests", m.completed.to_string());
    row("Failed requests", m.failed.to_string());
    for (kind, n) in &m.errors_by_kind {
        row(&format!("  failed: {kind}"), n.to_string());
    }
    let load = &run.options.load;
    row(
        "Maximum request concurrency",
        load.max_concurrency
            .map_or("unlimited".into(), |c| c.to_string()),
    );
    row(
        "Request rate (req/s)",
        if load.request_rate.is_finite() {
            f(load.request_rate)
        } else {
            "inf".into()
        },
    );
    row("Benchmark duration (s)", f(m.duration));
    row("Total input tokens", m.total_input.to_string());
    row("Total generated tokens", m.total_output.to_string());
    row("Request throughput (req/s)", f(m.request_throughput));
    if let Some(g) = m.request_goodput {
        row("Request goodput (req/s)", f(g));
    }
    row("Output token throughput (tok/s)", f(m.output_throughput));
    row(
        "Peak output token throughput (tok/s)",
        f(m.max_output_tokens_per_s),
    );
    row(
        "Total token throughput (tok/s)",
        f(m.total_token_throughput),
    );
    for name in percentile_metrics {
        let Some(s) = m.summary(name) else { continue };
        let up = name.to_uppercase();
        row(&format!("Mean {up} (ms)"), f(s.mean_ms));
        row(&format!("Median {up} (ms)"), f(s.median_ms));
        row(&format!("Std {up} (ms)"), f(s.std_ms));
        for (p, v) in &s.percentiles_ms {
            if run.options.percentiles.contains(p) {
                row(&format!("P{} {up} (ms)", percentile_word(*p)), f(*v));
            }
        }
    }
    if let Some(s) = &run.server {
        row(
            "Server: mean queue time (ms)",
            s.mean_queue_time_ms.map_or("-".into(), f),
        );
        row("Server: preemptions", s.preemptions.to_string());
        row(
            "Server: prefix-cache hit rate",
            s.prefix_cache_hit_rate
                .map_or("-".into(), |r| format!("{:.1}%", r * 100.0)),
        );
        row(
            "Server: peak KV-cache usage",
            format!("{:.1}%", s.peak_kv_usage * 100.0),
        );
        row(
            "Server: peak running / waiting",
            format!("{} / {}", s.peak_running, s.peak_waiting),
        );
    }
    t
}

/// One line per run with its grade.
pub fn summary_table(runs: &[(RunResult, Thresholds)]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "run",
        "concurrency",
        "success",
        "req/s",
        "out tok/s",
        "TTFT mean",
        "TTFT P95",
        "TPOT mean",
        "TPOT P95",
        "grade",
    ]);
    for (run, th) in runs {
        let m = &run.metrics;
        t.add_row(vec![
            run.options.label.clone(),
            run.options
                .load
                .max_concurrency
                .map_or("inf".into(), |c| c.to_string()),
            format!("{:.1}%", m.success_rate() * 100.0),
            f(m.request_throughput),
            f(m.output_throughput),
            format!("{} ms", f(m.ttft.mean_ms)),
            format!("{} ms", f(m.ttft.at(95.0).unwrap_or(0.0))),
            format!("{} ms", f(m.tpot.mean_ms)),
            format!("{} ms", f(m.tpot.at(95.0).unwrap_or(0.0))),
            grade(run, th).to_string(),
        ]);
    }
    t
}
