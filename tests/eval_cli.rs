//! `ember eval` / `ember data` through the binary with a tiny random model and a custom YAML task:
//! batch sizes agree, the cache makes a re-run call no model, the regression gate trips on a planted
//! drop, dedup finds planted duplicates, and bad input fails with a clear message.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ember_models::config::Architecture;
use ember_models::testing::{write_tiny_model, TinyFormat};
use serde_json::Value;

fn ember(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ember"));
    c.env("EMBER_HOME", home).env("EMBER_LOG", "warn");
    c
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("ember runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A multiple-choice YAML task over 12 documents.
fn write_task(dir: &Path) -> PathBuf {
    let mut rows = String::new();
    for i in 0..12 {
        rows.push_str(
            &serde_json::json!({
                "q": format!("What comes after {i}?"),
                "choices": [format!("{}", i + 1), format!("{}", i + 7), "the end".to_string()],
                "a": 0,
            })
            .to_string(),
        );
        rows.push('\n');
    }
    std::fs::write(dir.join("count.jsonl"), rows).unwrap();
    let yaml = "task: count_next\ndataset_path: count.jsonl\noutput_type: multiple_choice\n\
                doc_to_text: \"Question: {{q}}\\nAnswer:\"\ndoc_to_choice: \"{{choices}}\"\ndoc_to_target: \"{{a}}\"\nmetric: acc_norm\n";
    let path = dir.join("count.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn results(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn samples(dir: &Path) -> Vec<Value> {
    let file = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("samples_count_next")
        })
        .expect("a samples file");
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn batch_sizes_agree_and_the_cache_answers_a_rerun() {
    let tmp = tempfile::tempdir().unwrap();
    let model = write_tiny_model(
        &tmp.path().join("model"),
        Architecture::Llama,
        TinyFormat::HfDir,
        3,
    )
    .unwrap();
    let task = write_task(tmp.path());
    let mut per_batch = Vec::new();
    for bs in ["1", "8", "32"] {
        let out_dir = tmp.path().join(format!("out{bs}"));
        let out = run(ember(tmp.path())
            .args([
                "eval",
                "--model",
                model.to_str().unwrap(),
                "--tasks",
                task.to_str().unwrap(),
            ])
            .args([
                "--batch-size",
                bs,
                "--quiet",
                "--log-samples",
                "--output-path",
            ])
            .arg(&out_dir));
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            text(&out).contains("count_next"),
            "the table names the task: {}",
            text(&out)
        );
        let file = std::fs::read_dir(&out_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("results_")
            })
            .unwrap();
        let r = results(&file);
        assert_eq!(r["n-samples"]["count_next"]["effective"], 12);
        assert_eq!(r["ember"]["model_calls"], 36);
        let lps: Vec<Value> = samples(&out_dir)
            .iter()
            .map(|s| s["token_logprobs"].clone())
            .collect();
        per_batch.push((r["results"]["count_next"].clone(), lps));
    }
    for (r, lps) in &per_batch[1..] {
        assert_eq!(r, &per_batch[0].0, "scores differ between batch sizes");
        assert_eq!(
            lps, &per_batch[0].1,
            "per-token logprobs differ between batch sizes"
        );
    }

    // With --use-cache the second run answers everything from the database.
    let db = tmp.path().join("cache.db");
    let mut outs = Vec::new();
    for i in 0..2 {
        let path = tmp.path().join(format!("cached{i}.json"));
        let out = run(ember(tmp.path())
            .args([
                "eval",
                "--model",
                model.to_str().unwrap(),
                "--tasks",
                task.to_str().unwrap(),
                "--quiet",
                "--use-cache",
            ])
            .arg(&db)
            .arg("--output-path")
            .arg(&path));
        assert!(out.status.success(), "{}", text(&out));
        outs.push(results(&path));
    }
    assert_eq!(outs[0]["ember"]["model_calls"], 36);
    assert_eq!(outs[1]["ember"]["model_calls"], 0);
    assert_eq!(outs[1]["ember"]["cache_hits"], 36);
    assert_eq!(outs[0]["results"], outs[1]["results"]);
    assert_eq!(outs[0]["results"]["count_next"], per_batch[0].0);

    // Regression gate: the same results pass; a planted drop fails with a non-zero exit.
    let base = tmp.path().join("cached0.json");
    let ok = run(ember(tmp.path())
        .args(["eval", "compare"])
        .arg(&base)
        .arg(tmp.path().join("cached1.json"))
        .args(["--max-drop", "0.02"]));
    assert!(ok.status.success(), "{}", text(&ok));
    let mut planted = outs[0].clone();
    let acc = planted["results"]["count_next"]["acc,none"]
        .as_f64()
        .unwrap();
    planted["results"]["count_next"]["acc,none"] = serde_json::json!(acc + 0.5);
    let high = tmp.path().join("high_baseline.json");
    std::fs::write(&high, planted.to_string()).unwrap();
    let bad = run(ember(tmp.path())
        .args(["eval", "compare"])
        .arg(&high)
        .arg(&base)
        .args(["--max-drop", "0.02"]));
    assert_eq!(bad.status.code(), Some(3), "{}", text(&bad));
    assert!(text(&bad).contains("REGRESSION"));
    // The same gate on a fresh (cached) eval run via --baseline.
    let gated = run(ember(tmp.path())
        .args([
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--tasks",
            task.to_str().unwrap(),
            "--quiet",
            "--use-cache",
        ])
        .arg(&db)
        .arg("--baseline")
        .arg(&high));
    assert_eq!(gated.status.code(), Some(3), "{}", text(&gated));
}

