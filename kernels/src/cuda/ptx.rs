//! The PTX that `build.rs` compiled from `kernels/cuda/*.cu` with nvcc, embedded in the crate and loaded
//! into the device's context on first use (one module per file).

pub const FLASH_PREFILL: &str = include_str!(concat!(env!("OUT_DIR"), "/flash_prefill.ptx"));
pub const PAGED_DECODE: &str = include_str!(concat!(env!("OUT_DIR"), "/paged_decode.ptx"));
pub const CACHE_WRITE: &str = include_str!(concat!(env!("OUT_DIR"), "/cache_write.ptx"));
pub const ARGMAX: &str = include_str!(concat!(env!("OUT_DIR"), "/argmax.ptx"));
pub const FUSED: &str = include_str!(concat!(env!("OUT_DIR"), "/fused.ptx"));

/// Keys per decode partition (`PARTITION` in paged_decode.cu).
pub const DECODE_PARTITION: usize = 256;
/// Largest GQA group the decode kernel handles (`MAXG` in paged_decode.cu); larger groups use the prefill
/// kernel, which handles any group.
pub const DECODE_MAX_GROUP: usize = 8;
/// Query rows per prefill block (`BM` in flash_prefill.cu).
pub const PREFILL_ROWS: usize = 64;
