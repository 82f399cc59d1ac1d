//! Server-sent events as OpenAI streams them: `data: {json}\n\n` per chunk, `data: [DONE]\n\n` at the end,
//! and a failure mid-stream as `data: {"error": …}\n\n` before `[DONE]`.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Serialize;

use crate::errors::ApiError;

pub fn event<T: Serialize>(value: &T) -> Bytes {
    let json = serde_json::to_string(value).unwrap_or_else(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("serialising a chunk: {e}"),
        )
        .body_json()
    });
    Bytes::from(format!("data: {json}\n\n"))
}

pub fn error_event(err: &ApiError) -> Bytes {
    Bytes::from(format!("data: {}\n\n", err.body_json()))
}

pub fn done() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

/// A streaming response; dropping `events` (the client went away) drops whatever it owns, which aborts
/// the engine requests behind it.
pub fn response<S>(events: S) -> Response
where
    S: Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
{
    (
        [
            (header::CONTENT_TYPE, "text/event-stream; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(events),
    )
        .into_response()
}
