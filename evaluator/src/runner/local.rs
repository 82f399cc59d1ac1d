//! The in-process backend: requests go straight to the engine through `EngineHandle`, many at once,
//! so continuous batching does the work. Loglikelihood = prompt logprobs of context + continuation.
//!
//! Loglikelihood requests ask for logprobs of the continuation only (`prompt_logprobs_from`), so the
//! context can come from the engine's prefix cache; the requests sharing a context (the choices of one
//! multiple-choice document) wait until the first of them has computed it. Cached KV is bit-identical to
//! recomputed KV, so scores are unchanged; the context is just computed once instead of once per choice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ember_engine::{EngineHandle, Request as EngineRequest, SamplingParams};
use ember_models::chat_template::{ChatMessage, ChatTemplate};
use serde_json::{json, Value};

use super::{loglikelihood_response, run_concurrent, Backend, Counters, Stats};
use crate::request::{split_tokens, GenParams, Request, Response};
use crate::{Error, Result};

pub struct LocalBackend {
    inner: Arc<Inner>,
    rt: tokio::runtime::Runtime,
    concurrency: usize,
}

struct Inner {
    handle: EngineHandle,
    template: Option<ChatTemplate>,
    counters: Counters,
    prefix_token: u32,
    /// Distinguishes this run's request ids from any other client of the same engine.
    run_id: u64,
    next_id: std::sync::atomic::AtomicU64,
    /// Contexts whose first loglikelihood request is in flight: the others wait for it (`true` = done).
    contexts_in_flight: Mutex<HashMap<String, tokio::sync::watch::Receiver<bool>>>,
}

impl LocalBackend {
    /// `concurrency`: requests in flight at once (`--batch-size`). With `apply_chat_template`, each
    /// context becomes one user message rendered with the model's chat template.
    pub fn new(
        handle: EngineHandle,
        concurrency: usize,
        apply_chat_template: bool,
    ) -> Result<Self> {
        let tokenizer = &handle.model().tokenizer;
        let template = if apply_chat_template {
            Some(ChatTemplate::for_tokenizer(tokenizer)?)
        } else {
            None
        };
        let prefix_token = tokenizer
            .bos_token_id()
            .or_else(|| tokenizer.eos_token_ids().first().copied())
            .unwrap_or(0);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::Backend(format!("starting the async runtime: {e}")))?;
        let run_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Ok(Self {
            inner: Arc::new(Inner {
                handle,
                template,
                counters: Counters::default(),
                prefix_token,
                run_id,
                next_id: Default::default(),
                contexts_in_flight: Default::default(),
            }),
            rt,
            concurrency,
        })
    }

    pub fn handle(&self) -> &EngineHandle {
        &self.inner.handle
    }
}

