//! Experiment 4, warmup: 6-layer character GPTs on tinyshakespeare, post-LN
//! and pre-LN with and without learning-rate warmup, and Admin-initialised
//! post-LN without warmup.

use super::char_gpt::{self, GptRecipe};
use super::digits::{Opt, Sched};
use super::experiment::{values_at, Context, Experiment, Outcome, Panel, Record, Scale, Table, Verdict};
use super::stats::{self, Order};
use tamer::data::CharDataset;
use tamer::nn::NormPlacement;
use tamer::Result;

pub struct Warmup;

/// (label, norm placement, warmup, Admin).
const ARMS: [(&str, NormPlacement, bool, bool); 5] = [
    ("post-LN, warmup", NormPlacement::PostLN, true, false),
    ("post-LN, no warmup", NormPlacement::PostLN, false, false),
    ("pre-LN, warmup", NormPlacement::PreLN, true, false),
    ("pre-LN, no warmup", NormPlacement::PreLN, false, false),
    ("Admin, no warmup", NormPlacement::PostLN, false, true),
];
/// Xiong et al.'s and Liu et al.'s peak learning rate.
const PEAK_LR: f64 = 1e-3;

struct Setup {
    layers: usize,
    width: usize,
    context: usize,
    batch: usize,
    steps: u64,
    warmup: u64,
    eval_batches: u64,
}

fn setup(scale: Scale) -> Setup {
    scale.pick(
        Setup {
            layers: 2,
            width: 16,
            context: 16,
            batch: 4,
            steps: 6,
            warmup: 2,
            eval_batches: 1,
        },
        Setup {
            layers: 6,
            width: 64,
            context: 64,
            batch: 16,
            steps: 300,
            warmup: 60,
            eval_batches: 8,
        },
        Setup {
            layers: 6,
            width: 256,
            context: 128,
            batch: 32,
            steps: 3000,
            warmup: 500,
            eval_batches: 32,
        },
    )
}

impl Experiment for Warmup {
    fn name(&self) -> &'static str {
        "warmup"
    }
    fn title(&self) -> &'static str {
        "Learning-rate warmup for post-LN, pre-LN and Admin"
    }
    fn claim(&self) -> &'static str {
        "A post-LN transformer trained without learning-rate warmup diverges or ends much worse than with warmup, while \
         pre-LN and Admin-initialised post-LN train well without it."
    }
    fn source(&self) -> &'static str {
        "Xiong et al. 2020, \"On Layer Normalization in the Transformer Architecture\" §3.2: post-LN on IWSLT14 De-En \
         (Adam (0.9, 0.98), lr 5e-4 or 1e-3) reaches BLEU 8.45 without warmup against ≈34 with 4,000 warmup steps; \
         500-step warmup gives 31.16 at lr 5e-4 and 2.77 at 1e-3. §4: pre-LN without warmup reaches ≈34. Liu et al. \
         2020 (Admin): removing warmup leads to \"model divergence\"; Admin trains deep post-LN models (18 layers: 29.03 \
         BLEU on WMT14 En-De where post-LN failed)."
    }
    fn setup(&self, scale: Scale) -> String {
        let s = setup(scale);
        format!(
            "Character-level GPTs on tinyshakespeare (`../shared/data/tinyshakespeare.txt`, 90/10 split): {} layers, width \
             {}, 4 heads, context {}, no dropout, nanoGPT's initialisation. Post-LN is the same model with each block's \
             norms moved after the residual sums (`NormPlacement::PostLN`, same initial weights); Admin is post-LN with ω \
             from `admin_profile_blocks` on one training batch's embeddings. Adam (β = 0.9, 0.98, no weight decay), peak lr \
             {PEAK_LR}, {} steps of batch {}, no clipping; \"warmup\" is {} linear warmup steps, then cosine decay to lr/10 \
             for every arm. Validation loss on {} fixed validation batches at the end. A run diverges when its loss \
             becomes non-finite.",
            s.layers, s.width, s.context, s.steps, s.batch, s.warmup, s.eval_batches
        )
    }
    fn rule(&self) -> &'static str {
        "Three parts, over seeds, all needed for reproduced. (1) Post-LN needs warmup: without it post-LN diverges in \
         more seeds than with it, or its final validation loss is higher by more than twice the pooled standard \
         deviation. (2) Pre-LN copes: pre-LN without warmup diverges in no seed and its validation loss is not higher \
         than pre-LN with warmup by more than twice the pooled standard deviation. (3) Admin copes: Admin without \
         warmup diverges in no seed and its validation loss is lower than post-LN without warmup's by more than twice \
         the pooled standard deviation (or post-LN without warmup diverged). Not reproduced if a part fails (the reason \
         names it); inconclusive with fewer than two seeds."
    }
    fn missing_data(&self) -> Option<String> {
        char_gpt::missing_data()
    }
    fn run(&self, ctx: &Context) -> Result<Outcome> {
        let s = setup(ctx.scale);
        let data = char_gpt::load()?;
        let mut records = Vec::new();
        for (label, norm, warmup, admin) in ARMS {
            for &seed in &ctx.seeds {
                let (losses, val) = train_arm(&s, &data, norm, warmup, admin, seed, ctx)?;
                for (i, l) in losses.iter().enumerate() {
                    records.push(Record::new(label, seed, (i + 1) as f64, "train_loss", *l));
                }
                let diverged = losses.iter().any(|l| !l.is_finite());
                records.push(Record::new(label, seed, s.steps as f64, "val_loss", val));
                records.push(Record::new(label, seed, s.steps as f64, "diverged", f64::from(u8::from(diverged))));
                ctx.log(format!(
                    "{label} seed {seed}: validation loss {val:.3}{}",
                    if diverged { " (diverged)" } else { "" }
                ));
            }
        }
        let (table, verdict) = decide(&records, &ctx.seeds, s.steps);
        let mut panel = Panel::new("training loss (mean ± std over seeds)", "step", "training loss (log)").log_y();
        for (label, ..) in ARMS {
            panel = panel.line_from(&records, label, "train_loss", label);
        }
        Ok(Outcome {
            records,
            table,
            panels: vec![panel],
            verdict,
            notes: Vec::new(),
        })
    }
}

