//! Parameters: named, shareable, trainable or frozen tensors owned by modules.

use crate::{Error, Result, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// A learnable tensor. Cloning shares it (as `Arc`): the optimizer, the model
/// and a checkpoint writer all see the same values.
///
/// The value is a variable (`Tensor::variable`), so gradients of a loss are
/// found under `param.tensor()` in the `GradStore`. A frozen parameter hands out
/// a detached handle instead, so no gradient flows to it.
#[derive(Clone)]
pub struct Param(Arc<ParamInner>);

struct ParamInner {
    value: RwLock<Tensor>,
    trainable: AtomicBool,
}

impl Param {
    /// Make `t` a trainable parameter.
    ///
    /// A variable (`Tensor::variable`) is kept as it is: the parameter *is*
    /// the caller's tensor, so gradients are found under the caller's handle
    /// (`grads.get(&w)`) and in-place updates are seen through it. Any other
    /// tensor becomes a new variable over the same storage (tensors are
    /// immutable handles, so the caller's handle itself cannot become one);
    /// a tensor with history is cut from it, as `torch.nn.Parameter(t)` does.
    /// To differentiate through a computed weight, use [`Param::wrap`] or
    /// [`functional::linear`](super::functional::linear).
    ///
    /// ```
    /// use tamer::nn::Param;
    /// use tamer::{DType, Tensor};
    /// let w = Tensor::ones([2], DType::F64).unwrap().variable();
    /// assert_eq!(Param::new(w.clone()).tensor().id(), w.id());
    /// let plain = Tensor::ones([2], DType::F64).unwrap();
    /// let p = Param::new(plain.clone());
    /// assert!(p.tensor().is_variable() && p.tensor().same_storage(&plain));
    /// ```
    pub fn new(t: Tensor) -> Param {
        Param(Arc::new(ParamInner {
            value: RwLock::new(as_parameter(t)),
            trainable: AtomicBool::new(true),
        }))
    }

    /// Wrap `t` as it is, without detaching it: gradients are keyed by `t`
    /// itself, and if `t` has history they flow on into it. Lets
    /// `testing::check_gradients` differentiate a layer with respect to its
    /// parameters by building the layer from the checker's inputs.
    ///
    /// ```
    /// use tamer::nn::{Linear, Param};
    /// use tamer::Tensor;
    /// let w = Tensor::ones([2, 3], tamer::DType::F64).unwrap().variable();
    /// let lin = Linear { weight: Param::wrap(w.clone()), bias: None };
    /// let y = lin.forward(&Tensor::ones([1, 3], tamer::DType::F64).unwrap()).unwrap();
    /// let grads = y.sum_all().unwrap().backward().unwrap();
    /// assert!(grads.get(&w).is_some());
    /// ```
    pub fn wrap(t: Tensor) -> Param {
        Param(Arc::new(ParamInner {
            value: RwLock::new(t),
            trainable: AtomicBool::new(true),
        }))
    }

    /// The handle to use in a forward pass: the variable, or a detached view when frozen.
    pub fn tensor(&self) -> Tensor {
        let t = self.0.value.read().unwrap_or_else(|p| p.into_inner()).clone();
        if self.is_trainable() {
            t
        } else {
            t.detach()
        }
    }

    pub fn dims(&self) -> Vec<usize> {
        self.tensor().dims().to_vec()
    }
    pub fn numel(&self) -> usize {
        self.tensor().numel()
    }
    pub fn is_trainable(&self) -> bool {
        self.0.trainable.load(Ordering::Relaxed)
    }
    /// Stop (false) or resume (true) gradient flow to this parameter.
    pub fn set_trainable(&self, trainable: bool) {
        self.0.trainable.store(trainable, Ordering::Relaxed)
    }

    /// Overwrite the values in place (same shape; the dtype is converted and
    /// the values are copied to the parameter's device). Used by initialisers,
    /// optimizers and checkpoint loading.
    pub fn set(&self, values: &Tensor) -> Result<()> {
        let current = self.tensor();
        if current.shape() != values.shape() {
            return Err(Error::shape(
                "Param::set",
                format!("parameter has shape {}, new values have shape {}", current.shape(), values.shape()),
            ));
        }
        let values = if values.dtype() == current.dtype() {
            values.detach()
        } else {
            values.to_dtype(current.dtype())?.detach()
        };
        // Values made on the host (initialisers, checkpoints) go to the parameter's device.
        let values = values.to_device(current.device())?;
        current.assign(&values)
    }

    /// Replace the value with a tensor of a possibly different shape (e.g. a
    /// re-sized classifier head). Gradients are then keyed by the new handle.
    pub fn replace(&self, t: Tensor) {
        *self.0.value.write().unwrap_or_else(|p| p.into_inner()) = t.detach().variable();
    }

    /// Replace the value with `t` under [`Param::new`]'s rule (a variable is
    /// kept as it is), keeping this parameter's identity and trainable flag:
    /// how a module built from given weights adopts them ([`adopt_weights`](super::adopt_weights)).
    pub(crate) fn adopt(&self, t: Tensor) {
        *self.0.value.write().unwrap_or_else(|p| p.into_inner()) = as_parameter(t);
    }

    /// Whether both handles are the same parameter (clones of one `Param`,
    /// as tied weights are).
    pub fn same(&self, other: &Param) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
    /// The device the value lives on.
    pub fn device(&self) -> crate::Device {
        self.0.value.read().unwrap_or_else(|p| p.into_inner()).device()
    }
}

/// `t` itself when it is a variable, else a new variable over its storage.
fn as_parameter(t: Tensor) -> Tensor {
    if t.is_variable() {
        t
    } else {
        t.detach().variable()
    }
}

impl std::fmt::Debug for Param {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Param({:?}, trainable={})", self.dims(), self.is_trainable())
    }
}
