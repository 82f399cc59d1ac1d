//! The parallel driver shared by the f32 and quantized matmuls: output columns (weight rows) are split into
//! chunks across threads, and each weight row meets the input rows in tiles of up to `T` rows.

use rayon::prelude::*;

/// Input rows the f32 matmul computes together against each weight row (the weight row is read once per
/// tile); two accumulators per row keep 4 rows inside the 16 AVX2 registers.
pub const ROW_TILE: usize = 4;

/// Input rows the quantized matmuls compute together: the weight block is unpacked once per tile, and one
/// i32 accumulator per row leaves registers for 8.
pub const QUANT_ROW_TILE: usize = 8;

/// Weight rows visited together before moving to the next tile of input rows: small enough that they stay
/// in L1/L2 while every input tile passes over them.
const COL_BLOCK: usize = 16;

/// Fills `out[m, n]`: for every tile of input rows `r0..r0 + rows` (`rows <= T`) and block of columns
/// `c0..c0 + cols` (`cols <= C`), `kernel(r0, rows, c0, cols, vals)` writes the `rows x cols` results into
/// `vals` (row-major, `cols` apart), so a kernel can reuse each input load for several weight rows and runs
/// its own loop over them. Chunking decides only who computes an element, never how, so results do not
/// depend on the thread count or on `m`.
pub fn for_each_block<const T: usize, const C: usize, K>(
    m: usize,
    n: usize,
    out: &mut [f32],
    kernel: K,
) where
    K: Fn(usize, usize, usize, usize, &mut [f32]) + Sync,
{
    assert_eq!(out.len(), m * n, "out is not [m, n]");
    if m == 0 || n == 0 {
        return;
    }
    let threads = rayon::current_num_threads().max(1);
    // Whole column groups per chunk, so tiles never straddle two tasks.
    let chunk = (n.div_ceil(threads * 8).clamp(4, 256)).div_ceil(C) * C;
    let out_ptr = SyncPtr(out.as_mut_ptr());
    (0..n.div_ceil(chunk)).into_par_iter().for_each(|c| {
        let out_ptr = &out_ptr;
        let cols = c * chunk..((c + 1) * chunk).min(n);
        let mut vals = vec![0f32; T * C];
        for cb in cols.clone().step_by(COL_BLOCK.div_ceil(C) * C) {
            let block_end = (cb + COL_BLOCK.div_ceil(C) * C).min(cols.end);
            for r0 in (0..m).step_by(T) {
                let rows = T.min(m - r0);
                for c0 in (cb..block_end).step_by(C) {
                    let ncols = C.min(block_end - c0);
                    kernel(r0, rows, c0, ncols, &mut vals[..rows * ncols]);
                    for i in 0..rows {
                        for j in 0..ncols {
                            // SAFETY: (row, col) pairs are disjoint across tasks and inside `out`.
                            unsafe { *out_ptr.0.add((r0 + i) * n + c0 + j) = vals[i * ncols + j] };
                        }
                    }
                }
            }
        }
    });
}

struct SyncPtr(*mut f32);
// SAFETY: only used to write disjoint elements from parallel tasks.
unsafe impl Sync for SyncPtr {}
