use rayon::prelude::*;

use super::dot;
use super::isa::Isa;

/// Input rows computed together against each weight row (the weight row is read once per tile).
const ROW_TILE: usize = 4;

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
    assert_eq!(out.len(), m * n, "out is not [m, n]");
    if m == 0 || n == 0 {
        return;
    }
    let isa = if isa.is_available() { isa } else { Isa::Scalar };
    let threads = rayon::current_num_threads().max(1);
    let chunk = n.div_ceil(threads * 8).clamp(4, 256);
    let out_ptr = SyncPtr(out.as_mut_ptr());
    (0..n.div_ceil(chunk)).into_par_iter().for_each(|c| {
        let out_ptr = &out_ptr;
        let cols = c * chunk..((c + 1) * chunk).min(n);
        let mut vals = [0f32; ROW_TILE];
        for r0 in (0..m).step_by(ROW_TILE) {
            let rows = ROW_TILE.min(m - r0);
            let xs: [&[f32]; ROW_TILE] = std::array::from_fn(|i| {
                let r = (r0 + i).min(m - 1);
                &x[r * k..(r + 1) * k]
            });
            for col in cols.clone() {
                let wr = &w[col * k..(col + 1) * k];
                tile(isa, wr, &xs[..rows], &mut vals[..rows]);
                for (i, v) in vals[..rows].iter().enumerate() {
                    // SAFETY: (row, col) pairs are disjoint across tasks and inside `out`.
                    unsafe { *out_ptr.0.add((r0 + i) * n + col) = *v };
                }
            }
        }
    });
}

struct SyncPtr(*mut f32);
// SAFETY: only used to write disjoint elements from parallel tasks.
unsafe impl Sync for SyncPtr {}

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
