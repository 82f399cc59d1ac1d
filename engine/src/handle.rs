//! The async face of the engine: the loop runs on its own OS thread (model steps never block the async
//! runtime), callers submit requests and read each one's outputs from a stream. The server and the
//! evaluator both talk to the engine through this one handle.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use ember_models::loader::LoadedModel;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tracing::{error, info, warn};

use crate::config::{CacheConfig, SchedulerConfig};
use crate::engine::{LlmEngine, RequestOutput};
use crate::error::{Error, Result};
use crate::metrics::MetricsSnapshot;
use crate::request::{Request, RequestId};
use crate::scheduler::check_admission;
use crate::structured_output::GrammarCompiler;

/// Everything the engine loop needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    pub scheduler: SchedulerConfig,
    pub cache: CacheConfig,
    /// Most requests waiting to be scheduled (not yet running); 0 = no cap. Over it, `submit` fails with
    /// [`Error::QueueFull`] (the server's 429).
    pub max_waiting: usize,
    /// Capture decode steps as CUDA graphs at start (on CUDA; `--enforce-eager` turns it off).
    pub cuda_graphs: bool,
}

impl EngineConfig {
    /// KV blocks that fit in `bytes` (`--kv-cache-memory`) for this model and block size.
    pub fn num_blocks_for_memory(model: &LoadedModel, block_size: usize, bytes: usize) -> usize {
        bytes / model.model.kv_block_bytes(block_size).max(1)
    }
}

type OutputSender = UnboundedSender<Result<RequestOutput>>;

enum Command {
    Add(Box<Request>, OutputSender),
    Abort(RequestId),
}

/// What the handles hold. Dropping the last handle drops the command sender, which ends the loop.
struct Shared {
    model: Arc<LoadedModel>,
    grammars: Arc<GrammarCompiler>,
    config: EngineConfig,
    commands: Mutex<Option<Sender<Command>>>,
    state: Arc<LoopState>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// What the loop and the handles share (no sender here, so the loop never keeps itself alive).
struct LoopState {
    metrics: Mutex<MetricsSnapshot>,
    /// Submitted and not finished, across all callers.
    unfinished: AtomicUsize,
    /// Submitted and not yet taken in by the loop.
    in_channel: AtomicUsize,
    stopped: AtomicBool,
}

/// A cheap, cloneable handle on a running engine.
#[derive(Clone)]
pub struct EngineHandle {
    shared: Arc<Shared>,
}

impl EngineHandle {
    /// Builds the engine (allocating its KV cache) and starts its loop on a new thread.
    pub fn start(model: Arc<LoadedModel>, config: EngineConfig) -> Result<Self> {
        let mut engine = LlmEngine::new(
            model.clone(),
            config.scheduler.clone(),
            config.cache.clone(),
        )?;
        if config.cuda_graphs {
            let (batch, context) = (
                config.scheduler.max_num_seqs,
                config.scheduler.max_model_len,
            );
            match engine.capture_cuda_graphs(batch, context) {
                Ok(None) => {}
                Ok(Some(c)) => info!(
                    "captured CUDA graphs of decode steps for {} batch sizes ({:?}) up to {} tokens of                      context in {:.2} s; largest replay-vs-eager logits difference {:e}",
                    c.batch_sizes.len(),
                    c.batch_sizes,
                    c.max_context,
                    c.seconds,
                    c.max_replay_difference
                ),
                Err(e) => warn!("{e}; every step runs eagerly"),
            }
        }
        let max_concurrency =
            config.cache.capacity_tokens() as f64 / config.scheduler.max_model_len as f64;
        info!(
            num_blocks = config.cache.num_blocks,
            block_size = config.cache.block_size,
            kv_tokens = config.cache.capacity_tokens(),
            "KV cache ready; maximum concurrency for {} tokens per request: {max_concurrency:.2}x",
            config.scheduler.max_model_len
        );
        let (tx, rx) = mpsc::channel();
        let state = Arc::new(LoopState {
            metrics: Mutex::new(engine.metrics()),
            unfinished: AtomicUsize::new(0),
            in_channel: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
        });
        let shared = Arc::new(Shared {
            grammars: engine.grammars().clone(),
            model,
            config,
            commands: Mutex::new(Some(tx)),
            state: state.clone(),
            thread: Mutex::new(None),
        });
        let thread = std::thread::Builder::new()
            .name("ember-engine".into())
            .spawn(move || run_loop(engine, rx, &state))
            .map_err(|e| Error::Config(format!("cannot start the engine thread: {e}")))?;
        *shared.thread.lock().expect("engine thread slot") = Some(thread);
        Ok(Self { shared })
    }

