use super::cuda_err;
use crate::{AttentionMetadata, Error, KvCacheSpec, Result};
use candle_core::cuda_backend::cudarc::driver::CudaSlice;
use candle_core::cuda_backend::CudaDevice;

/// [`AttentionMetadata`] on the device, uploaded once per step and shared by every layer: per sequence
/// its query start, query length, context length and block table (padded to the longest), plus the slot
/// of each token and which sequences go to the decode kernel (one query token) or the prefill kernel.
pub struct GpuAttentionMetadata {
    pub(crate) tokens: usize,
    pub(crate) block_size: usize,
    pub(crate) query_start: CudaSlice<i32>,
    pub(crate) query_len: CudaSlice<i32>,
    pub(crate) context_len: CudaSlice<i32>,
    pub(crate) block_tables: CudaSlice<i32>,
    pub(crate) max_blocks_per_seq: usize,
    pub(crate) slot_mapping: CudaSlice<i64>,
    /// Sequences with more than one query token, and the longest such query.
    pub(crate) prefill_ids: Option<CudaSlice<i32>>,
    pub(crate) num_prefill: usize,
    pub(crate) max_prefill_len: usize,
    /// Sequences with one query token, and the longest context among them.
    pub(crate) decode_ids: Option<CudaSlice<i32>>,
    pub(crate) num_decode: usize,
    pub(crate) max_decode_context: usize,
    /// Every sequence, and the longest query (for running everything through the prefill kernel).
    pub(crate) all_ids: Option<CudaSlice<i32>>,
    pub(crate) max_query_len: usize,
    pub(crate) num_seqs: usize,
}

impl GpuAttentionMetadata {
    /// Validates `meta` for a batch of `tokens` against the cache geometry and copies it to `dev`.
    pub fn upload(
        meta: &AttentionMetadata,
        tokens: usize,
        spec: &KvCacheSpec,
        dev: &CudaDevice,
    ) -> Result<Self> {
        meta.validate(tokens, spec)?;
        let to_i32 = |x: usize, what: &str| {
            i32::try_from(x).map_err(|_| Error::Shape(format!("{what} {x} exceeds i32")))
        };
        let n = meta.seqs.len();
        let max_blocks = meta
            .seqs
            .iter()
            .map(|s| s.block_table.len())
            .max()
            .unwrap_or(0)
            .max(1);
        let mut query_start = Vec::with_capacity(n);
        let mut query_len = Vec::with_capacity(n);
        let mut context_len = Vec::with_capacity(n);
        let mut tables = vec![0i32; n * max_blocks];
        let (mut prefill, mut decode) = (Vec::new(), Vec::new());
        let (mut max_prefill_len, mut max_decode_context, mut max_query_len) = (0, 0, 0);
        for (i, s) in meta.seqs.iter().enumerate() {
            query_start.push(to_i32(s.query_start, "query start")?);
            query_len.push(to_i32(s.query_len, "query length")?);
            context_len.push(to_i32(s.context_len, "context length")?);
            for (j, &b) in s.block_table.iter().enumerate() {
                tables[i * max_blocks + j] = to_i32(b as usize, "block id")?;
            }
            max_query_len = max_query_len.max(s.query_len);
            if s.query_len == 1 {
                decode.push(i as i32);
                max_decode_context = max_decode_context.max(s.context_len);
            } else {
                prefill.push(i as i32);
                max_prefill_len = max_prefill_len.max(s.query_len);
            }
        }
        let slots: Vec<i64> = meta.slot_mapping.iter().map(|&s| s as i64).collect();
        let upload_ids = |ids: &[i32]| -> Result<Option<CudaSlice<i32>>> {
            if ids.is_empty() {
                Ok(None)
            } else {
                Ok(Some(dev.clone_htod(ids).map_err(cuda_err)?))
            }
        };
        let all: Vec<i32> = (0..n as i32).collect();
        Ok(Self {
            tokens,
            block_size: spec.block_size,
            query_start: dev.clone_htod(&pad(query_start)).map_err(cuda_err)?,
            query_len: dev.clone_htod(&pad(query_len)).map_err(cuda_err)?,
            context_len: dev.clone_htod(&pad(context_len)).map_err(cuda_err)?,
            block_tables: dev.clone_htod(&pad(tables)).map_err(cuda_err)?,
            max_blocks_per_seq: max_blocks,
            slot_mapping: dev
                .clone_htod(&if slots.is_empty() { vec![-1] } else { slots })
                .map_err(cuda_err)?,
            prefill_ids: upload_ids(&prefill)?,
            num_prefill: prefill.len(),
            max_prefill_len,
            decode_ids: upload_ids(&decode)?,
            num_decode: decode.len(),
            max_decode_context,
            all_ids: upload_ids(&all)?,
            max_query_len,
            num_seqs: n,
        })
    }

    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Persistent metadata for a captured decode step of `capacity` one-token sequences with contexts of
    /// at most `max_context` tokens: every shape and launch size is fixed (the decode kernel's split count
    /// is sized for `max_context`; splits past a sequence's context exit at once), and
    /// [`GpuAttentionMetadata::fill_decode`] rewrites the contents in place before each launch.
    pub fn for_decode(
        capacity: usize,
        max_context: usize,
        spec: &KvCacheSpec,
        dev: &CudaDevice,
    ) -> Result<Self> {
        if capacity == 0 || max_context == 0 || capacity > i32::MAX as usize {
            return Err(Error::Shape(format!(
                "a decode step of {capacity} sequences up to {max_context} tokens"
            )));
        }
        let max_blocks = max_context.div_ceil(spec.block_size);
        let ids: Vec<i32> = (0..capacity as i32).collect();
        let upload = |v: &[i32]| dev.clone_htod(v).map_err(cuda_err);
        Ok(Self {
            tokens: capacity,
            block_size: spec.block_size,
            query_start: upload(&ids)?,
            query_len: upload(&vec![1; capacity])?,
            context_len: upload(&vec![1; capacity])?,
            block_tables: upload(&vec![0; capacity * max_blocks])?,
            max_blocks_per_seq: max_blocks,
            slot_mapping: dev.clone_htod(&vec![-1i64; capacity]).map_err(cuda_err)?,
            prefill_ids: None,
            num_prefill: 0,
            max_prefill_len: 0,
            decode_ids: Some(upload(&ids)?),
            num_decode: capacity,
            max_decode_context: max_context,
            all_ids: Some(upload(&ids)?),
            max_query_len: 1,
            num_seqs: capacity,
        })
    }

