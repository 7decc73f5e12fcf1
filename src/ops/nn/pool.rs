//! 2-D max and average pooling over `[N, C, H, W]`, PyTorch semantics
//! (`max_pool2d`, `avg_pool2d`; no ceil mode, no dilation).
//!
//! Max pooling saves the flat index (`h·W + w` within the image plane) of each
//! window's maximum; backward routes the gradient there. Average pooling's
//! backward spreads each output gradient evenly over its window.

use super::conv::window_output_len;
use crate::autograd::BackwardOp;
use crate::backend::contract::nn::pool::PoolKernels;
use crate::profile::{self, Cost};
use crate::tensor::Tensor;
use crate::types::{DType, Layout};
use crate::{Error, Result};

pub use crate::backend::contract::nn::pool::Pool2dParams;

fn pool2d_params(op: &'static str, x: &Tensor, kernel: (usize, usize), stride: (usize, usize), padding: (usize, usize)) -> Result<Pool2dParams> {
    if x.rank() != 4 {
        return Err(Error::shape(op, format!("input must have rank 4 [N, C, H, W], got shape {}", x.shape())));
    }
    if 2 * padding.0 > kernel.0 || 2 * padding.1 > kernel.1 {
        return Err(Error::value(
            op,
            format!(
                "padding {padding:?} must be at most half the kernel size {kernel:?} (input {}): otherwise a window can hold only padding",
                x.shape()
            ),
        ));
    }
    let d = x.dims();
    if d[2] == 0 || d[3] == 0 {
        return Err(Error::shape(
            op,
            format!("input {} has an empty spatial dimension; expected H and W of at least 1", x.shape()),
        ));
    }
    let size_err = |e: Error| Error::new(op, e.kind.clone(), format!("{} (input {}, kernel {kernel:?})", e.message, x.shape()));
    let out_h = window_output_len(op, "height", d[2], kernel.0, stride.0, padding.0).map_err(size_err)?;
    let out_w = window_output_len(op, "width", d[3], kernel.1, stride.1, padding.1).map_err(size_err)?;
    Ok(Pool2dParams {
        batch: d[0],
        channels: d[1],
        in_h: d[2],
        in_w: d[3],
        kernel,
        stride,
        padding,
        out_h,
        out_w,
    })
}

/// One comparison (max) or addition (average) per window element per output element;
/// the input read and the output written (and max pooling's i64 indices).
fn pool_cost(p: &Pool2dParams, dtype: DType, indices: bool) -> Cost {
    let (input, output): (usize, usize) = (p.input_dims().iter().product(), p.output_dims().iter().product());
    let cost = Cost::flops_product(&[output, p.kernel.0, p.kernel.1]).moving(dtype, input + output);
    if indices {
        cost.moving(DType::I64, output)
    } else {
        cost
    }
}

