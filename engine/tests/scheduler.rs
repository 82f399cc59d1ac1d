//! Scheduler behaviour (vLLM V1): budgets, chunked prefill next to decodes, preemption, priority, limits,
//! aborts and prefix caching, driven with fake sampled tokens.

use std::collections::{HashMap, HashSet};

use ember_engine::{
    CacheConfig, FinishReason, Request, RequestId, SamplingParams, Scheduler, SchedulerConfig,
    SchedulerError, SchedulerOutput, SchedulingPolicy, StopCause,
};
use ember_models::batch::LogitsWanted;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const EOS: u32 = 3;

/// The "model": token `i` of a request is a function of its id and `i` only, so recomputation after a
/// preemption cannot change outputs. Some requests emit EOS at a fixed point.
fn fake_token(req: &Request) -> u32 {
    let id = req
        .id
        .as_str()
        .bytes()
        .fold(17u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    let i = req.num_output_tokens() as u64;
    let h = id
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(i.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    if (h >> 7) % 40 == 0 {
        EOS
    } else {
        10 + ((h >> 11) % 1000) as u32
    }
}

fn sched(cfg: SchedulerConfig, cache: CacheConfig) -> Scheduler {
    Scheduler::new(cfg, cache).unwrap()
}

fn greedy(prompt_len: usize, max_tokens: usize, id: &str) -> Request {
    let sp = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(max_tokens)
    };
    Request::new(
        id,
        (0..prompt_len as u32).map(|t| t % 500 + 10).collect(),
        sp,
    )
}

/// Checks a step's plan against both budgets and the block tables, as `ForwardBatch::build` would need.
fn check_plan(s: &Scheduler, out: &SchedulerOutput) {
    let c = s.config();
    assert!(
        out.num_batched_tokens <= c.max_num_batched_tokens,
        "token budget exceeded"
    );
    assert!(
        out.scheduled.len() <= c.max_num_seqs,
        "sequence budget exceeded"
    );
    assert!(s.num_running() <= c.max_num_seqs);
    assert_eq!(
        out.num_batched_tokens,
        out.scheduled
            .iter()
            .map(|r| r.num_new_tokens)
            .sum::<usize>()
    );
    let ids: HashSet<&RequestId> = out.scheduled.iter().map(|r| &r.id).collect();
    assert_eq!(ids.len(), out.scheduled.len(), "a request scheduled twice");
    let chunks = s.seq_chunks(out);
    for (chunk, r) in chunks.iter().zip(&out.scheduled) {
        let req = s.request(r.id.as_str()).unwrap();
        assert!(r.num_new_tokens > 0);
        assert_eq!(chunk.tokens.len(), r.num_new_tokens);
        assert_eq!(
            chunk.tokens,
            &req.all_token_ids()[r.num_computed_before..][..r.num_new_tokens]
        );
        assert!(
            chunk.block_table.len() * s.block_size() >= r.num_computed_before + r.num_new_tokens
        );
        assert_eq!(
            r.samples,
            r.num_computed_before + r.num_new_tokens == req.num_tokens()
        );
        if r.samples {
            assert_ne!(r.wants_logits, LogitsWanted::None);
        }
    }
}

/// One engine step with fake sampling; returns the plan and the requests that finished.
fn step(s: &mut Scheduler) -> (SchedulerOutput, Vec<Request>) {
    let out = s.schedule();
    check_plan(s, &out);
    let sampled: HashMap<RequestId, u32> = out
        .scheduled
        .iter()
        .filter(|r| r.samples)
        .map(|r| (r.id.clone(), fake_token(s.request(r.id.as_str()).unwrap())))
        .collect();
    let finished = s.update_from_output(&out, &sampled);
    (out, finished)
}

/// Expected outputs of a request that is never aborted, replaying the fake model.
fn check_finished(r: &Request, max_model_len: usize) {
    let mut replay = Request::new(
        "x",
        r.prompt_token_ids().to_vec(),
        SamplingParams::default(),
    );
    replay.id = r.id.clone();
    for &t in r.output_token_ids() {
        assert_eq!(
            t,
            fake_token(&replay),
            "{}: output changed (recompute must not alter tokens)",
            r.id
        );
        replay.append_output_token(t);
    }
    let n = r.num_output_tokens();
    match &r.status {
        ember_engine::RequestStatus::Finished(FinishReason::Length) => {
            assert!(
                n == r.max_tokens || r.num_tokens() == max_model_len,
                "{}: length at {n}",
                r.id
            )
        }
        ember_engine::RequestStatus::Finished(FinishReason::Stop(StopCause::Eos)) => {
            assert_eq!(*r.output_token_ids().last().unwrap(), EOS);
            assert!(n >= r.sampling.min_tokens && n <= r.max_tokens);
            assert!(!r.sampling.ignore_eos);
            assert!(
                !r.output_token_ids()[r.sampling.min_tokens.saturating_sub(1)..n - 1]
                    .contains(&EOS),
                "{}: missed an EOS",
                r.id
            );
        }
        other => panic!("{}: unexpected status {other:?}", r.id),
    }
}

#[test]
fn random_workloads_respect_both_budgets_and_finish() {
    let (mut preemptions, mut hits, mut eos_stops) = (0, 0, 0);
    for seed in 0..40u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let chunked = rng.random_bool(0.7);
        let budget: usize = rng.random_range(8..200);
        let max_model_len = if chunked {
            rng.random_range(16..300)
        } else {
            budget
        };
        let bs: usize = [1, 4, 16][rng.random_range(0..3)];
        let min_blocks = max_model_len.div_ceil(bs);
        let cfg = SchedulerConfig {
            max_num_batched_tokens: budget,
            max_num_seqs: rng.random_range(1..12),
            max_model_len,
            enable_chunked_prefill: chunked,
            long_prefill_token_threshold: if rng.random_bool(0.3) {
                rng.random_range(1..64)
            } else {
                0
            },
            policy: if rng.random_bool(0.5) {
                SchedulingPolicy::Fcfs
            } else {
                SchedulingPolicy::Priority
            },
            seed,
        };
        let cache = CacheConfig {
            block_size: bs,
            num_blocks: rng.random_range(min_blocks..min_blocks * 4 + 2),
            enable_prefix_caching: rng.random_bool(0.7),
        };
        let num_blocks = cache.num_blocks;
        let mut s = sched(cfg.clone(), cache);
        let shared: Vec<u32> = (0..max_model_len as u32).map(|t| t % 97 + 10).collect();
        let (mut submitted, mut finished, mut aborted) = (0usize, 0usize, 0usize);
        let total = 60;
        let mut steps = 0;
        while submitted < total || s.has_unfinished() {
            steps += 1;
            assert!(steps < 200_000, "seed {seed}: no progress");
            for _ in 0..rng.random_range(0..3) {
                if submitted == total {
                    break;
                }
                let prompt_len = rng.random_range(1..max_model_len);
                let prompt = if rng.random_bool(0.5) {
                    shared[..prompt_len].to_vec()
                } else {
                    (0..prompt_len)
                        .map(|_| rng.random_range(10..1000))
                        .collect()
                };
                let max_tokens = rng.random_range(1..=max_model_len - prompt_len);
                let sp = SamplingParams {
                    max_tokens: Some(max_tokens),
                    ignore_eos: rng.random_bool(0.3),
                    min_tokens: rng.random_range(0..=max_tokens.min(3)),
                    prompt_logprobs: rng.random_bool(0.1).then_some(1),
                    ..Default::default()
                };
                let req = Request::new(format!("s{seed}-r{submitted}"), prompt, sp)
                    .with_priority(rng.random_range(0..3))
                    .with_eos(vec![EOS]);
                s.add_request(req).unwrap();
                submitted += 1;
            }
            if rng.random_bool(0.01) && s.has_unfinished() {
                let id = format!("s{seed}-r{}", rng.random_range(0..submitted));
                if let Some(r) = s.finish_request(&id, FinishReason::Abort) {
                    assert!(r.block_ids.is_empty());
                    aborted += 1;
                }
            }
            let (_, done) = step(&mut s);
            for r in &done {
                check_finished(r, max_model_len);
                eos_stops += usize::from(matches!(
                    r.status,
                    ember_engine::RequestStatus::Finished(FinishReason::Stop(_))
                ));
            }
            finished += done.len();
            s.pool().check_consistency().unwrap();
        }
        assert_eq!(finished + aborted, total, "seed {seed}");
        assert_eq!(
            s.pool().num_free_blocks(),
            num_blocks,
            "seed {seed}: blocks leaked"
        );
        assert_eq!((s.num_running(), s.num_waiting()), (0, 0));
        preemptions += s.num_preemptions();
        hits += s.prefix_cache_stats().hits;
    }
    // The workloads exercised preemption, prefix hits and EOS.
    assert!(
        preemptions > 0 && hits > 0 && eos_stops > 0,
        "{preemptions} {hits} {eos_stops}"
    );
}

