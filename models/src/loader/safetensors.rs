//! Hugging Face model directories: `config.json`, `model.safetensors` or sharded `model-*.safetensors`
//! with `model.safetensors.index.json` (memory-mapped), `tokenizer.json`, `tokenizer_config.json` and
//! `generation_config.json`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::quantized::QMatMul;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use super::{GenerationDefaults, LoadOptions, Weights};
use crate::config::ModelConfig;
use crate::model::DecoderModel;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// Memory-mapped safetensors weights, converted once at load to the compute dtype: f32 on the CPU
/// (candle's CPU backend has no fast bf16/f16 GEMM), bf16/f16 on CUDA (stored bf16 loads as is).
pub struct SafetensorsWeights {
    tensors: MmapedSafetensors,
    names: BTreeSet<String>,
    device: Device,
    dtype: DType,
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: std::collections::HashMap<String, String>,
}

impl SafetensorsWeights {
    /// Opens the weights of `dir` for `device` in its default dtype.
    pub fn open(dir: &Path, device: &Device) -> Result<Self> {
        Self::open_with(dir, &LoadOptions::for_device(device))
    }

    pub fn open_with(dir: &Path, options: &LoadOptions) -> Result<Self> {
        let device = &options.device;
        let files = weight_files(dir)?;
        // SAFETY: the files are mapped read-only; like every safetensors user we assume nobody rewrites
        // them while the model is loaded.
        let tensors = unsafe { MmapedSafetensors::multi(&files) }
            .map_err(|e| Error::Config(format!("reading safetensors in {}: {e}", dir.display())))?;
        let names = tensors
            .tensors()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        Ok(Self {
            tensors,
            names,
            device: device.clone(),
            dtype: options.dtype,
        })
    }

    fn load(&self, name: &str) -> Result<Tensor> {
        if !self.names.contains(name) {
            return Err(Error::Config(format!(
                "weight {name} is missing from the safetensors files"
            )));
        }
        Ok(self
            .tensors
            .load(name, &self.device)?
            .to_dtype(self.dtype)?)
    }
}

impl Weights for SafetensorsWeights {
    fn matmul(&self, name: &str) -> Result<QMatMul> {
        let w = self.load(name)?;
        if w.rank() != 2 {
            return Err(Error::Config(format!(
                "weight {name} has shape {:?}, expected 2-D",
                w.dims()
            )));
        }
        Ok(QMatMul::Tensor(w))
    }

    fn vector(&self, name: &str) -> Result<Tensor> {
        self.load(name)
    }

    fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn dtype(&self) -> DType {
        self.dtype
    }
}

/// The safetensors files of a model directory: the shards named by the index, or `model.safetensors`.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let parsed: ShardIndex = read_json(&index)?;
        let shards: BTreeSet<&String> = parsed.weight_map.values().collect();
        let files: Vec<PathBuf> = shards.into_iter().map(|s| dir.join(s)).collect();
        if let Some(missing) = files.iter().find(|f| !f.is_file()) {
            return Err(Error::NotFound(format!(
                "{} names shard {} which does not exist",
                index.display(),
                missing.display()
            )));
        }
        return Ok(files);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(Error::NotFound(format!(
        "{} has neither model.safetensors nor model.safetensors.index.json",
        dir.display()
    )))
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    serde_json::from_str(&text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn load(
    dir: &Path,
    options: &LoadOptions,
) -> Result<(ModelConfig, DecoderModel, Tokenizer, GenerationDefaults)> {
    let config_path = dir.join("config.json");
    let config_text = std::fs::read_to_string(&config_path)
        .map_err(|e| Error::io(format!("reading {}", config_path.display()), e))?;
    let config = ModelConfig::from_hf_json(&config_text)?;
    let tokenizer = Tokenizer::from_hf_dir(dir)?;
    let generation_path = dir.join("generation_config.json");
    let generation_defaults = if generation_path.is_file() {
        read_json(&generation_path)?
    } else {
        GenerationDefaults::default()
    };
    let weights = SafetensorsWeights::open_with(dir, options)?;
    let model = DecoderModel::new(&config, &weights)?.with_kv_cache_dtype(options.kv_cache_dtype);
    Ok((config, model, tokenizer, generation_defaults))
}
