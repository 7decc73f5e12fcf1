//! Reverse-mode automatic differentiation, define-by-run.
//!
//! The whole idea fits in three sentences. Every op that has an input requiring
//! gradients attaches a [`Node`] to its output: the inputs plus a
//! [`BackwardOp`] that maps the output's gradient to the inputs' gradients.
//! `loss.backward()` orders the nodes so that each comes after every node that
//! uses it (a reverse topological order), then walks them once, handing each
//! its accumulated output gradient and summing what it returns into its inputs.
//! The graph lives in the `Arc`s from outputs to inputs, so dropping the loss
//! (and the tensors built from it) frees it.

mod backward;
mod grad_mode;

pub use backward::GradStore;
pub use grad_mode::{is_grad_enabled, no_grad, NoGradGuard};

use crate::tensor::Tensor;
use crate::Result;

/// The backward half of an op. Implementors store what the backward needs
/// besides the inputs and the output (an axis, a saved mask, ...).
pub trait BackwardOp: Send + Sync {
    /// The op's name, for error messages and graph dumps.
    fn name(&self) -> &'static str;
    /// Given the inputs, the output and the gradient of the loss with respect to
    /// the output (same shape as `output`), return one gradient per input (same
    /// shape as that input), or `None` where no gradient flows.
    fn backward(&self, inputs: &[Tensor], output: &Tensor, grad_output: &Tensor) -> Result<Vec<Option<Tensor>>>;
}

/// The recorded history of one tensor.
pub struct Node {
    pub(crate) inputs: Vec<Tensor>,
    pub(crate) op: Box<dyn BackwardOp>,
}

impl Node {
    pub fn op_name(&self) -> &'static str {
        self.op.name()
    }
    pub fn inputs(&self) -> &[Tensor] {
        &self.inputs
    }
}

/// A node for an op's output, or `None` when nothing upstream needs gradients
/// (or inside `no_grad`): then the inputs are not kept alive.
pub(crate) fn make_node(inputs: Vec<Tensor>, op: impl BackwardOp + 'static) -> Option<Node> {
    if is_grad_enabled() && inputs.iter().any(Tensor::requires_grad) {
        Some(Node { inputs, op: Box::new(op) })
    } else {
        None
    }
}
