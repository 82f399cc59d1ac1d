use super::{
    cuda_err, dtype_name, launch_err, ptx, CudaLayerKvCache, GpuAttentionMetadata, MODULE_DECODE,
    MODULE_PREFILL,
};
use crate::{Error, Result};
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::CudaStorage;
use candle_core::{DType, Device, Storage, Tensor};

/// Which kernel attends single-token (decode) sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelChoice {
    /// Split-K decode kernel for one-token queries (when the GQA group fits it), prefill kernel otherwise.
    #[default]
    Auto,
    /// Every sequence through the prefill kernel (tests use it to check that kernel on one-token queries).
    PrefillOnly,
}

/// How the prefill kernel moves K/V tiles into shared memory (`kernels/cuda/flash_prefill.cu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrefillSchedule {
    /// Plain loads, then compute (fp8 caches are converted on the way in).
    #[default]
    Staged,
    /// cp.async copies overlapping the tile's loads with the previous product, ldmatrix fragment reads;
    /// caches of the model's dtype only (an fp8 cache runs the staged schedule).
    Pipelined,
}

/// Environment variable naming the prefill schedule the engine runs (`pipelined`; default staged until
/// the pipelined one has been timed on a GPU).
pub const PREFILL_SCHEDULE_ENV: &str = "EMBER_PREFILL_SCHEDULE";

impl PrefillSchedule {
    /// The schedule [`PREFILL_SCHEDULE_ENV`] asks for (read once).
    pub fn from_env() -> Self {
        static CHOSEN: std::sync::OnceLock<PrefillSchedule> = std::sync::OnceLock::new();
        *CHOSEN.get_or_init(|| match std::env::var(PREFILL_SCHEDULE_ENV).as_deref() {
            Ok("pipelined") => Self::Pipelined,
            _ => Self::Staged,
        })
    }
}

/// Causal attention of every token over its sequence's paged context (this step's K/V must already be in
/// the cache: [`CudaLayerKvCache::write`]). `q` is `[tokens, num_heads, head_dim]` in the cache's model
/// dtype; returns `[tokens, num_heads * head_dim]`.
pub fn paged_attention(
    q: &Tensor,
    cache: &CudaLayerKvCache,
    meta: &GpuAttentionMetadata,
    softmax_scale: f32,
) -> Result<Tensor> {
    let (tokens, num_heads, head_dim) = q.dims3()?;
    let dev = cache.device();
    let n = tokens * num_heads * head_dim;
    let storage = match q.dtype() {
        // SAFETY: every element is written by the kernels (the poisoned-output tests check this).
        DType::BF16 => CudaStorage::wrap_cuda_slice(
            unsafe { dev.alloc::<half::bf16>(n.max(1)) }.map_err(cuda_err)?,
            dev.clone(),
        ),
        DType::F16 => CudaStorage::wrap_cuda_slice(
            unsafe { dev.alloc::<half::f16>(n.max(1)) }.map_err(cuda_err)?,
            dev.clone(),
        ),
        other => return Err(Error::Unsupported(format!("CUDA attention in {other:?}"))),
    };
    let out = Tensor::from_storage(
        Storage::Cuda(storage),
        (tokens, num_heads, head_dim),
        candle_core::op::BackpropOp::none(),
        false,
    );
    if n > 0 {
        paged_attention_into(q, cache, meta, softmax_scale, &out, KernelChoice::Auto)?;
    }
    Ok(out.reshape((tokens, num_heads * head_dim))?)
}

/// [`paged_attention`] into an existing contiguous `[tokens, num_heads, head_dim]` tensor `out` (which
/// the caller must not share: it is written in place), with the prefill schedule of
/// [`PrefillSchedule::from_env`].
pub fn paged_attention_into(
    q: &Tensor,
    cache: &CudaLayerKvCache,
    meta: &GpuAttentionMetadata,
    softmax_scale: f32,
    out: &Tensor,
    choice: KernelChoice,
) -> Result<()> {
    let schedule = PrefillSchedule::from_env();
    paged_attention_scheduled(q, cache, meta, softmax_scale, out, choice, schedule)
}

