//! CPU implementations over plain f32 slices.

pub mod cache_write;
pub mod paged_attention;
pub mod rope;
