//! AVX2 + FMA + F16C kernels: a block of weight rows against a tile of up to eight activation rows, the
//! loop over the weight rows inside this code (so a plain build pays the run-time dispatch once per block).
//! Each weight block is unpacked once into registers and reused for every row of the tile.
//!
//! Per 32 elements the integer dot is `maddubs(unsigned weights, signed activations)` then `madd` to eight
//! i32 lanes (signed weights go through the `sign` trick). Per block (32 elements, or a K-quant
//! super-block) each row's exact integer sum is scaled in f32 with one FMA in block order: the tile kernels
//! reduce all rows' sums into the lanes of one vector (lane `r` = row `r`) and scale them together, the
//! one-row kernels do the same IEEE operations in scalar code, so a row's result does not depend on its
//! tile mates (nor on the kernel family: the portable kernels match bit for bit).

use std::arch::x86_64::*;

use super::activation::{Q8Block, Q8KBlock};
use super::formats::QuantType;

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

/// Σ of each of eight i32 vectors, as lane `r` for vector `r` (exact integer sums).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn sum_each(v: &[__m256i; 8]) -> __m256i {
    let h01 = _mm256_hadd_epi32(v[0], v[1]);
    let h23 = _mm256_hadd_epi32(v[2], v[3]);
    let h45 = _mm256_hadd_epi32(v[4], v[5]);
    let h67 = _mm256_hadd_epi32(v[6], v[7]);
    // 128-bit lanes: rows 0-3 (low halves' sums | high halves' sums), then rows 4-7 the same.
    let g0 = _mm256_hadd_epi32(h01, h23);
    let g1 = _mm256_hadd_epi32(h45, h67);
    _mm256_add_epi32(
        _mm256_permute2x128_si256(g0, g1, 0x20),
        _mm256_permute2x128_si256(g0, g1, 0x31),
    )
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

/// Panics unless every activation row covers the weight row's `nb` blocks (the kernels then read
/// them unchecked).
fn check_rows<A>(nb: usize, acts: &[&[A]]) {
    for a in acts {
        assert!(a.len() >= nb, "activation row shorter than the weight row");
    }
}

/// The first `R` lanes of `v`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn first_lanes<const R: usize>(v: __m256) -> [f32; R] {
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), v);
    std::array::from_fn(|r| lanes[r])
}

/// The exact integer dot of one 32-element weight block (unpacked as `wq`: unsigned for Q4_1, else
/// signed with `wabs = |wq|`) with one activation block, as eight i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_dot<const T: u8>(wq: __m256i, wabs: __m256i, a: &Q8Block) -> __m256i {
    let ones = _mm256_set1_epi16(1);
    let p = if T == Q4_1 {
        _mm256_maddubs_epi16(wq, load(a.qs.as_ptr()))
    } else {
        _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(load(a.qs.as_ptr()), wq))
    };
    _mm256_madd_epi16(p, ones)
}

const fn block_bytes<const T: u8>() -> usize {
    match T {
        Q4_0 => 18,
        Q4_1 => 20,
        Q5_0 => 22,
        _ => 34,
    }
}

/// The weights of a 32-element block: (as used by [`block_dot`], their magnitudes for signed types).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_weights<const T: u8>(b: *const u8) -> (__m256i, __m256i) {
    if T == Q4_1 {
        (nibbles(b.add(4)), _mm256_setzero_si256())
    } else {
        let wq = signed_weights::<T>(b);
        (wq, _mm256_sign_epi8(wq, wq))
    }
}

// Every row of a 32-element type has one f32 accumulator, fed once per block in block order by
// `acc = fma(float(exact block dot), d_w * d_row, acc)` (plus, for Q4_1, `mins += m_w * s_row`): the tile
// kernel does it for eight rows in the lanes of one vector, the one-row kernel with scalar instructions,
// both with the same IEEE operations, so a row's result does not depend on which kernel ran it.

