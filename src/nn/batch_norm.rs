//! Batch normalisation over the channels of NCHW feature maps.

use super::{init, Module, Param};
use crate::{Error, NoGradGuard, Result, Tensor};

/// `torch.nn.BatchNorm2d(C)` (affine, tracking running statistics) on `[N, C, H, W]`.
///
/// Train mode normalises each channel with the batch mean and biased variance
/// over `N, H, W`, built from tensor ops so autodiff gives the gradient, and
/// updates the running statistics as PyTorch does:
/// `running = (1 − momentum)·running + momentum·batch`, with the *unbiased*
/// variance for `running_var`. Eval mode normalises with the running statistics.
/// Buffers: `running_mean` (zeros), `running_var` (ones), `num_batches_tracked`
/// (an i64 scalar), named as in PyTorch's state dict.
///
/// ```
/// use tamer::nn::{BatchNorm2d, Module};
/// use tamer::{rng, DType, Tensor};
/// let mut bn = BatchNorm2d::new(3).unwrap();
/// let x = Tensor::normal([4, 3, 5, 5], 2.0, 3.0, DType::F32, &mut rng(0)).unwrap();
/// let y = bn.forward(&x).unwrap(); // train mode: batch statistics
/// let m = y.mean(&[0, 2, 3], false).unwrap().to_vec::<f32>().unwrap();
/// assert!(m.iter().all(|v| v.abs() < 1e-4));
/// // running_mean moved 10% of the way towards the batch mean (about 2).
/// let rm = bn.running_mean.tensor().to_vec::<f32>().unwrap();
/// assert!(rm.iter().all(|&v| (0.1..0.3).contains(&v)));
/// bn.set_training(false);
/// assert_eq!(bn.forward(&x).unwrap().dims(), &[4, 3, 5, 5]);
/// let names: Vec<String> = bn.named_buffers().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["running_mean", "running_var", "num_batches_tracked"]);
/// ```
#[derive(Debug)]
pub struct BatchNorm2d {
    pub weight: Param,
    pub bias: Param,
    pub running_mean: Param,
    pub running_var: Param,
    pub num_batches_tracked: Param,
    pub momentum: f64,
    pub eps: f64,
    pub training: bool,
}

impl BatchNorm2d {
    /// An f32 layer for `num_features` channels: weight ones, bias zeros,
    /// momentum 0.1, eps 1e-5, in train mode.
    pub fn new(num_features: usize) -> Result<BatchNorm2d> {
        if num_features == 0 {
            return Err(Error::shape("BatchNorm2d", "num_features must be positive"));
        }
        let buffer = |t: Tensor| {
            let p = Param::new(t);
            p.set_trainable(false);
            p
        };
        Ok(BatchNorm2d {
            weight: Param::new(init::fresh([num_features], 1.0)?),
            bias: Param::new(init::fresh([num_features], 0.0)?),
            running_mean: buffer(init::fresh([num_features], 0.0)?),
            running_var: buffer(init::fresh([num_features], 1.0)?),
            num_batches_tracked: buffer(Tensor::scalar(0i64)),
            momentum: 0.1,
            eps: 1e-5,
            training: true,
        })
    }

    pub fn num_features(&self) -> usize {
        self.weight.dims()[0]
    }

    /// `x: [N, C, H, W] -> [N, C, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        const OP: &str = "BatchNorm2d";
        let c = self.num_features();
        if x.rank() != 4 || x.dims()[1] != c {
            return Err(Error::shape(OP, format!("input shape {} must be [N, {c}, H, W]", x.shape())));
        }
        if !x.dtype().is_compute_float() {
            return Err(Error::dtype(OP, format!("input dtype {} (shape {}) must be f32 or f64", x.dtype(), x.shape())));
        }
        let per_channel = |p: &Param| -> Result<Tensor> {
            let t = p.tensor();
            let t = if t.dtype() == x.dtype() { t } else { t.to_dtype(x.dtype())? };
            t.reshape([1, c, 1, 1])
        };
        let (mean, var) = if self.training {
            let n = x.dims()[0] * x.dims()[2] * x.dims()[3];
            if n < 2 {
                return Err(Error::shape(
                    OP,
                    format!("training needs more than one value per channel, input shape {} has {n}", x.shape()),
                ));
            }
            let mean = x.mean(&[0, 2, 3], true)?;
            let var = x.sub(&mean)?.square()?.mean(&[0, 2, 3], true)?;
            self.update_running_stats(&mean, &var, n)?;
            (mean, var)
        } else {
            (per_channel(&self.running_mean)?, per_channel(&self.running_var)?)
        };
        // y = (x − mean)·(weight/√(var + eps)) + bias
        let scale = var.add_scalar(self.eps)?.rsqrt()?.mul(&per_channel(&self.weight)?)?;
        x.sub(&mean)?.mul(&scale)?.add(&per_channel(&self.bias)?)
    }

    /// PyTorch's update, with the unbiased batch variance `var·n/(n−1)`. The
    /// buffers get fresh tensors (not in-place writes) so a graph that read the
    /// old values in an earlier eval-mode forward stays valid.
    fn update_running_stats(&self, mean: &Tensor, var: &Tensor, n: usize) -> Result<()> {
        let _guard = NoGradGuard::new();
        let m = self.momentum;
        let blend = |buf: &Param, batch: &Tensor| -> Result<()> {
            let old = buf.tensor();
            let batch = batch.detach().flatten_all()?.to_dtype(old.dtype())?;
            buf.replace(old.scale(1.0 - m)?.add(&batch.scale(m)?)?);
            Ok(())
        };
        blend(&self.running_mean, mean)?;
        blend(&self.running_var, &var.scale(n as f64 / (n - 1) as f64)?)?;
        let tracked = self.num_batches_tracked.tensor();
        let count = tracked.to_vec::<i64>()?.first().copied().unwrap_or(0);
        self.num_batches_tracked.replace(Tensor::scalar(count + 1).to_device(tracked.device())?);
        Ok(())
    }
}

impl Module for BatchNorm2d {
    fn named_params(&self) -> Vec<(String, Param)> {
        vec![("weight".to_string(), self.weight.clone()), ("bias".to_string(), self.bias.clone())]
    }
    fn named_buffers(&self) -> Vec<(String, Param)> {
        vec![
            ("running_mean".to_string(), self.running_mean.clone()),
            ("running_var".to_string(), self.running_var.clone()),
            ("num_batches_tracked".to_string(), self.num_batches_tracked.clone()),
        ]
    }
    fn set_training(&mut self, training: bool) {
        self.training = training;
    }
}
