//! TEMPORARY stub for the helper-c branch: only the two types the engine's scheduler needs, copied from the
//! integrator's `models/src/batch.rs`. Drop this file's change on merge (take main's version).

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
}
