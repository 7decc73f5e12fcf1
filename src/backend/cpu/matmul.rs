//! CPU kernels for `matmul` (`backend/contract/matmul.rs`).
//!
//! f32 runs tamer's own GEMM (`cpu/gemm/`: packed panels, an AVX-512, AVX2 or
//! scalar micro-kernel as `TAMER_SIMD` selects), which reads operands of any
//! row/column strides while packing (so transposed and sliced views cost
//! nothing extra). f64 stays on the matrixmultiply crate's `dgemm`: it is the
//! gradient checks' dtype, where speed matters little.
//!
//! Threads come from the current rayon pool (`ThreadPool::install` sets them).
//! f32: many batch entries (attention's heads) run as tasks of their own, each
//! a single-threaded GEMM; a few large entries run one after the other, each
//! shared by all threads (`gemm::gemm_threaded`). f64: batch entries as
//! tasks, or a large product split into blocks of output rows (or columns when
//! it is short and wide), each an independent `dgemm` on a slice of A (or B).

use super::gemm::{self, MatRef};
use super::{contiguous_or_gather, simd, CpuElem, CpuStorage, PARALLEL_THRESHOLD};
use crate::backend::contract::matmul::{check_linear, check_matmul, MatmulKernels};
use crate::backend::BackendStorage;
use crate::cpu_float_dispatch;
use crate::types::{Float, Layout, Shape};
use crate::{Error, Result};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::ops::Range;

/// f64 products below this many multiply-adds (`batch·m·n·k`) stay on the
/// calling thread: a 64³ GEMM takes a few microseconds, about what waking
/// workers costs.
const PARALLEL_MIN_WORK: usize = 1 << 18;
/// Each f64 block handed to a rayon task keeps at least this much work, so
/// that re-packing the shared operand per block stays negligible.
const MIN_BLOCK_WORK: usize = 1 << 20;
/// f64 block edges are multiples of 16, so no block ends in a partial
/// micro-tile that a neighbour could have completed.
const BLOCK_ALIGN: usize = 16;
/// f32 batches with at least this many entries per thread run each entry as
/// a task of its own: enough tasks that every thread gets the same share.
const ENTRIES_PER_THREAD: usize = 4;

/// Element types with a CPU matmul.
pub trait GemmElem: Float + CpuElem {
    /// `A @ B (+ bias on every row)` for a plan [`GemmPlan::new`] validated:
    /// contiguous `[batch, m, n]`; `bias` holds `n` values. An error when
    /// `TAMER_SIMD` asks for an instruction set this CPU lacks.
    fn matmul_planned(a: &[Self], b: &[Self], plan: &GemmPlan, bias: Option<&[Self]>) -> Result<Vec<Self>>;
}

impl GemmElem for f32 {
    fn matmul_planned(a: &[f32], b: &[f32], plan: &GemmPlan, bias: Option<&[f32]>) -> Result<Vec<f32>> {
        let kernel = gemm::kernel(simd::selected(if bias.is_some() { "linear" } else { "matmul" })?.isa());
        Ok(product_f32(kernel, a, b, plan, bias))
    }
}

impl GemmElem for f64 {
    fn matmul_planned(a: &[f64], b: &[f64], plan: &GemmPlan, bias: Option<&[f64]>) -> Result<Vec<f64>> {
        Ok(product_f64(a, b, plan, bias))
    }
}

/// One batched product resolved from its layouts: where each batch entry's
/// matrices start and the row/column strides they share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GemmPlan {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    /// Storage offset of A's first element for each batch entry, in output order.
    pub a_offsets: Vec<usize>,
    pub b_offsets: Vec<usize>,
    /// (row stride, column stride) of A: `[m, k]`.
    pub a_strides: (usize, usize),
    /// (row stride, column stride) of B: `[k, n]`.
    pub b_strides: (usize, usize),
}

