//! Text ⇄ token ids for ember's models.
//!
//! [`Tokenizer`] wraps a [`tokenizers::Tokenizer`] (the Hugging Face implementation does the actual
//! BPE work) and adds what serving needs on top of it: the BOS/EOS/PAD ids, every id that ends
//! generation, whether a BOS is prepended, and the model's chat template.
//!
//! Two sources:
//! - [`Tokenizer::from_gguf`] builds a byte-level BPE tokenizer from a GGUF file's
//!   `tokenizer.ggml.*` metadata (`tokenizer.ggml.model == "gpt2"`, the vocabulary used by
//!   Qwen2/Qwen2.5/Qwen3, SmolLM/SmolLM2, Llama 3 and most current models). The pre-tokenizer is
//!   chosen from `tokenizer.ggml.pre`; see [`PreTokenizerKind`].
//! - [`Tokenizer::from_hf_dir`] loads a Hugging Face model directory (`tokenizer.json`,
//!   `tokenizer_config.json`, optional `generation_config.json` / `chat_template.jinja`).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use candle_core::quantized::gguf_file::Value as GgufValue;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::{Error, Result};

/// Qwen2's split regex (also Qwen2.5/Qwen3 and StableLM2): like Llama 3's, but numbers are split
/// into single `\p{N}` characters instead of runs of up to three.
pub const QWEN2_SPLIT_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Llama 3's split regex (`tokenizer.ggml.pre == "llama-bpe"`): numbers in runs of 1–3 digits.
pub const LLAMA3_SPLIT_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Generation-ending control tokens recognised by name in GGUF vocabularies, in addition to the
/// declared `eos`/`eot`/`eom` ids (GGUF has a single eos id, while chat models end turns with e.g.
/// `<|im_end|>` and base text with `<|endoftext|>`).
const EOG_TOKEN_NAMES: &[&str] = &[
    "<|im_end|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|return|>",
    "</s>",
];

/// How a byte-level BPE vocabulary splits text before BPE, keyed by GGUF `tokenizer.ggml.pre`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizerKind {
    /// GPT-2's regex (`'s|'t|…| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`, the `tokenizers`
    /// ByteLevel pre-tokenizer with `use_regex = true`). `gpt2`, `default`, `mpt`, `olmo`, `jais`,
    /// and the fallback for unknown kinds.
    Gpt2,
    /// SmolLM/SmolLM2 (and StarCoder, Refact, Command-R, CodeShell, EXAONE): every digit is its own
    /// piece, then the GPT-2 regex — the original `tokenizer.json` is
    /// `Sequence[Digits(individual_digits), ByteLevel(use_regex)]`.
    Smollm,
    /// Qwen2 (also `stablelm2`): [`QWEN2_SPLIT_REGEX`], NFC normalisation.
    Qwen2,
    /// Llama 3 (also `dbrx`, `smaug-bpe`): [`LLAMA3_SPLIT_REGEX`], BPE with `ignore_merges`.
    LlamaBpe,
}

impl PreTokenizerKind {
    /// Maps a GGUF `tokenizer.ggml.pre` value; `None` for kinds ember does not know.
    pub fn from_gguf_pre(pre: &str) -> Option<Self> {
        Some(match pre {
            "gpt2" | "gpt-2" | "default" | "mpt" | "olmo" | "jais" => Self::Gpt2,
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" => {
                Self::Smollm
            }
            "qwen2" | "stablelm2" => Self::Qwen2,
            "llama-bpe" | "llama3" | "dbrx" | "smaug-bpe" => Self::LlamaBpe,
            _ => return None,
        })
    }

    fn pre_tokenizer(self) -> Result<PreTokenizerWrapper> {
        let split = |re: &str| -> Result<PreTokenizerWrapper> {
            let split = Split::new(
                SplitPattern::Regex(re.to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| Error::Tokenizer(format!("bad pre-tokenizer regex: {e}")))?;
            Ok(split.into())
        };
        Ok(match self {
            Self::Gpt2 => ByteLevel::new(false, true, true).into(),
            Self::Smollm => Sequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ])
            .into(),
            Self::Qwen2 => Sequence::new(vec![
                split(QWEN2_SPLIT_REGEX)?,
                ByteLevel::new(false, false, false).into(),
            ])
            .into(),
            Self::LlamaBpe => Sequence::new(vec![
                split(LLAMA3_SPLIT_REGEX)?,
                ByteLevel::new(false, true, false).into(),
            ])
            .into(),
        })
    }
}

