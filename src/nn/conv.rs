//! 2-D convolution layer (patch embeddings, CNN stems).

use super::{check_dtype, check_given, init, Module, Param};
use crate::{Error, Result, Tensor};
use rand::Rng;

/// `torch.nn.Conv2d` with groups = 1 and dilation 1 on NCHW input:
/// `weight` `[out_channels, in_channels, kh, kw]`, `bias` `[out_channels]`.
///
/// ```
/// use tamer::nn::{Conv2d, Module};
/// use tamer::{rng, DType, Tensor};
/// // A ViT patch embedding: stride = kernel = patch size.
/// let proj = Conv2d::new(3, 16, (4, 4), (4, 4), (0, 0), true, &mut rng(0)).unwrap();
/// let y = proj.forward(&Tensor::ones([2, 3, 32, 32], DType::F32).unwrap()).unwrap();
/// assert_eq!(y.dims(), &[2, 16, 8, 8]);
/// assert_eq!(proj.num_params(), 16 * 3 * 4 * 4 + 16);
/// assert!(proj.forward(&Tensor::ones([2, 1, 32, 32], DType::F32).unwrap()).unwrap_err().to_string().contains("Conv2d"));
/// ```
#[derive(Debug)]
pub struct Conv2d {
    pub weight: Param,
    pub bias: Option<Param>,
    pub stride: (usize, usize),
    pub padding: (usize, usize),
}

impl Conv2d {
    /// An f32 layer with PyTorch's default init: weight and bias uniform on
    /// `±1/√fan_in`, `fan_in = in_channels·kh·kw`.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        bias: bool,
        rng: &mut impl Rng,
    ) -> Result<Conv2d> {
        if in_channels == 0 || out_channels == 0 || kernel.0 == 0 || kernel.1 == 0 || stride.0 == 0 || stride.1 == 0 {
            return Err(Error::shape(
                "Conv2d",
                format!("channels ({in_channels}, {out_channels}), kernel {kernel:?} and stride {stride:?} must all be positive"),
            ));
        }
        let weight = Param::new(init::fresh([out_channels, in_channels, kernel.0, kernel.1], 0.0)?);
        init::kaiming_uniform_(&weight, init::FanMode::FanIn, init::Nonlinearity::LeakyRelu(5f64.sqrt()), rng)?;
        let bias = if bias {
            let bound = 1.0 / ((in_channels * kernel.0 * kernel.1) as f64).sqrt();
            let b = Param::new(init::fresh([out_channels], 0.0)?);
            init::uniform_(&b, -bound, bound, rng)?;
            Some(b)
        } else {
            None
        };
        Ok(Conv2d { weight, bias, stride, padding })
    }

    /// A layer whose parameters are the given tensors: `weight` `[O, C, kh, kw]`,
    /// `bias` `[O]` (one float dtype and device). Variables are kept as they
    /// are (see [`Param::new`]), so their gradients are found under them.
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>, stride: (usize, usize), padding: (usize, usize)) -> Result<Conv2d> {
        check_given("Conv2d", &weight, bias.as_ref())?;
        if weight.rank() != 4 {
            return Err(Error::shape(
                "Conv2d",
                format!("weight must be [out, in, kh, kw], got shape {}", weight.shape()),
            ));
        }
        if let Some(b) = &bias {
            if b.dims() != [weight.dims()[0]] {
                return Err(Error::shape(
                    "Conv2d",
                    format!(
                        "bias has shape {}, expected [{}] for weight shape {}",
                        b.shape(),
                        weight.dims()[0],
                        weight.shape()
                    ),
                ));
            }
        }
        if stride.0 == 0 || stride.1 == 0 {
            return Err(Error::value("Conv2d", format!("stride {stride:?} must be positive")));
        }
        Ok(Conv2d {
            weight: Param::new(weight),
            bias: bias.map(Param::new),
            stride,
            padding,
        })
    }

    pub fn in_channels(&self) -> usize {
        self.weight.dims()[1]
    }
    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }
    pub fn kernel_size(&self) -> (usize, usize) {
        let d = self.weight.dims();
        (d[2], d[3])
    }

    /// `x: [N, C, H, W] -> [N, O, OH, OW]`, `OH = (H + 2·ph − kh)/sh + 1`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.weight.tensor();
        check_dtype("Conv2d", x, &w)?;
        let wd = w.dims();
        if x.rank() != 4 || x.dims()[1] != wd[1] {
            return Err(Error::shape(
                "Conv2d",
                format!("input shape {} must be [N, {}, H, W] (weight shape {})", x.shape(), wd[1], w.shape()),
            ));
        }
        let b = self.bias.as_ref().map(Param::tensor);
        x.conv2d(&w, b.as_ref(), self.stride, self.padding)
            .map_err(|e| Error::new("Conv2d", e.kind, e.message))
    }
}

impl Module for Conv2d {
    fn named_params(&self) -> Vec<(String, Param)> {
        let mut v = vec![("weight".to_string(), self.weight.clone())];
        if let Some(b) = &self.bias {
            v.push(("bias".to_string(), b.clone()));
        }
        v
    }
    fn set_training(&mut self, _training: bool) {}
}
