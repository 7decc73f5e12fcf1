//! Matrix multiplication: 2-D and batched with broadcast batch dimensions,
//! with torch.matmul's promotion of 1-D operands.
//!
//! Forward: broadcast both operands' batch dims to the common batch shape (stride
//! 0 where stretched, no copy) and hand the strided layouts to one kernel, so
//! transposed or sliced operands are never copied. Backward:
//! `dA = dC @ Bᵀ`, `dB = Aᵀ @ dC`, each summed back over the batch dims that
//! broadcasting stretched.

use crate::autocast;
use crate::autograd::BackwardOp;
use crate::backend::contract::matmul::MatmulKernels;
use crate::profile::{self, Cost};
use crate::tensor::Tensor;
use crate::types::{DType, Layout, Shape};
use crate::{Error, Result};

/// The shapes of one product once 1-D operands are promoted to matrices.
#[derive(Clone, Debug, PartialEq, Eq)]
struct MatmulShapes {
    /// Broadcast batch dims of the output.
    batch: Vec<usize>,
    m: usize,
    k: usize,
    n: usize,
}

/// Validate `lhs @ rhs` (1-D operands already promoted: `[k]` as `[1, k]` on the
/// left, `[k, 1]` on the right); messages name the shapes the user passed.
fn matmul_shapes(lhs: &Shape, rhs: &Shape, user_lhs: &Shape, user_rhs: &Shape) -> Result<MatmulShapes> {
    let (a, b) = (lhs.dims(), rhs.dims());
    let (ra, rb) = (a.len(), b.len());
    let (m, k) = (a[ra - 2], a[ra - 1]);
    let (k2, n) = (b[rb - 2], b[rb - 1]);
    if k != k2 {
        return Err(Error::shape(
            "matmul",
            format!("shapes {user_lhs} and {user_rhs} are incompatible: expected lhs.k ({k}) == rhs.k ({k2})"),
        ));
    }
    let (batch_a, batch_b) = (Shape::new(&a[..ra - 2]), Shape::new(&b[..rb - 2]));
    let batch = batch_a.broadcast_with("matmul", &batch_b).map_err(|_| {
        Error::shape(
            "matmul",
            format!(
                "shapes {user_lhs} and {user_rhs} are incompatible: batch dims {batch_a} and {batch_b} cannot be broadcast together (expected equal sizes or a 1)"
            ),
        )
    })?;
    Ok(MatmulShapes {
        batch: batch.dims().to_vec(),
        m,
        k,
        n,
    })
}

fn with_matrix(batch: &[usize], rows: usize, cols: usize) -> Shape {
    let mut dims = batch.to_vec();
    dims.extend([rows, cols]);
    Shape::new(dims)
}

