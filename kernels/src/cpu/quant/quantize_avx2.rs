//! AVX2 activation quantization, bit-identical to the portable one in `activation.rs`: the same block
//! maximum, the same f32 scale and inverse, and rounding half away from zero like `f32::round` (emulated,
//! since the hardware rounds half to even), so the kernel family never changes which 8-bit values a row
//! gets.

use std::arch::x86_64::*;

use super::activation::{scales, ActBlock, Q8Block, Q8KBlock};
use super::avx2::hsum_i32;
use super::formats::QK_K;

/// Largest magnitude of `x` (a multiple of 8 values); `max` is exact, so the lane order does not matter.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn amax(x: &[f32]) -> f32 {
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let mut m = _mm256_setzero_ps();
    for c in x.chunks_exact(8) {
        m = _mm256_max_ps(m, _mm256_and_ps(_mm256_loadu_ps(c.as_ptr()), abs));
    }
    let h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    let h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    let h = _mm_max_ss(h, _mm_movehdup_ps(h));
    _mm_cvtss_f32(h)
}

/// `round(v * id)` clamped to ±127 for 8 values, as i32 lanes: truncate, then step away from zero when
/// the (exact) remainder is at least one half.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn round8(p: *const f32, id: __m256) -> __m256i {
    let v = _mm256_mul_ps(_mm256_loadu_ps(p), id);
    let t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    let sign = _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(i32::MIN)));
    let abs_frac = _mm256_andnot_ps(sign, _mm256_sub_ps(v, t));
    let up = _mm256_cmp_ps(abs_frac, _mm256_set1_ps(0.5), _CMP_GE_OQ);
    let step = _mm256_and_ps(up, _mm256_or_ps(_mm256_set1_ps(1.0), sign));
    let r = _mm256_add_ps(t, step);
    // NaN (a zero times the infinite inverse of a subnormal scale) becomes 0, as `as i8` makes it.
    let r = _mm256_and_ps(r, _mm256_cmp_ps(r, r, _CMP_ORD_Q));
    let r = _mm256_min_ps(
        _mm256_max_ps(r, _mm256_set1_ps(-127.0)),
        _mm256_set1_ps(127.0),
    );
    _mm256_cvttps_epi32(r)
}

/// Quantizes 32 values at `x` into 32 bytes at `out`; returns the 32 i32s' two 16-sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize32(x: *const f32, id: __m256, out: *mut i8) -> (i32, i32) {
    let q: [__m256i; 4] = std::array::from_fn(|i| round8(x.add(8 * i), id));
    // The packs work per 128-bit lane, leaving the 4-byte groups as elements 0-3, 8-11, 16-19, 24-27,
    // 4-7, 12-15, 20-23, 28-31; the permute puts them back in order.
    let w01 = _mm256_packs_epi32(q[0], q[1]);
    let w23 = _mm256_packs_epi32(q[2], q[3]);
    let b = _mm256_packs_epi16(w01, w23);
    let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(out as *mut __m256i, b);
    let lo = _mm256_add_epi32(q[0], q[1]);
    let hi = _mm256_add_epi32(q[2], q[3]);
    (hsum_i32(lo), hsum_i32(hi))
}

/// [`Q8Block::quantize`] with AVX2.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `x` holds 32 values.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q8(x: &[f32]) -> Q8Block {
    assert_eq!(x.len(), 32);
    let (d, id) = scales(amax(x));
    let mut b = <Q8Block as ActBlock>::ZERO;
    let (s0, s1) = quantize32(x.as_ptr(), _mm256_set1_ps(id), b.qs.as_mut_ptr());
    b.d = d;
    b.sum = s0 + s1;
    b.s = d * b.sum as f32;
    b
}

/// [`Q8KBlock::quantize`] with AVX2.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `x` holds 256 values.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q8k(x: &[f32]) -> Q8KBlock {
    assert_eq!(x.len(), QK_K);
    let (d, id) = scales(amax(x));
    let id = _mm256_set1_ps(id);
    let mut b = <Q8KBlock as ActBlock>::ZERO;
    for j in 0..QK_K / 32 {
        let (s0, s1) = quantize32(x.as_ptr().add(32 * j), id, b.qs.as_mut_ptr().add(32 * j));
        // |each 16-sum| <= 16 * 127, inside i16.
        b.bsums[2 * j] = s0 as i16;
        b.bsums[2 * j + 1] = s1 as i16;
    }
    b.d = d;
    b
}
