//! HTTP overhead of `ember serve`: output tokens/s for the same requests (random token prompts, fixed
//! output length, greedy, ignore_eos) at the same client concurrency, first in-process through
//! `EngineHandle`, then through a real `ember serve` process over HTTP with SSE streaming; one run, so the
//! ratio compares like with like (rounds alternate the two roads). Also reports the server's time from process start to `/health` = 200.
//! Run: `cargo bench --bench server -- [--requests N] [--concurrency C] [--prompt-len P] [--output-len O]
//! [--model M] [--rounds R]`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Device;
use ember_engine::{
    CacheConfig, EngineConfig, EngineHandle, Request, SamplingParams, SchedulerConfig,
};
use ember_models::loader::{self, registry};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

/// The server's default KV budget, so both roads run the same engine configuration.
const KV_BYTES: usize = 2 << 30;

fn main() {
    let model_name = arg("--model", registry::DEFAULT_MODEL_ALIAS);
    let requests: usize = arg("--requests", "32").parse().unwrap();
    let concurrency: usize = arg("--concurrency", "8").parse().unwrap();
    let prompt_len: usize = arg("--prompt-len", "128").parse().unwrap();
    let output_len: usize = arg("--output-len", "64").parse().unwrap();
    let rounds: usize = arg("--rounds", "4").parse::<usize>().unwrap().max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    let model = Arc::new(loader::load(&model_name, &Device::Cpu).expect("load model"));
    let vocab = model.config.vocab_size as u32;
    let max_model_len = model.config.max_position_embeddings;
    let mut rng = StdRng::seed_from_u64(0);
    // Token ids from the middle of the vocabulary (no special tokens).
    let prompts: Arc<Vec<Vec<u32>>> = Arc::new(
        (0..requests)
            .map(|_| {
                (0..prompt_len)
                    .map(|_| rng.random_range(1000..vocab.min(30_000)))
                    .collect()
            })
            .collect(),
    );
    println!(
        "{model_name}: {requests} requests, {prompt_len}-token prompts, {output_len} output tokens, \
         concurrency {concurrency}"
    );

    // In-process: the same engine configuration `ember serve` builds by default.
    let config = EngineConfig {
        scheduler: SchedulerConfig {
            max_num_batched_tokens: 2048,
            max_num_seqs: 256,
            max_model_len,
            ..SchedulerConfig::default()
        },
        cache: CacheConfig {
            block_size: 16,
            num_blocks: EngineConfig::num_blocks_for_memory(&model, 16, KV_BYTES),
            enable_prefix_caching: true,
        },
        max_waiting: 0,
        cuda_graphs: false,
    };
    let engine = EngineHandle::start(model.clone(), config).unwrap();

    // Over HTTP: a real server process, streaming completions.
    let spawned = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args([
            "serve",
            &model_name,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--disable-log-requests",
            "--disable-log-stats",
        ])
        .env("EMBER_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn ember serve");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut port = None;
    for line in stderr.lines().map_while(Result::ok) {
        if let Some(rest) = line.split("on http://127.0.0.1:").nth(1) {
            port = rest
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|p| p.parse::<u16>().ok());
            break;
        }
    }
    let base = format!(
        "http://127.0.0.1:{}",
        port.expect("server address in the log")
    );
    let client = reqwest::Client::new();
    rt.block_on(async {
        loop {
            if let Ok(r) = client.get(format!("{base}/health")).send().await {
                if r.status() == 200 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    println!(
        "ember serve: process start to /health 200 in {:.0} ms",
        spawned.elapsed().as_secs_f64() * 1e3
    );

    // Alternate rounds (in-process, then HTTP) so a change in machine load hits both roads alike.
    let (mut local, mut http) = ((0usize, 0f64), (0usize, 0f64));
    let per_round = requests.div_ceil(rounds);
    for round in 0..rounds {
        let ids: Vec<usize> =
            (round * per_round..((round + 1) * per_round).min(requests)).collect();
        let started = Instant::now();
        local.0 += rt.block_on(run_local(
            &engine,
            &prompts,
            &ids,
            concurrency,
            output_len,
            round,
        ));
        local.1 += started.elapsed().as_secs_f64();
        let started = Instant::now();
        http.0 += rt.block_on(run_http(
            &client,
            &base,
            &prompts,
            &ids,
            concurrency,
            output_len,
        ));
        http.1 += started.elapsed().as_secs_f64();
    }
    let local_tps = local.0 as f64 / local.1;
    let http_tps = http.0 as f64 / http.1;
    println!(
        "in-process:  {} tokens in {:.2} s = {local_tps:.1} output tok/s",
        local.0, local.1
    );
    println!(
        "over HTTP:   {} tokens in {:.2} s = {http_tps:.1} output tok/s ({:.3}x in-process)",
        http.0,
        http.1,
        http_tps / local_tps
    );
    engine.shutdown();
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `ids` through the engine in-process with `concurrency` workers; returns output tokens.
async fn run_local(
    engine: &EngineHandle,
    prompts: &Arc<Vec<Vec<u32>>>,
    ids: &[usize],
    concurrency: usize,
    output_len: usize,
    round: usize,
) -> usize {
    let queue = Arc::new(ids.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (engine, next, prompts, queue) =
            (engine.clone(), next.clone(), prompts.clone(), queue.clone());
        workers.push(tokio::spawn(async move {
            let mut tokens = 0;
            while let Some(&i) = queue.get(next.fetch_add(1, Ordering::SeqCst)) {
                let sampling = SamplingParams {
                    ignore_eos: true,
                    ..SamplingParams::greedy(output_len)
                };
                let stream = engine
                    .submit(Request::new(
                        format!("r{round}-{i}"),
                        prompts[i].clone(),
                        sampling,
                    ))
                    .unwrap();
                let outs = stream.collect_outputs().await.unwrap();
                tokens += outs.iter().map(|o| o.new_token_ids.len()).sum::<usize>();
            }
            tokens
        }));
    }
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    total
}

/// Runs `ids` through the server as streaming completions with `concurrency` clients; returns output
/// tokens (from each stream's usage chunk).
async fn run_http(
    client: &reqwest::Client,
    base: &str,
    prompts: &Arc<Vec<Vec<u32>>>,
    ids: &[usize],
    concurrency: usize,
    output_len: usize,
) -> usize {
    let queue = Arc::new(ids.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, next, prompts, queue, base) = (
            client.clone(),
            next.clone(),
            prompts.clone(),
            queue.clone(),
            base.to_string(),
        );
        workers.push(tokio::spawn(async move {
            let mut tokens = 0;
            while let Some(&i) = queue.get(next.fetch_add(1, Ordering::SeqCst)) {
                let body = json!({"prompt": prompts[i], "max_tokens": output_len, "temperature": 0,
                                  "ignore_eos": true, "stream": true,
                                  "stream_options": {"include_usage": true}});
                let mut resp = client
                    .post(format!("{base}/v1/completions"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                let mut all = Vec::new();
                while let Some(chunk) = resp.chunk().await.unwrap() {
                    all.extend_from_slice(&chunk);
                }
                let text = String::from_utf8(all).unwrap();
                let usage = text
                    .split("\n\n")
                    .filter_map(|e| e.strip_prefix("data: "))
                    .filter(|d| d.contains("\"usage\""))
                    .last()
                    .expect("usage chunk");
                let v: serde_json::Value = serde_json::from_str(usage).unwrap();
                tokens += v["usage"]["completion_tokens"].as_u64().unwrap() as usize;
            }
            tokens
        }));
    }
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    total
}
