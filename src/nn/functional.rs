//! Layers as functions of their weights, like `torch.nn.functional`: the
//! computation of a module with the parameters passed in, for weights that
//! are themselves computed (hypernetworks, weight sharing with a transform,
//! gradient checks through the weights).

use super::check_dtype;
use crate::{Result, Tensor};

/// `x · weightᵀ + bias` on the last axis (`torch.nn.functional.linear`):
/// `x` `[.., in]`, `weight` `[out, in]`, `bias` `[out]` → `[.., out]`.
/// Gradients flow to all three, whatever their history. [`Linear`](super::Linear)
/// computes exactly this with its parameters.
///
/// ```
/// use tamer::nn::functional::linear;
/// use tamer::Tensor;
/// let x = Tensor::from_vec(vec![1.0f64, 2.0], [1, 2]).unwrap();
/// let w = Tensor::from_vec(vec![1.0f64, 0.0, 3.0, -1.0], [2, 2]).unwrap().variable();
/// let b = Tensor::from_vec(vec![0.5f64, 0.0], [2]).unwrap();
/// let y = linear(&x, &w.scale(2.0).unwrap(), Some(&b)).unwrap();
/// assert_eq!(y.to_vec::<f64>().unwrap(), vec![2.5, 2.0]);
/// let grads = y.sum_all().unwrap().backward().unwrap();
/// assert_eq!(grads.get(&w).unwrap().to_vec::<f64>().unwrap(), vec![2.0, 4.0, 2.0, 4.0]);
/// assert!(linear(&x, &w.t().unwrap().narrow(0, 0, 1).unwrap(), None).is_ok());
/// assert!(linear(&x, &Tensor::ones([2, 3], tamer::DType::F64).unwrap(), None).unwrap_err().to_string().contains("linear"));
/// ```
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    linear_named("linear", x, weight, bias)
}

/// [`linear`] with errors naming `op` (the module calls it "Linear"): one
/// fused op (`crate::ops::linear`), the bias added in the product's pass.
pub(crate) fn linear_named(op: &'static str, x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    // The layers' own dtype check first: its message says how to convert.
    if weight.rank() == 2 {
        check_dtype(op, x, weight)?;
    }
    crate::ops::linear::linear(op, x, weight, bias)
}
