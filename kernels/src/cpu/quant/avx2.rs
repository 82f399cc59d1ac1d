//! AVX2 + FMA + F16C kernels: one weight row against `R` activation rows. Each weight block is unpacked
//! once into registers and reused for all `R` rows; every row keeps its own accumulators and goes through
//! the very same instructions whatever `R` is, so a row's result does not depend on its tile mates.
//!
//! Per 32 elements the integer dot is `maddubs(unsigned weights, signed activations)` then `madd` to eight
//! i32 lanes (signed weights go through the `sign` trick); the lanes are scaled in f32 with one FMA per
//! block and summed horizontally once at the end, always in the same order.

use std::arch::x86_64::*;

use super::activation::{Q8Block, Q8KBlock};
use super::formats::{q4k_scale_min, QuantType};

/// Horizontal sum of eight f32 lanes in a fixed order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = u16::from_le_bytes([*p, *p.add(1)]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// 16 bytes of packed nibbles to 32 bytes: low nibbles are elements 0..16, high nibbles 16..32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let q = _mm_loadu_si128(p as *const __m128i);
    let m4 = _mm_set1_epi8(0xF);
    let lo = _mm_and_si128(q, m4);
    let hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
    _mm256_set_m128i(hi, lo)
}

/// Bit `e` of `bits` as byte `e` (0xFF or 0).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bits_to_bytes(bits: u32) -> __m256i {
    let v = _mm256_set1_epi32(bits as i32);
    let shuffle = _mm256_setr_epi64x(
        0,
        0x0101_0101_0101_0101,
        0x0202_0202_0202_0202,
        0x0303_0303_0303_0303,
    );
    let v = _mm256_shuffle_epi8(v, shuffle);
    // Every byte gets all bits but its own position set; it is all ones iff that bit was set.
    let v = _mm256_or_si256(v, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe));
    _mm256_cmpeq_epi8(v, _mm256_set1_epi64x(-1))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load(p: *const i8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

/// Signed weights of a Q4_0 / Q5_0 / Q8_0 block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn signed_weights<const T: u8>(b: *const u8) -> __m256i {
    match T {
        Q4_0 => _mm256_sub_epi8(nibbles(b.add(2)), _mm256_set1_epi8(8)),
        Q5_0 => {
            let qh = u32::from_le_bytes([*b.add(2), *b.add(3), *b.add(4), *b.add(5)]);
            let high = _mm256_and_si256(bits_to_bytes(qh), _mm256_set1_epi8(0x10));
            _mm256_sub_epi8(
                _mm256_or_si256(nibbles(b.add(6)), high),
                _mm256_set1_epi8(16),
            )
        }
        _ => _mm256_loadu_si256(b.add(2) as *const __m256i),
    }
}

const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q5_0: u8 = 2;
const Q8_0: u8 = 3;

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn small<const R: usize, const T: u8>(w: &[u8], acts: [&[Q8Block]; R]) -> [f32; R] {
    let bytes = match T {
        Q4_0 => 18,
        Q4_1 => 20,
        Q5_0 => 22,
        _ => 34,
    };
    let nb = w.len() / bytes;
    for a in &acts {
        assert!(a.len() >= nb, "activation row shorter than the weight row");
    }
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut acc_min = [0f32; R];
    for blk in 0..nb {
        let b = w.as_ptr().add(blk * bytes);
        let d = f16_at(b);
        if T == Q4_1 {
            let wq = nibbles(b.add(4));
            let m = f16_at(b.add(2));
            for r in 0..R {
                let a = acts[r].get_unchecked(blk);
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(wq, load(a.qs.as_ptr())), ones);
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), _mm256_cvtepi32_ps(p), acc[r]);
                acc_min[r] += m * a.s;
            }
        } else {
            let wq = signed_weights::<T>(b);
            let wabs = _mm256_sign_epi8(wq, wq);
            for r in 0..R {
                let a = acts[r].get_unchecked(blk);
                let signed_a = _mm256_sign_epi8(load(a.qs.as_ptr()), wq);
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(wabs, signed_a), ones);
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), _mm256_cvtepi32_ps(p), acc[r]);
            }
        }
    }
    let mut out = [0f32; R];
    for r in 0..R {
        out[r] = hsum(acc[r]) + acc_min[r];
    }
    out
}

