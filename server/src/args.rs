//! `ember serve` flags: `vllm serve`'s names, meanings and defaults, plus a few of ember's own.
//!
//! Flags ember cannot honour (tensor parallelism, other quantizations, …) are refused at start by
//! [`ServeArgs::validate`] with a message saying so; harmless ones (`--swap-space`, `--trust-remote-code`,
//! …) are accepted and have no effect.

use std::path::PathBuf;

use clap::Args;
use ember_engine::{EngineOptions, SchedulingPolicy};

/// The registry alias served when no model is named.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

/// Where and in what precision the model runs (`vllm serve`'s names and defaults); shared by every
/// command that loads a model (serve, bench, eval, generate).
#[derive(Args, Debug, Clone)]
pub struct DeviceArgs {
    /// auto (CUDA device 0 when ember is built with `cuda` and one is present, else the CPU), cpu, cuda
    /// or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// auto (bfloat16 on CUDA, float32 on the CPU), bfloat16, float16 or float32. The CPU computes in
    /// float32 only (quantized GGUF weights stay quantized there).
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// auto (the compute dtype) or fp8 / fp8_e4m3 (CUDA only: half the bytes of bfloat16).
    #[arg(long, default_value = "auto")]
    pub kv_cache_dtype: String,
    /// Share of the accelerator's memory for weights, activations and KV cache, in (0, 1]. On the CPU the
    /// KV cache is sized by --kv-cache-memory instead.
    #[arg(long, default_value_t = 0.9)]
    pub gpu_memory_utilization: f64,
}

impl DeviceArgs {
    /// Copies these flags into `options`.
    pub fn apply(&self, options: &mut EngineOptions) {
        options.device = self.device.clone();
        options.dtype = self.dtype.clone();
        options.kv_cache_dtype = self.kv_cache_dtype.clone();
        options.gpu_memory_utilization = self.gpu_memory_utilization;
    }
}

/// The engine's flags (`vllm serve`'s names and defaults), shared by `ember serve` and `ember bench`'s
/// in-process target so both build the same engine.
#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// Prompt + output tokens of one request (default: the model's context length).
    #[arg(long)]
    pub max_model_len: Option<usize>,
    /// Token budget of one engine step.
    #[arg(long)]
    pub max_num_batched_tokens: Option<usize>,
    /// Most sequences running at once.
    #[arg(long)]
    pub max_num_seqs: Option<usize>,
    /// Split long prompts over several steps (on by default).
    #[arg(long, overrides_with = "no_enable_chunked_prefill")]
    pub enable_chunked_prefill: bool,
    #[arg(long, overrides_with = "enable_chunked_prefill")]
    pub no_enable_chunked_prefill: bool,
    /// Reuse KV blocks of shared prompt prefixes (on by default).
    #[arg(long, overrides_with = "no_enable_prefix_caching")]
    pub enable_prefix_caching: bool,
    #[arg(long, overrides_with = "enable_prefix_caching")]
    pub no_enable_prefix_caching: bool,
    /// Prompt tokens one request may compute per step when others wait (0: no cap).
    #[arg(long, default_value_t = 0)]
    pub long_prefill_token_threshold: usize,
    /// `fcfs` or `priority` (lower `priority` runs earlier).
    #[arg(long, default_value = "fcfs", value_parser = ["fcfs", "priority"])]
    pub scheduling_policy: String,
    /// Tokens per KV-cache block.
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    /// KV cache size in bytes on the CPU (`2GiB`, `512MiB`, `1000000`); ignored with --num-gpu-blocks-override.
    #[arg(long, alias = "kv-cache-memory-bytes", default_value = "2GiB", value_parser = parse_bytes)]
    pub kv_cache_memory: u64,
    /// Exact number of KV-cache blocks (overrides --kv-cache-memory and --gpu-memory-utilization).
    #[arg(long)]
    pub num_gpu_blocks_override: Option<usize>,
    /// Never capture CUDA graphs: every step's kernels are launched one by one. (Decode-step capture is
    /// opt-in with EMBER_CUDA_GRAPHS=1 until it has been checked on a GPU.)
    #[arg(long)]
    pub enforce_eager: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

impl EngineArgs {
    /// The engine settings these flags ask for, with the engine seed and the caller's queue cap (0: none).
    pub fn options(&self, seed: u64, max_waiting: usize) -> EngineOptions {
        let mut options = EngineOptions {
            max_model_len: self.max_model_len,
            max_num_batched_tokens: self.max_num_batched_tokens,
            max_num_seqs: self.max_num_seqs,
            enable_chunked_prefill: !self.no_enable_chunked_prefill,
            long_prefill_token_threshold: self.long_prefill_token_threshold,
            policy: if self.scheduling_policy == "priority" {
                SchedulingPolicy::Priority
            } else {
                SchedulingPolicy::Fcfs
            },
            block_size: self.block_size,
            kv_cache_memory: self.kv_cache_memory,
            num_blocks: self.num_gpu_blocks_override,
            enable_prefix_caching: !self.no_enable_prefix_caching,
            seed,
            max_waiting,
            enforce_eager: self.enforce_eager,
            ..EngineOptions::default()
        };
        self.device.apply(&mut options);
        options
    }
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// A registry alias, a GGUF file, a Hugging Face model directory, or a hub id in the local HF cache.
    #[arg(value_name = "MODEL")]
    pub model_tag: Option<String>,
    /// Same as the positional MODEL (vLLM's older spelling).
    #[arg(long)]
    pub model: Option<String>,

