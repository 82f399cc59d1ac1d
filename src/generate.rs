//! `ember generate`: one prompt through the paged forward, text streamed to stdout as it is sampled.

use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use ember_engine::{CacheConfig, LlmEngine, Request, SamplingParams, SchedulerConfig};
use ember_models::chat_template::{ChatMessage, ChatTemplate};
use ember_models::loader::{self, registry, LoadOptions};
use ember_server::args::DeviceArgs;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// A GGUF file, a Hugging Face model directory, a hub id, or a registry alias.
    #[arg(long, default_value = registry::DEFAULT_MODEL_ALIAS)]
    pub model: String,
    #[arg(long)]
    pub prompt: String,
    /// Wrap the prompt as a user message in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// 0 means greedy.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// 0 disables top-k.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Tokens per KV-cache block.
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    /// Keep generating past the end-of-sequence token.
    #[arg(long)]
    pub ignore_eos: bool,
    /// --gpu-memory-utilization is accepted but unused: generate sizes its KV cache for its one request.
    #[command(flatten)]
    pub device: DeviceArgs,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    anyhow::ensure!(args.block_size > 0, "--block-size must be positive");
    anyhow::ensure!(args.temperature >= 0.0, "--temperature must be >= 0");
    anyhow::ensure!(
        args.top_p > 0.0 && args.top_p <= 1.0,
        "--top-p must be in (0, 1]"
    );
    let d = &args.device;
    ember_engine::check_gpu_memory_utilization(d.gpu_memory_utilization)?;
    let load_options = LoadOptions::resolve(&d.device, &d.dtype, &d.kv_cache_dtype)?;
    let loaded = loader::load_with(&args.model, &load_options)
        .with_context(|| format!("loading model `{}`", args.model))?;
    let tokenizer = &loaded.tokenizer;
    let text = if args.chat {
        let template = ChatTemplate::for_tokenizer(tokenizer)?;
        template.render(&[ChatMessage::new("user", &args.prompt)], true)?
    } else {
        args.prompt.clone()
    };
    // A chat template writes its own BOS, if any.
    let ids = tokenizer.encode(&text, !args.chat)?;
    anyhow::ensure!(!ids.is_empty(), "the prompt is empty");
    let prompt_len = ids.len();
    let max_len = loaded.config.max_position_embeddings;
    anyhow::ensure!(
        prompt_len + args.max_tokens <= max_len,
        "the prompt ({prompt_len} tokens) plus --max-tokens {} exceeds the model's context of {max_len} tokens",
        args.max_tokens
    );
    let num_blocks = (prompt_len + args.max_tokens).div_ceil(args.block_size);
    let scheduler = SchedulerConfig {
        max_model_len: max_len,
        seed: args.seed,
        ..SchedulerConfig::default()
    };
    let cache = CacheConfig {
        block_size: args.block_size,
        num_blocks,
        enable_prefix_caching: false,
    };
    let sampling = SamplingParams {
        temperature: args.temperature as f32,
        top_p: args.top_p as f32,
        top_k: args.top_k as i32,
        seed: Some(args.seed),
        max_tokens: Some(args.max_tokens),
        ignore_eos: args.ignore_eos,
        ..SamplingParams::default()
    };
    let mut engine = LlmEngine::new(Arc::new(loaded), scheduler, cache)?;
    if ember_engine::cuda_graphs_requested() {
        // One sequence: one graph, for contexts up to this prompt plus its output.
        if let Some(c) = engine.capture_cuda_graphs(1, prompt_len + args.max_tokens)? {
            eprintln!(
                "ember: decode captured as a CUDA graph in {:.2} s (replay vs eager logits difference {:e})",
                c.seconds, c.max_replay_difference
            );
        }
    }
    engine.add_request(Request::new("generate", ids, sampling))?;
    let mut stdout = std::io::stdout().lock();
    while engine.has_unfinished() {
        for output in engine.step()? {
            stdout.write_all(output.text_delta.as_bytes())?;
            stdout.flush()?;
        }
    }
    writeln!(stdout)?;
    Ok(())
}
