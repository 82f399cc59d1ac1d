//! Quantized matmul kernels against an f64 reference on candle-quantized random weights: the reference
//! dequantizer against candle's, every kernel family against the reference and against the portable one,
//! and batch invariance (a row's result is the same bits alone or in any batch).

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use ember_kernels::{quant_matmul_t, Isa, QuantMatrix, QuantType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TYPES: [(GgmlDType, QuantType); 6] = [
    (GgmlDType::Q4_0, QuantType::Q4_0),
    (GgmlDType::Q4_1, QuantType::Q4_1),
    (GgmlDType::Q5_0, QuantType::Q5_0),
    (GgmlDType::Q8_0, QuantType::Q8_0),
    (GgmlDType::Q4K, QuantType::Q4K),
    (GgmlDType::Q6K, QuantType::Q6K),
];

/// Values with a per-row magnitude and occasional outliers, like trained weights and activations.
fn random_matrix(rng: &mut StdRng, rows: usize, cols: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(rows * cols);
    for _ in 0..rows {
        let scale = rng.random_range(0.05f32..2.0);
        for _ in 0..cols {
            let x: f32 = rng.random_range(-1.0..1.0) * scale;
            v.push(if rng.random_ratio(1, 64) { x * 8.0 } else { x });
        }
    }
    v
}

fn quantized(
    rng: &mut StdRng,
    dtype: GgmlDType,
    rows: usize,
    cols: usize,
) -> (QTensor, QuantMatrix) {
    let w = Tensor::from_vec(random_matrix(rng, rows, cols), (rows, cols), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&w, dtype).unwrap();
    let m = QuantMatrix::from_qtensor(&q).unwrap().expect("native type");
    (q, m)
}

fn dequantized(w: &QuantMatrix) -> Vec<f32> {
    let mut out = vec![0f32; w.rows() * w.cols()];
    for (r, row) in out.chunks_exact_mut(w.cols()).enumerate() {
        w.dequantize_row(r, row);
    }
    out
}

fn shapes(ty: QuantType) -> Vec<(usize, usize)> {
    // (weight rows n, k): odd n, k from one block up.
    if ty.block_elems() == 256 {
        vec![(1, 256), (7, 512), (33, 768), (70, 256)]
    } else {
        vec![(1, 32), (5, 96), (33, 576), (70, 160)]
    }
}

#[test]
fn reference_dequantizer_matches_candle() {
    let mut rng = StdRng::seed_from_u64(1);
    for (dtype, ty) in TYPES {
        for (n, k) in shapes(ty) {
            let (q, m) = quantized(&mut rng, dtype, n, k);
            assert_eq!(m.quant_type(), ty);
            let ours = dequantized(&m);
            let theirs = q
                .dequantize(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs().max(1e-3),
                    "{ty:?} [{n}, {k}] element {i}: ours {a} candle {b}"
                );
            }
        }
    }
}

/// `|result - Σ w x|` may be at most what 8-bit activation rounding (half a step of each block's scale,
/// times the weights it meets) plus f32 accumulation can add.
fn check_against_reference(
    ty: QuantType,
    isa: Isa,
    w: &[f32],
    x: &[f32],
    got: &[f32],
    n: usize,
    k: usize,
) {
    let act_block = ty.block_elems();
    let m = x.len() / k;
    for r in 0..m {
        let xr = &x[r * k..(r + 1) * k];
        let steps: Vec<f64> = xr
            .chunks(act_block)
            .map(|c| c.iter().fold(0f64, |a, v| a.max(v.abs() as f64)) / 127.0)
            .collect();
        for c in 0..n {
            let wr = &w[c * k..(c + 1) * k];
            let exact: f64 = wr.iter().zip(xr).map(|(&a, &b)| a as f64 * b as f64).sum();
            let magnitude: f64 = wr
                .iter()
                .zip(xr)
                .map(|(&a, &b)| (a as f64 * b as f64).abs())
                .sum();
            let rounding: f64 = wr
                .iter()
                .enumerate()
                .map(|(i, &a)| a.abs() as f64 * steps[i / act_block] / 2.0)
                .sum();
            let tol = rounding * 1.001 + 1e-5 * magnitude + 1e-6;
            let g = got[r * n + c] as f64;
            assert!(
                (g - exact).abs() <= tol,
                "{ty:?} {isa:?} n={n} k={k} m={m} row {r} col {c}: got {g}, exact {exact}, tol {tol}"
            );
        }
    }
}

