//! Engine settings as `vllm serve`'s flags give them (unset: vLLM's default or the model's own value),
//! resolved against a loaded model into an [`EngineConfig`]. One place for the rules that `ember serve`,
//! `ember bench` and `ember eval` share, so the three always build the same engine from the same flags.

pub use ember_kernels::check_gpu_memory_utilization;
use ember_models::loader::{LoadOptions, LoadedModel};

use crate::config::{CacheConfig, SchedulerConfig, SchedulingPolicy};
use crate::error::{Error, Result};
use crate::handle::EngineConfig;

/// vLLM V1's `--max-num-batched-tokens` default for online serving.
pub const DEFAULT_MAX_NUM_BATCHED_TOKENS: usize = 2048;
/// vLLM's `--max-num-seqs` default.
pub const DEFAULT_MAX_NUM_SEQS: usize = 256;
/// `--kv-cache-memory` default: 2 GiB of KV cache on the CPU.
pub const DEFAULT_KV_CACHE_MEMORY: u64 = 2 << 30;
/// vLLM's `--gpu-memory-utilization` default.
pub const DEFAULT_GPU_MEMORY_UTILIZATION: f64 = 0.9;

#[derive(Debug, Clone, PartialEq)]
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
    /// `--device`: auto, cpu, cuda or cuda:N.
    pub device: String,
    /// `--dtype`: auto (bf16 on CUDA, f32 on the CPU), bfloat16, float16 or float32.
    pub dtype: String,
    /// `--kv-cache-dtype`: auto or fp8 (fp8_e4m3; CUDA only).
    pub kv_cache_dtype: String,
    /// `--gpu-memory-utilization`: share of the accelerator's memory for weights, activations and KV.
    pub gpu_memory_utilization: f64,
    /// `--enforce-eager`: never capture CUDA graphs.
    pub enforce_eager: bool,
}

/// Environment variable that turns on CUDA-graph capture of decode steps (`1`). Off by default until the
/// capture has been checked on a GPU; `--enforce-eager` keeps it off either way.
pub const CUDA_GRAPHS_ENV: &str = "EMBER_CUDA_GRAPHS";

/// Whether [`CUDA_GRAPHS_ENV`] asks for CUDA graphs.
pub fn cuda_graphs_requested() -> bool {
    std::env::var(CUDA_GRAPHS_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
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
            device: "auto".into(),
            dtype: "auto".into(),
            kv_cache_dtype: "auto".into(),
            gpu_memory_utilization: DEFAULT_GPU_MEMORY_UTILIZATION,
            enforce_eager: false,
        }
    }
}

impl EngineOptions {
    /// The device, dtype and KV-cache dtype to load the model with (opens the device); an
    /// [`Error::Config`] names the flag to change.
    pub fn load_options(&self) -> Result<LoadOptions> {
        self.check_utilization()?;
        LoadOptions::resolve(&self.device, &self.dtype, &self.kv_cache_dtype)
            .map_err(|e| Error::Config(e.to_string()))
    }

    fn check_utilization(&self) -> Result<()> {
        check_gpu_memory_utilization(self.gpu_memory_utilization)
            .map_err(|e| Error::Config(e.to_string()))
    }

    /// The engine configuration for `model`; an [`Error::Config`] names the flag to change. On an
    /// accelerator without --num-gpu-blocks-override this runs one profiling step to size the pool.
    pub fn resolve(&self, model: &LoadedModel) -> Result<EngineConfig> {
        self.check_utilization()?;
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
        let max_num_seqs = self.max_num_seqs.unwrap_or(DEFAULT_MAX_NUM_SEQS);
        let on_cpu = model.model.device().is_cpu();
        let num_blocks = match self.num_blocks {
            Some(n) => n,
            None if on_cpu => EngineConfig::num_blocks_for_memory(
                model,
                self.block_size,
                self.kv_cache_memory as usize,
            ),
            None => {
                let sizing = crate::profile::profile_gpu_pool(
                    &model.model,
                    max_num_batched_tokens,
                    max_num_seqs,
                    max_model_len,
                    self.block_size,
                    self.gpu_memory_utilization,
                )?
                .ok_or_else(|| Error::Config("no memory figures for the device".into()))?;
                let gib = |b: usize| b as f64 / (1u64 << 30) as f64;
                tracing::info!(
                    "# GPU blocks: {} ({:.2} GiB of KV at {} bytes per block; {:.2} GiB in use after \
                     profiling, {:.2} GiB reserved for activations, {:.2} GiB total, \
                     --gpu-memory-utilization {})",
                    sizing.num_blocks,
                    gib(sizing.num_blocks * sizing.block_bytes),
                    sizing.block_bytes,
                    gib(sizing.used_bytes),
                    gib(sizing.activation_bytes),
                    gib(sizing.total_bytes),
                    self.gpu_memory_utilization
                );
                sizing.num_blocks
            }
        };
        let capacity = num_blocks * self.block_size;
        if capacity < max_model_len {
            let block_bytes = model.model.kv_block_bytes(self.block_size);
            let knob = if on_cpu {
                format!("--kv-cache-memory (now {} bytes", self.kv_cache_memory)
            } else {
                format!(
                    "--gpu-memory-utilization (now {}",
                    self.gpu_memory_utilization
                )
            };
            return refuse(format!(
                "the KV cache holds {capacity} tokens ({num_blocks} blocks of {}), fewer than one request \
                 of --max-model-len {max_model_len} needs; raise {knob}, {block_bytes} bytes per block) or \
                 lower --max-model-len",
                self.block_size
            ));
        }
        let config = EngineConfig {
            scheduler: SchedulerConfig {
                max_num_batched_tokens,
                max_num_seqs,
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
            cuda_graphs: !on_cpu && !self.enforce_eager && cuda_graphs_requested(),
        };
        config.scheduler.validate()?;
        config.cache.validate()?;
        Ok(config)
    }
}
