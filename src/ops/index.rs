//! Indexing: index_select / embedding, gather, cat, stack, split, chunk.
//!
//! Index tensors hold `DType::I64`. Indices are checked by the kernels (they
//! live in storage, possibly on a device), and a bad one is an `Error` of kind
//! `Index` naming the value, the axis size and the op. Negative indices are an
//! error too: unlike Python slicing, a negative token id is always a bug.
//!
//! The backward of a selection is a scatter-add into zeros, so repeated
//! indices accumulate their gradients (the embedding of a token that appears
//! twice in a batch gets both contributions).

use crate::autograd::BackwardOp;
use crate::backend::contract::index::IndexKernels;
use crate::backend::Storage;
use crate::profile::{self, Cost};
use crate::tensor::Tensor;
use crate::types::{normalize_axis, DType, Layout, Shape};
use crate::{Error, Result};

/// Indices must be i64 and on the data's device.
fn check_ids(op: &'static str, x: &Tensor, ids: &Tensor) -> Result<()> {
    if ids.dtype() != DType::I64 {
        return Err(Error::dtype(
            op,
            format!(
                "indices must have dtype i64, got {} (indices shape {}, input shape {})",
                ids.dtype(),
                ids.shape(),
                x.shape()
            ),
        ));
    }
    if ids.device() != x.device() {
        return Err(Error::device(
            op,
            format!("indices are on {} but the input is on {}; expected the same device", ids.device(), x.device()),
        ));
    }
    Ok(())
}

/// `x`'s dims with `dims[axis] = n`.
fn with_dim(shape: &Shape, axis: usize, n: usize) -> Shape {
    let mut dims = shape.dims().to_vec();
    dims[axis] = n;
    Shape::new(dims)
}

/// A selection moves the indices and, per picked element, one read and one write.
fn selection_cost(x: &Tensor, ids: &Tensor, picked: usize) -> Cost {
    Cost::copy(x.dtype(), 2 * picked).moving(DType::I64, ids.numel())
}

/// The backward of a selection adds each picked gradient into zeros of the input's shape.
fn scatter_cost(grad: &Tensor, ids: &Tensor, input_elements: usize) -> Cost {
    Cost::flops(grad.numel())
        .moving(grad.dtype(), grad.numel() + input_elements)
        .moving(DType::I64, ids.numel())
}

fn index_select_storage(x: &Tensor, axis: usize, ids: &Tensor) -> Result<Storage> {
    let picked = x.numel() / x.dims()[axis].max(1) * ids.numel();
    let _op = profile::op("index_select", || selection_cost(x, ids, picked))?;
    Ok(crate::dispatch!("index_select", [s = &*x.storage(), i = &*ids.storage()] => s.index_select(x.layout(), axis, i, ids.layout())?))
}

fn gather_storage(x: &Tensor, axis: usize, ids: &Tensor) -> Result<Storage> {
    let _op = profile::op("gather", || selection_cost(x, ids, ids.numel()))?;
    Ok(crate::dispatch!("gather", [s = &*x.storage(), i = &*ids.storage()] => s.gather(x.layout(), axis, i, ids.layout())?))
}

impl Tensor {
    /// A 1-D i64 tensor of indices, for [`Tensor::index_select`], [`Tensor::embedding`]
    /// and [`Tensor::gather`] (use `Tensor::from_vec(ids, shape)` for other shapes).
    ///
    /// ```
    /// let ids = tamer::Tensor::from_indices(&[0, 2, 1]);
    /// assert_eq!(ids.dtype(), tamer::DType::I64);
    /// assert_eq!(ids.dims(), &[3]);
    /// ```
    pub fn from_indices(values: &[i64]) -> Tensor {
        Tensor::vector(values.to_vec())
    }

