//! AArch64 NEON + dot-product kernels over the interleaved weight layout of [`super::packed`]: one group
//! of eight weight rows against up to eight activation rows at a time, every weight row in its own lane.
//!
//! A 32-byte vector of the layout is two NEON registers: rows 0..4 and rows 4..8, each row's four
//! consecutive quants in one 32-bit lane. That is the shape of `sdot`'s by-element form: one instruction
//! adds, to each row's i32 lane, the dot of its four weights with the four activations of one element
//! group picked from a 16-byte activation register. Sums go straight to i32 (no 16-bit stage as in AVX2's
//! `maddubs`), and `sdot` multiplies signed by signed, so offsets (Q4_0's 8, Q5_0's 16, Q6_K's 32) are
//! taken off the weights before the dot. Each row's exact integer dot per block thus lands in its lane,
//! and the f32 work per block and row is the scalar kernel's (`acc = fma(float(isum), d_w * d_a, acc)`,
//! plus the Q4_1 / Q4_K min terms) in block order, so results are bit-identical to the scalar and AVX2
//! families, whatever the tile.
//!
//! `sdot` and the f16 → f32 widening (`fcvtl`, base AdvSIMD) are written as inline assembly: their
//! intrinsics are not stable Rust yet (`stdarch_neon_dotprod`, and the `f16` type).

use std::arch::aarch64::*;
use std::arch::asm;

use super::activation::{Q8Block, Q8KBlock};
use super::formats::QuantType;
use super::groups::{block_of, group_entry_points, Q4_0, Q4_1, Q5_0, Q8_0};
use super::packed::{group_block_bytes, GROUP};
use crate::cpu::tiling::OutTile;

/// Eight lanes, one per weight row of a group: rows 0..4, then 4..8.
type Rows<T> = [T; 2];

/// `acc` plus, in lane `r`, the dot of bytes `4 r..4 r + 4` of `w` with bytes `4 L..4 L + 4` of `x`.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn sdot<const L: i32>(acc: int32x4_t, w: int8x16_t, x: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    asm!(
        "sdot {acc:v}.4s, {w:v}.16b, {x:v}.4b[{lane}]",
        acc = inout(vreg) acc,
        w = in(vreg) w,
        x = in(vreg) x,
        lane = const L,
        options(pure, nomem, nostack, preserves_flags)
    );
    acc
}

/// `acc + Σ_i w[i] · group i of x`: four element groups of one weight register against the 16
/// activations `x`, each row in its lane.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn dot16(acc: int32x4_t, w: [int8x16_t; 4], x: int8x16_t) -> int32x4_t {
    let acc = sdot::<0>(acc, w[0], x);
    let acc = sdot::<1>(acc, w[1], x);
    let acc = sdot::<2>(acc, w[2], x);
    sdot::<3>(acc, w[3], x)
}

/// The same half (rows 0..4 or 4..8) of four weight vectors.
#[inline]
fn half_of(w: &[Rows<int8x16_t>; 4], k: usize) -> [int8x16_t; 4] {
    [w[0][k], w[1][k], w[2][k], w[3][k]]
}

/// Eight f16 at `p` as f32 lanes.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn f16x8(p: *const u8) -> Rows<float32x4_t> {
    let h = vld1q_u16(p as *const u16);
    let (lo, hi): (float32x4_t, float32x4_t);
    asm!(
        "fcvtl {lo:v}.4s, {h:v}.4h",
        "fcvtl2 {hi:v}.4s, {h:v}.8h",
        h = in(vreg) h,
        lo = out(vreg) lo,
        hi = out(vreg) hi,
        options(pure, nomem, nostack, preserves_flags)
    );
    [lo, hi]
}

/// A 32-byte vector of the layout.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn load(p: *const u8) -> Rows<uint8x16_t> {
    [vld1q_u8(p), vld1q_u8(p.add(16))]
}

