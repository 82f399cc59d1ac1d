//! Custom tasks from a YAML file (`--tasks path/task.yaml`), lm-eval's task-config keys in small:
//!
//! ```yaml
//! task: capitals
//! dataset_path: capitals.jsonl        # .jsonl, .json (a list) or .csv; relative to this file
//! output_type: multiple_choice        # or generate_until
//! description: "Answer the question.\n\n"
//! doc_to_text: "Q: {{question}}\nA:"   # Jinja templates over the document's fields
//! doc_to_choice: "{{choices}}"        # a field holding a list, or a YAML list of templates
//! doc_to_target: "{{answer}}"         # the gold choice (index or text), or the reference text
//! metric: acc                         # acc (+ acc_norm) | exact_match
//! num_fewshot: 0
//! stop: ["\n"]                        # generate_until only
//! max_gen_toks: 64
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::request::{GenParams, Request, Response};
use crate::tasks::fewshot::{build_mc, context, pick, McItem, FEWSHOT_SEED};
use crate::tasks::multiple_choice::MultipleChoiceTask;
use crate::tasks::{apply_gen_kwargs, MetricSpec, Sample, SampleScore, Task, TaskOptions};
use crate::{Error, Result};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskFile {
    pub task: String,
    pub dataset_path: String,
    #[serde(default = "default_output_type")]
    pub output_type: String,
    #[serde(default)]
    pub description: String,
    pub doc_to_text: String,
    pub doc_to_target: String,
    #[serde(default)]
    pub doc_to_choice: Option<ChoiceSpec>,
    #[serde(default)]
    pub metric: Option<String>,
    #[serde(default)]
    pub num_fewshot: Option<usize>,
    #[serde(default)]
    pub stop: Vec<String>,
    #[serde(default)]
    pub max_gen_toks: Option<usize>,
    #[serde(default = "default_delimiter")]
    pub target_delimiter: String,
}

fn default_output_type() -> String {
    "multiple_choice".into()
}

