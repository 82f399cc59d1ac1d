//! The engine loop: schedule a step, run it, sample, detokenize, and report each request's progress.
//!
//! A request with `n > 1` runs as `n` sequences (`{id}#{index}`) that report under the request's id with
//! their `index`. With prefix caching on, sequences after the first are admitted once the first has computed
//! the prompt, so they find its blocks in the prefix cache instead of computing the prompt again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use ember_models::batch::LogitsWanted;
use ember_models::loader::LoadedModel;
use rayon::prelude::*;

use crate::config::{CacheConfig, SchedulerConfig};
use crate::detokenizer::IncrementalDetokenizer;
use crate::error::{Error, Result, SchedulerError, ValidationError};
use crate::metrics::{EngineMetrics, MetricsSnapshot};
use crate::model_runner::{GraphCapture, ModelRunner, RowUse};
use crate::request::{FinishReason, Request, RequestId, RequestStatus, StopCause};
use crate::sampler::{self, SampleRow, TokenLogprobs};
use crate::scheduler::Scheduler;
use crate::structured_output::{GrammarCompiler, Guide};

/// When a request's milestones happened (per sequence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTimings {
    pub arrival: Instant,
    /// The first step that computed any of its tokens (the end of its queue time).
    pub first_scheduled: Option<Instant>,
    pub first_token: Option<Instant>,
    pub finished: Option<Instant>,
}

impl RequestTimings {
    fn new(arrival: Instant) -> Self {
        Self {
            arrival,
            first_scheduled: None,
            first_token: None,
            finished: None,
        }
    }
}

/// What one step produced for one sequence of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestOutput {
    pub id: RequestId,
    /// Which of the request's `n` sequences this is.
    pub index: usize,
    /// New text since the last output (never splits a character, never shows a stop string).
    pub text_delta: String,
    pub new_token_ids: Vec<u32>,
    /// Logprobs of `new_token_ids`, when the request asked for them.
    pub logprobs: Vec<TokenLogprobs>,
    /// Prompt logprobs for positions `max(1, prompt_logprobs_from)..` of the prompt, sent once with the
    /// first output (of index 0).
    pub prompt_logprobs: Option<Vec<TokenLogprobs>>,
    pub finish_reason: Option<FinishReason>,
    pub num_prompt_tokens: usize,
    pub num_output_tokens: usize,
    pub num_cached_tokens: usize,
    pub timings: RequestTimings,
}

impl RequestOutput {
    /// Appends a later output of the same sequence (text, tokens, logprobs, final counts and finish).
    pub fn merge(&mut self, later: RequestOutput) {
        self.text_delta.push_str(&later.text_delta);
        self.new_token_ids.extend(later.new_token_ids);
        self.logprobs.extend(later.logprobs);
        if self.prompt_logprobs.is_none() {
            self.prompt_logprobs = later.prompt_logprobs;
        }
        self.num_output_tokens = later.num_output_tokens;
        self.finish_reason = later.finish_reason;
        self.timings = later.timings;
    }
}

/// Per-sequence state the engine keeps beside the scheduler's.
struct Tracked {
    parent: RequestId,
    index: usize,
    detokenizer: IncrementalDetokenizer,
    prompt_logprobs: Vec<TokenLogprobs>,
    prompt_logprobs_sent: bool,
    timings: RequestTimings,
    last_token_at: Option<Instant>,
}

/// Sequences of an `n > 1` request waiting for the first one to finish its prompt.
struct PendingSiblings {
    first: RequestId,
    rest: Vec<Request>,
}

/// A synchronous engine: `add_request`, then `step` until `has_unfinished` is false.
pub struct LlmEngine {
    model: Arc<LoadedModel>,
    runner: ModelRunner,
    scheduler: Scheduler,
    tracked: HashMap<RequestId, Tracked>,
    /// Request id → its sequences' ids (only for `n > 1`; a plain request is its own sequence).
    sequences: HashMap<RequestId, Vec<RequestId>>,
    pending: Vec<PendingSiblings>,
    metrics: EngineMetrics,
    grammars: Arc<GrammarCompiler>,
}

impl LlmEngine {
    pub fn new(
        model: Arc<LoadedModel>,
        scheduler: SchedulerConfig,
        cache: CacheConfig,
    ) -> Result<Self> {
        let runner = ModelRunner::new(&model.model, cache.num_blocks, cache.block_size)?;
        let metrics = EngineMetrics::new(scheduler.max_model_len, scheduler.max_num_batched_tokens);
        let scheduler = Scheduler::new(scheduler, cache)?;
        Ok(Self {
            grammars: Arc::new(GrammarCompiler::new(model.clone())),
            model,
            runner,
            scheduler,
            tracked: HashMap::new(),
            sequences: HashMap::new(),
            pending: Vec::new(),
            metrics,
        })
    }

