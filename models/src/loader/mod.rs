//! Finding and loading models: local GGUF files, Hugging Face directories, hub ids and registry aliases.

pub mod hub;
pub mod registry;
