//! A decode step captured as a CUDA graph (vLLM's CUDA graphs for decode batches): the layers and the
//! final norm of a step of `capacity` one-token sequences, recorded once and replayed with one launch, so
//! a small batch stops paying a few hundred kernel launches of host time per step.
//!
//! The graph reads its inputs from device buffers it owns (token ids, RoPE rows, attention metadata),
//! rewritten in place before each launch, and writes the normed hidden states into a buffer of its own;
//! the LM head runs outside it on the step's real rows only (like vLLM, where logits are computed outside
//! the graph), so the padding rows of a batch smaller than the capacity cost no vocabulary projection.

use candle_core::{DType, Device, Tensor};
use ember_kernels::cuda::{GpuAttentionMetadata, StepGraph};
use ember_kernels::{AttentionMetadata, KvCacheSpec, PagedKvCache, StepMetadata};

use crate::batch::{ForwardBatch, LogitsWanted, SeqChunk};
use crate::model::{DecoderModel, Step};
use crate::step_rope::StepRope;
use crate::{Error, Result};

/// One captured decode step for up to `capacity` sequences with contexts up to `max_context` tokens.
pub struct DecodeGraph {
    /// Declared first so it is dropped first: it refers to every buffer below.
    graph: StepGraph,
    capacity: usize,
    /// `[capacity]` u32 token ids.
    ids: Tensor,
    rope: StepRope,
    attention: GpuAttentionMetadata,
    spec: KvCacheSpec,
    /// `[capacity, hidden]` final-normed hidden states, in the model's dtype.
    hidden: Tensor,
    /// The cache the graph writes and reads: its layers' address, checked at each run (the graph holds
    /// that cache's device pointers).
    cache_id: usize,
}

fn cuda_device(device: &Device) -> Result<&candle_core::CudaDevice> {
    match device {
        Device::Cuda(dev) => Ok(dev),
        other => Err(Error::Batch(format!("CUDA graphs on {other:?}"))),
    }
}