impl GemmPlan {
    /// Validate `[batch.., m, k] @ [batch.., k, n]` layouts against storages of
    /// `lhs_len` and `rhs_len` elements (an out-of-bounds layout is an error, as
    /// the GEMM reads through raw pointers).
    pub fn new(lhs: &Layout, lhs_len: usize, rhs: &Layout, rhs_len: usize) -> Result<GemmPlan> {
        crate::backend::contract::matmul::check_kernel_layouts(lhs, lhs_len, rhs, rhs_len)?;
        let (r, a, b) = (lhs.rank(), lhs.dims(), rhs.dims());
        let (m, k, n) = (a[r - 2], a[r - 1], b[r - 1]);
        let (sa, sb) = (lhs.strides(), rhs.strides());
        let batch = Shape::new(&a[..r - 2]);
        // B shared by every batch entry (x[B, T, C] @ W[C, D]): when A's batch and
        // row axes merge into one strided axis, the whole batch is one taller GEMM.
        // The output [batch.., m, n] is contiguous, so its rows merge the same way.
        if batch.numel() > 1 && sb[..r - 2].iter().all(|&s| s == 0) {
            let rows = Layout::new(Shape::new(&a[..r - 1]), sa[..r - 1].to_vec(), lhs.offset());
            if let Some(merged) = rows.reshape_view(&Shape::new([batch.numel() * m])) {
                return Ok(GemmPlan {
                    m: batch.numel() * m,
                    k,
                    n,
                    a_offsets: vec![merged.offset()],
                    b_offsets: vec![rhs.offset()],
                    a_strides: (merged.strides()[0], sa[r - 1]),
                    b_strides: (sb[r - 2], sb[r - 1]),
                });
            }
        }
        let offsets = |l: &Layout| Layout::new(batch.clone(), l.strides()[..r - 2].to_vec(), l.offset()).offsets_vec();
        Ok(GemmPlan {
            m,
            k,
            n,
            a_offsets: offsets(lhs),
            b_offsets: offsets(rhs),
            a_strides: (sa[r - 2], sa[r - 1]),
            b_strides: (sb[r - 2], sb[r - 1]),
        })
    }

    pub fn batch(&self) -> usize {
        self.a_offsets.len()
    }
}

/// The plain reference: a triple loop per batch entry over the same plan.
pub fn matmul_reference<T: Float>(a: &[T], b: &[T], p: &GemmPlan) -> Vec<T> {
    let (m, k, n) = (p.m, p.k, p.n);
    let ((rsa, csa), (rsb, csb)) = (p.a_strides, p.b_strides);
    let mut out = vec![T::ZERO; p.batch() * m * n];
    for (e, (&oa, &ob)) in p.a_offsets.iter().zip(&p.b_offsets).enumerate() {
        for i in 0..m {
            for j in 0..n {
                let mut acc = T::ZERO;
                for q in 0..k {
                    acc += a[oa + i * rsa + q * csa] * b[ob + q * rsb + j * csb];
                }
                out[(e * m + i) * n + j] = acc;
            }
        }
    }
    out
}

/// The plain reference of `linear`: [`matmul_reference`], then `bias` added
/// to every row of the product.
pub fn linear_reference<T: Float>(a: &[T], b: &[T], p: &GemmPlan, bias: &[T]) -> Vec<T> {
    let mut out = matmul_reference(a, b, p);
    for row in out.chunks_mut(p.n.max(1)) {
        for (o, &c) in row.iter_mut().zip(bias) {
            *o += c;
        }
    }
    out
}

/// `len / bias.len()` copies of `bias`, one after the other, in a buffer from
/// the pool: the output a linear layer's GEMM then accumulates onto. Written
/// by the pool's threads when large (the rows go straight to memory the
/// GEMMs are about to read, so no thread pays for all of them).
fn bias_rows<T: Copy + Send + Sync + 'static>(bias: &[T], len: usize) -> Vec<T> {
    let n = bias.len();
    let mut out: Vec<T> = super::alloc::with_capacity(len);
    if len == 0 || n == 0 {
        return out;
    }
    let fill = |row: &mut [MaybeUninit<T>]| {
        for (slot, &v) in row.iter_mut().zip(bias) {
            slot.write(v);
        }
    };
    let rows = &mut out.spare_capacity_mut()[..len];
    if len < PARALLEL_THRESHOLD {
        rows.chunks_mut(n).for_each(fill);
    } else {
        crate::backend::cpu::warm::keep_workers_warm();
        rows.par_chunks_mut(n).with_min_len((PARALLEL_THRESHOLD / 4 / n).max(1)).for_each(fill);
    }
    // SAFETY: `len` is a multiple of `n` (a whole number of output rows), so
    // the chunks wrote every one of the first `len` elements.
    unsafe { out.set_len(len) };
    out
}

/// A block of one batch entry's output.
#[derive(Clone, Debug)]
struct Tile {
    entry: usize,
    rows: Range<usize>,
    cols: Range<usize>,
}