impl Tensor {
    /// 2-D max pooling of `[N, C, H, W]` (as `torch.nn.functional.max_pool2d`
    /// without ceil mode or dilation). Padding counts as −∞ and may be at most
    /// half the kernel. The gradient goes to the first maximum of each window.
    ///
    /// ```
    /// use tamer::Tensor;
    /// let x = Tensor::from_vec((0..16).map(|v| v as f32).collect(), [1, 1, 4, 4]).unwrap();
    /// let y = x.max_pool2d((2, 2), (2, 2), (0, 0)).unwrap();
    /// assert_eq!(y.dims(), &[1, 1, 2, 2]);
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![5.0, 7.0, 13.0, 15.0]);
    /// ```
    pub fn max_pool2d(&self, kernel: (usize, usize), stride: (usize, usize), padding: (usize, usize)) -> Result<Tensor> {
        Ok(self.max_pool2d_with_indices(kernel, stride, padding)?.0)
    }

    /// [`Tensor::max_pool2d`] that also returns, as an i64 tensor of the output's
    /// shape, the flat index `h·W + w` of each maximum within its image plane
    /// (PyTorch's `return_indices=True`).
    ///
    /// ```
    /// use tamer::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 3.0, 2.0, 3.0], [1, 1, 2, 2]).unwrap();
    /// let (y, idx) = x.max_pool2d_with_indices((2, 2), (2, 2), (0, 0)).unwrap();
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![3.0]);
    /// assert_eq!(idx.to_vec::<i64>().unwrap(), vec![1]); // the first of the tied maxima
    /// ```
    pub fn max_pool2d_with_indices(&self, kernel: (usize, usize), stride: (usize, usize), padding: (usize, usize)) -> Result<(Tensor, Tensor)> {
        let p = pool2d_params("max_pool2d", self, kernel, stride, padding)?;
        let _op = profile::op("max_pool2d", || pool_cost(&p, self.dtype(), true))?;
        let (values, indices) = crate::dispatch!("max_pool2d", [s = &*self.storage()], |wrap| {
            let (v, i) = s.max_pool2d(self.layout(), &p)?;
            (wrap(v), wrap(i))
        });
        let layout = Layout::contiguous(p.output_dims().to_vec());
        let indices = Tensor::from_storage(indices, layout.clone());
        let backward = MaxPoolBackward {
            params: p,
            indices: indices.clone(),
        };
        Ok((Tensor::from_op(values, layout, vec![self.clone()], backward), indices))
    }

    /// 2-D average pooling of `[N, C, H, W]` (as `torch.nn.functional.avg_pool2d`
    /// without ceil mode). Padding adds zeros and may be at most half the kernel.
    /// `count_include_pad = true` (PyTorch's default) divides every window by
    /// kh·kw; `false` divides by the number of elements inside the input.
    ///
    /// ```
    /// use tamer::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [1, 1, 2, 2]).unwrap();
    /// let y = x.avg_pool2d((2, 2), (2, 2), (0, 0), true).unwrap();
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![2.5]);
    /// // With padding 1, the corner window holds one element and three zeros.
    /// let y = x.avg_pool2d((2, 2), (1, 1), (1, 1), true).unwrap();
    /// assert_eq!(y.to_vec::<f32>().unwrap()[0], 0.25);
    /// let y = x.avg_pool2d((2, 2), (1, 1), (1, 1), false).unwrap();
    /// assert_eq!(y.to_vec::<f32>().unwrap()[0], 1.0);
    /// ```
    pub fn avg_pool2d(&self, kernel: (usize, usize), stride: (usize, usize), padding: (usize, usize), count_include_pad: bool) -> Result<Tensor> {
        let p = pool2d_params("avg_pool2d", self, kernel, stride, padding)?;
        let _op = profile::op("avg_pool2d", || pool_cost(&p, self.dtype(), false))?;
        let storage = crate::dispatch!("avg_pool2d", [s = &*self.storage()] => s.avg_pool2d(self.layout(), &p, count_include_pad)?);
        let backward = AvgPoolBackward { params: p, count_include_pad };
        Ok(Tensor::from_op(
            storage,
            Layout::contiguous(p.output_dims().to_vec()),
            vec![self.clone()],
            backward,
        ))
    }
}

struct MaxPoolBackward {
    params: Pool2dParams,
    /// i64 `[N, C, OH, OW]`
    indices: Tensor,
}

impl BackwardOp for MaxPoolBackward {
    fn name(&self) -> &'static str {
        "max_pool2d"
    }
    fn backward(&self, _inputs: &[Tensor], _output: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let _op = profile::op("max_pool2d", || pool_cost(&self.params, grad.dtype(), true))?;
        let dx = crate::dispatch!("max_pool2d", [g = &*grad.storage(), i = &*self.indices.storage()] => g.max_pool2d_backward(grad.layout(), i, self.indices.layout(), &self.params)?);
        Ok(vec![Some(Tensor::from_storage(dx, Layout::contiguous(self.params.input_dims().to_vec())))])
    }
}

struct AvgPoolBackward {
    params: Pool2dParams,
    count_include_pad: bool,
}

impl BackwardOp for AvgPoolBackward {
    fn name(&self) -> &'static str {
        "avg_pool2d"
    }
    fn backward(&self, _inputs: &[Tensor], _output: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let _op = profile::op("avg_pool2d", || pool_cost(&self.params, grad.dtype(), false))?;
        let dx = crate::dispatch!("avg_pool2d", [g = &*grad.storage()] => g.avg_pool2d_backward(grad.layout(), &self.params, self.count_include_pad)?);
        Ok(vec![Some(Tensor::from_storage(dx, Layout::contiguous(self.params.input_dims().to_vec())))])
    }
}
