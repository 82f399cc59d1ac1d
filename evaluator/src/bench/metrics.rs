//! The figures of a benchmark run, defined exactly as vLLM's benchmark_serving defines them, so that
//! numbers compare one to one:
//! - TTFT: request sent → first streamed chunk that carries tokens (choices);
//! - ITL: the gaps between consecutive such chunks (every gap of every request, pooled);
//! - TPOT: per request, (latency − TTFT) / (output tokens − 1), only for requests with > 1 output token;
//! - E2EL: request sent → last such chunk;
//! - percentiles use numpy's default linear interpolation; std is the population std (numpy's `ddof=0`);
//!   an empty sample reports 0 for every statistic (numpy over `[0]`).
//! - goodput counts completed requests that meet every given SLO (TPOT counts as 0 for one-token outputs).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What happened to one request, as the client saw it. Times in seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestOutcome {
    pub success: bool,
    /// Prompt tokens as the dataset counted them.
    pub prompt_len: usize,
    /// Output tokens as the server/engine reported them (`usage.completion_tokens`); `None` when it did
    /// not say (then the generated text is re-tokenized, as benchmark_serving does).
    pub output_tokens: Option<usize>,
    pub generated_text: String,
    pub ttft: f64,
    pub itl: Vec<f64>,
    pub latency: f64,
    /// When the request was sent, relative to the start of the run.
    pub start_time: f64,
    pub error: Option<RequestError>,
}

/// Why a request failed: a short kind for counting and the full message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestError {
    pub kind: String,
    pub message: String,
}

impl RequestOutcome {
    pub fn failed(
        prompt_len: usize,
        start_time: f64,
        kind: &str,
        message: impl Into<String>,
    ) -> Self {
        RequestOutcome {
            success: false,
            prompt_len,
            start_time,
            error: Some(RequestError {
                kind: kind.to_string(),
                message: message.into(),
            }),
            ..Default::default()
        }
    }
}

/// SLOs for goodput, in milliseconds (`--goodput ttft:MS tpot:MS e2el:MS`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Goodput {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2el_ms: Option<f64>,
}

impl Goodput {
    /// Parses `["ttft:500", "tpot:50"]`.
    pub fn parse(items: &[String]) -> Result<Option<Goodput>, String> {
        if items.is_empty() {
            return Ok(None);
        }
        let mut g = Goodput::default();
        for item in items {
            let (name, value) = item.split_once(':').ok_or_else(|| {
                format!("--goodput takes NAME:MILLISECONDS pairs (ttft, tpot, e2el), got `{item}`")
            })?;
            let ms: f64 = value
                .trim()
                .parse()
                .map_err(|_| format!("--goodput {name}: `{value}` is not a number"))?;
            if !(ms.is_finite() && ms >= 0.0) {
                return Err(format!("--goodput {name}: SLO must be >= 0 ms, got {ms}"));
            }
            match name.trim() {
                "ttft" => g.ttft_ms = Some(ms),
                "tpot" => g.tpot_ms = Some(ms),
                "e2el" => g.e2el_ms = Some(ms),
                other => {
                    return Err(format!(
                        "--goodput: unknown metric `{other}` (valid: ttft, tpot, e2el)"
                    ))
                }
            }
        }
        Ok(Some(g))
    }
}

/// The latency metrics one can ask percentiles of (`--percentile-metrics`).
pub const METRIC_NAMES: [&str; 4] = ["ttft", "tpot", "itl", "e2el"];

/// mean / median / std / percentiles of one metric, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub mean_ms: f64,
    pub median_ms: f64,
    pub std_ms: f64,
    /// (percentile, value) in the order asked.
    pub percentiles_ms: Vec<(f64, f64)>,
}

impl Summary {
    pub fn of(values_s: &[f64], percentiles: &[f64]) -> Summary {
        Summary {
            mean_ms: mean(values_s) * 1000.0,
            median_ms: percentile(values_s, 50.0) * 1000.0,
            std_ms: std_dev(values_s) * 1000.0,
            percentiles_ms: percentiles
                .iter()
                .map(|&p| (p, percentile(values_s, p) * 1000.0))
                .collect(),
        }
    }

