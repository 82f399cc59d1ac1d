//! The small per-layer ops as single passes over plain f32 slices: RMSNorm and the SwiGLU gate
//! (`silu(gate) * up`). Each replaces a chain of separate tensor ops (and their temporaries) with one loop;
//! large inputs are split across threads by whole rows, so a row's result never depends on the others.

use rayon::prelude::*;

/// Elements below which splitting across threads costs more than it saves.
const PARALLEL_MIN: usize = 1 << 15;

/// `out[r] = x[r] / sqrt(mean(x[r]²) + eps) * weight` for every row of `weight.len()` values; the sum of
/// squares is taken in f64 (one fixed order), the rest in f32 as candle's `rms_norm` does.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let dim = weight.len();
    assert!(dim > 0 && x.len() == out.len() && x.len().is_multiple_of(dim));
    let row = |(xr, or): (&[f32], &mut [f32])| {
        let ss: f64 = xr.iter().map(|&v| v as f64 * v as f64).sum();
        let m = ((ss / dim as f64) as f32 + eps).sqrt();
        for ((o, &v), &w) in or.iter_mut().zip(xr).zip(weight) {
            *o = v / m * w;
        }
    };
    if x.len() >= PARALLEL_MIN {
        x.par_chunks(dim).zip(out.par_chunks_mut(dim)).for_each(row);
    } else {
        x.chunks(dim).zip(out.chunks_mut(dim)).for_each(row);
    }
}

/// `out = silu(gate) * up` elementwise, `silu(v) = v / (1 + exp(-v))` as candle computes it.
pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert!(gate.len() == up.len() && gate.len() == out.len());
    let part = |((g, u), o): ((&[f32], &[f32]), &mut [f32])| {
        for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
            *o = g / (1.0 + (-g).exp()) * u;
        }
    };
    let chunk = PARALLEL_MIN / 4;
    if gate.len() >= PARALLEL_MIN {
        gate.par_chunks(chunk)
            .zip(up.par_chunks(chunk))
            .zip(out.par_chunks_mut(chunk))
            .for_each(part);
    } else {
        part(((gate, up), out));
    }
}
