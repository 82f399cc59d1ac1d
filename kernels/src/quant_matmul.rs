//! The candle-facing side of the quantized matmul: weights taken from a candle `QTensor`, activations
//! and results as candle tensors.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use crate::cpu::quant::{QuantMatrix, QuantType};
use crate::{with_cpu_f32, Error, Result};

/// The native block type for a GGUF type, if there is one.
pub fn quant_type_of(dtype: GgmlDType) -> Option<QuantType> {
    Some(match dtype {
        GgmlDType::Q4_0 => QuantType::Q4_0,
        GgmlDType::Q4_1 => QuantType::Q4_1,
        GgmlDType::Q5_0 => QuantType::Q5_0,
        GgmlDType::Q8_0 => QuantType::Q8_0,
        GgmlDType::Q4K => QuantType::Q4K,
        GgmlDType::Q6K => QuantType::Q6K,
        _ => return None,
    })
}

impl QuantMatrix {
    /// Copies the blocks of a 2-D CPU `QTensor` (`[out, in]`); `None` for types without native kernels.
    pub fn from_qtensor(t: &QTensor) -> Result<Option<Self>> {
        let Some(ty) = quant_type_of(t.dtype()) else {
            return Ok(None);
        };
        if !t.device().is_cpu() {
            return Ok(None);
        }
        let (rows, cols) = t.shape().dims2()?;
        Ok(Some(Self::new(ty, rows, cols, &t.data()?)?))
    }
}

/// `x[m, k] · w[n, k]ᵀ` for a CPU f32 `x`; each row's result is independent of the other rows.
pub fn quant_matmul_t(x: &Tensor, w: &QuantMatrix) -> Result<Tensor> {
    let (m, k) = x.dims2()?;
    if k != w.cols() {
        return Err(Error::Shape(format!(
            "matmul of {:?} by a [{}, {}] {:?} weight",
            x.dims(),
            w.rows(),
            w.cols(),
            w.quant_type()
        )));
    }
    if !x.device().is_cpu() {
        return Err(Error::Unsupported(format!("{:?}", x.device())));
    }
    let x = x.contiguous()?;
    let mut out = vec![0f32; m * w.rows()];
    with_cpu_f32(&x, |xs| w.matmul(xs, m, &mut out))?;
    Ok(Tensor::from_vec(out, (m, w.rows()), &Device::Cpu)?)
}

/// Rows `ids` of `table`, dequantized: `[ids.len(), cols]`.
pub fn quant_embedding(table: &QuantMatrix, ids: &[u32]) -> Result<Tensor> {
    let cols = table.cols();
    let mut out = vec![0f32; ids.len() * cols];
    for (&id, dst) in ids.iter().zip(out.chunks_exact_mut(cols)) {
        if id as usize >= table.rows() {
            return Err(Error::Shape(format!(
                "token id {id} outside an embedding table of {} rows",
                table.rows()
            )));
        }
        table.dequantize_row(id as usize, dst);
    }
    Ok(Tensor::from_vec(out, (ids.len(), cols), &Device::Cpu)?)
}
