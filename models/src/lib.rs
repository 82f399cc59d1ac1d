//! ember's models: configs, weights and tokenizers from GGUF files and Hugging Face directories, and the
//! decoder-only transformers (Llama, Qwen2, Qwen3) that run one flattened, paged batch per forward.

pub mod batch;
pub mod chat_template;
pub mod config;
#[cfg(feature = "cuda")]
pub mod decode_graph;
pub mod error;
pub mod layers;
pub mod llama;
pub mod loader;
pub mod model;
pub mod qwen2;
pub mod qwen3;
pub mod random_model;
pub mod step_rope;
pub mod testing;
pub mod tokenizer;

pub use error::{Error, Result};
