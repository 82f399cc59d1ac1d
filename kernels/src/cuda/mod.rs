//! ember's own CUDA kernels (sources in `kernels/cuda/*.cu`, PTX built by `build.rs`), launched through
//! the cudarc stream of candle's CUDA device:
//! - [`CudaLayerKvCache::write`]: this step's K/V into the paged cache at the slot mapping, in bf16/f16 or
//!   fp8 e4m3 with per-tensor scales;
//! - [`paged_attention`]: causal attention of every token over its sequence's paged context — a
//!   FlashAttention-2 style tensor-core kernel for prefill chunks, split-K flash-decoding plus a reduce for
//!   single-token decodes;
//! - [`argmax_rows`]: greedy tokens picked on the device, so only token ids come back to the host;
//! - `fused`: a decoder layer's small ops (q|k|v split with RoPE, residual add with RMSNorm, SiLU·mul of
//!   the gate|up halves) in one launch each, behind `crate::split_qkv_rope` and its siblings;
//! - [`StepGraph`]: a step's launches captured as a CUDA graph and replayed with one call.
//!
//! The arguments mean what they mean for the CPU kernels (`cpu::cache_write`, `cpu::paged_attention`):
//! the same [`crate::KvCacheSpec`] layout (a block is `[num_kv_heads, block_size, head_dim]`) and the same
//! [`crate::AttentionMetadata`], uploaded once per step as [`GpuAttentionMetadata`].

mod attention;
mod cache;
pub(crate) mod fused;
mod graph;
mod logits;
mod memory;
mod metadata;
pub mod ptx;

pub use attention::{
    paged_attention, paged_attention_into, paged_attention_scheduled, KernelChoice,
    PrefillSchedule, PREFILL_SCHEDULE_ENV,
};
pub use cache::CudaLayerKvCache;
pub use graph::StepGraph;
pub use logits::{argmax_rows, copy_to_host};
pub use memory::{device_memory, kv_blocks_for_memory};
pub use metadata::GpuAttentionMetadata;

use crate::Error;
use candle_core::cuda_backend::cudarc::driver::DriverError;

/// Module names under which the PTX is cached in candle's device.
const MODULE_PREFILL: &str = "ember_flash_prefill";
const MODULE_DECODE: &str = "ember_paged_decode";
const MODULE_CACHE: &str = "ember_cache_write";
const MODULE_ARGMAX: &str = "ember_argmax";
const MODULE_FUSED: &str = "ember_fused";

fn cuda_err(e: impl std::fmt::Display) -> Error {
    Error::Candle(candle_core::Error::Msg(format!("cuda: {e}")))
}

fn launch_err(kernel: &str, e: DriverError) -> Error {
    Error::Candle(candle_core::Error::Msg(format!(
        "launching {kernel}: {e:?}"
    )))
}

/// Kernel-name fragment of a tensor element type.
fn dtype_name(dtype: candle_core::DType) -> crate::Result<&'static str> {
    match dtype {
        candle_core::DType::BF16 => Ok("bf16"),
        candle_core::DType::F16 => Ok("f16"),
        other => Err(Error::Unsupported(format!(
            "CUDA attention in {other:?} (bf16 and f16 only)"
        ))),
    }
}
