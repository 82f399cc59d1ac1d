//! Turns one logits row into one token, per request, in vLLM V1's order: min_tokens masking and logit
//! bias, then repetition / frequency / presence penalties, then greedy argmax or temperature, min-p, top-k,
//! top-p and a draw from the request's own RNG.
//!
//! Determinism: token `k` of a request is drawn with the `k`-th value of a ChaCha8 stream seeded by the
//! request's seed (one value per sampled token), and every row is processed on its own, so a request's
//! output never depends on the rest of the batch, the step, or preemptions.
//!
//! Logprobs are those vLLM V1 returns by default: log-softmax of the raw model logits (before penalties and
//! temperature).

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use ember_kernels::first_max;

use crate::request::{end_token_ids, Request, SamplingParams};

/// Everything sampling one token needs. [`SampleRow::new`] fills it from a request.
#[derive(Debug, Clone, Copy)]
pub struct SampleRow<'a> {
    /// Raw model logits over the vocabulary.
    pub logits: &'a [f32],
    pub params: &'a SamplingParams,
    /// Prompt followed by the output so far.
    pub token_ids: &'a [u32],
    pub num_prompt_tokens: usize,
    pub eos_token_ids: &'a [u32],
    pub seed: u64,
}

impl<'a> SampleRow<'a> {
    pub fn new(logits: &'a [f32], req: &'a Request) -> Self {
        Self {
            logits,
            params: &req.sampling,
            token_ids: req.all_token_ids(),
            num_prompt_tokens: req.num_prompt_tokens(),
            eos_token_ids: &req.eos_token_ids,
            seed: req.seed,
        }
    }

    fn output_tokens(&self) -> &'a [u32] {
        &self.token_ids[self.num_prompt_tokens..]
    }
}

/// One position's logprobs: the chosen (or actual prompt) token's, its rank (1 = most likely), and the
/// top alternatives, most likely first.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    pub token: u32,
    pub logprob: f32,
    pub rank: usize,
    pub top: Vec<(u32, f32)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SampleOutput {
    pub token: u32,
    /// Present when the request asked for `logprobs`.
    pub logprobs: Option<TokenLogprobs>,
}