/// [`paged_attention_into`] with the prefill kernel's schedule chosen by the caller (tests and the
/// attention benchmark run both).
pub fn paged_attention_scheduled(
    q: &Tensor,
    cache: &CudaLayerKvCache,
    meta: &GpuAttentionMetadata,
    softmax_scale: f32,
    out: &Tensor,
    choice: KernelChoice,
    schedule: PrefillSchedule,
) -> Result<()> {
    let spec = *cache.spec();
    let (tokens, num_heads, head_dim) = q.dims3()?;
    if tokens != meta.tokens
        || head_dim != spec.head_dim
        || spec.num_kv_heads == 0
        || !num_heads.is_multiple_of(spec.num_kv_heads)
        || out.dims() != q.dims()
        || !out.is_contiguous()
        || q.dtype() != cache.model_dtype()
        || out.dtype() != q.dtype()
        || meta.block_size != spec.block_size
    {
        return Err(Error::Shape(format!(
            "attention of q {:?} {:?} into {:?} {:?} over a cache of {} kv heads x {} (block {}, {:?}) for {} \
             tokens",
            q.dims(),
            q.dtype(),
            out.dims(),
            out.dtype(),
            spec.num_kv_heads,
            spec.head_dim,
            spec.block_size,
            cache.model_dtype(),
            meta.tokens
        )));
    }
    if head_dim != 64 && head_dim != 128 {
        return Err(Error::Unsupported(format!(
            "CUDA attention with head_dim {head_dim} (64 and 128 are built)"
        )));
    }
    if !matches!(q.device(), Device::Cuda(_)) || !matches!(out.device(), Device::Cuda(_)) {
        return Err(Error::Unsupported(
            "CUDA attention of non-CUDA tensors".into(),
        ));
    }
    if tokens == 0 {
        return Ok(());
    }
    let q = q.contiguous()?;
    let dev = cache.device();
    let tname = dtype_name(q.dtype())?;
    let cname = cache.cache_name()?;
    let (k_scale, v_scale) = cache.scales();
    let scale_log2 = softmax_scale * std::f32::consts::LOG2_E;
    let group = num_heads / spec.num_kv_heads;
    let use_decode =
        choice == KernelChoice::Auto && meta.num_decode > 0 && group <= ptx::DECODE_MAX_GROUP;
    // Sequences for the prefill kernel: all of them unless the decode kernel takes the one-token ones.
    let (prefill_ids, num_prefill, max_q) = if use_decode {
        (
            meta.prefill_ids.as_ref(),
            meta.num_prefill,
            meta.max_prefill_len,
        )
    } else {
        (meta.all_ids.as_ref(), meta.num_seqs, meta.max_query_len)
    };
    let (k_cache, v_cache) = cache.slices();
    let (q_store, q_layout) = q.storage_and_layout();
    let (o_store, o_layout) = out.storage_and_layout();
    let (Storage::Cuda(q_store), Storage::Cuda(o_store)) = (&*q_store, &*o_store) else {
        return Err(Error::Unsupported(
            "CUDA attention of non-CUDA tensors".into(),
        ));
    };
    let (heads_i, kv_heads_i, bs_i, max_blocks_i) = (
        num_heads as i32,
        spec.num_kv_heads as i32,
        spec.block_size as i32,
        meta.max_blocks_per_seq as i32,
    );

    macro_rules! run {
        ($t:ty) => {{
            let qv = q_store.as_cuda_slice::<$t>()?.slice(q_layout.start_offset()..);
            // The output is written through a shared view: `out` is the caller's fresh, unshared buffer.
            let ov = o_store.as_cuda_slice::<$t>()?.slice(o_layout.start_offset()..);
            if let (Some(ids), true) = (prefill_ids, num_prefill > 0) {
                let name = if schedule == PrefillSchedule::Pipelined && cname == tname {
                    format!("flash_prefill_pipe_{tname}_d{head_dim}")
                } else {
                    format!("flash_prefill_{tname}_{cname}_d{head_dim}")
                };
                let func = dev.get_or_load_custom_func(&name, MODULE_PREFILL, ptx::FLASH_PREFILL)?;
                let cfg = LaunchConfig {
                    grid_dim: (
                        max_q.div_ceil(ptx::PREFILL_ROWS) as u32,
                        num_prefill as u32,
                        num_heads as u32,
                    ),
                    block_dim: (128, 1, 1),
                    shared_mem_bytes: 0,
                };
                let mut b = func.builder();
                b.arg(&ov)
                    .arg(&qv)
                    .arg(k_cache)
                    .arg(v_cache)
                    .arg(ids)
                    .arg(&meta.query_start)
                    .arg(&meta.query_len)
                    .arg(&meta.context_len)
                    .arg(&meta.block_tables)
                    .arg(&max_blocks_i)
                    .arg(&heads_i)
                    .arg(&kv_heads_i)
                    .arg(&bs_i)
                    .arg(&scale_log2)
                    .arg(&k_scale)
                    .arg(&v_scale);
                // SAFETY: arguments match flash_prefill.cu; the metadata was validated against the cache.
                unsafe { b.launch(cfg) }.map_err(|e| launch_err(&name, e))?;
            }
            if use_decode {
                let ids = meta
                    .decode_ids
                    .as_ref()
                    .ok_or_else(|| Error::Shape("decode sequences without ids".into()))?;
                let splits = meta.max_decode_context.div_ceil(ptx::DECODE_PARTITION).max(1);
                let rows = meta.num_decode * num_heads * splits;
                // SAFETY: the decode kernel writes every (sequence, head, split) row the reduce reads.
                let part_out = unsafe { dev.alloc::<f32>(rows * head_dim) }.map_err(cuda_err)?;
                let part_ml = unsafe { dev.alloc::<f32>(rows * 2) }.map_err(cuda_err)?;
                let splits_i = splits as i32;
                let name = format!("paged_decode_{tname}_{cname}_d{head_dim}");
                let func = dev.get_or_load_custom_func(&name, MODULE_DECODE, ptx::PAGED_DECODE)?;
                let cfg = LaunchConfig {
                    grid_dim: (splits as u32, meta.num_decode as u32, spec.num_kv_heads as u32),
                    block_dim: (128, 1, 1),
                    shared_mem_bytes: 0,
                };
                let mut b = func.builder();
                b.arg(&part_out)
                    .arg(&part_ml)
                    .arg(&qv)
                    .arg(k_cache)
                    .arg(v_cache)
                    .arg(ids)
                    .arg(&meta.query_start)
                    .arg(&meta.context_len)
                    .arg(&meta.block_tables)
                    .arg(&max_blocks_i)
                    .arg(&heads_i)
                    .arg(&kv_heads_i)
                    .arg(&bs_i)
                    .arg(&splits_i)
                    .arg(&scale_log2)
                    .arg(&k_scale)
                    .arg(&v_scale);
                // SAFETY: arguments match paged_decode.cu.
                unsafe { b.launch(cfg) }.map_err(|e| launch_err(&name, e))?;

                let rname = format!("paged_decode_reduce_{tname}");
                let func = dev.get_or_load_custom_func(&rname, MODULE_DECODE, ptx::PAGED_DECODE)?;
                let cfg = LaunchConfig {
                    grid_dim: (meta.num_decode as u32, num_heads as u32, 1),
                    block_dim: (head_dim as u32, 1, 1),
                    shared_mem_bytes: 0,
                };
                let head_dim_i = head_dim as i32;
                let mut b = func.builder();
                b.arg(&ov)
                    .arg(&part_out)
                    .arg(&part_ml)
                    .arg(ids)
                    .arg(&meta.query_start)
                    .arg(&meta.context_len)
                    .arg(&heads_i)
                    .arg(&head_dim_i)
                    .arg(&splits_i);
                // SAFETY: arguments match paged_decode.cu's reduce.
                unsafe { b.launch(cfg) }.map_err(|e| launch_err(&rname, e))?;
            }
        }};
    }
    match q.dtype() {
        DType::BF16 => run!(half::bf16),
        _ => run!(half::f16),
    }
    Ok(())
}
