//! The fused small ops (RMSNorm, silu(gate) * up) against f64 references on random inputs of many shapes,
//! a row's result alone vs in a batch (bit for bit), the non-f32 fallback, and bad shapes as errors.

use candle_core::{DType, Device, Tensor};
use ember_kernels::{rms_norm, silu_mul};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn random(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| rng.random_range(-1.0f32..1.0) * scale)
        .collect()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn rms_reference(x: &[f32], w: &[f32], eps: f32) -> Vec<f64> {
    let dim = w.len();
    x.chunks(dim)
        .flat_map(|row| {
            let ms = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / dim as f64;
            let inv = 1.0 / (ms + eps as f64).sqrt();
            row.iter()
                .zip(w)
                .map(move |(&v, &g)| v as f64 * inv * g as f64)
        })
        .collect()
}

#[test]
fn rms_norm_matches_f64_and_is_batch_invariant() {
    let mut rng = StdRng::seed_from_u64(11);
    // Row counts 1..64 with dims from 1 to past the threading threshold (64 x 897 > 2^15).
    for (rows, dim) in [(1, 1), (3, 7), (17, 64), (64, 897), (5, 576), (40, 2048)] {
        let scale = rng.random_range(0.01f32..30.0);
        let x = random(&mut rng, rows * dim, scale);
        let w = random(&mut rng, dim, 2.0);
        let eps = 1e-6;
        let xt = Tensor::from_vec(x.clone(), (rows, dim), &Device::Cpu).unwrap();
        let wt = Tensor::from_vec(w.clone(), dim, &Device::Cpu).unwrap();
        let got = values(&rms_norm(&xt, &wt, eps).unwrap());
        for (i, (g, e)) in got.iter().zip(rms_reference(&x, &w, eps)).enumerate() {
            assert!(
                (*g as f64 - e).abs() <= 1e-6 * e.abs() + 1e-7,
                "[{rows}, {dim}] element {i}: {g} vs {e}"
            );
        }
        for r in 0..rows {
            let alone = rms_norm(&xt.narrow(0, r, 1).unwrap(), &wt, eps).unwrap();
            for (a, b) in values(&alone).iter().zip(&got[r * dim..]) {
                assert_eq!(a.to_bits(), b.to_bits(), "[{rows}, {dim}] row {r} alone");
            }
        }
        // Any rank: [tokens, heads, head_dim] normalises each head (QK-norm).
        if dim % 2 == 0 {
            let x3 = Tensor::from_vec(x.clone(), (rows, 2, dim / 2), &Device::Cpu).unwrap();
            let w3 = Tensor::from_vec(w[..dim / 2].to_vec(), dim / 2, &Device::Cpu).unwrap();
            let got = values(&rms_norm(&x3, &w3, eps).unwrap());
            for (g, e) in got.iter().zip(rms_reference(&x, &w[..dim / 2], eps)) {
                assert!((*g as f64 - e).abs() <= 1e-6 * e.abs() + 1e-7);
            }
        }
    }
}

#[test]
fn silu_mul_matches_f64() {
    let mut rng = StdRng::seed_from_u64(12);
    for (rows, dim) in [(1, 1), (3, 7), (9, 1536), (64, 4864)] {
        let g = random(&mut rng, rows * dim, 12.0);
        let u = random(&mut rng, rows * dim, 3.0);
        let gt = Tensor::from_vec(g.clone(), (rows, dim), &Device::Cpu).unwrap();
        let ut = Tensor::from_vec(u.clone(), (rows, dim), &Device::Cpu).unwrap();
        let got = values(&silu_mul(&gt, &ut).unwrap());
        for (i, ((o, &a), &b)) in got.iter().zip(&g).zip(&u).enumerate() {
            let (a, b) = (a as f64, b as f64);
            let e = a / (1.0 + (-a).exp()) * b;
            assert!(
                (*o as f64 - e).abs() <= 1e-6 * e.abs() + 1e-30,
                "[{rows}, {dim}] element {i}: {o} vs {e}"
            );
        }
        // The same bits as the separate candle ops it replaces.
        let candle = values(&(gt.silu().unwrap() * &ut).unwrap());
        for (a, b) in got.iter().zip(&candle) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
    }
}

#[test]
fn other_dtypes_take_the_tensor_op_path() {
    let mut rng = StdRng::seed_from_u64(13);
    let (rows, dim) = (4, 96);
    let x = random(&mut rng, rows * dim, 4.0);
    let w = random(&mut rng, dim, 1.0);
    let xt = Tensor::from_vec(x.clone(), (rows, dim), &Device::Cpu).unwrap();
    let wt = Tensor::from_vec(w.clone(), dim, &Device::Cpu).unwrap();
    let got = rms_norm(
        &xt.to_dtype(DType::F16).unwrap(),
        &wt.to_dtype(DType::F16).unwrap(),
        1e-5,
    )
    .unwrap();
    assert_eq!(got.dtype(), DType::F16);
    for (g, e) in values(&got).iter().zip(rms_reference(&x, &w, 1e-5)) {
        assert!((*g as f64 - e).abs() <= 4e-3 * e.abs() + 1e-2, "{g} vs {e}");
    }
    let sm = silu_mul(
        &xt.to_dtype(DType::F16).unwrap(),
        &xt.to_dtype(DType::F16).unwrap(),
    )
    .unwrap();
    for (o, &a) in values(&sm).iter().zip(&x) {
        let a = a as f64;
        let e = a / (1.0 + (-a).exp()) * a;
        assert!((*o as f64 - e).abs() <= 1e-2 * e.abs() + 1e-2, "{o} vs {e}");
    }
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    let x = Tensor::zeros((2, 8), DType::F32, &Device::Cpu).unwrap();
    let w = Tensor::zeros(7, DType::F32, &Device::Cpu).unwrap();
    assert!(rms_norm(&x, &w, 1e-6).is_err());
    let y = Tensor::zeros((2, 7), DType::F32, &Device::Cpu).unwrap();
    assert!(silu_mul(&x, &y).is_err());
    let empty = Tensor::zeros((0, 8), DType::F32, &Device::Cpu).unwrap();
    let w8 = Tensor::zeros(8, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(rms_norm(&empty, &w8, 1e-6).unwrap().dims(), [0, 8]);
    assert_eq!(silu_mul(&empty, &empty).unwrap().dims(), [0, 8]);
}
