//! `POST /v1/chat/completions`: messages through the chat template, `n`, logprobs + top_logprobs,
//! streaming (a role chunk, content deltas, the finish chunk, the usage chunk when asked for), forced
//! tool calls (named / "required" tool_choice, see `tool_choice`).

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ember_engine::RequestOutput;
use serde_json::json;

use crate::chat_render::{self, RenderOptions};
use crate::errors::{ApiError, ApiResult};
use crate::extract::JsonBody;
use crate::generation::{self, ChunkMaker, PromptInfo};
use crate::logprobs::chat_entries;
use crate::protocol::{
    ChatChoice, ChatChunk, ChatChunkChoice, ChatDelta, ChatLogprobs, ChatMessageOut, ChatRequest,
    ChatResponse, Usage,
};
use crate::sampling::{self, SamplingInputs};
use crate::sse;
use crate::state::{InFlight, SharedState};
use crate::tool_choice::{self, ToolMode};

pub async fn chat_completions(
    State(state): State<SharedState>,
    JsonBody(req): JsonBody<ChatRequest>,
) -> Response {
    handle(state, req)
        .await
        .unwrap_or_else(|e| e.into_response())
}

async fn handle(state: SharedState, req: ChatRequest) -> ApiResult<Response> {
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
    let want_logprobs = req.logprobs.unwrap_or(false);
    if req.top_logprobs.is_some() && !want_logprobs {
        return Err(ApiError::invalid(
            "top_logprobs",
            "when using `top_logprobs`, `logprobs` must be set to true.",
        ));
    }
    let (tool_mode, tool_spec) =
        tool_choice::resolve(req.tool_choice.as_ref(), req.tools.as_ref())?;
    if stream && tool_mode == ToolMode::Required {
        return Err(ApiError::invalid(
            "tool_choice",
            "tool_choice \"required\" with stream=true is not supported by ember yet.",
        ));
    }
    let mut kwargs = req.chat_template_kwargs.clone().unwrap_or_default();
    if let Some(docs) = &req.documents {
        kwargs.insert("documents".into(), docs.clone());
    }
    let text = chat_render::render(
        &state,
        &req.messages,
        RenderOptions {
            add_generation_prompt: req.add_generation_prompt,
            continue_final_message: req.continue_final_message,
            chat_template: req.chat_template.as_deref(),
            kwargs: Some(&kwargs),
            tools: req.tools.as_ref(),
        },
    )?;
    // The template writes its own BOS, so no special tokens by default (vLLM's default for chat).
    let mut ids = state
        .tokenizer()
        .encode(&text, req.add_special_tokens.unwrap_or(false))
        .map_err(|e| {
            ApiError::invalid("messages", format!("Could not tokenize the messages: {e}"))
        })?;
    if let Some(k) = req.sampling.truncate_prompt_tokens {
        if ids.len() > k {
            ids.drain(..ids.len() - k);
        }
    }
    // No max_tokens: up to the context length, capped by generation_config's max_new_tokens.
    let max_tokens = req.max_completion_tokens.or(req.max_tokens).or_else(|| {
        let room = state
            .settings
            .max_model_len
            .checked_sub(ids.len())
            .filter(|&r| r > 0)?;
        state.settings.defaults.max_new_tokens.map(|m| m.min(room))
    });
    let top_n = req.top_logprobs.unwrap_or(0);
    let mut sampling = sampling::build(SamplingInputs {
        fields: &req.sampling,
        defaults: &state.settings.defaults,
        max_tokens,
        logprobs: want_logprobs.then_some(top_n),
        max_logprobs: state.settings.max_logprobs,
        max_n: state.settings.max_num_seqs,
    })?;
    if let Some(spec) = tool_spec {
        if sampling.structured_output.is_some() {
            return Err(ApiError::invalid(
                "tool_choice",
                "A forced tool call cannot be combined with response_format or another structured \
                 output.",
            ));
        }
        sampling.structured_output = Some(spec);
    }
    let priority = generation::check_priority(&state, req.sampling.priority)?;
    // vLLM's chat echo: the last message's content leads the answer when it is the assistant's.
    let echo_prefix = match (req.echo.unwrap_or(false), req.messages.last()) {
        (true, Some(m)) if m.role == "assistant" => {
            chat_render::content_text(&m.content, req.messages.len() - 1)?
        }
        _ => String::new(),
    };
    let mut inflight = state.admit("chat")?;
    let id = state.new_id("chatcmpl");
    inflight.record.id = id.clone();
    let outputs = generation::submit_all(
        &state,
        &id,
        std::slice::from_ref(&ids),
        &sampling,
        priority,
        req.sampling.cache_salt.as_deref(),
    )
    .await?;
    let n = sampling.n;
    let created = crate::state::unix_now();
    let model = state.model_name().to_string();
    if stream {
        let include_usage = req
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let maker = ChatChunks {
            id,
            created,
            model,
            state: state.clone(),
            n,
            want_logprobs,
            top_n,
            include_usage,
            echo_prefix,
            tool_mode,
            calls_opened: vec![false; n],
            role_sent: false,
            prompt: PromptInfo::default(),
            completion_tokens: 0,
        };
        return Ok(generation::stream_response(outputs, maker, inflight));
    }
    let (choices, infos) = generation::collect(outputs, 1, n, &mut inflight).await?;
    let tok = state.tokenizer();
    let completion_tokens = choices.iter().map(|c| c.token_ids.len()).sum();
    let choices = choices
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let mut finish_reason = c.finish.as_ref().map(|f| f.as_str());
            let (content, tool_calls) = match &tool_mode {
                ToolMode::Text => (format!("{echo_prefix}{}", c.text), Vec::new()),
                ToolMode::Named(name) => (
                    String::new(),
                    vec![tool_choice::call(
                        state.new_id("chatcmpl-tool"),
                        name,
                        c.text.clone(),
                    )],
                ),
                ToolMode::Required => match tool_choice::required_calls(&c.text) {
                    Some(calls) => {
                        finish_reason = Some("tool_calls");
                        let calls = calls
                            .into_iter()
                            .map(|(name, args)| {
                                tool_choice::call(state.new_id("chatcmpl-tool"), &name, args)
                            })
                            .collect();
                        (String::new(), calls)
                    }
                    // Cut short before the list closed: the text as it is.
                    None => (c.text.clone(), Vec::new()),
                },
            };
            ChatChoice {
                index: i,
                message: ChatMessageOut {
                    role: "assistant",
                    content,
                    tool_calls,
                },
                logprobs: want_logprobs.then(|| ChatLogprobs {
                    content: chat_entries(tok, &c.logprobs, top_n),
                }),
                finish_reason,
                stop_reason: generation::stop_reason(c.finish.as_ref()),
            }
        })
        .collect();
    Ok(Json(ChatResponse {
        id,
        object: "chat.completion",
        created,
        model,
        choices,
        usage: Usage::new(infos[0].num_prompt_tokens, completion_tokens),
    })
    .into_response())
}

