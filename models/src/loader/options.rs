//! Where and in what precision a model is loaded: `--device`, `--dtype` and `--kv-cache-dtype`, resolved
//! once (vLLM's names and meanings) so every command loads the same way from the same flags.

use candle_core::{DType, Device};
use ember_kernels::{DeviceChoice, KvCacheDtype};

use crate::{Error, Result};

/// What `--dtype` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DtypeChoice {
    /// bfloat16 on CUDA, float32 on the CPU.
    #[default]
    Auto,
    Exact(DType),
}

impl std::str::FromStr for DtypeChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Self::Auto,
            "bfloat16" | "bf16" => Self::Exact(DType::BF16),
            "float16" | "half" | "fp16" | "f16" => Self::Exact(DType::F16),
            "float32" | "float" | "fp32" | "f32" => Self::Exact(DType::F32),
            _ => {
                return Err(Error::Device(format!(
                    "--dtype `{s}`: expected auto, bfloat16, float16 or float32"
                )))
            }
        })
    }
}

/// A resolved device and the types the model computes and caches in.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    /// Activations and dense weights (GGUF weights are dequantized to it on CUDA; on the CPU they stay
    /// in their quantized blocks and the model computes in f32).
    pub dtype: DType,
    pub kv_cache_dtype: KvCacheDtype,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self::cpu()
    }
}

impl LoadOptions {
    /// The CPU in f32 with an f32 KV cache (ember's CPU path).
    pub fn cpu() -> Self {
        Self::for_device(&Device::Cpu)
    }

    /// `device`'s defaults: f32 on the CPU, bf16 on CUDA.
    pub fn for_device(device: &Device) -> Self {
        Self {
            device: device.clone(),
            dtype: default_dtype(device),
            kv_cache_dtype: KvCacheDtype::Auto,
        }
    }

    /// Parses the three flags, checks that they fit together, and opens the device. Errors name the
    /// flag to change.
    pub fn resolve(device: &str, dtype: &str, kv_cache_dtype: &str) -> Result<Self> {
        let choice: DeviceChoice = device.parse()?;
        let dtype_choice: DtypeChoice = dtype.parse()?;
        let kv_cache_dtype: KvCacheDtype = kv_cache_dtype.parse()?;
        let device = choice.open()?;
        Self::check(device, dtype_choice, kv_cache_dtype, dtype)
    }

    /// The rules of [`LoadOptions::resolve`] for an already open device.
    pub fn check(
        device: Device,
        dtype_choice: DtypeChoice,
        kv_cache_dtype: KvCacheDtype,
        dtype_flag: &str,
    ) -> Result<Self> {
        let dtype = match dtype_choice {
            DtypeChoice::Auto => default_dtype(&device),
            DtypeChoice::Exact(d) => d,
        };
        if device.is_cpu() {
            if dtype != DType::F32 {
                return Err(Error::Device(format!(
                    "--dtype {dtype_flag} is not supported on the CPU: ember computes in float32 there (use \
                     auto or float32, or --device cuda)"
                )));
            }
            if kv_cache_dtype != KvCacheDtype::Auto {
                return Err(Error::Device(
                    "--kv-cache-dtype fp8 needs a CUDA device: the CPU keeps its KV cache in float32 (use \
                     auto, or --device cuda)"
                        .into(),
                ));
            }
        } else if !matches!(dtype, DType::BF16 | DType::F16) {
            return Err(Error::Device(format!(
                "--dtype {dtype_flag} is not supported on CUDA: ember's CUDA attention runs in bfloat16 or \
                 float16 (use auto, bfloat16 or float16)"
            )));
        }
        Ok(Self {
            device,
            dtype,
            kv_cache_dtype,
        })
    }
}

fn default_dtype(device: &Device) -> DType {
    if device.is_cpu() {
        DType::F32
    } else {
        DType::BF16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_rules() {
        let o = LoadOptions::resolve("cpu", "auto", "auto").unwrap();
        assert!(o.device.is_cpu() && o.dtype == DType::F32);
        assert_eq!(
            LoadOptions::resolve("cpu", "float32", "auto")
                .unwrap()
                .dtype,
            DType::F32
        );
        let e = LoadOptions::resolve("cpu", "bfloat16", "auto").unwrap_err();
        assert!(e.to_string().contains("--dtype bfloat16"), "{e}");
        let e = LoadOptions::resolve("cpu", "auto", "fp8").unwrap_err();
        assert!(e.to_string().contains("--kv-cache-dtype"), "{e}");
        assert!(LoadOptions::resolve("cpu", "int4", "auto").is_err());
        assert!(LoadOptions::resolve("cpu", "auto", "fp8_e5m2").is_err());
        assert!(LoadOptions::resolve("tpu", "auto", "auto").is_err());
    }

    #[test]
    fn parses_vllm_spellings() {
        assert_eq!(
            "half".parse::<DtypeChoice>().unwrap(),
            DtypeChoice::Exact(DType::F16)
        );
        assert_eq!(
            "BFloat16".parse::<DtypeChoice>().unwrap(),
            DtypeChoice::Exact(DType::BF16)
        );
        assert_eq!(
            "cuda:3".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::Cuda(3)
        );
        assert_eq!(
            "fp8_e4m3".parse::<KvCacheDtype>().unwrap(),
            KvCacheDtype::Fp8E4M3
        );
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
    }
}
