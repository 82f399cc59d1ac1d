//! The 32-element weight types and Q4_K on AMX-INT8 tiles: per 32 weights (a block, or a Q4_K
//! sub-block), one tile product gives the exact i32 dots of 16 activation rows with two groups (16
//! weight rows), and the integer and f32 work per block and row is the other families' (32-element
//! types: `acc = fma(float(isum), d_w · d_a, acc)`, Q4_1's min term apart; Q4_K: sub-block sums times
//! their 6-bit scales summed in i32, mins against the activations' sub-block sums, then the f32 step),
//! so results are bit-identical to the VNNI, AVX2 and portable kernels and do not depend on the tile a
//! row lands in.
//!
//! Tiles: A tiles are 16 activation rows' 32 quants, from a copy of the call's quants laid out tile by
//! tile ([`tile_quants`]: a slab's tile is 512 contiguous bytes). A group block of the interleaved layout
//! ([`super::packed`]) holds half a B tile (its vector `g` = four consecutive quants of each of eight
//! weight rows = the pairing `tdp*` expects); two groups' vectors side by side make a 64-byte B row, so
//! each product covers 16 weight rows — half the products and tile stores of 8-row tiles (measured on
//! Sapphire Rapids: a product or a store costs about the same, ~11 cycles, for 32- and 64-byte rows).
//! Q8_0's quants are copied as they are (`tdpbssd`, signed × signed); the 4- and 5-bit types are unpacked
//! to unsigned bytes (`tdpbsud`), their offset (Q4_0 +8, Q5_0 +16) taken off through the activation sums
//! as in the other families. The weights are prepared once per block for all the call's rows.
//!
//! The work goes in chunks of 32-weight spans, each in three phases, so that no unit waits on the
//! other's latest result: the vector unit writes the chunk's B tiles, the tile unit stores every product
//! of the chunk, then the vector unit reads the sums back for the per-row step (one phase per block and
//! row measured ~1.4x slower).

use std::arch::x86_64::*;

use rayon::prelude::*;

use super::activation::{Q8Block, Q8KBlock};
use super::avx2::{f16x8, group_pair, small_quants, store_lanes};
use super::formats::QuantType;
use super::groups::{Q4_0, Q4_1, Q5_0, Q8_0};
use super::packed::{group_block_bytes, GROUP};
use crate::cpu::amx;
use crate::cpu::tiling::OutTile;

/// Activation rows per kernel call: two slabs of 16.
pub const ROW_TILE: usize = 32;
const SLAB: usize = 16;
/// 32-weight spans per phase of the 32-element types: the chunk's sums (`CHUNK` × 2 KiB) stay in L1
/// (4 measured faster than 2 or 8). A Q4_K block's eight sub-blocks are one chunk.
const CHUNK: usize = 4;
const Q4K_SUBS: usize = 8;

/// Tiles: full slabs alternate between two A / C pairs (so a slab's load can start while the previous
/// product is stored); a last partial slab has its own pair, shaped to its rows.
const A: [u8; 2] = [0, 1];
const C: [u8; 2] = [4, 5];
const A_TAIL: u8 = 2;
const C_TAIL: u8 = 6;
const B: u8 = 3;

/// Bytes of a span's quants in an A tile row (32 activations), and of a B tile row (16 weight rows ×
/// four quants; also a C row: 16 i32 sums).
const A_ROW: usize = 32;
const B_ROW: usize = 64;
const B_TILE: usize = 8 * B_ROW;

/// A call's buffers for `N` spans of a chunk: their B tiles, and the sums of each span and row (lanes
/// 0..8 the pair's first group, 8..16 its second).
#[repr(C, align(64))]
struct Scratch<const N: usize> {
    b_tiles: [[u8; B_TILE]; N],
    sums: [[[i32; 2 * GROUP]; ROW_TILE]; N],
}

impl<const N: usize> Scratch<N> {
    fn new() -> Self {
        Scratch {
            b_tiles: [[0; B_TILE]; N],
            sums: [[[0; 2 * GROUP]; ROW_TILE]; N],
        }
    }

