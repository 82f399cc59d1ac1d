use crate::{Error, Result, RopeStyle, RopeTable};

/// Rotates `x` (`[tokens, heads, head_dim]`) in place.
pub fn apply(x: &mut [f32], heads: usize, positions: &[usize], table: &RopeTable) -> Result<()> {
    let d = table.head_dim();
    let half = d / 2;
    if x.len() != positions.len() * heads * d {
        return Err(Error::Shape(format!(
            "rope: {} values for {} tokens x {heads} heads x {d}",
            x.len(),
            positions.len()
        )));
    }
    for (t, &pos) in positions.iter().enumerate() {
        let (cos, sin) = table.cos_sin(pos);
        for h in 0..heads {
            let row = &mut x[(t * heads + h) * d..(t * heads + h + 1) * d];
            for i in 0..half {
                let (a, b) = match table.style() {
                    RopeStyle::Half => (i, i + half),
                    RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                };
                let (x0, x1) = (row[a], row[b]);
                row[a] = x0 * cos[i] - x1 * sin[i];
                row[b] = x0 * sin[i] + x1 * cos[i];
            }
        }
    }
    Ok(())
}
