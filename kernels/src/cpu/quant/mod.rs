//! Quantized matmul over GGUF blocks kept as they are in the file: activations are quantized once per call
//! to 8-bit blocks, then each weight row is run against tiles of up to [`ROW_TILE`] activation rows
//! (the weight block is unpacked once per tile), in parallel over chunks of output columns.
//!
//! Batch invariance: an output element is always computed by the same kernel family with the same
//! per-row instruction sequence, whatever the tile size it lands in, so a row's result is bit-identical
//! whatever other rows share the call.

pub mod activation;
#[cfg(target_arch = "x86_64")]
mod avx2;
pub mod formats;
#[cfg(target_arch = "x86_64")]
mod quantize_avx2;
mod scalar;

use self::activation::{quantize_rows, ActBlock, Q8Block, Q8KBlock, TileScales};
pub use self::formats::{dequantize_block, QuantType};
use super::isa::Isa;
use super::tiling::for_each_block;
use crate::{Error, Result};
#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::hsum as hsum_avx2;

pub use super::tiling::QUANT_ROW_TILE as ROW_TILE;

/// A `[rows, cols]` weight matrix of GGUF blocks, row-major, each row `cols / block_elems` blocks.
#[derive(Debug, Clone)]
pub struct QuantMatrix {
    ty: QuantType,
    rows: usize,
    cols: usize,
    data: Vec<u8>,
}

impl QuantMatrix {
    /// Takes the raw blocks of a `[rows, cols]` matrix; errors if the sizes do not match the type.
    pub fn new(ty: QuantType, rows: usize, cols: usize, data: Vec<u8>) -> Result<Self> {
        if cols == 0 || !cols.is_multiple_of(ty.block_elems()) {
            return Err(Error::Shape(format!(
                "{ty:?} rows of {cols} values are not whole blocks of {}",
                ty.block_elems()
            )));
        }
        let expected = rows * cols / ty.block_elems() * ty.block_bytes();
        if data.len() != expected {
            return Err(Error::Shape(format!(
                "{ty:?} [{rows}, {cols}] needs {expected} bytes, got {}",
                data.len()
            )));
        }
        Ok(Self {
            ty,
            rows,
            cols,
            data,
        })
    }

    pub fn quant_type(&self) -> QuantType {
        self.ty
    }

    /// Output features (`n`).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features (`k`).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The raw blocks.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_elems() * self.ty.block_bytes()
    }

    /// Dequantizes row `row` into `out` (`cols` values).
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        let bytes = self.ty.block_bytes();
        let w = &self.data[row * self.row_bytes()..(row + 1) * self.row_bytes()];
        for (b, o) in w
            .chunks_exact(bytes)
            .zip(out.chunks_exact_mut(self.ty.block_elems()))
        {
            dequantize_block(self.ty, b, o);
        }
    }

    /// `out[m, rows] = x[m, cols] · selfᵀ` with this CPU's kernels.
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
        self.matmul_with(Isa::detect(), x, m, out)
    }

    /// [`QuantMatrix::matmul`] with an explicit kernel family (errors if this CPU lacks it).
    pub fn matmul_with(&self, isa: Isa, x: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
        if !isa.is_available() {
            return Err(Error::Unsupported(format!("{isa:?} kernels on this CPU")));
        }
        if x.len() != m * self.cols || out.len() != m * self.rows {
            return Err(Error::Shape(format!(
                "quantized matmul of {} inputs and {} outputs with m = {m} by [{}, {}]",
                x.len(),
                out.len(),
                self.rows,
                self.cols
            )));
        }
        if m == 0 || self.rows == 0 {
            return Ok(());
        }
        match self.ty {
            QuantType::Q4K | QuantType::Q6K => {
                let acts = quantize_rows::<Q8KBlock>(isa, x, m, self.cols);
                self.run(isa, &acts, m, out, dot_k_block);
            }
            _ => {
                let acts = quantize_rows::<Q8Block>(isa, x, m, self.cols);
                self.run(isa, &acts, m, out, dot_small_block);
            }
        }
        Ok(())
    }

    /// Runs `block` over every (block of weight rows, activation tile) pair, columns split across threads.
    fn run<A: ActBlock>(&self, isa: Isa, acts: &[A], m: usize, out: &mut [f32], block: BlockFn<A>) {
        let n = self.rows;
        let row_bytes = self.row_bytes();
        let per_row = self.cols / A::ELEMS;
        let scales = TileScales::new(acts, m, per_row);
        const _: () = assert!(ROW_TILE == 8, "TileScales holds 8 rows per tile");
        for_each_block::<ROW_TILE, COL_TILE, _>(m, n, out, |r0, rows, c0, cols, vals| {
            let tile_acts: [&[A]; ROW_TILE] = std::array::from_fn(|i| {
                let r = (r0 + i).min(m - 1);
                &acts[r * per_row..(r + 1) * per_row]
            });
            let w = &self.data[c0 * row_bytes..(c0 + cols) * row_bytes];
            block(
                isa,
                self.ty,
                w,
                row_bytes,
                &tile_acts[..rows],
                scales.tile(r0),
                vals,
            );
        });
    }
}

/// Weight rows per kernel call: the loop over them runs inside the kernel family's own code (compiled
/// for its instruction set), so a plain build pays the dispatch once per this many rows, not per row.
const COL_TILE: usize = 32;

/// A kernel over a block of weight rows (`row_bytes` apart) and a tile of activation rows (with the tile's
/// [`TileScales`]), writing `vals[i * cols + j]` for activation row `i` and weight row `j`.
type BlockFn<A> = fn(Isa, QuantType, &[u8], usize, &[&[A]], TileScaleRef, &mut [f32]);

/// One tile's scales and scaled sums ([`TileScales::tile`]).
type TileScaleRef<'a> = (&'a [[f32; 8]], &'a [[f32; 8]]);

/// The portable kernels over a block: every (activation row, weight row) pair on its own.
fn scalar_block<A>(
    w: &[u8],
    row_bytes: usize,
    acts: &[&[A]],
    vals: &mut [f32],
    dot: impl Fn(&[u8], &[A]) -> f32,
) {
    let cols = w.len() / row_bytes;
    for (j, wr) in w.chunks_exact(row_bytes).enumerate() {
        for (i, a) in acts.iter().enumerate() {
            vals[i * cols + j] = dot(wr, a);
        }
    }
}

fn dot_small_block(
    isa: Isa,
    ty: QuantType,
    w: &[u8],
    row_bytes: usize,
    acts: &[&[Q8Block]],
    scales: TileScaleRef,
    vals: &mut [f32],
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `matmul_with` checked that this CPU has the family.
        Isa::Avx2 => unsafe { avx2::dot_small_block(ty, w, row_bytes, acts, scales, vals) },
        _ => scalar_block(w, row_bytes, acts, vals, |wr, a| {
            scalar::dot_small(ty, wr, a)
        }),
    }
}

fn dot_k_block(
    isa: Isa,
    ty: QuantType,
    w: &[u8],
    row_bytes: usize,
    acts: &[&[Q8KBlock]],
    (scales, _): TileScaleRef,
    vals: &mut [f32],
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `matmul_with` checked that this CPU has the family.
        Isa::Avx2 => unsafe { avx2::dot_k_block(ty, w, row_bytes, acts, scales, vals) },
        _ => scalar_block(w, row_bytes, acts, vals, |wr, a| scalar::dot_k(ty, wr, a)),
    }
}
