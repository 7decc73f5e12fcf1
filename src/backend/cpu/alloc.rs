//! The CPU's caching allocator: kernel outputs come from a pool of freed
//! buffers instead of the system.
//!
//! A training step frees and re-allocates the same few hundred buffer sizes
//! every iteration. From the system each one is fresh memory: a large `Vec` is
//! `mmap`ed, so every page of it faults and is zeroed by the kernel on first
//! touch, and `munmap`ed again when the tensor dies. That cost 11–19% of a CPU
//! training step. So a `CpuStorage`'s buffer goes back to this pool when the
//! storage drops, and kernels take their outputs from it: after the first step
//! a steady training loop asks the system for no new pages.
//!
//! The policy is the device allocator's ([`CachingAllocator`]: size classes of
//! 512 B below 1 MiB and 2 MiB above, free lists per class, the same
//! [`MemoryStats`]); a host block is a typed `Vec`, so the free lists are kept
//! per dtype as well. Only buffers this pool handed out come back to it (a
//! `Vec` a user gave `Tensor::from_vec` goes back to the system when its
//! tensor dies), and the cache holds at most [`DEFAULT_CACHE_LIMIT`] bytes
//! unless [`set_cache_limit`] says otherwise; [`empty_cache`] gives every
//! cached buffer back, like PyTorch's `torch.cuda.empty_cache`.
//!
//! The calls a kernel makes are one line each: [`zeroed`], [`filled`],
//! [`copied`], [`with_capacity`] (then written with `push`/`extend`, so no
//! element is zeroed only to be overwritten), [`overwritable`] (old values,
//! for a kernel that writes every element in place) and [`CollectPooled::collect_pooled`].
//! A buffer from here that a kernel only uses as scratch goes back with
//! [`recycle`] (or is held in a [`Contiguous`](super::Contiguous), which
//! recycles it on drop); one that becomes a storage goes back when the storage
//! drops; one a caller keeps is let go with [`disown`]. A pooled `Vec` dropped
//! any other way is freed by the system as usual, but stays counted in
//! [`MemoryStats::bytes_in_use`] and its address in the table of buffers
//! handed out (a few bytes), so every such path in a kernel is a bug to fix.

use crate::backend::caching_alloc::{CachingAllocator, MemoryStats, RawMemory};
use crate::types::{DType, Element, ElementVec};
use crate::{Error, Result};
use half::{bf16, f16};
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, MutexGuard};

/// The most bytes of freed buffers the pool keeps by default: a step's
/// activations for the models this crate trains on a CPU fit well inside it,
/// and a workload whose sizes keep changing cannot hoard more than this.
pub const DEFAULT_CACHE_LIMIT: usize = 4 << 30;

/// The system allocator behind the pool: a block is an empty `Vec` of the
/// requested dtype whose capacity is exactly the block's bytes.
struct HostMemory;

fn empty_vec<T: Element>(bytes: usize) -> Result<ElementVec> {
    let mut v = Vec::<T>::new();
    v.try_reserve_exact(bytes / std::mem::size_of::<T>())
        .map_err(|e| Error::device("cpu alloc", format!("{bytes} bytes of {}: {e}", T::DTYPE)))?;
    Ok(T::tag(v))
}

impl RawMemory for HostMemory {
    type Block = ElementVec;
    type Kind = DType;
    const OP: &'static str = "cpu alloc";
    fn alloc(&self, dtype: DType, bytes: usize) -> Result<ElementVec> {
        match dtype {
            DType::F16 => empty_vec::<f16>(bytes),
            DType::BF16 => empty_vec::<bf16>(bytes),
            DType::F32 => empty_vec::<f32>(bytes),
            DType::F64 => empty_vec::<f64>(bytes),
            DType::I64 => empty_vec::<i64>(bytes),
        }
    }
    fn free(&self, block: ElementVec, _bytes: usize) {
        drop(block);
    }
}

