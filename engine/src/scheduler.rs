//! vLLM V1's scheduler. There are no prefill or decode phases: every request has `num_computed_tokens`
//! and a target (all its known tokens), and each step hands out `request → number of new tokens` under the
//! token budget, running requests first, then waiting ones. One step thus mixes decodes and prefill chunks.
//!
//! Driving one step:
//! 1. [`Scheduler::schedule`] → [`SchedulerOutput`] (plain data);
//! 2. [`Scheduler::seq_chunks`] → `ForwardBatch::build(&chunks, block_size)` → forward → logits rows
//!    (for each scheduled request in order, [`ScheduledRequest::num_logits_rows`] rows);
//! 3. sample a token for each request with [`ScheduledRequest::samples`] (its last row);
//! 4. [`Scheduler::update_from_output`] with the sampled tokens → the requests that finished.

use std::collections::{HashMap, VecDeque};

use ember_models::batch::{LogitsWanted, SeqChunk};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tracing::{debug, warn};

use crate::block_pool::{BlockPool, ComputedBlocks, PrefixCacheStats};
use crate::config::{CacheConfig, SchedulerConfig, SchedulingPolicy};
use crate::error::{Result, SchedulerError};
use crate::request::{FinishReason, Request, RequestId, RequestStatus, StopCause};

/// One request's share of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledRequest {
    pub id: RequestId,
    pub num_new_tokens: usize,
    /// Tokens already in the cache: the position of the first new token.
    pub num_computed_before: usize,
    /// The request's block table for this step.
    pub block_ids: Vec<u32>,
    pub wants_logits: LogitsWanted,
    /// This step reaches the end of the request's known tokens: a token is sampled from its last row.
    pub samples: bool,
}

impl ScheduledRequest {
    /// Logits rows the forward returns for this request.
    pub fn num_logits_rows(&self) -> usize {
        match self.wants_logits {
            LogitsWanted::None => 0,
            LogitsWanted::Last => 1,
            LogitsWanted::All => self.num_new_tokens,
            LogitsWanted::Tail(k) => k,
        }
    }
}

/// A step: what to compute, plus the requests evicted to make room.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedulerOutput {
    pub scheduled: Vec<ScheduledRequest>,
    pub preempted: Vec<RequestId>,
    pub num_batched_tokens: usize,
}

impl SchedulerOutput {
    pub fn is_empty(&self) -> bool {
        self.scheduled.is_empty()
    }
}

