//! The in-process target: requests go straight to an `EngineHandle`, no HTTP. Timed like the HTTP
//! target, from the client's side: TTFT at the first output carrying tokens, ITL between such
//! outputs, latency at the last output.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use ember_engine::{EngineHandle, Error, Request, SamplingParams};

use super::datasets::SampleRequest;
use super::metrics::RequestOutcome;
use super::server_stats::ServerSample;

pub struct InProcessTarget {
    handle: EngineHandle,
    next_id: AtomicU64,
    /// Peak gauges (KV usage, running, waiting) seen at each output since the last reading: a short
    /// run on a fast model would slip between timed samples.
    peaks: Mutex<[f64; 3]>,
}

impl InProcessTarget {
    pub fn new(handle: EngineHandle) -> InProcessTarget {
        InProcessTarget {
            handle,
            next_id: AtomicU64::new(0),
            peaks: Mutex::new([0.0; 3]),
        }
    }

    pub fn handle(&self) -> &EngineHandle {
        &self.handle
    }

    pub async fn send(
        &self,
        req: &SampleRequest,
        ignore_eos: bool,
        run_start: Instant,
    ) -> RequestOutcome {
        let id = format!("bench-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        // Greedy, as benchmark_serving's requests (temperature 0).
        let sampling = SamplingParams {
            temperature: 0.0,
            max_tokens: Some(req.output_len),
            ignore_eos,
            ..Default::default()
        };
        let st = Instant::now();
        let start_time = st.duration_since(run_start).as_secs_f64();
        let fail = |e: &Error| {
            RequestOutcome::failed(req.prompt_len, start_time, error_kind(e), e.to_string())
        };
        let mut stream =
            match self
                .handle
                .submit(Request::new(id, req.prompt_ids.clone(), sampling))
            {
                Ok(s) => s,
                Err(e) => return fail(&e),
            };
        let mut out = RequestOutcome {
            prompt_len: req.prompt_len,
            start_time,
            ..Default::default()
        };
        let mut first_token: Option<Instant> = None;
        let mut last = st;
        let mut finish = None;
        while let Some(item) = stream.next_output().await {
            let output = match item {
                Ok(o) => o,
                Err(e) => return fail(&e),
            };
            let now = Instant::now();
            self.observe_gauges();
            if !output.new_token_ids.is_empty() {
                match first_token {
                    None => {
                        first_token = Some(now);
                        out.ttft = now.duration_since(st).as_secs_f64();
                    }
                    Some(_) => out.itl.push(now.duration_since(last).as_secs_f64()),
                }
                last = now;
            }
            out.generated_text.push_str(&output.text_delta);
            out.output_tokens = Some(output.num_output_tokens);
            if output.finish_reason.is_some() {
                finish = output.finish_reason;
            }
        }
        if first_token.is_none() {
            return RequestOutcome::failed(
                req.prompt_len,
                start_time,
                "no_tokens",
                format!("the engine finished the request without tokens ({finish:?})"),
            );
        }
        if let Some(reason) = &finish {
            if reason.as_str() == "abort" {
                return RequestOutcome::failed(
                    req.prompt_len,
                    start_time,
                    "aborted",
                    "the engine aborted the request",
                );
            }
        }
        out.success = true;
        out.latency = last.duration_since(st).as_secs_f64();
        out
    }

    fn observe_gauges(&self) {
        let m = self.handle.metrics();
        let mut p = self.peaks.lock().expect("peaks");
        p[0] = p[0].max(m.kv_usage);
        p[1] = p[1].max(m.num_running as f64);
        p[2] = p[2].max(m.num_waiting as f64);
    }

    /// Counters now; gauges at their peak since the previous reading.
    pub fn sample_server(&self) -> ServerSample {
        let m = self.handle.metrics();
        let peaks = std::mem::take(&mut *self.peaks.lock().expect("peaks"));
        ServerSample {
            preemptions: m.num_preemptions_total as f64,
            prefix_cache_queries: m.prefix_cache_queries_total as f64,
            prefix_cache_hits: m.prefix_cache_hits_total as f64,
            queue_time_sum_s: m.request_queue_time.sum,
            queue_time_count: m.request_queue_time.count as f64,
            kv_usage: m.kv_usage.max(peaks[0]),
            running: (m.num_running as f64).max(peaks[1]),
            waiting: (m.num_waiting as f64).max(peaks[2]),
        }
    }
}

fn error_kind(e: &Error) -> &'static str {
    match e {
        Error::Validation(_) => "validation",
        Error::Scheduler(_) => "scheduler",
        Error::QueueFull { .. } => "queue_full",
        Error::Shutdown => "shutdown",
        Error::Config(_) => "config",
        Error::Model(_) => "model",
        #[allow(unreachable_patterns)]
        _ => "engine",
    }
}
