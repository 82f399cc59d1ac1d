//! Launches of `fused.cu`: the small ops of a decoder layer in one kernel each (the tensor-facing
//! functions and their CPU forms are in `crate::fused`).

use super::{cuda_err, dtype_name, launch_err, ptx, MODULE_FUSED};
use crate::{Error, Result, RopeStyle};
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDevice, CudaStorage};
use candle_core::{DType, Device, Shape, Storage, Tensor};

fn cuda_device(t: &Tensor) -> Result<&CudaDevice> {
    match t.device() {
        Device::Cuda(dev) => Ok(dev),
        other => Err(Error::Unsupported(format!("a CUDA kernel on {other:?}"))),
    }
}

/// The kernel `{op}_{dtype}` of the fused module and its name (a macro: candle does not export the
/// function handle's type, so it can only be inferred).
macro_rules! function {
    ($dev:expr, $op:literal, $dtype:expr) => {{
        let name = format!("{}_{}", $op, dtype_name($dtype)?);
        let func = $dev.get_or_load_custom_func(&name, MODULE_FUSED, ptx::FUSED)?;
        (func, name)
    }};
}

/// A new tensor of `shape` whose every element the caller's kernel writes.
fn uninit(dev: &CudaDevice, dtype: DType, shape: impl Into<Shape>) -> Result<Tensor> {
    let shape = shape.into();
    let n = shape.elem_count().max(1);
    // SAFETY: each kernel below writes every element of its outputs (the poisoned-output tests check it).
    let storage = match dtype {
        DType::BF16 => CudaStorage::wrap_cuda_slice(
            unsafe { dev.alloc::<half::bf16>(n) }.map_err(cuda_err)?,
            dev.clone(),
        ),
        DType::F16 => CudaStorage::wrap_cuda_slice(
            unsafe { dev.alloc::<half::f16>(n) }.map_err(cuda_err)?,
            dev.clone(),
        ),
        other => return Err(Error::Unsupported(format!("fused CUDA ops in {other:?}"))),
    };
    Ok(Tensor::from_storage(
        Storage::Cuda(storage),
        shape,
        candle_core::op::BackpropOp::none(),
        false,
    ))
}

/// Runs `body` with the CUDA slices (from their start offsets) of contiguous tensors of element type `$t`.
macro_rules! with_slices {
    ($t:ty, [$($tensor:ident),*], $body:expr) => {{
        $(
            let $tensor = $tensor.contiguous()?;
            let (store, layout) = $tensor.storage_and_layout();
            let Storage::Cuda(store) = &*store else {
                return Err(Error::Unsupported("a CUDA kernel on a non-CUDA tensor".into()));
            };
            let $tensor = store.as_cuda_slice::<$t>()?.slice(layout.start_offset()..);
        )*
        $body
    }};
}

