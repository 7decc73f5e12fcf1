//! The backward pass and where its gradients are stored.

use super::grad_mode::NoGradGuard;
use crate::backend::contract::binary::{Add, BinaryKernels};
use crate::profile::{self, Cost};
use crate::tensor::{Tensor, TensorId};
use crate::types::Layout;
use crate::{Error, Result};
use std::collections::{HashMap, HashSet};

/// Gradients of one backward pass, keyed by tensor id. Only variables (leaves
/// created with [`Tensor::variable`]) are kept; intermediate gradients are
/// freed as soon as their node has been processed.
#[derive(Default, Clone, Debug)]
pub struct GradStore {
    grads: HashMap<TensorId, Tensor>,
}

impl GradStore {
    /// The gradient of the loss with respect to `t` (same shape as `t`).
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.grads.get(&t.id())
    }
    pub fn get_by_id(&self, id: TensorId) -> Option<&Tensor> {
        self.grads.get(&id)
    }
    pub fn remove(&mut self, t: &Tensor) -> Option<Tensor> {
        self.grads.remove(&t.id())
    }
    pub fn insert(&mut self, t: &Tensor, grad: Tensor) {
        self.grads.insert(t.id(), grad);
    }
    /// Insert by id (what [`GradStore::iter`] yields): lets a gradient
    /// accumulator rebuild a store without the variables' handles.
    pub fn insert_by_id(&mut self, id: TensorId, grad: Tensor) {
        self.grads.insert(id, grad);
    }
    pub fn len(&self) -> usize {
        self.grads.len()
    }
    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&TensorId, &Tensor)> {
        self.grads.iter()
    }
}

impl Tensor {
    /// Gradients of this scalar with respect to every variable it depends on.
    ///
    /// ```
    /// use tamer::{Tensor, DType};
    /// let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], [3]).unwrap().variable();
    /// let loss = x.square().unwrap().sum_all().unwrap(); // Σ x²
    /// let grads = loss.backward().unwrap();
    /// assert_eq!(grads.get(&x).unwrap().to_vec::<f64>().unwrap(), vec![2.0, 4.0, 6.0]);
    /// ```
    pub fn backward(&self) -> Result<GradStore> {
        if self.numel() != 1 {
            return Err(Error::autograd(
                "backward",
                format!(
                    "the loss must hold one element, got shape {}; reduce it (e.g. .mean_all()) or use backward_with_grad",
                    self.shape()
                ),
            ));
        }
        // The seed is part of the backward pass too.
        let _phase = profile::backward_phase();
        let seed = Tensor::full_on(self.shape().clone(), 1.0, self.dtype(), self.device())?;
        self.backward_with_grad(&seed)
    }

    /// Backward from a non-scalar output, given the gradient of the loss with respect to it.
    pub fn backward_with_grad(&self, grad: &Tensor) -> Result<GradStore> {
        if !self.requires_grad() {
            return Err(Error::autograd(
                "backward",
                "the tensor does not require grad: no variable (Tensor::variable) took part in computing it, or it was computed under no_grad",
            ));
        }
        if grad.shape() != self.shape() {
            return Err(Error::shape(
                "backward",
                format!("gradient shape {} does not match output shape {}", grad.shape(), self.shape()),
            ));
        }
        if grad.dtype() != self.dtype() {
            return Err(Error::dtype(
                "backward",
                format!(
                    "gradient dtype {} does not match output dtype {} (shape {})",
                    grad.dtype(),
                    self.dtype(),
                    self.shape()
                ),
            ));
        }
        // Gradients are computed with ordinary ops; recording them would only build
        // a second graph nobody asked for.
        let _guard = NoGradGuard::new();
        // Every op run from here on is part of the backward pass.
        let _phase = profile::backward_phase();
        let order = topological_order(self);
        let mut pending: HashMap<TensorId, Tensor> = HashMap::new();
        pending.insert(self.id(), grad.clone());
        let mut store = GradStore::default();
        for t in order.iter().rev() {
            let Some(g) = pending.remove(&t.id()) else {
                continue;
            };
            let Some(node) = t.node() else {
                if t.is_variable() {
                    store.grads.insert(t.id(), g);
                }
                continue;
            };
            // The node's row gets its backward's time; the kernels it runs add their cost.
            let op = profile::op(node.op.name(), || Cost::NONE)?;
            let input_grads = node.op.backward(&node.inputs, t, &g)?;
            drop(op);
            // `BackwardOp` is public: a user's implementation may get the count
            // wrong, and zipping would silently drop the gradients past the end.
            if input_grads.len() != node.inputs.len() {
                return Err(Error::autograd(
                    "backward",
                    format!(
                        "{}'s backward returned {} gradients for its {} inputs; expected one (Some or None) per input",
                        node.op.name(),
                        input_grads.len(),
                        node.inputs.len()
                    ),
                ));
            }
            for (input, ig) in node.inputs.iter().zip(input_grads) {
                let Some(ig) = ig else { continue };
                if !input.requires_grad() {
                    continue;
                }
                check_gradient(node.op.name(), input, &ig)?;
                let acc = match pending.remove(&input.id()) {
                    Some(prev) => accumulate(&prev, &ig)?,
                    None => ig,
                };
                pending.insert(input.id(), acc);
            }
        }
        Ok(store)
    }
}

