/// How rotary embeddings pair up the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Dimension `i` rotates with `i + head_dim / 2` (Hugging Face's `rotate_half`, GGML's NEOX mode).
    Half,
    /// Dimension `2i` rotates with `2i + 1` (GGML's normal mode, used by llama GGUFs whose Q/K rows the
    /// converter permuted).
    Interleaved,
}

/// Inverse frequencies for rotary embeddings; angles are computed in f64 from exact integer positions so
/// long contexts do not lose precision. The cos/sin of the first [`CACHED_POSITIONS`] positions are
/// computed once here (every layer of every step needs them; computing them per layer was ~1% of a
/// prefill), later ones on demand.
#[derive(Debug, Clone)]
pub struct RopeTable {
    inv_freq: Vec<f64>,
    style: RopeStyle,
    /// Per cached position: `head_dim / 2` cosines then as many sines.
    cached: Vec<f32>,
}

/// Positions whose cos/sin a [`RopeTable`] keeps (1 MiB for a 64-dimension head).
pub const CACHED_POSITIONS: usize = 4096;

impl RopeTable {
    pub fn new(head_dim: usize, theta: f64, style: RopeStyle) -> Self {
        let inv_freq: Vec<f64> = (0..head_dim / 2)
            .map(|i| 1.0 / theta.powf(2.0 * i as f64 / head_dim as f64))
            .collect();
        let mut cached = Vec::with_capacity(CACHED_POSITIONS * head_dim);
        for position in 0..CACHED_POSITIONS {
            let (cos, sin) = angles(&inv_freq, position);
            cached.extend(cos);
            cached.extend(sin);
        }
        Self {
            inv_freq,
            style,
            cached,
        }
    }

    pub fn head_dim(&self) -> usize {
        self.inv_freq.len() * 2
    }

    pub fn style(&self) -> RopeStyle {
        self.style
    }

    /// `f(cos, sin)` with the cos and sin of each frequency at `position`.
    pub fn with_cos_sin<R>(&self, position: usize, f: impl FnOnce(&[f32], &[f32]) -> R) -> R {
        let half = self.inv_freq.len();
        if position < CACHED_POSITIONS {
            let both = &self.cached[position * 2 * half..(position + 1) * 2 * half];
            f(&both[..half], &both[half..])
        } else {
            let (cos, sin) = angles(&self.inv_freq, position);
            f(&cos, &sin)
        }
    }

    /// The cos and sin rows of `positions`, one `head_dim / 2` row per position (flattened
    /// `[positions, head_dim / 2]` each): per-token tables for kernels that rotate a whole step at once.
    pub fn rows(&self, positions: &[usize]) -> (Vec<f32>, Vec<f32>) {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            self.with_cos_sin(p, |c, s| {
                cos.extend_from_slice(c);
                sin.extend_from_slice(s);
            });
        }
        (cos, sin)
    }
}

fn angles(inv_freq: &[f64], position: usize) -> (Vec<f32>, Vec<f32>) {
    inv_freq
        .iter()
        .map(|f| {
            let angle = position as f64 * f;
            (angle.cos() as f32, angle.sin() as f32)
        })
        .unzip()
}