/// One weight row against a tile of up to eight rows (`rows` real ones; the others are repeats whose
/// lanes are dropped). Per block: the integer dots of all rows, summed into one vector (lane `r` = row
/// `r`), one conversion and one FMA for the whole tile instead of one per row.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn small_tile<const T: u8>(
    w: &[u8],
    acts: [&[Q8Block]; 8],
    rows: usize,
    (scales, sums): (&[[f32; 8]], &[[f32; 8]]),
) -> [f32; 8] {
    let bytes = block_bytes::<T>();
    let nb = w.len() / bytes;
    check_rows(nb, &acts);
    assert!(
        scales.len() >= nb && sums.len() >= nb,
        "tile scales shorter than the weight row"
    );
    let mut acc = _mm256_setzero_ps();
    let mut acc_min = _mm256_setzero_ps();
    for blk in 0..nb {
        let b = w.as_ptr().add(blk * bytes);
        let (wq, wabs) = block_weights::<T>(b);
        let mut v = [_mm256_setzero_si256(); 8];
        for (r, vr) in v.iter_mut().enumerate().take(rows) {
            *vr = block_dot::<T>(wq, wabs, acts[r].get_unchecked(blk));
        }
        let dv = _mm256_mul_ps(
            _mm256_set1_ps(f16_at(b)),
            _mm256_loadu_ps(scales.get_unchecked(blk).as_ptr()),
        );
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum_each(&v)), dv, acc);
        if T == Q4_1 {
            let s = _mm256_loadu_ps(sums.get_unchecked(blk).as_ptr());
            acc_min = _mm256_add_ps(acc_min, _mm256_mul_ps(_mm256_set1_ps(f16_at(b.add(2))), s));
        }
    }
    first_lanes(_mm256_add_ps(acc, acc_min))
}

/// One weight row against one activation row, with the tile kernel's per-row arithmetic in scalar form.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn small_row<const T: u8>(w: &[u8], act: &[Q8Block]) -> f32 {
    let bytes = block_bytes::<T>();
    let nb = w.len() / bytes;
    check_rows(nb, &[act]);
    let (mut acc, mut acc_min) = (0f32, 0f32);
    for blk in 0..nb {
        let b = w.as_ptr().add(blk * bytes);
        let (wq, wabs) = block_weights::<T>(b);
        let a = act.get_unchecked(blk);
        let isum = hsum_i32(block_dot::<T>(wq, wabs, a));
        acc = (isum as f32).mul_add(f16_at(b) * a.d, acc);
        if T == Q4_1 {
            acc_min += f16_at(b.add(2)) * a.s;
        }
    }
    acc + acc_min
}

/// The eight 6-bit scales (bytes 0..8) and mins (bytes 8..16) of the Q4_K super-block at `b`, unpacked
/// in a vector register a 32-bit word at a time (the 12 packed bytes are words w0, w1, w2):
/// `[w0 & 0x3f.., (w2 & 0x0f..) | hi2(w0), w1 & 0x3f.., (w2 >> 4 & 0x0f..) | hi2(w1)]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4k_scales_mins(b: *const u8) -> __m128i {
    // Bytes 4..20: the 12 scale bytes and 4 quant bytes (ignored).
    let x = _mm_loadu_si128(b.add(4) as *const __m128i);
    let low = _mm_srlv_epi32(
        _mm_shuffle_epi32(x, 0b10_01_10_00),
        _mm_setr_epi32(0, 0, 0, 4),
    );
    let low = _mm_and_si128(
        low,
        _mm_setr_epi32(0x3f3f_3f3f, 0x0f0f_0f0f, 0x3f3f_3f3f, 0x0f0f_0f0f),
    );
    let high = _mm_srli_epi32(_mm_shuffle_epi32(x, 0b01_01_00_00), 6);
    let high = _mm_and_si128(high, _mm_setr_epi32(0, 0x0303_0303, 0, 0x0303_0303));
    _mm_or_si128(low, _mm_slli_epi32(high, 4))
}

/// `v` (eight i16 in each 128-bit lane) with i16 `j` of each lane in all its lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn broadcast_i16<const J: i8>(v: __m256i) -> __m256i {
    _mm256_shuffle_epi8(
        v,
        _mm256_set1_epi16(((2 * J + 1) as i16) << 8 | (2 * J) as i16),
    )
}

// K-quant rows: per super-block the exact integer dot of every row (and, for Q4_K, the exact min sum) is
// reduced to one i32 per row, then scaled in f32 with `acc = fma(float(isum), d_w * d_row, acc)` (and
// `acc_min = fma(float(msum), dmin_w * d_row, acc_min)`), in super-block order. The tile kernels do it for
// all rows in the lanes of one vector (`sum_each` puts row `r`'s sum in lane `r`), the one-row kernels
// in scalar code, with the same IEEE operations: a row's result does not depend on its tile.

