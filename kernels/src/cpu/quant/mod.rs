//! Quantized matmul over GGUF blocks kept as they are in the file: activations are quantized once per call
//! to 8-bit blocks, then each weight row is run against tiles of up to [`ROW_TILE`] activation rows
//! (the weight block is unpacked once per tile), in parallel over chunks of output columns.
//!
//! Batch invariance: an output element is always computed by the same kernel family with the same
//! per-row instruction sequence, whatever the tile size it lands in, so a row's result is bit-identical
//! whatever other rows share the call.

pub mod activation;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx2;
pub mod formats;
mod groups;
#[cfg(target_arch = "aarch64")]
mod neon;
pub mod packed;
#[cfg(target_arch = "x86_64")]
mod quantize_avx2;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod vnni;

use self::activation::{quantize_rows, Q8Block, Q8KBlock};
pub use self::formats::{dequantize_block, QuantType};
use self::packed::{group_block_bytes, GROUP};
use super::isa::Isa;
use super::tiling::{for_each_block, OutTile};
use crate::{Error, Result};
#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::hsum as hsum_avx2;

pub use super::tiling::QUANT_ROW_TILE as ROW_TILE;

/// A `[rows, cols]` weight matrix of GGUF blocks, kept in the kernels' layout ([`packed`]: groups of
/// eight rows interleaved, repacked once at load, losslessly).
#[derive(Debug, Clone)]
pub struct QuantMatrix {
    ty: QuantType,
    rows: usize,
    cols: usize,
    packed: Vec<u8>,
}

impl QuantMatrix {
    /// Takes the raw GGUF blocks of a `[rows, cols]` matrix (row-major) and repacks them; errors if the
    /// sizes do not match the type.
    pub fn new(ty: QuantType, rows: usize, cols: usize, data: &[u8]) -> Result<Self> {
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
            packed: packed::pack(ty, rows, cols, data),
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

    /// Bytes the weights take in memory.
    pub fn weight_bytes(&self) -> usize {
        self.packed.len()
    }

    /// Blocks per row.
    fn blocks(&self) -> usize {
        self.cols / self.ty.block_elems()
    }

    /// The group blocks of group `gi` (rows `8 gi..8 gi + 8`).
    fn group(&self, gi: usize) -> &[u8] {
        self.groups_covering(gi * GROUP, GROUP)
    }

    /// The whole groups holding weight rows `c0..c0 + cols` (`c0` a multiple of [`GROUP`]).
    fn groups_covering(&self, c0: usize, cols: usize) -> &[u8] {
        let bytes = self.blocks() * group_block_bytes(self.ty);
        let (g0, g1) = (c0 / GROUP, (c0 + cols).div_ceil(GROUP));
        &self.packed[g0 * bytes..g1 * bytes]
    }

    /// Row `row`'s GGUF blocks, as they were in the file.
    pub fn row_blocks(&self, row: usize) -> Vec<u8> {
        let mut out = vec![0u8; self.blocks() * self.ty.block_bytes()];
        packed::unpack_row(self.ty, self.group(row / GROUP), row % GROUP, &mut out);
        out
    }

    /// Dequantizes row `row` into `out` (`cols` values).
    pub fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        let blocks = self.row_blocks(row);
        for (b, o) in blocks
            .chunks_exact(self.ty.block_bytes())
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
                #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
                if self.on_tiles(isa, m) {
                    self.run_amx(&acts, m, out, |b| &b.qs, amx::dot_k_groups);
                    return Ok(());
                }
                self.run(isa, &acts, m, out, dot_k_groups);
            }
            _ => {
                let acts = quantize_rows::<Q8Block>(isa, x, m, self.cols);
                #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
                if self.on_tiles(isa, m) {
                    self.run_amx(&acts, m, out, |b| &b.qs, amx::dot_small_groups);
                    return Ok(());
                }
                self.run(isa, &acts, m, out, dot_small_groups);
            }
        }
        Ok(())
    }

    /// Runs `groups` over every (block of weight rows, activation tile) pair, columns split across threads.
    fn run<A: Sync>(&self, isa: Isa, acts: &[A], m: usize, out: &mut [f32], groups: GroupsFn<A>) {
        let n = self.rows;
        let per_row = self.blocks();
        const _: () = assert!(
            COL_TILE.is_multiple_of(GROUP),
            "column tiles are whole groups"
        );
        for_each_block::<ROW_TILE, COL_TILE, _>(m, n, out, |r0, c0, mut out| {
            let (rows, cols) = (out.rows(), out.cols());
            let tile_acts: [&[A]; ROW_TILE] = std::array::from_fn(|i| {
                let r = (r0 + i).min(m - 1);
                &acts[r * per_row..(r + 1) * per_row]
            });
            let w = self.groups_covering(c0, cols);
            groups(isa, self.ty, w, per_row, &tile_acts[..rows], &mut out);
        });
    }

    /// Whether this call runs on AMX tiles: the family, enough rows, and a kernel for the type.
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    fn on_tiles(&self, isa: Isa, m: usize) -> bool {
        isa == Isa::Amx && m >= super::isa::AMX_MIN_ROWS && amx::covers(self.ty)
    }

    /// [`QuantMatrix::run`] on AMX tiles: up to [`amx::ROW_TILE`] activation rows per call, their
    /// quants (`qs` of each block) copied once into the tiles' layout.
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    fn run_amx<A: Sync>(
        &self,
        acts: &[A],
        m: usize,
        out: &mut [f32],
        qs: fn(&A) -> &[i8],
        kernel: AmxGroupsFn<A>,
    ) {
        let per_row = self.blocks();
        let quants = amx::tile_quants(acts, m, per_row, qs);
        let tile_bytes = quants.len() / m.div_ceil(amx::ROW_TILE);
        for_each_block::<{ amx::ROW_TILE }, COL_TILE, _>(m, self.rows, out, |r0, c0, mut out| {
            let rows = out.rows();
            let w = self.groups_covering(c0, out.cols());
            let tile = &acts[r0 * per_row..(r0 + rows) * per_row];
            let tile_quants = &quants[r0 / amx::ROW_TILE * tile_bytes..][..tile_bytes];
            // SAFETY: `matmul_with` checked that this CPU has the AMX family (AMX-INT8 tiles granted,
            // AVX-512 F and BW, AVX2, FMA, F16C).
            unsafe { kernel(self.ty, w, per_row, tile, tile_quants, &mut out) };
        });
    }
}

