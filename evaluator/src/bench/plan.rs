//! A whole `ember bench` invocation: set up the target once, run each scenario or each concurrency of
//! a sweep, print the reports, write the result files and the plot.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ember_engine::{EngineHandle, EngineOptions};
use ember_models::tokenizer::Tokenizer;

use super::datasets::{self, DatasetConfig, SampleRequest};
use super::http::{Endpoint, HttpTarget};
use super::inprocess::InProcessTarget;
use super::load::LoadConfig;
use super::metrics::Goodput;
use super::report::{self, Thresholds};
use super::result::{self, RunMeta};
use super::scenarios::Scenario;
use super::{plot, BenchError, RunOptions, RunResult, Target};

pub enum TargetSpec {
    /// Load `model` and drive the engine directly.
    InProcess {
        model: String,
        engine: EngineOptions,
    },
    Http {
        base_url: String,
        endpoint: Endpoint,
        /// The model name sent in requests.
        served_model: String,
        api_key: Option<String>,
        request_timeout: Duration,
    },
}

/// What to run: named scenarios, or one dataset at one or more concurrencies.
pub enum Runs {
    Scenarios {
        list: Vec<Scenario>,
        scale: f64,
    },
    Sweep {
        dataset: DatasetConfig,
        num_prompts: usize,
        /// `[None]` for an unlimited single run.
        concurrencies: Vec<Option<usize>>,
    },
}

pub struct Plan {
    pub target: TargetSpec,
    /// Model id for the report and the tokenizer to load (when not in-process).
    pub model_id: String,
    pub tokenizer: Option<String>,
    pub runs: Runs,
    pub request_rate: f64,
    pub burstiness: f64,
    pub seed: u64,
    pub ignore_eos: bool,
    pub num_warmups: usize,
    pub goodput: Option<Goodput>,
    pub percentile_metrics: Vec<String>,
    pub percentiles: Vec<f64>,
    pub thresholds: Thresholds,
    pub save_result: bool,
    pub result_filename: Option<PathBuf>,
    pub result_dir: Option<PathBuf>,
    pub plot: Option<PathBuf>,
}

/// One run to do: its options and its requests.
struct Job {
    options: RunOptions,
    requests: Vec<SampleRequest>,
    thresholds: Thresholds,
}

/// Runs the plan; returns the runs (also printed and saved as asked).
pub fn execute(plan: Plan) -> Result<Vec<RunResult>, BenchError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| BenchError::Io(format!("starting the async runtime: {e}")))?;
    runtime.block_on(execute_async(plan))
}

async fn execute_async(plan: Plan) -> Result<Vec<RunResult>, BenchError> {
    if let Some(path) = &plan.plot {
        plot::check_path(path)?;
    }
    let (target, tokenizer, backend) = build_target(&plan)?;
    let target = Arc::new(target);
    let jobs = jobs(&plan, &tokenizer)?;
    target.probe(&jobs[0].requests[0]).await?;
    let meta = RunMeta {
        date: timestamp(),
        backend: backend.to_string(),
        model_id: plan.model_id.clone(),
        tokenizer_id: plan.tokenizer.clone().unwrap_or(plan.model_id.clone()),
    };
    let mut done: Vec<(RunResult, Thresholds)> = Vec::new();
    for job in jobs {
        eprintln!(
            "ember bench: {} ({} prompts, max concurrency {}) ...",
            job.options.label,
            job.requests.len(),
            job.options
                .load
                .max_concurrency
                .map_or("unlimited".into(), |c| c.to_string())
        );
        let run = super::run(target.clone(), &job.requests, &job.options, &tokenizer).await?;
        println!("{}", report::run_table(&run, &plan.percentile_metrics));
        done.push((run, job.thresholds));
    }
    if let Target::InProcess(t) = target.as_ref() {
        t.handle().shutdown();
    }
    println!("{}", report::summary_table(&done));
    let runs: Vec<RunResult> = done.into_iter().map(|(r, _)| r).collect();
    if plan.save_result {
        for (i, run) in runs.iter().enumerate() {
            let path = result_path(&plan, &meta, run, runs.len() > 1, i);
            let json = result::to_json(run, &meta, &plan.percentile_metrics);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| BenchError::Io(format!("creating {}: {e}", dir.display())))?;
            }
            let text = serde_json::to_string_pretty(&json)
                .map_err(|e| BenchError::Io(format!("serializing the result: {e}")))?;
            std::fs::write(&path, text)
                .map_err(|e| BenchError::Io(format!("writing {}: {e}", path.display())))?;
            eprintln!("ember bench: wrote {}", path.display());
        }
    }
    if let Some(path) = &plan.plot {
        let title = format!("ember bench: {} ({})", plan.model_id, meta.backend);
        plot::write(path, &runs, &title)?;
        eprintln!("ember bench: wrote {}", path.display());
    }
    Ok(runs)
}