/// A 4,000-token prompt arriving while 8 sequences decode is prefilled in chunks next to them: every decode
/// gets a token in every step.
#[test]
fn long_prompt_does_not_stall_decodes() {
    let cfg = SchedulerConfig {
        max_num_batched_tokens: 512,
        max_model_len: 8192,
        ..Default::default()
    };
    let cache = CacheConfig {
        block_size: 16,
        num_blocks: 2048,
        enable_prefix_caching: true,
    };
    let mut s = sched(cfg, cache);
    let decoders: Vec<String> = (0..8).map(|i| format!("d{i}")).collect();
    for id in &decoders {
        s.add_request(greedy(20 + id.len(), 200, id)).unwrap();
    }
    let (out, _) = step(&mut s);
    assert_eq!(out.scheduled.len(), 8);
    s.add_request(greedy(4000, 5, "long")).unwrap();
    let mut prefill_steps = 0;
    loop {
        let outputs_before: Vec<usize> = decoders
            .iter()
            .map(|d| s.request(d).unwrap().num_output_tokens())
            .collect();
        let (out, _) = step(&mut s);
        for (d, before) in decoders.iter().zip(outputs_before) {
            let r = out
                .scheduled
                .iter()
                .find(|r| r.id.as_str() == d)
                .expect("a decode was stalled");
            assert_eq!(r.num_new_tokens, 1);
            assert_eq!(s.request(d).unwrap().num_output_tokens(), before + 1);
        }
        let long = out
            .scheduled
            .iter()
            .find(|r| r.id.as_str() == "long")
            .unwrap();
        assert!(long.num_new_tokens <= 512 - 8);
        assert_eq!(out.num_batched_tokens, 8 + long.num_new_tokens);
        prefill_steps += 1;
        if long.samples {
            break;
        }
        assert_eq!(long.wants_logits, LogitsWanted::None);
    }
    assert_eq!(prefill_steps, 4000usize.div_ceil(504));
}

