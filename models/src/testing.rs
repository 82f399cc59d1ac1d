//! Tiny random-weight models written to disk, for tests and examples: the same weights as a Hugging Face
//! directory (safetensors + tokenizer.json) or as a GGUF file, with a small byte-level BPE tokenizer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::{Architecture, ModelConfig};
use crate::loader::gguf::gguf_name;
use crate::{llama, qwen2, qwen3, Error, Result};

/// How to store the tiny model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TinyFormat {
    /// `config.json`, `model.safetensors` (f32), `tokenizer.json`, `tokenizer_config.json`.
    HfDir,
    /// One `.gguf` file with every matrix stored as `dtype` (F32 for exact comparisons).
    Gguf(GgmlDType),
}

pub const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
const MERGES: [(&str, &str); 4] = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n")];
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// GPT-2's byte-to-character table: printable bytes map to themselves, the rest to U+0100 onwards.
fn byte_chars() -> Vec<char> {
    let printable: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut next = 256;
    let mut table = vec!['\0'; 256];
    for b in 0..256u32 {
        let c = if printable.contains(&b) {
            b
        } else {
            next += 1;
            next - 1
        };
        table[b as usize] = char::from_u32(c).expect("valid char");
    }
    table
}

/// The tiny vocabulary: 256 byte tokens, a few merges, then the special tokens.
pub fn tiny_vocab() -> (Vec<String>, Vec<String>) {
    let mut tokens: Vec<String> = byte_chars().into_iter().map(String::from).collect();
    for (a, b) in MERGES {
        tokens.push(format!("{a}{b}"));
    }
    tokens.extend(SPECIAL_TOKENS.iter().map(|s| s.to_string()));
    let merges = MERGES.iter().map(|(a, b)| format!("{a} {b}")).collect();
    (tokens, merges)
}

pub fn tiny_config(architecture: Architecture) -> ModelConfig {
    let spec = arch_spec(architecture);
    ModelConfig {
        architecture,
        vocab_size: tiny_vocab().0.len(),
        hidden_size: 64,
        intermediate_size: 96,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 16,
        rope_theta: 10_000.0,
        rope_style: ember_kernels::RopeStyle::Half,
        rms_norm_eps: 1e-5,
        max_position_embeddings: 512,
        tie_word_embeddings: architecture == Architecture::Qwen2,
        attention_bias: spec.attention_bias,
        qk_norm: spec.qk_norm,
    }
}

/// Random weights in Hugging Face naming, f32.
pub fn tiny_weights(cfg: &ModelConfig, seed: u64) -> Result<BTreeMap<String, Tensor>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut weights = BTreeMap::new();
    let mut add = |name: String, dims: &[usize], center: f32, spread: f32| -> Result<()> {
        let n: usize = dims.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| center + rng.random_range(-spread..spread))
            .collect();
        weights.insert(name, Tensor::from_vec(data, dims, &Device::Cpu)?);
        Ok(())
    };
    let (h, d, f) = (cfg.hidden_size, cfg.head_dim, cfg.intermediate_size);
    let (q_out, kv_out) = (cfg.num_heads * d, cfg.num_kv_heads * d);
    add(
        "model.embed_tokens.weight".into(),
        &[cfg.vocab_size, h],
        0.0,
        1.0,
    )?;
    add("model.norm.weight".into(), &[h], 1.0, 0.2)?;
    if !cfg.tie_word_embeddings {
        add("lm_head.weight".into(), &[cfg.vocab_size, h], 0.0, 0.3)?;
    }
    for i in 0..cfg.num_layers {
        let p = format!("model.layers.{i}");
        add(format!("{p}.input_layernorm.weight"), &[h], 1.0, 0.2)?;
        add(
            format!("{p}.post_attention_layernorm.weight"),
            &[h],
            1.0,
            0.2,
        )?;
        for (name, out) in [("q_proj", q_out), ("k_proj", kv_out), ("v_proj", kv_out)] {
            add(format!("{p}.self_attn.{name}.weight"), &[out, h], 0.0, 0.25)?;
            if cfg.attention_bias {
                add(format!("{p}.self_attn.{name}.bias"), &[out], 0.0, 0.2)?;
            }
        }
        add(
            format!("{p}.self_attn.o_proj.weight"),
            &[h, q_out],
            0.0,
            0.25,
        )?;
        if cfg.qk_norm {
            add(format!("{p}.self_attn.q_norm.weight"), &[d], 1.0, 0.2)?;
            add(format!("{p}.self_attn.k_norm.weight"), &[d], 1.0, 0.2)?;
        }
        add(format!("{p}.mlp.gate_proj.weight"), &[f, h], 0.0, 0.25)?;
        add(format!("{p}.mlp.up_proj.weight"), &[f, h], 0.0, 0.25)?;
        add(format!("{p}.mlp.down_proj.weight"), &[h, f], 0.0, 0.25)?;
    }
    Ok(weights)
}

fn arch_spec(arch: Architecture) -> crate::config::ArchSpec {
    match arch {
        Architecture::Llama => llama::SPEC,
        Architecture::Qwen2 => qwen2::SPEC,
        Architecture::Qwen3 => qwen3::SPEC,
    }
}

fn hf_model_type(arch: Architecture) -> &'static str {
    match arch {
        Architecture::Llama => "llama",
        Architecture::Qwen2 => "qwen2",
        Architecture::Qwen3 => "qwen3",
    }
}