    /// The value at percentile `p` if it was asked for.
    pub fn at(&self, p: f64) -> Option<f64> {
        self.percentiles_ms
            .iter()
            .find(|(q, _)| (*q - p).abs() < 1e-9)
            .map(|(_, v)| *v)
    }
}

/// Everything benchmark_serving's `calculate_metrics` reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BenchmarkMetrics {
    pub completed: usize,
    pub failed: usize,
    pub total_input: usize,
    pub total_output: usize,
    pub duration: f64,
    pub request_throughput: f64,
    /// `None` without `--goodput`.
    pub request_goodput: Option<f64>,
    pub output_throughput: f64,
    pub total_token_throughput: f64,
    pub ttft: Summary,
    pub tpot: Summary,
    pub itl: Summary,
    pub e2el: Summary,
    /// Per request, 0 for failed ones (benchmark_serving's `output_lens`).
    pub output_lens: Vec<usize>,
    /// Peak output tokens in any one-second bucket of the run, and peak requests in flight.
    pub max_output_tokens_per_s: f64,
    pub max_concurrent_requests: usize,
    /// Failed requests by error kind.
    pub errors_by_kind: BTreeMap<String, usize>,
}

impl BenchmarkMetrics {
    pub fn summary(&self, metric: &str) -> Option<&Summary> {
        match metric {
            "ttft" => Some(&self.ttft),
            "tpot" => Some(&self.tpot),
            "itl" => Some(&self.itl),
            "e2el" => Some(&self.e2el),
            _ => None,
        }
    }

    pub fn success_rate(&self) -> f64 {
        let total = self.completed + self.failed;
        if total == 0 {
            0.0
        } else {
            self.completed as f64 / total as f64
        }
    }
}

/// Computes the run's figures. `count_tokens` re-tokenizes a generated text for outcomes whose
/// backend did not report a token count.
pub fn calculate_metrics(
    outcomes: &[RequestOutcome],
    duration_s: f64,
    percentiles: &[f64],
    goodput: Option<&Goodput>,
    count_tokens: &dyn Fn(&str) -> usize,
) -> BenchmarkMetrics {
    let mut output_lens = Vec::with_capacity(outcomes.len());
    let (mut ttfts, mut tpots, mut all_tpots, mut itls, mut e2els) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut total_input = 0;
    let mut completed = 0;
    let mut errors_by_kind = BTreeMap::new();
    for o in outcomes {
        if !o.success {
            output_lens.push(0);
            let kind = o.error.as_ref().map_or("unknown", |e| e.kind.as_str());
            *errors_by_kind.entry(kind.to_string()).or_insert(0) += 1;
            continue;
        }
        let output_len = match o.output_tokens {
            Some(n) if n > 0 => n,
            _ => count_tokens(&o.generated_text),
        };
        output_lens.push(output_len);
        total_input += o.prompt_len;
        let mut tpot = 0.0;
        if output_len > 1 {
            tpot = (o.latency - o.ttft) / (output_len - 1) as f64;
            tpots.push(tpot);
        }
        all_tpots.push(tpot);
        itls.extend_from_slice(&o.itl);
        ttfts.push(o.ttft);
        e2els.push(o.latency);
        completed += 1;
    }
    let request_goodput = goodput.map(|g| {
        let good = (0..ttfts.len())
            .filter(|&i| {
                g.ttft_ms.is_none_or(|slo| ttfts[i] <= slo / 1000.0)
                    && g.tpot_ms.is_none_or(|slo| all_tpots[i] <= slo / 1000.0)
                    && g.e2el_ms.is_none_or(|slo| e2els[i] <= slo / 1000.0)
            })
            .count();
        rate(good as f64, duration_s)
    });
    let total_output: usize = output_lens.iter().sum();
    let (max_output_tokens_per_s, max_concurrent_requests) = peaks(outcomes);
    BenchmarkMetrics {
        completed,
        failed: outcomes.len() - completed,
        total_input,
        total_output,
        duration: duration_s,
        request_throughput: rate(completed as f64, duration_s),
        request_goodput,
        output_throughput: rate(total_output as f64, duration_s),
        total_token_throughput: rate((total_input + total_output) as f64, duration_s),
        ttft: Summary::of(&ttfts, percentiles),
        tpot: Summary::of(&tpots, percentiles),
        itl: Summary::of(&itls, percentiles),
        e2el: Summary::of(&e2els, percentiles),
        output_lens,
        max_output_tokens_per_s,
        max_concurrent_requests,
        errors_by_kind,
    }
}

