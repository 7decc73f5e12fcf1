//! Reductions on CUDA (cuda/reduce.cu), and the host-side pieces every
//! row-wise CUDA kernel shares (softmax, layer_norm, cross_entropy in `nn/`):
//! axis coalescing, the split of a view into rows, the launch shapes, and the
//! switch to the plain reference kernels.
//!
//! A reduction is planned here and executed by one or two kernels: the view is
//! split into the kept axes (`outl`, one entry per output) and the reduced
//! axes (`redl`, one entry per element of an output's run), each coalesced so
//! the kernels divide as little as possible. The kernel is chosen by shape:
//! a warp per output for short runs, a block per output (split across
//! several blocks plus a second pass when there are few outputs), or the
//! column kernel when the kept axis is the contiguous one. Every choice
//! depends only on the shape, so results are deterministic run to run.

use super::device::{elementwise_config, Arg};
use super::layout::{StridedLayout, MAX_DIMS};
use super::{kernels, CudaStorage};
use crate::backend::contract::reduce::{check_argmax, check_reduce, ReduceKernels, ReduceOp};
use crate::backend::BackendStorage;
use crate::types::{DType, Layout};
use crate::{Error, Result};
use cudarc::driver::LaunchConfig;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

// ---- the reference switch -----------------------------------------------------

fn reference_flag() -> &'static AtomicBool {
    static FLAG: OnceLock<AtomicBool> = OnceLock::new();
    FLAG.get_or_init(|| {
        let on = std::env::var("TAMER_CUDA_REFERENCE_KERNELS").is_ok_and(|v| !v.is_empty() && v != "0");
        AtomicBool::new(on)
    })
}

/// Whether the reduction and row-wise ops (reduce, argmax, softmax,
/// layer_norm, cross_entropy) run their plain one-thread-per-output reference
/// kernels instead of the fast ones. Off unless the environment variable
/// `TAMER_CUDA_REFERENCE_KERNELS` is set (to anything but `0`), so a whole
/// test run can be repeated on the reference kernels.
pub fn reference_kernels() -> bool {
    reference_flag().load(Ordering::Relaxed)
}

/// Switch the reference kernels on or off for the whole process.
pub fn set_reference_kernels(on: bool) {
    reference_flag().store(on, Ordering::Relaxed)
}

// ---- layouts ----------------------------------------------------------------------

/// `(dim, stride)` pairs with size-1 axes dropped and neighbours merged where
/// the outer axis steps exactly over the inner one (`stride_outer ==
/// dim_inner · stride_inner`): the same elements in the same row-major order,
/// walked with fewer divisions.
pub(crate) fn coalesce(axes: impl IntoIterator<Item = (usize, usize)>) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (d, s) in axes {
        if d == 1 {
            continue;
        }
        if let Some(last) = out.last_mut() {
            if d.checked_mul(s) == Some(last.1) {
                *last = (last.0 * d, s);
                continue;
            }
        }
        out.push((d, s));
    }
    out
}

/// The kernel-side layout of coalesced `axes` starting at `offset`.
pub(crate) fn strided(op: &'static str, axes: &[(usize, usize)], offset: usize, layout: &Layout) -> Result<StridedLayout> {
    if axes.len() > MAX_DIMS {
        return Err(Error::shape(
            op,
            format!(
                "CUDA kernels take views of at most {MAX_DIMS} dimensions (after merging adjacent ones), got shape {} with strides {:?}",
                layout.shape(),
                layout.strides()
            ),
        ));
    }
    let mut l = StridedLayout {
        rank: axes.len() as i64,
        offset: offset as i64,
        dims: [1; MAX_DIMS],
        strides: [0; MAX_DIMS],
    };
    for (i, &(d, s)) in axes.iter().enumerate() {
        l.dims[i] = d as i64;
        l.strides[i] = s as i64;
    }
    Ok(l)
}

/// A view as rows of its last axis (a scalar is one row of one element).
pub(crate) struct RowView {
    /// Where row `r` starts: `view_offset(starts, r)` (every axis but the last, coalesced, with the view's offset).
    pub starts: StridedLayout,
    /// The stride along a row.
    pub step: i64,
    pub rows: usize,
    /// Elements per row.
    pub len: usize,
}

pub(crate) fn row_view(op: &'static str, layout: &Layout) -> Result<RowView> {
    let rank = layout.rank();
    let lead = rank.saturating_sub(1);
    let (len, step) = if rank == 0 { (1, 0) } else { (layout.dims()[lead], layout.strides()[lead]) };
    let rows = layout.dims()[..lead].iter().product();
    let outer = coalesce(layout.dims()[..lead].iter().copied().zip(layout.strides()[..lead].iter().copied()));
    Ok(RowView {
        starts: strided(op, &outer, layout.offset(), layout)?,
        step: step as i64,
        rows,
        len,
    })
}

