//! HumanEval (164) and MBPP (500): generate code, run the tests in the sandbox, report pass@k with the
//! unbiased estimator over `repeats` samples per problem (pass@1 greedy by default). Running model-written
//! code needs `--allow-code-execution`.

use serde_json::{json, Value};

use super::{apply_gen_kwargs, field_str, MetricSpec, Sample, SampleScore, Task, TaskOptions};
use crate::data::DataStore;
use crate::metrics::pass_at_k;
use crate::request::{GenParams, Request, Response};
use crate::sandbox::{run_python, Limits, Outcome};
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    HumanEval,
    Mbpp,
}

pub struct CodeTask {
    kind: Kind,
    docs: Vec<Value>,
    /// The prompt of each document (MBPP's carries its three solved examples).
    prompts: Vec<String>,
    params: GenParams,
    repeats: usize,
    ks: Vec<usize>,
    allow_code_execution: bool,
    limits: Limits,
}

/// The first fenced code block of a chat answer, or the text as it is.
pub fn extract_code(text: &str) -> String {
    if let Some(start) = text.find("```") {
        let after = &text[start + 3..];
        let body = after.split_once('\n').map(|(_, b)| b).unwrap_or("");
        return body.split("```").next().unwrap_or(body).to_string();
    }
    text.to_string()
}

/// The program that tests one HumanEval completion.
pub fn humaneval_program(doc: &Value, completion: &str) -> Result<String> {
    let prompt = field_str(doc, "prompt", "humaneval")?;
    let test = field_str(doc, "test", "humaneval")?;
    let entry = field_str(doc, "entry_point", "humaneval")?;
    let code = extract_code(completion);
    // A chat model may restate the whole function; a base model continues the prompt.
    let body = if code.contains(&format!("def {entry}")) {
        code
    } else {
        format!("{prompt}{code}")
    };
    Ok(format!("{body}\n\n{test}\n\ncheck({entry})\n"))
}

/// The program that tests one MBPP completion.
pub fn mbpp_program(doc: &Value, completion: &str) -> Result<String> {
    let setup = doc["test_setup_code"].as_str().unwrap_or("");
    let tests = super::field_strs(doc, "test_list", "mbpp")?;
    Ok(format!(
        "{}\n{setup}\n{}\n",
        extract_code(completion),
        tests.join("\n")
    ))
}

fn load(kind: Kind, store: &DataStore, opts: &TaskOptions) -> Result<CodeTask> {
    let (name, rel) = match kind {
        Kind::HumanEval => ("humaneval", "humaneval/test.jsonl"),
        Kind::Mbpp => ("mbpp", "mbpp/test.jsonl"),
    };
    if !opts.allow_code_execution {
        return Err(Error::InvalidArgument(format!(
            "{name} runs model-written code; pass --allow-code-execution to allow it"
        )));
    }
    if opts
        .num_fewshot
        .is_some_and(|k| k != if kind == Kind::Mbpp { 3 } else { 0 })
    {
        return Err(Error::InvalidArgument(format!(
            "{name} has a fixed prompt ({} examples); --num-fewshot cannot change it",
            if kind == Kind::Mbpp { 3 } else { 0 }
        )));
    }
    let rows = store.read_jsonl(name, rel)?;
    let repeats = opts.repeats.unwrap_or(1).max(1);
    let mut params = match kind {
        Kind::HumanEval => GenParams {
            until: ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
                .map(String::from)
                .to_vec(),
            max_gen_toks: 1024,
            ..GenParams::default()
        },
        Kind::Mbpp => GenParams {
            until: vec!["```".into(), "[DONE]".into()],
            max_gen_toks: 512,
            ..GenParams::default()
        },
    };
    if repeats > 1 {
        // Sampling n programs per problem (pass@k) needs a temperature; Codex used 0.8 for large k.
        params.temperature = 0.8;
        params.top_p = 0.95;
    }
    params.seed = Some(opts.seed);
    apply_gen_kwargs(&mut params, &opts.gen_kwargs)?;
    let mut docs = Vec::new();
    let mut prompts = Vec::new();
    for r in rows {
        let doc = r["doc"].clone();
        prompts.push(match kind {
            Kind::HumanEval => field_str(&doc, "prompt", rel)?,
            Kind::Mbpp => field_str(&r["request"], "context", rel)?,
        });
        docs.push(doc);
    }
    let ks = [1, 10, 100].into_iter().filter(|k| *k <= repeats).collect();
    Ok(CodeTask {
        kind,
        docs,
        prompts,
        params,
        repeats,
        ks,
        allow_code_execution: opts.allow_code_execution,
        limits: Limits::default(),
    })
}

