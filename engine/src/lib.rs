//! ember's engine: requests, the paged KV block pool with automatic prefix caching, the vLLM-V1-style
//! scheduler (a step is plain data: request → number of tokens to compute), the model runner, the
//! sampler, incremental detokenization, and the engine loop.

pub mod block_pool;
pub mod config;
pub mod detokenizer;
pub mod engine;
pub mod error;
pub mod handle;
pub mod metrics;
pub mod model_runner;
pub mod options;
pub mod prefix_hash;
pub mod profile;
pub mod request;
pub mod sampler;
pub mod scheduler;
pub mod structured_output;

pub use block_pool::{BlockPool, ComputedBlocks, PrefixCacheStats};
pub use config::{CacheConfig, SchedulerConfig, SchedulingPolicy};
pub use engine::{LlmEngine, RequestOutput, RequestTimings};
pub use error::{Error, Result, SchedulerError, ValidationError};
pub use handle::{EngineConfig, EngineHandle, RequestStream};
pub use metrics::{Histogram, MetricsSnapshot};
pub use model_runner::{capture_sizes, GraphCapture};
pub use options::{
    check_gpu_memory_utilization, cuda_graphs_requested, EngineOptions, CUDA_GRAPHS_ENV,
};
pub use prefix_hash::BlockHash;
pub use request::{FinishReason, Request, RequestId, RequestStatus, SamplingParams, StopCause};
pub use sampler::{SampleOutput, SampleRow, TokenLogprobs};
pub use scheduler::{check_admission, ScheduledRequest, Scheduler, SchedulerOutput};
pub use structured_output::{GrammarCompiler, Guide, StructuredOutput};
