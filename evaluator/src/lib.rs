//! ember's evaluator: lm-eval-harness-style tasks and scoring, run in-process against the engine or over
//! HTTP against any OpenAI-compatible server; data fetched from pinned registry packages; reports,
//! a result cache, a regression gate and dataset deduplication.

pub mod bench;
pub mod cache;
pub mod data;
pub mod dedup;
pub mod error;
pub mod evaluate;
pub mod metrics;
pub mod regression;
pub mod report;
pub mod request;
pub mod runner;
pub mod sandbox;
pub mod task_file;
pub mod tasks;

pub use error::{Error, Result};
