//! ARC-Easy / ARC-Challenge (test split): "Question: {q}\nAnswer:" and " {choice}"; acc, acc_norm.

use super::fewshot::{build_mc, McItem};
use super::multiple_choice::MultipleChoiceTask;
use super::{field_str, field_strs, mc_config, TaskOptions};
use crate::data::DataStore;
use crate::{Error, Result};

pub fn load(name: &str, store: &DataStore, opts: &TaskOptions) -> Result<MultipleChoiceTask> {
    let rel = format!("{name}/test.jsonl");
    let rows = store.read_jsonl(name, &rel)?;
    let items = rows
        .iter()
        .map(|r| {
            let doc = &r["doc"];
            let query = field_str(doc, "query", &rel)?;
            let choices = field_strs(doc, "choices", &rel)?;
            let gold = doc["gold"]
                .as_u64()
                .map(|g| g as usize)
                .filter(|g| *g < choices.len());
            let gold = gold.ok_or_else(|| Error::BadData {
                path: rel.clone(),
                message: "a document has no valid `gold`".into(),
            })?;
            Ok(McItem {
                doc: doc.clone(),
                query,
                choices,
                gold,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let k = opts.num_fewshot.unwrap_or(0);
    let dataset = if name == "arc_easy" {
        "ai2_arc/ARC-Easy"
    } else {
        "ai2_arc/ARC-Challenge"
    };
    Ok(MultipleChoiceTask {
        name: name.to_string(),
        docs: build_mc(items, "", k),
        num_fewshot: k,
        acc_norm: true,
        config: mc_config(name, dataset, "test", k, &["acc", "acc_norm"]),
    })
}
