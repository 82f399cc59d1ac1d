//! Tasks: each turns its documents into requests and scores the responses the way lm-eval-harness does.
//! `registry` resolves the names users type (`arc_easy`, `mmlu`, a YAML path) into tasks and groups.

pub mod arc;
pub mod boolq;
pub mod code;
pub mod fewshot;
pub mod gsm8k;
pub mod hellaswag;
pub mod math;
pub mod mmlu;
pub mod multiple_choice;
pub mod openbookqa;
pub mod piqa;
pub mod registry;
pub mod winogrande;

use serde_json::Value;

use crate::data::DataStore;
use crate::request::{Request, Response};
use crate::Result;

/// One document made ready for the model: its requests and what the logs show.
#[derive(Debug, Clone)]
pub struct Sample {
    pub doc_id: usize,
    pub doc: Value,
    pub target: String,
    pub requests: Vec<Request>,
}

/// Per-document metric values (metric key such as `acc,none` → value) and the filtered responses.
#[derive(Debug, Clone, Default)]
pub struct SampleScore {
    pub metrics: Vec<(String, f64)>,
    pub filtered: Value,
}

impl SampleScore {
    pub fn get(&self, key: &str) -> Option<f64> {
        self.metrics.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

/// A metric a task reports: its key in the results (`acc,none`, `exact_match,strict-match`).
#[derive(Debug, Clone)]
pub struct MetricSpec {
    pub key: String,
    pub higher_is_better: bool,
}

impl MetricSpec {
    pub fn new(name: &str, filter: &str) -> Self {
        Self {
            key: format!("{name},{filter}"),
            higher_is_better: true,
        }
    }

    /// `acc` of `acc,none`.
    pub fn name(&self) -> &str {
        self.key.split(',').next().unwrap_or(&self.key)
    }

    /// `acc_stderr,none` for `acc,none`.
    pub fn stderr_key(&self) -> String {
        stderr_key(&self.key)
    }
}

pub fn stderr_key(key: &str) -> String {
    match key.split_once(',') {
        Some((m, f)) => format!("{m}_stderr,{f}"),
        None => format!("{key}_stderr"),
    }
}

/// An aggregated metric: value and standard error over the evaluated documents.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    pub key: String,
    pub value: f64,
    pub stderr: f64,
}

/// Options every task reads from the command line.
#[derive(Debug, Clone, Default)]
pub struct TaskOptions {
    pub num_fewshot: Option<usize>,
    /// Overrides of the generation settings (`--gen-kwargs`).
    pub gen_kwargs: Vec<(String, String)>,
    pub seed: u64,
    pub allow_code_execution: bool,
    /// Samples per problem for repeated-sampling tasks (aime25, pass@k).
    pub repeats: Option<usize>,
}

pub trait Task: Send + Sync {
    fn name(&self) -> &str;
    /// lm-eval's `output_type`: `multiple_choice`, `loglikelihood` or `generate_until`.
    fn output_type(&self) -> &'static str;
    fn num_fewshot(&self) -> usize;
    fn metrics(&self) -> Vec<MetricSpec>;
    /// The task's settings for the results' `configs` section.
    fn config(&self) -> Value;
    fn version(&self) -> f64 {
        1.0
    }
    fn num_docs(&self) -> usize;
    /// The first `limit` documents (all when `None`) made into requests.
    fn samples(&self, limit: Option<usize>) -> Result<Vec<Sample>>;
    fn score(&self, sample: &Sample, responses: &[Response]) -> Result<SampleScore>;
    /// Mean and stderr of every metric over the documents (lm-eval's `mean` + `mean_stderr`).
    fn aggregate(&self, scores: &[SampleScore]) -> Vec<Aggregate> {
        self.metrics()
            .iter()
            .map(|m| {
                let values: Vec<f64> = scores.iter().filter_map(|s| s.get(&m.key)).collect();
                Aggregate {
                    key: m.key.clone(),
                    value: crate::metrics::mean(&values),
                    stderr: crate::metrics::mean_stderr(&values),
                }
            })
            .collect()
    }
}

/// A group of tasks reported together, each member weighted by its number of documents.
pub struct Group {
    pub name: String,
    pub members: Vec<String>,
}

/// What `registry::resolve` returns for one name on the command line.
pub struct Resolved {
    pub tasks: Vec<Box<dyn Task>>,
    pub groups: Vec<Group>,
}

/// Reads a task's converted documents, or explains which fetch command provides them.
pub fn load_docs(store: &DataStore, task: &str, rel: &str) -> Result<Vec<Value>> {
    store.read_jsonl(task, rel)
}

/// Parses a `--gen-kwargs` value into typed overrides of a task's generation settings.
pub fn apply_gen_kwargs(
    params: &mut crate::request::GenParams,
    kwargs: &[(String, String)],
) -> Result<()> {
    use crate::Error;
    for (k, v) in kwargs {
        let bad = |what: &str| Error::InvalidArgument(format!("--gen-kwargs {k}={v}: {what}"));
        match k.as_str() {
            "temperature" => params.temperature = v.parse().map_err(|_| bad("not a number"))?,
            "top_p" => params.top_p = v.parse().map_err(|_| bad("not a number"))?,
            "max_gen_toks" | "max_tokens" | "max_new_tokens" => {
                params.max_gen_toks = v.parse().map_err(|_| bad("not an integer"))?
            }
            "seed" => params.seed = Some(v.parse().map_err(|_| bad("not an integer"))?),
            "do_sample" => {
                let on: bool = v.parse().map_err(|_| bad("not true/false"))?;
                if !on {
                    params.temperature = 0.0;
                }
            }
            "until" => params.until = v.split('|').map(str::to_string).collect(),
            _ => {
                return Err(bad(
                    "unknown key (known: temperature, top_p, max_gen_toks, seed, do_sample, until)",
                ))
            }
        }
    }
    Ok(())
}

/// `k=v,k=v` → pairs.
pub fn parse_gen_kwargs(s: &str) -> Result<Vec<(String, String)>> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| {
                    crate::Error::InvalidArgument(format!("--gen-kwargs: `{p}` is not key=value"))
                })
        })
        .collect()
}

/// A string field of a document, or a clear error naming the file and field.
pub fn field_str(doc: &Value, key: &str, what: &str) -> Result<String> {
    doc.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| crate::Error::BadData {
            path: what.to_string(),
            message: format!("a document has no string field `{key}`"),
        })
}

/// A list-of-strings field of a document.
pub fn field_strs(doc: &Value, key: &str, what: &str) -> Result<Vec<String>> {
    doc.get(key)
        .and_then(Value::as_array)
        .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_string)).collect())
        .ok_or_else(|| crate::Error::BadData {
            path: what.to_string(),
            message: format!("a document has no list of strings `{key}`"),
        })
}

/// The config lm-eval prints for a multiple-choice task.
pub fn mc_config(
    name: &str,
    dataset: &str,
    split: &str,
    num_fewshot: usize,
    metrics: &[&str],
) -> Value {
    serde_json::json!({
        "task": name,
        "dataset_path": dataset,
        "test_split": split,
        "output_type": "multiple_choice",
        "target_delimiter": " ",
        "fewshot_delimiter": "\n\n",
        "num_fewshot": num_fewshot,
        "metric_list": metrics.iter().map(|m| serde_json::json!({"metric": m, "aggregation": "mean", "higher_is_better": true})).collect::<Vec<_>>(),
    })
}
