//! Where a tensor's storage lives.

use std::fmt;

/// A compute device: the host, or a CUDA GPU by ordinal.
///
/// `Device::Cuda` always exists so code can name it, but CUDA tensors need
/// the crate's `cuda` feature and a machine with an NVIDIA driver:
/// [`Device::cuda`] checks both and returns an error (never panics) when
/// either is missing.
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
    /// The CUDA device `ordinal`, initialised and checked: an error if this
    /// build lacks the `cuda` feature, the machine has no driver or NVRTC, or
    /// the ordinal does not exist.
    ///
    /// ```
    /// // On a machine without a GPU this is an error, not a panic.
    /// match tamer::Device::cuda(0) {
    ///     Ok(d) => assert_eq!(d.to_string(), "cuda:0"),
    ///     Err(e) => println!("no CUDA here: {e}"),
    /// }
    /// ```
    pub fn cuda(ordinal: usize) -> crate::Result<Device> {
        #[cfg(feature = "cuda")]
        {
            crate::backend::cuda::device(ordinal)?;
            Ok(Device::Cuda(ordinal))
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = ordinal;
            Err(crate::Error::device("cuda", NO_CUDA_FEATURE))
        }
    }
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