impl DecodeGraph {
    /// Captures `model`'s decode step for `capacity` sequences over `cache` (which the graph then belongs
    /// to: run it with that cache only). [`StepGraph::capture`] runs the step once uncaptured first;
    /// both runs are padding only, with no cache write.
    pub fn capture(
        model: &DecoderModel,
        cache: &mut PagedKvCache,
        capacity: usize,
        max_context: usize,
    ) -> Result<Self> {
        let device = model.device().clone();
        let dev = cuda_device(&device)?;
        let spec = *cache
            .layers
            .first()
            .ok_or_else(|| Error::Batch("a KV cache with no layers".into()))?
            .spec();
        let ids = Tensor::zeros(capacity, DType::U32, &device)?;
        let rope = StepRope::persistent(model.rope_table(), capacity, &device)?;
        let attention = GpuAttentionMetadata::for_decode(capacity, max_context, &spec, dev)?;
        let hidden = Tensor::zeros(
            (capacity, model.config().hidden_size),
            model.dtype(),
            &device,
        )?;
        // The host metadata only the CPU kernels read; on CUDA the step reads `attention`.
        let host = AttentionMetadata::default();
        let graph = StepGraph::capture(&device, || -> Result<()> {
            let step = Step {
                tokens: capacity,
                positions: &[],
                attention: StepMetadata::on_device(&host, &attention),
                rope: Some(&rope),
            };
            let h = model.hidden_states(&ids, &step, cache)?;
            hidden.slice_set(&model.final_norm(&h)?, 0, 0)?;
            Ok(())
        })?;
        Ok(Self {
            graph,
            capacity,
            ids,
            rope,
            attention,
            spec,
            hidden,
            cache_id: cache.layers.as_ptr() as usize,
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The longest context a step may attend over.
    pub fn max_context(&self) -> usize {
        self.attention.decode_max_context()
    }

    /// Whether the graph can run `batch`: at most `capacity` sequences of one token each, every
    /// sequence's row wanted in order, contexts within `max_context`.
    pub fn fits(&self, batch: &ForwardBatch) -> bool {
        let n = batch.attention.seqs.len();
        n > 0
            && n <= self.capacity
            && batch.num_tokens() == n
            && batch.wants_every_row()
            && batch
                .attention
                .seqs
                .iter()
                .all(|s| s.query_len == 1 && s.context_len <= self.max_context())
    }

    /// Runs `batch` (one that [`DecodeGraph::fits`]) through the graph over `cache`, the cache it was
    /// captured with: writes the step's K/V and returns f32 logits `[sequences, vocab]`.
    pub fn run(
        &mut self,
        model: &DecoderModel,
        batch: &ForwardBatch,
        cache: &mut PagedKvCache,
    ) -> Result<Tensor> {
        if cache.layers.as_ptr() as usize != self.cache_id {
            return Err(Error::Batch(
                "a CUDA graph run with a KV cache other than the one it was captured with".into(),
            ));
        }
        if !self.fits(batch) {
            return Err(Error::Batch(format!(
                "a step of {} tokens in {} sequences does not fit a decode graph of {} one-token \
                 sequences up to {} tokens of context",
                batch.num_tokens(),
                batch.attention.seqs.len(),
                self.capacity,
                self.max_context()
            )));
        }
        model.check_batch(batch, cache)?;
        let n = batch.num_tokens();
        let device = model.device();
        // Inputs first, on the same stream: the launch reads them after these copies.
        self.attention
            .fill_decode(&batch.attention, &self.spec, cuda_device(device)?)?;
        self.ids
            .slice_set(&Tensor::new(batch.token_ids.as_slice(), device)?, 0, 0)?;
        self.rope.refill(model.rope_table(), &batch.positions)?;
        self.graph.launch()?;
        model.logits(&self.hidden.narrow(0, 0, n)?)
    }

    /// Replays a step the graph has not seen against the model's eager forward on the same input and
    /// returns the largest difference of their logits relative to the largest eager logit (0 when the
    /// replay reads its inputs as it should: the same kernels run on the same shapes). The check writes
    /// blocks `0..` of the cache: run it before the cache holds anything.
    ///
    /// Sequences share a prompt prefix of whole blocks (`0..m`, written once eagerly) and each has a
    /// block of its own for its decode token, at context lengths from 1 to `m` blocks + 1 token, so
    /// as many sequences run as the cache has blocks beyond the prefix (up to the capacity).
    pub fn verify(&mut self, model: &DecoderModel, cache: &mut PagedKvCache) -> Result<f32> {
        let bs = self.spec.block_size;
        let vocab = model.config().vocab_size as u32;
        // Two shared blocks at most, and at least one block left for the sequences' own.
        let prefix_blocks = ((self.max_context() - 1) / bs)
            .min(2)
            .min(self.spec.num_blocks.saturating_sub(1));
        let own = self
            .capacity
            .min(self.spec.num_blocks.saturating_sub(prefix_blocks));
        if own == 0 {
            return Err(Error::Batch(format!(
                "a cache of {} blocks has no room to check a decode graph",
                self.spec.num_blocks
            )));
        }
        let prefix_len = prefix_blocks * bs;
        let prefix: Vec<u32> = (0..prefix_len as u32)
            .map(|i| (i * 131 + 17) % vocab)
            .collect();
        let prefix_table: Vec<u32> = (0..prefix_blocks as u32).collect();
        if prefix_len > 0 {
            let chunk = SeqChunk {
                tokens: &prefix,
                num_computed: 0,
                block_table: &prefix_table,
                logits: LogitsWanted::None,
            };
            model.forward(&ForwardBatch::build(&[chunk], bs)?, cache)?;
        }
        let tokens: Vec<[u32; 1]> = (0..own as u32).map(|s| [(s * 7919 + 3) % vocab]).collect();
        let tables: Vec<Vec<u32>> = (0..own)
            .map(|s| {
                let shared = s % (prefix_blocks + 1);
                let mut t = prefix_table[..shared].to_vec();
                t.push((prefix_blocks + s) as u32);
                t
            })
            .collect();
        let chunks: Vec<SeqChunk> = (0..own)
            .map(|s| SeqChunk {
                tokens: &tokens[s],
                num_computed: (tables[s].len() - 1) * bs,
                block_table: &tables[s],
                logits: LogitsWanted::Last,
            })
            .collect();
        let batch = ForwardBatch::build(&chunks, bs)?;
        let eager = model.forward(&batch, cache)?;
        let replayed = self.run(model, &batch, cache)?;
        relative_difference(&eager, &replayed)
    }
}

/// The largest `|reference - other|` over the largest `|reference|`; a NaN anywhere counts as an
/// infinite difference (a comparison with NaN would pass any tolerance check).
pub fn relative_difference(reference: &Tensor, other: &Tensor) -> Result<f32> {
    let scale = reference.abs()?.max_all()?.to_scalar::<f32>()?;
    let diff = (reference - other)?.abs()?.max_all()?.to_scalar::<f32>()?;
    Ok(if diff.is_nan() || scale.is_nan() {
        f32::INFINITY
    } else {
        diff / scale.max(f32::MIN_POSITIVE)
    })
}
