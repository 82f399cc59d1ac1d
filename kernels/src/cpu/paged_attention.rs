use super::dot;
use crate::{AttentionMetadata, KvCacheSpec};
use rayon::prelude::*;

/// Query tokens one work item handles: small enough to spread a long prefill over all cores.
const QUERY_CHUNK: usize = 16;

/// One unit of parallel work: a run of query tokens of one sequence against one KV head (and every query
/// head that shares it, so each key and value is read once per group).
struct WorkItem {
    seq: usize,
    kv_head: usize,
    first_query: usize,
    num_queries: usize,
}

/// Causal attention of every token in the batch over its sequence's paged context.
///
/// `q` is `[tokens, num_heads, head_dim]`; `out` receives `[tokens, num_heads, head_dim]`. Each output
/// depends only on its own query and its own sequence's cache, computed in a fixed order, so results are
/// bit-identical whatever else is in the batch.
#[allow(clippy::too_many_arguments)]
pub fn attend(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    spec: &KvCacheSpec,
    meta: &AttentionMetadata,
    num_heads: usize,
    scale: f32,
    out: &mut [f32],
) {
    let d = spec.head_dim;
    let group = num_heads / spec.num_kv_heads;
    let mut items = Vec::new();
    for (seq, span) in meta.seqs.iter().enumerate() {
        for kv_head in 0..spec.num_kv_heads {
            let mut first = 0;
            while first < span.query_len {
                let n = QUERY_CHUNK.min(span.query_len - first);
                items.push(WorkItem {
                    seq,
                    kv_head,
                    first_query: first,
                    num_queries: n,
                });
                first += n;
            }
        }
    }
    let results: Vec<Vec<f32>> = items
        .par_iter()
        .map(|item| {
            let span = &meta.seqs[item.seq];
            let mut local = vec![0f32; item.num_queries * group * d];
            let mut scores = Vec::with_capacity(span.context_len);
            let past = span.context_len - span.query_len;
            for qi in 0..item.num_queries {
                let token = span.query_start + item.first_query + qi;
                // Causal: this query sees its own position and everything before it.
                let visible = past + item.first_query + qi + 1;
                for g in 0..group {
                    let head = item.kv_head * group + g;
                    let q_row = &q[(token * num_heads + head) * d..][..d];
                    scores.clear();
                    let mut max = f32::NEG_INFINITY;
                    for pos in 0..visible {
                        let slot = slot_of(span.block_table.as_slice(), spec.block_size, pos);
                        let k_row = &k_cache[spec.offset(slot, item.kv_head)..][..d];
                        let s = dot(q_row, k_row) * scale;
                        max = max.max(s);
                        scores.push(s);
                    }
                    let mut sum = 0f32;
                    for s in scores.iter_mut() {
                        *s = (*s - max).exp();
                        sum += *s;
                    }
                    let inv = 1.0 / sum;
                    let o = &mut local[(qi * group + g) * d..][..d];
                    for (pos, &p) in scores.iter().enumerate() {
                        let slot = slot_of(span.block_table.as_slice(), spec.block_size, pos);
                        let v_row = &v_cache[spec.offset(slot, item.kv_head)..][..d];
                        let w = p * inv;
                        for (o, v) in o.iter_mut().zip(v_row) {
                            *o += w * v;
                        }
                    }
                }
            }
            local
        })
        .collect();
    for (item, local) in items.iter().zip(results) {
        let span = &meta.seqs[item.seq];
        for qi in 0..item.num_queries {
            let token = span.query_start + item.first_query + qi;
            for g in 0..group {
                let head = item.kv_head * group + g;
                out[(token * num_heads + head) * d..][..d]
                    .copy_from_slice(&local[(qi * group + g) * d..][..d]);
            }
        }
    }
}

#[inline]
fn slot_of(block_table: &[u32], block_size: usize, pos: usize) -> usize {
    block_table[pos / block_size] as usize * block_size + pos % block_size
}
