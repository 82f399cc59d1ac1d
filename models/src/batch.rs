use ember_kernels::{AttentionMetadata, SeqSpan};

use crate::{Error, Result};

/// One model step's input: the tokens of many sequences flattened into one list, each at its own
/// position, with the paged-cache metadata attention needs and the rows whose logits are wanted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardBatch {
    pub token_ids: Vec<u32>,
    pub positions: Vec<usize>,
    pub attention: AttentionMetadata,
    /// Indices into `token_ids` whose logits the forward returns, in this order.
    pub logits_indices: Vec<usize>,
}

/// One sequence's part of a step, as the scheduler hands it to the model runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqChunk<'a> {
    /// Tokens to compute this step (a prefill chunk, or the last sampled token for a decode).
    pub tokens: &'a [u32],
    /// Tokens of this sequence already in the cache (the position of `tokens[0]`).
    pub num_computed: usize,
    pub block_table: &'a [u32],
    /// Which logits to return: none, the last token's, or every token's (prompt logprobs).
    pub logits: LogitsWanted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsWanted {
    None,
    Last,
    All,
    /// The last `k` tokens' (prompt logprobs from a given position on).
    Tail(usize),
}

impl ForwardBatch {
    /// Flattens sequence chunks into one batch, computing positions and cache slots from block tables.
    pub fn build(chunks: &[SeqChunk<'_>], block_size: usize) -> Result<Self> {
        let mut batch = ForwardBatch::default();
        for chunk in chunks {
            if chunk.tokens.is_empty() {
                return Err(Error::Batch("a sequence chunk has no tokens".into()));
            }
            let query_start = batch.token_ids.len();
            let context_len = chunk.num_computed + chunk.tokens.len();
            if chunk.block_table.len() * block_size < context_len {
                return Err(Error::Batch(format!(
                    "{} blocks of {block_size} cannot hold {context_len} tokens",
                    chunk.block_table.len()
                )));
            }
            for (i, &token) in chunk.tokens.iter().enumerate() {
                let pos = chunk.num_computed + i;
                batch.token_ids.push(token);
                batch.positions.push(pos);
                batch.attention.slot_mapping.push(
                    chunk.block_table[pos / block_size] as usize * block_size + pos % block_size,
                );
            }
            match chunk.logits {
                LogitsWanted::None => {}
                LogitsWanted::Last => batch.logits_indices.push(batch.token_ids.len() - 1),
                LogitsWanted::All => batch
                    .logits_indices
                    .extend(query_start..batch.token_ids.len()),
                LogitsWanted::Tail(k) => {
                    let end = batch.token_ids.len();
                    if k == 0 || k > chunk.tokens.len() {
                        return Err(Error::Batch(format!(
                            "{k} logits rows asked of a {}-token chunk",
                            chunk.tokens.len()
                        )));
                    }
                    batch.logits_indices.extend(end - k..end)
                }
            }
            batch.attention.seqs.push(SeqSpan {
                query_start,
                query_len: chunk.tokens.len(),
                context_len,
                block_table: chunk.block_table.to_vec(),
            });
        }
        Ok(batch)
    }

    pub fn num_tokens(&self) -> usize {
        self.token_ids.len()
    }

    /// Whether the logits of every token are wanted, in order (a decode step): no row gather needed.
    pub fn wants_every_row(&self) -> bool {
        self.logits_indices.len() == self.num_tokens()
            && self.logits_indices.iter().enumerate().all(|(i, &r)| i == r)
    }
}