/// A gradient must match its input in shape, dtype and device: anything else
/// is a bug in that op's backward, reported under the op's name.
fn check_gradient(op: &str, input: &Tensor, grad: &Tensor) -> Result<()> {
    if grad.shape() != input.shape() || grad.dtype() != input.dtype() || grad.device() != input.device() {
        return Err(Error::autograd(
            "backward",
            format!(
                "{op}'s backward produced a gradient of shape {} ({}, {}) for an input of shape {} ({}, {})",
                grad.shape(),
                grad.dtype(),
                grad.device(),
                input.shape(),
                input.dtype(),
                input.device()
            ),
        ));
    }
    Ok(())
}

/// The sum of two gradient contributions to one input, computed by the
/// backend's add kernel directly: the backward pass calls no op, so autograd
/// stays below the ops (it needs only the storages and their layouts).
fn accumulate(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let _op = profile::op("grad_sum", || Cost::elementwise(a.dtype(), 2 * a.numel(), a.numel()))?;
    let storage = crate::dispatch!("backward", [x = &*a.storage(), y = &*b.storage()] => x.binary(a.layout(), y, b.layout(), Add)?);
    Ok(Tensor::from_storage(storage, Layout::contiguous(a.shape().clone())))
}

/// Tensors reachable from `root` through recorded nodes, each after all of its
/// inputs (so reversing the list visits consumers before producers). Iterative,
/// because deep graphs would overflow the stack of a recursive DFS.
fn topological_order(root: &Tensor) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut visited: HashSet<TensorId> = HashSet::new();
    // (tensor, whether its inputs have been pushed already)
    let mut stack: Vec<(Tensor, bool)> = vec![(root.clone(), false)];
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(t);
            continue;
        }
        if !visited.insert(t.id()) {
            continue;
        }
        stack.push((t.clone(), true));
        if let Some(node) = t.node() {
            for input in &node.inputs {
                if input.requires_grad() && !visited.contains(&input.id()) {
                    stack.push((input.clone(), false));
                }
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use crate::autograd::BackwardOp;
    use crate::{DType, ErrorKind, Result, Tensor};

    /// A backward that returns `count` gradients (ones), however many inputs
    /// its node has.
    struct Returns {
        count: usize,
    }
    impl BackwardOp for Returns {
        fn name(&self) -> &'static str {
            "miscounted"
        }
        fn backward(&self, inputs: &[Tensor], _output: &Tensor, _grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
            (0..self.count).map(|_| inputs[0].ones_like().map(Some)).collect()
        }
    }

    /// `a + b` recorded with the custom backward.
    fn sum_with(a: &Tensor, b: &Tensor, op: Returns) -> Tensor {
        let storage = a.storage().copy_contiguous(a.layout()).unwrap();
        Tensor::from_op(storage, a.layout().clone(), vec![a.clone(), b.clone()], op)
    }

    #[test]
    fn a_backward_returning_the_wrong_number_of_gradients_is_an_error() {
        let a = Tensor::ones([3], DType::F64).unwrap().variable();
        let b = Tensor::ones([3], DType::F64).unwrap().variable();
        for count in [1, 3] {
            let y = sum_with(&a, &b, Returns { count });
            let err = y.sum_all().unwrap().backward().unwrap_err();
            assert_eq!(err.kind, ErrorKind::Autograd, "{err}");
            let msg = err.to_string();
            assert!(
                msg.contains("miscounted") && msg.contains(&format!("returned {count} gradients for its 2 inputs")),
                "{msg}"
            );
        }
        // The right count goes through, to both inputs.
        let grads = sum_with(&a, &b, Returns { count: 2 }).sum_all().unwrap().backward().unwrap();
        assert_eq!(grads.get(&a).unwrap().to_vec::<f64>().unwrap(), vec![1.0; 3]);
        assert_eq!(grads.get(&b).unwrap().to_vec::<f64>().unwrap(), vec![1.0; 3]);
    }

    #[test]
    fn two_contributions_to_one_input_are_summed() {
        let x = Tensor::from_vec(vec![1.0f64, 2.0], [2]).unwrap().variable();
        // y = x·x + x: dy/dx = 2x + 1, three contributions to x.
        let y = x.mul(&x).unwrap().add(&x).unwrap().sum_all().unwrap();
        assert_eq!(y.backward().unwrap().get(&x).unwrap().to_vec::<f64>().unwrap(), vec![3.0, 5.0]);
    }
}
