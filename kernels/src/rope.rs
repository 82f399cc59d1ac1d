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
/// long contexts do not lose precision.
#[derive(Debug, Clone)]
pub struct RopeTable {
    inv_freq: Vec<f64>,
    style: RopeStyle,
}

impl RopeTable {
    pub fn new(head_dim: usize, theta: f64, style: RopeStyle) -> Self {
        let inv_freq = (0..head_dim / 2)
            .map(|i| 1.0 / theta.powf(2.0 * i as f64 / head_dim as f64))
            .collect();
        Self { inv_freq, style }
    }

    pub fn head_dim(&self) -> usize {
        self.inv_freq.len() * 2
    }

    pub fn style(&self) -> RopeStyle {
        self.style
    }

    /// `(cos, sin)` of each frequency at `position`.
    pub fn cos_sin(&self, position: usize) -> (Vec<f32>, Vec<f32>) {
        self.inv_freq
            .iter()
            .map(|f| {
                let angle = position as f64 * f;
                (angle.cos() as f32, angle.sin() as f32)
            })
            .unzip()
    }
}
