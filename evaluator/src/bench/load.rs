//! The load: when each request is sent (arrival process) and how many may be in flight at once.
//!
//! As benchmark_serving: the first request goes at t = 0; then, with a finite `--request-rate`, each
//! next one follows after a gamma-distributed interval with shape = burstiness and scale =
//! 1 / (rate · burstiness), so the mean interval is 1 / rate whatever the burstiness (burstiness 1 is a
//! Poisson process; lower is burstier, higher is more regular). An infinite rate sends all at once.
//! `--max-concurrency` then holds a request until a slot frees; its timer starts when it is sent.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand_distr::{Distribution, Gamma};
use tokio::sync::Semaphore;

/// How requests arrive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadConfig {
    /// Requests per second; `f64::INFINITY` sends everything at once.
    pub request_rate: f64,
    pub burstiness: f64,
    /// At most this many requests in flight; `None` = unlimited.
    pub max_concurrency: Option<usize>,
    pub seed: u64,
}

impl LoadConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.request_rate.is_nan() || self.request_rate <= 0.0 {
            return Err(format!(
                "--request-rate must be > 0 (or inf), got {}",
                self.request_rate
            ));
        }
        if !(self.burstiness.is_finite() && self.burstiness > 0.0) {
            return Err(format!(
                "--burstiness must be a positive number, got {}",
                self.burstiness
            ));
        }
        if self.max_concurrency == Some(0) {
            return Err("--max-concurrency must be at least 1".into());
        }
        Ok(())
    }
}

/// The send offsets (seconds from the start) of `n` requests.
pub fn arrival_offsets(config: &LoadConfig, n: usize) -> Vec<f64> {
    let mut offsets = Vec::with_capacity(n);
    if n == 0 {
        return offsets;
    }
    offsets.push(0.0);
    if config.request_rate.is_infinite() {
        offsets.resize(n, 0.0);
        return offsets;
    }
    let intervals = arrival_intervals(config, n - 1);
    let mut t = 0.0;
    for dt in intervals {
        t += dt;
        offsets.push(t);
    }
    offsets
}

/// `n` seeded inter-arrival intervals (seconds) for a finite rate.
pub fn arrival_intervals(config: &LoadConfig, n: usize) -> Vec<f64> {
    let theta = 1.0 / (config.request_rate * config.burstiness);
    // Validated parameters are positive and finite, so the distribution always exists.
    let gamma = Gamma::new(config.burstiness, theta).expect("validated gamma parameters");
    let mut rng = rand::rngs::StdRng::seed_from_u64(config.seed);
    (0..n).map(|_| gamma.sample(&mut rng)).collect()
}

/// Sends every item at its arrival offset through `send`, at most `max_concurrency` at a time, and
/// returns the results in input order. `send` gets the item's index.
pub async fn drive<T, F, Fut>(config: &LoadConfig, items: Vec<T>, send: F) -> Vec<Fut::Output>
where
    T: Send + 'static,
    F: Fn(usize, T) -> Fut,
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    let offsets = arrival_offsets(config, items.len());
    let limit = config.max_concurrency.map(|c| Arc::new(Semaphore::new(c)));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(items.len());
    for (i, (item, offset)) in items.into_iter().zip(offsets).enumerate() {
        tokio::time::sleep_until(start + Duration::from_secs_f64(offset)).await;
        let fut = send(i, item);
        let limit = limit.clone();
        tasks.push(tokio::spawn(async move {
            // Holding the permit for the whole request is what caps the requests in flight.
            let _permit = match &limit {
                Some(s) => Some(
                    s.clone()
                        .acquire_owned()
                        .await
                        .expect("semaphore never closed"),
                ),
                None => None,
            };
            fut.await
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.expect("benchmark request task panicked"));
    }
    out
}