/// The dtype whose host elements `T` is, if any: the pool serves the
/// [`Element`] types and leaves every other `T` to the system.
fn dtype_of<T: 'static>() -> Option<DType> {
    let t = TypeId::of::<T>();
    [
        (TypeId::of::<f16>(), DType::F16),
        (TypeId::of::<bf16>(), DType::BF16),
        (TypeId::of::<f32>(), DType::F32),
        (TypeId::of::<f64>(), DType::F64),
        (TypeId::of::<i64>(), DType::I64),
    ]
    .into_iter()
    .find_map(|(id, dtype)| (id == t).then_some(dtype))
}

/// `v` tagged with its dtype, or back if `T` is not an [`Element`] type.
fn tag<T: 'static>(v: Vec<T>) -> std::result::Result<ElementVec, Vec<T>> {
    fn as_element<E: Element, T: 'static>(slot: &mut Option<Vec<T>>) -> Option<ElementVec> {
        (slot as &mut dyn Any).downcast_mut::<Option<Vec<E>>>().and_then(Option::take).map(E::tag)
    }
    let mut slot = Some(v);
    as_element::<f16, T>(&mut slot)
        .or_else(|| as_element::<bf16, T>(&mut slot))
        .or_else(|| as_element::<f32, T>(&mut slot))
        .or_else(|| as_element::<f64, T>(&mut slot))
        .or_else(|| as_element::<i64, T>(&mut slot))
        .ok_or_else(|| slot.take().unwrap_or_default())
}

/// The elements of `block` as `Vec<T>`, if they are of type `T`.
pub(super) fn untag<T: 'static>(block: ElementVec) -> Option<Vec<T>> {
    fn take<E: 'static, T: 'static>(v: Vec<E>) -> Option<Vec<T>> {
        let mut slot = Some(v);
        (&mut slot as &mut dyn Any).downcast_mut::<Option<Vec<T>>>().and_then(Option::take)
    }
    match block {
        ElementVec::F16(v) => take(v),
        ElementVec::BF16(v) => take(v),
        ElementVec::F32(v) => take(v),
        ElementVec::F64(v) => take(v),
        ElementVec::I64(v) => take(v),
    }
}

static POOL: LazyLock<CachingAllocator<HostMemory>> = LazyLock::new(|| CachingAllocator::with_cache_limit(HostMemory, DEFAULT_CACHE_LIMIT));

/// The buffers handed out and not yet back, by address: their dtype and size
/// class. A `Vec` is taken back only if it is one of them, so a user's `Vec`
/// (whose capacity may happen to be a size class) never enters the cache.
static HANDED_OUT: LazyLock<Mutex<HashMap<usize, (DType, usize)>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

fn handed_out() -> MutexGuard<'static, HashMap<usize, (DType, usize)>> {
    HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner())
}

/// An empty `Vec` with room for at least `len` elements, from the pool when
/// `T` is an element type (any other `T` comes from the system). If the
/// system refuses the memory even after the cache is emptied, this is
/// `Vec::with_capacity`, which reports the failure as every `Vec` does.
pub fn with_capacity<T: Copy + 'static>(len: usize) -> Vec<T> {
    match pooled_block::<T>(len) {
        Some(mut v) => {
            v.clear();
            v
        }
        None => Vec::with_capacity(len),
    }
}

/// A block of at least `len` elements of `T` from the pool, as it was given
/// back: its length is the number of elements it held then (0 for a block
/// fresh from the system). None when `T` is not an element type, for an empty
/// request, or when the system refuses the memory.
fn pooled_block<T: Copy + 'static>(len: usize) -> Option<Vec<T>> {
    let dtype = dtype_of::<T>()?;
    let bytes = len.checked_mul(std::mem::size_of::<T>())?;
    if len == 0 {
        return None;
    }
    let (block, class) = POOL.alloc(dtype, bytes).ok()?;
    // The free lists of `dtype` hold only `Vec<T>`s (`HostMemory` makes them
    // so and `recycle` returns them so); were it otherwise, a fresh `Vec` is
    // still a correct answer.
    let v = untag::<T>(block)?;
    handed_out().insert(v.as_ptr() as usize, (dtype, class));
    Some(v)
}