/// Eight u8, one per row, as i32 lanes.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn widen_u8(v: uint8x8_t) -> Rows<int32x4_t> {
    let w = vmovl_u8(v);
    [
        vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(w))),
        vreinterpretq_s32_u32(vmovl_high_u16(w)),
    ]
}

/// Eight i8 as i32 lanes.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn widen_i8(v: int8x8_t) -> Rows<int32x4_t> {
    let w = vmovl_s8(v);
    [vmovl_s16(vget_low_s16(w)), vmovl_high_s16(w)]
}

/// The low and high nibbles of each byte of `q`, as bytes.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn split_nibbles(q: uint8x16_t) -> (uint8x16_t, uint8x16_t) {
    (vandq_u8(q, vdupq_n_u8(0xF)), vshrq_n_u8::<4>(q))
}

/// Bytes of `v` shifted by `by` (left if positive, right if negative), each byte on its own.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn shift(v: uint8x16_t, by: i8) -> uint8x16_t {
    vshlq_u8(v, vdupq_n_s8(by))
}

/// `q - offset` as signed bytes (`q` below 128).
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn signed(q: uint8x16_t, offset: i8) -> int8x16_t {
    vsubq_s8(vreinterpretq_s8_u8(q), vdupq_n_s8(offset))
}

/// `acc + float(isum) · (d · d_a)` per lane, the scalar kernel's per-block step.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn fma_block(
    acc: Rows<float32x4_t>,
    isum: Rows<int32x4_t>,
    d: Rows<float32x4_t>,
    d_a: f32,
) -> Rows<float32x4_t> {
    std::array::from_fn(|k| vfmaq_f32(acc[k], vcvtq_f32_s32(isum[k]), vmulq_n_f32(d[k], d_a)))
}

const ZERO_I: Rows<int32x4_t> = unsafe { std::mem::transmute([0i32; 8]) };
const ZERO_F: Rows<float32x4_t> = unsafe { std::mem::transmute([0f32; 8]) };

/// One group of a 32-element type (`nb` group blocks at `g`) against `R` activation rows: lane `r'` of
/// result `r` is weight row `r'` · activation row `r`.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn small_group<const T: u8, const R: usize>(
    g: *const u8,
    nb: usize,
    acts: [&[Q8Block]; R],
) -> [Rows<float32x4_t>; R] {
    let gbb = match T {
        Q4_0 => group_block_bytes(QuantType::Q4_0),
        Q4_1 => group_block_bytes(QuantType::Q4_1),
        Q5_0 => group_block_bytes(QuantType::Q5_0),
        _ => group_block_bytes(QuantType::Q8_0),
    };
    let mut acc = [ZERO_F; R];
    let mut acc_min = [ZERO_F; R];
    for blk in 0..nb {
        let gb = g.add(blk * gbb);
        let a = block_of(&acts, blk);
        let mut isum = [ZERO_I; R];
        // Weight vectors of element groups 0..4 (`first`) and 4..8 (`second`): activations 0..16, 16..32.
        let mut first = [[vdupq_n_s8(0); 2]; 4];
        let mut second = [[vdupq_n_s8(0); 2]; 4];
        if T == Q8_0 {
            for i in 0..4 {
                let (v, u) = (load(gb.add(16 + 32 * i)), load(gb.add(16 + 32 * (4 + i))));
                first[i] = v.map(|h| vreinterpretq_s8_u8(h));
                second[i] = u.map(|h| vreinterpretq_s8_u8(h));
            }
        } else {
            let qs = gb.add(if T == Q4_1 { 32 } else { 16 });
            let qh = if T == Q5_0 {
                load(gb.add(144))
            } else {
                [vdupq_n_u8(0); 2]
            };
            let b4 = vdupq_n_u8(0x10);
            let offset = match T {
                Q4_0 => 8,
                Q5_0 => 16,
                _ => 0,
            };
            for i in 0..4 {
                let v = load(qs.add(32 * i));
                for k in 0..2 {
                    let (mut lo, mut hi) = split_nibbles(v[k]);
                    if T == Q5_0 {
                        // Byte bit g holds the fifth bit of element group g.
                        lo = vorrq_u8(lo, vandq_u8(shift(qh[k], 4 - i as i8), b4));
                        hi = vorrq_u8(hi, vandq_u8(shift(qh[k], -(i as i8)), b4));
                    }
                    first[i][k] = signed(lo, offset);
                    second[i][k] = signed(hi, offset);
                }
            }
        }
        for r in 0..R {
            let x = a[r].qs.as_ptr();
            let (x0, x1) = (vld1q_s8(x), vld1q_s8(x.add(16)));
            for (k, sum) in isum[r].iter_mut().enumerate() {
                let s = dot16(*sum, half_of(&first, k), x0);
                *sum = dot16(s, half_of(&second, k), x1);
            }
        }
        let d = f16x8(gb);
        let m = if T == Q4_1 { f16x8(gb.add(16)) } else { ZERO_F };
        for r in 0..R {
            acc[r] = fma_block(acc[r], isum[r], d, a[r].d);
            if T == Q4_1 {
                for (am, mk) in acc_min[r].iter_mut().zip(m) {
                    *am = vaddq_f32(*am, vmulq_n_f32(mk, a[r].s));
                }
            }
        }
    }
    std::array::from_fn(|r| std::array::from_fn(|k| vaddq_f32(acc[r][k], acc_min[r][k])))
}

