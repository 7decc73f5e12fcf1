//! The pooling family's contract: [`Pool2dParams`], [`PoolKernels`] and the
//! operand checks both backends make before reading.

use crate::backend::contract::{check_dtype, COMPUTE_FLOATS};
use crate::types::{DType, Layout};
use crate::{Error, Result};

/// Sizes of one 2-D pooling, checked, with the output size worked out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dParams {
    pub batch: usize,
    pub channels: usize,
    pub in_h: usize,
    pub in_w: usize,
    /// (kh, kw)
    pub kernel: (usize, usize),
    /// (sh, sw), both ≥ 1
    pub stride: (usize, usize),
    /// (ph, pw), each at most half the kernel size (as PyTorch requires)
    pub padding: (usize, usize),
    /// OH = (H + 2ph − kh)/sh + 1, OW likewise
    pub out_h: usize,
    pub out_w: usize,
}

impl Pool2dParams {
    /// Image planes (N·C): pooling treats each independently.
    pub fn planes(&self) -> usize {
        self.batch * self.channels
    }
    pub fn input_dims(&self) -> [usize; 4] {
        [self.batch, self.channels, self.in_h, self.in_w]
    }
    pub fn output_dims(&self) -> [usize; 4] {
        [self.batch, self.channels, self.out_h, self.out_w]
    }
}

/// The kernels a backend provides for pooling. Results are new contiguous storages.
pub trait PoolKernels: Sized {
    /// Window maxima of x `[N, C, H, W]` (padding counts as −∞) and, as i64, the
    /// flat in-plane index `h·W + w` of each (the first one at ties; NaN wins).
    fn max_pool2d(&self, layout: &Layout, p: &Pool2dParams) -> Result<(Self, Self)>;
    /// dx `[N, C, H, W]`: each `dy` element `[N, C, OH, OW]` added at its saved index.
    fn max_pool2d_backward(&self, dy_layout: &Layout, indices: &Self, indices_layout: &Layout, p: &Pool2dParams) -> Result<Self>;
    /// Window means; the divisor is kh·kw when `count_include_pad`, else the
    /// number of in-bounds elements.
    fn avg_pool2d(&self, layout: &Layout, p: &Pool2dParams, count_include_pad: bool) -> Result<Self>;
    /// dx: each `dy` element divided by its window's divisor, added over the window.
    fn avg_pool2d_backward(&self, dy_layout: &Layout, p: &Pool2dParams, count_include_pad: bool) -> Result<Self>;
}

/// A pooling operand must have the dims the parameters give it.
fn check_operand(op: &'static str, what: &str, layout: &Layout, dims: [usize; 4]) -> Result<()> {
    if layout.dims() != dims {
        return Err(Error::shape(
            op,
            format!("{what} has shape {}, expected {dims:?} from the pooling parameters", layout.shape()),
        ));
    }
    Ok(())
}

/// [`PoolKernels::max_pool2d`]: an f32 or f64 input shaped as `p` says.
pub fn check_max_pool2d(p: &Pool2dParams, x: (DType, &Layout)) -> Result<()> {
    const OP: &str = "max_pool2d";
    check_dtype(OP, x.0, COMPUTE_FLOATS)?;
    check_operand(OP, "input", x.1, p.input_dims())
}

/// [`PoolKernels::max_pool2d_backward`]: an f32 or f64 gradient and the saved
/// (i64) indices, both shaped like the output.
pub fn check_max_pool2d_backward(p: &Pool2dParams, dy: (DType, &Layout), indices: (DType, &Layout)) -> Result<()> {
    const OP: &str = "max_pool2d_backward";
    check_dtype(OP, dy.0, COMPUTE_FLOATS)?;
    if indices.0 != DType::I64 {
        return Err(Error::dtype(OP, format!("saved indices have dtype {}, expected i64", indices.0)));
    }
    check_operand(OP, "gradient", dy.1, p.output_dims())?;
    check_operand(OP, "saved indices", indices.1, p.output_dims())
}

/// [`PoolKernels::avg_pool2d`]: an f32 or f64 input shaped as `p` says.
pub fn check_avg_pool2d(p: &Pool2dParams, x: (DType, &Layout)) -> Result<()> {
    const OP: &str = "avg_pool2d";
    check_dtype(OP, x.0, COMPUTE_FLOATS)?;
    check_operand(OP, "input", x.1, p.input_dims())
}

/// [`PoolKernels::avg_pool2d_backward`]: an f32 or f64 gradient shaped like the output.
pub fn check_avg_pool2d_backward(p: &Pool2dParams, dy: (DType, &Layout)) -> Result<()> {
    const OP: &str = "avg_pool2d_backward";
    check_dtype(OP, dy.0, COMPUTE_FLOATS)?;
    check_operand(OP, "gradient", dy.1, p.output_dims())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn every_kernel_checks_dtype_then_shapes() {
        let p = Pool2dParams {
            batch: 1,
            channels: 2,
            in_h: 4,
            in_w: 4,
            kernel: (2, 2),
            stride: (2, 2),
            padding: (0, 0),
            out_h: 2,
            out_w: 2,
        };
        let (x, y) = (Layout::contiguous(p.input_dims()), Layout::contiguous(p.output_dims()));
        let f = DType::F32;
        assert!(check_max_pool2d(&p, (f, &x)).is_ok());
        assert!(check_avg_pool2d(&p, (f, &x)).is_ok());
        assert!(check_max_pool2d_backward(&p, (f, &y), (DType::I64, &y)).is_ok());
        assert!(check_avg_pool2d_backward(&p, (f, &y)).is_ok());
        for e in [
            check_max_pool2d(&p, (DType::BF16, &y)).unwrap_err(),
            check_avg_pool2d(&p, (DType::BF16, &y)).unwrap_err(),
            check_max_pool2d_backward(&p, (DType::BF16, &x), (f, &x)).unwrap_err(),
            check_avg_pool2d_backward(&p, (DType::BF16, &x)).unwrap_err(),
        ] {
            assert!(e.message.starts_with("dtype bf16 is not supported"), "{e}");
        }
        let e = check_max_pool2d(&p, (f, &y)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Shape);
        assert!(e.message.contains("input has shape [1, 2, 2, 2], expected [1, 2, 4, 4]"), "{e}");
        let e = check_max_pool2d_backward(&p, (f, &y), (f, &y)).unwrap_err();
        assert!(e.message.contains("saved indices have dtype f32, expected i64"), "{e}");
        let e = check_max_pool2d_backward(&p, (f, &y), (DType::I64, &x)).unwrap_err();
        assert!(e.message.contains("saved indices has shape"), "{e}");
        assert_eq!(check_avg_pool2d_backward(&p, (f, &x)).unwrap_err().kind, ErrorKind::Shape);
    }
}
