//! One evaluation: every task's requests pooled into one stream (so the backend batches across tasks),
//! answered from the cache where possible, scored per document, aggregated per task and group.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cache::Cache;
use crate::metrics::{pooled_stderr, weighted_mean};
use crate::request::{Request, Response};
use crate::runner::{Backend, Stats};
use crate::tasks::{Aggregate, MetricSpec, Resolved, Sample, SampleScore};
use crate::Result;

#[derive(Default)]
pub struct EvalOptions {
    /// Documents per task (the first N).
    pub limit: Option<usize>,
    /// Keep per-document records for `--log-samples`.
    pub log_samples: bool,
    pub cache: Option<Cache>,
    /// What identifies the model in cache keys (model spec, chat template on/off, …).
    pub cache_identity: String,
    pub progress: bool,
}

/// One document's record for `--log-samples` (lm-eval's sample layout).
#[derive(Debug, Clone)]
pub struct SampleLog {
    pub sample: Sample,
    pub responses: Vec<Response>,
    pub score: SampleScore,
}

impl SampleLog {
    pub fn to_json(&self) -> Value {
        let s = &self.sample;
        let mut v = json!({
            "doc_id": s.doc_id,
            "doc": s.doc,
            "target": s.target,
            "arguments": s.requests.iter().map(Request::arguments).collect::<Vec<_>>(),
            "resps": self.responses.iter().map(|r| json!([r.to_json()])).collect::<Vec<_>>(),
            "filtered_resps": self.score.filtered,
            "doc_hash": crate::cache::sha256_hex(s.doc.to_string().as_bytes()),
            "prompt_hash": crate::cache::sha256_hex(
                s.requests.iter().map(|r| r.arguments().to_string()).collect::<String>().as_bytes()),
            "target_hash": crate::cache::sha256_hex(s.target.as_bytes()),
        });
        // Per-token logprobs, for cross-checks between backends.
        let lps: Vec<Value> = self
            .responses
            .iter()
            .filter_map(|r| match r {
                Response::Loglikelihood { token_logprobs, .. } => Some(json!(token_logprobs)),
                _ => None,
            })
            .collect();
        if !lps.is_empty() {
            v["token_logprobs"] = json!(lps);
        }
        for (k, val) in &self.score.metrics {
            v[k.split(',').next().unwrap_or(k)] = json!(val);
        }
        v
    }
}

pub struct TaskResult {
    pub name: String,
    pub output_type: &'static str,
    pub version: f64,
    pub num_fewshot: usize,
    pub metrics: Vec<MetricSpec>,
    pub aggregates: Vec<Aggregate>,
    pub n_original: usize,
    pub n_effective: usize,
    pub config: Value,
    pub samples: Vec<SampleLog>,
}

pub struct GroupResult {
    pub name: String,
    pub members: Vec<String>,
    pub aggregates: Vec<Aggregate>,
    pub n: usize,
}

pub struct EvalOutput {
    pub tasks: Vec<TaskResult>,
    pub groups: Vec<GroupResult>,
    pub duration: Duration,
    /// Requests the backend answered in this run (cache misses).
    pub model_calls: usize,
    pub cache_hits: usize,
    pub total_requests: usize,
    pub backend_stats: Stats,
    pub backend: Value,
}

