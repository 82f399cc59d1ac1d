//! Engine throughput under continuous batching: N requests with random prompts and fixed output lengths
//! (ignore_eos), at several concurrency caps (max_num_seqs), in one run so the ratios compare.
//! Run: `cargo bench --bench engine -- [--requests N] [--prompt-len P] [--output-len O] [--model M]`.

use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use ember_engine::{CacheConfig, LlmEngine, Request, SamplingParams, SchedulerConfig};
use ember_models::loader::{self, registry};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn main() {
    let model_name = arg("--model", registry::DEFAULT_MODEL_ALIAS);
    let requests: usize = arg("--requests", "64").parse().unwrap();
    let prompt_len: usize = arg("--prompt-len", "256").parse().unwrap();
    let output_len: usize = arg("--output-len", "128").parse().unwrap();
    let model = Arc::new(loader::load(&model_name, &Device::Cpu).expect("load model"));
    let vocab = model.config.vocab_size as u32;
    let mut rng = StdRng::seed_from_u64(0);
    let prompts: Vec<Vec<u32>> = (0..requests)
        .map(|_| {
            (0..prompt_len)
                .map(|_| rng.random_range(0..vocab))
                .collect()
        })
        .collect();
    println!(
        "{model_name}: {requests} requests, {prompt_len}-token prompts, {output_len} output tokens"
    );
    let mut baseline = None;
    for concurrency in [1usize, 8, 32] {
        let block_size = 16;
        let per_request = (prompt_len + output_len).div_ceil(block_size);
        let scheduler = SchedulerConfig {
            max_num_seqs: concurrency,
            max_num_batched_tokens: 2048,
            ..SchedulerConfig::default()
        };
        let cache = CacheConfig {
            block_size,
            num_blocks: per_request * concurrency + 1,
            enable_prefix_caching: false,
        };
        let mut engine = LlmEngine::new(model.clone(), scheduler, cache).unwrap();
        let reqs = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let sampling = SamplingParams {
                    ignore_eos: true,
                    ..SamplingParams::greedy(output_len)
                };
                Request::new(format!("r{i}"), p.clone(), sampling)
            })
            .collect();
        let started = Instant::now();
        for r in reqs {
            engine.add_request(r).unwrap();
        }
        let mut generated = 0usize;
        // KV waste at the step where the most slots were allocated: allocated - used, over allocated.
        let (mut peak_allocated, mut peak_used) = (0usize, 0usize);
        while engine.has_unfinished() {
            generated += engine
                .step()
                .unwrap()
                .iter()
                .map(|o| o.new_token_ids.len())
                .sum::<usize>();
            let (allocated, used) = engine.scheduler().kv_slot_usage();
            if allocated > peak_allocated {
                (peak_allocated, peak_used) = (allocated, used);
            }
        }
        let secs = started.elapsed().as_secs_f64();
        let tps = generated as f64 / secs;
        let ratio = tps / *baseline.get_or_insert(tps);
        let waste = 100.0 * (peak_allocated - peak_used) as f64 / peak_allocated.max(1) as f64;
        println!(
            "concurrency {concurrency:>2}: {generated} tokens in {secs:.1} s = {tps:.1} output tok/s \
             ({ratio:.2}x concurrency 1); KV waste at peak {waste:.2}% ({peak_used} of {peak_allocated} slots used)"
        );
    }
}
