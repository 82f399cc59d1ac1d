//! Structured outputs through the engine: whatever the model's logits, the text matches the choice list,
//! regex or JSON schema, and the sequence stops when the constraint is complete. A tiny random-weight
//! model (its logits favour nothing in particular) and the real default model (SmolLM2-135M-Instruct).

mod common;

use std::sync::Arc;

use candle_core::Device;
use ember_engine::{
    CacheConfig, Error, LlmEngine, Request, RequestOutput, SamplingParams, SchedulerConfig,
    StructuredOutput,
};
use ember_models::loader::{self, registry, LoadedModel};
use serde_json::{json, Value};

fn engine(model: &Arc<LoadedModel>) -> LlmEngine {
    LlmEngine::new(
        model.clone(),
        SchedulerConfig::default(),
        CacheConfig::default(),
    )
    .unwrap()
}

/// Each request's text (its outputs' deltas joined), by id, and its finish reason.
fn texts(outs: &[RequestOutput]) -> Vec<(String, String, Option<String>)> {
    let mut by_id: Vec<(String, String, Option<String>)> = Vec::new();
    for o in outs {
        let key = format!("{}#{}", o.id, o.index);
        let entry = match by_id.iter_mut().find(|(k, _, _)| *k == key) {
            Some(e) => e,
            None => {
                by_id.push((key, String::new(), None));
                by_id.last_mut().unwrap()
            }
        };
        entry.1.push_str(&o.text_delta);
        if let Some(r) = &o.finish_reason {
            entry.2 = Some(r.as_str().to_string());
        }
    }
    by_id
}

fn sampled(seed: u64, max_tokens: usize, spec: StructuredOutput) -> SamplingParams {
    SamplingParams {
        temperature: 1.0,
        seed: Some(seed),
        max_tokens: Some(max_tokens),
        structured_output: Some(spec),
        ..SamplingParams::default()
    }
}

#[test]
fn choices_and_regexes_hold_on_a_random_model() {
    let (_dir, model) = common::tiny_model();
    let vocab = model.config.vocab_size as u32;
    let choices = vec!["alpha".to_string(), "beta gamma".into(), "δ-42".into()];
    let pattern = r"[a-c]{2,4}-[0-9]{3}( ok)?";
    let full = regex::Regex::new(&format!("^(?:{pattern})$")).unwrap();
    let mut reqs = Vec::new();
    for seed in 0..6u64 {
        let prompt: Vec<u32> = (0..7)
            .map(|j| (seed as u32 * 31 + j * 7 + 3) % vocab)
            .collect();
        reqs.push(Request::new(
            format!("choice-{seed}"),
            prompt.clone(),
            sampled(seed, 40, StructuredOutput::Choice(choices.clone())),
        ));
        reqs.push(Request::new(
            format!("regex-{seed}"),
            prompt,
            sampled(seed, 40, StructuredOutput::Regex(pattern.into())),
        ));
    }
    let outs = engine(&model).generate(reqs).unwrap();
    let texts = texts(&outs);
    assert_eq!(texts.len(), 12);
    for (id, text, finish) in &texts {
        if id.starts_with("choice") {
            assert!(choices.contains(text), "{id}: {text:?} is not a choice");
        } else {
            assert!(
                full.is_match(text),
                "{id}: {text:?} does not match {pattern}"
            );
        }
        assert_eq!(finish.as_deref(), Some("stop"), "{id} ends at its EOS");
    }
}

/// A guided sequence's tokens do not depend on what else is in the batch, and `n > 1` sequences each
/// follow the constraint on their own.
#[test]
fn guided_outputs_do_not_depend_on_the_batch_and_hold_for_every_sequence() {
    let (_dir, model) = common::tiny_model();
    let spec = StructuredOutput::Regex(r"(yes|no|maybe), [0-9]{1,2}".into());
    let guided = |id: &str, n: usize| {
        let mut p = sampled(7, 30, spec.clone());
        p.n = n;
        Request::new(id, vec![5, 9, 11, 2, 8], p)
    };
    let alone = engine(&model).generate(vec![guided("g", 1)]).unwrap();
    let mut batch = vec![guided("g", 1), guided("many", 3)];
    for i in 0..4u32 {
        batch.push(Request::new(
            format!("plain-{i}"),
            vec![3 + i, 1, 4, 1, 5],
            SamplingParams {
                ignore_eos: true,
                ..SamplingParams::greedy(8)
            },
        ));
    }
    let together = engine(&model).generate(batch).unwrap();
    let ids = |outs: &[RequestOutput], id: &str| -> Vec<u32> {
        outs.iter()
            .filter(|o| o.id.as_str() == id)
            .flat_map(|o| o.new_token_ids.clone())
            .collect()
    };
    assert_eq!(ids(&alone, "g"), ids(&together, "g"));
    let full = regex::Regex::new(r"^(yes|no|maybe), [0-9]{1,2}$").unwrap();
    let texts = texts(&together);
    let many: Vec<_> = texts.iter().filter(|t| t.0.starts_with("many#")).collect();
    assert_eq!(many.len(), 3, "three sequences");
    for (id, text, _) in many {
        assert!(full.is_match(text), "{id}: {text:?}");
    }
}

