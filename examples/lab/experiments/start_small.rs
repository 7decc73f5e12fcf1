//! Experiment 6, start small, scale up: character GPTs of 1, 2, 4 and 6
//! layers at two widths on tinyshakespeare, every size trained on the same
//! number of tokens; validation loss against wall time and against size.

use super::char_gpt::{self, GptRecipe};
use super::digits::{Opt, Sched};
use super::experiment::{values_at, Context, Experiment, Line, Outcome, Panel, Record, Scale, Table, Verdict};
use super::stats::{self, Order};
use tamer::nn::NormPlacement;
use tamer::Result;

pub struct StartSmall;

/// The rank correlations the rule asks for (in absolute value).
const RHO: f64 = 0.8;
/// The largest fraction of the largest model's training time the smallest may take.
const TIME_FRACTION: f64 = 0.5;

struct Setup {
    layers: Vec<usize>,
    widths: Vec<usize>,
    head_dim: usize,
    context: usize,
    batch: usize,
    steps: u64,
    lr: f64,
    eval_batches: u64,
}

fn setup(scale: Scale) -> Setup {
    scale.pick(
        Setup {
            layers: vec![1, 2],
            widths: vec![8, 16],
            head_dim: 8,
            context: 16,
            batch: 4,
            steps: 8,
            lr: 3e-3,
            eval_batches: 1,
        },
        Setup {
            layers: vec![1, 2, 4, 6],
            widths: vec![32, 64],
            head_dim: 16,
            context: 64,
            batch: 16,
            steps: 600,
            lr: 3e-3,
            eval_batches: 8,
        },
        Setup {
            layers: vec![1, 2, 4, 6],
            widths: vec![128, 256],
            head_dim: 32,
            context: 128,
            batch: 32,
            steps: 4000,
            lr: 1e-3,
            eval_batches: 32,
        },
    )
}

impl Setup {
    /// Evaluations every eighth of the run: the second is at a quarter of the tokens.
    fn eval_every(&self) -> u64 {
        (self.steps / 8).max(1)
    }
    fn quarter(&self) -> u64 {
        2 * self.eval_every()
    }
    fn tokens(&self) -> u64 {
        self.steps * (self.batch * self.context) as u64
    }
    /// Every (layers, width), widths outer: the smallest first, the largest last.
    fn sizes(&self) -> Vec<(usize, usize)> {
        self.widths.iter().flat_map(|&w| self.layers.iter().map(move |&l| (l, w))).collect()
    }
    fn recipe(&self, layers: usize, width: usize) -> GptRecipe {
        GptRecipe {
            layers,
            width,
            heads: (width / self.head_dim).max(1),
            context: self.context,
            batch_size: self.batch,
            norm: NormPlacement::PreLN,
            admin: false,
            optimizer: Opt::AdamW,
            betas: None,
            weight_decay: 0.1,
            schedule: Sched::WarmupCosine,
            peak_lr: self.lr,
            warmup_steps: self.steps / 10,
            min_lr_ratio: 0.1,
            steps: self.steps,
            eval_every: self.eval_every(),
            eval_batches: self.eval_batches,
            eval_batch_size: self.batch,
            stop_below: None,
        }
    }
}

fn size_label(layers: usize, width: usize) -> String {
    format!("{layers} layer{} × {width}", if layers == 1 { "" } else { "s" })
}

fn width_label(width: usize) -> String {
    format!("width {width}")
}

