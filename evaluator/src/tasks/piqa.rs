//! PIQA (validation): "Question: {goal}\nAnswer:" and " {sol}"; acc, acc_norm.

use super::fewshot::{build_mc, McItem};
use super::multiple_choice::MultipleChoiceTask;
use super::{field_str, mc_config, TaskOptions};
use crate::data::DataStore;
use crate::{Error, Result};

pub fn load(store: &DataStore, opts: &TaskOptions) -> Result<MultipleChoiceTask> {
    let rel = "piqa/validation.jsonl";
    let rows = store.read_jsonl("piqa", rel)?;
    let items = rows
        .iter()
        .map(|d| {
            let gold = d["label"]
                .as_u64()
                .filter(|g| *g < 2)
                .ok_or_else(|| Error::BadData {
                    path: rel.into(),
                    message: "a document has no valid `label`".into(),
                })? as usize;
            Ok(McItem {
                doc: d.clone(),
                query: format!("Question: {}\nAnswer:", field_str(d, "goal", rel)?),
                choices: vec![field_str(d, "sol1", rel)?, field_str(d, "sol2", rel)?],
                gold,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let k = opts.num_fewshot.unwrap_or(0);
    Ok(MultipleChoiceTask {
        name: "piqa".into(),
        docs: build_mc(items, "", k),
        num_fewshot: k,
        acc_norm: true,
        config: mc_config("piqa", "piqa", "validation", k, &["acc", "acc_norm"]),
    })
}
