//! Turns a scheduler step into one forward pass over the paged KV cache and hands back the logits rows.

use ember_kernels::PagedKvCache;
use ember_models::batch::{ForwardBatch, SeqChunk};
use ember_models::model::DecoderModel;

use crate::error::{Error, Result};

/// Owns the model's KV cache; the block pool decides which of its blocks each request uses.
pub struct ModelRunner {
    cache: PagedKvCache,
    block_size: usize,
}

/// Logits rows of one step, row-major `[rows, vocab]`.
pub struct StepLogits {
    pub data: Vec<f32>,
    pub vocab: usize,
}

impl StepLogits {
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.vocab..(i + 1) * self.vocab]
    }

    pub fn rows(&self, first: usize, count: usize) -> &[f32] {
        &self.data[first * self.vocab..(first + count) * self.vocab]
    }
}

impl ModelRunner {
    pub fn new(model: &DecoderModel, num_blocks: usize, block_size: usize) -> Result<Self> {
        let cache = model
            .new_kv_cache(num_blocks, block_size)
            .map_err(|e| Error::Model(format!("allocating the KV cache: {e}")))?;
        Ok(Self { cache, block_size })
    }

    /// Runs the chunks as one batch; returns the logits rows they asked for, in order.
    pub fn execute(&mut self, model: &DecoderModel, chunks: &[SeqChunk<'_>]) -> Result<StepLogits> {
        let batch = ForwardBatch::build(chunks, self.block_size)
            .map_err(|e| Error::Model(e.to_string()))?;
        let logits = model
            .forward(&batch, &mut self.cache)
            .map_err(|e| Error::Model(e.to_string()))?;
        let vocab = logits.dim(1).map_err(|e| Error::Model(e.to_string()))?;
        let data = logits
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| Error::Model(e.to_string()))?;
        Ok(StepLogits { data, vocab })
    }
}
