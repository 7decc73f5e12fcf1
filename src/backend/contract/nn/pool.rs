//! The pooling family's contract: [`Pool2dParams`], [`PoolKernels`] and the
//! operand checks both backends make before reading.

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
pub fn check_pool2d_operand(op: &'static str, what: &str, layout: &Layout, dims: [usize; 4]) -> Result<()> {
    if layout.dims() != dims {
        return Err(Error::shape(
            op,
            format!("{what} has shape {}, expected {dims:?} from the pooling parameters", layout.shape()),
        ));
    }
    Ok(())
}

/// [`PoolKernels::max_pool2d_backward`]: the gradient and the saved (i64)
/// indices shaped like the output.
pub fn check_max_pool2d_backward(p: &Pool2dParams, dy_layout: &Layout, indices: (DType, &Layout)) -> Result<()> {
    const OP: &str = "max_pool2d_backward";
    if indices.0 != DType::I64 {
        return Err(Error::dtype(OP, format!("saved indices have dtype {}, expected i64", indices.0)));
    }
    check_pool2d_operand(OP, "gradient", dy_layout, p.output_dims())?;
    check_pool2d_operand(OP, "saved indices", indices.1, p.output_dims())
}
