//! The AVX2 kernels with AVX-512 VNNI's `vpdpbusd` on 256-bit vectors (AVX512-VL): one instruction adds
//! to each row's i32 lane the dot of its four unsigned weights with four signed activation bytes, where
//! AVX2 needs `maddubs` + a 16-bit add, and a `madd` to widen every few groups.
//!
//! Same interleaved layout, same unsigned weight vectors and same f32 work per block as [`super::avx2`]
//! (whose helpers this module calls), so results are bit-identical to the AVX2 and portable kernels.
//! Differences: the integer sums go straight to i32, so nothing needs widening and no 16-bit range
//! limits how many groups are summed; the K-quants' sub-block scales meet the i32 sub-block sums in a
//! `mullo`; Q8_0's signed weights are made unsigned by flipping their sign bit (`w + 128`) and the
//! offset is taken off through the activation sums, like Q4_0's, instead of `sign` per row.
//!
//! With one or two activation rows a block's `vpdpbusd`s would form one long dependency chain, so each
//! row gets two accumulators (the low and high halves of the 32-element spans); with more rows the rows
//! themselves are independent chains. EVEX encoding gives 32 vector registers, enough for eight rows.

use std::arch::x86_64::*;

use super::activation::{Q8Block, Q8KBlock};
use super::avx2::{
    add_q4k_block, add_q6k_block, add_small_block, bcast4, group_pair, load, q6k_chunk,
    q6k_scaled_sums, q6k_sub_block, small_quants, split_nibbles, store, take_offset,
};
use super::formats::QuantType;
use super::groups::{block_of, group_entry_points, Q4_0, Q4_1, Q5_0, Q8_0};
use super::packed::group_block_bytes;
use crate::cpu::tiling::OutTile;

/// `acc += Σ₄ w · x` per 32-bit lane (`w` unsigned, `x` signed bytes), exact.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512vl,avx512vnni")]
unsafe fn dot4(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(acc, w, x)
}

/// Whether `R` activation rows are few enough that each gets a second accumulator.
const fn split_chains(rows: usize) -> bool {
    rows <= 2
}

/// One group of a 32-element type against `R` activation rows, as the AVX2 `small_group`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512vl,avx512vnni")]
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
    let split = split_chains(R);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut acc_min = [_mm256_setzero_ps(); R];
    for blk in 0..nb {
        let gb = g.add(blk * gbb);
        let a = block_of(&acts, blk);
        let mut isum = [_mm256_setzero_si256(); R];
        let mut isum2 = [_mm256_setzero_si256(); R];
        if T == Q8_0 {
            let flip = _mm256_set1_epi8(i8::MIN);
            for i in 0..4 {
                let lo = _mm256_xor_si256(load(gb.add(16 + 32 * i)), flip);
                let hi = _mm256_xor_si256(load(gb.add(16 + 32 * (4 + i))), flip);
                for r in 0..R {
                    let x = a[r].qs.as_ptr();
                    isum[r] = dot4(isum[r], lo, bcast4(x.add(4 * i)));
                    let second = if split { &mut isum2[r] } else { &mut isum[r] };
                    *second = dot4(*second, hi, bcast4(x.add(16 + 4 * i)));
                }
            }
        } else {
            let (qs, qh) = small_quants::<T>(gb);
            for i in 0..4 {
                let (lo, hi) = group_pair::<T>(qs, qh, i);
                for r in 0..R {
                    let x = a[r].qs.as_ptr();
                    isum[r] = dot4(isum[r], lo, bcast4(x.add(4 * i)));
                    let second = if split { &mut isum2[r] } else { &mut isum[r] };
                    *second = dot4(*second, hi, bcast4(x.add(16 + 4 * i)));
                }
            }
        }
        if split {
            for r in 0..R {
                isum[r] = _mm256_add_epi32(isum[r], isum2[r]);
            }
        }
        let offset = match T {
            Q4_0 => 8,
            Q5_0 => 16,
            Q8_0 => 128,
            _ => 0,
        };
        take_offset(&mut isum, &a, offset);
        add_small_block::<T, R>(gb, &a, &isum, &mut acc, &mut acc_min);
    }
    for (a, m) in acc.iter_mut().zip(&acc_min) {
        *a = _mm256_add_ps(*a, *m);
    }
    acc
}