impl Inner {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.handle.model().tokenizer.encode(text, false)?)
    }

    fn render(&self, context: &str) -> Result<String> {
        match &self.template {
            Some(t) => Ok(t.render(&[ChatMessage::new("user", context)], true)?),
            None => Ok(context.to_string()),
        }
    }

    fn max_len(&self) -> usize {
        self.handle.config().scheduler.max_model_len
    }

    async fn loglikelihood(
        &self,
        id: String,
        context: &str,
        continuation: &str,
    ) -> Result<Response> {
        let context = self.render(context)?;
        let (ctx, cont) = split_tokens(
            &context,
            continuation,
            |s| self.encode(s),
            self.prefix_token,
        )?;
        if cont.is_empty() {
            return Err(Error::Backend(format!(
                "the continuation {continuation:?} encodes to no tokens"
            )));
        }
        let mut ids = ctx;
        ids.extend_from_slice(&cont);
        // Like lm-eval, keep the rightmost tokens that fit (one position stays free for the sampled token).
        let room = self.max_len().saturating_sub(1);
        if ids.len() > room {
            ids.drain(..ids.len() - room);
        }
        if cont.len() >= ids.len() {
            return Err(Error::Backend(
                "the continuation alone exceeds the model's context".into(),
            ));
        }
        let n = ids.len();
        let sampling = SamplingParams {
            temperature: 0.0,
            max_tokens: Some(1),
            prompt_logprobs: Some(1),
            prompt_logprobs_from: n - cont.len(),
            ..Default::default()
        };
        let done = self.wait_for_context(&context).await;
        let result = self
            .handle
            .submit(EngineRequest::new(id, ids, sampling))
            .map_err(Error::from);
        let outputs = match result {
            Ok(stream) => stream.collect_outputs().await.map_err(Error::from),
            Err(e) => Err(e),
        };
        if let Some(done) = done {
            self.contexts_in_flight
                .lock()
                .expect("context map lock")
                .remove(&context);
            // Receivers see `true` (or a dropped sender): either way they go ahead.
            let _ = done.send(true);
        }
        let outputs = outputs?;
        let out = outputs
            .first()
            .ok_or_else(|| Error::Backend("the engine returned no output".into()))?;
        let plp = out
            .prompt_logprobs
            .as_ref()
            .ok_or_else(|| Error::Backend("the engine returned no prompt logprobs".into()))?;
        // prompt_logprobs[i] scores prompt token n - cont.len() + i: the continuation's tokens.
        if plp.len() != cont.len() {
            return Err(Error::Backend(format!(
                "{} prompt logprobs for a {}-token continuation",
                plp.len(),
                cont.len()
            )));
        }
        let scored = &plp[..];
        let greedy = scored.iter().all(|t| t.rank == 1);
        self.counters.add(n, out.num_output_tokens);
        Ok(loglikelihood_response(
            scored.iter().map(|t| t.logprob as f64).collect(),
            greedy,
        ))
    }

    /// The first request of a context goes at once and gets the sender to signal when it is done; later
    /// ones wait for that, then find the context in the prefix cache.
    async fn wait_for_context(&self, context: &str) -> Option<tokio::sync::watch::Sender<bool>> {
        let pending = {
            let mut map = self.contexts_in_flight.lock().expect("context map lock");
            match map.get(context) {
                Some(rx) => Some(rx.clone()),
                None => {
                    let (tx, rx) = tokio::sync::watch::channel(false);
                    map.insert(context.to_string(), rx);
                    return Some(tx);
                }
            }
        };
        if let Some(mut rx) = pending {
            let _ = rx.wait_for(|done| *done).await;
        }
        None
    }

    async fn generate(&self, id: String, context: &str, params: &GenParams) -> Result<Response> {
        let prompt = self.render(context)?;
        // A chat template writes its own BOS, if any; plain contexts get none, as lm-eval encodes them.
        let mut ids = self.encode(&prompt)?;
        if ids.is_empty() {
            ids.push(self.prefix_token);
        }
        let max_new = params.max_gen_toks.max(1);
        let room = self.max_len().saturating_sub(max_new);
        if ids.len() > room {
            // lm-eval keeps the rightmost max_length - max_gen_toks tokens of the context.
            ids.drain(..ids.len() - room.max(1));
        }
        let sampling = SamplingParams {
            temperature: params.temperature as f32,
            top_p: params.top_p as f32,
            seed: params.seed,
            stop: params.until.clone(),
            max_tokens: Some(max_new),
            ..Default::default()
        };
        let n = ids.len();
        let outputs = self
            .handle
            .submit(EngineRequest::new(id, ids, sampling))?
            .collect_outputs()
            .await?;
        let out = outputs
            .first()
            .ok_or_else(|| Error::Backend("the engine returned no output".into()))?;
        self.counters.add(n, out.num_output_tokens);
        Ok(Response::Generate {
            text: out.text_delta.clone(),
            num_tokens: out.num_output_tokens,
        })
    }
}

impl Backend for LocalBackend {
    fn run(&self, requests: &[Request], on_done: &(dyn Fn(usize) + Sync)) -> Result<Vec<Response>> {
        run_concurrent(&self.rt, requests, self.concurrency, on_done, |_, req| {
            let inner = self.inner.clone();
            let seq = inner
                .next_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let id = format!("eval-{}-{seq}", inner.run_id);
            async move {
                match &req {
                    Request::Loglikelihood {
                        context,
                        continuation,
                    } => inner.loglikelihood(id, context, continuation).await,
                    Request::Generate { context, params } => {
                        inner.generate(id, context, params).await
                    }
                }
            }
        })
    }

    fn describe(&self) -> Value {
        let m = self.inner.handle.model();
        json!({
            "backend": "in-process",
            "model": m.name,
            "max_model_len": self.max_len_public(),
            "chat_template": self.inner.template.is_some(),
            "concurrency": self.concurrency,
        })
    }

    fn stats(&self) -> Stats {
        self.inner.counters.snapshot()
    }
}

impl LocalBackend {
    fn max_len_public(&self) -> usize {
        self.inner.max_len()
    }
}