pub fn load_humaneval(store: &DataStore, opts: &TaskOptions) -> Result<CodeTask> {
    load(Kind::HumanEval, store, opts)
}

pub fn load_mbpp(store: &DataStore, opts: &TaskOptions) -> Result<CodeTask> {
    load(Kind::Mbpp, store, opts)
}

impl Task for CodeTask {
    fn name(&self) -> &str {
        match self.kind {
            Kind::HumanEval => "humaneval",
            Kind::Mbpp => "mbpp",
        }
    }
    fn output_type(&self) -> &'static str {
        "generate_until"
    }
    fn num_fewshot(&self) -> usize {
        if self.kind == Kind::Mbpp {
            3
        } else {
            0
        }
    }
    fn metrics(&self) -> Vec<MetricSpec> {
        self.ks
            .iter()
            .map(|k| MetricSpec::new(&format!("pass@{k}"), "create_test"))
            .collect()
    }
    fn config(&self) -> Value {
        json!({
            "task": self.name(), "output_type": "generate_until", "repeats": self.repeats,
            "generation_kwargs": self.params, "num_fewshot": self.num_fewshot(),
            "dataset_path": if self.kind == Kind::Mbpp { "mbpp (oe-eval 3-shot prompt)" } else { "openai_humaneval" },
            "metric_list": self.metrics().iter().map(|m| json!({"metric": m.name(), "aggregation": "mean", "higher_is_better": true})).collect::<Vec<_>>(),
            "sandbox": {"wall_s": self.limits.wall.as_secs_f64(), "memory_mb": self.limits.memory_mb},
        })
    }
    fn num_docs(&self) -> usize {
        self.docs.len()
    }
    fn samples(&self, limit: Option<usize>) -> Result<Vec<Sample>> {
        let n = limit.unwrap_or(self.docs.len()).min(self.docs.len());
        Ok((0..n)
            .map(|i| {
                let requests = (0..self.repeats)
                    .map(|r| {
                        let mut p = self.params.clone();
                        p.seed = p.seed.map(|s| s.wrapping_add(r as u64));
                        Request::generate(self.prompts[i].clone(), p)
                    })
                    .collect();
                let target = match self.kind {
                    Kind::HumanEval => self.docs[i]["test"].as_str().unwrap_or("").to_string(),
                    Kind::Mbpp => self.docs[i]["test_list"].to_string(),
                };
                Sample {
                    doc_id: i,
                    doc: self.docs[i].clone(),
                    target,
                    requests,
                }
            })
            .collect())
    }
    fn score(&self, sample: &Sample, responses: &[Response]) -> Result<SampleScore> {
        if !self.allow_code_execution {
            return Err(Error::InvalidArgument(
                "code execution is not allowed".into(),
            ));
        }
        let mut passed = 0;
        let mut outcomes = Vec::new();
        for r in responses {
            let text = r
                .text()
                .ok_or_else(|| Error::Backend("expected a generation".into()))?;
            let program = match self.kind {
                Kind::HumanEval => humaneval_program(&sample.doc, text)?,
                Kind::Mbpp => mbpp_program(&sample.doc, text)?,
            };
            let outcome = run_python(&program, &self.limits)?;
            passed += (outcome == Outcome::Passed) as usize;
            outcomes.push(format!("{outcome:?}"));
        }
        let n = responses.len();
        Ok(SampleScore {
            metrics: self
                .ks
                .iter()
                .map(|&k| (format!("pass@{k},create_test"), pass_at_k(n, passed, k)))
                .collect(),
            filtered: json!({"passed": passed, "n": n, "outcomes": outcomes}),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_assembled_from_prompt_completion_and_tests() {
        let doc = json!({"prompt": "def add(a, b):\n", "test": "def check(f):\n    assert f(1, 2) == 3\n", "entry_point": "add"});
        let p = humaneval_program(&doc, "    return a + b\n").unwrap();
        assert!(p.starts_with("def add(a, b):\n    return a + b"));
        assert!(p.ends_with("check(add)\n"));
        assert_eq!(run_python(&p, &Limits::default()).unwrap(), Outcome::Passed);
        let wrong = humaneval_program(&doc, "    return a - b\n").unwrap();
        assert!(matches!(
            run_python(&wrong, &Limits::default()).unwrap(),
            Outcome::Failed(_)
        ));
        // A chat answer restating the function in a fenced block.
        let chat = humaneval_program(
            &doc,
            "Sure:\n```python\ndef add(a, b):\n    return b + a\n```\n",
        )
        .unwrap();
        assert_eq!(
            run_python(&chat, &Limits::default()).unwrap(),
            Outcome::Passed
        );
    }
}
