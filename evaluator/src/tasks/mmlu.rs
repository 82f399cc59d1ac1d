//! MMLU: 57 subject tasks `mmlu_<subject>` (test split), grouped into four categories and `mmlu`, each
//! group's score weighted by its members' sizes. 0-shot by default; k-shot takes the first k of `dev`.

use super::fewshot::context;
use super::multiple_choice::{McDoc, MultipleChoiceTask};
use super::{field_str, field_strs, mc_config, Group, TaskOptions};
use crate::data::DataStore;
use crate::{Error, Result};

/// (subject, category) for all 57 subjects.
pub const SUBJECTS: [(&str, &str); 57] = [
    ("abstract_algebra", "stem"),
    ("anatomy", "stem"),
    ("astronomy", "stem"),
    ("business_ethics", "other"),
    ("clinical_knowledge", "other"),
    ("college_biology", "stem"),
    ("college_chemistry", "stem"),
    ("college_computer_science", "stem"),
    ("college_mathematics", "stem"),
    ("college_medicine", "other"),
    ("college_physics", "stem"),
    ("computer_security", "stem"),
    ("conceptual_physics", "stem"),
    ("econometrics", "social_sciences"),
    ("electrical_engineering", "stem"),
    ("elementary_mathematics", "stem"),
    ("formal_logic", "humanities"),
    ("global_facts", "other"),
    ("high_school_biology", "stem"),
    ("high_school_chemistry", "stem"),
    ("high_school_computer_science", "stem"),
    ("high_school_european_history", "humanities"),
    ("high_school_geography", "social_sciences"),
    ("high_school_government_and_politics", "social_sciences"),
    ("high_school_macroeconomics", "social_sciences"),
    ("high_school_mathematics", "stem"),
    ("high_school_microeconomics", "social_sciences"),
    ("high_school_physics", "stem"),
    ("high_school_psychology", "social_sciences"),
    ("high_school_statistics", "stem"),
    ("high_school_us_history", "humanities"),
    ("high_school_world_history", "humanities"),
    ("human_aging", "other"),
    ("human_sexuality", "social_sciences"),
    ("international_law", "humanities"),
    ("jurisprudence", "humanities"),
    ("logical_fallacies", "humanities"),
    ("machine_learning", "stem"),
    ("management", "other"),
    ("marketing", "other"),
    ("medical_genetics", "other"),
    ("miscellaneous", "other"),
    ("moral_disputes", "humanities"),
    ("moral_scenarios", "humanities"),
    ("nutrition", "other"),
    ("philosophy", "humanities"),
    ("prehistory", "humanities"),
    ("professional_accounting", "other"),
    ("professional_law", "humanities"),
    ("professional_medicine", "other"),
    ("professional_psychology", "social_sciences"),
    ("public_relations", "social_sciences"),
    ("security_studies", "social_sciences"),
    ("sociology", "social_sciences"),
    ("us_foreign_policy", "social_sciences"),
    ("virology", "other"),
    ("world_religions", "humanities"),
];

pub const CATEGORIES: [&str; 4] = ["stem", "other", "social_sciences", "humanities"];

const LETTERS: [&str; 4] = ["A", "B", "C", "D"];

/// lm-eval's MMLU prompt for one question.
pub fn query(question: &str, choices: &[String]) -> String {
    let mut s = question.trim().to_string();
    for (l, c) in LETTERS.iter().zip(choices) {
        s.push_str(&format!("\n{l}. {c}"));
    }
    s.push_str("\nAnswer:");
    s
}

fn parse(d: &serde_json::Value, rel: &str) -> Result<(String, usize)> {
    let choices = field_strs(d, "choices", rel)?;
    if choices.len() != 4 {
        return Err(Error::BadData {
            path: rel.into(),
            message: format!("{} choices, expected 4", choices.len()),
        });
    }
    let gold = d["answer"]
        .as_u64()
        .filter(|g| *g < 4)
        .ok_or_else(|| Error::BadData {
            path: rel.into(),
            message: "a document has no valid `answer`".into(),
        })? as usize;
    Ok((query(&field_str(d, "question", rel)?, &choices), gold))
}

pub fn load_subject(
    subject: &str,
    store: &DataStore,
    opts: &TaskOptions,
) -> Result<MultipleChoiceTask> {
    let name = format!("mmlu_{subject}");
    let k = opts.num_fewshot.unwrap_or(0);
    let description = format!(
        "The following are multiple choice questions (with answers) about {}.\n\n",
        subject.replace('_', " ")
    );
    let shots: Vec<String> = if k > 0 {
        let rel = format!("mmlu/{subject}/dev.jsonl");
        let dev = store.read_jsonl(&name, &rel)?;
        if dev.len() < k {
            return Err(Error::InvalidArgument(format!(
                "{name}: --num-fewshot {k} but the dev split has only {} examples",
                dev.len()
            )));
        }
        dev[..k]
            .iter()
            .map(|d| parse(d, &rel).map(|(q, g)| format!("{q} {}", LETTERS[g])))
            .collect::<Result<_>>()?
    } else {
        Vec::new()
    };
    let rel = format!("mmlu/{subject}/test.jsonl");
    let docs = store
        .read_jsonl(&name, &rel)?
        .into_iter()
        .map(|d| {
            let (q, gold) = parse(&d, &rel)?;
            Ok(McDoc::shared(
                d,
                context(&description, &shots, &q),
                LETTERS.iter().map(|l| l.to_string()).collect(),
                gold,
                " ",
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut config = mc_config(&name, "hails/mmlu_no_train", "test", k, &["acc"]);
    config["description"] = description.into();
    config["fewshot_split"] = "dev".into();
    Ok(MultipleChoiceTask {
        name,
        docs,
        num_fewshot: k,
        acc_norm: false,
        config,
    })
}

/// The group structure: `mmlu_<category>` of subjects, and `mmlu` of all subjects.
pub fn groups() -> Vec<Group> {
    let mut out: Vec<Group> = CATEGORIES
        .iter()
        .map(|c| Group {
            name: format!("mmlu_{c}"),
            members: SUBJECTS
                .iter()
                .filter(|(_, cat)| cat == c)
                .map(|(s, _)| format!("mmlu_{s}"))
                .collect(),
        })
        .collect();
    out.push(Group {
        name: "mmlu".into(),
        members: SUBJECTS.iter().map(|(s, _)| format!("mmlu_{s}")).collect(),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_and_categories() {
        let q = query(
            " What is 2+2? ",
            &["1".into(), "2".into(), "3".into(), "4".into()],
        );
        assert_eq!(q, "What is 2+2?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:");
        let g = groups();
        let total: usize = g[..4].iter().map(|g| g.members.len()).sum();
        assert_eq!(total, 57);
        assert_eq!(g[4].members.len(), 57);
    }
}
