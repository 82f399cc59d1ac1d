//! The step's logits on their way to the sampler, on any device: greedy rows reduced to token ids where
//! the logits are (on a GPU only the ids cross to the host), and the rows the host sampler needs copied
//! into a buffer kept from step to step.

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// For each of `rows`, the index of the largest value in that row of `logits` (`[n, vocab]` f32): the
/// lowest index among equal maxima, NaN never chosen, 0 when nothing beats -inf — the host sampler's
/// greedy rule, on the device that holds the logits.
pub fn argmax_rows(logits: &Tensor, rows: &[u32]) -> Result<Vec<u32>> {
    match logits.device() {
        #[cfg(feature = "cuda")]
        Device::Cuda(_) => crate::cuda::argmax_rows(&logits.contiguous()?, rows),
        Device::Cpu => {
            let (n, vocab) = logits.dims2()?;
            if let Some(bad) = rows.iter().find(|&&r| r as usize >= n) {
                return Err(Error::Shape(format!("argmax of row {bad} of {n}")));
            }
            if rows.is_empty() || vocab == 0 {
                return Ok(vec![0; rows.len()]);
            }
            let index = Tensor::new(rows, &Device::Cpu)?;
            let data = logits
                .index_select(&index, 0)?
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            Ok(data.chunks(vocab).map(first_max).collect())
        }
        other => Err(Error::Unsupported(format!("argmax_rows on {other:?}"))),
    }
}

/// Index of the first largest value (NaN skipped; 0 when nothing beats -inf).
pub fn first_max(row: &[f32]) -> u32 {
    let (mut best, mut best_v) = (0usize, f32::NEG_INFINITY);
    for (i, &v) in row.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best as u32
}

/// Copies `t` (f32) into `dst`, resized to its element count; `dst`'s memory is reused from call to call.
pub fn copy_to_host(t: &Tensor, dst: &mut Vec<f32>) -> Result<()> {
    match t.device() {
        #[cfg(feature = "cuda")]
        Device::Cuda(_) => crate::cuda::copy_to_host(&t.contiguous()?, dst),
        _ => {
            let data = t.flatten_all()?.to_vec1::<f32>()?;
            dst.clear();
            dst.extend_from_slice(&data);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_argmax_rows_and_copy_follow_the_host_rule() {
        let data = vec![
            1.0,
            3.0,
            3.0,
            0.0, // ties: the first
            f32::NAN,
            -1.0,
            f32::NAN,
            -2.0, // NaN never wins
            f32::NEG_INFINITY,
            f32::NAN,
            f32::NEG_INFINITY,
            f32::NAN, // nothing beats -inf: 0
        ];
        let logits = Tensor::from_vec(data.clone(), (3, 4), &Device::Cpu).unwrap();
        assert_eq!(
            argmax_rows(&logits, &[2, 0, 1, 0]).unwrap(),
            vec![0, 1, 1, 1]
        );
        assert_eq!(argmax_rows(&logits, &[]).unwrap(), Vec::<u32>::new());
        assert!(argmax_rows(&logits, &[3]).is_err());
        let mut buffer = vec![7.0; 100];
        copy_to_host(&logits, &mut buffer).unwrap();
        assert_eq!(buffer.len(), 12);
        assert!(buffer
            .iter()
            .zip(&data)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}
