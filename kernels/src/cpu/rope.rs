use crate::{Error, Result, RopeStyle, RopeTable};

/// Rotates `x` (`[tokens, heads, head_dim]`) in place.
pub fn apply(x: &mut [f32], heads: usize, positions: &[usize], table: &RopeTable) -> Result<()> {
    let d = table.head_dim();
    if x.len() != positions.len() * heads * d {
        return Err(Error::Shape(format!(
            "rope: {} values for {} tokens x {heads} heads x {d}",
            x.len(),
            positions.len()
        )));
    }
    for (t, &pos) in positions.iter().enumerate() {
        table.with_cos_sin(pos, |cos, sin| {
            rotate_token(x, t, heads, table.style(), cos, sin)
        });
    }
    Ok(())
}

/// Rotates `x` (`[tokens, heads, head_dim]`) in place with each token's own `cos` / `sin` rows
/// (`[tokens, head_dim / 2]` each, flattened).
pub fn apply_rows(
    x: &mut [f32],
    heads: usize,
    head_dim: usize,
    style: RopeStyle,
    cos: &[f32],
    sin: &[f32],
) -> Result<()> {
    let half = head_dim / 2;
    let tokens = cos.len() / half.max(1);
    if half == 0
        || cos.len() != tokens * half
        || sin.len() != cos.len()
        || x.len() != tokens * heads * head_dim
    {
        return Err(Error::Shape(format!(
            "rope: {} values for {heads} heads of {head_dim} with {} cos / {} sin values",
            x.len(),
            cos.len(),
            sin.len()
        )));
    }
    for t in 0..tokens {
        let rows = t * half..(t + 1) * half;
        rotate_token(x, t, heads, style, &cos[rows.clone()], &sin[rows]);
    }
    Ok(())
}

/// Rotates every head of token `t` with its position's `cos` / `sin` (one per frequency).
fn rotate_token(x: &mut [f32], t: usize, heads: usize, style: RopeStyle, cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    let d = 2 * half;
    for h in 0..heads {
        let row = &mut x[(t * heads + h) * d..(t * heads + h + 1) * d];
        for i in 0..half {
            let (a, b) = match style {
                RopeStyle::Half => (i, i + half),
                RopeStyle::Interleaved => (2 * i, 2 * i + 1),
            };
            let (x0, x1) = (row[a], row[b]);
            row[a] = x0 * cos[i] - x1 * sin[i];
            row[b] = x0 * sin[i] + x1 * cos[i];
        }
    }
}
