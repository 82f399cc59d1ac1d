//! Errors as vLLM's server sends them: `{"error": {"message", "type", "param", "code"}}` with the HTTP
//! status in `code`; validation problems are 400 (never 422), unknown models 404, overload 429.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ember_engine::Error as EngineError;
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub param: Option<String>,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorInfo<'a>,
}

#[derive(Serialize)]
pub struct ErrorInfo<'a> {
    pub message: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<&'a str>,
    pub code: u16,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            param: None,
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// A 400 naming the request field at fault.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.into()),
            ..Self::bad_request(message)
        }
    }

    pub fn model_not_found(model: &str) -> Self {
        Self {
            param: Some("model".into()),
            ..Self::new(
                StatusCode::NOT_FOUND,
                format!("The model `{model}` does not exist."),
            )
        }
    }

    pub fn overloaded(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, message)
        }
    }

    /// vLLM's exception class names, which clients show and some match on.
    pub fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_REQUEST => "BadRequestError",
            StatusCode::UNAUTHORIZED => "AuthenticationError",
            StatusCode::NOT_FOUND => "NotFoundError",
            StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowed",
            StatusCode::PAYLOAD_TOO_LARGE => "PayloadTooLargeError",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "UnsupportedMediaTypeError",
            StatusCode::TOO_MANY_REQUESTS => "TooManyRequestsError",
            StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailableError",
            s if s.is_client_error() => "BadRequestError",
            _ => "InternalServerError",
        }
    }

    pub fn info(&self) -> ErrorInfo<'_> {
        ErrorInfo {
            message: &self.message,
            kind: self.kind(),
            param: self.param.as_deref(),
            code: self.status.as_u16(),
        }
    }

    /// The JSON body, also used for the mid-stream SSE `error` event.
    pub fn body_json(&self) -> String {
        serde_json::to_string(&ErrorBody { error: self.info() })
            .unwrap_or_else(|_| r#"{"error":{"message":"error","type":"InternalServerError","param":null,"code":500}}"#.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            self.body_json(),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        use ember_engine::SchedulerError as S;
        match &e {
            EngineError::Validation(v) => Self::invalid(v.param, v.message.clone()),
            EngineError::Scheduler(S::InvalidParams(v)) => {
                Self::invalid(v.param, v.message.clone())
            }
            EngineError::Scheduler(S::TooLong { .. } | S::PromptTooLong { .. }) => {
                Self::bad_request(e.to_string())
            }
            EngineError::Scheduler(S::EmptyPrompt) => Self::invalid("prompt", e.to_string()),
            EngineError::Scheduler(S::ExceedsKvCapacity { .. }) => {
                Self::invalid("max_tokens", e.to_string())
            }
            EngineError::Scheduler(S::DuplicateRequest(_)) => Self::bad_request(e.to_string()),
            EngineError::QueueFull { .. } => {
                Self::overloaded(format!("The server is overloaded: {e}. Retry later."))
            }
            EngineError::Shutdown => Self {
                retry_after: Some(5),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The server is shutting down.",
                )
            },
            EngineError::Config(_) | EngineError::Model(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape() {
        let e = ApiError::invalid("temperature", "temperature must be non-negative, got -1.");
        let v: serde_json::Value = serde_json::from_str(&e.body_json()).unwrap();
        assert_eq!(v["error"]["code"], 400);
        assert_eq!(v["error"]["type"], "BadRequestError");
        assert_eq!(v["error"]["param"], "temperature");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("non-negative"));
    }
}