#[test]
fn invalid_constraints_are_refused_with_the_field_named() {
    let (_dir, model) = common::tiny_model();
    let mut engine = engine(&model);
    for spec in [
        StructuredOutput::Regex("a(b".into()),
        StructuredOutput::Choice(Vec::new()),
        StructuredOutput::JsonSchema(json!({"type": "no-such-type"})),
        StructuredOutput::Grammar("start: ( ".into()),
    ] {
        let err = engine
            .add_request(Request::new(
                "bad",
                vec![1, 2, 3],
                sampled(0, 8, spec.clone()),
            ))
            .unwrap_err();
        match err {
            Error::Validation(v) => {
                assert_eq!(v.param, "structured_outputs", "{spec:?}");
                assert!(v.message.starts_with("Invalid structured output"), "{v}");
            }
            other => panic!("{spec:?}: expected a validation error, got {other:?}"),
        }
    }
    assert!(!engine.has_unfinished(), "nothing refused was queued");
}

/// The real model, greedy and sampled, writes JSON that parses and fits the schema.
#[test]
fn the_default_model_writes_json_that_fits_the_schema() {
    let path = registry::fetch(registry::DEFAULT_MODEL_ALIAS).unwrap();
    let model = Arc::new(loader::load(path.to_str().unwrap(), &Device::Cpu).unwrap());
    let schema = json!({
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 24},
            "country": {"type": "string", "enum": ["France", "Germany", "Italy"]},
            "population_millions": {"type": "integer", "minimum": 0, "maximum": 100}
        },
        "required": ["city", "country", "population_millions"],
        "additionalProperties": false
    });
    let prompt = model
        .tokenizer
        .encode("A JSON description of the capital of France:", true)
        .unwrap();
    let mut reqs = vec![Request::new(
        "greedy",
        prompt.clone(),
        SamplingParams {
            structured_output: Some(StructuredOutput::JsonSchema(schema.clone())),
            ..SamplingParams::greedy(120)
        },
    )];
    for seed in 0..2 {
        reqs.push(Request::new(
            format!("seed-{seed}"),
            prompt.clone(),
            SamplingParams {
                temperature: 0.7,
                ..sampled(seed, 120, StructuredOutput::JsonSchema(schema.clone()))
            },
        ));
    }
    reqs.push(Request::new(
        "object",
        prompt,
        SamplingParams {
            structured_output: Some(StructuredOutput::JsonObject),
            ..SamplingParams::greedy(120)
        },
    ));
    let outs = engine(&model).generate(reqs).unwrap();
    for (id, text, finish) in texts(&outs) {
        assert_eq!(finish.as_deref(), Some("stop"), "{id}: {text:?}");
        let value: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{id}: {text:?}: {e}"));
        let obj = value.as_object().unwrap_or_else(|| panic!("{id}: {text}"));
        if id.starts_with("object") {
            continue;
        }
        assert_eq!(obj.len(), 3, "{id}: {text}");
        assert!(obj["city"]
            .as_str()
            .is_some_and(|c| c.chars().count() <= 24));
        assert!(["France", "Germany", "Italy"].contains(&obj["country"].as_str().unwrap()));
        let pop = obj["population_millions"].as_i64().unwrap();
        assert!((0..=100).contains(&pop), "{id}: {text}");
    }
}

/// `min_tokens` longer than the constraint allows: the constraint wins, the sequence still ends.
#[test]
fn a_constraint_shorter_than_min_tokens_still_ends() {
    let (_dir, model) = common::tiny_model();
    for temperature in [0.0, 1.0] {
        let outs = engine(&model)
            .generate(vec![Request::new(
                "short",
                vec![4, 8, 15, 16],
                SamplingParams {
                    temperature,
                    min_tokens: 10,
                    ..sampled(1, 20, StructuredOutput::Choice(vec!["ok".into()]))
                },
            )])
            .unwrap();
        let texts = texts(&outs);
        assert_eq!(texts[0].1, "ok", "{texts:?}");
    }
}
