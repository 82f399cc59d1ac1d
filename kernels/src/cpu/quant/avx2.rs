//! AVX2 + FMA + F16C kernels over the interleaved weight layout of [`super::packed`]: one group of eight
//! weight rows against up to eight activation rows at a time, every weight row in its own lanes.
//!
//! Per element group (four consecutive weights of each of the eight rows, one 32-byte vector) and
//! activation row: one broadcast of the four activation bytes, one `maddubs` (unsigned weights × signed
//! activations), one 16-bit add. The 16-bit sums stay exact for as many groups as the weight range allows
//! (eight 4-bit groups, four 5-bit, two 6-bit), then one `madd` widens them to i32 — by 1, or by the
//! rows' sub-block scales for the K-quants. Signed types are stored unsigned (Q4_0 +8, Q5_0 +16) and the
//! offset is taken off exactly through the activation block's integer sum; Q8_0 keeps its signs
//! (`maddubs(|w|, sign(a, w))`). So each row's exact integer dot per block lands in lane `r`, and the
//! f32 work per block and row is the scalar kernel's: `acc = fma(float(isum), d_w * d_a, acc)` (plus the
//! Q4_1 / Q4_K min terms) in block order — a row's result does not depend on its tile mates, on the
//! number of activation rows, or on the kernel family.

use std::arch::x86_64::*;

use super::activation::{Q8Block, Q8KBlock};
use super::formats::QuantType;
use super::groups::{block_of, group_entry_points, Q4_0, Q4_1, Q5_0, Q8_0};
use super::packed::{group_block_bytes, GROUP};
use crate::cpu::tiling::OutTile;

/// Horizontal sum of eight f32 lanes in a fixed order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Horizontal sum of eight i32 lanes (exact).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

/// The four bytes at `p` in every 32-bit lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn bcast4(p: *const i8) -> __m256i {
    _mm256_set1_epi32((p as *const i32).read_unaligned())
}

/// Eight f16 at `p` as f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f16x8(p: *const u8) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn load(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

/// The low and high nibbles of each byte of `q`, as bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn split_nibbles(q: __m256i) -> (__m256i, __m256i) {
    let m4 = _mm256_set1_epi8(0xF);
    (
        _mm256_and_si256(q, m4),
        _mm256_and_si256(_mm256_srli_epi16(q, 4), m4),
    )
}

/// `acc16 += lo · x[4 i..4 i + 4] + hi · x[16 + 4 i..16 + 4 i + 4]` per row lane: the weight vectors of
/// element groups `i` and `4 + i` of a 32-element span whose activations start at `x`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn add_group_pair(acc16: &mut __m256i, lo: __m256i, hi: __m256i, x: *const i8, i: usize) {
    let s = _mm256_add_epi16(
        _mm256_maddubs_epi16(lo, bcast4(x.add(4 * i))),
        _mm256_maddubs_epi16(hi, bcast4(x.add(16 + 4 * i))),
    );
    *acc16 = _mm256_add_epi16(*acc16, s);
}

/// Bit `G` of every byte of `qh` moved to bit 4 (the other bits are not cleared). 16-bit shifts: what
/// crosses into the neighbouring byte lands away from bit 4 for shifts up to 4.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn bit_to_4(qh: __m256i, g: usize) -> __m256i {
    match g {
        0 => _mm256_slli_epi16(qh, 4),
        1 => _mm256_slli_epi16(qh, 3),
        2 => _mm256_slli_epi16(qh, 2),
        3 => _mm256_slli_epi16(qh, 1),
        4 => qh,
        5 => _mm256_srli_epi16(qh, 1),
        6 => _mm256_srli_epi16(qh, 2),
        _ => _mm256_srli_epi16(qh, 3),
    }
}

/// The quant bytes of a 32-element type's group block and, for Q5_0, its high-bit vector.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn small_quants<const T: u8>(gb: *const u8) -> (*const u8, __m256i) {
    let qs = gb.add(if T == Q4_1 { 32 } else { 16 });
    let qh = if T == Q5_0 {
        load(gb.add(144))
    } else {
        _mm256_setzero_si256()
    };
    (qs, qh)
}

/// The unsigned weights of element groups `i` and `4 + i` (0..4) of a 4- or 5-bit group block
/// ([`small_quants`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn group_pair<const T: u8>(
    qs: *const u8,
    qh: __m256i,
    i: usize,
) -> (__m256i, __m256i) {
    let (lo, hi) = split_nibbles(load(qs.add(32 * i)));
    if T != Q5_0 {
        return (lo, hi);
    }
    let b4 = _mm256_set1_epi8(0x10);
    (
        _mm256_or_si256(lo, _mm256_and_si256(bit_to_4(qh, i), b4)),
        _mm256_or_si256(hi, _mm256_and_si256(bit_to_4(qh, 4 + i), b4)),
    )
}

