//! The loop every SIMD kernel family runs over the interleaved layout: each group of eight weight rows
//! meets the activation rows a few at a time, through a group kernel compiled for a fixed number of rows.

/// The 32-element types as the const parameter of a family's `small_group` kernel.
pub(super) const Q4_0: u8 = 0;
pub(super) const Q4_1: u8 = 1;
pub(super) const Q5_0: u8 = 2;
pub(super) const Q8_0: u8 = 3;

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

/// A kernel family's two entry points, `dot_small_groups` and `dot_k_groups`, compiled with the family's
/// target features (`$features`; `$requires` words the safety condition). They call the group kernels
/// (`small_group`, `q4k_group`, `q6k_group`) and `store` of the module that invokes this: eight activation rows at a time for the 32-element types (the weight unpacking shared
/// by more rows), four for the K-quants (their per-row sums need more registers; eight measured 4-7%
/// slower with AVX2).
macro_rules! group_entry_points {
    ($features:literal, $requires:literal) => {
        /// Groups of a 32-element type (`w`: whole groups of `nb` group blocks) against up to eight
        /// activation rows: `out` row `i`, column `j` = weight row `j` · activation row `i`
        /// (`out.cols()` weight rows, the last group possibly padded).
        ///
        /// # Safety
        #[doc = $requires]
        #[target_feature(enable = $features)]
        pub unsafe fn dot_small_groups(
            ty: QuantType,
            w: &[u8],
            nb: usize,
            acts: &[&[Q8Block]],
            out: &mut OutTile,
        ) {
            let gbb = group_block_bytes(ty);
            use $crate::cpu::quant::groups::{over_groups, Q4_0, Q4_1, Q5_0, Q8_0};
            macro_rules! small {
                ($t:ident) => {
                    over_groups!(8, w, nb, gbb, acts, out, store, |g, t| {
                        small_group::<$t, _>(g, nb, t)
                    })
                };
            }
            match ty {
                QuantType::Q4_0 => small!(Q4_0),
                QuantType::Q4_1 => small!(Q4_1),
                QuantType::Q5_0 => small!(Q5_0),
                QuantType::Q8_0 => small!(Q8_0),
                QuantType::Q4K | QuantType::Q6K => unreachable!("K-quants use dot_k_groups"),
            }
        }

        /// Groups of a K-quant type against up to four activation rows at a time, as
        /// [`dot_small_groups`].
        ///
        /// # Safety
        #[doc = $requires]
        #[target_feature(enable = $features)]
        pub unsafe fn dot_k_groups(
            ty: QuantType,
            w: &[u8],
            nb: usize,
            acts: &[&[Q8KBlock]],
            out: &mut OutTile,
        ) {
            use $crate::cpu::quant::groups::over_groups;
            let gbb = group_block_bytes(ty);
            match ty {
                QuantType::Q4K => over_groups!(4, w, nb, gbb, acts, out, store, |g, t| {
                    q4k_group(g, nb, t)
                }),
                QuantType::Q6K => over_groups!(4, w, nb, gbb, acts, out, store, |g, t| {
                    q6k_group(g, nb, t)
                }),
                _ => unreachable!("32-element types use dot_small_groups"),
            }
        }
    };
}
pub(super) use group_entry_points;

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
