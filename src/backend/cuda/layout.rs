//! `StridedLayout`: a tensor view as CUDA kernels receive it (mirrors the
//! struct of the same name in cuda/common.cuh, field for field).

use crate::types::Layout;
use crate::{Error, Result};

/// Most dimensions a strided CUDA operand may have (`TAMER_MAX_DIMS`).
pub const MAX_DIMS: usize = 8;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StridedLayout {
    pub rank: i64,
    pub offset: i64,
    pub dims: [i64; MAX_DIMS],
    pub strides: [i64; MAX_DIMS],
}

// SAFETY: plain old data with C layout, passed by value as a kernel parameter.
unsafe impl cudarc::driver::DeviceRepr for StridedLayout {}

impl StridedLayout {
    /// The kernel-side description of `layout`; `op` names the caller in the
    /// error for views of more than `MAX_DIMS` dimensions.
    pub fn new(op: &'static str, layout: &Layout) -> Result<Self> {
        if layout.rank() > MAX_DIMS {
            return Err(Error::shape(
                op,
                format!("CUDA kernels take views of at most {MAX_DIMS} dimensions, got shape {}", layout.shape()),
            ));
        }
        let mut s = StridedLayout {
            rank: layout.rank() as i64,
            offset: layout.offset() as i64,
            dims: [1; MAX_DIMS],
            strides: [0; MAX_DIMS],
        };
        for (i, (&d, &st)) in layout.dims().iter().zip(layout.strides()).enumerate() {
            s.dims[i] = d as i64;
            s.strides[i] = st as i64;
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_a_permuted_view() {
        let l = Layout::contiguous([2, 3, 4]).permute("t", &[2, 0, 1]).unwrap().narrow(0, 1, 2);
        let s = StridedLayout::new("t", &l).unwrap();
        assert_eq!(s.rank, 3);
        assert_eq!(&s.dims[..3], &[2, 2, 3]);
        assert_eq!(&s.strides[..3], &[1, 12, 4]);
        assert_eq!(s.offset, 1);
        assert_eq!(std::mem::size_of::<StridedLayout>(), 8 * (2 + 2 * MAX_DIMS));
    }

    #[test]
    fn too_many_dimensions_is_an_error() {
        let l = Layout::contiguous(vec![1usize; 9]);
        let e = StridedLayout::new("add", &l).unwrap_err();
        assert!(e.message.contains("at most 8"), "{e}");
    }
}
