//! Sampler behaviour: greedy, seeded determinism, filters, penalties, logprobs, min_tokens, and the
//! distribution of temperature-1 draws.

use std::collections::HashMap;

use ember_engine::sampler::{
    process_logits, prompt_logprobs, sample, sample_batch, token_logprobs, SampleRow,
};
use ember_engine::{Request, SamplingParams};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn row<'a>(
    logits: &'a [f32],
    params: &'a SamplingParams,
    tokens: &'a [u32],
    prompt: usize,
    seed: u64,
) -> SampleRow<'a> {
    SampleRow {
        logits,
        params,
        token_ids: tokens,
        num_prompt_tokens: prompt,
        eos_token_ids: &[],
        seed,
    }
}

fn random_logits(rng: &mut ChaCha8Rng, vocab: usize) -> Vec<f32> {
    (0..vocab).map(|_| rng.random_range(-8.0f32..8.0)).collect()
}

fn argmax(l: &[f32]) -> u32 {
    let mut best = 0;
    for i in 0..l.len() {
        if l[i] > l[best] {
            best = i;
        }
    }
    best as u32
}

#[test]
fn greedy_is_argmax_with_lowest_id_on_ties() {
    let p = SamplingParams::greedy(10);
    let l = [0.5, 3.0, -1.0, 3.0];
    assert_eq!(sample(&row(&l, &p, &[0], 1, 1)).token, 1);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for seed in 0..50 {
        let l = random_logits(&mut rng, 1000);
        assert_eq!(sample(&row(&l, &p, &[0], 1, seed)).token, argmax(&l));
    }
}

#[test]
fn top_k_one_and_tiny_top_p_equal_greedy() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let k1 = SamplingParams {
        top_k: 1,
        temperature: 1.3,
        ..Default::default()
    };
    let p_tiny = SamplingParams {
        top_p: 1e-6,
        temperature: 0.7,
        ..Default::default()
    };
    for seed in 0..100 {
        let l = random_logits(&mut rng, 5000);
        let g = argmax(&l);
        assert_eq!(sample(&row(&l, &k1, &[0], 1, seed)).token, g);
        assert_eq!(sample(&row(&l, &p_tiny, &[0], 1, seed)).token, g);
    }
}

/// A request's tokens depend only on its seed: sampling it alone, or in batches of any order and company,
/// gives the same sequence.
#[test]
fn same_seed_same_tokens_regardless_of_batch() {
    let vocab = 2000;
    let params = [
        SamplingParams {
            temperature: 0.8,
            top_p: 0.9,
            ..Default::default()
        },
        SamplingParams {
            temperature: 1.0,
            top_k: 40,
            ..Default::default()
        },
        SamplingParams {
            temperature: 1.2,
            min_p: 0.05,
            repetition_penalty: 1.3,
            ..Default::default()
        },
        SamplingParams {
            temperature: 0.5,
            frequency_penalty: 0.5,
            presence_penalty: 0.3,
            ..Default::default()
        },
        SamplingParams {
            temperature: 1.0,
            ..Default::default()
        },
    ];
    // Logits for request r at output step t: a function of (r, t) only.
    let logits_for = |r: usize, t: usize| {
        let mut rng = ChaCha8Rng::seed_from_u64((r * 1000 + t) as u64);
        random_logits(&mut rng, vocab)
    };
    let steps = 30;
    // Alone.
    let mut alone: Vec<Vec<u32>> = vec![vec![1, 2, 3]; params.len()];
    for (r, p) in params.iter().enumerate() {
        for t in 0..steps {
            let l = logits_for(r, t);
            let tok = sample(&row(&l, p, &alone[r], 3, 100 + r as u64)).token;
            alone[r].push(tok);
        }
    }
    // Batched, with a different order every step and an extra noise row.
    let mut batched: Vec<Vec<u32>> = vec![vec![1, 2, 3]; params.len()];
    let mut order: Vec<usize> = (0..params.len()).collect();
    let mut shuffle = ChaCha8Rng::seed_from_u64(9);
    let noise_params = SamplingParams::default();
    let noise_tokens = [7u32];
    for t in 0..steps {
        order.rotate_left(shuffle.random_range(0..params.len()));
        let logits: Vec<Vec<f32>> = order.iter().map(|&r| logits_for(r, t)).collect();
        let noise = logits_for(99, t);
        let mut rows: Vec<SampleRow> = order
            .iter()
            .zip(&logits)
            .map(|(&r, l)| row(l, &params[r], &batched[r], 3, 100 + r as u64))
            .collect();
        rows.insert(
            t % rows.len(),
            row(&noise, &noise_params, &noise_tokens, 1, t as u64),
        );
        let mut outs = sample_batch(&rows);
        outs.remove(t % (outs.len() - 1));
        let toks: Vec<u32> = outs.iter().map(|o| o.token).collect();
        for (&r, tok) in order.iter().zip(toks) {
            batched[r].push(tok);
        }
    }
    assert_eq!(alone, batched);
    // And different seeds give different sequences.
    assert_ne!(alone[4], {
        let mut other = vec![1, 2, 3];
        for t in 0..steps {
            let l = logits_for(4, t);
            let tok = sample(&row(&l, &params[4], &other, 3, 555)).token;
            other.push(tok);
        }
        other
    });
}