/// Samples every row independently (in parallel).
pub fn sample_batch(rows: &[SampleRow<'_>]) -> Vec<SampleOutput> {
    rows.par_iter().map(sample).collect()
}

/// Samples one token.
pub fn sample(row: &SampleRow<'_>) -> SampleOutput {
    let work = process_logits(row);
    let p = row.params;
    let token = if p.is_greedy() {
        first_max(&work)
    } else {
        let index = row.output_tokens().len() as u64;
        sample_from(&work, p, uniform(row.seed, index))
    };
    let logprobs = p.logprobs.map(|k| token_logprobs(row.logits, token, k));
    SampleOutput { token, logprobs }
}

/// Whether `req`'s next token is the plain argmax of the raw logits: greedy, no logprobs, and no logits
/// processor that would change a value (min_tokens masking still active, logit bias, penalties — keep in
/// step with `apply_processors` —, a structured output's mask). Such a row's token can be picked on the
/// device that holds the logits.
pub fn is_raw_argmax(req: &Request) -> bool {
    let p = &req.sampling;
    p.is_greedy()
        && p.logprobs.is_none()
        && p.logit_bias.is_empty()
        && p.repetition_penalty == 1.0
        && p.frequency_penalty == 0.0
        && p.presence_penalty == 0.0
        && req.output_token_ids().len() >= p.min_tokens
        && req.guide.is_none()
}

/// Logprobs of `token` and the top `k` alternatives under log-softmax of `logits`.
pub fn token_logprobs(logits: &[f32], token: u32, k: usize) -> TokenLogprobs {
    let lse = log_sum_exp(logits);
    let own = logits[token as usize];
    let rank = 1 + logits.iter().filter(|&&l| l > own).count();
    let top = top_k_indices(logits, k)
        .into_iter()
        .map(|t| (t, (logits[t as usize] as f64 - lse) as f32))
        .collect();
    TokenLogprobs {
        token,
        logprob: (own as f64 - lse) as f32,
        rank,
        top,
    }
}

/// Prompt logprobs from consecutive logits rows (`vocab` floats each): row `i` scores `targets[i]` (the
/// prompt token after the row's position) with `k` alternatives.
pub fn prompt_logprobs(
    rows: &[f32],
    vocab: usize,
    targets: &[u32],
    k: usize,
) -> Vec<TokenLogprobs> {
    assert_eq!(
        rows.len(),
        vocab * targets.len(),
        "one logits row per target token"
    );
    rows.par_chunks(vocab)
        .zip(targets.par_iter())
        .map(|(row, &t)| token_logprobs(row, t, k))
        .collect()
}

/// The `index`-th value of the request's random stream, uniform in [0, 1).
fn uniform(seed: u64, index: u64) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Each u64 takes two 32-bit words of the stream: jump straight to value `index`.
    rng.set_word_pos(2 * index as u128);
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// The logits after min_tokens masking, logit bias and penalties (before temperature): what greedy
/// sampling takes the argmax of.
pub fn process_logits(row: &SampleRow<'_>) -> Vec<f32> {
    let mut work = row.logits.to_vec();
    apply_processors(row, &mut work);
    work
}

/// min_tokens, logit bias, then penalties; in place on a copy of the raw logits.
fn apply_processors(row: &SampleRow<'_>, work: &mut [f32]) {
    let p = row.params;
    let vocab = work.len();
    let output = row.output_tokens();
    if output.len() < p.min_tokens {
        let ends = end_token_ids(p, row.eos_token_ids);
        // A complete structured output leaves only end tokens: then it wins over min_tokens.
        let others_left = work
            .iter()
            .enumerate()
            .any(|(t, &l)| l > f32::NEG_INFINITY && !ends.contains(&(t as u32)));
        for t in ends.into_iter().filter(|_| others_left) {
            if let Some(l) = work.get_mut(t as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
    }
    for (&t, &b) in &p.logit_bias {
        if let Some(l) = work.get_mut(t as usize) {
            *l += b;
        }
    }
    if p.repetition_penalty != 1.0 {
        let mut seen = row.token_ids.to_vec();
        seen.sort_unstable();
        seen.dedup();
        for t in seen.into_iter().filter(|&t| (t as usize) < vocab) {
            let l = &mut work[t as usize];
            if *l > 0.0 {
                *l /= p.repetition_penalty;
            } else {
                *l *= p.repetition_penalty;
            }
        }
    }
    if p.frequency_penalty != 0.0 || p.presence_penalty != 0.0 {
        let mut out = output.to_vec();
        out.sort_unstable();
        for run in out.chunk_by(|a, b| a == b) {
            if let Some(l) = work.get_mut(run[0] as usize) {
                *l -= p.frequency_penalty * run.len() as f32 + p.presence_penalty;
            }
        }
    }
}

/// Orders by logit descending, then id ascending (NaN last).
fn desc(logits: &[f32]) -> impl Fn(&u32, &u32) -> std::cmp::Ordering + '_ {
    move |&a, &b| {
        let (la, lb) = (nan_low(logits[a as usize]), nan_low(logits[b as usize]));
        lb.total_cmp(&la).then(a.cmp(&b))
    }
}

fn nan_low(v: f32) -> f32 {
    if v.is_nan() {
        f32::NEG_INFINITY
    } else {
        v
    }
}

/// The `k` best ids, best first, without sorting the vocabulary.
fn top_k_indices(logits: &[f32], k: usize) -> Vec<u32> {
    let k = k.min(logits.len());
    if k == 0 {
        return Vec::new();
    }
    let cmp = desc(logits);
    let mut top: Vec<u32> = Vec::with_capacity(k + 1);
    for i in 0..logits.len() as u32 {
        if top.len() == k && cmp(&i, &top[k - 1]) != std::cmp::Ordering::Less {
            continue;
        }
        let pos = top.partition_point(|t| cmp(t, &i) == std::cmp::Ordering::Less);
        top.insert(pos, i);
        top.truncate(k);
    }
    top
}

/// The best `m` of `ids`, sorted best first (partial selection, then a sort of `m`).
fn best_sorted(ids: &mut [u32], m: usize, logits: &[f32]) -> usize {
    let cmp = desc(logits);
    let m = m.min(ids.len());
    if m < ids.len() {
        ids.select_nth_unstable_by(m, &cmp);
    }
    ids[..m].sort_unstable_by(&cmp);
    m
}

fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    max as f64 + sum.ln()
}

/// Temperature, min-p, top-k, top-p, then inverse-CDF with one uniform draw.
fn sample_from(logits: &[f32], p: &SamplingParams, u: f64) -> u32 {
    let max = logits
        .iter()
        .copied()
        .map(nan_low)
        .fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return first_max(logits);
    }
    // Unnormalised probabilities at temperature, relative to the best token (whose weight is 1).
    let inv_t = 1.0 / p.temperature;
    let w: Vec<f32> = logits
        .iter()
        .map(|&l| ((nan_low(l) - max) * inv_t).exp())
        .collect();
    // min-p keeps tokens with probability ≥ min_p × the top probability: weight ≥ min_p.
    let min_w = p.min_p.max(0.0);
    let weight = |t: u32| {
        let x = w[t as usize];
        if x >= min_w {
            x as f64
        } else {
            0.0
        }
    };
    let top_k = p.top_k().filter(|&k| k < w.len());
    if top_k.is_none() && p.top_p >= 1.0 {
        // The whole vocabulary, in id order: no sort.
        let total: f64 = (0..w.len() as u32).map(weight).sum();
        return pick(0..w.len() as u32, weight, u * total).unwrap_or_else(|| first_max(logits));
    }
    // Candidates best first: top-k, then the top-p nucleus.
    let mut ids: Vec<u32> = (0..w.len() as u32).filter(|&t| weight(t) > 0.0).collect();
    let mut sorted_len = 0;
    if let Some(k) = top_k {
        sorted_len = best_sorted(&mut ids, k, logits);
        ids.truncate(sorted_len);
    }
    if p.top_p < 1.0 {
        let target = p.top_p as f64 * ids.iter().map(|&t| weight(t)).sum::<f64>();
        // Sort only as much of the head as the nucleus needs.
        let mut m = 64;
        let kept = loop {
            if sorted_len < ids.len() {
                sorted_len = best_sorted(&mut ids, m, logits);
            }
            let (mut cum, mut n) = (0.0, 0);
            for &t in &ids[..sorted_len] {
                cum += weight(t);
                n += 1;
                if cum >= target {
                    break;
                }
            }
            if cum >= target || sorted_len == ids.len() {
                break n;
            }
            m *= 8;
        };
        ids.truncate(kept.max(1));
    }
    let total: f64 = ids.iter().map(|&t| weight(t)).sum();
    pick(ids.iter().copied(), weight, u * total).unwrap_or_else(|| first_max(logits))
}

