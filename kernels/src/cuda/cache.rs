use super::{cuda_err, dtype_name, launch_err, ptx, GpuAttentionMetadata, MODULE_CACHE};
use crate::{Error, KvCacheDtype, KvCacheSpec, Result};
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::CudaDevice;
use candle_core::{DType, Device, Storage, Tensor};

/// One layer's paged K and V cache in device memory, raw bytes in [`KvCacheSpec`]'s layout.
pub struct CudaLayerKvCache {
    spec: KvCacheSpec,
    model_dtype: DType,
    kv_dtype: KvCacheDtype,
    k: CudaSlice<u8>,
    v: CudaSlice<u8>,
    k_scale: f32,
    v_scale: f32,
    dev: CudaDevice,
}

impl CudaLayerKvCache {
    /// Allocates (uninitialised) a cache for a model computing in `model_dtype` (bf16 or f16). For fp8,
    /// `k_scale`/`v_scale` map the stored e4m3 value back to the model's range (`x ≈ fp8 · scale`); for the
    /// model's own type they are ignored.
    pub fn new(
        spec: KvCacheSpec,
        model_dtype: DType,
        kv_dtype: KvCacheDtype,
        k_scale: f32,
        v_scale: f32,
        device: &Device,
    ) -> Result<Self> {
        dtype_name(model_dtype)?;
        let Device::Cuda(dev) = device else {
            return Err(Error::Unsupported(format!("CUDA KV cache on {device:?}")));
        };
        if !(k_scale.is_finite() && k_scale > 0.0 && v_scale.is_finite() && v_scale > 0.0) {
            return Err(Error::Shape(format!(
                "fp8 KV scales must be positive and finite, got {k_scale} and {v_scale}"
            )));
        }
        if !spec.head_dim.is_multiple_of(8) {
            return Err(Error::Unsupported(format!(
                "CUDA KV cache with head_dim {} (a multiple of 8 is needed)",
                spec.head_dim
            )));
        }
        let bytes = spec.layer_elems() * kv_dtype.elem_bytes(model_dtype);
        // SAFETY: the cache is only read where the slot mapping wrote it (the kernels mask other slots).
        let k = unsafe { dev.alloc::<u8>(bytes.max(1)) }.map_err(cuda_err)?;
        let v = unsafe { dev.alloc::<u8>(bytes.max(1)) }.map_err(cuda_err)?;
        Ok(Self {
            spec,
            model_dtype,
            kv_dtype,
            k,
            v,
            k_scale,
            v_scale,
            dev: dev.clone(),
        })
    }

    pub fn spec(&self) -> &KvCacheSpec {
        &self.spec
    }
    pub fn model_dtype(&self) -> DType {
        self.model_dtype
    }
    pub fn kv_dtype(&self) -> KvCacheDtype {
        self.kv_dtype
    }
    pub fn scales(&self) -> (f32, f32) {
        match self.kv_dtype {
            KvCacheDtype::Auto => (1.0, 1.0),
            KvCacheDtype::Fp8E4M3 => (self.k_scale, self.v_scale),
        }
    }
    pub(crate) fn slices(&self) -> (&CudaSlice<u8>, &CudaSlice<u8>) {
        (&self.k, &self.v)
    }
    pub(crate) fn device(&self) -> &CudaDevice {
        &self.dev
    }
    /// Kernel-name fragment of the stored element type.
    pub(crate) fn cache_name(&self) -> Result<&'static str> {
        match self.kv_dtype {
            KvCacheDtype::Auto => dtype_name(self.model_dtype),
            KvCacheDtype::Fp8E4M3 => Ok("fp8"),
        }
    }

    /// Sets every byte of K and V (tests poison the cache with 0xFF, a NaN in bf16, f16 and e4m3).
    pub fn fill_bytes(&mut self, byte: u8) -> Result<()> {
        let host = vec![byte; self.k.len()];
        self.dev.memcpy_htod(&host, &mut self.k).map_err(cuda_err)?;
        self.dev.memcpy_htod(&host, &mut self.v).map_err(cuda_err)?;
        Ok(())
    }

    /// Copies raw K and V bytes to the host (tests decode them against the layout).
    pub fn to_host_bytes(&self) -> Result<(Vec<u8>, Vec<u8>)> {
        Ok((
            self.dev.clone_dtoh(&self.k).map_err(cuda_err)?,
            self.dev.clone_dtoh(&self.v).map_err(cuda_err)?,
        ))
    }

    /// Writes this step's keys and values (`[tokens, num_kv_heads, head_dim]`, the model's dtype, on this
    /// device) into the cache at `meta`'s slot mapping.
    pub fn write(&mut self, k: &Tensor, v: &Tensor, meta: &GpuAttentionMetadata) -> Result<()> {
        let spec = self.spec;
        let want = (meta.tokens, spec.num_kv_heads, spec.head_dim);
        if k.dims3()? != want || v.dims3()? != want {
            return Err(Error::Shape(format!(
                "cache write of k {:?} / v {:?}, expected {want:?}",
                k.dims(),
                v.dims()
            )));
        }
        if k.dtype() != self.model_dtype || v.dtype() != self.model_dtype {
            return Err(Error::Shape(format!(
                "cache write of {:?}/{:?} into a cache for {:?}",
                k.dtype(),
                v.dtype(),
                self.model_dtype
            )));
        }
        if meta.tokens == 0 {
            return Ok(());
        }
        let k = k.contiguous()?;
        let v = v.contiguous()?;
        let name = format!(
            "cache_write_{}_{}",
            dtype_name(self.model_dtype)?,
            self.cache_name()?
        );
        let func = self
            .dev
            .get_or_load_custom_func(&name, MODULE_CACHE, ptx::CACHE_WRITE)?;
        let (k_store, k_layout) = k.storage_and_layout();
        let (v_store, v_layout) = v.storage_and_layout();
        let (Storage::Cuda(k_store), Storage::Cuda(v_store)) = (&*k_store, &*v_store) else {
            return Err(Error::Unsupported("cache write of non-CUDA tensors".into()));
        };
        let (inv_k, inv_v) = (1.0 / self.scales().0, 1.0 / self.scales().1);
        let (kv_heads, block_size, head_dim) = (
            spec.num_kv_heads as i32,
            spec.block_size as i32,
            spec.head_dim as i32,
        );
        let cfg = LaunchConfig {
            grid_dim: (meta.tokens as u32, 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        macro_rules! launch {
            ($t:ty) => {{
                let ks = k_store.as_cuda_slice::<$t>()?.slice(k_layout.start_offset()..);
                let vs = v_store.as_cuda_slice::<$t>()?.slice(v_layout.start_offset()..);
                let mut b = func.builder();
                b.arg(&mut self.k)
                    .arg(&mut self.v)
                    .arg(&ks)
                    .arg(&vs)
                    .arg(&meta.slot_mapping)
                    .arg(&kv_heads)
                    .arg(&block_size)
                    .arg(&head_dim)
                    .arg(&inv_k)
                    .arg(&inv_v);
                // SAFETY: argument list matches cache_write.cu; slots were validated against the cache size.
                unsafe { b.launch(cfg) }.map_err(|e| launch_err(&name, e))?;
            }};
        }
        match self.model_dtype {
            DType::BF16 => launch!(half::bf16),
            _ => launch!(half::f16),
        }
        Ok(())
    }
}
