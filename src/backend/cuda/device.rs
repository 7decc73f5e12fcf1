//! One CUDA device: its context, its stream, its compiled modules and its
//! memory pool.
//!
//! Every kernel of a device is queued on one stream, so operations run in the
//! order the program issues them and no event bookkeeping is needed between
//! them (the caching allocator relies on this, see `backend::caching_alloc`).
//! The one other stream is NCCL's side stream for overlapped gradient sums
//! (`backend::nccl`), which touches only buffers that outlive its work and
//! is joined back into this one before they are read.
//! Host copies synchronise that stream before returning.

use super::kernels::{self, KernelSource};
use super::layout::StridedLayout;
use crate::backend::caching_alloc::{CachingAllocator, MemoryStats, RawMemory};
use crate::{Error, Result};
use cudarc::driver::{sys::CUdeviceptr, CudaContext, CudaFunction, CudaModule, CudaStream, LaunchConfig, PushKernelArg};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// The driver, behind the allocator's `RawMemory`.
struct DriverMemory {
    ctx: Arc<CudaContext>,
}

impl RawMemory for DriverMemory {
    type Block = u64;
    type Kind = ();
    const OP: &'static str = "cuda alloc";
    fn alloc(&self, _kind: (), bytes: usize) -> Result<u64> {
        self.ctx.bind_to_thread().map_err(|e| driver_error("cuda alloc", e))?;
        // SAFETY: a plain allocation in the bound context; the pointer is
        // owned by the caching allocator until `free`.
        unsafe { cudarc::driver::result::malloc_sync(bytes) }.map_err(|e| driver_error("cuda alloc", e).with_context(format!("{bytes} bytes")))
    }
    fn free(&self, ptr: u64, _bytes: usize) {
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: `ptr` came from `alloc` and no storage refers to it any more.
            // An error while freeing (a dying context at exit) leaves nothing to repair.
            let _ = unsafe { cudarc::driver::result::free_sync(ptr as CUdeviceptr) };
        }
    }
}

/// A CUDA device with its context, stream, module cache and memory pool.
pub struct CudaDevice {
    ordinal: usize,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: String,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<String, CudaFunction>>,
    alloc: CachingAllocator<DriverMemory>,
    name: String,
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaDevice(cuda:{}, {}, {})", self.ordinal, self.name, self.arch)
    }
}

pub(crate) fn driver_error(op: &'static str, e: cudarc::driver::DriverError) -> Error {
    Error::device(op, format!("CUDA driver error: {e:?}"))
}

trait WithContext {
    fn with_context(self, what: String) -> Self;
}
impl WithContext for Error {
    fn with_context(mut self, what: String) -> Self {
        self.message = format!("{} ({what})", self.message);
        self
    }
}

/// Why CUDA cannot be used here, or `Ok` if the driver library loads, NVRTC
/// loads and at least one device exists. Never panics: cudarc panics when a
/// library is missing, so the libraries are probed first.
pub fn availability() -> Result<usize> {
    // SAFETY: `is_culib_present` only tries to dlopen the library.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(Error::device(
            "cuda",
            "the CUDA driver library (libcuda.so) was not found: this machine has no NVIDIA driver, so CUDA tensors are unavailable",
        ));
    }
    if !kernels::nvrtc_available() {
        return Err(Error::device(
            "cuda",
            "NVRTC (libnvrtc.so) was not found: put the CUDA toolkit's lib64 directory on LD_LIBRARY_PATH (tamer compiles its kernels at first use)",
        ));
    }
    let count = CudaContext::device_count().map_err(|e| driver_error("cuda", e))?;
    if count <= 0 {
        return Err(Error::device("cuda", "the CUDA driver reports no device"));
    }
    Ok(count as usize)
}

static DEVICES: OnceLock<Mutex<HashMap<usize, Arc<CudaDevice>>>> = OnceLock::new();

/// The device with this ordinal, initialised at first use and shared after.
pub fn device(ordinal: usize) -> Result<Arc<CudaDevice>> {
    let map = DEVICES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(d) = map.get(&ordinal) {
        return Ok(d.clone());
    }
    let count = availability()?;
    if ordinal >= count {
        return Err(Error::device("cuda", format!("device cuda:{ordinal} does not exist: {count} device(s) found")));
    }
    let ctx = CudaContext::new(ordinal).map_err(|e| driver_error("cuda init", e))?;
    let (major, minor) = ctx.compute_capability().map_err(|e| driver_error("cuda init", e))?;
    let name = ctx.name().map_err(|e| driver_error("cuda init", e))?;
    let stream = ctx.default_stream();
    let dev = Arc::new(CudaDevice {
        ordinal,
        alloc: CachingAllocator::new(DriverMemory { ctx: ctx.clone() }),
        ctx,
        stream,
        arch: kernels::arch_name(major, minor),
        modules: Mutex::new(HashMap::new()),
        functions: Mutex::new(HashMap::new()),
        name,
    });
    map.insert(ordinal, dev.clone());
    crate::profile::register_device_sync(synchronize_all);
    Ok(dev)
}

