//! Fully connected layer with PyTorch's parameter layout.

use super::functional::linear_named;
use super::{check_given, init, Module, Param};
use crate::{Error, Result, Tensor};
use rand::Rng;

/// `y = x · Wᵀ + b` on the last axis (`torch.nn.Linear`).
///
/// `weight` is `[out_features, in_features]` and `bias` `[out_features]`, the
/// layout of PyTorch state dicts, so checkpoints load without transposing.
///
/// ```
/// use tamer::nn::{Linear, Module};
/// use tamer::{rng, DType, Tensor};
/// let lin = Linear::new(4, 3, true, &mut rng(0)).unwrap();
/// let y = lin.forward(&Tensor::ones([2, 5, 4], DType::F32).unwrap()).unwrap();
/// assert_eq!(y.dims(), &[2, 5, 3]);
/// assert_eq!(lin.num_params(), 4 * 3 + 3);
/// assert!(lin.forward(&Tensor::ones([2, 5], DType::F32).unwrap()).unwrap_err().to_string().contains("Linear"));
/// ```
#[derive(Debug)]
pub struct Linear {
    pub weight: Param,
    pub bias: Option<Param>,
}

impl Linear {
    /// An f32 layer with PyTorch's default initialisation: weight and bias
    /// uniform on `±1/√in_features` (kaiming-uniform with `a = √5`).
    pub fn new(in_features: usize, out_features: usize, bias: bool, rng: &mut impl Rng) -> Result<Linear> {
        if in_features == 0 || out_features == 0 {
            return Err(Error::shape(
                "Linear",
                format!("in_features {in_features} and out_features {out_features} must both be positive"),
            ));
        }
        let weight = Param::new(init::fresh([out_features, in_features], 0.0)?);
        init::kaiming_uniform_(&weight, init::FanMode::FanIn, init::Nonlinearity::LeakyRelu(5f64.sqrt()), rng)?;
        let bias = if bias {
            let bound = 1.0 / (in_features as f64).sqrt();
            let b = Param::new(init::fresh([out_features], 0.0)?);
            init::uniform_(&b, -bound, bound, rng)?;
            Some(b)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    /// A layer whose parameters are the given tensors (any float dtype, one
    /// dtype and device for both): `weight` `[out, in]`, `bias` `[out]`.
    ///
    /// Variables are kept as they are (see [`Param::new`]): after a backward
    /// pass through the layer, `grads.get(&weight)` is the weight's gradient,
    /// and an optimizer stepping the layer updates the caller's tensors.
    ///
    /// ```
    /// use tamer::nn::Linear;
    /// use tamer::{DType, Tensor};
    /// let w = Tensor::ones([2, 3], DType::F64).unwrap().variable();
    /// let lin = Linear::from_tensors(w.clone(), None).unwrap();
    /// let x = Tensor::ones([1, 3], DType::F64).unwrap();
    /// let grads = lin.forward(&x).unwrap().sum_all().unwrap().backward().unwrap();
    /// assert_eq!(grads.get(&w).unwrap().to_vec::<f64>().unwrap(), vec![1.0; 6]);
    /// ```
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>) -> Result<Linear> {
        check_given("Linear", &weight, bias.as_ref())?;
        if weight.rank() != 2 {
            return Err(Error::shape(
                "Linear",
                format!("weight must be [out_features, in_features], got shape {}", weight.shape()),
            ));
        }
        if let Some(b) = &bias {
            if b.dims() != [weight.dims()[0]] {
                return Err(Error::shape(
                    "Linear",
                    format!(
                        "bias has shape {}, expected [{}] for weight shape {}",
                        b.shape(),
                        weight.dims()[0],
                        weight.shape()
                    ),
                ));
            }
        }
        Ok(Linear {
            weight: Param::new(weight),
            bias: bias.map(Param::new),
        })
    }

    pub fn in_features(&self) -> usize {
        self.weight.dims()[1]
    }
    pub fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }

    /// `x: [.., in_features] -> [.., out_features]`
    /// ([`functional::linear`](super::functional::linear) with this layer's
    /// parameters). The weight is used through a transposed view (no copy).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let bias = self.bias.as_ref().map(Param::tensor);
        linear_named("Linear", x, &self.weight.tensor(), bias.as_ref())
    }
}

impl Module for Linear {
    fn named_params(&self) -> Vec<(String, Param)> {
        let mut v = vec![("weight".to_string(), self.weight.clone())];
        if let Some(b) = &self.bias {
            v.push(("bias".to_string(), b.clone()));
        }
        v
    }
    fn set_training(&mut self, _training: bool) {}
}
