//! ember's CUDA kernels (cache write, flash prefill, split-K decode, the fused layer ops) against a float64 CPU reference, on
//! fresh random inputs with NaN-poisoned outputs and cache. Without a CUDA device every test prints why it
//! skips and returns.
#![cfg(feature = "cuda")]

mod common;

use candle_core::{DType, Device, Tensor};
use common::reference_attention;
use ember_kernels::cuda::{
    kv_blocks_for_memory, paged_attention_into, paged_attention_scheduled, CudaLayerKvCache,
    GpuAttentionMetadata, KernelChoice, PrefillSchedule,
};
use ember_kernels::{
    add_rms_norm, argmax_rows, copy_to_host, first_max, silu_mul_halves, split_qkv_rope,
    AttentionMetadata, DeviceChoice, KvCacheDtype, KvCacheSpec, RopeStyle, RopeTable, SeqSpan,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

fn gpu() -> Option<Device> {
    // One line saying why (no device, the stub driver, ...), candle's backtrace dropped.
    match DeviceChoice::Cuda(0).open() {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("skipping: {e}");
            None
        }
    }
}

/// One attention problem: cache geometry, types, and per sequence (cached context, new tokens).
#[derive(Clone, Copy, Debug)]
struct Case {
    block_size: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    dtype: DType,
    kv: KvCacheDtype,
    seed: u64,
}

fn round_to(dtype: DType, x: f32) -> f32 {
    match dtype {
        DType::BF16 => half::bf16::from_f32(x).to_f32(),
        _ => half::f16::from_f32(x).to_f32(),
    }
}

/// Decodes one cache element as the kernels read it.
fn decode(dtype: DType, kv: KvCacheDtype, bytes: &[u8], scale: f32) -> f64 {
    match kv {
        KvCacheDtype::Fp8E4M3 => e4m3_to_f64(bytes[0]) * scale as f64,
        KvCacheDtype::Auto => {
            let bits = u16::from_le_bytes([bytes[0], bytes[1]]);
            match dtype {
                DType::BF16 => half::bf16::from_bits(bits).to_f64(),
                _ => half::f16::from_bits(bits).to_f64(),
            }
        }
    }
}

fn e4m3_to_f64(b: u8) -> f64 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = ((b >> 3) & 0xF) as i32;
    let man = (b & 7) as f64;
    if exp == 0xF && b & 7 == 7 {
        return f64::NAN;
    }
    if exp == 0 {
        sign * man / 8.0 * 2f64.powi(-6)
    } else {
        sign * (1.0 + man / 8.0) * 2f64.powi(exp - 7)
    }
}

fn to_device(
    x: &[f32],
    shape: impl Into<candle_core::Shape>,
    dtype: DType,
    dev: &Device,
) -> Tensor {
    Tensor::from_vec(x.to_vec(), shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
        .to_device(dev)
        .unwrap()
}

/// Relative error bound per METHOD.md: bf16 operands land between 1e-3 and 1e-2, f16 about 8x tighter.
fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::BF16 => 1e-2,
        _ => 2e-3,
    }
}

