//! A plain contiguous transformer in f64, written for clarity, not speed: the reference the paged
//! forward is checked against.
#![allow(dead_code)]

use std::collections::BTreeMap;

use candle_core::Tensor;
use ember_models::config::ModelConfig;

pub struct ReferenceModel {
    cfg: ModelConfig,
    weights: BTreeMap<String, Vec<f64>>,
}

impl ReferenceModel {
    pub fn new(cfg: &ModelConfig, weights: &BTreeMap<String, Tensor>) -> Self {
        let weights = weights
            .iter()
            .map(|(k, t)| {
                let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
                (k.clone(), v.into_iter().map(f64::from).collect())
            })
            .collect();
        Self {
            cfg: cfg.clone(),
            weights,
        }
    }

    fn w(&self, name: &str) -> &[f64] {
        self.weights
            .get(name)
            .unwrap_or_else(|| panic!("missing {name}"))
    }

    /// `W x` for a row-major `[out, in]` weight.
    fn linear(&self, name: &str, x: &[f64], bias: bool) -> Vec<f64> {
        let w = self.w(&format!("{name}.weight"));
        let out = w.len() / x.len();
        let mut y: Vec<f64> = (0..out)
            .map(|o| {
                w[o * x.len()..(o + 1) * x.len()]
                    .iter()
                    .zip(x)
                    .map(|(a, b)| a * b)
                    .sum()
            })
            .collect();
        if bias {
            for (y, b) in y.iter_mut().zip(self.w(&format!("{name}.bias"))) {
                *y += b;
            }
        }
        y
    }

    fn rms_norm(&self, name: &str, x: &[f64]) -> Vec<f64> {
        let w = self.w(&format!("{name}.weight"));
        let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
        let r = 1.0 / (ms + self.cfg.rms_norm_eps).sqrt();
        x.iter().zip(w).map(|(v, w)| v * r * w).collect()
    }

    /// Hugging Face's rotate-half RoPE on one head.
    fn rope(&self, x: &mut [f64], pos: usize) {
        let d = x.len();
        for i in 0..d / 2 {
            let inv = 1.0 / self.cfg.rope_theta.powf(2.0 * i as f64 / d as f64);
            let (s, c) = (pos as f64 * inv).sin_cos();
            let (a, b) = (x[i], x[i + d / 2]);
            x[i] = a * c - b * s;
            x[i + d / 2] = a * s + b * c;
        }
    }

    /// Logits at every position of `tokens`, computed over the whole sequence at once.
    pub fn logits(&self, tokens: &[u32]) -> Vec<Vec<f64>> {
        let c = &self.cfg;
        let (h, d) = (c.hidden_size, c.head_dim);
        let emb = self.w("model.embed_tokens.weight");
        let mut xs: Vec<Vec<f64>> = tokens
            .iter()
            .map(|&t| emb[t as usize * h..][..h].to_vec())
            .collect();
        for l in 0..c.num_layers {
            let p = format!("model.layers.{l}");
            let mut qs = Vec::new();
            let mut ks = Vec::new();
            let mut vs = Vec::new();
            for (pos, x) in xs.iter().enumerate() {
                let xn = self.rms_norm(&format!("{p}.input_layernorm"), x);
                let mut q = self.linear(&format!("{p}.self_attn.q_proj"), &xn, c.attention_bias);
                let mut k = self.linear(&format!("{p}.self_attn.k_proj"), &xn, c.attention_bias);
                let v = self.linear(&format!("{p}.self_attn.v_proj"), &xn, c.attention_bias);
                for (heads, vecs, norm) in [
                    (c.num_heads, &mut q, "q_norm"),
                    (c.num_kv_heads, &mut k, "k_norm"),
                ] {
                    for hd in 0..heads {
                        let head = &mut vecs[hd * d..(hd + 1) * d];
                        if c.qk_norm {
                            let normed = self.rms_norm(&format!("{p}.self_attn.{norm}"), head);
                            head.copy_from_slice(&normed);
                        }
                        self.rope(head, pos);
                    }
                }
                qs.push(q);
                ks.push(k);
                vs.push(v);
            }
            let group = c.num_heads / c.num_kv_heads;
            for (pos, x) in xs.iter_mut().enumerate() {
                let mut attn = vec![0.0; c.num_heads * d];
                for hd in 0..c.num_heads {
                    let kvh = hd / group;
                    let q = &qs[pos][hd * d..(hd + 1) * d];
                    let scores: Vec<f64> = (0..=pos)
                        .map(|j| {
                            let k = &ks[j][kvh * d..(kvh + 1) * d];
                            q.iter().zip(k).map(|(a, b)| a * b).sum::<f64>() / (d as f64).sqrt()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let sum: f64 = exps.iter().sum();
                    for (j, e) in exps.iter().enumerate() {
                        let v = &vs[j][kvh * d..(kvh + 1) * d];
                        for i in 0..d {
                            attn[hd * d + i] += e / sum * v[i];
                        }
                    }
                }
                let o = self.linear(&format!("{p}.self_attn.o_proj"), &attn, false);
                for (x, o) in x.iter_mut().zip(o) {
                    *x += o;
                }
                let xn = self.rms_norm(&format!("{p}.post_attention_layernorm"), x);
                let gate = self.linear(&format!("{p}.mlp.gate_proj"), &xn, false);
                let up = self.linear(&format!("{p}.mlp.up_proj"), &xn, false);
                let act: Vec<f64> = gate
                    .iter()
                    .zip(&up)
                    .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                    .collect();
                let down = self.linear(&format!("{p}.mlp.down_proj"), &act, false);
                for (x, o) in x.iter_mut().zip(down) {
                    *x += o;
                }
            }
        }
        let head = if c.tie_word_embeddings {
            "model.embed_tokens"
        } else {
            "lm_head"
        };
        xs.iter()
            .map(|x| self.linear(head, &self.rms_norm("model.norm", x), false))
            .collect()
    }
}
