use crate::{Error, Result};
use candle_core::Device;

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

    /// Bytes one block takes across K and V of `num_layers` layers, in f32.
    pub fn block_bytes(
        block_size: usize,
        num_kv_heads: usize,
        head_dim: usize,
        num_layers: usize,
    ) -> usize {
        2 * block_size * num_kv_heads * head_dim * num_layers * std::mem::size_of::<f32>()
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
    Cpu { k: Vec<f32>, v: Vec<f32> },
}

/// One layer's keys and values.
pub struct LayerKvCache {
    spec: KvCacheSpec,
    storage: Storage,
}

impl LayerKvCache {
    pub fn new(spec: KvCacheSpec, device: &Device) -> Result<Self> {
        match device {
            Device::Cpu => Ok(Self {
                spec,
                storage: Storage::Cpu {
                    k: vec![0.0; spec.layer_elems()],
                    v: vec![0.0; spec.layer_elems()],
                },
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
        }
    }

    pub fn cpu_slices_mut(&mut self) -> Result<(&mut [f32], &mut [f32])> {
        match &mut self.storage {
            Storage::Cpu { k, v } => Ok((k, v)),
        }
    }
}

/// The KV cache of a whole model: one [`LayerKvCache`] per layer, all with the same geometry.
pub struct PagedKvCache {
    pub layers: Vec<LayerKvCache>,
}

impl PagedKvCache {
    pub fn new(spec: KvCacheSpec, num_layers: usize, device: &Device) -> Result<Self> {
        let layers = (0..num_layers)
            .map(|_| LayerKvCache::new(spec, device))
            .collect::<Result<_>>()?;
        Ok(Self { layers })
    }

    pub fn spec(&self) -> Option<&KvCacheSpec> {
        self.layers.first().map(|l| l.spec())
    }
}