    /// Address to bind (vLLM binds all interfaces by default).
    #[arg(long, default_value = "0.0.0.0")]
    pub host: String,
    /// Port to bind; 0 picks a free one (the address is logged).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Key required on /v1/* as `Authorization: Bearer KEY` (also VLLM_API_KEY or EMBER_API_KEY).
    #[arg(long, env = "VLLM_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Names the model is served under; the first is reported in responses and metrics.
    #[arg(long, num_args = 1..)]
    pub served_model_name: Vec<String>,

    #[command(flatten)]
    pub engine: EngineArgs,
    /// Engine seed: requests without their own seed draw one from it.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Only 1: ember runs on one device.
    #[arg(long, short = 't', default_value_t = 1)]
    pub tensor_parallel_size: usize,
    /// Only 1: ember runs on one device.
    #[arg(long, short = 'p', default_value_t = 1)]
    pub pipeline_parallel_size: usize,
    /// Only 1.
    #[arg(long, default_value_t = 1)]
    pub data_parallel_size: usize,
    /// Accepted for compatibility (CPU swap space in GiB); preempted requests are recomputed.
    #[arg(long, default_value_t = 4.0)]
    pub swap_space: f64,
    /// Accepted for compatibility; ember runs no model code from the model's repository.
    #[arg(long)]
    pub trust_remote_code: bool,
    /// Weight quantization: unset, or `gguf` for GGUF files (their own quantization is used as stored).
    #[arg(long, short = 'q')]
    pub quantization: Option<String>,
    /// `auto`: default sampling from the model's generation_config.json; `vllm`: vLLM's defaults;
    /// a directory: its generation_config.json.
    #[arg(long, default_value = "auto")]
    pub generation_config: String,
    /// A Jinja chat template file (or the template itself) replacing the model's.
    #[arg(long)]
    pub chat_template: Option<String>,
    /// Tokenizer to use instead of the model's; only the model's own is supported.
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// Largest `logprobs` / `prompt_logprobs` a request may ask for.
    #[arg(long, default_value_t = 20)]
    pub max_logprobs: usize,
    /// No log line per request.
    #[arg(long, alias = "no-enable-log-requests")]
    pub disable_log_requests: bool,
    /// No periodic engine statistics in the log.
    #[arg(long)]
    pub disable_log_stats: bool,
    /// Accepted for compatibility (use EMBER_LOG to set the log filter).
    #[arg(long)]
    pub uvicorn_log_level: Option<String>,
    /// Accepted for compatibility: --chat-template is the only tool-calling support so far.
    #[arg(long)]
    pub enable_auto_tool_choice: bool,
    #[arg(long)]
    pub tool_call_parser: Option<String>,

    /// ember: requests in flight (completions + chat) above which new ones get 429 (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub concurrency_limit: usize,
    /// ember: requests waiting for a KV/batch slot above which new ones get 429 (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub max_waiting_requests: usize,
    /// ember: seconds to let in-flight requests finish after SIGINT/SIGTERM.
    #[arg(long, default_value_t = 30.0)]
    pub shutdown_timeout: f64,
    /// ember: largest request body in bytes; bigger ones get 413.
    #[arg(long, default_value = "16MiB", value_parser = parse_bytes)]
    pub max_request_body: u64,
}

/// Why the flags cannot be served.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ArgsError(pub String);

impl ServeArgs {
    /// The model to serve: the positional MODEL, else --model, else the default alias.
    pub fn model_spec(&self) -> Result<&str, ArgsError> {
        match (&self.model_tag, &self.model) {
            (Some(a), Some(b)) if a != b => Err(ArgsError(format!(
                "two different models given: `{a}` (positional) and `{b}` (--model)"
            ))),
            (Some(a), _) => Ok(a),
            (None, Some(b)) => Ok(b),
            (None, None) => Ok(DEFAULT_MODEL),
        }
    }

    /// The key from --api-key / VLLM_API_KEY, else EMBER_API_KEY; empty means none.
    pub fn resolved_api_key(&self) -> Option<String> {
        self.api_key
            .clone()
            .or_else(|| std::env::var("EMBER_API_KEY").ok())
            .filter(|k| !k.is_empty())
    }

