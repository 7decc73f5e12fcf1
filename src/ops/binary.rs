//! Elementwise functions of two tensors with numpy broadcasting.
//!
//! The functions are [`BinaryFn`] types (part of the kernel contract, in
//! `backend/contract/binary.rs`, re-exported here). Forward: broadcast both
//! layouts to the output shape (stride 0 on stretched axes, no copy) and run
//! one kernel. Backward: compute the gradient at the
//! output shape, then `sum_to_shape` it back onto each input's shape.

use crate::autograd::BackwardOp;
use crate::backend::contract::binary::BinaryKernels;
use crate::backend::Storage;
use crate::profile::{self, Cost};
use crate::tensor::Tensor;
use crate::types::{Layout, Shape};
use crate::Result;

pub use crate::backend::contract::binary::{Add, BinaryFn, Div, Eq, Ge, Gt, Le, Lt, Maximum, Minimum, Mul, Ne, Pow, Sub, VectorBinary};

/// Broadcast two tensors' layouts to their common shape (no copies).
fn broadcast_pair(op: &'static str, a: &Tensor, b: &Tensor) -> Result<(Shape, Layout, Layout)> {
    a.same_dtype_device(op, b)?;
    let shape = a.shape().broadcast_with(op, b.shape())?;
    // Broadcast views cost nothing, so the result may be far larger than either input.
    shape.check_size(op, a.dtype().size_in_bytes())?;
    Ok((shape.clone(), a.layout().broadcast_as(op, &shape)?, b.layout().broadcast_as(op, &shape)?))
}

fn binary_forward<B: BinaryFn>(a: &Tensor, b: &Tensor, f: B) -> Result<(Storage, Layout)> {
    let (shape, la, lb) = broadcast_pair(B::NAME, a, b)?;
    let _op = profile::op(B::NAME, || Cost::elementwise(a.dtype(), a.numel() + b.numel(), shape.numel()))?;
    let storage = crate::dispatch!(B::NAME, [sa = &*a.storage(), sb = &*b.storage()] => sa.binary(&la, sb, &lb, f)?);
    Ok((storage, Layout::contiguous(shape)))
}

/// One differentiable binary op: its function and how its gradient is formed.
fn differentiable<B: BinaryFn, G: BackwardOp + 'static>(a: &Tensor, b: &Tensor, f: B, backward: G) -> Result<Tensor> {
    let (storage, layout) = binary_forward(a, b, f)?;
    Ok(Tensor::from_op(storage, layout, vec![a.clone(), b.clone()], backward))
}

/// A comparison: no gradient, returns a 0/1 mask of the inputs' dtype.
fn comparison<B: BinaryFn>(a: &Tensor, b: &Tensor, f: B) -> Result<Tensor> {
    let (storage, layout) = binary_forward(a, b, f)?;
    Ok(Tensor::from_storage(storage, layout))
}

impl Tensor {
    /// `self + rhs` with broadcasting.
    ///
    /// ```
    /// use tamer::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]).unwrap();
    /// let b = Tensor::from_vec(vec![10.0f32, 20.0], [2]).unwrap();
    /// assert_eq!(a.add(&b).unwrap().to_vec::<f32>().unwrap(), vec![11.0, 22.0, 13.0, 24.0]);
    /// ```
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        differentiable(self, rhs, Add, AddBackward)
    }
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        differentiable(self, rhs, Sub, SubBackward)
    }
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        differentiable(self, rhs, Mul, MulBackward)
    }
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        differentiable(self, rhs, Div, DivBackward)
    }
    /// `selfʳʰˢ` elementwise (see [`Tensor::powf`] for a scalar exponent).
    pub fn pow(&self, rhs: &Tensor) -> Result<Tensor> {
        differentiable(self, rhs, Pow, PowBackward)
    }
    /// Elementwise maximum; at ties the gradient is split evenly (as PyTorch).
    pub fn maximum(&self, rhs: &Tensor) -> Result<Tensor> {
        differentiable(
            self,
            rhs,
            Maximum,
            ExtremumBackward {
                pick_a: Gt,
                name: Maximum::NAME,
            },
        )
    }
    /// Elementwise minimum; at ties the gradient is split evenly (as PyTorch).
    pub fn minimum(&self, rhs: &Tensor) -> Result<Tensor> {
        differentiable(
            self,
            rhs,
            Minimum,
            ExtremumBackward {
                pick_a: Lt,
                name: Minimum::NAME,
            },
        )
    }

    pub fn eq(&self, rhs: &Tensor) -> Result<Tensor> {
        comparison(self, rhs, Eq)
    }
    pub fn ne(&self, rhs: &Tensor) -> Result<Tensor> {
        comparison(self, rhs, Ne)
    }
    pub fn lt(&self, rhs: &Tensor) -> Result<Tensor> {
        comparison(self, rhs, Lt)
    }
    pub fn le(&self, rhs: &Tensor) -> Result<Tensor> {
        comparison(self, rhs, Le)
    }
    pub fn gt(&self, rhs: &Tensor) -> Result<Tensor> {
        comparison(self, rhs, Gt)
    }
    pub fn ge(&self, rhs: &Tensor) -> Result<Tensor> {
        comparison(self, rhs, Ge)
    }

    /// `cond ≠ 0 ? on_true : on_false`, broadcasting all three. `self` is the condition
    /// (a 0/1 mask such as a comparison returns); it receives no gradient.
    ///
    /// ```
    /// use tamer::Tensor;
    /// let x = Tensor::from_vec(vec![-1.0f32, 2.0], [2]).unwrap();
    /// let zero = Tensor::zeros([1], tamer::DType::F32).unwrap();
    /// let relu = x.gt(&zero).unwrap().where_cond(&x, &zero).unwrap();
    /// assert_eq!(relu.to_vec::<f32>().unwrap(), vec![0.0, 2.0]);
    /// ```
    pub fn where_cond(&self, on_true: &Tensor, on_false: &Tensor) -> Result<Tensor> {
        const OP: &str = "where_cond";
        on_true.same_dtype_device(OP, on_false)?;
        self.same_dtype_device(OP, on_true)?;
        let shape = self.shape().broadcast_with(OP, on_true.shape())?.broadcast_with(OP, on_false.shape())?;
        let (lc, lt, lf) = (
            self.layout().broadcast_as(OP, &shape)?,
            on_true.layout().broadcast_as(OP, &shape)?,
            on_false.layout().broadcast_as(OP, &shape)?,
        );
        let read = self.numel() + on_true.numel() + on_false.numel();
        let _op = profile::op(OP, || Cost::elementwise(self.dtype(), read, shape.numel()))?;
        let storage = crate::dispatch!(OP, [c = &*self.storage(), t = &*on_true.storage(), f = &*on_false.storage()] => c.where_cond(&lc, t, &lt, f, &lf)?);
        Ok(Tensor::from_op(
            storage,
            Layout::contiguous(shape),
            vec![self.clone(), on_true.clone(), on_false.clone()],
            WhereBackward,
        ))
    }

    /// Replace elements where `mask ≠ 0` by `value`.
    pub fn masked_fill(&self, mask: &Tensor, value: f64) -> Result<Tensor> {
        let fill = Tensor::full_on([1], value, self.dtype(), self.device())?;
        mask.where_cond(&fill, self)
    }
}

