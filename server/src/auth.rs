//! `--api-key`: `/v1/*` needs `Authorization: Bearer KEY`; other routes (health, metrics, tokenize) stay
//! open, as in vLLM. A missing or wrong key is 401 `{"error": "Unauthorized"}`.

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::state::SharedState;

pub async fn require_api_key(
    State(state): State<SharedState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(key) = &state.settings.api_key else {
        return next.run(req).await;
    };
    if req.method() == Method::OPTIONS {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), key.as_bytes()) => next.run(req).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"error":"Unauthorized"}"#,
        )
            .into_response(),
    }
}

/// Compares without an early exit, so the time taken does not reveal how much of the key matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
