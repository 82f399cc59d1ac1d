//! `POST /tokenize`, `POST /detokenize`, `GET /tokenizer_info` (vLLM's extra routes).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::chat_render::{self, RenderOptions};
use crate::errors::{ApiError, ApiResult};
use crate::extract::JsonBody;
use crate::protocol::{DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse};
use crate::state::SharedState;

pub async fn tokenize(
    State(state): State<SharedState>,
    JsonBody(req): JsonBody<TokenizeRequest>,
) -> Response {
    tokenize_inner(&state, req)
        .map(|r| Json(r).into_response())
        .unwrap_or_else(|e| e.into_response())
}

fn tokenize_inner(state: &SharedState, req: TokenizeRequest) -> ApiResult<TokenizeResponse> {
    let tok = state.tokenizer();
    let (tokens, return_strs) = match req {
        TokenizeRequest::Completion {
            model,
            prompt,
            add_special_tokens,
            return_token_strs,
        } => {
            state.check_model(model.as_deref())?;
            let ids = tok
                .encode(&prompt, add_special_tokens.unwrap_or(true))
                .map_err(|e| ApiError::invalid("prompt", format!("Could not tokenize: {e}")))?;
            (ids, return_token_strs.unwrap_or(false))
        }
        TokenizeRequest::Chat {
            model,
            messages,
            add_generation_prompt,
            continue_final_message,
            add_special_tokens,
            return_token_strs,
            chat_template,
            chat_template_kwargs,
            tools,
        } => {
            state.check_model(model.as_deref())?;
            let text = chat_render::render(
                state,
                &messages,
                RenderOptions {
                    add_generation_prompt,
                    continue_final_message,
                    chat_template: chat_template.as_deref(),
                    kwargs: chat_template_kwargs.as_ref(),
                    tools: tools.as_ref(),
                },
            )?;
            let ids = tok
                .encode(&text, add_special_tokens.unwrap_or(false))
                .map_err(|e| ApiError::invalid("messages", format!("Could not tokenize: {e}")))?;
            (ids, return_token_strs.unwrap_or(false))
        }
    };
    let token_strs = return_strs.then(|| {
        tokens
            .iter()
            .map(|&t| tok.id_to_token(t).unwrap_or_default())
            .collect()
    });
    Ok(TokenizeResponse {
        count: tokens.len(),
        max_model_len: state.settings.max_model_len,
        tokens,
        token_strs,
    })
}

pub async fn detokenize(
    State(state): State<SharedState>,
    JsonBody(req): JsonBody<DetokenizeRequest>,
) -> Response {
    let result = (|| -> ApiResult<DetokenizeResponse> {
        state.check_model(req.model.as_deref())?;
        let vocab = state.settings.engine.model().config.vocab_size;
        if let Some(&bad) = req.tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(ApiError::invalid(
                "tokens",
                format!("Token id {bad} is out of vocabulary (vocab size {vocab})."),
            ));
        }
        let prompt = state
            .tokenizer()
            .decode(&req.tokens, false)
            .map_err(|e| ApiError::invalid("tokens", format!("Could not detokenize: {e}")))?;
        Ok(DetokenizeResponse { prompt })
    })();
    result
        .map(|r| Json(r).into_response())
        .unwrap_or_else(|e| e.into_response())
}

pub async fn tokenizer_info(State(state): State<SharedState>) -> Response {
    let tok = state.tokenizer();
    Json(json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": state.settings.max_model_len,
        "vocab_size": tok.vocab_size(),
        "bos_token": tok.bos_token(),
        "eos_token": tok.eos_token(),
        "bos_token_id": tok.bos_token_id(),
        "eos_token_ids": tok.eos_token_ids(),
        "pad_token_id": tok.pad_token_id(),
        "add_bos_token": tok.add_bos(),
        "chat_template": state.settings.chat_template.source(),
    }))
    .into_response()
}