/// Q4_K: one group against `R` activation rows. Per sub-block of 32 each row's i32 sum (eight groups)
/// meets the rows' scales in one `mullo`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512vl,avx512vnni")]
unsafe fn q4k_group<const R: usize>(
    g: *const u8,
    nb: usize,
    acts: [&[Q8KBlock]; R],
) -> [__m256; R] {
    let gbb = group_block_bytes(QuantType::Q4K);
    let split = split_chains(R);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut acc_min = [_mm256_setzero_ps(); R];
    for blk in 0..nb {
        let gb = g.add(blk * gbb);
        let a = block_of(&acts, blk);
        let mut isum = [_mm256_setzero_si256(); R];
        for j in 0..8 {
            // Row r's scale in i32 lane r.
            let sc = _mm256_cvtepu8_epi32(_mm_loadl_epi64(gb.add(32 + 8 * j) as *const __m128i));
            let mut sub = [_mm256_setzero_si256(); R];
            let mut sub2 = [_mm256_setzero_si256(); R];
            for i in 0..4 {
                let (lo, hi) = split_nibbles(load(gb.add(160 + 128 * j + 32 * i)));
                for r in 0..R {
                    let x = a[r].qs.as_ptr().add(32 * j);
                    sub[r] = dot4(sub[r], lo, bcast4(x.add(4 * i)));
                    let second = if split { &mut sub2[r] } else { &mut sub[r] };
                    *second = dot4(*second, hi, bcast4(x.add(16 + 4 * i)));
                }
            }
            for r in 0..R {
                let s = if split {
                    _mm256_add_epi32(sub[r], sub2[r])
                } else {
                    sub[r]
                };
                isum[r] = _mm256_add_epi32(isum[r], _mm256_mullo_epi32(s, sc));
            }
        }
        add_q4k_block(gb, &a, &isum, &mut acc, &mut acc_min);
    }
    for (a, m) in acc.iter_mut().zip(&acc_min) {
        *a = _mm256_sub_ps(*a, *m);
    }
    acc
}

/// Q6_K: one group against `R` activation rows. Per sub-block of 16 each row's i32 sum (four groups of
/// 6-bit weights) meets the rows' scales in one `mullo`; the +32 offset goes through the activations'
/// 16-sums as in the AVX2 kernel.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512vl,avx512vnni")]
unsafe fn q6k_group<const R: usize>(
    g: *const u8,
    nb: usize,
    acts: [&[Q8KBlock]; R],
) -> [__m256; R] {
    let gbb = group_block_bytes(QuantType::Q6K);
    let split = split_chains(R);
    // Row r's scale of sub-block 2c + h is byte 2r + h of the chunk's 16 scale bytes.
    let pick = [
        _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, -1, -1, -1, -1, -1, -1, -1, -1),
        _mm_setr_epi8(1, 3, 5, 7, 9, 11, 13, 15, -1, -1, -1, -1, -1, -1, -1, -1),
    ];
    let mut acc = [_mm256_setzero_ps(); R];
    for blk in 0..nb {
        let gb = g.add(blk * gbb);
        let a = block_of(&acts, blk);
        let mut isum = [_mm256_setzero_si256(); R];
        let mut offset = [_mm256_setzero_si256(); R];
        for c in 0..8 {
            let raw = _mm_loadu_si128(gb.add(16 + 16 * c) as *const __m128i);
            let (ql, qh) = q6k_chunk(gb, c);
            for (h, p) in pick.iter().enumerate() {
                let sc = _mm256_cvtepi8_epi32(_mm_shuffle_epi8(raw, *p));
                let w = q6k_sub_block(&ql, &qh, h);
                for r in 0..R {
                    let x = a[r].qs.as_ptr().add(32 * c + 16 * h);
                    let zero = _mm256_setzero_si256();
                    let s = if split {
                        let even = dot4(dot4(zero, w[0], bcast4(x)), w[2], bcast4(x.add(8)));
                        let odd = dot4(dot4(zero, w[1], bcast4(x.add(4))), w[3], bcast4(x.add(12)));
                        _mm256_add_epi32(even, odd)
                    } else {
                        let s = dot4(dot4(zero, w[0], bcast4(x)), w[1], bcast4(x.add(4)));
                        dot4(dot4(s, w[2], bcast4(x.add(8))), w[3], bcast4(x.add(12)))
                    };
                    isum[r] = _mm256_add_epi32(isum[r], _mm256_mullo_epi32(s, sc));
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

group_entry_points!(
    "avx2,fma,f16c,avx512vl,avx512vnni",
    "The CPU must support AVX2, FMA, F16C, AVX512-VL and AVX512-VNNI."
);
