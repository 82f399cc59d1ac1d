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

/// Loglikelihood-style requests: one context, several continuations, logprobs wanted only for the
/// continuation. With `prompt_logprobs_from` the context comes from the prefix cache after the first.
fn continuation_requests(vocab: u32) -> (Vec<u32>, Vec<Request>) {
    let context: Vec<u32> = (0..37).map(|i| (i * 11 + 5) % vocab).collect();
    let reqs = (0..4u32)
        .map(|c| {
            let mut prompt = context.clone();
            prompt.extend((0..(1 + 2 * c)).map(|j| (c * 31 + j * 3 + 2) % vocab));
            let sampling = SamplingParams {
                prompt_logprobs: Some(1),
                prompt_logprobs_from: context.len(),
                ..SamplingParams::greedy(1)
            };
            Request::new(format!("cont-{c}"), prompt, sampling)
        })
        .collect();
    (context, reqs)
}

#[test]
fn prompt_logprobs_from_a_position_use_the_prefix_cache_and_match_full_prompt_logprobs() {
    let (_dir, model) = tiny_model();
    let vocab = model.config.vocab_size as u32;
    let (context, reqs) = continuation_requests(vocab);
    let cache = CacheConfig {
        block_size: 4,
        num_blocks: 128,
        enable_prefix_caching: true,
    };
    let mut engine =
        LlmEngine::new(model.clone(), SchedulerConfig::default(), cache.clone()).unwrap();
    let mut outs = Vec::new();
    for r in reqs.clone() {
        outs.push(engine.generate(vec![r]).unwrap().remove(0));
    }
    // The first computes the context; the others reuse its whole blocks before the scored positions.
    assert_eq!(outs[0].num_cached_tokens, 0);
    for o in &outs[1..] {
        assert_eq!(o.num_cached_tokens, 36, "{}: cached tokens", o.id);
    }
    for (r, o) in reqs.into_iter().zip(&outs) {
        let n_cont = r.prompt_token_ids().len() - context.len();
        let scored = o.prompt_logprobs.as_ref().expect("prompt logprobs");
        assert_eq!(
            scored.len(),
            n_cont,
            "{}: one logprob per continuation token",
            o.id
        );
        // The same request asking for every position, alone on a fresh engine without caching.
        let mut full = r.clone();
        full.sampling.prompt_logprobs_from = 0;
        let mut fresh = LlmEngine::new(
            model.clone(),
            SchedulerConfig::default(),
            CacheConfig {
                enable_prefix_caching: false,
                ..cache.clone()
            },
        )
        .unwrap();
        let all = fresh.generate(vec![full]).unwrap().remove(0);
        let all_lp = all.prompt_logprobs.expect("prompt logprobs");
        assert_eq!(all_lp.len(), r.prompt_token_ids().len() - 1);
        assert_eq!(scored[..], all_lp[all_lp.len() - n_cont..], "{}", o.id);
        assert_eq!(o.new_token_ids, all.new_token_ids);
    }
}

#[test]
fn prompt_logprobs_survive_chunking_and_preemption_unchanged() {
    let (_dir, model) = tiny_model();
    let vocab = model.config.vocab_size as u32;
    let mut reqs: Vec<Request> = (0..8u32)
        .map(|i| {
            let prompt: Vec<u32> = (0..(30 + 5 * i))
                .map(|j| (i * 17 + j * 7 + 1) % vocab)
                .collect();
            let sampling = SamplingParams {
                prompt_logprobs: Some(2),
                prompt_logprobs_from: if i % 2 == 0 { 0 } else { 20 },
                ignore_eos: true,
                ..SamplingParams::greedy(6)
            };
            Request::new(format!("p-{i}"), prompt, sampling)
        })
        .collect();
    reqs.extend(requests(8, vocab));
    let alone: Vec<RequestOutput> = reqs
        .iter()
        .map(|r| run(&model, vec![r.clone()], 256, true, 32).0.remove(0))
        .collect();
    let (tight, preemptions) = run(&model, reqs, 24, true, 32);
    assert!(preemptions > 0, "the small pool should have preempted");
    for (a, t) in alone.iter().zip(&tight) {
        assert_eq!(a.id, t.id);
        assert_eq!(a.prompt_logprobs, t.prompt_logprobs, "{}", a.id);
        assert_eq!(a.new_token_ids, t.new_token_ids, "{}", a.id);
    }
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

/// On the CPU there are no CUDA graphs to capture: asking is a no-op, and every step still runs (the
/// engine's output is the eager one).
#[test]
fn cuda_graph_capture_is_a_no_op_on_the_cpu() {
    let (_dir, model) = tiny_model();
    let cache = CacheConfig {
        block_size: 4,
        num_blocks: 64,
        enable_prefix_caching: false,
    };
    let mut engine = LlmEngine::new(model.clone(), SchedulerConfig::default(), cache).unwrap();
    assert_eq!(engine.capture_cuda_graphs(8, 256).unwrap(), None);
    assert_eq!(engine.captured_graphs(), 0);
    let vocab = model.config.vocab_size as u32;
    let (outs, _) = run(&model, requests(3, vocab), 64, false, 8);
    let again = engine.generate(requests(3, vocab)).unwrap();
    assert_eq!(tokens(&again), tokens(&outs));
}