    pub fn model(&self) -> &LoadedModel {
        &self.model
    }

    /// Captures CUDA graphs of decode steps up to `max_batch` sequences and `max_context` tokens (see
    /// [`ModelRunner::capture_decode_graphs`]); call before the first request. `Ok(None)` on the CPU.
    pub fn capture_cuda_graphs(
        &mut self,
        max_batch: usize,
        max_context: usize,
    ) -> Result<Option<GraphCapture>> {
        self.runner
            .capture_decode_graphs(&self.model.model, max_batch, max_context)
    }

    /// How many decode batch sizes run through a captured CUDA graph.
    pub fn captured_graphs(&self) -> usize {
        self.runner.captured_graphs()
    }

    /// Compiles structured-output constraints for this engine's model (shared with the handle, which
    /// compiles on the submitting thread).
    pub fn grammars(&self) -> &Arc<GrammarCompiler> {
        &self.grammars
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// Checks that need the model: sampling ranges against the vocabulary, prompt ids inside it.
    pub fn validate_for_model(model: &LoadedModel, request: &Request) -> Result<()> {
        request.sampling.validate()?;
        let vocab = model.config.vocab_size;
        request.sampling.validate_vocab(vocab)?;
        if let Some(&bad) = request
            .prompt_token_ids()
            .iter()
            .find(|&&t| t as usize >= vocab)
        {
            return Err(ValidationError::new(
                "prompt",
                format!("Token id {bad} is out of vocabulary (vocab size {vocab})."),
            )
            .into());
        }
        Ok(())
    }

    /// Validates and queues a request (all `n` of its sequences). Its EOS ids default to the tokenizer's.
    pub fn add_request(&mut self, mut request: Request) -> Result<()> {
        Self::validate_for_model(&self.model, &request)?;
        if self.sequences.contains_key(&request.id) || self.tracked.contains_key(&request.id) {
            return Err(SchedulerError::DuplicateRequest(request.id).into());
        }
        if request.eos_token_ids.is_empty() {
            request.eos_token_ids = self.model.tokenizer.eos_token_ids().to_vec();
        }
        if let (None, Some(spec)) = (&request.guide, &request.sampling.structured_output) {
            request.guide = Some(self.grammars.compile(spec)?);
        }
        let n = request.sampling.n;
        if n <= 1 {
            let id = request.id.clone();
            return self.admit(request, id, 0);
        }
        let parent = request.id.clone();
        let mut siblings: Vec<Request> = (0..n)
            .map(|index| {
                let mut seq = request.clone();
                seq.id = RequestId::from(format!("{parent}#{index}"));
                seq.sampling.n = 1;
                seq.sampling.best_of = None;
                seq.sampling.seed = request.sampling.seed.map(|s| s.wrapping_add(index as u64));
                if index > 0 {
                    // Prompt logprobs are the prompt's, not the sequence's: computed once, by index 0.
                    seq.sampling.prompt_logprobs = None;
                }
                seq
            })
            .collect();
        let ids: Vec<RequestId> = siblings.iter().map(|s| s.id.clone()).collect();
        if let Some(dup) = ids.iter().find(|id| self.tracked.contains_key(*id)) {
            return Err(SchedulerError::DuplicateRequest(dup.clone()).into());
        }
        let rest = siblings.split_off(1);
        let first = siblings.pop().expect("n > 1 sequences");
        self.admit(first, parent.clone(), 0)?;
        self.sequences.insert(parent.clone(), ids.clone());
        if self.scheduler.pool().prefix_caching_enabled() {
            self.pending.push(PendingSiblings {
                first: ids[0].clone(),
                rest,
            });
        } else {
            for (index, seq) in rest.into_iter().enumerate() {
                if let Err(e) = self.admit(seq, parent.clone(), index + 1) {
                    self.abort(parent.as_str());
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn admit(&mut self, request: Request, parent: RequestId, index: usize) -> Result<()> {
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
                parent,
                index,
                detokenizer,
                prompt_logprobs: Vec::new(),
                prompt_logprobs_sent: false,
                timings: RequestTimings::new(arrival),
                last_token_at: None,
            },
        );
        Ok(())
    }

    /// Admits the later sequences of `n > 1` requests whose first sequence has computed its prompt (its
    /// blocks are in the prefix cache now) or has gone.
    fn admit_ready_siblings(&mut self) {
        let mut i = 0;
        while i < self.pending.len() {
            let ready = match self.scheduler.request(self.pending[i].first.as_str()) {
                Some(first) => first.num_computed_tokens >= first.num_prompt_tokens(),
                None => true,
            };
            if !ready {
                i += 1;
                continue;
            }
            let group = self.pending.swap_remove(i);
            let parent = self
                .tracked
                .get(&group.first)
                .map(|t| t.parent.clone())
                .or_else(|| {
                    self.sequences
                        .iter()
                        .find(|(_, ids)| ids.first() == Some(&group.first))
                        .map(|(p, _)| p.clone())
                });
            let Some(parent) = parent else { continue };
            for (index, seq) in group.rest.into_iter().enumerate() {
                if let Err(e) = self.admit(seq, parent.clone(), index + 1) {
                    tracing::warn!(id = %parent, "sequence {} of an n > 1 request refused: {e}", index + 1);
                }
            }
        }
    }

    /// Ends a request now (every sequence of it); its blocks go back to the pool at once. Returns whether
    /// it was in the engine.
    pub fn abort(&mut self, id: &str) -> bool {
        let seq_ids = match self.sequences.remove(id) {
            Some(ids) => ids,
            None => vec![RequestId::from(id.to_string())],
        };
        let mut found = false;
        let mut aborted = 0u64;
        self.pending.retain(|p| {
            let hit = seq_ids.contains(&p.first);
            if hit {
                // Sequences not admitted yet end here too.
                aborted += p.rest.len() as u64;
            }
            !hit
        });
        for seq in &seq_ids {
            let was_tracked = self.tracked.remove(seq).is_some();
            if self
                .scheduler
                .finish_request(seq.as_str(), FinishReason::Abort)
                .is_some()
            {
                aborted += 1;
                found = true;
            }
            found |= was_tracked;
        }
        if aborted > 0 {
            *self
                .metrics
                .request_success_total
                .entry(FinishReason::Abort.as_str().to_string())
                .or_default() += aborted;
        }
        found
    }

    /// Ends every request (after a failed step); returns their ids.
    pub fn abort_all(&mut self) -> Vec<RequestId> {
        let mut parents: Vec<RequestId> = self.tracked.values().map(|t| t.parent.clone()).collect();
        parents.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        parents.dedup();
        for p in &parents {
            self.abort(p.as_str());
        }
        parents
    }

    pub fn has_unfinished(&self) -> bool {
        self.scheduler.has_unfinished() || !self.pending.is_empty()
    }

    /// Counters, histograms and gauges as of now.
    pub fn metrics(&self) -> MetricsSnapshot {
        let m = &self.metrics;
        let pool = self.scheduler.pool();
        let cache = self.scheduler.prefix_cache_stats();
        MetricsSnapshot {
            num_running: self.scheduler.num_running(),
            num_waiting: self.scheduler.num_waiting()
                + self.pending.iter().map(|p| p.rest.len()).sum::<usize>(),
            kv_usage: self.scheduler.kv_usage(),
            num_blocks: pool.num_blocks(),
            block_size: pool.block_size(),
            prompt_tokens_total: m.prompt_tokens_total,
            generation_tokens_total: m.generation_tokens_total,
            num_preemptions_total: self.scheduler.num_preemptions(),
            request_success_total: m.request_success_total.clone(),
            prefix_cache_queries_total: cache.queries,
            prefix_cache_hits_total: cache.hits,
            time_to_first_token: m.time_to_first_token.clone(),
            time_per_output_token: m.time_per_output_token.clone(),
            inter_token_latency: m.inter_token_latency.clone(),
            e2e_request_latency: m.e2e_request_latency.clone(),
            request_queue_time: m.request_queue_time.clone(),
            request_prompt_tokens: m.request_prompt_tokens.clone(),
            request_generation_tokens: m.request_generation_tokens.clone(),
            iteration_tokens: m.iteration_tokens.clone(),
        }
    }

    /// One iteration: schedule, forward, sample, detokenize. Returns an output for every sequence that
    /// produced tokens or finished.
    pub fn step(&mut self) -> Result<Vec<RequestOutput>> {
        self.admit_ready_siblings();
        let plan = self.scheduler.schedule();
        if plan.is_empty() {
            return Ok(Vec::new());
        }
        let step_start = Instant::now();
        for s in &plan.scheduled {
            if let Some(t) = self.tracked.get_mut(&s.id) {
                t.timings.first_scheduled.get_or_insert(step_start);
            }
        }
        self.metrics
            .iteration_tokens
            .observe(plan.num_batched_tokens as f64);
        // Which logits rows each scheduled chunk scores (prompt logprobs) and samples, decided before the
        // forward so that greedy rows can be reduced to their token where the logits are.
        let mut row_plans = Vec::with_capacity(plan.scheduled.len());
        let mut uses = Vec::new();
        for s in &plan.scheduled {
            let n = s.num_logits_rows();
            let first_row = uses.len();
            uses.resize(first_row + n, RowUse::Skip);
            let Some(req) = self.scheduler.request(s.id.as_str()) else {
                continue;
            };
            let mut prompt = None;
            if let LogitsWanted::Tail(_) = s.wants_logits {
                // The rows are the chunk's last n tokens; row i scores the prompt token after its position.
                // Targets already scored (a pass before a preemption) are not scored twice.
                let next_wanted = match self.tracked.get(&s.id) {
                    Some(t) => req.first_prompt_logprob() + t.prompt_logprobs.len(),
                    None => usize::MAX,
                };
                let first_target = s.num_computed_before + s.num_new_tokens - n + 1;
                let start = first_target.max(next_wanted).min(req.num_prompt_tokens());
                let end = (first_target + n).min(req.num_prompt_tokens()).max(start);
                let first = first_row + start - first_target;
                uses[first..first + (end - start)].fill(RowUse::Full);
                prompt = Some((first, start, end));
            }
            let mut sample_row = None;
            if s.samples && n > 0 {
                let r = first_row + n - 1;
                if uses[r] == RowUse::Skip && sampler::is_raw_argmax(req) {
                    uses[r] = RowUse::Argmax;
                } else {
                    uses[r] = RowUse::Full;
                }
                sample_row = Some(r);
            }
            row_plans.push((s.id.clone(), prompt, sample_row));
        }
        let logits = {
            let chunks = self.scheduler.seq_chunks(&plan);
            self.runner.execute(&self.model.model, &chunks, &uses)?
        };
        let mut sampled = HashMap::new();
        let mut sampled_logprobs: HashMap<RequestId, TokenLogprobs> = HashMap::new();
        let mut rows = Vec::new();
        for (id, prompt, sample_row) in row_plans {
            let Some(req) = self.scheduler.request(id.as_str()) else {
                continue;
            };
            if let Some((first, start, end)) = prompt {
                let k = req.sampling.prompt_logprobs.unwrap_or(0);
                let targets = &req.prompt_token_ids()[start..end];
                let scored = sampler::prompt_logprobs(
                    logits.rows(first, targets.len()),
                    logits.vocab,
                    targets,
                    k,
                );
                if let Some(t) = self.tracked.get_mut(&id) {
                    t.prompt_logprobs.extend(scored);
                }
            }
            match sample_row.map(|r| (r, logits.greedy(r))) {
                Some((_, Some(token))) => {
                    sampled.insert(id, token);
                }
                Some((r, None)) => rows.push((id, r)),
                None => {}
            }
        }
        // Structured outputs: the sampler sees the row with the constraint's mask applied. The guides
        // are taken out of their requests for the moment so the masks are computed in parallel.
        let mut guided: Vec<(RequestId, usize, Guide, Vec<u32>)> = rows
            .iter()
            .filter_map(|(id, r)| {
                let req = self.scheduler.request_mut(id.as_str())?;
                let guide = req.guide.take()?;
                Some((id.clone(), *r, guide, req.end_token_ids()))
            })
            .collect();
        let masked: HashMap<RequestId, Vec<f32>> = guided
            .par_iter_mut()
            .map(|(id, r, guide, ends)| {
                let mut row = logits.row(*r).to_vec();
                guide.mask_logits(&mut row, ends);
                (id.clone(), row)
            })
            .collect();
        for (id, _, guide, _) in guided {
            if let Some(req) = self.scheduler.request_mut(id.as_str()) {
                req.guide = Some(guide);
            }
        }
        let sample_rows: Vec<SampleRow> = rows
            .iter()
            .filter_map(|(id, r)| {
                let row = masked.get(id).map_or(logits.row(*r), Vec::as_slice);
                self.scheduler
                    .request(id.as_str())
                    .map(|req| SampleRow::new(row, req))
            })
            .collect();
        let outputs = sampler::sample_batch(&sample_rows);
        drop(sample_rows);
        for ((id, _), out) in rows.iter().zip(outputs) {
            sampled.insert(id.clone(), out.token);
            if let Some(lp) = out.logprobs {
                sampled_logprobs.insert(id.clone(), lp);
            }
        }
        self.runner.recycle(logits);
        let finished = self.scheduler.update_from_output(&plan, &sampled);
        let now = Instant::now();
        let mut finished_reasons: HashMap<RequestId, (FinishReason, Request)> = finished
            .into_iter()
            .filter_map(|r| match &r.status {
                RequestStatus::Finished(reason) => Some((r.id.clone(), (reason.clone(), r))),
                _ => None,
            })
            .collect();

        // Sequences in the order they were scheduled, so outputs come in a stable order.
        let order: Vec<RequestId> = plan
            .scheduled
            .iter()
            .map(|s| s.id.clone())
            .filter(|id| sampled.contains_key(id))
            .collect();
        let mut results = Vec::new();
        for id in &order {
            let token = sampled[id];
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
            record_token(&mut self.metrics, tracked, num_prompt, now);
            if let Some(reason) = &finish {
                tracked.timings.finished = Some(now);
                record_finish(
                    &mut self.metrics,
                    &tracked.timings,
                    reason,
                    num_prompt,
                    output_ids.len(),
                );
            }
            results.push(RequestOutput {
                id: tracked.parent.clone(),
                index: tracked.index,
                text_delta,
                new_token_ids: vec![token],
                logprobs: sampled_logprobs.remove(id).into_iter().collect(),
                prompt_logprobs,
                num_prompt_tokens: num_prompt,
                num_output_tokens: output_ids.len(),
                num_cached_tokens: num_cached,
                finish_reason: finish.clone(),
                timings: tracked.timings,
            });
            if finish.is_some() {
                let parent = tracked.parent.clone();
                self.tracked.remove(id);
                self.forget_if_done(&parent);
            }
        }
        Ok(results)
    }

    /// Drops the sequence list of a request whose sequences have all finished.
    fn forget_if_done(&mut self, parent: &RequestId) {
        let done = match self.sequences.get(parent) {
            Some(ids) => {
                ids.iter().all(|id| !self.tracked.contains_key(id))
                    && !self.pending.iter().any(|p| ids.contains(&p.first))
            }
            None => false,
        };
        if done {
            self.sequences.remove(parent);
        }
    }

    /// Runs requests to completion; returns one merged output per sequence (tokens, text, finish reason),
    /// in the order the requests were given, sequences by index.
    pub fn generate(&mut self, requests: Vec<Request>) -> Result<Vec<RequestOutput>> {
        let order: Vec<(RequestId, usize)> = requests
            .iter()
            .flat_map(|r| (0..r.sampling.n.max(1)).map(move |i| (r.id.clone(), i)))
            .collect();
        for request in requests {
            self.add_request(request)?;
        }
        let mut merged: HashMap<(RequestId, usize), RequestOutput> = HashMap::new();
        while self.has_unfinished() {
            for out in self.step()? {
                match merged.get_mut(&(out.id.clone(), out.index)) {
                    Some(m) => m.merge(out),
                    None => {
                        merged.insert((out.id.clone(), out.index), out);
                    }
                }
            }
        }
        order
            .iter()
            .map(|key| {
                merged
                    .remove(key)
                    .ok_or_else(|| Error::Model(format!("request {} produced no output", key.0)))
            })
            .collect()
    }
}

/// A sampled token: TTFT (and queue time, prompt tokens) on the first, inter-token latency after.
fn record_token(
    metrics: &mut EngineMetrics,
    tracked: &mut Tracked,
    num_prompt: usize,
    now: Instant,
) {
    metrics.generation_tokens_total += 1;
    match tracked.last_token_at {
        None => {
            let t = &mut tracked.timings;
            t.first_token = Some(now);
            metrics
                .time_to_first_token
                .observe((now - t.arrival).as_secs_f64());
            let scheduled = t.first_scheduled.unwrap_or(now);
            metrics
                .request_queue_time
                .observe((scheduled - t.arrival).as_secs_f64());
            metrics.prompt_tokens_total += num_prompt as u64;
        }
        Some(last) => metrics
            .inter_token_latency
            .observe((now - last).as_secs_f64()),
    }
    tracked.last_token_at = Some(now);
}

fn record_finish(
    metrics: &mut EngineMetrics,
    timings: &RequestTimings,
    reason: &FinishReason,
    num_prompt: usize,
    num_output: usize,
) {
    let finished = timings.finished.unwrap_or(timings.arrival);
    metrics
        .e2e_request_latency
        .observe((finished - timings.arrival).as_secs_f64());
    metrics.request_prompt_tokens.observe(num_prompt as f64);
    metrics.request_generation_tokens.observe(num_output as f64);
    if let (Some(first), true) = (timings.first_token, num_output > 1) {
        metrics
            .time_per_output_token
            .observe((finished - first).as_secs_f64() / (num_output - 1) as f64);
    }
    *metrics
        .request_success_total
        .entry(reason.as_str().to_string())
        .or_default() += 1;
}
