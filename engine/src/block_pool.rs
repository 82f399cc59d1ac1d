//! The paged KV cache's bookkeeping: fixed-size blocks with reference counts, a free list in LRU order, and
//! automatic prefix caching (vLLM V1's KV cache manager semantics).
//!
//! - Every block id in `0..num_blocks` is usable (no reserved null block).
//! - Only full, computed blocks are cached, keyed by their [`BlockHash`] chain. A cached block keeps its hash
//!   while it sits on the free list and is still a hit; it loses it only when it is handed out again.
//! - The free list is evicted from its head: blocks freed longest ago go first. A request's blocks are freed
//!   tail first, so a sequence's last blocks are evicted before its (more shareable) first ones. Blocks that
//!   carry no hash can never be hit, so they go to the head of the list and are reused first.

use std::collections::HashMap;

use crate::config::CacheConfig;
use crate::prefix_hash::BlockHash;
use crate::request::Request;

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Block {
    ref_cnt: u32,
    hash: Option<BlockHash>,
    prev: u32,
    next: u32,
}

/// A prefix-cache hit: blocks holding the request's first `num_tokens` tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComputedBlocks {
    pub block_ids: Vec<u32>,
    pub num_tokens: usize,
}

/// Prefix cache counters, in tokens (`vllm:prefix_cache_queries_total` / `…_hits_total`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixCacheStats {
    pub queries: u64,
    pub hits: u64,
}

#[derive(Debug)]
pub struct BlockPool {
    block_size: usize,
    blocks: Vec<Block>,
    /// Free list (LRU order: head is evicted first), threaded through `blocks`.
    head: u32,
    tail: u32,
    num_free: usize,
    cached: HashMap<BlockHash, u32>,
    enable_caching: bool,
    stats: PrefixCacheStats,
}

impl BlockPool {
    pub fn new(num_blocks: usize, block_size: usize, enable_caching: bool) -> Self {
        assert!(block_size > 0 && num_blocks > 0 && num_blocks < NIL as usize);
        let blocks = (0..num_blocks as u32)
            .map(|i| Block {
                ref_cnt: 0,
                hash: None,
                prev: if i == 0 { NIL } else { i - 1 },
                next: if i + 1 == num_blocks as u32 {
                    NIL
                } else {
                    i + 1
                },
            })
            .collect();
        Self {
            block_size,
            blocks,
            head: 0,
            tail: num_blocks as u32 - 1,
            num_free: num_blocks,
            cached: HashMap::new(),
            enable_caching,
            stats: PrefixCacheStats::default(),
        }
    }

