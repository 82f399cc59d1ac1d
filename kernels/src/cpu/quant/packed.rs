//! The weight layout the kernels read: GGUF blocks repacked at load with eight weight rows interleaved.
//!
//! A group of [`GROUP`] weight rows is stored block by block; one group block holds the same block of all
//! eight rows: their scales side by side (lane `r` = row `r`), then the quants in 32-byte vectors where bytes
//! `4 r..4 r + 4` are four consecutive quants of row `r`. One vector load thus gives four quants of each of
//! eight rows, and one broadcast of four activation bytes meets all of them: `maddubs` leaves each row's
//! partial sums in its own lanes, so a kernel never sums across lanes until the very end (the kernels of
//! the plain GGUF layout paid a horizontal sum per block and row). Reading a group is one sequential stream.
//!
//! The repacking is lossless (same bytes per block; Q4_K stores its 6-bit scales one per byte, +32 bytes
//! per 8 × 256 weights): [`unpack_block`] gives back the GGUF block exactly.
//!
//! Per type, a group block is (offsets in bytes; `r` = row; an element group `g` is elements
//! `4 g..4 g + 4`, and a vector's "slice" for row `r` is its bytes `4 r..4 r + 4`):
//! - Q4_0 / Q4_1 / Q5_0: `d[8]` (f16), for Q4_1 `m[8]`, then 4 vectors of nibbles: vector `i`'s slice is
//!   bytes `4 i..4 i + 4` of the row's nibbles (low nibbles: group `i`, high: group `4 + i`); Q5_0 then a
//!   vector of fifth bits transposed: byte `4 r + b` bit `g` = fifth bit of element `4 g + b`.
//! - Q8_0: `d[8]`, then 8 vectors: vector `g` holds group `g`.
//! - Q4_K: `d[8]`, `dmin[8]`, scales `[sub-block j][r]` (64), mins `[pair p][r][2]` (64: sub-blocks `2 p`,
//!   `2 p + 1`), both unpacked from their 6-bit fields, then per sub-block `j` (32 elements) 4 vectors of
//!   nibbles: vector `i`, low nibbles group `i` of the sub-block, high nibbles group `4 + i`.
//! - Q6_K: `d[8]`, scales `[pair p][r][2]` (128, i8, sub-blocks of 16 `2 p`, `2 p + 1`), then per 32-element
//!   chunk `c` 4 vectors of low nibbles laid out like Q4_K's (1024 in all), then per chunk 2 vectors of high
//!   bit pairs: vector `h`, byte `4 r + b` bits `2 t..2 t + 2` = element `32 c + 16 h + 4 t + b`'s (512).
//!
//! Packing moves 4-byte words (or 2-byte scales) between a row's GGUF block and a group block, each bit
//! field through one shift and mask ([`Move`]), so packing and unpacking are one list read both ways.

use super::formats::{q4k_scale_min, QuantType};

/// Weight rows per group.
pub const GROUP: usize = 8;

/// Bytes of one group block (the same block of [`GROUP`] rows).
pub fn group_block_bytes(ty: QuantType) -> usize {
    match ty {
        QuantType::Q4K => 1184,
        _ => GROUP * ty.block_bytes(),
    }
}

/// Group-block offsets (Q4_K): scales, mins, nibbles.
const Q4K_SCALES: usize = 32;
const Q4K_MINS: usize = 96;
const Q4K_QS: usize = 160;
/// Group-block offsets (Q6_K): scales, low nibbles, high bits.
const Q6K_SCALES: usize = 16;
const Q6K_QL: usize = 144;
const Q6K_QH: usize = 1168;

/// A bit field moved between a GGUF block and a group block: the `len`-byte little-endian word at `raw`,
/// shifted right by `raw_shift` and masked, lands shifted left by `packed_shift` in the word at `packed`
/// (and back when unpacking). Fields written to one word never overlap.
struct Move {
    raw: usize,
    packed: usize,
    len: usize,
    raw_shift: u32,
    packed_shift: u32,
    mask: u32,
}

impl Move {
    fn copy(raw: usize, packed: usize, len: usize) -> Self {
        Move {
            raw,
            packed,
            len,
            raw_shift: 0,
            packed_shift: 0,
            mask: u32::MAX,
        }
    }
}

