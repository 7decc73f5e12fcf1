//! The tensor handle: shared storage + layout + (for autodiff) the op that made it.
//!
//! Cloning a `Tensor` is cheap (one `Arc`). Views share storage (`view_op`;
//! the view methods themselves are ops, in `ops/views.rs`); ops that compute
//! produce new storage. Tensors are immutable from the outside except through
//! the explicit in-place `assign` in `inplace.rs` (initialisers, `Param::set`).
//!
//! This module and `autograd` sit below the ops: they use the value types and
//! the backends' storage, never an op.

mod create;
pub use create::{rng, TensorRng};
mod display;
mod host;
mod inplace;
mod transfer;

// The value types live in `crate::types`; re-exported here because a tensor's
// API is written in them.
pub use crate::types::{erf_f64, normalize_axis, DType, Device, Float, Layout, Shape, StridedOffsets, NO_CUDA_FEATURE};

use crate::autograd::{self, BackwardOp, Node};
use crate::backend::Storage;
use crate::{Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A unique id per tensor handle created by an op; gradients are keyed by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

impl TensorId {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        TensorId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// An n-dimensional array with reverse-mode autodiff.
#[derive(Clone)]
pub struct Tensor(Arc<TensorInner>);

pub(crate) struct TensorInner {
    id: TensorId,
    storage: Arc<RwLock<Storage>>,
    layout: Layout,
    dtype: DType,
    device: Device,
    /// How this tensor was computed, kept only when some input requires grad.
    node: Option<Node>,
    /// A leaf the user asked gradients for (a parameter).
    is_variable: bool,
}

impl Tensor {
    /// Wrap freshly computed storage as a tensor with no history.
    pub(crate) fn from_storage(storage: Storage, layout: Layout) -> Tensor {
        Self::build(Arc::new(RwLock::new(storage)), layout, None, false)
    }

    fn build(storage: Arc<RwLock<Storage>>, layout: Layout, node: Option<Node>, is_variable: bool) -> Tensor {
        let (dtype, device) = {
            let s = read_lock(&storage);
            (s.dtype(), s.device())
        };
        Tensor(Arc::new(TensorInner {
            id: TensorId::new(),
            storage,
            layout,
            dtype,
            device,
            node,
            is_variable,
        }))
    }

    /// The result of an op: records `op` with its `inputs` for the backward pass
    /// when gradients are enabled and some input requires them.
    pub(crate) fn from_op(storage: Storage, layout: Layout, inputs: Vec<Tensor>, op: impl BackwardOp + 'static) -> Tensor {
        let node = autograd::make_node(inputs, op);
        Self::build(Arc::new(RwLock::new(storage)), layout, node, false)
    }

    /// A view: same storage, new layout, recorded like any op.
    pub(crate) fn view_op(&self, layout: Layout, op: impl BackwardOp + 'static) -> Tensor {
        let node = autograd::make_node(vec![self.clone()], op);
        Self::build(self.0.storage.clone(), layout, node, false)
    }

    pub fn id(&self) -> TensorId {
        self.0.id
    }
    pub fn shape(&self) -> &Shape {
        self.0.layout.shape()
    }
    pub fn dims(&self) -> &[usize] {
        self.0.layout.dims()
    }
    pub fn rank(&self) -> usize {
        self.0.layout.rank()
    }
    pub fn numel(&self) -> usize {
        self.0.layout.numel()
    }
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }
    pub fn device(&self) -> Device {
        self.0.device
    }
    pub fn is_contiguous(&self) -> bool {
        self.0.layout.is_contiguous()
    }
    /// Size of `axis` (negative counts from the end).
    pub fn dim(&self, axis: isize) -> Result<usize> {
        self.shape().dim("dim", axis)
    }

    /// Read access to the storage (kernels take this for the duration of a call).
    pub fn storage(&self) -> RwLockReadGuard<'_, Storage> {
        read_lock(&self.0.storage)
    }
    pub(crate) fn storage_mut(&self) -> RwLockWriteGuard<'_, Storage> {
        self.0.storage.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
    /// True when this handle is the only one to this tensor and to its
    /// storage: no clone, view or variable shares the buffer, so writing it
    /// in place (the backward pass summing a gradient into its running
    /// total) is seen by nobody else.
    pub(crate) fn is_sole_owner(&self) -> bool {
        Arc::strong_count(&self.0) == 1 && Arc::weak_count(&self.0) == 0 && Arc::strong_count(&self.0.storage) == 1 && Arc::weak_count(&self.0.storage) == 0
    }
    /// True when both handles point at the same storage.
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }

    // ---- autodiff ------------------------------------------------------------------

    /// Whether gradients flow to or through this tensor.
    pub fn requires_grad(&self) -> bool {
        self.0.is_variable || self.0.node.is_some()
    }
    /// A leaf that collects gradients (a trainable parameter).
    pub fn is_variable(&self) -> bool {
        self.0.is_variable
    }
    pub(crate) fn node(&self) -> Option<&Node> {
        self.0.node.as_ref()
    }
    /// The same data as a leaf that gradients are computed for. The handle is new
    /// (new id); the storage is shared.
    pub fn variable(&self) -> Tensor {
        Self::build(self.0.storage.clone(), self.0.layout.clone(), None, true)
    }
    /// Alias of [`Tensor::variable`] with PyTorch's spelling.
    pub fn requires_grad_(&self) -> Tensor {
        self.variable()
    }
    /// The same data cut off from the graph: no gradient flows through the result.
    pub fn detach(&self) -> Tensor {
        Self::build(self.0.storage.clone(), self.0.layout.clone(), None, false)
    }

    /// Check operands share dtype and device; the message names `op` and both shapes.
    pub(crate) fn same_dtype_device(&self, op: &'static str, other: &Tensor) -> Result<()> {
        if self.device() != other.device() {
            return Err(Error::device(
                op,
                format!(
                    "operands are on {} and {} (shapes {} and {}); expected the same device",
                    self.device(),
                    other.device(),
                    self.shape(),
                    other.shape()
                ),
            ));
        }
        if self.dtype() != other.dtype() {
            return Err(Error::dtype(
                op,
                format!(
                    "operands have dtypes {} and {} (shapes {} and {}); expected the same dtype",
                    self.dtype(),
                    other.dtype(),
                    self.shape(),
                    other.shape()
                ),
            ));
        }
        Ok(())
    }
}

/// Dropping the last handle to a long chain of ops (an unrolled loop, thousands of
/// steps of `acc = acc.add(..)`) would otherwise drop node after node recursively
/// and overflow the stack. Inputs this node owns alone are dismantled from an
/// explicit stack instead; shared ones only lose a reference.
impl Drop for TensorInner {
    fn drop(&mut self) {
        let Some(node) = self.node.as_mut() else { return };
        let mut stack = std::mem::take(&mut node.inputs);
        while let Some(t) = stack.pop() {
            if let Ok(mut inner) = Arc::try_unwrap(t.0) {
                if let Some(node) = inner.node.as_mut() {
                    stack.append(&mut node.inputs);
                }
            }
        }
    }
}

fn read_lock(s: &RwLock<Storage>) -> RwLockReadGuard<'_, Storage> {
    // A poisoned lock only means another thread panicked mid-kernel; the data
    // is still a valid Vec, so reading on is sound.
    s.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}
