//! Paged causal attention on the CPU: per (sequence, KV head, run of queries) one work item, threaded with
//! rayon. Each item walks the sequence's blocks once per query with an online softmax (running max and sum
//! per head, the accumulator rescaled when the max grows), and every key and value row it reads serves all
//! the query heads that share its KV head (GQA). The dot products and value updates have an AVX2 form and a
//! portable one; `exp` is the same scalar call in both.

use rayon::prelude::*;

use super::dot;
use super::isa::Isa;
use crate::{AttentionMetadata, KvCacheSpec, SeqSpan};

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

impl WorkItem {
    /// For query `qi` of the item: its token's index in the batch and how many positions it sees
    /// (causal: its own and everything before it).
    fn query(&self, span: &SeqSpan, qi: usize) -> (usize, usize) {
        let past = span.context_len - span.query_len;
        (
            span.query_start + self.first_query + qi,
            past + self.first_query + qi + 1,
        )
    }
}

/// The cache blocks of `span` that `visible` positions reach: for each, the offset of its rows for
/// `kv_head` (positions of one block and KV head are adjacent rows) and how many of them count.
fn visible_blocks<'a>(
    spec: &'a KvCacheSpec,
    span: &'a SeqSpan,
    kv_head: usize,
    visible: usize,
) -> impl Iterator<Item = (usize, usize)> + 'a {
    let bs = spec.block_size;
    span.block_table
        .iter()
        .enumerate()
        .take_while(move |(b, _)| b * bs < visible)
        .map(move |(b, &block)| {
            (
                spec.offset(block as usize * bs, kv_head),
                bs.min(visible - b * bs),
            )
        })
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
                Isa::Avx2 | Isa::Avx512Vnni | Isa::Amx => unsafe {
                    item_avx2(&inputs, item, &mut local)
                },
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
        let mut scores = vec![0f32; group * bs];
        let mut maxes = vec![f32::NEG_INFINITY; group];
        let mut sums = vec![0f32; group];
        for qi in 0..item.num_queries {
            let (token, visible) = item.query(span, qi);
            let q_rows = &inp.q[(token * inp.num_heads + item.kv_head * group) * d..][..group * d];
            let accs = &mut local[qi * group * d..][..group * d];
            maxes.fill(f32::NEG_INFINITY);
            sums.fill(0.0);
            for (base, n) in visible_blocks(spec, span, item.kv_head, visible) {
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
    if inputs.spec.head_dim.is_multiple_of(8) {
        avx2::item_blocked(inputs, item, local)
    } else {
        item_body!(inputs, item, local, avx2::dot, avx2::scale, avx2::axpy)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{visible_blocks, Inputs, WorkItem};
    use crate::cpu::quant::hsum_avx2 as hsum;
    use crate::cpu::vexp::exp_avx2;

    /// Lane `j` = the sum of `v[j]`'s lanes (a fixed order).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn sum_each(v: &[__m256; 8]) -> __m256 {
        let h01 = _mm256_hadd_ps(v[0], v[1]);
        let h23 = _mm256_hadd_ps(v[2], v[3]);
        let h45 = _mm256_hadd_ps(v[4], v[5]);
        let h67 = _mm256_hadd_ps(v[6], v[7]);
        let g0 = _mm256_hadd_ps(h01, h23);
        let g1 = _mm256_hadd_ps(h45, h67);
        _mm256_add_ps(
            _mm256_permute2f128_ps(g0, g1, 0x20),
            _mm256_permute2f128_ps(g0, g1, 0x31),
        )
    }

    /// Scores of one query head (`q`, `d` values) against keys `0..count` (`count <= 8`) of the rows at
    /// `keys` (`d` apart): lane `j` = `q · key j` (lanes past `count` repeat the last key).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot8(q: *const f32, keys: *const f32, count: usize, d: usize) -> __m256 {
        let mut rows = [keys; 8];
        for (j, row) in rows.iter_mut().enumerate() {
            *row = keys.add(j.min(count - 1) * d);
        }
        let mut acc = [_mm256_setzero_ps(); 8];
        for i in (0..d).step_by(8) {
            let qv = _mm256_loadu_ps(q.add(i));
            for (a, row) in acc.iter_mut().zip(&rows) {
                *a = _mm256_fmadd_ps(qv, _mm256_loadu_ps(row.add(i)), *a);
            }
        }
        sum_each(&acc)
    }

    /// `acc[col..col + 8 NV] = alpha · acc + Σ_p w[p] · values[p][col..]` over `n` value rows (`d` apart),
    /// the accumulator held in registers for the whole block.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn weighted_values<const NV: usize>(
        acc: *mut f32,
        alpha: f32,
        w: &[f32],
        values: *const f32,
        d: usize,
    ) {
        let av = _mm256_set1_ps(alpha);
        let mut a = [_mm256_setzero_ps(); NV];
        for (i, ai) in a.iter_mut().enumerate() {
            *ai = _mm256_mul_ps(_mm256_loadu_ps(acc.add(8 * i)), av);
        }
        for (p, &wp) in w.iter().enumerate() {
            let wv = _mm256_set1_ps(wp);
            let row = values.add(p * d);
            for (i, ai) in a.iter_mut().enumerate() {
                *ai = _mm256_fmadd_ps(wv, _mm256_loadu_ps(row.add(8 * i)), *ai);
            }
        }
        for (i, ai) in a.iter().enumerate() {
            _mm256_storeu_ps(acc.add(8 * i), *ai);
        }
    }

    /// One work item for head sizes that are a multiple of 8: per block of keys, the scores of eight keys
    /// at a time (eight dot products reduced together), the online softmax on whole vectors with a
    /// polynomial `exp` ([`exp_avx2`]), and the value rows accumulated into registers (64 values of a head at a time).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; `head_dim` is a multiple of 8.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn item_blocked(inp: &Inputs, item: &WorkItem, local: &mut [f32]) {
        let spec = inp.spec;
        let (d, bs) = (spec.head_dim, spec.block_size);
        let group = inp.num_heads / spec.num_kv_heads;
        let span = &inp.meta.seqs[item.seq];
        let stride = bs.next_multiple_of(8);
        let mut scores = vec![0f32; group * stride];
        let mut maxes = vec![f32::NEG_INFINITY; group];
        let mut sums = vec![0f32; group];
        let score_scale = _mm256_set1_ps(inp.scale);
        for qi in 0..item.num_queries {
            let (token, visible) = item.query(span, qi);
            let q_rows = &inp.q[(token * inp.num_heads + item.kv_head * group) * d..][..group * d];
            let accs = &mut local[qi * group * d..][..group * d];
            maxes.fill(f32::NEG_INFINITY);
            sums.fill(0.0);
            for (base, n) in visible_blocks(spec, span, item.kv_head, visible) {
                let keys = inp.k_cache[base..][..n * d].as_ptr();
                let values = inp.v_cache[base..][..n * d].as_ptr();
                for g in 0..group {
                    let q = q_rows[g * d..][..d].as_ptr();
                    let s = &mut scores[g * stride..][..stride];
                    for p0 in (0..n).step_by(8) {
                        let v =
                            _mm256_mul_ps(dot8(q, keys.add(p0 * d), 8.min(n - p0), d), score_scale);
                        _mm256_storeu_ps(s[p0..p0 + 8].as_mut_ptr(), v);
                    }
                    // Lanes past n repeat a real score: harmless for the max, masked out of the sum.
                    let mut mv = _mm256_set1_ps(f32::NEG_INFINITY);
                    for p0 in (0..n).step_by(8) {
                        mv = _mm256_max_ps(mv, _mm256_loadu_ps(s[p0..].as_ptr()));
                    }
                    let mut lanes = [0f32; 8];
                    _mm256_storeu_ps(lanes.as_mut_ptr(), mv);
                    let new_max = lanes.iter().fold(maxes[g], |a, &v| a.max(v));
                    let nm = _mm256_set1_ps(new_max);
                    let mut sv = _mm256_setzero_ps();
                    for p0 in (0..n).step_by(8) {
                        let e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(s[p0..].as_ptr()), nm));
                        let live = _mm256_cmpgt_epi32(
                            _mm256_set1_epi32((n - p0) as i32),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                        );
                        let e = _mm256_and_ps(e, _mm256_castsi256_ps(live));
                        _mm256_storeu_ps(s[p0..].as_mut_ptr(), e);
                        sv = _mm256_add_ps(sv, e);
                    }
                    let alpha = if maxes[g] == f32::NEG_INFINITY {
                        0.0
                    } else {
                        _mm256_cvtss_f32(exp_avx2(_mm256_set1_ps(maxes[g] - new_max)))
                    };
                    sums[g] = sums[g] * alpha + hsum(sv);
                    maxes[g] = new_max;
                    let acc = accs[g * d..][..d].as_mut_ptr();
                    let mut col = 0;
                    while col < d {
                        if d - col >= 64 {
                            weighted_values::<8>(acc.add(col), alpha, &s[..n], values.add(col), d);
                            col += 64;
                        } else {
                            weighted_values::<1>(acc.add(col), alpha, &s[..n], values.add(col), d);
                            col += 8;
                        }
                    }
                }
            }
            for g in 0..group {
                scale(&mut accs[g * d..][..d], 1.0 / sums[g]);
            }
        }
    }

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