/// `len` elements from the pool holding whatever values their buffer held
/// when it was last given back (zeros past what it held), for a kernel that
/// writes every element of its output: the output needs no pass that zeroes
/// it first. Every bit pattern is a valid value of the element types, so the
/// old values are harmless to overwrite, but a kernel that leaves one
/// unwritten shows another tensor's value: such a kernel wants [`zeroed`].
///
/// v1 (`with_capacity`, each part zeroed by the task that then wrote it):
/// the zeroing was 4.5% of gpt-tiny's training step on 1 thread (perf,
/// `memset` under the GELU and LayerNorm outputs).
pub fn overwritable<T: Copy + Default + 'static>(len: usize) -> Vec<T> {
    let Some(mut v) = pooled_block::<T>(len) else {
        return vec![T::default(); len];
    };
    if v.len() >= len {
        v.truncate(len);
    } else {
        v.resize(len, T::default());
    }
    v
}

/// `len` zeros (`T::default()`) from the pool, for kernels that accumulate
/// into their output.
pub fn zeroed<T: Copy + Default + 'static>(len: usize) -> Vec<T> {
    filled(len, T::default())
}

/// `len` copies of `value` from the pool.
pub fn filled<T: Copy + 'static>(len: usize, value: T) -> Vec<T> {
    let mut v = with_capacity(len);
    v.resize(len, value);
    v
}

/// A copy of `src` in a buffer from the pool.
pub fn copied<T: Copy + 'static>(src: &[T]) -> Vec<T> {
    let mut v = with_capacity(src.len());
    v.extend_from_slice(src);
    v
}

/// Give a buffer back: to the pool if it came from it, else to the system.
pub fn recycle<T: Copy + 'static>(v: Vec<T>) {
    let Some(own_dtype) = dtype_of::<T>() else {
        return;
    };
    if v.capacity() == 0 {
        return;
    }
    let Some((dtype, class)) = handed_out().remove(&(v.as_ptr() as usize)) else {
        return;
    };
    if dtype != own_dtype || v.capacity() * std::mem::size_of::<T>() != class {
        // Not the block that was handed out at this address (it was grown and
        // moved, and another allocation took the address): the system frees
        // it, and the block it replaced is no longer in use.
        POOL.forget_in_use(class);
        return;
    }
    // The block keeps its length: its values are what `overwritable` hands
    // out in place of zeros.
    if let Ok(block) = tag(v) {
        POOL.release(dtype, block, class);
    }
}

/// Hand a buffer from the pool over to a caller that keeps it: it is no
/// longer counted in use and will go back to the system when dropped.
pub fn disown<T>(v: &Vec<T>) {
    if v.capacity() == 0 {
        return;
    }
    if let Some((_, class)) = handed_out().remove(&(v.as_ptr() as usize)) {
        POOL.forget_in_use(class);
    }
}

/// `collect()` into a buffer from the pool.
pub trait CollectPooled<T: Copy + 'static>: Iterator<Item = T> + Sized {
    /// The items in a pooled `Vec`, sized from the iterator's hint (a longer
    /// iterator grows it as `collect` would; the grown buffer then goes back to
    /// the system, not the pool).
    fn collect_pooled(self) -> Vec<T> {
        let (low, high) = self.size_hint();
        let mut v = with_capacity(high.unwrap_or(low));
        v.extend(self);
        v
    }
}

impl<T: Copy + 'static, I: Iterator<Item = T>> CollectPooled<T> for I {}

