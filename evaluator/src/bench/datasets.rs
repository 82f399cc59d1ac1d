//! Where the benchmark's prompts come from, as benchmark_serving's datasets:
//! - `random`: token-id prompts of `input_len` (± range ratio) after a shared random prefix of
//!   `prefix_len` tokens, each asking for `output_len` (± range ratio) tokens;
//! - `sharegpt`: the first human turn of each conversation in a ShareGPT JSON file, the reply's length
//!   as the output length (the usual length filters), shuffled by the seed;
//! - `eval` (alias `custom`): one prompt per line of a JSONL file (`prompt`, else `question`, `input`,
//!   `text`, `instruction` or `problem`), as benchmark_serving's custom dataset; eval task data files
//!   in JSONL work as they are.

use std::path::{Path, PathBuf};

use ember_models::tokenizer::Tokenizer;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use super::BenchError;

/// One request to send.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRequest {
    /// The prompt's token ids (what in-process runs submit; what `/v1/completions` gets for random data).
    pub prompt_ids: Vec<u32>,
    /// The prompt's text (what chat requests and text datasets send over HTTP).
    pub prompt_text: String,
    /// Send `prompt_ids` rather than `prompt_text` to `/v1/completions` (exact lengths for random data).
    pub send_ids: bool,
    pub prompt_len: usize,
    pub output_len: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DatasetConfig {
    Random {
        input_len: usize,
        output_len: usize,
        range_ratio: f64,
        prefix_len: usize,
    },
    ShareGpt {
        path: PathBuf,
        /// Overrides each conversation's reply length.
        output_len: Option<usize>,
    },
    Eval {
        path: PathBuf,
        output_len: usize,
    },
}

/// Builds `num_prompts` requests, seeded.
pub fn sample(
    config: &DatasetConfig,
    tokenizer: &Tokenizer,
    num_prompts: usize,
    seed: u64,
) -> Result<Vec<SampleRequest>, BenchError> {
    match config {
        DatasetConfig::Random {
            input_len,
            output_len,
            range_ratio,
            prefix_len,
        } => random(
            tokenizer,
            num_prompts,
            *input_len,
            *output_len,
            *range_ratio,
            *prefix_len,
            seed,
        ),
        DatasetConfig::ShareGpt { path, output_len } => {
            sharegpt(path, tokenizer, num_prompts, *output_len, seed)
        }
        DatasetConfig::Eval { path, output_len } => {
            eval_prompts(path, tokenizer, num_prompts, *output_len)
        }
    }
}

