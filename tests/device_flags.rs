//! `--device`, `--dtype`, `--kv-cache-dtype` and `--gpu-memory-utilization` through the binary, on every
//! command that loads a model (generate, serve, eval, bench): what cannot run is a clear error naming the
//! flag, never a panic; what can run (the CPU in f32) runs. In a build without the `cuda` feature,
//! `--device cuda` says how to get one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ember_models::config::Architecture;
use ember_models::testing::{write_tiny_model, TinyFormat};

fn ember(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ember"))
        .env("EMBER_HOME", home)
        .env("EMBER_LOG", "warn")
        .args(args)
        .output()
        .expect("running ember")
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_clean_failure(out: &Output, expected: &[&str]) {
    let all = text(out);
    assert!(!out.status.success(), "expected a failure: {all}");
    assert!(
        !all.contains("panicked"),
        "a panic instead of an error: {all}"
    );
    for e in expected {
        assert!(all.contains(e), "the error should mention `{e}`: {all}");
    }
}

fn tiny(dir: &Path) -> String {
    write_tiny_model(
        &dir.join("model"),
        Architecture::Qwen2,
        TinyFormat::HfDir,
        5,
    )
    .unwrap()
    .to_str()
    .unwrap()
    .to_string()
}

/// A one-document multiple-choice task, so eval gets as far as loading the model.
fn task(dir: &Path) -> PathBuf {
    std::fs::write(
        dir.join("one.jsonl"),
        "{\"q\": \"1 + 1 =\", \"choices\": [\"2\", \"3\"], \"a\": 0}\n",
    )
    .unwrap();
    let path = dir.join("one.yaml");
    std::fs::write(
        &path,
        "task: one\ndataset_path: one.jsonl\noutput_type: multiple_choice\ndoc_to_text: \"{{q}}\"\n\
         doc_to_choice: \"{{choices}}\"\ndoc_to_target: \"{{a}}\"\nmetric: acc\n",
    )
    .unwrap();
    path
}

/// Each command's arguments up to (not including) the device flags.
fn commands(model: &str, task: &str, results: &str) -> Vec<Vec<String>> {
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        v(&[
            "generate",
            "--model",
            model,
            "--prompt",
            "hi",
            "--max-tokens",
            "2",
        ]),
        v(&["serve", model, "--port", "0", "--host", "127.0.0.1"]),
        v(&[
            "eval",
            "--model",
            model,
            "--tasks",
            task,
            "--quiet",
            "--output-path",
            results,
        ]),
        v(&[
            "bench",
            "--model",
            model,
            "--num-prompts",
            "1",
            "--random-input-len",
            "4",
            "--random-output-len",
            "2",
        ]),
    ]
}

fn run_with(home: &Path, base: &[String], extra: &[&str]) -> Output {
    let mut args: Vec<&str> = base.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    ember(home, &args)
}

#[test]
fn cuda_without_the_cuda_build_is_a_clear_error_on_every_command() {
    if cfg!(feature = "cuda") {
        eprintln!("skipping: this build has the `cuda` feature (tests/gpu_engine.rs covers --device cuda)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(tmp.path());
    let task = task(tmp.path());
    let results = tmp.path().join("results.json");
    for base in commands(&model, task.to_str().unwrap(), results.to_str().unwrap()) {
        for device in ["cuda", "cuda:1"] {
            let out = run_with(tmp.path(), &base, &["--device", device]);
            assert_clean_failure(
                &out,
                &["built without the `cuda` feature", "scripts/build-cuda.sh"],
            );
        }
    }
}

#[test]
fn cpu_only_runs_float32_and_refuses_other_types_naming_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(tmp.path());
    let task = task(tmp.path());
    let results = tmp.path().join("results.json");
    for base in commands(&model, task.to_str().unwrap(), results.to_str().unwrap()) {
        let cmd = &base[0];
        let out = run_with(
            tmp.path(),
            &base,
            &["--device", "cpu", "--dtype", "bfloat16"],
        );
        assert_clean_failure(&out, &["--dtype bfloat16", "float32"]);
        let out = run_with(tmp.path(), &base, &["--device", "cpu", "--dtype", "half"]);
        assert_clean_failure(&out, &["--dtype half"]);
        let out = run_with(
            tmp.path(),
            &base,
            &["--device", "cpu", "--kv-cache-dtype", "fp8"],
        );
        assert_clean_failure(&out, &["--kv-cache-dtype", "CUDA"]);
        let out = run_with(tmp.path(), &base, &["--dtype", "int3"]);
        assert_clean_failure(&out, &["--dtype `int3`"]);
        let out = run_with(tmp.path(), &base, &["--kv-cache-dtype", "fp8_e5m2"]);
        assert_clean_failure(&out, &["--kv-cache-dtype `fp8_e5m2`"]);
        let out = run_with(tmp.path(), &base, &["--device", "tpu"]);
        assert_clean_failure(&out, &["--device `tpu`"]);
        for u in ["0", "1.5", "-0.2"] {
            let out = run_with(
                tmp.path(),
                &base,
                &[&format!("--gpu-memory-utilization={u}")],
            );
            assert_clean_failure(&out, &["--gpu-memory-utilization"]);
        }
        // What the CPU does run: serve would keep running, so only the one-shot commands are started.
        if cmd != "serve" {
            let out = run_with(
                tmp.path(),
                &base,
                &[
                    "--device",
                    "cpu",
                    "--dtype",
                    "float32",
                    "--gpu-memory-utilization",
                    "0.5",
                ],
            );
            assert!(
                out.status.success(),
                "{cmd} on the CPU in float32: {}",
                text(&out)
            );
            if !cfg!(feature = "cuda") {
                // `auto` is the CPU in a build without CUDA.
                let out = run_with(tmp.path(), &base, &["--device", "auto", "--dtype", "auto"]);
                assert!(
                    out.status.success(),
                    "{cmd} with --device auto: {}",
                    text(&out)
                );
            }
        }
    }
}