/// Takes `offset` × each activation block's quant sum off its rows' integer dots: the dots were of the
/// weights stored unsigned (`w + offset`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn take_offset<const R: usize>(
    isum: &mut [__m256i; R],
    a: &[&Q8Block; R],
    offset: i32,
) {
    if offset != 0 {
        for r in 0..R {
            isum[r] = _mm256_sub_epi32(isum[r], _mm256_set1_epi32(offset * a[r].sum));
        }
    }
}

/// The f32 step of one block of a 32-element type, the scalar kernel's: `acc = fma(float(isum),
/// d_w · d_a, acc)`, and for Q4_1 the min term into `acc_min`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn add_small_block<const T: u8, const R: usize>(
    gb: *const u8,
    a: &[&Q8Block; R],
    isum: &[__m256i; R],
    acc: &mut [__m256; R],
    acc_min: &mut [__m256; R],
) {
    let d = f16x8(gb);
    for r in 0..R {
        let da = _mm256_mul_ps(d, _mm256_set1_ps(a[r].d));
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r]), da, acc[r]);
        if T == Q4_1 {
            let m = _mm256_mul_ps(f16x8(gb.add(16)), _mm256_set1_ps(a[r].s));
            acc_min[r] = _mm256_add_ps(acc_min[r], m);
        }
    }
}

/// One group of a 32-element type (`nb` group blocks at `g`) against `R` activation rows: lane `r'` of
/// result `r` is weight row `r'` · activation row `r`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn small_group<const T: u8, const R: usize>(
    g: *const u8,
    nb: usize,
    acts: [&[Q8Block]; R],
) -> [__m256; R] {
    let gbb = match T {
        Q4_0 => group_block_bytes(QuantType::Q4_0),
        Q4_1 => group_block_bytes(QuantType::Q4_1),
        Q5_0 => group_block_bytes(QuantType::Q5_0),
        _ => group_block_bytes(QuantType::Q8_0),
    };
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut acc_min = [_mm256_setzero_ps(); R];
    for blk in 0..nb {
        let gb = g.add(blk * gbb);
        let a = block_of(&acts, blk);
        let mut isum = [_mm256_setzero_si256(); R];
        if T == Q8_0 {
            for gi in 0..8 {
                let w = load(gb.add(16 + 32 * gi));
                let wabs = _mm256_sign_epi8(w, w);
                for r in 0..R {
                    let x = _mm256_sign_epi8(bcast4(a[r].qs.as_ptr().add(4 * gi)), w);
                    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(wabs, x), ones);
                    isum[r] = _mm256_add_epi32(isum[r], p);
                }
            }
        } else {
            let (qs, qh) = small_quants::<T>(gb);
            // 16-bit sums stay exact over eight 4-bit groups but only four 5-bit ones: Q5_0 widens
            // after each half of the vectors (groups 0, 1, 4, 5, then 2, 3, 6, 7).
            let per_part = if T == Q5_0 { 2 } else { 4 };
            for part in (0..4).step_by(per_part) {
                let mut acc16 = [_mm256_setzero_si256(); R];
                for i in part..part + per_part {
                    let (lo, hi) = group_pair::<T>(qs, qh, i);
                    for r in 0..R {
                        add_group_pair(&mut acc16[r], lo, hi, a[r].qs.as_ptr(), i);
                    }
                }
                for r in 0..R {
                    isum[r] = _mm256_add_epi32(isum[r], _mm256_madd_epi16(acc16[r], ones));
                }
            }
            let offset = match T {
                Q4_0 => 8,
                Q5_0 => 16,
                _ => 0,
            };
            take_offset(&mut isum, &a, offset);
        }
        add_small_block::<T, R>(gb, &a, &isum, &mut acc, &mut acc_min);
    }
    for (a, m) in acc.iter_mut().zip(&acc_min) {
        *a = _mm256_add_ps(*a, *m);
    }
    acc
}

/// The f32 step of one Q4_K block, the scalar kernel's: `acc = fma(float(isum), d · d_a, acc)` and the
/// mins' term, `acc_min = fma(float(Σ min × sub-block sum), dmin · d_a, acc_min)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn add_q4k_block<const R: usize>(
    gb: *const u8,
    a: &[&Q8KBlock; R],
    isum: &[__m256i; R],
    acc: &mut [__m256; R],
    acc_min: &mut [__m256; R],
) {
    let mut mins = [_mm256_setzero_si256(); 4];
    for (p, mv) in mins.iter_mut().enumerate() {
        *mv = _mm256_cvtepu8_epi16(_mm_loadu_si128(gb.add(96 + 16 * p) as *const __m128i));
    }
    let (d, dmin) = (f16x8(gb), f16x8(gb.add(16)));
    for r in 0..R {
        // Sub-block sums s0..s7 (pairs of 16-sums) as i16 lanes 0..4 and 8..12 of the hadd.
        let b = _mm256_loadu_si256(a[r].bsums.as_ptr() as *const __m256i);
        let s = _mm256_permute4x64_epi64(_mm256_hadd_epi16(b, b), 0b10_00);
        let mut msum = _mm256_setzero_si256();
        for (p, mv) in mins.iter().enumerate() {
            let pair = _mm256_permutevar8x32_epi32(s, _mm256_set1_epi32(p as i32));
            msum = _mm256_add_epi32(msum, _mm256_madd_epi16(*mv, pair));
        }
        let ad = _mm256_set1_ps(a[r].d);
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r]), _mm256_mul_ps(d, ad), acc[r]);
        acc_min[r] = _mm256_fmadd_ps(
            _mm256_cvtepi32_ps(msum),
            _mm256_mul_ps(dmin, ad),
            acc_min[r],
        );
    }
}

