//! `ember data dedup`: exact duplicates (SHA-256 of normalised text) and near duplicates (MinHash over
//! word 5-gram shingles, LSH banding for candidates, then the estimated Jaccard similarity against the
//! threshold); also overlap of an eval set with a reference (training/regression) set.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use sha2::{Digest, Sha256};

/// Lower-cased, punctuation dropped, whitespace collapsed: what "the same text" means here.
pub fn normalize(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn exact_key(text: &str) -> [u8; 32] {
    Sha256::digest(normalize(text).as_bytes()).into()
}

const SHINGLE: usize = 5;

fn shingles(text: &str) -> HashSet<u64> {
    let norm = normalize(text);
    let words: Vec<&str> = norm.split(' ').filter(|w| !w.is_empty()).collect();
    let hash = |s: &[&str]| {
        let mut h = std::hash::DefaultHasher::new();
        s.hash(&mut h);
        h.finish()
    };
    if words.len() <= SHINGLE {
        return std::iter::once(hash(&words)).collect();
    }
    words.windows(SHINGLE).map(hash).collect()
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

pub struct MinHasher {
    /// One (multiplier, addend) pair per permutation.
    perms: Vec<(u64, u64)>,
    bands: usize,
    rows: usize,
}

impl MinHasher {
    /// `num_perm` permutations split into LSH bands whose detection threshold (1/b)^(1/r) is closest
    /// to `threshold`.
    pub fn new(num_perm: usize, threshold: f64) -> Self {
        let (mut bands, mut rows) = (num_perm, 1);
        let mut best = f64::MAX;
        for r in 1..=num_perm {
            if !num_perm.is_multiple_of(r) {
                continue;
            }
            let b = num_perm / r;
            let t = (1.0 / b as f64).powf(1.0 / r as f64);
            // Bias towards a slightly lower detection threshold: candidates are verified anyway.
            let err = (t - (threshold - 0.05)).abs();
            if err < best {
                best = err;
                bands = b;
                rows = r;
            }
        }
        let perms = (0..num_perm as u64)
            .map(|i| (splitmix(2 * i + 1) | 1, splitmix(2 * i + 2)))
            .collect();
        Self { perms, bands, rows }
    }

    pub fn signature(&self, text: &str) -> Vec<u64> {
        let sh = shingles(text);
        self.perms
            .iter()
            .map(|(a, b)| {
                sh.iter()
                    .map(|h| a.wrapping_mul(*h).wrapping_add(*b))
                    .min()
                    .unwrap_or(u64::MAX)
            })
            .collect()
    }

    fn band_keys(&self, sig: &[u64]) -> Vec<u64> {
        (0..self.bands)
            .map(|b| {
                let mut h = std::hash::DefaultHasher::new();
                (b, &sig[b * self.rows..(b + 1) * self.rows]).hash(&mut h);
                h.finish()
            })
            .collect()
    }
}

/// The fraction of equal signature entries: an unbiased estimate of the Jaccard similarity.
pub fn estimated_jaccard(a: &[u64], b: &[u64]) -> f64 {
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    same as f64 / a.len().max(1) as f64
}

#[derive(Debug, Clone, PartialEq)]
pub enum Dup {
    /// Same normalised text as an earlier document.
    Exact { of: usize },
    /// Estimated Jaccard similarity `similarity` with an earlier kept document.
    Near { of: usize, similarity: f64 },
}

/// For each document, whether it duplicates an earlier one (the first of each cluster is kept).
pub fn find_duplicates(docs: &[String], threshold: f64, num_perm: usize) -> Vec<Option<Dup>> {
    let mh = MinHasher::new(num_perm, threshold);
    let mut exact: HashMap<[u8; 32], usize> = HashMap::new();
    let mut buckets: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut sigs: Vec<Vec<u64>> = Vec::with_capacity(docs.len());
    let mut out = Vec::with_capacity(docs.len());
    for (i, d) in docs.iter().enumerate() {
        let sig = mh.signature(d);
        let key = exact_key(d);
        if let Some(&of) = exact.get(&key) {
            out.push(Some(Dup::Exact { of }));
            sigs.push(sig);
            continue;
        }
        exact.insert(key, i);
        let keys = mh.band_keys(&sig);
        let mut best: Option<(usize, f64)> = None;
        for k in &keys {
            for &j in buckets.get(k).into_iter().flatten() {
                let s = estimated_jaccard(&sig, &sigs[j]);
                if s >= threshold && best.is_none_or(|(_, b)| s > b) {
                    best = Some((j, s));
                }
            }
        }
        match best {
            Some((of, similarity)) => out.push(Some(Dup::Near { of, similarity })),
            None => {
                // Only kept documents enter the index, so clusters point at their first member.
                for k in keys {
                    buckets.entry(k).or_default().push(i);
                }
                out.push(None);
            }
        }
        sigs.push(sig);
    }
    out
}

/// For each eval document, the reference document it overlaps with (exact or near), if any.
pub fn find_overlap(
    eval: &[String],
    reference: &[String],
    threshold: f64,
    num_perm: usize,
) -> Vec<Option<Dup>> {
    let mh = MinHasher::new(num_perm, threshold);
    let exact: HashMap<[u8; 32], usize> = reference
        .iter()
        .enumerate()
        .map(|(i, d)| (exact_key(d), i))
        .rev()
        .collect();
    let ref_sigs: Vec<Vec<u64>> = reference.iter().map(|d| mh.signature(d)).collect();
    let mut buckets: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, s) in ref_sigs.iter().enumerate() {
        for k in mh.band_keys(s) {
            buckets.entry(k).or_default().push(i);
        }
    }
    eval.iter()
        .map(|d| {
            if let Some(&of) = exact.get(&exact_key(d)) {
                return Some(Dup::Exact { of });
            }
            let sig = mh.signature(d);
            let mut best: Option<(usize, f64)> = None;
            for k in mh.band_keys(&sig) {
                for &j in buckets.get(&k).into_iter().flatten() {
                    let s = estimated_jaccard(&sig, &ref_sigs[j]);
                    if s >= threshold && best.is_none_or(|(_, b)| s > b) {
                        best = Some((j, s));
                    }
                }
            }
            best.map(|(of, similarity)| Dup::Near { of, similarity })
        })
        .collect()
}

/// Texts of a dataset file: JSON lines (the `field` of each object, or the line's JSON text) or plain
/// text (one document per line).
pub fn read_texts(
    path: &std::path::Path,
    field: &str,
) -> crate::Result<(Vec<String>, Vec<String>)> {
    let text = std::fs::read_to_string(path).map_err(|source| crate::Error::Io {
        context: format!("reading {}", path.display()),
        source,
    })?;
    let mut texts = Vec::new();
    let mut lines = Vec::new();
    let is_jsonl = path.extension().is_some_and(|e| e == "jsonl");
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let t = if is_jsonl {
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| crate::Error::BadData {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
            match v.get(field) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => line.to_string(),
            }
        } else {
            line.to_string()
        };
        texts.push(t);
        lines.push(line.to_string());
    }
    Ok((texts, lines))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(n: usize, seed: u64) -> String {
        (0..n)
            .map(|i| format!("w{}", splitmix(seed * 1000 + i as u64) % 5000))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn exact_and_near_duplicates_are_found_and_distinct_texts_kept() {
        let base = words(200, 1);
        let mut near: Vec<&str> = base.split(' ').collect();
        near[100] = "changed";
        let near = near.join(" ");
        let docs = vec![
            base.clone(),
            format!("  {}  ", base.to_uppercase()),
            near,
            words(200, 2),
        ];
        let d = find_duplicates(&docs, 0.8, 128);
        assert_eq!(d[0], None);
        assert_eq!(d[1], Some(Dup::Exact { of: 0 }));
        assert!(matches!(d[2], Some(Dup::Near { of: 0, similarity }) if similarity > 0.8));
        assert_eq!(d[3], None);
        let o = find_overlap(&[docs[2].clone(), docs[3].clone()], &[base], 0.8, 128);
        assert!(matches!(o[0], Some(Dup::Near { .. })));
        assert_eq!(o[1], None);
    }
}