fn build_target(plan: &Plan) -> Result<(Target, Tokenizer, &'static str), BenchError> {
    match &plan.target {
        TargetSpec::InProcess { model, engine } => {
            let load_options = engine
                .load_options()
                .map_err(|e| BenchError::Config(e.to_string()))?;
            let loaded = ember_models::loader::load_with(model, &load_options)
                .map_err(|e| BenchError::Model(format!("loading `{model}`: {e}")))?;
            // The dataset needs its own tokenizer: the engine owns the model from here on.
            let tokenizer = match &plan.tokenizer {
                Some(spec) => super::tokenizer::load_tokenizer(spec)?,
                None => loaded.tokenizer.clone(),
            };
            let config = engine
                .resolve(&loaded)
                .map_err(|e| BenchError::Config(e.to_string()))?;
            let handle = EngineHandle::start(Arc::new(loaded), config)
                .map_err(|e| BenchError::Config(format!("starting the engine: {e}")))?;
            Ok((
                Target::InProcess(InProcessTarget::new(handle)),
                tokenizer,
                "ember-inprocess",
            ))
        }
        TargetSpec::Http {
            base_url,
            endpoint,
            served_model,
            api_key,
            request_timeout,
        } => {
            let spec = plan.tokenizer.as_deref().unwrap_or(&plan.model_id);
            let tokenizer = super::tokenizer::load_tokenizer(spec).map_err(|e| {
                BenchError::Model(format!(
                    "{e} (over HTTP the tokenizer builds prompts and counts tokens; pass --tokenizer \
                     when --model is a served name, not a local model)"
                ))
            })?;
            let t = HttpTarget::new(
                base_url,
                *endpoint,
                served_model,
                api_key.clone(),
                *request_timeout,
            )?;
            let backend = match endpoint {
                Endpoint::Completions => "openai",
                Endpoint::Chat => "openai-chat",
            };
            Ok((Target::Http(t), tokenizer, backend))
        }
    }
}

/// The seed of the `index`-th run of a sweep or scenario list: each run draws its own prompts, so no run
/// finds its prompts already in the server's prefix cache from the run before it (the first run keeps
/// `--seed`, as a single `vllm bench serve` run would).
fn run_seed(seed: u64, index: usize) -> u64 {
    seed.wrapping_add(index as u64)
}

fn jobs(plan: &Plan, tokenizer: &Tokenizer) -> Result<Vec<Job>, BenchError> {
    let load = |max_concurrency: Option<usize>, rate: f64| LoadConfig {
        request_rate: rate,
        burstiness: plan.burstiness,
        max_concurrency,
        seed: plan.seed,
    };
    let options = |label: String, load: LoadConfig| RunOptions {
        label,
        load,
        ignore_eos: plan.ignore_eos,
        num_warmups: plan.num_warmups,
        goodput: plan.goodput.clone(),
        percentiles: plan.percentiles.clone(),
    };
    let mut jobs = Vec::new();
    match &plan.runs {
        Runs::Scenarios { list, scale } => {
            if !(scale.is_finite() && *scale > 0.0) {
                return Err(BenchError::Config(format!(
                    "--scale must be a positive number, got {scale}"
                )));
            }
            for (index, s) in list.iter().enumerate() {
                let s = s.scaled(*scale);
                let dataset = DatasetConfig::Random {
                    input_len: s.input_len,
                    output_len: s.output_len,
                    range_ratio: s.range_ratio,
                    prefix_len: s.prefix_len,
                };
                let seed = run_seed(plan.seed, index);
                let requests = datasets::sample(&dataset, tokenizer, s.num_prompts(), seed)?;
                let rate = s.request_rate.unwrap_or(plan.request_rate);
                jobs.push(Job {
                    options: options(s.name.clone(), load(Some(s.max_concurrency), rate)),
                    requests,
                    thresholds: s.thresholds.unwrap_or(plan.thresholds),
                });
            }
        }
        Runs::Sweep {
            dataset,
            num_prompts,
            concurrencies,
        } => {
            for (index, c) in concurrencies.iter().enumerate() {
                let label = c.map_or("concurrency-inf".into(), |c| format!("concurrency-{c}"));
                let seed = run_seed(plan.seed, index);
                jobs.push(Job {
                    options: options(label, load(*c, plan.request_rate)),
                    requests: datasets::sample(dataset, tokenizer, *num_prompts, seed)?,
                    thresholds: plan.thresholds,
                });
            }
        }
    }
    if jobs.is_empty() || jobs[0].requests.is_empty() {
        return Err(BenchError::Config(
            "nothing to run (--num-prompts 0?)".into(),
        ));
    }
    for job in &jobs {
        job.options.load.validate().map_err(BenchError::Config)?;
    }
    Ok(jobs)
}

/// benchmark_serving's default name, `{backend}-{rate}qps[-concurrency{c}]-{model}-{date}.json`,
/// or `--result-filename` (with `-{run}` before the extension when there are several runs).
fn result_path(plan: &Plan, meta: &RunMeta, run: &RunResult, many: bool, _i: usize) -> PathBuf {
    let load = &run.options.load;
    let name = match &plan.result_filename {
        Some(f) if !many => f.clone(),
        Some(f) => {
            let stem = f
                .file_stem()
                .map_or("result".into(), |s| s.to_string_lossy().into_owned());
            let ext = f
                .extension()
                .map_or("json".into(), |s| s.to_string_lossy().into_owned());
            f.with_file_name(format!("{stem}-{}.{ext}", run.options.label))
        }
        None => {
            let rate = if load.request_rate.is_finite() {
                format!("{}", load.request_rate)
            } else {
                "inf".into()
            };
            let conc = load
                .max_concurrency
                .map_or(String::new(), |c| format!("-concurrency{c}"));
            let model = Path::new(&meta.model_id)
                .file_name()
                .map_or(meta.model_id.clone(), |s| s.to_string_lossy().into_owned());
            let label = if many {
                format!("-{}", run.options.label)
            } else {
                String::new()
            };
            PathBuf::from(format!(
                "{}-{rate}qps{conc}-{model}-{}{label}.json",
                meta.backend, meta.date
            ))
        }
    };
    match &plan.result_dir {
        Some(dir) => dir.join(name),
        None => name,
    }
}

/// `YYYYMMDD-HHMMSS` (UTC), as benchmark_serving stamps its results.
fn timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