    /// Sequences a [`GpuAttentionMetadata::for_decode`] step holds.
    pub fn decode_capacity(&self) -> usize {
        self.num_decode
    }

    /// The longest context a [`GpuAttentionMetadata::for_decode`] step attends over.
    pub fn decode_max_context(&self) -> usize {
        self.max_decode_context
    }

    /// Writes a decode step's metadata (every sequence one token, `meta.seqs.len()` at most the capacity,
    /// contexts at most `max_context`) into buffers made by [`GpuAttentionMetadata::for_decode`]. The
    /// rows past the step's sequences are padding: a one-token context at block 0 and no cache write.
    pub fn fill_decode(
        &mut self,
        meta: &AttentionMetadata,
        spec: &KvCacheSpec,
        dev: &CudaDevice,
    ) -> Result<()> {
        let n = meta.seqs.len();
        meta.validate(n, spec)?;
        let (capacity, max_blocks) = (self.num_decode, self.max_blocks_per_seq);
        if n > capacity || spec.block_size != self.block_size || self.num_prefill != 0 {
            return Err(Error::Shape(format!(
                "{n} sequences (block size {}) into decode buffers for {capacity} (block size {})",
                spec.block_size, self.block_size
            )));
        }
        let mut context_len = vec![1i32; capacity];
        let mut tables = vec![0i32; capacity * max_blocks];
        let mut slots = vec![-1i64; capacity];
        for (i, s) in meta.seqs.iter().enumerate() {
            if s.query_len != 1 || s.context_len > self.max_decode_context {
                return Err(Error::Shape(format!(
                    "sequence {i}: {} query tokens over {} of context in a decode step of one token                      over at most {}",
                    s.query_len, s.context_len, self.max_decode_context
                )));
            }
            // validate() checked the ids against the cache (< num_blocks) and the context against the
            // table; only the blocks the context covers are read.
            let used = s.context_len.div_ceil(spec.block_size);
            for (j, &b) in s.block_table[..used].iter().enumerate() {
                tables[i * max_blocks + j] = b as i32;
            }
            context_len[i] = s.context_len as i32;
            slots[i] = meta.slot_mapping[i] as i64;
        }
        dev.memcpy_htod(&context_len, &mut self.context_len)
            .map_err(cuda_err)?;
        dev.memcpy_htod(&tables, &mut self.block_tables)
            .map_err(cuda_err)?;
        dev.memcpy_htod(&slots, &mut self.slot_mapping)
            .map_err(cuda_err)?;
        Ok(())
    }
}

/// Device allocations of length zero are not allowed; an empty batch uploads one unused element.
fn pad(mut v: Vec<i32>) -> Vec<i32> {
    if v.is_empty() {
        v.push(0);
    }
    v
}