/// Wait for the queued work of every device opened so far: the profiler
/// calls this around each op so that its clock sees the kernels finish. A
/// kernel fault is left for the next synchronising call of the op that
/// faulted to report.
fn synchronize_all() {
    let Some(map) = DEVICES.get() else { return };
    let devices: Vec<Arc<CudaDevice>> = map.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
    for d in devices {
        let _ = d.synchronize();
    }
}

/// A kernel argument. Pointers travel as `u64` (a `T*` parameter is 8 bytes).
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    Ptr(u64),
    I64(i64),
    I32(i32),
    U64(u64),
    F32(f32),
    F64(f64),
    Layout(StridedLayout),
}

impl CudaDevice {
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }
    /// The device's name as the driver reports it.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// `sm_XY`, what kernels are compiled for.
    pub fn arch(&self) -> &str {
        &self.arch
    }
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// Make this device's context current on the calling thread (any thread
    /// may issue work: rayon workers, the data loader's thread ...).
    pub(crate) fn bind(&self) -> Result<()> {
        self.ctx.bind_to_thread().map_err(|e| driver_error("cuda", e))
    }

    /// Wait until every queued kernel and copy has finished. Also surfaces an
    /// asynchronous kernel fault as an error.
    pub fn synchronize(&self) -> Result<()> {
        self.bind()?;
        self.stream.synchronize().map_err(|e| driver_error("cuda synchronize", e))
    }

    pub fn memory_stats(&self) -> MemoryStats {
        self.alloc.stats()
    }
    pub fn reset_peak_memory(&self) {
        self.alloc.reset_peak()
    }
    /// Return cached blocks to the driver (after a synchronisation, so no
    /// queued kernel still uses one).
    pub fn empty_cache(&self) -> Result<()> {
        self.synchronize()?;
        self.alloc.empty_cache();
        Ok(())
    }

    pub(crate) fn alloc_bytes(&self, bytes: usize) -> Result<(u64, usize)> {
        self.alloc.alloc((), bytes)
    }
    pub(crate) fn release_bytes(&self, ptr: u64, class: usize) {
        self.alloc.release((), ptr, class)
    }

    fn module(&self, src: &'static KernelSource) -> Result<Arc<CudaModule>> {
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = modules.get(src.name) {
            return Ok(m.clone());
        }
        let ptx = kernels::compile_ptx(src, &self.arch)?;
        self.bind()?;
        let module = self
            .ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
            .map_err(|e| driver_error("cuda load", e).with_context(format!("module cuda/{}.cu for {}", src.name, self.arch)))?;
        modules.insert(src.name, module.clone());
        Ok(module)
    }

    /// The kernel `name` of `src`'s module (compiled and loaded at first use).
    pub(crate) fn function(&self, src: &'static KernelSource, name: &str) -> Result<CudaFunction> {
        let key = format!("{}::{name}", src.name);
        if let Some(f) = self.functions.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(f.clone());
        }
        let module = self.module(src)?;
        let f = module
            .load_function(name)
            .map_err(|e| driver_error("cuda load", e).with_context(format!("kernel {name} in cuda/{}.cu", src.name)))?;
        self.functions.lock().unwrap_or_else(|p| p.into_inner()).insert(key, f.clone());
        Ok(f)
    }

    /// Queue kernel `name` of `src` with `args`. The launch's own error is
    /// checked here; a fault while the kernel runs surfaces at the next
    /// synchronisation (a host copy or `synchronize`).
    pub(crate) fn launch(&self, src: &'static KernelSource, name: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
        let f = self.function(src, name)?;
        self.bind()?;
        let mut b = self.stream.launch_builder(&f);
        for a in args {
            match a {
                Arg::Ptr(v) | Arg::U64(v) => b.arg(v),
                Arg::I64(v) => b.arg(v),
                Arg::I32(v) => b.arg(v),
                Arg::F32(v) => b.arg(v),
                Arg::F64(v) => b.arg(v),
                Arg::Layout(v) => b.arg(v),
            };
        }
        // SAFETY: every kernel's parameter list is documented beside it in
        // cuda/*.cu and mirrored by its caller in backend/cuda/*.rs; pointers
        // point into live device buffers held by the caller for the launch.
        unsafe { b.launch(cfg) }.map_err(|e| driver_error("cuda launch", e).with_context(format!("kernel {name} in cuda/{}.cu", src.name)))?;
        Ok(())
    }
}

/// Launch configuration for a grid-stride elementwise kernel over `n` elements.
pub fn elementwise_config(n: usize) -> LaunchConfig {
    const THREADS: u32 = 256;
    // Enough blocks to fill any current GPU several times over; the
    // grid-stride loop covers the rest.
    let blocks = n.div_ceil(THREADS as usize).clamp(1, 65_536) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block of `threads` per row, `rows` rows (rows beyond 2^31-1 are not
/// supported by the grid's x dimension: an error, never a wrong result).
pub fn rows_config(op: &'static str, rows: usize, threads: u32, shared_mem_bytes: u32) -> Result<LaunchConfig> {
    if rows > i32::MAX as usize {
        return Err(Error::shape(op, format!("{rows} rows exceed the CUDA grid limit of 2^31-1 blocks")));
    }
    Ok(LaunchConfig {
        grid_dim: (rows.max(1) as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes,
    })
}
