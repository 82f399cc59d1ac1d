//! `ember serve` on the default model (SmolLM2-135M-Instruct) over real HTTP: the OpenAI routes, streaming,
//! echo + logprobs as lm-eval uses them, tokenize, /metrics, and 20 clients that disconnect mid-stream.
//! One server process for the whole file; the checks run in sequence.

mod server_support;

use serde_json::json;
use server_support::{metric_value, parse_prometheus, Server, SseReader, DEFAULT_MODEL};

#[test]
fn default_model_over_http() {
    let server = Server::start(&[DEFAULT_MODEL, "--served-model-name", "smol", "other-name"]);
    server.block_on(async {
        models_list(&server).await;
        chat_knows_paris(&server).await;
        streaming_chat_with_usage(&server).await;
        echo_logprobs_cover_every_prompt_token(&server).await;
        prompt_shapes_and_n(&server).await;
        stop_strings_and_seeds(&server).await;
        tokenize_round_trip(&server).await;
        disconnecting_clients_free_everything(&server).await;
        metrics_parse_with_vllm_names(&server).await;
    });
    let log = server.log();
    assert!(
        log.contains("completions cmpl-") && log.contains("prompt_tokens="),
        "one log line per request expected:\n{log}"
    );
}

async fn models_list(s: &Server) {
    let (status, v) = s.get("/v1/models").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "list");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["id"], "smol");
    assert_eq!(data[1]["id"], "other-name");
    assert_eq!(data[0]["object"], "model");
    assert_eq!(data[0]["owned_by"], "vllm");
    assert_eq!(data[0]["max_model_len"], 8192);
    assert!(data[0]["root"].as_str().unwrap().ends_with(".gguf"), "{v}");
    let (status, v) = s.get("/version").await;
    assert_eq!(status, 200);
    assert!(v["version"].is_string());
    let (status, _) = s.get("/tokenizer_info").await;
    assert_eq!(status, 200);
}