/// The output's base pointer, shared by tasks that write disjoint tiles.
#[derive(Clone, Copy)]
struct OutPtr<T>(*mut T);
// SAFETY: tasks write disjoint tiles of one allocation that outlives them.
unsafe impl<T: Send> Send for OutPtr<T> {}
unsafe impl<T: Send> Sync for OutPtr<T> {}

impl<T> OutPtr<T> {
    /// A method rather than `.0`, so that closures capture the whole (Sync) wrapper.
    fn get(self) -> *mut T {
        self.0
    }
}

/// `len` split into at most `parts` ranges of `BLOCK_ALIGN`-multiple length.
fn split(len: usize, parts: usize) -> Vec<Range<usize>> {
    let block = len.div_ceil(parts.max(1)).div_ceil(BLOCK_ALIGN).max(1) * BLOCK_ALIGN;
    (0..len).step_by(block).map(|s| s..(s + block).min(len)).collect()
}

/// The f64 tiles for `threads` workers: whole batch entries when there are enough
/// of them, otherwise each entry cut into row blocks (column blocks when the output
/// is short and wide), each block keeping at least `MIN_BLOCK_WORK`. One block per
/// thread for a single matrix (measured for f32 when it ran on matrixmultiply too:
/// at 1024² on 2 threads 275 GFLOP/s, against 268 with 4 blocks and 231-255 for
/// matrixmultiply's own `threading`).
fn tiles(p: &GemmPlan, threads: usize) -> Vec<Tile> {
    let (batch, m, n) = (p.batch(), p.m, p.n);
    let work = m * n * p.k;
    // Enough tasks that every worker gets the same share: whole entries when they
    // divide evenly among the threads, else blocks of them, ~4 tasks per thread.
    let parts = if batch >= threads && batch.is_multiple_of(threads) {
        1
    } else if batch < threads && threads.is_multiple_of(batch) {
        threads / batch
    } else {
        (4 * threads).div_ceil(batch)
    };
    let parts = parts.min((work / MIN_BLOCK_WORK).max(1));
    let by_rows = m >= n.min(parts * 4 * BLOCK_ALIGN);
    let (row_blocks, col_blocks) = if by_rows {
        (split(m, parts), std::iter::once(0..n).collect())
    } else {
        (std::iter::once(0..m).collect(), split(n, parts))
    };
    let mut out = Vec::with_capacity(batch * parts);
    for entry in 0..batch {
        for rows in &row_blocks {
            for cols in &col_blocks {
                out.push(Tile {
                    entry,
                    rows: rows.clone(),
                    cols: cols.clone(),
                });
            }
        }
    }
    out
}

/// `A @ B` for a validated plan: contiguous `[batch, m, n]`, through the
/// element type's GEMM.
pub fn matmul_fast<T: GemmElem>(a: &[T], b: &[T], p: &GemmPlan) -> Result<Vec<T>> {
    T::matmul_planned(a, b, p, None)
}

/// `A @ B + bias` (on every row) for a validated plan and `n` bias values:
/// contiguous `[batch, m, n]`, through the element type's GEMM.
pub fn linear_fast<T: GemmElem>(a: &[T], b: &[T], p: &GemmPlan, bias: &[T]) -> Result<Vec<T>> {
    T::matmul_planned(a, b, p, Some(bias))
}

/// `A @ B` for a validated plan through tamer's GEMM with `kernel`; contiguous
/// `[batch, m, n]`.
pub fn matmul_f32(kernel: &gemm::Kernel, a: &[f32], b: &[f32], p: &GemmPlan) -> Vec<f32> {
    product_f32(kernel, a, b, p, None)
}

