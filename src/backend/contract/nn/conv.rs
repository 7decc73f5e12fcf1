//! The convolution family's contract: [`Conv2dParams`], [`ConvKernels`] and
//! the operand check both backends make before reading.

use crate::backend::contract::{check_dtype, COMPUTE_FLOATS};
use crate::types::{DType, Layout};
use crate::{Error, Result};

/// Sizes of one 2-D convolution, checked and with the output size worked out.
/// Kernels get this instead of re-deriving it from the layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dParams {
    /// N
    pub batch: usize,
    /// C
    pub in_channels: usize,
    /// H, W
    pub in_h: usize,
    pub in_w: usize,
    /// O
    pub out_channels: usize,
    /// kh, kw
    pub kernel: (usize, usize),
    /// (sh, sw), both ≥ 1
    pub stride: (usize, usize),
    /// (ph, pw): zeros added on each side
    pub padding: (usize, usize),
    /// OH = (H + 2ph − kh)/sh + 1, OW likewise
    pub out_h: usize,
    pub out_w: usize,
}

impl Conv2dParams {
    /// Rows of one image's column matrix: C·kh·kw (the GEMM's inner dimension).
    pub fn col_rows(&self) -> usize {
        self.in_channels * self.kernel.0 * self.kernel.1
    }
    /// Output positions per image and channel: OH·OW (the GEMM's n).
    pub fn out_plane(&self) -> usize {
        self.out_h * self.out_w
    }
    pub fn input_dims(&self) -> [usize; 4] {
        [self.batch, self.in_channels, self.in_h, self.in_w]
    }
    pub fn weight_dims(&self) -> [usize; 4] {
        [self.out_channels, self.in_channels, self.kernel.0, self.kernel.1]
    }
    pub fn output_dims(&self) -> [usize; 4] {
        [self.batch, self.out_channels, self.out_h, self.out_w]
    }
}

/// The kernels a backend provides for 2-D convolution. Every result is a new,
/// contiguous storage; operand layouts may have any strides.
pub trait ConvKernels: Sized {
    /// `y = conv2d(x, w) + b`: `self` is x `[N, C, H, W]`, `w` is `[O, C, kh, kw]`,
    /// `bias` `[O]`; the result is `[N, O, OH, OW]`.
    fn conv2d(&self, x_layout: &Layout, w: &Self, w_layout: &Layout, bias: Option<(&Self, &Layout)>, p: &Conv2dParams) -> Result<Self>;
    /// `dx` `[N, C, H, W]` from `self` = dy `[N, O, OH, OW]` and the weight.
    fn conv2d_backward_input(&self, dy_layout: &Layout, w: &Self, w_layout: &Layout, p: &Conv2dParams) -> Result<Self>;
    /// `dw` `[O, C, kh, kw]` from `self` = dy `[N, O, OH, OW]` and the input.
    fn conv2d_backward_weight(&self, dy_layout: &Layout, x: &Self, x_layout: &Layout, p: &Conv2dParams) -> Result<Self>;
    /// `db` `[O]`: dy summed over batch and positions.
    fn conv2d_backward_bias(&self, dy_layout: &Layout, p: &Conv2dParams) -> Result<Self>;
}

/// Every operand of a conv2d kernel: `(what, dtype, layout, expected dims)`.
/// The first must be f32 or f64; each must have the dims the parameters give
/// it and the first operand's dtype.
fn check_operands(op: &'static str, operands: &[(&str, DType, &Layout, &[usize])]) -> Result<()> {
    let Some(&(_, dtype, _, _)) = operands.first() else { return Ok(()) };
    check_dtype(op, dtype, COMPUTE_FLOATS)?;
    for &(what, d, layout, dims) in operands {
        if layout.dims() != dims {
            return Err(Error::shape(
                op,
                format!("{what} has shape {}, expected {dims:?} from the convolution's parameters", layout.shape()),
            ));
        }
        if d != dtype {
            return Err(Error::dtype(op, format!("{what} has dtype {d}, expected {dtype}")));
        }
    }
    Ok(())
}