/// With a small pool, requests get preempted (recomputed later) and still all finish with their tokens.
#[test]
fn preemption_with_small_pool_still_finishes() {
    for policy in [SchedulingPolicy::Fcfs, SchedulingPolicy::Priority] {
        let cfg = SchedulerConfig {
            max_num_batched_tokens: 256,
            max_model_len: 128,
            policy,
            ..Default::default()
        };
        let cache = CacheConfig {
            block_size: 4,
            num_blocks: 40,
            enable_prefix_caching: true,
        };
        let mut s = sched(cfg, cache);
        for i in 0..12 {
            s.add_request(greedy(20 + i, 60, &format!("p{i}")).with_priority(i as i32 % 3))
                .unwrap();
        }
        let mut done = Vec::new();
        let mut saw_preempted = false;
        for _ in 0..10_000 {
            if !s.has_unfinished() {
                break;
            }
            let (out, fin) = step(&mut s);
            saw_preempted |= !out.preempted.is_empty();
            for id in &out.preempted {
                let r = s.request(id.as_str()).unwrap();
                assert_eq!(r.num_computed_tokens, 0);
                assert!(r.block_ids.is_empty());
            }
            done.extend(fin);
        }
        assert!(
            saw_preempted && s.num_preemptions() > 0,
            "{policy:?}: the pool was never short"
        );
        assert_eq!(done.len(), 12);
        for r in &done {
            assert_eq!(r.num_output_tokens(), 60, "{}", r.id);
            check_finished(r, 128);
        }
        assert_eq!(s.pool().num_free_blocks(), 40);
    }
}

