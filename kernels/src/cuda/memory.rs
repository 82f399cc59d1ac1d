use super::cuda_err;
use crate::Result;
use candle_core::cuda_backend::CudaDevice;

pub use crate::memory::kv_blocks_for_memory;

/// (free, total) bytes of the device's memory now.
pub fn device_memory(dev: &CudaDevice) -> Result<(usize, usize)> {
    dev.cuda_stream().context().mem_get_info().map_err(cuda_err)
}
