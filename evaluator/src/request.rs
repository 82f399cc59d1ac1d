//! What a task asks of a model, and what comes back: lm-eval's `loglikelihood` and `generate_until`.

use serde::{Deserialize, Serialize};

/// Generation settings of one `generate_until` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenParams {
    /// Stop strings (lm-eval's `until`); the returned text never contains them.
    pub until: Vec<String>,
    pub max_gen_toks: usize,
    /// 0 means greedy.
    pub temperature: f64,
    pub top_p: f64,
    pub seed: Option<u64>,
}

impl Default for GenParams {
    fn default() -> Self {
        Self {
            until: Vec::new(),
            max_gen_toks: 256,
            temperature: 0.0,
            top_p: 1.0,
            seed: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Log-probability of `continuation` given `context`.
    Loglikelihood {
        context: String,
        continuation: String,
    },
    /// Text generated after `context` until a stop string or the token limit.
    Generate { context: String, params: GenParams },
}

impl Request {
    pub fn loglikelihood(context: impl Into<String>, continuation: impl Into<String>) -> Self {
        Self::Loglikelihood {
            context: context.into(),
            continuation: continuation.into(),
        }
    }

    pub fn generate(context: impl Into<String>, params: GenParams) -> Self {
        Self::Generate {
            context: context.into(),
            params,
        }
    }

    /// lm-eval's `arguments` field of a logged sample.
    pub fn arguments(&self) -> serde_json::Value {
        match self {
            Self::Loglikelihood {
                context,
                continuation,
            } => serde_json::json!([context, continuation]),
            Self::Generate { context, params } => serde_json::json!([context, params]),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Loglikelihood {
        /// Sum of the continuation tokens' log-probabilities.
        logprob: f64,
        /// Whether every continuation token was the model's argmax.
        is_greedy: bool,
        /// Per-token log-probabilities of the continuation (for cross-checks between runners).
        token_logprobs: Vec<f64>,
    },
    Generate {
        text: String,
        num_tokens: usize,
    },
}

impl Response {
    pub fn logprob(&self) -> Option<(f64, bool)> {
        match self {
            Self::Loglikelihood {
                logprob, is_greedy, ..
            } => Some((*logprob, *is_greedy)),
            _ => None,
        }
    }

    pub fn text(&self) -> Option<&str> {
        match self {
            Self::Generate { text, .. } => Some(text),
            _ => None,
        }
    }

    /// lm-eval's `resps` entry.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Loglikelihood {
                logprob, is_greedy, ..
            } => serde_json::json!([logprob.to_string(), is_greedy.to_string()]),
            Self::Generate { text, .. } => serde_json::json!([text]),
        }
    }
}

/// lm-eval's split of a loglikelihood pair: trailing whitespace of the context moves to the front of
/// the continuation, so the tokenizer sees the space attached to the continuation's first word.
pub fn split_whitespace(context: &str, continuation: &str) -> (String, String) {
    let trimmed = context.trim_end();
    let n_spaces = context.len() - trimmed.len();
    if n_spaces > 0 {
        (
            trimmed.to_string(),
            format!("{}{}", &context[trimmed.len()..], continuation),
        )
    } else {
        (context.to_string(), continuation.to_string())
    }
}

/// Token ids of context and continuation as lm-eval derives them: the whole string is encoded at once
/// and the continuation is what lies past the context's own encoding. An empty context is replaced by
/// `prefix_token` (lm-eval uses the end-of-text token).
pub fn split_tokens(
    context: &str,
    continuation: &str,
    encode: impl Fn(&str) -> crate::Result<Vec<u32>>,
    prefix_token: u32,
) -> crate::Result<(Vec<u32>, Vec<u32>)> {
    let (context, continuation) = split_whitespace(context, continuation);
    if context.is_empty() {
        return Ok((vec![prefix_token], encode(&continuation)?));
    }
    let whole = encode(&format!("{context}{continuation}"))?;
    let ctx = encode(&context)?;
    let n = ctx.len().min(whole.len());
    Ok((whole[..n].to_vec(), whole[n..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_context_whitespace_moves_to_the_continuation() {
        assert_eq!(
            split_whitespace("Answer: ", "Paris"),
            ("Answer:".to_string(), " Paris".to_string())
        );
        assert_eq!(
            split_whitespace("Answer:", " Paris"),
            ("Answer:".to_string(), " Paris".to_string())
        );
    }

    #[test]
    fn continuation_tokens_are_those_past_the_context() {
        // A toy tokenizer: one token per byte.
        let enc = |s: &str| Ok(s.bytes().map(u32::from).collect::<Vec<_>>());
        let (c, k) = split_tokens("ab ", "cd", enc, 0).unwrap();
        assert_eq!(c, vec![97, 98]);
        assert_eq!(k, vec![32, 99, 100]);
        let (c, k) = split_tokens("", "x", enc, 7).unwrap();
        assert_eq!((c, k), (vec![7], vec![120]));
    }
}
