//! Matmul on CUDA: the kernels of cuda/matmul.cu, or cuBLAS for comparison.
//!
//! `MatmulKernels::matmul` receives `[batch.., m, k] @ [batch.., k, n]` layouts
//! whose batch dims are already broadcast (stride 0 where stretched) and may
//! have any strides. The host work here is planning (`Plan`): validate the
//! layouts against their storages, fold a broadcast right operand into one
//! taller product, merge batch dims into as few strided axes as possible, and
//! describe each operand to the kernel as a pointer, a [`StridedLayout`] over
//! the batch index, a row stride and a column stride (so `x.t()` costs no
//! copy), plus `flags` saying which loads may be 16-byte vectors.
//!
//! Kernel choice ([`MatmulBackend`]): f32 → `matmul_tiled_f32`, f64 →
//! `matmul_tiled_f64`, bf16/f16 → tensor cores (`matmul_bf16`/`matmul_f16`,
//! sm_80+); `Naive` runs the one-thread-per-output reference kernels and
//! `Cublas` calls cuBLAS (`cublasGemmEx` / `cublasGemmStridedBatchedEx`).

use super::device::CudaDevice;
use super::layout::MAX_DIMS;
use super::{kernels, Arg, CudaStorage, StridedLayout};
use crate::backend::contract::binary::{Add, BinaryKernels};
use crate::backend::contract::matmul::{check_linear, check_matmul, MatmulKernels};
use crate::backend::contract::FLOATS;
use crate::backend::BackendStorage;
use crate::types::{DType, Layout, Shape};
use crate::{Error, Result};
use cudarc::driver::LaunchConfig;
use std::cell::Cell;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

mod blas;

// ---- backend selection ------------------------------------------------------

/// Which implementation CUDA matrix products use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulBackend {
    /// Our kernels: tiled f32/f64, tensor cores for bf16/f16 (the default).
    Own,
    /// The one-thread-per-output reference kernels (for debugging and tests).
    Naive,
    /// cuBLAS, for comparison. Operands cuBLAS cannot describe (no unit
    /// stride in either matrix axis, or overlapping rows) use `Own`.
    Cublas,
}

impl MatmulBackend {
    /// Parse `own`, `naive` or `cublas` (any case), as in `TAMER_MATMUL`.
    pub fn parse(s: &str) -> Option<MatmulBackend> {
        match s.trim().to_ascii_lowercase().as_str() {
            "own" | "" => Some(MatmulBackend::Own),
            "naive" => Some(MatmulBackend::Naive),
            "cublas" => Some(MatmulBackend::Cublas),
            _ => None,
        }
    }
}

static GLOBAL: Mutex<Option<MatmulBackend>> = Mutex::new(None);
thread_local! {
    static OVERRIDE: Cell<Option<MatmulBackend>> = const { Cell::new(None) };
}

/// Select the backend for every thread (overrides `TAMER_MATMUL`).
pub fn set_backend(b: MatmulBackend) {
    *GLOBAL.lock().unwrap_or_else(|p| p.into_inner()) = Some(b);
}

/// Run `f` with `b` as this thread's backend (tests and benchmarks use this
/// so that concurrent tests do not see each other's choice).
pub fn with_backend<R>(b: MatmulBackend, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<MatmulBackend>);
    impl Drop for Restore {
        fn drop(&mut self) {
            OVERRIDE.with(|o| o.set(self.0));
        }
    }
    let _restore = Restore(OVERRIDE.with(|o| o.replace(Some(b))));
    f()
}

/// The backend in effect on this thread: [`with_backend`], else
/// [`set_backend`], else the `TAMER_MATMUL` environment variable (`own`,
/// `naive`, `cublas`), else `Own`. An unknown `TAMER_MATMUL` is an error.
pub fn backend() -> Result<MatmulBackend> {
    if let Some(b) = OVERRIDE.with(|o| o.get()) {
        return Ok(b);
    }
    if let Some(b) = *GLOBAL.lock().unwrap_or_else(|p| p.into_inner()) {
        return Ok(b);
    }
    static ENV: OnceLock<std::result::Result<MatmulBackend, String>> = OnceLock::new();
    ENV.get_or_init(|| match std::env::var("TAMER_MATMUL") {
        Err(_) => Ok(MatmulBackend::Own),
        Ok(v) => MatmulBackend::parse(&v).ok_or(v),
    })
    .clone()
    .map_err(|v| Error::device("matmul", format!("TAMER_MATMUL={v:?}: expected own, naive or cublas")))
}