/// Q4_K: one group against `R` activation rows. Per sub-block of 32 the rows' 16-bit sums (eight 4-bit
/// groups) meet the rows' scales in one `madd`; the mins meet pairs of the activations' sub-block sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4k_group<const R: usize>(
    g: *const u8,
    nb: usize,
    acts: [&[Q8KBlock]; R],
) -> [__m256; R] {
    let gbb = group_block_bytes(QuantType::Q4K);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut acc_min = [_mm256_setzero_ps(); R];
    for blk in 0..nb {
        let gb = g.add(blk * gbb);
        let a = block_of(&acts, blk);
        let mut isum = [_mm256_setzero_si256(); R];
        for j in 0..8 {
            // Row r's scale in i16 lanes 2r and 2r + 1.
            let s8 = _mm_loadl_epi64(gb.add(32 + 8 * j) as *const __m128i);
            let sc = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(s8, s8));
            let mut acc16 = [_mm256_setzero_si256(); R];
            for i in 0..4 {
                let (lo, hi) = split_nibbles(load(gb.add(160 + 128 * j + 32 * i)));
                for r in 0..R {
                    add_group_pair(&mut acc16[r], lo, hi, a[r].qs.as_ptr().add(32 * j), i);
                }
            }
            for r in 0..R {
                isum[r] = _mm256_add_epi32(isum[r], _mm256_madd_epi16(acc16[r], sc));
            }
        }
        add_q4k_block(gb, &a, &isum, &mut acc, &mut acc_min);
    }
    for (a, m) in acc.iter_mut().zip(&acc_min) {
        *a = _mm256_sub_ps(*a, *m);
    }
    acc
}

/// Chunk `c` (sub-blocks `2 c`, `2 c + 1`) of a Q6_K group block: its low-nibble and high-bit vectors.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q6k_chunk(gb: *const u8, c: usize) -> ([__m256i; 4], [__m256i; 2]) {
    let mut ql = [_mm256_setzero_si256(); 4];
    for (v, q) in ql.iter_mut().enumerate() {
        *q = load(gb.add(144 + 128 * c + 32 * v));
    }
    let qh = [
        load(gb.add(1168 + 64 * c)),
        load(gb.add(1168 + 64 * c + 32)),
    ];
    (ql, qh)
}

/// The four element groups' weights (0..64) of sub-block `h` (0, 1) of a chunk ([`q6k_chunk`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q6k_sub_block(ql: &[__m256i; 4], qh: &[__m256i; 2], h: usize) -> [__m256i; 4] {
    let mut w = [_mm256_setzero_si256(); 4];
    for (t, wt) in w.iter_mut().enumerate() {
        *wt = q6k_weights(ql, qh, 4 * h + t);
    }
    w
}

/// The f32 step of one Q6_K block, the scalar kernel's: the +32 offset of the stored quants taken off
/// (`offset`: Σ scale × 16-sum), then `acc = fma(float(isum), d · d_a, acc)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn add_q6k_block<const R: usize>(
    gb: *const u8,
    a: &[&Q8KBlock; R],
    isum: &[__m256i; R],
    offset: &[__m256i; R],
    acc: &mut [__m256; R],
) {
    let d = f16x8(gb);
    for r in 0..R {
        let i = _mm256_sub_epi32(isum[r], _mm256_slli_epi32(offset[r], 5));
        let da = _mm256_mul_ps(d, _mm256_set1_ps(a[r].d));
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), da, acc[r]);
    }
}

