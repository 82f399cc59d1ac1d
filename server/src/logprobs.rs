//! Engine logprobs → the two wire formats: completions' parallel lists (`tokens`, `token_logprobs`,
//! `top_logprobs`, `text_offset`) and chat's `content: [{token, logprob, bytes, top_logprobs}]`, plus
//! vLLM's `prompt_logprobs` list.

use ember_engine::TokenLogprobs;
use ember_models::tokenizer::Tokenizer;
use serde_json::{json, Map, Value};

use crate::protocol::{ChatTokenLogprob, ChatTopLogprob, CompletionLogprobs};

/// JSON has no -inf; vLLM sends this instead.
const MIN_LOGPROB: f32 = -9999.0;

pub fn finite(lp: f32) -> f32 {
    if lp.is_finite() {
        lp
    } else {
        MIN_LOGPROB
    }
}

/// A token as text, the way vLLM shows it in logprobs (the token decoded alone).
pub fn token_text(tok: &Tokenizer, id: u32) -> String {
    tok.decode(&[id], false).unwrap_or_default()
}

/// Builds completions logprobs across one choice's chunks; `text_offset` keeps counting characters of the
/// choice's text (echoed prompt included) from chunk to chunk.
#[derive(Default)]
pub struct CompletionLogprobsBuilder {
    offset: usize,
}

impl CompletionLogprobsBuilder {
    fn push(
        &mut self,
        out: &mut CompletionLogprobs,
        text: String,
        logprob: Option<f32>,
        top: Option<Map<String, Value>>,
    ) {
        out.text_offset.push(self.offset);
        self.offset += text.chars().count();
        out.tokens.push(text);
        out.token_logprobs.push(logprob.map(finite));
        out.top_logprobs.push(top);
    }

    /// The echoed prompt: every prompt token, the first with no logprob. `scored[i]` is position `i + 1`.
    pub fn push_prompt(
        &mut self,
        out: &mut CompletionLogprobs,
        tok: &Tokenizer,
        prompt_ids: &[u32],
        scored: &[TokenLogprobs],
    ) {
        for (i, &id) in prompt_ids.iter().enumerate() {
            let text = token_text(tok, id);
            match i.checked_sub(1).and_then(|j| scored.get(j)) {
                Some(lp) => self.push(out, text, Some(lp.logprob), Some(top_map(tok, lp))),
                None => self.push(out, text, None, None),
            }
        }
    }

    pub fn push_generated(
        &mut self,
        out: &mut CompletionLogprobs,
        tok: &Tokenizer,
        lps: &[TokenLogprobs],
    ) {
        for lp in lps {
            self.push(
                out,
                token_text(tok, lp.token),
                Some(lp.logprob),
                Some(top_map(tok, lp)),
            );
        }
    }
}

/// `{token text: logprob}` for the top alternatives, with the chosen token always present (as vLLM).
fn top_map(tok: &Tokenizer, lp: &TokenLogprobs) -> Map<String, Value> {
    let mut m = Map::new();
    for &(id, p) in &lp.top {
        m.entry(token_text(tok, id))
            .or_insert_with(|| json!(finite(p)));
    }
    m.entry(token_text(tok, lp.token))
        .or_insert_with(|| json!(finite(lp.logprob)));
    m
}

/// Chat logprobs entries for `lps`, each with up to `top_n` alternatives.
pub fn chat_entries(tok: &Tokenizer, lps: &[TokenLogprobs], top_n: usize) -> Vec<ChatTokenLogprob> {
    lps.iter()
        .map(|lp| {
            let token = token_text(tok, lp.token);
            ChatTokenLogprob {
                bytes: token.as_bytes().to_vec(),
                token,
                logprob: finite(lp.logprob),
                top_logprobs: lp
                    .top
                    .iter()
                    .take(top_n)
                    .map(|&(id, p)| {
                        let t = token_text(tok, id);
                        ChatTopLogprob {
                            bytes: t.as_bytes().to_vec(),
                            token: t,
                            logprob: finite(p),
                        }
                    })
                    .collect(),
            }
        })
        .collect()
}

/// vLLM's `prompt_logprobs`: `null` for the first token, then
/// `{token_id: {logprob, rank, decoded_token}}` with the actual token and the top alternatives.
pub fn prompt_logprobs_value(
    tok: &Tokenizer,
    prompt_ids: &[u32],
    scored: &[TokenLogprobs],
) -> Vec<Option<Value>> {
    let mut v = Vec::with_capacity(prompt_ids.len());
    if !prompt_ids.is_empty() {
        v.push(None);
    }
    for lp in scored.iter().take(prompt_ids.len().saturating_sub(1)) {
        let mut m = Map::new();
        m.insert(
            lp.token.to_string(),
            json!({"logprob": finite(lp.logprob), "rank": lp.rank, "decoded_token": token_text(tok, lp.token)}),
        );
        for (rank, &(id, p)) in lp.top.iter().enumerate() {
            m.entry(id.to_string()).or_insert_with(|| {
                json!({"logprob": finite(p), "rank": rank + 1, "decoded_token": token_text(tok, id)})
            });
        }
        v.push(Some(Value::Object(m)));
    }
    v
}
