//! The HTTP target: any OpenAI-compatible server, streaming `/v1/completions` or
//! `/v1/chat/completions` with `stream_options.include_usage`, timed as benchmark_serving times it
//! (TTFT at the first chunk that has `choices`, ITL between such chunks, latency at the last one).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::datasets::SampleRequest;
use super::metrics::RequestOutcome;
use super::server_stats::ServerSample;
use super::BenchError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Completions,
    Chat,
}

impl Endpoint {
    pub fn parse(s: &str) -> Result<Endpoint, BenchError> {
        match s.trim_end_matches('/') {
            "/v1/completions" | "/completions" | "completions" => Ok(Endpoint::Completions),
            "/v1/chat/completions" | "/chat/completions" | "chat" => Ok(Endpoint::Chat),
            other => Err(BenchError::Config(format!(
                "--endpoint `{other}`: ember bench speaks /v1/completions and /v1/chat/completions"
            ))),
        }
    }

    pub fn path(&self) -> &'static str {
        match self {
            Endpoint::Completions => "/v1/completions",
            Endpoint::Chat => "/v1/chat/completions",
        }
    }
}

pub struct HttpTarget {
    client: reqwest::Client,
    /// The server root, without a trailing `/v1`.
    root: String,
    endpoint: Endpoint,
    model: String,
    api_key: Option<String>,
}

/// Accepts the server root or its `/v1` root (`http://host:8000`, `http://host:8000/v1/`).
pub fn server_root(base_url: &str) -> Result<String, BenchError> {
    let url = base_url.trim().trim_end_matches('/');
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(BenchError::Config(format!(
            "--base-url `{base_url}` must start with http:// or https://"
        )));
    }
    if url.starts_with("https://") {
        return Err(BenchError::Config(format!(
            "--base-url `{base_url}`: this build of ember bench speaks plain HTTP only"
        )));
    }
    Ok(url.strip_suffix("/v1").unwrap_or(url).to_string())
}

impl HttpTarget {
    pub fn new(
        base_url: &str,
        endpoint: Endpoint,
        model: &str,
        api_key: Option<String>,
        request_timeout: Duration,
    ) -> Result<HttpTarget, BenchError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10).min(request_timeout))
            .timeout(request_timeout)
            .pool_max_idle_per_host(1024)
            .build()
            .map_err(|e| BenchError::Config(format!("building the HTTP client: {e}")))?;
        Ok(HttpTarget {
            client,
            root: server_root(base_url)?,
            endpoint,
            model: model.to_string(),
            api_key,
        })
    }

    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    pub fn url(&self) -> String {
        format!("{}{}", self.root, self.endpoint.path())
    }

    fn payload(&self, req: &SampleRequest, ignore_eos: bool) -> Value {
        let mut body = match self.endpoint {
            Endpoint::Completions => json!({
                "model": self.model,
                "prompt": if req.send_ids { json!(req.prompt_ids) } else { json!(req.prompt_text) },
                "max_tokens": req.output_len,
            }),
            Endpoint::Chat => json!({
                "model": self.model,
                "messages": [{"role": "user", "content": req.prompt_text}],
                "max_completion_tokens": req.output_len,
            }),
        };
        body["temperature"] = json!(0.0);
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        if ignore_eos {
            body["ignore_eos"] = json!(true);
        }
        body
    }

    /// Sends one streaming request; every failure becomes a counted outcome, never a panic or a hang
    /// (the client's connect and total timeouts bound it).
    pub async fn send(
        &self,
        req: &SampleRequest,
        ignore_eos: bool,
        run_start: Instant,
    ) -> RequestOutcome {
        let st = Instant::now();
        let start_time = st.duration_since(run_start).as_secs_f64();
        let fail =
            |kind: &str, msg: String| RequestOutcome::failed(req.prompt_len, start_time, kind, msg);
        let mut builder = self
            .client
            .post(self.url())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(self.payload(req, ignore_eos).to_string());
        if let Some(key) = &self.api_key {
            builder = builder.bearer_auth(key);
        }
        let mut response = match builder.send().await {
            Ok(r) => r,
            Err(e) => {
                return fail(
                    transport_kind(&e),
                    format!("{}: {}", self.url(), error_chain(&e)),
                )
            }
        };
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return fail(
                &format!("http_{}", status.as_u16()),
                format!("HTTP {status}: {}", error_message(&body)),
            );
        }
        let mut out = RequestOutcome {
            prompt_len: req.prompt_len,
            start_time,
            ..Default::default()
        };
        let mut buf: Vec<u8> = Vec::new();
        let mut first = true;
        let mut last = st;
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    return fail(
                        transport_kind(&e),
                        format!("reading the stream: {}", error_chain(&e)),
                    )
                }
            };
            buf.extend_from_slice(&chunk);
            while let Some((event, rest)) = split_event(&buf) {
                let data = event_data(&event);
                buf = rest;
                let Some(data) = data else { continue };
                if data == "[DONE]" {
                    continue;
                }
                let v: Value = match serde_json::from_str(&data) {
                    Ok(v) => v,
                    Err(e) => {
                        return fail("bad_stream", format!("unparseable SSE data ({e}): {data}"))
                    }
                };
                if let Some(err) = v.get("error") {
                    return fail("stream_error", error_message(&err.to_string()));
                }
                let now = Instant::now();
                match v.get("choices").and_then(Value::as_array) {
                    Some(choices) if !choices.is_empty() => {
                        if first {
                            first = false;
                            out.ttft = now.duration_since(st).as_secs_f64();
                        } else {
                            out.itl.push(now.duration_since(last).as_secs_f64());
                        }
                        last = now;
                        out.generated_text.push_str(choice_text(&choices[0]));
                    }
                    _ => {
                        if let Some(n) = v
                            .get("usage")
                            .and_then(|u| u.get("completion_tokens"))
                            .and_then(Value::as_u64)
                        {
                            out.output_tokens = Some(n as usize);
                        }
                    }
                }
            }
        }
        if first {
            return fail(
                "no_tokens",
                "never received a chunk with choices (no TTFT); the request counts as failed"
                    .into(),
            );
        }
        out.success = true;
        out.latency = last.duration_since(st).as_secs_f64();
        out
    }

    /// Reads the server's Prometheus `/metrics`; `None` when it has none (not every server does).
    pub async fn sample_server(&self) -> Option<ServerSample> {
        let text = self
            .client
            .get(format!("{}/metrics", self.root))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?
            .error_for_status()
            .ok()?
            .text()
            .await
            .ok()?;
        ServerSample::from_prometheus(&parse_prometheus(&text))
    }
}