/// Lane `r` = row `r`'s integer sum for `R` rows, the other lanes 0.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn row_sums<const R: usize>(v: &[__m256i; R]) -> __m256i {
    let mut all = [_mm256_setzero_si256(); 8];
    all[..R].copy_from_slice(v);
    sum_each(&all)
}

/// Q4_K: per 64 weights one unpack of the nibbles, then for each row `maddubs` + `madd` by the sub-block
/// scale into one i32 accumulator per row; the mins meet the activations' 16-sums with one `madd` per row.
/// Returns each row's (exact dot, exact min sum) per super-block through `finish`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4k_block<const R: usize>(
    b: *const u8,
    a: [&Q8KBlock; R],
) -> ([__m256i; R], [__m256i; R]) {
    let sm = q4k_scales_mins(b);
    // Scales as i16 in both 128-bit lanes; mins doubled ([m0, m0, m1, m1, …]) to meet pairs of 16-sums.
    let scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));
    let mins = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm, sm));
    let m4 = _mm256_set1_epi8(0xF);
    let mut sumi = [_mm256_setzero_si256(); R];
    macro_rules! pair {
        ($c:literal, $lo:literal, $hi:literal) => {{
            let q = _mm256_loadu_si256(b.add(16 + 32 * $c) as *const __m256i);
            let lo = _mm256_and_si256(q, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            let (s_lo, s_hi) = (broadcast_i16::<$lo>(scales), broadcast_i16::<$hi>(scales));
            for r in 0..R {
                let qs = a[r].qs.as_ptr();
                let p = _mm256_maddubs_epi16(lo, load(qs.add(64 * $c)));
                sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(p, s_lo));
                let p = _mm256_maddubs_epi16(hi, load(qs.add(64 * $c + 32)));
                sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(p, s_hi));
            }
        }};
    }
    pair!(0, 0, 1);
    pair!(1, 2, 3);
    pair!(2, 4, 5);
    pair!(3, 6, 7);
    let msum = std::array::from_fn(|r| {
        _mm256_madd_epi16(
            mins,
            _mm256_loadu_si256(a[r].bsums.as_ptr() as *const __m256i),
        )
    });
    (sumi, msum)
}

/// Q4_K, one weight row against `R` (2..=8) activation rows with the tile's per-block row scales `ad`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4k_tile<const R: usize>(w: &[u8], acts: [&[Q8KBlock]; R], ad: &[[f32; 8]]) -> [f32; R] {
    let nb = w.len() / 144;
    check_rows(nb, &acts);
    assert!(ad.len() >= nb, "tile scales shorter than the weight row");
    let (mut acc, mut acc_min) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for blk in 0..nb {
        let b = w.as_ptr().add(blk * 144);
        let (sumi, msum) = q4k_block::<R>(b, std::array::from_fn(|r| acts[r].get_unchecked(blk)));
        let adv = _mm256_loadu_ps(ad.get_unchecked(blk).as_ptr());
        let dv = _mm256_mul_ps(_mm256_set1_ps(f16_at(b)), adv);
        let mv = _mm256_mul_ps(_mm256_set1_ps(f16_at(b.add(2))), adv);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(row_sums(&sumi)), dv, acc);
        acc_min = _mm256_fmadd_ps(_mm256_cvtepi32_ps(row_sums(&msum)), mv, acc_min);
    }
    first_lanes(_mm256_sub_ps(acc, acc_min))
}

/// Q4_K, one weight row against one activation row.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4k_row(w: &[u8], act: &[Q8KBlock]) -> f32 {
    let nb = w.len() / 144;
    check_rows(nb, &[act]);
    let (mut acc, mut acc_min) = (0f32, 0f32);
    for blk in 0..nb {
        let b = w.as_ptr().add(blk * 144);
        let a = act.get_unchecked(blk);
        let ([sumi], [msum]) = q4k_block::<1>(b, [a]);
        acc = (hsum_i32(sumi) as f32).mul_add(f16_at(b) * a.d, acc);
        acc_min = (hsum_i32(msum) as f32).mul_add(f16_at(b.add(2)) * a.d, acc_min);
    }
    acc - acc_min
}

