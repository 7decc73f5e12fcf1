//! One error type for the whole crate.
//!
//! Every fallible operation names itself (`op`), so a message reads like
//! `matmul: shapes [2, 3] and [4, 5] are incompatible: expected lhs.k (3) == rhs.k (4)`.

use std::fmt;

/// What went wrong, in broad strokes; the message carries the details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// Shapes that do not fit together (broadcast, matmul, reshape, cat ...).
    Shape,
    /// An axis outside `0..rank` (or `-rank..0`).
    Axis,
    /// An index outside the dimension it indexes.
    Index,
    /// An operation that does not support this dtype, or operands of different dtypes.
    DType,
    /// Operands on different devices, or a device that cannot be used.
    Device,
    /// A value that is out of its valid range (a negative size, a probability above 1 ...).
    Value,
    /// Autodiff misuse: backward on a non-scalar, on a tensor that does not require grad ...
    Autograd,
    /// Reading or writing files.
    Io,
    /// A file whose content is not what its format promises.
    Format,
}

/// The crate's error: the operation that failed, the kind of failure and a message
/// naming the shapes, dtypes or devices involved and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub op: &'static str,
    pub kind: ErrorKind,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(op: &'static str, kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            op,
            kind,
            message: message.into(),
        }
    }
    pub fn shape(op: &'static str, message: impl Into<String>) -> Self {
        Self::new(op, ErrorKind::Shape, message)
    }
    pub fn axis(op: &'static str, axis: isize, rank: usize) -> Self {
        Self::new(
            op,
            ErrorKind::Axis,
            format!(
                "axis {axis} is out of range for a tensor of rank {rank} (expected {}..{rank})",
                -(rank as isize)
            ),
        )
    }
    pub fn index(op: &'static str, message: impl Into<String>) -> Self {
        Self::new(op, ErrorKind::Index, message)
    }
    pub fn dtype(op: &'static str, message: impl Into<String>) -> Self {
        Self::new(op, ErrorKind::DType, message)
    }
    pub fn device(op: &'static str, message: impl Into<String>) -> Self {
        Self::new(op, ErrorKind::Device, message)
    }
    pub fn value(op: &'static str, message: impl Into<String>) -> Self {
        Self::new(op, ErrorKind::Value, message)
    }
    pub fn autograd(op: &'static str, message: impl Into<String>) -> Self {
        Self::new(op, ErrorKind::Autograd, message)
    }
    pub fn io(op: &'static str, message: impl Into<String>) -> Self {
        Self::new(op, ErrorKind::Io, message)
    }
    pub fn format(op: &'static str, message: impl Into<String>) -> Self {
        Self::new(op, ErrorKind::Format, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.op, self.message)
    }
}

impl std::error::Error for Error {}

/// Bail out of a function with an error: `bail!(shape, "reshape", "...")`.
#[macro_export]
#[doc(hidden)]
macro_rules! bail {
    ($kind:ident, $op:expr, $($fmt:tt)*) => {
        return Err($crate::Error::$kind($op, format!($($fmt)*)))
    };
}
