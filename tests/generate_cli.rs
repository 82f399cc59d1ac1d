//! `ember generate` through the binary a user runs: real registry models, tiny written models, bad input.

use std::path::Path;
use std::process::{Command, Output};

use candle_core::quantized::GgmlDType;
use ember_models::config::Architecture;
use ember_models::testing::{write_tiny_model, TinyFormat};

fn ember(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(args)
        .output()
        .expect("run ember")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_clean_failure(out: &Output, expected: &str) {
    let err = stderr(out);
    assert!(
        !out.status.success(),
        "expected failure, got success: {}",
        stdout(out)
    );
    assert!(
        !err.contains("panicked"),
        "panic instead of an error: {err}"
    );
    assert!(
        err.contains(expected),
        "error should mention `{expected}`: {err}"
    );
}

#[test]
fn default_model_knows_the_capital_of_france() {
    let out = ember(&[
        "generate",
        "--model",
        "smollm2-135m-instruct",
        "--prompt",
        "The capital of France is",
        "--max-tokens",
        "12",
        "--temperature",
        "0",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Paris"),
        "no Paris in: {}",
        stdout(&out)
    );
}

#[test]
fn qwen_coder_writes_a_function_that_passes_its_test() {
    let prompt = "def count_vowels(s: str) -> int:\n    \"\"\"Return how many vowels (a, e, i, o, u, in either case) the string s contains.\"\"\"\n";
    let out = ember(&[
        "generate",
        "--model",
        "qwen2.5-coder-0.5b-instruct",
        "--prompt",
        prompt,
        "--max-tokens",
        "64",
        "--temperature",
        "0",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let completion = stdout(&out);
    // Keep the function body: stop where HumanEval stops (the next top-level statement).
    let body = ["\ndef ", "\nclass ", "\nif ", "\nprint", "\n#", "\n```"]
        .iter()
        .filter_map(|stop| completion.find(stop))
        .min()
        .map_or(completion.as_str(), |end| &completion[..end]);
    let program = format!(
        "{prompt}{body}\n\nassert count_vowels('Hello World') == 3\nassert count_vowels('AEIOU xyz') == 5\nassert count_vowels('') == 0\nprint('ok')\n"
    );
    let run = Command::new("python3")
        .arg("-c")
        .arg(&program)
        .output()
        .expect("run python3");
    assert!(
        run.status.success() && String::from_utf8_lossy(&run.stdout).contains("ok"),
        "generated program failed:\n{program}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn chat_mode_and_sampling_flags_work_on_a_tiny_model() {
    let dir = tempfile::tempdir().unwrap();
    for format in [TinyFormat::HfDir, TinyFormat::Gguf(GgmlDType::Q8_0)] {
        let path = write_tiny_model(
            &dir.path().join(format!("{format:?}")),
            Architecture::Llama,
            format,
            1,
        )
        .unwrap();
        let path = path.to_str().unwrap();
        let args = |seed: &str| {
            ember(&[
                "generate",
                "--model",
                path,
                "--prompt",
                "hello there",
                "--chat",
                "--max-tokens",
                "20",
                "--temperature",
                "0.8",
                "--top-p",
                "0.9",
                "--top-k",
                "50",
                "--seed",
                seed,
                "--ignore-eos",
            ])
        };
        let (a, b, c) = (args("1"), args("1"), args("2"));
        assert!(a.status.success(), "{}", stderr(&a));
        assert_eq!(stdout(&a), stdout(&b), "same seed, same text");
        assert!(!stdout(&a).trim().is_empty());
        assert!(c.status.success());
    }
}

#[test]
fn missing_model_file_is_a_clear_error() {
    let out = ember(&[
        "generate",
        "--model",
        "/nonexistent/model.gguf",
        "--prompt",
        "hi",
    ]);
    assert_clean_failure(&out, "/nonexistent/model.gguf");
}

#[test]
fn truncated_gguf_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tiny_model(
        dir.path(),
        Architecture::Qwen2,
        TinyFormat::Gguf(GgmlDType::F32),
        1,
    )
    .unwrap();
    for keep in [0.5, 0.999, 0.01] {
        let bytes = std::fs::read(&path).unwrap();
        let cut = dir.path().join("cut.gguf");
        std::fs::write(&cut, &bytes[..(bytes.len() as f64 * keep) as usize]).unwrap();
        let out = ember(&[
            "generate",
            "--model",
            cut.to_str().unwrap(),
            "--prompt",
            "hi",
        ]);
        assert_clean_failure(&out, "cut.gguf");
    }
}

#[test]
fn unknown_architecture_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tiny_model(dir.path(), Architecture::Llama, TinyFormat::HfDir, 1).unwrap();
    let config_path = Path::new(&path).join("config.json");
    let config = std::fs::read_to_string(&config_path)
        .unwrap()
        .replace("\"llama", "\"gpt_neox");
    std::fs::write(&config_path, config).unwrap();
    let out = ember(&[
        "generate",
        "--model",
        path.to_str().unwrap(),
        "--prompt",
        "hi",
    ]);
    assert_clean_failure(&out, "unsupported architecture `gpt_neox");
}

#[test]
fn unknown_model_name_lists_what_is_accepted() {
    let out = ember(&["generate", "--model", "no-such-model", "--prompt", "hi"]);
    assert_clean_failure(&out, "smollm2-135m-instruct");
}
