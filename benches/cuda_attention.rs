//! Attention kernels on the GPU (needs `--features cuda` and a CUDA device): ember's flash prefill in
//! TFLOP/s at sequence 512..8192, and the split-K decode kernel in GB/s of K/V read against the device's
//! copy ceiling (a large device-to-device copy, bytes read + written). Random bf16 inputs, never zeros.
//! Prints one JSON object per line (benches/cuda_attention.py turns them into the table next to
//! torch SDPA) and a short human table last.
//! Run: `cargo bench --features cuda --bench cuda_attention` (`-- quick` for fewer sizes).

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use ember_kernels::cuda::{
    paged_attention, paged_attention_scheduled, CudaLayerKvCache, GpuAttentionMetadata,
    KernelChoice, PrefillSchedule,
};
use ember_kernels::{AttentionMetadata, DeviceChoice, KvCacheDtype, KvCacheSpec, SeqSpan};

#[path = "common/gpu_copy.rs"]
mod gpu_copy;
#[path = "common/tail_queries.rs"]
mod tail_queries;
use gpu_copy::copy_bandwidth;
use tail_queries::tail_queries;

const HEADS: usize = 32;
const KV_HEADS: usize = 8;
const HEAD_DIM: usize = 128;
const BLOCK: usize = 16;