async fn chat_knows_paris(s: &Server) {
    let (status, v) = s
        .post(
            "/v1/chat/completions",
            &json!({"model": "smol", "messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
                    "temperature": 0, "max_tokens": 24}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["model"], "smol");
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    let content = choice["message"]["content"].as_str().unwrap();
    assert!(content.contains("Paris"), "{content}");
    let usage = &v["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    // The prompt is the chat template rendered: /tokenize with the same messages counts the same.
    let (_, t) = s
        .post(
            "/tokenize",
            &json!({"messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}]}),
        )
        .await;
    assert_eq!(t["count"], usage["prompt_tokens"]);
    // Chat logprobs: one entry per generated token, each with top_logprobs alternatives.
    let (status, v) = s
        .post(
            "/v1/chat/completions",
            &json!({"messages": [{"role": "user", "content": "Say hi"}], "temperature": 0, "max_tokens": 5,
                    "logprobs": true, "top_logprobs": 3, "ignore_eos": true}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let entries = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(entries.len(), 5);
    for e in entries {
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        // Greedy: the chosen token is the most likely one.
        assert!(e["logprob"].as_f64().unwrap() >= top[0]["logprob"].as_f64().unwrap() - 1e-5);
        assert_eq!(
            e["bytes"].as_array().unwrap().len(),
            e["token"].as_str().unwrap().len()
        );
    }
}

async fn streaming_chat_with_usage(s: &Server) {
    let body = json!({"messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
                      "temperature": 0, "max_tokens": 24, "stream": true,
                      "stream_options": {"include_usage": true}});
    let resp = s
        .client
        .post(s.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = SseReader::new(resp).collect().await;
    assert!(events.len() >= 3, "{events:?}");
    assert_eq!(events[0]["object"], "chat.completion.chunk");
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    let last = events.last().unwrap();
    assert_eq!(last["choices"], json!([]), "usage chunk has no choices");
    let usage = &last["usage"];
    let mut text = String::new();
    let mut finish = None;
    for e in &events[..events.len() - 1] {
        assert!(e["usage"].is_null(), "only the last chunk carries usage");
        assert_eq!(e["id"], events[0]["id"]);
        let c = &e["choices"][0];
        text.push_str(c["delta"]["content"].as_str().unwrap_or(""));
        if !c["finish_reason"].is_null() {
            finish = Some(c["finish_reason"].clone());
        }
    }
    assert!(finish.is_some());
    // Same text as the non-streaming answer to the same greedy request.
    let (_, v) = s
        .post(
            "/v1/chat/completions",
            &json!({"messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
                    "temperature": 0, "max_tokens": 24}),
        )
        .await;
    assert_eq!(
        text,
        v["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert_eq!(usage, &v["usage"]);
}

/// lm-eval's loglikelihood request: echo the prompt with a logprob for every prompt token (first null),
/// with max_tokens 1 and also 0.
async fn echo_logprobs_cover_every_prompt_token(s: &Server) {
    let prompt = "The capital of France is";
    let (_, t) = s.post("/tokenize", &json!({"prompt": prompt})).await;
    let n_prompt = t["count"].as_u64().unwrap() as usize;
    for max_tokens in [0, 1] {
        let (status, v) = s
            .post(
                "/v1/completions",
                &json!({"prompt": prompt, "max_tokens": max_tokens, "echo": true, "logprobs": 1,
                        "temperature": 0, "seed": 1234}),
            )
            .await;
        assert_eq!(status, 200, "max_tokens {max_tokens}: {v}");
        assert_eq!(v["object"], "text_completion");
        let c = &v["choices"][0];
        let lp = &c["logprobs"];
        let tokens = lp["tokens"].as_array().unwrap();
        let token_logprobs = lp["token_logprobs"].as_array().unwrap();
        let tops = lp["top_logprobs"].as_array().unwrap();
        let offsets = lp["text_offset"].as_array().unwrap();
        assert_eq!(tokens.len(), n_prompt + max_tokens, "{v}");
        assert_eq!(token_logprobs.len(), tokens.len());
        assert_eq!(tops.len(), tokens.len());
        assert_eq!(offsets.len(), tokens.len());
        assert!(token_logprobs[0].is_null() && tops[0].is_null());
        for (i, p) in token_logprobs.iter().enumerate().skip(1) {
            let p = p
                .as_f64()
                .unwrap_or_else(|| panic!("token {i} has no logprob: {v}"));
            assert!(p <= 0.0);
        }
        let text = c["text"].as_str().unwrap();
        assert!(text.starts_with(prompt), "{text}");
        assert_eq!(
            v["usage"]["prompt_tokens"].as_u64().unwrap() as usize,
            n_prompt
        );
        assert_eq!(
            v["usage"]["completion_tokens"].as_u64().unwrap() as usize,
            max_tokens
        );
        if max_tokens == 0 {
            assert_eq!(text, prompt);
            assert_eq!(c["finish_reason"], "length");
        }
    }
    // The logprob of " Paris" as an echoed prompt token equals its logprob as the generated token.
    let (_, gen) = s
        .post(
            "/v1/completions",
            &json!({"prompt": prompt, "max_tokens": 1, "logprobs": 5, "temperature": 0}),
        )
        .await;
    let g = &gen["choices"][0]["logprobs"];
    let next = g["tokens"][0].as_str().unwrap().to_string();
    assert_eq!(next, " Paris", "{gen}");
    let (_, echo) = s
        .post(
            "/v1/completions",
            &json!({"prompt": format!("{prompt}{next}"), "max_tokens": 0, "echo": true, "logprobs": 0}),
        )
        .await;
    let e = &echo["choices"][0]["logprobs"];
    let last = e["token_logprobs"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_f64()
        .unwrap();
    let sampled = g["token_logprobs"][0].as_f64().unwrap();
    assert!(
        (last - sampled).abs() < 1e-3,
        "echo {last} vs generated {sampled}"
    );
    // …and it beats a wrong continuation, as a loglikelihood comparison would find.
    let (_, wrong) = s
        .post(
            "/v1/completions",
            &json!({"prompt": format!("{prompt} Berlin"), "max_tokens": 0, "echo": true, "logprobs": 0}),
        )
        .await;
    let w = wrong["choices"][0]["logprobs"]["token_logprobs"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_f64()
        .unwrap();
    assert!(last > w, "Paris {last} vs Berlin {w}");
    // The same request a second time hits the prefix cache and must give the same prompt logprobs.
    let (_, again) = s
        .post(
            "/v1/completions",
            &json!({"prompt": format!("{prompt}{next}"), "max_tokens": 0, "echo": true, "logprobs": 0}),
        )
        .await;
    assert_eq!(
        again["choices"][0]["logprobs"],
        echo["choices"][0]["logprobs"]
    );
}

async fn prompt_shapes_and_n(s: &Server) {
    let (_, t) = s
        .post("/tokenize", &json!({"prompt": "Hello, my name is"}))
        .await;
    let ids = t["tokens"].clone();
    let shapes = [
        (json!("Hello, my name is"), 1),
        (json!(["Hello, my name is", "The sky is"]), 2),
        (ids.clone(), 1),
        (json!([ids.clone(), ids.clone()]), 2),
    ];
    let mut texts = Vec::new();
    for (prompt, n_prompts) in shapes {
        let (status, v) = s
            .post(
                "/v1/completions",
                &json!({"prompt": prompt, "max_tokens": 4, "temperature": 0, "n": 2}),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        let choices = v["choices"].as_array().unwrap();
        assert_eq!(choices.len(), 2 * n_prompts);
        for (i, c) in choices.iter().enumerate() {
            assert_eq!(c["index"], i);
        }
        // Greedy: both samples of a prompt agree.
        assert_eq!(choices[0]["text"], choices[1]["text"]);
        texts.push(choices[0]["text"].clone());
    }
    // The string and its token ids are the same prompt.
    assert_eq!(texts[0], texts[2]);
    assert_eq!(texts[0], texts[3]);
}

async fn stop_strings_and_seeds(s: &Server) {
    let body = json!({"prompt": "1, 2, 3, 4,", "max_tokens": 20, "temperature": 0, "stop": [" 7"]});
    let (status, v) = s.post("/v1/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    let c = &v["choices"][0];
    assert_eq!(c["finish_reason"], "stop", "{v}");
    assert_eq!(c["stop_reason"], " 7");
    assert!(!c["text"].as_str().unwrap().contains(" 7"));
    let sampled =
        json!({"prompt": "Once upon a time", "max_tokens": 12, "temperature": 1.0, "seed": 7});
    let (_, a) = s.post("/v1/completions", &sampled).await;
    let (_, b) = s.post("/v1/completions", &sampled).await;
    assert_eq!(
        a["choices"][0]["text"], b["choices"][0]["text"],
        "same seed, same text"
    );
}

async fn tokenize_round_trip(s: &Server) {
    let text = "Tokenizers split text: naïve café, 東京, emoji 🎉.";
    let (status, t) = s
        .post(
            "/tokenize",
            &json!({"prompt": text, "add_special_tokens": false, "return_token_strs": true}),
        )
        .await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(
        t["count"].as_u64().unwrap() as usize,
        t["tokens"].as_array().unwrap().len()
    );
    assert_eq!(t["max_model_len"], 8192);
    assert_eq!(
        t["token_strs"].as_array().unwrap().len(),
        t["tokens"].as_array().unwrap().len()
    );
    let (status, d) = s.post("/detokenize", &json!({"tokens": t["tokens"]})).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["prompt"], text);
}

/// 20 streaming clients go away mid-generation: their requests are aborted, nothing stays running and
/// the KV cache returns to its idle usage.
async fn disconnecting_clients_free_everything(s: &Server) {
    let aborted_before = abort_count(&s.metrics_text().await);
    let mut clients = Vec::new();
    for i in 0..20 {
        let body = json!({"prompt": format!("Story number {i}: once upon a time"), "max_tokens": 2000,
                          "ignore_eos": true, "stream": true, "temperature": 0.8, "seed": i});
        clients.push(s.client.post(s.url("/v1/completions")).json(&body).send());
    }
    let mut readers = Vec::new();
    for c in clients {
        let resp = c.await.unwrap();
        assert_eq!(resp.status(), 200);
        readers.push(SseReader::new(resp));
    }
    for r in &mut readers {
        let first = r.next_data().await.unwrap();
        assert!(first.contains("text_completion"), "{first}");
    }
    assert!(
        s.metric("vllm:num_requests_running").await + s.metric("vllm:num_requests_waiting").await
            > 0.0
    );
    drop(readers);
    let mut settled = false;
    for _ in 0..600 {
        let text = s.metrics_text().await;
        let running = metric_value(&text, "vllm:num_requests_running").unwrap();
        let waiting = metric_value(&text, "vllm:num_requests_waiting").unwrap();
        let kv = metric_value(&text, "vllm:kv_cache_usage_perc").unwrap();
        // Idle: no block in use (cached prefixes sit in the free list and do not count).
        if running == 0.0 && waiting == 0.0 && kv == 0.0 {
            settled = true;
            assert_eq!(
                abort_count(&text) - aborted_before,
                20.0,
                "every stream was aborted"
            );
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        settled,
        "requests still running after the clients left:\n{}",
        s.metrics_text().await
    );
}

fn abort_count(text: &str) -> f64 {
    text.lines()
        .find(|l| {
            l.starts_with("vllm:request_success_total{") && l.contains("finished_reason=\"abort\"")
        })
        .and_then(|l| l.rsplit_once(' '))
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0.0)
}

async fn metrics_parse_with_vllm_names(s: &Server) {
    let text = s.metrics_text().await;
    let (samples, families) = parse_prometheus(&text);
    for (name, kind) in [
        ("vllm:num_requests_running", "gauge"),
        ("vllm:num_requests_waiting", "gauge"),
        ("vllm:kv_cache_usage_perc", "gauge"),
        ("vllm:gpu_cache_usage_perc", "gauge"),
        ("vllm:prompt_tokens_total", "counter"),
        ("vllm:generation_tokens_total", "counter"),
        ("vllm:num_preemptions_total", "counter"),
        ("vllm:request_success_total", "counter"),
        ("vllm:prefix_cache_queries_total", "counter"),
        ("vllm:prefix_cache_hits_total", "counter"),
        ("vllm:time_to_first_token_seconds", "histogram"),
        ("vllm:time_per_output_token_seconds", "histogram"),
        ("vllm:inter_token_latency_seconds", "histogram"),
        ("vllm:e2e_request_latency_seconds", "histogram"),
        ("vllm:request_queue_time_seconds", "histogram"),
        ("vllm:request_prompt_tokens", "histogram"),
        ("vllm:request_generation_tokens", "histogram"),
        ("vllm:iteration_tokens_total", "histogram"),
        ("vllm:cache_config_info", "gauge"),
    ] {
        assert_eq!(
            families.get(name).map(String::as_str),
            Some(kind),
            "{name} in:\n{text}"
        );
    }
    for sample in &samples {
        if sample.name.starts_with("vllm:") {
            assert_eq!(
                sample.labels.get("model_name").map(String::as_str),
                Some("smol"),
                "{}",
                sample.name
            );
        }
    }
    let value = |name: &str| {
        samples
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.value)
            .unwrap()
    };
    assert!(value("vllm:prompt_tokens_total") > 0.0);
    assert!(value("vllm:generation_tokens_total") > 0.0);
    assert!(
        value("vllm:time_to_first_token_seconds_count") > 0.0,
        "TTFT has observations"
    );
    assert!(
        value("vllm:prefix_cache_hits_total") > 0.0,
        "repeated prompts hit the prefix cache"
    );
    let info = samples
        .iter()
        .find(|s| s.name == "vllm:cache_config_info")
        .unwrap();
    assert_eq!(info.labels["block_size"], "16");
    assert_eq!(info.labels["enable_prefix_caching"], "True");
}