#[test]
fn every_kernel_family_matches_the_f64_reference() {
    let mut rng = StdRng::seed_from_u64(2);
    for (dtype, ty) in TYPES {
        for (n, k) in shapes(ty) {
            let (_, wq) = quantized(&mut rng, dtype, n, k);
            let w = dequantized(&wq);
            // 16 and more rows: the AMX family's tiles (one full, a full and a partial one).
            for m in [1, 2, 3, 4, 5, 9, 17, 40] {
                let x = random_matrix(&mut rng, m, k);
                let mut scalar = vec![0f32; m * n];
                wq.matmul_with(Isa::Scalar, &x, m, &mut scalar).unwrap();
                check_against_reference(ty, Isa::Scalar, &w, &x, &scalar, n, k);
                for isa in Isa::available() {
                    let mut got = vec![0f32; m * n];
                    wq.matmul_with(isa, &x, m, &mut got).unwrap();
                    check_against_reference(ty, isa, &w, &x, &got, n, k);
                    // Every family does the same IEEE operations per row: the same bits.
                    for (i, (a, b)) in got.iter().zip(&scalar).enumerate() {
                        assert_eq!(a.to_bits(), b.to_bits(), "{ty:?} {isa:?} vs scalar at {i}");
                    }
                }
            }
        }
    }
}

#[test]
fn rows_are_bit_identical_alone_or_in_any_batch() {
    let mut rng = StdRng::seed_from_u64(3);
    for (dtype, ty) in TYPES {
        let k = if ty.block_elems() == 256 { 512 } else { 96 };
        let n = 37;
        let (_, wq) = quantized(&mut rng, dtype, n, k);
        let m = 64;
        let x = random_matrix(&mut rng, m, k);
        for isa in Isa::available() {
            let mut full = vec![0f32; m * n];
            wq.matmul_with(isa, &x, m, &mut full).unwrap();
            // Every batch size 1..=m starting at a random row: rows land at every tile position.
            for len in 1..=m {
                let start = rng.random_range(0..=m - len);
                let mut part = vec![0f32; len * n];
                wq.matmul_with(isa, &x[start * k..(start + len) * k], len, &mut part)
                    .unwrap();
                for (i, (a, b)) in part.iter().zip(&full[start * n..]).enumerate() {
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{ty:?} {isa:?}: row {} of a {len}-row batch differs from the 64-row batch",
                        start + i / n
                    );
                }
            }
        }
    }
}

