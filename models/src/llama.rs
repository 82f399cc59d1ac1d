//! Llama (and Llama-shaped models such as SmolLM2): no attention bias, no q/k norm.

use ember_kernels::RopeStyle;

use crate::config::{ArchSpec, Architecture};

pub const SPEC: ArchSpec = ArchSpec {
    architecture: Architecture::Llama,
    names: &["llama", "llamaforcausallm", "mistral", "mistralforcausallm"],
    attention_bias: false,
    qk_norm: false,
    // llama.cpp's converter permutes llama's Q/K rows so GGML's interleaved RoPE reproduces HF's.
    gguf_rope_style: RopeStyle::Interleaved,
    default_rope_theta: 10_000.0,
};
