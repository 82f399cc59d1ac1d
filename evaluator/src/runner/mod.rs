//! Backends that answer requests: `local` drives the engine in-process, `http` talks to any
//! OpenAI-compatible server. Both submit many requests at once so the engine batches them, and both
//! split loglikelihood pairs into tokens the same way (`request::split_tokens`).

pub mod http;
pub mod local;

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use crate::request::{Request, Response};
use crate::Result;

/// Counts a backend keeps for the report.
#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub retries: AtomicU64,
}

impl Counters {
    pub fn add(&self, prompt: usize, generated: usize) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.prompt_tokens
            .fetch_add(prompt as u64, Ordering::Relaxed);
        self.generated_tokens
            .fetch_add(generated as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Stats {
        Stats {
            requests: self.requests.load(Ordering::Relaxed),
            prompt_tokens: self.prompt_tokens.load(Ordering::Relaxed),
            generated_tokens: self.generated_tokens.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub generated_tokens: u64,
    pub retries: u64,
}

pub trait Backend: Send + Sync {
    /// Answers `requests` (concurrently), in order. `on_done(i)` is called as request `i` finishes.
    fn run(&self, requests: &[Request], on_done: &(dyn Fn(usize) + Sync)) -> Result<Vec<Response>>;
    /// What the results' `config` shows about the model and how it was reached.
    fn describe(&self) -> Value;
    fn stats(&self) -> Stats;
}

/// Runs `f` over `items` with at most `concurrency` in flight on `rt`; results in input order.
pub(crate) fn run_concurrent<T, F, Fut>(
    rt: &tokio::runtime::Runtime,
    items: &[T],
    concurrency: usize,
    on_done: &(dyn Fn(usize) + Sync),
    f: F,
) -> Result<Vec<Response>>
where
    T: Clone + Send + 'static,
    F: Fn(usize, T) -> Fut,
    Fut: std::future::Future<Output = Result<Response>> + Send + 'static,
{
    rt.block_on(async {
        let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
        let mut set = tokio::task::JoinSet::new();
        let mut out: Vec<Option<Response>> = vec![None; items.len()];
        let mut next = 0;
        let mut first_error = None;
        while next < items.len() || !set.is_empty() {
            // Keep the semaphore's worth of requests in flight; the engine batches them.
            while next < items.len() && first_error.is_none() {
                let Ok(permit) = sem.clone().try_acquire_owned() else {
                    break;
                };
                let fut = f(next, items[next].clone());
                let i = next;
                set.spawn(async move {
                    let r = fut.await;
                    drop(permit);
                    (i, r)
                });
                next += 1;
            }
            match set.join_next().await {
                Some(Ok((i, Ok(resp)))) => {
                    out[i] = Some(resp);
                    on_done(i);
                }
                Some(Ok((_, Err(e)))) => {
                    if first_error.is_none() {
                        first_error = Some(e);
                        set.abort_all();
                    }
                }
                Some(Err(e)) if e.is_cancelled() => {}
                Some(Err(e)) => {
                    if first_error.is_none() {
                        first_error =
                            Some(crate::Error::Backend(format!("a request task failed: {e}")));
                    }
                }
                None => {
                    if first_error.is_some() {
                        break;
                    }
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        out.into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.ok_or_else(|| crate::Error::Backend(format!("request {i} got no response")))
            })
            .collect()
    })
}

/// Per-token logprobs of a continuation → lm-eval's (sum, is_greedy) response.
pub fn loglikelihood_response(token_logprobs: Vec<f64>, greedy: bool) -> Response {
    Response::Loglikelihood {
        logprob: token_logprobs.iter().sum(),
        is_greedy: greedy,
        token_logprobs,
    }
}
