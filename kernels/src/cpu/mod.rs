//! CPU implementations over plain f32 slices.

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub mod amx;
pub mod cache_write;
pub mod isa;
pub mod matmul;
pub mod paged_attention;
pub mod quant;
pub mod rope;
pub mod rowwise;
pub mod tiling;
pub mod vexp;

/// Dot product with eight independent accumulators (lets the compiler vectorise) in a fixed order, so
/// the result never depends on how callers batch their work.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut tail = 0f32;
    for i in chunks * 8..a.len() {
        tail += a[i] * b[i];
    }
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + tail
}
