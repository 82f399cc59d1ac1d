use super::dot;
use super::isa::Isa;
use super::tiling::{for_each_tile, ROW_TILE};

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
    for_each_tile::<ROW_TILE, _>(m, n, out, |r0, rows, col, vals| {
        let xs: [&[f32]; ROW_TILE] = std::array::from_fn(|i| {
            let r = (r0 + i).min(m - 1);
            &x[r * k..(r + 1) * k]
        });
        tile(isa, &w[col * k..(col + 1) * k], &xs[..rows], vals);
    });
}

fn tile(isa: Isa, w: &[f32], xs: &[&[f32]], out: &mut [f32]) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller checked that this CPU has the family.
        Isa::Avx2 => unsafe {
            match xs.len() {
                1 => out.copy_from_slice(&avx2::dot_rows::<1>(w, [xs[0]])),
                2 => out.copy_from_slice(&avx2::dot_rows::<2>(w, [xs[0], xs[1]])),
                3 => out.copy_from_slice(&avx2::dot_rows::<3>(w, [xs[0], xs[1], xs[2]])),
                _ => out.copy_from_slice(&avx2::dot_rows::<4>(w, [xs[0], xs[1], xs[2], xs[3]])),
            }
        },
        _ => {
            for (o, x) in out.iter_mut().zip(xs) {
                *o = dot(x, w);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use crate::cpu::quant::hsum_avx2 as hsum;

    /// `w · xs[r]` for `R` rows: two 8-lane accumulators per row over 16-value steps, one 8-value step,
    /// then a scalar tail; the same sequence for every row whatever `R` is.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; every `xs[r]` must be as long as `w`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_rows<const R: usize>(w: &[f32], xs: [&[f32]; R]) -> [f32; R] {
        let k = w.len();
        for x in &xs {
            assert_eq!(x.len(), k, "row lengths differ");
        }
        let wp = w.as_ptr();
        let mut acc0 = [_mm256_setzero_ps(); R];
        let mut acc1 = [_mm256_setzero_ps(); R];
        let mut i = 0;
        while i + 16 <= k {
            let w0 = _mm256_loadu_ps(wp.add(i));
            let w1 = _mm256_loadu_ps(wp.add(i + 8));
            for r in 0..R {
                let xp = xs[r].as_ptr().add(i);
                acc0[r] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xp), acc0[r]);
                acc1[r] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xp.add(8)), acc1[r]);
            }
            i += 16;
        }
        if i + 8 <= k {
            let w0 = _mm256_loadu_ps(wp.add(i));
            for r in 0..R {
                acc0[r] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xs[r].as_ptr().add(i)), acc0[r]);
            }
            i += 8;
        }
        let mut out = [0f32; R];
        for r in 0..R {
            let mut tail = 0f32;
            for j in i..k {
                tail += w[j] * xs[r][j];
            }
            out[r] = hsum(_mm256_add_ps(acc0[r], acc1[r])) + tail;
        }
        out
    }
}
