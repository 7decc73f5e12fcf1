//! Indexing on CUDA (cuda/index.cu): index_select / embedding, index_add,
//! gather, scatter_add, their backward passes, and cat.
//!
//! The ids are copied to the host (one small transfer, which waits for the
//! queued work) and checked there with the contract's validators (`backend/contract/index.rs`), as on the CPU, so a bad
//! id is the same `Error` naming the id, the axis and its size on both
//! devices. The kernels then get a contiguous device copy of the ids.
//!
//! The scatter-adds are deterministic without atomics: `index_add` and the
//! embedding backward bucket the ids by target on the host (a counting sort,
//! uploaded as one i64 buffer) so that one thread owns each output element;
//! `scatter_add` gives one thread each column along the axis. Both sum in the
//! CPU's order, so results are bit-identical to the CPU backend's.

use super::{elementwise_config, kernel_name, kernels, width_suffix, Arg, CudaStorage, StridedLayout};
use crate::backend::contract::check_indices_dtype;
use crate::backend::contract::index::{
    check_cat, check_gather, check_gather_backward, check_index_add, check_index_select, check_index_select_backward, check_scatter_add, IndexKernels,
};
use crate::backend::cpu::CpuStorage;
use crate::backend::BackendStorage;
use crate::types::{Layout, Shape};
use crate::{Error, Result};
use cudarc::driver::LaunchConfig;

/// Rows at least this long (and contiguous in the input) take the row-copy
/// kernel `index_select_rows`; shorter ones the per-element `index_select`.
const ROW_KERNEL_MIN: usize = 32;

/// The ids, once they are known to be i64, as a contiguous device copy (what
/// the kernels read) and as host values (for the validators and the bucketing).
fn ids_both(op: &'static str, ids: &CudaStorage, layout: &Layout) -> Result<(CudaStorage, Vec<i64>)> {
    check_indices_dtype(op, "indices", ids.dtype())?;
    let dev = ids.copy_contiguous(layout)?;
    match dev.to_cpu()?.into_vec::<i64>() {
        Ok(host) => Ok((dev, host)),
        Err(other) => Err(Error::dtype(op, format!("indices came back as {}, expected i64", other.dtype()))),
    }
}

/// `out` (contiguous `dims`, holding x or zeros) with the slices of `src`
/// (`[outer.., ids.len(), inner..]`, any strides) added at `ids` along `axis`.
fn index_add_into(op: &'static str, out: &CudaStorage, dims: &[usize], axis: usize, ids: &[i64], src: &CudaStorage, src_layout: &Layout) -> Result<()> {
    let (outer, size, inner) = (dims[..axis].iter().product::<usize>(), dims[axis], dims[axis + 1..].iter().product::<usize>());
    let n = ids.len();
    if outer == 0 || size == 0 || inner == 0 || n == 0 {
        return Ok(());
    }
    // Bucket the positions j by target v (CSR): start[v]..start[v+1] in `order`.
    let mut start = vec![0usize; size + 1];
    for &i in ids {
        start[i as usize + 1] += 1;
    }
    for v in 0..size {
        start[v + 1] += start[v];
    }
    let targets: Vec<usize> = (0..size).filter(|&v| start[v + 1] > start[v]).collect();
    let u = targets.len();
    // csr = [targets (U) | seg (U + 1) | order (n)], see index_add_impl in cuda/index.cu.
    let mut csr = vec![0i64; 2 * u + 1 + n];
    for (k, &v) in targets.iter().enumerate() {
        csr[k] = v as i64;
        csr[u + k] = start[v] as i64;
    }
    csr[2 * u] = n as i64;
    let mut next = start;
    for (j, &i) in ids.iter().enumerate() {
        let slot = &mut next[i as usize];
        csr[2 * u + 1 + *slot] = j as i64;
        *slot += 1;
    }
    let dev = out.cuda_device();
    let csr = CudaStorage::from_cpu(dev, &CpuStorage::I64(csr))?;
    let total = outer * u * inner;
    let [s, sl] = src.strided_args(op, src_layout)?;
    let name = kernel_name("index_add", out.dtype());
    // index_add_T(T* out, const T* src, StridedLayout sl, const i64* csr, i64 U, i64 n, i64 size, i64 inner, i64 total)
    dev.launch(
        &kernels::INDEX,
        &name,
        elementwise_config(total),
        &[
            Arg::Ptr(out.ptr()),
            s,
            sl,
            Arg::Ptr(csr.ptr()),
            Arg::I64(u as i64),
            Arg::I64(n as i64),
            Arg::I64(size as i64),
            Arg::I64(inner as i64),
            Arg::I64(total as i64),
        ],
    )
}