// ---- planning -----------------------------------------------------------------

// `flags` bits: keep in step with the MM_* defines of cuda/matmul.cu.
const A_KVEC: i64 = 1;
const A_MVEC: i64 = 2;
const B_NVEC: i64 = 4;
const B_KVEC: i64 = 8;
const C_VEC: i64 = 16;
const A_MMAJOR: i64 = 32;
const B_NMAJOR: i64 = 64;

/// One batched product as the kernels see it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Plan {
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    /// Batch dims (merged; empty for a single product), shared by both operands.
    bdims: Vec<usize>,
    /// Each operand's strides over `bdims`, and its storage offset.
    a_bstrides: Vec<usize>,
    b_bstrides: Vec<usize>,
    a_offset: usize,
    b_offset: usize,
    /// (row stride, column stride): A `[m, k]`, B `[k, n]`.
    a_strides: (usize, usize),
    b_strides: (usize, usize),
}

impl Plan {
    /// Validate and describe `[batch.., m, k] @ [batch.., k, n]` over storages
    /// of `lhs_len` and `rhs_len` elements (the same checks, and messages, as
    /// the CPU's `GemmPlan::new`).
    fn new(lhs: &Layout, lhs_len: usize, rhs: &Layout, rhs_len: usize) -> Result<Plan> {
        crate::backend::contract::matmul::check_kernel_layouts(lhs, lhs_len, rhs, rhs_len)?;
        let (r, a, b) = (lhs.rank(), lhs.dims(), rhs.dims());
        let (m, k, n) = (a[r - 2], a[r - 1], b[r - 1]);
        let (sa, sb) = (lhs.strides(), rhs.strides());
        let batch: usize = a[..r - 2].iter().product();
        // B shared by every batch entry (x[B, T, C] @ W[C, D]): when A's batch
        // and row axes merge into one strided axis, the batch is one taller
        // product (the output's rows merge the same way, being contiguous).
        if batch > 1 && sb[..r - 2].iter().all(|&s| s == 0) {
            let rows = Layout::new(Shape::new(&a[..r - 1]), sa[..r - 1].to_vec(), lhs.offset());
            if let Some(merged) = rows.reshape_view(&Shape::new([batch * m])) {
                return Ok(Plan {
                    batch: 1,
                    m: batch * m,
                    k,
                    n,
                    bdims: vec![],
                    a_bstrides: vec![],
                    b_bstrides: vec![],
                    a_offset: merged.offset(),
                    b_offset: rhs.offset(),
                    a_strides: (merged.strides()[0], sa[r - 1]),
                    b_strides: (sb[r - 2], sb[r - 1]),
                });
            }
        }
        // Merge batch dims (dropping size-1 ones) where both operands allow it:
        // fewer dims make strided_offset cheaper and the cuBLAS path can use
        // one strided-batched call whenever a single dim remains.
        let mut bdims: Vec<usize> = vec![];
        let (mut a_bs, mut b_bs): (Vec<usize>, Vec<usize>) = (vec![], vec![]);
        for d in 0..r - 2 {
            let (size, x, y) = (a[d], sa[d], sb[d]);
            if size == 1 {
                continue;
            }
            if let (Some(last), Some(lx), Some(ly)) = (bdims.last_mut(), a_bs.last_mut(), b_bs.last_mut()) {
                // The previous dim steps over exactly `size` of this one in both operands.
                if *lx == x * size && *ly == y * size {
                    *last *= size;
                    *lx = x;
                    *ly = y;
                    continue;
                }
            }
            bdims.push(size);
            a_bs.push(x);
            b_bs.push(y);
        }
        if bdims.len() > MAX_DIMS {
            return Err(Error::shape(
                "matmul",
                format!(
                    "CUDA matmul takes at most {MAX_DIMS} batch dims that do not merge; got shapes {} and {}",
                    lhs.shape(),
                    rhs.shape()
                ),
            ));
        }
        Ok(Plan {
            batch,
            m,
            k,
            n,
            bdims,
            a_bstrides: a_bs,
            b_bstrides: b_bs,
            a_offset: lhs.offset(),
            b_offset: rhs.offset(),
            a_strides: (sa[r - 2], sa[r - 1]),
            b_strides: (sb[r - 2], sb[r - 1]),
        })
    }

