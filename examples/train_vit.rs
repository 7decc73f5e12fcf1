//! The main job. Until the trainer and the ViT land (the model-zoo and trainer
//! issues), this trains a two-layer MLP on the vendored 8×8 digits with Adam and
//! label smoothing, and prints the test accuracy. The name stays: it becomes
//! the ViT trainer.
//!
//! ```sh
//! cargo run --release --example train_vit -- --epochs 40 --hidden 128 --lr 3e-3 --seed 0
//! ```

use std::time::Instant;
use tamer::data::digits;
use tamer::ops::nn::cross_entropy::CrossEntropyOptions;
use tamer::{no_grad, rng, DType, GradStore, Tensor};

struct Args {
    epochs: usize,
    hidden: usize,
    batch_size: usize,
    lr: f64,
    seed: u64,
}

const USAGE: &str = "usage: train_vit [--epochs N] [--hidden N] [--batch-size N] [--lr X] [--seed N]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        epochs: 40,
        hidden: 128,
        batch_size: 32,
        lr: 3e-3,
        seed: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}\n  --epochs      passes over the training set (default 40)\n  --hidden      hidden width (default 128)\n  --batch-size  examples per step (default 32)\n  --lr          Adam learning rate (default 3e-3)\n  --seed        initialisation and shuffling seed (default 0)");
            std::process::exit(0);
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |what: &str| format!("{flag} {value:?}: expected {what}\n{USAGE}");
        match flag.as_str() {
            "--epochs" => args.epochs = value.parse().map_err(|_| bad("a whole number"))?,
            "--hidden" => args.hidden = value.parse().ok().filter(|&h| h > 0).ok_or_else(|| bad("a positive whole number"))?,
            "--batch-size" => args.batch_size = value.parse().ok().filter(|&b| b > 0).ok_or_else(|| bad("a positive whole number"))?,
            "--lr" => {
                args.lr = value
                    .parse()
                    .ok()
                    .filter(|&l: &f64| l > 0.0 && l.is_finite())
                    .ok_or_else(|| bad("a positive number"))?
            }
            "--seed" => args.seed = value.parse().map_err(|_| bad("a whole number"))?,
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    Ok(args)
}

/// Adam (Kingma & Ba) with bias correction, kept minimal until `tamer::optim` exists.
struct Adam {
    lr: f64,
    step: i32,
    moments: Vec<(Tensor, Tensor)>,
}

impl Adam {
    fn new(params: &[Tensor], lr: f64) -> tamer::Result<Self> {
        let moments = params.iter().map(|p| Ok((p.zeros_like()?, p.zeros_like()?))).collect::<tamer::Result<_>>()?;
        Ok(Adam { lr, step: 0, moments })
    }
    fn update(&mut self, params: &[Tensor], grads: &GradStore) -> tamer::Result<()> {
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
        self.step += 1;
        let (c1, c2) = (1.0 - b1.powi(self.step), 1.0 - b2.powi(self.step));
        no_grad(|| {
            for (p, (m, v)) in params.iter().zip(&self.moments) {
                let Some(g) = grads.get(p) else { continue };
                m.assign(&m.scale(b1)?.add(&g.scale(1.0 - b1)?)?)?;
                v.assign(&v.scale(b2)?.add(&g.square()?.scale(1.0 - b2)?)?)?;
                let denom = v.scale(1.0 / c2)?.sqrt()?.add_scalar(eps)?;
                p.assign(&p.sub(&m.scale(self.lr / c1)?.div(&denom)?)?)?;
            }
            Ok(())
        })
    }
}

fn accuracy(logits: &Tensor, labels: &Tensor) -> tamer::Result<f64> {
    let pred = logits.argmax(-1, false)?.to_vec::<i64>()?;
    let truth = labels.to_vec::<i64>()?;
    Ok(pred.iter().zip(&truth).filter(|(a, b)| a == b).count() as f64 / truth.len() as f64)
}

fn run(args: Args) -> tamer::Result<()> {
    let start = Instant::now();
    let (train, test) = digits::load_split()?;
    let (x_test, y_test) = test.tensors()?;
    let mut r = rng(args.seed);
    // Kaiming-uniform-like init, as torch.nn.Linear.
    let bound1 = 1.0 / (digits::NUM_PIXELS as f64).sqrt();
    let bound2 = 1.0 / (args.hidden as f64).sqrt();
    let w1 = Tensor::uniform([digits::NUM_PIXELS, args.hidden], -bound1, bound1, DType::F32, &mut r)?.variable();
    let b1 = Tensor::zeros([args.hidden], DType::F32)?.variable();
    let w2 = Tensor::uniform([args.hidden, digits::NUM_CLASSES], -bound2, bound2, DType::F32, &mut r)?.variable();
    let b2 = Tensor::zeros([digits::NUM_CLASSES], DType::F32)?.variable();
    let params = [w1.clone(), b1.clone(), w2.clone(), b2.clone()];
    let forward = |x: &Tensor| -> tamer::Result<Tensor> { x.matmul(&w1)?.add(&b1)?.gelu()?.matmul(&w2)?.add(&b2) };
    let loss_options = CrossEntropyOptions::default().with_label_smoothing(0.1);
    let mut adam = Adam::new(&params, args.lr)?;
    let n_params: usize = params.iter().map(Tensor::numel).sum();
    println!(
        "digits: {} train / {} test images, MLP 64-{}-10 with {} parameters",
        train.len(),
        test.len(),
        args.hidden,
        n_params
    );

    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut steps = 0;
    let mut last_loss = f64::NAN;
    for epoch in 1..=args.epochs {
        use rand::seq::SliceRandom;
        order.shuffle(&mut r);
        let mut epoch_loss = 0.0;
        let batches: Vec<&[usize]> = order.chunks(args.batch_size).collect();
        for batch in &batches {
            let (x, y) = train.subset(batch).tensors()?;
            let loss = forward(&x)?.cross_entropy(&y, loss_options)?;
            let grads = loss.backward()?;
            adam.update(&params, &grads)?;
            epoch_loss += loss.to_scalar()?;
            steps += 1;
        }
        last_loss = epoch_loss / batches.len() as f64;
        if epoch % 10 == 0 || epoch == args.epochs {
            let acc = no_grad(|| accuracy(&forward(&x_test)?, &y_test))?;
            println!("epoch {epoch:3}  train loss {last_loss:.4}  test accuracy {:.2}%", acc * 100.0);
        }
    }
    let acc = no_grad(|| accuracy(&forward(&x_test)?, &y_test))?;
    println!("test accuracy {:.2}%", acc * 100.0);
    println!(
        "{{\"event\":\"final\",\"dataset\":\"digits\",\"model\":\"mlp-{}\",\"params\":{n_params},\"steps\":{steps},\"seconds\":{:.3},\"train_loss\":{last_loss:.5},\"test_acc\":{acc:.5}}}",
        args.hidden,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("error: {msg}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
