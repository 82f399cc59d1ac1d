//! lm-eval's `multiple_choice` output type: one loglikelihood request per choice; `acc` picks the choice
//! with the highest log-probability, `acc_norm` divides each by the choice's length in characters first.

use serde_json::{json, Value};

use super::{MetricSpec, Sample, SampleScore, Task};
use crate::metrics::argmax;
use crate::request::{Request, Response};
use crate::{Error, Result};

/// One document of a multiple-choice task, already rendered.
#[derive(Debug, Clone)]
pub struct McDoc {
    pub doc: Value,
    /// The context of each choice's request: one shared context, or one per choice (Winogrande's
    /// partial evaluation scores the same continuation after different contexts).
    pub contexts: Vec<String>,
    /// The continuation of each request (with the target delimiter in front).
    pub continuations: Vec<String>,
    /// The choices as the task defines them (what `acc_norm` measures the length of).
    pub choices: Vec<String>,
    pub gold: usize,
}

impl McDoc {
    /// The common case: one context, choices appended after `delimiter`.
    pub fn shared(
        doc: Value,
        context: String,
        choices: Vec<String>,
        gold: usize,
        delimiter: &str,
    ) -> Self {
        let continuations = choices.iter().map(|c| format!("{delimiter}{c}")).collect();
        Self {
            doc,
            contexts: vec![context],
            continuations,
            choices,
            gold,
        }
    }

    fn context(&self, i: usize) -> &str {
        if self.contexts.len() == 1 {
            &self.contexts[0]
        } else {
            &self.contexts[i]
        }
    }

    pub fn requests(&self) -> Vec<Request> {
        (0..self.continuations.len())
            .map(|i| Request::loglikelihood(self.context(i), self.continuations[i].clone()))
            .collect()
    }
}

pub struct MultipleChoiceTask {
    pub name: String,
    pub docs: Vec<McDoc>,
    pub num_fewshot: usize,
    pub acc_norm: bool,
    pub config: Value,
}

/// `acc` and, when asked, `acc_norm` of one document from its choices' log-probabilities.
pub fn score_choices(
    lls: &[f64],
    choices: &[String],
    gold: usize,
    acc_norm: bool,
) -> Vec<(String, f64)> {
    let acc = (argmax(lls) == Some(gold)) as u8 as f64;
    let mut out = vec![("acc,none".to_string(), acc)];
    if acc_norm {
        let normed: Vec<f64> = lls
            .iter()
            .zip(choices)
            .map(|(ll, c)| ll / c.chars().count().max(1) as f64)
            .collect();
        out.push((
            "acc_norm,none".to_string(),
            (argmax(&normed) == Some(gold)) as u8 as f64,
        ));
    }
    out
}

impl Task for MultipleChoiceTask {
    fn name(&self) -> &str {
        &self.name
    }
    fn output_type(&self) -> &'static str {
        "multiple_choice"
    }
    fn num_fewshot(&self) -> usize {
        self.num_fewshot
    }
    fn metrics(&self) -> Vec<MetricSpec> {
        let mut m = vec![MetricSpec::new("acc", "none")];
        if self.acc_norm {
            m.push(MetricSpec::new("acc_norm", "none"));
        }
        m
    }
    fn config(&self) -> Value {
        self.config.clone()
    }
    fn num_docs(&self) -> usize {
        self.docs.len()
    }
    fn samples(&self, limit: Option<usize>) -> Result<Vec<Sample>> {
        let n = limit.unwrap_or(self.docs.len()).min(self.docs.len());
        Ok(self.docs[..n]
            .iter()
            .enumerate()
            .map(|(doc_id, d)| Sample {
                doc_id,
                doc: d.doc.clone(),
                target: d.gold.to_string(),
                requests: d.requests(),
            })
            .collect())
    }
    fn score(&self, sample: &Sample, responses: &[Response]) -> Result<SampleScore> {
        let d = &self.docs[sample.doc_id];
        let lls = responses
            .iter()
            .map(|r| {
                r.logprob().map(|(ll, _)| ll).ok_or_else(|| {
                    Error::Backend(format!("{}: expected a loglikelihood response", self.name))
                })
            })
            .collect::<Result<Vec<f64>>>()?;
        if lls.len() != d.choices.len() {
            return Err(Error::Backend(format!(
                "{}: {} responses for {} choices",
                self.name,
                lls.len(),
                d.choices.len()
            )));
        }
        let filtered = json!(lls
            .iter()
            .zip(responses)
            .map(|(ll, r)| json!([ll, r.logprob().map(|(_, g)| g).unwrap_or(false)]))
            .collect::<Vec<_>>());
        Ok(SampleScore {
            metrics: score_choices(&lls, &d.choices, d.gold, self.acc_norm),
            filtered,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acc_and_acc_norm_differ_when_a_long_choice_wins_on_total_logprob() {
        // The long correct choice has the lower total log-probability but the higher per-character one.
        let choices = vec!["no".to_string(), "a much longer correct answer".to_string()];
        let lls = [-3.0, -10.0];
        let m = score_choices(&lls, &choices, 1, true);
        assert_eq!(m[0], ("acc,none".to_string(), 0.0));
        assert_eq!(m[1], ("acc_norm,none".to_string(), 1.0));
        // And agree when the totals already point to the gold choice.
        let m = score_choices(&[-1.0, -30.0], &choices, 0, true);
        assert_eq!((m[0].1, m[1].1), (1.0, 1.0));
    }

    #[test]
    fn shared_context_puts_the_delimiter_before_each_choice() {
        let d = McDoc::shared(
            Value::Null,
            "Q: x\nAnswer:".into(),
            vec!["a".into(), "b".into()],
            0,
            " ",
        );
        let r = d.requests();
        assert_eq!(r[1], Request::loglikelihood("Q: x\nAnswer:", " b"));
    }
}
