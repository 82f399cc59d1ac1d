use crate::KvCacheSpec;

/// Copies each token's keys and values (`[tokens, num_kv_heads, head_dim]`) into its cache slot.
pub fn write_kv(
    k_cache: &mut [f32],
    v_cache: &mut [f32],
    spec: &KvCacheSpec,
    k: &[f32],
    v: &[f32],
    slot_mapping: &[usize],
) {
    let d = spec.head_dim;
    for (t, &slot) in slot_mapping.iter().enumerate() {
        for h in 0..spec.num_kv_heads {
            let src = (t * spec.num_kv_heads + h) * d;
            let dst = spec.offset(slot, h);
            k_cache[dst..dst + d].copy_from_slice(&k[src..src + d]);
            v_cache[dst..dst + d].copy_from_slice(&v[src..src + d]);
        }
    }
}
