//! The cuBLAS path of CUDA matmul (`MatmulBackend::Cublas`), for comparison
//! with our kernels. One handle per device, bound to the device's stream.
//!
//! cuBLAS is column-major; a row-major product `C[m, n] = A[m, k] · B[k, n]`
//! is the column-major product `Cᵀ[n, m] = Bᵀ[n, k] · Aᵀ[k, m]`, so B goes
//! first. Each operand is handed over as stored: a matrix contiguous along
//! its columns is, read column-major, already the transpose we need
//! (`CUBLAS_OP_N`, leading dimension = its row stride); one contiguous along
//! its rows is read with `CUBLAS_OP_T` (leading dimension = its column
//! stride). All dtypes go through `cublasGemmEx` (one entry) or
//! `cublasGemmStridedBatchedEx` (a uniformly strided batch, stride 0 allowed
//! for a broadcast operand) with `CUBLAS_COMPUTE_32F` for f32/bf16/f16 (no
//! TF32: true f32 products) and `CUBLAS_COMPUTE_64F` for f64.

use super::{CudaStorage, Plan};
use crate::backend::BackendStorage as _;
use crate::types::{DType, Layout, Shape};
use crate::{Error, Result};
use cudarc::cublas::sys::{self, cublasComputeType_t as Compute, cublasOperation_t as Op, cudaDataType as Ty};
use std::collections::hash_map::{Entry, HashMap};
use std::ffi::{c_int, c_longlong, c_void};
use std::sync::{Mutex, OnceLock};

/// A cuBLAS handle (a raw pointer, used only under the lock below).
struct Handle(sys::cublasHandle_t);
// SAFETY: a cuBLAS handle may be used from any thread as long as calls on it
// are not concurrent; every use holds HANDLES' lock.
unsafe impl Send for Handle {}

static HANDLES: OnceLock<Mutex<HashMap<usize, Handle>>> = OnceLock::new();

fn blas_error(e: cudarc::cublas::result::CublasError) -> Error {
    Error::device("matmul", format!("cuBLAS error: {e:?}"))
}