/// `A @ B (+ bias)` for a validated plan through tamer's GEMM with `kernel`;
/// contiguous `[batch, m, n]`.
///
/// With a bias, the micro-kernels add it as they store the product
/// ([`gemm::Base::Bias`]): no pass of its own over the output, against
/// `matmul` then a broadcast `add` (which reads the product and writes a
/// second output), measured in `benches/linear.rs` (`linear` against
/// `matmul+add`).
///
/// v1 wrote the bias rows first and let the GEMM accumulate onto them: a
/// pass writing the output and the GEMM reading it back. gpt-small's qkv
/// forward (4096 × 384 → 1152) took 31.8 ms against 25.1 for the bare
/// product on 1 thread.
pub fn product_f32(kernel: &gemm::Kernel, a: &[f32], b: &[f32], p: &GemmPlan, bias: Option<&[f32]>) -> Vec<f32> {
    let (m, k, n) = (p.m, p.k, p.n);
    let len = p.batch() * m * n;
    if len == 0 || k == 0 {
        return match bias {
            Some(bias) => bias_rows(bias, len),
            None => super::alloc::zeroed(len),
        };
    }
    // The GEMM overwrites C without reading it, so zero-filling the output
    // first would only add a pass over memory.
    let base = match bias {
        Some(bias) => gemm::Base::Bias(bias.as_ptr()),
        None => gemm::Base::Zero,
    };
    let mut out: Vec<f32> = super::alloc::with_capacity(len);
    let c = OutPtr(out.as_mut_ptr());
    let ((rsa, csa), (rsb, csb)) = (p.a_strides, p.b_strides);
    let entry = |e: usize, threaded: bool| {
        let a = MatRef {
            // SAFETY (of the `add`s): GemmPlan::new checked that every element
            // the layouts address, the entry's first included, lies inside `a`
            // and `b` (m, k, n > 0 here).
            ptr: unsafe { a.as_ptr().add(p.a_offsets[e]) },
            rs: rsa,
            cs: csa,
        };
        let b = MatRef {
            ptr: unsafe { b.as_ptr().add(p.b_offsets[e]) },
            rs: rsb,
            cs: csb,
        };
        // SAFETY: the kernel's ISA was selected for this CPU; A and B address
        // only elements inside `a` and `b` (checked by GemmPlan::new); entry
        // e's m×n block of `out` is inside its batch·m·n capacity, written by
        // this call alone; a bias holds n values (checked by the caller).
        unsafe {
            let c = c.get().add(e * m * n);
            if threaded {
                gemm::gemm_threaded(kernel, m, k, n, a, b, c, n, base)
            } else {
                gemm::gemm(kernel, m, k, n, a, b, c, n, base)
            }
        }
    };
    let threads = rayon::current_num_threads();
    let batch = p.batch();
    let work = m * n * k;
    if threads > 1 && batch > 1 && batch * work >= gemm::THREADED_MIN_WORK && (batch >= ENTRIES_PER_THREAD * threads || work < gemm::THREADED_MIN_WORK) {
        crate::backend::cpu::warm::keep_workers_warm();
        (0..batch).into_par_iter().with_max_len(1).for_each(|e| entry(e, false));
    } else {
        (0..batch).for_each(|e| entry(e, true));
    }
    // SAFETY: every entry's GEMM (overwriting C or adding the bias to the
    // product, never reading C) initialised all of its m×n block, and the
    // blocks cover the batch·m·n elements.
    unsafe { out.set_len(len) };
    out
}

/// `A @ B (+ bias)` for a validated plan through matrixmultiply's `dgemm`;
/// contiguous `[batch, m, n]`. With a bias, C starts as the bias rows and the
/// GEMM runs with β = 1.
fn product_f64(a: &[f64], b: &[f64], p: &GemmPlan, bias: Option<&[f64]>) -> Vec<f64> {
    let (m, k, n) = (p.m, p.k, p.n);
    let len = p.batch() * m * n;
    if len == 0 || k == 0 {
        return match bias {
            Some(bias) => bias_rows(bias, len),
            None => super::alloc::zeroed(len),
        };
    }
    // Without a bias the GEMM runs with β = 0, so it writes every element of C
    // without reading it: zero-filling the output first would only add a pass
    // over memory.
    let beta = if bias.is_some() { 1.0 } else { 0.0 };
    let mut out: Vec<f64> = match bias {
        Some(bias) => bias_rows(bias, len),
        None => super::alloc::with_capacity(len),
    };
    let c = OutPtr(out.as_mut_ptr());
    let ((rsa, csa), (rsb, csb)) = (p.a_strides, p.b_strides);
    let run = |t: &Tile| {
        let (oa, ob) = (p.a_offsets[t.entry], p.b_offsets[t.entry]);
        // SAFETY: GemmPlan::new checked that every element the layouts address lies
        // inside `a` and `b`; the tile's rows/cols are within m/n, so A's rows
        // `t.rows` and B's columns `t.cols` are among them. C's tile is inside
        // `out` (batch·m·n elements, row-major) and tiles never overlap.
        unsafe {
            matrixmultiply::dgemm(
                t.rows.len(),
                k,
                t.cols.len(),
                1.0,
                a.as_ptr().add(oa + t.rows.start * rsa),
                rsa as isize,
                csa as isize,
                b.as_ptr().add(ob + t.cols.start * csb),
                rsb as isize,
                csb as isize,
                beta,
                c.get().add((t.entry * m + t.rows.start) * n + t.cols.start),
                n as isize,
                1,
            )
        }
    };
    let threads = rayon::current_num_threads();
    if threads <= 1 || p.batch() * m * n * k < PARALLEL_MIN_WORK {
        (0..p.batch()).for_each(|entry| run(&Tile { entry, rows: 0..m, cols: 0..n }));
    } else {
        crate::backend::cpu::warm::keep_workers_warm();
        tiles(p, threads).par_iter().with_max_len(1).for_each(run);
    }
    if bias.is_none() {
        // SAFETY: the tiles cover every (entry, row, column) of the output exactly
        // once, and each GEMM with β = 0 initialised all of its tile.
        unsafe { out.set_len(len) };
    }
    out
}