    /// Where span `j`'s B tile is, and span `j`'s sums from row `r` on (rows [`B_ROW`] bytes apart):
    /// raw pointers taken once, as the tile instructions read and write the buffers behind the
    /// compiler's back.
    #[allow(clippy::type_complexity)]
    fn views(
        &mut self,
    ) -> (
        impl Fn(usize) -> *mut u8 + Copy,
        impl Fn(usize, usize) -> *mut u8 + Copy,
    ) {
        let b_tiles = self.b_tiles.as_mut_ptr() as *mut u8;
        let sums = self.sums.as_mut_ptr() as *mut u8;
        (
            move |j| b_tiles.wrapping_add(j * B_TILE),
            move |j, r| sums.wrapping_add((j * ROW_TILE + r) * B_ROW),
        )
    }
}

/// Whether the AMX family has a kernel for `ty` (Q6_K's 16-weight sub-blocks would halve each product).
pub fn covers(ty: QuantType) -> bool {
    ty != QuantType::Q6K
}

/// The activation quants of `acts` (`m` rows of `nb` blocks; `qs` gives a block's quants) laid out for
/// the A tiles: per tile of [`ROW_TILE`] rows and per 32-quant span, the rows' spans back to back.
pub fn tile_quants<Block: Sync>(
    acts: &[Block],
    m: usize,
    nb: usize,
    qs: impl Fn(&Block) -> &[i8] + Sync,
) -> Vec<u8> {
    let spans = acts.first().map_or(0, |b| qs(b).len() / A_ROW);
    let tile_bytes = nb * spans * ROW_TILE * A_ROW;
    let mut quants = vec![0u8; m.div_ceil(ROW_TILE) * tile_bytes];
    quants
        .par_chunks_mut(tile_bytes)
        .zip(acts.par_chunks(ROW_TILE * nb))
        .for_each(|(to, rows)| {
            for (i, row) in rows.chunks_exact(nb).enumerate() {
                for (blk, b) in row.iter().enumerate() {
                    for (j, span) in qs(b).chunks_exact(A_ROW).enumerate() {
                        let at = ((blk * spans + j) * ROW_TILE + i) * A_ROW;
                        for (q, &v) in to[at..at + A_ROW].iter_mut().zip(span) {
                            *q = v as u8;
                        }
                    }
                }
            }
        });
    quants
}

/// Groups of a 32-element type (`w`: whole groups of `nb` group blocks) against `out.rows()` (≤
/// [`ROW_TILE`]) activation rows, whose blocks are `acts` (row after row, `nb` each) and whose quants are
/// also `quants` (their tile's part of [`tile_quants`]): `out` row `i`, column `j` = weight row `j` ·
/// activation row `i`.
///
/// # Safety
/// [`amx::available`] returned true and the CPU has AVX-512 F and BW, AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw")]
pub unsafe fn dot_small_groups(
    ty: QuantType,
    w: &[u8],
    nb: usize,
    acts: &[Q8Block],
    quants: &[u8],
    out: &mut OutTile,
) {
    check(ty, w, nb, acts.len(), quants.len(), nb, out);
    match ty {
        QuantType::Q4_0 => small::<Q4_0>(w, nb, acts, quants, out),
        QuantType::Q4_1 => small::<Q4_1>(w, nb, acts, quants, out),
        QuantType::Q5_0 => small::<Q5_0>(w, nb, acts, quants, out),
        QuantType::Q8_0 => small::<Q8_0>(w, nb, acts, quants, out),
        QuantType::Q4K | QuantType::Q6K => unreachable!("K-quants use dot_k_groups"),
    }
}

/// Groups of Q4_K against up to [`ROW_TILE`] activation rows, as [`dot_small_groups`].
///
/// # Safety
/// As [`dot_small_groups`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw")]
pub unsafe fn dot_k_groups(
    ty: QuantType,
    w: &[u8],
    nb: usize,
    acts: &[Q8KBlock],
    quants: &[u8],
    out: &mut OutTile,
) {
    assert_eq!(ty, QuantType::Q4K, "no AMX kernel for {ty:?}");
    check(ty, w, nb, acts.len(), quants.len(), nb * Q4K_SUBS, out);
    q4k(w, nb, acts, quants, out);
}

