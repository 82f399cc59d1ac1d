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

    /// One linear layer computing `parts` side by side (their outputs concatenated in order), where all
    /// of them hold dense weights of one type and input width: a fused projection is one matmul (one
    /// kernel launch on a GPU) instead of several, as vLLM's QKV and gate|up layers. `None` where they
    /// cannot be fused (quantized blocks keep one matrix each; their types may differ).
    pub fn fuse(parts: &[Linear]) -> Result<Option<Linear>> {
        let dense: Option<Vec<&Tensor>> = parts
            .iter()
            .map(|p| match &p.weight {
                Weight::F32(w) | Weight::Candle(QMatMul::Tensor(w)) => Some(w),
                _ => None,
            })
            .collect();
        let Some(dense) = dense else { return Ok(None) };
        let Some(first) = dense.first() else {
            return Ok(None);
        };
        let compatible = dense.iter().all(|w| {
            w.dtype() == first.dtype()
                && w.device().same_device(first.device())
                && w.rank() == 2
                && w.dim(1).ok() == first.dim(1).ok()
        });
        if !compatible {
            return Ok(None);
        }
        let weight = Tensor::cat(&dense, 0)?;
        let bias = if parts.iter().all(|p| p.bias.is_none()) {
            None
        } else {
            // A part without a bias adds zeros.
            let biases = parts
                .iter()
                .zip(&dense)
                .map(|(p, w)| match &p.bias {
                    Some(b) => Ok(b.clone()),
                    None => Ok(Tensor::zeros(w.dim(0)?, w.dtype(), w.device())?),
                })
                .collect::<Result<Vec<_>>>()?;
            Some(Tensor::cat(&biases, 0)?)
        };
        Ok(Some(Self::from_parts(QMatMul::Tensor(weight), bias)?))
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

    /// `(x + h, norm(x + h))`: the residual add before the norm, in one kernel on a GPU.
    pub fn forward_with_residual(&self, x: &Tensor, h: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok(ember_kernels::add_rms_norm(x, h, &self.weight, self.eps)?)
    }
}

/// The gate and up projections of a SwiGLU MLP: one fused matmul where the weights allow it.
#[derive(Debug, Clone)]
enum GateUp {
    Fused(Linear),
    Separate { gate: Linear, up: Linear },
}

/// SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`.
#[derive(Debug, Clone)]
pub struct Mlp {
    gate_up: GateUp,
    down: Linear,
}

impl Mlp {
    pub fn new(weights: &dyn Weights, prefix: &str, fuse: bool) -> Result<Self> {
        let gate = Linear::new(weights, &format!("{prefix}.gate_proj"), false)?;
        let up = Linear::new(weights, &format!("{prefix}.up_proj"), false)?;
        let fused = if fuse {
            Linear::fuse(&[gate.clone(), up.clone()])?
        } else {
            None
        };
        Ok(Self {
            gate_up: match fused {
                Some(gate_up) => GateUp::Fused(gate_up),
                None => GateUp::Separate { gate, up },
            },
            down: Linear::new(weights, &format!("{prefix}.down_proj"), false)?,
        })
    }

    /// Whether gate and up run as one matmul.
    pub fn is_fused(&self) -> bool {
        matches!(self.gate_up, GateUp::Fused(_))
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = match &self.gate_up {
            GateUp::Fused(gate_up) => ember_kernels::silu_mul_halves(&gate_up.forward(x)?)?,
            GateUp::Separate { gate, up } => {
                ember_kernels::silu_mul(&gate.forward(x)?, &up.forward(x)?)?
            }
        };
        self.down.forward(&h)
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
