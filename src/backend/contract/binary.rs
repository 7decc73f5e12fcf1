//! The binary family's contract: [`BinaryFn`], the scalar functions of two
//! arguments, and [`BinaryKernels`], what a backend runs them with (operands
//! already broadcast to the output shape, stride 0 on stretched axes).

use super::{check_dtype, COMPUTE_FLOATS};
use crate::types::{DType, Float, Layout};
use crate::{Error, Result};

/// The functions some backends have a hand-vectorised f32 kernel for; a
/// [`BinaryFn`] names the one it computes in [`BinaryFn::VECTORIZED`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VectorBinary {
    Add,
    Sub,
    Mul,
}

/// A scalar function of two arguments.
pub trait BinaryFn: Copy + Send + Sync + 'static {
    /// Name used in errors and to pick a CUDA kernel.
    const NAME: &'static str;
    /// The vector kernel that computes this function on contiguous f32 rows,
    /// if a backend may use one instead of [`BinaryFn::apply`]; `None` (the
    /// default) runs the scalar formula everywhere.
    const VECTORIZED: Option<VectorBinary> = None;
    fn apply<T: Float>(&self, a: T, b: T) -> T;
}

/// The kernels a backend provides for binary functions.
pub trait BinaryKernels: Sized {
    /// The dtypes this backend's binary kernels (and `where_cond`) take: f32
    /// and f64, unless it declares the 16-bit formats too (see the contract's
    /// module docs).
    const DTYPES: &'static [DType] = COMPUTE_FLOATS;
    /// `f(lhs, rhs)` where both layouts are already broadcast to the output shape.
    fn binary<B: BinaryFn>(&self, lhs_layout: &Layout, rhs: &Self, rhs_layout: &Layout, f: B) -> Result<Self>;
    /// `cond ≠ 0 ? on_true : on_false`, all three layouts broadcast to the output shape.
    fn where_cond(&self, cond_layout: &Layout, on_true: &Self, true_layout: &Layout, on_false: &Self, false_layout: &Layout) -> Result<Self>;
}

