//! Attention metadata for the attention benchmarks: `seqs` sequences of `ctx` tokens, sequence `s` owning
//! blocks `s * per_seq..(s + 1) * per_seq` in order, the queries being each sequence's last `q_len` tokens.

use ember_kernels::{AttentionMetadata, SeqSpan};

pub fn tail_queries(seqs: usize, ctx: usize, q_len: usize, block: usize) -> AttentionMetadata {
    let per_seq = ctx.div_ceil(block);
    AttentionMetadata {
        slot_mapping: (0..seqs)
            .flat_map(|s| {
                (ctx - q_len..ctx).map(move |p| (s * per_seq + p / block) * block + p % block)
            })
            .collect(),
        seqs: (0..seqs)
            .map(|s| SeqSpan {
                query_start: s * q_len,
                query_len: q_len,
                context_len: ctx,
                block_table: (0..per_seq).map(|b| (s * per_seq + b) as u32).collect(),
            })
            .collect(),
    }
}