struct ChatChunks {
    id: String,
    created: u64,
    model: String,
    state: SharedState,
    n: usize,
    want_logprobs: bool,
    top_n: usize,
    include_usage: bool,
    echo_prefix: String,
    /// With a named tool_choice the deltas are the call's arguments; the first one per choice opens
    /// the call (id, type, name).
    tool_mode: ToolMode,
    calls_opened: Vec<bool>,
    role_sent: bool,
    prompt: PromptInfo,
    completion_tokens: usize,
}

impl ChatChunks {
    fn chunk(&self, choices: Vec<ChatChunkChoice>, usage: Option<Usage>) -> Bytes {
        sse::event(&ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
        })
    }
}

impl ChunkMaker for ChatChunks {
    fn on_output(
        &mut self,
        _prompt_index: usize,
        out: RequestOutput,
        inflight: &mut InFlight,
    ) -> Vec<Bytes> {
        generation::note_prompt(&mut self.prompt, &out, inflight);
        let mut chunks = Vec::new();
        if !self.role_sent {
            // As vLLM: once the first output is in, every choice opens with the assistant role.
            self.role_sent = true;
            for index in 0..self.n {
                chunks.push(self.chunk(
                    vec![ChatChunkChoice {
                        index,
                        delta: ChatDelta {
                            role: Some("assistant"),
                            content: Some(String::new()),
                            tool_calls: None,
                        },
                        logprobs: None,
                        finish_reason: None,
                        stop_reason: None,
                    }],
                    None,
                ));
                if !self.echo_prefix.is_empty() {
                    chunks.push(self.chunk(
                        vec![ChatChunkChoice {
                            index,
                            delta: ChatDelta {
                                role: None,
                                content: Some(self.echo_prefix.clone()),
                                tool_calls: None,
                            },
                            logprobs: None,
                            finish_reason: None,
                            stop_reason: None,
                        }],
                        None,
                    ));
                }
            }
        }
        self.completion_tokens += out.new_token_ids.len();
        let finish = out.finish_reason.as_ref().map(|f| f.as_str());
        if out.text_delta.is_empty() && finish.is_none() && !self.want_logprobs {
            return chunks;
        }
        let delta = match &self.tool_mode {
            ToolMode::Named(name) if !out.text_delta.is_empty() => {
                let opened = self
                    .calls_opened
                    .get_mut(out.index)
                    .map(|o| std::mem::replace(o, true));
                let mut call = match opened {
                    Some(false) => tool_choice::call(
                        self.state.new_id("chatcmpl-tool"),
                        name,
                        out.text_delta.clone(),
                    ),
                    _ => json!({"function": {"arguments": out.text_delta}}),
                };
                call["index"] = json!(0);
                ChatDelta {
                    role: None,
                    content: None,
                    tool_calls: Some(vec![call]),
                }
            }
            _ => ChatDelta {
                role: None,
                content: Some(out.text_delta.clone()),
                tool_calls: None,
            },
        };
        let tok = self.state.tokenizer();
        chunks.push(self.chunk(
            vec![ChatChunkChoice {
                index: out.index,
                delta,
                logprobs: self.want_logprobs.then(|| ChatLogprobs {
                    content: chat_entries(tok, &out.logprobs, self.top_n),
                }),
                finish_reason: finish,
                stop_reason: generation::stop_reason(out.finish_reason.as_ref()),
            }],
            None,
        ));
        chunks
    }

    fn on_end(&mut self) -> Vec<Bytes> {
        if !self.include_usage {
            return Vec::new();
        }
        vec![self.chunk(
            Vec::new(),
            Some(Usage::new(
                self.prompt.num_prompt_tokens,
                self.completion_tokens,
            )),
        )]
    }
}
