//! Qwen2 / Qwen2.5: a bias on the q/k/v projections.

use ember_kernels::RopeStyle;

use crate::config::{ArchSpec, Architecture};

pub const SPEC: ArchSpec = ArchSpec {
    architecture: Architecture::Qwen2,
    names: &["qwen2", "qwen2forcausallm"],
    attention_bias: true,
    qk_norm: false,
    gguf_rope_style: RopeStyle::Half,
    default_rope_theta: 1_000_000.0,
};
