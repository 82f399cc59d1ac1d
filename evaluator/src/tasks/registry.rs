//! Names users type → tasks and groups.

use super::{mmlu, Group, Resolved, Task, TaskOptions};
use crate::data::DataStore;
use crate::{Error, Result};

/// Built-in task and group names.
pub const KNOWN: &[&str] = &[
    "arc_easy",
    "arc_challenge",
    "hellaswag",
    "piqa",
    "boolq",
    "winogrande",
    "openbookqa",
    "mmlu",
    "gsm8k",
    "math500",
    "aime25",
    "humaneval",
    "mbpp",
];

fn unknown(name: &str) -> Error {
    Error::UnknownTask(
        name.to_string(),
        format!(
            "{}, mmlu_<subject>, mmlu_<category>, or a task .yaml file",
            KNOWN.join(", ")
        ),
    )
}

fn one(name: &str, store: &DataStore, opts: &TaskOptions) -> Result<Box<dyn Task>> {
    Ok(match name {
        "arc_easy" | "arc_challenge" => Box::new(super::arc::load(name, store, opts)?),
        "hellaswag" => Box::new(super::hellaswag::load(store, opts)?),
        "piqa" => Box::new(super::piqa::load(store, opts)?),
        "boolq" => Box::new(super::boolq::load(store, opts)?),
        "winogrande" => Box::new(super::winogrande::load(store, opts)?),
        "openbookqa" => Box::new(super::openbookqa::load(store, opts)?),
        "gsm8k" => Box::new(super::gsm8k::load(store, opts)?),
        "math500" => Box::new(super::math::load_math500(store, opts)?),
        "aime25" => Box::new(super::math::load_aime25(store, opts)?),
        "humaneval" => Box::new(super::code::load_humaneval(store, opts)?),
        "mbpp" => Box::new(super::code::load_mbpp(store, opts)?),
        other => {
            if let Some(subject) = other.strip_prefix("mmlu_") {
                if mmlu::SUBJECTS.iter().any(|(s, _)| *s == subject) {
                    return Ok(Box::new(mmlu::load_subject(subject, store, opts)?));
                }
            }
            return Err(unknown(other));
        }
    })
}

/// Resolves comma-separated task names (built-in names, MMLU subjects/categories, YAML files).
pub fn resolve(names: &[String], store: &DataStore, opts: &TaskOptions) -> Result<Resolved> {
    let mut tasks: Vec<Box<dyn Task>> = Vec::new();
    let mut groups: Vec<Group> = Vec::new();
    let push = |t: Box<dyn Task>, tasks: &mut Vec<Box<dyn Task>>| {
        if !tasks.iter().any(|x| x.name() == t.name()) {
            tasks.push(t);
        }
    };
    for name in names {
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        if name.ends_with(".yaml") || name.ends_with(".yml") {
            push(
                crate::task_file::load(std::path::Path::new(name), opts)?,
                &mut tasks,
            );
            continue;
        }
        let mmlu_groups = mmlu::groups();
        if let Some(g) = mmlu_groups.iter().find(|g| g.name == name) {
            for member in &g.members {
                if !tasks.iter().any(|t| t.name() == member) {
                    push(one(member, store, opts)?, &mut tasks);
                }
            }
            // `mmlu` reports its categories too, as lm-eval does.
            for g in mmlu_groups {
                let covered = g
                    .members
                    .iter()
                    .all(|m| tasks.iter().any(|t| t.name() == m));
                if covered && !groups.iter().any(|x| x.name == g.name) {
                    groups.push(g);
                }
            }
            continue;
        }
        push(one(name, store, opts)?, &mut tasks);
    }
    if tasks.is_empty() {
        return Err(Error::InvalidArgument("no tasks given (--tasks)".into()));
    }
    Ok(Resolved { tasks, groups })
}
