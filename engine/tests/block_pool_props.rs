//! Property test of the block pool: thousands of random allocate / append / free / prefix-hit / fork / abort
//! operations from a seeded RNG, against a model of who owns what and what each block's slots hold.

use std::collections::HashMap;

use ember_engine::{BlockPool, ComputedBlocks, Request, SamplingParams};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

struct Model {
    pool: BlockPool,
    bs: usize,
    live: HashMap<u64, Request>,
    /// What each cache slot holds, as written by the request that computed it.
    kv: Vec<Vec<Option<u32>>>,
}

impl Model {
    /// "Computes" `n` tokens of `r` from its `num_computed_tokens`: writes them into its slots. A request
    /// never writes into a block another live request holds.
    fn compute(&mut self, id: u64, n: usize) {
        let r = self.live.get_mut(&id).unwrap();
        for pos in r.num_computed_tokens..r.num_computed_tokens + n {
            let b = r.block_ids[pos / self.bs];
            assert_eq!(
                self.pool.ref_count(b),
                1,
                "request {id} writes into shared block {b}"
            );
            self.kv[b as usize][pos % self.bs] = Some(r.all_token_ids()[pos]);
        }
        r.num_computed_tokens += n;
        self.pool.cache_full_blocks(r);
    }

    fn check(&self) {
        self.pool.check_consistency().unwrap();
        let mut owners: HashMap<u32, u32> = HashMap::new();
        for r in self.live.values() {
            assert!(r.block_ids.len() * self.bs >= r.num_computed_tokens);
            let mut own = r.block_ids.clone();
            own.sort_unstable();
            own.dedup();
            assert_eq!(
                own.len(),
                r.block_ids.len(),
                "a request holds a block twice"
            );
            for &b in &r.block_ids {
                *owners.entry(b).or_default() += 1;
            }
            // Every computed slot holds this request's token (shared blocks hold the same prefix).
            for pos in 0..r.num_computed_tokens {
                let b = r.block_ids[pos / self.bs] as usize;
                assert_eq!(
                    self.kv[b][pos % self.bs],
                    Some(r.all_token_ids()[pos]),
                    "stale KV at {pos}"
                );
            }
        }
        for b in 0..self.pool.num_blocks() as u32 {
            let n = owners.get(&b).copied().unwrap_or(0);
            assert_eq!(self.pool.ref_count(b), n, "block {b}: ref count vs owners");
            if n > 1 {
                // Shared blocks are full and computed by every owner.
                for r in self.live.values().filter(|r| r.block_ids.contains(&b)) {
                    let i = r.block_ids.iter().position(|&x| x == b).unwrap();
                    assert!(
                        (i + 1) * self.bs <= r.num_computed_tokens,
                        "shared block {b} is not full"
                    );
                }
            }
        }
        assert_eq!(
            self.pool.num_free_blocks() + owners.len(),
            self.pool.num_blocks()
        );
    }
}

