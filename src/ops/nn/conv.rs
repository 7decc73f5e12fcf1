//! 2-D convolution (cross-correlation, as PyTorch's `conv2d`), NCHW, groups = 1,
//! dilation 1.
//!
//! Forward: each image is unfolded into columns (im2col) and multiplied by the
//! weight matrix, one GEMM per image. Backward has its own kernels:
//! `dW = Σₙ dYₙ · colsₙᵀ`, `dX = col2im(Wᵀ · dYₙ)`, `db = Σ dY`.

use crate::autograd::BackwardOp;
use crate::backend::contract::nn::conv::ConvKernels;
use crate::profile::{self, Cost};
use crate::tensor::Tensor;
use crate::types::Layout;
use crate::{Error, Result};

pub use crate::backend::contract::nn::conv::Conv2dParams;

/// Output length of a sliding window over `input` elements padded by `pad` on
/// both sides: `(input + 2·pad − kernel)/stride + 1`. Errors (naming `what`,
/// e.g. "height") when the window does not fit or the stride is zero.
pub(crate) fn window_output_len(op: &'static str, what: &str, input: usize, kernel: usize, stride: usize, pad: usize) -> Result<usize> {
    if stride == 0 {
        return Err(Error::value(op, format!("stride along the {what} is 0; expected a stride of at least 1")));
    }
    if kernel == 0 {
        return Err(Error::value(op, format!("kernel {what} is 0; expected a kernel of at least 1")));
    }
    let padded = input + 2 * pad;
    if kernel > padded {
        return Err(Error::shape(
            op,
            format!("kernel {what} {kernel} is larger than the padded input {what} {padded} ({input} + 2·{pad})"),
        ));
    }
    Ok((padded - kernel) / stride + 1)
}

fn shape_list(t: &Tensor) -> String {
    t.shape().to_string()
}

/// Check the operands of `conv2d` and work out the output size.
fn conv2d_params(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, stride: (usize, usize), padding: (usize, usize)) -> Result<Conv2dParams> {
    const OP: &str = "conv2d";
    if x.rank() != 4 {
        return Err(Error::shape(OP, format!("input must have rank 4 [N, C, H, W], got shape {}", shape_list(x))));
    }
    if w.rank() != 4 {
        return Err(Error::shape(
            OP,
            format!("weight must have rank 4 [O, C, kh, kw], got shape {} (input {})", shape_list(w), shape_list(x)),
        ));
    }
    x.same_dtype_device(OP, w)?;
    let (xd, wd) = (x.dims(), w.dims());
    if wd[1] != xd[1] {
        return Err(Error::shape(
            OP,
            format!(
                "weight {} expects {} input channels but input {} has {} (expected weight [O, {}, kh, kw])",
                shape_list(w),
                wd[1],
                shape_list(x),
                xd[1],
                xd[1]
            ),
        ));
    }
    if let Some(b) = bias {
        x.same_dtype_device(OP, b)?;
        if b.dims() != [wd[0]] {
            return Err(Error::shape(
                OP,
                format!(
                    "bias has shape {} but weight {} has {} output channels (expected [{}])",
                    shape_list(b),
                    shape_list(w),
                    wd[0],
                    wd[0]
                ),
            ));
        }
    }
    let size_err = |e: Error| Error::new(OP, e.kind.clone(), format!("{} (input {}, weight {})", e.message, shape_list(x), shape_list(w)));
    let out_h = window_output_len(OP, "height", xd[2], wd[2], stride.0, padding.0).map_err(size_err)?;
    let out_w = window_output_len(OP, "width", xd[3], wd[3], stride.1, padding.1).map_err(size_err)?;
    Ok(Conv2dParams {
        batch: xd[0],
        in_channels: xd[1],
        in_h: xd[2],
        in_w: xd[3],
        out_channels: wd[0],
        kernel: (wd[2], wd[3]),
        stride,
        padding,
        out_h,
        out_w,
    })
}

/// One multiply-add per weight per output element: `2·N·C_out·H_out·W_out·C_in·kh·kw`,
/// for the forward and for each of the input and weight gradients.
fn conv_flops(p: &Conv2dParams) -> Cost {
    Cost::flops_product(&[2, p.batch, p.out_channels, p.out_h, p.out_w, p.in_channels, p.kernel.0, p.kernel.1])
}

fn elements(dims: [usize; 4]) -> usize {
    dims.iter().product()
}

