//! The request fields that ask for structured output → the engine's [`StructuredOutput`]: vLLM's
//! `structured_outputs` object, its older `guided_json` / `guided_regex` / `guided_choice` /
//! `guided_grammar`, and OpenAI's `response_format`. At most one constraint per request.

use ember_engine::StructuredOutput;
use serde_json::Value;

use crate::errors::{ApiError, ApiResult};
use crate::protocol::SamplingFields;

/// The request's constraint, if any; malformed or conflicting fields are a 400 naming the field.
pub fn from_fields(f: &SamplingFields) -> ApiResult<Option<StructuredOutput>> {
    let mut found: Vec<(&'static str, StructuredOutput)> = Vec::new();
    if let Some(rf) = &f.response_format {
        if let Some(spec) = response_format(rf)? {
            found.push(("response_format", spec));
        }
    }
    if let Some(schema) = &f.guided_json {
        found.push(("guided_json", json_schema("guided_json", schema)?));
    }
    if let Some(rx) = &f.guided_regex {
        found.push(("guided_regex", StructuredOutput::Regex(rx.clone())));
    }
    if let Some(choices) = &f.guided_choice {
        found.push(("guided_choice", StructuredOutput::Choice(choices.clone())));
    }
    if let Some(grammar) = &f.guided_grammar {
        found.push(("guided_grammar", StructuredOutput::Grammar(grammar.clone())));
    }
    if let Some(so) = &f.structured_outputs {
        for spec in structured_outputs(so)? {
            found.push(("structured_outputs", spec));
        }
    }
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop().map(|(_, spec)| spec)),
        _ => {
            let names: Vec<&str> = found.iter().map(|(name, _)| *name).collect();
            Err(ApiError::invalid(
                found[1].0,
                format!(
                    "You can only use one kind of structured outputs constraint but multiple are \
                     specified: {}.",
                    names.join(", ")
                ),
            ))
        }
    }
}

/// OpenAI's `response_format`: `text` (no constraint), `json_object`, or
/// `json_schema` with `{"json_schema": {"name", "schema", "strict"}}`.
fn response_format(rf: &Value) -> ApiResult<Option<StructuredOutput>> {
    let bad = |msg: &str| Err(ApiError::invalid("response_format", msg.to_string()));
    match rf.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(StructuredOutput::JsonObject)),
        Some("json_schema") => match rf.get("json_schema") {
            Some(js) => match js.get("schema").or_else(|| js.get("json_schema")) {
                Some(schema) => json_schema("response_format", schema).map(Some),
                // OpenAI's schema allows a json_schema without a schema: any JSON object then.
                None => Ok(Some(StructuredOutput::JsonObject)),
            },
            None => bad("response_format of type `json_schema` needs a `json_schema` object."),
        },
        Some(other) => Err(ApiError::invalid(
            "response_format",
            format!(
                "response_format type `{other}` is not supported (use `text`, `json_object` or \
                 `json_schema`)."
            ),
        )),
        None => bad("response_format needs a `type`."),
    }
}

/// vLLM's `structured_outputs`: `{json | regex | choice | grammar | json_object}`.
fn structured_outputs(so: &Value) -> ApiResult<Vec<StructuredOutput>> {
    let param = "structured_outputs";
    let Some(obj) = so.as_object() else {
        return Err(ApiError::invalid(
            param,
            "structured_outputs must be an object.",
        ));
    };
    let mut specs = Vec::new();
    let closed = obj
        .get("disable_additional_properties")
        .and_then(Value::as_bool)
        == Some(true);
    let text = |key: &str, v: &Value| {
        v.as_str().map(str::to_string).ok_or_else(|| {
            ApiError::invalid(param, format!("structured_outputs.{key} must be a string."))
        })
    };
    for (key, v) in obj {
        if v.is_null() {
            continue;
        }
        match key.as_str() {
            "json" => {
                let mut spec = json_schema(param, v)?;
                if let (true, StructuredOutput::JsonSchema(schema)) = (closed, &mut spec) {
                    close_objects(schema);
                }
                specs.push(spec);
            }
            "regex" => specs.push(StructuredOutput::Regex(text(key, v)?)),
            "grammar" => specs.push(StructuredOutput::Grammar(text(key, v)?)),
            "choice" => {
                let choices = serde_json::from_value::<Vec<String>>(v.clone()).map_err(|_| {
                    ApiError::invalid(
                        param,
                        "structured_outputs.choice must be a list of strings.",
                    )
                })?;
                specs.push(StructuredOutput::Choice(choices));
            }
            "json_object" => {
                if v.as_bool() == Some(true) {
                    specs.push(StructuredOutput::JsonObject);
                }
            }
            "disable_additional_properties" => {}
            // Backend tuning that does not change what output is valid.
            "disable_any_whitespace" | "whitespace_pattern" | "backend" | "disable_fallback" => {}
            other => {
                return Err(ApiError::invalid(
                    param,
                    format!("structured_outputs.{other} is not supported by ember."),
                ))
            }
        }
    }
    Ok(specs)
}

