//! The process group's parts that need neither MPI nor a GPU: which devices
//! a group exchanges on, and NCCL refused where it cannot run. (Several
//! ranks are in tests/mpi; NCCL on a GPU in tests/cuda/dist.rs.)

use tamer::dist::ProcessGroup;

#[test]
fn a_group_without_a_gpu_backend_exchanges_on_the_cpu_only() {
    let pg = ProcessGroup::single();
    assert_eq!(pg.gpu_backend_name(), None);
    assert!(pg.exchanges_on(tamer::Device::Cpu));
    assert!(!pg.exchanges_on(tamer::Device::Cuda(0)));
    assert!(format!("{pg:?}").contains("gpu backend: none"), "{pg:?}");
}

/// NCCL on a machine without it is an error that says what is missing, and
/// NCCL on the CPU is refused; neither panics (cudarc would, if asked to
/// load a library that is not there).
#[cfg(feature = "nccl")]
#[test]
fn nccl_without_a_gpu_or_the_library_is_an_error() {
    let e = ProcessGroup::single().with_nccl(tamer::Device::Cpu).unwrap_err();
    assert_eq!(e.op, "ProcessGroup::with_nccl");
    assert!(e.message.contains("NCCL exchanges CUDA tensors; got device cpu"), "{e}");
    match ProcessGroup::single().with_nccl(tamer::Device::Cuda(0)) {
        Ok(pg) => assert_eq!(pg.gpu_backend_name(), Some("nccl")),
        Err(e) => {
            let why = e.to_string();
            assert!(why.contains("libcuda.so") || why.contains("libnvrtc") || why.contains("libnccl.so"), "{why}");
        }
    }
}
