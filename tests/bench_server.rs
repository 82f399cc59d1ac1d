//! `ember bench` against a real `ember serve` and in-process on the same settings: both complete every
//! request and report the same token counts (and, greedy, the same texts: one engine, two roads).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ember_models::config::Architecture;
use ember_models::testing::{write_tiny_model, TinyFormat};
use serde_json::Value;

fn ember(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(args)
        .output()
        .expect("running ember")
}

/// The server process, killed when dropped (the test started it).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `/health` (a bare 200, as vLLM) until the server answers.
fn wait_ready(server: &mut Server, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!("ember serve exited early: {status}");
        }
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            let _ = s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            if buf.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("ember serve did not become ready on port {port}");
}

fn run_bench(extra: &[&str], model: &str, result: &Path) -> Value {
    let mut args = vec![
        "bench",
        "--model",
        model,
        "--dataset-name",
        "random",
        "--random-input-len",
        "10",
        "--random-range-ratio",
        "0.5",
        "--random-output-len",
        "5",
        "--num-prompts",
        "6",
        "--ignore-eos",
        "--max-concurrency",
        "3",
        "--seed",
        "4",
        "--save-result",
        "--result-filename",
        result.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = ember(&args);
    assert!(
        out.status.success(),
        "{args:?}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(result).unwrap()).unwrap()
}

#[test]
fn http_and_in_process_runs_agree() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_tiny_model(
        &dir.path().join("m"),
        Architecture::Qwen2,
        TinyFormat::HfDir,
        3,
    )
    .unwrap();
    let model = model.to_str().unwrap();
    let port = free_port();
    let mut server = Server(
        Command::new(env!("CARGO_BIN_EXE_ember"))
            .args([
                "serve",
                model,
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--served-model-name",
                "tiny",
                "--max-model-len",
                "256",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting ember serve"),
    );
    wait_ready(&mut server, port);
    let url = format!("http://127.0.0.1:{port}/v1");

    let local = run_bench(
        &["--max-model-len", "256"],
        model,
        &dir.path().join("local.json"),
    );
    let http = run_bench(
        &["--base-url", &url, "--served-model-name", "tiny"],
        model,
        &dir.path().join("http.json"),
    );
    let chat = run_bench(
        &[
            "--base-url",
            &url,
            "--served-model-name",
            "tiny",
            "--endpoint",
            "/v1/chat/completions",
        ],
        model,
        &dir.path().join("chat.json"),
    );
    assert_eq!(local["backend"], "ember-inprocess");
    assert_eq!(http["backend"], "openai");
    for r in [&local, &http, &chat] {
        assert_eq!(r["completed"], 6, "{r}");
        assert_eq!(r["failed"], 0);
    }
    // ignore_eos: every request gets exactly its asked length (5 ± 50 %), by either road.
    assert_eq!(chat["output_lens"], local["output_lens"]);
    assert_ne!(local["total_output_tokens"], 0);
    for key in [
        "input_lens",
        "output_lens",
        "total_input_tokens",
        "generated_texts",
    ] {
        assert_eq!(local[key], http[key], "{key}");
    }
    // Over HTTP the server's /metrics gives the server-side figures.
    assert!(
        http["server"]["peak_kv_usage"].is_number(),
        "{}",
        http["server"]
    );
}
