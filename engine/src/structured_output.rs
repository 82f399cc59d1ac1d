//! Structured outputs (vLLM's `structured_outputs`, `guided_json` / `guided_regex` / `guided_choice` /
//! `guided_grammar` and `response_format`): the generated text is held to a JSON schema, a regular
//! expression, a list of choices or a Lark grammar.
//!
//! [llguidance](https://github.com/guidance-ai/llguidance) (one of vLLM's structured-output backends)
//! compiles the constraint and, before each sampled token, gives the set of tokens that keep the text
//! inside it; every other logit becomes −∞ before the sampler sees the row (so, as in vLLM, logprobs
//! are those of the masked row). When the constraint is complete only the request's end tokens remain,
//! so the sequence stops with `finish_reason: "stop"`; `max_tokens` may still cut it short (`length`).

use std::fmt;
use std::sync::{Arc, OnceLock};

use ember_models::loader::LoadedModel;
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;

use crate::error::ValidationError;

/// What the output must match.
#[derive(Debug, Clone, PartialEq)]
pub enum StructuredOutput {
    /// A JSON value valid under this JSON schema.
    JsonSchema(Value),
    /// Any JSON object (`response_format: {"type": "json_object"}`).
    JsonObject,
    /// Text matching this regular expression as a whole.
    Regex(String),
    /// Exactly one of these strings.
    Choice(Vec<String>),
    /// Text of this Lark grammar (llguidance's dialect, which vLLM's `guidance` backend takes).
    Grammar(String),
}

impl StructuredOutput {
    fn grammar(&self) -> Result<TopLevelGrammar, String> {
        Ok(match self {
            Self::JsonSchema(schema) => {
                if !schema.is_object() && !schema.is_boolean() {
                    return Err("the JSON schema must be an object".into());
                }
                TopLevelGrammar::from_json_schema(schema.clone())
            }
            Self::JsonObject => {
                TopLevelGrammar::from_json_schema(serde_json::json!({"type": "object"}))
            }
            Self::Regex(rx) => TopLevelGrammar::from_regex(rx),
            Self::Choice(choices) => {
                if choices.is_empty() {
                    return Err("the list of choices is empty".into());
                }
                let alternatives: Vec<String> =
                    choices.iter().map(|c| regex_syntax::escape(c)).collect();
                TopLevelGrammar::from_regex(&format!("(?:{})", alternatives.join("|")))
            }
            Self::Grammar(lark) => TopLevelGrammar::from_lark(lark.clone()),
        })
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::JsonSchema(_) => "JSON schema",
            Self::JsonObject => "JSON object",
            Self::Regex(_) => "regex",
            Self::Choice(_) => "choice",
            Self::Grammar(_) => "grammar",
        }
    }
}

/// Compiles constraints for one model's tokenizer. The token trie is built on first use (a structured
/// request), so servers that never see one pay nothing at start.
pub struct GrammarCompiler {
    model: Arc<LoadedModel>,
    factory: OnceLock<Result<ParserFactory, String>>,
}

impl fmt::Debug for GrammarCompiler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrammarCompiler")
            .field("ready", &self.factory.get().is_some())
            .finish()
    }
}

impl GrammarCompiler {
    pub fn new(model: Arc<LoadedModel>) -> Self {
        Self {
            model,
            factory: OnceLock::new(),
        }
    }

