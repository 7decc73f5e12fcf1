//! The fused optimizer loops against plain tensor-op implementations of the
//! same PyTorch formulas, over random shapes, dtypes and layouts (strided
//! parameters and gradients), plus parameters large enough to take the
//! threaded path.

use proptest::prelude::*;
use tamer::nn::Param;
use tamer::optim::{Adam, AdamConfig, DecayRule, Optimizer, Sgd, SgdConfig};
use tamer::testing::proptest_config;
use tamer::testing::strategies::{shape, tensor_with_dtype, view_kind, ViewKind};
use tamer::{DType, GradStore, Tensor};

#[derive(Clone, Copy, Debug)]
enum Kind {
    Sgd { momentum: f64, dampening: f64, nesterov: bool, wd: f64 },
    Adam { wd: f64, decoupled: bool, amsgrad: bool },
}

const KINDS: [Kind; 9] = [
    Kind::Sgd {
        momentum: 0.0,
        dampening: 0.0,
        nesterov: false,
        wd: 0.1,
    },
    Kind::Sgd {
        momentum: 0.9,
        dampening: 0.0,
        nesterov: true,
        wd: 0.0,
    },
    Kind::Sgd {
        momentum: 0.0,
        dampening: 0.0,
        nesterov: false,
        wd: 0.0,
    },
    Kind::Sgd {
        momentum: 0.9,
        dampening: 0.2,
        nesterov: false,
        wd: 0.01,
    },
    Kind::Sgd {
        momentum: 0.8,
        dampening: 0.0,
        nesterov: true,
        wd: 0.1,
    },
    Kind::Adam {
        wd: 0.0,
        decoupled: false,
        amsgrad: false,
    },
    Kind::Adam {
        wd: 0.1,
        decoupled: false,
        amsgrad: true,
    },
    Kind::Adam {
        wd: 0.1,
        decoupled: true,
        amsgrad: false,
    },
    Kind::Adam {
        wd: 0.05,
        decoupled: true,
        amsgrad: true,
    },
];
const LR: f64 = 0.05;
const BETAS: (f64, f64) = (0.9, 0.99);
const EPS: f64 = 1e-8;

/// One parameter's state in the reference implementation.
#[derive(Default)]
struct RefState {
    step: u64,
    buf: Option<Tensor>,
    m: Option<Tensor>,
    v: Option<Tensor>,
    vmax: Option<Tensor>,
}

/// torch.optim's single-tensor updates, written with tensor ops.
fn reference_step(kind: Kind, p: &Tensor, g: &Tensor, st: &mut RefState) -> Tensor {
    match kind {
        Kind::Sgd {
            momentum,
            dampening,
            nesterov,
            wd,
        } => {
            let mut d = if wd != 0.0 { g.add(&p.scale(wd).unwrap()).unwrap() } else { g.clone() };
            if momentum != 0.0 {
                let b = match &st.buf {
                    None => d.clone(),
                    Some(b) => b.scale(momentum).unwrap().add(&d.scale(1.0 - dampening).unwrap()).unwrap(),
                };
                st.buf = Some(b.clone());
                d = if nesterov { d.add(&b.scale(momentum).unwrap()).unwrap() } else { b };
            }
            p.sub(&d.scale(LR).unwrap()).unwrap()
        }
        Kind::Adam { wd, decoupled, amsgrad } => {
            st.step += 1;
            let t = st.step as f64;
            let (mut p, mut g) = (p.clone(), g.clone());
            if wd != 0.0 {
                if decoupled {
                    p = p.scale(1.0 - LR * wd).unwrap();
                } else {
                    g = g.add(&p.scale(wd).unwrap()).unwrap();
                }
            }
            let zeros = || g.zeros_like().unwrap();
            let m = st.m.take().unwrap_or_else(zeros);
            let m = m.add(&g.sub(&m).unwrap().scale(1.0 - BETAS.0).unwrap()).unwrap();
            let v = st.v.take().unwrap_or_else(zeros);
            let v = v.scale(BETAS.1).unwrap().add(&g.square().unwrap().scale(1.0 - BETAS.1).unwrap()).unwrap();
            let vv = if amsgrad {
                let x = st.vmax.take().unwrap_or_else(zeros).maximum(&v).unwrap();
                st.vmax = Some(x.clone());
                x
            } else {
                v.clone()
            };
            let bc1 = 1.0 - BETAS.0.powf(t);
            let bc2_sqrt = (1.0 - BETAS.1.powf(t)).sqrt();
            let denom = vv.sqrt().unwrap().scale(1.0 / bc2_sqrt).unwrap().add_scalar(EPS).unwrap();
            let p = p.sub(&m.div(&denom).unwrap().scale(LR / bc1).unwrap()).unwrap();
            st.m = Some(m);
            st.v = Some(v);
            p
        }
    }
}