/// The pool's figures, in bytes of whole blocks: in use (held by live
/// tensors), the peak of that, cached (freed and kept for reuse), and how many
/// requests went to the system or were served from the cache.
pub fn memory_stats() -> MemoryStats {
    POOL.stats()
}

/// Start measuring the peak again from the bytes in use now.
pub fn reset_peak_memory() {
    POOL.reset_peak()
}

/// Give every cached buffer back to the system (buffers in use stay).
pub fn empty_cache() {
    POOL.empty_cache()
}

/// Keep at most `bytes` of freed buffers from now on; `0` turns caching off.
pub fn set_cache_limit(bytes: usize) {
    POOL.set_cache_limit(bytes)
}

/// Rayon's `collect()` into a buffer from the pool.
pub trait ParCollectPooled<T: Copy + Send + 'static>: rayon::iter::IndexedParallelIterator<Item = T> {
    /// The items, in order, in a pooled `Vec` of exactly their number.
    fn collect_pooled(self) -> Vec<T> {
        use rayon::iter::ParallelExtend;
        let mut v = with_capacity(self.len());
        v.par_extend(self);
        v
    }
}

impl<T: Copy + Send + 'static, I: rayon::iter::IndexedParallelIterator<Item = T>> ParCollectPooled<T> for I {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recycled_buffer_is_served_again_and_a_foreign_one_is_never_taken() {
        // bf16 buffers of this size class are asked for by no other test, so
        // its free list is this test's own even with tests running in parallel.
        const LEN: usize = 12_345; // 24,690 bytes: the 25,088-byte class
        let v = with_capacity::<bf16>(LEN);
        assert_eq!(v.capacity() * 2, 25_088);
        let block = v.as_ptr();
        recycle(v);
        let w = filled(LEN - 1, bf16::ONE);
        assert_eq!(w.as_ptr(), block, "the freed block serves the next request of its class");
        assert!(w.len() == LEN - 1 && w.iter().all(|&x| x == bf16::ONE));
        recycle(w);
        // A Vec the pool did not hand out, even one of exactly a class's size,
        // goes to the system: the free list still holds only the pool's block
        // (were the foreign one kept, it would be served first).
        let foreign: Vec<bf16> = Vec::with_capacity(25_088 / 2);
        recycle(foreign);
        let again = with_capacity::<bf16>(LEN);
        assert_eq!(again.as_ptr(), block);
        recycle(again);
        // A type that is no element type comes from the system.
        let words: Vec<u32> = zeroed(100);
        assert_eq!(words, vec![0; 100]);
        recycle(words);
        assert!(with_capacity::<f32>(0).capacity() == 0, "nothing is pooled for an empty request");
    }

    #[test]
    fn an_overwritable_buffer_holds_its_blocks_old_values_and_zeros_past_them() {
        // i64 buffers of this class (696,320 bytes) are this test's own.
        const LEN: usize = 87_001; // 696,008 bytes
        let first = overwritable::<i64>(LEN);
        let block = first.as_ptr();
        recycle(first);
        // A block that held 87,000 values serves 87,001: the old ones, then a zero.
        let old: Vec<i64> = (0..87_000).collect();
        let mut v = with_capacity::<i64>(LEN);
        assert_eq!(v.as_ptr(), block);
        v.extend_from_slice(&old);
        recycle(v);
        let w = overwritable::<i64>(LEN);
        assert_eq!(w.as_ptr(), block);
        assert_eq!(&w[..87_000], &old[..]);
        assert_eq!(w[87_000], 0);
        recycle(w);
        // Fewer than it held (the same class): the first ones.
        let w = overwritable::<i64>(86_990);
        assert_eq!(w.as_ptr(), block);
        assert_eq!(w, (0..86_990).collect::<Vec<i64>>());
        recycle(w);
        assert!(overwritable::<u32>(3) == vec![0; 3], "a type that is no element type is zeroed");
        assert!(overwritable::<f32>(0).is_empty());
    }
}