impl Experiment for StartSmall {
    fn name(&self) -> &'static str {
        "start-small"
    }
    fn title(&self) -> &'static str {
        "Start small, scale up: validation loss and wall time against model size"
    }
    fn claim(&self) -> &'static str {
        "At a fixed token budget, bigger models reach a lower validation loss, and a small model gives a usable signal \
         in a fraction of the time: the models' ordering by validation loss at a quarter of the budget is already their \
         final ordering, and the smallest model trains in at most half the largest's wall time."
    }
    fn source(&self) -> &'static str {
        "Kaplan et al. 2020, \"Scaling Laws for Neural Language Models\": the loss falls as a power law in the \
         non-embedding parameter count N (L ∝ N^−0.076), depends only weakly on shape (depth against width) at fixed N, \
         and larger models are more sample-efficient, reaching a given loss in fewer tokens (their Fig. 2). The practice \
         of iterating on small models before scaling up (Karpathy 2019, \"A Recipe for Training Neural Networks\": \
         \"start simple\" and only then \"scale up\") rests on small-model results carrying over."
    }
    fn setup(&self, scale: Scale) -> String {
        let s = setup(scale);
        format!(
            "Pre-LN character GPTs on tinyshakespeare (`../shared/data/tinyshakespeare.txt`, 90/10 split) with {:?} \
             layers at widths {:?} (head size {}, MLP 4×, context {}, no dropout, nanoGPT's initialisation). Every size \
             trains {} steps of batch {} (the same {} tokens) with AdamW (weight decay 0.1 on matrices and embeddings), \
             peak lr {} for every size (no per-size search), {} warmup steps, cosine decay to lr/10. The validation loss on \
             {} fixed windows of the validation text every {} steps; wall time is the time spent in training steps \
             (evaluation excluded) on this run's machine. Size is Kaplan's N: the parameters of the transformer blocks.",
            s.layers,
            s.widths,
            s.head_dim,
            s.context,
            s.steps,
            s.batch,
            s.tokens(),
            s.lr,
            s.steps / 10,
            s.eval_batches * s.batch as u64,
            s.eval_every()
        )
    }
    fn rule(&self) -> &'static str {
        "Three parts on the per-size means over seeds, all needed for reproduced. (1) Bigger is better at this budget: \
         Spearman's rank correlation between N and the final validation loss over all sizes is −0.8 or lower, and the \
         largest model's final loss is below the smallest's by more than twice the pooled standard deviation. (2) The \
         ordering shows early: Spearman's rank correlation between the sizes' validation losses at a quarter of the \
         steps and at the end is 0.8 or higher. (3) A fraction of the time: the smallest model's training wall time is \
         at most half the largest's. Not reproduced if a part fails (the reason names it); inconclusive with fewer than \
         two seeds or if a run diverged (its loss cannot be ranked)."
    }
    fn missing_data(&self) -> Option<String> {
        char_gpt::missing_data()
    }
    fn run(&self, ctx: &Context) -> Result<Outcome> {
        let s = setup(ctx.scale);
        let data = char_gpt::load()?;
        let mut records = Vec::new();
        for (layers, width) in s.sizes() {
            let label = size_label(layers, width);
            for &seed in &ctx.seeds {
                let curve = char_gpt::train(&s.recipe(layers, width), &data, seed, ctx.device)?;
                for &(step, loss, seconds) in &curve.val {
                    records.push(Record::new(&label, seed, step as f64, "val_loss", loss));
                    records.push(Record::new(&label, seed, step as f64, "train_seconds", seconds));
                }
                let final_loss = curve.final_val();
                records.push(Record::new(&width_label(width), seed, curve.block_params as f64, "final_val_loss", final_loss));
                records.push(Record::new(&label, seed, s.steps as f64, "block_params", curve.block_params as f64));
                records.push(Record::new(
                    &label,
                    seed,
                    s.steps as f64,
                    "diverged",
                    f64::from(u8::from(curve.diverged_at.is_some())),
                ));
                ctx.log(format!(
                    "{label} (N = {}) seed {seed}: validation loss {final_loss:.3} after {:.1} s of training",
                    curve.block_params, curve.train_seconds
                ));
            }
        }
        let (table, verdict) = decide(&records, &s, &ctx.seeds);
        let mut by_time = Panel::new("validation loss against training time (mean over seeds)", "training seconds", "validation loss");
        for (layers, width) in s.sizes() {
            by_time.lines.push(time_line(&records, &size_label(layers, width)));
        }
        let mut by_size = Panel::new(
            &format!("final validation loss at {} tokens", s.tokens()),
            "N: parameters of the blocks (log)",
            "validation loss",
        );
        by_size.log_x = true;
        for &width in &s.widths {
            by_size = by_size.line_from(&records, &width_label(width), "final_val_loss", &width_label(width));
        }
        Ok(Outcome {
            records,
            table,
            panels: vec![by_time, by_size],
            verdict,
            notes: vec![
                "Wall times are this machine's at the time of the run: on a shared machine they carry its load (see the \
                 load average beside the run time)."
                    .to_string(),
            ],
        })
    }
}

/// A size's validation loss (mean ± std over seeds) against its mean training time at each evaluation.
fn time_line(records: &[Record], label: &str) -> Line {
    let points = super::experiment::xs_of(records, label, "val_loss")
        .into_iter()
        .filter_map(|step| {
            let losses = values_at(records, label, "val_loss", step);
            let seconds = stats::mean(&values_at(records, label, "train_seconds", step))?;
            Some((seconds, stats::mean(&losses)?, stats::sample_std(&losses).unwrap_or(0.0)))
        })
        .collect();
    Line {
        label: label.to_string(),
        points,
    }
}

/// The seconds at which one seed's run of `label` first reached `target` (interpolated), if it did.
fn seconds_to(records: &[Record], label: &str, seed: u64, target: f64) -> Option<f64> {
    let of = |metric: &str| -> Vec<f64> {
        let mut v: Vec<(f64, f64)> = records
            .iter()
            .filter(|r| r.variant == label && r.metric == metric && r.seed == seed)
            .map(|r| (r.x, r.value))
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v.into_iter().map(|p| p.1).collect()
    };
    stats::first_crossing(&of("train_seconds"), &of("val_loss"), target)
}

