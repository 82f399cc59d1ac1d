//! Named scenarios run in one go: seed 003's four built in, or a YAML file of one's own.
//!
//! ```yaml
//! scenarios:
//!   - name: basic_performance
//!     max_concurrency: 1
//!     input_len: 1024
//!     output_len: 128
//!     num_prompts: 8          # optional (default: 4 x concurrency, at least 8)
//!     request_rate: inf       # optional
//!     range_ratio: 0.0        # optional
//!     prefix_len: 0           # optional
//!     thresholds: {ttft_p95_ms: 1000, tpot_p95_ms: 100, min_success_rate: 0.99}  # optional
//! ```
//! `--scale S` multiplies lengths and prompt counts (concurrency stays), for small machines.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::report::Thresholds;
use super::BenchError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub max_concurrency: usize,
    pub input_len: usize,
    pub output_len: usize,
    #[serde(default)]
    pub num_prompts: Option<usize>,
    #[serde(default, deserialize_with = "rate")]
    pub request_rate: Option<f64>,
    #[serde(default)]
    pub range_ratio: f64,
    #[serde(default)]
    pub prefix_len: usize,
    #[serde(default)]
    pub thresholds: Option<Thresholds>,
}

/// `request_rate: inf` (a string in YAML) or a number.
fn rate<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Rate {
        N(f64),
        S(String),
    }
    match Option::<Rate>::deserialize(d)? {
        None => Ok(None),
        Some(Rate::N(x)) => Ok(Some(x)),
        Some(Rate::S(s)) => s.trim().parse::<f64>().map(Some).map_err(|_| {
            serde::de::Error::custom(format!("request_rate `{s}` is not a number or inf"))
        }),
    }
}

impl Scenario {
    fn new(
        name: &str,
        max_concurrency: usize,
        input_len: usize,
        output_len: usize,
        num_prompts: usize,
    ) -> Scenario {
        Scenario {
            name: name.into(),
            max_concurrency,
            input_len,
            output_len,
            num_prompts: Some(num_prompts),
            request_rate: None,
            range_ratio: 0.0,
            prefix_len: 0,
            thresholds: None,
        }
    }

    pub fn num_prompts(&self) -> usize {
        self.num_prompts
            .unwrap_or((4 * self.max_concurrency).max(8))
    }

    /// Lengths and prompt count times `scale` (at least 1 token, at least `max_concurrency` prompts
    /// so that the concurrency is still reached).
    pub fn scaled(&self, scale: f64) -> Scenario {
        let by = |x: usize| ((x as f64 * scale).round() as usize).max(1);
        Scenario {
            input_len: by(self.input_len),
            output_len: by(self.output_len),
            prefix_len: if self.prefix_len == 0 {
                0
            } else {
                by(self.prefix_len)
            },
            num_prompts: Some(by(self.num_prompts()).max(self.max_concurrency)),
            ..self.clone()
        }
    }
}

/// Seed 003's scenarios (concurrency, input/output lengths); prompt counts are ours.
pub fn builtin() -> Vec<Scenario> {
    vec![
        Scenario::new("basic_performance", 1, 1024, 128, 32),
        Scenario::new("concurrency_test", 10, 512, 256, 50),
        Scenario::new("long_context", 2, 4096, 512, 16),
        Scenario::new("stress_test", 20, 2048, 1024, 100),
    ]
}

/// Reads a scenarios file (a list, or `scenarios:` holding one); `builtin` or `seed` names the
/// built-in set.
pub fn load(spec: &str) -> Result<Vec<Scenario>, BenchError> {
    if spec == "builtin" || spec == "seed" {
        return Ok(builtin());
    }
    let path = Path::new(spec);
    let text = std::fs::read_to_string(path)
        .map_err(|e| BenchError::Config(format!("reading {}: {e}", path.display())))?;
    let bad = |e: serde_yaml_ng::Error| BenchError::Config(format!("{}: {e}", path.display()));
    let mut doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).map_err(bad)?;
    if let Some(inner) = doc.get("scenarios") {
        doc = inner.clone();
    }
    let list: Vec<Scenario> = serde_yaml_ng::from_value(doc).map_err(bad)?;
    if list.is_empty() {
        return Err(BenchError::Config(format!(
            "{} holds no scenarios",
            path.display()
        )));
    }
    for s in &list {
        if s.max_concurrency == 0 || s.output_len == 0 || s.input_len + s.prefix_len == 0 {
            return Err(BenchError::Config(format!(
                "scenario `{}`: max_concurrency, output_len and input_len must be at least 1",
                s.name
            )));
        }
    }
    Ok(list)
}
