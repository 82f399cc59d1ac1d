//! Few-shot contexts as lm-eval builds them: description, then each example's text, the target delimiter
//! and its answer, examples separated by a blank line, then the document's own text.

use serde_json::Value;

use super::multiple_choice::McDoc;

/// lm-eval's default fewshot seed.
pub const FEWSHOT_SEED: u64 = 1234;

pub fn context(description: &str, shots: &[String], query: &str) -> String {
    let mut s = String::from(description);
    for shot in shots {
        s.push_str(shot);
        s.push_str("\n\n");
    }
    s.push_str(query);
    s
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// `k` distinct indices in `0..n`, never `exclude`, the same for the same (seed, exclude) whatever the
/// `--limit`: a partial Fisher-Yates shuffle driven by splitmix64.
pub fn pick(n: usize, exclude: Option<usize>, k: usize, seed: u64) -> Vec<usize> {
    let mut pool: Vec<usize> = (0..n).filter(|i| Some(*i) != exclude).collect();
    let k = k.min(pool.len());
    let mut state = splitmix(seed ^ exclude.map(|e| e as u64 + 1).unwrap_or(0));
    for i in 0..k {
        state = splitmix(state);
        let j = i + (state % (pool.len() - i) as u64) as usize;
        pool.swap(i, j);
    }
    pool.truncate(k);
    pool
}

/// A multiple-choice document before rendering: the text the model sees, its choices, the gold index.
#[derive(Debug, Clone)]
pub struct McItem {
    pub doc: Value,
    pub query: String,
    pub choices: Vec<String>,
    pub gold: usize,
}

impl McItem {
    /// The document as a solved example.
    pub fn shot(&self) -> String {
        format!("{} {}", self.query, self.choices[self.gold])
    }
}

/// Renders items into multiple-choice documents with `k` examples drawn from the same split
/// (never the document itself), as lm-eval does for tasks whose fewshot split is the evaluated one.
pub fn build_mc(items: Vec<McItem>, description: &str, k: usize) -> Vec<McDoc> {
    let n = items.len();
    (0..n)
        .map(|i| {
            let shots: Vec<String> = pick(n, Some(i), k, FEWSHOT_SEED)
                .into_iter()
                .map(|j| items[j].shot())
                .collect();
            let it = &items[i];
            McDoc::shared(
                it.doc.clone(),
                context(description, &shots, &it.query),
                it.choices.clone(),
                it.gold,
                " ",
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_are_distinct_stable_and_exclude_the_doc() {
        let a = pick(50, Some(3), 5, 1);
        assert_eq!(a, pick(50, Some(3), 5, 1));
        assert_eq!(a.len(), 5);
        assert!(!a.contains(&3));
        let mut s = a.clone();
        s.sort();
        s.dedup();
        assert_eq!(s.len(), 5);
        assert_eq!(pick(3, Some(0), 5, 1).len(), 2);
    }

    #[test]
    fn context_layout() {
        let c = context("D\n\n", &["Q1 A1".into(), "Q2 A2".into()], "Q3");
        assert_eq!(c, "D\n\nQ1 A1\n\nQ2 A2\n\nQ3");
        assert_eq!(context("", &[], "Q"), "Q");
    }
}
