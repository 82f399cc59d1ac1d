//! The tokenizer alone (no weights), for counting and building prompts when the model runs elsewhere.

use std::fs::File;

use candle_core::quantized::gguf_file;
use ember_models::loader::{self, ModelSource};
use ember_models::tokenizer::Tokenizer;

use super::BenchError;

/// Loads the tokenizer of `spec` (a registry alias, GGUF file, HF directory or hub id) without its
/// weights: GGUF metadata or `tokenizer.json`.
pub fn load_tokenizer(spec: &str) -> Result<Tokenizer, BenchError> {
    let err = |e: &dyn std::fmt::Display| {
        BenchError::Model(format!("loading the tokenizer of `{spec}`: {e}"))
    };
    match loader::resolve(spec).map_err(|e| err(&e))? {
        ModelSource::Gguf(path) => {
            let mut file = File::open(&path).map_err(|e| err(&e))?;
            let content = gguf_file::Content::read(&mut file).map_err(|e| err(&e))?;
            Tokenizer::from_gguf(&content.metadata).map_err(|e| err(&e))
        }
        ModelSource::HfDir(dir) => Tokenizer::from_hf_dir(&dir).map_err(|e| err(&e)),
    }
}