    fn factory(&self) -> Result<&ParserFactory, String> {
        self.factory
            .get_or_init(|| build_factory(&self.model))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A fresh guide for `spec`; an invalid schema, regex or grammar is the request's error (reported
    /// against `structured_outputs`, whichever of its spellings the request used).
    pub fn compile(&self, spec: &StructuredOutput) -> Result<Guide, ValidationError> {
        let invalid = |why: String| {
            ValidationError::new(
                "structured_outputs",
                format!("Invalid structured output ({}): {why}", spec.kind()),
            )
        };
        let factory = self
            .factory()
            .map_err(|e| invalid(format!("this model's tokenizer cannot be used: {e}")))?;
        let grammar = spec.grammar().map_err(invalid)?;
        let parser = factory
            .create_parser(grammar)
            .map_err(|e| invalid(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(invalid(e));
        }
        Ok(Guide {
            matcher,
            eos: factory.tok_env().tok_trie().eos_token(),
        })
    }
}

/// The token trie of the model's vocabulary: each id's bytes (from the tokenizer's JSON form), as wide
/// as the logits row (ids past the tokenizer's vocabulary have no bytes and are never allowed).
fn build_factory(model: &LoadedModel) -> Result<ParserFactory, String> {
    let started = std::time::Instant::now();
    let tokenizer = &model.tokenizer;
    let json = tokenizer
        .inner()
        .to_string(false)
        .map_err(|e| e.to_string())?;
    let json: Value = serde_json::from_str(&json).map_err(|e| e.to_string())?;
    let mut words =
        llguidance::token_bytes_from_tokenizer_json(&json).map_err(|e| e.to_string())?;
    let vocab_size = model.config.vocab_size.max(words.len());
    words.resize(vocab_size, Vec::new());
    let eos = tokenizer
        .eos_token_ids()
        .first()
        .copied()
        .ok_or("the tokenizer has no end-of-sequence token")?;
    let info = TokRxInfo {
        vocab_size: vocab_size as u32,
        tok_eos: eos,
        tok_bos: tokenizer.bos_token_id(),
        tok_pad: None,
        tok_unk: None,
        tok_end_of_turn: None,
    };
    let env: TokEnv = Arc::new(ApproximateTokEnv::new(TokTrie::from(&info, &words)));
    let mut factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
    factory.quiet();
    tracing::info!(
        "structured outputs ready ({vocab_size} tokens) in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Ok(factory)
}

/// One sequence's constraint state: which tokens may come next, advanced by each token it takes.
pub struct Guide {
    matcher: Matcher,
    /// The trie's end-of-sequence id (the grammar's "may stop here").
    eos: u32,
}

impl Clone for Guide {
    /// An independent copy (for the sequences of an `n > 1` request).
    fn clone(&self) -> Self {
        Self {
            matcher: self.matcher.deep_clone(),
            eos: self.eos,
        }
    }
}

impl fmt::Debug for Guide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guide")
            .field("stopped", &self.matcher.is_stopped())
            .finish()
    }
}

impl Guide {
    /// Sets every logit the constraint does not allow next to −∞. Where it may end, the `end_tokens`
    /// (the request's EOS and stop token ids) stay allowed; if it can go no further, or has failed, only
    /// they do, so the sequence ends.
    pub fn mask_logits(&mut self, logits: &mut [f32], end_tokens: &[u32]) {
        let mask = match self.matcher.compute_mask_or_eos() {
            Ok(mask) => Some(mask),
            Err(e) => {
                tracing::debug!("structured output failed, ending the sequence: {e}");
                None
            }
        };
        let may_end = mask
            .as_ref()
            .is_none_or(|m| m.is_allowed(self.eos) || m.is_zero());
        let ends: Vec<u32> = if end_tokens.is_empty() {
            vec![self.eos]
        } else {
            end_tokens.to_vec()
        };
        for (t, l) in logits.iter_mut().enumerate() {
            let t = t as u32;
            let is_end = ends.contains(&t);
            // The trie's EOS counts only where it is one of the request's end tokens.
            let by_grammar =
                (t != self.eos || is_end) && mask.as_ref().is_some_and(|m| m.is_allowed(t));
            if !(by_grammar || (may_end && is_end)) {
                *l = f32::NEG_INFINITY;
            }
        }
    }

    /// Advances over a token the sequence took (an end token counts as the grammar's EOS).
    pub fn accept(&mut self, token: u32, end_tokens: &[u32]) {
        let token = if end_tokens.contains(&token) {
            self.eos
        } else {
            token
        };
        if let Err(e) = self.matcher.consume_token(token) {
            tracing::debug!("structured output rejected token {token}: {e}");
        }
    }

    /// The constraint is complete (or failed): only an end token may follow.
    pub fn is_stopped(&self) -> bool {
        self.matcher.is_stopped()
    }
}
