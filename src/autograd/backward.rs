//! The backward pass and where its gradients are stored.

use super::grad_mode::NoGradGuard;
use crate::backend::contract::binary::{Add, BinaryKernels};
use crate::backend::contract::optim::OptimKernels;
use crate::profile::{self, Cost};
use crate::tensor::{Tensor, TensorId};
use crate::types::{DType, Layout};
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
        // The seed is part of the backward pass too.
        let _phase = profile::backward_phase();
        let seed = self.backward_seed()?;
        self.backward_with_grad(&seed)
    }

    /// Backward from a non-scalar output, given the gradient of the loss with respect to it.
    pub fn backward_with_grad(&self, grad: &Tensor) -> Result<GradStore> {
        self.backward_walk(grad, None)
    }

    /// [`backward`](Tensor::backward), calling `on_ready(variable, grad)`
    /// as soon as each variable's gradient is final, while the rest of the
    /// backward pass still runs: the moment data-parallel training can start
    /// sending that gradient to the other ranks (PyTorch's
    /// `register_post_accumulate_grad_hook`). Each variable is reported
    /// once, with the gradient the returned store holds; the layers nearest
    /// the loss come first. An error from `on_ready` stops the pass.
    ///
    /// ```
    /// use tamer::Tensor;
    /// let w1 = Tensor::from_vec(vec![2.0f64], [1]).unwrap().variable();
    /// let w2 = Tensor::from_vec(vec![3.0f64], [1]).unwrap().variable();
    /// let x = Tensor::from_vec(vec![5.0f64], [1]).unwrap();
    /// // Two layers: w2 is nearer the loss, so its gradient is final first.
    /// let loss = x.mul(&w1).unwrap().mul(&w2).unwrap().sum_all().unwrap();
    /// let mut seen = Vec::new();
    /// let grads = loss
    ///     .backward_with_hook(|v, g| {
    ///         seen.push((v.id() == w1.id(), g.to_vec::<f64>()?[0]));
    ///         Ok(())
    ///     })
    ///     .unwrap();
    /// assert_eq!(seen, [(false, 10.0), (true, 15.0)]);
    /// assert_eq!(grads.get(&w1).unwrap().to_vec::<f64>().unwrap(), [15.0]);
    /// ```
    pub fn backward_with_hook(&self, mut on_ready: impl FnMut(&Tensor, &Tensor) -> Result<()>) -> Result<GradStore> {
        let _phase = profile::backward_phase();
        let seed = self.backward_seed()?;
        self.backward_walk(&seed, Some(&mut on_ready))
    }

    /// The walk itself: reverse topological order, each node's gradient
    /// handed to its backward and the results summed into its inputs. With
    /// `on_ready`, a variable's gradient is reported once every node that
    /// uses it has been walked (counted in `uses`), which for a weight near
    /// the loss is long before the walk reaches the variable's own place in
    /// the order; without, nothing is counted, and each gradient is stored
    /// when the walk reaches its variable.
    fn backward_walk(&self, grad: &Tensor, mut on_ready: Option<&mut ReadyHook<'_>>) -> Result<GradStore> {
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
        let counting = on_ready.is_some();
        let mut uses = if counting { count_uses(&order) } else { HashMap::new() };
        let mut pending: HashMap<TensorId, Tensor> = HashMap::new();
        pending.insert(self.id(), grad.clone());
        let mut store = GradStore::default();
        // A variable's gradient, once final: into the store, and reported.
        let mut finish = |v: &Tensor, g: Tensor, store: &mut GradStore| -> Result<()> {
            if let Some(report) = on_ready.as_mut() {
                report(v, &g)?;
            }
            store.grads.insert(v.id(), g);
            Ok(())
        };
        for t in order.iter().rev() {
            let g = pending.remove(&t.id());
            let Some(node) = t.node() else {
                // With uses counted, only the loss itself reaches here with its
                // gradient pending: every other variable was finished when its
                // last user was walked.
                if let (Some(g), true) = (g, t.is_variable()) {
                    finish(t, g, &mut store)?;
                }
                continue;
            };
            let input_grads = match g {
                Some(g) => {
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
                    input_grads
                }
                // No gradient reached this node: its inputs get nothing from
                // it, but when uses are counted, it is one of theirs walked.
                None if !counting => continue,
                None => vec![None; node.inputs.len()],
            };
            for (input, ig) in node.inputs.iter().zip(input_grads) {
                if !input.requires_grad() {
                    continue;
                }
                if let Some(ig) = ig {
                    check_gradient(node.op.name(), input, &ig)?;
                    let acc = match pending.remove(&input.id()) {
                        Some(prev) => accumulate(prev, &ig)?,
                        None => ig,
                    };
                    pending.insert(input.id(), acc);
                }
                let left = uses.get_mut(&input.id()).map(|n| {
                    *n -= 1;
                    *n
                });
                if left == Some(0) && input.node().is_none() && input.is_variable() {
                    if let Some(g) = pending.remove(&input.id()) {
                        finish(input, g, &mut store)?;
                    }
                }
            }
        }
        Ok(store)
    }

    /// Ones in the loss's shape: the gradient of the loss with respect to itself.
    fn backward_seed(&self) -> Result<Tensor> {
        if self.numel() != 1 {
            return Err(Error::autograd(
                "backward",
                format!(
                    "the loss must hold one element, got shape {}; reduce it (e.g. .mean_all()) or use backward_with_grad",
                    self.shape()
                ),
            ));
        }
        Tensor::full_on(self.shape().clone(), 1.0, self.dtype(), self.device())
    }
}

