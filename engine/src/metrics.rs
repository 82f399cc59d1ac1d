//! The engine's counters and histograms, with vLLM's meanings, for the server's `/metrics` and for benchmarks.
//! The engine loop updates them; readers take a [`MetricsSnapshot`] (plain data, cheap to clone).

use std::collections::BTreeMap;

/// A Prometheus-style histogram: per-bucket (non-cumulative) counts, the last bucket being `+Inf`.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Upper bounds of the finite buckets, ascending.
    pub bounds: Vec<f64>,
    /// `bounds.len() + 1` counts; `counts[i]` is the number of observations in `(bounds[i-1], bounds[i]]`.
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: &[f64]) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds must ascend");
        Self {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, value: f64) {
        let bucket = self.bounds.partition_point(|&b| b < value);
        self.counts[bucket] += 1;
        self.sum += value;
        self.count += 1;
    }

    /// Cumulative counts per bound, then `+Inf` (Prometheus' `_bucket{le=…}` series).
    pub fn cumulative(&self) -> Vec<u64> {
        self.counts
            .iter()
            .scan(0u64, |acc, &c| {
                *acc += c;
                Some(*acc)
            })
            .collect()
    }
}

// vLLM's bucket boundaries, so dashboards built on its histograms read ours the same way.
const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
const TOKEN_LATENCY_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
const REQUEST_LATENCY_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];

/// 1, 2, 5, 10, 20, 50, … up to `max` (vLLM's token-count buckets).
fn one_two_five(max: usize) -> Vec<f64> {
    let mut out = Vec::new();
    let mut scale = 1usize;
    loop {
        for m in [1, 2, 5] {
            let v = m * scale;
            if v > max {
                return out;
            }
            out.push(v as f64);
        }
        scale *= 10;
    }
}

/// Counters and histograms the engine loop updates.
#[derive(Debug, Clone)]
pub struct EngineMetrics {
    pub prompt_tokens_total: u64,
    pub generation_tokens_total: u64,
    pub request_success_total: BTreeMap<String, u64>,
    pub time_to_first_token: Histogram,
    pub time_per_output_token: Histogram,
    pub inter_token_latency: Histogram,
    pub e2e_request_latency: Histogram,
    pub request_queue_time: Histogram,
    pub request_prompt_tokens: Histogram,
    pub request_generation_tokens: Histogram,
    pub iteration_tokens: Histogram,
}

impl EngineMetrics {
    pub fn new(max_model_len: usize, max_num_batched_tokens: usize) -> Self {
        let len_buckets = one_two_five(max_model_len.max(1));
        Self {
            prompt_tokens_total: 0,
            generation_tokens_total: 0,
            request_success_total: BTreeMap::new(),
            time_to_first_token: Histogram::new(TTFT_BUCKETS),
            time_per_output_token: Histogram::new(TOKEN_LATENCY_BUCKETS),
            inter_token_latency: Histogram::new(TOKEN_LATENCY_BUCKETS),
            e2e_request_latency: Histogram::new(REQUEST_LATENCY_BUCKETS),
            request_queue_time: Histogram::new(REQUEST_LATENCY_BUCKETS),
            request_prompt_tokens: Histogram::new(&len_buckets),
            request_generation_tokens: Histogram::new(&len_buckets),
            iteration_tokens: Histogram::new(&one_two_five(max_num_batched_tokens.max(1))),
        }
    }
}

/// Everything `/metrics` exports, at one instant.
#[derive(Debug, Clone)]
pub struct MetricsSnapshot {
    pub num_running: usize,
    pub num_waiting: usize,
    /// Fraction of KV blocks in use, 0..=1.
    pub kv_usage: f64,
    pub num_blocks: usize,
    pub block_size: usize,
    pub prompt_tokens_total: u64,
    pub generation_tokens_total: u64,
    pub num_preemptions_total: u64,
    /// Finished requests by finish reason (`stop`, `length`, `abort`).
    pub request_success_total: BTreeMap<String, u64>,
    /// Prompt tokens looked up in the prefix cache, and those found (in tokens, as vLLM counts them).
    pub prefix_cache_queries_total: u64,
    pub prefix_cache_hits_total: u64,
    pub time_to_first_token: Histogram,
    pub time_per_output_token: Histogram,
    pub inter_token_latency: Histogram,
    pub e2e_request_latency: Histogram,
    pub request_queue_time: Histogram,
    pub request_prompt_tokens: Histogram,
    pub request_generation_tokens: Histogram,
    pub iteration_tokens: Histogram,
}
