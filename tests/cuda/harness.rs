//! What every CUDA parity test shares: the device (or the reason there is
//! none), the comparison, and the macro that runs one body on both devices.
//!
//! A test that cannot reach a working GPU skips visibly: a `SKIPPED` line on
//! stderr (past libtest's capture) with the reason and a running count.
//! Under `TAMER_REQUIRE_CUDA=1` (set by scripts/device-check.sh on the GPU
//! machine) the same situation fails the test instead, so a broken driver,
//! NVRTC or cuBLAS cannot pass as a green run of skipped tests.

use std::sync::OnceLock;
use tamer::backend::cuda::matmul::{with_backend, MatmulBackend};
use tamer::{Device, Result, Tensor};

#[path = "../shared/skip.rs"]
mod shared_skip;

/// Whether `TAMER_REQUIRE_CUDA` asks for a missing or broken CUDA to fail the
/// tests instead of skipping them.
pub fn cuda_required() -> bool {
    shared_skip::required("TAMER_REQUIRE_CUDA")
}

/// The calling test skips its work because of `reason`: a counted `SKIPPED`
/// line on stderr, or, under `TAMER_REQUIRE_CUDA=1`, a failure.
pub fn skip(reason: &str) {
    if cuda_required() {
        panic!("TAMER_REQUIRE_CUDA=1 but {reason}");
    }
    shared_skip::announce(reason);
}

/// The first CUDA device once it has shown that it works, or `None` after
/// [`skip`] with the reason it does not.
///
/// Opening the device is not enough: NVRTC and cuBLAS are loaded at first
/// use, so the probe also runs one compiled kernel and one cuBLAS product
/// and checks their values.
pub fn gpu() -> Option<Device> {
    static GPU: OnceLock<std::result::Result<Device, String>> = OnceLock::new();
    match GPU.get_or_init(probe_gpu) {
        Ok(d) => Some(*d),
        Err(reason) => {
            skip(reason);
            None
        }
    }
}

/// Open CUDA device 0, compile and run a kernel with NVRTC, run a cuBLAS product.
fn probe_gpu() -> std::result::Result<Device, String> {
    let dev = Device::cuda(0).map_err(|e| format!("no usable CUDA device ({e})"))?;
    let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]).map_err(|e| e.to_string())?;
    let on_gpu = x.to_device(dev).map_err(|e| format!("copying to {dev} failed ({e})"))?;
    let sum = on_gpu.add(&on_gpu).and_then(|t| t.to_vec::<f32>());
    match sum {
        Ok(v) if v == [2.0, 4.0, 6.0, 8.0] => {}
        Ok(v) => return Err(format!("a kernel compiled by NVRTC computed {v:?} for x + x with x = [1, 2, 3, 4]")),
        Err(e) => return Err(format!("a kernel compiled by NVRTC did not run ({e})")),
    }
    match with_backend(MatmulBackend::Cublas, || on_gpu.matmul(&on_gpu)).and_then(|t| t.to_vec::<f32>()) {
        Ok(v) if v == [7.0, 10.0, 15.0, 22.0] => Ok(dev),
        Ok(v) => Err(format!("cuBLAS computed {v:?} for [[1, 2], [3, 4]]²")),
        Err(e) => Err(format!("cuBLAS did not run ({e})")),
    }
}

/// Every tensor of `outputs` must live on `dev`: an op that falls back to the
/// host, or a test that forgets to move its inputs, would otherwise compare
/// the CPU with itself and pass.
pub fn check_devices(test: &str, dev: Device, outputs: &[Tensor]) -> std::result::Result<(), String> {
    match outputs.iter().position(|t| t.device() != dev) {
        None => Ok(()),
        Some(k) => Err(format!(
            "{test}: output {k} (shape {:?}) is on {}, expected {dev}",
            outputs[k].dims(),
            outputs[k].device()
        )),
    }
}

/// [`check_devices`] as an assertion.
pub fn assert_on(test: &str, dev: Device, outputs: &[Tensor]) {
    if let Err(msg) = check_devices(test, dev, outputs) {
        panic!("{msg}");
    }
}

/// `|cpu − cuda| / (atol + rtol·|cpu|)` must stay at or below 1 for every
/// element pair; shapes and dtypes must match. `what` names the test output.
pub fn assert_close(what: &str, cpu: &Tensor, cuda: &Tensor, atol: f64, rtol: f64) {
    assert_eq!(cpu.dims(), cuda.dims(), "{what}: shapes differ");
    assert_eq!(cpu.dtype(), cuda.dtype(), "{what}: dtypes differ");
    let a = cpu.to_f64_vec().expect("cpu values");
    let b = cuda.to_cpu().and_then(|t| t.to_f64_vec()).expect("cuda values");
    let mut worst = (0.0f64, 0usize);
    for (i, (&x, &y)) in a.iter().zip(&b).enumerate() {
        if x.is_nan() || y.is_nan() {
            assert!(x.is_nan() && y.is_nan(), "{what}: element {i}: cpu {x} vs cuda {y}");
            continue;
        }
        if x == y {
            continue; // equal infinities included
        }
        let ratio = (x - y).abs() / (atol + rtol * x.abs());
        if ratio > worst.0 {
            worst = (ratio, i);
        }
    }
    let i = worst.1;
    assert!(
        worst.0 <= 1.0,
        "{what}: element {i} of shape {:?}: cpu {} vs cuda {} (|diff| {:.3e}, atol {atol:e}, rtol {rtol:e})",
        cpu.dims(),
        a[i],
        b[i],
        (a[i] - b[i]).abs()
    );
}

