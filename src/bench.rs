//! `ember bench`: vLLM benchmark_serving's flags over ember's benchmark (in-process with `--model`, or
//! against any OpenAI-compatible server with `--base-url`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use ember_evaluator::bench::datasets::DatasetConfig;
use ember_evaluator::bench::http::Endpoint;
use ember_evaluator::bench::metrics::{parse_metric_names, parse_percentiles, Goodput};
use ember_evaluator::bench::plan::{self, Plan, Runs, TargetSpec};
use ember_evaluator::bench::report::Thresholds;
use ember_evaluator::bench::scenarios;
use ember_models::loader::registry;
use ember_server::args::EngineArgs;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Model: loaded and driven in-process, or (with --base-url) the served model's name.
    #[arg(long, default_value = registry::DEFAULT_MODEL_ALIAS)]
    pub model: String,
    /// Tokenizer for building prompts and counting tokens (default: --model).
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// Benchmark a running server (its root or /v1 root) instead of the engine in-process.
    #[arg(long)]
    pub base_url: Option<String>,
    /// /v1/completions or /v1/chat/completions.
    #[arg(long, default_value = "/v1/completions")]
    pub endpoint: String,
    /// The model name to send in requests (default: --model).
    #[arg(long)]
    pub served_model_name: Option<String>,
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Seconds before one HTTP request is given up (counted as a `timeout` failure).
    #[arg(long, default_value_t = 600.0)]
    pub request_timeout: f64,

    #[arg(long, default_value_t = 1000)]
    pub num_prompts: usize,
    /// Requests per second (`inf`: all at once).
    #[arg(long, default_value = "inf")]
    pub request_rate: String,
    /// 1 = Poisson arrivals; lower is burstier, higher more regular (gamma intervals).
    #[arg(long, default_value_t = 1.0)]
    pub burstiness: f64,
    /// Most requests in flight; a comma list (1,2,4,8) runs a sweep.
    #[arg(long)]
    pub max_concurrency: Option<String>,
    #[arg(long)]
    pub ignore_eos: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Warm-up requests before each run, excluded from the figures.
    #[arg(long, default_value_t = 0)]
    pub num_warmups: usize,

    /// random | sharegpt | eval (alias custom: a JSONL file of prompts).
    #[arg(long, default_value = "random")]
    pub dataset_name: String,
    #[arg(long)]
    pub dataset_path: Option<PathBuf>,
    #[arg(long, default_value_t = 1024)]
    pub random_input_len: usize,
    #[arg(long, default_value_t = 128)]
    pub random_output_len: usize,
    #[arg(long, default_value_t = 0.0)]
    pub random_range_ratio: f64,
    /// Shared random prefix before every prompt (prefix caching).
    #[arg(long, default_value_t = 0)]
    pub random_prefix_len: usize,
    /// Output length for sharegpt prompts (default: the reply's length).
    #[arg(long)]
    pub sharegpt_output_len: Option<usize>,
    /// Output length for eval/custom prompts.
    #[arg(long, default_value_t = 256)]
    pub custom_output_len: usize,

    /// SLOs for goodput: ttft:MS tpot:MS e2el:MS.
    #[arg(long, num_args = 1..)]
    pub goodput: Vec<String>,
    #[arg(long, default_value = "ttft,tpot,itl")]
    pub percentile_metrics: String,
    #[arg(long, default_value = "99")]
    pub metric_percentiles: String,
    #[arg(long)]
    pub save_result: bool,
    #[arg(long)]
    pub result_filename: Option<PathBuf>,
    #[arg(long)]
    pub result_dir: Option<PathBuf>,
    /// Write throughput and latency percentiles against concurrency: FILE.svg or FILE.png.
    #[arg(long)]
    pub plot: Option<PathBuf>,

    /// Run named scenarios: a YAML file, or `builtin` for seed 003's four.
    #[arg(long)]
    pub scenarios: Option<String>,
    /// Scale scenario lengths and prompt counts (e.g. 0.125 on a small CPU machine).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Grade thresholds: P95 TTFT and TPOT (ms) and the least success rate for an A.
    #[arg(long, default_value_t = 1000.0)]
    pub grade_ttft_ms: f64,
    #[arg(long, default_value_t = 100.0)]
    pub grade_tpot_ms: f64,
    #[arg(long, default_value_t = 0.99)]
    pub grade_min_success: f64,

    /// The in-process engine's flags, as `ember serve` takes them (ignored with --base-url).
    #[command(flatten)]
    pub engine: EngineArgs,
}

