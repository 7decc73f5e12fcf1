//! Cross-entropy of logits against class indices, fused: one kernel computes
//! each row's log-softmax and loss, one computes the logits' gradient.
//!
//! With `ε` the label smoothing and `C` the number of classes, the target
//! distribution of a row with class `t` is `q = (1−ε)·onehot(t) + ε/C`
//! (PyTorch's definition), its loss `−Σ_c q_c · log_softmax(x)_c`, and the
//! gradient of that loss wrt the row's logits `softmax(x) − q`. Rows whose
//! target is the ignore index have loss 0 and gradient 0, and do not count
//! towards the mean.

use crate::autograd::BackwardOp;
use crate::backend::contract::nn::cross_entropy::{CrossEntropyForward, CrossEntropyKernels};
use crate::profile::{self, per_element, Cost};
use crate::tensor::Tensor;
use crate::types::{DType, Layout, Shape};
use crate::{Error, Result};

pub use crate::backend::contract::nn::cross_entropy::{CrossEntropyOptions, Reduction};

impl Tensor {
    /// Cross-entropy between `self`, logits of shape `[.., C]` (classes on the
    /// last axis: `[N, C]` or `[B, T, C]`), and i64 class indices of shape
    /// `[..]` (`[N]` or `[B, T]`).
    ///
    /// ```
    /// use tamer::Tensor;
    /// use tamer::ops::nn::cross_entropy::{CrossEntropyOptions, Reduction};
    /// let logits = Tensor::from_vec(vec![2.0f64, 0.0, 0.0, 0.0, 1.0, 0.0], [2, 3]).unwrap();
    /// let targets = Tensor::from_vec(vec![0i64, 2], [2]).unwrap();
    /// let loss = logits.cross_entropy(&targets, CrossEntropyOptions::default()).unwrap();
    /// let l0 = -(2f64.exp() / (2f64.exp() + 2.0)).ln();
    /// let l1 = -(1.0 / (1f64.exp() + 2.0)).ln();
    /// assert!((loss.to_scalar().unwrap() - (l0 + l1) / 2.0).abs() < 1e-12);
    ///
    /// // Ignored rows have no loss and do not count towards the mean.
    /// let targets = Tensor::from_vec(vec![0i64, -100], [2]).unwrap();
    /// let opts = CrossEntropyOptions::default().with_ignore_index(-100);
    /// assert!((logits.cross_entropy(&targets, opts).unwrap().to_scalar().unwrap() - l0).abs() < 1e-12);
    /// let per_row = logits.cross_entropy(&targets, opts.with_reduction(Reduction::None)).unwrap();
    /// assert_eq!(per_row.to_vec::<f64>().unwrap()[1], 0.0);
    ///
    /// // A class outside 0..C is an error naming it.
    /// let bad = Tensor::from_vec(vec![0i64, 3], [2]).unwrap();
    /// assert!(logits.cross_entropy(&bad, CrossEntropyOptions::default()).unwrap_err().to_string().contains("3"));
    /// ```
    pub fn cross_entropy(&self, targets: &Tensor, options: CrossEntropyOptions) -> Result<Tensor> {
        const OP: &str = "cross_entropy";
        let eps = options.label_smoothing;
        if !(0.0..=1.0).contains(&eps) {
            return Err(Error::value(OP, format!("label_smoothing {eps} is outside [0, 1]")));
        }
        if self.rank() == 0 {
            return Err(Error::shape(OP, "logits are a scalar; expected shape [.., C] with classes on the last axis"));
        }
        if targets.dtype() != DType::I64 {
            return Err(Error::dtype(
                OP,
                format!("targets (shape {}) have dtype {}, expected i64 class indices", targets.shape(), targets.dtype()),
            ));
        }
        if !self.dtype().is_compute_float() {
            return Err(crate::backend::contract::unsupported_dtype(OP, self.dtype()));
        }
        if self.device() != targets.device() {
            return Err(Error::device(
                OP,
                format!("logits are on {} and targets on {}", self.device(), targets.device()),
            ));
        }
        let c = self.dims()[self.rank() - 1];
        if targets.dims() != &self.dims()[..self.rank() - 1] {
            return Err(Error::shape(
                OP,
                format!(
                    "logits of shape {} need targets of shape {:?} (the logits' shape without the class axis), got {}",
                    self.shape(),
                    &self.dims()[..self.rank() - 1],
                    targets.shape()
                ),
            ));
        }
        if c == 0 && targets.numel() > 0 {
            return Err(Error::shape(OP, format!("logits of shape {} have no classes", self.shape())));
        }
        // The logits and targets read; the losses and two statistics per row written.
        let rows = targets.numel();
        let _op = profile::op(OP, || {
            Cost::flops(per_element::CROSS_ENTROPY * self.numel())
                .moving(self.dtype(), self.numel() + 3 * rows)
                .moving(DType::I64, rows)
        })?;
        let fwd = crate::dispatch!(OP, [x = &*self.storage(), t = &*targets.storage()], |wrap| {
            let f = x.cross_entropy(self.layout(), t, targets.layout(), &options)?;
            CrossEntropyForward {
                losses: wrap(f.losses),
                row_max: wrap(f.row_max),
                row_log_sum: wrap(f.row_log_sum),
                count: f.count,
            }
        });
        let per_row = |s| Tensor::from_storage(s, Layout::contiguous(Shape::new([rows])));
        let losses = per_row(fwd.losses);
        let value = match options.reduction {
            Reduction::None => losses.reshape(targets.shape().clone())?,
            Reduction::Sum => losses.sum_all()?,
            // 0/0 = NaN when every row is ignored, as in PyTorch.
            Reduction::Mean => losses.sum_all()?.scale(1.0 / fwd.count as f64)?,
        };
        let storage = value.storage().copy_contiguous(value.layout())?;
        Ok(Tensor::from_op(
            storage,
            Layout::contiguous(value.shape().clone()),
            vec![self.clone(), targets.clone()],
            CrossEntropyBackward {
                row_max: per_row(fwd.row_max),
                row_log_sum: per_row(fwd.row_log_sum),
                count: fwd.count,
                options,
            },
        ))
    }
}