/// The arguments `(pointer, starts, step)` through which a row kernel reads a view.
pub(crate) fn row_args(s: &CudaStorage, v: &RowView) -> [Arg; 3] {
    [Arg::Ptr(s.ptr()), Arg::Layout(v.starts), Arg::I64(v.step)]
}

/// A plain kernel-side layout of any view (for per-row operands such as
/// targets or row gradients), coalesced so a contiguous one costs nothing.
pub(crate) fn flat_layout(op: &'static str, layout: &Layout) -> Result<StridedLayout> {
    let axes = coalesce(layout.dims().iter().copied().zip(layout.strides().iter().copied()));
    strided(op, &axes, layout.offset(), layout)
}

// ---- launch shapes ----------------------------------------------------------------

/// Threads of a warp-per-row or warp-per-output block (8 warps).
pub(crate) const WARP_BLOCK: u32 = 256;
/// Threads of a block-per-row kernel.
pub(crate) const ROW_BLOCK: u32 = 512;
/// Rows up to this length get one warp each (at most 32 elements per lane per pass).
pub(crate) const WARP_ROW_MAX: usize = 1024;
/// Enough blocks to fill any current GPU (an H200 has 132 SMs); kernels loop
/// over the rest, so the cap never changes a result.
pub(crate) const MAX_GRID: usize = 1 << 20;
/// Blocks a split reduction aims for (about 8 per SM).
const TARGET_BLOCKS: usize = 1024;
/// Most splits of one run (the second pass reads `splits` values per output).
const MAX_SPLITS: usize = 1024;
/// Shortest chunk of a run worth its own block (256 threads x 32 elements).
const MIN_SPLIT_LEN: usize = 8192;
/// Shortest chunk worth its own column block (8 rows of threads x 8 elements).
const MIN_COL_SPLIT_LEN: usize = 64;
/// Runs up to this length get one warp per output.
const WARP_RUN_MAX: usize = 256;

fn grid(blocks: usize) -> u32 {
    blocks.clamp(1, MAX_GRID) as u32
}

