//! Where a tensor's storage lives.

use std::fmt;

/// A compute device. Only the CPU exists in the default build; the `cuda`
/// feature adds `Cuda(ordinal)` (see ARCHITECTURE.md, "Where CUDA plugs in").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Device {
    #[default]
    Cpu,
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
        }
    }
}
