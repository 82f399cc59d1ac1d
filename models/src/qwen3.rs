//! Qwen3: no attention bias, but an RMSNorm over each query and key head before RoPE.

use ember_kernels::RopeStyle;

use crate::config::{ArchSpec, Architecture};

pub const SPEC: ArchSpec = ArchSpec {
    architecture: Architecture::Qwen3,
    names: &["qwen3", "qwen3forcausallm"],
    attention_bias: false,
    qk_norm: true,
    gguf_rope_style: RopeStyle::Half,
    default_rope_theta: 1_000_000.0,
};
