//! What every route shares: the engine handle, the served names, the chat template, sampling defaults,
//! the in-flight limit, and the per-request log record.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ember_engine::{EngineHandle, RequestOutput, SchedulingPolicy};
use ember_models::chat_template::ChatTemplate;
use ember_models::loader::GenerationDefaults;
use ember_models::tokenizer::Tokenizer;
use rand::Rng;

use crate::errors::{ApiError, ApiResult};

/// The cache settings `/metrics` reports as `vllm:cache_config_info`.
#[derive(Debug, Clone)]
pub struct CacheInfo {
    pub block_size: usize,
    pub num_blocks: usize,
    pub enable_prefix_caching: bool,
    pub gpu_memory_utilization: f64,
    pub kv_cache_memory_bytes: u64,
}

pub struct AppState {
    /// What `ember serve`'s flags and the loaded model fixed at start.
    pub settings: ServerSettings,
    pub in_flight: AtomicUsize,
    pub shutting_down: AtomicBool,
    pub created: u64,
    next_id: AtomicU64,
    id_salt: u64,
}

pub type SharedState = Arc<AppState>;

pub struct ServerSettings {
    pub engine: EngineHandle,
    /// `--served-model-name`s; the first is reported in responses and metrics.
    pub served_names: Vec<String>,
    /// What the model was loaded from (the model card's `root`).
    pub model_root: String,
    pub max_model_len: usize,
    pub max_num_seqs: usize,
    pub chat_template: ChatTemplate,
    pub defaults: GenerationDefaults,
    pub api_key: Option<String>,
    pub policy: SchedulingPolicy,
    pub log_requests: bool,
    pub max_logprobs: usize,
    /// 0: no limit.
    pub concurrency_limit: usize,
    pub cache_info: CacheInfo,
}

impl AppState {
    pub fn new(settings: ServerSettings) -> Self {
        Self {
            settings,
            in_flight: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
            created: unix_now(),
            next_id: AtomicU64::new(0),
            id_salt: rand::rng().random(),
        }
    }

    pub fn model_name(&self) -> &str {
        &self.settings.served_names[0]
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.settings.engine.model().tokenizer
    }

    /// The request's `model` must be one of the served names (absent: the first).
    pub fn check_model(&self, requested: Option<&str>) -> ApiResult<()> {
        match requested {
            None => Ok(()),
            Some(m) if self.settings.served_names.iter().any(|n| n == m) => Ok(()),
            Some(m) => Err(ApiError::model_not_found(m)),
        }
    }

    /// A fresh id `{prefix}-{32 hex}`: unique in this process, unpredictable across processes.
    pub fn new_id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mixed = splitmix(n ^ self.id_salt);
        format!("{prefix}-{:016x}{:016x}", mixed, splitmix(mixed ^ n))
    }

    /// Admits one generation request under `--concurrency-limit`, or answers 429.
    pub fn admit(self: &Arc<Self>, route: &'static str) -> ApiResult<InFlight> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(ember_engine::Error::Shutdown.into());
        }
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        if self.settings.concurrency_limit > 0 && now > self.settings.concurrency_limit {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::overloaded(format!(
                "The server is at its concurrency limit ({} requests in flight, --concurrency-limit). \
                 Retry later.",
                self.settings.concurrency_limit
            )));
        }
        Ok(InFlight {
            state: self.clone(),
            record: RequestRecord {
                route,
                id: String::new(),
                started: Instant::now(),
                prompt_tokens: 0,
                output_tokens: 0,
                cached_tokens: 0,
                first_token: None,
                finish: None,
                error: None,
            },
        })
    }
}

/// What the request log line reports.
pub struct RequestRecord {
    pub route: &'static str,
    pub id: String,
    pub started: Instant,
    pub prompt_tokens: usize,
    pub output_tokens: usize,
    pub cached_tokens: usize,
    pub first_token: Option<Instant>,
    pub finish: Option<&'static str>,
    pub error: Option<String>,
}

/// A request holding one slot of the in-flight limit; dropping it frees the slot and writes the log line
/// (also when the client went away mid-request).
pub struct InFlight {
    state: SharedState,
    pub record: RequestRecord,
}

impl InFlight {
    /// Folds an engine output into the log record. `prompt_tokens` is summed over the request's prompts
    /// by the caller via `add_prompt`.
    pub fn observe(&mut self, out: &RequestOutput) {
        if self.record.first_token.is_none() && !out.new_token_ids.is_empty() {
            self.record.first_token = Some(Instant::now());
        }
        self.record.output_tokens += out.new_token_ids.len();
        if let Some(f) = &out.finish_reason {
            self.record.finish = Some(f.as_str());
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !self.state.settings.log_requests {
            return;
        }
        let r = &self.record;
        let ms = |t: Instant| t.duration_since(r.started).as_secs_f64() * 1e3;
        let status = match (&r.error, r.finish) {
            (Some(e), _) => e.as_str(),
            (None, Some(f)) => f,
            (None, None) => "client disconnected",
        };
        tracing::info!(
            target: "ember::request",
            "{} {} prompt_tokens={} cached_tokens={} output_tokens={} ttft_ms={} e2e_ms={:.1} finish={}",
            r.route,
            r.id,
            r.prompt_tokens,
            r.cached_tokens,
            r.output_tokens,
            r.first_token
                .map(|t| format!("{:.1}", ms(t)))
                .unwrap_or_else(|| "-".into()),
            ms(Instant::now()),
            status
        );
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