fn choice_text(choice: &Value) -> &str {
    choice
        .get("text")
        .and_then(Value::as_str)
        .or_else(|| {
            let delta = choice.get("delta")?;
            delta
                .get("content")
                .and_then(Value::as_str)
                .or_else(|| delta.get("reasoning_content").and_then(Value::as_str))
        })
        .unwrap_or("")
}

/// Splits the first complete SSE event (ended by a blank line) off `buf`.
fn split_event(buf: &[u8]) -> Option<(String, Vec<u8>)> {
    let pos = buf
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|p| (p, 2))
        .or_else(|| {
            buf.windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|p| (p, 4))
        })?;
    let (p, len) = pos;
    Some((
        String::from_utf8_lossy(&buf[..p]).into_owned(),
        buf[p + len..].to_vec(),
    ))
}

/// The `data:` payload of an SSE event (multi-line data joined by newlines); `None` for comments.
fn event_data(event: &str) -> Option<String> {
    let lines: Vec<&str> = event
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l).trim_end_matches('\r'))
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// The `error.message` of an OpenAI error body, else the body itself (shortened).
fn error_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let msg = parsed.as_ref().and_then(|v| {
        let e = v.get("error").unwrap_or(v);
        e.get("message")
            .and_then(Value::as_str)
            .or_else(|| e.as_str())
            .map(str::to_string)
    });
    let mut s = msg.unwrap_or_else(|| body.trim().to_string());
    if s.len() > 500 {
        let mut cut = 500;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

fn transport_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "transport"
    }
}

/// reqwest's top-level message hides the cause ("error sending request"); show the chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// Prometheus text exposition → metric name (with `_sum`/`_count`/`_bucket` suffixes kept) → the sum
/// over its label sets.
pub fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = match line.find('{') {
            Some(i) => {
                let close = line[i..].find('}').map_or(line.len(), |j| i + j + 1);
                (&line[..i], &line[close..])
            }
            None => match line.split_once(char::is_whitespace) {
                Some((n, r)) => (n, r),
                None => continue,
            },
        };
        let value = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = value {
            *out.entry(name.to_string()).or_insert(0.0) += v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_and_data_extracted() {
        let buf = b"data: {\"a\":1}\n\ndata: [DONE]\n\npartial";
        let (e1, rest) = split_event(buf).unwrap();
        assert_eq!(event_data(&e1).as_deref(), Some("{\"a\":1}"));
        let (e2, rest) = split_event(&rest).unwrap();
        assert_eq!(event_data(&e2).as_deref(), Some("[DONE]"));
        assert!(split_event(&rest).is_none());
        assert_eq!(event_data(": keep-alive"), None);
    }

    #[test]
    fn prometheus_sums_label_sets() {
        let text =
            "# HELP x\nvllm:request_success_total{finished_reason=\"stop\",model_name=\"m\"} 3\n\
                    vllm:request_success_total{finished_reason=\"length\",model_name=\"m\"} 4\n\
                    vllm:num_preemptions_total 2.0\n";
        let m = parse_prometheus(text);
        assert_eq!(m["vllm:request_success_total"], 7.0);
        assert_eq!(m["vllm:num_preemptions_total"], 2.0);
    }

    #[test]
    fn base_url_roots() {
        assert_eq!(server_root("http://h:1/v1/").unwrap(), "http://h:1");
        assert_eq!(server_root("http://h:1").unwrap(), "http://h:1");
        assert!(server_root("h:1").is_err());
    }
}
