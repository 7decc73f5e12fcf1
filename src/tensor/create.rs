//! Creating tensors: constants, ranges, host data and seeded random values.

use super::Tensor;
use crate::backend::Storage;
use crate::profile::{self, Cost};
use crate::types::{DType, Device, Element, Layout, Shape};
use crate::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

/// The random number generator every random constructor takes explicitly,
/// so a run is reproducible from its seed.
pub type TensorRng = rand::rngs::StdRng;

/// A seeded RNG for the random constructors.
pub fn rng(seed: u64) -> TensorRng {
    TensorRng::seed_from_u64(seed)
}

impl Tensor {
    /// A tensor from host data in row-major order.
    ///
    /// ```
    /// let t = tamer::Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]).unwrap();
    /// assert_eq!(t.dims(), &[2, 3]);
    /// assert!(tamer::Tensor::from_vec(vec![1.0f32; 5], [2, 3]).is_err());
    /// ```
    pub fn from_vec<T: Element>(data: Vec<T>, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        shape.check_size("from_vec", std::mem::size_of::<T>())?;
        if data.len() != shape.numel() {
            return Err(Error::shape(
                "from_vec",
                format!("{} values cannot fill shape {} ({} elements expected)", data.len(), shape, shape.numel()),
            ));
        }
        Ok(Tensor::from_storage(Storage::from_vec(data), Layout::contiguous(shape)))
    }

    /// A tensor copied from a slice.
    pub fn from_slice<T: Element>(data: &[T], shape: impl Into<Shape>) -> Result<Tensor> {
        Self::from_vec(data.to_vec(), shape)
    }

    /// A 1-D tensor of `data` (infallible: the shape is the data's length).
    pub(crate) fn vector<T: Element>(data: Vec<T>) -> Tensor {
        let n = data.len();
        Tensor::from_storage(Storage::from_vec(data), Layout::contiguous([n]))
    }

    /// A rank-0 tensor.
    pub fn scalar<T: Element>(value: T) -> Tensor {
        Tensor::from_storage(Storage::from_vec(vec![value]), Layout::contiguous(Shape::scalar()))
    }

    /// Every element equal to `value` (converted to `dtype`).
    pub fn full(shape: impl Into<Shape>, value: f64, dtype: DType) -> Result<Tensor> {
        let shape = shape.into();
        // The values pass through an f64 buffer.
        shape.check_size("full", 8)?;
        let _op = profile::op("full", || Cost::copy(dtype, shape.numel()))?;
        let storage = Storage::from_f64s(&vec![value; shape.numel()], dtype);
        Ok(Tensor::from_storage(storage, Layout::contiguous(shape)))
    }
    pub fn zeros(shape: impl Into<Shape>, dtype: DType) -> Result<Tensor> {
        let shape = shape.into();
        shape.check_size("zeros", dtype.size_in_bytes())?;
        let _op = profile::op("zeros", || Cost::copy(dtype, shape.numel()))?;
        let storage = Storage::zeros_on(Device::Cpu, dtype, shape.numel())?;
        Ok(Tensor::from_storage(storage, Layout::contiguous(shape)))
    }
    pub fn ones(shape: impl Into<Shape>, dtype: DType) -> Result<Tensor> {
        Self::full(shape, 1.0, dtype)
    }
    /// [`Tensor::full`] made directly on `device` (on a GPU by a fill kernel:
    /// no host buffer, no copy). For the constants ops and layers create
    /// beside their inputs.
    ///
    /// ```
    /// use tamer::{DType, Device, Tensor};
    /// let t = Tensor::full_on([2], 0.5, DType::F32, Device::Cpu).unwrap();
    /// assert_eq!(t.to_vec::<f32>().unwrap(), vec![0.5, 0.5]);
    /// ```
    pub fn full_on(shape: impl Into<Shape>, value: f64, dtype: DType, device: Device) -> Result<Tensor> {
        let shape = shape.into();
        shape.check_size("full", dtype.size_in_bytes())?;
        let _op = profile::op("full", || Cost::copy(dtype, shape.numel()))?;
        let storage = Storage::full_on(device, dtype, shape.numel(), value)?;
        Ok(Tensor::from_storage(storage, Layout::contiguous(shape)))
    }
    /// [`Tensor::zeros`] made directly on `device`.
    pub fn zeros_on(shape: impl Into<Shape>, dtype: DType, device: Device) -> Result<Tensor> {
        let shape = shape.into();
        shape.check_size("zeros", dtype.size_in_bytes())?;
        let _op = profile::op("zeros", || Cost::copy(dtype, shape.numel()))?;
        let storage = Storage::zeros_on(device, dtype, shape.numel())?;
        Ok(Tensor::from_storage(storage, Layout::contiguous(shape)))
    }
    /// Zeros of this tensor's shape, dtype and device.
    pub fn zeros_like(&self) -> Result<Tensor> {
        let _op = profile::op("zeros", || Cost::copy(self.dtype(), self.numel()))?;
        let storage = Storage::zeros_on(self.device(), self.dtype(), self.numel())?;
        Ok(Tensor::from_storage(storage, Layout::contiguous(self.shape().clone())))
    }
    /// Ones of this tensor's shape, dtype and device.
    pub fn ones_like(&self) -> Result<Tensor> {
        self.full_like(1.0)
    }
    /// `value` everywhere, with this tensor's shape, dtype and device.
    pub fn full_like(&self, value: f64) -> Result<Tensor> {
        Self::full(self.shape().clone(), value, self.dtype())?
            .to_device(self.device())
            .map(|t| t.detach())
    }