/// What [`Tensor::backward_with_hook`] calls with each final gradient.
type ReadyHook<'a> = dyn FnMut(&Tensor, &Tensor) -> Result<()> + 'a;

/// For each tensor of the walk, the number of node inputs that name it
/// (an input named twice, as in `x * x`, counts twice): how many
/// contributions, some possibly `None`, its gradient waits for.
fn count_uses(order: &[Tensor]) -> HashMap<TensorId, usize> {
    let mut uses = HashMap::new();
    for t in order {
        if let Some(node) = t.node() {
            for input in node.inputs.iter().filter(|i| i.requires_grad()) {
                *uses.entry(input.id()).or_insert(0) += 1;
            }
        }
    }
    uses
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
/// backend's kernels directly: the backward pass calls no op, so autograd
/// stays below the ops (it needs only the storages and their layouts).
///
/// A tensor used `k` times receives `k` contributions. When the running sum
/// is the only handle to its buffer (no other gradient, view, seed or saved
/// tensor shares it: [`can_add_in_place`]), the next contribution is added
/// into it in place (the optimizers' `axpy` with scale 1, which gives the
/// bits `a + b` gives) instead of into a fresh buffer. A sum that is shared,
/// as when a backward hands its own output gradient to two inputs (add's
/// does), gets a new buffer, so the other holders never see it change.
fn accumulate(sum: Tensor, g: &Tensor) -> Result<Tensor> {
    let _op = profile::op("grad_sum", || Cost::elementwise(sum.dtype(), 2 * sum.numel(), sum.numel()))?;
    if can_add_in_place(&sum) {
        {
            let (gs, mut ss) = (g.storage(), sum.storage_mut());
            crate::dispatch!("backward", [s = &mut *ss, y = &*gs], |_wrap| s.axpy(
                "grad_sum",
                sum.layout(),
                y,
                g.layout(),
                1.0
            )?);
        }
        return Ok(sum);
    }
    let storage = crate::dispatch!("backward", [x = &*sum.storage(), y = &*g.storage()] => x.binary(sum.layout(), y, g.layout(), Add)?);
    Ok(Tensor::from_storage(storage, Layout::contiguous(sum.shape().clone())))
}

/// Whether a running gradient sum may take the next contribution in place:
/// its handle and buffer are nobody else's, its elements do not overlap (a
/// contiguous layout), and its dtype is one the in-place kernel takes.
fn can_add_in_place(sum: &Tensor) -> bool {
    sum.is_sole_owner() && sum.is_contiguous() && matches!(sum.dtype(), DType::F32 | DType::F64)
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

    /// A backward that hands its output gradient itself (not a copy) to
    /// every input.
    struct PassesGradient;
    impl BackwardOp for PassesGradient {
        fn name(&self) -> &'static str {
            "passes_gradient"
        }
        fn backward(&self, inputs: &[Tensor], _output: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
            Ok(inputs.iter().map(|_| Some(grad.clone())).collect())
        }
    }

    /// `a` recorded with [`PassesGradient`] over `inputs` (the values: a copy of `a`).
    fn passes(a: &Tensor, inputs: Vec<Tensor>) -> Tensor {
        let storage = a.storage().copy_contiguous(a.layout()).unwrap();
        Tensor::from_op(storage, a.layout().clone(), inputs, PassesGradient)
    }

    #[test]
    fn a_gradient_shared_by_two_inputs_is_not_summed_into_in_place() {
        for dtype in [DType::F32, DType::F64] {
            let a = Tensor::from_vec(vec![1.0f64, 2.0], [2]).unwrap().to_dtype(dtype).unwrap().variable();
            let b = Tensor::from_vec(vec![3.0f64, 4.0], [2]).unwrap().to_dtype(dtype).unwrap().variable();
            // d(a + b) hands one tensor to both a and b; then each gets a second
            // contribution (3 and 5). Summing into the shared one in place would
            // give the second variable 1 + 3 + 5.
            let loss = passes(&a, vec![a.clone(), b.clone()])
                .sum_all()
                .unwrap()
                .add(&a.scale(3.0).unwrap().sum_all().unwrap())
                .unwrap()
                .add(&b.scale(5.0).unwrap().sum_all().unwrap())
                .unwrap();
            let grads = loss.backward().unwrap();
            assert_eq!(grads.get(&a).unwrap().to_f64_vec().unwrap(), vec![4.0, 4.0], "{dtype}");
            assert_eq!(grads.get(&b).unwrap().to_f64_vec().unwrap(), vec![6.0, 6.0], "{dtype}");
        }
    }

    #[test]
    fn the_callers_seed_and_a_doubled_input_are_left_alone() {
        let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [3]).unwrap().variable();
        // The backward hands the seed itself to a, twice, and a gets a third
        // contribution from the product: none may be added into the seed.
        let y = passes(&a, vec![a.clone(), a.clone()]).add(&a.mul(&a).unwrap()).unwrap();
        let seed = Tensor::from_vec(vec![1.0f32, 10.0, 100.0], [3]).unwrap();
        let grads = y.backward_with_grad(&seed).unwrap();
        // dy/da = 2 + 2a, times the seed.
        assert_eq!(grads.get(&a).unwrap().to_vec::<f32>().unwrap(), vec![4.0, 60.0, 800.0]);
        assert_eq!(seed.to_vec::<f32>().unwrap(), vec![1.0, 10.0, 100.0]);
    }

    #[test]
    fn only_a_sum_nobody_else_holds_is_written_in_place() {
        let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]).unwrap();
        assert!(super::can_add_in_place(&t));
        let clone = t.clone();
        assert!(!super::can_add_in_place(&t));
        drop(clone);
        let view = t.detach();
        assert!(!super::can_add_in_place(&t), "a second handle on the buffer");
        drop(view);
        let sum = super::accumulate(t, &Tensor::from_vec(vec![0.5f32; 4], [2, 2]).unwrap()).unwrap();
        assert_eq!(sum.to_vec::<f32>().unwrap(), vec![1.5, 2.5, 3.5, 4.5]);
        // Overlapping elements (a broadcast) and dtypes without the in-place kernel: a new buffer.
        let row = Tensor::from_vec(vec![1.0f32, 2.0], [2]).unwrap();
        let broadcast = Tensor::from_storage(
            row.storage().copy_contiguous(row.layout()).unwrap(),
            row.layout().broadcast_as("t", &crate::Shape::new([3, 2])).unwrap(),
        );
        assert!(!super::can_add_in_place(&broadcast));
        let sum = super::accumulate(broadcast, &Tensor::ones([3, 2], DType::F32).unwrap()).unwrap();
        assert_eq!(sum.to_vec::<f32>().unwrap(), vec![2.0, 3.0, 2.0, 3.0, 2.0, 3.0]);
        assert!(!super::can_add_in_place(&Tensor::ones([2], DType::F32).unwrap().to_dtype(DType::F16).unwrap()));
    }

    #[test]
    fn two_contributions_to_one_input_are_summed() {
        let x = Tensor::from_vec(vec![1.0f64, 2.0], [2]).unwrap().variable();
        // y = x·x + x: dy/dx = 2x + 1, three contributions to x.
        let y = x.mul(&x).unwrap().add(&x).unwrap().sum_all().unwrap();
        assert_eq!(y.backward().unwrap().get(&x).unwrap().to_vec::<f64>().unwrap(), vec![3.0, 5.0]);
    }
}

