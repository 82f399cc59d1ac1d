//! `POST /v1/completions`: prompts as text or token ids, `n`, logprobs, echo (with `max_tokens` 0 and 1,
//! as lm-eval's loglikelihood requests use it), streaming with `include_usage`.

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ember_engine::RequestOutput;

use crate::errors::{ApiError, ApiResult};
use crate::extract::JsonBody;
use crate::generation::{self, ChunkMaker, PromptInfo};
use crate::logprobs::{prompt_logprobs_value, CompletionLogprobsBuilder};
use crate::protocol::{
    CompletionChoice, CompletionLogprobs, CompletionRequest, CompletionResponse, Prompt, Usage,
};
use crate::sampling::{self, SamplingInputs};
use crate::sse;
use crate::state::{InFlight, SharedState};

/// vLLM's default `max_tokens` for completions.
const DEFAULT_MAX_TOKENS: usize = 16;

pub async fn completions(
    State(state): State<SharedState>,
    JsonBody(req): JsonBody<CompletionRequest>,
) -> Response {
    handle(state, req)
        .await
        .unwrap_or_else(|e| e.into_response())
}

/// A prompt as given: its text (for echo) and its token ids.
struct PromptIn {
    text: Option<String>,
    ids: Vec<u32>,
}

fn tokenize_prompts(
    state: &SharedState,
    prompt: Prompt,
    add_special: bool,
    truncate: Option<usize>,
) -> ApiResult<Vec<PromptIn>> {
    let tok = state.tokenizer();
    let encode = |s: String| -> ApiResult<PromptIn> {
        let ids = tok.encode(&s, add_special).map_err(|e| {
            ApiError::invalid("prompt", format!("Could not tokenize the prompt: {e}"))
        })?;
        Ok(PromptIn { text: Some(s), ids })
    };
    let mut prompts = match prompt {
        Prompt::Text(s) => vec![encode(s)?],
        Prompt::Texts(v) => v.into_iter().map(encode).collect::<ApiResult<_>>()?,
        Prompt::Ids(ids) => vec![PromptIn { text: None, ids }],
        Prompt::IdLists(v) => v
            .into_iter()
            .map(|ids| PromptIn { text: None, ids })
            .collect(),
    };
    if prompts.is_empty() {
        return Err(ApiError::invalid("prompt", "The prompt list is empty."));
    }
    let vocab = state.settings.engine.model().config.vocab_size;
    for p in &mut prompts {
        if let Some(&bad) = p.ids.iter().find(|&&t| t as usize >= vocab) {
            return Err(ApiError::invalid(
                "prompt",
                format!("Token id {bad} is out of vocabulary (vocab size {vocab})."),
            ));
        }
        if let Some(k) = truncate {
            if p.ids.len() > k {
                p.ids.drain(..p.ids.len() - k);
                p.text = None;
            }
        }
        if p.ids.is_empty() {
            return Err(ApiError::invalid(
                "prompt",
                "The prompt is empty: at least one prompt token is required.",
            ));
        }
    }
    Ok(prompts)
}

async fn handle(state: SharedState, req: CompletionRequest) -> ApiResult<Response> {
    state.check_model(req.model.as_deref())?;
    let stream = req.stream.unwrap_or(false);
    if req.stream_options.is_some() && !stream {
        return Err(ApiError::invalid(
            "stream_options",
            "Stream options can only be defined when `stream=True`.",
        ));
    }
    if stream && req.sampling.prompt_logprobs.is_some() {
        return Err(ApiError::invalid(
            "prompt_logprobs",
            "`prompt_logprobs` are not available when `stream=True`.",
        ));
    }
    if req.suffix.is_some() {
        return Err(ApiError::invalid(
            "suffix",
            "suffix is not currently supported",
        ));
    }
    let prompt = req
        .prompt
        .clone()
        .ok_or_else(|| ApiError::invalid("prompt", "`prompt` is required."))?;
    let echo = req.echo.unwrap_or(false);
    let max_tokens = req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    // The engine always generates at least one token: for echo with max_tokens 0 it generates one and
    // the server drops it, returning only the prompt (with its logprobs).
    let echo_only = echo && max_tokens == 0;
    let prompts = tokenize_prompts(
        &state,
        prompt,
        req.add_special_tokens.unwrap_or(true),
        req.sampling.truncate_prompt_tokens,
    )?;
    let mut sampling = sampling::build(SamplingInputs {
        fields: &req.sampling,
        defaults: &state.settings.defaults,
        max_tokens: Some(if echo_only { 1 } else { max_tokens }),
        logprobs: req.logprobs,
        max_logprobs: state.settings.max_logprobs,
        max_n: state.settings.max_num_seqs,
    })?;
    if echo_only {
        sampling.min_tokens = 0;
    }
    if echo {
        if let Some(k) = req.logprobs {
            // Echoed prompt tokens need their logprobs: a logprob for every prompt token, first null.
            sampling.prompt_logprobs = Some(sampling.prompt_logprobs.unwrap_or(0).max(k));
        }
    }
    let priority = generation::check_priority(&state, req.sampling.priority)?;
    let mut inflight = state.admit("completions")?;
    let id = state.new_id("cmpl");
    inflight.record.id = id.clone();
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| p.ids.clone()).collect();
    let outputs = generation::submit_all(
        &state,
        &id,
        &ids,
        &sampling,
        priority,
        req.sampling.cache_salt.as_deref(),
    )
    .await?;
    let n = sampling.n;
    let texts: Vec<String> = prompts
        .iter()
        .map(|p| match &p.text {
            Some(t) => t.clone(),
            None => state.tokenizer().decode(&p.ids, false).unwrap_or_default(),
        })
        .collect();
    let view = CompletionView {
        id,
        created: crate::state::unix_now(),
        model: state.model_name().to_string(),
        echo,
        echo_only,
        logprobs: req.logprobs.is_some(),
        prompt_ids: ids,
        prompt_texts: texts,
        state: state.clone(),
    };
    if stream {
        let include_usage = req
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let num_choices = prompts.len() * n;
        let maker = CompletionChunks {
            view,
            n,
            include_usage,
            started: vec![false; num_choices],
            builders: (0..num_choices).map(|_| Default::default()).collect(),
            prompts: vec![PromptInfo::default(); prompts.len()],
            completion_tokens: 0,
        };
        return Ok(generation::stream_response(outputs, maker, inflight));
    }
    let (choices, infos) = generation::collect(outputs, prompts.len(), n, &mut inflight).await?;
    let want_prompt_logprobs = req.sampling.prompt_logprobs.is_some();
    let mut usage = Usage::new(infos.iter().map(|p| p.num_prompt_tokens).sum(), 0);
    let mut out_choices = Vec::with_capacity(choices.len());
    for (c, acc) in choices.into_iter().enumerate() {
        let pi = c / n;
        let info = &infos[pi];
        let scored = info.prompt_logprobs.as_deref().unwrap_or(&[]);
        let tok = state.tokenizer();
        let mut text = String::new();
        let mut lp = CompletionLogprobs::default();
        let mut builder = CompletionLogprobsBuilder::default();
        if echo {
            text.push_str(&view.prompt_texts[pi]);
            if view.logprobs {
                builder.push_prompt(&mut lp, tok, &view.prompt_ids[pi], scored);
            }
        }
        if !echo_only {
            text.push_str(&acc.text);
            if view.logprobs {
                builder.push_generated(&mut lp, tok, &acc.logprobs);
            }
            usage.completion_tokens += acc.token_ids.len();
        }
        out_choices.push(CompletionChoice {
            index: c,
            text,
            logprobs: view.logprobs.then_some(lp),
            finish_reason: if echo_only {
                Some("length")
            } else {
                acc.finish.as_ref().map(|f| f.as_str())
            },
            stop_reason: if echo_only {
                None
            } else {
                generation::stop_reason(acc.finish.as_ref())
            },
            prompt_logprobs: want_prompt_logprobs
                .then(|| prompt_logprobs_value(tok, &view.prompt_ids[pi], scored)),
        });
    }
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
    Ok(Json(CompletionResponse {
        id: view.id,
        object: "text_completion",
        created: view.created,
        model: view.model,
        choices: out_choices,
        usage: Some(usage),
    })
    .into_response())
}