    fn batch_layout(&self, strides: &[usize], offset: usize) -> StridedLayout {
        let mut l = StridedLayout {
            rank: self.bdims.len() as i64,
            offset: offset as i64,
            dims: [1; MAX_DIMS],
            strides: [0; MAX_DIMS],
        };
        for (i, (&d, &s)) in self.bdims.iter().zip(strides).enumerate() {
            l.dims[i] = d as i64;
            l.strides[i] = s as i64;
        }
        l
    }

    /// Whether every batch entry of an operand starts on a multiple of `w`
    /// elements of a 16-byte aligned `ptr`.
    fn aligned_base(&self, ptr: u64, offset: usize, bstrides: &[usize], w: usize) -> bool {
        ptr.is_multiple_of(16) && offset.is_multiple_of(w) && self.bdims.iter().zip(bstrides).all(|(&d, &s)| d <= 1 || s.is_multiple_of(w))
    }

    /// The kernel `flags` (see cuda/matmul.cu) for loads of `w` elements and
    /// stores of `wc` elements per vector.
    fn flags(&self, a_ptr: u64, b_ptr: u64, w: usize, wc: usize) -> i64 {
        let (m, k, n) = (self.m, self.k, self.n);
        let ((ars, acs), (brs, bcs)) = (self.a_strides, self.b_strides);
        let mut f = 0;
        let a_along_k = k <= 1 || acs == 1;
        let a_along_m = m <= 1 || ars == 1;
        let a_mmajor = a_along_m && !a_along_k;
        let a_aligned = self.aligned_base(a_ptr, self.a_offset, &self.a_bstrides, w);
        if a_mmajor {
            f |= A_MMAJOR;
            if a_aligned && (k <= 1 || acs % w == 0) {
                f |= A_MVEC;
            }
        } else if a_along_k && a_aligned && (m <= 1 || ars % w == 0) {
            f |= A_KVEC;
        }
        let b_along_k = k <= 1 || brs == 1;
        let b_along_n = n <= 1 || bcs == 1;
        // B is staged [n][k] only when it is k-contiguous and not n-contiguous.
        let b_nmajor = !b_along_k || b_along_n;
        let b_aligned = self.aligned_base(b_ptr, self.b_offset, &self.b_bstrides, w);
        if b_nmajor {
            f |= B_NMAJOR;
            if b_along_n && b_aligned && (k <= 1 || brs % w == 0) {
                f |= B_NVEC;
            }
        } else if b_aligned && (n <= 1 || bcs % w == 0) {
            f |= B_KVEC;
        }
        if n % wc == 0 {
            f |= C_VEC;
        }
        f
    }

    /// The argument list every matmul kernel takes (MATMUL_PARAMS).
    fn args(&self, a: &CudaStorage, b: &CudaStorage, c: &CudaStorage, flags: i64) -> Vec<Arg> {
        let ((ars, acs), (brs, bcs)) = (self.a_strides, self.b_strides);
        vec![
            Arg::Ptr(a.ptr()),
            Arg::Layout(self.batch_layout(&self.a_bstrides, self.a_offset)),
            Arg::I64(ars as i64),
            Arg::I64(acs as i64),
            Arg::Ptr(b.ptr()),
            Arg::Layout(self.batch_layout(&self.b_bstrides, self.b_offset)),
            Arg::I64(brs as i64),
            Arg::I64(bcs as i64),
            Arg::Ptr(c.ptr()),
            Arg::I64(self.batch as i64),
            Arg::I64(self.m as i64),
            Arg::I64(self.n as i64),
            Arg::I64(self.k as i64),
            Arg::I64(flags),
        ]
    }

    /// Grid of block tiles `bm x bn`: (tiles, batch split over y and z).
    fn tile_grid(&self, bm: usize, bn: usize, threads: u32, shared_mem_bytes: u32) -> Result<LaunchConfig> {
        let tiles = self.m.div_ceil(bm) * self.n.div_ceil(bn);
        let y = self.batch.min(65_535);
        let z = self.batch.div_ceil(y.max(1));
        if tiles > i32::MAX as usize || z > 65_535 {
            return Err(Error::shape(
                "matmul",
                format!("{} products of [{}, {}] tiles exceed the CUDA grid limits", self.batch, self.m, self.n),
            ));
        }
        Ok(LaunchConfig {
            grid_dim: (tiles as u32, y as u32, z as u32),
            block_dim: (threads, 1, 1),
            shared_mem_bytes,
        })
    }
}

