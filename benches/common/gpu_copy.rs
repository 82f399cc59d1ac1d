//! The copy ceiling of the GPU benchmarks: a 1 GiB device-to-device `cuMemcpyDtoDAsync` between buffers
//! allocated once, counting bytes read plus written; the median of 20 copies after 3 warm-ups. (A fresh
//! destination per copy timed the allocator too, and candle's strided-copy kernels do not reach the copy
//! engine's rate: 898 and 1057 GB/s on an H100 where torch's copy moves ~3000 GB/s.)

use std::time::Instant;

use candle_core::Device;

pub fn copy_bandwidth(dev: &Device) -> f64 {
    let Device::Cuda(cuda) = dev else {
        panic!("copy_bandwidth needs a CUDA device")
    };
    let bytes = 1usize << 30;
    let src = cuda.alloc_zeros::<u8>(bytes).expect("source buffer");
    let mut dst = cuda.alloc_zeros::<u8>(bytes).expect("destination buffer");
    let mut times = Vec::new();
    for i in 0..23 {
        dev.synchronize().expect("synchronize");
        let t = Instant::now();
        cuda.memcpy_dtod(&src, &mut dst).expect("copy");
        dev.synchronize().expect("synchronize");
        if i >= 3 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    2.0 * bytes as f64 / times[times.len() / 2] / 1e9
}
