//! Winogrande (xl, validation) with partial evaluation: each option fills the blank and becomes the
//! context; the shared continuation is the rest of the sentence. acc only.

use serde_json::Value;

use super::fewshot::{context, pick, FEWSHOT_SEED};
use super::multiple_choice::{McDoc, MultipleChoiceTask};
use super::{field_str, mc_config, TaskOptions};
use crate::data::DataStore;
use crate::{Error, Result};

/// (contexts per option, the shared target without delimiter, gold index) of one document.
pub fn partial(doc: &Value, what: &str) -> Result<(Vec<String>, String, usize)> {
    let sentence = field_str(doc, "sentence", what)?;
    let idx = sentence.find('_').ok_or_else(|| Error::BadData {
        path: what.into(),
        message: format!("sentence without a blank: {sentence}"),
    })?;
    let options = [
        field_str(doc, "option1", what)?,
        field_str(doc, "option2", what)?,
    ];
    let contexts = options
        .iter()
        .map(|o| format!("{}{o}", &sentence[..idx]))
        .collect();
    let target = sentence[idx + 1..].trim().to_string();
    let gold = match field_str(doc, "answer", what)?.as_str() {
        "1" => 0,
        "2" => 1,
        other => {
            return Err(Error::BadData {
                path: what.into(),
                message: format!("answer `{other}` is not 1 or 2"),
            })
        }
    };
    Ok((contexts, target, gold))
}

pub fn load(store: &DataStore, opts: &TaskOptions) -> Result<MultipleChoiceTask> {
    let rel = "winogrande/validation.jsonl";
    let rows = store.read_jsonl("winogrande", rel)?;
    let parts = rows
        .iter()
        .map(|d| partial(d, rel))
        .collect::<Result<Vec<_>>>()?;
    let k = opts.num_fewshot.unwrap_or(0);
    let docs = parts
        .iter()
        .enumerate()
        .map(|(i, (contexts, target, gold))| {
            let shots: Vec<String> = pick(parts.len(), Some(i), k, FEWSHOT_SEED)
                .into_iter()
                .map(|j| format!("{} {}", parts[j].0[parts[j].2], parts[j].1))
                .collect();
            McDoc {
                doc: rows[i].clone(),
                contexts: contexts.iter().map(|c| context("", &shots, c)).collect(),
                continuations: vec![format!(" {target}"); contexts.len()],
                choices: contexts.clone(),
                gold: *gold,
            }
        })
        .collect();
    Ok(MultipleChoiceTask {
        name: "winogrande".into(),
        docs,
        num_fewshot: k,
        acc_norm: false,
        config: mc_config(
            "winogrande",
            "winogrande/winogrande_xl",
            "validation",
            k,
            &["acc"],
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blank_splits_context_and_continuation() {
        let doc = serde_json::json!({
            "sentence": "Sarah was a much better surgeon than Maria so _ always got the harder cases.",
            "option1": "Sarah", "option2": "Maria", "answer": "1"
        });
        let (ctx, target, gold) = partial(&doc, "t").unwrap();
        assert_eq!(
            ctx[1],
            "Sarah was a much better surgeon than Maria so Maria"
        );
        assert_eq!(target, "always got the harder cases.");
        assert_eq!(gold, 0);
    }
}
