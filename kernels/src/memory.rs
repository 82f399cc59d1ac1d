//! Sizing the KV pool from a device's memory (`--gpu-memory-utilization`): plain arithmetic, so it is
//! tested without a device.

use crate::{Error, Result};

/// `--gpu-memory-utilization` is a share of the device's memory: in (0, 1].
pub fn check_gpu_memory_utilization(utilization: f64) -> Result<()> {
    if !(utilization > 0.0 && utilization <= 1.0) {
        return Err(Error::Device(format!(
            "--gpu-memory-utilization must be in (0, 1], got {utilization}"
        )));
    }
    Ok(())
}

/// KV blocks that fit `--gpu-memory-utilization` (vLLM's meaning: the fraction of the device's *total*
/// memory this engine may hold, weights and activations included). Everything already in use on the
/// device (the loaded weights, the profiling pass's peak, other processes) is subtracted from that share;
/// what remains is divided by the bytes one block takes across all layers.
pub fn kv_blocks_for_memory(
    free_bytes: usize,
    total_bytes: usize,
    utilization: f64,
    block_bytes_all_layers: usize,
) -> Result<usize> {
    check_gpu_memory_utilization(utilization)?;
    if block_bytes_all_layers == 0 || free_bytes > total_bytes {
        return Err(Error::Shape(format!(
            "cannot size a KV pool: {free_bytes} bytes free of {total_bytes}, {block_bytes_all_layers} per block"
        )));
    }
    let used = total_bytes - free_bytes;
    let budget = (total_bytes as f64 * utilization) as usize;
    let available = budget.saturating_sub(used);
    let blocks = available / block_bytes_all_layers;
    if blocks == 0 {
        return Err(Error::Shape(format!(
            "no memory left for the KV cache: {used} of {total_bytes} bytes in use, budget {budget} at \
             utilization {utilization}; raise --gpu-memory-utilization or use a smaller model"
        )));
    }
    Ok(blocks)
}