/// Builds the paged cache for `seqs` through the cache-write kernel (earlier context in a step of its own,
/// then this step's tokens), checks what landed in the cache, runs attention with `choice` into a
/// NaN-poisoned output and compares with the float64 reference over the cache's own (rounded) values.
fn check(dev: &Device, case: Case, seqs: &[(usize, usize)], choice: KernelChoice) {
    let Case {
        block_size,
        heads: h,
        kv_heads: kvh,
        head_dim: d,
        dtype,
        kv,
        seed,
    } = case;
    let mut rng = StdRng::seed_from_u64(seed);
    let blocks: usize = seqs.iter().map(|(p, n)| (p + n).div_ceil(block_size)).sum();
    let spec = KvCacheSpec {
        num_blocks: blocks + 3,
        block_size,
        num_kv_heads: kvh,
        head_dim: d,
    };
    // Per-tensor fp8 scales: random values are within ±2, so 2/448 keeps them in e4m3's range.
    let (k_scale, v_scale) = (2.0 / 448.0, 1.5 / 448.0);
    let mut cache = CudaLayerKvCache::new(spec, dtype, kv, k_scale, v_scale, dev).unwrap();
    cache.fill_bytes(0xFF).unwrap();
    let mut ids: Vec<u32> = (0..spec.num_blocks as u32).collect();
    ids.shuffle(&mut rng);

    let slot =
        |table: &[u32], p: usize| table[p / block_size] as usize * block_size + p % block_size;
    let mut tables = Vec::new();
    let mut full_k = Vec::new();
    let mut full_v = Vec::new();
    let mut next = 0;
    // Earlier context: one step of all sequences' cached positions (only the cache write matters there).
    let mut prior = AttentionMetadata::default();
    let (mut pk, mut pv) = (Vec::new(), Vec::new());
    for &(past, new) in seqs {
        let total = past + new;
        let table = ids[next..next + total.div_ceil(block_size)].to_vec();
        next += table.len();
        let k: Vec<f32> = (0..total * kvh * d)
            .map(|_| rng.random_range(-2.0f32..2.0))
            .collect();
        let v: Vec<f32> = (0..total * kvh * d)
            .map(|_| rng.random_range(-1.5f32..1.5))
            .collect();
        if past > 0 {
            prior.seqs.push(SeqSpan {
                query_start: prior.slot_mapping.len(),
                query_len: past,
                context_len: past,
                block_table: table.clone(),
            });
            prior
                .slot_mapping
                .extend((0..past).map(|p| slot(&table, p)));
            pk.extend_from_slice(&k[..past * kvh * d]);
            pv.extend_from_slice(&v[..past * kvh * d]);
        }
        tables.push(table);
        full_k.push(k);
        full_v.push(v);
    }
    let Device::Cuda(cuda) = dev else {
        unreachable!()
    };
    if !prior.seqs.is_empty() {
        let n = prior.slot_mapping.len();
        let meta = GpuAttentionMetadata::upload(&prior, n, &spec, cuda).unwrap();
        let kt = to_device(&pk, (n, kvh, d), dtype, dev);
        let vt = to_device(&pv, (n, kvh, d), dtype, dev);
        cache.write(&kt, &vt, &meta).unwrap();
    }
    // This step: every sequence's new tokens, packed.
    let mut meta = AttentionMetadata::default();
    let (mut q_all, mut k_all, mut v_all) = (Vec::new(), Vec::new(), Vec::new());
    for (i, &(past, new)) in seqs.iter().enumerate() {
        meta.seqs.push(SeqSpan {
            query_start: meta.slot_mapping.len(),
            query_len: new,
            context_len: past + new,
            block_table: tables[i].clone(),
        });
        meta.slot_mapping
            .extend((past..past + new).map(|p| slot(&tables[i], p)));
        // Queries scaled up so the softmax is far from uniform.
        q_all.extend((0..new * h * d).map(|_| round_to(dtype, rng.random_range(-3.0f32..3.0))));
        k_all.extend_from_slice(&full_k[i][past * kvh * d..]);
        v_all.extend_from_slice(&full_v[i][past * kvh * d..]);
    }
    let tokens = meta.slot_mapping.len();
    let gmeta = GpuAttentionMetadata::upload(&meta, tokens, &spec, cuda).unwrap();
    cache
        .write(
            &to_device(&k_all, (tokens, kvh, d), dtype, dev),
            &to_device(&v_all, (tokens, kvh, d), dtype, dev),
            &gmeta,
        )
        .unwrap();

    // The cache holds every written position (rounded to its type) and nothing else changed.
    let (kb, vb) = cache.to_host_bytes().unwrap();
    let esize = match kv {
        KvCacheDtype::Auto => 2,
        KvCacheDtype::Fp8E4M3 => 1,
    };
    let mut written = vec![false; spec.layer_elems()];
    let mut cached_k = Vec::new();
    let mut cached_v = Vec::new();
    for (i, &(past, new)) in seqs.iter().enumerate() {
        let (mut ck, mut cv) = (Vec::new(), Vec::new());
        for p in 0..past + new {
            for head in 0..kvh {
                let base = spec.offset(slot(&tables[i], p), head);
                for j in 0..d {
                    let e = base + j;
                    written[e] = true;
                    let gk = decode(dtype, kv, &kb[e * esize..], k_scale);
                    let gv = decode(dtype, kv, &vb[e * esize..], v_scale);
                    let (xk, xv) = (
                        full_k[i][(p * kvh + head) * d + j] as f64,
                        full_v[i][(p * kvh + head) * d + j] as f64,
                    );
                    // The tensors were rounded to the model's type on the way in. bf16/f16 storage keeps
                    // that value exactly; e4m3 keeps 3 mantissa bits (rounding error at most 1/16 of the
                    // value) above its subnormals (steps of scale·2^-9).
                    let (xk, xv) = (
                        round_to(dtype, xk as f32) as f64,
                        round_to(dtype, xv as f32) as f64,
                    );
                    let (ek, ev) = match kv {
                        KvCacheDtype::Auto => ((gk - xk).abs(), (gv - xv).abs()),
                        KvCacheDtype::Fp8E4M3 => (
                            (gk - xk).abs()
                                - 1.001 * (xk.abs() / 16.0 + k_scale as f64 * 2f64.powi(-10)),
                            (gv - xv).abs()
                                - 1.001 * (xv.abs() / 16.0 + v_scale as f64 * 2f64.powi(-10)),
                        ),
                    };
                    assert!(
                        ek <= 0.0 && ev <= 0.0,
                        "{case:?}: cache at seq {i} pos {p} head {head} dim {j}: k {gk} for {xk}, v {gv} for {xv}"
                    );
                    ck.push(gk);
                    cv.push(gv);
                }
            }
        }
        cached_k.push(ck);
        cached_v.push(cv);
    }
    let untouched = written
        .iter()
        .enumerate()
        .filter(|(_, w)| !**w)
        .all(|(e, _)| kb[e * esize..(e + 1) * esize].iter().all(|&b| b == 0xFF));
    assert!(
        untouched,
        "{case:?}: the cache write touched slots outside the slot mapping"
    );

    // Attention into a NaN-poisoned output, with each prefill schedule.
    let scale = 1.0 / (d as f32).sqrt();
    let q = to_device(&q_all, (tokens, h, d), dtype, dev);
    for schedule in [PrefillSchedule::Staged, PrefillSchedule::Pipelined] {
        let out = Tensor::full(f32::NAN, (tokens, h, d), dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        paged_attention_scheduled(&q, &cache, &gmeta, scale, &out, choice, schedule).unwrap();
        let got: Vec<f32> = out
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let (mut err2, mut ref2) = (0f64, 0f64);
        for (i, &(past, new)) in seqs.iter().enumerate() {
            let start = meta.seqs[i].query_start;
            let expected = reference_attention(
                &q_all[start * h * d..(start + new) * h * d],
                &cached_k[i],
                &cached_v[i],
                past + new,
                new,
                h,
                kvh,
                d,
                scale as f64,
            );
            let g = &got[start * h * d..(start + new) * h * d];
            for (j, (&g, &e)) in g.iter().zip(&expected).enumerate() {
                assert!(
                    g.is_finite(),
                    "{case:?} {choice:?} {schedule:?}: seq {i} (past {past}, new {new}) element {j} is {g} \
                     (unwritten or NaN)"
                );
                err2 += (g as f64 - e).powi(2);
                ref2 += e * e;
            }
        }
        let rel = (err2 / ref2).sqrt();
        eprintln!("{case:?} {choice:?} {schedule:?} seqs {seqs:?}: relative error {rel:.2e}");
        assert!(
            rel < tolerance(dtype),
            "{case:?} {choice:?} {schedule:?} seqs {seqs:?}: relative error {rel:e} over {}",
            tolerance(dtype)
        );
    }
}

/// Mixed batches: fresh prefills, chunked prefills over cached context, decodes, odd lengths and block
/// boundaries (lengths at, one under and one over multiples of the block size and the 64-row tiles).
const MIXED: &[(usize, usize)] = &[
    (0, 1),
    (0, 37),
    (50, 1),
    (13, 20),
    (0, 64),
    (64, 65),
    (127, 1),
    (15, 17),
    (200, 63),
];

fn both_kernels(case: Case, seqs: &[(usize, usize)]) {
    let Some(dev) = gpu() else { return };
    check(&dev, case, seqs, KernelChoice::Auto);
    check(
        &dev,
        Case {
            seed: case.seed + 1000,
            ..case
        },
        seqs,
        KernelChoice::PrefillOnly,
    );
}

fn case(
    block_size: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    dtype: DType,
    seed: u64,
) -> Case {
    Case {
        block_size,
        heads,
        kv_heads,
        head_dim,
        dtype,
        kv: KvCacheDtype::Auto,
        seed,
    }
}

#[test]
fn bf16_d128_mha_mixed_batch() {
    both_kernels(case(16, 4, 4, 128, DType::BF16, 1), MIXED);
}

#[test]
fn bf16_d64_gqa2_mixed_batch() {
    both_kernels(case(16, 8, 4, 64, DType::BF16, 2), MIXED);
}

#[test]
fn bf16_d64_gqa7_odd_block_size() {
    // Qwen2.5-0.5B's shape: 14 heads over 2 kv heads; a block size that divides nothing.
    both_kernels(case(7, 14, 2, 64, DType::BF16, 3), MIXED);
}

#[test]
fn f16_d128_gqa2_block32() {
    both_kernels(case(32, 4, 2, 128, DType::F16, 4), MIXED);
}

#[test]
fn block_size_one() {
    both_kernels(
        case(1, 2, 1, 64, DType::BF16, 5),
        &[(0, 9), (30, 1), (5, 70)],
    );
}

#[test]
fn gqa16_decode_falls_back_to_the_prefill_kernel() {
    both_kernels(
        case(16, 16, 1, 128, DType::BF16, 6),
        &[(100, 1), (0, 33), (300, 1)],
    );
}

#[test]
fn long_contexts_split_k_and_chunked_prefill() {
    // Decodes over many 256-key partitions (including a partial last one) next to a long prefill chunk
    // on top of cached context.
    both_kernels(
        case(16, 4, 2, 128, DType::BF16, 7),
        &[
            (8191, 1),
            (3000, 1),
            (1000, 300),
            (256, 1),
            (255, 1),
            (0, 1500),
        ],
    );
}

#[test]
fn long_prefill_d64() {
    let Some(dev) = gpu() else { return };
    check(
        &dev,
        case(16, 2, 1, 64, DType::BF16, 8),
        &[(0, 2048), (0, 1)],
        KernelChoice::Auto,
    );
}

#[test]
fn fp8_cache_bf16_and_f16() {
    let Some(dev) = gpu() else { return };
    for (i, (dtype, d, h, kvh)) in [
        (DType::BF16, 128, 4, 2),
        (DType::F16, 64, 14, 2),
        (DType::BF16, 64, 7, 1),
    ]
    .into_iter()
    .enumerate()
    {
        let c = Case {
            kv: KvCacheDtype::Fp8E4M3,
            ..case(16, h, kvh, d, dtype, 20 + i as u64)
        };
        check(&dev, c, MIXED, KernelChoice::Auto);
        check(
            &dev,
            Case {
                seed: c.seed + 1000,
                ..c
            },
            MIXED,
            KernelChoice::PrefillOnly,
        );
        check(
            &dev,
            Case {
                seed: c.seed + 2000,
                ..c
            },
            &[(2000, 1), (700, 90)],
            KernelChoice::Auto,
        );
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let Some(dev) = gpu() else { return };
    let spec = KvCacheSpec {
        num_blocks: 4,
        block_size: 16,
        num_kv_heads: 2,
        head_dim: 96,
    };
    // Head dim 96 is not built: a clear error when attending.
    let cache =
        CudaLayerKvCache::new(spec, DType::BF16, KvCacheDtype::Auto, 1.0, 1.0, &dev).unwrap();
    let meta = AttentionMetadata {
        slot_mapping: vec![0],
        seqs: vec![SeqSpan {
            query_start: 0,
            query_len: 1,
            context_len: 1,
            block_table: vec![0],
        }],
    };
    let Device::Cuda(cuda) = &dev else {
        unreachable!()
    };
    let gmeta = GpuAttentionMetadata::upload(&meta, 1, &spec, cuda).unwrap();
    let q = Tensor::zeros((1, 4, 96), DType::BF16, &dev).unwrap();
    let out = q.zeros_like().unwrap();
    assert!(paged_attention_into(&q, &cache, &gmeta, 1.0, &out, KernelChoice::Auto).is_err());
    // f32 is not a CUDA attention type; a slot outside the cache is rejected at upload.
    assert!(CudaLayerKvCache::new(spec, DType::F32, KvCacheDtype::Auto, 1.0, 1.0, &dev).is_err());
    let bad = AttentionMetadata {
        slot_mapping: vec![64],
        ..meta
    };
    assert!(GpuAttentionMetadata::upload(&bad, 1, &spec, cuda).is_err());
}

/// The device `DeviceChoice` opens issues its work on one stream of its own, not on CUDA's per-thread
/// default stream (handle 0x2): the engine thread, a pool worker and the loading thread all queue on it in
/// the order they issue, and `synchronize` waits for all of it. (On the per-thread stream `ember eval`
/// hit illegal addresses on the H100: memory freed on one thread's stream reused under another's kernel.)
#[test]
fn the_device_queues_every_thread_on_one_stream() {
    let Some(dev) = gpu() else { return };
    let Device::Cuda(cuda) = &dev else {
        unreachable!("a CUDA choice opens a CUDA device")
    };
    assert_ne!(cuda.cuda_stream().cu_stream() as usize, 0x2);
    // Computed on another thread, read here with no wait in between.
    let a = Tensor::randn(0f32, 1.0, (1024, 1024), &dev).unwrap();
    let want = {
        let h = a.to_device(&Device::Cpu).unwrap();
        h.matmul(&h)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    for _ in 0..4 {
        let sum = std::thread::scope(|s| {
            s.spawn(|| a.matmul(&a).unwrap().sum_all().unwrap())
                .join()
                .unwrap()
        });
        let got = sum.to_scalar::<f32>().unwrap();
        assert!(
            (got - want).abs() <= 1e-3 * want.abs().max(1.0),
            "{got} vs {want}"
        );
    }
}

/// Greedy tokens picked on the device are the host sampler's (`first_max`: lowest index among equal
/// maxima, NaN never chosen, 0 when nothing beats -inf), on rows full of ties, NaN and -inf, at vocab
/// sizes that are and are not multiples of the block; `copy_to_host` brings rows back exactly into a
/// reused buffer.
#[test]
fn argmax_rows_and_copy_to_host_match_the_host() {
    let Some(dev) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(31);
    let mut buffer = Vec::new();
    for &(rows, vocab) in &[
        (1usize, 1usize),
        (3, 5),
        (7, 1023),
        (5, 1025),
        (9, 151_936),
        (2, 49_152),
    ] {
        let mut data: Vec<f32> = (0..rows * vocab)
            .map(|_| match rng.random_range(0..20) {
                0 => f32::NAN,
                1 => f32::NEG_INFINITY,
                k => (k % 5) as f32,
            })
            .collect();
        // One row of nothing but -inf and NaN: index 0, as on the host.
        for x in &mut data[..vocab] {
            *x = if rng.random_bool(0.5) {
                f32::NAN
            } else {
                f32::NEG_INFINITY
            };
        }
        let logits = Tensor::from_vec(data.clone(), (rows, vocab), &dev).unwrap();
        let mut pick: Vec<u32> = (0..rows as u32).collect();
        pick.shuffle(&mut rng);
        pick.truncate(rows.div_ceil(2).max(1));
        let got = argmax_rows(&logits, &pick).unwrap();
        let want: Vec<u32> = pick
            .iter()
            .map(|&r| first_max(&data[r as usize * vocab..(r as usize + 1) * vocab]))
            .collect();
        assert_eq!(got, want, "rows {rows} vocab {vocab} picked {pick:?}");
        copy_to_host(&logits, &mut buffer).unwrap();
        assert_eq!(buffer.len(), data.len());
        assert!(buffer
            .iter()
            .zip(&data)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }
    let logits = Tensor::zeros((2, 8), DType::F32, &dev).unwrap();
    assert!(
        argmax_rows(&logits, &[2]).is_err(),
        "a row past the end is an error"
    );
}

/// Needs no device: the pool sizing arithmetic behind `--gpu-memory-utilization`.
#[test]
fn kv_pool_takes_the_share_left_after_what_is_in_use() {
    let gib = 1usize << 30;
    // 80 GiB card, 4 GiB in use, 0.9 -> 72 GiB budget, 68 GiB for blocks of 1 MiB.
    assert_eq!(
        kv_blocks_for_memory(76 * gib, 80 * gib, 0.9, 1 << 20).unwrap(),
        68 * 1024
    );
    // 70 GiB in use leaves 2 GiB of the budget; 75 GiB leaves nothing. Nothing left, a utilization out
    // of range, or empty blocks: errors, not panics.
    assert_eq!(
        kv_blocks_for_memory(10 * gib, 80 * gib, 0.9, 1 << 20).unwrap(),
        2 * 1024
    );
    assert!(kv_blocks_for_memory(5 * gib, 80 * gib, 0.9, 1 << 20).is_err());
    assert!(kv_blocks_for_memory(76 * gib, 80 * gib, 1.5, 1 << 20).is_err());
    assert!(kv_blocks_for_memory(76 * gib, 80 * gib, 0.0, 1 << 20).is_err());
    assert!(kv_blocks_for_memory(76 * gib, 80 * gib, 0.9, 0).is_err());
}

/// Host values of a tensor, as f64.
fn host_f64(t: &Tensor) -> Vec<f64> {
    t.to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// Random values rounded to `dtype`, on the device and (the same rounded values) on the host in f64.
fn random_on(rng: &mut StdRng, dims: &[usize], dtype: DType, dev: &Device) -> (Tensor, Vec<f64>) {
    let n: usize = dims.iter().product();
    let data: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect();
    let t = to_device(&data, dims, dtype, dev);
    let host = host_f64(&t);
    (t, host)
}

/// Largest |got - want| over the largest |want| (0 for empty tensors).
fn relative_error(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f64, |m, w| m.max(w.abs())).max(1e-30);
    got.iter()
        .zip(want)
        .map(|(g, w)| {
            if g.is_nan() {
                f64::INFINITY
            } else {
                (g - w).abs()
            }
        })
        .fold(0f64, f64::max)
        / scale
}

/// Best-effort output poisoning for kernels that allocate their outputs: NaN-filled blocks of the same
/// size freed just before, which the stream-ordered allocator hands out again.
fn poison_pool(dev: &Device, dtype: DType, elems: &[usize]) {
    let held: Vec<Tensor> = elems
        .iter()
        .map(|&n| {
            Tensor::full(f32::NAN, n.max(1), dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap()
        })
        .collect();
    dev.synchronize().unwrap();
    drop(held);
}

/// The fused q|k|v split with RoPE against a float64 rotation of the same rounded inputs: both pairing
/// styles, head dims 64/128/256, GQA ratios 1/6/7, one to 300 tokens at positions past the cached table.
#[test]
fn fused_split_qkv_rope_matches_a_float64_reference() {
    let Some(dev) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(41);
    for &(dtype, style, heads, kv_heads, head_dim, tokens) in &[
        (
            DType::BF16,
            RopeStyle::Half,
            12usize,
            2usize,
            128usize,
            1usize,
        ),
        (DType::BF16, RopeStyle::Half, 14, 2, 64, 7),
        (DType::F16, RopeStyle::Interleaved, 8, 8, 128, 33),
        (DType::BF16, RopeStyle::Interleaved, 7, 1, 256, 300),
        (DType::F16, RopeStyle::Half, 32, 8, 128, 5),
    ] {
        let half = head_dim / 2;
        let table = RopeTable::new(head_dim, 1_000_000.0, style);
        let positions: Vec<usize> = (0..tokens).map(|_| rng.random_range(0..9000)).collect();
        let (cos, sin) = table.rows(&positions);
        let width = (heads + 2 * kv_heads) * head_dim;
        let (qkv, x) = random_on(&mut rng, &[tokens, width], dtype, &dev);
        let cos_t = Tensor::from_vec(cos.clone(), (tokens, half), &dev).unwrap();
        let sin_t = Tensor::from_vec(sin.clone(), (tokens, half), &dev).unwrap();
        poison_pool(
            &dev,
            dtype,
            &[tokens * heads * head_dim, tokens * kv_heads * head_dim],
        );
        let (q, k, v) = split_qkv_rope(&qkv, &cos_t, &sin_t, heads, kv_heads, style).unwrap();
        assert_eq!(q.dims(), [tokens, heads, head_dim]);
        assert_eq!(k.dims(), [tokens, kv_heads, head_dim]);
        assert_eq!(v.dims(), [tokens, kv_heads, head_dim]);
        // Reference: head h of token t starts at (t * (heads + 2 kv) + h) * head_dim in x.
        let reference = |first: usize, n: usize, rotate: bool| -> Vec<f64> {
            let mut out = Vec::with_capacity(tokens * n * head_dim);
            for t in 0..tokens {
                for h in first..first + n {
                    let row = &x[(t * (heads + 2 * kv_heads) + h) * head_dim..][..head_dim];
                    let mut r = row.to_vec();
                    if rotate {
                        for i in 0..half {
                            let (a, b) = match style {
                                RopeStyle::Half => (i, i + half),
                                RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                            };
                            let (c, s) = (cos[t * half + i] as f64, sin[t * half + i] as f64);
                            r[a] = row[a] * c - row[b] * s;
                            r[b] = row[a] * s + row[b] * c;
                        }
                    }
                    out.extend(r);
                }
            }
            out
        };
        let label =
            format!("{dtype:?} {style:?} {heads}/{kv_heads} heads of {head_dim}, {tokens} tokens");
        let eq = relative_error(&host_f64(&q), &reference(0, heads, true));
        let ek = relative_error(&host_f64(&k), &reference(heads, kv_heads, true));
        let ev = relative_error(&host_f64(&v), &reference(heads + kv_heads, kv_heads, false));
        println!("split_qkv_rope {label}: relative error q {eq:.2e} k {ek:.2e} v {ev:.2e}");
        assert!(
            eq <= tolerance(dtype) && ek <= tolerance(dtype),
            "{label}: q {eq} k {ek}"
        );
        assert_eq!(ev, 0.0, "{label}: v is a copy");
    }
    let qkv = Tensor::zeros((2, 5 * 64), DType::BF16, &dev).unwrap();
    let cos = Tensor::zeros((2, 32), DType::F32, &dev).unwrap();
    assert!(split_qkv_rope(&qkv, &cos, &cos, 4, 1, RopeStyle::Half).is_err());
}

/// Residual add + RMSNorm and SiLU·mul of the gate|up halves against float64 references on the same
/// rounded inputs, at widths below, at and far above the block's 256 threads, odd ones included.
#[test]
fn fused_add_rms_norm_and_silu_mul_halves_match_float64_references() {
    let Some(dev) = gpu() else { return };
    let mut rng = StdRng::seed_from_u64(43);
    for &(dtype, rows, dim) in &[
        (DType::BF16, 1usize, 1536usize),
        (DType::BF16, 5, 896),
        (DType::F16, 3, 100),
        (DType::BF16, 64, 4099),
        (DType::F16, 2, 256),
    ] {
        let (x, xh) = random_on(&mut rng, &[rows, dim], dtype, &dev);
        let (h, hh) = random_on(&mut rng, &[rows, dim], dtype, &dev);
        let (w, wh) = random_on(&mut rng, &[dim], dtype, &dev);
        poison_pool(&dev, dtype, &[rows * dim, rows * dim]);
        let (sum, normed) = add_rms_norm(&x, &h, &w, 1e-6).unwrap();
        // The stored sum is x + h rounded to the dtype; the norm reads that rounded sum.
        let want_sum: Vec<f64> = xh
            .iter()
            .zip(&hh)
            .map(|(a, b)| round_to(dtype, (a + b) as f32) as f64)
            .collect();
        let mut want_norm = Vec::with_capacity(rows * dim);
        for r in want_sum.chunks(dim) {
            let inv = 1.0 / (r.iter().map(|v| v * v).sum::<f64>() / dim as f64 + 1e-6).sqrt();
            want_norm.extend(r.iter().zip(&wh).map(|(v, w)| v * inv * w));
        }
        let es = relative_error(&host_f64(&sum), &want_sum);
        let en = relative_error(&host_f64(&normed), &want_norm);
        println!("add_rms_norm {dtype:?} {rows}x{dim}: relative error sum {es:.2e} norm {en:.2e}");
        assert!(
            es <= tolerance(dtype) / 4.0,
            "{dtype:?} {rows}x{dim}: sum {es}"
        );
        assert!(en <= tolerance(dtype), "{dtype:?} {rows}x{dim}: norm {en}");

        let (gate_up, gu) = random_on(&mut rng, &[rows, 2 * dim], dtype, &dev);
        poison_pool(&dev, dtype, &[rows * dim]);
        let got = silu_mul_halves(&gate_up).unwrap();
        assert_eq!(got.dims(), [rows, dim]);
        let want: Vec<f64> = gu
            .chunks(2 * dim)
            .flat_map(|r| {
                let (g, u) = r.split_at(dim);
                g.iter()
                    .zip(u)
                    .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                    .collect::<Vec<_>>()
            })
            .collect();
        let e = relative_error(&host_f64(&got), &want);
        println!("silu_mul_halves {dtype:?} {rows}x{dim}: relative error {e:.2e}");
        assert!(
            e <= tolerance(dtype),
            "{dtype:?} {rows}x{dim}: silu_mul {e}"
        );
    }
    let x = Tensor::zeros((2, 8), DType::BF16, &dev).unwrap();
    let w = Tensor::zeros(7, DType::BF16, &dev).unwrap();
    assert!(
        add_rms_norm(&x, &x, &w, 1e-6).is_err(),
        "a weight of the wrong width"
    );
    assert!(silu_mul_halves(&Tensor::zeros((2, 7), DType::BF16, &dev).unwrap()).is_err());
}