    pub fn from_config(config: &CacheConfig) -> Self {
        Self::new(
            config.num_blocks,
            config.block_size,
            config.enable_prefix_caching,
        )
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Blocks no request holds (cached ones included: they are evictable).
    pub fn num_free_blocks(&self) -> usize {
        self.num_free
    }

    /// Fraction of blocks held by requests (`vllm:kv_cache_usage_perc`).
    pub fn usage(&self) -> f64 {
        1.0 - self.num_free as f64 / self.blocks.len() as f64
    }

    pub fn prefix_caching_enabled(&self) -> bool {
        self.enable_caching
    }

    pub fn stats(&self) -> PrefixCacheStats {
        self.stats
    }

    /// Counts one prefix-cache lookup of `queries` tokens that found `hits` of them.
    pub fn record_query(&mut self, queries: usize, hits: usize) {
        self.stats.queries += queries as u64;
        self.stats.hits += hits as u64;
    }

    pub fn ref_count(&self, block: u32) -> u32 {
        self.blocks[block as usize].ref_cnt
    }

    /// Number of blocks that currently carry a hash (resident in the prefix cache).
    pub fn num_cached_blocks(&self) -> usize {
        self.cached.len()
    }

    /// Blocks needed to hold `num_tokens` tokens.
    pub fn blocks_for(&self, num_tokens: usize) -> usize {
        num_tokens.div_ceil(self.block_size)
    }

    /// The longest cached prefix of `req`'s tokens, in whole blocks, within
    /// [`Request::max_cacheable_tokens`] (the rows whose logits are needed are computed). Empty when caching
    /// is off.
    /// Updates the request's hash chain; takes no block (see [`Self::allocate_slots`]).
    pub fn get_computed_blocks(&self, req: &mut Request) -> ComputedBlocks {
        let max_blocks = req.max_cacheable_tokens() / self.block_size;
        if !self.enable_caching || max_blocks == 0 {
            return ComputedBlocks::default();
        }
        let tokens_needed = max_blocks * self.block_size;
        req.extend_block_hashes(tokens_needed, self.block_size);
        let block_ids: Vec<u32> = req.block_hashes[..max_blocks]
            .iter()
            .map_while(|h| self.cached.get(h).copied())
            .collect();
        let num_tokens = block_ids.len() * self.block_size;
        ComputedBlocks {
            block_ids,
            num_tokens,
        }
    }

    /// Gives `req` blocks for `num_new_tokens` more tokens after its computed ones (and after `computed`, a
    /// prefix hit from [`Self::get_computed_blocks`] for a request that holds no block yet). `None` when the
    /// pool is short: then nothing changed.
    pub fn allocate_slots(
        &mut self,
        req: &mut Request,
        num_new_tokens: usize,
        computed: &ComputedBlocks,
    ) -> Option<()> {
        debug_assert!(computed.block_ids.is_empty() || req.block_ids.is_empty());
        let total = req.num_computed_tokens + computed.num_tokens + num_new_tokens;
        let have = req.block_ids.len() + computed.block_ids.len();
        let new_blocks = self.blocks_for(total).saturating_sub(have);
        // Hit blocks nobody holds sit on the free list and leave it when touched.
        let revived = computed
            .block_ids
            .iter()
            .filter(|&&b| self.blocks[b as usize].ref_cnt == 0)
            .count();
        if new_blocks + revived > self.num_free {
            return None;
        }
        for &b in &computed.block_ids {
            if self.blocks[b as usize].ref_cnt == 0 {
                self.unlink(b);
            }
            self.blocks[b as usize].ref_cnt += 1;
            req.block_ids.push(b);
        }
        if !computed.block_ids.is_empty() {
            req.num_cached_blocks = computed.block_ids.len();
        }
        for _ in 0..new_blocks {
            let b = self.pop_free();
            self.blocks[b as usize].ref_cnt = 1;
            req.block_ids.push(b);
        }
        Some(())
    }

    /// Registers `req`'s full, computed blocks in the prefix cache (call after each step).
    pub fn cache_full_blocks(&mut self, req: &mut Request) {
        if !self.enable_caching {
            return;
        }
        let num_full = (req.num_computed_tokens / self.block_size).min(req.block_ids.len());
        if num_full <= req.num_cached_blocks {
            return;
        }
        req.extend_block_hashes(num_full * self.block_size, self.block_size);
        for i in req.num_cached_blocks..num_full {
            let b = req.block_ids[i];
            let h = req.block_hashes[i];
            let block = &mut self.blocks[b as usize];
            if block.hash.is_none() {
                // Two requests may have computed the same block; the first one registered stays the hit.
                if let std::collections::hash_map::Entry::Vacant(e) = self.cached.entry(h) {
                    e.insert(b);
                    block.hash = Some(h);
                }
            }
        }
        req.num_cached_blocks = num_full;
    }

    /// Releases all of `req`'s blocks, last block first.
    pub fn free(&mut self, req: &mut Request) {
        for i in (0..req.block_ids.len()).rev() {
            let b = req.block_ids[i];
            let block = &mut self.blocks[b as usize];
            assert!(block.ref_cnt > 0, "double free of block {b}");
            block.ref_cnt -= 1;
            if block.ref_cnt == 0 {
                if block.hash.is_some() {
                    self.push_back(b);
                } else {
                    self.push_front(b);
                }
            }
        }
        req.block_ids.clear();
        req.num_cached_blocks = 0;
    }

    /// Lets `child` (same prompt, no blocks yet; `n > 1`) share `parent`'s full computed blocks by reference
    /// count, up to its last prompt token. Returns the tokens shared (the child's `num_computed_tokens`).
    pub fn fork(&mut self, parent: &Request, child: &mut Request) -> usize {
        assert!(
            child.block_ids.is_empty(),
            "fork into a request that already holds blocks"
        );
        let limit = parent
            .num_computed_tokens
            .min(child.num_tokens().saturating_sub(1));
        let shared = (limit / self.block_size).min(parent.block_ids.len());
        let tokens = shared * self.block_size;
        assert_eq!(
            parent.all_token_ids()[..tokens],
            child.all_token_ids()[..tokens],
            "fork of requests with different prefixes"
        );
        for &b in &parent.block_ids[..shared] {
            self.blocks[b as usize].ref_cnt += 1;
            child.block_ids.push(b);
        }
        child.num_computed_tokens = tokens;
        child.num_cached_blocks = parent.num_cached_blocks.min(shared);
        child.block_hashes = parent.block_hashes[..parent.block_hashes.len().min(shared)].to_vec();
        tokens
    }

    /// Checks the pool's internal consistency (free list vs reference counts vs hash table); for tests.
    pub fn check_consistency(&self) -> Result<(), String> {
        let mut seen = vec![false; self.blocks.len()];
        let (mut n, mut prev, mut cur) = (0, NIL, self.head);
        while cur != NIL {
            let b = &self.blocks[cur as usize];
            if b.ref_cnt != 0 {
                return Err(format!(
                    "block {cur} on the free list with ref count {}",
                    b.ref_cnt
                ));
            }
            if b.prev != prev || std::mem::replace(&mut seen[cur as usize], true) {
                return Err(format!("free list broken at block {cur}"));
            }
            n += 1;
            prev = cur;
            cur = b.next;
        }
        if prev != self.tail || n != self.num_free {
            return Err(format!(
                "free list holds {n} blocks, counter says {}",
                self.num_free
            ));
        }
        let zero = self.blocks.iter().filter(|b| b.ref_cnt == 0).count();
        if zero != n {
            return Err(format!("{zero} blocks have ref count 0 but {n} are free"));
        }
        for (h, &b) in &self.cached {
            if self.blocks[b as usize].hash != Some(*h) {
                return Err(format!(
                    "hash table points at block {b} which does not carry that hash"
                ));
            }
        }
        let hashed = self.blocks.iter().filter(|b| b.hash.is_some()).count();
        if hashed != self.cached.len() {
            return Err(format!(
                "{hashed} blocks carry a hash, the table has {}",
                self.cached.len()
            ));
        }
        Ok(())
    }

    fn pop_free(&mut self) -> u32 {
        let b = self.head;
        assert!(b != NIL, "block pool exhausted");
        self.unlink(b);
        if let Some(h) = self.blocks[b as usize].hash.take() {
            self.cached.remove(&h);
        }
        b
    }

    fn unlink(&mut self, b: u32) {
        let (prev, next) = (self.blocks[b as usize].prev, self.blocks[b as usize].next);
        if prev == NIL {
            self.head = next;
        } else {
            self.blocks[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.blocks[next as usize].prev = prev;
        }
        self.blocks[b as usize].prev = NIL;
        self.blocks[b as usize].next = NIL;
        self.num_free -= 1;
    }

    fn push_back(&mut self, b: u32) {
        self.blocks[b as usize].prev = self.tail;
        self.blocks[b as usize].next = NIL;
        if self.tail == NIL {
            self.head = b;
        } else {
            self.blocks[self.tail as usize].next = b;
        }
        self.tail = b;
        self.num_free += 1;
    }

    fn push_front(&mut self, b: u32) {
        self.blocks[b as usize].next = self.head;
        self.blocks[b as usize].prev = NIL;
        if self.head == NIL {
            self.tail = b;
        } else {
            self.blocks[self.head as usize].prev = b;
        }
        self.head = b;
        self.num_free += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::SamplingParams;

    fn req(id: &str, tokens: Vec<u32>) -> Request {
        Request::new(id, tokens, SamplingParams::default())
    }

    /// Allocates and "computes" the whole prompt.
    fn prefill(pool: &mut BlockPool, r: &mut Request) -> usize {
        let hit = pool.get_computed_blocks(r);
        let n = r.num_tokens() - hit.num_tokens;
        pool.allocate_slots(r, n, &hit).unwrap();
        r.num_computed_tokens = hit.num_tokens + n;
        pool.cache_full_blocks(r);
        hit.num_tokens
    }

    #[test]
    fn prefix_hit_is_capped_and_shares_blocks() {
        let mut pool = BlockPool::new(16, 4, true);
        let mut a = req("a", (0..12).collect());
        assert_eq!(prefill(&mut pool, &mut a), 0);
        assert_eq!(pool.num_free_blocks(), 13);
        // Same 12 tokens: only 2 blocks may hit (the last token must be computed).
        let mut b = req("b", (0..12).collect());
        assert_eq!(prefill(&mut pool, &mut b), 8);
        assert_eq!(b.block_ids[..2], a.block_ids[..2]);
        assert_eq!(pool.ref_count(a.block_ids[0]), 2);
        assert_ne!(b.block_ids[2], a.block_ids[2]);
        pool.free(&mut a);
        pool.free(&mut b);
        assert_eq!(pool.num_free_blocks(), 16);
        pool.check_consistency().unwrap();
        // Freed blocks stay cached: a third request hits them off the free list.
        let mut c = req("c", (0..13).collect());
        assert_eq!(prefill(&mut pool, &mut c), 12);
        assert_eq!(pool.ref_count(c.block_ids[0]), 1);
        pool.check_consistency().unwrap();
    }

    #[test]
    fn salt_and_disabled_caching_miss() {
        let mut pool = BlockPool::new(16, 4, true);
        let mut a = req("a", (0..9).collect());
        prefill(&mut pool, &mut a);
        let mut b = req("b", (0..9).collect()).with_cache_salt("x");
        assert_eq!(prefill(&mut pool, &mut b), 0);
        let mut off = BlockPool::new(16, 4, false);
        let mut a = req("a", (0..9).collect());
        prefill(&mut off, &mut a);
        off.free(&mut a);
        let mut b = req("b", (0..9).collect());
        assert_eq!(prefill(&mut off, &mut b), 0);
    }

    #[test]
    fn prompt_logprobs_never_hit() {
        let mut pool = BlockPool::new(16, 4, true);
        let mut a = req("a", (0..9).collect());
        prefill(&mut pool, &mut a);
        let sp = SamplingParams {
            prompt_logprobs: Some(1),
            ..Default::default()
        };
        let mut b = Request::new("b", (0..9).collect(), sp);
        assert_eq!(prefill(&mut pool, &mut b), 0);
    }

    #[test]
    fn out_of_blocks_changes_nothing() {
        let mut pool = BlockPool::new(4, 4, true);
        let mut a = req("a", (0..12).collect());
        prefill(&mut pool, &mut a);
        let mut b = req("b", (100..108).collect());
        assert!(pool
            .allocate_slots(&mut b, 8, &ComputedBlocks::default())
            .is_none());
        assert!(b.block_ids.is_empty());
        assert_eq!(pool.num_free_blocks(), 1);
        pool.check_consistency().unwrap();
    }

    #[test]
    fn eviction_is_lru_tail_first() {
        let mut pool = BlockPool::new(4, 2, true);
        let mut a = req("a", vec![1, 2, 3, 4, 5]);
        prefill(&mut pool, &mut a); // blocks 0,1 cached, 2 partial
        let (a0, a1, a2) = (a.block_ids[0], a.block_ids[1], a.block_ids[2]);
        pool.free(&mut a);
        // The partial (hash-less) block is reused first, then the untouched block 3, then a's tail block.
        let mut b = req("b", vec![9; 6]);
        pool.allocate_slots(&mut b, 6, &ComputedBlocks::default())
            .unwrap();
        assert_eq!(b.block_ids, vec![a2, 3, a1]);
        assert_eq!(pool.num_cached_blocks(), 1);
        // a's first block is still a hit.
        let mut c = req("c", vec![1, 2, 7]);
        let hit = pool.get_computed_blocks(&mut c);
        assert_eq!(hit.block_ids, vec![a0]);
        pool.check_consistency().unwrap();
    }

    #[test]
    fn fork_shares_full_prompt_blocks() {
        let mut pool = BlockPool::new(8, 4, true);
        let mut p = req("p", (0..10).collect());
        prefill(&mut pool, &mut p);
        let mut c = req("c", (0..10).collect());
        assert_eq!(pool.fork(&p, &mut c), 8);
        assert_eq!(pool.ref_count(p.block_ids[0]), 2);
        pool.allocate_slots(&mut c, 2, &ComputedBlocks::default())
            .unwrap();
        assert_eq!(c.block_ids.len(), 3);
        pool.free(&mut p);
        pool.free(&mut c);
        assert_eq!(pool.num_free_blocks(), 8);
        pool.check_consistency().unwrap();
    }
}
