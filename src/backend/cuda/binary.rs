//! Binary kernels on CUDA (cuda/binary.cu): `f(a, b)` over two layouts
//! already broadcast to the output shape, and `where_cond`.
//!
//! Which kernel runs (first match):
//! 1. both operands contiguous: `<op>_<dt>`, a plain streaming loop;
//! 2. one contiguous, the other a contiguous block repeated by broadcasting
//!    (bias `[rows, C] + [C]`, per-row `[R, C] · [R, 1]`, scalar `[1]`):
//!    `<op>_bcast_<dt>` with the block's index `(i / div) % mod`
//!    ([`broadcast_block`]);
//! 3. anything else: `<op>_strided_<dt>` on the layouts after merging the
//!    dimensions both operands traverse contiguously ([`coalesce`]).

use super::{elementwise_config, kernel_name, kernels, Arg, CudaStorage, StridedLayout};
use crate::backend::contract::binary::{check_binary, check_where_cond, BinaryFn, BinaryKernels};
use crate::backend::contract::FLOATS;
use crate::backend::BackendStorage;
use crate::types::{DType, Layout, Shape};
use crate::{Error, Result};

/// The `BinaryFn::NAME`s that cuda/binary.cu has kernels for (its
/// `BINARY_ALL_DTYPES` lines, in the same order).
pub const CUDA_BINARY_FNS: &[&str] = &["add", "sub", "mul", "div", "pow", "maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge"];

/// A broadcast operand that is one contiguous block of `modulus` elements
/// starting at storage `offset`: output element `i` reads block element
/// `(i / div) % modulus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    pub offset: usize,
    pub div: usize,
    pub modulus: usize,
}

/// `Some` when `layout` (a view broadcast to the output shape) is: some
/// leading axes with stride 0, then axes that are row-major contiguous with
/// strides `1, d, d·d', ...` from the innermost of them, then trailing axes
/// with stride 0 (size-1 axes fit anywhere). The trailing stride-0 axes give
/// `div` (their element count), the contiguous run gives `modulus`.
pub fn broadcast_block(layout: &Layout) -> Option<Block> {
    let (dims, strides) = (layout.dims(), layout.strides());
    let mut d = dims.len();
    let mut div = 1usize;
    while d > 0 && (strides[d - 1] == 0 || dims[d - 1] == 1) {
        div *= dims[d - 1];
        d -= 1;
    }
    let mut modulus = 1usize;
    while d > 0 && (dims[d - 1] == 1 || (strides[d - 1] != 0 && strides[d - 1] == modulus)) {
        modulus *= dims[d - 1];
        d -= 1;
    }
    while d > 0 && (strides[d - 1] == 0 || dims[d - 1] == 1) {
        d -= 1;
    }
    if d != 0 {
        return None;
    }
    // A one-element block is read at index 0 whatever `div` is.
    let div = if modulus == 1 { 1 } else { div };
    Some(Block {
        offset: layout.offset(),
        div,
        modulus,
    })
}

/// Views of one shape with their dimensions merged where every view steps
/// through the pair contiguously (`stride[d] == stride[d+1] · dims[d+1]` for
/// all of them) and size-1 dimensions dropped: the same elements in the same
/// order, with fewer index divisions per element in the strided kernels (and
/// often within the kernels' 8-dimension limit when the original was not).
pub fn coalesce(layouts: &[&Layout]) -> Vec<Layout> {
    let Some(first) = layouts.first() else { return Vec::new() };
    let dims = first.dims();
    // (size, stride per layout), outermost first
    let mut merged: Vec<(usize, Vec<usize>)> = Vec::new();
    for (d, &size) in dims.iter().enumerate() {
        if size == 1 {
            continue;
        }
        let strides: Vec<usize> = layouts.iter().map(|l| l.strides()[d]).collect();
        if let Some((prev_size, prev_strides)) = merged.last_mut() {
            if prev_strides.iter().zip(&strides).all(|(&p, &s)| p == s * size) {
                *prev_size *= size;
                *prev_strides = strides;
                continue;
            }
        }
        merged.push((size, strides));
    }
    let shape = Shape::new(merged.iter().map(|(s, _)| *s).collect::<Vec<_>>());
    layouts
        .iter()
        .enumerate()
        .map(|(k, l)| Layout::new(shape.clone(), merged.iter().map(|(_, st)| st[k]).collect(), l.offset()))
        .collect()
}

