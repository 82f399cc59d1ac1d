//! OpenBookQA: "{question_stem}" and " {choice}"; acc, acc_norm. The registry package carries only the
//! validation split (lm-eval scores test; both have 500 questions).

use super::fewshot::{build_mc, McItem};
use super::multiple_choice::MultipleChoiceTask;
use super::{field_str, field_strs, mc_config, TaskOptions};
use crate::data::DataStore;
use crate::{Error, Result};

pub fn load(store: &DataStore, opts: &TaskOptions) -> Result<MultipleChoiceTask> {
    let rel = "openbookqa/validation.jsonl";
    let rows = store.read_jsonl("openbookqa", rel)?;
    let items = rows
        .iter()
        .map(|d| {
            let choices = field_strs(&d["choices"], "text", rel)?;
            let labels = field_strs(&d["choices"], "label", rel)?;
            let key = field_str(d, "answerKey", rel)?;
            let gold =
                labels
                    .iter()
                    .position(|l| l == key.trim())
                    .ok_or_else(|| Error::BadData {
                        path: rel.into(),
                        message: format!("answerKey `{key}` is not among the labels"),
                    })?;
            Ok(McItem {
                doc: d.clone(),
                query: field_str(d, "question_stem", rel)?,
                choices,
                gold,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let k = opts.num_fewshot.unwrap_or(0);
    Ok(MultipleChoiceTask {
        name: "openbookqa".into(),
        docs: build_mc(items, "", k),
        num_fewshot: k,
        acc_norm: true,
        config: mc_config(
            "openbookqa",
            "openbookqa/main",
            "validation",
            k,
            &["acc", "acc_norm"],
        ),
    })
}
