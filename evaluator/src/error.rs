//! The evaluator's error type: every failure a user can cause says what to do about it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown task `{0}` (known tasks: {1})")]
    UnknownTask(String, String),
    #[error("the data for task `{task}` is missing ({path}); run `ember data fetch {fetch}`")]
    MissingData {
        task: String,
        path: PathBuf,
        fetch: String,
    },
    #[error("bad data in {path}: {message}")]
    BadData { path: String, message: String },
    #[error("data fetch failed: {0}")]
    Fetch(String),
    #[error("task file {path}: {message}")]
    TaskFile { path: PathBuf, message: String },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("model backend: {0}")]
    Backend(String),
    #[error("HTTP request to {url} failed: {message}")]
    Http { url: String, message: String },
    #[error("engine: {0}")]
    Engine(#[from] ember_engine::Error),
    #[error("model: {0}")]
    Model(#[from] ember_models::Error),
    #[error("cache database: {0}")]
    Cache(#[from] rusqlite::Error),
    #[error("code execution: {0}")]
    Sandbox(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches what was being done to an I/O error.
pub trait IoContext<T> {
    fn io_context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io_context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}