#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    pool: BlockPool,
    requests: HashMap<RequestId, Request>,
    /// FCFS: arrival order with preempted requests in front; priority: sorted by (priority, arrival).
    waiting: VecDeque<RequestId>,
    /// Admission order: the last one is the most recently admitted.
    running: Vec<RequestId>,
    next_arrival_seq: u64,
    seed_rng: ChaCha8Rng,
    num_preemptions: u64,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig, cache: CacheConfig) -> Result<Self> {
        config.validate()?;
        cache.validate()?;
        Ok(Self {
            pool: BlockPool::from_config(&cache),
            seed_rng: ChaCha8Rng::seed_from_u64(config.seed),
            config,
            requests: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            next_arrival_seq: 0,
            num_preemptions: 0,
        })
    }

    /// Admits a request to the waiting queue, or refuses it before it takes any block: an empty prompt,
    /// invalid sampling parameters, a prompt + `max_tokens` over `max_model_len`, or more tokens than the
    /// whole KV pool holds. Unseeded requests get their seed from the engine seed here.
    pub fn add_request(&mut self, mut req: Request) -> Result<(), SchedulerError> {
        if self.requests.contains_key(&req.id) {
            return Err(SchedulerError::DuplicateRequest(req.id));
        }
        req.max_tokens = check_admission(
            &self.config,
            self.pool.num_blocks(),
            self.pool.block_size(),
            &req,
        )?;
        let prompt = req.num_prompt_tokens();
        req.seed = match req.sampling.seed {
            Some(seed) => seed,
            None => self.seed_rng.next_u64(),
        };
        req.arrival_seq = self.next_arrival_seq;
        self.next_arrival_seq += 1;
        req.status = RequestStatus::Waiting;
        req.num_computed_tokens = 0;
        req.block_ids.clear();
        debug!(id = %req.id, prompt, max_tokens = req.max_tokens, "request admitted");
        let id = req.id.clone();
        self.requests.insert(id.clone(), req);
        self.enqueue_waiting(id, false);
        Ok(())
    }

    /// Plans one step under both budgets (tokens and sequences).
    pub fn schedule(&mut self) -> SchedulerOutput {
        let mut budget = self.config.max_num_batched_tokens;
        let mut scheduled: Vec<ScheduledRequest> = Vec::new();
        let mut preempted: Vec<RequestId> = Vec::new();
        let no_hit = ComputedBlocks::default();

        // Running requests first, in admission order.
        let mut i = 0;
        'running: while i < self.running.len() && budget > 0 {
            let id = self.running[i].clone();
            let req = &self.requests[&id];
            let n = cap_new_tokens(
                &self.config,
                req.num_tokens() - req.num_computed_tokens,
                budget,
            );
            if n == 0 {
                warn!(id = %id, "running request has nothing to compute (no token was sampled for it?)");
                i += 1;
                continue;
            }
            loop {
                let req = self
                    .requests
                    .get_mut(&id)
                    .expect("running request is tracked");
                if self.pool.allocate_slots(req, n, &no_hit).is_some() {
                    break;
                }
                // Out of blocks: evict a running request (possibly this one) and retry.
                let victim_idx = self.pick_victim();
                let victim = self.running.remove(victim_idx);
                if victim_idx < i {
                    i -= 1;
                }
                if let Some(pos) = scheduled.iter().position(|s| s.id == victim) {
                    budget += scheduled.remove(pos).num_new_tokens;
                }
                self.preempt(&victim);
                let is_self = victim == id;
                preempted.push(victim);
                if is_self {
                    break 'running;
                }
            }
            scheduled.push(Self::plan(&self.requests[&id], n));
            budget -= n;
            i += 1;
        }

        // Then waiting ones, unless this step had to preempt (no room for newcomers then).
        if preempted.is_empty() {
            while budget > 0 && self.running.len() < self.config.max_num_seqs {
                let Some(id) = self.waiting.front().cloned() else {
                    break;
                };
                let req = self
                    .requests
                    .get_mut(&id)
                    .expect("waiting request is tracked");
                let hit = self.pool.get_computed_blocks(req);
                let remaining = req.num_tokens() - hit.num_tokens;
                if !self.config.enable_chunked_prefill && remaining > budget {
                    break;
                }
                let n = cap_new_tokens(&self.config, remaining, budget);
                if self.pool.allocate_slots(req, n, &hit).is_none() {
                    break;
                }
                if self.pool.prefix_caching_enabled() && req.max_cacheable_tokens() > 0 {
                    self.pool.record_query(req.num_tokens(), hit.num_tokens);
                }
                self.waiting.pop_front();
                if req.status == RequestStatus::Waiting {
                    req.num_cached_tokens = hit.num_tokens;
                }
                req.num_computed_tokens = hit.num_tokens;
                req.status = RequestStatus::Running;
                debug!(id = %id, cached = hit.num_tokens, new = n, "request scheduled from waiting");
                scheduled.push(Self::plan(req, n));
                self.running.push(id);
                budget -= n;
            }
        }

        let num_batched_tokens = scheduled.iter().map(|s| s.num_new_tokens).sum();
        SchedulerOutput {
            scheduled,
            preempted,
            num_batched_tokens,
        }
    }

    /// The step's chunks for `ForwardBatch::build`, in `out.scheduled` order.
    pub fn seq_chunks<'a>(&'a self, out: &'a SchedulerOutput) -> Vec<SeqChunk<'a>> {
        out.scheduled
            .iter()
            .map(|s| {
                let req = &self.requests[&s.id];
                SeqChunk {
                    tokens: &req.all_token_ids()
                        [s.num_computed_before..s.num_computed_before + s.num_new_tokens],
                    num_computed: s.num_computed_before,
                    block_table: &s.block_ids,
                    logits: s.wants_logits,
                }
            })
            .collect()
    }

    /// Applies a computed step: advances each request, appends the sampled tokens, caches newly full blocks
    /// and finishes requests by length, EOS (unless `ignore_eos`; not before `min_tokens`) or a stop token id.
    /// Returns the finished requests (their blocks already freed); stop strings are the caller's
    /// (see [`Self::finish_request`]).
    pub fn update_from_output(
        &mut self,
        out: &SchedulerOutput,
        sampled: &HashMap<RequestId, u32>,
    ) -> Vec<Request> {
        let mut finished_ids = Vec::new();
        for s in &out.scheduled {
            let Some(req) = self.requests.get_mut(&s.id) else {
                continue;
            };
            if req.status != RequestStatus::Running
                || req.num_computed_tokens != s.num_computed_before
            {
                continue; // finished or aborted since the step was planned
            }
            req.num_computed_tokens += s.num_new_tokens;
            if s.samples {
                match sampled.get(&s.id) {
                    Some(&token) => {
                        req.append_output_token(token);
                        if let Some(reason) = check_stop(req, self.config.max_model_len) {
                            finished_ids.push((s.id.clone(), reason));
                        }
                    }
                    None => {
                        warn!(id = %s.id, "no token sampled for a request that reached its end")
                    }
                }
            }
            self.pool.cache_full_blocks(req);
        }
        finished_ids
            .into_iter()
            .filter_map(|(id, reason)| self.finish_request(id.as_str(), reason))
            .collect()
    }

    /// Ends a request now (a stop string, an abort, a client gone): frees its blocks and forgets it.
    /// Returns it, or `None` if it was not in the scheduler.
    pub fn finish_request(&mut self, id: &str, reason: FinishReason) -> Option<Request> {
        let mut req = self.requests.remove(id)?;
        if let Some(pos) = self.running.iter().position(|r| r.as_str() == id) {
            self.running.remove(pos);
        } else if let Some(pos) = self.waiting.iter().position(|r| r.as_str() == id) {
            self.waiting.remove(pos);
        }
        self.pool.free(&mut req);
        debug!(id, reason = reason.as_str(), "request finished");
        req.status = RequestStatus::Finished(reason);
        Some(req)
    }

    pub fn request(&self, id: &str) -> Option<&Request> {
        self.requests.get(id)
    }

    pub(crate) fn request_mut(&mut self, id: &str) -> Option<&mut Request> {
        self.requests.get_mut(id)
    }

    pub fn has_unfinished(&self) -> bool {
        !self.requests.is_empty()
    }

    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Preemptions since start (`vllm:num_preemptions_total`).
    pub fn num_preemptions(&self) -> u64 {
        self.num_preemptions
    }

    /// KV slots in blocks that requests hold, and the slots their computed tokens fill: the difference is
    /// the paged cache's waste (the unfilled tail of each request's last block).
    pub fn kv_slot_usage(&self) -> (usize, usize) {
        let allocated = (self.pool.num_blocks() - self.pool.num_free_blocks()) * self.block_size();
        let used = self
            .requests
            .values()
            .filter(|r| !r.block_ids.is_empty())
            .map(|r| r.num_computed_tokens)
            .sum();
        (allocated, used)
    }

    /// Fraction of KV blocks in use.
    pub fn kv_usage(&self) -> f64 {
        self.pool.usage()
    }

    pub fn prefix_cache_stats(&self) -> PrefixCacheStats {
        self.pool.stats()
    }

    pub fn pool(&self) -> &BlockPool {
        &self.pool
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    pub fn block_size(&self) -> usize {
        self.pool.block_size()
    }

    /// Ids of running requests, in admission order.
    pub fn running_ids(&self) -> &[RequestId] {
        &self.running
    }

    fn plan(req: &Request, n: usize) -> ScheduledRequest {
        let before = req.num_computed_tokens;
        let samples = before + n == req.num_tokens();
        // Prompt logprobs are produced on the first pass through the prompt only, for the rows that score
        // a wanted position (row p scores token p + 1); a sampling step also needs its last row.
        let prompt_pass = req.wants_prompt_logprobs() && req.num_output_tokens() == 0;
        let first_row = (req.first_prompt_logprob() - 1).max(before);
        let wanted_rows = (before + n).saturating_sub(first_row);
        let wants_logits = if prompt_pass && wanted_rows > 0 {
            LogitsWanted::Tail(wanted_rows)
        } else if samples {
            LogitsWanted::Last
        } else {
            LogitsWanted::None
        };
        ScheduledRequest {
            id: req.id.clone(),
            num_new_tokens: n,
            num_computed_before: before,
            block_ids: req.block_ids.clone(),
            wants_logits,
            samples,
        }
    }

    /// Index in `running` of the request to evict: FCFS the most recently admitted; priority the worst
    /// (highest priority value, then latest arrival).
    fn pick_victim(&self) -> usize {
        match self.config.policy {
            SchedulingPolicy::Fcfs => self.running.len() - 1,
            SchedulingPolicy::Priority => {
                let key = |id: &RequestId| {
                    let r = &self.requests[id];
                    (r.priority, r.arrival_seq)
                };
                (0..self.running.len())
                    .max_by_key(|&i| key(&self.running[i]))
                    .expect("running is non-empty")
            }
        }
    }

    fn preempt(&mut self, id: &RequestId) {
        let req = self
            .requests
            .get_mut(id)
            .expect("preempted request is tracked");
        self.pool.free(req);
        req.num_computed_tokens = 0;
        req.status = RequestStatus::Preempted;
        req.num_preemptions += 1;
        self.num_preemptions += 1;
        debug!(id = %id, tokens = req.num_tokens(), "request preempted (will be recomputed)");
        self.enqueue_waiting(id.clone(), true);
    }

    fn enqueue_waiting(&mut self, id: RequestId, front: bool) {
        match self.config.policy {
            SchedulingPolicy::Fcfs if front => self.waiting.push_front(id),
            SchedulingPolicy::Fcfs => self.waiting.push_back(id),
            SchedulingPolicy::Priority => {
                let key = |id: &RequestId| {
                    let r = &self.requests[id];
                    (r.priority, r.arrival_seq)
                };
                let k = key(&id);
                let pos = self.waiting.partition_point(|w| key(w) < k);
                self.waiting.insert(pos, id);
            }
        }
    }
}

