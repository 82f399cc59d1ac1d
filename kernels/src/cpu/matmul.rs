use super::dot;
use super::isa::Isa;
use super::tiling::{for_each_block, OutTile, ROW_TILE};

/// `out[m, n] = x[m, k] · w[n, k]ᵀ` in f32 with this CPU's kernels.
pub fn matmul_t(x: &[f32], w: &[f32], m: usize, k: usize, n: usize, out: &mut [f32]) {
    matmul_t_with(Isa::detect(), x, w, m, k, n, out)
}

/// [`matmul_t`] with an explicit kernel family (the portable one if this CPU lacks it).
///
/// Every output element is one dot product whose summation order depends only on `k` and the kernel
/// family, never on the tile it lands in, so a row's result is bit-identical whatever other rows share
/// the call (general GEMM libraries switch kernels and blockings with the row count).
pub fn matmul_t_with(
    isa: Isa,
    x: &[f32],
    w: &[f32],
    m: usize,
    k: usize,
    n: usize,
    out: &mut [f32],
) {
    assert_eq!(x.len(), m * k, "x is not [m, k]");
    assert_eq!(w.len(), n * k, "w is not [n, k]");
    let isa = if isa.is_available() { isa } else { Isa::Scalar };
    for_each_block::<ROW_TILE, COL_TILE, _>(m, n, out, |r0, c0, mut out| {
        let (rows, cols) = (out.rows(), out.cols());
        let xs: [&[f32]; ROW_TILE] = std::array::from_fn(|i| {
            let r = (r0 + i).min(m - 1);
            &x[r * k..(r + 1) * k]
        });
        let ws: [&[f32]; COL_TILE] = std::array::from_fn(|j| {
            let c = (c0 + j).min(n - 1);
            &w[c * k..(c + 1) * k]
        });
        tile(isa, &ws[..cols], &xs[..rows], &mut out);
    });
}

/// Weight rows per f32 tile: 4 input rows x 3 weight rows = 12 accumulators, 7 loads per 12 FMAs.
const COL_TILE: usize = 3;

/// Runs `$family::dot_block` (a SIMD module's `R x C` kernel) for the tile's actual shape.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! by_shape {
    ($family:ident, $ws:expr, $xs:expr, $out:expr) => {
        by_shape!(@shapes $family, $ws, $xs, $out,
            (1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3), (3, 1), (3, 2), (3, 3), (4, 1), (4, 2), (4, 3))
    };
    (@shapes $family:ident, $ws:expr, $xs:expr, $out:expr, $(($r:literal, $c:literal)),*) => {
        match ($xs.len(), $ws.len()) {
            $(($r, $c) => {
                let res = $family::dot_block::<$r, $c>(
                    std::array::from_fn(|j| $ws[j]),
                    std::array::from_fn(|i| $xs[i]),
                );
                for (i, r) in res.iter().enumerate() {
                    $out.row(i).copy_from_slice(r);
                }
            })*
            _ => unreachable!("tile larger than {}x{}", ROW_TILE, COL_TILE),
        }
    };
}

fn tile(isa: Isa, ws: &[&[f32]], xs: &[&[f32]], out: &mut OutTile) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller checked that this CPU has the family.
        Isa::Avx2 | Isa::Avx512Vnni | Isa::Amx => unsafe { by_shape!(avx2, ws, xs, out) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: the caller checked that this CPU has the family.
        Isa::Neon => unsafe { by_shape!(neon, ws, xs, out) },
        _ => {
            for (i, x) in xs.iter().enumerate() {
                for (o, w) in out.row(i).iter_mut().zip(ws) {
                    *o = dot(x, w);
                }
            }
        }
    }
}

/// A family's `R x C` kernel, `dot_block`: `ws[c] · xs[r]` with one `$lanes`-lane accumulator per pair
/// over `$lanes`-value steps (`acc = fma(w, x, acc)`), then the lanes summed in the family's fixed order
/// (`$hsum`) plus a scalar tail; the same sequence for every pair whatever `R` and `C` are.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! dot_block_fn {
    ($features:literal, $lanes:literal, $zero:expr, $load:path, $hsum:path,
     |$w:ident, $x:ident, $acc:ident| $fma:expr) => {
        /// # Safety
        /// The CPU must have the family's target features; every row must be as long as `ws[0]`.
        #[target_feature(enable = $features)]
        pub unsafe fn dot_block<const R: usize, const C: usize>(
            ws: [&[f32]; C],
            xs: [&[f32]; R],
        ) -> [[f32; C]; R] {
            let k = ws[0].len();
            for row in ws.iter().chain(xs.iter()) {
                assert_eq!(row.len(), k, "row lengths differ");
            }
            let mut acc = [[$zero; C]; R];
            let mut i = 0;
            while i + $lanes <= k {
                let wv: [_; C] = std::array::from_fn(|c| $load(ws[c].as_ptr().add(i)));
                for r in 0..R {
                    let $x = $load(xs[r].as_ptr().add(i));
                    for c in 0..C {
                        let ($w, $acc) = (wv[c], acc[r][c]);
                        acc[r][c] = $fma;
                    }
                }
                i += $lanes;
            }
            let mut out = [[0f32; C]; R];
            for r in 0..R {
                for c in 0..C {
                    let mut tail = 0f32;
                    for j in i..k {
                        tail += ws[c][j] * xs[r][j];
                    }
                    out[r][c] = $hsum(acc[r][c]) + tail;
                }
            }
            out
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use crate::cpu::quant::hsum_avx2 as hsum;

    // Eight lanes; 12 accumulators for a 4 x 3 tile.
    dot_block_fn!(
        "avx2,fma,f16c",
        8,
        _mm256_setzero_ps(),
        _mm256_loadu_ps,
        hsum,
        |w, x, acc| _mm256_fmadd_ps(w, x, acc)
    );
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;

    // Four lanes: 12 accumulators for a 4 x 3 tile, enough independent FMAs to fill both pipes.
    dot_block_fn!(
        "neon",
        4,
        vdupq_n_f32(0.0),
        vld1q_f32,
        vaddvq_f32,
        |w, x, acc| vfmaq_f32(acc, w, x)
    );
}
