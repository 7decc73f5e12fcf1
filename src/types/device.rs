//! Where a tensor's storage lives.

use std::fmt;

/// A compute device: the host, or a CUDA GPU by ordinal.
///
/// `Device::Cuda` always exists so code can name it, but CUDA tensors need
/// the crate's `cuda` feature and a machine with an NVIDIA driver:
/// [`Device::cuda`] checks both and returns an error (never panics) when
/// either is missing. (That constructor is defined in `backend/mod.rs`:
/// checking a device needs the backend, and this module depends on nothing.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Device {
    #[default]
    Cpu,
    Cuda(usize),
}

/// The message for CUDA requests in a build without the `cuda` feature.
pub const NO_CUDA_FEATURE: &str = "this build of tamer has no CUDA backend: rebuild with `--features cuda`";

impl Device {
    pub fn is_cuda(self) -> bool {
        matches!(self, Device::Cuda(_))
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(o) => write!(f, "cuda:{o}"),
        }
    }
}
