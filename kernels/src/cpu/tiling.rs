//! The parallel driver shared by the f32 and quantized matmuls: output columns (weight rows) are split into
//! chunks across threads, and each weight row meets the input rows in tiles of up to `T` rows.

use std::marker::PhantomData;

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

/// The `rows x cols` window of a `[m, n]` output one kernel call fills, written in place: row `i` is
/// `out[(r0 + i) * n + c0..][..cols]`.
pub struct OutTile<'a> {
    ptr: *mut f32,
    stride: usize,
    rows: usize,
    cols: usize,
    _out: PhantomData<&'a mut [f32]>,
}

impl OutTile<'_> {
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `i` of the window (`cols` values).
    pub fn row(&mut self, i: usize) -> &mut [f32] {
        assert!(i < self.rows, "row {i} outside a {}-row tile", self.rows);
        // SAFETY: the window lies inside `out` and no other task's window overlaps it (see
        // `for_each_block`); the returned borrow holds `self` mutably, so rows never alias.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(i * self.stride), self.cols) }
    }
}

/// Fills `out[m, n]`: for every tile of input rows `r0..r0 + rows` (`rows <= T`) and block of columns
/// `c0..c0 + cols` (`cols <= C`), `kernel(r0, c0, tile)` writes the `rows x cols` results in place through
/// `tile`, so a kernel can reuse each input load for several weight rows and runs its own loop over them.
/// Chunking decides only who computes an element, never how, so results do not depend on the thread count
/// or on `m`.
pub fn for_each_block<const T: usize, const C: usize, K>(
    m: usize,
    n: usize,
    out: &mut [f32],
    kernel: K,
) where
    K: Fn(usize, usize, OutTile) + Sync,
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
        for cb in cols.clone().step_by(COL_BLOCK.div_ceil(C) * C) {
            let block_end = (cb + COL_BLOCK.div_ceil(C) * C).min(cols.end);
            for r0 in (0..m).step_by(T) {
                let rows = T.min(m - r0);
                for c0 in (cb..block_end).step_by(C) {
                    let tile = OutTile {
                        // SAFETY: (r0, c0) is inside `out`; windows are disjoint across tasks.
                        ptr: unsafe { out_ptr.0.add(r0 * n + c0) },
                        stride: n,
                        rows,
                        cols: C.min(block_end - c0),
                        _out: PhantomData,
                    };
                    kernel(r0, c0, tile);
                }
            }
        }
    });
}

struct SyncPtr(*mut f32);
// SAFETY: only used to write disjoint elements from parallel tasks.
unsafe impl Sync for SyncPtr {}
