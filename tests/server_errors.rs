//! `ember serve` answers bad input the way vLLM does: 400 (never 422) naming the field, 404 for an
//! unknown model, 413 for a huge body, 401 on /v1 without the key while /health and /metrics stay open,
//! and flags it cannot honour are refused at start. A tiny random model keeps this fast.

mod server_support;

use std::process::Command;

use serde_json::{json, Value};
use server_support::{tiny_model, Server};

fn assert_error(status: u16, v: &Value, want_status: u16, needle: &str) {
    assert_eq!(status, want_status, "{v}");
    let e = &v["error"];
    assert_eq!(e["code"], want_status, "{v}");
    assert!(e["type"].is_string(), "{v}");
    let msg = e["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message: {v}"));
    assert!(msg.contains(needle), "`{needle}` not in `{msg}`");
}

#[test]
fn bad_requests_get_vllm_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let server = Server::start(&[model.to_str().unwrap(), "--max-request-body", "64KiB"]);
    let s = &server;
    server.block_on(async {
        // Too long, with vLLM's message.
        let (st, v) = s
            .post(
                "/v1/completions",
                &json!({"prompt": "hello", "max_tokens": 100000}),
            )
            .await;
        assert_error(
            st,
            &v,
            400,
            "This model's maximum context length is 512 tokens. However, you requested",
        );
        let long: Vec<u32> = (0..600).map(|i| 40 + i % 200).collect();
        let (st, v) = s
            .post(
                "/v1/chat/completions",
                &json!({"messages": [{"role": "user", "content": "x".repeat(3000)}]}),
            )
            .await;
        assert_error(st, &v, 400, "maximum context length is 512 tokens");
        let (st, v) = s
            .post("/v1/completions", &json!({"prompt": long, "max_tokens": 1}))
            .await;
        assert_error(st, &v, 400, "maximum context length");

        // Range and type errors name the field; never 422.
        for (body, param) in [
            (json!({"prompt": "a", "temperature": -1}), "temperature"),
            (json!({"prompt": "a", "top_p": 0}), "top_p"),
            (json!({"prompt": "a", "max_tokens": "ten"}), "max_tokens"),
            (json!({"prompt": "a", "max_tokens": -5}), "max_tokens"),
            (json!({"prompt": "a", "n": 0}), "n"),
            (json!({"prompt": "a", "n": 1000000}), "n"),
            (json!({"prompt": "a", "logprobs": 50}), "logprobs"),
            (
                json!({"prompt": "a", "presence_penalty": 9}),
                "presence_penalty",
            ),
            (json!({"prompt": "a", "top_k": -7}), "top_k"),
            (
                json!({"prompt": "a", "stream_options": {"include_usage": true}}),
                "stream_options",
            ),
            (
                json!({"prompt": "a", "stream": true, "prompt_logprobs": 1}),
                "prompt_logprobs",
            ),
            (json!({"prompt": "a", "priority": 5}), "priority"),
            (json!({"prompt": [999999]}), "prompt"),
            (json!({"prompt": []}), "prompt"),
            (
                json!({"prompt": "a", "logit_bias": {"abc": 1}}),
                "logit_bias",
            ),
            (json!({"prompt": "a", "guided_json": 7}), "guided_json"),
            (
                json!({"prompt": "a", "guided_regex": "a(", "max_tokens": 2}),
                "structured_outputs",
            ),
            (
                json!({"prompt": "a", "guided_regex": "a", "guided_choice": ["b"]}),
                "guided_choice",
            ),
            (
                json!({"prompt": "a", "response_format": {"type": "xml"}}),
                "response_format",
            ),
            (
                json!({"prompt": "a", "use_beam_search": true}),
                "use_beam_search",
            ),
            (json!({"prompt": "a", "max_tokens": 0}), "max_tokens"),
        ] {
            let (st, v) = s.post("/v1/completions", &body).await;
            assert_eq!(st, 400, "{body} -> {v}");
            assert_eq!(v["error"]["param"], param, "{body} -> {v}");
            assert_eq!(v["error"]["type"], "BadRequestError");
        }
        for (body, param) in [
            (json!({"messages": "hi"}), "messages"),
            (
                json!({"messages": [{"role": "user", "content": 5}]}),
                "messages",
            ),
            (
                json!({"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}),
                "top_logprobs",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
                "messages[0].content",
            ),
            (
                json!({"messages": [{"role": "user", "content": "hi"}], "tool_choice": "auto"}),
                "tool_choice",
            ),
        ] {
            let (st, v) = s.post("/v1/chat/completions", &body).await;
            assert_eq!(st, 400, "{body} -> {v}");
            assert!(
                v["error"]["param"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with(param),
                "{body} -> {v}"
            );
        }

        // Malformed JSON, bad UTF-8, empty body, no content type: 400 with a message.
        for raw in [
            &b"{\"prompt\": "[..],
            b"{\"prompt\": \"\xff\xfe\"}",
            b"",
            b"[1,2]",
            b"null",
        ] {
            let r = s
                .client
                .post(s.url("/v1/completions"))
                .header("content-type", "application/json")
                .body(raw.to_vec())
                .send()
                .await
                .unwrap();
            let st = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            assert_error(st, &v, 400, "");
        }
        let r = s
            .client
            .post(s.url("/v1/completions"))
            .body(r#"{"prompt": "hi", "max_tokens": 2}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "no content type is still JSON");

        // A body over --max-request-body: 413 in the same error shape.
        let huge = json!({"prompt": "a ".repeat(100_000)});
        let (st, v) = s.post("/v1/completions", &huge).await;
        assert_error(st, &v, 413, "larger than");

        // Unknown model: 404 with vLLM's message.
        let (st, v) = s
            .post("/v1/completions", &json!({"model": "gpt-9", "prompt": "a"}))
            .await;
        assert_error(st, &v, 404, "The model `gpt-9` does not exist.");
        let (st, v) = s
            .post(
                "/v1/chat/completions",
                &json!({"model": "gpt-9", "messages": [{"role": "user", "content": "a"}]}),
            )
            .await;
        assert_error(st, &v, 404, "does not exist");

        // Unknown route: JSON 404.
        let (st, v) = s.get("/v2/everything").await;
        assert_error(st, &v, 404, "Not Found");

        // Still serving after all that.
        let (st, v) = s
            .post("/v1/completions", &json!({"prompt": "hi", "max_tokens": 3}))
            .await;
        assert_eq!(st, 200, "{v}");
    });
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[test]
fn api_key_guards_only_v1() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let model = model.to_str().unwrap();
    let check = |server: &Server, key: &str| {
        server.block_on(async {
            let s = server;
            for auth in [None, Some("Bearer wrong"), Some("secret")] {
                let mut r = s.client.get(s.url("/v1/models"));
                if let Some(a) = auth {
                    r = r.header("authorization", a);
                }
                let r = r.send().await.unwrap();
                assert_eq!(r.status(), 401, "{auth:?}");
                let v: Value = r.json().await.unwrap();
                assert_eq!(v, json!({"error": "Unauthorized"}));
            }
            let r = s
                .client
                .post(s.url("/v1/completions"))
                .json(&json!({"prompt": "a", "max_tokens": 1}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401);
            let r = s
                .client
                .get(s.url("/v1/models"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let r = s
                .client
                .post(s.url("/v1/completions"))
                .bearer_auth(key)
                .json(&json!({"prompt": "a", "max_tokens": 1}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            for path in ["/health", "/metrics", "/version"] {
                let r = s.client.get(s.url(path)).send().await.unwrap();
                assert_eq!(r.status(), 200, "{path} stays open");
            }
            let (st, _) = s.post("/tokenize", &json!({"prompt": "hi"})).await;
            assert_eq!(st, 200);
        });
    };
    let by_flag = Server::start(&[model, "--api-key", "k-flag"]);
    check(&by_flag, "k-flag");
    drop(by_flag);
    let by_env = Server::start_with_env(&[model], &[("VLLM_API_KEY", "k-vllm")]);
    check(&by_env, "k-vllm");
    drop(by_env);
    let by_ember_env = Server::start_with_env(&[model], &[("EMBER_API_KEY", "k-ember")]);
    check(&by_ember_env, "k-ember");
}

#[test]
fn flags_it_cannot_honour_are_refused() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ember"))
            .arg("serve")
            .args(args)
            .output()
            .unwrap()
    };
    for (args, needle) in [
        (
            &["--tensor-parallel-size", "2"][..],
            "--tensor-parallel-size 2",
        ),
        (&["--kv-cache-dtype", "fp8"][..], "--kv-cache-dtype fp8"),
        (&["--quantization", "awq"][..], "--quantization awq"),
        (&["--dtype", "bfloat16"][..], "--dtype bfloat16"),
        (&["--kv-cache-memory", "lots"][..], "lots"),
    ] {
        let out = run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // A KV cache too small for one full-length request is refused with the flag to change.
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let out = run(&[model.to_str().unwrap(), "--kv-cache-memory", "4KiB"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--kv-cache-memory"));
}
