//! The HTTP backend: any OpenAI-compatible server (ember serve, vLLM). Loglikelihood as lm-eval's
//! `local-completions` asks for it (`/v1/completions` with `echo`, `logprobs: 1`, `max_tokens: 1`, the
//! prompt given as token ids so the continuation's tokens are known); generation through
//! `/v1/completions`, or `/v1/chat/completions` with `--apply-chat-template`. Token ids come from the
//! server's own `/tokenize`, so both backends split context and continuation identically.
//! 429, 5xx, connection errors and timeouts are retried with exponential backoff.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::{loglikelihood_response, run_concurrent, Backend, Counters, Stats};
use crate::request::{split_whitespace, GenParams, Request, Response};
use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The server root or its `/v1` root.
    pub base_url: String,
    /// The served model name (`--model`).
    pub model: String,
    pub api_key: Option<String>,
    pub concurrency: usize,
    pub max_retries: u32,
    pub timeout: Duration,
    /// First backoff; doubles per retry.
    pub backoff: Duration,
    pub apply_chat_template: bool,
    pub seed: u64,
}

impl HttpOptions {
    pub fn new(base_url: &str, model: &str) -> Self {
        Self {
            base_url: base_url.to_string(),
            model: model.to_string(),
            api_key: None,
            concurrency: 8,
            max_retries: 5,
            timeout: Duration::from_secs(600),
            backoff: Duration::from_millis(500),
            apply_chat_template: false,
            seed: 1234,
        }
    }
}

pub struct HttpBackend {
    inner: Arc<Inner>,
    rt: tokio::runtime::Runtime,
}

struct Inner {
    client: reqwest::Client,
    /// `http://host:port` (no trailing slash, no /v1).
    root: String,
    opts: HttpOptions,
    counters: Counters,
}

/// Splits what the user gave into the server root: `http://h:p`, `http://h:p/`, `http://h:p/v1` all work.
pub fn server_root(base_url: &str) -> Result<String> {
    let trimmed = base_url.trim().trim_end_matches('/');
    if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) {
        return Err(Error::InvalidArgument(format!(
            "--base-url `{base_url}` must start with http:// or https://"
        )));
    }
    Ok(trimmed.strip_suffix("/v1").unwrap_or(trimmed).to_string())
}

enum Failure {
    Retry(String),
    Fatal(String),
}

impl Inner {
    async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let url = format!("{}{path}", self.root);
        let mut attempt = 0;
        loop {
            let failure = match self.post_once(&url, body).await {
                Ok(v) => return Ok(v),
                Err(f) => f,
            };
            match failure {
                Failure::Retry(message) if attempt < self.opts.max_retries => {
                    let wait = self.opts.backoff * 2u32.saturating_pow(attempt);
                    tracing::warn!(%url, %message, attempt, ?wait, "retrying");
                    self.counters
                        .retries
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Failure::Retry(message) => {
                    return Err(Error::Http {
                        url,
                        message: format!(
                            "{message} (gave up after {} retries)",
                            self.opts.max_retries
                        ),
                    })
                }
                Failure::Fatal(message) => return Err(Error::Http { url, message }),
            }
        }
    }

