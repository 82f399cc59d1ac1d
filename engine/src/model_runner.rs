//! Turns a scheduler step into one forward pass over the paged KV cache and hands back the logits rows.

use candle_core::Tensor;
use ember_kernels::PagedKvCache;
use ember_models::batch::{ForwardBatch, SeqChunk};
use ember_models::model::DecoderModel;

use crate::error::{Error, Result};

/// Longest context a captured decode step attends over (vLLM's `max_seq_len_to_capture` default); steps
/// with a longer context run eagerly. The decode kernel's split count is fixed at capture, so a longer
/// limit would make every replay launch blocks for contexts no sequence has.
pub const MAX_CONTEXT_TO_CAPTURE: usize = 8192;
/// Largest decode batch captured (vLLM's default largest capture size is 512; ember's `--max-num-seqs`
/// defaults to 256).
pub const MAX_BATCH_TO_CAPTURE: usize = 256;
/// Largest logits difference, relative to the largest logit, that a replayed graph may show against the
/// eager forward on the same step (both run the same kernels on the same shapes: it should be 0).
pub const GRAPH_REPLAY_TOLERANCE: f32 = 1e-3;

/// The decode batch sizes CUDA graphs are captured for, up to `max_batch` (capped at
/// [`MAX_BATCH_TO_CAPTURE`]): 1, 2, 4, then every 8 to 64, then every 16 — as vLLM's capture sizes, a
/// step of `n` sequences runs the smallest graph of at least `n`, padded.
pub fn capture_sizes(max_batch: usize) -> Vec<usize> {
    let max_batch = max_batch.min(MAX_BATCH_TO_CAPTURE);
    let mut sizes: Vec<usize> = [1, 2, 4]
        .into_iter()
        .chain((8..=64).step_by(8))
        .chain((80..=MAX_BATCH_TO_CAPTURE).step_by(16))
        .filter(|&s| s < max_batch)
        .collect();
    if max_batch > 0 {
        sizes.push(max_batch);
    }
    sizes
}

/// Owns the model's KV cache; the block pool decides which of its blocks each request uses.
pub struct ModelRunner {
    cache: PagedKvCache,
    block_size: usize,
    /// The host buffer the step's full logits rows are copied into, kept between steps.
    host: Vec<f32>,
    /// Captured decode steps, smallest first ([`ModelRunner::capture_decode_graphs`]).
    #[cfg(feature = "cuda")]
    graphs: Vec<ember_models::decode_graph::DecodeGraph>,
}

/// What [`ModelRunner::capture_decode_graphs`] captured.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphCapture {
    pub batch_sizes: Vec<usize>,
    pub max_context: usize,
    /// Largest replay-vs-eager logits difference seen (relative to the largest logit).
    pub max_replay_difference: f32,
    pub seconds: f64,
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
            #[cfg(feature = "cuda")]
            graphs: Vec::new(),
        })
    }

    /// Captures a CUDA graph of the decode step for each of [`capture_sizes`]`(max_batch)` with contexts
    /// up to `max_context` (capped at [`MAX_CONTEXT_TO_CAPTURE`]), largest first, and checks each replay
    /// against the eager forward; decode steps that fit one then run through it. Must run before the
    /// cache holds anything (the checks write its first blocks). On the CPU there is nothing to capture
    /// (`Ok(None)`); on any error no graph is kept and every step stays eager.
    pub fn capture_decode_graphs(
        &mut self,
        model: &DecoderModel,
        max_batch: usize,
        max_context: usize,
    ) -> Result<Option<GraphCapture>> {
        if model.device().is_cpu() {
            return Ok(None);
        }
        self.capture_on_device(model, max_batch, max_context.min(MAX_CONTEXT_TO_CAPTURE))
            .map(Some)
    }

    #[cfg(feature = "cuda")]
    fn capture_on_device(
        &mut self,
        model: &DecoderModel,
        max_batch: usize,
        max_context: usize,
    ) -> Result<GraphCapture> {
        use ember_models::decode_graph::DecodeGraph;
        let started = std::time::Instant::now();
        let err = |size: usize, e: String| {
            Error::Model(format!(
                "capturing the CUDA graph of a {size}-sequence decode step: {e}"
            ))
        };
        self.graphs.clear();
        let mut graphs = Vec::new();
        let mut worst = 0f32;
        let sizes = capture_sizes(max_batch);
        for &size in sizes.iter().rev() {
            let mut graph = DecodeGraph::capture(model, &mut self.cache, size, max_context)
                .map_err(|e| err(size, e.to_string()))?;
            let difference = graph
                .verify(model, &mut self.cache)
                .map_err(|e| err(size, e.to_string()))?;
            if difference.is_nan() || difference > GRAPH_REPLAY_TOLERANCE {
                return Err(err(
                    size,
                    format!(
                        "its replay's logits differ from the eager forward's by {difference:e} of the                          largest logit (tolerance {GRAPH_REPLAY_TOLERANCE:e})"
                    ),
                ));
            }
            worst = worst.max(difference);
            graphs.push(graph);
        }
        graphs.reverse();
        self.graphs = graphs;
        Ok(GraphCapture {
            batch_sizes: sizes,
            max_context,
            max_replay_difference: worst,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    #[cfg(not(feature = "cuda"))]
    fn capture_on_device(
        &mut self,
        model: &DecoderModel,
        _max_batch: usize,
        _max_context: usize,
    ) -> Result<GraphCapture> {
        Err(Error::Model(format!(
            "CUDA graphs on {:?} in a build without the `cuda` feature",
            model.device()
        )))
    }

    /// How many decode steps sizes have a captured graph.
    pub fn captured_graphs(&self) -> usize {
        #[cfg(feature = "cuda")]
        return self.graphs.len();
        #[cfg(not(feature = "cuda"))]
        0
    }

    /// One step's f32 logits: through the smallest captured graph that fits it, else eagerly.
    fn forward(&mut self, model: &DecoderModel, batch: &ForwardBatch) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if let Some(graph) = self.graphs.iter_mut().find(|g| g.fits(batch)) {
            return graph
                .run(model, batch, &mut self.cache)
                .map_err(|e| Error::Model(e.to_string()));
        }
        model
            .forward(batch, &mut self.cache)
            .map_err(|e| Error::Model(e.to_string()))
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
        let logits = self.forward(model, &batch)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_sizes_cover_every_batch_up_to_the_largest() {
        assert_eq!(capture_sizes(1), vec![1]);
        assert_eq!(capture_sizes(3), vec![1, 2, 3]);
        assert_eq!(capture_sizes(10), vec![1, 2, 4, 8, 10]);
        let all = capture_sizes(256);
        assert_eq!(&all[..6], &[1, 2, 4, 8, 16, 24]);
        assert_eq!(all.last(), Some(&256));
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        // Past the cap the largest graph is the cap: larger batches run eagerly.
        assert_eq!(capture_sizes(1000).last(), Some(&MAX_BATCH_TO_CAPTURE));
        assert!(capture_sizes(0).is_empty());
    }
}
