//! Shared by the engine's integration tests.

use std::sync::Arc;

use candle_core::quantized::GgmlDType;
use candle_core::Device;
use ember_models::config::Architecture;
use ember_models::loader::{self, LoadedModel};
use ember_models::testing::{write_tiny_model, TinyFormat};

/// A tiny random-weight Qwen2 model (GGUF, Q8_0) written to a temp dir and loaded; keep the dir alive.
pub fn tiny_model() -> (tempfile::TempDir, Arc<LoadedModel>) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tiny_model(
        dir.path(),
        Architecture::Qwen2,
        TinyFormat::Gguf(GgmlDType::Q8_0),
        5,
    )
    .unwrap();
    let model = loader::load(path.to_str().unwrap(), &Device::Cpu).unwrap();
    (dir, Arc::new(model))
}
