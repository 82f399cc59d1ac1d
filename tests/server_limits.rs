//! Overload and shutdown on the default model: over `--concurrency-limit` or the waiting-queue cap a
//! request gets 429 with Retry-After while every accepted request still completes; SIGTERM lets
//! in-flight streams finish, refuses new connections, and exits 0.

mod server_support;

use std::time::Duration;

use serde_json::{json, Value};
use server_support::{Server, SseReader, DEFAULT_MODEL};

fn long_stream(i: usize, max_tokens: usize) -> Value {
    json!({"prompt": format!("List of animals, part {i}:"), "max_tokens": max_tokens, "ignore_eos": true,
           "temperature": 0, "stream": true, "stream_options": {"include_usage": true}})
}

/// Opens a stream and waits for its first chunk (so the request is in flight and generating).
async fn open(s: &Server, body: &Value) -> SseReader {
    let resp = s
        .client
        .post(s.url("/v1/completions"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut r = SseReader::new(resp);
    let first = r.next_data().await.unwrap();
    assert!(first.contains("\"text_completion\""), "{first}");
    r
}

/// Reads a stream to its end; returns (completion tokens from the usage chunk, finish reason).
async fn finish(r: SseReader) -> (u64, String) {
    let events = r.collect().await;
    let usage = events.last().unwrap()["usage"]["completion_tokens"]
        .as_u64()
        .unwrap();
    let finish = events
        .iter()
        .filter_map(|e| e["choices"][0]["finish_reason"].as_str())
        .last()
        .unwrap()
        .to_string();
    (usage, finish)
}

async fn expect_429(s: &Server, needle: &str) {
    let r = s
        .client
        .post(s.url("/v1/completions"))
        .json(&json!({"prompt": "one more", "max_tokens": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], 429);
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains(needle), "{msg}");
}

#[test]
fn over_the_concurrency_limit_is_429_and_accepted_requests_complete() {
    let server = Server::start(&[DEFAULT_MODEL, "--concurrency-limit", "2"]);
    let s = &server;
    server.block_on(async {
        let a = open(s, &long_stream(0, 48)).await;
        let b = open(s, &long_stream(1, 48)).await;
        expect_429(s, "--concurrency-limit").await;
        assert_eq!(finish(a).await, (48, "length".into()));
        assert_eq!(finish(b).await, (48, "length".into()));
        // Slots are free again.
        let (st, v) = s
            .post(
                "/v1/completions",
                &json!({"prompt": "again", "max_tokens": 2}),
            )
            .await;
        assert_eq!(st, 200, "{v}");
    });
}

#[test]
fn a_full_waiting_queue_is_429_and_accepted_requests_complete() {
    let server = Server::start(&[
        DEFAULT_MODEL,
        "--max-num-seqs",
        "1",
        "--max-waiting-requests",
        "1",
    ]);
    let s = &server;
    server.block_on(async {
        let running = open(s, &long_stream(0, 48)).await;
        // The second waits for the only sequence slot; its response headers come at once.
        let waiting = s
            .client
            .post(s.url("/v1/completions"))
            .json(&long_stream(1, 8))
            .send()
            .await
            .unwrap();
        assert_eq!(waiting.status(), 200);
        expect_429(s, "waiting").await;
        assert_eq!(finish(running).await, (48, "length".into()));
        assert_eq!(finish(SseReader::new(waiting)).await, (8, "length".into()));
    });
}

#[test]
fn sigterm_drains_in_flight_streams_then_exits_0() {
    let mut server = Server::start(&[DEFAULT_MODEL, "--shutdown-timeout", "60"]);
    let reader = server.block_on(open(&server, &long_stream(0, 40)));
    server.terminate();
    let (tokens, reason) = server.block_on(finish(reader));
    assert_eq!(
        (tokens, reason.as_str()),
        (40, "length"),
        "the in-flight stream ran to its end"
    );
    let status = server.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "exit {status:?}; log:\n{}", server.log());
    let refused = server.block_on(async {
        reqwest::Client::new()
            .get(server.url("/health"))
            .send()
            .await
            .is_err()
    });
    assert!(refused, "no connections after shutdown");
    let log = server.log();
    assert!(log.contains("shutting down"), "{log}");
}