fn rate(count: f64, duration_s: f64) -> f64 {
    if duration_s > 0.0 {
        count / duration_s
    } else {
        0.0
    }
}

/// Peak chunks per one-second bucket and peak requests active in any second, over successful requests
/// (benchmark_serving's `max_output_tokens_per_s` / `max_concurrent_requests`).
fn peaks(outcomes: &[RequestOutcome]) -> (f64, usize) {
    let ok: Vec<&RequestOutcome> = outcomes.iter().filter(|o| o.success).collect();
    if ok.is_empty() {
        return (0.0, 0);
    }
    let min_start = ok
        .iter()
        .map(|o| o.start_time)
        .fold(f64::INFINITY, f64::min);
    let max_end = ok
        .iter()
        .map(|o| o.start_time + o.latency)
        .fold(f64::NEG_INFINITY, f64::max);
    let seconds = (max_end - min_start).ceil() as usize + 1;
    let mut tokens = vec![0usize; seconds];
    let mut active = vec![0usize; seconds];
    for o in ok {
        let mut t = o.start_time + o.ttft;
        let mut times = vec![t];
        for gap in &o.itl {
            t += gap;
            times.push(t);
        }
        for t in times {
            let b = (t - min_start).floor();
            if b >= 0.0 && (b as usize) < seconds {
                tokens[b as usize] += 1;
            }
        }
        let first = (o.start_time - min_start) as usize;
        let last = ((o.start_time + o.latency - min_start) as usize).min(seconds - 1);
        for slot in &mut active[first..=last] {
            *slot += 1;
        }
    }
    (
        tokens.into_iter().max().unwrap_or(0) as f64,
        active.into_iter().max().unwrap_or(0),
    )
}

/// Arithmetic mean; 0 for an empty sample.
pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Population standard deviation (numpy's `np.std`, `ddof=0`); 0 for an empty sample.
pub fn std_dev(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let m = mean(xs);
    (xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / xs.len() as f64).sqrt()
}

/// numpy's `np.percentile(xs, p)` with its default linear interpolation: the value at rank
/// `(n − 1) · p / 100` of the sorted sample, interpolated between neighbours; 0 for an empty sample.
pub fn percentile(xs: &[f64], p: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut sorted = xs.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (sorted.len() - 1) as f64 * p.clamp(0.0, 100.0) / 100.0;
    let lo = rank.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (rank - lo as f64) * (sorted[hi] - sorted[lo])
}

/// Parses `--metric-percentiles 50,95,99`.
pub fn parse_percentiles(s: &str) -> Result<Vec<f64>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let v: f64 = p
                .parse()
                .map_err(|_| format!("--metric-percentiles: `{p}` is not a number"))?;
            if (0.0..=100.0).contains(&v) {
                Ok(v)
            } else {
                Err(format!("--metric-percentiles: {v} is outside 0..100"))
            }
        })
        .collect()
}

/// Parses `--percentile-metrics ttft,tpot,itl`.
pub fn parse_metric_names(s: &str) -> Result<Vec<String>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(|m| {
            if METRIC_NAMES.contains(&m) {
                Ok(m.to_string())
            } else {
                Err(format!(
                    "--percentile-metrics: unknown metric `{m}` (valid: ttft, tpot, itl, e2el)"
                ))
            }
        })
        .collect()
}

/// How benchmark_serving names a percentile in its JSON keys: `p99`, `p99.9`.
pub fn percentile_word(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("{}", p as i64)
    } else {
        format!("{p}")
    }
}
