//! The tensor-facing side of the fused small ops: contiguous f32 CPU tensors go through
//! `cpu::rowwise`; any other device or dtype through candle-nn's ops (its CUDA kernels on the GPU).

use candle_core::{DType, Device, Tensor, D};

use crate::{cpu, with_cpu_f32, Error, Result};

fn is_cpu_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// RMSNorm over the last dimension of `x` (any rank) with `weight` (`[last dim]`).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    let dim = x.dim(D::Minus1)?;
    if weight.dims() != [dim] {
        return Err(Error::Shape(format!(
            "rms_norm of {:?} with a weight of {:?}",
            x.dims(),
            weight.dims()
        )));
    }
    if x.elem_count() == 0 {
        return Ok(x.clone());
    }
    if is_cpu_f32(x) && is_cpu_f32(weight) {
        let (x, weight) = (x.contiguous()?, weight.contiguous()?);
        let mut out = vec![0f32; x.elem_count()];
        with_cpu_f32(&x, |xs| {
            with_cpu_f32(&weight, |ws| {
                cpu::rowwise::rms_norm(xs, ws, eps, &mut out);
                Ok(())
            })
        })?;
        return Ok(Tensor::from_vec(out, x.shape(), &Device::Cpu)?);
    }
    Ok(candle_nn::ops::rms_norm(
        &x.contiguous()?,
        &weight.to_dtype(x.dtype())?,
        eps,
    )?)
}

/// `silu(gate) * up` elementwise (same shapes).
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if gate.dims() != up.dims() {
        return Err(Error::Shape(format!(
            "silu_mul of {:?} and {:?}",
            gate.dims(),
            up.dims()
        )));
    }
    if is_cpu_f32(gate) && is_cpu_f32(up) {
        let (gate, up) = (gate.contiguous()?, up.contiguous()?);
        let mut out = vec![0f32; gate.elem_count()];
        with_cpu_f32(&gate, |g| {
            with_cpu_f32(&up, |u| {
                cpu::rowwise::silu_mul(g, u, &mut out);
                Ok(())
            })
        })?;
        return Ok(Tensor::from_vec(out, gate.shape(), &Device::Cpu)?);
    }
    Ok((candle_nn::ops::silu(gate)? * up)?)
}