/// `out` (contiguous `x_shape`, holding x or zeros) with `src[i]` (`ids_shape`,
/// any strides) added at `i` with `i[axis] = ids[i]`; `ids` contiguous on the device.
#[allow(clippy::too_many_arguments)]
fn scatter_add_into(
    op: &'static str,
    out: &CudaStorage,
    x_shape: &Shape,
    axis: usize,
    ids: &CudaStorage,
    ids_shape: &Shape,
    src: &CudaStorage,
    src_layout: &Layout,
) -> Result<()> {
    let numel = ids_shape.numel();
    if numel == 0 || x_shape.numel() == 0 {
        return Ok(());
    }
    let ncols = numel / ids_shape.dims()[axis];
    // The ids' dims with out's (contiguous) strides.
    let ol = StridedLayout::new(op, &Layout::new(ids_shape.clone(), x_shape.contiguous_strides(), 0))?;
    let [s, sl] = src.strided_args(op, src_layout)?;
    let name = kernel_name("scatter_add", out.dtype());
    // scatter_add_T(T* out, StridedLayout ol, const i64* ids, const T* src, StridedLayout sl, i64 axis, i64 ncols)
    out.cuda_device().launch(
        &kernels::INDEX,
        &name,
        elementwise_config(ncols),
        &[
            Arg::Ptr(out.ptr()),
            Arg::Layout(ol),
            Arg::Ptr(ids.ptr()),
            s,
            sl,
            Arg::I64(axis as i64),
            Arg::I64(ncols as i64),
        ],
    )
}

/// Whether the dims after `axis` are row-major with unit innermost stride in `layout`.
fn inner_rows_contiguous(layout: &Layout, axis: usize) -> bool {
    let (dims, strides) = (&layout.dims()[axis + 1..], &layout.strides()[axis + 1..]);
    Layout::new(Shape::new(dims), strides.to_vec(), 0).is_contiguous()
}

impl IndexKernels for CudaStorage {
    fn index_select(&self, layout: &Layout, axis: usize, ids: &Self, ids_layout: &Layout) -> Result<Self> {
        const OP: &str = "index_select";
        let (ids_dev, ids_v) = ids_both(OP, ids, ids_layout)?;
        check_index_select(layout, axis, &ids_v)?;
        self.check_same_device(OP, ids)?;
        let n = ids_v.len();
        let mut dims = layout.dims().to_vec();
        dims[axis] = n;
        let total: usize = dims.iter().product();
        let dev = self.cuda_device();
        let out = CudaStorage::alloc(dev, self.dtype(), total)?;
        if total == 0 {
            return Ok(out);
        }
        let width = width_suffix(self.dtype());
        let inner: usize = dims[axis + 1..].iter().product();
        if inner >= ROW_KERNEL_MIN && inner_rows_contiguous(layout, axis) {
            // The embedding lookup: one block copies one row.
            let ol = Layout::new(Shape::new(&dims[..axis]), layout.strides()[..axis].to_vec(), layout.offset());
            let rows = total / inner;
            let threads = inner.next_multiple_of(32).min(256) as u32;
            let cfg = LaunchConfig {
                grid_dim: (rows.min(65_535) as u32, 1, 1),
                block_dim: (threads, 1, 1),
                shared_mem_bytes: 0,
            };
            // index_select_rows_W(const T* x, StridedLayout ol, i64 axis_stride, const i64* ids, i64 n, i64 inner, T* out, i64 rows)
            dev.launch(
                &kernels::INDEX,
                &format!("index_select_rows_{width}"),
                cfg,
                &[
                    Arg::Ptr(self.ptr()),
                    Arg::Layout(StridedLayout::new(OP, &ol)?),
                    Arg::I64(layout.strides()[axis] as i64),
                    Arg::Ptr(ids_dev.ptr()),
                    Arg::I64(n as i64),
                    Arg::I64(inner as i64),
                    Arg::Ptr(out.ptr()),
                    Arg::I64(rows as i64),
                ],
            )?;
        } else {
            // x's strides over the output's dims: the kernel maps the axis coordinate through ids.
            let xl = StridedLayout::new(OP, &Layout::new(Shape::new(dims), layout.strides().to_vec(), layout.offset()))?;
            // index_select_W(const T* x, StridedLayout xl, const i64* ids, i64 axis, T* out, i64 total)
            dev.launch(
                &kernels::INDEX,
                &format!("index_select_{width}"),
                elementwise_config(total),
                &[
                    Arg::Ptr(self.ptr()),
                    Arg::Layout(xl),
                    Arg::Ptr(ids_dev.ptr()),
                    Arg::I64(axis as i64),
                    Arg::Ptr(out.ptr()),
                    Arg::I64(total as i64),
                ],
            )?;
        }
        Ok(out)
    }