/// Writes a tiny model with random weights; returns the path to pass to the loader (directory or file).
pub fn write_tiny_model(
    dir: &Path,
    architecture: Architecture,
    format: TinyFormat,
    seed: u64,
) -> Result<PathBuf> {
    let cfg = tiny_config(architecture);
    let weights = tiny_weights(&cfg, seed)?;
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    match format {
        TinyFormat::HfDir => write_hf_dir(dir, &cfg, &weights).map(|_| dir.to_path_buf()),
        TinyFormat::Gguf(dtype) => {
            let path = dir.join("tiny.gguf");
            write_gguf(&path, &cfg, &weights, dtype)?;
            Ok(path)
        }
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

fn write_hf_dir(dir: &Path, cfg: &ModelConfig, weights: &BTreeMap<String, Tensor>) -> Result<()> {
    let config = serde_json::json!({
        "architectures": [format!("{}ForCausalLM", hf_model_type(cfg.architecture))],
        "model_type": hf_model_type(cfg.architecture),
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "rope_theta": cfg.rope_theta,
        "rms_norm_eps": cfg.rms_norm_eps,
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "torch_dtype": "float32",
    });
    write(&dir.join("config.json"), &config.to_string())?;
    let weights: std::collections::HashMap<&str, Tensor> = weights
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    candle_core::safetensors::save(&weights, dir.join("model.safetensors"))?;
    write(&dir.join("tokenizer.json"), &tokenizer_json()?)?;
    let tokenizer_config = serde_json::json!({
        "bos_token": null,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "add_bos_token": false,
        "chat_template": CHATML_TEMPLATE,
    });
    write(
        &dir.join("tokenizer_config.json"),
        &tokenizer_config.to_string(),
    )?;
    write(
        &dir.join("generation_config.json"),
        &serde_json::json!({"eos_token_id": [258, 256], "temperature": 0.7, "top_p": 0.8})
            .to_string(),
    )
}

/// The tiny tokenizer as a Hugging Face `tokenizer.json`.
pub fn tokenizer_json() -> Result<String> {
    let (tokens, merges) = tiny_vocab();
    let vocab: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), serde_json::Value::from(i)))
        .collect();
    let first_special = tokens.len() - SPECIAL_TOKENS.len();
    let added: Vec<serde_json::Value> = SPECIAL_TOKENS
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::json!({"id": first_special + i, "content": t, "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges},
    });
    Ok(json.to_string())
}

/// llama.cpp's converter reorders each head's Q/K rows from `[first half, second half]` to interleaved
/// pairs, so that GGML's interleaved RoPE computes what HF's rotate-half RoPE does.
fn permute_for_interleaved_rope(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let d = rows / heads;
    Ok(w.reshape((heads, 2, d / 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?)
}

fn write_gguf(
    path: &Path,
    cfg: &ModelConfig,
    weights: &BTreeMap<String, Tensor>,
    dtype: GgmlDType,
) -> Result<()> {
    use gguf_file::Value;
    let arch = hf_model_type(cfg.architecture);
    let (tokens, merges) = tiny_vocab();
    let first_special = tokens.len() - SPECIAL_TOKENS.len();
    let token_types: Vec<Value> = (0..tokens.len())
        .map(|i| Value::I32(if i >= first_special { 3 } else { 1 }))
        .collect();
    let k = |s: &str| format!("{arch}.{s}");
    let metadata: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        ("general.name".into(), Value::String(format!("tiny-{arch}"))),
        (
            k("context_length"),
            Value::U32(cfg.max_position_embeddings as u32),
        ),
        (k("embedding_length"), Value::U32(cfg.hidden_size as u32)),
        (
            k("feed_forward_length"),
            Value::U32(cfg.intermediate_size as u32),
        ),
        (k("block_count"), Value::U32(cfg.num_layers as u32)),
        (k("attention.head_count"), Value::U32(cfg.num_heads as u32)),
        (
            k("attention.head_count_kv"),
            Value::U32(cfg.num_kv_heads as u32),
        ),
        (k("attention.key_length"), Value::U32(cfg.head_dim as u32)),
        (k("attention.value_length"), Value::U32(cfg.head_dim as u32)),
        (k("rope.freq_base"), Value::F32(cfg.rope_theta as f32)),
        (
            k("attention.layer_norm_rms_epsilon"),
            Value::F32(cfg.rms_norm_eps as f32),
        ),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("gpt2".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.merges".into(),
            Value::Array(merges.into_iter().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(token_types),
        ),
        (
            "tokenizer.ggml.eos_token_id".into(),
            Value::U32(first_special as u32 + 2),
        ),
        (
            "tokenizer.ggml.padding_token_id".into(),
            Value::U32(first_special as u32),
        ),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
        (
            "tokenizer.chat_template".into(),
            Value::String(CHATML_TEMPLATE.into()),
        ),
    ];
    let mut tensors = Vec::new();
    for (name, w) in weights {
        let mut w = w.clone();
        // What llama.cpp's converter does for llama, independently of how our loader undoes it.
        if cfg.architecture == Architecture::Llama {
            if name.ends_with("self_attn.q_proj.weight") {
                w = permute_for_interleaved_rope(&w, cfg.num_heads)?;
            } else if name.ends_with("self_attn.k_proj.weight") {
                w = permute_for_interleaved_rope(&w, cfg.num_kv_heads)?;
            }
        }
        // Norms and biases stay f32, as llama.cpp stores them.
        let tensor_dtype = if w.rank() == 1 { GgmlDType::F32 } else { dtype };
        let gguf =
            gguf_name(name).ok_or_else(|| Error::Config(format!("no GGUF name for {name}")))?;
        tensors.push((gguf, QTensor::quantize(&w, tensor_dtype)?));
    }
    let mut file = std::fs::File::create(path)
        .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut file, &md, &ts)?;
    Ok(())
}