/// See [`crate::split_qkv_rope`]; shapes were checked by the caller.
pub(crate) fn split_qkv_rope(
    qkv: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    style: RopeStyle,
) -> Result<(Tensor, Tensor, Tensor)> {
    let dev = cuda_device(qkv)?;
    let tokens = qkv.dim(0)?;
    let dtype = qkv.dtype();
    let q = uninit(dev, dtype, (tokens, heads, head_dim))?;
    let k = uninit(dev, dtype, (tokens, kv_heads, head_dim))?;
    let v = uninit(dev, dtype, (tokens, kv_heads, head_dim))?;
    if tokens == 0 {
        return Ok((q, k, v));
    }
    let (func, name) = function!(dev, "split_qkv_rope", dtype);
    let cfg = LaunchConfig {
        grid_dim: (tokens as u32, (heads + 2 * kv_heads) as u32, 1),
        block_dim: ((head_dim / 2).min(128) as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    let (heads_i, kv_heads_i, head_dim_i) = (heads as i32, kv_heads as i32, head_dim as i32);
    let interleaved = i32::from(style == RopeStyle::Interleaved);
    macro_rules! run {
        ($t:ty) => {{
            let (q_out, k_out, v_out) = (&q, &k, &v);
            with_slices!($t, [q_out, k_out, v_out, qkv], {
                with_slices!(f32, [cos, sin], {
                    let mut b = func.builder();
                    b.arg(&q_out)
                        .arg(&k_out)
                        .arg(&v_out)
                        .arg(&qkv)
                        .arg(&cos)
                        .arg(&sin)
                        .arg(&heads_i)
                        .arg(&kv_heads_i)
                        .arg(&head_dim_i)
                        .arg(&interleaved);
                    // SAFETY: arguments match fused.cu; the shapes were checked against each other.
                    unsafe { b.launch(cfg) }.map_err(|e| launch_err(&name, e))?;
                })
            })
        }};
    }
    match dtype {
        DType::BF16 => run!(half::bf16),
        _ => run!(half::f16),
    }
    Ok((q, k, v))
}

/// Threads per row of `add_rms_norm` (`NORM_THREADS` in fused.cu).
const NORM_THREADS: u32 = 256;

/// See [`crate::add_rms_norm`]; shapes were checked by the caller.
pub(crate) fn add_rms_norm(
    x: &Tensor,
    h: &Tensor,
    weight: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor)> {
    let dev = cuda_device(x)?;
    let dtype = x.dtype();
    let dim = x.dim(candle_core::D::Minus1)?;
    let rows = x.elem_count() / dim.max(1);
    let residual = uninit(dev, dtype, x.shape().clone())?;
    let out = uninit(dev, dtype, x.shape().clone())?;
    if rows == 0 || dim == 0 {
        return Ok((residual, out));
    }
    let weight = weight.to_dtype(dtype)?;
    let (func, name) = function!(dev, "add_rms_norm", dtype);
    let cfg = LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (NORM_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let dim_i = dim as i32;
    macro_rules! run {
        ($t:ty) => {{
            let (res_out, norm_out) = (&residual, &out);
            with_slices!($t, [res_out, norm_out, x, h, weight], {
                let mut b = func.builder();
                b.arg(&res_out)
                    .arg(&norm_out)
                    .arg(&x)
                    .arg(&h)
                    .arg(&weight)
                    .arg(&dim_i)
                    .arg(&eps);
                // SAFETY: arguments match fused.cu; x, h and both outputs have rows x dim elements.
                unsafe { b.launch(cfg) }.map_err(|e| launch_err(&name, e))?;
            })
        }};
    }
    match dtype {
        DType::BF16 => run!(half::bf16),
        _ => run!(half::f16),
    }
    Ok((residual, out))
}

/// See [`crate::silu_mul_halves`]; shapes were checked by the caller.
pub(crate) fn silu_mul_halves(gate_up: &Tensor) -> Result<Tensor> {
    let dev = cuda_device(gate_up)?;
    let dtype = gate_up.dtype();
    let mut dims = gate_up.dims().to_vec();
    let width = dims.last().copied().unwrap_or(0) / 2;
    *dims.last_mut().expect("checked rank") = width;
    let out = uninit(dev, dtype, dims)?;
    let n = out.elem_count();
    if n == 0 {
        return Ok(out);
    }
    let rows = (n / width) as i64;
    let (func, name) = function!(dev, "silu_mul_halves", dtype);
    let cfg = LaunchConfig {
        grid_dim: (n.div_ceil(256).min(65_535) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let width_i = width as i32;
    macro_rules! run {
        ($t:ty) => {{
            let out_t = &out;
            with_slices!($t, [out_t, gate_up], {
                let mut b = func.builder();
                b.arg(&out_t).arg(&gate_up).arg(&rows).arg(&width_i);
                // SAFETY: arguments match fused.cu; gate_up holds rows x 2·width elements.
                unsafe { b.launch(cfg) }.map_err(|e| launch_err(&name, e))?;
            })
        }};
    }
    match dtype {
        DType::BF16 => run!(half::bf16),
        _ => run!(half::f16),
    }
    Ok(out)
}
