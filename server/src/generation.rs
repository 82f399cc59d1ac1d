//! Submitting a request's prompts to the engine and driving the outputs, shared by completions and chat:
//! one merged stream of `(prompt index, output)`, folded into whole choices or turned into SSE chunks.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::body::Bytes;
use axum::response::Response;
use ember_engine::{
    Error as EngineError, FinishReason, Request, RequestOutput, SamplingParams, SchedulingPolicy,
    StopCause, TokenLogprobs,
};
use futures_util::stream::{self, BoxStream, SelectAll};
use futures_util::StreamExt;
use serde_json::Value;

use crate::errors::{ApiError, ApiResult};
use crate::sse;
use crate::state::{AppState, InFlight};

pub type Outputs = SelectAll<BoxStream<'static, (usize, Result<RequestOutput, EngineError>)>>;

/// `priority` is only honoured with `--scheduling-policy priority` (vLLM refuses it otherwise).
pub fn check_priority(state: &AppState, priority: Option<i32>) -> ApiResult<i32> {
    let p = priority.unwrap_or(0);
    if p != 0 && state.settings.policy != SchedulingPolicy::Priority {
        return Err(ApiError::invalid(
            "priority",
            format!("Got priority {p} but Priority scheduling is not enabled (start the server with --scheduling-policy priority)."),
        ));
    }
    Ok(p)
}

/// Queues every prompt (ids `{base_id}-{i}`; a single prompt keeps `base_id`). If one is refused, the
/// ones already queued are aborted (their streams are dropped) and the refusal is the answer. A
/// structured output is compiled once, on a blocking thread (the first one also builds the vocabulary's
/// token trie, about a second for a 150k vocabulary), and each prompt gets its own copy.
pub async fn submit_all(
    state: &AppState,
    base_id: &str,
    prompts: &[Vec<u32>],
    sampling: &SamplingParams,
    priority: i32,
    cache_salt: Option<&str>,
) -> ApiResult<Outputs> {
    let mut streams: Vec<BoxStream<'static, (usize, Result<RequestOutput, EngineError>)>> =
        Vec::with_capacity(prompts.len());
    let guide = match &sampling.structured_output {
        Some(spec) => {
            let (grammars, spec) = (state.settings.engine.grammars().clone(), spec.clone());
            let compiled = tokio::task::spawn_blocking(move || grammars.compile(&spec))
                .await
                .map_err(|e| {
                    ApiError::new(
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        format!("structured output compiler: {e}"),
                    )
                })?;
            Some(compiled.map_err(ApiError::from_validation)?)
        }
        None => None,
    };
    for (i, ids) in prompts.iter().enumerate() {
        let id = if prompts.len() == 1 {
            base_id.to_string()
        } else {
            format!("{base_id}-{i}")
        };
        let mut req = Request::new(id, ids.clone(), sampling.clone()).with_priority(priority);
        if let Some(salt) = cache_salt {
            req = req.with_cache_salt(salt);
        }
        req.guide = guide.clone();
        let s = state.settings.engine.submit(req)?;
        streams.push(s.map(move |r| (i, r)).boxed());
    }
    Ok(stream::select_all(streams))
}

/// One choice's outputs, merged.
#[derive(Default)]
pub struct ChoiceAccum {
    pub text: String,
    pub token_ids: Vec<u32>,
    pub logprobs: Vec<TokenLogprobs>,
    pub finish: Option<FinishReason>,
}

impl ChoiceAccum {
    pub fn absorb(&mut self, out: &RequestOutput) {
        self.text.push_str(&out.text_delta);
        self.token_ids.extend_from_slice(&out.new_token_ids);
        self.logprobs.extend(out.logprobs.iter().cloned());
        if out.finish_reason.is_some() {
            self.finish = out.finish_reason.clone();
        }
    }
}

/// Per prompt: what the engine reported once (token counts, prompt logprobs).
#[derive(Default, Clone)]
pub struct PromptInfo {
    pub num_prompt_tokens: usize,
    pub num_cached_tokens: usize,
    pub prompt_logprobs: Option<Vec<TokenLogprobs>>,
}