    /// Pick entries along `axis` (negative counts from the end) at the positions in
    /// `indices`, a 1-D (or 0-D) i64 tensor; repeats are allowed. The result has
    /// `self`'s shape with `dims[axis] = indices.numel()`. The gradient is scattered
    /// back and summed over repeats.
    ///
    /// ```
    /// use tamer::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [3, 2]).unwrap();
    /// let rows = x.index_select(0, &Tensor::from_indices(&[2, 0, 2])).unwrap();
    /// assert_eq!(rows.to_vec2::<f32>().unwrap(), vec![vec![5.0, 6.0], vec![1.0, 2.0], vec![5.0, 6.0]]);
    /// let cols = x.index_select(-1, &Tensor::from_indices(&[1])).unwrap();
    /// assert_eq!(cols.to_vec::<f32>().unwrap(), vec![2.0, 4.0, 6.0]);
    /// assert!(x.index_select(0, &Tensor::from_indices(&[3])).is_err()); // only 3 rows
    /// ```
    pub fn index_select(&self, axis: isize, indices: &Tensor) -> Result<Tensor> {
        const OP: &str = "index_select";
        let axis = self.shape().axis(OP, axis)?;
        check_ids(OP, self, indices)?;
        if indices.rank() > 1 {
            return Err(Error::shape(
                OP,
                format!(
                    "indices must be 1-D, got shape {} (input shape {}); flatten them or use gather",
                    indices.shape(),
                    self.shape()
                ),
            ));
        }
        let shape = with_dim(self.shape(), axis, indices.numel());
        shape.check_size(OP, self.dtype().size_in_bytes())?;
        let storage = index_select_storage(self, axis, indices)?;
        let layout = Layout::contiguous(shape);
        Ok(Tensor::from_op(
            storage,
            layout,
            vec![self.clone()],
            IndexSelectBackward { axis, ids: indices.detach() },
        ))
    }

    /// `self` with the slices of `src` along `axis` added at the positions in
    /// `indices` (out of place; repeated indices accumulate), as torch.index_add.
    /// `src` has `self`'s shape with `dims[axis] = indices.numel()`.
    ///
    /// ```
    /// use tamer::{DType, Tensor};
    /// let acc = Tensor::zeros([3], DType::F64).unwrap();
    /// let src = Tensor::from_vec(vec![1.0f64, 10.0, 100.0], [3]).unwrap();
    /// let out = acc.index_add(0, &Tensor::from_indices(&[2, 0, 2]), &src).unwrap();
    /// assert_eq!(out.to_vec::<f64>().unwrap(), vec![10.0, 0.0, 101.0]);
    /// ```
    pub fn index_add(&self, axis: isize, indices: &Tensor, src: &Tensor) -> Result<Tensor> {
        const OP: &str = "index_add";
        let axis = self.shape().axis(OP, axis)?;
        check_ids(OP, self, indices)?;
        self.same_dtype_device(OP, src)?;
        let expected = with_dim(self.shape(), axis, indices.numel());
        if indices.rank() > 1 || src.shape() != &expected {
            return Err(Error::shape(
                OP,
                format!(
                    "input {}, indices {} and source {}: expected 1-D indices and a source of shape {expected}",
                    self.shape(),
                    indices.shape(),
                    src.shape()
                ),
            ));
        }
        let _op = profile::op(OP, || {
            Cost::flops(src.numel())
                .moving(self.dtype(), 2 * self.numel() + src.numel())
                .moving(DType::I64, indices.numel())
        })?;
        let storage = crate::dispatch!("index_add", [x = &*self.storage(), i = &*indices.storage(), s = &*src.storage()] => x.index_add(self.layout(), axis, i, indices.layout(), s, src.layout())?);
        Ok(Tensor::from_op(
            storage,
            Layout::contiguous(self.shape().clone()),
            vec![self.clone(), src.clone()],
            IndexAddBackward { axis, ids: indices.detach() },
        ))
    }

    /// Rows of `weight` (`[V, D]`) for token ids of any shape: the result has shape
    /// `[ids.., D]`. An id outside `0..V` is an error naming it. The gradient of a
    /// row sums over every occurrence of its id.
    ///
    /// ```
    /// use tamer::Tensor;
    /// let weight = Tensor::from_vec(vec![0.0f32, 0.1, 1.0, 1.1, 2.0, 2.1], [3, 2]).unwrap();
    /// let ids = Tensor::from_vec(vec![2i64, 0, 1, 2], [2, 2]).unwrap();
    /// let e = Tensor::embedding(&weight, &ids).unwrap();
    /// assert_eq!(e.dims(), &[2, 2, 2]);
    /// assert_eq!(e.to_vec::<f32>().unwrap()[..4], [2.0, 2.1, 0.0, 0.1]);
    /// let err = Tensor::embedding(&weight, &Tensor::from_indices(&[5])).unwrap_err();
    /// assert!(err.to_string().contains("5") && err.to_string().contains("embedding"));
    /// ```
    pub fn embedding(weight: &Tensor, ids: &Tensor) -> Result<Tensor> {
        const OP: &str = "embedding";
        if weight.rank() != 2 {
            return Err(Error::shape(
                OP,
                format!("weight must be 2-D [vocab, dim], got shape {} (ids shape {})", weight.shape(), ids.shape()),
            ));
        }
        check_ids(OP, weight, ids)?;
        let flat = ids.flatten_all()?;
        let rows = weight.index_select(0, &flat).map_err(|e| Error::new(OP, e.kind, e.message))?;
        let mut dims = ids.dims().to_vec();
        dims.push(weight.dims()[1]);
        rows.reshape(dims)
    }

