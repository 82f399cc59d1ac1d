//! The async engine handle: streams, n > 1, aborts and dropped streams, admission errors, queue cap and
//! metrics — on a tiny random model, through `EngineHandle` as the server and the evaluator use it.

mod common;

use common::tiny_model;

use std::time::{Duration, Instant};

use ember_engine::{
    CacheConfig, EngineConfig, EngineHandle, Error, FinishReason, LlmEngine, Request,
    SamplingParams, SchedulerConfig, SchedulerError,
};

fn config(num_blocks: usize, max_waiting: usize) -> EngineConfig {
    EngineConfig {
        scheduler: SchedulerConfig {
            max_num_batched_tokens: 64,
            max_num_seqs: 16,
            max_model_len: 256,
            ..SchedulerConfig::default()
        },
        cache: CacheConfig {
            block_size: 4,
            num_blocks,
            enable_prefix_caching: true,
        },
        max_waiting,
        cuda_graphs: false,
    }
}

fn prompt(seed: u32, len: u32, vocab: u32) -> Vec<u32> {
    (0..len).map(|j| (seed * 31 + j * 17 + 2) % vocab).collect()
}

fn sampled(seed: u64, max_tokens: usize) -> SamplingParams {
    SamplingParams {
        temperature: 0.8,
        top_k: 20,
        seed: Some(seed),
        max_tokens: Some(max_tokens),
        ignore_eos: true,
        ..SamplingParams::default()
    }
}

