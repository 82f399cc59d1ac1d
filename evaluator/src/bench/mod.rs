//! `ember bench`: a serving benchmark like vLLM's benchmark_serving (same flags, same figures, same
//! JSON keys), against the engine in-process or any OpenAI-compatible server over HTTP.

pub mod datasets;
pub mod http;
pub mod inprocess;
pub mod load;
pub mod metrics;
pub mod plan;

pub mod plot;
pub mod report;
pub mod result;
pub mod scenarios;
pub mod server_stats;
pub mod tokenizer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_models::tokenizer::Tokenizer;

use datasets::SampleRequest;
use http::HttpTarget;
use inprocess::InProcessTarget;
use load::LoadConfig;
use metrics::{BenchmarkMetrics, Goodput, RequestOutcome};
use server_stats::{ServerSample, ServerStats};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Config(String),
    #[error("dataset: {0}")]
    Dataset(String),
    #[error("model: {0}")]
    Model(String),
    /// The initial test request failed: the target is down, unreachable or refuses the requests.
    #[error("initial test request failed ({kind}): {message}")]
    Probe { kind: String, message: String },
    #[error("{0}")]
    Io(String),
}

/// What the benchmark drives.
pub enum Target {
    InProcess(InProcessTarget),
    Http(HttpTarget),
}

impl Target {
    pub async fn send(
        &self,
        req: &SampleRequest,
        ignore_eos: bool,
        run_start: Instant,
    ) -> RequestOutcome {
        match self {
            Target::InProcess(t) => t.send(req, ignore_eos, run_start).await,
            Target::Http(t) => t.send(req, ignore_eos, run_start).await,
        }
    }

    pub async fn sample_server(&self) -> Option<ServerSample> {
        match self {
            Target::InProcess(t) => Some(t.sample_server()),
            Target::Http(t) => t.sample_server().await,
        }
    }

    /// benchmark_serving's `backend` field.
    pub fn backend_name(&self) -> &'static str {
        match self {
            Target::InProcess(_) => "ember-inprocess",
            Target::Http(t) => match t.endpoint() {
                http::Endpoint::Completions => "openai",
                http::Endpoint::Chat => "openai-chat",
            },
        }
    }

    /// Sends one short request before the run (benchmark_serving's initial test run) so that a wrong
    /// URL, model name or a down server is one clear error, not a run of failures.
    pub async fn probe(&self, req: &SampleRequest) -> Result<(), BenchError> {
        let mut short = req.clone();
        short.output_len = short.output_len.min(4);
        let outcome = self.send(&short, false, Instant::now()).await;
        match outcome.error {
            None => Ok(()),
            Some(e) => Err(BenchError::Probe {
                kind: e.kind,
                message: e.message,
            }),
        }
    }
}

/// How one run is driven and measured.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    pub label: String,
    pub load: LoadConfig,
    pub ignore_eos: bool,
    pub num_warmups: usize,
    pub goodput: Option<Goodput>,
    pub percentiles: Vec<f64>,
}

/// One run's outcome.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub options: RunOptions,
    pub num_prompts: usize,
    pub metrics: BenchmarkMetrics,
    pub outcomes: Vec<RequestOutcome>,
    pub server: Option<ServerStats>,
}

/// How often server gauges (KV usage, queue lengths) are sampled during a run.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Runs `requests` against `target`: warm-ups first (excluded from the figures), then the timed run.
pub async fn run(
    target: Arc<Target>,
    requests: &[SampleRequest],
    options: &RunOptions,
    tokenizer: &Tokenizer,
) -> Result<RunResult, BenchError> {
    options.load.validate().map_err(BenchError::Config)?;
    if requests.is_empty() {
        return Err(BenchError::Config(
            "--num-prompts must be at least 1".into(),
        ));
    }
    if options.num_warmups > 0 {
        let warm = vec![requests[0].clone(); options.num_warmups];
        let warm_load = LoadConfig {
            request_rate: f64::INFINITY,
            ..options.load
        };
        let start = Instant::now();
        let outcomes = load::drive(&warm_load, warm, |_, r| {
            let target = target.clone();
            let ignore_eos = options.ignore_eos;
            async move { target.send(&r, ignore_eos, start).await }
        })
        .await;
        let failed = outcomes.iter().filter(|o| !o.success).count();
        if failed > 0 {
            tracing::warn!(failed, "warm-up requests failed");
        }
    }

    let before = target.sample_server().await;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = before.is_some().then(|| {
        let (target, stop) = (target.clone(), stop.clone());
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Some(s) = target.sample_server().await {
                    samples.push(s);
                }
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
            samples
        })
    });

    let start = Instant::now();
    let outcomes = load::drive(&options.load, requests.to_vec(), |_, r| {
        let target = target.clone();
        let ignore_eos = options.ignore_eos;
        async move { target.send(&r, ignore_eos, start).await }
    })
    .await;
    let duration = start.elapsed().as_secs_f64();

    stop.store(true, Ordering::Relaxed);
    let during = match sampler {
        Some(h) => h.await.unwrap_or_default(),
        None => Vec::new(),
    };
    let after = target.sample_server().await;
    let server = match (&before, &after) {
        (Some(b), Some(a)) => Some(server_stats::summarize(b, a, &during)),
        _ => None,
    };
    let count_tokens = |text: &str| tokenizer.encode(text, false).map_or(0, |ids| ids.len());
    // P95 always: the terminal report and the grade use it whatever was asked for the JSON.
    let mut percentiles = options.percentiles.clone();
    if !percentiles.contains(&95.0) {
        percentiles.push(95.0);
    }
    let metrics = metrics::calculate_metrics(
        &outcomes,
        duration,
        &percentiles,
        options.goodput.as_ref(),
        &count_tokens,
    );
    Ok(RunResult {
        options: options.clone(),
        num_prompts: requests.len(),
        metrics,
        outcomes,
        server,
    })
}
