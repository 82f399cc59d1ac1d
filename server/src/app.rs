//! The router: vLLM's routes, the API-key guard on `/v1/*`, the body limit, and JSON 404s.

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::auth;
use crate::errors::ApiError;
use crate::routes::{chat, completions, health, metrics, models, tokenize};
use crate::state::SharedState;

pub fn router(state: SharedState, max_body_bytes: usize) -> Router {
    let v1 = Router::new()
        .route("/v1/models", get(models::list_models))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_api_key,
        ));
    Router::new()
        .merge(v1)
        .route("/health", get(health::health))
        .route("/ping", get(health::health))
        .route("/version", get(health::version))
        .route("/metrics", get(metrics::metrics))
        .route("/tokenize", post(tokenize::tokenize))
        .route("/detokenize", post(tokenize::detokenize))
        .route("/tokenizer_info", get(tokenize::tokenizer_info))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

async fn not_found() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "Not Found").into_response()
}
