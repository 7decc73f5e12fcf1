//! Experiment 5, clipping: a learning-rate sweep up to rates where training
//! fails, with and without global-norm gradient clipping at 1.0.

use super::digits::{train, Images, Opt, Recipe, Sched};
use super::experiment::{values_at, Context, Experiment, Outcome, Panel, Record, Scale, Table, Verdict};
use super::stats;
use tamer::models::VitConfig;
use tamer::Result;

pub struct Clipping;

/// The clipping threshold under test (ViT's, Steiner's and tamer's default).
const CLIP: f64 = 1.0;
/// A run fails if its loss becomes non-finite or its final test accuracy is below this (chance is 0.1).
const FAILED_BELOW: f64 = 0.5;

struct Setup {
    lrs: Vec<f64>,
    width: usize,
    depth: usize,
    steps: u64,
    batch: usize,
}

fn setup(scale: Scale) -> Setup {
    scale.pick(
        Setup {
            lrs: vec![1e-2, 1e-1],
            width: 16,
            depth: 1,
            steps: 20,
            batch: 32,
        },
        Setup {
            lrs: vec![3e-3, 1e-2, 3e-2, 1e-1],
            width: 64,
            depth: 4,
            steps: 300,
            batch: 64,
        },
        Setup {
            lrs: vec![1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1],
            width: 128,
            depth: 6,
            steps: 1500,
            batch: 128,
        },
    )
}

fn variant(clip: bool, lr: f64) -> String {
    format!("{} lr {lr:.0e}", if clip { "clip 1.0" } else { "no clip" })
}

fn heads(width: usize) -> usize {
    if width >= 64 {
        4
    } else {
        2
    }
}

impl Experiment for Clipping {
    fn name(&self) -> &'static str {
        "clipping"
    }
    fn title(&self) -> &'static str {
        "Gradient clipping at global norm 1.0"
    }
    fn claim(&self) -> &'static str {
        "Clipping the gradient's global norm at 1.0 keeps training stable at learning rates where the unclipped run \
         diverges or fails."
    }
    fn source(&self) -> &'static str {
        "Dosovitskiy et al. 2021 (ViT), App. B: training from scratch on ImageNet it was \"beneficial to additionally \
         apply gradient clipping at global norm 1\"; all fine-tuning clips at 1. Steiner et al. 2021 (How to train your \
         ViT) clip at 1 throughout. Popel & Bojar 2018 §4.6: on divergence \"try gradient clipping and/or more warmup \
         steps\"; §4.8.2: on 8 GPUs clipping at 1.0 allowed lr 0.40 where 0.60 still diverged, with no BLEU gain."
    }
    fn setup(&self, scale: Scale) -> String {
        let s = setup(scale);
        format!(
            "A ViT on the UCI digits (patch 2, width {}, depth {}, {} heads, MLP 2×, class token), AdamW (weight decay \
             0.05), no warmup, cosine decay to lr/100 over {} steps of batch {}, no augmentation; peak learning rates {:?}, \
             each with clipping at global norm {CLIP} and without. A run fails if its loss becomes non-finite (the run stops \
             there) or its final test accuracy (360 held-out digits) is below {FAILED_BELOW}. The same seed gives both \
             arms the same initialisation and batches.",
            s.width,
            s.depth,
            heads(s.width),
            s.steps,
            s.batch,
            s.lrs
        )
    }
    fn rule(&self) -> &'static str {
        "Count failed seeds per learning rate and arm. Reproduced if, over the learning rates where at least one \
         unclipped run fails, the clipped runs fail in fewer seeds in total, and at no learning rate do clipped runs \
         fail in more seeds than unclipped ones. Not reproduced if unclipped runs fail somewhere and clipping does not \
         lower the count (or raises it anywhere). Inconclusive if no unclipped run fails at any learning rate (nothing \
         to rescue: the grid is too low) or there are fewer than two seeds."
    }
    fn run(&self, ctx: &Context) -> Result<Outcome> {
        let s = setup(ctx.scale);
        let data = Images::digits(ctx.device)?;
        let mut records = Vec::new();
        for &lr in &s.lrs {
            for clip in [false, true] {
                let name = variant(clip, lr);
                for &seed in &ctx.seeds {
                    let recipe = Recipe {
                        model: VitConfig::new((8, 8), 2, 1, 10, s.width, s.depth, heads(s.width), 2.0),
                        optimizer: Opt::AdamW,
                        schedule: Sched::WarmupCosine,
                        peak_lr: lr,
                        warmup_steps: 0,
                        steps: s.steps,
                        batch_size: s.batch,
                        weight_decay: 0.05,
                        clip: clip.then_some(CLIP),
                        eval_every: s.steps,
                        no_positions: false,
                        augment: None,
                        label_smoothing: 0.0,
                    };
                    let curve = train(&recipe, &data, seed, ctx.device)?;
                    let final_acc = curve.final_accuracy();
                    let failed = curve.diverged_at.is_some() || final_acc < FAILED_BELOW;
                    records.push(Record::new(&name, seed, lr, "final_test_acc", final_acc));
                    records.push(Record::new(&name, seed, lr, "failed", f64::from(u8::from(failed))));
                    records.push(Record::new(&name, seed, lr, "diverged_at", curve.diverged_at.map_or(f64::NAN, |s| s as f64)));
                    for (i, (loss, norm)) in curve.losses.iter().zip(curve.grad_norms.iter().chain(std::iter::repeat(&f64::NAN))).enumerate() {
                        records.push(Record::new(&name, seed, (i + 1) as f64, "train_loss", *loss));
                        records.push(Record::new(&name, seed, (i + 1) as f64, "grad_norm", *norm));
                    }
                    ctx.log(format!(
                        "{name} seed {seed}: final test accuracy {final_acc:.3}{}",
                        if failed { " (failed)" } else { "" }
                    ));
                }
            }
        }
        let (table, verdict, margin) = decide(&records, &ctx.seeds, &s.lrs);
        let mut notes = vec![format!(
            "Failure is defined by the final test accuracy (below {FAILED_BELOW}) as well as by a non-finite loss, because \
             with Adam a bad step rarely gives NaN: the run instead falls back to chance and stays there."
        )];
        if (1.0..=2.0).contains(&margin) {
            notes.push(format!(
                "The rule is met by a margin of {margin} failed seed(s): weak evidence that more seeds (--seeds) would firm up \
                 or overturn."
            ));
        }
        // Accuracy against the learning rate, one line per arm (the records' x for these metrics is the lr).
        let mut by_lr = Vec::new();
        for clip in [false, true] {
            let arm = if clip { "clip 1.0" } else { "no clip" };
            for &lr in &s.lrs {
                for r in records.iter().filter(|r| r.variant == variant(clip, lr) && r.metric == "final_test_acc") {
                    by_lr.push(Record {
                        variant: arm.to_string(),
                        ..r.clone()
                    });
                }
            }
        }
        let mut accuracy = Panel::new(
            "final test accuracy vs peak learning rate",
            "peak learning rate",
            "test accuracy (0 = diverged)",
        );
        accuracy.log_x = true;
        let accuracy = accuracy
            .line_from(&by_lr, "no clip", "final_test_acc", "no clip")
            .line_from(&by_lr, "clip 1.0", "final_test_acc", "clip 1.0");
        let top = s.lrs[s.lrs.len() - 1];
        let loss_title = format!("training loss at lr {top:.0e}");
        let loss = Panel::new(&loss_title, "step", "training loss (log)")
            .log_y()
            .line_from(&records, &variant(false, top), "train_loss", "no clip")
            .line_from(&records, &variant(true, top), "train_loss", "clip 1.0");
        Ok(Outcome {
            records,
            table,
            panels: vec![accuracy, loss],
            verdict,
            notes,
        })
    }
}