fn check_known<B: BinaryFn>() -> Result<()> {
    if CUDA_BINARY_FNS.contains(&B::NAME) {
        return Ok(());
    }
    Err(Error::device(
        B::NAME,
        format!(
            "no CUDA kernel for binary function `{}`: only the functions of tamer::ops::binary have one ({}); run a user-defined BinaryFn on the CPU (.to_cpu())",
            B::NAME,
            CUDA_BINARY_FNS.join(", ")
        ),
    ))
}

impl BinaryKernels for CudaStorage {
    /// The kernels read f16 and bf16 too, computing in f32 and rounding once.
    const DTYPES: &'static [DType] = FLOATS;

    fn binary<B: BinaryFn>(&self, lhs_layout: &Layout, rhs: &Self, rhs_layout: &Layout, _f: B) -> Result<Self> {
        let dtype = self.dtype();
        check_binary(B::NAME, (dtype, lhs_layout), (rhs.dtype(), rhs_layout), <Self as BinaryKernels>::DTYPES)?;
        check_known::<B>()?;
        self.check_same_device(B::NAME, rhs)?;
        let dev = self.cuda_device();
        let n = lhs_layout.numel();
        let out = CudaStorage::alloc(dev, dtype, n)?;
        if n == 0 {
            return Ok(out);
        }
        let (cfg, n64, o) = (elementwise_config(n), Arg::I64(n as i64), Arg::Ptr(out.ptr()));
        let (ra, rb) = (lhs_layout.contiguous_range(), rhs_layout.contiguous_range());
        // <op>_<dt>(const T* a, const T* b, T* out, i64 n)
        if let (Some(ra), Some(rb)) = (&ra, &rb) {
            let args = [Arg::Ptr(self.ptr_at(ra.start)), Arg::Ptr(rhs.ptr_at(rb.start)), o, n64];
            return dev.launch(&kernels::BINARY, &kernel_name(B::NAME, dtype), cfg, &args).map(|()| out);
        }
        // <op>_bcast_<dt>(const T* full, const T* part, T* out, i64 n, i64 div, i64 mod, i64 part_is_lhs)
        let bcast = match (&ra, &rb) {
            (Some(ra), None) => broadcast_block(rhs_layout).map(|blk| (self.ptr_at(ra.start), rhs.ptr_at(blk.offset), blk, 0)),
            (None, Some(rb)) => broadcast_block(lhs_layout).map(|blk| (rhs.ptr_at(rb.start), self.ptr_at(blk.offset), blk, 1)),
            _ => None,
        };
        if let Some((full, part, blk, part_is_lhs)) = bcast {
            let args = [
                Arg::Ptr(full),
                Arg::Ptr(part),
                o,
                n64,
                Arg::I64(blk.div as i64),
                Arg::I64(blk.modulus as i64),
                Arg::I64(part_is_lhs),
            ];
            return dev
                .launch(&kernels::BINARY, &kernel_name(&format!("{}_bcast", B::NAME), dtype), cfg, &args)
                .map(|()| out);
        }
        // <op>_strided_<dt>(const T* a, StridedLayout al, const T* b, StridedLayout bl, T* out, i64 n)
        let merged = coalesce(&[lhs_layout, rhs_layout]);
        let al = Arg::Layout(StridedLayout::new(B::NAME, &merged[0])?);
        let bl = Arg::Layout(StridedLayout::new(B::NAME, &merged[1])?);
        let args = [Arg::Ptr(self.ptr()), al, Arg::Ptr(rhs.ptr()), bl, o, n64];
        dev.launch(&kernels::BINARY, &kernel_name(&format!("{}_strided", B::NAME), dtype), cfg, &args)?;
        Ok(out)
    }