    /// torch.gather: `out[i][j][k] = self[i][indices[i][j][k]][k]` for `axis = 1`, and
    /// likewise for any axis. `indices` (i64) has `self`'s rank, and each of its dims off
    /// `axis` is at most `self`'s; the result has `indices`' shape. The gradient is
    /// scatter-added back, summing over repeats.
    ///
    /// ```
    /// use tamer::Tensor;
    /// let logits = Tensor::from_vec(vec![0.1f32, 0.2, 0.7, 0.5, 0.3, 0.2], [2, 3]).unwrap();
    /// let targets = Tensor::from_vec(vec![2i64, 0], [2, 1]).unwrap();
    /// let picked = logits.gather(1, &targets).unwrap();
    /// assert_eq!(picked.to_vec::<f32>().unwrap(), vec![0.7, 0.5]);
    /// ```
    pub fn gather(&self, axis: isize, indices: &Tensor) -> Result<Tensor> {
        const OP: &str = "gather";
        let axis = self.shape().axis(OP, axis)?;
        check_ids(OP, self, indices)?;
        check_gather_shape(OP, self.shape(), axis, indices.shape())?;
        let storage = gather_storage(self, axis, indices)?;
        Ok(Tensor::from_op(
            storage,
            Layout::contiguous(indices.shape().clone()),
            vec![self.clone()],
            GatherBackward { axis, ids: indices.detach() },
        ))
    }

    /// torch.scatter_add (out of place): `self` with `src[i]` added at position `i`
    /// with `i[axis]` replaced by `indices[i]`. `indices` follows [`Tensor::gather`]'s
    /// rules; `src` has `self`'s rank and dims at least `indices`' (only the leading
    /// `indices`-shaped block of `src` is used).
    ///
    /// ```
    /// use tamer::{DType, Tensor};
    /// let acc = Tensor::zeros([2, 3], DType::F64).unwrap();
    /// let ids = Tensor::from_vec(vec![2i64, 2, 0, 1], [2, 2]).unwrap();
    /// let src = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], [2, 2]).unwrap();
    /// let out = acc.scatter_add(1, &ids, &src).unwrap();
    /// assert_eq!(out.to_vec::<f64>().unwrap(), vec![0.0, 0.0, 3.0, 3.0, 4.0, 0.0]);
    /// ```
    pub fn scatter_add(&self, axis: isize, indices: &Tensor, src: &Tensor) -> Result<Tensor> {
        const OP: &str = "scatter_add";
        let axis = self.shape().axis(OP, axis)?;
        check_ids(OP, self, indices)?;
        self.same_dtype_device(OP, src)?;
        check_gather_shape(OP, self.shape(), axis, indices.shape())?;
        if src.rank() != indices.rank() || src.dims().iter().zip(indices.dims()).any(|(&s, &i)| s < i) {
            return Err(Error::shape(
                OP,
                format!(
                    "source shape {} must have the rank of indices {} and no smaller dims",
                    src.shape(),
                    indices.shape()
                ),
            ));
        }
        // A differentiable view of the used block: its backward zero-pads the rest.
        let mut block = src.clone();
        for (d, &n) in indices.dims().iter().enumerate() {
            if block.dims()[d] != n {
                block = block.narrow(d as isize, 0, n)?;
            }
        }
        let _op = profile::op(OP, || {
            Cost::flops(block.numel())
                .moving(self.dtype(), 2 * self.numel() + block.numel())
                .moving(DType::I64, indices.numel())
        })?;
        let storage = crate::dispatch!("scatter_add", [x = &*self.storage(), i = &*indices.storage(), s = &*block.storage()] => x.scatter_add(self.layout(), axis, i, indices.layout(), s, block.layout())?);
        Ok(Tensor::from_op(
            storage,
            Layout::contiguous(self.shape().clone()),
            vec![self.clone(), block],
            ScatterAddBackward { axis, ids: indices.detach() },
        ))
    }