fn read_word(b: &[u8], at: usize, len: usize) -> u32 {
    let mut w = [0u8; 4];
    w[..len].copy_from_slice(&b[at..at + len]);
    u32::from_le_bytes(w)
}

fn or_word(b: &mut [u8], at: usize, len: usize, v: u32) {
    for (i, byte) in b[at..at + len].iter_mut().enumerate() {
        *byte |= (v >> (8 * i)) as u8;
    }
}

/// The low nibble of each byte of a word.
const NIBBLES: u32 = 0x0F0F_0F0F;

/// Calls `mv` for every bit field of row `r`'s GGUF block that [`pack_row`] moves with shifts and masks.
fn for_each_move(ty: QuantType, r: usize, mut mv: impl FnMut(Move)) {
    let nibble_pair = |mv: &mut dyn FnMut(Move), raw: usize, side: u32, packed: usize| {
        for (half, shift) in [(0, 0), (16, 4)] {
            mv(Move {
                raw: raw + half,
                packed,
                len: 4,
                raw_shift: side,
                packed_shift: shift,
                mask: NIBBLES,
            });
        }
    };
    match ty {
        QuantType::Q4_0 | QuantType::Q4_1 | QuantType::Q5_0 => {
            mv(Move::copy(0, 2 * r, 2));
            let (raw, packed) = match ty {
                QuantType::Q4_0 => (2, 16),
                QuantType::Q4_1 => {
                    mv(Move::copy(2, 16 + 2 * r, 2));
                    (4, 32)
                }
                _ => (6, 16),
            };
            for i in 0..4 {
                mv(Move::copy(raw + 4 * i, packed + 32 * i + 4 * r, 4));
            }
        }
        QuantType::Q8_0 => {
            mv(Move::copy(0, 2 * r, 2));
            for g in 0..8 {
                mv(Move::copy(2 + 4 * g, 16 + 32 * g + 4 * r, 4));
            }
        }
        QuantType::Q4K => {
            mv(Move::copy(0, 2 * r, 2));
            mv(Move::copy(2, 16 + 2 * r, 2));
            // Sub-block j: side j % 2 of GGUF chunk j / 2 (32 bytes, elements 64 (j / 2)..).
            for j in 0..8 {
                for i in 0..4 {
                    let (raw, side) = (16 + 32 * (j / 2) + 4 * i, 4 * (j as u32 % 2));
                    nibble_pair(&mut mv, raw, side, Q4K_QS + 128 * j + 32 * i + 4 * r);
                }
            }
        }
        QuantType::Q6K => {
            mv(Move::copy(208, 2 * r, 2));
            for p in 0..8 {
                mv(Move::copy(192 + 2 * p, Q6K_SCALES + 16 * p + 2 * r, 2));
            }
            // Chunk c = quarter c % 4 of half c / 4: GGUF low bits at ql[64 half + 32 (quarter % 2)..],
            // side quarter / 2; high bits at qh[32 half..], bits 2 quarter.
            for c in 0..8 {
                let (half, quarter) = (c / 4, c % 4);
                for v in 0..4 {
                    let raw = 64 * half + 32 * (quarter % 2) + 4 * v;
                    let side = 4 * (quarter as u32 / 2);
                    nibble_pair(&mut mv, raw, side, Q6K_QL + 128 * c + 32 * v + 4 * r);
                }
                for h in 0..2 {
                    for t in 0..4 {
                        mv(Move {
                            raw: 128 + 32 * half + 16 * h + 4 * t,
                            packed: Q6K_QH + 64 * c + 32 * h + 4 * r,
                            len: 4,
                            raw_shift: 2 * quarter as u32,
                            packed_shift: 2 * t as u32,
                            mask: 0x0303_0303,
                        });
                    }
                }
            }
        }
    }
}

/// Q5_0's fifth bits, element `e` at bit `e`, to the transposed form (byte `b` bit `g` = element `4 g + b`).
fn transpose_fifth_bits(qh: u32) -> [u8; 4] {
    std::array::from_fn(|b| (0..8).fold(0u8, |acc, g| acc | (((qh >> (4 * g + b)) & 1) as u8) << g))
}