    /// Refuses what ember cannot honour, naming the flag.
    pub fn validate(&self) -> Result<(), ArgsError> {
        let refuse = |msg: String| Err(ArgsError(msg));
        self.model_spec()?;
        if self.tensor_parallel_size != 1 {
            return refuse(format!(
                "--tensor-parallel-size {} is not supported: ember runs a model on one device (use 1)",
                self.tensor_parallel_size
            ));
        }
        if self.pipeline_parallel_size != 1 {
            return refuse(format!(
                "--pipeline-parallel-size {} is not supported: ember runs a model on one device (use 1)",
                self.pipeline_parallel_size
            ));
        }
        if self.data_parallel_size != 1 {
            return refuse(format!(
                "--data-parallel-size {} is not supported: run several ember processes instead (use 1)",
                self.data_parallel_size
            ));
        }
        if let Some(q) = &self.quantization {
            if q != "gguf" {
                return refuse(format!(
                    "--quantization {q} is not supported: ember serves GGUF quantizations as stored \
                     (leave it unset, or gguf)"
                ));
            }
        }
        if let Some(t) = &self.tokenizer {
            if Some(t.as_str()) != self.model_spec().ok() {
                return refuse(format!(
                    "--tokenizer {t} is not supported: ember uses the model's own tokenizer"
                ));
            }
        }
        if let Err(e) =
            ember_engine::check_gpu_memory_utilization(self.engine.device.gpu_memory_utilization)
        {
            return refuse(e.to_string());
        }
        if !(self.shutdown_timeout >= 0.0 && self.shutdown_timeout.is_finite()) {
            return refuse("--shutdown-timeout must be a non-negative number of seconds".into());
        }
        if self.max_logprobs > ember_engine::request::MAX_LOGPROBS {
            return refuse(format!(
                "--max-logprobs above {} is not supported",
                ember_engine::request::MAX_LOGPROBS
            ));
        }
        if self.max_request_body < 1024 {
            return refuse("--max-request-body must be at least 1KiB".into());
        }
        Ok(())
    }

    /// The chat template override: a file's contents, or the flag's value itself when it is no file but
    /// looks like a template (vLLM accepts both).
    pub fn chat_template_source(&self) -> Result<Option<String>, ArgsError> {
        let Some(t) = &self.chat_template else {
            return Ok(None);
        };
        let path = PathBuf::from(t);
        if path.is_file() {
            return std::fs::read_to_string(&path).map(Some).map_err(|e| {
                ArgsError(format!("--chat-template: reading {}: {e}", path.display()))
            });
        }
        if t.contains("{{") || t.contains("{%") {
            return Ok(Some(t.clone()));
        }
        Err(ArgsError(format!(
            "--chat-template {t}: no such file (and not a Jinja template)"
        )))
    }
}

/// `2GiB`, `512MiB`, `1.5G`, `4096`, `64k` → bytes (binary units for both `G` and `GiB`).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (examples: 2GiB, 512MiB, 1000000)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => return Err(format!("`{s}`: unknown size unit `{other}`")),
    };
    let bytes = value * mult as f64;
    if !(bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64) {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn parse(argv: &[&str]) -> ServeArgs {
        Cli::try_parse_from(std::iter::once("serve").chain(argv.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("512mib").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1000").unwrap(), 1000);
        assert_eq!(parse_bytes("1.5G").unwrap(), 3 << 29);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("3 parsecs").is_err());
    }

    #[test]
    fn defaults_match_vllm() {
        let a = parse(&[]);
        assert_eq!(a.port, 8000);
        let o = a.engine.options(0, 0);
        assert_eq!(o, EngineOptions::default());
        assert_eq!(a.model_spec().unwrap(), DEFAULT_MODEL);
        a.validate().unwrap();
    }

    #[test]
    fn negations_and_refusals() {
        let a = parse(&[
            "m",
            "--no-enable-prefix-caching",
            "--no-enable-chunked-prefill",
            "--swap-space",
            "8",
            "--disable-log-requests",
        ]);
        let o = a.engine.options(0, 0);
        assert!(!o.enable_prefix_caching && !o.enable_chunked_prefill);
        assert!(!o.enforce_eager);
        a.validate().unwrap();
        assert!(
            parse(&["m", "--enforce-eager"])
                .engine
                .options(0, 0)
                .enforce_eager
        );
        let e = parse(&["m", "--tensor-parallel-size", "2"])
            .validate()
            .unwrap_err();
        assert!(e.0.contains("--tensor-parallel-size 2"), "{e}");
        // Device flags are parsed as given and checked when the device is opened (see EngineOptions).
        let o = parse(&["m", "--device", "cuda:1", "--kv-cache-dtype", "fp8"])
            .engine
            .options(0, 0);
        assert_eq!(
            (o.device.as_str(), o.kv_cache_dtype.as_str()),
            ("cuda:1", "fp8")
        );
        assert!(parse(&["m", "--gpu-memory-utilization", "1.5"])
            .validate()
            .is_err());
        assert!(parse(&["m", "--quantization", "awq"]).validate().is_err());
        assert!(parse(&["m", "--model", "other"]).validate().is_err());
    }
}
