//! `ember eval`: lm-eval-harness-style evaluation, in-process (the engine, batched) or over HTTP
//! (`--base-url`, any OpenAI-compatible server); plus `ember eval compare A B`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use ember_engine::{EngineHandle, EngineOptions};
use ember_evaluator::cache::Cache;
use ember_evaluator::data::DataStore;
use ember_evaluator::evaluate::{evaluate, EvalOptions};
use ember_evaluator::regression;
use ember_evaluator::report::{self, RunInfo};
use ember_evaluator::runner::http::{HttpBackend, HttpOptions};
use ember_evaluator::runner::local::LocalBackend;
use ember_evaluator::runner::Backend;
use ember_evaluator::tasks::{parse_gen_kwargs, registry, TaskOptions};
use ember_models::loader::{self, registry as models};
use ember_server::args::DeviceArgs;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EvalArgs {
    #[command(subcommand)]
    pub command: Option<EvalCommand>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// Per-metric deltas between two results files (lm-eval layout).
    Compare {
        baseline: PathBuf,
        new: PathBuf,
        /// Exit non-zero when a metric drops by more than this (absolute).
        #[arg(long = "max-drop", alias = "max_drop")]
        max_drop: Option<f64>,
    },
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// In-process: a GGUF file, an HF model directory, a hub id or a registry alias. With --base-url:
    /// the served model's name.
    #[arg(long, default_value = models::DEFAULT_MODEL_ALIAS)]
    pub model: String,
    /// Comma-separated task names (arc_easy, mmlu, gsm8k, …) or task YAML files.
    #[arg(long, value_delimiter = ',')]
    pub tasks: Vec<String>,
    /// Documents per task (the first N).
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long = "num-fewshot", alias = "num_fewshot")]
    pub num_fewshot: Option<usize>,
    /// Requests in flight at once in-process ("auto" = 32); the engine batches them.
    #[arg(long = "batch-size", alias = "batch_size", default_value = "auto")]
    pub batch_size: String,
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    /// A results .json file, or a directory for results_<date>.json and the sample files.
    #[arg(long = "output-path", alias = "output_path")]
    pub output_path: Option<PathBuf>,
    /// SQLite file of responses: a re-run answers from it and makes no model calls.
    #[arg(long = "use-cache", alias = "use_cache")]
    pub use_cache: Option<PathBuf>,
    /// Render each context as a user message of the model's chat template.
    #[arg(long = "apply-chat-template", alias = "apply_chat_template")]
    pub apply_chat_template: bool,
    /// Write per-document records (samples_<task>_<date>.jsonl) beside the results.
    #[arg(long = "log-samples", alias = "log_samples")]
    pub log_samples: bool,
    /// Generation overrides, e.g. temperature=0.7,max_gen_toks=512.
    #[arg(long = "gen-kwargs", alias = "gen_kwargs")]
    pub gen_kwargs: Option<String>,
    /// Samples per problem for pass@k / AIME repeats.
    #[arg(long)]
    pub repeats: Option<usize>,
    /// Allow humaneval/mbpp to run model-written code (in a sandboxed python3 subprocess).
    #[arg(long = "allow-code-execution", alias = "allow_code_execution")]
    pub allow_code_execution: bool,
    /// Evaluate an OpenAI-compatible server instead (its root or its /v1 root).
    #[arg(long = "base-url", alias = "base_url")]
    pub base_url: Option<String>,
    #[arg(long = "api-key", env = "OPENAI_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Concurrent HTTP requests.
    #[arg(long = "num-concurrent", alias = "num_concurrent", default_value_t = 8)]
    pub num_concurrent: usize,
    #[arg(long = "max-retries", alias = "max_retries", default_value_t = 5)]
    pub max_retries: u32,
    /// Per-request HTTP timeout in seconds.
    #[arg(long, default_value_t = 600.0)]
    pub timeout: f64,
    /// A results file to compare against; exits non-zero on a drop beyond --max-drop.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    #[arg(long = "max-drop", alias = "max_drop", default_value_t = 0.02)]
    pub max_drop: f64,
    /// In-process context length (default: the model's, at most 4096).
    #[arg(long = "max-model-len")]
    pub max_model_len: Option<usize>,
    /// In-process KV-cache budget in GiB.
    #[arg(long = "kv-cache-memory", default_value_t = 1.0)]
    pub kv_cache_memory: f64,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Where converted datasets live (default $EMBER_HOME/data).
    #[arg(long = "data-dir")]
    pub data_dir: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: EvalArgs) -> Result<std::process::ExitCode> {
    match args.command {
        Some(EvalCommand::Compare {
            baseline,
            new,
            max_drop,
        }) => compare(&baseline, &new, max_drop),
        None => run_eval(args.run),
    }
}

