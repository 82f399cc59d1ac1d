//! The HTTP backend against an in-test mock OpenAI server: 429 and 5xx answers are retried with backoff
//! and the results come through; an unreachable server is a clear error.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ember_evaluator::request::{GenParams, Request, Response};
use ember_evaluator::runner::http::{HttpBackend, HttpOptions};
use ember_evaluator::runner::Backend;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A one-byte-per-token tokenizer, so the mock can answer /tokenize and echo logprobs consistently.
fn tokens(text: &str) -> Vec<u32> {
    text.bytes().map(u32::from).collect()
}

fn answer(path: &str, body: &Value) -> Value {
    match path {
        "/tokenize" => {
            let t = tokens(body["prompt"].as_str().unwrap_or(""));
            json!({"count": t.len(), "max_model_len": 4096, "tokens": t})
        }
        "/v1/completions" if body["echo"] == json!(true) => {
            let ids: Vec<u64> = body["prompt"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            // Token i's logprob is -(i as f64) / 10; the top alternative is always -0.05 except for
            // even ids, where the token itself is the argmax.
            let mut lps = vec![Value::Null];
            let mut tops = vec![Value::Null];
            for (i, id) in ids.iter().enumerate().skip(1) {
                let lp = -(i as f64) / 10.0;
                lps.push(json!(lp));
                let top = if id % 2 == 0 { lp } else { -0.05 };
                tops.push(json!({ format!("t{id}"): lp, "other": top.max(lp) }));
            }
            lps.push(json!(-1.0));
            tops.push(json!({"x": -1.0}));
            json!({"choices": [{"text": "", "logprobs": {"token_logprobs": lps, "top_logprobs": tops}}],
                   "usage": {"prompt_tokens": ids.len(), "completion_tokens": 1}})
        }
        "/v1/completions" => {
            json!({"choices": [{"text": " forty-two"}], "usage": {"prompt_tokens": 3, "completion_tokens": 4}})
        }
        "/v1/models" => json!({"object": "list", "data": [{"id": "m", "object": "model"}]}),
        _ => json!({"error": "not found"}),
    }
}

/// Serves HTTP/1.1 on a random port; every request whose number is in `fail_every` (mod 3 == 0) first
/// gets a 429 or a 503.
async fn serve(failures: Arc<AtomicUsize>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let failures = failures.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head_end, len) = loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..p]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        break (p + 4, len);
                    }
                };
                while buf.len() < head_end + len {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let body: Value =
                    serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or(Value::Null);
                let k = failures.fetch_add(1, Ordering::SeqCst);
                let (status, text) = match k % 3 {
                    0 => (
                        "429 Too Many Requests",
                        json!({"error": {"message": "queue full"}}).to_string(),
                    ),
                    1 => ("503 Service Unavailable", "overloaded".to_string()),
                    _ => ("200 OK", answer(&path, &body).to_string()),
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

#[test]
fn retries_429_and_5xx_then_succeeds() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let counter = Arc::new(AtomicUsize::new(0));
    let addr = rt.block_on(serve(counter.clone()));
    let mut opts = HttpOptions::new(&format!("http://{addr}/v1"), "m");
    opts.backoff = Duration::from_millis(5);
    opts.max_retries = 10;
    opts.concurrency = 4;
    let backend = HttpBackend::new(opts).unwrap();
    backend.check_server().unwrap();
    let reqs = vec![
        Request::loglikelihood("ab ", "cd"),
        Request::generate("hi", GenParams::default()),
    ];
    let out = backend.run(&reqs, &|_| {}).unwrap();
    // "ab" (2 tokens) + " cd" (3 tokens): the continuation is prompt positions 2..5.
    match &out[0] {
        Response::Loglikelihood {
            logprob,
            is_greedy,
            token_logprobs,
        } => {
            assert_eq!(token_logprobs.len(), 3);
            assert!((logprob - (-(2.0 + 3.0 + 4.0) / 10.0)).abs() < 1e-9);
            // ' ' (32) and 'd' (100) are even: greedy there; 'c' (99) is odd and its top is higher.
            assert!(!is_greedy);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(out[1].text(), Some(" forty-two"));
    let stats = backend.stats();
    assert!(
        stats.retries >= 6,
        "calls met 429s and 503s first: {stats:?}"
    );
    assert_eq!(stats.requests, 2);
}

#[test]
fn an_unreachable_server_is_a_clear_error() {
    // Port 9 (discard) on localhost is closed on test machines; connection refused is immediate.
    let mut opts = HttpOptions::new("http://127.0.0.1:9", "m");
    opts.backoff = Duration::from_millis(1);
    opts.max_retries = 1;
    let backend = HttpBackend::new(opts).unwrap();
    let err = backend.check_server().unwrap_err().to_string();
    assert!(
        err.contains("127.0.0.1:9") && err.contains("gave up after 1 retries"),
        "{err}"
    );
    assert!(HttpBackend::new(HttpOptions::new("localhost:8000", "m")).is_err());
}
