//! OpenAI chat messages → prompt text through the model's Jinja chat template (or `--chat-template`, or a
//! request's own `chat_template`), as vLLM's `apply_chat_template` does.

use ember_models::chat_template::ChatTemplate;
use serde_json::{Map, Value};

use crate::errors::{ApiError, ApiResult};
use crate::protocol::{ChatMessageIn, MessageContent};
use crate::state::AppState;

pub struct RenderOptions<'a> {
    pub add_generation_prompt: Option<bool>,
    pub continue_final_message: Option<bool>,
    pub chat_template: Option<&'a str>,
    pub kwargs: Option<&'a Map<String, Value>>,
    pub tools: Option<&'a Value>,
}

/// A message's text: a string, or its text parts joined by newlines (ember serves text-only models).
pub fn content_text(content: &Option<MessageContent>, index: usize) -> ApiResult<String> {
    match content {
        None => Ok(String::new()),
        Some(MessageContent::Text(s)) => Ok(s.clone()),
        Some(MessageContent::Parts(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for p in parts {
                match (p.kind.as_str(), &p.text) {
                    ("text", Some(t)) => texts.push(t.as_str()),
                    ("text", None) => {
                        return Err(ApiError::invalid(
                            format!("messages[{index}].content"),
                            "A text content part needs `text`.",
                        ))
                    }
                    (other, _) => {
                        return Err(ApiError::invalid(
                            format!("messages[{index}].content"),
                            format!("Content parts of type `{other}` are not supported: ember serves text-only models."),
                        ))
                    }
                }
            }
            Ok(texts.join("\n"))
        }
    }
}

/// Renders `messages`; returns the prompt text.
pub fn render(
    state: &AppState,
    messages: &[ChatMessageIn],
    opts: RenderOptions<'_>,
) -> ApiResult<String> {
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "`messages` must not be empty.",
        ));
    }
    let continue_final = opts.continue_final_message.unwrap_or(false);
    let add_generation_prompt = opts.add_generation_prompt.unwrap_or(true);
    if continue_final && opts.add_generation_prompt == Some(true) {
        return Err(ApiError::bad_request(
            "Cannot set both `continue_final_message` and `add_generation_prompt` to True.",
        ));
    }
    let mut values = Vec::with_capacity(messages.len());
    let mut last_content = String::new();
    for (i, m) in messages.iter().enumerate() {
        let content = content_text(&m.content, i)?;
        let mut obj = m.extra.clone();
        obj.insert("role".into(), Value::from(m.role.clone()));
        obj.insert("content".into(), Value::from(content.clone()));
        values.push(Value::Object(obj));
        last_content = content;
    }
    let own;
    let template = match opts.chat_template {
        Some(src) => {
            let tok = state.tokenizer();
            own = ChatTemplate::new(
                src,
                tok.bos_token().unwrap_or(""),
                tok.eos_token().unwrap_or(""),
            )
            .map_err(|e| {
                ApiError::invalid("chat_template", format!("Invalid chat template: {e}"))
            })?;
            &own
        }
        None => &state.settings.chat_template,
    };
    let mut text = template
        .render_with(
            &values,
            opts.tools,
            add_generation_prompt && !continue_final,
            opts.kwargs,
        )
        .map_err(|e| ApiError::bad_request(format!("Could not apply the chat template: {e}")))?;
    if continue_final && !last_content.is_empty() {
        // Leave the final (assistant) message open: cut what the template wrote after its content.
        if let Some(pos) = text.rfind(&last_content) {
            text.truncate(pos + last_content.len());
        }
    }
    Ok(text)
}
