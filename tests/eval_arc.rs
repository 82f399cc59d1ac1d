//! The real default model on real ARC-Easy data (fetched by `ember data fetch arc_easy` into the usual
//! `$EMBER_HOME`): in-process scores and per-token logprobs are the same for --batch-size 1, 8 and 32,
//! and the same over HTTP against a real `ember serve` process.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Documents per run. CI keeps it small (the real model on 2 cores scores ~1 ARC document per second);
/// `EMBER_TEST_ARC_LIMIT=200` runs the full check.
fn limit(default: usize) -> String {
    std::env::var("EMBER_TEST_ARC_LIMIT")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(default)
        .to_string()
}

fn ember() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ember"));
    c.env("EMBER_LOG", "warn");
    c
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn fetch_arc() {
    let out = ember()
        .args(["data", "fetch", "arc_easy"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ember data fetch arc_easy: {}",
        text(&out)
    );
}

/// Runs one evaluation; returns (results, per-document token logprobs).
fn eval(dir: &Path, limit: &str, extra: &[&str]) -> (Value, Vec<Value>) {
    let out = ember()
        .args([
            "eval",
            "--tasks",
            "arc_easy",
            "--limit",
            limit,
            "--quiet",
            "--log-samples",
            "--output-path",
        ])
        .arg(dir)
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let find = |prefix: &str| {
        files
            .iter()
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
            .unwrap()
            .clone()
    };
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(find("results_")).unwrap()).unwrap();
    let samples = std::fs::read_to_string(find("samples_arc_easy"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["token_logprobs"].clone())
        .collect();
    (results, samples)
}

fn max_abs_diff(a: &[Value], b: &[Value]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mut worst: f64 = 0.0;
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (x.as_array().unwrap(), y.as_array().unwrap());
        assert_eq!(x.len(), y.len(), "number of choices");
        for (cx, cy) in x.iter().zip(y) {
            let (cx, cy) = (cx.as_array().unwrap(), cy.as_array().unwrap());
            assert_eq!(cx.len(), cy.len(), "continuation token counts differ");
            for (u, v) in cx.iter().zip(cy) {
                worst = worst.max((u.as_f64().unwrap() - v.as_f64().unwrap()).abs());
            }
        }
    }
    worst
}

#[test]
fn arc_easy_scores_agree_across_batch_sizes() {
    fetch_arc();
    let tmp = tempfile::tempdir().unwrap();
    let n = limit(16);
    let runs: Vec<(Value, Vec<Value>)> = ["1", "8", "32"]
        .iter()
        .map(|bs| eval(&tmp.path().join(bs), &n, &["--batch-size", bs]))
        .collect();
    let acc = &runs[0].0["results"]["arc_easy"];
    assert_eq!(runs[0].1.len(), n.parse::<usize>().unwrap());
    for (r, lps) in &runs[1..] {
        assert_eq!(&r["results"]["arc_easy"], acc);
        assert_eq!(
            lps, &runs[0].1,
            "per-token logprobs must not depend on the batch"
        );
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn healthy(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

#[test]
fn in_process_and_http_agree_on_arc_easy() {
    fetch_arc();
    let port = free_port();
    let server = Server(
        ember()
            .args([
                "serve",
                "smollm2-135m-instruct",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ember serve starts"),
    );
    let start = Instant::now();
    while !healthy(port) {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "ember serve did not become healthy"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let tmp = tempfile::tempdir().unwrap();
    let n = limit(50);
    let (local, local_lps) = eval(&tmp.path().join("local"), &n, &["--batch-size", "32"]);
    let url = format!("http://127.0.0.1:{port}/v1");
    let (http, http_lps) = eval(
        &tmp.path().join("http"),
        &n,
        &[
            "--base-url",
            &url,
            "--model",
            "smollm2-135m-instruct",
            "--num-concurrent",
            "32",
        ],
    );
    drop(server);
    let worst = max_abs_diff(&local_lps, &http_lps);
    assert!(worst <= 1e-4, "per-token logprobs differ by up to {worst}");
    assert_eq!(local["results"]["arc_easy"], http["results"]["arc_easy"]);
}
