//! CPU kernels against plain f64 references on random inputs.

mod common;

use candle_core::{Device, Tensor};
use common::reference_attention;
use ember_kernels::{
    apply_rope, matmul_t, paged_attention, AttentionMetadata, KvCacheSpec, LayerKvCache, RopeStyle,
    RopeTable, SeqSpan,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// The softmax scale the kernels use.
fn softmax_scale(d: usize) -> f64 {
    1.0 / (d as f64).sqrt()
}

#[test]
fn paged_attention_matches_contiguous_reference() {
    let mut rng = StdRng::seed_from_u64(1);
    for (block_size, h, kvh, d) in [
        (1, 4, 2, 16),
        (16, 14, 2, 64),
        (32, 9, 3, 64),
        (16, 8, 8, 32),
        (7, 6, 1, 24),
    ] {
        // Each sequence: (earlier context already cached, new tokens this step).
        let seqs = [(0usize, 37usize), (50, 1), (13, 20), (0, 1), (64, 3)];
        let blocks_needed: usize = seqs.iter().map(|(c, n)| (c + n).div_ceil(block_size)).sum();
        let spec = KvCacheSpec {
            num_blocks: blocks_needed + 5,
            block_size,
            num_kv_heads: kvh,
            head_dim: d,
        };
        let mut cache = LayerKvCache::new(spec, &Device::Cpu).unwrap();
        let mut ids: Vec<u32> = (0..spec.num_blocks as u32).collect();
        ids.shuffle(&mut rng);
        let mut meta = AttentionMetadata::default();
        let mut full_k = Vec::new();
        let mut full_v = Vec::new();
        let (mut q_all, mut k_all, mut v_all) = (Vec::new(), Vec::new(), Vec::new());
        let mut next_block = 0;
        for &(past, new) in &seqs {
            let total = past + new;
            let table: Vec<u32> = ids[next_block..next_block + total.div_ceil(block_size)].to_vec();
            next_block += table.len();
            let k = random(&mut rng, total * kvh * d);
            let v = random(&mut rng, total * kvh * d);
            // Earlier context goes in through a previous step of its own.
            if past > 0 {
                let prior = AttentionMetadata {
                    slot_mapping: (0..past)
                        .map(|p| table[p / block_size] as usize * block_size + p % block_size)
                        .collect(),
                    seqs: vec![SeqSpan {
                        query_start: 0,
                        query_len: past,
                        context_len: past,
                        block_table: table.clone(),
                    }],
                };
                let t = |x: &[f32], heads| {
                    Tensor::from_vec(x.to_vec(), (past, heads, d), &Device::Cpu).unwrap()
                };
                let q = random(&mut rng, past * h * d);
                paged_attention(
                    &t(&q, h),
                    &t(&k[..past * kvh * d], kvh),
                    &t(&v[..past * kvh * d], kvh),
                    &mut cache,
                    &prior,
                    1.0,
                )
                .unwrap();
            }
            meta.seqs.push(SeqSpan {
                query_start: q_all.len() / (h * d),
                query_len: new,
                context_len: total,
                block_table: table.clone(),
            });
            meta.slot_mapping.extend(
                (past..total).map(|p| table[p / block_size] as usize * block_size + p % block_size),
            );
            q_all.extend(random(&mut rng, new * h * d));
            k_all.extend_from_slice(&k[past * kvh * d..]);
            v_all.extend_from_slice(&v[past * kvh * d..]);
            full_k.push(k);
            full_v.push(v);
        }
        let tokens = q_all.len() / (h * d);
        let t = |x: &[f32], heads| {
            Tensor::from_vec(x.to_vec(), (tokens, heads, d), &Device::Cpu).unwrap()
        };
        let scale = 1.0 / (d as f32).sqrt();
        let out = paged_attention(
            &t(&q_all, h),
            &t(&k_all, kvh),
            &t(&v_all, kvh),
            &mut cache,
            &meta,
            scale,
        )
        .unwrap();
        let out: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
        let mut worst = 0f64;
        for (i, &(past, new)) in seqs.iter().enumerate() {
            let span = &meta.seqs[i];
            let q = &q_all[span.query_start * h * d..(span.query_start + new) * h * d];
            let k: Vec<f64> = full_k[i].iter().map(|&x| x as f64).collect();
            let v: Vec<f64> = full_v[i].iter().map(|&x| x as f64).collect();
            let expected =
                reference_attention(q, &k, &v, past + new, new, h, kvh, d, softmax_scale(d));
            let got = &out[span.query_start * h * d..(span.query_start + new) * h * d];
            for (g, e) in got.iter().zip(&expected) {
                worst = worst.max((*g as f64 - e).abs());
            }
        }
        assert!(
            worst < 1e-5,
            "block {block_size}, heads {h}/{kvh}, dim {d}: max error {worst:e}"
        );
    }
}

#[test]
fn bad_metadata_is_an_error_not_a_panic() {
    let spec = KvCacheSpec {
        num_blocks: 2,
        block_size: 4,
        num_kv_heads: 1,
        head_dim: 8,
    };
    let mut cache = LayerKvCache::new(spec, &Device::Cpu).unwrap();
    let x = Tensor::zeros((3, 1, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
    let span = |len, table: Vec<u32>| SeqSpan {
        query_start: 0,
        query_len: 3,
        context_len: len,
        block_table: table,
    };
    let cases = [
        AttentionMetadata {
            slot_mapping: vec![0, 1],
            seqs: vec![span(3, vec![0])],
        },
        AttentionMetadata {
            slot_mapping: vec![0, 1, 99],
            seqs: vec![span(3, vec![0])],
        },
        AttentionMetadata {
            slot_mapping: vec![0, 1, 2],
            seqs: vec![span(9, vec![0, 1])],
        },
        AttentionMetadata {
            slot_mapping: vec![0, 1, 2],
            seqs: vec![span(3, vec![5])],
        },
    ];
    for meta in cases {
        assert!(
            paged_attention(&x, &x, &x, &mut cache, &meta, 1.0).is_err(),
            "{meta:?}"
        );
    }
}

#[test]
fn matmul_matches_f64_reference_and_is_row_invariant() {
    let mut rng = StdRng::seed_from_u64(2);
    for (m, k, n) in [(1, 64, 100), (7, 33, 65), (32, 128, 257), (3, 5, 1)] {
        let x = random(&mut rng, m * k);
        let w = random(&mut rng, n * k);
        let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu).unwrap();
        let wt = Tensor::from_vec(w.clone(), (n, k), &Device::Cpu).unwrap();
        let y: Vec<Vec<f32>> = matmul_t(&xt, &wt).unwrap().to_vec2().unwrap();
        for r in 0..m {
            for c in 0..n {
                let e: f64 = (0..k)
                    .map(|i| x[r * k + i] as f64 * w[c * k + i] as f64)
                    .sum();
                assert!(
                    (y[r][c] as f64 - e).abs() < 1e-4,
                    "({m},{k},{n}) at [{r},{c}]"
                );
            }
            // The same row alone gives bit-identical results.
            let alone = matmul_t(&xt.narrow(0, r, 1).unwrap(), &wt)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            assert!(alone[0]
                .iter()
                .zip(&y[r])
                .all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }
}

#[test]
fn rope_styles_rotate_the_right_pairs() {
    let d = 8;
    // Both sides of the cached range (`CACHED_POSITIONS` = 4096) and far past it.
    let positions = [0usize, 1, 5, 1000, 4095, 4096, 50_000];
    let x: Vec<f32> = (0..positions.len() * d)
        .map(|i| (i % 7) as f32 - 3.0)
        .collect();
    let t = Tensor::from_vec(x.clone(), (positions.len(), 1, d), &Device::Cpu).unwrap();
    for style in [RopeStyle::Half, RopeStyle::Interleaved] {
        let table = RopeTable::new(d, 10_000.0, style);
        let y: Vec<f32> = apply_rope(&t, &positions, &table)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (ti, &pos) in positions.iter().enumerate() {
            for i in 0..d / 2 {
                let (a, b) = match style {
                    RopeStyle::Half => (i, i + d / 2),
                    RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                };
                let angle = pos as f64 / 10_000f64.powf(2.0 * i as f64 / d as f64);
                let (x0, x1) = (x[ti * d + a] as f64, x[ti * d + b] as f64);
                let e0 = x0 * angle.cos() - x1 * angle.sin();
                let e1 = x0 * angle.sin() + x1 * angle.cos();
                assert!(
                    (y[ti * d + a] as f64 - e0).abs() < 1e-5
                        && (y[ti * d + b] as f64 - e1).abs() < 1e-5
                );
            }
        }
    }
}

/// The paged attention kernel itself, every kernel family, on raw caches: many block sizes, head dims (odd
/// multiples of 8 and not), GQA ratios and 1..64 sequences mixing decodes and prefill chunks; each family
/// against the f64 reference, SIMD against scalar, and each sequence alone against the same sequence in the
/// batch (bit for bit).
#[test]
fn attention_kernel_families_match_reference_scalar_and_alone() {
    use ember_kernels::cpu::paged_attention::attend_with;
    use ember_kernels::Isa;
    let mut rng = StdRng::seed_from_u64(11);
    let cases = [
        // (block_size, heads, kv_heads, head_dim, sequences)
        (1, 4, 4, 8, 3),
        (5, 6, 1, 20, 17),
        (16, 9, 3, 64, 64),
        (16, 14, 2, 64, 5),
        (32, 8, 2, 72, 1),
        (7, 2, 2, 3, 9),
    ];
    for (bs, h, kvh, d, nseq) in cases {
        // (past, new) per sequence: mostly decodes, some prefill chunks, lengths across block boundaries.
        let seqs: Vec<(usize, usize)> = (0..nseq)
            .map(|_| {
                let new = if rng.random_ratio(1, 4) {
                    rng.random_range(2..=40)
                } else {
                    1
                };
                (rng.random_range(0..=70), new)
            })
            .collect();
        let blocks: usize = seqs.iter().map(|(p, n)| (p + n).div_ceil(bs)).sum();
        let spec = KvCacheSpec {
            num_blocks: blocks + 3,
            block_size: bs,
            num_kv_heads: kvh,
            head_dim: d,
        };
        let cache_len = spec.num_blocks * bs * kvh * d;
        let (k_cache, v_cache) = (random(&mut rng, cache_len), random(&mut rng, cache_len));
        let mut ids: Vec<u32> = (0..spec.num_blocks as u32).collect();
        ids.shuffle(&mut rng);
        let mut meta = AttentionMetadata::default();
        let mut next = 0;
        for &(past, new) in &seqs {
            let total = past + new;
            let table = ids[next..next + total.div_ceil(bs)].to_vec();
            next += table.len();
            let start = meta.slot_mapping.len();
            meta.slot_mapping
                .extend((past..total).map(|p| table[p / bs] as usize * bs + p % bs));
            meta.seqs.push(SeqSpan {
                query_start: start,
                query_len: new,
                context_len: total,
                block_table: table,
            });
        }
        let tokens = meta.slot_mapping.len();
        let q = random(&mut rng, tokens * h * d);
        let scale = 1.0 / (d as f32).sqrt();
        let run = |isa: Isa, q: &[f32], meta: &AttentionMetadata| {
            let mut out = vec![0f32; q.len()];
            attend_with(isa, q, &k_cache, &v_cache, &spec, meta, h, scale, &mut out);
            out
        };
        let scalar = run(Isa::Scalar, &q, &meta);
        for isa in Isa::available() {
            let out = run(isa, &q, &meta);
            let mut worst = 0f64;
            for (i, span) in meta.seqs.iter().enumerate() {
                // The sequence's context as contiguous [pos, kvh, d] rows, in f64.
                let gather = |cache: &[f32]| -> Vec<f64> {
                    let mut rows = Vec::new();
                    for p in 0..span.context_len {
                        let slot = span.block_table[p / bs] as usize * bs + p % bs;
                        for kv in 0..kvh {
                            let at = spec.offset(slot, kv);
                            rows.extend(cache[at..at + d].iter().map(|&x| x as f64));
                        }
                    }
                    rows
                };
                let range = span.query_start * h * d..(span.query_start + span.query_len) * h * d;
                let expected = reference_attention(
                    &q[range.clone()],
                    &gather(&k_cache),
                    &gather(&v_cache),
                    span.context_len,
                    span.query_len,
                    h,
                    kvh,
                    d,
                    softmax_scale(d),
                );
                for (g, e) in out[range.clone()].iter().zip(&expected) {
                    worst = worst.max((*g as f64 - e).abs());
                }
                // Alone: the same bits as inside the batch.
                let alone_meta = AttentionMetadata {
                    slot_mapping: meta.slot_mapping
                        [span.query_start..span.query_start + span.query_len]
                        .to_vec(),
                    seqs: vec![SeqSpan {
                        query_start: 0,
                        ..span.clone()
                    }],
                };
                let alone = run(isa, &q[range.clone()], &alone_meta);
                for (a, b) in alone.iter().zip(&out[range]) {
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{isa:?} case {bs}/{h}/{kvh}/{d}: seq {i} alone differs"
                    );
                }
            }
            assert!(
                worst < 1e-5,
                "{isa:?} block {bs}, heads {h}/{kvh}, dim {d}, {nseq} seqs: max error {worst:e}"
            );
            for (a, b) in out.iter().zip(&scalar) {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "{isa:?} vs scalar: {a} vs {b}"
                );
            }
        }
    }
}