    pub fn model(&self) -> &Arc<LoadedModel> {
        &self.shared.model
    }

    /// The engine's structured-output compiler (to compile off the async runtime before `submit`).
    pub fn grammars(&self) -> &Arc<GrammarCompiler> {
        &self.shared.grammars
    }

    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    /// Validates the request now (parameters, vocabulary, structured output, context length, KV capacity,
    /// queue cap) and queues it. Anything refused here never took a block. Outputs arrive on the returned
    /// stream; dropping the stream before the request finished aborts it. A structured output is compiled
    /// here, on the caller's thread, not on the engine's.
    pub fn submit(&self, mut request: Request) -> Result<RequestStream> {
        let shared = &self.shared;
        LlmEngine::validate_for_model(&shared.model, &request)?;
        if let (None, Some(spec)) = (&request.guide, &request.sampling.structured_output) {
            request.guide = Some(shared.grammars.compile(spec)?);
        }
        let cfg = &shared.config;
        check_admission(
            &cfg.scheduler,
            cfg.cache.num_blocks,
            cfg.cache.block_size,
            &request,
        )?;
        let state = &shared.state;
        let waiting = state.in_channel.load(Ordering::SeqCst)
            + state.metrics.lock().expect("metrics").num_waiting;
        if cfg.max_waiting > 0 && waiting >= cfg.max_waiting {
            return Err(Error::QueueFull {
                waiting,
                limit: cfg.max_waiting,
            });
        }
        let (tx, rx) = unbounded_channel();
        let id = request.id.clone();
        let sequences = request.sampling.n.max(1);
        {
            let commands = shared.commands.lock().expect("engine command channel");
            let sender = commands.as_ref().ok_or(Error::Shutdown)?;
            state.unfinished.fetch_add(1, Ordering::SeqCst);
            state.in_channel.fetch_add(1, Ordering::SeqCst);
            if sender.send(Command::Add(Box::new(request), tx)).is_err() {
                state.unfinished.fetch_sub(1, Ordering::SeqCst);
                state.in_channel.fetch_sub(1, Ordering::SeqCst);
                return Err(Error::Shutdown);
            }
        }
        Ok(RequestStream {
            id,
            rx,
            handle: self.clone(),
            sequences_left: sequences,
            done: false,
        })
    }

    /// Ends a request now; its blocks are freed at once. Unknown ids are ignored.
    pub fn abort(&self, id: &str) {
        if let Some(sender) = self
            .shared
            .commands
            .lock()
            .expect("engine command channel")
            .as_ref()
        {
            let _ = sender.send(Command::Abort(RequestId::from(id.to_string())));
        }
    }

    /// The engine's counters and gauges as of its last step.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.state.metrics.lock().expect("metrics").clone()
    }

    /// Requests submitted and not yet finished.
    pub fn num_unfinished(&self) -> usize {
        self.shared.state.unfinished.load(Ordering::SeqCst)
    }

