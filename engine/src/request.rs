//! A request as the engine tracks it: its tokens, its progress through the KV cache, and its sampling
//! parameters (vLLM's fields, defaults and validation limits).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use crate::error::ValidationError;
use crate::prefix_hash::{self, BlockHash};
use crate::structured_output::{Guide, StructuredOutput};

/// vLLM's cap on `logprobs` / `prompt_logprobs` (its `max_logprobs` default).
pub const MAX_LOGPROBS: usize = 20;

/// A request's id. vLLM's are strings (`cmpl-…`, `chatcmpl-…`); cloning is a reference-count bump.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(Arc<str>);

impl RequestId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for RequestId {
    fn from(s: &str) -> Self {
        Self(Arc::from(s))
    }
}

impl From<String> for RequestId {
    fn from(s: String) -> Self {
        Self(Arc::from(s))
    }
}

impl Borrow<str> for RequestId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// vLLM's `SamplingParams` (the subset ember serves), with vLLM's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub n: usize,
    pub best_of: Option<usize>,
    pub temperature: f32,
    pub top_p: f32,
    /// 0 or -1: off.
    pub top_k: i32,
    pub min_p: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub repetition_penalty: f32,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub stop_token_ids: Vec<u32>,
    pub include_stop_str_in_output: bool,
    pub ignore_eos: bool,
    pub min_tokens: usize,
    /// `None`: up to the model's context length.
    pub max_tokens: Option<usize>,
    /// Alternatives to return per sampled token; `Some(0)`: only the sampled token's logprob.
    pub logprobs: Option<usize>,
    pub prompt_logprobs: Option<usize>,
    /// With `prompt_logprobs`: the first prompt position whose logprob is wanted (0 or 1: all of them).
    /// The prompt before it may then come from the prefix cache, so requests that share a context and
    /// differ in their ends (loglikelihood of several continuations) compute the context once. An
    /// engine-API extension: vLLM's HTTP API has no such field.
    pub prompt_logprobs_from: usize,
    pub logit_bias: HashMap<u32, f32>,
    pub skip_special_tokens: bool,
    pub spaces_between_special_tokens: bool,
    /// What the output must match (JSON schema, regex, choice, grammar).
    pub structured_output: Option<StructuredOutput>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            n: 1,
            best_of: None,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
            seed: None,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            include_stop_str_in_output: false,
            ignore_eos: false,
            min_tokens: 0,
            max_tokens: None,
            logprobs: None,
            prompt_logprobs: None,
            prompt_logprobs_from: 0,
            logit_bias: HashMap::new(),
            skip_special_tokens: true,
            spaces_between_special_tokens: true,
            structured_output: None,
        }
    }
}

/// The tokens that end a sequence: its EOS ids (unless `ignore_eos`) and `stop_token_ids`.
pub fn end_token_ids(params: &SamplingParams, eos_token_ids: &[u32]) -> Vec<u32> {
    let eos = if params.ignore_eos {
        &[][..]
    } else {
        eos_token_ids
    };
    eos.iter().chain(&params.stop_token_ids).copied().collect()
}

/// Below this temperature sampling is greedy (vLLM's `_SAMPLING_EPS`).
pub const SAMPLING_EPS: f32 = 1e-5;

impl SamplingParams {
    /// Greedy sampling with `max_tokens` tokens.
    pub fn greedy(max_tokens: usize) -> Self {
        Self {
            temperature: 0.0,
            max_tokens: Some(max_tokens),
            ..Self::default()
        }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature < SAMPLING_EPS
    }

    /// `top_k` as a count, `None` when off.
    pub fn top_k(&self) -> Option<usize> {
        (self.top_k > 0).then_some(self.top_k as usize)
    }

