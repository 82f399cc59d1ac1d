//! Finding and loading models: local GGUF files, Hugging Face directories, hub ids and registry aliases.

pub mod gguf;
pub mod hub;
pub mod options;
pub mod registry;
pub mod safetensors;

pub use options::{DtypeChoice, LoadOptions};

use std::path::{Path, PathBuf};

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use crate::config::ModelConfig;
use crate::model::DecoderModel;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// Named weights of a model, in Hugging Face's naming (`model.layers.0.self_attn.q_proj.weight`);
/// each format maps these names onto its own.
pub trait Weights {
    /// A 2-D weight used as `x Wᵀ`, kept in its stored (possibly quantized) form.
    fn matmul(&self, name: &str) -> Result<QMatMul>;
    /// A 1-D tensor in the compute dtype (norm weights, biases).
    fn vector(&self, name: &str) -> Result<Tensor>;
    fn contains(&self, name: &str) -> bool;
    fn device(&self) -> &Device;
    /// The type the model computes in (f32 on the CPU).
    fn dtype(&self) -> DType {
        DType::F32
    }
}

/// Default sampling the model ships with (`generation_config.json`); `None` leaves vLLM's defaults.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct GenerationDefaults {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub repetition_penalty: Option<f64>,
    pub max_new_tokens: Option<usize>,
}

/// Where a model came from and what format it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    Gguf(PathBuf),
    HfDir(PathBuf),
}

/// A model ready to run: its weights, shape, tokenizer and default sampling.
pub struct LoadedModel {
    /// The name the user gave (path, hub id or alias).
    pub name: String,
    pub source: ModelSource,
    pub config: ModelConfig,
    pub model: DecoderModel,
    pub tokenizer: Tokenizer,
    pub generation_defaults: GenerationDefaults,
}

/// Turns what the user typed (a GGUF file, an HF directory, a registry alias or a hub id) into a local
/// source, fetching registry models on first use.
pub fn resolve(spec: &str) -> Result<ModelSource> {
    let path = Path::new(spec);
    if path.is_file() {
        return Ok(ModelSource::Gguf(path.to_path_buf()));
    }
    if path.is_dir() {
        if path.join("config.json").is_file() {
            return Ok(ModelSource::HfDir(path.to_path_buf()));
        }
        let ggufs = gguf::find_in_dir(path)?;
        return match ggufs.as_slice() {
            [one] => Ok(ModelSource::Gguf(one.clone())),
            [] => Err(Error::NotFound(format!(
                "{} has no config.json (a Hugging Face model directory) and no .gguf file",
                path.display()
            ))),
            many => Err(Error::NotFound(format!(
                "{} holds {} .gguf files; pass one of them: {}",
                path.display(),
                many.len(),
                many.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        };
    }
    let looks_like_path = spec.starts_with(['/', '.', '~'])
        || spec.to_ascii_lowercase().ends_with(".gguf")
        || spec.contains(std::path::MAIN_SEPARATOR) && path.parent().is_some_and(|p| p.exists());
    if looks_like_path {
        return Err(Error::NotFound(format!(
            "no such file or directory: {spec}"
        )));
    }
    if registry::lookup(spec).is_some() {
        return Ok(ModelSource::Gguf(registry::fetch(spec)?));
    }
    if hub::looks_like_hub_id(spec) {
        return Ok(ModelSource::HfDir(hub::resolve_hub_model(spec, None)?));
    }
    Err(Error::NotFound(format!(
        "model `{spec}` is neither a file, a directory, a registry alias ({}) nor a hub id (org/name)",
        registry::aliases().join(", ")
    )))
}

/// Resolves and loads a model onto `device` in that device's default dtype (f32 on the CPU, bf16 on CUDA).
pub fn load(spec: &str, device: &Device) -> Result<LoadedModel> {
    load_with(spec, &LoadOptions::for_device(device))
}

/// Resolves and loads a model with the device, dtype and KV-cache dtype of `options`.
pub fn load_with(spec: &str, options: &LoadOptions) -> Result<LoadedModel> {
    let source = resolve(spec)?;
    let started = std::time::Instant::now();
    let (config, model, tokenizer, generation_defaults) = match &source {
        ModelSource::Gguf(path) => gguf::load(path, options)?,
        ModelSource::HfDir(dir) => safetensors::load(dir, options)?,
    };
    tracing::info!(
        model = spec,
        architecture = ?config.architecture,
        layers = config.num_layers,
        device = ?options.device,
        dtype = ?options.dtype,
        kv_cache_dtype = ?options.kv_cache_dtype,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "model loaded"
    );
    Ok(LoadedModel {
        name: spec.to_string(),
        source,
        config,
        model,
        tokenizer,
        generation_defaults,
    })
}
