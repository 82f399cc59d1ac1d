//! Quantized (and f32) matmul throughput: ember's kernels against candle's `QMatMul` on the same weights,
//! for the layer shapes of the registry models, at 1 / 8 / 32 / 128 activation rows, plus this machine's
//! memory read bandwidth (the roofline of one-row decode). Random weights quantized by candle. Where the
//! CPU has more than one SIMD kernel family (AVX2, AVX-512 VNNI, AMX), a last table times them side by side.
//! Run: `cargo bench --bench kernels` (`-- quick` for fewer cases, `-- Q4K` for one type).

use std::hint::black_box;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use ember_kernels::{matmul_t, quant_matmul_t, Isa, QuantMatrix};

#[path = "common/timing.rs"]
mod timing;
use timing::{random, time};
#[path = "common/tail_queries.rs"]
mod tail_queries;
use tail_queries::tail_queries;

/// Read bandwidth in GB/s of summing a 256 MiB buffer, on `threads` threads.
fn read_bandwidth(threads: usize) -> f64 {
    let buf = vec![1u64; 32 << 20];
    let chunk = buf.len() / threads;
    let secs = time(|| {
        std::thread::scope(|s| {
            for part in buf.chunks(chunk) {
                s.spawn(move || black_box(part.iter().fold(0u64, |a, &v| a.wrapping_add(v))));
            }
        });
    });
    (buf.len() * 8) as f64 / secs / 1e9
}

struct Case {
    model: &'static str,
    layer: &'static str,
    dtype: GgmlDType,
    n: usize,
    k: usize,
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let quick = args.iter().any(|a| a == "quick");
    // Other arguments keep only the cases whose type or model contains one of them (e.g. `Q4K`).
    let filters: Vec<&String> = args.iter().filter(|a| *a != "quick").collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "kernels: {:?}, {threads} threads; memory read bandwidth {:.1} GB/s (1 thread) / {:.1} GB/s ({threads} threads)",
        Isa::detect(),
        read_bandwidth(1),
        read_bandwidth(threads)
    );
    let cases = [
        Case {
            model: "smollm2-135m",
            layer: "attn_q/o",
            dtype: GgmlDType::Q4_1,
            n: 576,
            k: 576,
        },
        Case {
            model: "smollm2-135m",
            layer: "ffn_gate/up",
            dtype: GgmlDType::Q4_1,
            n: 1536,
            k: 576,
        },
        Case {
            model: "smollm2-135m",
            layer: "ffn_down",
            dtype: GgmlDType::Q4_1,
            n: 576,
            k: 1536,
        },
        Case {
            model: "smollm2-135m",
            layer: "lm_head",
            dtype: GgmlDType::Q8_0,
            n: 49152,
            k: 576,
        },
        Case {
            model: "qwen2.5-0.5b",
            layer: "attn_q/o",
            dtype: GgmlDType::Q5_0,
            n: 896,
            k: 896,
        },
        Case {
            model: "qwen2.5-0.5b",
            layer: "ffn_gate/up",
            dtype: GgmlDType::Q5_0,
            n: 4864,
            k: 896,
        },
        Case {
            model: "qwen2.5-0.5b",
            layer: "ffn_up",
            dtype: GgmlDType::Q8_0,
            n: 4864,
            k: 896,
        },
        Case {
            model: "qwen2.5-0.5b",
            layer: "ffn_down",
            dtype: GgmlDType::Q4K,
            n: 896,
            k: 4864,
        },
        Case {
            model: "qwen2.5-0.5b",
            layer: "ffn_down",
            dtype: GgmlDType::Q6K,
            n: 896,
            k: 4864,
        },
        Case {
            model: "qwen2.5-0.5b",
            layer: "lm_head",
            dtype: GgmlDType::Q8_0,
            n: 151936,
            k: 896,
        },
        Case {
            model: "qwen2.5-0.5b",
            layer: "ffn_up f32",
            dtype: GgmlDType::F32,
            n: 4864,
            k: 896,
        },
    ];
    let rows: &[usize] = if quick { &[1, 32] } else { &[1, 8, 32, 128] };
    println!(
        "{:<13} {:<12} {:<5} {:>13} {:>5} {:>11} {:>11} {:>7} {:>10}",
        "model", "layer", "type", "[n, k]", "rows", "candle ms", "ember ms", "ratio", "ember GB/s"
    );
    for (i, c) in cases.iter().enumerate() {
        let dtype = format!("{:?}", c.dtype);
        if (quick && c.model == "qwen2.5-0.5b" && c.layer == "lm_head")
            || (!filters.is_empty()
                && !filters
                    .iter()
                    .any(|f| dtype.contains(f.as_str()) || c.model.contains(f.as_str())))
        {
            continue;
        }
        let w = Tensor::from_vec(random(c.n * c.k, i as u64), (c.n, c.k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, c.dtype).unwrap();
        let ours = QuantMatrix::from_qtensor(&q).unwrap();
        let weight_bytes = ours.as_ref().map_or(c.n * c.k * 4, |m| m.weight_bytes());
        let candle = QMatMul::from_qtensor(q).unwrap();
        for &m in rows {
            let x =
                Tensor::from_vec(random(m * c.k, 100 + m as u64), (m, c.k), &Device::Cpu).unwrap();
            let t_candle = time(|| {
                black_box(candle.forward(&x).unwrap());
            });
            let t_ours = time(|| match &ours {
                Some(wq) => {
                    black_box(quant_matmul_t(&x, wq).unwrap());
                }
                None => {
                    black_box(matmul_t(&x, &w).unwrap());
                }
            });
            println!(
                "{:<13} {:<12} {:<5} {:>13} {:>5} {:>11.3} {:>11.3} {:>6.2}x {:>10.1}",
                c.model,
                c.layer,
                dtype,
                format!("[{}, {}]", c.n, c.k),
                m,
                t_candle * 1e3,
                t_ours * 1e3,
                t_candle / t_ours,
                weight_bytes as f64 / t_ours / 1e9
            );
        }
    }
    if filters.is_empty() || filters.iter().any(|f| f.as_str() == "attention") {
        attention_bench(quick);
    }
    family_bench(&cases, rows, &filters);
}