#[cfg(test)]
mod hook_tests {
    use crate::autograd::BackwardOp;
    use crate::{DType, Result, Tensor};

    /// `a + b` whose backward gives `a` no gradient.
    struct BlocksFirst;
    impl BackwardOp for BlocksFirst {
        fn name(&self) -> &'static str {
            "blocks_first"
        }
        fn backward(&self, _inputs: &[Tensor], _output: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
            Ok(vec![None, Some(grad.clone())])
        }
    }

    #[test]
    fn each_variable_is_reported_once_nearest_the_loss_first_with_the_stored_gradient() {
        let v = |x: f64| Tensor::from_vec(vec![x, x + 1.0], [2]).unwrap().variable();
        let (w1, w2, w3, tied) = (v(1.0), v(2.0), v(3.0), v(0.5));
        let x = Tensor::from_vec(vec![0.25f64, 4.0], [2]).unwrap();
        // Three layers, with `tied` used by the first and the last (as an
        // embedding tied to the output head), and w2 used twice in a row.
        let h1 = x.add(&tied).unwrap().mul(&w1).unwrap();
        let h2 = h1.mul(&w2).unwrap().mul(&w2).unwrap();
        let loss = h2.mul(&w3).unwrap().mul(&tied).unwrap().sum_all().unwrap();
        let mut order = Vec::new();
        let mut reported = Vec::new();
        let grads = loss
            .backward_with_hook(|var, g| {
                order.push(var.id());
                reported.push((var.id(), g.to_vec::<f64>()?));
                Ok(())
            })
            .unwrap();
        assert_eq!(order, [w3.id(), w2.id(), w1.id(), tied.id()]);
        assert_eq!(grads.len(), 4);
        for (id, g) in &reported {
            assert_eq!(&grads.get_by_id(*id).unwrap().to_vec::<f64>().unwrap(), g);
        }
        // The same values as the plain backward pass, bit for bit.
        let plain = loss.backward().unwrap();
        for w in [&w1, &w2, &w3, &tied] {
            assert_eq!(plain.get(w).unwrap().to_vec::<f64>().unwrap(), grads.get(w).unwrap().to_vec::<f64>().unwrap());
        }
    }

    #[test]
    fn a_variable_is_reported_while_the_backward_pass_still_runs() {
        // w_last's gradient is final after the first node; the hook then sees
        // w_first without a gradient yet (the pass has not reached it).
        let w_first = Tensor::ones([3], DType::F32).unwrap().variable();
        let w_last = Tensor::ones([3], DType::F32).unwrap().variable();
        let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [3]).unwrap();
        let loss = x.mul(&w_first).unwrap().tanh().unwrap().mul(&w_last).unwrap().sum_all().unwrap();
        let mut calls = 0;
        loss.backward_with_hook(|var, _| {
            calls += 1;
            if calls == 1 {
                assert_eq!(var.id(), w_last.id(), "the layer nearest the loss is final first");
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(calls, 2);
    }

    #[test]
    fn a_variable_below_a_blocked_path_gets_no_gradient_and_no_report() {
        let a = Tensor::ones([2], DType::F64).unwrap().variable();
        let b = Tensor::ones([2], DType::F64).unwrap().variable();
        let scaled = a.scale(2.0).unwrap();
        let storage = scaled.storage().copy_contiguous(scaled.layout()).unwrap();
        let y = Tensor::from_op(storage, scaled.layout().clone(), vec![scaled.clone(), b.clone()], BlocksFirst);
        let mut seen = Vec::new();
        let grads = y
            .sum_all()
            .unwrap()
            .backward_with_hook(|var, _| {
                seen.push(var.id());
                Ok(())
            })
            .unwrap();
        assert_eq!(seen, [b.id()]);
        assert!(grads.get(&a).is_none());
        assert_eq!(grads.get(&b).unwrap().to_vec::<f64>().unwrap(), [1.0, 1.0]);
    }

    #[test]
    fn an_error_from_the_hook_stops_the_pass_and_a_variable_loss_is_reported() {
        let w = Tensor::ones([2], DType::F64).unwrap().variable();
        let loss = w.sum_all().unwrap();
        let err = loss.backward_with_hook(|_, _| Err(crate::Error::value("hook", "stop here"))).unwrap_err();
        assert!(err.to_string().contains("stop here"), "{err}");
        // A loss that is itself a variable: reported with the seed.
        let s = Tensor::scalar(3.0f64).variable();
        let mut n = 0;
        let grads = s
            .backward_with_hook(|_, g| {
                n += 1;
                assert_eq!(g.to_scalar()?, 1.0);
                Ok(())
            })
            .unwrap();
        assert_eq!((n, grads.len()), (1, 1));
    }
}
