//! A per-op profiler: for every op kind, how often it ran forward and
//! backward, for how long, how many bytes it moved and how many FLOPs it did.
//!
//! ```
//! use tamer::{profile, DType, Tensor};
//! profile::reset();
//! profile::enable();
//! let x = Tensor::ones([64, 32], DType::F32).unwrap().variable();
//! let w = Tensor::ones([32, 16], DType::F32).unwrap().variable();
//! x.matmul(&w).unwrap().gelu().unwrap().sum_all().unwrap().backward().unwrap();
//! profile::disable();
//! let report = profile::report();
//! let matmul = report.op("matmul").unwrap();
//! assert_eq!((matmul.forward.calls, matmul.backward.calls), (1, 1));
//! assert_eq!(matmul.forward.flops, 2 * 64 * 32 * 16);
//! println!("{report}"); // the table, sorted by time
//! ```
//!
//! Set `TAMER_PROFILE=1` to switch it on at the first op of any program;
//! the training examples then print the table at the end and write it as
//! JSON (`profile.json` in their `--out` directory, or the path in
//! `TAMER_PROFILE_OUT`).
//!
//! # What is recorded, and where
//!
//! Each op opens a [`Scope`] (`let _op = profile::op("matmul", || cost)?;`)
//! around its kernels, and the backward pass opens one around each node's
//! `BackwardOp::backward`, named after the op. A scope's row is its name; its
//! column is the phase: *backward* inside `Tensor::backward` (each node is
//! one backward call of its op kind, and `grad_sum` is the addition of two
//! gradient contributions to one tensor), *forward* everywhere else
//! (forward ops, optimizer updates, evaluation under `no_grad`).
//!
//! Only the **outermost** scope open on a thread counts a call and its wall
//! time. A scope opened inside it (the matmuls inside matmul's backward, the
//! sum inside cross-entropy's forward) adds its bytes and FLOPs to the
//! outer one and nothing else, so no time and no call is counted twice, and
//! a backward row holds everything its `BackwardOp` did. Ops that are made of
//! other ops and open no scope themselves (`mean` = `sum` + `affine`, the
//! composite attention on the CPU, `masked_fill`) show up as their parts.
//! Kernels split work across rayon threads inside one scope; only the thread
//! that called the op records it. Ops called on several threads at once
//! (a data loader's, say) are each recorded once, so the recorded times may
//! add up to more than the wall time.
//!
//! On a CUDA device, kernels are queued and a clock read on the host would
//! only time the launch. While profiling is on, every outermost scope
//! therefore synchronises the device when it opens and when it closes
//! (backends with a queue register that with [`register_device_sync`]):
//! the times are the kernels' own, and the whole run gets slower, because
//! the host no longer runs ahead of the device.
//!
//! # Bytes and FLOPs: the conventions
//!
//! **Bytes moved** are the elements every kernel of the op reads and writes,
//! each operand counted once at its logical size (a broadcast operand at its
//! own size, not the output's) times its element size: an estimate of the
//! memory traffic a kernel cannot avoid, not a measurement of it.
//!
//! **FLOPs** are counted where the arithmetic is the point:
//!
//! | op | FLOPs |
//! |---|---|
//! | `matmul` | `2·m·n·k` per product (batches included) |
//! | `linear` (fused `x·Wᵀ + b`) | `rows·out·(2·in + 1)` forward (`+ 1` only with a bias); its backward row holds its two products' `2·rows·in·out` each and the bias gradient's column sum |
//! | `conv2d` | `2·N·C_out·H_out·W_out·C_in·kh·kw` for the forward, the same for each of the input and weight gradients |
//! | `scaled_dot_product_attention` (fused kernels) | `2·BH·Tq·Tk·(D + Dv)` forward, `2·BH·Tq·Tk·(3·D + 2·Dv)` backward (the scores recomputed), masked or not |
//! | elementwise (unary, binary, `where_cond`, comparisons, dropout) | [`per_element::ELEMENTWISE`] per output element, whatever the function |
//! | reductions (`sum`, `max`, `min`, `argmax`) | one per input element (`sum_squares`: two) |
//! | `softmax`, `log_softmax`, `layer_norm`, `cross_entropy`, optimizer updates | the constants in [`per_element`], counted from their formulas |
//! | views, copies, casts, fills, gathers, transfers | none |
//!
//! # When it is off
//!
//! Off, a scope costs one relaxed atomic load and a branch: no clock read,
//! no allocation, no thread-local access (the cost estimate is a closure
//! that is not called). `benches/profile_overhead.rs` measures that.