    /// Join tensors along an existing `axis`. All must share dtype, device, rank and
    /// every dim except `axis`. The gradient of each input is its slice of the output's.
    ///
    /// ```
    /// use tamer::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0], [1, 2]).unwrap();
    /// let b = Tensor::from_vec(vec![3.0f32, 4.0, 5.0, 6.0], [2, 2]).unwrap();
    /// let c = Tensor::cat(&[a.clone(), b], 0).unwrap();
    /// assert_eq!(c.dims(), &[3, 2]);
    /// assert_eq!(c.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    /// assert_eq!(Tensor::cat(&[a.clone(), a], -1).unwrap().dims(), &[1, 4]);
    /// ```
    pub fn cat(tensors: &[Tensor], axis: isize) -> Result<Tensor> {
        const OP: &str = "cat";
        let first = tensors
            .first()
            .ok_or_else(|| Error::value(OP, "expected at least one tensor, got an empty list"))?;
        let axis = first.shape().axis(OP, axis)?;
        for (k, t) in tensors.iter().enumerate().skip(1) {
            first
                .same_dtype_device(OP, t)
                .map_err(|e| Error::new(OP, e.kind, format!("tensor {k}: {}", e.message)))?;
            let fits = t.rank() == first.rank() && t.dims().iter().zip(first.dims()).enumerate().all(|(d, (&a, &b))| d == axis || a == b);
            if !fits {
                return Err(Error::shape(
                    OP,
                    format!(
                        "tensor {k} has shape {} but tensor 0 has shape {}; expected the same rank and equal dims off axis {axis}",
                        t.shape(),
                        first.shape()
                    ),
                ));
            }
        }
        let sizes: Vec<usize> = tensors.iter().map(|t| t.dims()[axis]).collect();
        let total = sizes.iter().try_fold(0usize, |acc, &n| acc.checked_add(n));
        let too_large = || Error::shape(OP, format!("the sizes {sizes:?} along axis {axis} overflow when added"));
        let shape = with_dim(first.shape(), axis, total.ok_or_else(too_large)?);
        shape.check_size(OP, first.dtype().size_in_bytes())?;
        let _op = profile::op(OP, || Cost::copy(first.dtype(), 2 * shape.numel()))?;
        let storage = cat_storage(tensors, axis)?;
        Ok(Tensor::from_op(
            storage,
            Layout::contiguous(shape),
            tensors.to_vec(),
            CatBackward { axis, sizes },
        ))
    }

    /// Join same-shaped tensors along a new `axis` (in `-(rank+1)..=rank`).
    ///
    /// ```
    /// use tamer::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0], [2]).unwrap();
    /// let b = Tensor::from_vec(vec![3.0f32, 4.0], [2]).unwrap();
    /// assert_eq!(Tensor::stack(&[a.clone(), b.clone()], 0).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
    /// assert_eq!(Tensor::stack(&[a, b], -1).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 3.0, 2.0, 4.0]);
    /// ```
    pub fn stack(tensors: &[Tensor], axis: isize) -> Result<Tensor> {
        const OP: &str = "stack";
        let first = tensors
            .first()
            .ok_or_else(|| Error::value(OP, "expected at least one tensor, got an empty list"))?;
        let axis = normalize_axis(OP, axis, first.rank() + 1)?;
        if let Some((k, t)) = tensors.iter().enumerate().find(|(_, t)| t.shape() != first.shape()) {
            return Err(Error::shape(
                OP,
                format!(
                    "tensor {k} has shape {} but tensor 0 has shape {}; expected equal shapes",
                    t.shape(),
                    first.shape()
                ),
            ));
        }
        let parts = tensors.iter().map(|t| t.unsqueeze(axis as isize)).collect::<Result<Vec<_>>>()?;
        Tensor::cat(&parts, axis as isize).map_err(|e| Error::new(OP, e.kind, e.message))
    }

