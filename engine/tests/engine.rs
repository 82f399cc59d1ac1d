//! The engine loop end to end on real forward passes: outputs depend only on each request's prompt,
//! sampling parameters and seed — not on batch composition, prefix caching, or preemptions.

mod common;

use common::tiny_model;

use std::sync::Arc;

use candle_core::Device;

use ember_engine::{
    CacheConfig, LlmEngine, Request, RequestOutput, SamplingParams, SchedulerConfig,
};
use ember_models::loader::{self, registry, LoadedModel};

fn requests(n: usize, vocab: u32) -> Vec<Request> {
    (0..n)
        .map(|i| {
            let prompt: Vec<u32> = (0..(5 + 9 * i as u32 % 41))
                .map(|j| (i as u32 * 37 + j * 13 + 1) % vocab)
                .collect();
            let sampling = if i % 2 == 0 {
                SamplingParams {
                    ignore_eos: true,
                    ..SamplingParams::greedy(12)
                }
            } else {
                SamplingParams {
                    temperature: 0.9,
                    top_p: 0.95,
                    seed: Some(i as u64),
                    max_tokens: Some(12),
                    ignore_eos: true,
                    ..SamplingParams::default()
                }
            };
            Request::new(format!("req-{i}"), prompt, sampling)
        })
        .collect()
}

fn run(
    model: &Arc<LoadedModel>,
    reqs: Vec<Request>,
    num_blocks: usize,
    caching: bool,
    max_seqs: usize,
) -> (Vec<RequestOutput>, u64) {
    let sched = SchedulerConfig {
        max_num_seqs: max_seqs,
        max_num_batched_tokens: 64,
        ..SchedulerConfig::default()
    };
    let cache = CacheConfig {
        block_size: 4,
        num_blocks,
        enable_prefix_caching: caching,
    };
    let mut engine = LlmEngine::new(model.clone(), sched, cache).unwrap();
    let out = engine.generate(reqs).unwrap();
    assert_eq!(
        engine.scheduler().kv_usage(),
        0.0,
        "all blocks back in the pool"
    );
    (out, engine.scheduler().num_preemptions())
}

fn tokens(outs: &[RequestOutput]) -> Vec<Vec<u32>> {
    outs.iter().map(|o| o.new_token_ids.clone()).collect()
}

#[test]
fn outputs_do_not_depend_on_batching_caching_or_preemption() {
    let (_dir, model) = tiny_model();
    let vocab = model.config.vocab_size as u32;
    let n = 32;
    let (together, _) = run(&model, requests(n, vocab), 1024, true, 32);
    assert!(together.iter().all(|o| o.new_token_ids.len() == 12));
    // Each request alone.
    let alone: Vec<Vec<u32>> = requests(n, vocab)
        .into_iter()
        .map(|r| tokens(&run(&model, vec![r], 512, true, 32).0).remove(0))
        .collect();
    assert_eq!(tokens(&together), alone, "batch of 32 vs one at a time");
    let (uncached, _) = run(&model, requests(n, vocab), 1024, false, 32);
    assert_eq!(tokens(&uncached), alone, "prefix caching off");
    // A pool far too small for all 32 at once forces preemptions (recompute).
    let (tight, preemptions) = run(&model, requests(n, vocab), 24, true, 32);
    assert!(preemptions > 0, "the small pool should have preempted");
    assert_eq!(tokens(&tight), alone, "with {preemptions} preemptions");
}

#[test]
fn prompt_logprobs_are_the_same_with_a_prefix_cache_hit() {
    let (_dir, model) = tiny_model();
    let prompt: Vec<u32> = (0..40).map(|i| (i * 7 + 3) % 200).collect();
    let params = SamplingParams {
        prompt_logprobs: Some(2),
        logprobs: Some(1),
        ..SamplingParams::greedy(2)
    };
    let sched = SchedulerConfig::default();
    let cache = CacheConfig {
        block_size: 4,
        num_blocks: 64,
        enable_prefix_caching: true,
    };
    let mut engine = LlmEngine::new(model.clone(), sched, cache.clone()).unwrap();
    // Warm the cache with the same prompt, then ask for prompt logprobs.
    let warm = engine
        .generate(vec![Request::new(
            "warm",
            prompt.clone(),
            SamplingParams::greedy(1),
        )])
        .unwrap();
    assert_eq!(warm.len(), 1);
    let hit = engine
        .generate(vec![Request::new("hit", prompt.clone(), params.clone())])
        .unwrap()
        .remove(0);
    // Without prompt logprobs the same prompt does hit the cache, and the hit is counted.
    let plain = engine
        .generate(vec![Request::new(
            "plain",
            prompt.clone(),
            SamplingParams::greedy(2),
        )])
        .unwrap()
        .remove(0);
    assert!(
        plain.num_cached_tokens >= 36,
        "cached {} tokens",
        plain.num_cached_tokens
    );
    assert!(engine.scheduler().prefix_cache_stats().hits >= 36);
    assert_eq!(plain.new_token_ids, hit.new_token_ids);
    let mut fresh_engine =
        LlmEngine::new(model.clone(), SchedulerConfig::default(), cache).unwrap();
    let fresh = fresh_engine
        .generate(vec![Request::new("fresh", prompt.clone(), params)])
        .unwrap()
        .remove(0);
    let hit_lp = hit.prompt_logprobs.expect("prompt logprobs");
    assert_eq!(
        hit_lp.len(),
        prompt.len() - 1,
        "one logprob per prompt token after the first"
    );
    assert_eq!(hit_lp, fresh.prompt_logprobs.unwrap());
    assert_eq!(hit.new_token_ids, fresh.new_token_ids);
    assert_eq!(hit.logprobs, fresh.logprobs);
    assert_eq!(hit.logprobs.len(), 2);
}

#[test]
fn default_model_through_the_engine_knows_paris_and_stops_on_strings() {
    let path = registry::fetch(registry::DEFAULT_MODEL_ALIAS).unwrap();
    let model = Arc::new(loader::load(path.to_str().unwrap(), &Device::Cpu).unwrap());
    let prompt = model
        .tokenizer
        .encode("The capital of France is", true)
        .unwrap();
    let mut engine = LlmEngine::new(
        model.clone(),
        SchedulerConfig::default(),
        CacheConfig::default(),
    )
    .unwrap();
    let out = engine
        .generate(vec![
            Request::new("a", prompt.clone(), SamplingParams::greedy(12)),
            Request::new(
                "b",
                prompt,
                SamplingParams {
                    stop: vec![".".into()],
                    ..SamplingParams::greedy(30)
                },
            ),
        ])
        .unwrap();
    assert!(
        out[0].text_delta.contains("Paris"),
        "{:?}",
        out[0].text_delta
    );
    assert_eq!(
        out[1].text_delta.trim(),
        "Paris",
        "stops before the period: {:?}",
        out[1].text_delta
    );
    assert_eq!(
        out[1].finish_reason.as_ref().map(|r| r.as_str()),
        Some("stop")
    );
}