// ---- launching ----------------------------------------------------------------

/// Tensor-core kernel geometry (TC_* in cuda/matmul.cu): 128x128 tiles, 256
/// threads, 3 stages of two 128 x 40 element tiles of 2 bytes.
const TC_TILE: usize = 128;
const TC_SMEM_BYTES: u32 = 3 * 2 * 128 * 40 * 2;

/// Compute capability major version from `sm_XY`.
fn sm_major(arch: &str) -> u32 {
    arch.trim_start_matches("sm_").parse::<u32>().map(|v| v / 10).unwrap_or(0)
}

/// Let `name` use `bytes` of dynamic shared memory (above the default 48 KB),
/// once per device and kernel.
fn allow_dynamic_smem(dev: &CudaDevice, name: &str, bytes: u32) -> Result<()> {
    static DONE: OnceLock<Mutex<HashSet<(usize, String)>>> = OnceLock::new();
    let mut done = DONE.get_or_init(|| Mutex::new(HashSet::new())).lock().unwrap_or_else(|p| p.into_inner());
    if done.contains(&(dev.ordinal(), name.to_string())) {
        return Ok(());
    }
    let f = dev.function(&kernels::MATMUL, name)?;
    dev.bind()?;
    use cudarc::driver::sys::CUfunction_attribute as Attr;
    // SAFETY: `f` is a loaded kernel of this device's context, bound above.
    unsafe {
        cudarc::driver::result::function::set_function_attribute(f.cu_function(), Attr::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes as i32)
            .map_err(|e| super::device::driver_error("matmul", e))?;
        // Prefer the largest shared-memory carveout: two blocks of this kernel
        // need 120 KB per SM; cp.async.cg bypasses L1 anyway.
        cudarc::driver::result::function::set_function_attribute(f.cu_function(), Attr::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT, 100)
            .map_err(|e| super::device::driver_error("matmul", e))?;
    }
    done.insert((dev.ordinal(), name.to_string()));
    Ok(())
}

/// Our kernels: `naive` selects version 1, else the tiled / tensor-core version.
fn launch_own(plan: &Plan, a: &CudaStorage, b: &CudaStorage, out: &CudaStorage, naive: bool) -> Result<()> {
    let dev = a.cuda_device();
    let dtype = a.dtype();
    if naive {
        let flags = plan.flags(a.ptr(), b.ptr(), 1, 1);
        let cfg = super::elementwise_config(plan.batch * plan.m * plan.n);
        return dev.launch(&kernels::MATMUL, &super::kernel_name("matmul_naive", dtype), cfg, &plan.args(a, b, out, flags));
    }
    match dtype {
        DType::F32 => {
            let flags = plan.flags(a.ptr(), b.ptr(), 4, 4);
            let cfg = plan.tile_grid(128, 128, 256, 0)?;
            dev.launch(&kernels::MATMUL, "matmul_tiled_f32", cfg, &plan.args(a, b, out, flags))
        }
        DType::F64 => {
            let flags = plan.flags(a.ptr(), b.ptr(), 1, 1);
            let cfg = plan.tile_grid(64, 64, 256, 0)?;
            dev.launch(&kernels::MATMUL, "matmul_tiled_f64", cfg, &plan.args(a, b, out, flags))
        }
        DType::BF16 | DType::F16 => {
            if sm_major(dev.arch()) < 8 {
                return Err(Error::device(
                    "matmul",
                    format!(
                        "{dtype} matmul uses tensor-core instructions of compute capability 8.0+, but {} is {}; cast to f32",
                        dev.name(),
                        dev.arch()
                    ),
                ));
            }
            let name = super::kernel_name("matmul", dtype);
            allow_dynamic_smem(dev, &name, TC_SMEM_BYTES)?;
            let flags = plan.flags(a.ptr(), b.ptr(), 8, 2);
            let cfg = plan.tile_grid(TC_TILE, TC_TILE, 256, TC_SMEM_BYTES)?;
            dev.launch(&kernels::MATMUL, &name, cfg, &plan.args(a, b, out, flags))
        }
        DType::I64 => Err(Error::dtype("matmul", "i64 operands: expected a float dtype")),
    }
}

