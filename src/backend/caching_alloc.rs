//! A caching allocator for device memory.
//!
//! `cuMemAlloc`/`cuMemFree` synchronise the device and cost tens of
//! microseconds; a training step frees and re-allocates the same few hundred
//! buffer sizes every iteration. So freed blocks are kept in free lists keyed
//! by a *size class* and handed out again (PyTorch's CUDA allocator rests on
//! the same idea). Every kernel of a device runs on that device's one stream,
//! in order, so a block freed after the kernels that used it were *queued* can
//! be reused by kernels queued later without any event bookkeeping.
//!
//! The CPU backend keeps its buffers in the same allocator (`backend::cpu::alloc`):
//! there a fresh buffer costs page faults and the kernel zeroing every page,
//! 11–19% of a training step before it was pooled.
//!
//! The allocator is generic over [`RawMemory`], the thing that really
//! allocates, so its policy is unit-tested on the host with a fake memory.

use crate::{Error, Result};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

/// Where blocks really come from: the driver on a GPU, the system allocator
/// on the host, a fake in tests.
pub trait RawMemory: Send + Sync {
    /// One block as the memory hands it out: a device address, a host `Vec`.
    type Block: Send;
    /// What blocks are told apart by besides their size: `()` where bytes are
    /// bytes (a device), the element type where a block is a typed `Vec` (the host).
    type Kind: Copy + Eq + Hash + Send;
    /// The operation errors are reported under, such as `"cuda alloc"`.
    const OP: &'static str;
    /// Allocate a block of `kind` and `bytes` bytes.
    fn alloc(&self, kind: Self::Kind, bytes: usize) -> Result<Self::Block>;
    /// Give a block back.
    fn free(&self, block: Self::Block, bytes: usize);
}

/// Bytes per small block granule; every block is a multiple of it, which also
/// keeps every block 512-byte aligned for vector loads.
const SMALL_GRANULE: usize = 512;
/// Blocks above this are rounded to `LARGE_GRANULE` instead.
const SMALL_LIMIT: usize = 1 << 20;
const LARGE_GRANULE: usize = 2 << 20;

/// The size class a request of `bytes` is served from: the block size really
/// allocated. Small requests round up to 512 B, large ones to 2 MiB, so a
/// freed block serves every request of the same class.
pub fn size_class(bytes: usize) -> usize {
    let bytes = bytes.max(1);
    if bytes <= SMALL_LIMIT {
        bytes.div_ceil(SMALL_GRANULE) * SMALL_GRANULE
    } else {
        bytes.div_ceil(LARGE_GRANULE) * LARGE_GRANULE
    }
}

/// What the allocator holds, in bytes of whole blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Blocks handed out and not yet returned.
    pub bytes_in_use: usize,
    /// The most `bytes_in_use` has been since the allocator was made (or the
    /// peak was reset).
    pub peak_bytes_in_use: usize,
    /// Blocks returned and kept for reuse.
    pub bytes_cached: usize,
    /// Blocks that had to come from the raw memory.
    pub raw_allocations: u64,
    /// Requests served from the cache.
    pub reuses: u64,
}

struct Pool<M: RawMemory> {
    free: HashMap<(M::Kind, usize), Vec<M::Block>>,
    stats: MemoryStats,
    /// The most bytes the free lists may hold; a block returned beyond it goes
    /// back to the raw memory.
    cache_limit: usize,
}

/// Free lists by kind and size class over a [`RawMemory`].
pub struct CachingAllocator<M: RawMemory> {
    raw: M,
    pool: Mutex<Pool<M>>,
}

impl<M: RawMemory> CachingAllocator<M> {
    /// An allocator whose cache is bounded only by [`empty_cache`](Self::empty_cache)
    /// and the out-of-memory retry (a device's memory is all its own).
    pub fn new(raw: M) -> Self {
        Self::with_cache_limit(raw, usize::MAX)
    }

