//! The decode workload the forward benchmarks time: `batch` sequences, each prefilled with a `ctx`-token
//! prompt, then one token per sequence per step, with its own blocks in a paged cache.

use candle_core::Tensor;
use ember_kernels::PagedKvCache;
use ember_models::batch::{ForwardBatch, LogitsWanted, SeqChunk};
use ember_models::model::DecoderModel;

pub const BLOCK: usize = 16;

pub struct DecodeWorkload {
    pub batch: usize,
    ctx: usize,
    vocab: u32,
    tables: Vec<Vec<u32>>,
    prompts: Vec<Vec<u32>>,
}

impl DecodeWorkload {
    /// The workload and a cache with room for `ctx + steps` tokens (plus a warm-up step) per sequence.
    pub fn new(
        model: &DecoderModel,
        batch: usize,
        ctx: usize,
        steps: usize,
    ) -> (Self, PagedKvCache) {
        let vocab = model.config().vocab_size as u32;
        let per_seq = (ctx + steps + 1).div_ceil(BLOCK);
        let cache = model
            .new_kv_cache(per_seq * batch, BLOCK)
            .expect("KV cache");
        let tables = (0..batch)
            .map(|s| ((s * per_seq) as u32..((s + 1) * per_seq) as u32).collect())
            .collect();
        let prompts = (0..batch)
            .map(|s| {
                (0..ctx as u32)
                    .map(|i| (i * 31 + s as u32 * 101 + 7) % vocab)
                    .collect()
            })
            .collect();
        let workload = Self {
            batch,
            ctx,
            vocab,
            tables,
            prompts,
        };
        (workload, cache)
    }

    /// Writes every sequence's prompt into the cache in one step.
    pub fn prefill(&self, model: &DecoderModel, cache: &mut PagedKvCache) {
        let chunks: Vec<SeqChunk> = (0..self.batch)
            .map(|s| SeqChunk {
                tokens: &self.prompts[s],
                num_computed: 0,
                block_table: &self.tables[s],
                logits: LogitsWanted::Last,
            })
            .collect();
        model
            .forward(&ForwardBatch::build(&chunks, BLOCK).unwrap(), cache)
            .expect("prefill");
    }

    /// The batch of decode step `i` (0-based after the prefill): one token per sequence.
    pub fn step_batch(&self, i: usize) -> ForwardBatch {
        let tokens: Vec<[u32; 1]> = (0..self.batch)
            .map(|s| [(i as u32 * 7 + s as u32 * 13 + 1) % self.vocab])
            .collect();
        let chunks: Vec<SeqChunk> = (0..self.batch)
            .map(|s| SeqChunk {
                tokens: &tokens[s],
                num_computed: self.ctx + i,
                block_table: &self.tables[s],
                logits: LogitsWanted::Last,
            })
            .collect();
        ForwardBatch::build(&chunks, BLOCK).unwrap()
    }

    /// Decode step `i`, run eagerly; returns the logits.
    pub fn step(&self, model: &DecoderModel, cache: &mut PagedKvCache, i: usize) -> Tensor {
        model
            .forward(&self.step_batch(i), cache)
            .expect("decode step")
    }
}