fn default_delimiter() -> String {
    " ".into()
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ChoiceSpec {
    List(Vec<String>),
    Template(String),
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::TaskFile {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn render(
    env: &minijinja::Environment,
    template: &str,
    doc: &Value,
    path: &Path,
) -> Result<String> {
    env.render_str(template, doc)
        .map_err(|e| bad(path, format!("template `{template}`: {e}")))
}

/// Reads `.jsonl`, `.json` (a list of objects) or `.csv` (header row) documents.
pub fn read_docs(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad(path, format!("reading the dataset: {e}")))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext {
        "jsonl" => crate::data::read_jsonl_file(path),
        "json" => match serde_json::from_str(&text).map_err(|e| bad(path, e.to_string()))? {
            Value::Array(a) => Ok(a),
            _ => Err(bad(path, "a .json dataset must be a list of objects")),
        },
        "csv" => {
            let rows = parse_csv(&text);
            let Some((header, body)) = rows.split_first() else {
                return Ok(Vec::new());
            };
            Ok(body
                .iter()
                .filter(|r| !(r.len() == 1 && r[0].is_empty()))
                .map(|r| {
                    Value::Object(
                        header
                            .iter()
                            .zip(r.iter().chain(std::iter::repeat(&String::new())))
                            .map(|(h, v)| (h.clone(), Value::String(v.clone())))
                            .collect(),
                    )
                })
                .collect())
        }
        other => Err(bad(
            path,
            format!("unsupported dataset extension `.{other}` (use .jsonl, .json or .csv)"),
        )),
    }
}

/// RFC 4180 CSV: quoted fields, doubled quotes, newlines inside quotes.
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

/// A custom generation task: the rendered reference compared with the stripped response.
pub struct GenerateTask {
    name: String,
    items: Vec<(Value, String, String)>,
    params: GenParams,
    num_fewshot: usize,
    config: Value,
}

impl Task for GenerateTask {
    fn name(&self) -> &str {
        &self.name
    }
    fn output_type(&self) -> &'static str {
        "generate_until"
    }
    fn num_fewshot(&self) -> usize {
        self.num_fewshot
    }
    fn metrics(&self) -> Vec<MetricSpec> {
        vec![MetricSpec::new("exact_match", "none")]
    }
    fn config(&self) -> Value {
        self.config.clone()
    }
    fn num_docs(&self) -> usize {
        self.items.len()
    }
    fn samples(&self, limit: Option<usize>) -> Result<Vec<Sample>> {
        let n = limit.unwrap_or(self.items.len()).min(self.items.len());
        Ok(self.items[..n]
            .iter()
            .enumerate()
            .map(|(i, (doc, ctx, target))| Sample {
                doc_id: i,
                doc: doc.clone(),
                target: target.clone(),
                requests: vec![Request::generate(ctx.clone(), self.params.clone())],
            })
            .collect())
    }
    fn score(&self, sample: &Sample, responses: &[Response]) -> Result<SampleScore> {
        let text = responses
            .first()
            .and_then(Response::text)
            .ok_or_else(|| Error::Backend("expected a generation".into()))?;
        let em = (text.trim() == sample.target.trim()) as u8 as f64;
        Ok(SampleScore {
            metrics: vec![("exact_match,none".into(), em)],
            filtered: json!([text.trim()]),
        })
    }
}

pub fn load(path: &Path, opts: &TaskOptions) -> Result<Box<dyn Task>> {
    let text = std::fs::read_to_string(path).map_err(|e| bad(path, format!("cannot read: {e}")))?;
    let spec: TaskFile = serde_yaml_ng::from_str(&text).map_err(|e| bad(path, e.to_string()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let data_path: PathBuf = base.join(&spec.dataset_path);
    let docs = read_docs(&data_path)?;
    let env = minijinja::Environment::new();
    let k = opts.num_fewshot.or(spec.num_fewshot).unwrap_or(0);
    let metric = spec.metric.clone().unwrap_or_else(|| {
        if spec.output_type == "generate_until" {
            "exact_match".into()
        } else {
            "acc".into()
        }
    });
    let config = json!({
        "task": spec.task, "dataset_path": spec.dataset_path, "output_type": spec.output_type,
        "doc_to_text": spec.doc_to_text, "doc_to_target": spec.doc_to_target, "description": spec.description,
        "num_fewshot": k, "metric_list": [{"metric": metric, "aggregation": "mean", "higher_is_better": true}],
        "task_file": path.display().to_string(),
    });
    match spec.output_type.as_str() {
        "multiple_choice" => {
            let items = docs
                .iter()
                .map(|doc| {
                    let query = render(&env, &spec.doc_to_text, doc, path)?;
                    let choices: Vec<String> = match &spec.doc_to_choice {
                        Some(ChoiceSpec::List(l)) => {
                            l.iter().map(|c| render(&env, c, doc, path)).collect::<Result<_>>()?
                        }
                        Some(ChoiceSpec::Template(t)) => {
                            let field = t.trim().trim_start_matches("{{").trim_end_matches("}}").trim();
                            match doc.get(field) {
                                Some(Value::Array(a)) => a
                                    .iter()
                                    .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
                                    .collect(),
                                _ => return Err(bad(path, format!("doc_to_choice `{t}`: the document has no list field `{field}`"))),
                            }
                        }
                        None => return Err(bad(path, "multiple_choice needs doc_to_choice")),
                    };
                    let target = render(&env, &spec.doc_to_target, doc, path)?;
                    let gold = target
                        .trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|g| *g < choices.len())
                        .or_else(|| choices.iter().position(|c| c.trim() == target.trim()))
                        .ok_or_else(|| bad(path, format!("target `{target}` is neither a choice index nor a choice")))?;
                    Ok(McItem { doc: doc.clone(), query, choices, gold })
                })
                .collect::<Result<Vec<_>>>()?;
            let acc_norm = metric == "acc_norm";
            if metric != "acc" && !acc_norm {
                return Err(bad(
                    path,
                    format!("metric `{metric}` does not apply to multiple_choice (acc, acc_norm)"),
                ));
            }
            let docs = build_mc(items, &spec.description, k)
                .into_iter()
                .map(|mut d| {
                    d.continuations = d
                        .choices
                        .iter()
                        .map(|c| format!("{}{c}", spec.target_delimiter))
                        .collect();
                    d
                })
                .collect();
            Ok(Box::new(MultipleChoiceTask {
                name: spec.task.clone(),
                docs,
                num_fewshot: k,
                acc_norm,
                config,
            }))
        }
        "generate_until" => {
            if metric != "exact_match" {
                return Err(bad(
                    path,
                    format!("metric `{metric}` does not apply to generate_until (exact_match)"),
                ));
            }
            let rendered = docs
                .iter()
                .map(|doc| {
                    Ok((
                        render(&env, &spec.doc_to_text, doc, path)?,
                        render(&env, &spec.doc_to_target, doc, path)?,
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            let items = rendered
                .iter()
                .enumerate()
                .map(|(i, (q, _))| {
                    let shots: Vec<String> = pick(rendered.len(), Some(i), k, FEWSHOT_SEED)
                        .into_iter()
                        .map(|j| {
                            format!(
                                "{}{}{}",
                                rendered[j].0, spec.target_delimiter, rendered[j].1
                            )
                        })
                        .collect();
                    (
                        docs[i].clone(),
                        context(&spec.description, &shots, q),
                        rendered[i].1.clone(),
                    )
                })
                .collect();
            let mut params = GenParams {
                until: spec.stop.clone(),
                max_gen_toks: spec.max_gen_toks.unwrap_or(256),
                seed: Some(opts.seed),
                ..GenParams::default()
            };
            apply_gen_kwargs(&mut params, &opts.gen_kwargs)?;
            Ok(Box::new(GenerateTask {
                name: spec.task.clone(),
                items,
                params,
                num_fewshot: k,
                config,
            }))
        }
        other => Err(bad(
            path,
            format!("output_type `{other}` (use multiple_choice or generate_until)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_with_quotes_and_newlines() {
        let rows = parse_csv("a,b\n\"x, y\",\"say \"\"hi\"\"\nthere\"\n1,2\n");
        assert_eq!(
            rows[1],
            vec!["x, y".to_string(), "say \"hi\"\nthere".to_string()]
        );
        assert_eq!(rows[2], vec!["1".to_string(), "2".to_string()]);
    }

    #[test]
    fn a_yaml_task_renders_requests() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("d.jsonl"),
            "{\"q\": \"2+2\", \"choices\": [\"3\", \"4\"], \"a\": 1}\n{\"q\": \"1+1\", \"choices\": [\"2\", \"5\"], \"a\": 0}\n",
        )
        .unwrap();
        let yaml = "task: sums\ndataset_path: d.jsonl\ndoc_to_text: \"Q: {{q}}\\nA:\"\ndoc_to_choice: \"{{choices}}\"\ndoc_to_target: \"{{a}}\"\n";
        std::fs::write(dir.path().join("t.yaml"), yaml).unwrap();
        let t = load(&dir.path().join("t.yaml"), &TaskOptions::default()).unwrap();
        let s = t.samples(None).unwrap();
        assert_eq!(s[0].requests[1], Request::loglikelihood("Q: 2+2\nA:", " 4"));
        assert_eq!(s[0].target, "1");
        std::fs::write(dir.path().join("bad.yaml"), "task: x\n").unwrap();
        assert!(matches!(
            load(&dir.path().join("bad.yaml"), &TaskOptions::default()),
            Err(Error::TaskFile { .. })
        ));
    }
}