#[test]
fn request_seed_drives_sample_row() {
    let mut req = Request::new(
        "a",
        vec![1, 2],
        SamplingParams {
            seed: Some(42),
            ..Default::default()
        },
    );
    req.seed = 42;
    let l = vec![0.0f32; 100];
    let a = sample(&SampleRow::new(&l, &req)).token;
    let b = sample(&row(&l, &req.sampling, &[1, 2], 2, 42)).token;
    assert_eq!(a, b);
}

#[test]
fn penalties_and_bias_change_the_right_logits() {
    let l = [2.0f32, -2.0, 1.0, 0.5, 0.25];
    // Prompt [0], output [1, 1, 3].
    let tokens = [0u32, 1, 1, 3];
    let rep = SamplingParams {
        repetition_penalty: 2.0,
        ..Default::default()
    };
    assert_eq!(
        process_logits(&row(&l, &rep, &tokens, 1, 0)),
        vec![1.0, -4.0, 1.0, 0.25, 0.25]
    );
    let fp = SamplingParams {
        frequency_penalty: 0.5,
        presence_penalty: 0.25,
        ..Default::default()
    };
    // Output tokens only: 1 twice (−1.25), 3 once (−0.75); prompt token 0 untouched.
    assert_eq!(
        process_logits(&row(&l, &fp, &tokens, 1, 0)),
        vec![2.0, -3.25, 1.0, -0.25, 0.25]
    );
    let bias = SamplingParams {
        logit_bias: HashMap::from([(4, 5.0), (99, 1.0)]),
        ..Default::default()
    };
    assert_eq!(
        process_logits(&row(&l, &bias, &tokens, 1, 0)),
        vec![2.0, -2.0, 1.0, 0.5, 5.25]
    );
    // Greedy follows the processed logits.
    let g = SamplingParams {
        temperature: 0.0,
        ..bias
    };
    assert_eq!(sample(&row(&l, &g, &tokens, 1, 0)).token, 4);
}

#[test]
fn min_tokens_blocks_eos_and_stop_ids() {
    let l = [0.0f32, 10.0, 9.0, 1.0];
    let p = SamplingParams {
        temperature: 0.0,
        min_tokens: 2,
        stop_token_ids: vec![2],
        ..Default::default()
    };
    let eos = [1u32];
    let mk = |tokens: &'static [u32]| SampleRow {
        logits: &l,
        params: &p,
        token_ids: tokens,
        num_prompt_tokens: 1,
        eos_token_ids: &eos,
        seed: 0,
    };
    assert_eq!(sample(&mk(&[5])).token, 3);
    assert_eq!(sample(&mk(&[5, 3])).token, 3);
    assert_eq!(sample(&mk(&[5, 3, 3])).token, 1);
    // Random sampling never picks a masked token either.
    let pr = SamplingParams {
        temperature: 1.0,
        min_tokens: 1,
        ..Default::default()
    };
    for seed in 0..200 {
        let r = SampleRow {
            logits: &l,
            params: &pr,
            token_ids: &[5],
            num_prompt_tokens: 1,
            eos_token_ids: &eos,
            seed,
        };
        assert_ne!(sample(&r).token, 1);
    }
}