/// `lhs @ rhs` through `backend`, for callers that choose explicitly.
pub fn matmul_with(backend: MatmulBackend, lhs: &CudaStorage, lhs_layout: &Layout, rhs: &CudaStorage, rhs_layout: &Layout) -> Result<CudaStorage> {
    check_operands(lhs, lhs_layout, rhs, rhs_layout)?;
    launch(backend, lhs, lhs_layout, rhs, rhs_layout)
}

/// The contract's check, then this backend's: both operands on one device.
fn check_operands(lhs: &CudaStorage, lhs_layout: &Layout, rhs: &CudaStorage, rhs_layout: &Layout) -> Result<()> {
    check_matmul(
        (lhs.dtype(), lhs_layout, lhs.len()),
        (rhs.dtype(), rhs_layout, rhs.len()),
        <CudaStorage as MatmulKernels>::DTYPES,
    )?;
    lhs.check_same_device("matmul", rhs)
}

/// `lhs @ rhs` through `backend`, the operands already checked.
fn launch(backend: MatmulBackend, lhs: &CudaStorage, lhs_layout: &Layout, rhs: &CudaStorage, rhs_layout: &Layout) -> Result<CudaStorage> {
    let plan = Plan::new(lhs_layout, lhs.len(), rhs_layout, rhs.len())?;
    let dev: &Arc<CudaDevice> = lhs.cuda_device();
    let len = plan.batch * plan.m * plan.n;
    if len == 0 {
        return CudaStorage::alloc(dev, lhs.dtype(), 0);
    }
    if plan.k == 0 {
        return CudaStorage::zeros(dev, lhs.dtype(), len);
    }
    let out = CudaStorage::alloc(dev, lhs.dtype(), len)?;
    match backend {
        MatmulBackend::Own => launch_own(&plan, lhs, rhs, &out, false)?,
        MatmulBackend::Naive => launch_own(&plan, lhs, rhs, &out, true)?,
        MatmulBackend::Cublas => {
            if !blas::gemm(&plan, lhs, rhs, &out)? {
                launch_own(&plan, lhs, rhs, &out, false)?;
            }
        }
    }
    Ok(out)
}

impl MatmulKernels for CudaStorage {
    /// f16 and bf16 run on the tensor cores (sm_80+), accumulating in f32.
    const DTYPES: &'static [DType] = FLOATS;

    fn matmul(&self, lhs_layout: &Layout, rhs: &Self, rhs_layout: &Layout) -> Result<Self> {
        check_operands(self, lhs_layout, rhs, rhs_layout)?;
        launch(backend()?, self, lhs_layout, rhs, rhs_layout)
    }