/// What a completion's chunks share.
struct CompletionView {
    id: String,
    created: u64,
    model: String,
    echo: bool,
    echo_only: bool,
    logprobs: bool,
    prompt_ids: Vec<Vec<u32>>,
    prompt_texts: Vec<String>,
    state: SharedState,
}

struct CompletionChunks {
    view: CompletionView,
    n: usize,
    include_usage: bool,
    started: Vec<bool>,
    builders: Vec<CompletionLogprobsBuilder>,
    prompts: Vec<PromptInfo>,
    completion_tokens: usize,
}

impl CompletionChunks {
    fn chunk(&self, choices: Vec<CompletionChoice>, usage: Option<Usage>) -> Bytes {
        sse::event(&CompletionResponse {
            id: self.view.id.clone(),
            object: "text_completion",
            created: self.view.created,
            model: self.view.model.clone(),
            choices,
            usage,
        })
    }
}

impl ChunkMaker for CompletionChunks {
    fn on_output(&mut self, pi: usize, out: RequestOutput, inflight: &mut InFlight) -> Vec<Bytes> {
        generation::note_prompt(&mut self.prompts[pi], &out, inflight);
        let c = pi * self.n + out.index;
        if c >= self.started.len() {
            return Vec::new();
        }
        let tok = self.view.state.tokenizer();
        let mut text = String::new();
        let mut lp = CompletionLogprobs::default();
        let v = &self.view;
        if !self.started[c] {
            self.started[c] = true;
            if v.echo {
                text.push_str(&v.prompt_texts[pi]);
                if v.logprobs {
                    let scored = self.prompts[pi].prompt_logprobs.as_deref().unwrap_or(&[]);
                    self.builders[c].push_prompt(&mut lp, tok, &v.prompt_ids[pi], scored);
                }
            }
        }
        let finish;
        let stop_reason;
        if v.echo_only {
            // The one token generated under the hood is not part of the answer.
            finish = out.finish_reason.as_ref().map(|_| "length");
            stop_reason = None;
        } else {
            text.push_str(&out.text_delta);
            if v.logprobs {
                self.builders[c].push_generated(&mut lp, tok, &out.logprobs);
            }
            self.completion_tokens += out.new_token_ids.len();
            finish = out.finish_reason.as_ref().map(|f| f.as_str());
            stop_reason = generation::stop_reason(out.finish_reason.as_ref());
        }
        if text.is_empty() && finish.is_none() && lp.tokens.is_empty() {
            return Vec::new();
        }
        vec![self.chunk(
            vec![CompletionChoice {
                index: c,
                text,
                logprobs: v.logprobs.then_some(lp),
                finish_reason: finish,
                stop_reason,
                prompt_logprobs: None,
            }],
            None,
        )]
    }

    fn on_end(&mut self) -> Vec<Bytes> {
        if !self.include_usage {
            return Vec::new();
        }
        let prompt_tokens = self.prompts.iter().map(|p| p.num_prompt_tokens).sum();
        vec![self.chunk(
            Vec::new(),
            Some(Usage::new(prompt_tokens, self.completion_tokens)),
        )]
    }
}