/// Compare every output pair of a CPU run and a CUDA run.
pub fn assert_all_close(test: &str, cpu: &[Tensor], cuda: &[Tensor], atol: f64, rtol: f64) {
    assert_eq!(cpu.len(), cuda.len(), "{test}: the runs returned different numbers of outputs");
    for (k, (a, b)) in cpu.iter().zip(cuda).enumerate() {
        assert_close(&format!("{test}: output {k}"), a, b, atol, rtol);
    }
}

/// Run `body(device)` on the CPU and on the GPU and compare what it returns.
pub fn run_parity(test: &str, atol: f64, rtol: f64, body: impl Fn(Device) -> Result<Vec<Tensor>>) {
    let Some(gpu) = gpu() else { return };
    let cpu = body(Device::Cpu).unwrap_or_else(|e| panic!("{test}: the CPU run failed: {e}"));
    let cuda = body(gpu).unwrap_or_else(|e| panic!("{test}: the CUDA run failed: {e}"));
    assert_on(&format!("{test} (CPU run)"), Device::Cpu, &cpu);
    assert_on(&format!("{test} (CUDA run)"), gpu, &cuda);
    assert_all_close(test, &cpu, &cuda, atol, rtol);
}

/// One test body, two runs: `parity_test!(name, atol, rtol, |dev| { ... Ok(vec![outputs]) })`.
/// The body builds its inputs on the CPU from a seeded RNG and moves them to
/// `dev` (`x.to_device(dev)?`), so both runs see identical inputs; it returns
/// the tensors to compare (outputs, gradients ...).
#[macro_export]
macro_rules! parity_test {
    ($name:ident, $atol:expr, $rtol:expr, |$dev:ident| $body:block) => {
        #[test]
        fn $name() {
            $crate::harness::run_parity(
                stringify!($name),
                $atol,
                $rtol,
                |$dev: tamer::Device| -> tamer::Result<Vec<tamer::Tensor>> { $body },
            );
        }
    };
}

/// Seeded normal inputs of `dims` in f32 (f64 with `f64` set), on the CPU.
pub fn randn(dims: &[usize], seed: u64) -> Tensor {
    Tensor::randn(dims.to_vec(), tamer::DType::F32, &mut tamer::rng(seed)).expect("randn")
}
pub fn randn64(dims: &[usize], seed: u64) -> Tensor {
    Tensor::randn(dims.to_vec(), tamer::DType::F64, &mut tamer::rng(seed)).expect("randn")
}

/// The gradient of `t` in `g`, or an error if the backward pass left none.
pub fn grad(g: &tamer::GradStore, t: &Tensor) -> Result<Tensor> {
    g.get(t).cloned().ok_or_else(|| tamer::Error::autograd("test", "no gradient for a variable"))
}

/// Seeded normal values of `dtype` (drawn in f64, so both dtypes share them).
pub fn input(dims: &[usize], seed: u64, dtype: tamer::DType) -> Tensor {
    randn64(dims, seed).to_dtype(dtype).expect("to_dtype")
}

/// Small integers in -4..4, so that pooling windows tie.
pub fn coarse(dims: &[usize], seed: u64, dtype: tamer::DType) -> Tensor {
    let v: Vec<f64> = randn64(dims, seed)
        .to_vec::<f64>()
        .expect("values")
        .iter()
        .map(|x| (x * 2.0).round().clamp(-4.0, 4.0))
        .collect();
    Tensor::from_vec(v, dims.to_vec()).and_then(|t| t.to_dtype(dtype)).expect("coarse")
}

/// The gradients of `wrt` when `y` receives a seeded upstream gradient.
pub fn grads(y: &Tensor, seed: u64, wrt: &[&Tensor]) -> Result<Vec<Tensor>> {
    let g = input(y.dims(), seed, y.dtype()).to_device(y.device())?;
    let store = y.backward_with_grad(&g)?;
    wrt.iter()
        .map(|t| {
            store
                .get(t)
                .cloned()
                .ok_or_else(|| tamer::Error::value("test", format!("no gradient for a tensor of shape {}", t.shape())))
        })
        .collect()
}

/// Output, then gradients.
pub fn with_grads(y: Tensor, seed: u64, wrt: &[&Tensor]) -> Result<Vec<Tensor>> {
    let mut out = grads(&y, seed, wrt)?;
    out.insert(0, y);
    Ok(out)
}

/// Finite-difference gradient check of `f` with `inputs` moved to the GPU:
/// `check_gradients` then differentiates the CUDA kernels and takes the
/// central differences by re-running them on the device.
pub fn gradcheck_on_gpu(name: &str, inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    let Some(dev) = gpu() else { return };
    let inputs: Vec<Tensor> = inputs.iter().map(|t| t.to_device(dev).expect("to_device")).collect();
    let report = tamer::testing::check_gradients(f, &inputs, &tamer::testing::GradCheckConfig::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(report.failures, 0, "{name}: {report}");
    assert!(report.checked > 0, "{name}: nothing was checked");
}

/// The device check itself, without a GPU: a host tensor where the GPU was
/// asked for (the silent host fallback) is caught, empty outputs included.
#[test]
fn outputs_on_the_wrong_device_are_caught() {
    let host = randn(&[2, 3], 1);
    let empty = Tensor::zeros([0, 4], tamer::DType::F32).expect("zeros");
    assert_eq!(check_devices("t", Device::Cpu, &[host.clone(), empty.clone()]), Ok(()));
    let err = check_devices("t", Device::Cuda(0), &[host]).unwrap_err();
    assert!(err.contains("output 0 (shape [2, 3]) is on cpu, expected cuda:0"), "{err}");
    let err = check_devices("t", Device::Cuda(0), &[empty]).unwrap_err();
    assert!(err.contains("output 0 (shape [0, 4]) is on cpu"), "{err}");
}
