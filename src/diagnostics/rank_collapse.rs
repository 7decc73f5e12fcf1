//! Rank collapse: how close a layer's token matrix is to rank one.
//!
//! Dong, Cordonnier and Loukas (2021), "Attention is not all you need: pure
//! attention loses rank doubly exponentially with depth", show that a stack of
//! self-attention layers without skip connections or MLPs drives every token
//! to the same vector: the residual of the token matrix `X [tokens, d]` from
//! the nearest matrix with identical rows, `res(X) = X − 1xᵀ`, shrinks doubly
//! exponentially with depth. Skip connections stop the collapse and MLPs slow
//! it. A collapsed model cannot tell its tokens apart (every position gets the
//! same prediction) and its gradients with respect to the input vanish, so
//! the residual at every depth is a quick check that a deep transformer's
//! representations are alive.
//!
//! The paper measures the residual in the composite norm
//!
//! ```text
//! ‖X‖₁,∞ = √(‖X‖₁ · ‖X‖∞)     ‖X‖₁ = max over columns of Σ|x_ij|,  ‖X‖∞ = max over rows of Σ|x_ij|
//! ```
//!
//! and defines `x` as the argmin of `‖X − 1xᵀ‖₁,∞`. tamer takes `x` to be the
//! mean of the tokens instead (the argmin in the Frobenius norm): it is one
//! pass and deterministic, whereas the composite norm's
//! argmin is a non-smooth optimisation with no closed form. Since the mean is
//! one candidate of the argmin, the residual tamer reports is an upper bound
//! on the paper's, exactly 0 when and only when the rows are identical (then
//! both are 0), and it shows the same doubly exponential decay. The value
//! reported is relative, `‖X − 1x̄ᵀ‖₁,∞ / ‖X‖₁,∞`, so that it does not depend
//! on the scale of the activations.

use crate::tensor::Tensor;
use crate::{no_grad, Error, Result};

/// The composite norm `√(‖A‖₁ · ‖A‖∞)` of a row-major `rows × cols` matrix:
/// `‖A‖₁` the largest column sum of absolute values, `‖A‖∞` the largest row
/// sum (Dong et al. 2021, eq. 2). An error when `a` does not hold
/// `rows · cols` numbers.
///
/// ```
/// use tamer::diagnostics::composite_norm;
/// // [[1, -2], [3, 4]]: column sums 4 and 6, row sums 3 and 7.
/// assert_eq!(composite_norm(&[1.0, -2.0, 3.0, 4.0], 2, 2).unwrap(), (6.0f64 * 7.0).sqrt());
/// assert!(composite_norm(&[1.0, 2.0, 3.0], 2, 2).is_err());
/// ```
pub fn composite_norm(a: &[f64], rows: usize, cols: usize) -> Result<f64> {
    if rows.checked_mul(cols) != Some(a.len()) {
        return Err(Error::shape(
            "composite_norm",
            format!("{} numbers cannot be a {rows} × {cols} matrix", a.len()),
        ));
    }
    Ok(norm_of(a, rows, cols))
}

/// [`composite_norm`] of a slice known to hold `rows · cols` numbers.
fn norm_of(a: &[f64], rows: usize, cols: usize) -> f64 {
    let mut col_sums = vec![0.0; cols];
    let mut max_row = 0.0f64;
    for row in a.chunks_exact(cols.max(1)).take(rows) {
        let mut sum = 0.0;
        for (c, v) in col_sums.iter_mut().zip(row) {
            *c += v.abs();
            sum += v.abs();
        }
        max_row = max_row.max(sum);
    }
    let max_col = col_sums.into_iter().fold(0.0f64, f64::max);
    (max_col * max_row).sqrt()
}

/// The relative residual `‖X − 1x̄ᵀ‖₁,∞ / ‖X‖₁,∞` of one token matrix
/// (row-major, `tokens × d`), `x̄` the mean token. An error when `X` is zero
/// or not finite, where the ratio means nothing.
fn residual_of_matrix(op: &'static str, x: &[f64], tokens: usize, d: usize) -> Result<f64> {
    let norm = norm_of(x, tokens, d);
    if !norm.is_finite() || norm == 0.0 {
        return Err(Error::value(
            op,
            format!("the token matrix has norm {norm}: the relative residual needs a finite, nonzero matrix"),
        ));
    }
    let mut mean = vec![0.0; d];
    for row in x.chunks_exact(d) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    mean.iter_mut().for_each(|m| *m /= tokens as f64);
    let centered: Vec<f64> = x.chunks_exact(d).flat_map(|row| row.iter().zip(&mean).map(|(v, m)| v - m)).collect();
    Ok(norm_of(&centered, tokens, d) / norm)
}