/// Waits (bounded) until the engine has no request in flight and reports it in its metrics.
async fn wait_idle(handle: &EngineHandle) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = handle.metrics();
        if handle.num_unfinished() == 0 && m.num_running == 0 && m.num_waiting == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "engine did not go idle: {m:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_match_the_synchronous_engine() {
    let (_dir, model) = tiny_model();
    let vocab = model.config.vocab_size as u32;
    let reqs: Vec<Request> = (0..12)
        .map(|i| {
            Request::new(
                format!("r{i}"),
                prompt(i, 3 + i * 5, vocab),
                sampled(i as u64, 10),
            )
        })
        .collect();
    let cfg = config(256, 0);
    let mut sync_engine =
        LlmEngine::new(model.clone(), cfg.scheduler.clone(), cfg.cache.clone()).unwrap();
    let expected = sync_engine.generate(reqs.clone()).unwrap();

    let handle = EngineHandle::start(model.clone(), cfg).unwrap();
    let streams: Vec<_> = reqs
        .into_iter()
        .map(|r| handle.submit(r).unwrap())
        .collect();
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|s| tokio::spawn(s.collect_outputs()))
        .collect();
    for (task, want) in tasks.into_iter().zip(&expected) {
        let got = task.await.unwrap().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, want.id);
        assert_eq!(
            got[0].new_token_ids, want.new_token_ids,
            "request {}",
            want.id
        );
        assert_eq!(got[0].text_delta, want.text_delta);
        assert_eq!(got[0].finish_reason, Some(FinishReason::Length));
        let t = got[0].timings;
        let (sched, first, fin) = (
            t.first_scheduled.unwrap(),
            t.first_token.unwrap(),
            t.finished.unwrap(),
        );
        assert!(
            t.arrival <= sched && sched <= first && first <= fin,
            "{t:?}"
        );
    }
    wait_idle(&handle).await;
    let m = handle.metrics();
    assert_eq!(m.kv_usage, 0.0);
    assert_eq!(m.generation_tokens_total, 12 * 10);
    let prompt_total: u64 = (0..12u64).map(|i| 3 + i * 5).sum();
    assert_eq!(m.prompt_tokens_total, prompt_total);
    assert_eq!(m.request_success_total.get("length"), Some(&12));
    assert_eq!(m.time_to_first_token.count, 12);
    assert_eq!(m.e2e_request_latency.count, 12);
    assert_eq!(m.time_per_output_token.count, 12);
    assert_eq!(m.inter_token_latency.count, 12 * 9);
    assert_eq!(m.request_generation_tokens.count, 12);
    assert_eq!(m.request_generation_tokens.sum, 120.0);
    assert!(m.iteration_tokens.count > 0);
    assert_eq!(m.iteration_tokens.sum, (prompt_total + 12 * 9) as f64);
    handle.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_sequences_share_the_prompt_and_match_single_requests() {
    let (_dir, model) = tiny_model();
    let vocab = model.config.vocab_size as u32;
    let p = prompt(7, 30, vocab);
    let handle = EngineHandle::start(model.clone(), config(256, 0)).unwrap();
    // A hot temperature: the tiny random model's distribution is peaked.
    let hot = |seed| SamplingParams {
        temperature: 8.0,
        ..sampled(seed, 8)
    };
    let mut params = hot(100);
    params.n = 3;
    let outs = handle
        .submit(Request::new("multi", p.clone(), params))
        .unwrap()
        .collect_outputs()
        .await
        .unwrap();
    assert_eq!(outs.len(), 3);
    let m = handle.metrics();
    // Sequences 1 and 2 found the prompt's full blocks (28 of 30 tokens, block size 4) in the cache.
    assert_eq!(m.prefix_cache_hits_total, 2 * 28, "{m:?}");
    for (i, out) in outs.iter().enumerate() {
        assert_eq!(out.index, i);
        assert_eq!(out.id.as_str(), "multi");
        assert_eq!(out.new_token_ids.len(), 8);
        // Each sequence is what a plain request with seed 100 + i produces.
        let single = handle
            .submit(Request::new(
                format!("single{i}"),
                p.clone(),
                hot(100 + i as u64),
            ))
            .unwrap()
            .collect_outputs()
            .await
            .unwrap();
        assert_eq!(out.new_token_ids, single[0].new_token_ids, "sequence {i}");
    }
    assert_ne!(
        outs[0].new_token_ids, outs[1].new_token_ids,
        "different seeds differ"
    );
    wait_idle(&handle).await;
    assert_eq!(handle.metrics().kv_usage, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_streams_and_aborts_free_every_block() {
    let (_dir, model) = tiny_model();
    let vocab = model.config.vocab_size as u32;
    let handle = EngineHandle::start(model.clone(), config(512, 0)).unwrap();
    let mut streams = Vec::new();
    for i in 0..10 {
        let mut params = sampled(i as u64, 200);
        params.n = if i % 3 == 0 { 2 } else { 1 };
        streams.push(
            handle
                .submit(Request::new(
                    format!("long{i}"),
                    prompt(i, 20, vocab),
                    params,
                ))
                .unwrap(),
        );
    }
    // Read a first output from each, so all of them are running and hold blocks.
    for s in streams.iter_mut() {
        s.next_output().await.unwrap().unwrap();
    }
    assert!(handle.metrics().kv_usage > 0.0);
    // Half are dropped (a client gone), half aborted by id.
    let aborted: Vec<String> = streams
        .iter()
        .skip(5)
        .map(|s| s.id().as_str().to_string())
        .collect();
    streams.truncate(5);
    drop(streams);
    for id in &aborted {
        handle.abort(id);
    }
    wait_idle(&handle).await;
    let m = handle.metrics();
    assert_eq!(m.kv_usage, 0.0, "every block back in the pool");
    assert_eq!(
        m.request_success_total.get("abort"),
        Some(&(10 + 4)),
        "{m:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_at_submit_and_the_queue_is_capped() {
    let (_dir, model) = tiny_model();
    let vocab = model.config.vocab_size as u32;
    let handle = EngineHandle::start(model.clone(), config(64, 2)).unwrap();
    let too_long = SamplingParams::greedy(100);
    match handle.submit(Request::new("long", prompt(1, 200, vocab), too_long)) {
        Err(Error::Scheduler(e @ SchedulerError::TooLong { .. })) => assert!(
            e.to_string().starts_with(
                "This model's maximum context length is 256 tokens. However, you requested 300 tokens"
            ),
            "{e}"
        ),
        Err(e) => panic!("wrong error {e:?}"),
        Ok(_) => panic!("a too-long request was accepted"),
    }
    let bad = SamplingParams {
        temperature: -1.0,
        ..SamplingParams::default()
    };
    match handle.submit(Request::new("neg", prompt(1, 5, vocab), bad)) {
        Err(Error::Validation(v)) => assert_eq!(v.param, "temperature"),
        Err(e) => panic!("wrong error {e:?}"),
        Ok(_) => panic!("negative temperature accepted"),
    }
    match handle.submit(Request::new(
        "oov",
        vec![vocab + 5],
        SamplingParams::greedy(2),
    )) {
        Err(Error::Validation(v)) => assert!(v.message.contains("out of vocabulary"), "{v}"),
        Err(e) => panic!("wrong error {e:?}"),
        Ok(_) => panic!("an out-of-vocabulary prompt was accepted"),
    }
    // More requests than the pool can run at once: 2 may wait, the rest are refused, and every accepted
    // request still completes.
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..40 {
        match handle.submit(Request::new(
            format!("q{i}"),
            prompt(i, 60, vocab),
            sampled(i as u64, 60),
        )) {
            Ok(s) => accepted.push(s),
            Err(Error::QueueFull { limit, .. }) => {
                assert_eq!(limit, 2);
                refused += 1;
            }
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert!(refused > 0, "the queue cap never refused");
    assert!(!accepted.is_empty());
    for s in accepted {
        let out = s.collect_outputs().await.unwrap();
        assert_eq!(out[0].new_token_ids.len(), 60);
    }
    wait_idle(&handle).await;
    // Nothing refused at submit ever reached the engine's counters.
    assert_eq!(handle.metrics().request_success_total.get("abort"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_in_flight_requests_with_an_error() {
    let (_dir, model) = tiny_model();
    let vocab = model.config.vocab_size as u32;
    let handle = EngineHandle::start(model.clone(), config(256, 0)).unwrap();
    let mut stream = handle
        .submit(Request::new("s", prompt(3, 10, vocab), sampled(1, 200)))
        .unwrap();
    stream.next_output().await.unwrap().unwrap();
    let h = handle.clone();
    tokio::task::spawn_blocking(move || h.shutdown())
        .await
        .unwrap();
    let mut saw_error = false;
    while let Some(item) = stream.next_output().await {
        if let Err(e) = item {
            assert_eq!(e, Error::Shutdown);
            saw_error = true;
        }
    }
    assert!(saw_error, "the stream ended without saying why");
    assert!(matches!(
        handle.submit(Request::new("late", prompt(3, 10, vocab), sampled(1, 2))),
        Err(Error::Shutdown)
    ));
}
