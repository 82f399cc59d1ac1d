//! MATH-500 and AIME 2025: the model reasons and boxes its answer; the last `\boxed{…}` (or "The final
//! answer is …") is compared with the reference after the usual MATH normalisation. AIME runs `repeats`
//! samples per problem (Evalchemy: 10 at temperature 0.7) and reports the mean accuracy over repeats
//! with the standard error across them.

use serde_json::{json, Value};

use super::{
    apply_gen_kwargs, field_str, Aggregate, MetricSpec, Sample, SampleScore, Task, TaskOptions,
};
use crate::data::DataStore;
use crate::metrics::{mean, mean_stderr};
use crate::request::{GenParams, Request, Response};
use crate::{Error, Result};

const INSTRUCTION: &str = "Please reason step by step, and put your final answer within \\boxed{}.";

/// The content of the last `\boxed{…}` (balanced braces) or `\fbox{…}`.
pub fn last_boxed(text: &str) -> Option<String> {
    let start = text.rfind("\\boxed").or_else(|| text.rfind("\\fbox"))?;
    let rest = &text[start..];
    let open = rest.find('{')?;
    let mut depth = 0;
    for (i, c) in rest[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(rest[open + 1..open + i].to_string());
                }
            }
            _ => {}
        }
    }
    None
}

/// The answer a response commits to: last boxed, else "final answer is X", else `[invalid]`.
pub fn extract_answer(text: &str) -> String {
    if let Some(b) = last_boxed(text) {
        return b;
    }
    if let Some(i) = text.rfind("final answer is") {
        let tail = text[i + "final answer is".len()..].trim();
        let end = tail
            .find(". I hope")
            .or_else(|| tail.find('\n'))
            .unwrap_or(tail.len());
        return tail[..end]
            .trim()
            .trim_end_matches('.')
            .trim_matches('$')
            .to_string();
    }
    "[invalid]".to_string()
}

fn fix_fracs(s: &str) -> String {
    // \frac12 → \frac{1}{2}, \frac1{2} → \frac{1}{2}
    let parts: Vec<&str> = s.split("\\frac").collect();
    let mut out = parts[0].to_string();
    for p in &parts[1..] {
        out.push_str("\\frac");
        let chars: Vec<char> = p.chars().collect();
        if chars.first() == Some(&'{') || chars.len() < 2 {
            out.push_str(p);
            continue;
        }
        let (a, b) = (chars[0], chars[1]);
        let tail: String = chars[2..].iter().collect();
        if b == '{' {
            out.push_str(&format!("{{{a}}}{b}{tail}"));
        } else {
            out.push_str(&format!("{{{a}}}{{{b}}}{tail}"));
        }
    }
    out
}

/// Hendrycks' MATH `strip_string`, the normalisation lm-eval's minerva_math and Evalchemy build on.
pub fn normalize(answer: &str) -> String {
    let mut s = answer
        .replace('\n', "")
        .replace("\\!", "")
        .replace("\\\\", "\\");
    s = s.replace("tfrac", "frac").replace("dfrac", "frac");
    s = s.replace("\\left", "").replace("\\right", "");
    s = s.replace("^{\\circ}", "").replace("^\\circ", "");
    s = s.replace("\\$", "").replace('$', "");
    if let Some(i) = s.find("\\text{ ") {
        s.truncate(i);
    }
    s = s.replace("\\%", "").replace('%', "");
    s = s.replace(" .", " 0.").replace("{.", "{0.");
    if s.starts_with('.') {
        s.insert(0, '0');
    }
    if let Some((l, r)) = s.split_once('=') {
        if l.trim().len() <= 2 && !r.contains('=') {
            s = r.to_string();
        }
    }
    // \sqrt3 → \sqrt{3}
    let mut fixed = String::new();
    let mut it = s.split("\\sqrt");
    fixed.push_str(it.next().unwrap_or(""));
    for p in it {
        fixed.push_str("\\sqrt");
        match p.chars().next() {
            Some(c) if c != '{' => fixed.push_str(&format!("{{{c}}}{}", &p[c.len_utf8()..])),
            _ => fixed.push_str(p),
        }
    }
    s = fixed.replace(' ', "");
    s = fix_fracs(&s);
    if s == "0.5" {
        s = "\\frac{1}{2}".into();
    }
    // a/b with integers → \frac{a}{b}
    if let Some((a, b)) = s.split_once('/') {
        if a.parse::<i64>().is_ok() && b.parse::<i64>().is_ok() {
            s = format!("\\frac{{{a}}}{{{b}}}");
        }
    }
    s.trim_end_matches('.').to_string()
}

pub fn is_equiv(prediction: &str, reference: &str) -> bool {
    let (p, r) = (normalize(prediction), normalize(reference));
    if p == r {
        return true;
    }
    // Numbers written differently (e.g. "70" vs "070", "1,000" vs "1000").
    let num = |s: &str| {
        s.replace(',', "")
            .replace("\\text{", "")
            .trim_end_matches('}')
            .parse::<f64>()
            .ok()
    };
    matches!((num(&p), num(&r)), (Some(a), Some(b)) if (a - b).abs() < 1e-9)
}

pub struct MathTask {
    name: &'static str,
    /// (problem, reference answer, document)
    docs: Vec<(String, String, Value)>,
    params: GenParams,
    repeats: usize,
}

