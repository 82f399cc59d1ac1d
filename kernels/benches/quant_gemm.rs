//! Where the quantized matmul's time goes, for one weight shape: activation quantization alone and the
//! whole call, at several row counts, as GMAC/s (multiply-adds per second). Run with
//! `RAYON_NUM_THREADS=1` for per-core figures. Run:
//! `cargo bench -p ember-kernels --bench quant_gemm -- [Q4K|Q6K|Q8_0|...] [n k]`.

use std::hint::black_box;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use ember_kernels::cpu::quant::activation::{quantize_rows, Q8Block, Q8KBlock};
use ember_kernels::{Isa, QuantMatrix, QuantType};

#[path = "../../benches/common/timing.rs"]
mod timing;
use timing::{random, time};

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