/// How cuBLAS reads an operand X[rows, cols] (strides rs, cs) as the
/// column-major matrix op(M) = Xᵀ: (operation, leading dimension), or `None`
/// when neither axis has unit stride or the rows overlap.
fn blas_view(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<(Op, usize)> {
    if cols <= 1 || cs == 1 {
        // Xᵀ [cols, rows] column-major with ld = rs (any ld when there is one row).
        let ld = if rows <= 1 { cols.max(1) } else { rs };
        (ld >= cols.max(1)).then_some((Op::CUBLAS_OP_N, ld))
    } else if rows <= 1 || rs == 1 {
        // X [rows, cols] column-major with ld = cs, transposed by cuBLAS.
        let ld = if cols <= 1 { rows.max(1) } else { cs };
        (ld >= rows.max(1)).then_some((Op::CUBLAS_OP_T, ld))
    } else {
        None
    }
}

fn to_int(v: usize, what: &str) -> Result<c_int> {
    c_int::try_from(v).map_err(|_| Error::shape("matmul", format!("{what} = {v} exceeds cuBLAS's 32-bit int")))
}

/// `out = a @ b` for a validated plan with k > 0 and a non-empty output.
/// Returns `Ok(false)` (nothing queued) when cuBLAS cannot take the operands
/// as they are stored; the caller then uses our kernels.
pub(super) fn gemm(plan: &Plan, a: &CudaStorage, b: &CudaStorage, out: &CudaStorage) -> Result<bool> {
    let (m, k, n) = (plan.m, plan.k, plan.n);
    let (Some((op_b, ldb)), Some((op_a, lda))) = (
        blas_view(k, n, plan.b_strides.0, plan.b_strides.1),
        blas_view(m, k, plan.a_strides.0, plan.a_strides.1),
    ) else {
        return Ok(false);
    };
    // SAFETY: only tries to dlopen the library.
    if !unsafe { sys::is_culib_present() } {
        return Err(Error::device(
            "matmul",
            "TAMER_MATMUL=cublas but libcublas.so was not found: put the CUDA toolkit's (or the nvidia-cublas wheel's) lib directory on LD_LIBRARY_PATH",
        ));
    }
    let (ty, compute) = match a.dtype() {
        DType::F32 => (Ty::CUDA_R_32F, Compute::CUBLAS_COMPUTE_32F),
        DType::F64 => (Ty::CUDA_R_64F, Compute::CUBLAS_COMPUTE_64F),
        DType::BF16 => (Ty::CUDA_R_16BF, Compute::CUBLAS_COMPUTE_32F),
        DType::F16 => (Ty::CUDA_R_16F, Compute::CUBLAS_COMPUTE_32F),
        DType::I64 => return Err(Error::dtype("matmul", "i64 operands: expected a float dtype")),
    };
    let (one32, zero32, one64, zero64) = (1.0f32, 0.0f32, 1.0f64, 0.0f64);
    let (alpha, beta): (*const c_void, *const c_void) = if a.dtype() == DType::F64 {
        (&one64 as *const f64 as *const c_void, &zero64 as *const f64 as *const c_void)
    } else {
        (&one32 as *const f32 as *const c_void, &zero32 as *const f32 as *const c_void)
    };
    let (mi, ni, ki) = (to_int(m, "m")?, to_int(n, "n")?, to_int(k, "k")?);
    let (ldai, ldbi) = (to_int(lda, "lda")?, to_int(ldb, "ldb")?);
    let esize = a.dtype().size_in_bytes() as u64;
    let elem = |s: &CudaStorage, offset: usize| s.ptr() + offset as u64 * esize;

    let dev = a.cuda_device();
    let mut handles = HANDLES.get_or_init(|| Mutex::new(HashMap::new())).lock().unwrap_or_else(|p| p.into_inner());
    dev.bind()?;
    let h = match handles.entry(dev.ordinal()) {
        Entry::Occupied(e) => e.get().0,
        Entry::Vacant(e) => {
            let h = cudarc::cublas::result::create_handle().map_err(blas_error)?;
            // SAFETY: a fresh handle and this device's live stream.
            unsafe { cudarc::cublas::result::set_stream(h, dev.stream().cu_stream() as _) }.map_err(blas_error)?;
            e.insert(Handle(h)).0
        }
    };

    // Batch entries: one strided-batched call when the (merged) batch is a
    // single strided axis, else one call per entry.
    let single_axis = plan.bdims.len() <= 1;
    // SAFETY (all calls below): the pointers address the operands' storages,
    // whose layouts Plan::new checked against their lengths, and `out`'s
    // batch·m·n elements; everything is queued on the device's stream, which
    // keeps the storages' blocks alive until it has run (caching allocator).
    unsafe {
        if single_axis {
            let (sa, sb) = (plan.a_bstrides.first().copied().unwrap_or(0), plan.b_bstrides.first().copied().unwrap_or(0));
            cudarc::cublas::result::gemm_strided_batched_ex(
                h,
                op_b,
                op_a,
                ni,
                mi,
                ki,
                alpha,
                elem(b, plan.b_offset) as *const c_void,
                ty,
                ldbi,
                sb as c_longlong,
                elem(a, plan.a_offset) as *const c_void,
                ty,
                ldai,
                sa as c_longlong,
                beta,
                out.ptr() as *mut c_void,
                ty,
                ni,
                (m * n) as c_longlong,
                to_int(plan.batch, "batch")?,
                compute,
                sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
            .map_err(blas_error)?;
        } else {
            let batch = Shape::new(plan.bdims.clone());
            let a_off = Layout::new(batch.clone(), plan.a_bstrides.clone(), plan.a_offset).offsets_vec();
            let b_off = Layout::new(batch, plan.b_bstrides.clone(), plan.b_offset).offsets_vec();
            for (e, (&oa, &ob)) in a_off.iter().zip(&b_off).enumerate() {
                cudarc::cublas::result::gemm_ex(
                    h,
                    op_b,
                    op_a,
                    ni,
                    mi,
                    ki,
                    alpha,
                    elem(b, ob) as *const c_void,
                    ty,
                    ldbi,
                    elem(a, oa) as *const c_void,
                    ty,
                    ldai,
                    beta,
                    elem(out, e * m * n) as *mut c_void,
                    ty,
                    ni,
                    compute,
                    sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
                .map_err(blas_error)?;
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operands_are_viewed_as_stored() {
        // Row-major [k=3, n=4]: contiguous along columns, ld = row stride.
        assert_eq!(blas_view(3, 4, 4, 1), Some((Op::CUBLAS_OP_N, 4)));
        // Its transpose view (stored [n, k]): rows contiguous, ld = column stride.
        assert_eq!(blas_view(3, 4, 1, 3), Some((Op::CUBLAS_OP_T, 3)));
        // Padded rows keep their stride as ld.
        assert_eq!(blas_view(3, 4, 10, 1), Some((Op::CUBLAS_OP_N, 10)));
        // One row: the stride is irrelevant.
        assert_eq!(blas_view(1, 4, 0, 1), Some((Op::CUBLAS_OP_N, 4)));
        // No unit stride, or overlapping rows: not for cuBLAS.
        assert_eq!(blas_view(3, 4, 8, 2), None);
        assert_eq!(blas_view(3, 4, 2, 1), None);
    }
}
