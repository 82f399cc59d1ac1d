//! Engine settings as `vllm serve`'s flags give them (unset: vLLM's default or the model's own value),
//! resolved against a loaded model into an [`EngineConfig`]. One place for the rules that `ember serve`,
//! `ember bench` and `ember eval` share, so the three always build the same engine from the same flags.

use ember_models::loader::LoadedModel;

use crate::config::{CacheConfig, SchedulerConfig, SchedulingPolicy};
use crate::error::{Error, Result};
use crate::handle::EngineConfig;

/// vLLM V1's `--max-num-batched-tokens` default for online serving.
pub const DEFAULT_MAX_NUM_BATCHED_TOKENS: usize = 2048;
/// vLLM's `--max-num-seqs` default.
pub const DEFAULT_MAX_NUM_SEQS: usize = 256;
/// `--kv-cache-memory` default: 2 GiB of KV cache on the CPU.
pub const DEFAULT_KV_CACHE_MEMORY: u64 = 2 << 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineOptions {
    /// Prompt + output tokens of one request (default: the model's context length).
    pub max_model_len: Option<usize>,
    pub max_num_batched_tokens: Option<usize>,
    pub max_num_seqs: Option<usize>,
    pub enable_chunked_prefill: bool,
    pub long_prefill_token_threshold: usize,
    pub policy: SchedulingPolicy,
    pub block_size: usize,
    /// KV-cache bytes, unless `num_blocks` is given.
    pub kv_cache_memory: u64,
    pub num_blocks: Option<usize>,
    pub enable_prefix_caching: bool,
    pub seed: u64,
    /// Waiting requests above which `submit` refuses (0: no cap).
    pub max_waiting: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_model_len: None,
            max_num_batched_tokens: None,
            max_num_seqs: None,
            enable_chunked_prefill: true,
            long_prefill_token_threshold: 0,
            policy: SchedulingPolicy::Fcfs,
            block_size: 16,
            kv_cache_memory: DEFAULT_KV_CACHE_MEMORY,
            num_blocks: None,
            enable_prefix_caching: true,
            seed: 0,
            max_waiting: 0,
        }
    }
}

impl EngineOptions {
    /// The engine configuration for `model`; an [`Error::Config`] names the flag to change.
    pub fn resolve(&self, model: &LoadedModel) -> Result<EngineConfig> {
        let refuse = |msg: String| Err(Error::Config(msg));
        for (flag, value) in [
            ("--block-size", Some(self.block_size)),
            ("--max-num-seqs", self.max_num_seqs),
            ("--max-num-batched-tokens", self.max_num_batched_tokens),
            ("--max-model-len", self.max_model_len),
            ("--num-gpu-blocks-override", self.num_blocks),
        ] {
            if value == Some(0) {
                return refuse(format!("{flag} must be at least 1"));
            }
        }
        let model_len = model.config.max_position_embeddings;
        let max_model_len = match self.max_model_len {
            Some(n) if n > model_len => {
                return refuse(format!(
                    "--max-model-len {n} is greater than the model's context length ({model_len})"
                ))
            }
            Some(n) => n,
            None => model_len,
        };
        let max_num_batched_tokens =
            self.max_num_batched_tokens
                .unwrap_or(if self.enable_chunked_prefill {
                    DEFAULT_MAX_NUM_BATCHED_TOKENS
                } else {
                    // Without chunked prefill a whole prompt must fit one step (vLLM's rule).
                    DEFAULT_MAX_NUM_BATCHED_TOKENS.max(max_model_len)
                });
        let num_blocks = self.num_blocks.unwrap_or_else(|| {
            EngineConfig::num_blocks_for_memory(
                model,
                self.block_size,
                self.kv_cache_memory as usize,
            )
        });
        let capacity = num_blocks * self.block_size;
        if capacity < max_model_len {
            let block_bytes = model.model.kv_block_bytes(self.block_size);
            return refuse(format!(
                "the KV cache holds {capacity} tokens ({num_blocks} blocks of {}), fewer than one request \
                 of --max-model-len {max_model_len} needs; raise --kv-cache-memory (now {} bytes, \
                 {block_bytes} bytes per block) or lower --max-model-len",
                self.block_size, self.kv_cache_memory
            ));
        }
        let config = EngineConfig {
            scheduler: SchedulerConfig {
                max_num_batched_tokens,
                max_num_seqs: self.max_num_seqs.unwrap_or(DEFAULT_MAX_NUM_SEQS),
                max_model_len,
                enable_chunked_prefill: self.enable_chunked_prefill,
                long_prefill_token_threshold: self.long_prefill_token_threshold,
                policy: self.policy,
                seed: self.seed,
            },
            cache: CacheConfig {
                block_size: self.block_size,
                num_blocks,
                enable_prefix_caching: self.enable_prefix_caching,
            },
            max_waiting: self.max_waiting,
        };
        config.scheduler.validate()?;
        config.cache.validate()?;
        Ok(config)
    }
}
