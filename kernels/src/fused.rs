//! A decoder layer's small ops fused for the fused projections (q|k|v and gate|up as one matmul each):
//! one CUDA kernel per op on the GPU, where a decode step is bound by the number of launches; elsewhere
//! the same arithmetic composed from the unfused ops (CPU results are what the unfused layer gives).

use candle_core::{DType, Device, Tensor, D};

use crate::{cpu, rms_norm, silu_mul, Error, Result, RopeStyle};

#[cfg(feature = "cuda")]
fn on_cuda_half(t: &Tensor) -> bool {
    t.device().is_cuda() && matches!(t.dtype(), DType::BF16 | DType::F16)
}

/// Splits a fused projection `qkv` (`[tokens, (heads + 2·kv_heads)·head_dim]`: every token's q heads,
/// then k heads, then v heads) into q `[tokens, heads, head_dim]`, k and v `[tokens, kv_heads,
/// head_dim]`, contiguous, with q and k rotated by RoPE: `cos`/`sin` are f32 `[tokens, head_dim / 2]`,
/// each token's row at its own position. The rotation runs in f32 whatever `qkv`'s type.
pub fn split_qkv_rope(
    qkv: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    heads: usize,
    kv_heads: usize,
    style: RopeStyle,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (tokens, width) = qkv.dims2()?;
    let (cos_tokens, half) = cos.dims2()?;
    let head_dim = 2 * half;
    if cos_tokens != tokens
        || sin.dims() != cos.dims()
        || cos.dtype() != DType::F32
        || sin.dtype() != DType::F32
        || half == 0
        || width != (heads + 2 * kv_heads) * head_dim
    {
        return Err(Error::Shape(format!(
            "split_qkv_rope of {:?} into {heads} + 2 x {kv_heads} heads with cos {:?} {:?} / sin {:?} {:?}",
            qkv.dims(),
            cos.dims(),
            cos.dtype(),
            sin.dims(),
            sin.dtype()
        )));
    }
    #[cfg(feature = "cuda")]
    if on_cuda_half(qkv) {
        return crate::cuda::fused::split_qkv_rope(qkv, cos, sin, heads, kv_heads, head_dim, style);
    }
    let (q, k, v) = split_qkv(qkv, heads, kv_heads, head_dim)?;
    let cos = cos
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let sin = sin
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let rotate = |x: Tensor| -> Result<Tensor> {
        let (dtype, shape) = (x.dtype(), x.shape().clone());
        let mut data = x
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        cpu::rope::apply_rows(&mut data, shape.dims()[1], head_dim, style, &cos, &sin)?;
        Ok(Tensor::from_vec(data, shape, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(qkv.device())?)
    };
    Ok((rotate(q)?, rotate(k)?, v.contiguous()?))
}

/// A fused projection `qkv` (`[tokens, (heads + 2·kv_heads)·head_dim]`) as q `[tokens, heads, head_dim]`
/// and k, v `[tokens, kv_heads, head_dim]`, unrotated: views where candle can give them, copies otherwise.
pub fn split_qkv(
    qkv: &Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (tokens, width) = qkv.dims2()?;
    if width != (heads + 2 * kv_heads) * head_dim {
        return Err(Error::Shape(format!(
            "split_qkv of {:?} into {heads} + 2 x {kv_heads} heads of {head_dim}",
            qkv.dims()
        )));
    }
    let part = |first: usize, n: usize| -> Result<Tensor> {
        Ok(qkv
            .narrow(1, first * head_dim, n * head_dim)?
            .reshape((tokens, n, head_dim))?)
    };
    Ok((
        part(0, heads)?,
        part(heads, kv_heads)?,
        part(heads + kv_heads, kv_heads)?,
    ))
}

/// `(x + h, rms_norm(x + h, weight))`: a residual add and the norm that reads it (vLLM's fused add-norm).
/// The sum is rounded to `x`'s type before the norm reads it, as the unfused pair stores it.
pub fn add_rms_norm(x: &Tensor, h: &Tensor, weight: &Tensor, eps: f32) -> Result<(Tensor, Tensor)> {
    if x.dims() != h.dims() || x.dtype() != h.dtype() || x.rank() == 0 {
        return Err(Error::Shape(format!(
            "add_rms_norm of {:?} {:?} and {:?} {:?}",
            x.dims(),
            x.dtype(),
            h.dims(),
            h.dtype()
        )));
    }
    #[cfg(feature = "cuda")]
    if on_cuda_half(x) {
        if weight.dims() != [x.dim(D::Minus1)?] {
            return Err(Error::Shape(format!(
                "add_rms_norm of {:?} with a weight of {:?}",
                x.dims(),
                weight.dims()
            )));
        }
        return crate::cuda::fused::add_rms_norm(x, h, weight, eps);
    }
    let sum = (x + h)?;
    let normed = rms_norm(&sum, weight, eps)?;
    Ok((sum, normed))
}

/// `silu(gate) * up` for a fused gate|up projection `[.., 2·width]` (gate first); returns `[.., width]`.
pub fn silu_mul_halves(gate_up: &Tensor) -> Result<Tensor> {
    let last = gate_up.dim(D::Minus1)?;
    if !last.is_multiple_of(2) {
        return Err(Error::Shape(format!(
            "silu_mul_halves of {:?}: the last dimension is not two halves",
            gate_up.dims()
        )));
    }
    #[cfg(feature = "cuda")]
    if on_cuda_half(gate_up) {
        return crate::cuda::fused::silu_mul_halves(gate_up);
    }
    let width = last / 2;
    let gate = gate_up.narrow(D::Minus1, 0, width)?.contiguous()?;
    let up = gate_up.narrow(D::Minus1, width, width)?.contiguous()?;
    silu_mul(&gate, &up)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{apply_rope, RopeTable};
    use rand::{Rng, SeedableRng};

    fn random(rng: &mut impl Rng, shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    fn same(a: &Tensor, b: &Tensor) -> bool {
        a.dims() == b.dims()
            && a.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                == b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// The split and rotation give exactly what the separate projections and `apply_rope` give.
    #[test]
    fn split_qkv_rope_is_the_unfused_split_and_rope() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for style in [RopeStyle::Half, RopeStyle::Interleaved] {
            let (heads, kv_heads, d) = (6, 2, 16);
            let table = RopeTable::new(d, 10_000.0, style);
            let positions = [0usize, 7, 8, 4095, 5000];
            let tokens = positions.len();
            let qkv = random(&mut rng, &[tokens, (heads + 2 * kv_heads) * d]);
            let (cos, sin) = table.rows(&positions);
            let cos = Tensor::from_vec(cos, (tokens, d / 2), &Device::Cpu).unwrap();
            let sin = Tensor::from_vec(sin, (tokens, d / 2), &Device::Cpu).unwrap();
            let (q, k, v) = split_qkv_rope(&qkv, &cos, &sin, heads, kv_heads, style).unwrap();
            let part = |start: usize, n: usize| {
                qkv.narrow(1, start * d, n * d)
                    .unwrap()
                    .reshape((tokens, n, d))
                    .unwrap()
            };
            let want_q = apply_rope(&part(0, heads), &positions, &table).unwrap();
            let want_k = apply_rope(&part(heads, kv_heads), &positions, &table).unwrap();
            assert!(same(&q, &want_q), "{style:?} q");
            assert!(same(&k, &want_k), "{style:?} k");
            assert!(same(&v, &part(heads + kv_heads, kv_heads)), "{style:?} v");
            assert!(q.is_contiguous() && k.is_contiguous() && v.is_contiguous());
        }
        let qkv = Tensor::zeros((2, 5 * 16), DType::F32, &Device::Cpu).unwrap();
        let cos = Tensor::zeros((2, 8), DType::F32, &Device::Cpu).unwrap();
        let err = split_qkv_rope(&qkv, &cos, &cos, 4, 1, RopeStyle::Half).unwrap_err();
        assert!(err.to_string().contains("split_qkv_rope"), "{err}");
    }

    #[test]
    fn add_rms_norm_and_silu_mul_halves_are_the_unfused_ops() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let (x, h, w) = (
            random(&mut rng, &[3, 40]),
            random(&mut rng, &[3, 40]),
            random(&mut rng, &[40]),
        );
        let (sum, normed) = add_rms_norm(&x, &h, &w, 1e-6).unwrap();
        let want_sum = (&x + &h).unwrap();
        assert!(same(&sum, &want_sum));
        assert!(same(&normed, &rms_norm(&want_sum, &w, 1e-6).unwrap()));
        assert!(add_rms_norm(&x, &w, &w, 1e-6).is_err());

        let gate_up = random(&mut rng, &[3, 2 * 24]);
        let want = silu_mul(
            &gate_up.narrow(1, 0, 24).unwrap().contiguous().unwrap(),
            &gate_up.narrow(1, 24, 24).unwrap().contiguous().unwrap(),
        )
        .unwrap();
        assert!(same(&silu_mul_halves(&gate_up).unwrap(), &want));
        assert!(silu_mul_halves(&random(&mut rng, &[2, 7])).is_err());
    }
}