/// The unsigned 6-bit quants (`q + 32`) of elements `32 j..32 j + 32` of a Q6_K block: low nibbles from
/// `ql`, two high bits from `qh` moved to bits 4..6 with one shift and a mask.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_weights<const J: usize>(b: *const u8) -> __m256i {
    let (h, quarter) = (J / 4, J % 4);
    let ql = _mm256_loadu_si256(b.add(64 * h + 32 * (quarter % 2)) as *const __m256i);
    let qh = _mm256_loadu_si256(b.add(128 + 32 * h) as *const __m256i);
    let low = if quarter < 2 {
        _mm256_and_si256(ql, _mm256_set1_epi8(0xF))
    } else {
        _mm256_and_si256(_mm256_srli_epi16(ql, 4), _mm256_set1_epi8(0xF))
    };
    // Bits 2q..2q+2 of each qh byte to bits 4..6 (16-bit shifts: bits crossing into the neighbour byte
    // land outside the mask).
    let high = match quarter {
        0 => _mm256_slli_epi16(qh, 4),
        1 => _mm256_slli_epi16(qh, 2),
        2 => qh,
        _ => _mm256_srli_epi16(qh, 2),
    };
    _mm256_or_si256(low, _mm256_and_si256(high, _mm256_set1_epi8(0x30)))
}

/// Q6_K: like Q4_K with a scale per 16 weights (one per 128-bit lane of the `madd`); the +32 offset of the
/// stored quants is taken off exactly through the activations' 16-sums. Returns each row's exact dot.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_block<const R: usize>(b: *const u8, a: [&Q8KBlock; R]) -> [__m256i; R] {
    let sc = _mm_loadu_si128(b.add(192) as *const __m128i);
    // Even scales (first halves of the sub-blocks) in the low lane, odd ones in the high lane.
    let split = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    let halves = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc, split));
    let sc16 = _mm256_cvtepi8_epi16(sc);
    let mut sumi = [_mm256_setzero_si256(); R];
    macro_rules! sub_block {
        ($j:literal) => {{
            let wv = q6k_weights::<$j>(b);
            let scv = broadcast_i16::<$j>(halves);
            for r in 0..R {
                let p = _mm256_maddubs_epi16(wv, load(a[r].qs.as_ptr().add(32 * $j)));
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
    std::array::from_fn(|r| {
        let bsums = _mm256_loadu_si256(a[r].bsums.as_ptr() as *const __m256i);
        let offset = _mm256_madd_epi16(sc16, bsums);
        _mm256_sub_epi32(sumi[r], _mm256_slli_epi32(offset, 5))
    })
}

/// Q6_K, one weight row against `R` (2..=8) activation rows with the tile's per-block row scales `ad`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_tile<const R: usize>(w: &[u8], acts: [&[Q8KBlock]; R], ad: &[[f32; 8]]) -> [f32; R] {
    let nb = w.len() / 210;
    check_rows(nb, &acts);
    assert!(ad.len() >= nb, "tile scales shorter than the weight row");
    let mut acc = _mm256_setzero_ps();
    for blk in 0..nb {
        let b = w.as_ptr().add(blk * 210);
        let sumi = q6k_block::<R>(b, std::array::from_fn(|r| acts[r].get_unchecked(blk)));
        let adv = _mm256_loadu_ps(ad.get_unchecked(blk).as_ptr());
        let dv = _mm256_mul_ps(_mm256_set1_ps(f16_at(b.add(208))), adv);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(row_sums(&sumi)), dv, acc);
    }
    first_lanes(acc)
}

/// Q6_K, one weight row against one activation row.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_row(w: &[u8], act: &[Q8KBlock]) -> f32 {
    let nb = w.len() / 210;
    check_rows(nb, &[act]);
    let mut acc = 0f32;
    for blk in 0..nb {
        let b = w.as_ptr().add(blk * 210);
        let a = act.get_unchecked(blk);
        let [sumi] = q6k_block::<1>(b, [a]);
        acc = (hsum_i32(sumi) as f32).mul_add(f16_at(b.add(208)) * a.d, acc);
    }
    acc
}

