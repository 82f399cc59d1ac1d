//! ember's kernels: one API for attention and KV-cache operations, with a CPU implementation always and a
//! CUDA one behind the `cuda` feature.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Shape(String),
}

pub type Result<T> = std::result::Result<T, Error>;
