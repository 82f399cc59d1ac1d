//! Scheduler and KV-cache configuration, with vLLM V1's defaults and flag meanings.

use crate::error::{Error, Result};

/// `--scheduling-policy`: first come first served, or by `priority` (lower runs earlier; ties by arrival).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SchedulingPolicy {
    #[default]
    Fcfs,
    Priority,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Token budget of one step (`--max-num-batched-tokens`).
    pub max_num_batched_tokens: usize,
    /// Most requests running at once (`--max-num-seqs`).
    pub max_num_seqs: usize,
    /// Prompt + output tokens of one request (`--max-model-len`).
    pub max_model_len: usize,
    /// Split long prompts over several steps (`--enable-chunked-prefill`).
    pub enable_chunked_prefill: bool,
    /// Most prompt tokens one request may compute in a step (0 = no cap besides the budget).
    pub long_prefill_token_threshold: usize,
    pub policy: SchedulingPolicy,
    /// Engine seed (`--seed`): requests without their own seed draw one from it at admission.
    pub seed: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_num_batched_tokens: 2048,
            max_num_seqs: 256,
            max_model_len: 4096,
            enable_chunked_prefill: true,
            long_prefill_token_threshold: 0,
            policy: SchedulingPolicy::Fcfs,
            seed: 0,
        }
    }
}

impl SchedulerConfig {
    pub fn validate(&self) -> Result<()> {
        if self.max_num_batched_tokens == 0 || self.max_num_seqs == 0 || self.max_model_len == 0 {
            return Err(Error::Config(
                "max_num_batched_tokens, max_num_seqs and max_model_len must be at least 1".into(),
            ));
        }
        if !self.enable_chunked_prefill && self.max_num_batched_tokens < self.max_model_len {
            return Err(Error::Config(format!(
                "max_num_batched_tokens ({}) is smaller than max_model_len ({}): without chunked prefill \
                 some prompts could never be scheduled; raise max_num_batched_tokens or enable chunked prefill",
                self.max_num_batched_tokens, self.max_model_len
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Tokens per KV block (`--block-size`).
    pub block_size: usize,
    /// Blocks in the pool (from the memory left after the weights).
    pub num_blocks: usize,
    /// Automatic prefix caching (`--enable-prefix-caching`, on by default as in vLLM V1).
    pub enable_prefix_caching: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            block_size: 16,
            num_blocks: 1024,
            enable_prefix_caching: true,
        }
    }
}

impl CacheConfig {
    pub fn validate(&self) -> Result<()> {
        if self.block_size == 0 || self.num_blocks == 0 {
            return Err(Error::Config(
                "block_size and num_blocks must be at least 1".into(),
            ));
        }
        if self.num_blocks > u32::MAX as usize {
            return Err(Error::Config(format!(
                "num_blocks ({}) does not fit in u32 block ids",
                self.num_blocks
            )));
        }
        Ok(())
    }

    /// Tokens the whole pool holds.
    pub fn capacity_tokens(&self) -> usize {
        self.block_size * self.num_blocks
    }
}