/// `disable_additional_properties`: every object schema with `properties` and no word on
/// `additionalProperties` allows only its listed properties.
fn close_objects(schema: &mut Value) {
    match schema {
        Value::Object(node) => {
            if node.contains_key("properties") && !node.contains_key("additionalProperties") {
                node.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (key, child) in node.iter_mut() {
                match key.as_str() {
                    // Maps from names to schemas.
                    "properties" | "patternProperties" | "$defs" | "definitions"
                    | "dependentSchemas" => {
                        if let Value::Object(map) = child {
                            map.values_mut().for_each(close_objects);
                        }
                    }
                    // Data, not schemas.
                    "enum" | "const" | "default" | "examples" => {}
                    _ => close_objects(child),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

/// A JSON schema given as an object (or `true`), or as a string holding one.
fn json_schema(param: &'static str, v: &Value) -> ApiResult<StructuredOutput> {
    let schema = match v {
        Value::String(s) => serde_json::from_str(s).map_err(|e| {
            ApiError::invalid(
                param,
                format!("The JSON schema in `{param}` does not parse: {e}"),
            )
        })?,
        other => other.clone(),
    };
    if !schema.is_object() && schema != Value::Bool(true) {
        return Err(ApiError::invalid(
            param,
            format!("`{param}` must be a JSON schema object."),
        ));
    }
    Ok(StructuredOutput::JsonSchema(schema))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> ApiResult<Option<StructuredOutput>> {
        from_fields(&serde_json::from_str::<SamplingFields>(json).unwrap())
    }

    #[test]
    fn every_spelling_maps_to_its_constraint() {
        let schema = serde_json::json!({"type": "object"});
        assert_eq!(parse("{}").unwrap(), None);
        assert_eq!(
            parse(r#"{"response_format": {"type": "text"}}"#).unwrap(),
            None
        );
        assert_eq!(
            parse(r#"{"response_format": {"type": "json_object"}}"#).unwrap(),
            Some(StructuredOutput::JsonObject)
        );
        assert_eq!(
            parse(r#"{"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}}"#)
                .unwrap(),
            Some(StructuredOutput::JsonSchema(schema.clone()))
        );
        assert_eq!(
            parse(r#"{"guided_json": "{\"type\": \"object\"}"}"#).unwrap(),
            Some(StructuredOutput::JsonSchema(schema.clone()))
        );
        assert_eq!(
            parse(r#"{"structured_outputs": {"choice": ["a", "b"]}}"#).unwrap(),
            Some(StructuredOutput::Choice(vec!["a".into(), "b".into()]))
        );
        assert_eq!(
            parse(r#"{"structured_outputs": {"regex": "a+", "disable_any_whitespace": true}}"#)
                .unwrap(),
            Some(StructuredOutput::Regex("a+".into()))
        );
        let closed = parse(
            r#"{"structured_outputs": {"json": {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {}}}}, "$defs": {"c": {"properties": {}}}}, "disable_additional_properties": true}}"#,
        )
        .unwrap();
        assert_eq!(
            closed,
            Some(StructuredOutput::JsonSchema(serde_json::json!({
                "type": "object",
                "additionalProperties": false,
                "properties": {"a": {"type": "object", "additionalProperties": false, "properties": {"b": {}}}},
                "$defs": {"c": {"properties": {}, "additionalProperties": false}}
            })))
        );
        assert_eq!(
            parse(r#"{"guided_grammar": "start: \"x\""}"#).unwrap(),
            Some(StructuredOutput::Grammar("start: \"x\"".into()))
        );
    }

    #[test]
    fn malformed_or_conflicting_fields_name_the_field() {
        for (json, param) in [
            (
                r#"{"guided_regex": "a", "guided_choice": ["b"]}"#,
                "guided_choice",
            ),
            (r#"{"response_format": {"type": "xml"}}"#, "response_format"),
            (
                r#"{"response_format": {"type": "json_schema"}}"#,
                "response_format",
            ),
            (r#"{"guided_json": "{not json"}"#, "guided_json"),
            (r#"{"guided_json": 3}"#, "guided_json"),
            (
                r#"{"structured_outputs": {"choice": "a"}}"#,
                "structured_outputs",
            ),
            (
                r#"{"structured_outputs": {"structural_tag": "x"}}"#,
                "structured_outputs",
            ),
            (
                r#"{"structured_outputs": {"json": {}, "regex": "a"}}"#,
                "structured_outputs",
            ),
        ] {
            let e = parse(json).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{json}: {}", e.message);
        }
    }
}
