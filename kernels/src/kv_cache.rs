use std::str::FromStr;

use crate::{AttentionMetadata, Error, Result, StepMetadata};
use candle_core::{DType, Device};

/// `--kv-cache-dtype`: what the cache stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvCacheDtype {
    /// The model's compute dtype (f32 on the CPU, bf16/f16 on CUDA): exact.
    #[default]
    Auto,
    /// fp8 e4m3 with one scale per layer for K and for V (1.0, vLLM's default without calibrated
    /// scales): half the bytes of bf16. CUDA only.
    Fp8E4M3,
}

impl FromStr for KvCacheDtype {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "fp8" | "fp8_e4m3" => Ok(Self::Fp8E4M3),
            _ => Err(Error::Device(format!(
                "--kv-cache-dtype `{s}`: expected auto, fp8 or fp8_e4m3"
            ))),
        }
    }
}

impl KvCacheDtype {
    /// Bytes of one stored element for a model computing in `model_dtype`.
    pub fn elem_bytes(self, model_dtype: DType) -> usize {
        match self {
            Self::Auto => model_dtype.size_in_bytes(),
            Self::Fp8E4M3 => 1,
        }
    }
}

/// The geometry of a paged KV cache. Each layer holds `num_blocks` blocks of `block_size` token slots;
/// a block stores `[num_kv_heads, block_size, head_dim]` so one head's keys in a block are contiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvCacheSpec {
    pub num_blocks: usize,
    pub block_size: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl KvCacheSpec {
    /// Floats in one layer's K (or V) cache.
    pub fn layer_elems(&self) -> usize {
        self.num_blocks * self.block_size * self.num_kv_heads * self.head_dim
    }

    /// Bytes one block takes across K and V of `num_layers` layers, at `elem_bytes` per element.
    pub fn block_bytes_of(
        block_size: usize,
        num_kv_heads: usize,
        head_dim: usize,
        num_layers: usize,
        elem_bytes: usize,
    ) -> usize {
        2 * block_size * num_kv_heads * head_dim * num_layers * elem_bytes
    }

    /// Index of (slot, kv head, dim 0) in a layer's cache.
    #[inline]
    pub fn offset(&self, slot: usize, kv_head: usize) -> usize {
        let block = slot / self.block_size;
        let in_block = slot % self.block_size;
        ((block * self.num_kv_heads + kv_head) * self.block_size + in_block) * self.head_dim
    }
}

enum Storage {
    Cpu {
        k: Vec<f32>,
        v: Vec<f32>,
    },
    #[cfg(feature = "cuda")]
    Cuda(crate::cuda::CudaLayerKvCache),
}

/// One layer's keys and values.
pub struct LayerKvCache {
    spec: KvCacheSpec,
    storage: Storage,
}

impl LayerKvCache {
    /// An f32 cache on the CPU (the CPU's only kind).
    pub fn new(spec: KvCacheSpec, device: &Device) -> Result<Self> {
        Self::with_dtype(spec, device, DType::F32, KvCacheDtype::Auto)
    }

    /// A cache for a model computing in `model_dtype`: f32 on the CPU; on CUDA bf16/f16, or fp8 e4m3.
    pub fn with_dtype(
        spec: KvCacheSpec,
        device: &Device,
        model_dtype: DType,
        kv_dtype: KvCacheDtype,
    ) -> Result<Self> {
        match device {
            Device::Cpu => {
                if model_dtype != DType::F32 || kv_dtype != KvCacheDtype::Auto {
                    return Err(Error::Unsupported(format!(
                        "a {model_dtype:?} model with a {kv_dtype:?} KV cache on the CPU (the CPU keeps \
                         f32; --kv-cache-dtype fp8 needs CUDA)"
                    )));
                }
                Ok(Self {
                    spec,
                    storage: Storage::Cpu {
                        k: vec![0.0; spec.layer_elems()],
                        v: vec![0.0; spec.layer_elems()],
                    },
                })
            }
            #[cfg(feature = "cuda")]
            Device::Cuda(_) => Ok(Self {
                spec,
                storage: Storage::Cuda(crate::cuda::CudaLayerKvCache::new(
                    spec,
                    model_dtype,
                    kv_dtype,
                    1.0,
                    1.0,
                    device,
                )?),
            }),
            other => Err(Error::Unsupported(format!("KV cache on {other:?}"))),
        }
    }

    pub fn spec(&self) -> &KvCacheSpec {
        &self.spec
    }

    pub fn cpu_slices(&self) -> Result<(&[f32], &[f32])> {
        match &self.storage {
            Storage::Cpu { k, v } => Ok((k, v)),
            #[cfg(feature = "cuda")]
            Storage::Cuda(_) => Err(Error::Unsupported("CPU access to a CUDA KV cache".into())),
        }
    }

    pub fn cpu_slices_mut(&mut self) -> Result<(&mut [f32], &mut [f32])> {
        match &mut self.storage {
            Storage::Cpu { k, v } => Ok((k, v)),
            #[cfg(feature = "cuda")]
            Storage::Cuda(_) => Err(Error::Unsupported("CPU access to a CUDA KV cache".into())),
        }
    }

    /// The device cache, when this layer's cache lives on CUDA.
    #[cfg(feature = "cuda")]
    pub fn cuda_mut(&mut self) -> Option<&mut crate::cuda::CudaLayerKvCache> {
        match &mut self.storage {
            Storage::Cuda(c) => Some(c),
            Storage::Cpu { .. } => None,
        }
    }
}

/// The KV cache of a whole model: one [`LayerKvCache`] per layer, all with the same geometry.
pub struct PagedKvCache {
    pub layers: Vec<LayerKvCache>,
}

impl PagedKvCache {
    pub fn new(spec: KvCacheSpec, num_layers: usize, device: &Device) -> Result<Self> {
        Self::with_dtype(spec, num_layers, device, DType::F32, KvCacheDtype::Auto)
    }

    /// See [`LayerKvCache::with_dtype`].
    pub fn with_dtype(
        spec: KvCacheSpec,
        num_layers: usize,
        device: &Device,
        model_dtype: DType,
        kv_dtype: KvCacheDtype,
    ) -> Result<Self> {
        let layers = (0..num_layers)
            .map(|_| LayerKvCache::with_dtype(spec, device, model_dtype, kv_dtype))
            .collect::<Result<_>>()?;
        Ok(Self { layers })
    }

    /// This step's metadata for every layer: on CUDA validated and uploaded once here, not per layer;
    /// on the CPU the host metadata as it is (each layer's attention validates it, as before).
    pub fn prepare_step<'a>(
        &self,
        meta: &'a AttentionMetadata,
        tokens: usize,
    ) -> Result<StepMetadata<'a>> {
        match self.layers.first().map(|l| &l.storage) {
            #[cfg(feature = "cuda")]
            Some(Storage::Cuda(c)) => Ok(StepMetadata {
                host: meta,
                gpu: Some(crate::metadata::GpuStepMetadata::Owned(Box::new(
                    crate::cuda::GpuAttentionMetadata::upload(meta, tokens, c.spec(), c.device())?,
                ))),
            }),
            _ => {
                let _ = tokens;
                Ok(StepMetadata {
                    host: meta,
                    #[cfg(feature = "cuda")]
                    gpu: None,
                })
            }
        }
    }

    pub fn spec(&self) -> Option<&KvCacheSpec> {
        self.layers.first().map(|l| l.spec())
    }
}