/// [`ConvKernels::conv2d`]: x, w and bias shaped as `p` says, of one dtype.
pub fn check_conv2d(p: &Conv2dParams, x: (DType, &Layout), w: (DType, &Layout), bias: Option<(DType, &Layout)>) -> Result<()> {
    let (xd, wd, bd) = (p.input_dims(), p.weight_dims(), [p.out_channels]);
    let mut operands = vec![("input", x.0, x.1, &xd[..]), ("weight", w.0, w.1, &wd[..])];
    if let Some((dtype, layout)) = bias {
        operands.push(("bias", dtype, layout, &bd[..]));
    }
    check_operands("conv2d", &operands)
}

/// [`ConvKernels::conv2d_backward_input`]: dy and the weight.
pub fn check_conv2d_backward_input(p: &Conv2dParams, dy: (DType, &Layout), w: (DType, &Layout)) -> Result<()> {
    let (yd, wd) = (p.output_dims(), p.weight_dims());
    check_operands("conv2d_backward", &[("gradient", dy.0, dy.1, &yd[..]), ("weight", w.0, w.1, &wd[..])])
}

/// [`ConvKernels::conv2d_backward_weight`]: dy and the input.
pub fn check_conv2d_backward_weight(p: &Conv2dParams, dy: (DType, &Layout), x: (DType, &Layout)) -> Result<()> {
    let (yd, xd) = (p.output_dims(), p.input_dims());
    check_operands("conv2d_backward", &[("gradient", dy.0, dy.1, &yd[..]), ("input", x.0, x.1, &xd[..])])
}

/// [`ConvKernels::conv2d_backward_bias`]: dy.
pub fn check_conv2d_backward_bias(p: &Conv2dParams, dy: (DType, &Layout)) -> Result<()> {
    let yd = p.output_dims();
    check_operands("conv2d_backward", &[("gradient", dy.0, dy.1, &yd[..])])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn params() -> Conv2dParams {
        Conv2dParams {
            batch: 2,
            in_channels: 3,
            in_h: 5,
            in_w: 5,
            out_channels: 4,
            kernel: (3, 3),
            stride: (1, 1),
            padding: (0, 0),
            out_h: 3,
            out_w: 3,
        }
    }

    #[test]
    fn every_kernel_checks_dtype_then_shapes() {
        let p = params();
        let (x, w, b, y) = (
            Layout::contiguous(p.input_dims()),
            Layout::contiguous(p.weight_dims()),
            Layout::contiguous([4]),
            Layout::contiguous(p.output_dims()),
        );
        let f = DType::F32;
        assert!(check_conv2d(&p, (f, &x), (f, &w), Some((f, &b))).is_ok());
        assert!(check_conv2d_backward_input(&p, (f, &y), (f, &w)).is_ok());
        assert!(check_conv2d_backward_weight(&p, (f, &y), (f, &x)).is_ok());
        assert!(check_conv2d_backward_bias(&p, (f, &y)).is_ok());
        // An unsupported dtype is the first error, even with a wrong shape.
        let e = check_conv2d(&p, (DType::F16, &w), (DType::F16, &w), None).unwrap_err();
        assert!(e.to_string().contains("conv2d") && e.message.starts_with("dtype f16 is not supported"), "{e}");
        assert_eq!(check_conv2d_backward_bias(&p, (DType::I64, &y)).unwrap_err().kind, ErrorKind::DType);
        let e = check_conv2d(&p, (f, &x), (f, &w), Some((f, &Layout::contiguous([3])))).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Shape);
        assert!(e.message.contains("bias has shape [3], expected [4]"), "{e}");
        let e = check_conv2d_backward_input(&p, (f, &y), (DType::F64, &w)).unwrap_err();
        assert!(e.message.contains("weight has dtype f64, expected f32"), "{e}");
        let e = check_conv2d_backward_weight(&p, (f, &x), (f, &x)).unwrap_err();
        assert!(e.message.contains("gradient has shape [2, 3, 5, 5], expected [2, 4, 3, 3]"), "{e}");
    }
}