    /// Stops the loop; unfinished requests end with an [`Error::Shutdown`] on their streams. Idempotent.
    pub fn shutdown(&self) {
        self.shared.state.stopped.store(true, Ordering::SeqCst);
        self.shared
            .commands
            .lock()
            .expect("engine command channel")
            .take();
        let thread = self
            .shared
            .thread
            .lock()
            .expect("engine thread slot")
            .take();
        if let Some(thread) = thread {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

/// The loop: take commands (blocking only when idle), step, deliver outputs, publish metrics.
fn run_loop(mut engine: LlmEngine, commands: Receiver<Command>, shared: &LoopState) {
    let mut senders: HashMap<RequestId, (OutputSender, usize)> = HashMap::new();
    loop {
        // Idle: wait for work; busy: take whatever has arrived and go on stepping.
        let first = if engine.has_unfinished() {
            commands.try_recv().ok()
        } else {
            match commands.recv_timeout(Duration::from_millis(200)) {
                Ok(c) => Some(c),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        };
        if shared.stopped.load(Ordering::SeqCst) {
            break;
        }
        for command in first
            .into_iter()
            .chain(std::iter::from_fn(|| commands.try_recv().ok()))
        {
            match command {
                Command::Add(request, tx) => {
                    let id = request.id.clone();
                    let sequences = request.sampling.n.max(1);
                    match engine.add_request(*request) {
                        Ok(()) => {
                            senders.insert(id, (tx, sequences));
                        }
                        Err(e) => {
                            shared.unfinished.fetch_sub(1, Ordering::SeqCst);
                            let _ = tx.send(Err(e));
                        }
                    }
                    shared.in_channel.fetch_sub(1, Ordering::SeqCst);
                }
                Command::Abort(id) => {
                    engine.abort(id.as_str());
                    if senders.remove(&id).is_some() {
                        shared.unfinished.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            }
        }
        if engine.has_unfinished() {
            match engine.step() {
                Ok(outputs) => deliver(&mut engine, &mut senders, outputs, shared),
                Err(e) => {
                    error!("engine step failed, ending the requests in it: {e}");
                    for id in engine.abort_all() {
                        if let Some((tx, _)) = senders.remove(&id) {
                            shared.unfinished.fetch_sub(1, Ordering::SeqCst);
                            let _ = tx.send(Err(e.clone()));
                        }
                    }
                }
            }
        }
        publish(&engine, shared);
    }
    // Shut down: whatever is still in flight ends with an error rather than a silent close.
    for (_, (tx, _)) in senders.drain() {
        let _ = tx.send(Err(Error::Shutdown));
    }
    engine.abort_all();
    shared.unfinished.store(0, Ordering::SeqCst);
    publish(&engine, shared);
}

fn deliver(
    engine: &mut LlmEngine,
    senders: &mut HashMap<RequestId, (OutputSender, usize)>,
    outputs: Vec<RequestOutput>,
    shared: &LoopState,
) {
    for out in outputs {
        let id = out.id.clone();
        let finished = out.finish_reason.is_some();
        let Some((tx, left)) = senders.get_mut(&id) else {
            continue;
        };
        if finished {
            *left -= 1;
        }
        let all_done = *left == 0;
        if tx.send(Ok(out)).is_err() {
            // The caller dropped its stream: free the request's blocks now.
            engine.abort(id.as_str());
            senders.remove(&id);
            shared.unfinished.fetch_sub(1, Ordering::SeqCst);
        } else if all_done {
            senders.remove(&id);
            shared.unfinished.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn publish(engine: &LlmEngine, shared: &LoopState) {
    let snapshot = engine.metrics();
    *shared.metrics.lock().expect("metrics") = snapshot;
}

/// The outputs of one request, in order; ends after the last sequence finished.
pub struct RequestStream {
    id: RequestId,
    rx: UnboundedReceiver<Result<RequestOutput>>,
    handle: EngineHandle,
    sequences_left: usize,
    done: bool,
}

impl RequestStream {
    pub fn id(&self) -> &RequestId {
        &self.id
    }

    fn note(&mut self, item: &Option<Result<RequestOutput>>) {
        match item {
            Some(Ok(out)) if out.finish_reason.is_some() => {
                self.sequences_left = self.sequences_left.saturating_sub(1);
                if self.sequences_left == 0 {
                    self.done = true;
                }
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => self.done = true,
        }
    }

    /// The next output; `None` once the request has finished.
    pub async fn next_output(&mut self) -> Option<Result<RequestOutput>> {
        if self.done {
            return None;
        }
        let item = self.rx.recv().await;
        self.note(&item);
        item
    }

    /// The next output, for callers outside async code.
    pub fn blocking_next(&mut self) -> Option<Result<RequestOutput>> {
        if self.done {
            return None;
        }
        let item = self.rx.blocking_recv();
        self.note(&item);
        item
    }

    /// Drains the stream: one merged output per sequence, by index.
    pub async fn collect_outputs(mut self) -> Result<Vec<RequestOutput>> {
        let mut merged: Vec<Option<RequestOutput>> = Vec::new();
        while let Some(item) = self.next_output().await {
            let out = item?;
            let index = out.index;
            if merged.len() <= index {
                merged.resize(index + 1, None);
            }
            match &mut merged[index] {
                Some(m) => m.merge(out),
                slot => *slot = Some(out),
            }
        }
        merged
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                m.ok_or_else(|| {
                    Error::Model(format!("sequence {i} of {} produced no output", self.id))
                })
            })
            .collect()
    }
}

impl futures_core::Stream for RequestStream {
    type Item = Result<RequestOutput>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(item) => {
                this.note(&item);
                Poll::Ready(item)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for RequestStream {
    fn drop(&mut self) {
        if !self.done {
            self.handle.abort(self.id.as_str());
        }
    }
}