#[test]
fn bad_input_fails_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(ember(tmp.path()).args(["eval", "--tasks", "no_such_task"]));
    assert!(!out.status.success());
    assert!(
        text(&out).contains("unknown task `no_such_task`"),
        "{}",
        text(&out)
    );

    // No data under this EMBER_HOME: the error names the fetch command.
    let out = run(ember(tmp.path()).args(["eval", "--tasks", "arc_easy"]));
    assert!(!out.status.success());
    assert!(
        text(&out).contains("ember data fetch arc_easy"),
        "{}",
        text(&out)
    );

    let task = write_task(tmp.path());
    let out = run(ember(tmp.path()).args([
        "eval",
        "--model",
        "m",
        "--tasks",
        task.to_str().unwrap(),
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--max-retries",
        "1",
    ]));
    assert!(!out.status.success());
    assert!(
        text(&out).contains("127.0.0.1:9") && text(&out).contains("is the server running?"),
        "{}",
        text(&out)
    );

    let out = run(ember(tmp.path()).args(["eval", "--tasks", "humaneval"]));
    assert!(!out.status.success());
    assert!(
        text(&out).contains("--allow-code-execution"),
        "{}",
        text(&out)
    );

    let out = run(ember(tmp.path()).args(["data", "fetch", "nope"]));
    assert!(!out.status.success());
    assert!(text(&out).contains("unknown task `nope`"), "{}", text(&out));
}

#[test]
fn dedup_reports_and_removes_planted_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    let long = |seed: u64| {
        (0..120u64)
            .map(|i| format!("w{}", (i * i * 7919 + i * 31 + seed * 104_729) % 100_003))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let a = long(1);
    let mut near: Vec<String> = a.split(' ').map(String::from).collect();
    near[60] = "different".into();
    let rows = [a.clone(), a.to_uppercase(), near.join(" "), long(2)]
        .iter()
        .map(|t| serde_json::json!({"text": t}).to_string())
        .collect::<Vec<_>>()
        .join("\n");
    let file = tmp.path().join("train.jsonl");
    std::fs::write(&file, rows).unwrap();
    let out_dir = tmp.path().join("clean");
    let out = run(ember(tmp.path())
        .args(["data", "dedup"])
        .arg(&file)
        .arg("--output")
        .arg(&out_dir));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("4 documents: 1 exact and 1 near duplicates"),
        "{}",
        text(&out)
    );
    let kept = std::fs::read_to_string(out_dir.join("train.jsonl")).unwrap();
    assert_eq!(kept.lines().count(), 2);

    let eval = tmp.path().join("eval.jsonl");
    std::fs::write(
        &eval,
        serde_json::json!({"text": near.join(" ")}).to_string(),
    )
    .unwrap();
    let out = run(ember(tmp.path())
        .args(["data", "dedup"])
        .arg(&eval)
        .arg("--against")
        .arg(&file));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("1 of 1 documents overlap"),
        "{}",
        text(&out)
    );
}