    /// `start, start+step, ...` below `end` (like `numpy.arange`).
    pub fn arange(start: f64, end: f64, step: f64, dtype: DType) -> Result<Tensor> {
        if step == 0.0 || !step.is_finite() || !start.is_finite() || !end.is_finite() {
            return Err(Error::value(
                "arange",
                format!("start {start}, end {end}, step {step}: expected finite values and a non-zero step"),
            ));
        }
        let n = ((end - start) / step).ceil().max(0.0) as usize;
        Shape::new([n]).check_size("arange", 8)?;
        let values: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
        Ok(Tensor::from_storage(Storage::from_f64s(&values, dtype), Layout::contiguous([n])))
    }

    /// The `n × n` identity matrix.
    pub fn eye(n: usize, dtype: DType) -> Result<Tensor> {
        Shape::new([n, n]).check_size("eye", 8)?;
        let mut values = vec![0.0; n * n];
        for i in 0..n {
            values[i * n + i] = 1.0;
        }
        Ok(Tensor::from_storage(Storage::from_f64s(&values, dtype), Layout::contiguous([n, n])))
    }

    /// Uniform on `[low, high)`.
    pub fn uniform(shape: impl Into<Shape>, low: f64, high: f64, dtype: DType, rng: &mut impl Rng) -> Result<Tensor> {
        let shape = shape.into();
        shape.check_size("uniform", 8)?;
        if low.partial_cmp(&high) != Some(std::cmp::Ordering::Less) || !low.is_finite() || !high.is_finite() || !(high - low).is_finite() {
            return Err(Error::value(
                "uniform",
                format!("low {low} must be below high {high}, both finite and their difference too"),
            ));
        }
        let values: Vec<f64> = (0..shape.numel()).map(|_| rng.random_range(low..high)).collect();
        Ok(Tensor::from_storage(Storage::from_f64s(&values, dtype), Layout::contiguous(shape)))
    }
    /// Uniform on `[0, 1)`.
    pub fn rand(shape: impl Into<Shape>, dtype: DType, rng: &mut impl Rng) -> Result<Tensor> {
        Self::uniform(shape, 0.0, 1.0, dtype, rng)
    }
    /// Standard normal.
    pub fn randn(shape: impl Into<Shape>, dtype: DType, rng: &mut impl Rng) -> Result<Tensor> {
        Self::normal(shape, 0.0, 1.0, dtype, rng)
    }
    /// Normal with the given mean and standard deviation.
    pub fn normal(shape: impl Into<Shape>, mean: f64, std: f64, dtype: DType, rng: &mut impl Rng) -> Result<Tensor> {
        let shape = shape.into();
        shape.check_size("normal", 8)?;
        if std.is_nan() || std < 0.0 {
            return Err(Error::value("normal", format!("standard deviation {std} must be non-negative")));
        }
        let values: Vec<f64> = (0..shape.numel())
            .map(|_| {
                let z: f64 = StandardNormal.sample(rng);
                mean + std * z
            })
            .collect();
        Ok(Tensor::from_storage(Storage::from_f64s(&values, dtype), Layout::contiguous(shape)))
    }

    /// Convert to another dtype (a copy; f16/bf16 round to nearest even).
    /// Gradients flow through float-to-float casts; index tensors have none.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        let _op = profile::op("to_dtype", || Cost::copy(self.dtype(), self.numel()).moving(dtype, self.numel()))?;
        let storage = self.storage().to_dtype(self.layout(), dtype)?;
        let layout = Layout::contiguous(self.shape().clone());
        if dtype.is_float() && self.dtype().is_float() {
            Ok(Tensor::from_op(storage, layout, vec![self.clone()], CastBackward))
        } else {
            Ok(Tensor::from_storage(storage, layout))
        }
    }
}

struct CastBackward;
impl crate::autograd::BackwardOp for CastBackward {
    fn name(&self) -> &'static str {
        "to_dtype"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, grad: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(grad.to_dtype(inputs[0].dtype())?)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn seeded_random_is_reproducible() {
        let a = Tensor::randn([4, 4], DType::F32, &mut rng(7)).unwrap().to_vec::<f32>().unwrap();
        let b = Tensor::randn([4, 4], DType::F32, &mut rng(7)).unwrap().to_vec::<f32>().unwrap();
        let c = Tensor::randn([4, 4], DType::F32, &mut rng(8)).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
    #[test]
    fn arange_and_eye() {
        assert_eq!(Tensor::arange(0.0, 5.0, 2.0, DType::F64).unwrap().to_vec::<f64>().unwrap(), vec![0.0, 2.0, 4.0]);
        assert_eq!(Tensor::eye(2, DType::F32).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 0.0, 0.0, 1.0]);
        assert!(Tensor::arange(0.0, 1.0, 0.0, DType::F32).is_err());
    }
    #[test]
    fn half_precision_round_trips_through_f32() {
        let t = Tensor::from_vec(vec![1.0f32, 0.333_333, -2.5], [3]).unwrap();
        let h = t.to_dtype(DType::BF16).unwrap();
        assert_eq!(h.dtype(), DType::BF16);
        let back = h.to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(back[0], 1.0);
        assert!((back[1] - 0.333_333).abs() < 2e-3);
        let f = t.to_dtype(DType::F16).unwrap().to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap();
        assert!((f[1] - 0.333_333).abs() < 1e-3);
    }
}
