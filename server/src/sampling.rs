//! OpenAI request fields → the engine's `SamplingParams`: the request's value, else the model's
//! `generation_config.json` default (unless `--generation-config vllm`), else vLLM's default. Range checks
//! are the engine's (`SamplingParams::validate`); here only what the wire format adds.

use ember_engine::SamplingParams;
use ember_models::loader::GenerationDefaults;

use crate::errors::{ApiError, ApiResult};
use crate::protocol::SamplingFields;
use crate::structured;

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
    let n = f.n.unwrap_or(1);
    if n > inp.max_n {
        return Err(ApiError::invalid(
            "n",
            format!(
                "n must be at most {} (the server's --max-num-seqs), got {n}.",
                inp.max_n
            ),
        ));
    }
    if let Some(best_of) = f.best_of {
        if best_of > inp.max_n {
            return Err(ApiError::invalid(
                "best_of",
                format!("best_of must be at most {}, got {best_of}.", inp.max_n),
            ));
        }
    }
    let mut p = SamplingParams {
        n,
        best_of: f.best_of,
        temperature: f
            .temperature
            .or(d.temperature.map(|t| t as f32))
            .unwrap_or(1.0),
        top_p: f.top_p.or(d.top_p.map(|t| t as f32)).unwrap_or(1.0),
        top_k: match f.top_k {
            Some(k) => k,
            None => d
                .top_k
                .map(|k| k.clamp(-1, i32::MAX as i64) as i32)
                .unwrap_or(0),
        },
        min_p: f.min_p.or(d.min_p.map(|m| m as f32)).unwrap_or(0.0),
        repetition_penalty: f
            .repetition_penalty
            .or(d.repetition_penalty.map(|r| r as f32))
            .unwrap_or(1.0),
        presence_penalty: f.presence_penalty.unwrap_or(0.0),
        frequency_penalty: f.frequency_penalty.unwrap_or(0.0),
        // Seeds are signed in OpenAI's schema; any 64-bit pattern is a fine seed.
        seed: f.seed.map(|s| s as u64),
        stop: f.stop.clone().map(|s| s.into_vec()).unwrap_or_default(),
        stop_token_ids: f.stop_token_ids.clone().unwrap_or_default(),
        include_stop_str_in_output: f.include_stop_str_in_output.unwrap_or(false),
        ignore_eos: f.ignore_eos.unwrap_or(false),
        min_tokens: f.min_tokens.unwrap_or(0),
        max_tokens: inp.max_tokens,
        skip_special_tokens: f.skip_special_tokens.unwrap_or(true),
        spaces_between_special_tokens: f.spaces_between_special_tokens.unwrap_or(true),
        ..SamplingParams::default()
    };
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
    p.structured_output = structured::from_fields(f)?;
    p.validate().map_err(ApiError::from_validation)?;
    Ok(p)
}

impl ApiError {
    pub fn from_validation(v: ember_engine::ValidationError) -> Self {
        Self::invalid(v.param, v.message)
    }
}

/// Beam search is not implemented: say so instead of ignoring the field.
fn refuse_unsupported(f: &SamplingFields) -> ApiResult<()> {
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
        let e = build_with(r#"{"use_beam_search": true}"#, &d).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("use_beam_search"));
        let p = build_with(r#"{"guided_regex": "a+"}"#, &d).unwrap();
        assert!(p.structured_output.is_some());
    }
}