/// Q4_K: one group against `R` activation rows. Per sub-block of 32 each row's exact dot meets the
/// row's scale in one multiply-add; the mins meet the activations' sub-block sums.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn q4k_group<const R: usize>(
    g: *const u8,
    nb: usize,
    acts: [&[Q8KBlock]; R],
) -> [Rows<float32x4_t>; R] {
    let gbb = group_block_bytes(QuantType::Q4K);
    let mut acc = [ZERO_F; R];
    let mut acc_min = [ZERO_F; R];
    for blk in 0..nb {
        let gb = g.add(blk * gbb);
        let a = block_of(&acts, blk);
        let mut isum = [ZERO_I; R];
        for j in 0..8 {
            let sc = widen_u8(vld1_u8(gb.add(32 + 8 * j)));
            let mut lo = [[vdupq_n_s8(0); 2]; 4];
            let mut hi = [[vdupq_n_s8(0); 2]; 4];
            for i in 0..4 {
                let v = load(gb.add(160 + 128 * j + 32 * i));
                for k in 0..2 {
                    let (l, h) = split_nibbles(v[k]);
                    (lo[i][k], hi[i][k]) = (vreinterpretq_s8_u8(l), vreinterpretq_s8_u8(h));
                }
            }
            for r in 0..R {
                let x = a[r].qs.as_ptr().add(32 * j);
                let (x0, x1) = (vld1q_s8(x), vld1q_s8(x.add(16)));
                for k in 0..2 {
                    let sub = dot16(vdupq_n_s32(0), half_of(&lo, k), x0);
                    let sub = dot16(sub, half_of(&hi, k), x1);
                    isum[r][k] = vmlaq_s32(isum[r][k], sub, sc[k]);
                }
            }
        }
        // Mins `[pair p][row][2]`: the even bytes are sub-block 2p's, the odd ones 2p + 1's.
        let mut mins = [ZERO_I; 8];
        for p in 0..4 {
            let v = vld1q_u8(gb.add(96 + 16 * p));
            mins[2 * p] = widen_u8(vget_low_u8(vuzp1q_u8(v, v)));
            mins[2 * p + 1] = widen_u8(vget_low_u8(vuzp2q_u8(v, v)));
        }
        let (d, dmin) = (f16x8(gb), f16x8(gb.add(16)));
        for r in 0..R {
            let bs = &a[r].bsums;
            let mut msum = ZERO_I;
            for (j, mj) in mins.iter().enumerate() {
                let s = bs[2 * j] as i32 + bs[2 * j + 1] as i32;
                for k in 0..2 {
                    msum[k] = vmlaq_n_s32(msum[k], mj[k], s);
                }
            }
            acc[r] = fma_block(acc[r], isum[r], d, a[r].d);
            acc_min[r] = fma_block(acc_min[r], msum, dmin, a[r].d);
        }
    }
    std::array::from_fn(|r| std::array::from_fn(|k| vsubq_f32(acc[r][k], acc_min[r][k])))
}