/// A block of weight rows of a 32-element type (`row_bytes` apart) against a tile of up to eight
/// activation rows: `vals[i * cols + j]` = weight row `j` · activation row `i`, each bit-identical to the
/// one-row kernel on that pair.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `w` must hold whole rows of whole blocks of `ty`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_small_block(
    ty: QuantType,
    w: &[u8],
    row_bytes: usize,
    acts: &[&[Q8Block]],
    scales: (&[[f32; 8]], &[[f32; 8]]),
    vals: &mut [f32],
) {
    match ty {
        QuantType::Q4_0 => small_block::<Q4_0>(w, row_bytes, acts, scales, vals),
        QuantType::Q4_1 => small_block::<Q4_1>(w, row_bytes, acts, scales, vals),
        QuantType::Q5_0 => small_block::<Q5_0>(w, row_bytes, acts, scales, vals),
        QuantType::Q8_0 => small_block::<Q8_0>(w, row_bytes, acts, scales, vals),
        QuantType::Q4K | QuantType::Q6K => unreachable!("K-quants use dot_k_block"),
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn small_block<const T: u8>(
    w: &[u8],
    row_bytes: usize,
    acts: &[&[Q8Block]],
    scales: (&[[f32; 8]], &[[f32; 8]]),
    vals: &mut [f32],
) {
    let cols = w.len() / row_bytes;
    if let [act] = acts {
        for (j, wr) in w.chunks_exact(row_bytes).enumerate() {
            vals[j] = small_row::<T>(wr, act);
        }
        return;
    }
    let rows = acts.len();
    let tile: [&[Q8Block]; 8] = std::array::from_fn(|i| acts[i.min(rows - 1)]);
    for (j, wr) in w.chunks_exact(row_bytes).enumerate() {
        let lanes = small_tile::<T>(wr, tile, rows, scales);
        for (i, v) in lanes[..rows].iter().enumerate() {
            vals[i * cols + j] = *v;
        }
    }
}

/// A block of weight rows of a K-quant type (`row_bytes` apart) against a tile of up to eight activation
/// rows with the tile's per-block row scales `ad`: `vals[i * cols + j]` = weight row `j` · activation row
/// `i`, each bit-identical to the one-row kernel on that pair.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `w` must hold whole rows of whole blocks of `ty`.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_k_block(
    ty: QuantType,
    w: &[u8],
    row_bytes: usize,
    acts: &[&[Q8KBlock]],
    ad: &[[f32; 8]],
    vals: &mut [f32],
) {
    match acts.len() {
        1 => k_block::<1>(ty, w, row_bytes, acts, ad, vals),
        2 => k_block::<2>(ty, w, row_bytes, acts, ad, vals),
        3 => k_block::<3>(ty, w, row_bytes, acts, ad, vals),
        4 => k_block::<4>(ty, w, row_bytes, acts, ad, vals),
        5 => k_block::<5>(ty, w, row_bytes, acts, ad, vals),
        6 => k_block::<6>(ty, w, row_bytes, acts, ad, vals),
        7 => k_block::<7>(ty, w, row_bytes, acts, ad, vals),
        _ => k_block::<8>(ty, w, row_bytes, acts, ad, vals),
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn k_block<const R: usize>(
    ty: QuantType,
    w: &[u8],
    row_bytes: usize,
    acts: &[&[Q8KBlock]],
    ad: &[[f32; 8]],
    vals: &mut [f32],
) {
    let cols = w.len() / row_bytes;
    let tile: [&[Q8KBlock]; R] = std::array::from_fn(|i| acts[i]);
    for (j, wr) in w.chunks_exact(row_bytes).enumerate() {
        let lanes: [f32; R] = match (ty, R) {
            (QuantType::Q4K, 1) => std::array::from_fn(|_| q4k_row(wr, tile[0])),
            (QuantType::Q6K, 1) => std::array::from_fn(|_| q6k_row(wr, tile[0])),
            (QuantType::Q4K, _) => q4k_tile::<R>(wr, tile, ad),
            (QuantType::Q6K, _) => q6k_tile::<R>(wr, tile, ad),
            _ => unreachable!("32-element types use dot_small_block"),
        };
        for (i, v) in lanes.iter().enumerate() {
            vals[i * cols + j] = *v;
        }
    }
}
