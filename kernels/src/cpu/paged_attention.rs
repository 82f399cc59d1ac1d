//! Paged causal attention on the CPU: per (sequence, KV head, run of queries) one work item, threaded with
//! rayon. Each item walks the sequence's blocks once per query with an online softmax (running max and sum
//! per head, the accumulator rescaled when the max grows), and every key and value row it reads serves all
//! the query heads that share its KV head (GQA). The dot products and value updates have an AVX2 form and a
//! portable one; `exp` is the same scalar call in both.

use rayon::prelude::*;

use super::dot;
use super::isa::Isa;
use crate::{AttentionMetadata, KvCacheSpec};

/// Query tokens one work item handles: small enough to spread a long prefill over all cores.
const QUERY_CHUNK: usize = 16;

/// One unit of parallel work: a run of query tokens of one sequence against one KV head (and every query
/// head that shares it, so each key and value is read once per group).
struct WorkItem {
    seq: usize,
    kv_head: usize,
    first_query: usize,
    num_queries: usize,
}

/// Everything an item reads.
struct Inputs<'a> {
    q: &'a [f32],
    k_cache: &'a [f32],
    v_cache: &'a [f32],
    spec: &'a KvCacheSpec,
    meta: &'a AttentionMetadata,
    num_heads: usize,
    scale: f32,
}

/// Causal attention of every token in the batch over its sequence's paged context.
///
/// `q` is `[tokens, num_heads, head_dim]`; `out` receives `[tokens, num_heads, head_dim]`. Each output
/// depends only on its own query and its own sequence's cache, computed in a fixed order (position by
/// position, block by block), so results are bit-identical whatever else is in the batch.
#[allow(clippy::too_many_arguments)]
pub fn attend(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    spec: &KvCacheSpec,
    meta: &AttentionMetadata,
    num_heads: usize,
    scale: f32,
    out: &mut [f32],
) {
    attend_with(
        Isa::detect(),
        q,
        k_cache,
        v_cache,
        spec,
        meta,
        num_heads,
        scale,
        out,
    )
}

/// [`attend`] with an explicit kernel family (the portable one if this CPU lacks it).
#[allow(clippy::too_many_arguments)]
pub fn attend_with(
    isa: Isa,
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    spec: &KvCacheSpec,
    meta: &AttentionMetadata,
    num_heads: usize,
    scale: f32,
    out: &mut [f32],
) {
    let isa = if isa.is_available() { isa } else { Isa::Scalar };
    let d = spec.head_dim;
    let group = num_heads / spec.num_kv_heads;
    let mut items = Vec::new();
    for (seq, span) in meta.seqs.iter().enumerate() {
        for kv_head in 0..spec.num_kv_heads {
            let mut first = 0;
            while first < span.query_len {
                let n = QUERY_CHUNK.min(span.query_len - first);
                items.push(WorkItem {
                    seq,
                    kv_head,
                    first_query: first,
                    num_queries: n,
                });
                first += n;
            }
        }
    }
    let inputs = Inputs {
        q,
        k_cache,
        v_cache,
        spec,
        meta,
        num_heads,
        scale,
    };
    let results: Vec<Vec<f32>> = items
        .par_iter()
        .map(|item| {
            let mut local = vec![0f32; item.num_queries * group * d];
            match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `isa` is available on this CPU (checked above).
                Isa::Avx2 => unsafe { item_avx2(&inputs, item, &mut local) },
                _ => item_scalar(&inputs, item, &mut local),
            }
            local
        })
        .collect();
    for (item, local) in items.iter().zip(results) {
        let span = &meta.seqs[item.seq];
        for qi in 0..item.num_queries {
            let token = span.query_start + item.first_query + qi;
            // The group's heads are adjacent in `q` and `out`.
            let head = item.kv_head * group;
            out[(token * num_heads + head) * d..][..group * d]
                .copy_from_slice(&local[qi * group * d..][..group * d]);
        }
    }
}