fn untranspose_fifth_bits(t: [u8; 4]) -> u32 {
    (0..32).fold(0u32, |acc, e| {
        acc | (((t[e % 4] >> (e / 4)) & 1) as u32) << e
    })
}

/// Puts row `r`'s GGUF block `raw` into its place in the group block `g`.
fn pack_row(ty: QuantType, raw: &[u8], r: usize, g: &mut [u8]) {
    for_each_move(ty, r, |m| {
        let v = (read_word(raw, m.raw, m.len) >> m.raw_shift) & m.mask;
        or_word(g, m.packed, m.len, v << m.packed_shift);
    });
    match ty {
        QuantType::Q5_0 => {
            let qh = u32::from_le_bytes([raw[2], raw[3], raw[4], raw[5]]);
            g[144 + 4 * r..148 + 4 * r].copy_from_slice(&transpose_fifth_bits(qh));
        }
        QuantType::Q4K => {
            for j in 0..8 {
                let (sc, m) = q4k_scale_min(j, &raw[4..16]);
                g[Q4K_SCALES + 8 * j + r] = sc;
                g[Q4K_MINS + 16 * (j / 2) + 2 * r + j % 2] = m;
            }
        }
        _ => {}
    }
}

/// The GGUF blocks (into `out`, `ty.block_bytes()` each) of row `r` of a group's consecutive group
/// blocks `group`.
pub fn unpack_row(ty: QuantType, group: &[u8], r: usize, out: &mut [u8]) {
    for (g, o) in group
        .chunks_exact(group_block_bytes(ty))
        .zip(out.chunks_exact_mut(ty.block_bytes()))
    {
        unpack_block(ty, g, r, o);
    }
}

/// The GGUF bytes (`ty.block_bytes()` of them, into `out`) of row `r` of a group block `g`.
pub fn unpack_block(ty: QuantType, g: &[u8], r: usize, out: &mut [u8]) {
    out[..ty.block_bytes()].fill(0);
    for_each_move(ty, r, |m| {
        let v = (read_word(g, m.packed, m.len) >> m.packed_shift) & m.mask;
        or_word(out, m.raw, m.len, v << m.raw_shift);
    });
    match ty {
        QuantType::Q5_0 => {
            let t = [0, 1, 2, 3].map(|b| g[144 + 4 * r + b]);
            out[2..6].copy_from_slice(&untranspose_fifth_bits(t).to_le_bytes());
        }
        QuantType::Q4K => {
            let sc: [u8; 8] = std::array::from_fn(|j| g[Q4K_SCALES + 8 * j + r]);
            let m: [u8; 8] = std::array::from_fn(|j| g[Q4K_MINS + 16 * (j / 2) + 2 * r + j % 2]);
            // The inverse of `q4k_scale_min`: the low 6 bits of scales/mins 0..4 in bytes 0..8, their top
            // two bits carrying the high bits of 4..8, whose low nibbles fill bytes 8..12.
            for j in 0..4 {
                out[4 + j] = sc[j] | (sc[j + 4] >> 4) << 6;
                out[8 + j] = m[j] | (m[j + 4] >> 4) << 6;
                out[12 + j] = (sc[j + 4] & 0xF) | (m[j + 4] & 0xF) << 4;
            }
        }
        _ => {}
    }
}

/// Repacks a `[rows, cols]` matrix of GGUF blocks (`raw`, row-major) into groups of [`GROUP`] rows, the
/// last group padded with zero blocks (which dequantize to 0). Groups are packed in parallel.
pub fn pack(ty: QuantType, rows: usize, cols: usize, raw: &[u8]) -> Vec<u8> {
    use rayon::prelude::*;
    let nb = cols / ty.block_elems();
    let (bb, gbb) = (ty.block_bytes(), group_block_bytes(ty));
    let mut out = vec![0u8; rows.div_ceil(GROUP) * nb * gbb];
    out.par_chunks_mut(nb * gbb)
        .enumerate()
        .for_each(|(gi, dst)| {
            for r in 0..GROUP.min(rows - gi * GROUP) {
                let row = &raw[(gi * GROUP + r) * nb * bb..][..nb * bb];
                for (b, g) in row.chunks_exact(bb).zip(dst.chunks_exact_mut(gbb)) {
                    pack_row(ty, b, r, g);
                }
            }
        });
    out
}
