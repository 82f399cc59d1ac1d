//! Activations quantized once per matmul call to 8-bit blocks: 32-element blocks for the 32-element weight
//! types, 256-element super-blocks with per-16 sums for the K-quants. Rows are quantized independently,
//! so a row's blocks never depend on the other rows of the call.

use super::formats::QK_K;
use crate::cpu::isa::Isa;

/// 32 activations as `d * qs[i]`, with `sum = Σ qs` (for the offsets of Q4_0 / Q5_0 weights) and
/// `s = d * sum` (for weight types that carry a min).
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct Q8Block {
    pub d: f32,
    pub s: f32,
    pub sum: i32,
    pub qs: [i8; 32],
}

/// 256 activations as `d * qs[i]`, with the integer sums of each 16 (for mins and offsets).
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct Q8KBlock {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}

/// Scale and inverse scale for a block whose largest magnitude is `amax` (values land in -127..=127).
#[inline]
pub(super) fn scales(amax: f32) -> (f32, f32) {
    let d = amax / 127.0;
    (d, if d > 0.0 { 1.0 / d } else { 0.0 })
}

#[inline]
fn quantize_into(x: &[f32], id: f32, qs: &mut [i8]) {
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = (v * id).round().clamp(-127.0, 127.0) as i8;
    }
}

pub trait ActBlock: Copy + Send + Sync {
    const ELEMS: usize;
    const ZERO: Self;
    /// The portable quantizer: the definition every kernel family must match bit for bit.
    fn quantize(x: &[f32]) -> Self;
    /// [`ActBlock::quantize`] with the kernel family `isa` (which the caller checked this CPU has).
    fn quantize_with(isa: Isa, x: &[f32]) -> Self;
}

impl ActBlock for Q8Block {
    const ELEMS: usize = 32;
    const ZERO: Self = Q8Block {
        d: 0.0,
        s: 0.0,
        sum: 0,
        qs: [0; 32],
    };

    fn quantize(x: &[f32]) -> Self {
        let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        let (d, id) = scales(amax);
        let mut b = Self::ZERO;
        quantize_into(x, id, &mut b.qs);
        b.d = d;
        b.sum = b.qs.iter().map(|&q| q as i32).sum();
        b.s = d * b.sum as f32;
        b
    }

    fn quantize_with(isa: Isa, x: &[f32]) -> Self {
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller checked that this CPU has the family.
            Isa::Avx2 | Isa::Avx512Vnni | Isa::Amx => unsafe { super::quantize_avx2::q8(x) },
            _ => Self::quantize(x),
        }
    }
}

impl ActBlock for Q8KBlock {
    const ELEMS: usize = QK_K;
    const ZERO: Self = Q8KBlock {
        d: 0.0,
        qs: [0; QK_K],
        bsums: [0; QK_K / 16],
    };

    fn quantize(x: &[f32]) -> Self {
        let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        let (d, id) = scales(amax);
        let mut b = Self::ZERO;
        quantize_into(x, id, &mut b.qs);
        b.d = d;
        for (s, chunk) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
            *s = chunk.iter().map(|&q| q as i16).sum();
        }
        b
    }

    fn quantize_with(isa: Isa, x: &[f32]) -> Self {
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller checked that this CPU has the family.
            Isa::Avx2 | Isa::Avx512Vnni | Isa::Amx => unsafe { super::quantize_avx2::q8k(x) },
            _ => Self::quantize(x),
        }
    }
}

/// Quantizes `m` rows of `k` values (`k` a multiple of the block) into `m * k / ELEMS` blocks with the
/// kernel family `isa`.
///
/// # Panics
/// If this CPU lacks `isa`.
pub fn quantize_rows<A: ActBlock>(isa: Isa, x: &[f32], m: usize, k: usize) -> Vec<A> {
    assert!(isa.is_available(), "{isa:?} quantizer on this CPU");
    debug_assert_eq!(x.len(), m * k);
    let per_row = k / A::ELEMS;
    let mut out = vec![A::ZERO; m * per_row];
    let fill = |(row, dst): (usize, &mut [A])| {
        for (b, chunk) in dst
            .iter_mut()
            .zip(x[row * k..(row + 1) * k].chunks_exact(A::ELEMS))
        {
            *b = A::quantize_with(isa, chunk);
        }
    };
    if m >= 8 {
        use rayon::prelude::*;
        out.par_chunks_mut(per_row.max(1))
            .enumerate()
            .for_each(fill);
    } else {
        out.chunks_mut(per_row.max(1)).enumerate().for_each(fill);
    }
    out
}