    /// Views of consecutive pieces of `size` along `axis` (the last may be shorter).
    /// An empty axis gives one empty piece, as in PyTorch.
    ///
    /// ```
    /// let x = tamer::Tensor::arange(0.0, 5.0, 1.0, tamer::DType::F32).unwrap();
    /// let parts = x.split(2, 0).unwrap();
    /// let lens: Vec<usize> = parts.iter().map(|p| p.dims()[0]).collect();
    /// assert_eq!(lens, vec![2, 2, 1]);
    /// assert_eq!(parts[1].to_vec::<f32>().unwrap(), vec![2.0, 3.0]);
    /// ```
    pub fn split(&self, size: usize, axis: isize) -> Result<Vec<Tensor>> {
        const OP: &str = "split";
        let a = self.shape().axis(OP, axis)?;
        if size == 0 {
            return Err(Error::value(
                OP,
                format!("piece size must be positive (splitting axis {a} of shape {})", self.shape()),
            ));
        }
        let n = self.dims()[a];
        if n == 0 {
            return Ok(vec![self.clone()]);
        }
        (0..n).step_by(size).map(|start| self.narrow(a as isize, start, size.min(n - start))).collect()
    }

    /// Views of consecutive pieces with the given lengths along `axis`, which must sum
    /// to the axis size (torch.split with a list).
    ///
    /// ```
    /// let x = tamer::Tensor::arange(0.0, 6.0, 1.0, tamer::DType::F32).unwrap().reshape([2, 3]).unwrap();
    /// let parts = x.split_with_sizes(&[1, 2], -1).unwrap();
    /// assert_eq!(parts[1].to_vec::<f32>().unwrap(), vec![1.0, 2.0, 4.0, 5.0]);
    /// assert!(x.split_with_sizes(&[1, 1], -1).is_err());
    /// ```
    pub fn split_with_sizes(&self, sizes: &[usize], axis: isize) -> Result<Vec<Tensor>> {
        const OP: &str = "split_with_sizes";
        let a = self.shape().axis(OP, axis)?;
        let total = sizes.iter().try_fold(0usize, |acc, &s| acc.checked_add(s));
        if total != Some(self.dims()[a]) {
            return Err(Error::shape(
                OP,
                format!(
                    "sizes {sizes:?} do not sum to {}, the size of axis {a} of shape {}",
                    self.dims()[a],
                    self.shape()
                ),
            ));
        }
        let mut start = 0;
        let mut out = Vec::with_capacity(sizes.len());
        for &s in sizes {
            out.push(self.narrow(a as isize, start, s)?);
            start += s;
        }
        Ok(out)
    }

    /// `n` views of (nearly) equal size along `axis`, as torch.chunk: each piece holds
    /// `ceil(size / n)` entries, so fewer than `n` pieces come back when `n` does not
    /// fit evenly (`chunk(4)` of 6 gives pieces of 2, 2, 2).
    ///
    /// ```
    /// let x = tamer::Tensor::arange(0.0, 7.0, 1.0, tamer::DType::F32).unwrap();
    /// let lens: Vec<usize> = x.chunk(3, 0).unwrap().iter().map(|p| p.numel()).collect();
    /// assert_eq!(lens, vec![3, 3, 1]);
    /// assert!(x.chunk(0, 0).is_err());
    /// ```
    pub fn chunk(&self, n: usize, axis: isize) -> Result<Vec<Tensor>> {
        const OP: &str = "chunk";
        let a = self.shape().axis(OP, axis)?;
        if n == 0 {
            return Err(Error::value(
                OP,
                format!("number of chunks must be positive (axis {a} of shape {})", self.shape()),
            ));
        }
        let size = self.dims()[a];
        if size == 0 {
            return (0..n).map(|_| self.narrow(a as isize, 0, 0)).collect();
        }
        self.split(size.div_ceil(n), a as isize)
    }
}

/// torch.gather's shape rule: same rank, dims off `axis` no larger than the input's.
fn check_gather_shape(op: &'static str, x: &Shape, axis: usize, ids: &Shape) -> Result<()> {
    let fits = ids.rank() == x.rank() && ids.dims().iter().zip(x.dims()).enumerate().all(|(d, (&i, &s))| d == axis || i <= s);
    if !fits {
        return Err(Error::shape(
            op,
            format!(
                "indices shape {ids} does not fit input shape {x}: expected rank {} and dims no larger off axis {axis}",
                x.rank()
            ),
        ));
    }
    Ok(())
}