/// Q4_K: per 32 weights one unpack, then for every row `maddubs` + `madd` by the sub-block scale into one
/// i32 accumulator per row (exact, so the order of the sub-blocks does not matter); one f32 FMA per row and
/// super-block for the scales and one for the mins.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4k<const R: usize>(w: &[u8], acts: [&[Q8KBlock]; R]) -> [f32; R] {
    let nb = w.len() / 144;
    for a in &acts {
        assert!(a.len() >= nb, "activation row shorter than the weight row");
    }
    let m4 = _mm256_set1_epi8(0xF);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut acc_min = [_mm256_setzero_ps(); R];
    for blk in 0..nb {
        let b = w.as_ptr().add(blk * 144);
        let (d, dmin) = (f16_at(b), f16_at(b.add(2)));
        let scale_bytes = std::slice::from_raw_parts(b.add(4), 12);
        let mut scales = [0i16; 8];
        let mut mins = [0i16; 16];
        for j in 0..8 {
            let (sc, m) = q4k_scale_min(j, scale_bytes);
            scales[j] = sc as i16;
            mins[2 * j] = m as i16;
            mins[2 * j + 1] = m as i16;
        }
        let a_qs: [*const i8; R] = std::array::from_fn(|r| acts[r].get_unchecked(blk).qs.as_ptr());
        let mut sumi = [_mm256_setzero_si256(); R];
        for c in 0..4 {
            let q = _mm256_loadu_si256(b.add(16 + 32 * c) as *const __m256i);
            let lo = _mm256_and_si256(q, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            let s_lo = _mm256_set1_epi16(scales[2 * c]);
            let s_hi = _mm256_set1_epi16(scales[2 * c + 1]);
            for r in 0..R {
                let p = _mm256_maddubs_epi16(lo, load(a_qs[r].add(64 * c)));
                sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(p, s_lo));
                let p = _mm256_maddubs_epi16(hi, load(a_qs[r].add(64 * c + 32)));
                sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(p, s_hi));
            }
        }
        // Each min meets the two 16-sums of its 32 activations: lane j of madd(mins, bsums).
        let minv = _mm256_loadu_si256(mins.as_ptr() as *const __m256i);
        for r in 0..R {
            let a = acts[r].get_unchecked(blk);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), _mm256_cvtepi32_ps(sumi[r]), acc[r]);
            let bsums = _mm256_loadu_si256(a.bsums.as_ptr() as *const __m256i);
            let msum = _mm256_madd_epi16(minv, bsums);
            acc_min[r] = _mm256_fmadd_ps(
                _mm256_set1_ps(dmin * a.d),
                _mm256_cvtepi32_ps(msum),
                acc_min[r],
            );
        }
    }
    let mut out = [0f32; R];
    for r in 0..R {
        out[r] = hsum(acc[r]) - hsum(acc_min[r]);
    }
    out
}

/// Bits `S..S+2` of each `qh` byte moved to bits 4..6: the high part of a Q6_K quant.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_high<const S: i32>(qh: __m256i) -> __m256i {
    let two = _mm256_and_si256(_mm256_srli_epi16(qh, S), _mm256_set1_epi8(3));
    _mm256_slli_epi16(two, 4)
}

