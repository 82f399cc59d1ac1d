//! vLLM's forced tool calls, which need no tool-call parser: a named `tool_choice` holds the answer to
//! that function's `parameters` schema, `"required"` to a JSON list of `{name, parameters}` calls to the
//! given tools. Both run as a structured output; the text becomes the message's `tool_calls`.
//! `"auto"` (the model decides, a parser reads its calls) stays refused.

use ember_engine::StructuredOutput;
use serde_json::{json, Value};

use crate::errors::{ApiError, ApiResult};

/// How a chat answer is returned.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolMode {
    /// As text (no tool_choice, or "none").
    Text,
    /// As one call of this function; the text is its arguments.
    Named(String),
    /// As one or more calls: the text is a JSON list of `{name, parameters}`.
    Required,
}

/// The request's tool mode and the constraint that enforces it.
pub fn resolve(
    tool_choice: Option<&Value>,
    tools: Option<&Value>,
) -> ApiResult<(ToolMode, Option<StructuredOutput>)> {
    let functions = || -> Vec<&Value> {
        tools
            .and_then(Value::as_array)
            .map(|t| t.iter().filter_map(|tool| tool.get("function")).collect())
            .unwrap_or_default()
    };
    let parameters = |f: &Value| {
        f.get("parameters")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}))
    };
    match tool_choice {
        None | Some(Value::Null) => Ok((ToolMode::Text, None)),
        Some(Value::String(s)) if s == "none" => Ok((ToolMode::Text, None)),
        Some(Value::String(s)) if s == "required" => {
            let alternatives: Vec<Value> = functions()
                .into_iter()
                .filter_map(|f| {
                    let name = f.get("name")?.as_str()?;
                    Some(json!({
                        "properties": {
                            "name": {"type": "string", "enum": [name]},
                            "parameters": parameters(f),
                        },
                        "required": ["name", "parameters"],
                        "additionalProperties": false,
                    }))
                })
                .collect();
            if alternatives.is_empty() {
                return Err(ApiError::invalid(
                    "tool_choice",
                    "When using `tool_choice: \"required\"`, `tools` must name at least one function.",
                ));
            }
            let schema = json!({
                "type": "array",
                "minItems": 1,
                "items": {"type": "object", "anyOf": alternatives},
            });
            Ok((
                ToolMode::Required,
                Some(StructuredOutput::JsonSchema(schema)),
            ))
        }
        Some(choice @ Value::Object(_)) => {
            let name = choice
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "tool_choice",
                        "A named tool_choice needs `{\"type\": \"function\", \"function\": {\"name\": …}}`.",
                    )
                })?;
            let function = functions()
                .into_iter()
                .find(|f| f.get("name").and_then(Value::as_str) == Some(name))
                .ok_or_else(|| {
                    ApiError::invalid(
                        "tool_choice",
                        format!("Tool '{name}' has not been passed in `tools`."),
                    )
                })?;
            let spec = StructuredOutput::JsonSchema(parameters(function));
            Ok((ToolMode::Named(name.to_string()), Some(spec)))
        }
        Some(other) => Err(ApiError::invalid(
            "tool_choice",
            format!(
                "tool_choice {other} is not supported: ember has no tool-call parser yet (use \
                 \"none\", \"required\" or a named function)."
            ),
        )),
    }
}

/// One OpenAI tool call.
pub fn call(id: String, name: &str, arguments: String) -> Value {
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
}

/// The `{name, parameters}` calls of a `"required"` answer; `None` if the text is not such a list (cut
/// short by max_tokens).
pub fn required_calls(text: &str) -> Option<Vec<(String, String)>> {
    let calls: Vec<Value> = serde_json::from_str(text).ok()?;
    calls
        .iter()
        .map(|c| {
            let name = c.get("name")?.as_str()?.to_string();
            let arguments = serde_json::to_string(c.get("parameters")?).ok()?;
            Some((name, arguments))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> Value {
        json!([
            {"type": "function", "function": {"name": "get_weather", "parameters":
                {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
            {"type": "function", "function": {"name": "now"}}
        ])
    }

    #[test]
    fn named_and_required_choices_become_schemas() {
        let t = tools();
        let (mode, spec) = resolve(
            Some(&json!({"type": "function", "function": {"name": "get_weather"}})),
            Some(&t),
        )
        .unwrap();
        assert_eq!(mode, ToolMode::Named("get_weather".into()));
        assert_eq!(
            spec,
            Some(StructuredOutput::JsonSchema(
                t[0]["function"]["parameters"].clone()
            ))
        );
        let (mode, spec) = resolve(Some(&json!("required")), Some(&t)).unwrap();
        assert_eq!(mode, ToolMode::Required);
        let Some(StructuredOutput::JsonSchema(schema)) = spec else {
            panic!("a schema")
        };
        assert_eq!(schema["items"]["anyOf"].as_array().unwrap().len(), 2);
        assert_eq!(
            resolve(Some(&json!("none")), Some(&t)).unwrap().0,
            ToolMode::Text
        );
    }

    #[test]
    fn unknown_or_unsupported_choices_are_400s() {
        let t = tools();
        for choice in [
            json!({"type": "function", "function": {"name": "nope"}}),
            json!({"type": "function"}),
            json!("auto"),
        ] {
            let e = resolve(Some(&choice), Some(&t)).unwrap_err();
            assert_eq!(e.param.as_deref(), Some("tool_choice"), "{choice}");
        }
        assert!(resolve(Some(&json!("required")), None).is_err());
    }

    #[test]
    fn required_answers_parse_into_calls() {
        let calls = required_calls(r#"[{"name": "get_weather", "parameters": {"city": "Paris"}}]"#)
            .unwrap();
        assert_eq!(
            calls,
            vec![("get_weather".to_string(), r#"{"city":"Paris"}"#.to_string())]
        );
        assert_eq!(required_calls(r#"[{"name": "get_weather", "param"#), None);
    }
}
