use std::path::PathBuf;

/// Everything that can go wrong while finding, fetching or loading a model, or running it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Kernel(#[from] ember_kernels::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid JSON in {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("model config: {0}")]
    Config(String),
    #[error("unsupported architecture `{0}` (ember supports: llama, qwen2, qwen3)")]
    UnsupportedArchitecture(String),
    #[error("{0}")]
    NotFound(String),
    #[error("checksum mismatch for {what}: expected sha256 {expected}, got {actual}")]
    Checksum {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("fetching model failed: {0}")]
    Fetch(String),
    #[error("invalid GGUF file {path}: {message}")]
    Gguf { path: PathBuf, message: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    ChatTemplate(String),
    #[error("invalid batch: {0}")]
    Batch(String),
    /// Device, dtype or KV-cache dtype flags that do not fit together; the message names the flag.
    #[error("{0}")]
    Device(String),
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