impl MatmulKernels for CpuStorage {
    fn matmul(&self, lhs_layout: &Layout, rhs: &Self, rhs_layout: &Layout) -> Result<Self> {
        check_matmul(
            (self.dtype(), lhs_layout, self.len()),
            (rhs.dtype(), rhs_layout, rhs.len()),
            <Self as MatmulKernels>::DTYPES,
        )?;
        cpu_float_dispatch!("matmul", self, |a: T| {
            let b = <T as CpuElem>::slice(rhs).ok_or_else(|| {
                Error::dtype(
                    "matmul",
                    format!("operands have dtypes {} and {}; expected the same dtype", self.dtype(), rhs.dtype()),
                )
            })?;
            let plan = GemmPlan::new(lhs_layout, a.len(), rhs_layout, b.len())?;
            Ok(<T as CpuElem>::wrap(matmul_fast(a, b, &plan)?))
        })
    }

    fn linear(&self, lhs_layout: &Layout, rhs: &Self, rhs_layout: &Layout, bias: Option<(&Self, &Layout)>) -> Result<Self> {
        check_linear(
            (self.dtype(), lhs_layout, self.len()),
            (rhs.dtype(), rhs_layout, rhs.len()),
            bias.map(|(s, l)| (s.dtype(), l, s.len())),
            <Self as MatmulKernels>::DTYPES,
        )?;
        fn operand<T: CpuElem>(s: &CpuStorage) -> Result<&[T]> {
            T::slice(s).ok_or_else(|| Error::dtype("linear", format!("an operand has dtype {}, expected {}", s.dtype(), T::DTYPE)))
        }
        cpu_float_dispatch!("linear", self, |a: T| {
            let b = operand::<T>(rhs)?;
            let plan = GemmPlan::new(lhs_layout, a.len(), rhs_layout, b.len())?;
            let out = match bias {
                Some((bias, layout)) => linear_fast(a, b, &plan, &contiguous_or_gather(operand::<T>(bias)?, layout))?,
                None => matmul_fast(a, b, &plan)?,
            };
            Ok(<T as CpuElem>::wrap(out))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::proptest_config;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};

    /// A random `dims` layout inside a bigger buffer: optionally stored transposed in
    /// its last two axes, with a row gap and an offset (a slice).
    fn random_layout(dims: &[usize], transposed: bool, gap: usize, offset: usize) -> (Layout, usize) {
        let r = dims.len();
        let mut stored = dims.to_vec();
        if transposed {
            stored.swap(r - 1, r - 2);
        }
        stored[r - 1] += gap;
        let base = Layout::new(Shape::new(stored.clone()), Shape::new(stored.clone()).contiguous_strides(), offset);
        let mut l = base.narrow(r - 1, 0, stored[r - 1] - gap);
        if transposed {
            let mut perm: Vec<usize> = (0..r).collect();
            perm.swap(r - 1, r - 2);
            l = l.permute("test", &perm).unwrap();
        }
        (l, offset + Shape::new(stored).numel())
    }

    fn check<T: GemmElem>(lhs: &Layout, la: usize, rhs: &Layout, lb: usize, seed: u64, tol: f64) -> std::result::Result<(), TestCaseError> {
        check_with(lhs, la, rhs, lb, seed, tol, |a: &[T], b: &[T], plan| matmul_fast(a, b, plan).unwrap())
    }

    /// `matmul` (through `fast`) on random operands laid out as `lhs` and `rhs`,
    /// against the reference run entry by entry.
    #[allow(clippy::too_many_arguments)]
    fn check_with<T: GemmElem>(
        lhs: &Layout,
        la: usize,
        rhs: &Layout,
        lb: usize,
        seed: u64,
        tol: f64,
        fast: impl Fn(&[T], &[T], &GemmPlan) -> Vec<T>,
    ) -> std::result::Result<(), TestCaseError> {
        check_fused(lhs, la, rhs, lb, seed, tol, fast, matmul_reference)
    }

    /// `fast` against `reference` (run on a plan that walks the batch entries
    /// one by one, whatever `GemmPlan::new` folded) on random operands laid
    /// out as `lhs` and `rhs`.
    #[allow(clippy::too_many_arguments)]
    fn check_fused<T: GemmElem>(
        lhs: &Layout,
        la: usize,
        rhs: &Layout,
        lb: usize,
        seed: u64,
        tol: f64,
        fast: impl Fn(&[T], &[T], &GemmPlan) -> Vec<T>,
        reference: impl Fn(&[T], &[T], &GemmPlan) -> Vec<T>,
    ) -> std::result::Result<(), TestCaseError> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let a: Vec<T> = (0..la).map(|_| <T as Float>::from_f64(rng.random_range(-1.0..1.0))).collect();
        let b: Vec<T> = (0..lb).map(|_| <T as Float>::from_f64(rng.random_range(-1.0..1.0))).collect();
        let plan = GemmPlan::new(lhs, la, rhs, lb).unwrap();
        let fast = fast(&a, &b, &plan);
        let r = lhs.rank();
        let batch = Shape::new(&lhs.dims()[..r - 2]);
        let unfolded = GemmPlan {
            m: lhs.dims()[r - 2],
            k: lhs.dims()[r - 1],
            n: rhs.dims()[r - 1],
            a_offsets: Layout::new(batch.clone(), lhs.strides()[..r - 2].to_vec(), lhs.offset()).offsets_vec(),
            b_offsets: Layout::new(batch, rhs.strides()[..r - 2].to_vec(), rhs.offset()).offsets_vec(),
            a_strides: (lhs.strides()[r - 2], lhs.strides()[r - 1]),
            b_strides: (rhs.strides()[r - 2], rhs.strides()[r - 1]),
        };
        let reference = reference(&a, &b, &unfolded);
        prop_assert_eq!(fast.len(), reference.len());
        for (i, (x, y)) in fast.iter().zip(&reference).enumerate() {
            let (x, y) = (Float::to_f64(*x), Float::to_f64(*y));
            prop_assert!((x - y).abs() <= tol * (1.0 + y.abs()), "element {}: fast {} vs reference {}", i, x, y);
        }
        Ok(())
    }

    /// `n` bias values, not all small, from `seed`.
    fn random_bias<T: Float>(n: usize, seed: u64) -> Vec<T> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
        (0..n).map(|_| <T as Float>::from_f64(rng.random_range(-3.0..3.0))).collect()
    }

