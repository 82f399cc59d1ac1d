//! The decoder shared by Llama, Qwen2 and Qwen3: embedding, N × (attention + MLP), final norm, LM head.
//! One forward runs a flattened batch of many sequences against the paged KV cache.

use candle_core::{DType, Device, Tensor};
use ember_kernels::{
    KvCacheDtype, KvCacheSpec, LayerKvCache, PagedKvCache, RopeTable, StepMetadata,
};

use crate::batch::ForwardBatch;
use crate::config::ModelConfig;
use crate::layers::{Embedding, Linear, Mlp, RmsNorm};
use crate::loader::Weights;
use crate::step_rope::StepRope;
use crate::{Error, Result};

/// What every layer of one step shares: the host batch, the attention metadata prepared for the cache's
/// device, and on accelerators the step's RoPE tables.
struct Step<'a> {
    batch: &'a ForwardBatch,
    attention: StepMetadata<'a>,
    rope: Option<StepRope>,
}

struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    scale: f32,
}

impl Attention {
    fn new(cfg: &ModelConfig, weights: &dyn Weights, prefix: &str) -> Result<Self> {
        let bias = cfg.attention_bias;
        let norm = |name: &str| -> Result<Option<RmsNorm>> {
            if cfg.qk_norm {
                Ok(Some(RmsNorm::new(
                    weights,
                    &format!("{prefix}.{name}"),
                    cfg.rms_norm_eps,
                )?))
            } else {
                Ok(None)
            }
        };
        Ok(Self {
            q_proj: Linear::new(weights, &format!("{prefix}.q_proj"), bias)?,
            k_proj: Linear::new(weights, &format!("{prefix}.k_proj"), bias)?,
            v_proj: Linear::new(weights, &format!("{prefix}.v_proj"), bias)?,
            o_proj: Linear::new(weights, &format!("{prefix}.o_proj"), false)?,
            q_norm: norm("q_norm")?,
            k_norm: norm("k_norm")?,
            num_heads: cfg.num_heads,
            num_kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
            scale: 1.0 / (cfg.head_dim as f32).sqrt(),
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        step: &Step<'_>,
        rope: &RopeTable,
        cache: &mut LayerKvCache,
    ) -> Result<Tensor> {
        let batch = step.batch;
        let tokens = batch.num_tokens();
        let q = self
            .q_proj
            .forward(x)?
            .reshape((tokens, self.num_heads, self.head_dim))?;
        let k = self
            .k_proj
            .forward(x)?
            .reshape((tokens, self.num_kv_heads, self.head_dim))?;
        let v = self
            .v_proj
            .forward(x)?
            .reshape((tokens, self.num_kv_heads, self.head_dim))?;
        let (q, k) = match (&self.q_norm, &self.k_norm) {
            (Some(qn), Some(kn)) => (qn.forward(&q)?, kn.forward(&k)?),
            _ => (q, k),
        };
        let (q, k) = match &step.rope {
            None => (
                ember_kernels::apply_rope(&q, &batch.positions, rope)?,
                ember_kernels::apply_rope(&k, &batch.positions, rope)?,
            ),
            Some(r) => (r.apply(&q)?, r.apply(&k)?),
        };
        let attn = ember_kernels::attend(&q, &k, &v, cache, &step.attention, self.scale)?;
        self.o_proj.forward(&attn)
    }
}

struct DecoderLayer {
    input_norm: RmsNorm,
    attention: Attention,
    post_attention_norm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    fn new(cfg: &ModelConfig, weights: &dyn Weights, index: usize) -> Result<Self> {
        let prefix = format!("model.layers.{index}");
        Ok(Self {
            input_norm: RmsNorm::new(
                weights,
                &format!("{prefix}.input_layernorm"),
                cfg.rms_norm_eps,
            )?,
            attention: Attention::new(cfg, weights, &format!("{prefix}.self_attn"))?,
            post_attention_norm: RmsNorm::new(
                weights,
                &format!("{prefix}.post_attention_layernorm"),
                cfg.rms_norm_eps,
            )?,
            mlp: Mlp::new(weights, &format!("{prefix}.mlp"))?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        step: &Step<'_>,
        rope: &RopeTable,
        cache: &mut LayerKvCache,
    ) -> Result<Tensor> {
        let h = self
            .attention
            .forward(&self.input_norm.forward(x)?, step, rope, cache)?;
        let x = (x + h)?;
        let h = self.mlp.forward(&self.post_attention_norm.forward(&x)?)?;
        Ok((x + h)?)
    }
}

/// A decoder-only transformer whose attention reads and writes a paged KV cache.
pub struct DecoderModel {
    config: ModelConfig,
    embed_tokens: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: RopeTable,
    device: Device,
    /// Activations' type: f32 on the CPU, bf16/f16 on CUDA.
    dtype: DType,
    kv_cache_dtype: KvCacheDtype,
}

impl DecoderModel {
    pub fn new(config: &ModelConfig, weights: &dyn Weights) -> Result<Self> {
        let embed_tokens = Embedding::new(weights.matmul("model.embed_tokens.weight")?)?;
        let lm_head = if config.tie_word_embeddings || !weights.contains("lm_head.weight") {
            embed_tokens.as_linear()
        } else {
            Linear::new(weights, "lm_head", false)?
        };
        let layers = (0..config.num_layers)
            .map(|i| DecoderLayer::new(config, weights, i))
            .collect::<Result<_>>()?;
        Ok(Self {
            config: config.clone(),
            embed_tokens,
            layers,
            norm: RmsNorm::new(weights, "model.norm", config.rms_norm_eps)?,
            lm_head,
            rope: RopeTable::new(config.head_dim, config.rope_theta, config.rope_style),
            device: weights.device().clone(),
            dtype: weights.dtype(),
            kv_cache_dtype: KvCacheDtype::Auto,
        })
    }

    /// Sets what [`DecoderModel::new_kv_cache`] stores (`--kv-cache-dtype`).
    pub fn with_kv_cache_dtype(mut self, kv_cache_dtype: KvCacheDtype) -> Self {
        self.kv_cache_dtype = kv_cache_dtype;
        self
    }

    /// The type activations are computed in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn kv_cache_dtype(&self) -> KvCacheDtype {
        self.kv_cache_dtype
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The cache geometry this model needs for `num_blocks` blocks of `block_size` tokens.
    pub fn kv_cache_spec(&self, num_blocks: usize, block_size: usize) -> KvCacheSpec {
        KvCacheSpec {
            num_blocks,
            block_size,
            num_kv_heads: self.config.num_kv_heads,
            head_dim: self.config.head_dim,
        }
    }

    /// Bytes of KV cache one block takes across all layers.
    pub fn kv_block_bytes(&self, block_size: usize) -> usize {
        KvCacheSpec::block_bytes_of(
            block_size,
            self.config.num_kv_heads,
            self.config.head_dim,
            self.config.num_layers,
            self.kv_cache_dtype.elem_bytes(self.dtype),
        )
    }

    /// A KV cache for this model with `num_blocks` blocks, on its device in its KV-cache dtype.
    pub fn new_kv_cache(&self, num_blocks: usize, block_size: usize) -> Result<PagedKvCache> {
        Ok(PagedKvCache::with_dtype(
            self.kv_cache_spec(num_blocks, block_size),
            self.config.num_layers,
            &self.device,
            self.dtype,
            self.kv_cache_dtype,
        )?)
    }

    /// Runs one step: writes every token's K/V into `cache` and returns f32 logits `[rows, vocab]` for
    /// `batch.logits_indices`, in that order.
    pub fn forward(&self, batch: &ForwardBatch, cache: &mut PagedKvCache) -> Result<Tensor> {
        let tokens = batch.num_tokens();
        if tokens == 0 || batch.positions.len() != tokens {
            return Err(Error::Batch(format!(
                "{tokens} tokens with {} positions",
                batch.positions.len()
            )));
        }
        if cache.layers.len() != self.layers.len() {
            return Err(Error::Batch(format!(
                "a KV cache of {} layers for a model of {}",
                cache.layers.len(),
                self.layers.len()
            )));
        }
        if let Some(&bad) = batch
            .token_ids
            .iter()
            .find(|&&t| t as usize >= self.config.vocab_size)
        {
            return Err(Error::Batch(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.config.vocab_size
            )));
        }
        if let Some(&bad) = batch.logits_indices.iter().find(|&&i| i >= tokens) {
            return Err(Error::Batch(format!(
                "logits index {bad} outside a batch of {tokens}"
            )));
        }
        if self.device.is_cpu() {
            on_pool_worker(|| self.forward_checked(batch, cache))
        } else {
            // An accelerator's work is issued from the caller's thread: no pool hop per step.
            self.forward_checked(batch, cache)
        }
    }

    /// [`DecoderModel::forward`] once its inputs are checked.
    fn forward_checked(&self, batch: &ForwardBatch, cache: &mut PagedKvCache) -> Result<Tensor> {
        let tokens = batch.num_tokens();
        let ids = Tensor::new(batch.token_ids.as_slice(), &self.device)?;
        let mut x = self.embed_tokens.forward(&ids)?.to_dtype(self.dtype)?;
        let step = Step {
            batch,
            attention: cache.prepare_step(&batch.attention, tokens)?,
            rope: if self.device.is_cpu() {
                None
            } else {
                Some(StepRope::new(&self.rope, &batch.positions, &self.device)?)
            },
        };
        for (layer, layer_cache) in self.layers.iter().zip(cache.layers.iter_mut()) {
            x = layer.forward(&x, &step, &self.rope, layer_cache)?;
        }
        let rows: Vec<u32> = batch.logits_indices.iter().map(|&i| i as u32).collect();
        if rows.is_empty() {
            return Ok(Tensor::zeros(
                (0, self.config.vocab_size),
                DType::F32,
                &self.device,
            )?);
        }
        let rows = Tensor::new(rows.as_slice(), &self.device)?;
        let x = self.norm.forward(&x.index_select(&rows, 0)?)?;
        Ok(self.lm_head.forward(&x)?.to_dtype(DType::F32)?)
    }
}

/// Runs `f` on a worker thread of rayon's global pool (directly if this already is one). The CPU kernels
/// split every matmul, attention and norm across the pool; forked from a worker, each split is plain
/// work stealing, where from any other thread each one was handed to the pool while the caller slept
/// until it finished (two context switches per op, hundreds of ops per step: a third of a batch-1 decode
/// step of the 135M model went to that).
fn on_pool_worker<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::scope(|_| f())
    }
}