    fn index_add(&self, layout: &Layout, axis: usize, ids: &Self, ids_layout: &Layout, src: &Self, src_layout: &Layout) -> Result<Self> {
        const OP: &str = "index_add";
        let (_, ids_v) = ids_both(OP, ids, ids_layout)?;
        check_index_add((self.dtype(), layout), axis, &ids_v, (src.dtype(), src_layout))?;
        self.check_same_device(OP, ids)?;
        self.check_same_device(OP, src)?;
        let out = self.copy_contiguous(layout)?;
        index_add_into(OP, &out, layout.dims(), axis, &ids_v, src, src_layout)?;
        Ok(out)
    }

    fn gather(&self, layout: &Layout, axis: usize, ids: &Self, ids_layout: &Layout) -> Result<Self> {
        const OP: &str = "gather";
        let (ids_dev, ids_v) = ids_both(OP, ids, ids_layout)?;
        check_gather(layout, axis, ids_layout, &ids_v)?;
        self.check_same_device(OP, ids)?;
        let total = ids_v.len();
        let dev = self.cuda_device();
        let out = CudaStorage::alloc(dev, self.dtype(), total)?;
        if total == 0 {
            return Ok(out);
        }
        // x's strides and offset over the ids' dims.
        let xl = StridedLayout::new(OP, &Layout::new(ids_layout.shape().clone(), layout.strides().to_vec(), layout.offset()))?;
        // gather_W(const T* x, StridedLayout xl, const i64* ids, i64 axis, T* out, i64 total)
        dev.launch(
            &kernels::INDEX,
            &format!("gather_{}", width_suffix(self.dtype())),
            elementwise_config(total),
            &[
                Arg::Ptr(self.ptr()),
                Arg::Layout(xl),
                Arg::Ptr(ids_dev.ptr()),
                Arg::I64(axis as i64),
                Arg::Ptr(out.ptr()),
                Arg::I64(total as i64),
            ],
        )?;
        Ok(out)
    }

    fn scatter_add(&self, layout: &Layout, axis: usize, ids: &Self, ids_layout: &Layout, src: &Self, src_layout: &Layout) -> Result<Self> {
        const OP: &str = "scatter_add";
        let (ids_dev, ids_v) = ids_both(OP, ids, ids_layout)?;
        check_scatter_add((self.dtype(), layout), axis, ids_layout, &ids_v, (src.dtype(), src_layout))?;
        self.check_same_device(OP, ids)?;
        self.check_same_device(OP, src)?;
        let out = self.copy_contiguous(layout)?;
        scatter_add_into(OP, &out, layout.shape(), axis, &ids_dev, ids_layout.shape(), src, src_layout)?;
        Ok(out)
    }

    fn index_select_backward(&self, layout: &Layout, axis: usize, ids: &Self, ids_layout: &Layout, input_shape: &Shape) -> Result<Self> {
        const OP: &str = "index_select_backward";
        let (_, ids_v) = ids_both(OP, ids, ids_layout)?;
        check_index_select_backward((self.dtype(), layout), axis, &ids_v, input_shape)?;
        self.check_same_device(OP, ids)?;
        // Zeros, then only the rows some id touches are written.
        let out = CudaStorage::zeros(self.cuda_device(), self.dtype(), input_shape.numel())?;
        index_add_into(OP, &out, input_shape.dims(), axis, &ids_v, self, layout)?;
        Ok(out)
    }

    fn gather_backward(&self, layout: &Layout, axis: usize, ids: &Self, ids_layout: &Layout, input_shape: &Shape) -> Result<Self> {
        const OP: &str = "gather_backward";
        let (ids_dev, ids_v) = ids_both(OP, ids, ids_layout)?;
        check_gather_backward((self.dtype(), layout), axis, ids_layout, &ids_v, input_shape)?;
        self.check_same_device(OP, ids)?;
        let out = CudaStorage::zeros(self.cuda_device(), self.dtype(), input_shape.numel())?;
        scatter_add_into(OP, &out, input_shape, axis, &ids_dev, ids_layout.shape(), self, layout)?;
        Ok(out)
    }

    /// One strided copy (copy.cu's `copy_into`) per part, into its slice of the output.
    fn cat(parts: &[(&Self, &Layout)], axis: usize) -> Result<Self> {
        const OP: &str = "cat";
        check_cat(parts.iter().map(|&(s, l)| (s.dtype(), l)), axis)?;
        let Some(&(first, l0)) = parts.first() else {
            return Err(Error::value(OP, "expected at least one tensor, got an empty list"));
        };
        for &(s, _) in parts {
            first.check_same_device(OP, s)?;
        }
        let mut dims = l0.dims().to_vec();
        dims[axis] = parts.iter().map(|(_, l)| l.dims()[axis]).sum();
        let out_layout = Layout::contiguous(dims);
        let mut out = CudaStorage::alloc(first.cuda_device(), first.dtype(), out_layout.numel())?;
        let mut start = 0;
        for &(s, l) in parts {
            let size = l.dims()[axis];
            out.copy_into(&out_layout.narrow(axis, start, size), s, l)?;
            start += size;
        }
        Ok(out)
    }
}