    /// Batch dims `batch`, each operand broadcast (stride 0) on the axes in its mask.
    #[allow(clippy::too_many_arguments)]
    fn batched(
        batch: &[usize],
        m: usize,
        k: usize,
        n: usize,
        a_kind: (bool, usize, usize),
        b_kind: (bool, usize, usize),
        a_bcast: &[bool],
        b_bcast: &[bool],
    ) -> (Layout, usize, Layout, usize) {
        let own = |mask: &[bool]| -> Vec<usize> { batch.iter().zip(mask).map(|(&d, &bc)| if bc { 1 } else { d }).collect() };
        let (mut da, mut db) = (own(a_bcast), own(b_bcast));
        da.extend([m, k]);
        db.extend([k, n]);
        let (la, lena) = random_layout(&da, a_kind.0, a_kind.1, a_kind.2);
        let (lb, lenb) = random_layout(&db, b_kind.0, b_kind.1, b_kind.2);
        let mut full_a = batch.to_vec();
        full_a.extend([m, k]);
        let mut full_b = batch.to_vec();
        full_b.extend([k, n]);
        (
            la.broadcast_as("t", &Shape::new(full_a)).unwrap(),
            lena,
            lb.broadcast_as("t", &Shape::new(full_b)).unwrap(),
            lenb,
        )
    }

    fn kind() -> impl Strategy<Value = (bool, usize, usize)> {
        (any::<bool>(), 0..3usize, 0..5usize)
    }

