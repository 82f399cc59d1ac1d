//! `GET /metrics`: Prometheus text exposition with vLLM's metric names and `model_name` label, so
//! dashboards built for vLLM work unchanged; `ember:` extras beside them.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use ember_engine::{Histogram, MetricsSnapshot};

use crate::state::{CacheInfo, SharedState};

pub async fn metrics(State(state): State<SharedState>) -> Response {
    let text = render(
        &state.settings.engine.metrics(),
        state.model_name(),
        &state.settings.cache_info,
        state.in_flight.load(std::sync::atomic::Ordering::Relaxed),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// A label value with Prometheus' escapes.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('"', "\\\"")
}

/// Prometheus floats: integers without a fraction are fine, but +Inf must be spelled so.
fn num(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.is_nan() {
        "NaN".into()
    } else {
        format!("{v}")
    }
}

struct Out {
    text: String,
    labels: String,
}

impl Out {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.header(name, "gauge", help);
        let _ = writeln!(self.text, "{name}{{{}}} {}", self.labels, num(value));
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.header(name, "counter", help);
        let _ = writeln!(self.text, "{name}{{{}}} {value}", self.labels);
    }

    fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.header(name, "histogram", help);
        let mut cumulative = 0u64;
        for (i, bound) in h.bounds.iter().enumerate() {
            cumulative += h.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(
                self.text,
                "{name}_bucket{{{},le=\"{}\"}} {cumulative}",
                self.labels,
                num(*bound)
            );
        }
        let _ = writeln!(
            self.text,
            "{name}_bucket{{{},le=\"+Inf\"}} {}",
            self.labels, h.count
        );
        let _ = writeln!(self.text, "{name}_sum{{{}}} {}", self.labels, num(h.sum));
        let _ = writeln!(self.text, "{name}_count{{{}}} {}", self.labels, h.count);
    }
}

