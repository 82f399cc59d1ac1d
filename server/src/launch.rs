//! `ember serve`: load the model, size the KV cache, start the engine, serve HTTP until SIGINT/SIGTERM,
//! then stop accepting, let in-flight requests finish (up to `--shutdown-timeout`), and return.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_engine::EngineHandle;
use ember_models::chat_template::ChatTemplate;
use ember_models::loader::{self, GenerationDefaults, LoadedModel, ModelSource};

use crate::args::{ArgsError, ServeArgs};
use crate::state::{AppState, CacheInfo, ServerSettings, SharedState};

/// How often engine statistics are logged (vLLM logs every 10 s too).
const STATS_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Args(#[from] ArgsError),
    #[error("loading model `{spec}`: {source}")]
    Model {
        spec: String,
        source: ember_models::Error,
    },
    #[error("starting the engine: {0}")]
    Engine(#[from] ember_engine::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServeError {
    let context = context.into();
    move |source| ServeError::Io { context, source }
}

/// Everything decided before the socket opens.
pub struct Prepared {
    pub state: SharedState,
    pub addr: String,
    pub max_body_bytes: usize,
    pub shutdown_timeout: Duration,
    pub log_stats: bool,
}

fn generation_defaults(
    args: &ServeArgs,
    model: &LoadedModel,
) -> Result<GenerationDefaults, ServeError> {
    match args.generation_config.as_str() {
        "auto" => Ok(model.generation_defaults.clone()),
        "vllm" => Ok(GenerationDefaults::default()),
        dir => {
            let path = std::path::Path::new(dir).join("generation_config.json");
            let text = std::fs::read_to_string(&path).map_err(io(format!(
                "--generation-config: reading {}",
                path.display()
            )))?;
            serde_json::from_str(&text).map_err(|e| {
                ArgsError(format!("--generation-config: {}: {e}", path.display())).into()
            })
        }
    }
}

/// Loads the model and starts the engine; returns the shared state for the router.
pub fn prepare(args: &ServeArgs) -> Result<Prepared, ServeError> {
    args.validate()?;
    let spec = args.model_spec()?.to_string();
    let chat_override = args.chat_template_source()?;
    let started = Instant::now();
    let options = args.engine.options(args.seed, args.max_waiting_requests);
    let load_options = options
        .load_options()
        .map_err(|e| ArgsError(e.to_string()))?;
    let model = loader::load_with(&spec, &load_options).map_err(|source| ServeError::Model {
        spec: spec.clone(),
        source,
    })?;
    let load_ms = started.elapsed().as_secs_f64() * 1e3;
    let config = options.resolve(&model).map_err(|e| match e {
        ember_engine::Error::Config(msg) => ArgsError(msg),
        other => ArgsError(other.to_string()),
    })?;
    let (max_model_len, block_size, num_blocks) = (
        config.scheduler.max_model_len,
        config.cache.block_size,
        config.cache.num_blocks,
    );
    let block_bytes = model.model.kv_block_bytes(block_size);
    let capacity = config.cache.capacity_tokens();
    let chat_template = match &chat_override {
        Some(src) => ChatTemplate::new(
            src.clone(),
            model.tokenizer.bos_token().unwrap_or(""),
            model.tokenizer.eos_token().unwrap_or(""),
        ),
        None => ChatTemplate::for_tokenizer(&model.tokenizer),
    }
    .map_err(|e| ArgsError(format!("chat template: {e}")))?;
    let defaults = generation_defaults(args, &model)?;
    let model_root = match &model.source {
        ModelSource::Gguf(p) | ModelSource::HfDir(p) => p.display().to_string(),
    };
    let served_names = if args.served_model_name.is_empty() {
        vec![spec.clone()]
    } else {
        args.served_model_name.clone()
    };
    tracing::info!(
        "model `{spec}` loaded in {load_ms:.0} ms from {model_root} (context {} tokens)",
        model.config.max_position_embeddings
    );
    tracing::info!(
        "KV cache: {num_blocks} blocks of {block_size} tokens = {capacity} tokens ({:.2} GiB); maximum \
         concurrency for {max_model_len} tokens per request: {:.2}x",
        (num_blocks * block_bytes) as f64 / (1u64 << 30) as f64,
        capacity as f64 / max_model_len as f64
    );
    if !defaults.eq(&GenerationDefaults::default()) {
        tracing::info!("default sampling from generation_config: {defaults:?}");
    }
    let (policy, max_num_seqs) = (config.scheduler.policy, config.scheduler.max_num_seqs);
    let enable_prefix_caching = config.cache.enable_prefix_caching;
    let engine = EngineHandle::start(Arc::new(model), config)?;
    let state = Arc::new(AppState::new(ServerSettings {
        engine,
        served_names,
        model_root,
        max_model_len,
        max_num_seqs,
        chat_template,
        defaults,
        api_key: args.resolved_api_key(),
        policy,
        log_requests: !args.disable_log_requests,
        max_logprobs: args.max_logprobs,
        concurrency_limit: args.concurrency_limit,
        cache_info: CacheInfo {
            block_size,
            num_blocks,
            enable_prefix_caching,
            gpu_memory_utilization: args.engine.device.gpu_memory_utilization,
            kv_cache_memory_bytes: (num_blocks * block_bytes) as u64,
        },
    }));
    let host = if args.host.contains(':') && !args.host.starts_with('[') {
        format!("[{}]", args.host)
    } else {
        args.host.clone()
    };
    Ok(Prepared {
        state,
        addr: format!("{host}:{}", args.port),
        max_body_bytes: usize::try_from(args.max_request_body).unwrap_or(usize::MAX),
        shutdown_timeout: Duration::from_secs_f64(args.shutdown_timeout),
        log_stats: !args.disable_log_stats,
    })
}

/// Runs the server to completion (blocking): returns after a signal and the drain.
pub fn run(args: ServeArgs) -> Result<(), ServeError> {
    let prepared = prepare(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ember-http")
        .build()
        .map_err(io("starting the async runtime"))?;
    runtime.block_on(serve(prepared, shutdown_signal()))
}

/// Serves until `shutdown` resolves, then drains.
pub async fn serve(
    prepared: Prepared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let Prepared {
        state,
        addr,
        max_body_bytes,
        shutdown_timeout,
        log_stats,
    } = prepared;
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(io(format!("binding {addr}")))?;
    let local: SocketAddr = listener
        .local_addr()
        .map_err(io("reading the bound address"))?;
    let app = crate::app::router(state.clone(), max_body_bytes);
    let signalled = Arc::new(tokio::sync::Notify::new());
    let notify = signalled.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        notify.notify_one();
    });
    let mut server_task = tokio::spawn(async move { server.await });
    tracing::info!("ember serving `{}` on http://{local}", state.model_name());
    let stats_task = log_stats.then(|| tokio::spawn(log_stats_loop(state.clone())));

    tokio::select! {
        res = &mut server_task => {
            // The server stopped by itself (accept loop failure).
            state.settings.engine.shutdown();
            return match res {
                Ok(r) => r.map_err(io("serving HTTP")),
                Err(e) => Err(ServeError::Io { context: "the HTTP task".into(), source: std::io::Error::other(e.to_string()) }),
            };
        }
        _ = signalled.notified() => {}
    }
    state.shutting_down.store(true, Ordering::SeqCst);
    let draining = state.settings.engine.num_unfinished();
    tracing::info!(
        "shutting down: no new connections; waiting up to {:.0} s for {draining} unfinished request(s)",
        shutdown_timeout.as_secs_f64()
    );
    let drained = tokio::time::timeout(shutdown_timeout, &mut server_task)
        .await
        .is_ok();
    if !drained {
        tracing::warn!(
            "shutdown timeout: aborting {} unfinished request(s)",
            state.settings.engine.num_unfinished()
        );
        state.settings.engine.shutdown();
        // Aborted streams end at once; give their connections a moment to close.
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut server_task).await;
        server_task.abort();
    }
    if let Some(t) = stats_task {
        t.abort();
    }
    state.settings.engine.shutdown();
    tracing::info!("ember stopped");
    Ok(())
}

/// SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// vLLM-style periodic statistics, logged only while something happens.
async fn log_stats_loop(state: SharedState) {
    let mut last = state.settings.engine.metrics();
    let mut last_t = Instant::now();
    let mut ticker = tokio::time::interval(STATS_INTERVAL);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let m = state.settings.engine.metrics();
        let dt = last_t.elapsed().as_secs_f64().max(1e-9);
        let prompt = m
            .prompt_tokens_total
            .saturating_sub(last.prompt_tokens_total);
        let gen = m
            .generation_tokens_total
            .saturating_sub(last.generation_tokens_total);
        if prompt + gen > 0 || m.num_running + m.num_waiting > 0 {
            let queries = m
                .prefix_cache_queries_total
                .saturating_sub(last.prefix_cache_queries_total);
            let hits = m
                .prefix_cache_hits_total
                .saturating_sub(last.prefix_cache_hits_total);
            tracing::info!(
                "Avg prompt throughput: {:.1} tokens/s, Avg generation throughput: {:.1} tokens/s, \
                 Running: {} reqs, Waiting: {} reqs, KV cache usage: {:.1}%, Prefix cache hit rate: {:.1}%",
                prompt as f64 / dt,
                gen as f64 / dt,
                m.num_running,
                m.num_waiting,
                m.kv_usage * 100.0,
                if queries > 0 { hits as f64 * 100.0 / queries as f64 } else { 0.0 }
            );
        }
        last = m;
        last_t = Instant::now();
    }
}