/// An AMX kernel over whole groups and up to [`amx::ROW_TILE`] activation rows (their blocks, and their
/// quants in the tiles' layout).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
type AmxGroupsFn<A> = unsafe fn(QuantType, &[u8], usize, &[A], &[u8], &mut OutTile);

/// Weight rows per kernel call: the loop over them runs inside the kernel family's own code (compiled
/// for its instruction set), so a plain build pays the dispatch once per this many rows, not per row.
const COL_TILE: usize = 32;

/// A kernel over whole groups of weight rows (`nb` blocks each) and a tile of activation rows, writing
/// row `i` of the tile, column `j` for activation row `i` and weight row `j < out.cols()`.
type GroupsFn<A> = fn(Isa, QuantType, &[u8], usize, &[&[A]], &mut OutTile);

/// The portable kernels over groups: each weight row's GGUF blocks rebuilt, then every (activation row,
/// weight row) pair on its own.
fn scalar_groups<A>(
    ty: QuantType,
    w: &[u8],
    nb: usize,
    acts: &[&[A]],
    out: &mut OutTile,
    dot: impl Fn(&[u8], &[A]) -> f32,
) {
    let cols = out.cols();
    let group_bytes = nb * group_block_bytes(ty);
    let mut row = vec![0u8; nb * ty.block_bytes()];
    for j in 0..cols {
        packed::unpack_row(
            ty,
            &w[j / GROUP * group_bytes..][..group_bytes],
            j % GROUP,
            &mut row,
        );
        for (i, a) in acts.iter().enumerate() {
            out.row(i)[j] = dot(&row, a);
        }
    }
}

fn dot_small_groups(
    isa: Isa,
    ty: QuantType,
    w: &[u8],
    nb: usize,
    acts: &[&[Q8Block]],
    out: &mut OutTile,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `matmul_with` checked that this CPU has the family.
        Isa::Avx2 => unsafe { avx2::dot_small_groups(ty, w, nb, acts, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `matmul_with` checked that this CPU has the family.
        Isa::Avx512Vnni | Isa::Amx => unsafe { vnni::dot_small_groups(ty, w, nb, acts, out) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: `matmul_with` checked that this CPU has the family.
        Isa::Neon => unsafe { neon::dot_small_groups(ty, w, nb, acts, out) },
        _ => scalar_groups(ty, w, nb, acts, out, |wr, a| scalar::dot_small(ty, wr, a)),
    }
}

fn dot_k_groups(
    isa: Isa,
    ty: QuantType,
    w: &[u8],
    nb: usize,
    acts: &[&[Q8KBlock]],
    out: &mut OutTile,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `matmul_with` checked that this CPU has the family.
        Isa::Avx2 => unsafe { avx2::dot_k_groups(ty, w, nb, acts, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `matmul_with` checked that this CPU has the family.
        Isa::Avx512Vnni | Isa::Amx => unsafe { vnni::dot_k_groups(ty, w, nb, acts, out) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: `matmul_with` checked that this CPU has the family.
        Isa::Neon => unsafe { neon::dot_k_groups(ty, w, nb, acts, out) },
        _ => scalar_groups(ty, w, nb, acts, out, |wr, a| scalar::dot_k(ty, wr, a)),
    }
}