/// Drains `outputs` into `num_prompts * n` choices (choice index = prompt index * n + sequence index).
pub async fn collect(
    mut outputs: Outputs,
    num_prompts: usize,
    n: usize,
    inflight: &mut InFlight,
) -> ApiResult<(Vec<ChoiceAccum>, Vec<PromptInfo>)> {
    let mut choices: Vec<ChoiceAccum> = (0..num_prompts * n).map(|_| Default::default()).collect();
    let mut prompts = vec![PromptInfo::default(); num_prompts];
    while let Some((pi, res)) = outputs.next().await {
        let out = res.map_err(|e| {
            let err = ApiError::from(e);
            inflight.record.error = Some(err.message.clone());
            err
        })?;
        inflight.observe(&out);
        note_prompt(&mut prompts[pi], &out, inflight);
        if let Some(c) = choices.get_mut(pi * n + out.index) {
            c.absorb(&out);
        }
    }
    Ok((choices, prompts))
}

/// Records a prompt's counts and prompt logprobs the first time they are seen.
pub fn note_prompt(info: &mut PromptInfo, out: &RequestOutput, inflight: &mut InFlight) {
    if info.num_prompt_tokens == 0 {
        info.num_prompt_tokens = out.num_prompt_tokens;
        info.num_cached_tokens = out.num_cached_tokens;
        inflight.record.prompt_tokens += out.num_prompt_tokens;
        inflight.record.cached_tokens += out.num_cached_tokens;
    }
    if info.prompt_logprobs.is_none() {
        if let Some(p) = &out.prompt_logprobs {
            info.prompt_logprobs = Some(p.clone());
        }
    }
}

/// vLLM's `stop_reason`: the stop string or token id that ended the choice, else null.
pub fn stop_reason(finish: Option<&FinishReason>) -> Option<Value> {
    match finish {
        Some(FinishReason::Stop(StopCause::String(s))) => Some(Value::from(s.clone())),
        Some(FinishReason::Stop(StopCause::TokenId(t))) => Some(Value::from(*t)),
        _ => None,
    }
}

/// Turns engine outputs into SSE chunks (completions and chat each have one).
pub trait ChunkMaker: Send + 'static {
    fn on_output(
        &mut self,
        prompt_index: usize,
        out: RequestOutput,
        inflight: &mut InFlight,
    ) -> Vec<Bytes>;
    /// After the last output: the usage chunk, if asked for.
    fn on_end(&mut self) -> Vec<Bytes>;
}

struct Driver<M> {
    outputs: Outputs,
    maker: M,
    inflight: InFlight,
    pending: VecDeque<Bytes>,
    finished: bool,
}

impl<M: ChunkMaker> Driver<M> {
    async fn next_event(&mut self) -> Option<Bytes> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Some(b);
            }
            if self.finished {
                return None;
            }
            match self.outputs.next().await {
                Some((pi, Ok(out))) => {
                    self.inflight.observe(&out);
                    let chunks = self.maker.on_output(pi, out, &mut self.inflight);
                    self.pending.extend(chunks);
                }
                Some((_, Err(e))) => {
                    let err = ApiError::from(e);
                    self.inflight.record.error = Some(err.message.clone());
                    self.pending.push_back(sse::error_event(&err));
                    self.pending.push_back(sse::done());
                    self.finished = true;
                }
                None => {
                    let chunks = self.maker.on_end();
                    self.pending.extend(chunks);
                    self.pending.push_back(sse::done());
                    self.finished = true;
                }
            }
        }
    }
}

/// The SSE response for a streaming request. The stream owns the engine streams and the in-flight slot:
/// a client that disconnects drops it, which aborts its requests and frees their KV blocks.
pub fn stream_response<M: ChunkMaker>(outputs: Outputs, maker: M, inflight: InFlight) -> Response {
    let driver = Driver {
        outputs,
        maker,
        inflight,
        pending: VecDeque::new(),
        finished: false,
    };
    let events = stream::unfold(driver, |mut d| async move {
        d.next_event().await.map(|b| (Ok::<_, Infallible>(b), d))
    });
    sse::response(events)
}