    proptest! {
        #![proptest_config(proptest_config(64))]
        #[test]
        fn fast_matches_reference_on_strided_broadcast_batches(
            batch in proptest::collection::vec(1..4usize, 0..3),
            masks in (proptest::collection::vec(any::<bool>(), 2), proptest::collection::vec(any::<bool>(), 2)),
            (m, k, n) in (1..40usize, 0..40usize, 1..40usize),
            ka in kind(), kb in kind(), seed in any::<u64>(),
        ) {
            let (la, lena, lb, lenb) = batched(&batch, m, k, n, ka, kb, &masks.0[..batch.len()], &masks.1[..batch.len()]);
            check::<f64>(&la, lena, &lb, lenb, seed, 1e-12)?;
            check::<f32>(&la, lena, &lb, lenb, seed, 1e-4)?;
        }
    }

    proptest! {
        #![proptest_config(proptest_config(48))]
        #[test]
        fn linear_matches_reference_on_strided_broadcast_batches(
            batch in proptest::collection::vec(1..4usize, 0..3),
            masks in (proptest::collection::vec(any::<bool>(), 2), proptest::collection::vec(any::<bool>(), 2)),
            (m, k, n) in (1..40usize, 0..40usize, 1..40usize),
            ka in kind(), kb in kind(), seed in any::<u64>(),
        ) {
            let (la, lena, lb, lenb) = batched(&batch, m, k, n, ka, kb, &masks.0[..batch.len()], &masks.1[..batch.len()]);
            let n = lb.dims()[lb.rank() - 1];
            let (b64, b32) = (random_bias::<f64>(n, seed), random_bias::<f32>(n, seed));
            check_fused(&la, lena, &lb, lenb, seed, 1e-12, |a, b, p| linear_fast(a, b, p, &b64).unwrap(), |a, b, p| linear_reference(a, b, p, &b64))?;
            check_fused(&la, lena, &lb, lenb, seed, 1e-4, |a, b, p| linear_fast(a, b, p, &b32).unwrap(), |a, b, p| linear_reference(a, b, p, &b32))?;
        }
    }

