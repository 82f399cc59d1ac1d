//! A JSON body extractor whose every rejection is vLLM's error JSON: malformed JSON, wrong types, bad
//! UTF-8 and unknown enum values are 400 naming the field (axum's own `Json` would answer 422 or 415 in
//! plain text); a body over the limit is 413.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::errors::ApiError;

pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // The content type is not checked: FastAPI (vLLM) parses the body as JSON regardless.
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    status,
                    "The request body is larger than the server accepts (--max-request-body).",
                )
            } else {
                ApiError::new(
                    status,
                    format!("Could not read the request body: {rejection}"),
                )
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses `bytes` as `T`; a type error names the path of the field (`messages[0].content`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "The request body is empty; expected a JSON object.",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let what = if inner.is_syntax() || inner.is_eof() {
            "Invalid JSON"
        } else {
            "Invalid request"
        };
        if path.is_empty() || path == "." {
            ApiError::bad_request(format!("{what}: {inner}"))
        } else {
            ApiError::invalid(path.clone(), format!("{what}: `{path}`: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("Invalid JSON: {e}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct T {
        max_tokens: Option<u32>,
        inner: Option<Vec<Inner>>,
    }
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Inner {
        content: String,
    }

    #[test]
    fn names_the_field() {
        let e = parse_json::<T>(br#"{"max_tokens": "ten"}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
        let e = parse_json::<T>(br#"{"max_tokens": -1}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
        let e = parse_json::<T>(br#"{"inner": [{"content": 3}]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("inner[0].content"));
        let e = parse_json::<T>(b"{\"inner\": [{\"content\": \"\xff\"}]}").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(parse_json::<T>(b"{").is_err());
        assert!(parse_json::<T>(b"").is_err());
        assert!(parse_json::<T>(b"{} {}").is_err());
    }
}
