//! Sizing the KV pool on an accelerator (`--gpu-memory-utilization`), as vLLM does: after the weights
//! are loaded, one profiling forward of a full step (`max_num_batched_tokens` tokens over up to
//! `max_num_seqs` sequences); what the device then holds, plus the step's activation peak, is taken off
//! `total × utilization`, and the rest is divided into blocks.

use candle_core::Device;
use ember_models::batch::{ForwardBatch, LogitsWanted, SeqChunk};
use ember_models::model::DecoderModel;

use crate::error::{Error, Result};

/// The memory figures the pool is sized from, kept for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuPoolSizing {
    pub total_bytes: usize,
    /// In use after the profiling forward (weights, runtime, other processes).
    pub used_bytes: usize,
    /// Activations of one full step, reserved on top (the freed peak cannot be read back afterwards).
    pub activation_bytes: usize,
    pub block_bytes: usize,
    pub num_blocks: usize,
}

/// Blocks for `utilization` of `total` bytes once `used` and a step's `activation` peak are set aside.
pub fn gpu_pool_blocks(
    total: usize,
    used: usize,
    activation: usize,
    utilization: f64,
    block_bytes: usize,
) -> Result<usize> {
    let held = used.saturating_add(activation).min(total);
    ember_kernels::kv_blocks_for_memory(total - held, total, utilization, block_bytes)
        .map_err(|e| Error::Config(e.to_string()))
}

/// Bytes of activations one step of `tokens` tokens (and `rows` logits rows) may hold at once, in the
/// model's dtype: the residual stream, the normed input, q/k/v, the attention output and the MLP's
/// gate/up/product, with a factor of two for temporaries and allocator slack, plus f32 logits.
pub fn activation_bytes(model: &DecoderModel, tokens: usize, rows: usize) -> usize {
    let c = model.config();
    let elem = model.dtype().size_in_bytes();
    let qkv = (c.num_heads + 2 * c.num_kv_heads) * c.head_dim;
    let per_token = 4 * c.hidden_size + 2 * qkv + 3 * c.intermediate_size;
    2 * tokens * per_token * elem + 2 * rows * c.vocab_size * 4
}

/// Runs the profiling step on `model`'s device and sizes the pool. `None` on the CPU (sized by bytes).
pub fn profile_gpu_pool(
    model: &DecoderModel,
    max_num_batched_tokens: usize,
    max_num_seqs: usize,
    max_model_len: usize,
    block_size: usize,
    utilization: f64,
) -> Result<Option<GpuPoolSizing>> {
    let device = model.device();
    if matches!(device, Device::Cpu) {
        return Ok(None);
    }
    let model_err = |e: String| Error::Model(format!("profiling a step on the device: {e}"));
    // The step's tokens split over as many sequences as the scheduler could run, each within the
    // context length.
    let tokens = max_num_batched_tokens.max(1);
    let seqs = max_num_seqs
        .clamp(1, tokens)
        .max(tokens.div_ceil(max_model_len.max(1)));
    let vocab = model.config().vocab_size as u32;
    let ids: Vec<u32> = (0..tokens as u32).map(|i| (i * 7919 + 1) % vocab).collect();
    let mut lens = vec![tokens / seqs; seqs];
    for len in lens.iter_mut().take(tokens % seqs) {
        *len += 1;
    }
    let blocks: Vec<usize> = lens.iter().map(|l| l.div_ceil(block_size)).collect();
    let num_blocks: usize = blocks.iter().sum();
    let tables: Vec<Vec<u32>> = {
        let mut next = 0u32;
        blocks
            .iter()
            .map(|&n| {
                let t = (next..next + n as u32).collect();
                next += n as u32;
                t
            })
            .collect()
    };
    let mut start = 0;
    let chunks: Vec<SeqChunk<'_>> = lens
        .iter()
        .zip(&tables)
        .map(|(&len, table)| {
            let c = SeqChunk {
                tokens: &ids[start..start + len],
                num_computed: 0,
                block_table: table,
                logits: LogitsWanted::Last,
            };
            start += len;
            c
        })
        .collect();
    let batch = ForwardBatch::build(&chunks, block_size).map_err(|e| model_err(e.to_string()))?;
    {
        let mut cache = model
            .new_kv_cache(num_blocks, block_size)
            .map_err(|e| model_err(e.to_string()))?;
        let logits = model
            .forward(&batch, &mut cache)
            .map_err(|e| model_err(e.to_string()))?;
        ember_kernels::device::synchronize(device).map_err(|e| model_err(e.to_string()))?;
        drop(logits);
    }
    let (free, total) = ember_kernels::device::memory_info(device)
        .map_err(|e| model_err(e.to_string()))?
        .ok_or_else(|| model_err("the device reports no memory figures".into()))?;
    let used_bytes = total.saturating_sub(free);
    // Reserve logits for every token of the step: prompt logprobs (and the evaluator's loglikelihoods)
    // ask for all of them, while the profiling step only computed one row per sequence.
    let activation = activation_bytes(model, tokens, tokens);
    let block_bytes = model.kv_block_bytes(block_size);
    let num_blocks = gpu_pool_blocks(total, used_bytes, activation, utilization, block_bytes)?;
    Ok(Some(GpuPoolSizing {
        total_bytes: total,
        used_bytes,
        activation_bytes: activation,
        block_bytes,
        num_blocks,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_takes_the_share_left_after_weights_and_activations() {
        let gib = 1usize << 30;
        // 80 GiB card at 0.9: 72 GiB budget; 4 GiB in use and 1 GiB of activations leave 67 GiB.
        assert_eq!(
            gpu_pool_blocks(80 * gib, 4 * gib, gib, 0.9, 1 << 20).unwrap(),
            67 * 1024
        );
        // Lower utilization, smaller pool; more in use than the budget: an error naming the flag.
        assert_eq!(
            gpu_pool_blocks(80 * gib, 4 * gib, gib, 0.5, 1 << 20).unwrap(),
            35 * 1024
        );
        let e = gpu_pool_blocks(80 * gib, 70 * gib, 3 * gib, 0.9, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("--gpu-memory-utilization"), "{e}");
        // Nothing silly on overflowing inputs or a bad utilization.
        assert!(gpu_pool_blocks(gib, usize::MAX, usize::MAX, 0.9, 1).is_err());
        assert!(gpu_pool_blocks(80 * gib, gib, 0, 0.0, 1 << 20).is_err());
        assert!(gpu_pool_blocks(80 * gib, gib, 0, 1.01, 1 << 20).is_err());
    }
}