impl Tensor {
    /// 2-D convolution (cross-correlation, as `torch.nn.functional.conv2d` with
    /// groups = 1 and dilation 1): `self` is `[N, C, H, W]`, `weight` is
    /// `[O, C, kh, kw]`, `bias` is `[O]`; the result is `[N, O, OH, OW]` with
    /// `OH = (H + 2·ph − kh)/sh + 1` (and likewise OW). Padding adds zeros.
    ///
    /// ```
    /// use tamer::Tensor;
    /// // One 3×3 image, a 2×2 kernel that sums its window, plus a bias of 0.5.
    /// let x = Tensor::from_vec((1..=9).map(|v| v as f32).collect(), [1, 1, 3, 3]).unwrap();
    /// let w = Tensor::ones([1, 1, 2, 2], tamer::DType::F32).unwrap();
    /// let b = Tensor::from_vec(vec![0.5f32], [1]).unwrap();
    /// let y = x.conv2d(&w, Some(&b), (1, 1), (0, 0)).unwrap();
    /// assert_eq!(y.dims(), &[1, 1, 2, 2]);
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![12.5, 16.5, 24.5, 28.5]);
    /// // Padding 1 and stride 2 on the same image: windows at rows/cols -1 and 1.
    /// let y = x.conv2d(&w, None, (2, 2), (1, 1)).unwrap();
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![1.0, 5.0, 11.0, 28.0]);
    /// ```
    pub fn conv2d(&self, weight: &Tensor, bias: Option<&Tensor>, stride: (usize, usize), padding: (usize, usize)) -> Result<Tensor> {
        let p = conv2d_params(self, weight, bias, stride, padding)?;
        let moved = elements(p.input_dims()) + elements(p.weight_dims()) + bias.map_or(0, Tensor::numel) + elements(p.output_dims());
        let _op = profile::op("conv2d", || conv_flops(&p).moving(self.dtype(), moved))?;
        let bias_guard = bias.map(|b| b.storage());
        let storage = crate::dispatch!("conv2d", [xs = &*self.storage(), ws = &*weight.storage()] => {
            let b = crate::backend::optional_operand("conv2d", bias_guard.as_deref().zip(bias.map(Tensor::layout)))?;
            xs.conv2d(self.layout(), ws, weight.layout(), b, &p)?
        });
        let mut inputs = vec![self.clone(), weight.clone()];
        inputs.extend(bias.cloned());
        Ok(Tensor::from_op(
            storage,
            Layout::contiguous(p.output_dims().to_vec()),
            inputs,
            ConvBackward { params: p },
        ))
    }
}

struct ConvBackward {
    params: Conv2dParams,
}

impl BackwardOp for ConvBackward {
    fn name(&self) -> &'static str {
        "conv2d"
    }
    fn backward(&self, inputs: &[Tensor], _output: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let p = &self.params;
        let (x, w) = (&inputs[0], &inputs[1]);
        let gs = grad.storage();
        let (input, weight, output) = (elements(p.input_dims()), elements(p.weight_dims()), elements(p.output_dims()));
        let dx = if x.requires_grad() {
            let _op = profile::op("conv2d", || conv_flops(p).moving(x.dtype(), output + weight + input))?;
            let dx = crate::dispatch!("conv2d", [g = &*gs, ws = &*w.storage()] => g.conv2d_backward_input(grad.layout(), ws, w.layout(), p)?);
            Some(Tensor::from_storage(dx, Layout::contiguous(p.input_dims().to_vec())))
        } else {
            None
        };
        let dw = if w.requires_grad() {
            let _op = profile::op("conv2d", || conv_flops(p).moving(x.dtype(), output + input + weight))?;
            let dw = crate::dispatch!("conv2d", [g = &*gs, xs = &*x.storage()] => g.conv2d_backward_weight(grad.layout(), xs, x.layout(), p)?);
            Some(Tensor::from_storage(dw, Layout::contiguous(p.weight_dims().to_vec())))
        } else {
            None
        };
        let mut grads = vec![dx, dw];
        if let Some(b) = inputs.get(2) {
            grads.push(if b.requires_grad() {
                let _op = profile::op("conv2d", || Cost::flops(output).moving(x.dtype(), output + p.out_channels))?;
                let db = crate::dispatch!("conv2d", [g = &*gs] => g.conv2d_backward_bias(grad.layout(), p)?);
                Some(Tensor::from_storage(db, Layout::contiguous(vec![p.out_channels])))
            } else {
                None
            });
        }
        Ok(grads)
    }
}