fn parse_rate(s: &str) -> Result<f64> {
    let r: f64 = s
        .trim()
        .parse()
        .with_context(|| format!("--request-rate `{s}` is not a number or inf"))?;
    if r.is_nan() || r <= 0.0 {
        bail!("--request-rate must be > 0 (or inf), got {s}");
    }
    Ok(r)
}

fn parse_concurrencies(s: &Option<String>) -> Result<Vec<Option<usize>>> {
    let Some(s) = s else { return Ok(vec![None]) };
    let list = s
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| match c.parse::<usize>() {
            Ok(0) | Err(_) => {
                bail!("--max-concurrency takes positive integers (1 or 1,2,4), got `{c}`")
            }
            Ok(n) => Ok(Some(n)),
        })
        .collect::<Result<Vec<_>>>()?;
    if list.is_empty() {
        bail!("--max-concurrency is empty");
    }
    Ok(list)
}

fn dataset(args: &BenchArgs) -> Result<DatasetConfig> {
    let path = || {
        args.dataset_path
            .clone()
            .with_context(|| format!("--dataset-name {} needs --dataset-path", args.dataset_name))
    };
    Ok(match args.dataset_name.as_str() {
        "random" => DatasetConfig::Random {
            input_len: args.random_input_len,
            output_len: args.random_output_len,
            range_ratio: args.random_range_ratio,
            prefix_len: args.random_prefix_len,
        },
        "sharegpt" => DatasetConfig::ShareGpt {
            path: path()?,
            output_len: args.sharegpt_output_len,
        },
        "eval" | "custom" => DatasetConfig::Eval {
            path: path()?,
            output_len: args.custom_output_len,
        },
        other => bail!("--dataset-name `{other}`: one of random, sharegpt, eval (custom)"),
    })
}

pub fn run(args: BenchArgs) -> Result<()> {
    if !(args.request_timeout.is_finite() && args.request_timeout > 0.0) {
        bail!("--request-timeout must be a positive number of seconds");
    }
    let target = match &args.base_url {
        Some(url) => TargetSpec::Http {
            base_url: url.clone(),
            endpoint: Endpoint::parse(&args.endpoint)?,
            served_model: args.served_model_name.clone().unwrap_or(args.model.clone()),
            api_key: args.api_key.clone(),
            request_timeout: Duration::from_secs_f64(args.request_timeout),
        },
        None => TargetSpec::InProcess {
            model: args.model.clone(),
            engine: args.engine.options(args.seed, 0),
        },
    };
    let runs = match &args.scenarios {
        Some(spec) => Runs::Scenarios {
            list: scenarios::load(spec)?,
            scale: args.scale,
        },
        None => Runs::Sweep {
            dataset: dataset(&args)?,
            num_prompts: args.num_prompts,
            concurrencies: parse_concurrencies(&args.max_concurrency)?,
        },
    };
    let plan = Plan {
        target,
        model_id: args.model.clone(),
        tokenizer: args.tokenizer.clone(),
        runs,
        request_rate: parse_rate(&args.request_rate)?,
        burstiness: args.burstiness,
        seed: args.seed,
        ignore_eos: args.ignore_eos,
        num_warmups: args.num_warmups,
        goodput: Goodput::parse(&args.goodput).map_err(anyhow::Error::msg)?,
        percentile_metrics: parse_metric_names(&args.percentile_metrics)
            .map_err(anyhow::Error::msg)?,
        percentiles: parse_percentiles(&args.metric_percentiles).map_err(anyhow::Error::msg)?,
        thresholds: Thresholds {
            min_success_rate: args.grade_min_success,
            ttft_p95_ms: args.grade_ttft_ms,
            tpot_p95_ms: args.grade_tpot_ms,
        },
        save_result: args.save_result,
        result_filename: args.result_filename.clone(),
        result_dir: args.result_dir.clone(),
        plot: args.plot.clone(),
    };
    let results = plan::execute(plan)?;
    let empty: Vec<&str> = results
        .iter()
        .filter(|r| r.metrics.completed == 0)
        .map(|r| r.options.label.as_str())
        .collect();
    if !empty.is_empty() {
        bail!("no request completed in: {}", empty.join(", "));
    }
    Ok(())
}
