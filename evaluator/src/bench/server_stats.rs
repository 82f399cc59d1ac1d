//! Server-side figures of a run when the target is ember (or vLLM): queue time, preemptions,
//! prefix-cache hit rate and peak KV-cache usage. Counters are read before and after the run (the
//! difference is the run's); gauges are sampled while it runs (the peak is kept).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One reading of the server's counters and gauges.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerSample {
    pub preemptions: f64,
    pub prefix_cache_queries: f64,
    pub prefix_cache_hits: f64,
    pub queue_time_sum_s: f64,
    pub queue_time_count: f64,
    pub kv_usage: f64,
    pub running: f64,
    pub waiting: f64,
}

impl ServerSample {
    /// From parsed Prometheus metrics (vLLM's names; `None` when none of them is there).
    pub fn from_prometheus(m: &BTreeMap<String, f64>) -> Option<ServerSample> {
        let get = |k: &str| m.get(k).copied();
        let kv = get("vllm:kv_cache_usage_perc").or_else(|| get("vllm:gpu_cache_usage_perc"));
        let any = kv.is_some() || get("vllm:num_requests_running").is_some();
        any.then(|| ServerSample {
            preemptions: get("vllm:num_preemptions_total").unwrap_or(0.0),
            prefix_cache_queries: get("vllm:prefix_cache_queries_total").unwrap_or(0.0),
            prefix_cache_hits: get("vllm:prefix_cache_hits_total").unwrap_or(0.0),
            queue_time_sum_s: get("vllm:request_queue_time_seconds_sum").unwrap_or(0.0),
            queue_time_count: get("vllm:request_queue_time_seconds_count").unwrap_or(0.0),
            kv_usage: kv.unwrap_or(0.0),
            running: get("vllm:num_requests_running").unwrap_or(0.0),
            waiting: get("vllm:num_requests_waiting").unwrap_or(0.0),
        })
    }
}

/// The run's server-side figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerStats {
    /// Mean time requests waited in the engine's queue before first being scheduled.
    pub mean_queue_time_ms: Option<f64>,
    pub preemptions: u64,
    /// Prefix-cache hits over queries, in tokens; `None` when nothing was queried.
    pub prefix_cache_hit_rate: Option<f64>,
    /// Peak KV-cache usage (0..1) seen while sampling.
    pub peak_kv_usage: f64,
    pub peak_running: u64,
    pub peak_waiting: u64,
    /// How many times the gauges were sampled.
    pub samples: usize,
}

/// Folds the readings of one run: `before` and `after` for counters, `during` for peaks.
pub fn summarize(
    before: &ServerSample,
    after: &ServerSample,
    during: &[ServerSample],
) -> ServerStats {
    let queued = after.queue_time_count - before.queue_time_count;
    let queries = after.prefix_cache_queries - before.prefix_cache_queries;
    let all = during.iter().chain([before, after]);
    let peak = |f: fn(&ServerSample) -> f64| all.clone().map(f).fold(0.0, f64::max);
    ServerStats {
        mean_queue_time_ms: (queued > 0.0)
            .then(|| (after.queue_time_sum_s - before.queue_time_sum_s) / queued * 1000.0),
        preemptions: (after.preemptions - before.preemptions).max(0.0) as u64,
        prefix_cache_hit_rate: (queries > 0.0)
            .then(|| (after.prefix_cache_hits - before.prefix_cache_hits) / queries),
        peak_kv_usage: peak(|s| s.kv_usage),
        peak_running: peak(|s| s.running) as u64,
        peak_waiting: peak(|s| s.waiting) as u64,
        samples: during.len(),
    }
}