/// Out of blocks: FCFS evicts the most recently admitted request, priority the worst priority.
#[test]
fn preemption_victim_follows_policy() {
    for (policy, victim) in [
        (SchedulingPolicy::Fcfs, "urgent"),
        (SchedulingPolicy::Priority, "lazy"),
    ] {
        let cfg = SchedulerConfig {
            max_model_len: 64,
            policy,
            ..Default::default()
        };
        let cache = CacheConfig {
            block_size: 4,
            num_blocks: 4,
            enable_prefix_caching: false,
        };
        let mut s = sched(cfg, cache);
        s.add_request(greedy(4, 8, "lazy").with_priority(10))
            .unwrap();
        s.add_request(greedy(4, 8, "urgent").with_priority(0))
            .unwrap();
        let first = loop {
            let (out, _) = step(&mut s);
            if let Some(p) = out.preempted.first() {
                break p.clone();
            }
        };
        assert_eq!(first.as_str(), victim, "{policy:?}");
        assert_eq!(
            s.request(victim).unwrap().status,
            ember_engine::RequestStatus::Preempted
        );
        while s.has_unfinished() {
            step(&mut s);
        }
        assert_eq!(s.num_preemptions(), 1);
    }
}

/// A priority-0 request submitted behind 32 priority-10 ones with tight max_num_seqs is scheduled in the
/// first step and finishes no later than any of them.
#[test]
fn priority_request_jumps_the_queue() {
    let cfg = SchedulerConfig {
        max_num_seqs: 4,
        policy: SchedulingPolicy::Priority,
        ..Default::default()
    };
    let mut s = sched(cfg, CacheConfig::default());
    for i in 0..32 {
        s.add_request(greedy(16, 10, &format!("bulk{i}")).with_priority(10))
            .unwrap();
    }
    s.add_request(greedy(16, 10, "vip").with_priority(0))
        .unwrap();
    let mut finish_step: HashMap<String, usize> = HashMap::new();
    let mut n = 0;
    while s.has_unfinished() {
        let (out, fin) = step(&mut s);
        if n == 0 {
            assert_eq!(out.scheduled[0].id.as_str(), "vip");
            assert_eq!(out.scheduled.len(), 4);
        }
        for r in fin {
            finish_step.insert(r.id.to_string(), n);
        }
        n += 1;
    }
    let vip = finish_step["vip"];
    assert!(finish_step.values().all(|&st| st >= vip));
    assert_eq!(finish_step.len(), 33);
    // Under FCFS the same request waits for everyone ahead of it.
    let cfg = SchedulerConfig {
        max_num_seqs: 4,
        ..Default::default()
    };
    let mut s = sched(cfg, CacheConfig::default());
    for i in 0..32 {
        s.add_request(greedy(16, 10, &format!("bulk{i}")).with_priority(10))
            .unwrap();
    }
    s.add_request(greedy(16, 10, "vip").with_priority(0))
        .unwrap();
    let (out, _) = step(&mut s);
    assert!(out.scheduled.iter().all(|r| r.id.as_str() != "vip"));
}

#[test]
fn too_long_prompt_rejected_with_vllm_message_and_no_block_taken() {
    let cfg = SchedulerConfig {
        max_model_len: 100,
        ..Default::default()
    };
    let cache = CacheConfig {
        block_size: 16,
        num_blocks: 8,
        enable_prefix_caching: true,
    };
    let mut s = sched(cfg, cache);
    let err = s.add_request(greedy(90, 20, "a")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "This model's maximum context length is 100 tokens. However, you requested 110 tokens (90 in the \
         messages, 20 in the completion). Please reduce the length of the messages or completion."
    );
    let no_max = Request::new("b", vec![1; 100], SamplingParams::default());
    let err = s.add_request(no_max).unwrap_err();
    assert!(matches!(
        err,
        SchedulerError::PromptTooLong {
            prompt: 100,
            max_model_len: 100
        }
    ));
    assert!(err.to_string().starts_with(
        "This model's maximum context length is 100 tokens. However, you requested 100 tokens"
    ));
    assert_eq!(
        s.add_request(greedy(0, 5, "c")).unwrap_err(),
        SchedulerError::EmptyPrompt
    );
    // Fits the context but never the pool (8 blocks of 16 = 128 tokens; 100 fit... shrink with a tiny pool).
    let mut tiny = sched(
        SchedulerConfig {
            max_model_len: 100,
            ..Default::default()
        },
        CacheConfig {
            block_size: 16,
            num_blocks: 2,
            enable_prefix_caching: true,
        },
    );
    let err = tiny.add_request(greedy(30, 10, "d")).unwrap_err();
    assert!(
        matches!(
            err,
            SchedulerError::ExceedsKvCapacity {
                needed_tokens: 39,
                capacity_tokens: 32
            }
        ),
        "{err}"
    );
    let bad = SamplingParams {
        top_p: 0.0,
        ..Default::default()
    };
    assert!(matches!(
        s.add_request(Request::new("e", vec![1], bad)).unwrap_err(),
        SchedulerError::InvalidParams(_)
    ));
    assert_eq!(s.pool().num_free_blocks(), 8);
    assert_eq!(tiny.pool().num_free_blocks(), 2);
    assert!(!s.has_unfinished());
    // No max_tokens: the rest of the context.
    s.add_request(Request::new("f", vec![1; 40], SamplingParams::default()))
        .unwrap();
    assert_eq!(s.request("f").unwrap().max_tokens, 60);
    assert_eq!(
        s.add_request(greedy(5, 5, "f")).unwrap_err(),
        SchedulerError::DuplicateRequest("f".into())
    );
}

