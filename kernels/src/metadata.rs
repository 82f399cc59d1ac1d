use crate::{Error, KvCacheSpec, Result};

/// Where one sequence's tokens sit in a flattened batch, and where its context lives in the paged cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqSpan {
    /// Index of this sequence's first token in the flattened batch.
    pub query_start: usize,
    /// Number of tokens of this sequence computed in this step (a prefill chunk, or 1 for a decode).
    pub query_len: usize,
    /// Tokens in the cache once this step's are written: earlier context plus `query_len`.
    pub context_len: usize,
    /// Physical block ids holding positions `0..context_len`, in order.
    pub block_table: Vec<u32>,
}

/// The attention part of one step's batch: per token a cache slot, per sequence its span.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttentionMetadata {
    /// For each token of the batch, `block_id * block_size + offset` where its K/V are written.
    pub slot_mapping: Vec<usize>,
    pub seqs: Vec<SeqSpan>,
}

impl AttentionMetadata {
    /// Checks the metadata against the batch and the cache so the kernels can index without bounds fears.
    pub fn validate(&self, tokens: usize, spec: &KvCacheSpec) -> Result<()> {
        if self.slot_mapping.len() != tokens {
            return Err(Error::Shape(format!(
                "slot mapping has {} entries for {tokens} tokens",
                self.slot_mapping.len()
            )));
        }
        let num_slots = spec.num_blocks * spec.block_size;
        if let Some(bad) = self.slot_mapping.iter().find(|&&s| s >= num_slots) {
            return Err(Error::Shape(format!(
                "slot {bad} outside a cache of {num_slots} slots"
            )));
        }
        let mut covered = 0;
        for (i, seq) in self.seqs.iter().enumerate() {
            if seq.query_start != covered {
                return Err(Error::Shape(format!(
                    "sequence {i} starts at token {} but the previous one ended at {covered}",
                    seq.query_start
                )));
            }
            if seq.query_len == 0 || seq.query_len > seq.context_len {
                return Err(Error::Shape(format!(
                    "sequence {i}: query_len {} with context_len {}",
                    seq.query_len, seq.context_len
                )));
            }
            if seq.block_table.len() * spec.block_size < seq.context_len {
                return Err(Error::Shape(format!(
                    "sequence {i}: {} blocks of {} cannot hold {} tokens",
                    seq.block_table.len(),
                    spec.block_size,
                    seq.context_len
                )));
            }
            if let Some(bad) = seq
                .block_table
                .iter()
                .find(|&&b| b as usize >= spec.num_blocks)
            {
                return Err(Error::Shape(format!(
                    "sequence {i}: block {bad} outside a cache of {} blocks",
                    spec.num_blocks
                )));
            }
            covered += seq.query_len;
        }
        if covered != tokens {
            return Err(Error::Shape(format!(
                "sequences cover {covered} tokens of a batch of {tokens}"
            )));
        }
        Ok(())
    }
}

/// One step's attention metadata as every layer of the step reads it: the host copy, and on CUDA the
/// device copy — uploaded once per step ([`crate::PagedKvCache::prepare_step`]), or a captured CUDA
/// graph's persistent buffers refilled before each launch ([`StepMetadata::on_device`]).
pub struct StepMetadata<'a> {
    pub(crate) host: &'a AttentionMetadata,
    #[cfg(feature = "cuda")]
    pub(crate) gpu: Option<GpuStepMetadata<'a>>,
}

/// The device copy a step reads: its own upload, or buffers that outlive the step.
#[cfg(feature = "cuda")]
pub(crate) enum GpuStepMetadata<'a> {
    Owned(Box<crate::cuda::GpuAttentionMetadata>),
    Shared(&'a crate::cuda::GpuAttentionMetadata),
}

#[cfg(feature = "cuda")]
impl std::ops::Deref for GpuStepMetadata<'_> {
    type Target = crate::cuda::GpuAttentionMetadata;

    fn deref(&self) -> &Self::Target {
        match self {
            Self::Owned(m) => m,
            Self::Shared(m) => m,
        }
    }
}

impl<'a> StepMetadata<'a> {
    pub fn host(&self) -> &AttentionMetadata {
        self.host
    }

    /// A step reading device metadata that lives beyond it (a CUDA graph's input buffers); `host` is
    /// what the CPU kernels would read, unused on CUDA.
    #[cfg(feature = "cuda")]
    pub fn on_device(
        host: &'a AttentionMetadata,
        gpu: &'a crate::cuda::GpuAttentionMetadata,
    ) -> Self {
        Self {
            host,
            gpu: Some(GpuStepMetadata::Shared(gpu)),
        }
    }
}
