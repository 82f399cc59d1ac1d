//! Aggregations and standard errors, defined as lm-eval-harness defines them.

/// Arithmetic mean; 0 for an empty slice.
pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

/// Sample standard deviation (n - 1 in the denominator).
pub fn sample_stddev(values: &[f64]) -> f64 {
    let n = values.len();
    if n < 2 {
        return 0.0;
    }
    let m = mean(values);
    let var = values.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (n - 1) as f64;
    var.sqrt()
}

/// Standard error of the mean: sample stddev / sqrt(n) (lm-eval's `mean_stderr`).
pub fn mean_stderr(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    sample_stddev(values) / (values.len() as f64).sqrt()
}

/// Size-weighted mean of group members' scores (lm-eval groups with `weight_by_size`).
pub fn weighted_mean(scores: &[f64], sizes: &[usize]) -> f64 {
    let total: usize = sizes.iter().sum();
    if total == 0 {
        return 0.0;
    }
    scores
        .iter()
        .zip(sizes)
        .map(|(s, n)| s * *n as f64)
        .sum::<f64>()
        / total as f64
}

/// Pooled standard error of a size-weighted group mean (lm-eval's `pooled_sample_stderr`): each member's
/// sample variance, recovered from its stderr, pooled with n - 1 weights.
pub fn pooled_stderr(stderrs: &[f64], sizes: &[usize]) -> f64 {
    let total: usize = sizes.iter().sum();
    if total <= sizes.len() {
        return 0.0;
    }
    let pooled_var = stderrs
        .iter()
        .zip(sizes)
        .map(|(se, n)| (*n as f64 - 1.0) * se * se * *n as f64)
        .sum::<f64>()
        / (total - sizes.len()) as f64;
    (pooled_var / total as f64).sqrt()
}

/// The unbiased pass@k estimator of Chen et al. (2021): 1 - C(n - c, k) / C(n, k), computed as a
/// product to stay exact for large n. `n` samples, `c` of them correct.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    if k == 0 || k > n {
        return f64::NAN;
    }
    if n - c < k {
        return 1.0;
    }
    let mut prod = 1.0;
    for i in (n - c + 1)..=n {
        prod *= 1.0 - k as f64 / i as f64;
    }
    1.0 - prod
}

/// Index of the largest value; the first one on ties (numpy's argmax).
pub fn argmax(values: &[f64]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, &v) in values.iter().enumerate() {
        match best {
            Some((_, b)) if v <= b || v.is_nan() => {}
            _ if v.is_nan() => {}
            _ => best = Some((i, v)),
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binomial(n: u64, k: u64) -> f64 {
        if k > n {
            return 0.0;
        }
        (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
    }

    #[test]
    fn pass_at_k_matches_the_combinatorial_definition() {
        for n in 1..=12usize {
            for c in 0..=n {
                for k in 1..=n {
                    let want =
                        1.0 - binomial((n - c) as u64, k as u64) / binomial(n as u64, k as u64);
                    let got = pass_at_k(n, c, k);
                    assert!(
                        (got - want).abs() < 1e-12,
                        "n={n} c={c} k={k}: {got} vs {want}"
                    );
                }
            }
        }
        // pass@1 is the fraction correct.
        assert!((pass_at_k(10, 3, 1) - 0.3).abs() < 1e-12);
        assert!(pass_at_k(5, 0, 3) == 0.0);
        assert!(pass_at_k(3, 1, 4).is_nan());
    }

    #[test]
    fn stderr_of_a_binary_metric() {
        let v = [1.0, 0.0, 1.0, 1.0];
        // sample variance = (3 * (0.25)^2 + 0.75^2) / 3 = 0.25; stderr = 0.5 / 2.
        assert!((mean(&v) - 0.75).abs() < 1e-12);
        assert!((mean_stderr(&v) - 0.25).abs() < 1e-12);
        assert_eq!(mean_stderr(&[1.0]), 0.0);
    }

    #[test]
    fn pooled_stderr_of_one_member_is_its_own() {
        let v = [1.0, 0.0, 0.0, 1.0, 1.0];
        let se = mean_stderr(&v);
        assert!((pooled_stderr(&[se], &[5]) - se).abs() < 1e-12);
        // Two identical halves pool to the stderr of the concatenation up to the n-1 corrections.
        let both: Vec<f64> = v.iter().chain(v.iter()).copied().collect();
        let pooled = pooled_stderr(&[se, se], &[5, 5]);
        assert!((pooled - mean_stderr(&both)).abs() < 0.02);
        assert!((weighted_mean(&[1.0, 0.0], &[3, 1]) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn argmax_takes_the_first_of_ties() {
        assert_eq!(argmax(&[-1.0, -0.5, -0.5]), Some(1));
        assert_eq!(argmax(&[]), None);
        assert_eq!(argmax(&[f64::NAN, -3.0]), Some(1));
    }
}