fn check(
    ty: QuantType,
    w: &[u8],
    nb: usize,
    blocks: usize,
    quants: usize,
    spans: usize,
    out: &OutTile,
) {
    let rows = out.rows();
    assert!(
        (1..=ROW_TILE).contains(&rows) && blocks == rows * nb,
        "{blocks} activation blocks for {rows} rows of {nb}"
    );
    assert_eq!(
        quants,
        spans * ROW_TILE * A_ROW,
        "activation quants are not a tile's"
    );
    let group_bytes = nb * group_block_bytes(ty);
    assert!(
        w.len().is_multiple_of(group_bytes) && w.len() / group_bytes * GROUP >= out.cols(),
        "weights are not whole groups covering the tile"
    );
}

/// Shapes the tiles for `rows` activation rows (until the guard drops); returns the full slabs and the
/// rows of a partial one.
#[inline]
unsafe fn configure(rows: usize) -> (amx::ConfigGuard, (usize, usize)) {
    let (full, tail) = (rows / SLAB, rows % SLAB);
    let mut cfg = amx::TileConfig::new();
    for (a, c) in A.into_iter().zip(C) {
        cfg.shape(a, SLAB, A_ROW);
        cfg.shape(c, SLAB, B_ROW);
    }
    if tail > 0 {
        cfg.shape(A_TAIL, tail, A_ROW);
        cfg.shape(C_TAIL, tail, B_ROW);
    }
    cfg.shape(B, A_ROW / 4, B_ROW);
    (cfg.load(), (full, tail))
}

/// The span at `a` (tile layout, every slab of the call's rows) times the B tile at `b`, stored as
/// rows of sixteen sums, [`B_ROW`] bytes apart, at `to`.
#[inline(always)]
unsafe fn products<const UNSIGNED_B: bool>(
    b: *const u8,
    a: *const u8,
    (full, tail): (usize, usize),
    to: *mut u8,
) {
    amx::load::<B>(b, B_ROW);
    for s in 0..full {
        let (a_s, to_s) = (a.add(s * SLAB * A_ROW), to.add(s * SLAB * B_ROW));
        if s % 2 == 0 {
            product::<UNSIGNED_B, { A[0] }, { C[0] }>(a_s, to_s);
        } else {
            product::<UNSIGNED_B, { A[1] }, { C[1] }>(a_s, to_s);
        }
    }
    if tail > 0 {
        let s = full;
        product::<UNSIGNED_B, A_TAIL, C_TAIL>(a.add(s * SLAB * A_ROW), to.add(s * SLAB * B_ROW));
    }
}

/// Tile `C` := the activation rows at `a` (loaded into tile `A`) · the B tile, exact i32, stored at `to`.
#[inline(always)]
unsafe fn product<const UNSIGNED_B: bool, const A: u8, const C: u8>(a: *const u8, to: *mut u8) {
    amx::load::<A>(a, A_ROW);
    amx::zero::<C>();
    amx::dot::<C, A, B, UNSIGNED_B>();
    amx::store::<C>(to, B_ROW);
}

/// Eight f16 of the first group block at `p` and of the second (`second` bytes on) as sixteen f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn f16x16(p: *const u8, second: usize) -> __m512 {
    let lo = _mm512_castps256_ps512(f16x8(p));
    let hi = _mm256_castps_pd(f16x8(p.add(second)));
    _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(lo), hi, 1))
}