/// The rule of [`StartSmall::rule`]: the table and the verdict.
fn decide(records: &[Record], s: &Setup, seeds: &[u64]) -> (Table, Verdict) {
    let sizes = s.sizes();
    let labels: Vec<String> = sizes.iter().map(|&(l, w)| size_label(l, w)).collect();
    let at = |label: &str, metric: &str, x: u64| values_at(records, label, metric, x as f64);
    let finals: Vec<Vec<f64>> = labels.iter().map(|l| at(l, "val_loss", s.steps)).collect();
    let early: Vec<Vec<f64>> = labels.iter().map(|l| at(l, "val_loss", s.quarter())).collect();
    let seconds: Vec<Vec<f64>> = labels.iter().map(|l| at(l, "train_seconds", s.steps)).collect();
    let params: Vec<f64> = labels
        .iter()
        .map(|l| stats::mean(&at(l, "block_params", s.steps)).unwrap_or(f64::NAN))
        .collect();
    // The smallest model's final loss (mean over seeds), and when each run first reached it.
    let small_final = stats::mean(&finals[0]).unwrap_or(f64::NAN);
    let mut table = Table::new(&[
        "model",
        "N",
        &format!("validation loss at step {} (¼)", s.quarter()),
        "final validation loss",
        "training seconds",
        "seconds to the smallest model's final loss",
    ]);
    for (i, label) in labels.iter().enumerate() {
        let reached: Vec<f64> = seeds.iter().filter_map(|&seed| seconds_to(records, label, seed, small_final)).collect();
        let reached_cell = if reached.len() == seeds.len() {
            stats::mean_std_cell(&reached, 1)
        } else {
            format!("{} of {} seeds reached it", reached.len(), seeds.len())
        };
        table.push(vec![
            label.clone(),
            format!("{}", params[i]),
            stats::mean_std_cell(&early[i], 3),
            stats::mean_std_cell(&finals[i], 3),
            stats::mean_std_cell(&seconds[i], 2),
            reached_cell,
        ]);
    }
    if seeds.len() < 2 {
        return (table, Verdict::inconclusive("fewer than two seeds: no spread to compare against"));
    }
    let diverged: f64 = labels.iter().map(|l| at(l, "diverged", s.steps).iter().sum::<f64>()).sum();
    let mean_of = |v: &[Vec<f64>]| -> Vec<f64> { v.iter().map(|x| stats::mean(x).unwrap_or(f64::NAN)).collect() };
    let (final_means, early_means, second_means) = (mean_of(&finals), mean_of(&early), mean_of(&seconds));
    if diverged > 0.0 || final_means.iter().chain(&early_means).any(|v| !v.is_finite()) {
        return (
            table,
            Verdict::inconclusive(format!("{diverged} run(s) diverged or left no validation loss: the sizes cannot be ranked")),
        );
    }
    let (smallest, largest) = (0, labels.len() - 1);
    let (mut held, mut failed) = (Vec::new(), Vec::new());
    // (1) Bigger is better.
    let rho_size = stats::spearman(&params, &final_means);
    let vs_smallest = stats::compare(&finals[largest], &finals[smallest], 2.0);
    let part1 = format!(
        "(1) ρ(N, final loss) = {}; {}",
        rho_size.map_or("undefined".to_string(), |r| format!("{r:.2}")),
        vs_smallest.map_or("the largest and smallest could not be compared".to_string(), |c| c
            .describe(&labels[largest], &labels[smallest]))
    );
    if rho_size.is_some_and(|r| r <= -RHO) && vs_smallest.is_some_and(|c| c.order == Order::Less) {
        held.push(part1);
    } else {
        failed.push(part1);
    }
    // (2) The ordering shows early.
    let rho_early = stats::spearman(&early_means, &final_means);
    let part2 = format!(
        "(2) ρ(loss at step {}, final loss) = {}",
        s.quarter(),
        rho_early.map_or("undefined".to_string(), |r| format!("{r:.2}"))
    );
    if rho_early.is_some_and(|r| r >= RHO) {
        held.push(part2);
    } else {
        failed.push(part2);
    }
    // (3) A fraction of the time.
    let fraction = second_means[smallest] / second_means[largest];
    let part3 = format!(
        "(3) the smallest model trains in {:.1} s, {:.0}% of the largest's {:.1} s",
        second_means[smallest],
        100.0 * fraction,
        second_means[largest]
    );
    if fraction <= TIME_FRACTION {
        held.push(part3);
    } else {
        failed.push(part3);
    }
    let verdict = Verdict::from_parts(&held, &failed);
    (table, verdict)
}
