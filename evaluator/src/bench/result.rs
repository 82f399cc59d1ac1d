//! The result JSON, with benchmark_serving's keys (`--save-result`), so that existing tooling reads it.

use serde_json::{json, Map, Value};

use super::metrics::percentile_word;
use super::RunResult;

/// Who ran what, for the JSON's header fields.
#[derive(Debug, Clone, PartialEq)]
pub struct RunMeta {
    pub date: String,
    pub backend: String,
    pub model_id: String,
    pub tokenizer_id: String,
}

/// benchmark_serving's result dict: run settings, totals, throughputs, per-request lists, and
/// `mean_/median_/std_/pNN_<metric>_ms` for each of `percentile_metrics`. ember adds `scenario`,
/// `errors_by_kind` and `server` (server-side figures) alongside.
pub fn to_json(run: &RunResult, meta: &RunMeta, percentile_metrics: &[String]) -> Value {
    let m = &run.metrics;
    let load = &run.options.load;
    let mut out = Map::new();
    let mut put = |k: &str, v: Value| {
        out.insert(k.to_string(), v);
    };
    put("date", json!(meta.date));
    put("backend", json!(meta.backend));
    put("model_id", json!(meta.model_id));
    put("tokenizer_id", json!(meta.tokenizer_id));
    put("num_prompts", json!(run.num_prompts));
    put(
        "request_rate",
        if load.request_rate.is_finite() {
            json!(load.request_rate)
        } else {
            json!("inf")
        },
    );
    put("burstiness", json!(load.burstiness));
    put("max_concurrency", json!(load.max_concurrency));
    put("scenario", json!(run.options.label));
    put("duration", json!(m.duration));
    put("completed", json!(m.completed));
    put("failed", json!(m.failed));
    put("total_input_tokens", json!(m.total_input));
    put("total_output_tokens", json!(m.total_output));
    put("request_throughput", json!(m.request_throughput));
    put("request_goodput", json!(m.request_goodput));
    put("output_throughput", json!(m.output_throughput));
    put("total_token_throughput", json!(m.total_token_throughput));
    put("max_output_tokens_per_s", json!(m.max_output_tokens_per_s));
    put("max_concurrent_requests", json!(m.max_concurrent_requests));
    let outcomes = &run.outcomes;
    put(
        "input_lens",
        json!(outcomes.iter().map(|o| o.prompt_len).collect::<Vec<_>>()),
    );
    put("output_lens", json!(m.output_lens));
    put(
        "ttfts",
        json!(outcomes.iter().map(|o| o.ttft).collect::<Vec<_>>()),
    );
    put(
        "itls",
        json!(outcomes.iter().map(|o| o.itl.clone()).collect::<Vec<_>>()),
    );
    put(
        "generated_texts",
        json!(outcomes
            .iter()
            .map(|o| o.generated_text.clone())
            .collect::<Vec<_>>()),
    );
    put(
        "errors",
        json!(outcomes
            .iter()
            .map(|o| o
                .error
                .as_ref()
                .map_or(String::new(), |e| e.message.clone()))
            .collect::<Vec<_>>()),
    );
    put("errors_by_kind", json!(m.errors_by_kind));
    put("server", json!(run.server));
    for name in percentile_metrics {
        let Some(s) = m.summary(name) else { continue };
        put(&format!("mean_{name}_ms"), json!(s.mean_ms));
        put(&format!("median_{name}_ms"), json!(s.median_ms));
        put(&format!("std_{name}_ms"), json!(s.std_ms));
        for (p, v) in &s.percentiles_ms {
            if !run.options.percentiles.contains(p) {
                continue;
            }
            put(&format!("p{}_{name}_ms", percentile_word(*p)), json!(v));
        }
    }
    put("percentiles", json!(run.options.percentiles));
    Value::Object(out)
}
