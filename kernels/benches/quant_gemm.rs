//! Where the quantized matmul's time goes, for one weight shape: activation quantization alone and the
//! whole call, at several row counts, as GMAC/s (multiply-adds per second). Run with
//! `RAYON_NUM_THREADS=1` for per-core figures. Run:
//! `cargo bench -p ember-kernels --bench quant_gemm -- [Q4K|Q6K|Q8_0|...] [n k]`.

use std::hint::black_box;
use std::time::Instant;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use ember_kernels::cpu::quant::activation::{quantize_rows, Q8Block, Q8KBlock};
use ember_kernels::{Isa, QuantMatrix, QuantType};

/// Median seconds per call of three timed runs of at least ~50 ms each, after a warm-up.
fn time(mut f: impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    f();
    let reps = ((0.05 / t.elapsed().as_secs_f64().max(1e-9)) as usize).clamp(1, 5000);
    let mut runs: Vec<f64> = (0..3)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() / reps as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[1]
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let dtype = match args.first().map(String::as_str).unwrap_or("Q4K") {
        "Q4_0" => GgmlDType::Q4_0,
        "Q4_1" => GgmlDType::Q4_1,
        "Q5_0" => GgmlDType::Q5_0,
        "Q8_0" => GgmlDType::Q8_0,
        "Q6K" => GgmlDType::Q6K,
        _ => GgmlDType::Q4K,
    };
    let n: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(896);
    let k: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(4864);
    let w = Tensor::from_vec(random(n * k, 1), (n, k), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&w, dtype).unwrap();
    let wq = QuantMatrix::from_qtensor(&q).unwrap().expect("native type");
    println!(
        "{dtype:?} [{n}, {k}], {} threads",
        rayon::current_num_threads()
    );
    println!(
        "{:>5} {:>10} {:>10} {:>9} {:>9}",
        "rows", "quant ms", "total ms", "GMAC/s", "quant %"
    );
    for m in [1, 8, 32, 128] {
        let x = random(m * k, 2 + m as u64);
        let t_quant = time(|| {
            if matches!(wq.quant_type(), QuantType::Q4K | QuantType::Q6K) {
                black_box(quantize_rows::<Q8KBlock>(Isa::detect(), &x, m, k));
            } else {
                black_box(quantize_rows::<Q8Block>(Isa::detect(), &x, m, k));
            }
        });
        let mut out = vec![0f32; m * n];
        let t_total = time(|| {
            wq.matmul(&x, m, &mut out).unwrap();
            black_box(&out);
        });
        println!(
            "{m:>5} {:>10.3} {:>10.3} {:>9.1} {:>8.0}%",
            t_quant * 1e3,
            t_total * 1e3,
            (m * n * k) as f64 / t_total / 1e9,
            100.0 * t_quant / t_total
        );
    }
}
