//! A real `ember serve` process on 127.0.0.1 with an OS-assigned port, for the server tests; plus small
//! HTTP helpers (JSON, SSE) over reqwest.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::quantized::GgmlDType;
use ember_models::config::Architecture;
use ember_models::testing::{write_tiny_model, TinyFormat};
use serde_json::Value;

/// Long enough for a first-use download of the default model on a slow link.
const START_TIMEOUT: Duration = Duration::from_secs(600);

pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub base: String,
    log: Arc<Mutex<Vec<String>>>,
    pub client: reqwest::Client,
}

impl Server {
    /// `ember serve ARGS --host 127.0.0.1 --port 0`, waiting until /health answers 200.
    pub fn start(args: &[&str]) -> Server {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ember"));
        cmd.arg("serve")
            .args(args)
            .args(["--host", "127.0.0.1", "--port", "0", "--disable-log-stats"])
            .env("EMBER_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("VLLM_API_KEY")
            .env_remove("EMBER_API_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn ember serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(port) = line
                    .split("on http://127.0.0.1:")
                    .nth(1)
                    .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|p| p.parse::<u16>().ok())
                {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(port);
                    }
                }
                log2.lock().unwrap().push(line);
            }
        });
        let port = match rx.recv_timeout(START_TIMEOUT) {
            Ok(p) => p,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                panic!(
                    "ember serve did not start (exit {status:?}); log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        let server = Server {
            child: Some(child),
            port,
            base: format!("http://127.0.0.1:{port}"),
            log,
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
        };
        server.block_on(async {
            for _ in 0..200 {
                if let Ok(r) = server.client.get(server.url("/health")).send().await {
                    if r.status() == 200 {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("/health never answered 200");
        });
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        runtime().block_on(f)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends SIGTERM (as a service manager does).
    pub fn terminate(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(ok.success());
    }

    /// Waits for the process to exit (up to `timeout`), returning its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.expect("send");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    pub async fn metrics_text(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// One sample's value from /metrics (labels ignored; the first match).
    pub async fn metric(&self, name: &str) -> f64 {
        metric_value(&self.metrics_text().await, name)
            .unwrap_or_else(|| panic!("metric {name} missing"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// A streaming response read event by event.
pub struct SseReader {
    pub resp: reqwest::Response,
    buf: Vec<u8>,
}

impl SseReader {
    pub fn new(resp: reqwest::Response) -> Self {
        Self {
            resp,
            buf: Vec::new(),
        }
    }

    /// The next `data:` payload (`[DONE]` included); `None` at the end of the body.
    pub async fn next_data(&mut self) -> Option<String> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buf.drain(..pos + 2).collect();
                let text = String::from_utf8(event).expect("utf-8 event");
                let data = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect::<Vec<_>>()
                    .join("\n");
                return Some(data);
            }
            match self.resp.chunk().await.expect("read stream") {
                Some(bytes) => self.buf.extend_from_slice(&bytes),
                None => {
                    assert!(
                        self.buf.iter().all(u8::is_ascii_whitespace),
                        "stream ended mid-event: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    );
                    return None;
                }
            }
        }
    }

    /// Every event's JSON until `[DONE]` (which must come last).
    pub async fn collect(mut self) -> Vec<Value> {
        let mut events = Vec::new();
        while let Some(data) = self.next_data().await {
            if data == "[DONE]" {
                assert!(self.next_data().await.is_none(), "data after [DONE]");
                return events;
            }
            events.push(serde_json::from_str(&data).expect("chunk is JSON"));
        }
        panic!("stream ended without [DONE]: {events:?}");
    }
}

/// Writes a tiny random Qwen2 GGUF model (fast to load and run) into `dir`.
pub fn tiny_model(dir: &Path) -> PathBuf {
    write_tiny_model(
        dir,
        Architecture::Qwen2,
        TinyFormat::Gguf(GgmlDType::Q8_0),
        7,
    )
    .unwrap()
}

pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

/// One sample of the Prometheus text format.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
}

/// A strict reader of the Prometheus text exposition format (0.0.4): every sample belongs to a family
/// declared by `# TYPE` (histograms through `_bucket`/`_sum`/`_count`), names and labels are well formed,
/// values parse, histogram buckets are cumulative and end at `+Inf` = `_count`. Returns the samples and
/// the declared families with their types. (prometheus-parse rejects the `:` in vLLM's names.)
pub fn parse_prometheus(text: &str) -> (Vec<Sample>, std::collections::BTreeMap<String, String>) {
    use std::collections::BTreeMap;
    let valid_name = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line");
            assert!(valid_name(name), "bad family name {name}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad type {kind}"
            );
            assert!(
                families.insert(name.into(), kind.into()).is_none(),
                "{name} declared twice"
            );
            continue;
        }
        if line.starts_with('#') {
            assert!(line.starts_with("# HELP "), "unknown comment: {line}");
            continue;
        }
        let (head, value) = line.rsplit_once(' ').expect("sample line");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match head.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').expect("closing brace")),
            None => (head, ""),
        };
        assert!(valid_name(name), "bad metric name in {line}");
        let mut map = BTreeMap::new();
        let mut rest = labels;
        while !rest.is_empty() {
            let (k, after) = rest.split_once("=\"").expect("label=\"value\"");
            let mut v = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next().expect("unterminated label value") {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next().expect("escape").1 {
                        'n' => v.push('\n'),
                        c => v.push(c),
                    },
                    (_, c) => v.push(c),
                }
            };
            assert!(valid_name(k) && !k.contains(':'), "bad label name {k}");
            map.insert(k.to_string(), v);
            rest = after[end + 1..]
                .strip_prefix(',')
                .unwrap_or(&after[end + 1..]);
        }
        let family = [
            name,
            name.trim_end_matches("_bucket"),
            name.trim_end_matches("_sum"),
            name.trim_end_matches("_count"),
        ]
        .into_iter()
        .find(|f| families.contains_key(*f))
        .unwrap_or_else(|| panic!("sample {name} has no # TYPE"));
        if family != name {
            assert_eq!(families[family], "histogram", "{name}");
        }
        samples.push(Sample {
            name: name.to_string(),
            labels: map,
            value,
        });
    }
    // Histograms: cumulative buckets ending at +Inf == _count.
    for (family, kind) in &families {
        if kind != "histogram" {
            continue;
        }
        let buckets: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.name == format!("{family}_bucket"))
            .collect();
        assert!(!buckets.is_empty(), "{family} has no buckets");
        assert!(
            buckets.windows(2).all(|w| w[0].value <= w[1].value),
            "{family} not cumulative"
        );
        let last = buckets.last().unwrap();
        assert_eq!(
            last.labels.get("le").map(String::as_str),
            Some("+Inf"),
            "{family}"
        );
        let count = samples
            .iter()
            .find(|s| s.name == format!("{family}_count"))
            .unwrap_or_else(|| panic!("{family}_count missing"));
        assert_eq!(last.value, count.value, "{family}: +Inf bucket != _count");
    }
    (samples, families)
}
