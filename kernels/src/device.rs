//! Which device a model runs on (`--device auto|cpu|cuda|cuda:N`) and what that device's memory holds.
//! The only place above the kernels that needs to know whether this build has CUDA.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

use crate::{Error, Result};

/// The message for `--device cuda` in a build without the `cuda` feature.
pub const NO_CUDA_BUILD: &str =
    "this ember was built without the `cuda` feature: rebuild with scripts/build-cuda.sh";

/// What `--device` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// CUDA device 0 when this build has CUDA and a device answers, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => match t.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(Self::Cuda(n)),
                _ => Err(Error::Device(format!(
                    "--device `{s}`: expected auto, cpu, cuda or cuda:N"
                ))),
            },
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceChoice {
    /// Opens the device. `Auto` falls back to the CPU (logged) when there is no usable CUDA device; an
    /// explicit `cuda` never falls back: it is an error, saying why.
    pub fn open(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(n) => open_cuda(n),
            Self::Auto => {
                if !cfg!(feature = "cuda") {
                    return Ok(Device::Cpu);
                }
                match open_cuda(0) {
                    Ok(d) => Ok(d),
                    Err(e) => {
                        note_fallback(&e);
                        Ok(Device::Cpu)
                    }
                }
            }
        }
    }
}

/// `--device auto` found no CUDA device in a CUDA build: say so on stderr once (kernels has no logger).
fn note_fallback(e: &Error) {
    let why = e.to_string();
    eprintln!(
        "ember: --device auto: no usable CUDA device ({}); running on the CPU",
        why.lines().next().unwrap_or_default()
    );
}

/// Opens CUDA device `ordinal` with one stream of its own. candle's plain `Device::new_cuda` issues work
/// on the *per-thread* default stream, so work issued from two threads (the engine thread, a pool worker,
/// the thread that loaded the weights) lands on two unordered streams: a tensor freed on one can be reused
/// while a kernel on the other still reads it (seen on the H100 as illegal addresses in `ember eval`, gone
/// under `CUDA_LAUNCH_BLOCKING=1`), and `synchronize` waits for the calling thread's stream alone. With a
/// stream of its own, the order of the work is the order the host issued it, whatever the thread.
///
/// Slices are not tracked with CUDA events either: cudarc's tracking (two events per allocation, a wait
/// and a record per kernel argument) orders work between streams, and with one stream the issue order
/// already does; it was host time on every launch, and an event recorded inside a CUDA-graph capture
/// cannot be waited on outside it ([`crate::cuda::StepGraph`]). Copies to the host still wait for the
/// stream (cudarc synchronises pageable copies), and frees are stream-ordered.
#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> Result<Device> {
    let device = Device::new_cuda_with_stream(ordinal).map_err(|e| {
        // candle appends a backtrace; the first line says why.
        let why = e.to_string();
        Error::Device(format!(
            "CUDA device {ordinal}: {}",
            why.lines().next().unwrap_or_default()
        ))
    })?;
    if let Device::Cuda(dev) = &device {
        // SAFETY: before any allocation of this device; all of its work goes to its one stream (above).
        unsafe { dev.disable_event_tracking() };
    }
    Ok(device)
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_ordinal: usize) -> Result<Device> {
    Err(Error::Device(NO_CUDA_BUILD.into()))
}

/// `(free, total)` bytes of an accelerator's memory now; `None` for the CPU (its KV cache is sized by
/// bytes, not by a share of device memory).
pub fn memory_info(device: &Device) -> Result<Option<(usize, usize)>> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(dev) => {
            device.synchronize()?;
            Ok(Some(crate::cuda::device_memory(dev)?))
        }
        _ => Ok(None),
    }
}

/// Waits for the device's queued work (a no-op on the CPU).
pub fn synchronize(device: &Device) -> Result<()> {
    Ok(device.synchronize()?)
}
