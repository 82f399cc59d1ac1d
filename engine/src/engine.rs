//! The engine loop: schedule a step, run it, sample, detokenize, and report each request's progress.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use ember_models::batch::LogitsWanted;
use ember_models::loader::LoadedModel;

use crate::config::{CacheConfig, SchedulerConfig};
use crate::detokenizer::IncrementalDetokenizer;
use crate::error::{Error, Result};
use crate::model_runner::ModelRunner;
use crate::request::{FinishReason, Request, RequestId, RequestStatus, StopCause};
use crate::sampler::{self, SampleRow, TokenLogprobs};
use crate::scheduler::Scheduler;

/// What one step produced for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestOutput {
    pub id: RequestId,
    /// New text since the last output (never splits a character, never shows a stop string).
    pub text_delta: String,
    pub new_token_ids: Vec<u32>,
    /// Logprobs of `new_token_ids`, when the request asked for them.
    pub logprobs: Vec<TokenLogprobs>,
    /// Prompt logprobs for positions 1.. of the prompt, sent once with the first output.
    pub prompt_logprobs: Option<Vec<TokenLogprobs>>,
    pub finish_reason: Option<FinishReason>,
    pub num_prompt_tokens: usize,
    pub num_output_tokens: usize,
    pub num_cached_tokens: usize,
}

/// Per-request state the engine keeps beside the scheduler's.
struct Tracked {
    detokenizer: IncrementalDetokenizer,
    prompt_logprobs: Vec<TokenLogprobs>,
    prompt_logprobs_sent: bool,
    arrival: Instant,
}

/// A synchronous engine: `add_request`, then `step` until `has_unfinished` is false.
pub struct LlmEngine {
    model: Arc<LoadedModel>,
    runner: ModelRunner,
    scheduler: Scheduler,
    tracked: HashMap<RequestId, Tracked>,
}

impl LlmEngine {
    pub fn new(
        model: Arc<LoadedModel>,
        scheduler: SchedulerConfig,
        cache: CacheConfig,
    ) -> Result<Self> {
        let runner = ModelRunner::new(&model.model, cache.num_blocks, cache.block_size)?;
        let scheduler = Scheduler::new(scheduler, cache)?;
        Ok(Self {
            model,
            runner,
            scheduler,
            tracked: HashMap::new(),
        })
    }

