//! `autocast`: mixed-precision matrix products on CUDA, as `torch.autocast`.
//!
//! Inside [`autocast`]`(DType::BF16, || ...)` (or `DType::F16`) every
//! [`Tensor::matmul`](crate::Tensor::matmul) whose operands are both f32 and on the same CUDA device
//! casts them to the autocast dtype, multiplies in it (the tensor-core kernels)
//! and casts the product back to f32. The casts are the differentiable
//! [`Tensor::to_dtype`](crate::Tensor::to_dtype), whose backward casts the gradient back, so the
//! parameters ("master weights") and their gradients stay f32; only the
//! products' inputs and outputs are rounded to 16 bits. Everything else (sums,
//! softmax, norms, the loss, the optimizer) runs in f32 as written.
//!
//! The scope is per thread (like [`no_grad`](crate::no_grad)) and nests; the
//! previous state is restored when it ends, also on early return. **On CPU
//! tensors autocast does nothing**: the CPU has no fast 16-bit product, so a
//! CPU matmul inside the scope is the ordinary f32 one, bit for bit. With f16,
//! pair it with [`GradScaler`](crate::optim::GradScaler) (f16 gradients
//! underflow without loss scaling); bf16 has f32's range and needs none.
//!
//! Call `backward()` outside the scope, as with torch: the backward of an
//! autocast product already runs in the 16-bit dtype (its gradient arrives
//! cast), while inside the scope the f32 products of other ops' backward
//! passes would be autocast as well.
//!
//! ```
//! use tamer::autocast::{autocast, autocast_dtype};
//! use tamer::{DType, Tensor};
//! let a = Tensor::randn([4, 8], DType::F32, &mut tamer::rng(0)).unwrap();
//! let b = Tensor::randn([8, 3], DType::F32, &mut tamer::rng(1)).unwrap();
//! let plain = a.matmul(&b).unwrap();
//! let mixed = autocast(DType::BF16, || {
//!     assert_eq!(autocast_dtype(), Some(DType::BF16));
//!     a.matmul(&b)
//! })
//! .unwrap();
//! assert_eq!(autocast_dtype(), None);
//! // CPU tensors: autocast changes nothing.
//! assert_eq!(mixed.dtype(), DType::F32);
//! assert_eq!(mixed.to_vec::<f32>().unwrap(), plain.to_vec::<f32>().unwrap());
//! ```

use crate::types::{DType, Device};
use std::cell::Cell;

thread_local! {
    static AUTOCAST: Cell<Option<DType>> = const { Cell::new(None) };
}

/// The dtype CUDA matrix products are autocast to on this thread, if any.
pub fn autocast_dtype() -> Option<DType> {
    AUTOCAST.with(|a| a.get())
}

/// Restores the previous autocast state when dropped.
pub struct AutocastGuard {
    previous: Option<DType>,
}

impl AutocastGuard {
    /// Autocast to `dtype` until the guard drops. `BF16` and `F16` turn it
    /// on; any other dtype turns it off (as `torch.autocast(enabled=False)`),
    /// e.g. for a part of the model that must stay f32.
    pub fn new(dtype: DType) -> AutocastGuard {
        let next = matches!(dtype, DType::BF16 | DType::F16).then_some(dtype);
        AutocastGuard {
            previous: AUTOCAST.with(|a| a.replace(next)),
        }
    }
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        AUTOCAST.with(|a| a.set(self.previous));
    }
}

/// Run `f` with CUDA f32 matrix products computed in `dtype` (`BF16` or
/// `F16`; another dtype runs `f` with autocast off). See the module docs.
pub fn autocast<R>(dtype: DType, f: impl FnOnce() -> R) -> R {
    let _guard = AutocastGuard::new(dtype);
    f()
}

/// The policy for one matrix product: the 16-bit dtype to compute it in when
/// autocast is on and both operands are f32 on the same CUDA device, else
/// `None` (the product runs as written). [`Tensor::matmul`](crate::Tensor::matmul)
/// applies it (`src/ops/matmul.rs`): this module holds only the policy and its
/// per-thread state, and depends on nothing but the value types.
pub fn matmul_dtype(lhs: (DType, Device), rhs: (DType, Device)) -> Option<DType> {
    let half = autocast_dtype()?;
    let f32_on_one_gpu = lhs.0 == DType::F32 && rhs.0 == DType::F32 && lhs.1.is_cuda() && lhs.1 == rhs.1;
    f32_on_one_gpu.then_some(half)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest_and_restore() {
        assert_eq!(autocast_dtype(), None);
        autocast(DType::F16, || {
            assert_eq!(autocast_dtype(), Some(DType::F16));
            autocast(DType::F32, || assert_eq!(autocast_dtype(), None));
            autocast(DType::BF16, || assert_eq!(autocast_dtype(), Some(DType::BF16)));
            assert_eq!(autocast_dtype(), Some(DType::F16));
        });
        assert_eq!(autocast_dtype(), None);
    }

    #[test]
    fn only_f32_products_on_one_gpu_are_cast() {
        let gpu = (DType::F32, Device::Cuda(0));
        assert_eq!(matmul_dtype(gpu, gpu), None, "autocast is off");
        autocast(DType::BF16, || {
            assert_eq!(matmul_dtype(gpu, gpu), Some(DType::BF16));
            assert_eq!(matmul_dtype((DType::F32, Device::Cpu), (DType::F32, Device::Cpu)), None);
            assert_eq!(matmul_dtype(gpu, (DType::F32, Device::Cuda(1))), None);
            assert_eq!(matmul_dtype((DType::F64, Device::Cuda(0)), gpu), None);
            assert_eq!(matmul_dtype(gpu, (DType::BF16, Device::Cuda(0))), None);
        });
    }
}