#[test]
fn tensor_api_agrees_with_candle_qmatmul() {
    let mut rng = StdRng::seed_from_u64(4);
    for (dtype, ty) in TYPES {
        let (n, k) = if ty.block_elems() == 256 {
            (48, 768)
        } else {
            (48, 576)
        };
        let (q, wq) = quantized(&mut rng, dtype, n, k);
        let x = Tensor::from_vec(random_matrix(&mut rng, 6, k), (6, k), &Device::Cpu).unwrap();
        let ours = quant_matmul_t(&x, &wq)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let theirs = QMatMul::from_qtensor(q).unwrap().forward(&x).unwrap();
        let theirs = theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let scale = theirs.iter().fold(0f32, |a, v| a.max(v.abs()));
        for (a, b) in ours.iter().zip(&theirs) {
            // Both quantize activations to 8 bits, with different rounding: agree to ~1% of the output scale.
            assert!(
                (a - b).abs() <= 0.02 * scale,
                "{ty:?}: ours {a} candle {b} (scale {scale})"
            );
        }
    }
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    assert!(QuantMatrix::new(QuantType::Q4K, 2, 100, &[0; 288]).is_err());
    assert!(QuantMatrix::new(QuantType::Q8_0, 2, 32, &[0; 67]).is_err());
    let w = QuantMatrix::new(QuantType::Q8_0, 2, 32, &[0; 68]).unwrap();
    let mut out = vec![0f32; 2];
    assert!(w.matmul(&[0.0; 31], 1, &mut out).is_err());
    let x = Tensor::zeros((3, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(quant_matmul_t(&x, &w).is_err());
}

/// The dense f32 path (`matmul_t`, safetensors models) is held to the same rules: close to f64 in every
/// kernel family, and a row's bits independent of the batch.
#[test]
fn f32_kernels_match_reference_and_are_batch_invariant() {
    use ember_kernels::cpu::matmul::matmul_t_with;
    let mut rng = StdRng::seed_from_u64(5);
    for (n, k) in [(1, 1), (3, 7), (17, 8), (33, 24), (9, 100), (40, 576)] {
        let w = random_matrix(&mut rng, n, k);
        let m = 37;
        let x = random_matrix(&mut rng, m, k);
        for isa in Isa::available() {
            let mut full = vec![0f32; m * n];
            matmul_t_with(isa, &x, &w, m, k, n, &mut full);
            for r in 0..m {
                for c in 0..n {
                    let (xr, wr) = (&x[r * k..(r + 1) * k], &w[c * k..(c + 1) * k]);
                    let exact: f64 = xr.iter().zip(wr).map(|(&a, &b)| a as f64 * b as f64).sum();
                    let mag: f64 = xr
                        .iter()
                        .zip(wr)
                        .map(|(&a, &b)| (a as f64 * b as f64).abs())
                        .sum();
                    let got = full[r * n + c] as f64;
                    assert!(
                        (got - exact).abs() <= 1e-6 * mag + 1e-7,
                        "{isa:?} [{n}, {k}] ({r}, {c}): {got} vs {exact}"
                    );
                }
            }
            for len in 1..=m {
                let start = rng.random_range(0..=m - len);
                let mut part = vec![0f32; len * n];
                matmul_t_with(
                    isa,
                    &x[start * k..(start + len) * k],
                    &w,
                    len,
                    k,
                    n,
                    &mut part,
                );
                for (a, b) in part.iter().zip(&full[start * n..]) {
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{isa:?} [{n}, {k}]: batch of {len} at {start}"
                    );
                }
            }
        }
    }
}

/// Every kernel family quantizes activations to exactly the portable quantizer's blocks (scale, sums and
/// 8-bit values), including values that land exactly halfway between two integers.
#[test]
fn activation_quantizers_match_the_portable_one_bit_for_bit() {
    use ember_kernels::cpu::quant::activation::{ActBlock, Q8Block, Q8KBlock};
    let mut rng = StdRng::seed_from_u64(6);
    let mut inputs: Vec<Vec<f32>> = (0..200).map(|_| random_matrix(&mut rng, 1, 256)).collect();
    // A maximum of 127 makes the scale exactly 1, so these halves are exact ties.
    let mut ties: Vec<f32> = (0..256)
        .map(|i| (i % 254) as f32 - 126.5 + if i % 3 == 0 { 0.25 } else { 0.0 })
        .collect();
    ties[0] = 127.0;
    ties[128] = -127.0;
    inputs.push(ties);
    inputs.push(vec![0.0; 256]);
    inputs.push((0..256).map(|i| (i as f32 - 128.0) * 1e-40).collect());
    inputs.push((0..256).map(|i| (i as f32 - 100.0) * 3e30).collect());
    for isa in Isa::available() {
        for x in &inputs {
            let (a, b) = (Q8KBlock::quantize(x), Q8KBlock::quantize_with(isa, x));
            assert_eq!(a.d.to_bits(), b.d.to_bits(), "{isa:?} Q8K scale");
            assert_eq!(a.qs, b.qs, "{isa:?} Q8K values of {x:?}");
            assert_eq!(a.bsums, b.bsums, "{isa:?} Q8K sums");
            for c in x.chunks_exact(32) {
                let (a, b) = (Q8Block::quantize(c), Q8Block::quantize_with(isa, c));
                assert_eq!(a.d.to_bits(), b.d.to_bits(), "{isa:?} Q8 scale");
                assert_eq!(a.s.to_bits(), b.s.to_bits(), "{isa:?} Q8 sum");
                assert_eq!(a.qs, b.qs, "{isa:?} Q8 values of {c:?}");
            }
        }
    }
}

/// The repacked layout the kernels read gives back every GGUF block exactly, whatever its bytes.
#[test]
fn repacking_is_lossless_for_any_block_bytes() {
    let mut rng = StdRng::seed_from_u64(6);
    for (_, ty) in TYPES {
        for (n, k) in shapes(ty) {
            let row_bytes = k / ty.block_elems() * ty.block_bytes();
            let raw: Vec<u8> = (0..n * row_bytes).map(|_| rng.random()).collect();
            let w = QuantMatrix::new(ty, n, k, &raw).unwrap();
            for r in 0..n {
                assert_eq!(
                    w.row_blocks(r),
                    raw[r * row_bytes..(r + 1) * row_bytes],
                    "{ty:?} [{n}, {k}] row {r}"
                );
            }
        }
    }
}

/// Blocks of the largest quants (and, for Q6_K, the most negative scales) against activations at ±127:
/// the kernels' 16-bit partial sums must not overflow, so every family still matches the portable one
/// bit for bit and the f64 reference.
#[test]
fn extreme_blocks_do_not_overflow_the_kernels() {
    let mut rng = StdRng::seed_from_u64(7);
    let one = half::f16::from_f32(0.01).to_bits().to_le_bytes();
    for (_, ty) in TYPES {
        let (n, k) = (16, 2 * ty.block_elems());
        let bb = ty.block_bytes();
        let mut raw = vec![0u8; n * k / ty.block_elems() * bb];
        for (i, b) in raw.chunks_exact_mut(bb).enumerate() {
            // Half the rows' quants at the top of their range, half at the bottom (Q8_0: 127 / -128).
            let fill = match (ty, i % 2) {
                (QuantType::Q8_0, 0) => 0x7F,
                (QuantType::Q8_0, _) => 0x80,
                (_, 0) => 0xFF,
                _ => 0x00,
            };
            b.fill(fill);
            let f16_fields: &[usize] = match ty {
                QuantType::Q4_1 | QuantType::Q4K => &[0, 2],
                QuantType::Q6K => &[208],
                _ => &[0],
            };
            for &at in f16_fields {
                b[at..at + 2].copy_from_slice(&one);
            }
            if ty == QuantType::Q6K {
                b[192..208].fill(0x80);
            }
        }
        let w = QuantMatrix::new(ty, n, k, &raw).unwrap();
        let wf = dequantized(&w);
        // Rows of +1, of -1, alternating, and random.
        let mut x = Vec::with_capacity(4 * k);
        x.extend((0..k).map(|_| 1.0f32));
        x.extend((0..k).map(|_| -1.0f32));
        x.extend((0..k).map(|i| if i % 2 == 0 { 1.0f32 } else { -1.0 }));
        x.extend(random_matrix(&mut rng, 1, k));
        // Repeated to 20 rows, so that the AMX family's tiles meet them too.
        let x = x.repeat(5);
        let m = 20;
        let mut scalar = vec![0f32; m * n];
        w.matmul_with(Isa::Scalar, &x, m, &mut scalar).unwrap();
        check_against_reference(ty, Isa::Scalar, &wf, &x, &scalar, n, k);
        for isa in Isa::available() {
            let mut got = vec![0f32; m * n];
            w.matmul_with(isa, &x, m, &mut got).unwrap();
            for (i, (a, b)) in got.iter().zip(&scalar).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{ty:?} {isa:?} vs scalar at {i}");
            }
        }
    }
}

