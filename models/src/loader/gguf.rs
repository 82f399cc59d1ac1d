//! GGUF files (llama.cpp's format): config from metadata, the tokenizer and chat template from
//! `tokenizer.*` metadata. On the CPU weights stay in their quantized blocks (ember's CPU kernels run
//! them); on CUDA each is dequantized on the device at load and kept in the compute dtype (cuBLAS GEMMs:
//! see `Weights::matmul` below for why).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::quantized::{gguf_file, QMatMul};
use candle_core::{DType, Device, Tensor};

use super::{GenerationDefaults, LoadOptions, Weights};
use crate::config::ModelConfig;
use crate::layers::qmatmul;
use crate::model::DecoderModel;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// Weights read from one GGUF file.
pub struct GgufWeights {
    path: PathBuf,
    content: gguf_file::Content,
    file: Mutex<File>,
    device: Device,
    dtype: DType,
}

impl GgufWeights {
    /// Opens `path` for loading onto `device` in its default dtype.
    pub fn open(path: &Path, device: &Device) -> Result<Self> {
        Self::open_with(path, &LoadOptions::for_device(device))
    }

    pub fn open_with(path: &Path, options: &LoadOptions) -> Result<Self> {
        let device = &options.device;
        let mut file =
            File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let content = gguf_file::Content::read(&mut file).map_err(|e| Error::Gguf {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        // A truncated download has intact metadata but tensor data past the end of the file.
        let file_len = file
            .metadata()
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
            .len() as usize;
        for (name, info) in &content.tensor_infos {
            let elems = info.shape.elem_count();
            let bytes = elems / info.ggml_dtype.block_size() * info.ggml_dtype.type_size();
            let end = content.tensor_data_offset as usize + info.offset as usize + bytes;
            if end > file_len {
                return Err(Error::Gguf {
                    path: path.to_path_buf(),
                    message: format!(
                        "tensor {name} ends at byte {end} but the file has {file_len} bytes (truncated?)"
                    ),
                });
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            content,
            file: Mutex::new(file),
            device: device.clone(),
            dtype: options.dtype,
        })
    }

    pub fn metadata(&self) -> &std::collections::HashMap<String, gguf_file::Value> {
        &self.content.metadata
    }

    fn qtensor(&self, hf_name: &str) -> Result<candle_core::quantized::QTensor> {
        let name = gguf_name(hf_name).ok_or_else(|| Error::Gguf {
            path: self.path.clone(),
            message: format!("no GGUF name for weight {hf_name}"),
        })?;
        let mut file = self.file.lock().expect("GGUF file lock poisoned");
        self.content
            .tensor(&mut *file, &name, &self.device)
            .map_err(|e| Error::Gguf {
                path: self.path.clone(),
                message: format!("tensor {name}: {e}"),
            })
    }
}

impl Weights for GgufWeights {
    fn matmul(&self, name: &str) -> Result<QMatMul> {
        let t = self.qtensor(name)?;
        if self.device.is_cpu() {
            return qmatmul(t);
        }
        // On an accelerator: dequantized once here, on the device, to the compute dtype. Decode is bound
        // by launches and bytes; bf16 weights read 3.5x the bytes of Q4_K but run every batch size through
        // cuBLAS, where candle's quantized CUDA matmul dequantizes the whole weight again on every call
        // above 8 rows, needs f32 activations and rounds them to q8_1.
        Ok(QMatMul::Tensor(
            t.dequantize(&self.device)?.to_dtype(self.dtype)?,
        ))
    }

    fn vector(&self, name: &str) -> Result<Tensor> {
        Ok(self
            .qtensor(name)?
            .dequantize(&self.device)?
            .to_dtype(self.dtype)?)
    }

    fn contains(&self, name: &str) -> bool {
        gguf_name(name).is_some_and(|n| self.content.tensor_infos.contains_key(&n))
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn dtype(&self) -> DType {
        self.dtype
    }
}

/// Maps a Hugging Face weight name onto llama.cpp's GGUF name.
pub fn gguf_name(hf_name: &str) -> Option<String> {
    let fixed = match hf_name {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some(name.to_string());
    }
    let rest = hf_name.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = rest.rsplit_once('.')?;
    let module = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{module}.{kind}"))
}

/// The `.gguf` files directly inside `dir`, sorted.
pub fn find_in_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("gguf"))
        })
        .collect();
    found.sort();
    Ok(found)
}

pub(crate) fn load(
    path: &Path,
    options: &LoadOptions,
) -> Result<(ModelConfig, DecoderModel, Tokenizer, GenerationDefaults)> {
    let weights = GgufWeights::open_with(path, options)?;
    let config = ModelConfig::from_gguf(weights.metadata(), weights.contains("lm_head.weight"))?;
    let tokenizer = Tokenizer::from_gguf(weights.metadata())?;
    let model = DecoderModel::new(&config, &weights)?.with_kv_cache_dtype(options.kv_cache_dtype);
    Ok((config, model, tokenizer, GenerationDefaults::default()))
}
