//! The official `openai` Python SDK against `ember serve` on the default model (models, chat, streaming
//! with include_usage, completions echo + logprobs, typed errors), and /metrics through
//! prometheus_client's parser. The venv comes from the project's own script (PyPI), so a clean machine
//! installs it on the first run.

mod server_support;

use std::path::Path;
use std::process::Command;

use server_support::{Server, DEFAULT_MODEL};

#[test]
fn openai_python_sdk_works_against_ember() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = Command::new(root.join("scripts/python-venv.sh"))
        .output()
        .expect("run scripts/python-venv.sh");
    assert!(
        venv.status.success(),
        "creating the test venv failed: {}",
        String::from_utf8_lossy(&venv.stderr)
    );
    let python = String::from_utf8(venv.stdout).unwrap().trim().to_string();
    let server = Server::start(&[DEFAULT_MODEL, "--api-key", "sdk-key"]);
    let out = Command::new(&python)
        .arg(root.join("tests/python/openai_sdk_check.py"))
        .args([&server.base, DEFAULT_MODEL, "sdk-key"])
        .output()
        .expect("run the SDK check");
    assert!(
        out.status.success(),
        "SDK check failed:\n{}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
}
