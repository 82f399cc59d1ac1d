use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;
use ember_kernels::RopeStyle;
use serde::Deserialize;

use crate::{llama, qwen2, qwen3, Error, Result};

/// The decoder-only architectures ember runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    Qwen2,
    Qwen3,
}

/// What sets an architecture apart from the shared decoder.
#[derive(Debug, Clone, Copy)]
pub struct ArchSpec {
    pub architecture: Architecture,
    /// Names used in `config.json`'s `model_type` and GGUF's `general.architecture`.
    pub names: &'static [&'static str],
    /// Whether q/k/v projections carry a bias.
    pub attention_bias: bool,
    /// Per-head RMSNorm of queries and keys before RoPE.
    pub qk_norm: bool,
    /// RoPE pairing of GGUF weights (llama.cpp permutes llama's Q/K rows for interleaved RoPE).
    pub gguf_rope_style: RopeStyle,
    pub default_rope_theta: f64,
}

const ARCHS: [ArchSpec; 3] = [llama::SPEC, qwen2::SPEC, qwen3::SPEC];

impl Architecture {
    pub fn from_name(name: &str) -> Result<ArchSpec> {
        let lower = name.to_ascii_lowercase();
        ARCHS
            .iter()
            .find(|spec| spec.names.contains(&lower.as_str()))
            .copied()
            .ok_or_else(|| Error::UnsupportedArchitecture(name.to_string()))
    }
}

/// Everything the forward pass needs to know about a model's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f64,
    pub rope_style: RopeStyle,
    pub rms_norm_eps: f64,
    /// The longest context the model was trained for.
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    pub qk_norm: bool,
}

impl ModelConfig {
    fn validate(self) -> Result<Self> {
        let nonzero = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
        ];
        if let Some((name, _)) = nonzero.iter().find(|(_, v)| *v == 0) {
            return Err(Error::Config(format!("{name} must be positive")));
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(Error::Config(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_heads, self.num_kv_heads
            )));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(Error::Config(format!(
                "head_dim {} must be even for RoPE",
                self.head_dim
            )));
        }
        Ok(self)
    }

    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_json(json: &str) -> Result<Self> {
        let raw: HfConfig =
            serde_json::from_str(json).map_err(|e| Error::Config(format!("config.json: {e}")))?;
        let name = raw
            .model_type
            .clone()
            .or_else(|| raw.architectures.as_ref().and_then(|a| a.first().cloned()))
            .ok_or_else(|| {
                Error::Config("config.json has neither model_type nor architectures".into())
            })?;
        let spec = Architecture::from_name(&name)?;
        if let Some(scaling) = raw.rope_scaling.as_ref().filter(|v| !v.is_null()) {
            return Err(Error::Config(format!(
                "rope_scaling {scaling} is not supported yet; remove it from config.json to run within the \
                 original context length"
            )));
        }
        let num_heads = raw.num_attention_heads;
        ModelConfig {
            architecture: spec.architecture,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_layers: raw.num_hidden_layers,
            num_heads,
            num_kv_heads: raw.num_key_value_heads.unwrap_or(num_heads),
            head_dim: raw.head_dim.unwrap_or(raw.hidden_size / num_heads.max(1)),
            rope_theta: raw.rope_theta.unwrap_or(spec.default_rope_theta),
            rope_style: RopeStyle::Half,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(2048),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            attention_bias: raw.attention_bias.unwrap_or(spec.attention_bias),
            qk_norm: spec.qk_norm,
        }
        .validate()
    }

    /// Reads the `{arch}.*` keys of a GGUF file's metadata.
    pub fn from_gguf(metadata: &HashMap<String, Value>, has_output_weight: bool) -> Result<Self> {
        let arch_name = gguf_string(metadata, "general.architecture")?;
        let spec = Architecture::from_name(&arch_name)?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let usize_of = |k: &str| -> Result<usize> { gguf_usize(metadata, &key(k)) };
        let num_heads = usize_of("attention.head_count")?;
        let hidden_size = usize_of("embedding_length")?;
        let vocab_size = match metadata.get(&key("vocab_size")) {
            Some(v) => value_usize(v, &key("vocab_size"))?,
            None => match metadata.get("tokenizer.ggml.tokens") {
                Some(Value::Array(tokens)) => tokens.len(),
                _ => {
                    return Err(Error::Config(
                        "GGUF has neither a vocab_size nor tokenizer.ggml.tokens".into(),
                    ))
                }
            },
        };
        ModelConfig {
            architecture: spec.architecture,
            vocab_size,
            hidden_size,
            intermediate_size: usize_of("feed_forward_length")?,
            num_layers: usize_of("block_count")?,
            num_heads,
            num_kv_heads: usize_of("attention.head_count_kv").unwrap_or(num_heads),
            head_dim: usize_of("attention.key_length").unwrap_or(hidden_size / num_heads.max(1)),
            rope_theta: match metadata.get(&key("rope.freq_base")) {
                Some(v) => v.to_f32()? as f64,
                None => spec.default_rope_theta,
            },
            rope_style: spec.gguf_rope_style,
            rms_norm_eps: metadata
                .get(&key("attention.layer_norm_rms_epsilon"))
                .map(|v| v.to_f32())
                .transpose()?
                .map(f64::from)
                .unwrap_or(1e-6),
            max_position_embeddings: usize_of("context_length").unwrap_or(2048),
            tie_word_embeddings: !has_output_weight,
            attention_bias: spec.attention_bias,
            qk_norm: spec.qk_norm,
        }
        .validate()
    }
}

#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rope_theta: Option<f64>,
    rms_norm_eps: Option<f64>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    rope_scaling: Option<serde_json::Value>,
}

fn gguf_string(metadata: &HashMap<String, Value>, key: &str) -> Result<String> {
    match metadata.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(Error::Config(format!("GGUF key {key} is not a string"))),
        None => Err(Error::Config(format!("GGUF metadata lacks {key}"))),
    }
}

fn gguf_usize(metadata: &HashMap<String, Value>, key: &str) -> Result<usize> {
    match metadata.get(key) {
        Some(v) => value_usize(v, key),
        None => Err(Error::Config(format!("GGUF metadata lacks {key}"))),
    }
}

fn value_usize(v: &Value, key: &str) -> Result<usize> {
    let n = match v {
        Value::U8(x) => *x as u64,
        Value::U16(x) => *x as u64,
        Value::U32(x) => *x as u64,
        Value::U64(x) => *x,
        Value::I8(x) if *x >= 0 => *x as u64,
        Value::I16(x) if *x >= 0 => *x as u64,
        Value::I32(x) if *x >= 0 => *x as u64,
        Value::I64(x) if *x >= 0 => *x as u64,
        _ => {
            return Err(Error::Config(format!(
                "GGUF key {key} is not a non-negative integer"
            )))
        }
    };
    Ok(n as usize)
}
