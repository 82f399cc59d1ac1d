//! `ember generate`: one prompt through the paged forward, text streamed to stdout as it is sampled.

use std::io::Write;

use anyhow::{Context, Result};
use candle_core::Device;
use clap::Args;
use ember_engine::detokenizer::IncrementalDetokenizer;
use ember_models::batch::{ForwardBatch, LogitsWanted, SeqChunk};
use ember_models::chat_template::{ChatMessage, ChatTemplate};
use ember_models::loader::{self, registry};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

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
}

pub fn run(args: GenerateArgs) -> Result<()> {
    anyhow::ensure!(args.block_size > 0, "--block-size must be positive");
    anyhow::ensure!(args.temperature >= 0.0, "--temperature must be >= 0");
    anyhow::ensure!(
        args.top_p > 0.0 && args.top_p <= 1.0,
        "--top-p must be in (0, 1]"
    );
    let loaded = loader::load(&args.model, &Device::Cpu)
        .with_context(|| format!("loading model `{}`", args.model))?;
    let tokenizer = &loaded.tokenizer;
    let text = if args.chat {
        let template = ChatTemplate::for_tokenizer(tokenizer)?;
        template.render(&[ChatMessage::new("user", &args.prompt)], true)?
    } else {
        args.prompt.clone()
    };
    // A chat template writes its own BOS, if any.
    let mut ids = tokenizer.encode(&text, !args.chat)?;
    anyhow::ensure!(!ids.is_empty(), "the prompt is empty");
    let prompt_len = ids.len();
    let max_len = loaded.config.max_position_embeddings;
    anyhow::ensure!(
        prompt_len + args.max_tokens <= max_len,
        "the prompt ({prompt_len} tokens) plus --max-tokens {} exceeds the model's context of {max_len} tokens",
        args.max_tokens
    );
    let num_blocks = (prompt_len + args.max_tokens).div_ceil(args.block_size);
    let mut cache = loaded.model.new_kv_cache(num_blocks, args.block_size)?;
    let block_table: Vec<u32> = (0..num_blocks as u32).collect();
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut computed = 0;
    let mut detokenizer = IncrementalDetokenizer::new(Vec::new(), false, true);
    let mut stdout = std::io::stdout().lock();
    for _ in 0..args.max_tokens {
        let chunk = SeqChunk {
            tokens: &ids[computed..],
            num_computed: computed,
            block_table: &block_table,
            logits: LogitsWanted::Last,
        };
        let batch = ForwardBatch::build(&[chunk], args.block_size)?;
        let logits = loaded
            .model
            .forward(&batch, &mut cache)?
            .squeeze(0)?
            .to_vec1::<f32>()?;
        computed = ids.len();
        let token = sample(&logits, &args, &mut rng);
        if !args.ignore_eos && tokenizer.is_eos(token) {
            break;
        }
        ids.push(token);
        detokenizer.update(tokenizer, &ids[prompt_len..]);
        stdout.write_all(detokenizer.take_delta(false).as_bytes())?;
        stdout.flush()?;
    }
    writeln!(stdout, "{}", detokenizer.take_delta(true))?;
    Ok(())
}

/// Greedy at temperature 0; otherwise top-k, then top-p, then a draw from the tempered distribution.
fn sample(logits: &[f32], args: &GenerateArgs, rng: &mut StdRng) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 {
                    (i, v)
                } else {
                    best
                }
            })
            .0 as u32
    };
    if args.temperature < 1e-5 {
        return argmax();
    }
    let mut candidates: Vec<(u32, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, l as f64 / args.temperature))
        .collect();
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if args.top_k > 0 {
        candidates.truncate(args.top_k);
    }
    let max = candidates[0].1;
    let mut probs: Vec<f64> = candidates.iter().map(|(_, l)| (l - max).exp()).collect();
    let total: f64 = probs.iter().sum();
    let mut cumulative = 0.0;
    let mut keep = probs.len();
    for (i, p) in probs.iter_mut().enumerate() {
        *p /= total;
        cumulative += *p;
        if cumulative >= args.top_p {
            keep = i + 1;
            break;
        }
    }
    probs.truncate(keep);
    let kept: f64 = probs.iter().sum();
    let mut draw = rng.random::<f64>() * kept;
    for (i, p) in probs.iter().enumerate() {
        if draw < *p {
            return candidates[i].0;
        }
        draw -= p;
    }
    candidates[keep - 1].0
}