    async fn post_once(&self, url: &str, body: &Value) -> std::result::Result<Value, Failure> {
        let mut req = self.client.post(url).json(body);
        if let Some(key) = &self.opts.api_key {
            req = req.bearer_auth(key);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() || e.is_timeout() || e.is_request() => {
                return Err(Failure::Retry(format!("{e} (is the server running?)")))
            }
            Err(e) => return Err(Failure::Fatal(e.to_string())),
        };
        let status = resp.status();
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) => return Err(Failure::Retry(format!("reading the body: {e}"))),
        };
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(Failure::Retry(format!("HTTP {status}: {}", snippet(&text))));
        }
        if !status.is_success() {
            return Err(Failure::Fatal(format!("HTTP {status}: {}", snippet(&text))));
        }
        serde_json::from_str(&text)
            .map_err(|e| Failure::Fatal(format!("invalid JSON ({e}): {}", snippet(&text))))
    }

    async fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let body = json!({"model": self.opts.model, "prompt": text, "add_special_tokens": false});
        let v = self.post("/tokenize", &body).await?;
        v["tokens"]
            .as_array()
            .and_then(|a| a.iter().map(|t| t.as_u64().map(|t| t as u32)).collect())
            .ok_or_else(|| {
                Error::Backend(format!(
                    "/tokenize answered without `tokens`: {}",
                    snippet(&v.to_string())
                ))
            })
    }

    async fn loglikelihood(&self, context: &str, continuation: &str) -> Result<Response> {
        if self.opts.apply_chat_template {
            return Err(Error::InvalidArgument(
                "--apply-chat-template with loglikelihood tasks is only supported in-process"
                    .into(),
            ));
        }
        let (ctx_text, cont_text) = split_whitespace(context, continuation);
        if ctx_text.is_empty() {
            return Err(Error::Backend(
                "an empty loglikelihood context needs the model's prefix token; not supported over HTTP".into(),
            ));
        }
        // The same split as in-process (`request::split_tokens`): the continuation's tokens are those of
        // the whole string past the context's own encoding.
        let whole = self.tokenize(&format!("{ctx_text}{cont_text}")).await?;
        let ctx_len = self.tokenize(&ctx_text).await?.len().min(whole.len());
        let (ctx, cont) = (whole[..ctx_len].to_vec(), whole[ctx_len..].to_vec());
        if cont.is_empty() {
            return Err(Error::Backend(format!(
                "the continuation {continuation:?} encodes to no tokens"
            )));
        }
        let mut ids = ctx;
        ids.extend_from_slice(&cont);
        let n = ids.len();
        let body = json!({
            "model": self.opts.model, "prompt": ids, "max_tokens": 1, "temperature": 0.0,
            "logprobs": 1, "echo": true, "seed": self.opts.seed,
        });
        let v = self.post("/v1/completions", &body).await?;
        let lp = &v["choices"][0]["logprobs"];
        let token_lps = lp["token_logprobs"].as_array().ok_or_else(|| {
            Error::Backend(format!(
                "completion without logprobs.token_logprobs: {}",
                snippet(&v.to_string())
            ))
        })?;
        let tops = lp["top_logprobs"].as_array();
        if token_lps.len() < n {
            return Err(Error::Backend(format!(
                "the server echoed {} logprobs for a {n}-token prompt",
                token_lps.len()
            )));
        }
        let mut values = Vec::with_capacity(cont.len());
        let mut greedy = true;
        for (i, token_lp) in token_lps.iter().enumerate().take(n).skip(n - cont.len()) {
            let lp = token_lp
                .as_f64()
                .ok_or_else(|| Error::Backend(format!("no logprob for prompt token {i}")))?;
            values.push(lp);
            // lm-eval: greedy when the token's logprob is the largest among the top ones.
            let top_max = tops
                .and_then(|t| t.get(i))
                .and_then(Value::as_object)
                .map(|o| {
                    o.values()
                        .filter_map(Value::as_f64)
                        .fold(f64::NEG_INFINITY, f64::max)
                });
            if let Some(m) = top_max {
                if lp < m {
                    greedy = false;
                }
            }
        }
        let generated = v["usage"]["completion_tokens"].as_u64().unwrap_or(1) as usize;
        self.counters.add(n, generated);
        Ok(loglikelihood_response(values, greedy))
    }

    async fn generate(&self, context: &str, params: &GenParams) -> Result<Response> {
        let mut body = json!({
            "model": self.opts.model, "max_tokens": params.max_gen_toks, "temperature": params.temperature,
            "top_p": params.top_p, "stop": params.until,
        });
        if let Some(seed) = params.seed {
            body["seed"] = seed.into();
        }
        let (path, prompt_tokens) = if self.opts.apply_chat_template {
            body["messages"] = json!([{"role": "user", "content": context}]);
            ("/v1/chat/completions", 0)
        } else {
            // Token ids, so the prompt is encoded exactly as in-process (no added BOS).
            let ids = self.tokenize(context).await?;
            let n = ids.len();
            body["prompt"] = json!(ids);
            ("/v1/completions", n)
        };
        let v = self.post(path, &body).await?;
        let choice = &v["choices"][0];
        let text = choice["text"]
            .as_str()
            .or_else(|| choice["message"]["content"].as_str())
            .ok_or_else(|| {
                Error::Backend(format!(
                    "a completion without text: {}",
                    snippet(&v.to_string())
                ))
            })?
            .to_string();
        let generated = v["usage"]["completion_tokens"].as_u64().unwrap_or(0) as usize;
        let prompt = v["usage"]["prompt_tokens"]
            .as_u64()
            .map(|p| p as usize)
            .unwrap_or(prompt_tokens);
        self.counters.add(prompt, generated);
        Ok(Response::Generate {
            text,
            num_tokens: generated,
        })
    }
}