/// The rule of [`Clipping::rule`]: the table, the verdict, and the margin (unclipped minus clipped failed seeds
/// where unclipped runs failed).
fn decide(records: &[Record], seeds: &[u64], lrs: &[f64]) -> (Table, Verdict, f64) {
    let mut table = Table::new(&["peak lr", "arm", "failed seeds", "final test accuracy"]);
    let (mut unclipped_fails, mut clipped_fails, mut worse_somewhere) = (0.0, 0.0, Vec::new());
    for &lr in lrs {
        let failed = |clip: bool| values_at(records, &variant(clip, lr), "failed", lr).iter().sum::<f64>();
        for clip in [false, true] {
            let acc = values_at(records, &variant(clip, lr), "final_test_acc", lr);
            table.push(vec![
                format!("{lr:.0e}"),
                if clip { "clip 1.0".into() } else { "no clip".into() },
                format!("{} / {}", failed(clip), seeds.len()),
                stats::mean_std_cell(&acc, 3),
            ]);
        }
        let (u, c) = (failed(false), failed(true));
        if u > 0.0 {
            unclipped_fails += u;
            clipped_fails += c;
        }
        if c > u {
            worse_somewhere.push(format!("lr {lr:.0e}: clipped {c} vs unclipped {u}"));
        }
    }
    let verdict = if seeds.len() < 2 {
        Verdict::inconclusive("fewer than two seeds")
    } else if unclipped_fails == 0.0 {
        Verdict::inconclusive(format!(
            "no unclipped run failed at any learning rate up to {:.0e}: nothing to rescue",
            lrs[lrs.len() - 1]
        ))
    } else if !worse_somewhere.is_empty() {
        Verdict::not_reproduced(format!("clipping raised the failures at {}", worse_somewhere.join(", ")))
    } else if clipped_fails < unclipped_fails {
        Verdict::reproduced(format!(
            "where unclipped runs failed, {unclipped_fails} unclipped vs {clipped_fails} clipped failed seeds in total"
        ))
    } else {
        Verdict::not_reproduced(format!(
            "where unclipped runs failed, clipped runs failed as often ({unclipped_fails} unclipped vs {clipped_fails} clipped seeds)"
        ))
    };
    (table, verdict, unclipped_fails - clipped_fails)
}
