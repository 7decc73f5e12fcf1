//! Layer normalisation over the last axis.

use super::{check_dtype, check_given, init, Module, Param};
use crate::{Error, Result, Tensor};

/// `torch.nn.LayerNorm(dim, eps, bias=...)`: normalise the last axis to zero
/// mean and unit (biased) variance, then scale by `weight` and shift by `bias`.
/// Weight starts at ones, bias at zeros.
///
/// ```
/// use tamer::nn::LayerNorm;
/// use tamer::Tensor;
/// let ln = LayerNorm::new(3, 1e-5, true).unwrap();
/// let y = ln.forward(&Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [1, 3]).unwrap()).unwrap();
/// let v = y.to_vec::<f32>().unwrap();
/// assert!(v[1].abs() < 1e-6 && (v[0] + v[2]).abs() < 1e-6);
/// assert!(ln.forward(&Tensor::ones([2, 4], tamer::DType::F32).unwrap()).is_err());
/// ```
#[derive(Debug)]
pub struct LayerNorm {
    pub weight: Param,
    pub bias: Option<Param>,
    pub eps: f64,
}

impl LayerNorm {
    /// An f32 layer over a last axis of size `dim` (PyTorch's eps is 1e-5; timm's ViT uses 1e-6).
    pub fn new(dim: usize, eps: f64, bias: bool) -> Result<LayerNorm> {
        if dim == 0 {
            return Err(Error::shape("LayerNorm", "dim must be positive"));
        }
        Ok(LayerNorm {
            weight: Param::new(init::fresh([dim], 1.0)?),
            bias: if bias { Some(Param::new(init::fresh([dim], 0.0)?)) } else { None },
            eps,
        })
    }
    /// A layer whose parameters are the given tensors (`weight` and `bias` of
    /// shape `[dim]`, one float dtype and device). Variables are kept as they
    /// are (see [`Param::new`]), so their gradients are found under them.
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>, eps: f64) -> Result<LayerNorm> {
        check_given("LayerNorm", &weight, bias.as_ref())?;
        if weight.rank() != 1 || bias.as_ref().is_some_and(|b| b.shape() != weight.shape()) {
            return Err(Error::shape(
                "LayerNorm",
                format!(
                    "weight must be 1-D and bias the same shape; got weight {} and bias {:?}",
                    weight.shape(),
                    bias.as_ref().map(|b| b.dims().to_vec())
                ),
            ));
        }
        Ok(LayerNorm {
            weight: Param::new(weight),
            bias: bias.map(Param::new),
            eps,
        })
    }
    pub fn dim(&self) -> usize {
        self.weight.dims()[0]
    }
    /// `x: [.., dim] -> [.., dim]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.weight.tensor();
        check_dtype("LayerNorm", x, &w)?;
        let dim = w.dims()[0];
        if x.rank() == 0 || x.dims()[x.rank() - 1] != dim {
            return Err(Error::shape(
                "LayerNorm",
                format!("input shape {} must end in the normalised dim {dim}", x.shape()),
            ));
        }
        let b = self.bias.as_ref().map(Param::tensor);
        x.layer_norm(Some(&w), b.as_ref(), self.eps)
            .map_err(|e| Error::new("LayerNorm", e.kind, e.message))
    }
}

impl Module for LayerNorm {
    fn named_params(&self) -> Vec<(String, Param)> {
        let mut v = vec![("weight".to_string(), self.weight.clone())];
        if let Some(b) = &self.bias {
            v.push(("bias".to_string(), b.clone()));
        }
        v
    }
    fn set_training(&mut self, _training: bool) {}
}
