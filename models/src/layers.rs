//! Building blocks shared by every architecture: linear layers over quantized or dense weights, RMSNorm,
//! the gated MLP and the token embedding.

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Module, Tensor};

use crate::loader::Weights;
use crate::Result;

/// `y = x Wᵀ (+ b)`; `W` stays in its stored form (GGUF blocks stay quantized, dense weights are f32).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: QMatMul,
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
        Ok(Self { weight, bias })
    }

    pub fn from_parts(weight: QMatMul, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    /// `x` is `[tokens, in]`; returns `[tokens, out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.weight {
            // candle's dense GEMM picks kernels by row count; ours keeps each row's result batch-invariant.
            QMatMul::Tensor(w) if w.dtype() == DType::F32 => ember_kernels::matmul_t(x, w)?,
            weight => weight.forward(x)?,
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
        Ok(candle_nn::ops::rms_norm(
            &x.contiguous()?,
            &self.weight,
            self.eps,
        )?)
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
        let gate = candle_nn::ops::silu(&self.gate.forward(x)?)?;
        let up = self.up.forward(x)?;
        self.down.forward(&(gate * up)?)
    }
}

/// Token embedding table; a quantized table is dequantized row by row on lookup, never whole.
#[derive(Debug, Clone)]
pub struct Embedding {
    table: QMatMul,
}

impl Embedding {
    pub fn new(table: QMatMul) -> Self {
        Self { table }
    }

    /// The same table as an output projection (tied embeddings).
    pub fn as_linear(&self) -> Linear {
        Linear::from_parts(self.table.clone(), None)
    }

    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(self.table.embedding(ids)?)
    }
}

/// Wraps a loaded quantized tensor as a matmul weight (dense GGUF types are expanded to f32 by candle).
pub fn qmatmul(tensor: QTensor) -> Result<QMatMul> {
    Ok(QMatMul::from_arc(Arc::new(tensor))?)
}