#[test]
fn logprobs_are_raw_log_softmax() {
    let l = [1.0f32, 2.0, 3.0, 0.5, -1.0];
    let lps = token_logprobs(&l, 1, 5);
    let total: f64 = lps.top.iter().map(|&(_, lp)| (lp as f64).exp()).sum();
    assert!((total - 1.0).abs() < 1e-5, "{total}");
    assert_eq!(lps.rank, 2);
    assert_eq!(
        lps.top.iter().map(|t| t.0).collect::<Vec<_>>(),
        vec![2, 1, 0, 3, 4]
    );
    let lse = l.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln();
    assert!((lps.logprob as f64 - (2.0 - lse)).abs() < 1e-6);
    // The sampled token's logprob ignores temperature and penalties.
    let p = SamplingParams {
        temperature: 0.3,
        repetition_penalty: 1.5,
        logprobs: Some(2),
        ..Default::default()
    };
    let out = sample(&row(&l, &p, &[2], 1, 3));
    let lp = out.logprobs.unwrap();
    assert_eq!(lp.token, out.token);
    assert!((lp.logprob as f64 - (l[out.token as usize] as f64 - lse)).abs() < 1e-6);
    assert_eq!(lp.top.len(), 2);
    assert!(lp.top[0].1 >= lp.top[1].1);
    // logprobs: 0 → only the sampled token.
    let p0 = SamplingParams {
        logprobs: Some(0),
        ..Default::default()
    };
    assert!(sample(&row(&l, &p0, &[2], 1, 3))
        .logprobs
        .unwrap()
        .top
        .is_empty());
}

#[test]
fn prompt_logprobs_score_each_next_token() {
    let rows = [0.0f32, 1.0, 2.0, /* row 1 */ 5.0, 0.0, 0.0];
    let out = prompt_logprobs(&rows, 3, &[2, 0], 1);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].token, 2);
    assert_eq!(out[0].rank, 1);
    assert_eq!(out[1].rank, 1);
    assert_eq!(out[0].top, vec![(2, out[0].logprob)]);
    let e: f64 = [0.0f64, 1.0, 2.0].iter().map(|x| x.exp()).sum();
    assert!((out[0].logprob as f64 - (2.0 - e.ln())).abs() < 1e-6);
}

fn draw_counts(logits: &[f32], p: &SamplingParams, draws: usize, seed: u64) -> Vec<usize> {
    let tokens: Vec<u32> = vec![0; draws + 1];
    let mut counts = vec![0; logits.len()];
    for i in 0..draws {
        counts[sample(&row(logits, p, &tokens[..1 + i], 1, seed)).token as usize] += 1;
    }
    counts
}

#[test]
fn temperature_one_matches_the_distribution() {
    let probs = [0.1f64, 0.2, 0.3, 0.4];
    let logits: Vec<f32> = probs.iter().map(|p| p.ln() as f32 + 3.0).collect();
    let n = 20_000;
    let counts = draw_counts(&logits, &SamplingParams::default(), n, 1234);
    let chi2: f64 = probs
        .iter()
        .zip(&counts)
        .map(|(&p, &c)| {
            let e = p * n as f64;
            (c as f64 - e).powi(2) / e
        })
        .sum();
    // 3 degrees of freedom: p = 0.001 at 16.3.
    assert!(chi2 < 20.0, "chi2 {chi2}, counts {counts:?}");
}

#[test]
fn top_p_top_k_min_p_cut_the_tail() {
    let probs = [0.5f64, 0.3, 0.15, 0.05];
    let logits: Vec<f32> = probs.iter().map(|p| p.ln() as f32).collect();
    let cases = [
        (
            SamplingParams {
                top_p: 0.6,
                ..Default::default()
            },
            2,
        ),
        (
            SamplingParams {
                top_p: 0.85,
                ..Default::default()
            },
            3,
        ),
        (
            SamplingParams {
                top_k: 2,
                ..Default::default()
            },
            2,
        ),
        (
            SamplingParams {
                min_p: 0.5,
                ..Default::default()
            },
            2,
        ),
        (
            SamplingParams {
                min_p: 0.2,
                ..Default::default()
            },
            3,
        ),
    ];
    for (p, kept) in cases {
        let counts = draw_counts(&logits, &p, 3000, 77);
        assert!(counts[..kept].iter().all(|&c| c > 0), "{p:?}: {counts:?}");
        assert!(counts[kept..].iter().all(|&c| c == 0), "{p:?}: {counts:?}");
    }
    // top_p over a large vocabulary (the partial-sort path) keeps the nucleus only.
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let big = random_logits(&mut rng, 50_000);
    let p = SamplingParams {
        top_p: 0.5,
        ..Default::default()
    };
    let lse = big.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln();
    let mut sorted: Vec<f64> = big.iter().map(|&x| (x as f64 - lse).exp()).collect();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let (mut cum, mut cutoff) = (0.0, 0.0);
    for &pr in &sorted {
        cum += pr;
        cutoff = pr;
        if cum >= 0.5 {
            break;
        }
    }
    let tokens = vec![0u32; 501];
    for i in 0..500 {
        let t = sample(&row(&big, &p, &tokens[..1 + i], 1, 3)).token as usize;
        let pr = (big[t] as f64 - lse).exp();
        assert!(pr >= cutoff * (1.0 - 1e-9), "token {t} outside the nucleus");
    }
}