/// Q6_K: one group against `R` activation rows. Per sub-block of 16 (four element groups) each row's
/// exact dot of its signed 6-bit weights meets the row's scale in one multiply-add.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn q6k_group<const R: usize>(
    g: *const u8,
    nb: usize,
    acts: [&[Q8KBlock]; R],
) -> [Rows<float32x4_t>; R] {
    let gbb = group_block_bytes(QuantType::Q6K);
    let (m4, m2) = (vdupq_n_u8(0xF), vdupq_n_u8(0x30));
    let mut acc = [ZERO_F; R];
    for blk in 0..nb {
        let gb = g.add(blk * gbb);
        let a = block_of(&acts, blk);
        let mut isum = [ZERO_I; R];
        for c in 0..8 {
            // Sub-blocks 2c (even bytes) and 2c + 1 (odd bytes) of `[row][2]` i8 scales.
            let raw = vld1q_s8(gb.add(16 + 16 * c) as *const i8);
            let scales = [
                widen_i8(vget_low_s8(vuzp1q_s8(raw, raw))),
                widen_i8(vget_low_s8(vuzp2q_s8(raw, raw))),
            ];
            let ql: [Rows<uint8x16_t>; 4] =
                std::array::from_fn(|v| load(gb.add(144 + 128 * c + 32 * v)));
            for (h, sc) in scales.iter().enumerate() {
                let qh = load(gb.add(1168 + 64 * c + 32 * h));
                // Element group x = 4h + t of the chunk: low nibbles of vector x (or high of x - 4),
                // high bits from bits 2t..2t + 2 of this half's `qh`.
                let mut w = [[vdupq_n_s8(0); 2]; 4];
                for (t, wt) in w.iter_mut().enumerate() {
                    let x = 4 * h + t;
                    for k in 0..2 {
                        let low = if x < 4 {
                            vandq_u8(ql[x][k], m4)
                        } else {
                            vshrq_n_u8::<4>(ql[x - 4][k])
                        };
                        let high = vandq_u8(shift(qh[k], 4 - 2 * t as i8), m2);
                        wt[k] = signed(vorrq_u8(low, high), 32);
                    }
                }
                for r in 0..R {
                    let x = vld1q_s8(a[r].qs.as_ptr().add(32 * c + 16 * h));
                    for k in 0..2 {
                        let sub = dot16(vdupq_n_s32(0), half_of(&w, k), x);
                        isum[r][k] = vmlaq_s32(isum[r][k], sub, sc[k]);
                    }
                }
            }
        }
        let d = f16x8(gb);
        for r in 0..R {
            acc[r] = fma_block(acc[r], isum[r], d, a[r].d);
        }
    }
    acc
}

/// Writes result `r` (lane `l` = weight row `8 gi + l`) to row `r0 + r` of `out`, column `8 gi + l`, for
/// the weight rows inside the tile.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn store<const R: usize>(
    res: [Rows<float32x4_t>; R],
    r0: usize,
    gi: usize,
    out: &mut OutTile,
) {
    let width = GROUP.min(out.cols() - GROUP * gi);
    for (r, v) in res.iter().enumerate() {
        let mut lanes = [0f32; GROUP];
        vst1q_f32(lanes.as_mut_ptr(), v[0]);
        vst1q_f32(lanes.as_mut_ptr().add(4), v[1]);
        out.row(r0 + r)[GROUP * gi..GROUP * gi + width].copy_from_slice(&lanes[..width]);
    }
}

group_entry_points!(
    "neon,dotprod",
    "The CPU must support NEON and the dot-product instructions."
);