#[test]
fn abort_frees_all_blocks() {
    let cfg = SchedulerConfig {
        max_num_batched_tokens: 64,
        max_num_seqs: 3,
        ..Default::default()
    };
    let cache = CacheConfig {
        block_size: 4,
        num_blocks: 100,
        enable_prefix_caching: true,
    };
    let mut s = sched(cfg, cache);
    for i in 0..6 {
        s.add_request(greedy(30, 50, &format!("a{i}"))).unwrap();
    }
    for _ in 0..3 {
        step(&mut s);
    }
    assert_eq!(s.num_running(), 3);
    assert_eq!(s.num_waiting(), 3);
    assert!(s.kv_usage() > 0.0);
    for i in 0..6 {
        let r = s
            .finish_request(&format!("a{i}"), FinishReason::Abort)
            .unwrap();
        assert_eq!(
            r.status,
            ember_engine::RequestStatus::Finished(FinishReason::Abort)
        );
    }
    assert!(s.finish_request("a0", FinishReason::Abort).is_none());
    assert_eq!(s.pool().num_free_blocks(), 100);
    assert_eq!(s.kv_usage(), 0.0);
    assert!(!s.has_unfinished());
    assert!(s.schedule().is_empty());
}

#[test]
fn prefix_cache_hits_skip_computation_but_not_for_prompt_logprobs() {
    let mut s = sched(SchedulerConfig::default(), CacheConfig::default());
    let prompt: Vec<u32> = (100..164).collect();
    s.add_request(Request::new("a", prompt.clone(), SamplingParams::greedy(3)))
        .unwrap();
    while s.has_unfinished() {
        step(&mut s);
    }
    // Longer prompt sharing 64 tokens: all four blocks hit.
    let mut longer = prompt.clone();
    longer.extend(500..510);
    s.add_request(Request::new("b", longer, SamplingParams::greedy(2)))
        .unwrap();
    // Same prompt: capped so the last token is computed (3 blocks).
    s.add_request(Request::new("c", prompt.clone(), SamplingParams::greedy(2)))
        .unwrap();
    // Prompt logprobs: computes every position and returns all their logits.
    let plp = SamplingParams {
        prompt_logprobs: Some(1),
        ..SamplingParams::greedy(2)
    };
    s.add_request(Request::new("d", prompt.clone(), plp))
        .unwrap();
    let (out, _) = step(&mut s);
    let get = |id: &str| {
        out.scheduled
            .iter()
            .find(|r| r.id.as_str() == id)
            .unwrap()
            .clone()
    };
    assert_eq!(
        (get("b").num_computed_before, get("b").num_new_tokens),
        (64, 10)
    );
    assert_eq!(
        (get("c").num_computed_before, get("c").num_new_tokens),
        (48, 16)
    );
    assert_eq!(
        (get("d").num_computed_before, get("d").num_new_tokens),
        (0, 64)
    );
    assert_eq!(get("d").wants_logits, LogitsWanted::Tail(64));
    assert_eq!(get("d").num_logits_rows(), 64);
    assert_eq!(get("b").wants_logits, LogitsWanted::Last);
    assert_eq!(s.request("b").unwrap().num_cached_tokens, 64);
    let stats = s.prefix_cache_stats();
    assert_eq!(stats.queries, 64 + 74 + 64);
    assert_eq!(stats.hits, 64 + 48);
}

