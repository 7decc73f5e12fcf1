//! Finite-difference gradient checks run on the GPU: `check_gradients` with
//! f64 CUDA inputs differentiates the CUDA kernels and takes the central
//! differences by re-running them on the device.

use crate::harness::{gpu, randn64};
use tamer::backend::cuda::nn::attention::{with_attention_impl, AttentionImpl};
use tamer::testing::{check_gradients, GradCheckConfig};
use tamer::{AttnMask, CausalAlign, Result, Tensor};

fn check(name: &str, inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    let Some(dev) = gpu() else { return };
    let inputs: Vec<Tensor> = inputs.iter().map(|t| t.to_device(dev).expect("to_device")).collect();
    let report = check_gradients(f, &inputs, &GradCheckConfig::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(report.failures, 0, "{name}: {report}");
    assert!(report.checked > 0);
}

#[test]
fn unary_and_binary_with_broadcasting() {
    check("gelu * exp + broadcast", &[randn64(&[3, 4], 1), randn64(&[4], 2)], |x| {
        x[0].gelu()?.mul(&x[1].exp()?)?.add(&x[1])?.tanh()
    });
}

#[test]
fn permuted_inputs_and_reductions() {
    check("sum/max over a permuted view", &[randn64(&[3, 5, 2], 3)], |x| {
        let p = x[0].permute(&[2, 0, 1])?;
        p.sum(&[1], false)?.add(&p.max(&[2], true)?.sum(&[2], false)?)
    });
}

#[test]
fn matmul_softmax_layer_norm() {
    check(
        "layer_norm(softmax(a @ b))",
        &[randn64(&[2, 4, 3], 4), randn64(&[3, 5], 5), randn64(&[5], 6)],
        |x| x[0].matmul(&x[1])?.softmax(-1)?.layer_norm(Some(&x[2]), None, 1e-5),
    );
}

#[test]
fn cross_entropy_with_label_smoothing() {
    let targets = Tensor::from_indices(&[0, 3, 2, 1]);
    check("cross_entropy", &[randn64(&[4, 5], 7)], |x| {
        let t = targets.to_device(x[0].device())?;
        x[0].cross_entropy(
            &t,
            tamer::ops::nn::cross_entropy::CrossEntropyOptions {
                label_smoothing: 0.1,
                ..Default::default()
            },
        )
    });
}

#[test]
fn attention_causal() {
    // Both alignments, with fewer and with more queries than keys (bottom-right
    // over 5 queries and 3 keys leaves two queries without a key), on the f64
    // composite graph (the default for f64) and on the f64 reference kernels.
    for imp in [AttentionImpl::Composite, AttentionImpl::Reference] {
        for (tq, tk) in [(5, 5), (3, 5), (5, 3)] {
            for align in [CausalAlign::TopLeft, CausalAlign::BottomRight] {
                with_attention_impl(imp, || {
                    check(
                        &format!("scaled_dot_product_attention {imp:?} {align:?} Tq {tq} Tk {tk}"),
                        &[randn64(&[2, tq, 4], 8), randn64(&[2, tk, 4], 9), randn64(&[2, tk, 4], 10)],
                        |x| x[0].scaled_dot_product_attention(&x[1], &x[2], AttnMask::Causal(align), None),
                    )
                });
            }
        }
    }
}

#[test]
fn embedding_and_conv() {
    let ids = Tensor::from_indices(&[2, 0, 2, 1]);
    check("index_select", &[randn64(&[3, 4], 11)], |x| {
        x[0].index_select(0, &ids.to_device(x[0].device())?)
    });
    check("conv2d", &[randn64(&[1, 2, 5, 5], 12), randn64(&[3, 2, 3, 3], 13)], |x| {
        x[0].conv2d(&x[1], None, (1, 1), (1, 1))
    });
}