macro_rules! binary_fn {
    ($(#[$doc:meta])* $ty:ident, $name:literal, |$a:ident, $b:ident| $f:expr $(, vectorized = $v:ident)?) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default)]
        pub struct $ty;
        impl BinaryFn for $ty {
            const NAME: &'static str = $name;
            $(const VECTORIZED: Option<VectorBinary> = Some(VectorBinary::$v);)?
            #[inline(always)]
            fn apply<T: Float>(&self, $a: T, $b: T) -> T {
                $f
            }
        }
    };
}

binary_fn!(/// `a + b`
    Add, "add", |a, b| a + b, vectorized = Add);
binary_fn!(/// `a - b`
    Sub, "sub", |a, b| a - b, vectorized = Sub);
binary_fn!(/// `a · b`
    Mul, "mul", |a, b| a * b, vectorized = Mul);
binary_fn!(/// `a / b`
    Div, "div", |a, b| a / b);
binary_fn!(/// `aᵇ`
    Pow, "pow", |a, b| a.powf(b));
binary_fn!(/// `max(a, b)`; NaN in either operand gives NaN (as PyTorch).
    Maximum, "maximum", |a, b| if a >= b || a.is_nan() { a } else { b });
binary_fn!(/// `min(a, b)`; NaN in either operand gives NaN (as PyTorch).
    Minimum, "minimum", |a, b| if a <= b || a.is_nan() { a } else { b });
binary_fn!(/// `a == b` as 1.0 / 0.0
    Eq, "eq", |a, b| if a == b { T::ONE } else { T::ZERO });
binary_fn!(/// `a != b` as 1.0 / 0.0
    Ne, "ne", |a, b| if a != b { T::ONE } else { T::ZERO });
binary_fn!(/// `a < b` as 1.0 / 0.0
    Lt, "lt", |a, b| if a < b { T::ONE } else { T::ZERO });
binary_fn!(/// `a <= b` as 1.0 / 0.0
    Le, "le", |a, b| if a <= b { T::ONE } else { T::ZERO });
binary_fn!(/// `a > b` as 1.0 / 0.0
    Gt, "gt", |a, b| if a > b { T::ONE } else { T::ZERO });
binary_fn!(/// `a >= b` as 1.0 / 0.0
    Ge, "ge", |a, b| if a >= b { T::ONE } else { T::ZERO });

/// Layouts broadcast to one shape (the output's).
fn check_same_shape(op: &'static str, layouts: &[&Layout]) -> Result<()> {
    let first = layouts[0].shape();
    if layouts.iter().any(|l| l.shape() != first) {
        let shapes: Vec<String> = layouts.iter().map(|l| l.shape().to_string()).collect();
        return Err(Error::shape(
            op,
            format!("operands have shapes {}; expected them broadcast to one shape", shapes.join(", ")),
        ));
    }
    Ok(())
}

/// [`BinaryKernels::binary`]: both operands of one dtype, one the backend's
/// kernels take (`dtypes`, its [`BinaryKernels::DTYPES`]), broadcast to one shape.
pub fn check_binary(op: &'static str, lhs: (DType, &Layout), rhs: (DType, &Layout), dtypes: &[DType]) -> Result<()> {
    check_dtype(op, lhs.0, dtypes)?;
    if rhs.0 != lhs.0 {
        return Err(Error::dtype(op, format!("operands have dtypes {} and {}", lhs.0, rhs.0)));
    }
    check_same_shape(op, &[lhs.1, rhs.1])
}

/// [`BinaryKernels::where_cond`]: condition and values of one dtype, one the
/// backend's kernels take, broadcast to one shape.
pub fn check_where_cond(cond: (DType, &Layout), on_true: (DType, &Layout), on_false: (DType, &Layout), dtypes: &[DType]) -> Result<()> {
    const OP: &str = "where_cond";
    check_dtype(OP, cond.0, dtypes)?;
    if on_true.0 != cond.0 || on_false.0 != cond.0 {
        return Err(Error::dtype(
            OP,
            format!(
                "condition is {}, values are {} and {}; condition and values must share a dtype",
                cond.0, on_true.0, on_false.0
            ),
        ));
    }
    check_same_shape(OP, &[cond.1, on_true.1, on_false.1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::contract::FLOATS;
    use crate::ErrorKind;

    #[test]
    fn binary_wants_one_supported_dtype_and_one_shape() {
        let (a, b) = (Layout::contiguous([2, 3]), Layout::contiguous([3]));
        let f = DType::F32;
        assert!(check_binary("add", (f, &a), (f, &a), COMPUTE_FLOATS).is_ok());
        assert!(check_binary("add", (DType::BF16, &a), (DType::BF16, &a), FLOATS).is_ok());
        let e = check_binary("add", (DType::BF16, &a), (DType::BF16, &a), COMPUTE_FLOATS).unwrap_err();
        assert!(e.message.starts_with("dtype bf16 is not supported, expected f32 or f64"), "{e}");
        let e = check_binary("add", (f, &a), (DType::F64, &a), COMPUTE_FLOATS).unwrap_err();
        assert_eq!((e.kind, e.message.as_str()), (ErrorKind::DType, "operands have dtypes f32 and f64"));
        let e = check_binary("add", (f, &a), (f, &b), COMPUTE_FLOATS).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Shape);
        assert!(e.message.contains("[2, 3], [3]"), "{e}");
    }

    #[test]
    fn where_cond_wants_one_supported_dtype_and_one_shape() {
        let (a, b) = (Layout::contiguous([4]), Layout::contiguous([5]));
        let f = DType::F64;
        assert!(check_where_cond((f, &a), (f, &a), (f, &a), COMPUTE_FLOATS).is_ok());
        let e = check_where_cond((DType::I64, &a), (DType::I64, &a), (DType::I64, &a), FLOATS).unwrap_err();
        assert!(e.message.starts_with("dtype i64 is not supported"), "{e}");
        let e = check_where_cond((f, &a), (DType::F32, &a), (f, &a), COMPUTE_FLOATS).unwrap_err();
        assert!(e.message.contains("condition is f64, values are f32 and f64"), "{e}");
        assert_eq!(check_where_cond((f, &a), (f, &a), (f, &b), COMPUTE_FLOATS).unwrap_err().kind, ErrorKind::Shape);
    }
}