/// The residual of every sample of `x`: `[tokens, d]` (one sample) or
/// `[batch, tokens, d]`, read to the host in f64 without recording a graph.
fn residuals(op: &'static str, x: &Tensor) -> Result<Vec<f64>> {
    let (batch, tokens, d) = match *x.dims() {
        [t, d] => (1, t, d),
        [b, t, d] => (b, t, d),
        _ => {
            return Err(Error::shape(
                op,
                format!("x has shape {}; expected a token matrix [tokens, d] or a batch [batch, tokens, d]", x.shape()),
            ))
        }
    };
    if batch == 0 || tokens == 0 || d == 0 {
        return Err(Error::shape(op, format!("x has shape {}: every axis must be non-empty", x.shape())));
    }
    if !x.dtype().is_float() {
        return Err(Error::dtype(op, format!("x has dtype {}; expected a float tensor", x.dtype())));
    }
    let host = no_grad(|| x.to_f64_vec())?;
    host.chunks_exact(tokens * d).map(|m| residual_of_matrix(op, m, tokens, d)).collect()
}

/// Dong et al.'s (2021) relative residual from rank one,
/// `‖X − 1x̄ᵀ‖₁,∞ / ‖X‖₁,∞` with `x̄` the mean token and `‖·‖₁,∞` the
/// [`composite_norm`] (see the [module docs](self) for why the mean rather than
/// the paper's argmin). `x` is a token matrix `[tokens, d]`, or a batch
/// `[batch, tokens, d]`, for which this is the mean of the per-sample
/// residuals ([`rank_collapse_residual_per_sample`] gives each one).
///
/// 0 means every token is the same vector (collapsed); the value is
/// unchanged when `x` is scaled. Computed in f64 on the host, without a
/// graph. Errors: a shape of another rank, an empty axis, a non-float
/// dtype, or a sample that is zero or not finite.
///
/// ```
/// use tamer::diagnostics::rank_collapse_residual;
/// use tamer::Tensor;
/// // Rows [1, 2] and [3, 4]: mean [2, 3], residual rows ±[1, 1] of norm 2; ‖X‖ = √(6·7).
/// let x = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0], [2, 2]).unwrap();
/// assert!((rank_collapse_residual(&x).unwrap() - 2.0 / 42f64.sqrt()).abs() < 1e-15);
/// // Identical tokens: collapsed.
/// let same = Tensor::from_vec(vec![0.5f64, -1.0, 0.5, -1.0, 0.5, -1.0], [3, 2]).unwrap();
/// assert_eq!(rank_collapse_residual(&same).unwrap(), 0.0);
/// ```
pub fn rank_collapse_residual(x: &Tensor) -> Result<f64> {
    let r = residuals("rank_collapse_residual", x)?;
    Ok(r.iter().sum::<f64>() / r.len() as f64)
}

/// [`rank_collapse_residual`] of each sample of a batch `[batch, tokens, d]`
/// (a token matrix `[tokens, d]` gives one value).
///
/// ```
/// use tamer::diagnostics::rank_collapse_residual_per_sample;
/// use tamer::Tensor;
/// let x = Tensor::from_vec(vec![1.0f64, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0], [2, 2, 2]).unwrap();
/// assert_eq!(rank_collapse_residual_per_sample(&x).unwrap(), vec![1.0, 0.0]);
/// ```
pub fn rank_collapse_residual_per_sample(x: &Tensor) -> Result<Vec<f64>> {
    residuals("rank_collapse_residual_per_sample", x)
}