/// A model's tokenizer plus its special-token facts and chat template.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos_token_id: Option<u32>,
    eos_token_ids: Vec<u32>,
    pad_token_id: Option<u32>,
    /// `encode(_, true)` starts with BOS.
    add_bos: bool,
    /// We prepend BOS ourselves (the inner tokenizer's post-processor does not).
    prepend_bos: bool,
    bos_token: Option<String>,
    eos_token: Option<String>,
    chat_template: Option<String>,
    special_ids: HashSet<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_token_id", &self.bos_token_id)
            .field("eos_token_ids", &self.eos_token_ids)
            .field("pad_token_id", &self.pad_token_id)
            .field("add_bos", &self.add_bos)
            .field("has_chat_template", &self.chat_template.is_some())
            .finish()
    }
}

fn tok_err(context: &str, e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(format!("{context}: {e}"))
}

fn gguf_u32(v: &GgufValue) -> Option<u32> {
    match *v {
        GgufValue::U8(x) => Some(x as u32),
        GgufValue::U16(x) => Some(x as u32),
        GgufValue::U32(x) => Some(x),
        GgufValue::U64(x) => u32::try_from(x).ok(),
        GgufValue::I8(x) => u32::try_from(x).ok(),
        GgufValue::I16(x) => u32::try_from(x).ok(),
        GgufValue::I32(x) => u32::try_from(x).ok(),
        GgufValue::I64(x) => u32::try_from(x).ok(),
        _ => None,
    }
}

fn gguf_i64(v: &GgufValue) -> Option<i64> {
    match *v {
        GgufValue::U8(x) => Some(x as i64),
        GgufValue::U16(x) => Some(x as i64),
        GgufValue::U32(x) => Some(x as i64),
        GgufValue::U64(x) => i64::try_from(x).ok(),
        GgufValue::I8(x) => Some(x as i64),
        GgufValue::I16(x) => Some(x as i64),
        GgufValue::I32(x) => Some(x as i64),
        GgufValue::I64(x) => Some(x),
        _ => None,
    }
}