fn run(seed: u64, num_blocks: usize, bs: usize, caching: bool, ops: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut m = Model {
        pool: BlockPool::new(num_blocks, bs, caching),
        bs,
        live: HashMap::new(),
        kv: vec![vec![None; bs]; num_blocks],
    };
    // A few shared prefixes so prompts hit each other.
    let prefixes: Vec<Vec<u32>> = (0..4)
        .map(|p| (0..3 * bs as u32 + 5).map(|t| p * 1000 + t).collect())
        .collect();
    let mut next_id = 0u64;
    let (mut hits, mut forks) = (0usize, 0usize);
    for _ in 0..ops {
        match rng.random_range(0..100) {
            // New request: a shared prefix cut at a random point plus a random tail, prefilled in one go.
            0..=29 => {
                let pre = &prefixes[rng.random_range(0..prefixes.len())];
                let mut prompt = pre[..rng.random_range(1..=pre.len())].to_vec();
                for _ in 0..rng.random_range(0..2 * bs) {
                    prompt.push(rng.random_range(5000..5010));
                }
                let salt = rng.random_bool(0.1);
                let mut r = Request::new(format!("r{next_id}"), prompt, SamplingParams::default());
                if salt {
                    r = r.with_cache_salt("s");
                }
                let hit = m.pool.get_computed_blocks(&mut r);
                assert!(
                    hit.num_tokens < r.num_tokens(),
                    "a hit must leave the last token to compute"
                );
                assert_eq!(hit.num_tokens, hit.block_ids.len() * bs);
                for (i, &b) in hit.block_ids.iter().enumerate() {
                    let want: Vec<Option<u32>> = r.all_token_ids()[i * bs..(i + 1) * bs]
                        .iter()
                        .map(|&t| Some(t))
                        .collect();
                    assert_eq!(
                        m.kv[b as usize], want,
                        "prefix hit on a block with other tokens"
                    );
                }
                let n = r.num_tokens() - hit.num_tokens;
                let free_before = m.pool.num_free_blocks();
                if m.pool.allocate_slots(&mut r, n, &hit).is_none() {
                    assert_eq!(m.pool.num_free_blocks(), free_before);
                    assert!(r.block_ids.is_empty());
                    continue;
                }
                hits += usize::from(hit.num_tokens > 0);
                r.num_computed_tokens = hit.num_tokens;
                let id = next_id;
                next_id += 1;
                m.live.insert(id, r);
                m.compute(id, n);
            }
            // Decode: one more token for a random live request.
            30..=74 => {
                let Some(&id) = pick(&mut rng, &m.live) else {
                    continue;
                };
                let r = m.live.get_mut(&id).unwrap();
                r.append_output_token(rng.random_range(0..50));
                if m.pool
                    .allocate_slots(r, 1, &ComputedBlocks::default())
                    .is_none()
                {
                    // Out of blocks: the scheduler would preempt; here free the request.
                    let mut r = m.live.remove(&id).unwrap();
                    m.pool.free(&mut r);
                    continue;
                }
                m.compute(id, 1);
            }
            // Fork (n > 1): a child shares the parent's full prompt blocks.
            75..=79 => {
                let Some(&pid) = pick(&mut rng, &m.live) else {
                    continue;
                };
                let parent = m.live[&pid].clone();
                let mut child = Request::new(
                    format!("r{next_id}"),
                    parent.prompt_token_ids().to_vec(),
                    SamplingParams::default(),
                );
                let shared = m.pool.fork(&parent, &mut child);
                let rest = child.num_tokens() - shared;
                if m.pool
                    .allocate_slots(&mut child, rest, &ComputedBlocks::default())
                    .is_none()
                {
                    m.pool.free(&mut child);
                    continue;
                }
                forks += usize::from(shared > 0);
                let id = next_id;
                next_id += 1;
                m.live.insert(id, child);
                m.compute(id, rest);
            }
            // Finish or abort.
            _ => {
                let Some(&id) = pick(&mut rng, &m.live) else {
                    continue;
                };
                let mut r = m.live.remove(&id).unwrap();
                m.pool.free(&mut r);
                assert!(r.block_ids.is_empty());
            }
        }
        m.check();
        assert!(m.pool.usage() <= 1.0);
    }
    for (_, mut r) in m.live.drain() {
        m.pool.free(&mut r);
    }
    assert_eq!(
        m.pool.num_free_blocks(),
        num_blocks,
        "every block back on the free list"
    );
    m.pool.check_consistency().unwrap();
    if caching {
        assert!(
            hits > 0,
            "seed {seed}: the workload never hit the prefix cache"
        );
    } else {
        assert_eq!(hits, 0);
    }
    assert!(forks > 0);
}

fn pick<'a>(rng: &mut ChaCha8Rng, live: &'a HashMap<u64, Request>) -> Option<&'a u64> {
    if live.is_empty() {
        return None;
    }
    let mut ids: Vec<&u64> = live.keys().collect();
    ids.sort_unstable();
    Some(ids[rng.random_range(0..ids.len())])
}

#[test]
fn random_ops_keep_ownership_and_ref_counts_consistent() {
    for seed in 0..8 {
        run(seed, 64, 4, true, 3000);
    }
}

#[test]
fn random_ops_under_memory_pressure() {
    for seed in 100..106 {
        run(seed, 24, 4, true, 3000);
    }
}

#[test]
fn random_ops_block_size_one_and_sixteen() {
    run(200, 256, 1, true, 2000);
    run(201, 48, 16, true, 2000);
}

#[test]
fn random_ops_without_prefix_caching() {
    run(300, 64, 4, false, 3000);
}
