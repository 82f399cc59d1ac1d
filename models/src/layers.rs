//! Building blocks shared by every architecture: linear layers over quantized or dense weights, RMSNorm,
//! the gated MLP and the token embedding.

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Module, Tensor};
use ember_kernels::QuantMatrix;

use crate::loader::Weights;
use crate::Result;

/// A matmul weight and the kernel that runs it.
#[derive(Debug, Clone)]
enum Weight {
    /// GGUF blocks of a type with native kernels: ember's quantized matmul.
    Quant(Arc<QuantMatrix>),
    /// Dense f32: ember's batch-invariant f32 matmul.
    F32(Tensor),
    /// Anything else (other GGUF types, non-CPU devices): candle's `QMatMul`.
    Candle(QMatMul),
}

impl Weight {
    fn new(weight: QMatMul) -> Result<Self> {
        Ok(match weight {
            QMatMul::QTensor(t) => match QuantMatrix::from_qtensor(&t)? {
                Some(m) => Weight::Quant(Arc::new(m)),
                None => Weight::Candle(QMatMul::QTensor(t)),
            },
            QMatMul::Tensor(w) if w.dtype() == DType::F32 => Weight::F32(w),
            other => Weight::Candle(other),
        })
    }
}

/// `y = x Wᵀ (+ b)`; `W` stays in its stored form (GGUF blocks stay quantized, dense weights are f32).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn new(weights: &dyn Weights, name: &str, with_bias: bool) -> Result<Self> {
        let weight = weights.matmul(&format!("{name}.weight"))?;
        let bias = if with_bias {
            Some(weights.vector(&format!("{name}.bias"))?)
        } else {
            None
        };
        Self::from_parts(weight, bias)
    }

    pub fn from_parts(weight: QMatMul, bias: Option<Tensor>) -> Result<Self> {
        Ok(Self {
            weight: Weight::new(weight)?,
            bias,
        })
    }

    /// `x` is `[tokens, in]`; returns `[tokens, out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // candle's kernels pick blockings by row count; ours keep each row's result batch-invariant.
        let y = match &self.weight {
            Weight::Quant(w) => ember_kernels::quant_matmul_t(x, w)?,
            Weight::F32(w) => ember_kernels::matmul_t(x, w)?,
            Weight::Candle(weight) => weight.forward(x)?,
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    pub fn new(weights: &dyn Weights, name: &str, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: weights.vector(&format!("{name}.weight"))?,
            eps: eps as f32,
        })
    }

    /// Normalises over the last dimension, row by row.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ember_kernels::rms_norm(x, &self.weight, self.eps)?)
    }
}

/// SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`.
#[derive(Debug, Clone)]
pub struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl Mlp {
    pub fn new(weights: &dyn Weights, prefix: &str) -> Result<Self> {
        Ok(Self {
            gate: Linear::new(weights, &format!("{prefix}.gate_proj"), false)?,
            up: Linear::new(weights, &format!("{prefix}.up_proj"), false)?,
            down: Linear::new(weights, &format!("{prefix}.down_proj"), false)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (gate, up) = (self.gate.forward(x)?, self.up.forward(x)?);
        self.down.forward(&ember_kernels::silu_mul(&gate, &up)?)
    }
}

/// Token embedding table; a quantized table is dequantized row by row on lookup, never whole.
#[derive(Debug, Clone)]
pub struct Embedding {
    table: Weight,
}

impl Embedding {
    pub fn new(table: QMatMul) -> Result<Self> {
        Ok(Self {
            table: Weight::new(table)?,
        })
    }

    /// The same table as an output projection (tied embeddings); shares the table's memory.
    pub fn as_linear(&self) -> Linear {
        Linear {
            weight: self.table.clone(),
            bias: None,
        }
    }

    /// `ids` is `[tokens]`; returns `[tokens, hidden]`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(match &self.table {
            Weight::Quant(table) => {
                let rows = ember_kernels::quant_embedding(table, &ids.to_vec1::<u32>()?)?;
                rows.to_device(ids.device())?
            }
            Weight::F32(table) => QMatMul::Tensor(table.clone()).embedding(ids)?,
            Weight::Candle(table) => table.embedding(ids)?,
        })
    }
}

/// Wraps a loaded quantized tensor as a matmul weight (dense GGUF types are expanded to f32 by candle).
pub fn qmatmul(tensor: QTensor) -> Result<QMatMul> {
    Ok(QMatMul::from_arc(Arc::new(tensor))?)
}
