//! ember's kernels: one API for attention and KV-cache operations, with a CPU implementation always and a
//! CUDA one behind the `cuda` feature. Callers hand over candle tensors and plain metadata; the device of
//! the tensors picks the implementation.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod device;
mod fused;
mod kv_cache;
mod logits;
mod memory;
mod metadata;
mod quant_matmul;
mod rope;
mod rowwise;

pub use cpu::isa::Isa;
pub use cpu::quant::{QuantMatrix, QuantType};
pub use device::DeviceChoice;
pub use fused::{add_rms_norm, silu_mul_halves, split_qkv, split_qkv_rope};
pub use kv_cache::{KvCacheDtype, KvCacheSpec, LayerKvCache, PagedKvCache};
pub use logits::{argmax_rows, copy_to_host, first_max};
pub use memory::{check_gpu_memory_utilization, kv_blocks_for_memory};
pub use metadata::{AttentionMetadata, SeqSpan, StepMetadata};
pub use quant_matmul::{quant_embedding, quant_matmul_t, quant_type_of};
pub use rope::{RopeStyle, RopeTable};
pub use rowwise::{rms_norm, silu_mul};

use candle_core::{Device, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Shape(String),
    #[error("kernel not available on {0}")]
    Unsupported(String),
    /// A device that cannot be used as asked (`--device`, `--kv-cache-dtype`): the message says why.
    #[error("{0}")]
    Device(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Writes this step's keys and values into the paged cache (at `meta.slot_mapping`) and attends causally
/// over each sequence's whole context through its block table.
///
/// Shapes: `q` is `[tokens, num_heads, head_dim]`, `k` and `v` are `[tokens, num_kv_heads, head_dim]`, all
/// f32. Returns `[tokens, num_heads * head_dim]`.
pub fn paged_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cache: &mut LayerKvCache,
    meta: &AttentionMetadata,
    softmax_scale: f32,
) -> Result<Tensor> {
    let (tokens, num_heads, head_dim) = q.dims3()?;
    let (k_tokens, num_kv_heads, k_dim) = k.dims3()?;
    let spec = &cache.spec().to_owned();
    if k_tokens != tokens || v.dims3()? != (tokens, num_kv_heads, head_dim) || k_dim != head_dim {
        return Err(Error::Shape(format!(
            "q {:?}, k {:?}, v {:?} do not match",
            q.dims(),
            k.dims(),
            v.dims()
        )));
    }
    if num_kv_heads != spec.num_kv_heads
        || head_dim != spec.head_dim
        || !num_heads.is_multiple_of(num_kv_heads)
    {
        return Err(Error::Shape(format!(
            "attention with {num_heads} heads / {num_kv_heads} kv heads of dim {head_dim} does not fit a \
             cache of {} kv heads of dim {}",
            spec.num_kv_heads, spec.head_dim
        )));
    }
    meta.validate(tokens, spec)?;
    match q.device() {
        Device::Cpu => {
            let q = q.flatten_all()?.to_vec1::<f32>()?;
            let k = k.flatten_all()?.to_vec1::<f32>()?;
            let v = v.flatten_all()?.to_vec1::<f32>()?;
            let (k_cache, v_cache) = cache.cpu_slices_mut()?;
            cpu::cache_write::write_kv(k_cache, v_cache, spec, &k, &v, &meta.slot_mapping);
            let (k_cache, v_cache) = cache.cpu_slices()?;
            let mut out = vec![0f32; tokens * num_heads * head_dim];
            cpu::paged_attention::attend(
                &q,
                k_cache,
                v_cache,
                spec,
                meta,
                num_heads,
                softmax_scale,
                &mut out,
            );
            Ok(Tensor::from_vec(
                out,
                (tokens, num_heads * head_dim),
                &Device::Cpu,
            )?)
        }
        other => Err(Error::Unsupported(format!("{other:?}"))),
    }
}

/// [`paged_attention`] on the cache's own device: the CPU's f32 kernels with the host metadata, or on
/// CUDA ember's kernels (q/k/v in the cache's bf16/f16, the cache in that type or fp8) with the metadata
/// uploaded once for the step by [`PagedKvCache::prepare_step`].
pub fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    cache: &mut LayerKvCache,
    step: &StepMetadata<'_>,
    softmax_scale: f32,
) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Some(c) = cache.cuda_mut() {
        let gpu = step.gpu.as_ref().ok_or_else(|| {
            Error::Shape(
                "a CUDA KV cache needs the step's metadata from PagedKvCache::prepare_step".into(),
            )
        })?;
        c.write(k, v, gpu)?;
        return cuda::paged_attention(q, c, gpu, softmax_scale);
    }
    paged_attention(q, k, v, cache, step.host, softmax_scale)
}

/// `x[m, k] · w[n, k]ᵀ` for f32 tensors, batch-invariant (each row's result is independent of the others).
pub fn matmul_t(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (m, k) = x.dims2()?;
    let (n, wk) = w.dims2()?;
    if k != wk {
        return Err(Error::Shape(format!(
            "matmul of {:?} by {:?}ᵀ",
            x.dims(),
            w.dims()
        )));
    }
    match x.device() {
        Device::Cpu => {
            let x = x.contiguous()?;
            let w = w.contiguous()?;
            let mut out = vec![0f32; m * n];
            with_cpu_f32(&x, |xs| {
                with_cpu_f32(&w, |ws| {
                    cpu::matmul::matmul_t(xs, ws, m, k, n, &mut out);
                    Ok(())
                })
            })?;
            Ok(Tensor::from_vec(out, (m, n), &Device::Cpu)?)
        }
        _ => Ok(x.matmul(&w.t()?)?),
    }
}

/// Borrows a contiguous f32 CPU tensor's elements without copying them.
fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(data)), Some((start, end))) => {
            f(&data[start..end])
        }
        _ => Err(Error::Shape(format!(
            "expected a contiguous f32 CPU tensor, got {:?} {:?}",
            t.dtype(),
            t.device()
        ))),
    }
}

/// Applies rotary position embeddings to `x` (`[tokens, heads, head_dim]`, f32), token `t` at `positions[t]`.
pub fn apply_rope(x: &Tensor, positions: &[usize], table: &RopeTable) -> Result<Tensor> {
    let (tokens, heads, head_dim) = x.dims3()?;
    if tokens != positions.len() || head_dim != table.head_dim() {
        return Err(Error::Shape(format!(
            "rope over {:?} with {} positions and a table for head_dim {}",
            x.dims(),
            positions.len(),
            table.head_dim()
        )));
    }
    match x.device() {
        Device::Cpu => {
            let mut data = x.flatten_all()?.to_vec1::<f32>()?;
            cpu::rope::apply(&mut data, heads, positions, table)?;
            Ok(Tensor::from_vec(
                data,
                (tokens, heads, head_dim),
                &Device::Cpu,
            )?)
        }
        other => Err(Error::Unsupported(format!("{other:?}"))),
    }
}
