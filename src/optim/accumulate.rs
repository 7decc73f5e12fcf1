//! Gradient accumulation over micro-batches.

use super::device::{axpy, scaled};
use crate::tensor::TensorId;
use crate::{DType, Error, GradStore, NoGradGuard, Result, Tensor};

/// Sums the gradients of several backward passes, each scaled, into one
/// [`GradStore`]: `n` micro-batches of size `b` with scale `1/n` give the
/// gradient of the mean loss over the `n·b` samples (when each micro-batch
/// loss is a mean over its `b` samples), as one batch of `n·b` would.
///
/// ```
/// use tamer::nn::Param;
/// use tamer::optim::GradAccumulator;
/// use tamer::Tensor;
/// let w = Param::new(Tensor::from_vec(vec![1.0f64, 2.0], [2]).unwrap());
/// let mut acc = GradAccumulator::new(2).unwrap();
/// for k in [1.0, 3.0] {
///     let loss = w.tensor().sum_all().unwrap().scale(k).unwrap(); // dloss/dw = k
///     acc.add(&loss.backward().unwrap()).unwrap();
/// }
/// assert!(acc.is_ready());
/// let grads = acc.take();
/// assert_eq!(grads.get(&w.tensor()).unwrap().to_vec::<f64>().unwrap(), vec![2.0, 2.0]);
/// assert_eq!(acc.count(), 0);
/// ```
#[derive(Debug)]
pub struct GradAccumulator {
    sum: GradStore,
    count: usize,
    micro_batches: usize,
    scale: f64,
}

impl GradAccumulator {
    /// Average over `micro_batches` backward passes (each scaled by 1/n).
    pub fn new(micro_batches: usize) -> Result<GradAccumulator> {
        if micro_batches == 0 {
            return Err(Error::value("GradAccumulator::new", "micro_batches must be at least 1"));
        }
        Ok(GradAccumulator {
            sum: GradStore::default(),
            count: 0,
            micro_batches,
            scale: 1.0 / micro_batches as f64,
        })
    }
    /// Scale each pass by `scale` instead of 1/n (1 for a plain sum).
    pub fn with_scale(mut self, scale: f64) -> GradAccumulator {
        self.scale = scale;
        self
    }
    /// Add one backward pass's gradients (times the scale). Gradients of
    /// variables seen before are summed in place; new ones are copied.
    pub fn add(&mut self, grads: &GradStore) -> Result<()> {
        for (id, g) in grads.iter() {
            self.add_one(*id, g)?;
        }
        self.end_pass();
        Ok(())
    }

    /// Add one variable's gradient of the current pass (times the scale)
    /// and return the running sum: with [`Tensor::backward_with_hook`], the
    /// last pass's sums are final as soon as each gradient is, which lets
    /// data-parallel training send them during that backward pass. Call
    /// [`end_pass`](Self::end_pass) after the pass.
    ///
    /// ```
    /// use tamer::optim::GradAccumulator;
    /// use tamer::Tensor;
    /// let w = Tensor::from_vec(vec![1.0f64], [1]).unwrap().variable();
    /// let mut acc = GradAccumulator::new(2).unwrap();
    /// acc.add(&w.scale(3.0).unwrap().sum_all().unwrap().backward().unwrap()).unwrap();
    /// let loss = w.scale(5.0).unwrap().sum_all().unwrap();
    /// loss.backward_with_hook(|v, g| {
    ///     assert_eq!(acc.add_one(v.id(), g)?.to_vec::<f64>()?, [4.0]); // (3 + 5) / 2
    ///     Ok(())
    /// })
    /// .unwrap();
    /// acc.end_pass();
    /// assert!(acc.is_ready());
    /// ```
    pub fn add_one(&mut self, id: TensorId, g: &Tensor) -> Result<&Tensor> {
        const OP: &str = "GradAccumulator::add";
        let _guard = NoGradGuard::new();
        match self.sum.get_by_id(id) {
            Some(acc) => {
                if acc.shape() != g.shape() || acc.dtype() != g.dtype() {
                    return Err(Error::shape(
                        OP,
                        format!(
                            "a gradient of {} {} cannot be added to the accumulated {} {} of the same variable",
                            g.dtype(),
                            g.shape(),
                            acc.dtype(),
                            acc.shape()
                        ),
                    ));
                }
                match acc.dtype() {
                    DType::F32 | DType::F64 => add_into(acc, g, self.scale)?,
                    _ => {
                        let sum = acc.add(&scaled(OP, g, self.scale)?)?;
                        self.sum.insert_by_id(id, sum);
                    }
                }
            }
            // A scaled copy is a new contiguous tensor, so the sum owns
            // its storage and may be updated in place later.
            None => self.sum.insert_by_id(id, scaled(OP, g, self.scale)?),
        }
        self.sum.get_by_id(id).ok_or_else(|| Error::value(OP, "the sum just stored is missing"))
    }

    /// Count one finished pass (after its [`add_one`](Self::add_one) calls).
    pub fn end_pass(&mut self) {
        self.count += 1;
    }
    /// How many passes have been added since the last [`GradAccumulator::take`].
    pub fn count(&self) -> usize {
        self.count
    }
    /// Whether the configured number of micro-batches has been added.
    pub fn is_ready(&self) -> bool {
        self.count >= self.micro_batches
    }
    /// The accumulated gradients; the accumulator starts over.
    pub fn take(&mut self) -> GradStore {
        self.count = 0;
        std::mem::take(&mut self.sum)
    }
}

fn add_into(acc: &Tensor, g: &Tensor, scale: f64) -> Result<()> {
    const OP: &str = "GradAccumulator::add";
    let g = if g.same_storage(acc) { super::owned_copy(g)? } else { g.clone() };
    axpy(OP, acc, &g, scale)
}