/// The first candidate at which the running weight passes `target` (the last one with weight if rounding
/// leaves the target unreached).
fn pick(
    candidates: impl Iterator<Item = u32>,
    weight: impl Fn(u32) -> f64,
    target: f64,
) -> Option<u32> {
    let mut cum = 0.0;
    let mut last = None;
    for t in candidates {
        let x = weight(t);
        if x <= 0.0 {
            continue;
        }
        cum += x;
        last = Some(t);
        if cum > target {
            return last;
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_is_a_stream() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for i in 0..5 {
            let x = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            assert_eq!(x, uniform(7, i));
        }
    }

    /// A row `is_raw_argmax` passes gets the token the device picks (the first largest raw logit, what
    /// `ember_kernels::argmax_rows` returns); every processor that changes logits takes a row off that path.
    #[test]
    fn raw_argmax_rows_sample_the_first_largest_raw_logit() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let greedy = SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        };
        for case in 0..50 {
            // Few distinct values, so ties are common; NaN and -inf sprinkled in.
            let logits: Vec<f32> = (0..97)
                .map(|i| match (rng.next_u64() % 13, i % 17) {
                    (0, _) => f32::NAN,
                    (1, _) => f32::NEG_INFINITY,
                    (r, _) => (r % 4) as f32 - (case % 3) as f32,
                })
                .collect();
            let req = Request::new(format!("r{case}"), vec![1, 2, 3], greedy.clone());
            assert!(is_raw_argmax(&req));
            let out = sample(&SampleRow::new(&logits, &req));
            // The rule written out independently: the earliest of the largest values above -inf, else 0.
            let want = logits
                .iter()
                .enumerate()
                .filter(|(_, v)| **v > f32::NEG_INFINITY)
                .fold(None, |best: Option<(usize, f32)>, (i, &v)| match best {
                    Some((_, b)) if b >= v => best,
                    _ => Some((i, v)),
                })
                .map_or(0, |(i, _)| i as u32);
            assert_eq!(first_max(&logits), want, "case {case}");
            assert_eq!(out.token, want, "case {case}");
        }
        assert_eq!(first_max(&[f32::NAN, f32::NEG_INFINITY]), 0);

        let off_path = [
            SamplingParams {
                temperature: 0.7,
                ..greedy.clone()
            },
            SamplingParams {
                logprobs: Some(0),
                ..greedy.clone()
            },
            SamplingParams {
                logit_bias: [(5u32, 1.0f32)].into_iter().collect(),
                ..greedy.clone()
            },
            SamplingParams {
                repetition_penalty: 1.1,
                ..greedy.clone()
            },
            SamplingParams {
                frequency_penalty: 0.5,
                ..greedy.clone()
            },
            SamplingParams {
                presence_penalty: -0.5,
                ..greedy.clone()
            },
            SamplingParams {
                min_tokens: 1,
                ..greedy.clone()
            },
        ];
        for p in off_path {
            let req = Request::new("x", vec![1, 2, 3], p.clone());
            assert!(!is_raw_argmax(&req), "{p:?}");
        }
        // min_tokens stops mattering once that many tokens are out.
        let mut req = Request::new(
            "y",
            vec![1],
            SamplingParams {
                min_tokens: 1,
                ..greedy
            },
        );
        req.append_output_token(4);
        assert!(is_raw_argmax(&req));
    }

    #[test]
    fn top_k_indices_orders_and_breaks_ties_by_id() {
        let l = [1.0, 3.0, 3.0, f32::NAN, 2.0];
        assert_eq!(top_k_indices(&l, 3), vec![1, 2, 4]);
        assert_eq!(top_k_indices(&l, 10).len(), 5);
    }
}