    fn where_cond(&self, cond_layout: &Layout, on_true: &Self, true_layout: &Layout, on_false: &Self, false_layout: &Layout) -> Result<Self> {
        const OP: &str = "where_cond";
        let dtype = self.dtype();
        check_where_cond(
            (dtype, cond_layout),
            (on_true.dtype(), true_layout),
            (on_false.dtype(), false_layout),
            <Self as BinaryKernels>::DTYPES,
        )?;
        self.check_same_device(OP, on_true)?;
        self.check_same_device(OP, on_false)?;
        let dev = self.cuda_device();
        let n = cond_layout.numel();
        let out = CudaStorage::alloc(dev, dtype, n)?;
        if n == 0 {
            return Ok(out);
        }
        let (cfg, n64, o) = (elementwise_config(n), Arg::I64(n as i64), Arg::Ptr(out.ptr()));
        // where_<dt>(const T* c, const T* t, const T* f, T* out, i64 n)
        if let (Some(rc), Some(rt), Some(rf)) = (cond_layout.contiguous_range(), true_layout.contiguous_range(), false_layout.contiguous_range()) {
            let args = [
                Arg::Ptr(self.ptr_at(rc.start)),
                Arg::Ptr(on_true.ptr_at(rt.start)),
                Arg::Ptr(on_false.ptr_at(rf.start)),
                o,
                n64,
            ];
            return dev.launch(&kernels::BINARY, &kernel_name("where", dtype), cfg, &args).map(|()| out);
        }
        // where_strided_<dt>(const T* c, StridedLayout cl, const T* t, StridedLayout tl,
        //                    const T* f, StridedLayout fl, T* out, i64 n)
        let merged = coalesce(&[cond_layout, true_layout, false_layout]);
        let layout = |k: usize| StridedLayout::new(OP, &merged[k]).map(Arg::Layout);
        let args = [
            Arg::Ptr(self.ptr()),
            layout(0)?,
            Arg::Ptr(on_true.ptr()),
            layout(1)?,
            Arg::Ptr(on_false.ptr()),
            layout(2)?,
            o,
            n64,
        ];
        dev.launch(&kernels::BINARY, &kernel_name("where_strided", dtype), cfg, &args)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broadcast(dims: &[usize], out: &[usize]) -> Layout {
        Layout::contiguous(dims.to_vec()).broadcast_as("t", &Shape::new(out)).unwrap()
    }

    /// The kernel's index arithmetic, replayed on the host, visits exactly
    /// the offsets the layout does.
    fn check_block(l: &Layout) -> Block {
        let blk = broadcast_block(l).unwrap_or_else(|| panic!("no block for {l:?}"));
        let expect = l.offsets_vec();
        for (i, &e) in expect.iter().enumerate() {
            let j = if blk.modulus == 1 {
                0
            } else {
                let j = if blk.div == 1 { i } else { i / blk.div };
                if j >= blk.modulus {
                    j % blk.modulus
                } else {
                    j
                }
            };
            assert_eq!(blk.offset + j, e, "element {i} of {l:?} ({blk:?})");
        }
        blk
    }

    #[test]
    fn broadcast_blocks_index_like_the_layout() {
        assert_eq!(check_block(&broadcast(&[5], &[3, 5])), Block { offset: 0, div: 1, modulus: 5 });
        assert_eq!(check_block(&broadcast(&[3, 1], &[3, 5])), Block { offset: 0, div: 5, modulus: 3 });
        assert_eq!(check_block(&broadcast(&[1], &[4, 6])), Block { offset: 0, div: 1, modulus: 1 });
        assert_eq!(check_block(&broadcast(&[], &[2, 3])), Block { offset: 0, div: 1, modulus: 1 });
        assert_eq!(
            check_block(&broadcast(&[4, 1, 1], &[2, 4, 3, 5])),
            Block {
                offset: 0,
                div: 15,
                modulus: 4
            }
        );
        assert_eq!(
            check_block(&broadcast(&[6, 7], &[2, 3, 6, 7])),
            Block {
                offset: 0,
                div: 1,
                modulus: 42
            }
        );
        check_block(&broadcast(&[1, 7, 1], &[3, 7, 2]));
        // a narrowed row of a matrix, broadcast
        let row = Layout::contiguous([4, 5]).narrow(0, 2, 1).broadcast_as("t", &Shape::new([3, 4, 5])).unwrap();
        assert_eq!(check_block(&row).offset, 10);
    }

    #[test]
    fn layouts_that_are_not_one_block_take_the_strided_path() {
        assert!(broadcast_block(&broadcast(&[3, 1, 5], &[3, 4, 5])).is_none());
        assert!(broadcast_block(&Layout::contiguous([4, 5]).permute("t", &[1, 0]).unwrap()).is_none());
        let narrowed_cols = Layout::contiguous([4, 5]).narrow(1, 1, 3);
        assert!(broadcast_block(&narrowed_cols).is_none());
    }

    #[test]
    fn coalescing_keeps_every_offset() {
        let cases: Vec<Vec<Layout>> = vec![
            vec![Layout::contiguous([2, 3, 4]), broadcast(&[1, 3, 4], &[2, 3, 4])],
            vec![Layout::contiguous([2, 3, 4]).permute("t", &[2, 0, 1]).unwrap(), Layout::contiguous([4, 2, 3])],
            vec![broadcast(&[3, 1, 5], &[3, 4, 5]), broadcast(&[4, 5], &[3, 4, 5])],
            vec![
                Layout::contiguous([6, 1, 5]).narrow(0, 1, 4),
                broadcast(&[1, 1, 5], &[4, 1, 5]),
                Layout::contiguous([4, 1, 5]),
            ],
            vec![Layout::contiguous(vec![1usize; 9]), Layout::contiguous(vec![1usize; 9])],
            vec![Layout::contiguous([0, 3]), Layout::contiguous([0, 3])],
        ];
        for ls in &cases {
            let refs: Vec<&Layout> = ls.iter().collect();
            let merged = coalesce(&refs);
            for (l, m) in ls.iter().zip(&merged) {
                assert_eq!(l.numel(), m.numel());
                assert_eq!(l.offsets_vec(), m.offsets_vec(), "{l:?} -> {m:?}");
                assert!(m.rank() <= l.rank());
            }
        }
        // [B, T, C] + [1, T, C]: rank 2
        let m = coalesce(&[&Layout::contiguous([2, 3, 4]), &broadcast(&[1, 3, 4], &[2, 3, 4])]);
        assert_eq!(m[0].dims(), &[2, 12]);
        assert_eq!(m[1].strides(), &[0, 1]);
    }

    #[test]
    fn the_name_list_matches_the_kernel_source() {
        let in_cu: Vec<&str> = kernels::BINARY
            .source
            .lines()
            .filter_map(|l| l.strip_prefix("BINARY_ALL_DTYPES("))
            .filter_map(|l| l.split(',').next())
            .collect();
        assert_eq!(in_cu, CUDA_BINARY_FNS);
        let src = include_str!("../contract/binary.rs");
        assert_eq!(
            src.matches("\nbinary_fn!(").count(),
            CUDA_BINARY_FNS.len(),
            "src/backend/contract/binary.rs defines a BinaryFn without a CUDA kernel"
        );
        for name in CUDA_BINARY_FNS {
            assert!(src.contains(&format!("\"{name}\"")), "{name}");
        }
    }
}
