//! The loop every SIMD kernel family runs over the interleaved layout: each group of eight weight rows
//! meets the activation rows a few at a time, through a group kernel compiled for a fixed number of rows.

/// Runs `$call` (a group kernel for `R` activation rows, `$g` the group's first byte and `$tile` the
/// rows' blocks) over every group of `$w` and the activation rows up to `$max` (at most 8) at a time, and
/// hands each result to `$store::<R>(result, first row, group index, $out)`.
macro_rules! over_groups {
    ($max:literal, $w:expr, $nb:expr, $gbb:expr, $acts:expr, $out:expr, $store:ident,
     |$g:ident, $tile:ident| $call:expr) => {{
        let acts = $acts;
        $crate::cpu::quant::groups::check_rows($nb, acts);
        for (gi, gdata) in $w.chunks_exact($nb * $gbb).enumerate() {
            let $g = gdata.as_ptr();
            let mut r0 = 0;
            while r0 < acts.len() {
                let n = (acts.len() - r0).min($max);
                macro_rules! run {
                    ($r:literal) => {{
                        let mut $tile = [acts[r0]; $r];
                        $tile.copy_from_slice(&acts[r0..r0 + $r]);
                        $store::<$r>($call, r0, gi, $out)
                    }};
                }
                match n {
                    1 => run!(1),
                    2 => run!(2),
                    3 => run!(3),
                    4 => run!(4),
                    5 => run!(5),
                    6 => run!(6),
                    7 => run!(7),
                    _ => run!(8),
                }
                r0 += n;
            }
        }
    }};
}
pub(super) use over_groups;

/// Panics unless every activation row covers the weight row's `nb` blocks (the kernels then read
/// them unchecked).
pub(super) fn check_rows<A>(nb: usize, acts: &[&[A]]) {
    for a in acts {
        assert!(a.len() >= nb, "activation row shorter than the weight row");
    }
}

/// Block `blk` of each of the `R` activation rows.
///
/// # Safety
/// Every row must hold more than `blk` blocks (see [`check_rows`]).
#[inline(always)]
pub(super) unsafe fn block_of<'a, B, const R: usize>(
    acts: &[&'a [B]; R],
    blk: usize,
) -> [&'a B; R] {
    std::array::from_fn(|r| acts[r].get_unchecked(blk))
}