fn optimizer(kind: Kind, params: Vec<(String, Param)>) -> Box<dyn Optimizer> {
    match kind {
        Kind::Sgd {
            momentum,
            dampening,
            nesterov,
            wd,
        } => {
            let cfg = SgdConfig::new(LR).momentum(momentum).dampening(dampening).nesterov(nesterov).weight_decay(wd);
            Box::new(Sgd::new(params, cfg.decay_rule(DecayRule::Torch)).unwrap())
        }
        Kind::Adam { wd, decoupled, amsgrad } => {
            let base = if decoupled { AdamConfig::adamw(LR) } else { AdamConfig::adam(LR) };
            let cfg = base
                .betas(BETAS.0, BETAS.1)
                .eps(EPS)
                .weight_decay(wd)
                .amsgrad(amsgrad)
                .decay_rule(DecayRule::Torch);
            Box::new(Adam::new(params, cfg).unwrap())
        }
    }
}

/// ‖a − b‖∞ / ‖b‖∞
fn normwise(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap());
    let scale = b.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-30);
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max) / scale
}

/// Run `steps` steps of the fused optimizer on a parameter laid out as
/// `p_kind` with gradients laid out as `g_kind`, and of the reference; returns
/// the normwise error after each step.
fn compare(kind: Kind, dims: &[usize], dtype: DType, p_kind: ViewKind, g_kind: ViewKind, seed: u64, steps: u64) -> Vec<f64> {
    let init = tensor_with_dtype(dims, p_kind, seed, dtype);
    let param = Param::new(init.clone());
    let mut opt = optimizer(kind, vec![("p".into(), param.clone())]);
    let mut reference = init.contiguous().unwrap().scale(1.0).unwrap();
    let mut st = RefState::default();
    let mut errors = Vec::new();
    for k in 0..steps {
        // Raw strided values in [-2, 2): some near 0, where eps matters.
        let g = tensor_with_dtype(dims, g_kind, seed ^ (1000 + k), dtype);
        let mut grads = GradStore::default();
        grads.insert(&param.tensor(), g.clone());
        opt.step(&grads).unwrap();
        reference = reference_step(kind, &reference, &g, &mut st);
        errors.push(normwise(&param.tensor(), &reference));
    }
    errors
}

fn tolerance(dtype: DType) -> f64 {
    if dtype == DType::F32 {
        2e-6
    } else {
        1e-13
    }
}

proptest! {
    #![proptest_config(proptest_config(48))]
    #[test]
    fn fused_updates_match_tensor_op_reference(
        dims in shape(1..=3, 1..=6),
        kind in 0..KINDS.len(),
        f32 in any::<bool>(),
        p_kind in view_kind(),
        g_kind in view_kind(),
        seed in any::<u64>(),
    ) {
        let dtype = if f32 { DType::F32 } else { DType::F64 };
        let errors = compare(KINDS[kind], &dims, dtype, p_kind, g_kind, seed, 4);
        for (k, e) in errors.iter().enumerate() {
            prop_assert!(*e <= tolerance(dtype), "{:?} {dims:?} {dtype} {p_kind:?}/{g_kind:?}: step {k} error {e:.3e}", KINDS[kind]);
        }
    }
}

#[test]
fn large_parameters_take_the_threaded_path_and_still_match() {
    // 2^15 elements is the threading threshold; this is well above it and not a multiple of the chunk.
    for kind in KINDS {
        for dtype in [DType::F32, DType::F64] {
            let errors = compare(kind, &[211, 397], dtype, ViewKind::Contiguous, ViewKind::Contiguous, 7, 3);
            assert!(errors.iter().all(|e| *e <= tolerance(dtype)), "{kind:?} {dtype}: {errors:?}");
        }
    }
}

#[test]
fn strided_parameter_updates_only_its_own_elements() {
    // A parameter that is a column of a larger matrix: the other columns must not move.
    let big = Tensor::from_vec((0..12).map(|x| x as f64).collect::<Vec<_>>(), [4, 3]).unwrap();
    let col = big.narrow(1, 1, 1).unwrap().squeeze(1).unwrap();
    assert!(!col.is_contiguous());
    let p = Param::new(col);
    let mut opt = Adam::new(vec![("col".into(), p.clone())], AdamConfig::adam(0.5)).unwrap();
    let mut grads = GradStore::default();
    grads.insert(&p.tensor(), Tensor::from_vec(vec![1.0f64, -1.0, 1.0, -1.0], [4]).unwrap());
    opt.step(&grads).unwrap();
    let after = big.to_vec2::<f64>().unwrap();
    for (r, row) in after.iter().enumerate() {
        assert_eq!((row[0], row[2]), ((3 * r) as f64, (3 * r + 2) as f64));
        let sign = if r % 2 == 0 { -1.0 } else { 1.0 };
        assert!((row[1] - ((3 * r + 1) as f64 + sign * 0.5)).abs() < 1e-7, "row {r}: {row:?}");
    }
}