/// Writes `v(r)` (row `r`'s sixteen results: groups `g0` and, if `both`, `g0 + 1`) into `out`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn store_pair(out: &mut OutTile, g0: usize, both: bool, v: impl Fn(usize) -> __m512) {
    for r in 0..out.rows() {
        let v = v(r);
        let halves = [
            _mm512_castps512_ps256(v),
            _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)),
        ];
        for (g, half) in halves.iter().enumerate().take(1 + both as usize) {
            let c0 = GROUP * (g0 + g);
            if c0 >= out.cols() {
                break;
            }
            let width = GROUP.min(out.cols() - c0);
            store_lanes(&mut out.row(r)[c0..c0 + width], *half);
        }
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn small<const T: u8>(
    w: &[u8],
    nb: usize,
    acts: &[Q8Block],
    quants: &[u8],
    out: &mut OutTile,
) {
    let gbb = match T {
        Q4_0 => group_block_bytes(QuantType::Q4_0),
        Q4_1 => group_block_bytes(QuantType::Q4_1),
        Q5_0 => group_block_bytes(QuantType::Q5_0),
        _ => group_block_bytes(QuantType::Q8_0),
    };
    let offset = match T {
        Q4_0 => 8,
        Q5_0 => 16,
        _ => 0,
    };
    let rows = out.rows();
    let (_tiles, slabs) = configure(rows);
    let quants = quants.as_ptr();
    let group_bytes = nb * gbb;
    let groups = w.len() / group_bytes;
    let mut scratch = Scratch::<CHUNK>::new();
    let (b_tile, sums) = scratch.views();

    for g0 in (0..groups).step_by(2) {
        let both = g0 + 1 < groups;
        // A lone last group meets itself twice; its half of the sums is never stored.
        let second = if both { group_bytes } else { 0 };
        let group_block = |blk: usize| w.as_ptr().add(g0 * group_bytes + blk * gbb);
        let mut acc = [_mm512_setzero_ps(); ROW_TILE];
        let mut acc_min = [_mm512_setzero_ps(); ROW_TILE];
        for c0 in (0..nb).step_by(CHUNK) {
            let n = CHUNK.min(nb - c0);
            for j in 0..n {
                let gb = group_block(c0 + j);
                small_weights::<T>(gb, b_tile(j));
                small_weights::<T>(gb.add(second), b_tile(j).add(A_ROW));
            }
            for j in 0..n {
                let a = quants.add((c0 + j) * ROW_TILE * A_ROW);
                let to = sums(j, 0);
                if T == Q8_0 {
                    products::<false>(b_tile(j), a, slabs, to);
                } else {
                    products::<true>(b_tile(j), a, slabs, to);
                }
            }
            let d: [__m512; CHUNK] =
                std::array::from_fn(|j| f16x16(group_block(c0 + j.min(n - 1)), second));
            let dmin: [__m512; CHUNK] = std::array::from_fn(|j| {
                if T == Q4_1 {
                    f16x16(group_block(c0 + j.min(n - 1)).add(16), second)
                } else {
                    d[j]
                }
            });
            for r in 0..rows {
                let (mut a_r, mut m_r) = (acc[r], acc_min[r]);
                for j in 0..n {
                    let ab = acts.get_unchecked(r * nb + c0 + j);
                    let mut isum = _mm512_load_si512(sums(j, r) as *const __m512i);
                    if offset != 0 {
                        isum = _mm512_sub_epi32(isum, _mm512_set1_epi32(offset * ab.sum));
                    }
                    let da = _mm512_mul_ps(d[j], _mm512_set1_ps(ab.d));
                    a_r = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), da, a_r);
                    if T == Q4_1 {
                        m_r = _mm512_add_ps(m_r, _mm512_mul_ps(dmin[j], _mm512_set1_ps(ab.s)));
                    }
                }
                (acc[r], acc_min[r]) = (a_r, m_r);
            }
        }
        store_pair(out, g0, both, |r| _mm512_add_ps(acc[r], acc_min[r]));
    }
}

/// Group block `gb`'s quants as a half of the B tile at `to` (eight rows of 32 bytes, [`B_ROW`] apart):
/// Q8_0's as they are, the 4- and 5-bit types' unpacked to unsigned bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn small_weights<const T: u8>(gb: *const u8, to: *mut u8) {
    if T == Q8_0 {
        for g in 0..8 {
            let v = _mm256_loadu_si256(gb.add(16 + 32 * g) as *const __m256i);
            _mm256_store_si256(to.add(B_ROW * g) as *mut __m256i, v);
        }
        return;
    }
    let (qs, qh) = small_quants::<T>(gb);
    unpacked_weights::<T>(qs, qh, to);
}

/// The four vectors of nibbles at `qs` (with Q5_0's fifth bits in `qh`) unpacked to unsigned bytes as
/// a half of the B tile at `to`: the 4- and 5-bit types' blocks and Q4_K's sub-blocks share the layout.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn unpacked_weights<const T: u8>(qs: *const u8, qh: __m256i, to: *mut u8) {
    for i in 0..4 {
        let (lo, hi) = group_pair::<T>(qs, qh, i);
        _mm256_store_si256(to.add(B_ROW * i) as *mut __m256i, lo);
        _mm256_store_si256(to.add(B_ROW * (4 + i)) as *mut __m256i, hi);
    }
}

