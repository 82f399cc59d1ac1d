//! HellaSwag (validation) with lm-eval's preprocessing of the WikiHow artifacts; acc, acc_norm.

use super::fewshot::{build_mc, McItem};
use super::multiple_choice::MultipleChoiceTask;
use super::{field_str, field_strs, mc_config, TaskOptions};
use crate::data::DataStore;
use crate::{Error, Result};

/// lm-eval's `preprocess`: trim, " [title]" → ". ", drop bracketed tags, collapse double spaces.
pub fn preprocess(text: &str) -> String {
    let t = text.trim().replace(" [title]", ". ");
    let mut out = String::with_capacity(t.len());
    let mut rest = t.as_str();
    // Non-greedy `\[.*?\]`: each '[' up to the next ']' goes; an unmatched '[' stays.
    while let Some(open) = rest.find('[') {
        match rest[open..].find(']') {
            Some(close) => {
                out.push_str(&rest[..open]);
                rest = &rest[open + close + 1..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out.replace("  ", " ")
}

/// Python's `str.capitalize`: first character upper-cased, the rest lower-cased.
pub fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first
            .to_uppercase()
            .chain(chars.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

pub fn load(store: &DataStore, opts: &TaskOptions) -> Result<MultipleChoiceTask> {
    let rel = "hellaswag/validation.jsonl";
    let rows = store.read_jsonl("hellaswag", rel)?;
    let items = rows
        .iter()
        .map(|d| {
            let ctx = format!(
                "{} {}",
                field_str(d, "ctx_a", rel)?,
                capitalize(&field_str(d, "ctx_b", rel)?)
            );
            let query = preprocess(&format!("{}: {ctx}", field_str(d, "activity_label", rel)?));
            let choices: Vec<String> = field_strs(d, "endings", rel)?
                .iter()
                .map(|e| preprocess(e))
                .collect();
            let gold = field_str(d, "label", rel)?
                .parse::<usize>()
                .ok()
                .filter(|g| *g < choices.len())
                .ok_or_else(|| Error::BadData {
                    path: rel.into(),
                    message: "a document has no valid `label`".into(),
                })?;
            Ok(McItem {
                doc: d.clone(),
                query,
                choices,
                gold,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let k = opts.num_fewshot.unwrap_or(0);
    Ok(MultipleChoiceTask {
        name: "hellaswag".into(),
        docs: build_mc(items, "", k),
        num_fewshot: k,
        acc_norm: true,
        config: mc_config(
            "hellaswag",
            "hellaswag",
            "validation",
            k,
            &["acc", "acc_norm"],
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocessing_matches_lm_eval() {
        assert_eq!(
            preprocess(" Home and Garden: [header] How to fix a tap [title] Turn off the water. "),
            "Home and Garden: How to fix a tap. Turn off the water."
        );
        assert_eq!(preprocess("a [step] b"), "a b");
        assert_eq!(capitalize("then THE man"), "Then the man");
        assert_eq!(capitalize(""), "");
    }
}