fn snippet(s: &str) -> String {
    let s = s.trim();
    if s.len() > 300 {
        let mut end = 300;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    } else {
        s.to_string()
    }
}

impl HttpBackend {
    pub fn new(opts: HttpOptions) -> Result<Self> {
        let root = server_root(&opts.base_url)?;
        if opts.concurrency == 0 {
            return Err(Error::InvalidArgument(
                "--num-concurrent must be at least 1".into(),
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(opts.timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Backend(format!("building the HTTP client: {e}")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::Backend(format!("starting the async runtime: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                root,
                opts,
                counters: Counters::default(),
            }),
            rt,
        })
    }

    /// Checks that the server answers `GET /v1/models` (with retries) before any work is queued.
    pub fn check_server(&self) -> Result<Value> {
        let inner = self.inner.clone();
        self.rt.block_on(async move {
            let url = format!("{}/v1/models", inner.root);
            let mut attempt = 0;
            loop {
                let mut req = inner.client.get(&url);
                if let Some(key) = &inner.opts.api_key {
                    req = req.bearer_auth(key);
                }
                let err = match req.send().await {
                    Ok(r) if r.status().is_success() => {
                        return r.json::<Value>().await.map_err(|e| Error::Http {
                            url: url.clone(),
                            message: format!("invalid JSON: {e}"),
                        })
                    }
                    Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => {
                        format!("HTTP {}", r.status())
                    }
                    Ok(r) => {
                        let status = r.status();
                        let body = r.text().await.unwrap_or_default();
                        return Err(Error::Http {
                            url,
                            message: format!("HTTP {status}: {}", snippet(&body)),
                        });
                    }
                    Err(e) => format!("{e} (is the server running?)"),
                };
                if attempt >= inner.opts.max_retries {
                    return Err(Error::Http {
                        url,
                        message: format!(
                            "{err} (gave up after {} retries)",
                            inner.opts.max_retries
                        ),
                    });
                }
                tokio::time::sleep(inner.opts.backoff * 2u32.saturating_pow(attempt)).await;
                attempt += 1;
            }
        })
    }
}

impl Backend for HttpBackend {
    fn run(&self, requests: &[Request], on_done: &(dyn Fn(usize) + Sync)) -> Result<Vec<Response>> {
        run_concurrent(
            &self.rt,
            requests,
            self.inner.opts.concurrency,
            on_done,
            |_, req| {
                let inner = self.inner.clone();
                async move {
                    match &req {
                        Request::Loglikelihood {
                            context,
                            continuation,
                        } => inner.loglikelihood(context, continuation).await,
                        Request::Generate { context, params } => {
                            inner.generate(context, params).await
                        }
                    }
                }
            },
        )
    }

    fn describe(&self) -> Value {
        json!({
            "backend": "http",
            "base_url": self.inner.root,
            "model": self.inner.opts.model,
            "num_concurrent": self.inner.opts.concurrency,
            "chat_template": self.inner.opts.apply_chat_template,
        })
    }

    fn stats(&self) -> Stats {
        self.inner.counters.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_may_be_the_root_or_v1() {
        assert_eq!(server_root("http://h:8000").unwrap(), "http://h:8000");
        assert_eq!(server_root("http://h:8000/v1/").unwrap(), "http://h:8000");
        assert!(server_root("h:8000").is_err());
    }
}