/// The checks a request must pass before it takes any block: a non-empty prompt, valid sampling parameters,
/// prompt + `max_tokens` within `max_model_len`, and no more tokens than the whole KV pool holds. Returns
/// the request's effective `max_tokens` (what the context length leaves when it gave none). Pure, so callers
/// outside the engine loop (the async handle) refuse bad requests at once with the same errors.
pub fn check_admission(
    config: &SchedulerConfig,
    num_blocks: usize,
    block_size: usize,
    req: &Request,
) -> Result<usize, SchedulerError> {
    let prompt = req.num_prompt_tokens();
    if prompt == 0 {
        return Err(SchedulerError::EmptyPrompt);
    }
    req.sampling.validate()?;
    let max_model_len = config.max_model_len;
    let max_tokens = match req.sampling.max_tokens {
        Some(completion) if prompt + completion > max_model_len => {
            return Err(SchedulerError::TooLong {
                max_model_len,
                requested: prompt + completion,
                prompt,
                completion,
            });
        }
        Some(completion) => completion,
        None if prompt >= max_model_len => {
            return Err(SchedulerError::PromptTooLong {
                max_model_len,
                prompt,
            });
        }
        None => max_model_len - prompt,
    };
    // The last sampled token is never computed, so the cache holds at most prompt + max_tokens - 1.
    let needed_tokens = prompt + max_tokens - 1;
    if needed_tokens.div_ceil(block_size) > num_blocks {
        return Err(SchedulerError::ExceedsKvCapacity {
            needed_tokens,
            capacity_tokens: num_blocks * block_size,
        });
    }
    Ok(max_tokens)
}

/// New tokens a request may compute this step: what it has left, capped by the long-prefill threshold and
/// the remaining budget.
fn cap_new_tokens(config: &SchedulerConfig, remaining: usize, budget: usize) -> usize {
    let mut n = remaining;
    if config.enable_chunked_prefill && config.long_prefill_token_threshold > 0 {
        n = n.min(config.long_prefill_token_threshold);
    }
    n.min(budget)
}

/// Whether the request's last sampled token ends it. A stop condition (EOS, stop token id) is reported over
/// a length cap reached by the same token; neither EOS nor stop ids count before `min_tokens`.
fn check_stop(req: &Request, max_model_len: usize) -> Option<FinishReason> {
    let sp = &req.sampling;
    let last = *req.output_token_ids().last()?;
    if req.num_output_tokens() >= sp.min_tokens {
        if !sp.ignore_eos && req.eos_token_ids.contains(&last) {
            return Some(FinishReason::Stop(StopCause::Eos));
        }
        if sp.stop_token_ids.contains(&last) {
            return Some(FinishReason::Stop(StopCause::TokenId(last)));
        }
    }
    if req.num_tokens() >= max_model_len || req.num_output_tokens() >= req.max_tokens {
        return Some(FinishReason::Length);
    }
    None
}