impl Tensor {
    /// Matrix product with PyTorch's `torch.matmul` semantics.
    ///
    /// - `[m, k] @ [k, n] -> [m, n]`;
    /// - batched `[.., m, k] @ [.., k, n] -> [.., m, n]`, the batch dims broadcast
    ///   numpy-style (`[b, m, k] @ [k, n]`, `[1, m, k] @ [b, k, n]`, ...);
    /// - a 1-D left operand is a row vector, a 1-D right operand a column vector,
    ///   and the added axis is removed from the result (`[k] @ [k]` is a scalar).
    ///
    /// Transposed or sliced operands (`b.t()`) are used in place, not copied.
    /// Inside [`autocast`](crate::autocast()), f32 operands on a CUDA device are
    /// multiplied in bf16/f16 and the product cast back to f32.
    ///
    /// ```
    /// use tamer::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]).unwrap();
    /// let b = Tensor::from_vec(vec![1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0], [3, 2]).unwrap();
    /// assert_eq!(a.matmul(&b).unwrap().to_vec::<f32>().unwrap(), vec![4.0, 5.0, 10.0, 11.0]);
    /// // a @ aᵀ through a strided view: no copy is made.
    /// assert_eq!(a.matmul(&a.t().unwrap()).unwrap().to_vec::<f32>().unwrap(), vec![14.0, 32.0, 32.0, 77.0]);
    /// // Batch dims broadcast: [4, 2, 3] @ [3, 2] -> [4, 2, 2].
    /// let x = Tensor::ones([4, 2, 3], tamer::DType::F32).unwrap();
    /// assert_eq!(x.matmul(&b).unwrap().dims(), &[4, 2, 2]);
    /// // Mismatched inner dims name both shapes.
    /// let err = a.matmul(&a).unwrap_err();
    /// assert!(err.to_string().contains("[2, 3] and [2, 3]"), "{err}");
    /// ```
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        // Inside `autocast`, CUDA f32 products run in bf16/f16: both operands
        // are cast (differentiably, so their gradients come back f32), multiplied
        // on the tensor cores and the product cast back. The 16-bit operands do
        // not match the policy again.
        if let Some(half) = autocast::matmul_dtype((self.dtype(), self.device()), (rhs.dtype(), rhs.device())) {
            return self.to_dtype(half)?.matmul(&rhs.to_dtype(half)?)?.to_dtype(DType::F32);
        }
        self.same_dtype_device("matmul", rhs)?;
        if self.rank() == 0 || rhs.rank() == 0 {
            return Err(Error::shape(
                "matmul",
                format!(
                    "shapes {} and {}: both operands need at least one dimension (use mul for a scalar factor)",
                    self.shape(),
                    rhs.shape()
                ),
            ));
        }
        let promote = |t: &Tensor, vector_shape: [usize; 2]| if t.rank() == 1 { Shape::new(vector_shape) } else { t.shape().clone() };
        let lhs_shape = promote(self, [1, self.dims()[0]]);
        let rhs_shape = promote(rhs, [rhs.dims()[0], 1]);
        // Validate before reshaping so errors name what the user passed.
        let shapes = matmul_shapes(&lhs_shape, &rhs_shape, self.shape(), rhs.shape())?;
        with_matrix(&shapes.batch, shapes.m, shapes.n).check_size("matmul", self.dtype().size_in_bytes())?;
        if self.rank() >= 2 && rhs.rank() >= 2 {
            return matmul_nd(self, rhs, &shapes);
        }
        // 1-D operands: multiply as matrices, then drop the added axis. The reshapes
        // are views recorded in the graph, so gradients flow back to the vectors.
        let a = if self.rank() == 1 { self.reshape(lhs_shape)? } else { self.clone() };
        let b = if rhs.rank() == 1 { rhs.reshape(rhs_shape)? } else { rhs.clone() };
        let out = matmul_nd(&a, &b, &shapes)?;
        let mut dims = shapes.batch.clone();
        if self.rank() >= 2 {
            dims.push(shapes.m);
        }
        if rhs.rank() >= 2 {
            dims.push(shapes.n);
        }
        out.reshape(dims)
    }
}

/// `a @ b` for rank >= 2 operands whose shapes `matmul_shapes` accepted.
fn matmul_nd(a: &Tensor, b: &Tensor, s: &MatmulShapes) -> Result<Tensor> {
    let la = a.layout().broadcast_as("matmul", &with_matrix(&s.batch, s.m, s.k))?;
    let lb = b.layout().broadcast_as("matmul", &with_matrix(&s.batch, s.k, s.n))?;
    let products: usize = s.batch.iter().product();
    let _op = profile::op("matmul", || {
        Cost::flops_product(&[2, products, s.m, s.n, s.k]).moving(a.dtype(), a.numel() + b.numel() + products * s.m * s.n)
    })?;
    let storage = crate::dispatch!("matmul", [sa = &*a.storage(), sb = &*b.storage()] => sa.matmul(&la, sb, &lb)?);
    Ok(Tensor::from_op(
        storage,
        Layout::contiguous(with_matrix(&s.batch, s.m, s.n)),
        vec![a.clone(), b.clone()],
        MatmulBackward,
    ))
}

/// Inputs are the rank >= 2 operands (1-D ones were reshaped before the product).
struct MatmulBackward;