    /// vLLM's range checks, with its messages; the error names the field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let err = |param, msg: String| Err(ValidationError::new(param, msg));
        if self.n < 1 {
            return err("n", format!("n must be at least 1, got {}.", self.n));
        }
        if let Some(best_of) = self.best_of {
            if best_of < self.n {
                return err(
                    "best_of",
                    format!("best_of must be greater than or equal to n, got n={} and best_of={best_of}.", self.n),
                );
            }
        }
        if !(-2.0..=2.0).contains(&self.presence_penalty) {
            return err(
                "presence_penalty",
                format!(
                    "presence_penalty must be in [-2, 2], got {}.",
                    self.presence_penalty
                ),
            );
        }
        if !(-2.0..=2.0).contains(&self.frequency_penalty) {
            return err(
                "frequency_penalty",
                format!(
                    "frequency_penalty must be in [-2, 2], got {}.",
                    self.frequency_penalty
                ),
            );
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return err(
                "repetition_penalty",
                format!(
                    "repetition_penalty must be greater than zero, got {}.",
                    self.repetition_penalty
                ),
            );
        }
        if !self.temperature.is_finite() {
            return err(
                "temperature",
                format!(
                    "temperature must be a finite number, got {}.",
                    self.temperature
                ),
            );
        }
        if self.temperature < 0.0 {
            return err(
                "temperature",
                format!(
                    "temperature must be non-negative, got {}.",
                    self.temperature
                ),
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return err(
                "top_p",
                format!("top_p must be in (0, 1], got {}.", self.top_p),
            );
        }
        if self.top_k < -1 {
            return err(
                "top_k",
                format!(
                    "top_k must be 0 (disable), or at least 1, got {}.",
                    self.top_k
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return err(
                "min_p",
                format!("min_p must be in [0, 1], got {}.", self.min_p),
            );
        }
        if let Some(max_tokens) = self.max_tokens {
            if max_tokens < 1 {
                return err(
                    "max_tokens",
                    format!("max_tokens must be at least 1, got {max_tokens}."),
                );
            }
            if self.min_tokens > max_tokens {
                return err(
                    "min_tokens",
                    format!(
                        "min_tokens must be less than or equal to max_tokens={max_tokens}, got {}.",
                        self.min_tokens
                    ),
                );
            }
        }
        if let Some(k) = self.logprobs {
            if k > MAX_LOGPROBS {
                return err(
                    "logprobs",
                    format!("Requested sample logprobs of {k}, which is greater than max allowed: {MAX_LOGPROBS}"),
                );
            }
        }
        if let Some(k) = self.prompt_logprobs {
            if k > MAX_LOGPROBS {
                return err(
                    "prompt_logprobs",
                    format!("Requested prompt logprobs of {k}, which is greater than max allowed: {MAX_LOGPROBS}"),
                );
            }
        }
        if self.stop.iter().any(String::is_empty) {
            return err("stop", "stop cannot contain an empty string.".into());
        }
        if let Some((&bad, _)) = self.logit_bias.iter().find(|(_, b)| !b.is_finite()) {
            return err(
                "logit_bias",
                format!("logit_bias for token {bad} must be a finite number."),
            );
        }
        Ok(())
    }

    /// The checks that need the vocabulary size (vLLM's processor does these).
    pub fn validate_vocab(&self, vocab_size: usize) -> Result<(), ValidationError> {
        if self.top_k > 0 && self.top_k as usize > vocab_size {
            return Err(ValidationError::new(
                "top_k",
                format!(
                    "top_k cannot be greater than vocabulary size({vocab_size}), but got {}.",
                    self.top_k
                ),
            ));
        }
        let mut bad: Vec<u32> = self
            .logit_bias
            .keys()
            .copied()
            .filter(|&t| t as usize >= vocab_size)
            .collect();
        bad.extend(
            self.stop_token_ids
                .iter()
                .copied()
                .filter(|&t| t as usize >= vocab_size),
        );
        if !bad.is_empty() {
            bad.sort_unstable();
            bad.dedup();
            return Err(ValidationError::new(
                "logit_bias",
                format!("token_id(s) {bad:?} out of vocabulary (vocab size {vocab_size})."),
            ));
        }
        Ok(())
    }
}

/// What ended a request that stopped by itself (vLLM's `stop_reason`: `None` for EOS, the token id, or the
/// stop string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopCause {
    Eos,
    TokenId(u32),
    String(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    Stop(StopCause),
    Length,
    Abort,
}

impl FinishReason {
    /// The OpenAI `finish_reason` string.
    pub fn as_str(&self) -> &'static str {
        match self {
            FinishReason::Stop(_) => "stop",
            FinishReason::Length => "length",
            FinishReason::Abort => "abort",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestStatus {
    Waiting,
    Running,
    /// Evicted from the KV cache; waits to be recomputed.
    Preempted,
    Finished(FinishReason),
}

#[derive(Debug, Clone)]
pub struct Request {
    pub id: RequestId,
    /// Prompt tokens followed by the output tokens, contiguous so a chunk of either is one slice.
    token_ids: Vec<u32>,
    num_prompt_tokens: usize,
    /// Tokens whose K/V are in the cache. After a preemption it restarts at 0 and the output tokens so far
    /// are recomputed along with the prompt.
    pub num_computed_tokens: usize,
    pub status: RequestStatus,
    /// Lower runs earlier (priority policy).
    pub priority: i32,
    pub arrival: Instant,
    /// Admission order, the FCFS tie-break (set by the scheduler).
    pub arrival_seq: u64,
    pub sampling: SamplingParams,
    /// `sampling.max_tokens`, or what the context length leaves (set by the scheduler at admission).
    pub max_tokens: usize,
    /// The seed of this request's RNG: its own, or drawn from the engine seed at admission.
    pub seed: u64,
    /// The block table: block `i` holds tokens `[i * block_size, (i + 1) * block_size)`.
    pub block_ids: Vec<u32>,
    /// Prompt tokens served by the prefix cache at first admission.
    pub num_cached_tokens: usize,
    pub cache_salt: Option<String>,
    pub eos_token_ids: Vec<u32>,
    pub num_preemptions: u32,
    /// Hash chain of this request's full blocks (extended as tokens arrive).
    pub(crate) block_hashes: Vec<BlockHash>,
    /// Leading blocks of `block_ids` already registered in the prefix cache.
    pub(crate) num_cached_blocks: usize,
    /// The compiled `sampling.structured_output`, advanced by every output token (set at submission).
    pub guide: Option<Guide>,
}

impl Request {
    pub fn new(
        id: impl Into<RequestId>,
        prompt_token_ids: Vec<u32>,
        sampling: SamplingParams,
    ) -> Self {
        let num_prompt_tokens = prompt_token_ids.len();
        Self {
            id: id.into(),
            token_ids: prompt_token_ids,
            num_prompt_tokens,
            num_computed_tokens: 0,
            status: RequestStatus::Waiting,
            priority: 0,
            arrival: Instant::now(),
            arrival_seq: 0,
            max_tokens: sampling.max_tokens.unwrap_or(usize::MAX),
            seed: sampling.seed.unwrap_or(0),
            sampling,
            block_ids: Vec::new(),
            num_cached_tokens: 0,
            cache_salt: None,
            eos_token_ids: Vec::new(),
            num_preemptions: 0,
            block_hashes: Vec::new(),
            num_cached_blocks: 0,
            guide: None,
        }
    }

    pub fn with_priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    pub fn with_eos(mut self, eos_token_ids: Vec<u32>) -> Self {
        self.eos_token_ids = eos_token_ids;
        self
    }

    pub fn with_cache_salt(mut self, salt: impl Into<String>) -> Self {
        self.cache_salt = Some(salt.into());
        self
    }

    pub fn prompt_token_ids(&self) -> &[u32] {
        &self.token_ids[..self.num_prompt_tokens]
    }

    pub fn output_token_ids(&self) -> &[u32] {
        &self.token_ids[self.num_prompt_tokens..]
    }

    /// Prompt then output tokens.
    pub fn all_token_ids(&self) -> &[u32] {
        &self.token_ids
    }

    pub fn num_prompt_tokens(&self) -> usize {
        self.num_prompt_tokens
    }

    pub fn num_output_tokens(&self) -> usize {
        self.token_ids.len() - self.num_prompt_tokens
    }

    /// Prompt + output tokens.
    pub fn num_tokens(&self) -> usize {
        self.token_ids.len()
    }

    /// Every prompt token is in the cache.
    pub fn is_prefill_done(&self) -> bool {
        self.num_computed_tokens >= self.num_prompt_tokens
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.status, RequestStatus::Finished(_))
    }

    /// Whether this request wants prompt logprobs (computed on its first pass through the prompt).
    pub fn wants_prompt_logprobs(&self) -> bool {
        self.sampling.prompt_logprobs.is_some()
    }

    /// The first prompt position whose logprob this request returns (≥ 1: position 0 has none).
    pub fn first_prompt_logprob(&self) -> usize {
        self.sampling.prompt_logprobs_from.max(1)
    }

    /// How many leading tokens may come from the prefix cache: all but the last (its logits are needed),
    /// and with prompt logprobs only those before the first scored position's predecessor, whose logits
    /// row scores it.
    pub fn max_cacheable_tokens(&self) -> usize {
        let all_but_last = self.num_tokens().saturating_sub(1);
        if self.wants_prompt_logprobs() {
            all_but_last.min(self.first_prompt_logprob() - 1)
        } else {
            all_but_last
        }
    }

    pub fn append_output_token(&mut self, token: u32) {
        self.token_ids.push(token);
        if let Some(guide) = &mut self.guide {
            guide.accept(token, &end_token_ids(&self.sampling, &self.eos_token_ids));
        }
    }

    /// The tokens that end this request: its EOS ids (unless `ignore_eos`) and `stop_token_ids`.
    pub fn end_token_ids(&self) -> Vec<u32> {
        end_token_ids(&self.sampling, &self.eos_token_ids)
    }

    pub fn block_hashes(&self) -> &[BlockHash] {
        &self.block_hashes
    }

    /// Extends the hash chain over the full blocks of the first `num_tokens` tokens.
    pub(crate) fn extend_block_hashes(&mut self, num_tokens: usize, block_size: usize) {
        prefix_hash::extend_block_hashes(
            &mut self.block_hashes,
            &self.token_ids[..num_tokens],
            block_size,
            self.cache_salt.as_deref(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_vllm() {
        let p = SamplingParams::default();
        assert_eq!(
            (p.n, p.temperature, p.top_p, p.top_k, p.min_p),
            (1, 1.0, 1.0, 0, 0.0)
        );
        assert_eq!(p.repetition_penalty, 1.0);
        assert!(p.skip_special_tokens);
        assert!(p.validate().is_ok());
    }

    #[test]
    fn validation_names_the_field() {
        let cases: Vec<(SamplingParams, &str)> = vec![
            (
                SamplingParams {
                    temperature: -0.1,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplingParams {
                    top_p: 0.0,
                    ..Default::default()
                },
                "top_p",
            ),
            (
                SamplingParams {
                    top_p: 1.5,
                    ..Default::default()
                },
                "top_p",
            ),
            (
                SamplingParams {
                    top_k: -2,
                    ..Default::default()
                },
                "top_k",
            ),
            (
                SamplingParams {
                    min_p: 1.5,
                    ..Default::default()
                },
                "min_p",
            ),
            (
                SamplingParams {
                    repetition_penalty: 0.0,
                    ..Default::default()
                },
                "repetition_penalty",
            ),
            (
                SamplingParams {
                    n: 0,
                    ..Default::default()
                },
                "n",
            ),
            (
                SamplingParams {
                    n: 2,
                    best_of: Some(1),
                    ..Default::default()
                },
                "best_of",
            ),
            (
                SamplingParams {
                    logprobs: Some(21),
                    ..Default::default()
                },
                "logprobs",
            ),
            (
                SamplingParams {
                    prompt_logprobs: Some(21),
                    ..Default::default()
                },
                "prompt_logprobs",
            ),
            (
                SamplingParams {
                    max_tokens: Some(0),
                    ..Default::default()
                },
                "max_tokens",
            ),
            (
                SamplingParams {
                    max_tokens: Some(3),
                    min_tokens: 4,
                    ..Default::default()
                },
                "min_tokens",
            ),
            (
                SamplingParams {
                    presence_penalty: 2.5,
                    ..Default::default()
                },
                "presence_penalty",
            ),
            (
                SamplingParams {
                    frequency_penalty: -2.5,
                    ..Default::default()
                },
                "frequency_penalty",
            ),
        ];
        for (p, field) in cases {
            let e = p.validate().unwrap_err();
            assert_eq!(e.param, field, "{e}");
            assert!(
                e.message.contains(field) || e.message.contains(&field.replace('_', " ")),
                "{e}"
            );
        }
        assert!(SamplingParams {
            top_k: -1,
            ..Default::default()
        }
        .validate()
        .is_ok());
        let e = SamplingParams {
            logprobs: Some(21),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            e.message,
            "Requested sample logprobs of 21, which is greater than max allowed: 20"
        );
        let e = SamplingParams {
            top_k: 100,
            ..Default::default()
        }
        .validate_vocab(50)
        .unwrap_err();
        assert_eq!(e.param, "top_k");
    }

    #[test]
    fn tokens_are_prompt_then_output() {
        let mut r = Request::new("a", vec![1, 2, 3], SamplingParams::default());
        r.append_output_token(9);
        assert_eq!(r.all_token_ids(), &[1, 2, 3, 9]);
        assert_eq!(r.prompt_token_ids(), &[1, 2, 3]);
        assert_eq!(r.output_token_ids(), &[9]);
        assert_eq!(r.num_tokens(), 4);
        assert!(!r.is_prefill_done());
        r.num_computed_tokens = 3;
        assert!(r.is_prefill_done());
    }
}