/// One warp per item, 8 per block.
pub(crate) fn warp_config(items: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (grid(items.div_ceil(8)), 1, 1),
        block_dim: (WARP_BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block of `threads` per item.
pub(crate) fn block_config(items: usize, threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (grid(items), 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Which version of a row-wise kernel runs: `<op>_<variant>_<dtype>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RowKernel {
    /// One thread per row (the plain reference).
    Reference,
    /// One warp per row.
    Warp,
    /// One block of `ROW_BLOCK` threads per row.
    Block,
}

impl RowKernel {
    /// The version for `rows` rows of `len` elements, and its launch shape.
    pub(crate) fn choose(rows: usize, len: usize) -> (RowKernel, LaunchConfig) {
        if reference_kernels() {
            (RowKernel::Reference, elementwise_config(rows))
        } else if len <= WARP_ROW_MAX {
            (RowKernel::Warp, warp_config(rows))
        } else {
            (RowKernel::Block, block_config(rows, ROW_BLOCK))
        }
    }
    pub(crate) fn name(self, op: &str, dtype: DType) -> String {
        let v = match self {
            RowKernel::Reference => "ref",
            RowKernel::Warp => "warp",
            RowKernel::Block => "block",
        };
        format!("{op}_{v}_{}", dtype.name())
    }
}

// ---- the kernels --------------------------------------------------------------------

/// The kept and reduced axes of `layout`, coalesced, and their sizes.
struct Plan {
    kept: Vec<(usize, usize)>,
    reduced: Vec<(usize, usize)>,
    n_out: usize,
    red: usize,
}

fn plan(op: &'static str, layout: &Layout, axes: &[usize]) -> Result<Plan> {
    let rank = layout.rank();
    if let Some(&a) = axes.iter().find(|&&a| a >= rank) {
        return Err(Error::shape(op, format!("axis {a} is out of range for shape {}", layout.shape())));
    }
    let pairs = || layout.dims().iter().copied().zip(layout.strides().iter().copied()).enumerate();
    let n_out = pairs().filter(|(i, _)| !axes.contains(i)).map(|(_, (d, _))| d).product();
    let red = pairs().filter(|(i, _)| axes.contains(i)).map(|(_, (d, _))| d).product();
    Ok(Plan {
        kept: coalesce(pairs().filter(|(i, _)| !axes.contains(i)).map(|(_, p)| p)),
        reduced: coalesce(pairs().filter(|(i, _)| axes.contains(i)).map(|(_, p)| p)),
        n_out,
        red,
    })
}

/// `splits` chunks of a run of `red`, no chunk empty: `(splits, chunk)`.
fn split(red: usize, wanted: usize) -> (usize, usize) {
    let chunk = red.div_ceil(wanted.max(1)).max(1);
    (red.div_ceil(chunk), chunk)
}

/// How a column kernel (blocks of 32 columns x 8 rows of threads) splits
/// `len` rows over `blockIdx.y` so that `columns` columns fill the GPU:
/// `(splits, chunk)`, one split when the column groups alone are enough.
pub(crate) fn column_splits(columns: usize, len: usize) -> (usize, usize) {
    let groups = columns.div_ceil(32).max(1);
    let wanted = if groups >= TARGET_BLOCKS {
        1
    } else {
        (TARGET_BLOCKS / groups).min(len / MIN_COL_SPLIT_LEN).min(MAX_SPLITS)
    };
    split(len, wanted)
}

/// The launch shape of a column kernel: block (32, 8), grid (column groups, splits).
pub(crate) fn column_config(columns: usize, splits: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (grid(columns.div_ceil(32)), splits as u32, 1),
        block_dim: (32, 8, 1),
        shared_mem_bytes: 0,
    }
}

impl ReduceKernels for CudaStorage {
    fn reduce(&self, layout: &Layout, axes: &[usize], op: ReduceOp) -> Result<Self> {
        let dtype = self.dtype();
        check_reduce(op, (dtype, layout), axes)?;
        let name = op.name();
        let dev = self.cuda_device();
        let p = plan(name, layout, axes)?;
        let (n_out, red) = (p.n_out, p.red);
        if n_out == 0 {
            return Self::alloc(dev, dtype, 0);
        }
        if red == 0 {
            // The CPU's answer for an empty run: the identity.
            let identity = match op {
                ReduceOp::Sum => 0.0,
                ReduceOp::Max => f64::NEG_INFINITY,
                ReduceOp::Min => f64::INFINITY,
            };
            return Self::full(dev, dtype, n_out, identity);
        }
        if red == 1 {
            // Every reduced axis has size 1: the keepdim shape is the view's own
            // shape, so the result is the view made contiguous.
            return self.copy_contiguous(layout);
        }
        let outl = strided(name, &p.kept, layout.offset(), layout)?;
        let redl = strided(name, &p.reduced, 0, layout)?;
        let out = Self::alloc(dev, dtype, n_out)?;
        let kernel = |variant: &str| format!("reduce_{variant}_{name}_{}", dtype.name());
        let (x, o) = (Arg::Ptr(self.ptr()), Arg::Ptr(out.ptr()));
        let (outl, redl) = (Arg::Layout(outl), Arg::Layout(redl));
        let (n, r) = (Arg::I64(n_out as i64), Arg::I64(red as i64));

        if reference_kernels() {
            // reduce_ref(x, outl, redl, out, n_out, red)
            dev.launch(&kernels::REDUCE, &kernel("ref"), elementwise_config(n_out), &[x, outl, redl, o, n, r])?;
            return Ok(out);
        }
        // The column kernel when the kept axis is the contiguous one and the run
        // is not (sum over the rows of a matrix: the bias gradient), and there
        // are at least a warp's worth of outputs side by side.
        let columns = n_out >= 32 && p.kept.last().is_some_and(|&(_, s)| s == 1) && p.reduced.last().is_some_and(|&(_, s)| s != 1);
        if !columns && red <= WARP_RUN_MAX {
            // reduce_warp(x, outl, redl, out, n_out, red)
            dev.launch(&kernels::REDUCE, &kernel("warp"), warp_config(n_out), &[x, outl, redl, o, n, r])?;
            return Ok(out);
        }
        // Split each run over several blocks when the outputs alone (or their
        // column groups) would leave the GPU mostly idle.
        let (splits, chunk) = if columns {
            column_splits(n_out, red)
        } else {
            let wanted = if n_out >= TARGET_BLOCKS {
                1
            } else {
                (TARGET_BLOCKS / n_out).min(red / MIN_SPLIT_LEN).min(MAX_SPLITS)
            };
            split(red, wanted)
        };
        let partial = if splits > 1 { Some(Self::alloc(dev, dtype, splits * n_out)?) } else { None };
        // dst: [splits, n_out]; the output itself when there is one split.
        let dst = Arg::Ptr(partial.as_ref().map_or(out.ptr(), |p| p.ptr()));
        let (s, c) = (Arg::I64(splits as i64), Arg::I64(chunk as i64));
        if columns {
            // reduce_cols(x, outl, redl, dst, n_out, red, chunk); block (32, 8), grid (groups, splits)
            dev.launch(&kernels::REDUCE, &kernel("cols"), column_config(n_out, splits), &[x, outl, redl, dst, n, r, c])?;
        } else {
            // reduce_block(x, outl, redl, dst, n_out, red, splits, chunk); one block per (output, split)
            dev.launch(
                &kernels::REDUCE,
                &kernel("block"),
                block_config(n_out * splits, WARP_BLOCK),
                &[x, outl, redl, dst, n, r, s, c],
            )?;
        }
        if let Some(partial) = &partial {
            // reduce_partials(partial, out, n_out, splits). The partial buffer goes back
            // to the pool when dropped below; later work on the same stream runs after this.
            dev.launch(&kernels::REDUCE, &kernel("partials"), warp_config(n_out), &[Arg::Ptr(partial.ptr()), o, n, s])?;
        }
        Ok(out)
    }

    fn argmax(&self, layout: &Layout, axis: usize) -> Result<Self> {
        const OP: &str = "argmax";
        let dtype = self.dtype();
        check_argmax((dtype, layout), axis)?;
        let dev = self.cuda_device();
        let p = plan(OP, layout, &[axis])?;
        let (n_out, red) = (p.n_out, p.red);
        if n_out == 0 || red == 1 {
            return Self::zeros(dev, DType::I64, n_out);
        }
        let out = Self::alloc(dev, DType::I64, n_out)?;
        let (variant, cfg) = if reference_kernels() {
            ("ref", elementwise_config(n_out))
        } else if red <= WARP_ROW_MAX {
            ("warp", warp_config(n_out))
        } else {
            ("block", block_config(n_out, WARP_BLOCK))
        };
        let outl = strided(OP, &p.kept, layout.offset(), layout)?;
        let redl = strided(OP, &p.reduced, 0, layout)?;
        // argmax_<variant>(x, outl, redl, out, n_out, red)
        dev.launch(
            &kernels::REDUCE,
            &format!("argmax_{variant}_{}", dtype.name()),
            cfg,
            &[
                Arg::Ptr(self.ptr()),
                Arg::Layout(outl),
                Arg::Layout(redl),
                Arg::Ptr(out.ptr()),
                Arg::I64(n_out as i64),
                Arg::I64(red as i64),
            ],
        )?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalescing_merges_walkable_neighbours() {
        // Contiguous [2, 3, 4]: one axis of 24.
        assert_eq!(coalesce([(2, 12), (3, 4), (4, 1)]), vec![(24, 1)]);
        // Size-1 axes vanish; a transposed pair stays apart.
        assert_eq!(coalesce([(1, 99), (3, 1), (4, 3)]), vec![(3, 1), (4, 3)]);
        // A broadcast axis (stride 0) merges only with another broadcast axis.
        assert_eq!(coalesce([(5, 0), (6, 0), (7, 1)]), vec![(30, 0), (7, 1)]);
        assert!(coalesce([(1, 4)]).is_empty());
    }

    #[test]
    fn plans_split_kept_and_reduced_axes() {
        let l = Layout::contiguous([4, 5, 6]);
        let p = plan("sum", &l, &[1]).unwrap();
        assert_eq!((p.n_out, p.red), (24, 5));
        assert_eq!(p.kept, vec![(4, 30), (6, 1)]);
        assert_eq!(p.reduced, vec![(5, 6)]);
        let p = plan("sum", &l, &[1, 2]).unwrap();
        assert_eq!(p.reduced, vec![(30, 1)]);
        assert!(plan("sum", &l, &[3]).is_err());
    }

    #[test]
    fn splits_never_leave_an_empty_chunk() {
        for (red, wanted) in [(10, 3), (1_000_000, 122), (7, 100), (5, 1), (8193, 1024)] {
            let (s, c) = split(red, wanted);
            assert!(s >= 1 && (s - 1) * c < red && s * c >= red, "{red} {wanted}: {s} x {c}");
        }
    }

    #[test]
    fn row_views_coalesce_the_leading_axes() {
        let l = Layout::contiguous([2, 3, 7]);
        let v = row_view("softmax", &l).unwrap();
        assert_eq!((v.rows, v.len, v.step), (6, 7, 1));
        assert_eq!((v.starts.rank, v.starts.dims[0], v.starts.strides[0]), (1, 6, 7));
        let s = row_view("softmax", &Layout::contiguous(Vec::<usize>::new())).unwrap();
        assert_eq!((s.rows, s.len, s.starts.rank), (1, 1, 0));
    }
}
