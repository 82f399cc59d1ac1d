//! Block hashes for automatic prefix caching: a full block's hash covers its own tokens and, through its
//! parent's hash, every token before it, so equal hashes mean equal prefixes. SHA-256 (truncated to 128 bits)
//! keeps hashes stable across runs and processes, unlike std's randomly seeded hasher.

use sha2::{Digest, Sha256};

/// The hash of one full block and everything before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockHash(pub u128);

/// Hashes one full block given its parent's hash (`None` for the first block) and extra keys that must
/// also match for a hit (the cache salt; only the first block carries it, the chain covers the rest).
pub fn hash_block(parent: Option<BlockHash>, tokens: &[u32], extra: Option<&str>) -> BlockHash {
    let mut h = Sha256::new();
    match parent {
        Some(p) => {
            h.update([1u8]);
            h.update(p.0.to_le_bytes());
        }
        None => h.update([0u8]),
    }
    h.update((tokens.len() as u64).to_le_bytes());
    for t in tokens {
        h.update(t.to_le_bytes());
    }
    if let Some(extra) = extra {
        h.update([2u8]);
        h.update((extra.len() as u64).to_le_bytes());
        h.update(extra.as_bytes());
    }
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    BlockHash(u128::from_le_bytes(bytes))
}

/// Extends `hashes` so it covers every full block of `tokens`.
pub fn extend_block_hashes(
    hashes: &mut Vec<BlockHash>,
    tokens: &[u32],
    block_size: usize,
    salt: Option<&str>,
) {
    let num_full = tokens.len() / block_size;
    while hashes.len() < num_full {
        let i = hashes.len();
        let parent = hashes.last().copied();
        let extra = if i == 0 { salt } else { None };
        hashes.push(hash_block(
            parent,
            &tokens[i * block_size..(i + 1) * block_size],
            extra,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_depends_on_prefix_and_salt() {
        let a = [1u32, 2, 3, 4, 5, 6, 7, 8];
        let b = [9u32, 2, 3, 4, 5, 6, 7, 8];
        let (mut ha, mut hb, mut hs) = (vec![], vec![], vec![]);
        extend_block_hashes(&mut ha, &a, 4, None);
        extend_block_hashes(&mut hb, &b, 4, None);
        extend_block_hashes(&mut hs, &a, 4, Some("salt"));
        assert_eq!(ha.len(), 2);
        // Same second block tokens, different first block: different hashes all along the chain.
        assert_ne!(ha[1], hb[1]);
        assert_ne!(ha[0], hs[0]);
        assert_ne!(ha[1], hs[1]);
        // Stable: recomputing gives the same values; partial blocks are not hashed.
        let mut again = vec![];
        extend_block_hashes(&mut again, &a[..7], 4, None);
        assert_eq!(again, ha[..1]);
        extend_block_hashes(&mut again, &a, 4, None);
        assert_eq!(again, ha);
    }
}
