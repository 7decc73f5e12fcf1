//! The cross-entropy family's contract: its options, [`CrossEntropyKernels`],
//! what the forward returns, and the validators both backends run: each
//! kernel checks that the targets are i64 (`check_indices_dtype`), reads
//! them to the host, and hands them to its validator, which checks every
//! target against the number of classes and returns each row's class.

use crate::backend::contract::{check_dtype, row_len, COMPUTE_FLOATS};
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

/// Each row's class (`targets` in row-major order, of `shape`), `None` for
/// ignored rows; any other target outside `0..c` is an error naming it and its row.
fn target_rows(targets: &[i64], shape: &Shape, c: usize, ignore_index: Option<i64>) -> Result<Vec<Option<usize>>> {
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
fn check_rows(logits_layout: &Layout, rows: usize, c: usize) -> Result<()> {
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

/// [`CrossEntropyKernels::cross_entropy`]: f32 or f64 logits holding one row
/// of classes (the last axis) per target, every target a class or the ignore
/// index. `targets` are the values (row-major) and their shape. Returns each
/// row's class, `None` for an ignored row.
pub fn check_cross_entropy(logits: (DType, &Layout), targets: (&[i64], &Shape), ignore_index: Option<i64>) -> Result<Vec<Option<usize>>> {
    check_dtype(OP, logits.0, COMPUTE_FLOATS)?;
    let c = row_len(logits.1);
    let rows = target_rows(targets.0, targets.1, c, ignore_index)?;
    check_rows(logits.1, rows.len(), c)?;
    Ok(rows)
}

/// [`CrossEntropyKernels::cross_entropy_backward`]: as the forward, and the
/// saved statistics and the row gradients of the logits' dtype, one per row.
/// Returns each row's class, `None` for an ignored row.
pub fn check_cross_entropy_backward(
    logits: (DType, &Layout),
    targets: (&[i64], &Shape),
    ignore_index: Option<i64>,
    row_max: (DType, usize),
    row_log_sum: (DType, usize),
    row_grad: (DType, &Layout),
) -> Result<Vec<Option<usize>>> {
    check_dtype(OP, logits.0, COMPUTE_FLOATS)?;
    if [row_max.0, row_log_sum.0, row_grad.0].iter().any(|&d| d != logits.0) {
        return Err(Error::dtype(OP, format!("backward operands have mixed dtypes (logits are {})", logits.0)));
    }
    let c = row_len(logits.1);
    let t = target_rows(targets.0, targets.1, c, ignore_index)?;
    let rows = t.len();
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
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn the_forward_returns_each_rows_class_and_names_a_bad_target() {
        let logits = Layout::contiguous([3, 5]);
        let shape = Shape::new([3]);
        let rows = check_cross_entropy((DType::F32, &logits), (&[0, -100, 4], &shape), Some(-100)).unwrap();
        assert_eq!(rows, vec![Some(0), None, Some(4)]);
        let e = check_cross_entropy((DType::F32, &logits), (&[0, 5, 1], &shape), Some(-100)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Index);
        assert!(
            e.message.contains("target 5 (row 1 of targets shape [3])") && e.message.contains("5 classes") && e.message.contains("-100"),
            "{e}"
        );
        let e = check_cross_entropy((DType::F32, &logits), (&[0, -1, 1], &shape), None).unwrap_err();
        assert!(e.message.contains("target -1") && !e.message.contains("ignore"), "{e}");
        // The dtype is checked before any target.
        let e = check_cross_entropy((DType::BF16, &logits), (&[9, 9, 9], &shape), None).unwrap_err();
        assert!(e.message.starts_with("dtype bf16 is not supported"), "{e}");
        // Two targets for three rows of logits.
        let e = check_cross_entropy((DType::F64, &logits), (&[0, 1], &Shape::new([2])), None).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Shape);
        assert!(e.message.contains("do not hold 2 rows of 5 classes"), "{e}");
    }

    #[test]
    fn the_backward_checks_targets_statistics_and_row_gradients() {
        let logits = Layout::contiguous([2, 4]);
        let shape = Shape::new([2]);
        let (f, g) = (DType::F64, Layout::contiguous([2]));
        let ok = check_cross_entropy_backward((f, &logits), (&[3, 0], &shape), None, (f, 2), (f, 2), (f, &g));
        assert_eq!(ok.unwrap(), vec![Some(3), Some(0)]);
        // A target out of range is an error here too (the CUDA kernel would skip it).
        let e = check_cross_entropy_backward((f, &logits), (&[4, 0], &shape), None, (f, 2), (f, 2), (f, &g)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Index);
        assert!(e.message.contains("target 4"), "{e}");
        let e = check_cross_entropy_backward((f, &logits), (&[1, 0], &shape), None, (DType::F32, 2), (f, 2), (f, &g)).unwrap_err();
        assert!(e.message.contains("mixed dtypes (logits are f64)"), "{e}");
        let e = check_cross_entropy_backward((f, &logits), (&[1, 0], &shape), None, (f, 1), (f, 2), (f, &g)).unwrap_err();
        assert!(e.message.contains("1 saved maxima, 2 saved sums and 2 row gradients for 2 rows"), "{e}");
        let i = DType::I64;
        let e = check_cross_entropy_backward((i, &logits), (&[1, 0], &shape), None, (i, 2), (i, 2), (i, &g)).unwrap_err();
        assert!(e.message.starts_with("dtype i64 is not supported"), "{e}");
    }
}
