//! Random weights of a real model's shape, made directly on the device: for timing the forward pass
//! (speed does not depend on the weights' values) where the real weights cannot be had, e.g. on a GPU
//! machine with no network. Never for accuracy.

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Tensor};
use ember_kernels::RopeStyle;

use crate::config::{Architecture, ModelConfig};
use crate::loader::Weights;
use crate::model::DecoderModel;
use crate::{Error, Result};

/// Qwen2.5-Coder-1.5B-Instruct's shape (REFERENCE §1): 28 layers, hidden 1536, ffn 8960, 12 heads / 2 KV
/// of dim 128, vocab 151936, tied embeddings, q/k/v biases.
pub fn qwen2_5_1_5b_config() -> ModelConfig {
    ModelConfig {
        architecture: Architecture::Qwen2,
        vocab_size: 151_936,
        hidden_size: 1536,
        intermediate_size: 8960,
        num_layers: 28,
        num_heads: 12,
        num_kv_heads: 2,
        head_dim: 128,
        rope_theta: 1_000_000.0,
        rope_style: RopeStyle::Half,
        rms_norm_eps: 1e-6,
        max_position_embeddings: 32_768,
        tie_word_embeddings: true,
        attention_bias: true,
        qk_norm: false,
    }
}

/// Normal weights (std 1/√fan-in), norms near 1, small biases; generated on `device` in `dtype`.
pub struct RandomWeights {
    config: ModelConfig,
    device: Device,
    dtype: DType,
}

impl RandomWeights {
    pub fn new(config: &ModelConfig, device: &Device, dtype: DType) -> Self {
        Self {
            config: config.clone(),
            device: device.clone(),
            dtype,
        }
    }

    /// The model with these weights.
    pub fn model(config: &ModelConfig, device: &Device, dtype: DType) -> Result<DecoderModel> {
        DecoderModel::new(config, &Self::new(config, device, dtype))
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let c = &self.config;
        let (h, f) = (c.hidden_size, c.intermediate_size);
        let (q, kv) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
        Some(match name {
            "model.embed_tokens.weight" => vec![c.vocab_size, h],
            "lm_head.weight" if !c.tie_word_embeddings => vec![c.vocab_size, h],
            "model.norm.weight" => vec![h],
            _ => {
                let rest = name.strip_prefix("model.layers.")?;
                let (layer, rest) = rest.split_once('.')?;
                if layer.parse::<usize>().ok()? >= c.num_layers {
                    return None;
                }
                match rest {
                    "input_layernorm.weight" | "post_attention_layernorm.weight" => vec![h],
                    "self_attn.q_proj.weight" => vec![q, h],
                    "self_attn.k_proj.weight" | "self_attn.v_proj.weight" => vec![kv, h],
                    "self_attn.q_proj.bias" if c.attention_bias => vec![q],
                    "self_attn.k_proj.bias" | "self_attn.v_proj.bias" if c.attention_bias => {
                        vec![kv]
                    }
                    "self_attn.o_proj.weight" => vec![h, q],
                    "self_attn.q_norm.weight" | "self_attn.k_norm.weight" if c.qk_norm => {
                        vec![c.head_dim]
                    }
                    "mlp.gate_proj.weight" | "mlp.up_proj.weight" => vec![f, h],
                    "mlp.down_proj.weight" => vec![h, f],
                    _ => return None,
                }
            }
        })
    }

    fn tensor(&self, name: &str) -> Result<Tensor> {
        let dims = self
            .shape(name)
            .ok_or_else(|| Error::Config(format!("no weight {name} in this model's shape")))?;
        let t = if name.ends_with("norm.weight") {
            (Tensor::randn(0f32, 0.1, dims.as_slice(), &self.device)? + 1.0)?
        } else if name.ends_with(".bias") {
            Tensor::randn(0f32, 0.02, dims.as_slice(), &self.device)?
        } else {
            let fan_in = *dims.last().unwrap_or(&1) as f32;
            Tensor::randn(0f32, 1.0 / fan_in.sqrt(), dims.as_slice(), &self.device)?
        };
        Ok(t.to_dtype(self.dtype)?)
    }
}

impl Weights for RandomWeights {
    fn matmul(&self, name: &str) -> Result<QMatMul> {
        Ok(QMatMul::Tensor(self.tensor(name)?))
    }

    fn vector(&self, name: &str) -> Result<Tensor> {
        self.tensor(name)
    }

    fn contains(&self, name: &str) -> bool {
        self.shape(name).is_some()
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn dtype(&self) -> DType {
        self.dtype
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{ForwardBatch, LogitsWanted, SeqChunk};

    /// A small shape on the CPU: the model builds from every name it asks for and runs a step.
    #[test]
    fn builds_and_runs_a_step() {
        let mut cfg = qwen2_5_1_5b_config();
        cfg.num_layers = 2;
        cfg.vocab_size = 300;
        cfg.hidden_size = 64;
        cfg.intermediate_size = 96;
        cfg.num_heads = 4;
        cfg.head_dim = 16;
        let model = RandomWeights::model(&cfg, &Device::Cpu, DType::F32).unwrap();
        let mut cache = model.new_kv_cache(2, 16).unwrap();
        let chunk = SeqChunk {
            tokens: &[1, 2, 3],
            num_computed: 0,
            block_table: &[0, 1],
            logits: LogitsWanted::Last,
        };
        let logits = model
            .forward(&ForwardBatch::build(&[chunk], 16).unwrap(), &mut cache)
            .unwrap();
        let row = logits.to_vec2::<f32>().unwrap().remove(0);
        assert_eq!(row.len(), 300);
        assert!(row.iter().all(|x| x.is_finite()));
    }
}