/// Other AMX users configure a thread's tiles once and keep using them (candle's Q4_K kernel does; a
/// kernel that released the tiles after it made candle's next product a SIGILL): every AMX kernel of
/// ember puts back the configuration it found, on the thread that ran it.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[test]
fn amx_kernels_leave_the_threads_tile_configuration_as_they_found_it() {
    use ember_kernels::cpu::amx::TileConfig;
    if !Isa::Amx.is_available() {
        eprintln!("skipped: this CPU (or OS) offers no AMX-INT8 tiles");
        return;
    }
    let mut rng = StdRng::seed_from_u64(8);
    // One worker, so the matmuls run on the thread whose configuration is checked.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        let mut foreign = TileConfig::new();
        foreign.shape(0, 16, 64);
        foreign.shape(6, 8, 64);
        for (dtype, ty) in TYPES {
            let (n, k) = (24, 2 * ty.block_elems());
            let (_, wq) = quantized(&mut rng, dtype, n, k);
            let m = 40;
            let x = random_matrix(&mut rng, m, k);
            let mut out = vec![0f32; m * n];
            // SAFETY: AMX is available (checked above).
            unsafe {
                assert_eq!(
                    TileConfig::current().palette(),
                    0,
                    "a fresh thread has no tiles"
                );
                wq.matmul_with(Isa::Amx, &x, m, &mut out).unwrap();
                assert_eq!(
                    TileConfig::current().palette(),
                    0,
                    "{ty:?} left tiles configured"
                );
                let guard = foreign.load();
                wq.matmul_with(Isa::Amx, &x, m, &mut out).unwrap();
                assert_eq!(
                    TileConfig::current(),
                    foreign,
                    "{ty:?} changed the configuration"
                );
                drop(guard);
            }
        }
    });
}

/// The cross-architecture runs (`scripts/test-aarch64.sh`) name the family the CPU must offer, so an
/// emulator or build that hid the feature fails here instead of testing the portable kernels twice.
#[test]
fn the_kernel_family_a_run_expects_is_detected() {
    let Ok(want) = std::env::var("EMBER_EXPECT_ISA") else {
        eprintln!("skipped: EMBER_EXPECT_ISA is not set");
        return;
    };
    let got = format!("{:?}", Isa::detect());
    assert!(
        got.eq_ignore_ascii_case(&want),
        "this run expects the {want} kernels, the CPU offers {:?}",
        Isa::available()
    );
}