struct CrossEntropyBackward {
    row_max: Tensor,
    row_log_sum: Tensor,
    count: usize,
    options: CrossEntropyOptions,
}

impl BackwardOp for CrossEntropyBackward {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }
    fn backward(&self, inputs: &[Tensor], _output: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (logits, targets) = (&inputs[0], &inputs[1]);
        let rows = Shape::new([targets.numel()]);
        // Every row's upstream gradient; for the reductions one value shared by all rows.
        let row_grad = match self.options.reduction {
            Reduction::None => grad.reshape(rows.clone())?,
            Reduction::Sum => grad.reshape(Shape::scalar())?.broadcast_as(rows.clone())?,
            Reduction::Mean => grad.reshape(Shape::scalar())?.scale(1.0 / self.count as f64)?.broadcast_as(rows.clone())?,
        };
        let (xs, ts, ms, ls, gs) = (
            logits.storage(),
            targets.storage(),
            self.row_max.storage(),
            self.row_log_sum.storage(),
            row_grad.storage(),
        );
        let n = logits.numel();
        let _op = profile::op("cross_entropy", || {
            Cost::flops(per_element::CROSS_ENTROPY_BACKWARD * n)
                .moving(logits.dtype(), 2 * n + 3 * rows.numel())
                .moving(DType::I64, rows.numel())
        })?;
        let dx = crate::dispatch!("cross_entropy", [x = &*xs, t = &*ts, m = &*ms, l = &*ls, g = &*gs] => {
            x.cross_entropy_backward(logits.layout(), t, targets.layout(), m, l, g, row_grad.layout(), &self.options)?
        });
        Ok(vec![Some(Tensor::from_storage(dx, Layout::contiguous(logits.shape().clone()))), None])
    }
}
