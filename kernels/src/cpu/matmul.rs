use rayon::prelude::*;

use super::dot;

/// Output columns one parallel task computes.
const COLUMN_CHUNK: usize = 64;

/// `out[m, n] = x[m, k] · w[n, k]ᵀ` in f32. Every output element is one [`dot`] in a fixed order, so a
/// row's result is bit-identical whatever other rows share the call (general GEMM libraries switch
/// kernels and blockings with the row count).
pub fn matmul_t(x: &[f32], w: &[f32], m: usize, k: usize, n: usize, out: &mut [f32]) {
    assert_eq!(x.len(), m * k, "x is not [m, k]");
    assert_eq!(w.len(), n * k, "w is not [n, k]");
    assert_eq!(out.len(), m * n, "out is not [m, n]");
    let chunks: Vec<(usize, Vec<f32>)> = (0..n.div_ceil(COLUMN_CHUNK))
        .into_par_iter()
        .map(|c| {
            let cols = c * COLUMN_CHUNK..((c + 1) * COLUMN_CHUNK).min(n);
            let mut local = Vec::with_capacity(m * cols.len());
            for row in x.chunks_exact(k) {
                for col in cols.clone() {
                    local.push(dot(row, &w[col * k..(col + 1) * k]));
                }
            }
            (c, local)
        })
        .collect();
    for (c, local) in chunks {
        let start = c * COLUMN_CHUNK;
        let width = local.len() / m.max(1);
        for (r, vals) in local.chunks_exact(width.max(1)).enumerate().take(m) {
            out[r * n + start..r * n + start + width].copy_from_slice(vals);
        }
    }
}
