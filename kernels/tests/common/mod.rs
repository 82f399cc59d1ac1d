//! What the kernel tests share: the f64 reference attention every kernel is checked against.

/// Causal GQA attention in f64 for the last `q_len` of `n` positions; k/v are `[n, kv_heads, d]`.
#[allow(clippy::too_many_arguments)]
pub fn reference_attention(
    q: &[f32],
    k: &[f64],
    v: &[f64],
    n: usize,
    q_len: usize,
    h: usize,
    kvh: usize,
    d: usize,
    scale: f64,
) -> Vec<f64> {
    let mut out = vec![0.0; q_len * h * d];
    let mut scores = Vec::with_capacity(n);
    for qi in 0..q_len {
        let pos = n - q_len + qi;
        for head in 0..h {
            let kv = head / (h / kvh);
            let qv = &q[(qi * h + head) * d..][..d];
            scores.clear();
            for j in 0..=pos {
                let kr = &k[(j * kvh + kv) * d..][..d];
                scores.push(qv.iter().zip(kr).map(|(&a, &b)| a as f64 * b).sum::<f64>() * scale);
            }
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = scores.iter().map(|s| (s - max).exp()).sum();
            let o = &mut out[(qi * h + head) * d..][..d];
            for (j, s) in scores.iter().enumerate() {
                let p = (s - max).exp() / sum;
                let vr = &v[(j * kvh + kv) * d..][..d];
                for (o, &x) in o.iter_mut().zip(vr) {
                    *o += p * x;
                }
            }
        }
    }
    out
}