/// The body of one work item over a dot product, an in-place scale and an axpy: one definition for every
/// kernel family so they differ only in those three.
macro_rules! item_body {
    ($inputs:expr, $item:expr, $local:expr, $dot:path, $scale_row:path, $axpy:path) => {{
        let (inp, item, local): (&Inputs, &WorkItem, &mut [f32]) = ($inputs, $item, $local);
        let spec = inp.spec;
        let (d, bs) = (spec.head_dim, spec.block_size);
        let group = inp.num_heads / spec.num_kv_heads;
        let span = &inp.meta.seqs[item.seq];
        let past = span.context_len - span.query_len;
        let mut scores = vec![0f32; group * bs];
        let mut maxes = vec![f32::NEG_INFINITY; group];
        let mut sums = vec![0f32; group];
        for qi in 0..item.num_queries {
            let token = span.query_start + item.first_query + qi;
            // Causal: this query sees its own position and everything before it.
            let visible = past + item.first_query + qi + 1;
            let q_rows = &inp.q[(token * inp.num_heads + item.kv_head * group) * d..][..group * d];
            let accs = &mut local[qi * group * d..][..group * d];
            maxes.fill(f32::NEG_INFINITY);
            sums.fill(0.0);
            for (b, &block) in span.block_table.iter().enumerate() {
                let start = b * bs;
                if start >= visible {
                    break;
                }
                let n = bs.min(visible - start);
                // Positions of one block and KV head are adjacent rows of the cache.
                let base = spec.offset(block as usize * bs, item.kv_head);
                let keys = &inp.k_cache[base..][..n * d];
                let values = &inp.v_cache[base..][..n * d];
                for (p, k_row) in keys.chunks_exact(d).enumerate() {
                    for g in 0..group {
                        scores[g * bs + p] = $dot(&q_rows[g * d..][..d], k_row) * inp.scale;
                    }
                }
                for g in 0..group {
                    let s = &mut scores[g * bs..][..n];
                    let block_max = s.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
                    let new_max = maxes[g].max(block_max);
                    // exp(-inf) = 0 on the first block: the empty accumulator stays empty.
                    let alpha = (maxes[g] - new_max).exp();
                    let mut block_sum = 0f32;
                    for x in s.iter_mut() {
                        *x = (*x - new_max).exp();
                        block_sum += *x;
                    }
                    sums[g] = sums[g] * alpha + block_sum;
                    maxes[g] = new_max;
                    if alpha != 1.0 {
                        $scale_row(&mut accs[g * d..][..d], alpha);
                    }
                }
                for (p, v_row) in values.chunks_exact(d).enumerate() {
                    for g in 0..group {
                        $axpy(&mut accs[g * d..][..d], scores[g * bs + p], v_row);
                    }
                }
            }
            for g in 0..group {
                $scale_row(&mut accs[g * d..][..d], 1.0 / sums[g]);
            }
        }
    }};
}

fn item_scalar(inputs: &Inputs, item: &WorkItem, local: &mut [f32]) {
    item_body!(inputs, item, local, dot, scale_scalar, axpy_scalar)
}

fn scale_scalar(acc: &mut [f32], a: f32) {
    acc.iter_mut().for_each(|x| *x *= a);
}

fn axpy_scalar(acc: &mut [f32], w: f32, v: &[f32]) {
    for (o, x) in acc.iter_mut().zip(v) {
        *o += w * x;
    }
}

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn item_avx2(inputs: &Inputs, item: &WorkItem, local: &mut [f32]) {
    item_body!(inputs, item, local, avx2::dot, avx2::scale, avx2::axpy)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use crate::cpu::quant::hsum_avx2 as hsum;

    /// `a · b` with two 8-lane accumulators, then a scalar tail, in a fixed order.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut i = 0;
        // SAFETY: every load is inside both slices (i + 8 <= n).
        unsafe {
            let mut acc0 = _mm256_setzero_ps();
            let mut acc1 = _mm256_setzero_ps();
            while i + 16 <= n {
                acc0 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
                acc1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 8)),
                    _mm256_loadu_ps(pb.add(i + 8)),
                    acc1,
                );
                i += 16;
            }
            if i + 8 <= n {
                acc0 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
                i += 8;
            }
            let mut tail = 0f32;
            for j in i..n {
                tail += a[j] * b[j];
            }
            hsum(_mm256_add_ps(acc0, acc1)) + tail
        }
    }

    /// `acc *= a`.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn scale(acc: &mut [f32], a: f32) {
        let n = acc.len();
        let p = acc.as_mut_ptr();
        let mut i = 0;
        // SAFETY: every access is inside `acc` (i + 8 <= n).
        unsafe {
            let av = _mm256_set1_ps(a);
            while i + 8 <= n {
                _mm256_storeu_ps(p.add(i), _mm256_mul_ps(_mm256_loadu_ps(p.add(i)), av));
                i += 8;
            }
        }
        for x in &mut acc[i..] {
            *x *= a;
        }
    }

    /// `acc += w * v`.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn axpy(acc: &mut [f32], w: f32, v: &[f32]) {
        let n = acc.len().min(v.len());
        let (p, pv) = (acc.as_mut_ptr(), v.as_ptr());
        let mut i = 0;
        // SAFETY: every access is inside both slices (i + 8 <= n).
        unsafe {
            let wv = _mm256_set1_ps(w);
            while i + 8 <= n {
                let o = _mm256_fmadd_ps(wv, _mm256_loadu_ps(pv.add(i)), _mm256_loadu_ps(p.add(i)));
                _mm256_storeu_ps(p.add(i), o);
                i += 8;
            }
        }
        for j in i..n {
            acc[j] += w * v[j];
        }
    }
}
