//! The step's logits on their way to the sampler: greedy rows reduced to token ids on the device, the
//! rows the host sampler needs copied into a buffer the caller keeps from step to step.

use super::{cuda_err, launch_err, ptx, MODULE_ARGMAX};
use crate::{Error, Result};
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::{DType, Device, Storage, Tensor};

fn cuda_f32_matrix(logits: &Tensor) -> Result<(usize, usize)> {
    let (n, vocab) = logits.dims2()?;
    if logits.dtype() != DType::F32 || !logits.is_contiguous() {
        return Err(Error::Shape(format!(
            "logits must be contiguous f32, got {:?} {:?}",
            logits.dtype(),
            logits.dims()
        )));
    }
    Ok((n, vocab))
}

/// For each of `rows`, the index of the largest logit in that row of `logits` (`[n, vocab]` f32 on a
/// CUDA device): the lowest index among equal maxima, NaN never chosen.
pub fn argmax_rows(logits: &Tensor, rows: &[u32]) -> Result<Vec<u32>> {
    let (n, vocab) = cuda_f32_matrix(logits)?;
    if let Some(bad) = rows.iter().find(|&&r| r as usize >= n) {
        return Err(Error::Shape(format!("argmax of row {bad} of {n}")));
    }
    if rows.is_empty() || vocab == 0 {
        return Ok(vec![0; rows.len()]);
    }
    let vocab_i = i32::try_from(vocab).map_err(|_| Error::Shape(format!("vocab {vocab}")))?;
    let (store, layout) = logits.storage_and_layout();
    let Storage::Cuda(store) = &*store else {
        return Err(Error::Unsupported(
            "argmax_rows of a non-CUDA tensor".into(),
        ));
    };
    let Device::Cuda(dev) = logits.device() else {
        return Err(Error::Unsupported(
            "argmax_rows of a non-CUDA tensor".into(),
        ));
    };
    let src = store.as_cuda_slice::<f32>()?.slice(layout.start_offset()..);
    let row_ids = dev.clone_htod(rows).map_err(cuda_err)?;
    // SAFETY: the kernel writes one id per row.
    let out = unsafe { dev.alloc::<u32>(rows.len()) }.map_err(cuda_err)?;
    let name = "argmax_rows_f32";
    let func = dev.get_or_load_custom_func(name, MODULE_ARGMAX, ptx::ARGMAX)?;
    let cfg = LaunchConfig {
        grid_dim: (rows.len() as u32, 1, 1),
        block_dim: (1024, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut b = func.builder();
    b.arg(&out).arg(&src).arg(&row_ids).arg(&vocab_i);
    // SAFETY: arguments match argmax.cu; every row index was checked against the matrix.
    unsafe { b.launch(cfg) }.map_err(|e| launch_err(name, e))?;
    dev.clone_dtoh(&out).map_err(cuda_err)
}

/// Copies `t` (contiguous f32 on a CUDA device) into `dst`, resized to its length. `dst`'s memory is
/// reused: a fresh vector per step faulted in every page of up to `batch × vocab` floats again (most of
/// a batch-256 decode step on the H100's host).
pub fn copy_to_host(t: &Tensor, dst: &mut Vec<f32>) -> Result<()> {
    let t = t.flatten_all()?;
    if t.dtype() != DType::F32 || !t.is_contiguous() {
        return Err(Error::Shape(format!(
            "copy_to_host of {:?} {:?}",
            t.dtype(),
            t.dims()
        )));
    }
    let n = t.elem_count();
    dst.truncate(n);
    dst.resize(n, 0.0);
    if n == 0 {
        return Ok(());
    }
    let (store, layout) = t.storage_and_layout();
    let Storage::Cuda(store) = &*store else {
        return Err(Error::Unsupported(
            "copy_to_host of a non-CUDA tensor".into(),
        ));
    };
    let src = store
        .as_cuda_slice::<f32>()?
        .slice(layout.start_offset()..layout.start_offset() + n);
    let Device::Cuda(dev) = t.device() else {
        return Err(Error::Unsupported(
            "copy_to_host of a non-CUDA tensor".into(),
        ));
    };
    dev.memcpy_dtoh(&src, dst).map_err(cuda_err)?;
    // A copy to pageable memory returns once done; the wait makes that explicit, whatever the memory.
    t.device().synchronize()?;
    Ok(())
}