    /// The product, then the binary family's `add` with the bias broadcast
    /// over its rows: two launches of existing kernels. (A bias epilogue in
    /// the GEMM kernels would save the second pass; unmeasured here, as this
    /// machine has no GPU.)
    fn linear(&self, lhs_layout: &Layout, rhs: &Self, rhs_layout: &Layout, bias: Option<(&Self, &Layout)>) -> Result<Self> {
        check_linear(
            (self.dtype(), lhs_layout, self.len()),
            (rhs.dtype(), rhs_layout, rhs.len()),
            bias.map(|(s, l)| (s.dtype(), l, s.len())),
            <CudaStorage as MatmulKernels>::DTYPES,
        )?;
        self.check_same_device("linear", rhs)?;
        if let Some((bias, _)) = bias {
            self.check_same_device("linear", bias)?;
        }
        let product = launch(backend()?, self, lhs_layout, rhs, rhs_layout)?;
        let Some((bias, bias_layout)) = bias else { return Ok(product) };
        let r = lhs_layout.rank();
        let mut dims = lhs_layout.dims()[..r - 1].to_vec();
        dims.push(rhs_layout.dims()[r - 1]);
        let out = Layout::contiguous(Shape::new(dims));
        let rows = bias_layout.broadcast_as("linear", out.shape())?;
        product.binary(&out, bias, &rows, Add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(lhs: &Layout, rhs: &Layout) -> Plan {
        Plan::new(lhs, lhs.required_len(), rhs, rhs.required_len()).unwrap()
    }

    #[test]
    fn flags_follow_the_contiguous_axis() {
        let a = Layout::contiguous([64, 32]);
        let b = Layout::contiguous([32, 48]);
        let p = plan(&a, &b);
        assert_eq!(p.flags(0, 0, 4, 4), A_KVEC | B_NMAJOR | B_NVEC | C_VEC);
        // Aᵀ stored [k, m] and Bᵀ stored [n, k]: read along m and along k.
        let at = Layout::contiguous([32, 64]).permute("t", &[1, 0]).unwrap();
        let bt = Layout::contiguous([48, 32]).permute("t", &[1, 0]).unwrap();
        let p = plan(&at, &bt);
        assert_eq!(p.flags(0, 0, 8, 2), A_MMAJOR | A_MVEC | B_KVEC | C_VEC);
        // A misaligned offset or an odd row stride drops the vector flags only.
        let narrow = Layout::contiguous([64, 33]).narrow(1, 1, 32);
        assert_eq!(plan(&narrow, &b).flags(0, 0, 4, 4), B_NMAJOR | B_NVEC | C_VEC);
        // A pointer that is not 16-byte aligned drops them too.
        assert_eq!(plan(&a, &b).flags(8, 0, 4, 4), B_NMAJOR | B_NVEC | C_VEC);
        // n = 6 is not a multiple of 4: no vector stores.
        assert_eq!(plan(&a, &Layout::contiguous([32, 6])).flags(0, 0, 4, 4) & C_VEC, 0);
    }

    #[test]
    fn a_broadcast_rhs_folds_into_one_product() {
        let a = Layout::contiguous([4, 7, 5]);
        let b = Layout::contiguous([5, 3]).broadcast_as("t", &Shape::new([4, 5, 3])).unwrap();
        let p = plan(&a, &b);
        assert_eq!((p.batch, p.m, p.k, p.n), (1, 28, 5, 3));
        assert!(p.bdims.is_empty());
        assert_eq!(p.a_strides, (5, 1));
    }

    #[test]
    fn batch_dims_merge_where_both_operands_allow() {
        // [2, 3] contiguous batches merge into one dim of 6.
        let a = Layout::contiguous([2, 3, 4, 5]);
        let b = Layout::contiguous([2, 3, 5, 6]);
        let p = plan(&a, &b);
        assert_eq!((p.bdims.clone(), p.a_bstrides.clone(), p.b_bstrides.clone()), (vec![6], vec![20], vec![30]));
        // A broadcast over the first batch dim only: the dims stay apart.
        let a1 = Layout::contiguous([1, 3, 4, 5]).broadcast_as("t", &Shape::new([2, 3, 4, 5])).unwrap();
        let p = plan(&a1, &b);
        assert_eq!(
            (p.bdims.clone(), p.a_bstrides.clone(), p.b_bstrides.clone()),
            (vec![2, 3], vec![0, 20], vec![90, 30])
        );
        assert_eq!(p.batch, 6);
        // Size-1 batch dims vanish.
        let p = plan(&Layout::contiguous([1, 4, 5]), &Layout::contiguous([1, 5, 6]));
        assert!(p.bdims.is_empty());
        assert_eq!(p.batch, 1);
    }

    #[test]
    fn out_of_bounds_layouts_are_errors() {
        let l = Layout::contiguous([3, 4]);
        let r = Layout::contiguous([4, 2]);
        assert!(Plan::new(&l, 12, &r, 8).is_ok());
        let err = Plan::new(&l, 11, &r, 8).unwrap_err().to_string();
        assert!(err.contains("reaches element 11 of a storage of 11"), "{err}");
        assert!(Plan::new(&l, 12, &Layout::contiguous([3, 2]), 6).is_err());
    }

    #[test]
    fn backend_names_parse() {
        assert_eq!(MatmulBackend::parse("cuBLAS"), Some(MatmulBackend::Cublas));
        assert_eq!(MatmulBackend::parse("naive"), Some(MatmulBackend::Naive));
        assert_eq!(MatmulBackend::parse("own"), Some(MatmulBackend::Own));
        assert_eq!(MatmulBackend::parse("tiled"), None);
        with_backend(MatmulBackend::Naive, || assert_eq!(backend().unwrap(), MatmulBackend::Naive));
    }
}
