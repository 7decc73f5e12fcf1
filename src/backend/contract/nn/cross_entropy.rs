//! The cross-entropy family's contract: its options, [`CrossEntropyKernels`],
//! what the forward returns, and the checks both backends run on the targets
//! (on the host) and on the saved statistics.

use crate::types::{DType, Layout, Shape};
use crate::{Error, Result};

const OP: &str = "cross_entropy";

/// How per-row losses are combined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    /// Mean over the rows that are not ignored (PyTorch's default).
    #[default]
    Mean,
    /// Sum over all rows (ignored rows contribute 0).
    Sum,
    /// One loss per row, of the targets' shape (0 at ignored rows).
    None,
}

/// Options of [`Tensor::cross_entropy`](crate::Tensor::cross_entropy); `Default` is PyTorch's defaults
/// except that no index is ignored unless asked for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CrossEntropyOptions {
    /// `ε` in `[0, 1]`: the target puts `1 − ε` on the class and `ε/C` on every class.
    pub label_smoothing: f64,
    /// Rows with this target are skipped (PyTorch uses -100).
    pub ignore_index: Option<i64>,
    pub reduction: Reduction,
}

impl Default for CrossEntropyOptions {
    fn default() -> Self {
        CrossEntropyOptions {
            label_smoothing: 0.0,
            ignore_index: None,
            reduction: Reduction::Mean,
        }
    }
}

impl CrossEntropyOptions {
    pub fn with_label_smoothing(mut self, epsilon: f64) -> Self {
        self.label_smoothing = epsilon;
        self
    }
    pub fn with_ignore_index(mut self, index: i64) -> Self {
        self.ignore_index = Some(index);
        self
    }
    pub fn with_reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }
}

/// What the forward kernel returns.
pub struct CrossEntropyForward<S> {
    /// losses: `[rows]`, 0 at ignored rows.
    pub losses: S,
    /// max: `[rows]`, each row's largest logit.
    pub row_max: S,
    /// log_sum: `[rows]`, `ln Σ_c exp(x_c − max)`; with `max` it gives the softmax back.
    pub row_log_sum: S,
    /// Rows whose target is not the ignore index.
    pub count: usize,
}

/// The kernels a backend provides for cross_entropy.
pub trait CrossEntropyKernels: Sized {
    /// logits: [rows.., C] (`self`, any strides), targets: i64 [rows..] (any strides).
    /// A target outside `0..C` that is not the ignore index is an error naming it.
    fn cross_entropy(
        &self,
        logits_layout: &Layout,
        targets: &Self,
        targets_layout: &Layout,
        options: &CrossEntropyOptions,
    ) -> Result<CrossEntropyForward<Self>>;
    /// dlogits (contiguous, the logits' shape) = `row_grad[r] · (softmax − q)` per
    /// non-ignored row, 0 for ignored rows. `row_max` and `row_log_sum` are the
    /// forward's (contiguous `[rows]`); `row_grad` has `rows` elements (any strides,
    /// stride 0 to share one value).
    #[allow(clippy::too_many_arguments)]
    fn cross_entropy_backward(
        &self,
        logits_layout: &Layout,
        targets: &Self,
        targets_layout: &Layout,
        row_max: &Self,
        row_log_sum: &Self,
        row_grad: &Self,
        row_grad_layout: &Layout,
        options: &CrossEntropyOptions,
    ) -> Result<Self>;
}

/// The targets must be i64 class indices.
pub fn check_targets_dtype(dtype: DType) -> Result<()> {
    if dtype != DType::I64 {
        return Err(Error::dtype(OP, format!("targets have dtype {dtype}, expected i64 class indices")));
    }
    Ok(())
}

/// Each row's class (`targets` in row-major order, of `shape`), `None` for
/// ignored rows; any other target outside `0..c` is an error naming it and its row.
pub fn target_rows(targets: &[i64], shape: &Shape, c: usize, ignore_index: Option<i64>) -> Result<Vec<Option<usize>>> {
    targets
        .iter()
        .enumerate()
        .map(|(r, &k)| {
            if Some(k) == ignore_index {
                Ok(None)
            } else if k >= 0 && (k as u64) < c as u64 {
                Ok(Some(k as usize))
            } else {
                let ignore = ignore_index.map_or(String::new(), |i| format!(" or the ignore index {i}"));
                Err(Error::index(
                    OP,
                    format!("target {k} (row {r} of targets shape {shape}) is out of range for {c} classes; expected 0..{c}{ignore}"),
                ))
            }
        })
        .collect()
}

/// The logits must hold one row of `c` classes per target.
pub fn check_rows(logits_layout: &Layout, rows: usize, c: usize) -> Result<()> {
    if rows * c != logits_layout.numel() {
        return Err(Error::shape(
            OP,
            format!(
                "logits of shape {} do not hold {rows} rows of {c} classes (one row per target)",
                logits_layout.shape()
            ),
        ));
    }
    Ok(())
}

/// [`CrossEntropyKernels::cross_entropy_backward`]: logits holding `rows` rows
/// of `c`, the saved statistics and the row gradients of the logits' dtype,
/// one per row.
pub fn check_cross_entropy_backward(
    logits: (DType, &Layout),
    rows: usize,
    c: usize,
    row_max: (DType, usize),
    row_log_sum: (DType, usize),
    row_grad: (DType, &Layout),
) -> Result<()> {
    if [row_max.0, row_log_sum.0, row_grad.0].iter().any(|&d| d != logits.0) {
        return Err(Error::dtype(OP, format!("backward operands have mixed dtypes (logits are {})", logits.0)));
    }
    check_rows(logits.1, rows, c)?;
    if row_max.1 != rows || row_log_sum.1 != rows || row_grad.1.numel() != rows {
        return Err(Error::shape(
            OP,
            format!(
                "backward got {} saved maxima, {} saved sums and {} row gradients for {rows} rows",
                row_max.1,
                row_log_sum.1,
                row_grad.1.numel()
            ),
        ));
    }
    Ok(())
}