/// A JSON special-token entry: `"<s>"` or `{"content": "<s>", ...}`.
fn json_token_content(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(m) => m.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// `eos_token_id` in `generation_config.json` / `config.json`: an int or a list of ints.
fn json_ids(v: &serde_json::Value) -> Vec<u32> {
    match v {
        serde_json::Value::Number(n) => n
            .as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .into_iter()
            .collect(),
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_u64().and_then(|x| u32::try_from(x).ok()))
            .collect(),
        _ => Vec::new(),
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    serde_json::from_str(&text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// `chat_template` in `tokenizer_config.json`: a string, or a list of `{name, template}` of which
/// the one named `default` (else the first) is used.
fn json_chat_template(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(list) => {
            let template_of =
                |e: &serde_json::Value| e.get("template")?.as_str().map(str::to_string);
            list.iter()
                .find(|e| e.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(template_of)
                .or_else(|| list.iter().find_map(template_of))
        }
        _ => None,
    }
}

fn push_unique(ids: &mut Vec<u32>, id: u32) {
    if !ids.contains(&id) {
        ids.push(id);
    }
}

impl Tokenizer {
    /// Builds the tokenizer stored in a GGUF file's metadata (`Content::metadata`).
    ///
    /// Supports `tokenizer.ggml.model == "gpt2"` (byte-level BPE). Token types: 1 normal (BPE
    /// vocabulary), 3 control (added *special* tokens, matched whole in text and skipped by
    /// `decode(_, true)`), 4 user-defined (added non-special tokens, matched whole in text), others
    /// (unused/unknown/byte) stay in the vocabulary only.
    pub fn from_gguf(metadata: &HashMap<String, GgufValue>) -> Result<Self> {
        let get = |key: &str| metadata.get(key);
        let get_str = |key: &str| get(key).and_then(|v| v.to_string().ok()).cloned();
        let get_u32 = |key: &str| get(key).and_then(gguf_u32);

        let model = get_str("tokenizer.ggml.model")
            .ok_or_else(|| Error::Tokenizer("GGUF has no tokenizer.ggml.model".into()))?;
        if model != "gpt2" {
            return Err(Error::Tokenizer(format!(
                "unsupported GGUF tokenizer model `{model}` (ember supports byte-level BPE, `gpt2`)"
            )));
        }
        let tokens: Vec<String> = get("tokenizer.ggml.tokens")
            .and_then(|v| v.to_vec().ok())
            .ok_or_else(|| Error::Tokenizer("GGUF has no tokenizer.ggml.tokens".into()))?
            .iter()
            .map(|t| {
                t.to_string().cloned().map_err(|_| {
                    Error::Tokenizer("tokenizer.ggml.tokens holds a non-string".into())
                })
            })
            .collect::<Result<_>>()?;
        let token_types: Vec<i64> = match get("tokenizer.ggml.token_type") {
            Some(v) => {
                let types = v.to_vec().map_err(|_| {
                    Error::Tokenizer("tokenizer.ggml.token_type is not an array".into())
                })?;
                types.iter().map(|t| gguf_i64(t).unwrap_or(1)).collect()
            }
            None => vec![1; tokens.len()],
        };
        if token_types.len() != tokens.len() {
            return Err(Error::Tokenizer(format!(
                "tokenizer.ggml.token_type has {} entries for {} tokens",
                token_types.len(),
                tokens.len()
            )));
        }
        let merges: Vec<(String, String)> = match get("tokenizer.ggml.merges") {
            Some(v) => v
                .to_vec()
                .map_err(|_| Error::Tokenizer("tokenizer.ggml.merges is not an array".into()))?
                .iter()
                .map(|m| {
                    let m = m.to_string().map_err(|_| {
                        Error::Tokenizer("tokenizer.ggml.merges holds a non-string".into())
                    })?;
                    let (a, b) = m
                        .split_once(' ')
                        .ok_or_else(|| Error::Tokenizer(format!("bad BPE merge `{m}`")))?;
                    Ok((a.to_string(), b.to_string()))
                })
                .collect::<Result<_>>()?,
            None => Vec::new(),
        };

        let pre = get_str("tokenizer.ggml.pre").unwrap_or_else(|| "default".to_string());
        let kind = PreTokenizerKind::from_gguf_pre(&pre).unwrap_or_else(|| {
            tracing::warn!(pre = %pre, "unknown GGUF pre-tokenizer kind; falling back to the GPT-2 regex");
            PreTokenizerKind::Gpt2
        });

        let mut vocab = Vocab::default();
        for (id, tok) in tokens.iter().enumerate() {
            if vocab.contains_key(tok) {
                tracing::warn!(token = %tok, id, "duplicate token in GGUF vocabulary; keeping the first id");
                continue;
            }
            vocab.insert(tok.clone(), id as u32);
        }
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(kind == PreTokenizerKind::LlamaBpe)
            .build()
            .map_err(|e| tok_err("building BPE from GGUF", e))?;

        let mut inner = tokenizers::Tokenizer::new(bpe);
        if kind == PreTokenizerKind::Qwen2 {
            inner
                .with_normalizer(Some(NFC))
                .map_err(|e| tok_err("setting normalizer", e))?;
        }
        inner.with_pre_tokenizer(Some(kind.pre_tokenizer()?));
        inner.with_decoder(Some(ByteLevel::new(false, true, true)));

        let mut added = Vec::new();
        for (tok, &ty) in tokens.iter().zip(&token_types) {
            if tok.is_empty() {
                continue;
            }
            match ty {
                3 => added.push(AddedToken::from(tok.clone(), true).normalized(false)),
                4 => added.push(AddedToken::from(tok.clone(), false).normalized(false)),
                _ => {}
            }
        }
        inner
            .add_tokens(added)
            .map_err(|e| tok_err("adding GGUF control tokens", e))?;

        let token_str = |id: u32| tokens.get(id as usize).cloned();
        let bos_token_id =
            get_u32("tokenizer.ggml.bos_token_id").filter(|&id| (id as usize) < tokens.len());
        let eos_token_id =
            get_u32("tokenizer.ggml.eos_token_id").filter(|&id| (id as usize) < tokens.len());
        let pad_token_id =
            get_u32("tokenizer.ggml.padding_token_id").filter(|&id| (id as usize) < tokens.len());

        let mut eos_token_ids = Vec::new();
        for key in [
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
        ] {
            if let Some(id) = get_u32(key).filter(|&id| (id as usize) < tokens.len()) {
                push_unique(&mut eos_token_ids, id);
            }
        }
        for (id, (tok, &ty)) in tokens.iter().zip(&token_types).enumerate() {
            if ty == 3 && EOG_TOKEN_NAMES.contains(&tok.as_str()) {
                push_unique(&mut eos_token_ids, id as u32);
            }
        }

        // llama.cpp's default for a missing flag: BPE vocabularies only add BOS for Llama 3.
        let add_bos = get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(kind == PreTokenizerKind::LlamaBpe)
            && bos_token_id.is_some();

        Ok(Self::assemble(
            inner,
            bos_token_id,
            eos_token_ids,
            pad_token_id,
            add_bos,
            add_bos,
            bos_token_id.and_then(token_str),
            eos_token_id.and_then(token_str),
            get_str("tokenizer.chat_template"),
        ))
    }

    /// Loads a Hugging Face model directory: `tokenizer.json` (required), `tokenizer_config.json`
    /// (chat template, bos/eos/pad tokens, `add_bos_token`), `generation_config.json`
    /// (`eos_token_id`, an int or a list, merged into [`Self::eos_token_ids`]) and
    /// `chat_template.jinja` (takes precedence over the config's template, as in transformers).
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let tokenizer_json = dir.join("tokenizer.json");
        if !tokenizer_json.is_file() {
            return Err(Error::NotFound(format!(
                "no tokenizer.json in {} (ember needs a fast-tokenizer file)",
                dir.display()
            )));
        }
        let inner = tokenizers::Tokenizer::from_file(&tokenizer_json)
            .map_err(|e| tok_err(&format!("loading {}", tokenizer_json.display()), e))?;

        let config_path = dir.join("tokenizer_config.json");
        let config = if config_path.is_file() {
            read_json(&config_path)?
        } else {
            serde_json::Value::Null
        };
        let gen_path = dir.join("generation_config.json");
        let gen_config = if gen_path.is_file() {
            read_json(&gen_path)?
        } else {
            serde_json::Value::Null
        };

        let special = |key: &str| config.get(key).and_then(json_token_content);
        let bos_token = special("bos_token");
        let eos_token = special("eos_token");
        let pad_token = special("pad_token");
        let id_of = |t: &Option<String>| t.as_deref().and_then(|t| inner.token_to_id(t));
        let mut bos_token_id = id_of(&bos_token);
        if bos_token_id.is_none() {
            bos_token_id = gen_config
                .get("bos_token_id")
                .and_then(|v| json_ids(v).first().copied());
        }
        let pad_token_id = id_of(&pad_token);

        let mut eos_token_ids = Vec::new();
        if let Some(id) = id_of(&eos_token) {
            eos_token_ids.push(id);
        }
        if let Some(v) = gen_config.get("eos_token_id") {
            for id in json_ids(v) {
                push_unique(&mut eos_token_ids, id);
            }
        }
        let eos_token =
            eos_token.or_else(|| eos_token_ids.first().and_then(|&id| inner.id_to_token(id)));
        let bos_token = bos_token.or_else(|| bos_token_id.and_then(|id| inner.id_to_token(id)));

        // Does the tokenizer.json post-processor already add BOS (e.g. Llama 3's TemplateProcessing)?
        let post_adds_bos = match bos_token_id {
            Some(bos) => inner
                .encode("a", true)
                .map(|e| e.get_ids().first() == Some(&bos))
                .unwrap_or(false),
            None => false,
        };
        let config_add_bos = config
            .get("add_bos_token")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let add_bos = bos_token_id.is_some() && (post_adds_bos || config_add_bos);
        let prepend_bos = add_bos && !post_adds_bos;

        let jinja_path = dir.join("chat_template.jinja");
        let chat_template = if jinja_path.is_file() {
            Some(
                std::fs::read_to_string(&jinja_path)
                    .map_err(|e| Error::io(format!("reading {}", jinja_path.display()), e))?,
            )
        } else {
            config.get("chat_template").and_then(json_chat_template)
        };

        Ok(Self::assemble(
            inner,
            bos_token_id,
            eos_token_ids,
            pad_token_id,
            add_bos,
            prepend_bos,
            bos_token,
            eos_token,
            chat_template,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        inner: tokenizers::Tokenizer,
        bos_token_id: Option<u32>,
        eos_token_ids: Vec<u32>,
        pad_token_id: Option<u32>,
        add_bos: bool,
        prepend_bos: bool,
        bos_token: Option<String>,
        eos_token: Option<String>,
        chat_template: Option<String>,
    ) -> Self {
        let special_ids = inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| id)
            .collect();
        Self {
            inner,
            bos_token_id,
            eos_token_ids,
            pad_token_id,
            add_bos,
            prepend_bos,
            bos_token,
            eos_token,
            chat_template,
            special_ids,
        }
    }

    /// Token ids of `text`. Special tokens written in the text (`<|im_start|>`) are always matched
    /// whole; `add_special_tokens` adds BOS (when the model wants one) and whatever the
    /// `tokenizer.json` post-processor adds.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| tok_err("encode", e))?;
        let ids = enc.get_ids();
        match self.bos_token_id {
            Some(bos) if add_special_tokens && self.prepend_bos => {
                let mut out = Vec::with_capacity(ids.len() + 1);
                out.push(bos);
                out.extend_from_slice(ids);
                Ok(out)
            }
            _ => Ok(ids.to_vec()),
        }
    }

    /// Text of `ids`; `skip_special_tokens` drops special (control) tokens.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| tok_err("decode", e))
    }

    /// The vocabulary string of `id` (byte-level form, e.g. `Ġworld`).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Number of ids, added tokens included (for GGUF: the length of `tokenizer.ggml.tokens`).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Whether `id` is a special (control) token.
    pub fn is_special(&self, id: u32) -> bool {
        self.special_ids.contains(&id)
    }

    /// Whether `id` ends generation.
    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_token_ids.contains(&id)
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos_token_id
    }

    /// Every id that ends generation; the declared EOS first.
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_token_ids
    }

    pub fn pad_token_id(&self) -> Option<u32> {
        self.pad_token_id
    }

    /// Whether `encode(_, true)` starts with BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    pub fn bos_token(&self) -> Option<&str> {
        self.bos_token.as_deref()
    }

    pub fn eos_token(&self) -> Option<&str> {
        self.eos_token.as_deref()
    }

    /// The model's own chat template (Jinja source), if it has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// Replaces the chat template (e.g. `--chat-template`).
    pub fn set_chat_template(&mut self, template: Option<String>) {
        self.chat_template = template;
    }

    /// Adds an id that ends generation (e.g. from a `config.json` or a CLI flag).
    pub fn add_eos_token_id(&mut self, id: u32) {
        push_unique(&mut self.eos_token_ids, id);
    }
}