fn compare(
    a: &std::path::Path,
    b: &std::path::Path,
    max_drop: Option<f64>,
) -> Result<std::process::ExitCode> {
    let old = regression::read_results(a)?;
    let new = regression::read_results(b)?;
    let deltas = regression::compare(&old, &new)?;
    if deltas.is_empty() {
        bail!("{} and {} share no task metrics", a.display(), b.display());
    }
    println!("{}", regression::render(&deltas, max_drop));
    if let Some(m) = max_drop {
        let fails = regression::failures(&deltas, m);
        if !fails.is_empty() {
            eprintln!("{} metric(s) dropped by more than {m}", fails.len());
            return Ok(std::process::ExitCode::from(3));
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn batch_size(s: &str) -> Result<usize> {
    if s == "auto" {
        return Ok(32);
    }
    let n: usize = s
        .parse()
        .with_context(|| format!("--batch-size `{s}` is not a number or `auto`"))?;
    anyhow::ensure!(n > 0, "--batch-size must be at least 1");
    Ok(n)
}

fn start_engine(args: &RunArgs) -> Result<EngineHandle> {
    anyhow::ensure!(
        args.kv_cache_memory > 0.0,
        "--kv-cache-memory must be positive"
    );
    let mut options = EngineOptions {
        kv_cache_memory: (args.kv_cache_memory * (1u64 << 30) as f64) as u64,
        seed: args.seed,
        ..EngineOptions::default()
    };
    args.device.apply(&mut options);
    let loaded = loader::load_with(&args.model, &options.load_options()?)
        .with_context(|| format!("loading model `{}`", args.model))?;
    // lm-eval's default context is the model's, capped at 4096 (a CPU KV budget goes further that way).
    let max_model_len = args
        .max_model_len
        .unwrap_or(loaded.config.max_position_embeddings.min(4096));
    let config = EngineOptions {
        max_model_len: Some(max_model_len),
        ..options
    }
    .resolve(&loaded)?;
    Ok(EngineHandle::start(Arc::new(loaded), config)?)
}

fn run_eval(args: RunArgs) -> Result<std::process::ExitCode> {
    if args.tasks.is_empty() {
        bail!("--tasks is required (e.g. --tasks arc_easy,hellaswag); see `ember eval --help`");
    }
    let concurrency = batch_size(&args.batch_size)?;
    let gen_kwargs = match &args.gen_kwargs {
        Some(s) => parse_gen_kwargs(s)?,
        None => Vec::new(),
    };
    let opts = TaskOptions {
        num_fewshot: args.num_fewshot,
        gen_kwargs,
        seed: args.seed,
        allow_code_execution: args.allow_code_execution,
        repeats: args.repeats,
    };
    let store = match &args.data_dir {
        Some(d) => DataStore::new(d),
        None => DataStore::default_location(),
    };
    // Tasks first: a bad name or missing data fails before a model is loaded or a server is called.
    let resolved = registry::resolve(&args.tasks, &store, &opts)?;
    let cache = args.use_cache.as_deref().map(Cache::open).transpose()?;

    let (backend, engine_config): (Box<dyn Backend>, serde_json::Value) = match &args.base_url {
        Some(url) => {
            let mut h = HttpOptions::new(url, &args.model);
            h.api_key = args.api_key.clone();
            h.concurrency = args.num_concurrent;
            h.max_retries = args.max_retries;
            h.timeout = std::time::Duration::from_secs_f64(args.timeout.max(1.0));
            h.apply_chat_template = args.apply_chat_template;
            h.seed = args.seed;
            let b = HttpBackend::new(h)?;
            // Skip the server check when every answer is cached.
            if cache.is_none() {
                b.check_server()?;
            }
            (Box::new(b), serde_json::json!({}))
        }
        None => {
            if cache.is_some() {
                tracing::info!(
                    "the model loads even with --use-cache; cached requests make no model calls"
                );
            }
            let handle = start_engine(&args)?;
            let c = handle.config();
            let ec = serde_json::json!({
                "max_model_len": c.scheduler.max_model_len,
                "max_num_batched_tokens": c.scheduler.max_num_batched_tokens,
                "max_num_seqs": c.scheduler.max_num_seqs,
                "block_size": c.cache.block_size,
                "num_blocks": c.cache.num_blocks,
                "enable_prefix_caching": c.cache.enable_prefix_caching,
                "enable_chunked_prefill": c.scheduler.enable_chunked_prefill,
            });
            (
                Box::new(LocalBackend::new(
                    handle,
                    concurrency,
                    args.apply_chat_template,
                )?),
                ec,
            )
        }
    };
    let eval_opts = EvalOptions {
        limit: args.limit,
        log_samples: args.log_samples,
        cache,
        cache_identity: format!("{}|chat={}", args.model, args.apply_chat_template),
        progress: !args.quiet,
    };
    let out = evaluate(&resolved, backend.as_ref(), &eval_opts)?;
    let info = RunInfo {
        model: args.model.clone(),
        model_args: match &args.base_url {
            Some(u) => format!(
                "model={},base_url={u},num_concurrent={}",
                args.model, args.num_concurrent
            ),
            None => format!("pretrained={}", args.model),
        },
        batch_size: concurrency,
        limit: args.limit,
        seed: args.seed,
        gen_kwargs: args.gen_kwargs.clone().unwrap_or_default(),
        apply_chat_template: args.apply_chat_template,
        engine_config,
    };
    let results = report::results_json(&out, &info);
    print!("{}", report::table(&out));
    if let Some(path) = &args.output_path {
        let stamp = report::stamp();
        let (file, dir) = report::results_path(path, &stamp);
        report::write_json(&file, &results)?;
        eprintln!("results: {}", file.display());
        if args.log_samples {
            for p in report::write_samples(&dir, &out.tasks, &stamp)? {
                eprintln!("samples: {}", p.display());
            }
        }
    } else if args.log_samples {
        eprintln!("--log-samples needs --output-path; no samples written");
    }
    if let Some(baseline) = &args.baseline {
        let old = regression::read_results(baseline)?;
        let deltas = regression::compare(&old, &results)?;
        println!("{}", regression::render(&deltas, Some(args.max_drop)));
        let fails = regression::failures(&deltas, args.max_drop);
        if !fails.is_empty() {
            eprintln!(
                "regression: {} metric(s) dropped by more than {} against {}",
                fails.len(),
                args.max_drop,
                baseline.display()
            );
            return Ok(std::process::ExitCode::from(3));
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