/// Q4_K (group block: `d[8]`, `dmin[8]`, scales `[sub-block][row]`, mins `[pair][row][2]`, then each
/// sub-block's nibbles as the 4-bit small types'): one chunk per block, a product per sub-block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw")]
unsafe fn q4k(w: &[u8], nb: usize, acts: &[Q8KBlock], quants: &[u8], out: &mut OutTile) {
    let gbb = group_block_bytes(QuantType::Q4K);
    let rows = out.rows();
    let (_tiles, slabs) = configure(rows);
    let quants = quants.as_ptr();
    let group_bytes = nb * gbb;
    let groups = w.len() / group_bytes;
    let mut scratch = Scratch::<Q4K_SUBS>::new();
    let (b_tile, sums) = scratch.views();

    for g0 in (0..groups).step_by(2) {
        let both = g0 + 1 < groups;
        let second = if both { group_bytes } else { 0 };
        let mut acc = [_mm512_setzero_ps(); ROW_TILE];
        let mut acc_min = [_mm512_setzero_ps(); ROW_TILE];
        for blk in 0..nb {
            let gb = w.as_ptr().add(g0 * group_bytes + blk * gbb);
            for j in 0..Q4K_SUBS {
                for (half, gb) in [gb, gb.add(second)].into_iter().enumerate() {
                    let qs = gb.add(160 + 128 * j);
                    unpacked_weights::<Q4_0>(
                        qs,
                        _mm256_setzero_si256(),
                        b_tile(j).add(half * A_ROW),
                    );
                }
            }
            for j in 0..Q4K_SUBS {
                let a = quants.add((blk * Q4K_SUBS + j) * ROW_TILE * A_ROW);
                products::<true>(b_tile(j), a, slabs, sums(j, 0));
            }
            // Lane n (< 8: the first group's row n, then the second's): sub-block j's scale; pair p's
            // two mins as i16 (for `madd` with the activations' two sub-block sums).
            let scales: [__m512i; Q4K_SUBS] = std::array::from_fn(|j| {
                let p = gb.add(32 + 8 * j);
                let lo = _mm_loadl_epi64(p as *const __m128i);
                let hi = _mm_loadl_epi64(p.add(second) as *const __m128i);
                _mm512_cvtepu8_epi32(_mm_unpacklo_epi64(lo, hi))
            });
            let mins: [__m512i; 4] = std::array::from_fn(|p| {
                let lo = _mm_loadu_si128(gb.add(96 + 16 * p) as *const __m128i);
                let hi = _mm_loadu_si128(gb.add(96 + 16 * p + second) as *const __m128i);
                _mm512_cvtepu8_epi16(_mm256_set_m128i(hi, lo))
            });
            let (d, dmin) = (f16x16(gb, second), f16x16(gb.add(16), second));
            for r in 0..rows {
                let ab = acts.get_unchecked(r * nb + blk);
                let mut isum = _mm512_setzero_si512();
                for (j, sc) in scales.iter().enumerate() {
                    let s = _mm512_load_si512(sums(j, r) as *const __m512i);
                    isum = _mm512_add_epi32(isum, _mm512_mullo_epi32(s, *sc));
                }
                // The activations' sub-block sums s0..s7 (pairs of 16-sums; |s| ≤ 32 · 127 fits i16).
                let b = ab.bsums.as_ptr() as *const __m128i;
                let subs = _mm_hadd_epi16(_mm_loadu_si128(b), _mm_loadu_si128(b.add(1)));
                let pairs: [i32; 4] = std::mem::transmute(subs);
                let mut msum = _mm512_setzero_si512();
                for (mv, pair) in mins.iter().zip(pairs) {
                    msum = _mm512_add_epi32(msum, _mm512_madd_epi16(*mv, _mm512_set1_epi32(pair)));
                }
                let ad = _mm512_set1_ps(ab.d);
                acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(d, ad), acc[r]);
                acc_min[r] = _mm512_fmadd_ps(
                    _mm512_cvtepi32_ps(msum),
                    _mm512_mul_ps(dmin, ad),
                    acc_min[r],
                );
            }
        }
        store_pair(out, g0, both, |r| _mm512_sub_ps(acc[r], acc_min[r]));
    }
}