    /// An allocator that keeps at most `cache_limit` bytes of returned blocks.
    pub fn with_cache_limit(raw: M, cache_limit: usize) -> Self {
        CachingAllocator {
            raw,
            pool: Mutex::new(Pool {
                free: HashMap::new(),
                stats: MemoryStats::default(),
                cache_limit,
            }),
        }
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Pool<M>> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A block of `kind` and at least `bytes` bytes: `(block, block size)`. On an
    /// out-of-memory error the cache is emptied and the allocation tried once
    /// more, so cached blocks of other sizes never cause a spurious failure.
    pub fn alloc(&self, kind: M::Kind, bytes: usize) -> Result<(M::Block, usize)> {
        let class = size_class(bytes);
        let mut pool = self.pool();
        if let Some(block) = pool.free.get_mut(&(kind, class)).and_then(|v| v.pop()) {
            pool.stats.bytes_cached -= class;
            pool.stats.reuses += 1;
            Self::note_in_use(&mut pool.stats, class);
            return Ok((block, class));
        }
        let block = match self.raw.alloc(kind, class) {
            Ok(b) => b,
            Err(first) => {
                self.release_cached(&mut pool);
                self.raw.alloc(kind, class).map_err(|e| {
                    Error::device(
                        M::OP,
                        format!(
                            "{} (after emptying the cache; {} bytes in use; first attempt: {})",
                            e.message, pool.stats.bytes_in_use, first.message
                        ),
                    )
                })?
            }
        };
        pool.stats.raw_allocations += 1;
        Self::note_in_use(&mut pool.stats, class);
        Ok((block, class))
    }

    fn note_in_use(stats: &mut MemoryStats, class: usize) {
        stats.bytes_in_use += class;
        stats.peak_bytes_in_use = stats.peak_bytes_in_use.max(stats.bytes_in_use);
    }

    /// Return a block of `kind` from [`alloc`](Self::alloc) to the cache, or
    /// to the raw memory if the cache would grow beyond its limit.
    pub fn release(&self, kind: M::Kind, block: M::Block, class: usize) {
        let mut pool = self.pool();
        pool.stats.bytes_in_use = pool.stats.bytes_in_use.saturating_sub(class);
        if pool.stats.bytes_cached + class > pool.cache_limit {
            drop(pool);
            self.raw.free(block, class);
            return;
        }
        pool.stats.bytes_cached += class;
        pool.free.entry((kind, class)).or_default().push(block);
    }

    /// A block from [`alloc`](Self::alloc) that its owner gave to the raw
    /// memory itself: no longer in use, and not cached.
    pub fn forget_in_use(&self, class: usize) {
        let mut pool = self.pool();
        pool.stats.bytes_in_use = pool.stats.bytes_in_use.saturating_sub(class);
    }

    fn release_cached(&self, pool: &mut Pool<M>) {
        for ((_, class), blocks) in pool.free.drain() {
            for b in blocks {
                self.raw.free(b, class);
            }
        }
        pool.stats.bytes_cached = 0;
    }

    /// Keep at most `bytes` of returned blocks from now on (blocks cached
    /// beyond it are given back at once).
    pub fn set_cache_limit(&self, bytes: usize) {
        let mut pool = self.pool();
        pool.cache_limit = bytes;
        if pool.stats.bytes_cached > bytes {
            self.release_cached(&mut pool);
        }
    }

    /// Give every cached block back to the raw memory (blocks in use stay).
    pub fn empty_cache(&self) {
        let mut pool = self.pool();
        self.release_cached(&mut pool);
    }

    pub fn stats(&self) -> MemoryStats {
        self.pool().stats
    }

    /// Start measuring the peak again from the bytes in use now.
    pub fn reset_peak(&self) {
        let mut pool = self.pool();
        pool.stats.peak_bytes_in_use = pool.stats.bytes_in_use;
    }
}

impl<M: RawMemory> Drop for CachingAllocator<M> {
    fn drop(&mut self) {
        self.empty_cache();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    /// Hands out increasing fake addresses and counts live bytes; fails above a capacity.
    struct FakeMemory {
        next: AtomicU64,
        live: AtomicUsize,
        capacity: usize,
    }
    impl FakeMemory {
        fn new(capacity: usize) -> Self {
            FakeMemory {
                next: AtomicU64::new(4096),
                live: AtomicUsize::new(0),
                capacity,
            }
        }
    }
    impl RawMemory for &FakeMemory {
        type Block = u64;
        type Kind = ();
        const OP: &'static str = "fake alloc";
        fn alloc(&self, _kind: (), bytes: usize) -> Result<u64> {
            if self.live.load(Ordering::SeqCst) + bytes > self.capacity {
                return Err(Error::device("fake alloc", format!("out of memory allocating {bytes} bytes")));
            }
            self.live.fetch_add(bytes, Ordering::SeqCst);
            Ok(self.next.fetch_add(bytes as u64, Ordering::SeqCst))
        }
        fn free(&self, _ptr: u64, bytes: usize) {
            self.live.fetch_sub(bytes, Ordering::SeqCst);
        }
    }

    #[test]
    fn size_classes_round_small_and_large_requests() {
        assert_eq!(size_class(0), 512);
        assert_eq!(size_class(1), 512);
        assert_eq!(size_class(512), 512);
        assert_eq!(size_class(513), 1024);
        assert_eq!(size_class(1 << 20), 1 << 20);
        assert_eq!(size_class((1 << 20) + 1), 2 << 20);
        assert_eq!(size_class((5 << 20) + 3), 6 << 20);
    }

    #[test]
    fn freed_blocks_are_reused_by_size_class() {
        let mem = FakeMemory::new(1 << 30);
        let a = CachingAllocator::new(&mem);
        let (p1, c1) = a.alloc((), 1000).unwrap();
        assert_eq!(c1, 1024);
        a.release((), p1, c1);
        let (p2, _) = a.alloc((), 700).unwrap(); // same class: the same block
        assert_eq!(p2, p1);
        let (p3, c3) = a.alloc((), 3000).unwrap(); // another class: a new block
        assert_ne!(p3, p1);
        let s = a.stats();
        assert_eq!((s.raw_allocations, s.reuses), (2, 1));
        assert_eq!(s.bytes_in_use, 1024 + c3);
        assert_eq!(s.bytes_cached, 0);
        a.release((), p2, 1024);
        a.release((), p3, c3);
        let s = a.stats();
        assert_eq!((s.bytes_in_use, s.bytes_cached, s.peak_bytes_in_use), (0, 1024 + c3, 1024 + c3));
        assert_eq!(mem.live.load(Ordering::SeqCst), 1024 + c3, "cached blocks stay allocated");
        a.empty_cache();
        assert_eq!(mem.live.load(Ordering::SeqCst), 0);
        assert_eq!(a.stats().bytes_cached, 0);
    }

    #[test]
    fn steady_training_loop_allocates_nothing_new() {
        let mem = FakeMemory::new(1 << 30);
        let a = CachingAllocator::new(&mem);
        let sizes = [4096usize, 128, 1 << 21, 4096, 77];
        for _step in 0..50 {
            let blocks: Vec<_> = sizes.iter().map(|&s| a.alloc((), s).unwrap()).collect();
            for (p, c) in blocks {
                a.release((), p, c);
            }
        }
        assert_eq!(a.stats().raw_allocations, sizes.len() as u64);
    }

    #[test]
    fn out_of_memory_empties_the_cache_and_retries() {
        let mem = FakeMemory::new(4 << 20);
        let a = CachingAllocator::new(&mem);
        let (p, c) = a.alloc((), 3 << 20).unwrap(); // a 4 MiB block
        a.release((), p, c);
        // A different class does not fit beside the cached block: the cache is emptied.
        let (q, d) = a.alloc((), 1 << 20).unwrap();
        assert_eq!(a.stats().bytes_cached, 0);
        a.release((), q, d);
        // Truly too large: an error naming the sizes, not a panic.
        let err = a.alloc((), 64 << 20).unwrap_err();
        assert!(err.message.contains("out of memory"), "{err}");
    }

    #[test]
    fn peak_can_be_reset() {
        let mem = FakeMemory::new(1 << 30);
        let a = CachingAllocator::new(&mem);
        let (p, c) = a.alloc((), 10_000).unwrap();
        a.release((), p, c);
        assert_eq!(a.stats().peak_bytes_in_use, c);
        a.reset_peak();
        assert_eq!(a.stats().peak_bytes_in_use, 0);
    }
}