fn build(
    name: &'static str,
    docs: Vec<(String, String, Value)>,
    opts: &TaskOptions,
    repeats: usize,
    temperature: f64,
) -> Result<MathTask> {
    if opts.num_fewshot.is_some_and(|k| k > 0) {
        return Err(Error::InvalidArgument(format!(
            "{name} is 0-shot; --num-fewshot cannot change it"
        )));
    }
    let mut params = GenParams {
        until: Vec::new(),
        max_gen_toks: 2048,
        temperature,
        top_p: if temperature > 0.0 { 0.95 } else { 1.0 },
        seed: Some(opts.seed),
    };
    apply_gen_kwargs(&mut params, &opts.gen_kwargs)?;
    Ok(MathTask {
        name,
        docs,
        params,
        repeats: opts.repeats.unwrap_or(repeats).max(1),
    })
}

pub fn load_math500(store: &DataStore, opts: &TaskOptions) -> Result<MathTask> {
    let rel = "math500/test.jsonl";
    let docs = store
        .read_jsonl("math500", rel)?
        .into_iter()
        .map(|r| {
            let d = r["doc"].clone();
            let solution = field_str(&d, "solution", rel)?;
            let answer = last_boxed(&solution).unwrap_or(field_str(&d, "answer", rel)?);
            Ok((field_str(&d, "problem", rel)?, answer, d))
        })
        .collect::<Result<_>>()?;
    build("math500", docs, opts, 1, 0.0)
}

pub fn load_aime25(store: &DataStore, opts: &TaskOptions) -> Result<MathTask> {
    let rel = "aime25/test.jsonl";
    let docs = store
        .read_jsonl("aime25", rel)?
        .into_iter()
        .map(|d| {
            let answer = match &d["answer"] {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => {
                    return Err(Error::BadData {
                        path: rel.into(),
                        message: "a problem has no answer".into(),
                    })
                }
            };
            Ok((field_str(&d, "question", rel)?, answer, d))
        })
        .collect::<Result<_>>()?;
    build("aime25", docs, opts, 10, 0.7)
}

impl Task for MathTask {
    fn name(&self) -> &str {
        self.name
    }
    fn output_type(&self) -> &'static str {
        "generate_until"
    }
    fn num_fewshot(&self) -> usize {
        0
    }
    fn metrics(&self) -> Vec<MetricSpec> {
        vec![MetricSpec::new("exact_match", "none")]
    }
    fn config(&self) -> Value {
        json!({"task": self.name, "output_type": "generate_until", "repeats": self.repeats,
               "doc_to_text": format!("{{{{problem}}}}\n{INSTRUCTION}"), "generation_kwargs": self.params,
               "num_fewshot": 0})
    }
    fn num_docs(&self) -> usize {
        self.docs.len()
    }
    fn samples(&self, limit: Option<usize>) -> Result<Vec<Sample>> {
        let n = limit.unwrap_or(self.docs.len()).min(self.docs.len());
        Ok(self.docs[..n]
            .iter()
            .enumerate()
            .map(|(i, (problem, answer, doc))| Sample {
                doc_id: i,
                doc: doc.clone(),
                target: answer.clone(),
                requests: (0..self.repeats)
                    .map(|r| {
                        let mut p = self.params.clone();
                        p.seed = p.seed.map(|s| s.wrapping_add(r as u64));
                        Request::generate(format!("{problem}\n{INSTRUCTION}"), p)
                    })
                    .collect(),
            })
            .collect())
    }
    fn score(&self, sample: &Sample, responses: &[Response]) -> Result<SampleScore> {
        let answers: Vec<String> = responses
            .iter()
            .map(|r| {
                r.text()
                    .map(extract_answer)
                    .ok_or_else(|| Error::Backend("expected a generation".into()))
            })
            .collect::<Result<_>>()?;
        let correct: Vec<f64> = answers
            .iter()
            .map(|a| is_equiv(a, &sample.target) as u8 as f64)
            .collect();
        let mut metrics = vec![("exact_match,none".to_string(), mean(&correct))];
        // Per-repeat values, for the across-repeats stderr.
        for (r, c) in correct.iter().enumerate() {
            metrics.push((format!("repeat{r}"), *c));
        }
        Ok(SampleScore {
            metrics,
            filtered: json!(answers),
        })
    }
    /// With repeats: accuracy of each repeat over the documents, then mean ± stderr across repeats.
    fn aggregate(&self, scores: &[SampleScore]) -> Vec<Aggregate> {
        let key = "exact_match,none".to_string();
        if self.repeats <= 1 {
            let v: Vec<f64> = scores.iter().filter_map(|s| s.get(&key)).collect();
            return vec![Aggregate {
                key,
                value: mean(&v),
                stderr: mean_stderr(&v),
            }];
        }
        let per_repeat: Vec<f64> = (0..self.repeats)
            .map(|r| {
                mean(
                    &scores
                        .iter()
                        .filter_map(|s| s.get(&format!("repeat{r}")))
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        vec![Aggregate {
            key,
            value: mean(&per_repeat),
            stderr: mean_stderr(&per_repeat),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxed_answers_and_normalisation() {
        assert_eq!(
            last_boxed("so \\boxed{1} then \\boxed{\\frac{1}{2}}.").as_deref(),
            Some("\\frac{1}{2}")
        );
        assert!(is_equiv("\\dfrac12", "\\frac{1}{2}"));
        assert!(is_equiv("0.5", "\\frac{1}{2}"));
        assert!(is_equiv(
            "\\left( 3, \\frac{\\pi}{2} \\right)",
            "(3,\\frac{\\pi}{2})"
        ));
        assert!(is_equiv("x = 5", "5"));
        assert!(is_equiv("070", "70"));
        assert!(!is_equiv("71", "70"));
        assert_eq!(
            extract_answer("The final answer is $42$. I hope it is correct."),
            "42"
        );
        assert_eq!(extract_answer("no answer"), "[invalid]");
    }
}
