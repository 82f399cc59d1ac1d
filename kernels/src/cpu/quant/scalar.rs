//! Portable kernels: exact integer dot per block, then one f32 multiply-add per block in block order.

use super::activation::{Q8Block, Q8KBlock};
use super::formats::{f16_at, q4k_scale_min, q6k_quant, small_block_quant, QuantType, QK_K};

/// Dot of one weight row of 32-element blocks with one quantized activation row: per block
/// `acc = fma(float(exact dot), d_w * d_a, acc)` and, for Q4_1, `mins += m_w * s_a`, as the AVX2 kernels do
/// (so both families give the same bits).
pub fn dot_small(ty: QuantType, w: &[u8], acts: &[Q8Block]) -> f32 {
    let bytes = ty.block_bytes();
    let (mut acc, mut acc_min) = (0f32, 0f32);
    for (b, a) in w.chunks_exact(bytes).zip(acts) {
        let isum: i32 = (0..32)
            .map(|e| small_block_quant(ty, b, e) * a.qs[e] as i32)
            .sum();
        acc = (isum as f32).mul_add(f16_at(b, 0) * a.d, acc);
        if ty == QuantType::Q4_1 {
            acc_min += f16_at(b, 2) * a.s;
        }
    }
    acc + acc_min
}

/// Dot of one weight row of K-quant super-blocks with one quantized activation row: per super-block
/// `acc = fma(float(exact dot), d_w * d_a, acc)` and, for Q4_K, `acc_min = fma(float(exact min sum),
/// dmin_w * d_a, acc_min)`, as the AVX2 kernels do (so both families give the same bits).
pub fn dot_k(ty: QuantType, w: &[u8], acts: &[Q8KBlock]) -> f32 {
    let bytes = ty.block_bytes();
    let (mut acc, mut acc_min) = (0f32, 0f32);
    for (b, a) in w.chunks_exact(bytes).zip(acts) {
        match ty {
            QuantType::Q4K => {
                let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
                let (scales, qs) = (&b[4..16], &b[16..144]);
                let (mut isum, mut msum) = (0i32, 0i32);
                for j in 0..8 {
                    let (sc, m) = q4k_scale_min(j, scales);
                    let chunk = &qs[(j / 2) * 32..][..32];
                    let sub: i32 = (0..32)
                        .map(|i| {
                            let q = if j % 2 == 0 {
                                chunk[i] & 0xF
                            } else {
                                chunk[i] >> 4
                            };
                            q as i32 * a.qs[j * 32 + i] as i32
                        })
                        .sum();
                    isum += sc as i32 * sub;
                    msum += m as i32 * (a.bsums[2 * j] as i32 + a.bsums[2 * j + 1] as i32);
                }
                acc = (isum as f32).mul_add(d * a.d, acc);
                acc_min = (msum as f32).mul_add(dmin * a.d, acc_min);
            }
            QuantType::Q6K => {
                let d = f16_at(b, 208);
                let mut isum = 0i32;
                for s in 0..QK_K / 16 {
                    let sc = b[192 + s] as i8 as i32;
                    let sub: i32 = (s * 16..s * 16 + 16)
                        .map(|e| (q6k_quant(b, e) as i32 - 32) * a.qs[e] as i32)
                        .sum();
                    isum += sc * sub;
                }
                acc = (isum as f32).mul_add(d * a.d, acc);
            }
            _ => unreachable!("not a K-quant"),
        }
    }
    acc - acc_min
}