/// Sum a gradient computed at the broadcast shape back onto an input's shape.
fn reduce_to(g: Tensor, input: &Tensor) -> Result<Option<Tensor>> {
    Ok(Some(g.sum_to_shape(input.shape())?))
}

struct AddBackward;
impl BackwardOp for AddBackward {
    fn name(&self) -> &'static str {
        "add"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![reduce_to(g.clone(), &inputs[0])?, reduce_to(g.clone(), &inputs[1])?])
    }
}

struct SubBackward;
impl BackwardOp for SubBackward {
    fn name(&self) -> &'static str {
        "sub"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![reduce_to(g.clone(), &inputs[0])?, reduce_to(g.neg()?, &inputs[1])?])
    }
}

struct MulBackward;
impl BackwardOp for MulBackward {
    fn name(&self) -> &'static str {
        "mul"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        let ga = if a.requires_grad() { reduce_to(g.mul(b)?, a)? } else { None };
        let gb = if b.requires_grad() { reduce_to(g.mul(a)?, b)? } else { None };
        Ok(vec![ga, gb])
    }
}

struct DivBackward;
impl BackwardOp for DivBackward {
    fn name(&self) -> &'static str {
        "div"
    }
    fn backward(&self, inputs: &[Tensor], out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        let ga = if a.requires_grad() { reduce_to(g.div(b)?, a)? } else { None };
        // d(a/b)/db = -a/b² = -out/b
        let gb = if b.requires_grad() { reduce_to(g.mul(out)?.div(b)?.neg()?, b)? } else { None };
        Ok(vec![ga, gb])
    }
}

struct PowBackward;
impl BackwardOp for PowBackward {
    fn name(&self) -> &'static str {
        "pow"
    }
    fn backward(&self, inputs: &[Tensor], out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        // d(aᵇ)/da = b·aᵇ⁻¹
        let ga = if a.requires_grad() {
            reduce_to(g.mul(b)?.mul(&a.pow(&b.add_scalar(-1.0)?)?)?, a)?
        } else {
            None
        };
        // d(aᵇ)/db = aᵇ·ln a, taken as 0 where a = 0 (the limit PyTorch uses)
        let gb = if b.requires_grad() {
            let zero = Tensor::zeros_on([1], a.dtype(), a.device())?;
            let safe_log = a.eq(&zero)?.where_cond(&zero, &a.log()?)?;
            reduce_to(g.mul(out)?.mul(&safe_log)?, b)?
        } else {
            None
        };
        Ok(vec![ga, gb])
    }
}

/// maximum/minimum: the gradient goes to whichever operand was picked; at a tie, half to each.
struct ExtremumBackward<P: BinaryFn> {
    pick_a: P,
    /// The forward's name: `maximum` or `minimum`.
    name: &'static str,
}
impl<P: BinaryFn> BackwardOp for ExtremumBackward<P> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = (&inputs[0], &inputs[1]);
        let (strict, _) = binary_forward(a, b, self.pick_a)?;
        let shape = a.shape().broadcast_with("maximum", b.shape())?;
        let strict = Tensor::from_storage(strict, Layout::contiguous(shape));
        let ties = a.eq(b)?.scale(0.5)?;
        let weight_a = strict.add(&ties)?;
        let weight_b = weight_a.affine(-1.0, 1.0)?;
        Ok(vec![reduce_to(g.mul(&weight_a)?, a)?, reduce_to(g.mul(&weight_b)?, b)?])
    }
}

struct WhereBackward;
impl BackwardOp for WhereBackward {
    fn name(&self) -> &'static str {
        "where_cond"
    }
    fn backward(&self, inputs: &[Tensor], _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (cond, t, f) = (&inputs[0], &inputs[1], &inputs[2]);
        let zero = Tensor::zeros_on([1], g.dtype(), g.device())?;
        let gt = if t.requires_grad() { reduce_to(cond.where_cond(g, &zero)?, t)? } else { None };
        let gf = if f.requires_grad() { reduce_to(cond.where_cond(&zero, g)?, f)? } else { None };
        Ok(vec![None, gt, gf])
    }
}