/// Median seconds per call of `f` (device work synchronised), after a warm-up.
fn time(dev: &Device, mut f: impl FnMut()) -> f64 {
    f();
    dev.synchronize().unwrap();
    let t = Instant::now();
    f();
    dev.synchronize().unwrap();
    let once = t.elapsed().as_secs_f64();
    let reps = ((0.05 / once.max(1e-7)) as usize).clamp(3, 1000);
    let mut runs: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            dev.synchronize().unwrap();
            t.elapsed().as_secs_f64() / reps as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

/// A cache holding `seqs` sequences of `ctx` random tokens each, and metadata whose queries are the last
/// `q_len` tokens of every sequence.
fn setup(
    dev: &Device,
    seqs: usize,
    ctx: usize,
    q_len: usize,
    kv: KvCacheDtype,
) -> (CudaLayerKvCache, GpuAttentionMetadata, Tensor) {
    let Device::Cuda(cuda) = dev else {
        unreachable!()
    };
    let per_seq = ctx.div_ceil(BLOCK);
    let spec = KvCacheSpec {
        num_blocks: seqs * per_seq,
        block_size: BLOCK,
        num_kv_heads: KV_HEADS,
        head_dim: HEAD_DIM,
    };
    let mut cache =
        CudaLayerKvCache::new(spec, DType::BF16, kv, 4.0 / 448.0, 4.0 / 448.0, dev).unwrap();
    // Fill every slot with random K/V through the cache-write kernel, one sequence at a time.
    for s in 0..seqs {
        let table: Vec<u32> = (0..per_seq).map(|b| (s * per_seq + b) as u32).collect();
        let fill = AttentionMetadata {
            slot_mapping: (0..ctx)
                .map(|p| table[p / BLOCK] as usize * BLOCK + p % BLOCK)
                .collect(),
            seqs: vec![SeqSpan {
                query_start: 0,
                query_len: ctx,
                context_len: ctx,
                block_table: table,
            }],
        };
        let m = GpuAttentionMetadata::upload(&fill, ctx, &spec, cuda).unwrap();
        let k = Tensor::randn(0f32, 1.0, (ctx, KV_HEADS, HEAD_DIM), dev)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        let v = Tensor::randn(0f32, 1.0, (ctx, KV_HEADS, HEAD_DIM), dev)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        cache.write(&k, &v, &m).unwrap();
    }
    let meta = tail_queries(seqs, ctx, q_len, BLOCK);
    let gmeta = GpuAttentionMetadata::upload(&meta, seqs * q_len, &spec, cuda).unwrap();
    let q = Tensor::randn(0f32, 1.0, (seqs * q_len, HEADS, HEAD_DIM), dev)
        .unwrap()
        .to_dtype(DType::BF16)
        .unwrap();
    (cache, gmeta, q)
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let dev = match DeviceChoice::Cuda(0).open() {
        Ok(d) => d,
        Err(e) => {
            let why = e.to_string();
            let why = why.lines().next().unwrap_or_default();
            eprintln!("cuda_attention: no CUDA device ({why}); nothing to measure");
            return;
        }
    };
    let scale = 1.0 / (HEAD_DIM as f32).sqrt();
    let mut table = Vec::new();

    // Copy ceiling: 1 GiB device-to-device, counting bytes read plus written.
    let copy_gbs = copy_bandwidth(&dev);
    println!(
        "{{\"kind\":\"copy\",\"bytes\":{},\"gbs\":{copy_gbs:.1}}}",
        1u64 << 30
    );

    // Prefill: one sequence of `s` tokens, causal, all of it computed (flops = 2·2·s²/2·h·d).
    let sizes: &[usize] = if quick {
        &[512, 2048]
    } else {
        &[512, 1024, 2048, 4096, 8192]
    };
    // Both schedules of the prefill kernel, side by side.
    for &s in sizes {
        let (cache, meta, q) = setup(&dev, 1, s, s, KvCacheDtype::Auto);
        let out = Tensor::zeros(q.dims(), q.dtype(), &dev).unwrap();
        for (kind, schedule) in [
            ("prefill", PrefillSchedule::Staged),
            ("prefill_pipelined", PrefillSchedule::Pipelined),
        ] {
            let secs = time(&dev, || {
                paged_attention_scheduled(
                    &q,
                    &cache,
                    &meta,
                    scale,
                    &out,
                    KernelChoice::Auto,
                    schedule,
                )
                .unwrap();
            });
            let flops = 2.0 * (s as f64).powi(2) * (HEADS * HEAD_DIM) as f64;
            let tflops = flops / secs / 1e12;
            println!(
                "{{\"kind\":\"{kind}\",\"seq\":{s},\"heads\":{HEADS},\"kv_heads\":{KV_HEADS},\"head_dim\":{HEAD_DIM},\"ms\":{:.4},\"tflops\":{tflops:.2}}}",
                secs * 1e3
            );
            table.push(format!(
                "{kind} seq {s:5}: {:8.3} ms  {tflops:7.1} TFLOP/s",
                secs * 1e3
            ));
        }
    }

    // Decode: `batch` sequences of `ctx` cached tokens, one query each; bytes = K + V read once.
    let decode: &[(usize, usize)] = if quick {
        &[(64, 2048)]
    } else {
        &[(1, 8192), (16, 4096), (64, 2048), (64, 8192), (256, 1024)]
    };
    for &(batch, ctx) in decode {
        for kv in [KvCacheDtype::Auto, KvCacheDtype::Fp8E4M3] {
            let (cache, meta, q) = setup(&dev, batch, ctx, 1, kv);
            let secs = time(&dev, || {
                let _ = paged_attention(&q, &cache, &meta, scale).unwrap();
            });
            let elem = if kv == KvCacheDtype::Auto { 2 } else { 1 };
            let bytes = (2 * batch * ctx * KV_HEADS * HEAD_DIM * elem) as f64;
            let gbs = bytes / secs / 1e9;
            println!(
                "{{\"kind\":\"decode\",\"batch\":{batch},\"ctx\":{ctx},\"kv\":\"{kv:?}\",\"us\":{:.2},\"gbs\":{gbs:.1},\"of_copy\":{:.3}}}",
                secs * 1e6,
                gbs / copy_gbs
            );
            table.push(format!(
                "decode batch {batch:3} ctx {ctx:5} {kv:?}: {:9.1} us {gbs:7.0} GB/s ({:.0}% of copy {copy_gbs:.0} GB/s)",
                secs * 1e6,
                100.0 * gbs / copy_gbs
            ));
        }
    }
    println!();
    for line in table {
        println!("{line}");
    }
}