/// The exposition text for one snapshot.
pub fn render(
    m: &MetricsSnapshot,
    model_name: &str,
    cache: &CacheInfo,
    in_flight: usize,
) -> String {
    let mut o = Out {
        text: String::with_capacity(16 * 1024),
        labels: format!("model_name=\"{}\"", esc(model_name)),
    };
    o.gauge(
        "vllm:num_requests_running",
        "Number of requests in model execution batches.",
        m.num_running as f64,
    );
    o.gauge(
        "vllm:num_requests_waiting",
        "Number of requests waiting to be processed.",
        m.num_waiting as f64,
    );
    o.gauge(
        "vllm:kv_cache_usage_perc",
        "KV-cache usage. 1 means 100 percent usage.",
        m.kv_usage,
    );
    o.gauge(
        "vllm:gpu_cache_usage_perc",
        "KV-cache usage. 1 means 100 percent usage (older name of vllm:kv_cache_usage_perc).",
        m.kv_usage,
    );
    o.counter(
        "vllm:prompt_tokens_total",
        "Number of prefill tokens processed.",
        m.prompt_tokens_total,
    );
    o.counter(
        "vllm:generation_tokens_total",
        "Number of generation tokens processed.",
        m.generation_tokens_total,
    );
    o.counter(
        "vllm:num_preemptions_total",
        "Cumulative number of preemptions from the engine.",
        m.num_preemptions_total,
    );
    o.header(
        "vllm:request_success_total",
        "counter",
        "Count of successfully processed requests.",
    );
    // Every reason appears from the start, as in vLLM, so rate() works before the first of each.
    let mut reasons: std::collections::BTreeMap<&str, u64> =
        [("stop", 0), ("length", 0), ("abort", 0)]
            .into_iter()
            .collect();
    for (k, v) in &m.request_success_total {
        reasons.insert(k.as_str(), *v);
    }
    for (reason, v) in reasons {
        let _ = writeln!(
            o.text,
            "vllm:request_success_total{{finished_reason=\"{}\",{}}} {v}",
            esc(reason),
            o.labels
        );
    }
    o.counter(
        "vllm:prefix_cache_queries_total",
        "Prefix cache queries, in terms of number of queried tokens.",
        m.prefix_cache_queries_total,
    );
    o.counter(
        "vllm:prefix_cache_hits_total",
        "Prefix cache hits, in terms of number of cached tokens.",
        m.prefix_cache_hits_total,
    );
    o.histogram(
        "vllm:time_to_first_token_seconds",
        "Histogram of time to first token in seconds.",
        &m.time_to_first_token,
    );
    o.histogram(
        "vllm:time_per_output_token_seconds",
        "Histogram of time per output token in seconds.",
        &m.time_per_output_token,
    );
    o.histogram(
        "vllm:inter_token_latency_seconds",
        "Histogram of inter-token latency in seconds.",
        &m.inter_token_latency,
    );
    o.histogram(
        "vllm:e2e_request_latency_seconds",
        "Histogram of e2e request latency in seconds.",
        &m.e2e_request_latency,
    );
    o.histogram(
        "vllm:request_queue_time_seconds",
        "Histogram of time spent in WAITING phase for request.",
        &m.request_queue_time,
    );
    o.histogram(
        "vllm:request_prompt_tokens",
        "Number of prefill tokens processed.",
        &m.request_prompt_tokens,
    );
    o.histogram(
        "vllm:request_generation_tokens",
        "Number of generation tokens processed.",
        &m.request_generation_tokens,
    );
    o.histogram(
        "vllm:iteration_tokens_total",
        "Histogram of number of tokens per engine_step.",
        &m.iteration_tokens,
    );
    o.header(
        "vllm:cache_config_info",
        "gauge",
        "Information of the LLMEngine CacheConfig.",
    );
    let _ = writeln!(
        o.text,
        "vllm:cache_config_info{{block_size=\"{}\",cache_dtype=\"auto\",enable_prefix_caching=\"{}\",\
         gpu_memory_utilization=\"{}\",kv_cache_memory_bytes=\"{}\",num_cpu_blocks=\"None\",\
         num_gpu_blocks=\"{}\",{}}} 1",
        cache.block_size,
        if cache.enable_prefix_caching { "True" } else { "False" },
        cache.gpu_memory_utilization,
        cache.kv_cache_memory_bytes,
        cache.num_blocks,
        o.labels
    );
    o.gauge(
        "ember:kv_cache_blocks",
        "KV-cache blocks in the pool.",
        m.num_blocks as f64,
    );
    o.gauge(
        "ember:http_requests_in_flight",
        "Completion and chat requests being served (what --concurrency-limit caps).",
        in_flight as f64,
    );
    o.text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist() -> Histogram {
        Histogram {
            bounds: vec![0.1, 1.0],
            counts: vec![1, 2, 3],
            sum: 7.5,
            count: 6,
        }
    }

    #[test]
    fn exposition_is_well_formed() {
        let empty = Histogram {
            bounds: vec![1.0],
            counts: vec![0, 0],
            sum: 0.0,
            count: 0,
        };
        let mut m = MetricsSnapshot {
            num_running: 1,
            num_waiting: 0,
            kv_usage: 0.25,
            num_blocks: 100,
            block_size: 16,
            prompt_tokens_total: 10,
            generation_tokens_total: 20,
            num_preemptions_total: 0,
            request_success_total: Default::default(),
            prefix_cache_queries_total: 0,
            prefix_cache_hits_total: 0,
            time_to_first_token: hist(),
            time_per_output_token: empty.clone(),
            inter_token_latency: empty.clone(),
            e2e_request_latency: empty.clone(),
            request_queue_time: empty.clone(),
            request_prompt_tokens: empty.clone(),
            request_generation_tokens: empty.clone(),
            iteration_tokens: empty,
        };
        m.request_success_total.insert("stop".into(), 4);
        let cache = CacheInfo {
            block_size: 16,
            num_blocks: 100,
            enable_prefix_caching: true,
            gpu_memory_utilization: 0.9,
            kv_cache_memory_bytes: 1 << 20,
        };
        let text = render(&m, "my\"model", &cache, 0);
        assert!(
            text.contains(
                r#"vllm:time_to_first_token_seconds_bucket{model_name="my\"model",le="1"} 3"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"le="+Inf"} 6"#));
        assert!(text.contains(
            r#"vllm:request_success_total{finished_reason="stop",model_name="my\"model"} 4"#
        ));
        assert!(text.contains(r#"finished_reason="abort""#));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok() || value == "+Inf", "{line}");
        }
    }
}
