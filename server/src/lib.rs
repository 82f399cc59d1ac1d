//! ember's HTTP face: vLLM's OpenAI-compatible server (`ember serve`). Routes, SSE streaming, API-key
//! auth, vLLM's error format and Prometheus `/metrics`, over the engine's `EngineHandle`.

pub mod app;
pub mod args;
pub mod auth;
pub mod chat_render;
pub mod errors;
pub mod extract;
pub mod generation;
pub mod launch;
pub mod logprobs;
pub mod protocol;
pub mod routes;
pub mod sampling;
pub mod sse;
pub mod state;
pub mod structured;
pub mod tool_choice;

pub use args::ServeArgs;
pub use launch::{run, ServeError};