    pub fn model(&self) -> &LoadedModel {
        &self.model
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// Validates and queues a request. Its EOS ids default to the tokenizer's.
    pub fn add_request(&mut self, mut request: Request) -> Result<()> {
        request.sampling.validate()?;
        request
            .sampling
            .validate_vocab(self.model.config.vocab_size)?;
        if request.eos_token_ids.is_empty() {
            request.eos_token_ids = self.model.tokenizer.eos_token_ids().to_vec();
        }
        let detokenizer = IncrementalDetokenizer::new(
            request.sampling.stop.clone(),
            request.sampling.include_stop_str_in_output,
            request.sampling.skip_special_tokens,
        );
        let id = request.id.clone();
        let arrival = request.arrival;
        self.scheduler.add_request(request)?;
        self.tracked.insert(
            id,
            Tracked {
                detokenizer,
                prompt_logprobs: Vec::new(),
                prompt_logprobs_sent: false,
                arrival,
            },
        );
        Ok(())
    }

    /// Ends a request now; its blocks go back to the pool at once.
    pub fn abort(&mut self, id: &str) -> bool {
        self.tracked.remove(id);
        self.scheduler
            .finish_request(id, FinishReason::Abort)
            .is_some()
    }

    pub fn has_unfinished(&self) -> bool {
        self.scheduler.has_unfinished()
    }

    /// One iteration: schedule, forward, sample, detokenize. Returns an output for every request that
    /// produced tokens or finished.
    pub fn step(&mut self) -> Result<Vec<RequestOutput>> {
        let plan = self.scheduler.schedule();
        if plan.is_empty() {
            return Ok(Vec::new());
        }
        let logits = {
            let chunks = self.scheduler.seq_chunks(&plan);
            self.runner.execute(&self.model.model, &chunks)?
        };
        let mut sampled = HashMap::new();
        let mut sampled_logprobs: HashMap<RequestId, TokenLogprobs> = HashMap::new();
        let mut rows = Vec::new();
        let mut row = 0;
        for s in &plan.scheduled {
            let n = s.num_logits_rows();
            let Some(req) = self.scheduler.request(s.id.as_str()) else {
                row += n;
                continue;
            };
            if s.wants_logits == LogitsWanted::All {
                // Row i scores the prompt token after position num_computed_before + i.
                let k = req.sampling.prompt_logprobs.unwrap_or(0);
                let first_target = s.num_computed_before + 1;
                let targets: Vec<u32> = req.prompt_token_ids()[first_target
                    .min(req.num_prompt_tokens())
                    ..(first_target + n).min(req.num_prompt_tokens())]
                    .to_vec();
                let scored = sampler::prompt_logprobs(
                    logits.rows(row, targets.len()),
                    logits.vocab,
                    &targets,
                    k,
                );
                if let Some(t) = self.tracked.get_mut(&s.id) {
                    t.prompt_logprobs.extend(scored);
                }
            }
            if s.samples && n > 0 {
                rows.push((s.id.clone(), row + n - 1));
            }
            row += n;
        }
        let sample_rows: Vec<SampleRow> = rows
            .iter()
            .filter_map(|(id, r)| {
                self.scheduler
                    .request(id.as_str())
                    .map(|req| SampleRow::new(logits.row(*r), req))
            })
            .collect();
        let outputs = sampler::sample_batch(&sample_rows);
        for ((id, _), out) in rows.iter().zip(outputs) {
            sampled.insert(id.clone(), out.token);
            if let Some(lp) = out.logprobs {
                sampled_logprobs.insert(id.clone(), lp);
            }
        }
        let finished = self.scheduler.update_from_output(&plan, &sampled);
        let mut finished_reasons: HashMap<RequestId, (FinishReason, Request)> = finished
            .into_iter()
            .filter_map(|r| match &r.status {
                RequestStatus::Finished(reason) => Some((r.id.clone(), (reason.clone(), r))),
                _ => None,
            })
            .collect();

        let mut results = Vec::new();
        for (id, token) in &sampled {
            let tokenizer = &self.model.tokenizer;
            let (output_ids, num_prompt, num_cached) = match (
                self.scheduler.request(id.as_str()),
                finished_reasons.get(id),
            ) {
                (Some(req), _) => (
                    req.output_token_ids().to_vec(),
                    req.num_prompt_tokens(),
                    req.num_cached_tokens,
                ),
                (None, Some((_, req))) => (
                    req.output_token_ids().to_vec(),
                    req.num_prompt_tokens(),
                    req.num_cached_tokens,
                ),
                (None, None) => continue,
            };
            let Some(tracked) = self.tracked.get_mut(id) else {
                continue;
            };
            let mut finish = finished_reasons.remove(id).map(|(reason, _)| reason);
            // EOS and stop token ids are not part of the text.
            let visible = match &finish {
                Some(FinishReason::Stop(StopCause::Eos | StopCause::TokenId(_))) => {
                    &output_ids[..output_ids.len() - 1]
                }
                _ => &output_ids[..],
            };
            if let Some(stop) = tracked.detokenizer.update(tokenizer, visible) {
                if finish.is_none() {
                    self.scheduler.finish_request(
                        id.as_str(),
                        FinishReason::Stop(StopCause::String(stop.stop.clone())),
                    );
                }
                finish = Some(FinishReason::Stop(StopCause::String(stop.stop)));
            }
            let text_delta = tracked.detokenizer.take_delta(finish.is_some());
            let prompt_logprobs =
                if !tracked.prompt_logprobs_sent && !tracked.prompt_logprobs.is_empty() {
                    tracked.prompt_logprobs_sent = true;
                    Some(std::mem::take(&mut tracked.prompt_logprobs))
                } else {
                    None
                };
            let _ = tracked.arrival;
            results.push(RequestOutput {
                id: id.clone(),
                text_delta,
                new_token_ids: vec![*token],
                logprobs: sampled_logprobs.remove(id).into_iter().collect(),
                prompt_logprobs,
                num_prompt_tokens: num_prompt,
                num_output_tokens: output_ids.len(),
                num_cached_tokens: num_cached,
                finish_reason: finish.clone(),
            });
            if finish.is_some() {
                self.tracked.remove(id);
            }
        }
        Ok(results)
    }

    /// Runs requests to completion; returns each one's outputs merged (tokens, text, finish reason).
    pub fn generate(&mut self, requests: Vec<Request>) -> Result<Vec<RequestOutput>> {
        let order: Vec<RequestId> = requests.iter().map(|r| r.id.clone()).collect();
        for request in requests {
            self.add_request(request)?;
        }
        let mut merged: HashMap<RequestId, RequestOutput> = HashMap::new();
        while self.has_unfinished() {
            for out in self.step()? {
                match merged.get_mut(&out.id) {
                    Some(m) => {
                        m.text_delta.push_str(&out.text_delta);
                        m.new_token_ids.extend(out.new_token_ids);
                        m.logprobs.extend(out.logprobs);
                        m.num_output_tokens = out.num_output_tokens;
                        m.finish_reason = out.finish_reason;
                    }
                    None => {
                        merged.insert(out.id.clone(), out);
                    }
                }
            }
        }
        order
            .iter()
            .map(|id| {
                merged
                    .remove(id)
                    .ok_or_else(|| Error::Model(format!("request {id} produced no output")))
            })
            .collect()
    }
}
