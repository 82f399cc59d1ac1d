//! (stub until the tokenizer lands)
use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;

use crate::{Error, Result};

pub struct Tokenizer {
    pub eos_token_ids: Vec<u32>,
}

impl Tokenizer {
    pub fn from_gguf(_metadata: &HashMap<String, Value>) -> Result<Self> {
        Ok(Self { eos_token_ids: vec![] })
    }
    pub fn from_hf_dir(_dir: &Path) -> Result<Self> {
        Ok(Self { eos_token_ids: vec![] })
    }
    pub fn encode(&self, _text: &str, _add_special_tokens: bool) -> Result<Vec<u32>> {
        Err(Error::Tokenizer("stub".into()))
    }
    pub fn decode(&self, _ids: &[u32], _skip_special_tokens: bool) -> Result<String> {
        Err(Error::Tokenizer("stub".into()))
    }
}
