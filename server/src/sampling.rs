//! OpenAI request fields → the engine's `SamplingParams`: the request's value, else the model's
//! `generation_config.json` default (unless `--generation-config vllm`), else vLLM's default. Range checks
//! are the engine's (`SamplingParams::validate`); here only what the wire format adds.

use ember_engine::SamplingParams;
use ember_models::loader::GenerationDefaults;
use serde_json::Value;

use crate::errors::{ApiError, ApiResult};
use crate::protocol::SamplingFields;

/// vLLM clamps logit biases to this magnitude.
const MAX_LOGIT_BIAS: f32 = 100.0;

pub struct SamplingInputs<'a> {
    pub fields: &'a SamplingFields,
    pub defaults: &'a GenerationDefaults,
    /// Already resolved by the route (its own default rules).
    pub max_tokens: Option<usize>,
    /// Alternatives per generated token, when logprobs were asked for.
    pub logprobs: Option<usize>,
    pub max_logprobs: usize,
    /// Largest `n` the server accepts (--max-num-seqs: all of a request's sequences can run at once).
    pub max_n: usize,
}

pub fn build(inp: SamplingInputs<'_>) -> ApiResult<SamplingParams> {
    let f = inp.fields;
    let d = inp.defaults;
    refuse_unsupported(f)?;
    let mut p = SamplingParams::default();
    p.n = f.n.unwrap_or(1);
    if p.n > inp.max_n {
        return Err(ApiError::invalid(
            "n",
            format!(
                "n must be at most {} (the server's --max-num-seqs), got {}.",
                inp.max_n, p.n
            ),
        ));
    }
    p.best_of = f.best_of;
    if let Some(best_of) = f.best_of {
        if best_of > inp.max_n {
            return Err(ApiError::invalid(
                "best_of",
                format!("best_of must be at most {}, got {best_of}.", inp.max_n),
            ));
        }
    }
    p.temperature = f
        .temperature
        .or(d.temperature.map(|t| t as f32))
        .unwrap_or(1.0);
    p.top_p = f.top_p.or(d.top_p.map(|t| t as f32)).unwrap_or(1.0);
    p.top_k = match f.top_k {
        Some(k) => k,
        None => d
            .top_k
            .map(|k| k.clamp(-1, i32::MAX as i64) as i32)
            .unwrap_or(0),
    };
    p.min_p = f.min_p.or(d.min_p.map(|m| m as f32)).unwrap_or(0.0);
    p.repetition_penalty = f
        .repetition_penalty
        .or(d.repetition_penalty.map(|r| r as f32))
        .unwrap_or(1.0);
    p.presence_penalty = f.presence_penalty.unwrap_or(0.0);
    p.frequency_penalty = f.frequency_penalty.unwrap_or(0.0);
    // Seeds are signed in OpenAI's schema; any 64-bit pattern is a fine seed.
    p.seed = f.seed.map(|s| s as u64);
    p.stop = f.stop.clone().map(|s| s.into_vec()).unwrap_or_default();
    p.stop_token_ids = f.stop_token_ids.clone().unwrap_or_default();
    p.include_stop_str_in_output = f.include_stop_str_in_output.unwrap_or(false);
    p.ignore_eos = f.ignore_eos.unwrap_or(false);
    p.min_tokens = f.min_tokens.unwrap_or(0);
    p.max_tokens = inp.max_tokens;
    p.skip_special_tokens = f.skip_special_tokens.unwrap_or(true);
    p.spaces_between_special_tokens = f.spaces_between_special_tokens.unwrap_or(true);
    if let Some(bias) = &f.logit_bias {
        for (k, v) in bias {
            let id: u32 = k.trim().parse().map_err(|_| {
                ApiError::invalid(
                    "logit_bias",
                    format!("logit_bias keys must be token ids, got `{k}`."),
                )
            })?;
            if !v.is_finite() {
                return Err(ApiError::invalid(
                    "logit_bias",
                    format!("logit_bias for token {id} must be a finite number."),
                ));
            }
            p.logit_bias
                .insert(id, v.clamp(-MAX_LOGIT_BIAS, MAX_LOGIT_BIAS));
        }
    }
    for (param, k) in [
        ("logprobs", inp.logprobs),
        ("prompt_logprobs", f.prompt_logprobs),
    ] {
        if let Some(k) = k {
            if k > inp.max_logprobs {
                return Err(ApiError::invalid(
                    param,
                    format!(
                        "Requested {param} of {k}, which is greater than max allowed: {}",
                        inp.max_logprobs
                    ),
                ));
            }
        }
    }
    p.logprobs = inp.logprobs;
    p.prompt_logprobs = f.prompt_logprobs;
    p.validate().map_err(ApiError::from_validation)?;
    Ok(p)
}

impl ApiError {
    pub fn from_validation(v: ember_engine::ValidationError) -> Self {
        Self::invalid(v.param, v.message)
    }
}

/// Guided decoding and beam search are not implemented: say so instead of ignoring the field.
fn refuse_unsupported(f: &SamplingFields) -> ApiResult<()> {
    let unsupported = |param: &str| {
        Err(ApiError::invalid(
            param,
            format!("`{param}` (structured / guided decoding) is not supported by ember yet."),
        ))
    };
    if let Some(rf) = &f.response_format {
        let kind = rf.get("type").and_then(Value::as_str);
        if kind != Some("text") {
            return unsupported("response_format");
        }
    }
    if f.guided_json.is_some() {
        return unsupported("guided_json");
    }
    if f.guided_regex.is_some() {
        return unsupported("guided_regex");
    }
    if f.guided_choice.is_some() {
        return unsupported("guided_choice");
    }
    if f.guided_grammar.is_some() {
        return unsupported("guided_grammar");
    }
    if f.structured_outputs.is_some() {
        return unsupported("structured_outputs");
    }
    if f.use_beam_search == Some(true) {
        return Err(ApiError::invalid(
            "use_beam_search",
            "Beam search is not supported by ember.",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_with(json: &str, defaults: &GenerationDefaults) -> ApiResult<SamplingParams> {
        let fields: SamplingFields = serde_json::from_str(json).unwrap();
        build(SamplingInputs {
            fields: &fields,
            defaults,
            max_tokens: Some(16),
            logprobs: None,
            max_logprobs: 20,
            max_n: 256,
        })
    }

    #[test]
    fn request_then_generation_config_then_vllm() {
        let d = GenerationDefaults {
            temperature: Some(0.2),
            top_p: Some(0.9),
            ..Default::default()
        };
        let p = build_with(r#"{"temperature": 0.7}"#, &d).unwrap();
        assert_eq!((p.temperature, p.top_p, p.top_k), (0.7, 0.9, 0));
        let p = build_with("{}", &GenerationDefaults::default()).unwrap();
        assert_eq!((p.temperature, p.top_p), (1.0, 1.0));
    }

    #[test]
    fn bad_values_name_the_field() {
        let d = GenerationDefaults::default();
        let e = build_with(r#"{"temperature": -1}"#, &d).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temperature"));
        let e = build_with(r#"{"logit_bias": {"x": 1}}"#, &d).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("logit_bias"));
        let e = build_with(r#"{"n": 100000}"#, &d).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("n"));
        let e = build_with(r#"{"guided_regex": "a+"}"#, &d).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("guided_regex"));
        assert!(build_with(r#"{"response_format": {"type": "text"}}"#, &d).is_ok());
    }
}
