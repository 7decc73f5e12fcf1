//! GradScaler on the GPU: an f16 autocast step with loss scaling unscales to
//! finite gradients (the scaler's arithmetic is tested on the CPU in
//! tests/integration/grad_scaler.rs).

use crate::autocast::{all_finite, tiny_model_step};
use crate::harness::gpu;
use tamer::optim::GradScaler;
use tamer::DType;

#[test]
fn f16_autocast_step_with_loss_scaling_unscales_to_finite_gradients() {
    let Some(dev) = gpu() else { return };
    // The scaled backward unscales to finite gradients.
    // (A modest scale: at 65536 an f16 product of the scaled gradient could
    // overflow, which the scaler would handle by skipping, not what this tests.)
    let scaler = GradScaler::with_config(1024.0, 2.0, 0.5, 2000).unwrap();
    let (_, mut grads, params) = tiny_model_step(dev, DType::F16, Some(&scaler)).unwrap();
    assert!(!scaler.unscale_and_check(&mut grads).unwrap(), "no inf/NaN at scale 1024");
    for p in &params {
        assert!(all_finite(grads.get(p).unwrap()));
    }
}