fn random(
    tokenizer: &Tokenizer,
    num_prompts: usize,
    input_len: usize,
    output_len: usize,
    range_ratio: f64,
    prefix_len: usize,
    seed: u64,
) -> Result<Vec<SampleRequest>, BenchError> {
    if !(0.0..1.0).contains(&range_ratio) {
        return Err(BenchError::Config(format!(
            "--random-range-ratio must be in [0, 1), got {range_ratio}"
        )));
    }
    if output_len == 0 {
        return Err(BenchError::Config(
            "--random-output-len must be at least 1".into(),
        ));
    }
    // Ordinary tokens only: a special token inside a random prompt could end or restructure it.
    let ids: Vec<u32> = (0..tokenizer.vocab_size() as u32)
        .filter(|&id| !tokenizer.is_special(id))
        .collect();
    if ids.is_empty() {
        return Err(BenchError::Config(
            "the tokenizer has no ordinary tokens".into(),
        ));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let bounds = |len: usize, min: usize| {
        let lo = ((len as f64 * (1.0 - range_ratio)) as usize).max(min);
        let hi = ((len as f64 * (1.0 + range_ratio)) as usize).max(lo);
        (lo, hi)
    };
    let (in_lo, in_hi) = bounds(input_len, 0);
    let (out_lo, out_hi) = bounds(output_len, 1);
    let prefix: Vec<u32> = (0..prefix_len)
        .map(|_| ids[rng.random_range(0..ids.len())])
        .collect();
    let mut out = Vec::with_capacity(num_prompts);
    for i in 0..num_prompts {
        let len = rng.random_range(in_lo..=in_hi);
        let out_len = rng.random_range(out_lo..=out_hi);
        let offset = rng.random_range(0..ids.len());
        let mut prompt_ids = prefix.clone();
        // Consecutive ids from a random offset, as benchmark_serving: cheap, and distinct per request.
        prompt_ids.extend((0..len).map(|j| ids[(offset + i + j) % ids.len()]));
        if prompt_ids.is_empty() {
            return Err(BenchError::Config(
                "random prompts need --random-input-len + --random-prefix-len >= 1".into(),
            ));
        }
        let prompt_text = tokenizer
            .decode(&prompt_ids, false)
            .map_err(|e| BenchError::Dataset(format!("decoding a random prompt: {e}")))?;
        out.push(SampleRequest {
            prompt_len: prompt_ids.len(),
            prompt_ids,
            prompt_text,
            send_ids: true,
            output_len: out_len,
        });
    }
    Ok(out)
}

fn read(path: &Path) -> Result<String, BenchError> {
    std::fs::read_to_string(path)
        .map_err(|e| BenchError::Dataset(format!("reading {}: {e}", path.display())))
}

fn text_request(
    tokenizer: &Tokenizer,
    prompt: &str,
    output_len: usize,
) -> Result<SampleRequest, BenchError> {
    let prompt_ids = tokenizer
        .encode(prompt, true)
        .map_err(|e| BenchError::Dataset(format!("tokenizing a prompt: {e}")))?;
    Ok(SampleRequest {
        prompt_len: prompt_ids.len(),
        prompt_ids,
        prompt_text: prompt.to_string(),
        send_ids: false,
        output_len,
    })
}

fn sharegpt(
    path: &Path,
    tokenizer: &Tokenizer,
    num_prompts: usize,
    fixed_output_len: Option<usize>,
    seed: u64,
) -> Result<Vec<SampleRequest>, BenchError> {
    let data: Value = serde_json::from_str(&read(path)?).map_err(|e| {
        BenchError::Dataset(format!("{} is not ShareGPT JSON: {e}", path.display()))
    })?;
    let entries = data.as_array().ok_or_else(|| {
        BenchError::Dataset(format!(
            "{}: ShareGPT data is a JSON list of {{\"conversations\": [...]}}",
            path.display()
        ))
    })?;
    let mut pairs: Vec<(String, String)> = entries
        .iter()
        .filter_map(|e| {
            let turns = e.get("conversations")?.as_array()?;
            let value = |t: &Value| t.get("value").and_then(Value::as_str).map(str::to_string);
            Some((value(turns.first()?)?, value(turns.get(1)?)?))
        })
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    pairs.shuffle(&mut rng);
    let mut out = Vec::with_capacity(num_prompts);
    for (prompt, reply) in pairs {
        if out.len() == num_prompts {
            break;
        }
        let reply_len = tokenizer
            .encode(&reply, false)
            .map_err(|e| BenchError::Dataset(format!("tokenizing a reply: {e}")))?
            .len();
        let output_len = fixed_output_len.unwrap_or(reply_len);
        let req = text_request(tokenizer, &prompt, output_len)?;
        // benchmark_serving's filters: drop too-short pairs and too-long prompts or totals.
        let too_short = req.prompt_len < 4 || (fixed_output_len.is_none() && output_len < 4);
        if too_short || req.prompt_len > 1024 || req.prompt_len + output_len > 2048 {
            continue;
        }
        out.push(req);
    }
    if out.len() < num_prompts {
        return Err(BenchError::Dataset(format!(
            "{} gives only {} usable conversations, fewer than --num-prompts {num_prompts}",
            path.display(),
            out.len()
        )));
    }
    Ok(out)
}

const PROMPT_FIELDS: [&str; 6] = [
    "prompt",
    "question",
    "input",
    "text",
    "instruction",
    "problem",
];

fn eval_prompts(
    path: &Path,
    tokenizer: &Tokenizer,
    num_prompts: usize,
    output_len: usize,
) -> Result<Vec<SampleRequest>, BenchError> {
    let text = read(path)?;
    let mut prompts = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).map_err(|e| {
            BenchError::Dataset(format!("{}:{}: not JSON: {e}", path.display(), n + 1))
        })?;
        let prompt = match &v {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => PROMPT_FIELDS
                .iter()
                .find_map(|f| o.get(*f).and_then(Value::as_str).map(str::to_string)),
            _ => None,
        };
        let prompt = prompt.ok_or_else(|| {
            BenchError::Dataset(format!(
                "{}:{}: no prompt field (one of {})",
                path.display(),
                n + 1,
                PROMPT_FIELDS.join(", ")
            ))
        })?;
        prompts.push(prompt);
        if prompts.len() == num_prompts {
            break;
        }
    }
    if prompts.is_empty() {
        return Err(BenchError::Dataset(format!(
            "{} holds no prompts",
            path.display()
        )));
    }
    // Fewer prompts than asked: cycle through them, as a benchmark needs its request count.
    (0..num_prompts)
        .map(|i| text_request(tokenizer, &prompts[i % prompts.len()], output_len))
        .collect()
}