/// Train one arm; returns the training loss of every step (up to a
/// non-finite one) and the final validation loss (non-finite if diverged).
fn train_arm(s: &Setup, data: &CharDataset, norm: NormPlacement, warmup: bool, admin: bool, seed: u64, ctx: &Context) -> Result<(Vec<f64>, f64)> {
    let recipe = GptRecipe {
        layers: s.layers,
        width: s.width,
        heads: 4,
        context: s.context,
        batch_size: s.batch,
        norm,
        admin,
        optimizer: Opt::Adam,
        betas: Some((0.9, 0.98)),
        weight_decay: 0.0,
        schedule: Sched::WarmupCosine,
        peak_lr: PEAK_LR,
        warmup_steps: if warmup { s.warmup } else { 0 },
        min_lr_ratio: 0.1,
        steps: s.steps,
        eval_every: 0,
        eval_batches: s.eval_batches,
        eval_batch_size: s.batch,
        stop_below: None,
    };
    let curve = char_gpt::train(&recipe, data, seed, ctx.device)?;
    let val = curve.final_val();
    Ok((curve.losses, val))
}

/// The rule of [`Warmup::rule`]: the table and the verdict.
fn decide(records: &[Record], seeds: &[u64], steps: u64) -> (Table, Verdict) {
    let at = |label: &str, metric: &str| values_at(records, label, metric, steps as f64);
    let diverged = |label: &str| at(label, "diverged").iter().sum::<f64>();
    let mut table = Table::new(&["arm", "diverged seeds", "final validation loss"]);
    for (label, ..) in ARMS {
        let finite: Vec<f64> = at(label, "val_loss").into_iter().filter(|v| v.is_finite()).collect();
        table.push(vec![
            label.to_string(),
            format!("{} / {}", diverged(label), seeds.len()),
            stats::mean_std_cell(&finite, 3),
        ]);
    }
    if seeds.len() < 2 {
        return (table, Verdict::inconclusive("fewer than two seeds: no spread to compare against"));
    }
    let (mut held, mut failed) = (Vec::new(), Vec::new());
    // (1) Post-LN needs warmup.
    let (post_w, post_nw) = ("post-LN, warmup", "post-LN, no warmup");
    if diverged(post_nw) > diverged(post_w) {
        held.push(format!(
            "(1) post-LN without warmup diverged in {} seeds, with warmup in {}",
            diverged(post_nw),
            diverged(post_w)
        ));
    } else {
        match stats::compare(&at(post_nw, "val_loss"), &at(post_w, "val_loss"), 2.0) {
            Some(c) if c.order == Order::Greater => held.push(format!("(1) {}", c.describe(post_nw, post_w))),
            Some(c) => failed.push(format!("(1) {}", c.describe(post_nw, post_w))),
            None => failed.push("(1) post-LN's validation losses could not be compared (a run diverged in both arms)".to_string()),
        }
    }
    // (2) Pre-LN copes.
    let (pre_w, pre_nw) = ("pre-LN, warmup", "pre-LN, no warmup");
    match (diverged(pre_nw), stats::compare(&at(pre_nw, "val_loss"), &at(pre_w, "val_loss"), 2.0)) {
        (d, _) if d > 0.0 => failed.push(format!("(2) pre-LN without warmup diverged in {d} seeds")),
        (_, Some(c)) if c.order != Order::Greater => held.push(format!("(2) {}", c.describe(pre_nw, pre_w))),
        (_, Some(c)) => failed.push(format!("(2) {}", c.describe(pre_nw, pre_w))),
        (_, None) => failed.push("(2) pre-LN's validation losses could not be compared".to_string()),
    }
    // (3) Admin copes.
    let admin = "Admin, no warmup";
    if diverged(admin) > 0.0 {
        failed.push(format!("(3) Admin without warmup diverged in {} seeds", diverged(admin)));
    } else if diverged(post_nw) > 0.0 {
        held.push(format!(
            "(3) Admin trained in every seed where post-LN without warmup diverged in {}",
            diverged(post_nw)
        ));
    } else {
        match stats::compare(&at(admin, "val_loss"), &at(post_nw, "val_loss"), 2.0) {
            Some(c) if c.order == Order::Less => held.push(format!("(3) {}", c.describe(admin, post_nw))),
            Some(c) => failed.push(format!("(3) {}", c.describe(admin, post_nw))),
            None => failed.push("(3) Admin's validation losses could not be compared".to_string()),
        }
    }
    let verdict = Verdict::from_parts(&held, &failed);
    (table, verdict)
}
