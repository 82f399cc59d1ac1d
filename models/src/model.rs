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

/// What every layer of one step shares: the token count, the positions (the CPU's RoPE reads them), the
/// attention metadata prepared for the cache's device, and on accelerators the step's RoPE tables.
pub(crate) struct Step<'a> {
    pub(crate) tokens: usize,
    pub(crate) positions: &'a [usize],
    pub(crate) attention: StepMetadata<'a>,
    pub(crate) rope: Option<&'a StepRope>,
}

/// The q, k and v projections: one fused matmul where the weights allow it.
enum QkvProjection {
    Fused(Linear),
    Separate { q: Linear, k: Linear, v: Linear },
}

struct Attention {
    qkv: QkvProjection,
    o_proj: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    scale: f32,
}

impl Attention {
    fn new(cfg: &ModelConfig, weights: &dyn Weights, prefix: &str, fuse: bool) -> Result<Self> {
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
        let q = Linear::new(weights, &format!("{prefix}.q_proj"), bias)?;
        let k = Linear::new(weights, &format!("{prefix}.k_proj"), bias)?;
        let v = Linear::new(weights, &format!("{prefix}.v_proj"), bias)?;
        let fused = if fuse {
            Linear::fuse(&[q.clone(), k.clone(), v.clone()])?
        } else {
            None
        };
        Ok(Self {
            qkv: match fused {
                Some(qkv) => QkvProjection::Fused(qkv),
                None => QkvProjection::Separate { q, k, v },
            },
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
        let tokens = step.tokens;
        let heads = |t: Tensor, n: usize| t.reshape((tokens, n, self.head_dim));
        let (q, k, v) = match &self.qkv {
            QkvProjection::Fused(qkv) => {
                let qkv = qkv.forward(x)?;
                match (step.rope, &self.q_norm) {
                    // On an accelerator without q/k norms: split and rotate in one kernel.
                    (Some(rope), None) => {
                        let (cos, sin, style) = rope.rows()?;
                        let (q, k, v) = ember_kernels::split_qkv_rope(
                            &qkv,
                            &cos,
                            &sin,
                            self.num_heads,
                            self.num_kv_heads,
                            style,
                        )?;
                        let attn =
                            ember_kernels::attend(&q, &k, &v, cache, &step.attention, self.scale)?;
                        return self.o_proj.forward(&attn);
                    }
                    _ => ember_kernels::split_qkv(
                        &qkv,
                        self.num_heads,
                        self.num_kv_heads,
                        self.head_dim,
                    )?,
                }
            }
            QkvProjection::Separate { q, k, v } => (
                heads(q.forward(x)?, self.num_heads)?,
                heads(k.forward(x)?, self.num_kv_heads)?,
                heads(v.forward(x)?, self.num_kv_heads)?,
            ),
        };
        let (q, k) = match (&self.q_norm, &self.k_norm) {
            (Some(qn), Some(kn)) => (qn.forward(&q)?, kn.forward(&k)?),
            _ => (q, k),
        };
        let (q, k) = match step.rope {
            None => (
                ember_kernels::apply_rope(&q, step.positions, rope)?,
                ember_kernels::apply_rope(&k, step.positions, rope)?,
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
    fn new(cfg: &ModelConfig, weights: &dyn Weights, index: usize, fuse: bool) -> Result<Self> {
        let prefix = format!("model.layers.{index}");
        Ok(Self {
            input_norm: RmsNorm::new(
                weights,
                &format!("{prefix}.input_layernorm"),
                cfg.rms_norm_eps,
            )?,
            attention: Attention::new(cfg, weights, &format!("{prefix}.self_attn"), fuse)?,
            post_attention_norm: RmsNorm::new(
                weights,
                &format!("{prefix}.post_attention_layernorm"),
                cfg.rms_norm_eps,
            )?,
            mlp: Mlp::new(weights, &format!("{prefix}.mlp"), fuse)?,
        })
    }

    /// Takes the residual stream and the previous layer's MLP output not yet added to it (none for the
    /// first layer); returns the residual stream after attention and this layer's MLP output. Each
    /// residual add is fused into the norm that reads it.
    fn forward(
        &self,
        residual: &Tensor,
        pending: Option<&Tensor>,
        step: &Step<'_>,
        rope: &RopeTable,
        cache: &mut LayerKvCache,
    ) -> Result<(Tensor, Tensor)> {
        let (residual, normed) = match pending {
            Some(h) => self.input_norm.forward_with_residual(residual, h)?,
            None => (residual.clone(), self.input_norm.forward(residual)?),
        };
        let h = self.attention.forward(&normed, step, rope, cache)?;
        let (residual, normed) = self
            .post_attention_norm
            .forward_with_residual(&residual, &h)?;
        let h = self.mlp.forward(&normed)?;
        Ok((residual, h))
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
    /// The model with fused projections (q|k|v and gate|up as one matmul each where the weights are
    /// dense) and fused residual-add norms.
    pub fn new(config: &ModelConfig, weights: &dyn Weights) -> Result<Self> {
        Self::with_fusion(config, weights, true)
    }

    /// [`DecoderModel::new`] with the projections fused or not (`false`: one matmul per projection, as
    /// the checkpoint stores them; benchmarks compare the two). The residual adds are fused either way.
    pub fn with_fusion(config: &ModelConfig, weights: &dyn Weights, fuse: bool) -> Result<Self> {
        let embed_tokens = Embedding::new(weights.matmul("model.embed_tokens.weight")?)?;
        let lm_head = if config.tie_word_embeddings || !weights.contains("lm_head.weight") {
            embed_tokens.as_linear()
        } else {
            Linear::new(weights, "lm_head", false)?
        };
        let layers = (0..config.num_layers)
            .map(|i| DecoderLayer::new(config, weights, i, fuse))
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

    /// How many projections run fused (q|k|v and gate|up count one each per layer); 0 where the
    /// weights are quantized blocks or fusion was turned off.
    pub fn fused_projections(&self) -> usize {
        self.layers
            .iter()
            .map(|l| {
                usize::from(matches!(l.attention.qkv, QkvProjection::Fused(_)))
                    + usize::from(l.mlp.is_fused())
            })
            .sum()
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
        self.check_batch(batch, cache)?;
        if self.device.is_cpu() {
            on_pool_worker(|| self.forward_checked(batch, cache))
        } else {
            // An accelerator's work is issued from the caller's thread: no pool hop per step.
            self.forward_checked(batch, cache)
        }
    }

    /// What [`DecoderModel::forward`] checks before running a batch (the captured decode step checks the
    /// same): positions per token, a cache with the model's layers, ids within the vocabulary, logits rows
    /// within the batch.
    pub(crate) fn check_batch(&self, batch: &ForwardBatch, cache: &PagedKvCache) -> Result<()> {
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
        Ok(())
    }

    /// [`DecoderModel::forward`] once its inputs are checked: uploads the step's inputs, runs the layers,
    /// and computes the logits of the wanted rows.
    fn forward_checked(&self, batch: &ForwardBatch, cache: &mut PagedKvCache) -> Result<Tensor> {
        let tokens = batch.num_tokens();
        let ids = Tensor::new(batch.token_ids.as_slice(), &self.device)?;
        let rope = if self.device.is_cpu() {
            None
        } else {
            Some(StepRope::new(&self.rope, &batch.positions, &self.device)?)
        };
        let step = Step {
            tokens,
            positions: &batch.positions,
            attention: cache.prepare_step(&batch.attention, tokens)?,
            rope: rope.as_ref(),
        };
        let hidden = self.hidden_states(&ids, &step, cache)?;
        if batch.logits_indices.is_empty() {
            return Ok(Tensor::zeros(
                (0, self.config.vocab_size),
                DType::F32,
                &self.device,
            )?);
        }
        let hidden = if batch.wants_every_row() {
            hidden
        } else {
            let rows: Vec<u32> = batch.logits_indices.iter().map(|&i| i as u32).collect();
            hidden.index_select(&Tensor::new(rows.as_slice(), &self.device)?, 0)?
        };
        self.logits(&self.final_norm(&hidden)?)
    }

    /// The layers over one step whose inputs are already where the model runs (`ids`: `[tokens]` u32):
    /// writes the step's K/V into `cache` and returns the residual stream after the last layer,
    /// `[tokens, hidden]` in the model's dtype, before the final norm. Issues device work only (no host
    /// copy, no synchronisation), so a CUDA graph can capture it.
    pub(crate) fn hidden_states(
        &self,
        ids: &Tensor,
        step: &Step<'_>,
        cache: &mut PagedKvCache,
    ) -> Result<Tensor> {
        let mut x = self.embed_tokens.forward(ids)?.to_dtype(self.dtype)?;
        let mut pending: Option<Tensor> = None;
        for (layer, layer_cache) in self.layers.iter().zip(cache.layers.iter_mut()) {
            let (residual, h) =
                layer.forward(&x, pending.as_ref(), step, &self.rope, layer_cache)?;
            x = residual;
            pending = Some(h);
        }
        Ok(match pending {
            Some(h) => (x + h)?,
            None => x,
        })
    }

    /// The final norm, kept apart from [`DecoderModel::logits`] so a captured step can end with it.
    pub(crate) fn final_norm(&self, hidden: &Tensor) -> Result<Tensor> {
        self.norm.forward(hidden)
    }

    /// f32 logits `[rows, vocab]` of final-normed hidden rows.
    pub(crate) fn logits(&self, normed: &Tensor) -> Result<Tensor> {
        Ok(self.lm_head.forward(normed)?.to_dtype(DType::F32)?)
    }

    /// The RoPE table the model rotates with.
    pub fn rope_table(&self) -> &RopeTable {
        &self.rope
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