impl BackwardOp for MatmulBackward {
    fn name(&self) -> &'static str {
        "matmul"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        // g: [batch.., m, n], a: [batch_a.., m, k], b: [batch_b.., k, n]
        let ga = if a.requires_grad() {
            Some(g.matmul(&b.t()?)?.sum_to_shape(a.shape())?)
        } else {
            None
        };
        let gb = if !b.requires_grad() {
            None
        } else if b.rank() == 2 && a.rank() > 2 {
            // A weight shared by every batch entry (x[B, T, C] @ W[C, D]): fold the
            // batch into the rows, dB = Σ_batch aᵢᵀ gᵢ = a[B·T, C]ᵀ @ g[B·T, D], one
            // product instead of a batched one plus a reduction.
            let rows: usize = a.dims()[..a.rank() - 1].iter().product();
            let a_flat = a.reshape([rows, a.dims()[a.rank() - 1]])?;
            let g_flat = g.reshape([rows, g.dims()[g.rank() - 1]])?;
            Some(a_flat.t()?.matmul(&g_flat)?)
        } else {
            Some(a.t()?.matmul(g)?.sum_to_shape(b.shape())?)
        };
        Ok(vec![ga, gb])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shapes(a: &[usize], b: &[usize]) -> Result<MatmulShapes> {
        matmul_shapes(&Shape::new(a), &Shape::new(b), &Shape::new(a), &Shape::new(b))
    }

    #[test]
    fn batch_dims_broadcast() {
        assert_eq!(shapes(&[2, 1, 3, 4], &[5, 4, 6]).unwrap().batch, vec![2, 5]);
        assert_eq!(shapes(&[3, 4], &[7, 4, 6]).unwrap().batch, vec![7]);
        let err = shapes(&[2, 3, 4], &[3, 4, 5]).unwrap_err().to_string();
        assert!(err.contains("[2, 3, 4] and [3, 4, 5]") && err.contains("batch dims [2] and [3]"), "{err}");
    }

    #[test]
    fn vector_promotion_matches_torch() {
        let v = Tensor::from_vec(vec![1.0f64, 2.0], [2]).unwrap();
        let m = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]).unwrap();
        assert_eq!(v.matmul(&v).unwrap().dims(), &[] as &[usize]);
        assert_eq!(v.matmul(&v).unwrap().to_scalar().unwrap(), 5.0);
        let vm = v.matmul(&m).unwrap();
        assert_eq!(vm.dims(), &[3]);
        assert_eq!(vm.to_vec::<f64>().unwrap(), vec![9.0, 12.0, 15.0]);
        let w = Tensor::from_vec(vec![1.0f64, 0.0, -1.0], [3]).unwrap();
        let mv = m.matmul(&w).unwrap();
        assert_eq!(mv.dims(), &[2]);
        assert_eq!(mv.to_vec::<f64>().unwrap(), vec![-2.0, -2.0]);
        let batched = Tensor::ones([4, 2, 3], DType::F64).unwrap();
        assert_eq!(batched.matmul(&w).unwrap().dims(), &[4, 2]);
        assert_eq!(v.matmul(&batched).unwrap().dims(), &[4, 3]);
    }

    #[test]
    fn errors_name_shapes_and_inner_dims() {
        let a = Tensor::ones([2, 3], DType::F32).unwrap();
        let b = Tensor::ones([4, 5], DType::F32).unwrap();
        let err = a.matmul(&b).unwrap_err().to_string();
        assert_eq!(err, "matmul: shapes [2, 3] and [4, 5] are incompatible: expected lhs.k (3) == rhs.k (4)");
        let v = Tensor::ones([4], DType::F32).unwrap();
        let err = a.matmul(&v).unwrap_err().to_string();
        assert!(err.contains("[2, 3] and [4]") && err.contains("(3) == rhs.k (4)"), "{err}");
        let s = Tensor::scalar(1.0f32);
        assert!(s.matmul(&a).unwrap_err().to_string().contains("at least one dimension"));
        let d = Tensor::ones([3, 2], DType::F64).unwrap();
        assert!(a.matmul(&d).unwrap_err().to_string().contains("dtypes f32 and f64"));
    }
}