mod report;
mod state;

pub use report::{OpProfile, PhaseProfile, ProfileReport};
pub use state::{backward_phase, disable, enable, is_enabled, op, register_device_sync, report, reset, BackwardPhase, Scope};

use crate::types::DType;

/// The environment variable that switches the profiler on at the first op:
/// `1`, `true` or `on`; `0`, `false`, `off` or empty leave it off.
pub const VARIABLE: &str = "TAMER_PROFILE";

/// Where the training examples write the report as JSON instead of
/// `profile.json` in their output directory.
pub const OUT_VARIABLE: &str = "TAMER_PROFILE_OUT";

/// The work one scope adds to its row: FLOPs and bytes moved (see the
/// module's conventions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    pub flops: u64,
    pub bytes: u64,
}

impl Cost {
    /// No work: what a view, or a backward node whose kernels count their
    /// own, adds.
    pub const NONE: Cost = Cost { flops: 0, bytes: 0 };

    /// `flops` floating-point operations (and no bytes yet).
    pub fn flops(flops: usize) -> Cost {
        Cost { flops: flops as u64, bytes: 0 }
    }
    /// The product of `factors` as FLOPs (a contraction's `2·m·n·k`),
    /// saturating rather than overflowing.
    pub fn flops_product(factors: &[usize]) -> Cost {
        let flops = factors.iter().fold(1u64, |acc, &f| acc.saturating_mul(f as u64));
        Cost { flops, bytes: 0 }
    }
    /// Plus `elements` elements of `dtype` read or written.
    pub fn moving(self, dtype: DType, elements: usize) -> Cost {
        Cost {
            flops: self.flops,
            bytes: self.bytes.saturating_add((elements as u64).saturating_mul(dtype.size_in_bytes() as u64)),
        }
    }
    /// An elementwise kernel: [`per_element::ELEMENTWISE`] FLOPs per output
    /// element, `read` elements read and `out` written, all of `dtype`.
    pub fn elementwise(dtype: DType, read: usize, out: usize) -> Cost {
        Cost::flops(per_element::ELEMENTWISE * out).moving(dtype, read + out)
    }
    /// A kernel that only moves `elements` elements of `dtype` (a copy: read
    /// once and written once counts `2 · n`).
    pub fn copy(dtype: DType, elements: usize) -> Cost {
        Cost::NONE.moving(dtype, elements)
    }
    fn add(self, other: Cost) -> Cost {
        Cost {
            flops: self.flops.saturating_add(other.flops),
            bytes: self.bytes.saturating_add(other.bytes),
        }
    }
}

/// FLOPs counted per element for the kernels that are not contractions,
/// from their formulas (one per add, multiply, division, exp, square root or
/// comparison).
pub mod per_element {
    /// Any elementwise function, forward or backward: one per output element
    /// (an `erf` counts one, like an add), so the figure reads as elements per second.
    pub const ELEMENTWISE: usize = 1;
    /// Softmax or log-softmax forward, per element: the row max, the
    /// subtraction, the exp, the row sum, the division (or log).
    pub const SOFTMAX: usize = 5;
    /// Their backward, per element: `dy·y`, its row sum, the subtraction, the product.
    pub const SOFTMAX_BACKWARD: usize = 4;
    /// Layer norm forward, per element: the sums for the mean and the
    /// variance (a subtraction and a square), the normalisation, weight and bias.
    pub const LAYER_NORM: usize = 7;
    /// Layer norm backward, per element: `g = dy·w`, `x̂`, the two row sums,
    /// the `dx` formula and the weight and bias gradients.
    pub const LAYER_NORM_BACKWARD: usize = 13;
    /// Cross-entropy forward, per logit: the row max, the subtraction, the
    /// exp and the sum.
    pub const CROSS_ENTROPY: usize = 4;
    /// Cross-entropy backward, per logit: the softmax from the saved row
    /// statistics (subtraction, exp) and the subtraction of the target.
    pub const CROSS_ENTROPY_BACKWARD: usize = 3;
    /// One Adam(W) update, per parameter: the decay, both moments, the bias-corrected
    /// denominator and the step (PyTorch's formula).
    pub const ADAM: usize = 14;
    /// One SGD update with momentum, per parameter: decay, momentum, step.
    pub const SGD: usize = 6;
    /// `acc += s·g`, per element.
    pub const AXPY: usize = 2;
}