/// The unsigned 6-bit quants (`q + 32`) of elements `32 j..32 j + 32` of a Q6_K block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_weights<const J: usize>(b: *const u8) -> __m256i {
    let (h, quarter) = (J / 4, J % 4);
    let ql = _mm256_loadu_si256(b.add(64 * h + 32 * (quarter % 2)) as *const __m256i);
    let qh = _mm256_loadu_si256(b.add(128 + 32 * h) as *const __m256i);
    let m4 = _mm256_set1_epi8(0xF);
    let low = if quarter < 2 {
        _mm256_and_si256(ql, m4)
    } else {
        _mm256_and_si256(_mm256_srli_epi16(ql, 4), m4)
    };
    let high = match quarter {
        0 => q6k_high::<0>(qh),
        1 => q6k_high::<2>(qh),
        2 => q6k_high::<4>(qh),
        _ => q6k_high::<6>(qh),
    };
    _mm256_or_si256(low, high)
}

/// Q6_K: like Q4_K, with a scale per 16 weights (one per 128-bit lane of the `madd`) and the +32 offset of
/// the stored quants taken off exactly through the activations' 16-sums.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k<const R: usize>(w: &[u8], acts: [&[Q8KBlock]; R]) -> [f32; R] {
    let nb = w.len() / 210;
    for a in &acts {
        assert!(a.len() >= nb, "activation row shorter than the weight row");
    }
    let mut acc = [_mm256_setzero_ps(); R];
    for blk in 0..nb {
        let b = w.as_ptr().add(blk * 210);
        let d = f16_at(b.add(208));
        let sc: [i8; 16] = *(b.add(192) as *const [i8; 16]);
        let a_qs: [*const i8; R] = std::array::from_fn(|r| acts[r].get_unchecked(blk).qs.as_ptr());
        let mut sumi = [_mm256_setzero_si256(); R];
        macro_rules! sub_block {
            ($j:literal) => {{
                let wv = q6k_weights::<$j>(b);
                let scv = _mm256_set_m128i(
                    _mm_set1_epi16(sc[2 * $j + 1] as i16),
                    _mm_set1_epi16(sc[2 * $j] as i16),
                );
                for r in 0..R {
                    let p = _mm256_maddubs_epi16(wv, load(a_qs[r].add(32 * $j)));
                    sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(p, scv));
                }
            }};
        }
        sub_block!(0);
        sub_block!(1);
        sub_block!(2);
        sub_block!(3);
        sub_block!(4);
        sub_block!(5);
        sub_block!(6);
        sub_block!(7);
        let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(sc.as_ptr() as *const __m128i));
        for r in 0..R {
            let a = acts[r].get_unchecked(blk);
            // The stored quants are q + 32: subtract 32 * Σ scale * (16-sum of activations), exactly.
            let bsums = _mm256_loadu_si256(a.bsums.as_ptr() as *const __m256i);
            let offset = _mm256_madd_epi16(sc16, bsums);
            let s = _mm256_sub_epi32(sumi[r], _mm256_slli_epi32(offset, 5));
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), _mm256_cvtepi32_ps(s), acc[r]);
        }
    }
    let mut out = [0f32; R];
    for r in 0..R {
        out[r] = hsum(acc[r]);
    }
    out
}

/// One weight row of a 32-element block type against `R` activation rows.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `w` must hold whole blocks of `ty`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_small<const R: usize>(
    ty: QuantType,
    w: &[u8],
    acts: [&[Q8Block]; R],
) -> [f32; R] {
    match ty {
        QuantType::Q4_0 => small::<R, Q4_0>(w, acts),
        QuantType::Q4_1 => small::<R, Q4_1>(w, acts),
        QuantType::Q5_0 => small::<R, Q5_0>(w, acts),
        QuantType::Q8_0 => small::<R, Q8_0>(w, acts),
        QuantType::Q4K | QuantType::Q6K => unreachable!("K-quants use dot_k"),
    }
}

/// One weight row of a K-quant type against `R` activation rows.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `w` must hold whole blocks of `ty`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_k<const R: usize>(ty: QuantType, w: &[u8], acts: [&[Q8KBlock]; R]) -> [f32; R] {
    match ty {
        QuantType::Q4K => q4k::<R>(w, acts),
        QuantType::Q6K => q6k::<R>(w, acts),
        _ => unreachable!("32-element types use dot_small"),
    }
}