/// The 6-bit quants (0..64) of element group `x` (0..8) of a Q6_K chunk: low nibbles from `ql`, two high
/// bits from `qh` moved to bits 4..6.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_weights(ql: &[__m256i; 4], qh: &[__m256i; 2], x: usize) -> __m256i {
    let m4 = _mm256_set1_epi8(0xF);
    let low = if x < 4 {
        _mm256_and_si256(ql[x], m4)
    } else {
        _mm256_and_si256(_mm256_srli_epi16(ql[x - 4], 4), m4)
    };
    // 16-bit shifts: bits crossing into the neighbouring byte land outside the mask.
    let h = qh[x / 4];
    let high = match x % 4 {
        0 => _mm256_slli_epi16(h, 4),
        1 => _mm256_slli_epi16(h, 2),
        2 => h,
        _ => _mm256_srli_epi16(h, 2),
    };
    _mm256_or_si256(low, _mm256_and_si256(high, _mm256_set1_epi8(0x30)))
}

/// Lane `r`: row `r`'s scales of sub-blocks `2 c` and `2 c + 1` (`raw`: chunk `c`'s `[row][2]` scales)
/// times the activation block's sums over those sub-blocks (exact).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q6k_scaled_sums(raw: __m128i, a: &Q8KBlock, c: usize) -> __m256i {
    let pair = _mm256_cvtepi8_epi16(raw);
    let sums = _mm256_set1_epi32((a.bsums.as_ptr().add(2 * c) as *const i32).read_unaligned());
    _mm256_madd_epi16(pair, sums)
}

/// Q6_K: one group against `R` activation rows. Per sub-block of 16 two 16-bit sums of two groups each
/// (6-bit weights) meet the rows' scales; the +32 offset of the stored quants is taken off through the
/// activations' 16-sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_group<const R: usize>(
    g: *const u8,
    nb: usize,
    acts: [&[Q8KBlock]; R],
) -> [__m256; R] {
    let gbb = group_block_bytes(QuantType::Q6K);
    let even = _mm_setr_epi8(0, 0, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10, 12, 12, 14, 14);
    let odd = _mm_setr_epi8(1, 1, 3, 3, 5, 5, 7, 7, 9, 9, 11, 11, 13, 13, 15, 15);
    let mut acc = [_mm256_setzero_ps(); R];
    for blk in 0..nb {
        let gb = g.add(blk * gbb);
        let a = block_of(&acts, blk);
        let mut isum = [_mm256_setzero_si256(); R];
        let mut offset = [_mm256_setzero_si256(); R];
        for c in 0..8 {
            // Sub-blocks 2c and 2c + 1 (chunk c): [row][2] i8 scales.
            let raw = _mm_loadu_si128(gb.add(16 + 16 * c) as *const __m128i);
            let scales = [
                _mm256_cvtepi8_epi16(_mm_shuffle_epi8(raw, even)),
                _mm256_cvtepi8_epi16(_mm_shuffle_epi8(raw, odd)),
            ];
            let (ql, qh) = q6k_chunk(gb, c);
            for (h, sc) in scales.iter().enumerate() {
                let w = q6k_sub_block(&ql, &qh, h);
                for r in 0..R {
                    let x = a[r].qs.as_ptr().add(32 * c + 16 * h);
                    let s0 = _mm256_add_epi16(
                        _mm256_maddubs_epi16(w[0], bcast4(x)),
                        _mm256_maddubs_epi16(w[1], bcast4(x.add(4))),
                    );
                    let s1 = _mm256_add_epi16(
                        _mm256_maddubs_epi16(w[2], bcast4(x.add(8))),
                        _mm256_maddubs_epi16(w[3], bcast4(x.add(12))),
                    );
                    let d =
                        _mm256_add_epi32(_mm256_madd_epi16(s0, *sc), _mm256_madd_epi16(s1, *sc));
                    isum[r] = _mm256_add_epi32(isum[r], d);
                }
            }
            for r in 0..R {
                offset[r] = _mm256_add_epi32(offset[r], q6k_scaled_sums(raw, a[r], c));
            }
        }
        add_q6k_block(gb, &a, &isum, &offset, &mut acc);
    }
    acc
}

/// Writes result `r` (lane `l` = weight row `8 gi + l`) to row `r0 + r` of `out`, column `8 gi + l`, for
/// the weight rows inside the tile.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn store<const R: usize>(
    res: [__m256; R],
    r0: usize,
    gi: usize,
    out: &mut OutTile,
) {
    let width = GROUP.min(out.cols() - GROUP * gi);
    for (r, v) in res.iter().enumerate() {
        store_lanes(&mut out.row(r0 + r)[GROUP * gi..GROUP * gi + width], *v);
    }
}

/// The first `dst.len()` (at most eight) lanes of `v` into `dst`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn store_lanes(dst: &mut [f32], v: __m256) {
    if dst.len() == GROUP {
        _mm256_storeu_ps(dst.as_mut_ptr(), v);
    } else {
        let mut lanes = [0f32; GROUP];
        _mm256_storeu_ps(lanes.as_mut_ptr(), v);
        dst.copy_from_slice(&lanes[..dst.len()]);
    }
}

group_entry_points!("avx2,fma,f16c", "The CPU must support AVX2, FMA and F16C.");