/// Where the CPU offers more than one SIMD family (AVX2, AVX-512 VNNI, AMX), each family's quantized
/// matmul on the same weights and inputs, side by side: the last against the first and the one before it.
fn family_bench(cases: &[Case], rows: &[usize], filters: &[&String]) {
    let families: Vec<Isa> = Isa::available()
        .into_iter()
        .filter(|isa| *isa != Isa::Scalar)
        .collect();
    if families.len() < 2 {
        println!("\nkernel families: only {families:?} on this CPU, no family comparison");
        return;
    }
    print!(
        "\n{:<13} {:<12} {:<5} {:>5}",
        "model", "layer", "type", "rows"
    );
    for isa in &families {
        print!(" {:>13}", format!("{isa:?} ms"));
    }
    println!(" {:>7} {:>9}", "ratio", "last/prev");
    for (i, c) in cases.iter().enumerate() {
        let dtype = format!("{:?}", c.dtype);
        if !filters.is_empty()
            && !filters
                .iter()
                .any(|f| dtype.contains(f.as_str()) || c.model.contains(f.as_str()))
        {
            continue;
        }
        let w = Tensor::from_vec(random(c.n * c.k, i as u64), (c.n, c.k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, c.dtype).unwrap();
        let Some(ours) = QuantMatrix::from_qtensor(&q).unwrap() else {
            continue;
        };
        for &m in rows {
            let x = random(m * c.k, 100 + m as u64);
            let mut out = vec![0f32; m * c.n];
            let times: Vec<f64> = families
                .iter()
                .map(|&isa| {
                    time(|| {
                        ours.matmul_with(isa, &x, m, &mut out).unwrap();
                        black_box(&out);
                    })
                })
                .collect();
            print!("{:<13} {:<12} {:<5} {:>5}", c.model, c.layer, dtype, m);
            for t in &times {
                print!(" {:>13.3}", t * 1e3);
            }
            let last = times.len() - 1;
            println!(
                " {:>6.2}x {:>8.2}x",
                times[0] / times[last],
                times[last - 1] / times[last]
            );
        }
    }
}

/// Paged attention, portable family vs AVX2, per layer of a decode step (`seqs` sequences of `context`
/// tokens, one query each) and of a prefill chunk (one sequence, `context` queries), block size 16.
fn attention_bench(quick: bool) {
    use ember_kernels::cpu::paged_attention::attend_with;
    use ember_kernels::KvCacheSpec;
    println!(
        "\n{:<13} {:<22} {:>11} {:>11} {:>7}",
        "model", "attention (per layer)", "scalar ms", "avx2 ms", "ratio"
    );
    let bs = 16;
    // (model, heads, kv heads, head dim)
    let models = [("smollm2-135m", 9, 3, 64), ("qwen2.5-0.5b", 14, 2, 64)];
    // (sequences, context, queries per sequence)
    let shapes: &[(usize, usize, usize)] = if quick {
        &[(32, 512, 1)]
    } else {
        &[(1, 512, 1), (32, 512, 1), (1, 512, 512)]
    };
    for (model, h, kvh, d) in models {
        for &(seqs, context, queries) in shapes {
            let blocks_per_seq = context.div_ceil(bs);
            let spec = KvCacheSpec {
                num_blocks: seqs * blocks_per_seq,
                block_size: bs,
                num_kv_heads: kvh,
                head_dim: d,
            };
            let cache = random(spec.num_blocks * bs * kvh * d, 7);
            let meta = tail_queries(seqs, context, queries, bs);
            let q = random(seqs * queries * h * d, 8);
            let mut out = vec![0f32; q.len()];
            let scale = 1.0 / (d as f32).sqrt();
            let mut run = |isa: Isa| {
                time(|| {
                    attend_with(isa, &q, &cache, &cache, &spec, &meta, h, scale, &mut out);
                    black_box(&out);
                })
            };
            let (t_scalar, t_avx2) = (run(Isa::Scalar), run(Isa::detect()));
            let what = if queries == 1 {
                format!("decode {seqs} x {context}")
            } else {
                format!("prefill {queries} tokens")
            };
            println!(
                "{model:<13} {what:<22} {:>11.3} {:>11.3} {:>6.2}x",
                t_scalar * 1e3,
                t_avx2 * 1e3,
                t_scalar / t_avx2
            );
        }
    }
}
