//! Rotary embeddings on accelerators: one step's cos/sin rows (one per token, at its own position) built
//! once on the host from the f64 [`RopeTable`] and uploaded once, then applied per layer by candle's
//! rotary kernels (`rope` for [`RopeStyle::Half`], `rope_i` for [`RopeStyle::Interleaved`]) in f32.
//! The CPU keeps ember's own kernel (`ember_kernels::apply_rope`).

use candle_core::{DType, Device, Tensor};
use ember_kernels::{RopeStyle, RopeTable};

use crate::{Error, Result};

pub struct StepRope {
    /// `[tokens, 1, head_dim / 2]` f32: candle's "batched" cos/sin with the token as the batch.
    cos: Tensor,
    sin: Tensor,
    style: RopeStyle,
}

impl StepRope {
    pub fn new(table: &RopeTable, positions: &[usize], device: &Device) -> Result<Self> {
        let half = table.head_dim() / 2;
        let (cos, sin) = table.rows(positions);
        let shape = (positions.len(), 1, half);
        Ok(Self {
            cos: Tensor::from_vec(cos, shape, device)?,
            sin: Tensor::from_vec(sin, shape, device)?,
            style: table.style(),
        })
    }

    /// Tables for `capacity` tokens, all at position 0, to be rewritten in place by
    /// [`StepRope::refill`]: a CUDA graph reads them from the same device memory at every launch.
    pub fn persistent(table: &RopeTable, capacity: usize, device: &Device) -> Result<Self> {
        Self::new(table, &vec![0; capacity], device)
    }

    /// Rewrites the rows in place for `positions` (at most the capacity; the rows past them are left as
    /// they are: padding nobody reads).
    pub fn refill(&self, table: &RopeTable, positions: &[usize]) -> Result<()> {
        let (capacity, _, half) = self.cos.dims3()?;
        if positions.len() > capacity || table.head_dim() != 2 * half || table.style() != self.style
        {
            return Err(Error::Batch(format!(
                "rope rows for {} positions into tables for {capacity} of head_dim {}",
                positions.len(),
                2 * half
            )));
        }
        if positions.is_empty() {
            return Ok(());
        }
        let (cos, sin) = table.rows(positions);
        let shape = (positions.len(), 1, half);
        let device = self.cos.device();
        self.cos
            .slice_set(&Tensor::from_vec(cos, shape, device)?, 0, 0)?;
        self.sin
            .slice_set(&Tensor::from_vec(sin, shape, device)?, 0, 0)?;
        Ok(())
    }

    /// The step's cos and sin as `[tokens, head_dim / 2]` (views, no copy) and the pairing style: what
    /// `ember_kernels::split_qkv_rope` rotates with.
    pub fn rows(&self) -> Result<(Tensor, Tensor, RopeStyle)> {
        let (tokens, _, half) = self.cos.dims3()?;
        Ok((
            self.cos.reshape((tokens, half))?,
            self.sin.reshape((tokens, half))?,
            self.style,
        ))
    }

    /// Rotates `x` (`[tokens, heads, head_dim]`, any float dtype); returns the same shape and dtype. The
    /// rotation runs in f32 so bf16 models lose no precision in the angles.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let (tokens, heads, head_dim) = x.dims3()?;
        if tokens != self.cos.dim(0)? || head_dim != 2 * self.cos.dim(2)? {
            return Err(Error::Batch(format!(
                "rope over {:?} with tables for {} tokens of head_dim {}",
                x.dims(),
                self.cos.dim(0)?,
                2 * self.cos.dim(2)?
            )));
        }
        let dtype = x.dtype();
        // [tokens, heads, 1, head_dim]: candle's (batch, heads, seq, dim) with one position per batch row.
        let xf = x
            .to_dtype(DType::F32)?
            .contiguous()?
            .reshape((tokens, heads, 1, head_dim))?;
        let y = match self.style {
            RopeStyle::Half => candle_nn::rotary_emb::rope(&xf, &self.cos, &self.sin)?,
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&xf, &self.cos, &self.sin)?,
        };
        Ok(y.reshape((tokens, heads, head_dim))?.to_dtype(dtype)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Refilled tables (rewritten in place: `refill` takes `&self`) equal fresh ones for the same
    /// positions, and more positions than rows are refused.
    #[test]
    fn refill_rewrites_the_rows_in_place() {
        let table = RopeTable::new(8, 10_000.0, RopeStyle::Half);
        let rope = StepRope::persistent(&table, 5, &Device::Cpu).unwrap();
        let positions = [3usize, 900, 0];
        rope.refill(&table, &positions).unwrap();
        let fresh = StepRope::new(&table, &positions, &Device::Cpu).unwrap();
        let rows = |t: &Tensor| {
            t.narrow(0, 0, 3)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        assert_eq!(rows(&rope.cos), rows(&fresh.cos));
        assert_eq!(rows(&rope.sin), rows(&fresh.sin));
        assert_eq!(rope.cos.dims(), &[5, 1, 4]);
        assert!(rope.refill(&table, &[1; 6]).is_err());
    }

    /// candle's kernels with per-token tables compute what ember's CPU rope computes, in both styles
    /// (candle's CPU implementation indexes the tables as its CUDA kernels do).
    #[test]
    fn matches_the_cpu_kernel() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for style in [RopeStyle::Half, RopeStyle::Interleaved] {
            let table = RopeTable::new(16, 10_000.0, style);
            let positions = [0usize, 5, 6, 300, 1, 4095];
            let data: Vec<f32> = (0..positions.len() * 3 * 16)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let x = Tensor::from_vec(data, (positions.len(), 3, 16), &Device::Cpu).unwrap();
            let want = ember_kernels::apply_rope(&x, &positions, &table).unwrap();
            let got = StepRope::new(&table, &positions, &Device::Cpu)
                .unwrap()
                .apply(&x)
                .unwrap();
            let diff = (want - got)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-5, "{style:?}: max difference {diff}");
        }
    }
}
