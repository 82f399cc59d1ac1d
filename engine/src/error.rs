//! The engine's errors. Every message is meant to reach a client as is (the server turns them into 400s).

use crate::request::RequestId;

/// A sampling parameter out of its allowed range. `param` names the offending field as the OpenAI
/// protocol spells it (the server reports it in the error's `param`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    pub param: &'static str,
    pub message: String,
}

impl ValidationError {
    pub fn new(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            param,
            message: message.into(),
        }
    }
}

/// Why the scheduler refused a request (before it took any KV block).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedulerError {
    /// vLLM's wording, with the completion part when `max_tokens` was given.
    #[error(
        "This model's maximum context length is {max_model_len} tokens. However, you requested \
         {requested} tokens ({prompt} in the messages, {completion} in the completion). Please reduce the \
         length of the messages or completion."
    )]
    TooLong {
        max_model_len: usize,
        requested: usize,
        prompt: usize,
        completion: usize,
    },
    /// The prompt alone leaves no room for a generated token (no `max_tokens` given).
    #[error(
        "This model's maximum context length is {max_model_len} tokens. However, you requested {prompt} \
         tokens in the messages, Please reduce the length of the messages."
    )]
    PromptTooLong { max_model_len: usize, prompt: usize },
    #[error("The prompt is empty: at least one prompt token is required.")]
    EmptyPrompt,
    #[error(
        "The request needs up to {needed_tokens} tokens of KV cache, but the whole cache holds only \
         {capacity_tokens} tokens."
    )]
    ExceedsKvCapacity {
        needed_tokens: usize,
        capacity_tokens: usize,
    },
    #[error("A request with id `{0}` is already in the engine.")]
    DuplicateRequest(RequestId),
    #[error(transparent)]
    InvalidParams(#[from] ValidationError),
}

/// Configuration errors and the union of the above, for the engine's callers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error("invalid engine configuration: {0}")]
    Config(String),
    /// The model failed to run a step (reported to every request in it).
    #[error("model: {0}")]
    Model(String),
    /// The waiting queue is at its cap (the server's 429).
    #[error(
        "The server is overloaded: {waiting} requests are waiting (limit {limit}). Retry later."
    )]
    QueueFull { waiting: usize, limit: usize },
    /// The engine has stopped (shutting down); the request did not run to its end.
    #[error("The engine is shutting down.")]
    Shutdown,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