    /// The bias rows under every ISA's GEMM, threaded or not, folded batches,
    /// batches as tasks, and an empty reduction (the output is the bias rows).
    #[test]
    fn linear_of_every_isa_matches_reference_under_1_and_4_threads() {
        type Case = (&'static [usize], usize, usize, usize, bool, bool);
        let cases: [Case; 5] = [
            (&[], 203, 150, 97, false, true),
            (&[], 130, 700, 300, true, true),
            (&[], 5, 0, 7, false, false),
            (&[9], 40, 80, 60, false, true),
            (&[3], 50, 64, 33, true, false),
        ];
        each_isa_under_1_and_4_threads(|kernel, threads| {
            for &(batch, m, k, n, ta, tb) in &cases {
                let (la, lena, lb, lenb) = batched(batch, m, k, n, (ta, 1, 3), (tb, 2, 1), &[false], &[true]);
                let bias = random_bias::<f32>(n, 13);
                let fused = |a: &[f32], b: &[f32], p: &GemmPlan| product_f32(kernel, a, b, p, Some(&bias));
                check_fused(&la, lena, &lb, lenb, 13, 1e-4, fused, |a, b, p| linear_reference(a, b, p, &bias))
                    .unwrap_or_else(|e| panic!("{kernel:?}, {threads} threads, {batch:?}x{m}x{k}x{n}: {e}"));
            }
        });
    }

    /// Runs `check` with every ISA's GEMM kernel this CPU has, in a 1-thread
    /// and then a 4-thread rayon pool.
    fn each_isa_under_1_and_4_threads(check: impl Fn(&'static gemm::Kernel, usize) + Sync) {
        for threads in [1, 4] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                for simd in crate::backend::cpu::simd::Simd::available() {
                    check(gemm::kernel(simd.isa()), threads);
                }
            });
        }
    }

    /// Large enough to take the threaded tiles (rows, columns, batch entries).
    #[test]
    fn threaded_tiles_match_reference() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        pool.install(|| {
            for &(batch, m, k, n, ta, tb) in &[
                (&[][..], 203, 150, 97, false, true),
                (&[][..], 9, 300, 700, true, false),
                (&[2][..], 130, 64, 190, true, true),
                (&[5][..], 40, 80, 60, false, false),
            ] {
                let (la, lena, lb, lenb) = batched(batch, m, k, n, (ta, 1, 3), (tb, 0, 2), &[false], &[false]);
                check::<f32>(&la, lena, &lb, lenb, 7, 1e-4).unwrap();
                check::<f64>(&la, lena, &lb, lenb, 7, 1e-12).unwrap();
            }
            // [4, 70, 90] @ [90, 50] folds into one 280-row product.
            let (la, lena, lb, lenb) = batched(&[4], 70, 90, 50, (false, 0, 1), (true, 1, 0), &[false], &[true]);
            assert_eq!(GemmPlan::new(&la, lena, &lb, lenb).unwrap().m, 280);
            check::<f64>(&la, lena, &lb, lenb, 3, 1e-12).unwrap();
        });
    }

    /// Every ISA's GEMM through `matmul_f32`, under a 1-thread and a 4-thread
    /// pool: single products above the threading threshold (rows and column
    /// runs split among tasks, the packed B block shared, several KC blocks),
    /// strided and transposed operands, batches run entry by entry and as tasks.
    #[test]
    fn f32_gemm_of_every_isa_matches_reference_under_1_and_4_threads() {
        // (batch dims, m, k, n, A transposed, B transposed)
        type Case = (&'static [usize], usize, usize, usize, bool, bool);
        let cases: [Case; 6] = [
            (&[], 203, 150, 97, false, true),
            (&[], 9, 700, 1100, true, false),
            (&[], 130, 2200, 64, true, true),
            (&[], 301, 41, 331, false, false),
            (&[2], 130, 64, 290, true, true),
            (&[9], 40, 80, 60, false, true),
        ];
        each_isa_under_1_and_4_threads(|kernel, threads| {
            for &(batch, m, k, n, ta, tb) in &cases {
                let (la, lena, lb, lenb) = batched(batch, m, k, n, (ta, 1, 3), (tb, 2, 1), &[false], &[false]);
                check_with(&la, lena, &lb, lenb, 11, 1e-4, |a: &[f32], b: &[f32], plan| matmul_f32(kernel, a, b, plan))
                    .unwrap_or_else(|e| panic!("{kernel:?}, {threads} threads, {batch:?}x{m}x{k}x{n}: {e}"));
            }
        });
    }

    #[test]
    fn tiles_follow_the_thread_count() {
        let plan = |batch: usize, m: usize, k: usize, n: usize| GemmPlan {
            m,
            k,
            n,
            a_offsets: vec![0; batch],
            b_offsets: vec![0; batch],
            a_strides: (k, 1),
            b_strides: (n, 1),
        };
        let t = tiles(&plan(1, 1024, 1024, 1024), 2);
        assert_eq!(t.iter().map(|t| t.rows.clone()).collect::<Vec<_>>(), vec![0..512, 512..1024]);
        assert!(t.iter().all(|t| t.cols == (0..1024)));
        let wide = tiles(&plan(1, 8, 1024, 4096), 2);
        assert_eq!(wide.len(), 2);
        assert!(wide.iter().all(|t| t.rows == (0..8)));
        assert_eq!(tiles(&plan(64, 128, 32, 128), 2).len(), 64);
        // 3 large entries on 2 threads: blocks of entries, so neither thread idles for a third.
        assert_eq!(tiles(&plan(3, 512, 512, 512), 2).len(), 9);
        assert_eq!(tiles(&plan(1, 32, 32, 32), 8).len(), 1);
        // The output is left uninitialised for the GEMMs: tiles must cover it exactly once.
        for &(batch, m, k, n, threads) in &[
            (1, 1000, 700, 999, 3),
            (2, 17, 4096, 3000, 5),
            (3, 300, 300, 300, 2),
            (1, 5, 1, 7, 4),
            (7, 64, 512, 64, 16),
        ] {
            let mut hits = vec![0u8; batch * m * n];
            for t in tiles(&plan(batch, m, k, n), threads) {
                for i in t.rows.clone() {
                    for j in t.cols.clone() {
                        hits[(t.entry * m + i) * n + j] += 1;
                    }
                }
            }
            assert!(hits.iter().all(|&h| h == 1), "{batch}x{m}x{k}x{n} on {threads} threads");
        }
    }

    #[test]
    fn out_of_bounds_layouts_are_errors() {
        let l = Layout::contiguous([3, 4]);
        let r = Layout::contiguous([4, 2]);
        assert!(GemmPlan::new(&l, 12, &r, 8).is_ok());
        let err = GemmPlan::new(&l, 11, &r, 8).unwrap_err().to_string();
        assert!(err.contains("reaches element 11 of a storage of 11"), "{err}");
        assert!(GemmPlan::new(&l, 12, &Layout::contiguous([3, 2]), 6).is_err());
    }
}
