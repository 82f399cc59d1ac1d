//! BoolQ (validation): "{passage}\nQuestion: {question}?\nAnswer:" and " no" / " yes"; acc.

use super::fewshot::{build_mc, McItem};
use super::multiple_choice::MultipleChoiceTask;
use super::{field_str, mc_config, TaskOptions};
use crate::data::DataStore;
use crate::{Error, Result};

pub fn load(store: &DataStore, opts: &TaskOptions) -> Result<MultipleChoiceTask> {
    let rel = "boolq/validation.jsonl";
    let rows = store.read_jsonl("boolq", rel)?;
    let items = rows
        .iter()
        .map(|d| {
            let answer = d["answer"].as_bool().ok_or_else(|| Error::BadData {
                path: rel.into(),
                message: "a document has no boolean `answer`".into(),
            })?;
            Ok(McItem {
                doc: d.clone(),
                query: format!(
                    "{}\nQuestion: {}?\nAnswer:",
                    field_str(d, "passage", rel)?,
                    field_str(d, "question", rel)?
                ),
                choices: vec!["no".into(), "yes".into()],
                gold: answer as usize,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let k = opts.num_fewshot.unwrap_or(0);
    Ok(MultipleChoiceTask {
        name: "boolq".into(),
        docs: build_mc(items, "", k),
        num_fewshot: k,
        acc_norm: false,
        config: mc_config("boolq", "super_glue/boolq", "validation", k, &["acc"]),
    })
}
