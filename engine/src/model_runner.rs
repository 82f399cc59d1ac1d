//! Turns a scheduler step into one forward pass over the paged KV cache and hands back the logits rows.

use candle_core::Tensor;
use ember_kernels::PagedKvCache;
use ember_models::batch::{ForwardBatch, SeqChunk};
use ember_models::model::DecoderModel;

use crate::error::{Error, Result};

/// Owns the model's KV cache; the block pool decides which of its blocks each request uses.
pub struct ModelRunner {
    cache: PagedKvCache,
    block_size: usize,
    /// The host buffer the step's full logits rows are copied into, kept between steps.
    host: Vec<f32>,
}

/// What the engine needs of one logits row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowUse {
    /// Nothing: no prompt logprob to score and no token to sample from it.
    Skip,
    /// The whole row, on the host (prompt logprobs, random sampling, logprobs, logits processors).
    Full,
    /// Its greedy token alone, picked where the logits are: on a GPU only the id crosses to the host.
    Argmax,
}

/// One step's logits: the [`RowUse::Full`] rows copied to the host (row-major, in row order) and the
/// greedy token of each [`RowUse::Argmax`] row.
pub struct StepLogits {
    data: Vec<f32>,
    pub vocab: usize,
    /// Row -> its index among the copied rows.
    copied: Vec<Option<usize>>,
    greedy: Vec<Option<u32>>,
}

impl StepLogits {
    /// Row `i`, which must have been asked for as [`RowUse::Full`].
    pub fn row(&self, i: usize) -> &[f32] {
        self.rows(i, 1)
    }

    /// `count` consecutive rows from `first`, all asked for as [`RowUse::Full`].
    pub fn rows(&self, first: usize, count: usize) -> &[f32] {
        if count == 0 {
            return &[];
        }
        let k = self.copied[first].expect("a logits row the step did not copy");
        assert_eq!(
            self.copied[first + count - 1],
            Some(k + count - 1),
            "logits rows {first}..{} were not all copied",
            first + count
        );
        &self.data[k * self.vocab..(k + count) * self.vocab]
    }

    /// The greedy token of row `i` when it was asked for as [`RowUse::Argmax`].
    pub fn greedy(&self, i: usize) -> Option<u32> {
        self.greedy.get(i).copied().flatten()
    }
}

impl ModelRunner {
    pub fn new(model: &DecoderModel, num_blocks: usize, block_size: usize) -> Result<Self> {
        let cache = model
            .new_kv_cache(num_blocks, block_size)
            .map_err(|e| Error::Model(format!("allocating the KV cache: {e}")))?;
        Ok(Self {
            cache,
            block_size,
            host: Vec::new(),
        })
    }

    /// Runs the chunks as one batch; `uses` says, for each logits row the chunks asked for (in order),
    /// what the sampler needs of it.
    pub fn execute(
        &mut self,
        model: &DecoderModel,
        chunks: &[SeqChunk<'_>],
        uses: &[RowUse],
    ) -> Result<StepLogits> {
        let err = |e: String| Error::Model(e);
        let batch = ForwardBatch::build(chunks, self.block_size).map_err(|e| err(e.to_string()))?;
        let logits = model
            .forward(&batch, &mut self.cache)
            .map_err(|e| err(e.to_string()))?;
        let (rows, vocab) = logits.dims2().map_err(|e| err(e.to_string()))?;
        if uses.len() != rows {
            return Err(err(format!(
                "{} row uses for {rows} logits rows",
                uses.len()
            )));
        }
        let pick = |u: RowUse| -> Vec<u32> {
            (0..rows as u32)
                .filter(|&r| uses[r as usize] == u)
                .collect()
        };
        let (full, argmax) = (pick(RowUse::Full), pick(RowUse::Argmax));
        let mut greedy = vec![None; rows];
        if !argmax.is_empty() {
            let ids =
                ember_kernels::argmax_rows(&logits, &argmax).map_err(|e| err(e.to_string()))?;
            for (&r, id) in argmax.iter().zip(ids) {
                greedy[r as usize] = Some(id);
            }
        }
        let mut copied = vec![None; rows];
        let mut data = std::mem::take(&mut self.host);
        if full.is_empty() {
            data.clear();
        } else {
            let wanted = if full.len() == rows {
                logits
            } else {
                let index = Tensor::new(full.as_slice(), logits.device())
                    .map_err(|e| err(e.to_string()))?;
                logits
                    .index_select(&index, 0)
                    .map_err(|e| err(e.to_string()))?
            };
            ember_kernels::copy_to_host(&wanted, &mut data).map_err(|e| err(e.to_string()))?;
            for (k, &r) in full.iter().enumerate() {
                copied[r as usize] = Some(k);
            }
        }
        Ok(StepLogits {
            data,
            vocab,
            copied,
            greedy,
        })
    }

    /// Takes back a step's host buffer, so the next step copies into memory already mapped.
    pub fn recycle(&mut self, logits: StepLogits) {
        self.host = logits.data;
    }
}