fn cat_storage(tensors: &[Tensor], axis: usize) -> Result<Storage> {
    // One read guard per distinct storage: `cat(&[x, x])` must not lock x twice.
    let mut owners: Vec<usize> = Vec::with_capacity(tensors.len());
    for (k, t) in tensors.iter().enumerate() {
        owners.push(tensors[..k].iter().position(|u| u.same_storage(t)).unwrap_or(k));
    }
    let guards: Vec<_> = tensors.iter().enumerate().map(|(k, t)| (owners[k] == k).then(|| t.storage())).collect();
    let mut storages = Vec::with_capacity(tensors.len());
    for k in 0..tensors.len() {
        let Some(guard) = &guards[owners[k]] else {
            return Err(Error::value("cat", "internal: missing storage guard"));
        };
        storages.push(&**guard);
    }
    fn typed_parts<'a, S: crate::backend::BackendRef>(storages: &[&'a Storage], tensors: &'a [Tensor]) -> Result<Vec<(&'a S, &'a Layout)>> {
        storages
            .iter()
            .zip(tensors)
            .map(|(s, t)| {
                S::from_storage(s).map(|inner| (inner, t.layout())).ok_or_else(|| {
                    Error::device(
                        "cat",
                        format!(
                            "part of shape {} lives on {}, unlike the first part ({})",
                            t.shape(),
                            t.device(),
                            tensors[0].device()
                        ),
                    )
                })
            })
            .collect()
    }
    Ok(crate::dispatch!("cat", [first = storages[0]], |wrap| {
        let _ = first;
        wrap(IndexKernels::cat(&typed_parts(&storages, tensors)?, axis)?)
    }))
}

/// `dx = index_add(zeros, ids, dy)`: each picked slice sends its gradient home.
/// A dedicated kernel, so the zeros are never copied.
struct IndexSelectBackward {
    axis: usize,
    ids: Tensor,
}
impl BackwardOp for IndexSelectBackward {
    fn name(&self) -> &'static str {
        "index_select"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let shape = inputs[0].shape();
        let _op = profile::op("index_select", || scatter_cost(grad, &self.ids, shape.numel()))?;
        let dx = crate::dispatch!("index_select", [g = &*grad.storage(), i = &*self.ids.storage()] => g.index_select_backward(grad.layout(), self.axis, i, self.ids.layout(), shape)?);
        Ok(vec![Some(Tensor::from_storage(dx, Layout::contiguous(shape.clone())))])
    }
}

/// `d self = dy`, `d src = index_select(dy, ids)`.
struct IndexAddBackward {
    axis: usize,
    ids: Tensor,
}
impl BackwardOp for IndexAddBackward {
    fn name(&self) -> &'static str {
        "index_add"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let dsrc = if inputs[1].requires_grad() {
            Some(grad.index_select(self.axis as isize, &self.ids)?)
        } else {
            None
        };
        Ok(vec![Some(grad.clone()), dsrc])
    }
}

/// `dx = scatter_add(zeros, ids, dy)`, by a dedicated kernel.
struct GatherBackward {
    axis: usize,
    ids: Tensor,
}
impl BackwardOp for GatherBackward {
    fn name(&self) -> &'static str {
        "gather"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let shape = inputs[0].shape();
        let _op = profile::op("gather", || scatter_cost(grad, &self.ids, shape.numel()))?;
        let dx = crate::dispatch!("gather", [g = &*grad.storage(), i = &*self.ids.storage()] => g.gather_backward(grad.layout(), self.axis, i, self.ids.layout(), shape)?);
        Ok(vec![Some(Tensor::from_storage(dx, Layout::contiguous(shape.clone())))])
    }
}

/// `d self = dy`, `d src = gather(dy, ids)` (src is already the ids-shaped block).
struct ScatterAddBackward {
    axis: usize,
    ids: Tensor,
}
impl BackwardOp for ScatterAddBackward {
    fn name(&self) -> &'static str {
        "scatter_add"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let dsrc = if inputs[1].requires_grad() {
            Some(grad.gather(self.axis as isize, &self.ids)?)
        } else {
            None
        };
        Ok(vec![Some(grad.clone()), dsrc])
    }
}

/// Each input's gradient is its slice of the output gradient (a view, no copy).
struct CatBackward {
    axis: usize,
    sizes: Vec<usize>,
}
impl BackwardOp for CatBackward {
    fn name(&self) -> &'static str {
        "cat"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let mut start = 0;
        let mut out = Vec::with_capacity(inputs.len());
        for (input, &size) in inputs.iter().zip(&self.sizes) {
            out.push(if input.requires_grad() {
                Some(grad.narrow(self.axis as isize, start, size)?)
            } else {
                None
            });
            start += size;
        }
        Ok(out)
    }
}