pub fn evaluate(
    resolved: &Resolved,
    backend: &dyn Backend,
    opts: &EvalOptions,
) -> Result<EvalOutput> {
    let start = Instant::now();
    let per_task: Vec<Vec<Sample>> = resolved
        .tasks
        .iter()
        .map(|t| t.samples(opts.limit))
        .collect::<Result<_>>()?;
    let all: Vec<&Request> = per_task
        .iter()
        .flat_map(|ss| ss.iter().flat_map(|s| s.requests.iter()))
        .collect();
    let keys: Vec<String> = all
        .iter()
        .map(|r| crate::cache::request_key(&opts.cache_identity, r))
        .collect();
    let mut responses: Vec<Option<Response>> = match &opts.cache {
        Some(c) => c.get_many(&keys)?,
        None => vec![None; all.len()],
    };
    let total_requests = all.len();
    let cache_hits = responses.iter().filter(|r| r.is_some()).count();
    let missing: Vec<usize> = (0..all.len()).filter(|i| responses[*i].is_none()).collect();
    let todo: Vec<Request> = missing.iter().map(|&i| all[i].clone()).collect();
    tracing::info!(
        requests = all.len(),
        cache_hits,
        to_run = todo.len(),
        "evaluating"
    );
    let bar = if opts.progress && !todo.is_empty() {
        let bar = indicatif::ProgressBar::new(todo.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} requests ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(bar)
    } else {
        None
    };
    let on_done = |_: usize| {
        if let Some(b) = &bar {
            b.inc(1);
        }
    };
    let answered = if todo.is_empty() {
        Vec::new()
    } else {
        backend.run(&todo, &on_done)?
    };
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    if let Some(c) = &opts.cache {
        let entries: Vec<(&str, &Response)> = missing
            .iter()
            .zip(&answered)
            .map(|(&i, r)| (keys[i].as_str(), r))
            .collect();
        c.put_many(&entries)?;
    }
    for (&i, r) in missing.iter().zip(answered) {
        responses[i] = Some(r);
    }
    let mut responses = responses
        .into_iter()
        .map(|r| r.expect("every request answered"));

    let mut tasks = Vec::new();
    for (task, samples) in resolved.tasks.iter().zip(per_task) {
        let mut scores = Vec::with_capacity(samples.len());
        let mut logs = Vec::new();
        for sample in samples {
            let resp: Vec<Response> = responses.by_ref().take(sample.requests.len()).collect();
            let score = task.score(&sample, &resp)?;
            if opts.log_samples {
                logs.push(SampleLog {
                    sample,
                    responses: resp,
                    score: score.clone(),
                });
            }
            scores.push(score);
        }
        tasks.push(TaskResult {
            name: task.name().to_string(),
            output_type: task.output_type(),
            version: task.version(),
            num_fewshot: task.num_fewshot(),
            metrics: task.metrics(),
            aggregates: task.aggregate(&scores),
            n_original: task.num_docs(),
            n_effective: scores.len(),
            config: task.config(),
            samples: logs,
        });
    }
    let groups = resolved
        .groups
        .iter()
        .map(|g| aggregate_group(&g.name, &g.members, &tasks))
        .collect();
    Ok(EvalOutput {
        tasks,
        groups,
        duration: start.elapsed(),
        model_calls: missing.len(),
        cache_hits,
        total_requests,
        backend_stats: backend.stats(),
        backend: backend.describe(),
    })
}

/// A group's metrics: members' values weighted by their sizes, stderrs pooled (lm-eval's group rule).
pub fn aggregate_group(name: &str, members: &[String], tasks: &[TaskResult]) -> GroupResult {
    let ms: Vec<&TaskResult> = members
        .iter()
        .filter_map(|m| tasks.iter().find(|t| &t.name == m))
        .collect();
    let mut aggregates = Vec::new();
    if let Some(first) = ms.first() {
        for a in &first.aggregates {
            let vals: Option<Vec<(f64, f64, usize)>> = ms
                .iter()
                .map(|t| {
                    t.aggregates
                        .iter()
                        .find(|x| x.key == a.key)
                        .map(|x| (x.value, x.stderr, t.n_effective))
                })
                .collect();
            if let Some(vals) = vals {
                let scores: Vec<f64> = vals.iter().map(|v| v.0).collect();
                let ses: Vec<f64> = vals.iter().map(|v| v.1).collect();
                let sizes: Vec<usize> = vals.iter().map(|v| v.2).collect();
                aggregates.push(Aggregate {
                    key: a.key.clone(),
                    value: weighted_mean(&scores, &sizes),
                    stderr: pooled_stderr(&ses, &sizes),
                });
            }
        }
    }
    GroupResult {
        name: name.to_string(),
        members: members.to_vec(),
        aggregates,
        n: ms.iter().map(|t| t.n_effective).sum(),
    }
}
