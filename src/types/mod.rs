//! The value types everything else is built from: [`Shape`] and broadcasting,
//! [`Layout`] (shape + strides + offset, and the strided walk), [`DType`] and
//! the [`Float`] trait kernels are generic over, [`Element`] (the Rust type of
//! each dtype's elements on the host), and [`Device`].
//!
//! This module is the bottom of the crate: it depends on nothing but
//! [`Error`](crate::Error), so the backends, the tensor handle and the ops
//! can all use it without depending on each other.

mod device;
mod dtype;
mod element;
mod layout;
mod shape;

pub use device::{Device, NO_CUDA_FEATURE};
pub use dtype::{erf_f64, erfc_f64, DType, Float};
pub use element::{Element, ElementSlice, ElementSliceMut, ElementVec};
pub use layout::{Layout, StridedOffsets};
pub use shape::{normalize_axis, Shape};