#[test]
fn chunked_prefill_on_and_off() {
    for chunked in [true, false] {
        let cfg = SchedulerConfig {
            max_num_batched_tokens: 100,
            max_model_len: 100,
            enable_chunked_prefill: chunked,
            ..Default::default()
        };
        let mut s = sched(cfg, CacheConfig::default());
        s.add_request(greedy(50, 5, "r1")).unwrap();
        s.add_request(greedy(60, 5, "r2")).unwrap();
        let (out, _) = step(&mut s);
        let plan: Vec<(&str, usize)> = out
            .scheduled
            .iter()
            .map(|r| (r.id.as_str(), r.num_new_tokens))
            .collect();
        if chunked {
            assert_eq!(plan, vec![("r1", 50), ("r2", 50)]);
            assert_eq!(out.scheduled[1].wants_logits, LogitsWanted::None);
            assert!(!out.scheduled[1].samples);
        } else {
            assert_eq!(plan, vec![("r1", 50)]);
        }
    }
    // Chunked prefill off needs a budget that holds max_model_len.
    let bad = SchedulerConfig {
        max_num_batched_tokens: 50,
        max_model_len: 100,
        enable_chunked_prefill: false,
        ..Default::default()
    };
    assert!(Scheduler::new(bad, CacheConfig::default()).is_err());
    // Long-prefill threshold caps a prompt's chunk.
    let cfg = SchedulerConfig {
        long_prefill_token_threshold: 32,
        ..Default::default()
    };
    let mut s = sched(cfg, CacheConfig::default());
    s.add_request(greedy(100, 5, "r")).unwrap();
    assert_eq!(step(&mut s).0.scheduled[0].num_new_tokens, 32);
}

#[test]
fn stop_conditions_eos_min_tokens_and_stop_ids() {
    let run = |sp: SamplingParams, token: u32| {
        let mut s = sched(SchedulerConfig::default(), CacheConfig::default());
        s.add_request(Request::new("r", vec![1, 2, 3], sp).with_eos(vec![2]))
            .unwrap();
        loop {
            let out = s.schedule();
            let sampled = HashMap::from([(RequestId::from("r"), token)]);
            if let Some(r) = s.update_from_output(&out, &sampled).pop() {
                return r;
            }
        }
    };
    let r = run(
        SamplingParams {
            min_tokens: 3,
            ..SamplingParams::greedy(10)
        },
        2,
    );
    assert_eq!(
        (r.num_output_tokens(), r.status.clone()),
        (
            3,
            ember_engine::RequestStatus::Finished(FinishReason::Stop(StopCause::Eos))
        )
    );
    let r = run(
        SamplingParams {
            ignore_eos: true,
            ..SamplingParams::greedy(10)
        },
        2,
    );
    assert_eq!(
        (r.num_output_tokens(), r.status.clone()),
        (
            10,
            ember_engine::RequestStatus::Finished(FinishReason::Length)
        )
    );
    let r = run(
        SamplingParams {
            stop_token_ids: vec![7],
            min_tokens: 2,
            ..SamplingParams::greedy(10)
        },
        7,
    );
    assert_eq!(r.num_output_tokens(), 2);
    assert_eq!(
        r.status,
        ember_engine::RequestStatus::Finished(FinishReason::Stop(StopCause::TokenId(7)))
    );
    // EOS on the last allowed token reports the stop.
    let r = run(SamplingParams::greedy(1), 2);
    assert_eq!(
        r.status,
        ember_engine::RequestStatus::Finished(FinishReason::Stop(StopCause::Eos))
    );
}

#[test]
fn unseeded_requests_get_reproducible_seeds_from_the_engine_seed() {
    let seeds = |engine_seed: u64| {
        let mut s = sched(
            SchedulerConfig {
                seed: engine_seed,
                ..Default::default()
            },
            CacheConfig::default(),
        );
        for i in 0..3 {
            s.add_request(Request::new(
                format!("r{i}"),
                vec![1],
                SamplingParams::default(),
            ))
            .unwrap();
        }
        let own = SamplingParams {
            seed: Some(99),
            ..Default::default()
        };
        s.add_request(Request::new("own", vec![1], own)).unwrap();
        ["r0", "r1", "r2", "own"].map(|id| s.request(id).unwrap().seed)
    };
    assert_eq!(seeds(1), seeds(1));
    assert_ne!(seeds(1)[..3], seeds(2)[..3]);
    assert_eq!(seeds(1)[3], 99);
}
