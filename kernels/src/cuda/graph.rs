//! CUDA graphs: a step's launches recorded once from the device's stream and replayed by one call, so a
//! decode step's few hundred small kernels cost one launch of host time instead of one each.
//!
//! What a captured step may do (the driver enforces most of it by invalidating the capture, candle by
//! refusing host copies while a capture is active): no host synchronisation and no copy from host memory
//! inside (its inputs live in device buffers that outlive the graph and are rewritten before each launch); allocations and frees are stream-ordered
//! (`cuMemAllocAsync`), which capture turns into graph memory nodes, so every temporary of the step must be
//! freed before the capture ends and its outputs go to buffers allocated before it. The device must not
//! track slice uses with events (ember's devices do not: `DeviceChoice::open`), since an event recorded
//! during capture cannot be waited on outside it.

use super::cuda_err;
use crate::{Error, Result};
use candle_core::cuda_backend::cudarc::driver::{sys, CudaGraph};
use candle_core::Device;

/// One captured step, replayed with [`StepGraph::launch`] on the stream it was captured from.
pub struct StepGraph {
    graph: CudaGraph,
}

// SAFETY: a graph is not internally synchronised, so calls on it must not overlap; `launch` takes
// `&self` but every caller reaches it through the `&mut` of the model runner that owns it, one thread at a
// time. Nothing in it is tied to the capturing thread.
unsafe impl Send for StepGraph {}

impl StepGraph {
    /// Runs `record` twice: once as usual (a warm-up: kernel modules and cuBLAS state load lazily, and
    /// loading is not allowed inside a capture), then with the device's stream in capture mode, and
    /// instantiates what the second run issued. Both runs go through candle's CUDA-graph parameter cache:
    /// the shape and stride vectors candle uploads for strided ops are uploaded once by the warm-up into
    /// buffers that outlive the graph, and the captured run reuses them (a miss during capture is an
    /// error, never an upload the graph would replay from freed host memory). On any error the capture
    /// is ended and discarded, and the stream is usable again.
    pub fn capture<E: From<Error>>(
        device: &Device,
        mut record: impl FnMut() -> std::result::Result<(), E>,
    ) -> std::result::Result<Self, E> {
        let Device::Cuda(dev) = device else {
            return Err(Error::Unsupported(format!("CUDA graph capture on {device:?}")).into());
        };
        let stream = dev.cuda_stream();
        let _params = dev.enable_cuda_graph_htod_cache();
        record()?;
        device.synchronize().map_err(Error::from)?;
        stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(cuda_err)?;
        let recorded = record();
        // End the capture whatever happened, so the stream leaves capture mode.
        let ended = stream.end_capture(sys::CUgraphInstantiate_flags(0));
        // Errors of calls that report through the context (a free inside the capture, say).
        let deferred = stream.context().check_err();
        recorded?;
        let graph = deferred
            .map_err(|e| format!("during CUDA graph capture: {e:?}"))
            .and_then(|()| ended.map_err(|e| format!("ending a CUDA graph capture: {e:?}")))
            .and_then(|g| g.ok_or_else(|| "a CUDA graph capture recorded nothing".to_string()))
            .and_then(|g| {
                g.upload()
                    .map(|()| g)
                    .map_err(|e| format!("uploading a CUDA graph: {e:?}"))
            })
            .map_err(Error::Device)?;
        Ok(Self { graph })
    }

    /// Replays the captured work on the stream it was captured from, after everything issued there
    /// before (so input buffers written just before are what it reads).
    pub fn launch(&self) -> Result<()> {
        self.graph
            .launch()
            .map_err(|e| Error::Device(format!("launching a CUDA graph: {e:?}")))
    }
}