/// The residual at every depth of a model's hidden states, as a model's
/// `forward_with_hidden` returns them (`hidden[0]` the embedded input,
/// `hidden[l]` the output of block `l − 1`, each `[batch, tokens, d]`):
/// [`rank_collapse_residual`] of each, the mean over the batch. Works for
/// [`VisionTransformer`](crate::models::VisionTransformer),
/// [`TransformerEncoder`](crate::models::TransformerEncoder) and
/// [`Gpt`](crate::models::Gpt) alike; run the forward pass under
/// [`no_grad`] when only the diagnostic is wanted.
///
/// ```
/// use tamer::diagnostics::rank_collapse_by_depth;
/// use tamer::models::{Gpt, GptConfig};
/// use tamer::{no_grad, rng, Tensor};
/// let cfg = GptConfig { vocab_size: 11, block_size: 8, n_layer: 3, n_head: 2, n_embd: 16, ..GptConfig::gpt_tiny() };
/// let gpt = Gpt::new(cfg, &mut rng(0)).unwrap();
/// let idx = Tensor::from_vec((0..16).map(|i| i % 11).collect::<Vec<i64>>(), [2, 8]).unwrap();
/// let (_, hidden) = no_grad(|| gpt.forward_with_hidden(&idx)).unwrap();
/// let by_depth = rank_collapse_by_depth(&hidden).unwrap();
/// assert_eq!(by_depth.len(), 4); // the embeddings and three blocks
/// assert!(by_depth.iter().all(|r| *r > 0.0 && *r <= 2.0));
/// ```
pub fn rank_collapse_by_depth(hidden: &[Tensor]) -> Result<Vec<f64>> {
    hidden
        .iter()
        .enumerate()
        .map(|(depth, h)| {
            let r = residuals("rank_collapse_by_depth", h).map_err(|e| Error::new(e.op, e.kind, format!("hidden state {depth}: {}", e.message)))?;
            Ok(r.iter().sum::<f64>() / r.len() as f64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{rng, DType};

    fn matrix(v: &[f64], rows: usize, cols: usize) -> Tensor {
        Tensor::from_vec(v.to_vec(), [rows, cols]).unwrap()
    }

    #[test]
    fn rank_one_input_has_zero_residual() {
        // X = 1 xᵀ exactly, with values whose mean is exact in binary.
        let row = [0.25, -3.5, 8.0, 1.0];
        let x: Vec<f64> = (0..5).flat_map(|_| row).collect();
        assert_eq!(rank_collapse_residual(&matrix(&x, 5, 4)).unwrap(), 0.0);
        // A general row, repeated: zero to rounding.
        let mut r = rng(3);
        let row = Tensor::randn([1, 7], DType::F64, &mut r).unwrap();
        let x = row.broadcast_as([9, 7]).unwrap().contiguous().unwrap();
        assert!(rank_collapse_residual(&x).unwrap() < 1e-12);
    }

    #[test]
    fn hand_computed_values() {
        // Identity 2×2: mean [½, ½], residual [[½, −½], [−½, ½]]: both norms 1, ‖X‖ = 1.
        assert!((rank_collapse_residual(&matrix(&[1.0, 0.0, 0.0, 1.0], 2, 2)).unwrap() - 1.0).abs() < 1e-15);
        // [[1, 2], [3, 4]]: mean [2, 3], residual ±[1, 1]: column sums 2, row sums 2 → 2.
        // ‖X‖₁ = 6 (column 2), ‖X‖∞ = 7 (row 2): 2/√42.
        let r = rank_collapse_residual(&matrix(&[1.0, 2.0, 3.0, 4.0], 2, 2)).unwrap();
        assert!((r - 2.0 / 42f64.sqrt()).abs() < 1e-15);
        // Three tokens in one dimension, [0, 0, 3]: mean 1, residual [−1, −1, 2]:
        // ‖·‖₁ = 4, ‖·‖∞ = 2 → √8; ‖X‖₁ = 3, ‖X‖∞ = 3 → 3.
        let r = rank_collapse_residual(&matrix(&[0.0, 0.0, 3.0], 3, 1)).unwrap();
        assert!((r - 8f64.sqrt() / 3.0).abs() < 1e-15);
        assert_eq!(composite_norm(&[1.0, -2.0, 3.0, 4.0], 2, 2).unwrap(), 42f64.sqrt());
        assert!(composite_norm(&[1.0; 5], 2, 2).unwrap_err().to_string().contains("composite_norm"));
    }

    #[test]
    fn scale_invariant_and_batch_is_the_mean_of_samples() {
        let x = Tensor::randn([3, 6, 5], DType::F64, &mut rng(1)).unwrap();
        let per = rank_collapse_residual_per_sample(&x).unwrap();
        assert_eq!(per.len(), 3);
        for (b, r) in per.iter().enumerate() {
            let sample = x.narrow(0, b, 1).unwrap().squeeze(0).unwrap();
            assert_eq!(rank_collapse_residual(&sample).unwrap(), *r);
        }
        let mean = per.iter().sum::<f64>() / 3.0;
        assert!((rank_collapse_residual(&x).unwrap() - mean).abs() < 1e-15);
        for c in [1e-3, -2.0, 1e4] {
            let scaled = rank_collapse_residual(&x.scale(c).unwrap()).unwrap();
            assert!((scaled - rank_collapse_residual(&x).unwrap()).abs() < 1e-12, "scale {c}");
        }
        // f32 input reads the same way.
        let r32 = rank_collapse_residual(&x.to_dtype(DType::F32).unwrap()).unwrap();
        assert!((r32 - mean).abs() < 1e-5);
    }

    #[test]
    fn invalid_inputs_are_errors() {
        let err = |x: &Tensor| rank_collapse_residual(x).unwrap_err().to_string();
        for shape in [vec![4], vec![2, 3, 4, 5]] {
            let x = Tensor::zeros(shape, DType::F64).unwrap();
            let e = err(&x);
            assert!(e.contains("rank_collapse_residual") && e.contains("[tokens, d]"), "{e}");
        }
        assert!(err(&Tensor::zeros([0, 3], DType::F64).unwrap()).contains("non-empty"));
        assert!(err(&Tensor::zeros([2, 3], DType::F64).unwrap()).contains("nonzero"));
        assert!(err(&Tensor::from_vec(vec![1i64, 2], [1, 2]).unwrap()).contains("float"));
        assert!(err(&matrix(&[f64::NAN, 1.0], 1, 2)).contains("finite"));
        let e = rank_collapse_by_depth(&[matrix(&[1.0, 2.0], 1, 2), Tensor::zeros([1, 2], DType::F64).unwrap()]).unwrap_err();
        assert!(e.to_string().contains("hidden state 1"), "{e}");
    }
}
