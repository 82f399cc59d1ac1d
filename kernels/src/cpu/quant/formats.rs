//! GGUF block layouts (as llama.cpp writes them, little-endian) and a plain dequantizer per type. The
//! dequantizer is the reference the kernels are tested against and serves embedding lookups.

use half::f16;

/// Elements per super-block of the K-quants.
pub const QK_K: usize = 256;

/// The GGUF block types with native kernels here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantType {
    Q4_0,
    Q4_1,
    Q5_0,
    Q8_0,
    Q4K,
    Q6K,
}

impl QuantType {
    pub const ALL: [QuantType; 6] = [
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q8_0,
        QuantType::Q4K,
        QuantType::Q6K,
    ];

    /// Elements per block.
    pub fn block_elems(self) -> usize {
        match self {
            QuantType::Q4K | QuantType::Q6K => QK_K,
            _ => 32,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            QuantType::Q4_0 => 18,
            QuantType::Q4_1 => 20,
            QuantType::Q5_0 => 22,
            QuantType::Q8_0 => 34,
            QuantType::Q4K => 144,
            QuantType::Q6K => 210,
        }
    }
}

#[inline]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// The 6-bit scale and min of sub-block `j` (0..8) of a Q4_K block's 12 packed scale bytes.
#[inline]
pub(crate) fn q4k_scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// The 6-bit unsigned quant (0..64) of element `e` (0..256) of a Q6_K block; its value is `q - 32`.
#[inline]
pub(crate) fn q6k_quant(b: &[u8], e: usize) -> u8 {
    let (half, l) = (e / 128, e % 128);
    let ql = &b[64 * half..];
    let qh = &b[128 + 32 * half..];
    let (quarter, l) = (l / 32, l % 32);
    let low = match quarter {
        0 => ql[l] & 0xF,
        1 => ql[l + 32] & 0xF,
        2 => ql[l] >> 4,
        _ => ql[l + 32] >> 4,
    };
    low | (((qh[l] >> (2 * quarter)) & 3) << 4)
}

/// The integer quant of element `e` of a 32-element block, before scale (and, for Q4_1, min).
#[inline]
pub(crate) fn small_block_quant(ty: QuantType, b: &[u8], e: usize) -> i32 {
    match ty {
        QuantType::Q4_0 | QuantType::Q4_1 => {
            let qs = &b[if ty == QuantType::Q4_0 { 2 } else { 4 }..];
            let nib = if e < 16 { qs[e] & 0xF } else { qs[e - 16] >> 4 };
            nib as i32 - if ty == QuantType::Q4_0 { 8 } else { 0 }
        }
        QuantType::Q5_0 => {
            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            let qs = &b[6..];
            let nib = if e < 16 { qs[e] & 0xF } else { qs[e - 16] >> 4 };
            (nib as i32 | (((qh >> e) & 1) as i32) << 4) - 16
        }
        QuantType::Q8_0 => b[2 + e] as i8 as i32,
        QuantType::Q4K | QuantType::Q6K => unreachable!("not a 32-element block type"),
    }
}

/// Dequantizes one block into `out` (`block_elems` values).
pub fn dequantize_block(ty: QuantType, b: &[u8], out: &mut [f32]) {
    match ty {
        QuantType::Q4_0 | QuantType::Q5_0 | QuantType::Q8_0 => {
            let d = f16_at(b, 0);
            for (e, o) in out[..32].iter_mut().enumerate() {
                *o = d * small_block_quant(ty, b, e) as f32;
            }
        }
        QuantType::Q4_1 => {
            let (d, m) = (f16_at(b, 0), f16_at(b, 2));
            for (e, o) in out[..32].iter_mut().enumerate() {
                *o = d * small_block_quant(ty, b, e) as f32 + m;
            }
        }
        QuantType::Q4K => {
            let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
            let (scales, qs) = (&b[4..16], &b[16..144]);
            for (e, o) in out[..QK_K].iter_mut().enumerate() {
                let j = e / 32;
                let (sc, m) = q4k_scale_min(j, scales);
                let byte = qs[(j / 2) * 32 + e % 32];
                let q = if j % 2 == 0 { byte & 0xF } else { byte >> 4 };
                *o = d * sc as f32 * q as f32 - dmin * m as f32;
            }
        }
        QuantType::Q6K => {
            let d = f16_at(b, 208);
            for (e, o) in out[..QK_K].iter_mut().enumerate() {
                let sc = b[192 + e / 16] as i8;
                *o = d * sc as f32 * (q6k_quant(b, e) as i32 - 32) as f32;
            }
        }
    }
}
