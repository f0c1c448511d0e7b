//! The one place where backends are chosen.
//!
//! CPU: burn's `Flex` backend (pure Rust; as fast as candle for training and the quickest
//! to build, docs/performance.md). GPU: `Cuda`, only with
//! the `cuda` cargo feature. Training code is generic over `B: AutodiffBackend`.

use crate::error::{EngineError, Result};
use std::fmt;
use std::str::FromStr;

/// CPU inference backend.
pub type CpuBackend = burn::backend::Flex;
/// CPU training backend.
pub type CpuTrainBackend = burn::backend::Autodiff<CpuBackend>;

/// CUDA inference backend.
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Cuda;
/// CUDA training backend.
#[cfg(feature = "cuda")]
pub type CudaTrainBackend = burn::backend::Autodiff<CudaBackend>;

/// burn's libtorch backend on the CPU, for throughput comparisons only (`incrpipe bench
/// --device libtorch`, the `tch` cargo feature); pipelines never train on it.
#[cfg(feature = "tch")]
pub type LibTorchTrainBackend = burn::backend::Autodiff<burn::backend::LibTorch>;

/// Where to train: `cpu` or `cuda:N` (N counts within `CUDA_VISIBLE_DEVICES`, as CUDA does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

impl FromStr for Device {
    type Err = EngineError;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("cpu") {
            return Ok(Device::Cpu);
        }
        if let Some(n) = s.strip_prefix("cuda:") {
            return n
                .parse::<usize>()
                .map(Device::Cuda)
                .map_err(|_| EngineError::BadDevice(s.to_string()));
        }
        if s == "cuda" {
            return Ok(Device::Cuda(0));
        }
        Err(EngineError::BadDevice(s.to_string()))
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// The burn device of the CPU backend.
pub fn cpu_device() -> burn::backend::flex::FlexDevice {
    burn::backend::flex::FlexDevice
}

/// The burn device of the CUDA backend for `cuda:N`.
#[cfg(feature = "cuda")]
pub fn cuda_device(index: usize) -> burn::backend::cuda::CudaDevice {
    burn::backend::cuda::CudaDevice { index }
}

/// Whether this build can run on `device`.
pub fn supported(device: Device) -> bool {
    match device {
        Device::Cpu => true,
        Device::Cuda(_) => cfg!(feature = "cuda"),
    }
}

/// The burn version this build uses (recorded as provenance; a test checks it against Cargo.lock).
pub const BURN_VERSION: &str = "0.21.0";

/// Code generic over the training backend, run by [`dispatch`] on the backend a
/// [`Device`] names. The one place that maps devices to backends.
pub trait WithBackend {
    type Output;
    /// `name` is the backend's name for provenance ("flex", "cuda").
    fn call<B: burn::tensor::backend::AutodiffBackend>(
        self,
        device: &B::Device,
        name: &'static str,
    ) -> Self::Output;
}

/// Runs `w` on the backend of `device`; an error when this build lacks it.
pub fn dispatch<W: WithBackend>(device: Device, w: W) -> Result<W::Output> {
    match device {
        Device::Cpu => Ok(w.call::<CpuTrainBackend>(&cpu_device(), "flex")),
        #[cfg(feature = "cuda")]
        Device::Cuda(i) => Ok(w.call::<CudaTrainBackend>(&cuda_device(i), "cuda")),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => Err(EngineError::BadDevice(format!(
            "{device}: this binary was built without the `cuda` feature"
        ))),
    }
}

#[cfg(test)]
mod version_tests {
    #[test]
    fn burn_version_matches_the_lockfile() {
        let lock = include_str!("../../../Cargo.lock");
        assert!(
            lock.contains(&format!(
                "name = \"burn\"\nversion = \"{}\"",
                super::BURN_VERSION
            )),
            "update BURN_VERSION"
        );
    }
}
