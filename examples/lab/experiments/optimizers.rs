//! Experiment 3, optimizers: vanilla SGD, SGD with momentum and a schedule,
//! Adam, AdamW with warmup and cosine decay, and OneCycle, each at its best
//! learning rate from a small grid, on a ViT for the digits and on a
//! character GPT for tinyshakespeare.

use super::char_gpt::{self, GptRecipe};
use super::digits::{train, Images, Opt, Recipe, Sched};
use super::experiment::{values_at, Context, Experiment, Outcome, Panel, Record, Scale, Table, Verdict, VerdictKind};
use super::stats::{self, Order};
use tamer::data::CharDataset;
use tamer::models::VitConfig;
use tamer::nn::NormPlacement;
use tamer::Result;

pub struct Optimizers;

/// (label, optimizer, schedule, the ViT's learning-rate grid, the GPT's).
type Arm = (&'static str, Opt, Sched, [f64; 3], [f64; 3]);
const ARMS: [Arm; 5] = [
    ("SGD", Opt::Sgd, Sched::Constant, [0.03, 0.1, 0.3], [0.1, 0.3, 1.0]),
    (
        "SGD + momentum + warmup/cosine",
        Opt::SgdMomentum,
        Sched::WarmupCosine,
        [0.01, 0.03, 0.1],
        [0.03, 0.1, 0.3],
    ),
    ("Adam", Opt::Adam, Sched::Constant, [3e-4, 1e-3, 3e-3], [1e-3, 3e-3, 1e-2]),
    ("AdamW + warmup/cosine", Opt::AdamW, Sched::WarmupCosine, [3e-4, 1e-3, 3e-3], [1e-3, 3e-3, 1e-2]),
    (
        "OneCycle (SGD + momentum)",
        Opt::SgdMomentum,
        Sched::OneCycle,
        [0.03, 0.1, 0.3],
        [0.03, 0.1, 0.3],
    ),
];
const ADAMW: usize = 3;
/// The GPT's AdamW weight decay (nanoGPT's).
const GPT_WEIGHT_DECAY: f64 = 0.1;

struct Setup {
    width: usize,
    depth: usize,
    steps: u64,
    batch: usize,
    eval_every: u64,
}

fn setup(scale: Scale) -> Setup {
    scale.pick(
        Setup {
            width: 16,
            depth: 1,
            steps: 10,
            batch: 32,
            eval_every: 5,
        },
        Setup {
            width: 64,
            depth: 4,
            steps: 300,
            batch: 64,
            eval_every: 25,
        },
        Setup {
            width: 128,
            depth: 6,
            steps: 2000,
            batch: 128,
            eval_every: 100,
        },
    )
}

/// The char GPT of the second half.
struct GptSetup {
    layers: usize,
    width: usize,
    heads: usize,
    context: usize,
    batch: usize,
    steps: u64,
    eval_every: u64,
    eval_batches: u64,
}

fn gpt_setup(scale: Scale) -> GptSetup {
    scale.pick(
        GptSetup {
            layers: 1,
            width: 16,
            heads: 2,
            context: 16,
            batch: 4,
            steps: 6,
            eval_every: 3,
            eval_batches: 1,
        },
        GptSetup {
            layers: 2,
            width: 64,
            heads: 4,
            context: 64,
            batch: 16,
            steps: 400,
            eval_every: 50,
            eval_batches: 8,
        },
        GptSetup {
            layers: 6,
            width: 256,
            heads: 8,
            context: 128,
            batch: 32,
            steps: 3000,
            eval_every: 250,
            eval_batches: 32,
        },
    )
}

fn gpt_recipe(s: &GptSetup, opt: Opt, schedule: Sched, lr: f64) -> GptRecipe {
    GptRecipe {
        layers: s.layers,
        width: s.width,
        heads: s.heads,
        context: s.context,
        batch_size: s.batch,
        norm: NormPlacement::PreLN,
        admin: false,
        optimizer: opt,
        betas: None,
        weight_decay: GPT_WEIGHT_DECAY,
        schedule,
        peak_lr: lr,
        warmup_steps: s.steps / 10,
        min_lr_ratio: 0.01,
        steps: s.steps,
        eval_every: s.eval_every,
        eval_batches: s.eval_batches,
        eval_batch_size: s.batch,
        stop_below: None,
    }
}

fn recipe(s: &Setup, opt: Opt, schedule: Sched, lr: f64) -> Recipe {
    let heads = if s.width >= 64 { 4 } else { 2 };
    Recipe {
        model: VitConfig::new((8, 8), 2, 1, 10, s.width, s.depth, heads, 2.0),
        optimizer: opt,
        schedule,
        peak_lr: lr,
        warmup_steps: s.steps / 10,
        steps: s.steps,
        batch_size: s.batch,
        weight_decay: 0.05,
        clip: None,
        eval_every: s.eval_every,
        no_positions: false,
        augment: None,
        label_smoothing: 0.0,
    }
}

impl Experiment for Optimizers {
    fn name(&self) -> &'static str {
        "optimizers"
    }
    fn title(&self) -> &'static str {
        "Optimizers and schedules: SGD, momentum, Adam, AdamW, OneCycle"
    }
    fn claim(&self) -> &'static str {
        "Vanilla SGD fails to train a transformer or lags far behind, and AdamW with warmup and cosine decay is the best \
         of the usual optimizers and schedules, each at its own best learning rate."
    }
    fn source(&self) -> &'static str {
        "Liu et al. 2020: \"conventional SGD fails to train Transformers effectively\"; Xiong et al. 2020 §3.2: SGD is \
         \"significantly worse\" than Adam. DeiT (Touvron et al. 2021) Table 8, DeiT-B top-1 at 224 px: AdamW 81.8 vs SGD \
         pre-training 74.5. Loshchilov & Hutter (AdamW): decoupled weight decay makes the best decay independent of the \
         learning rate. Smith & Topin (OneCycle): one cycle with a large maximum lr trains \"an order of magnitude \
         faster\"."
    }
    fn setup(&self, scale: Scale) -> String {
        let s = setup(scale);
        let g = gpt_setup(scale);
        let grids = |gpt: bool| -> String {
            let grids: Vec<String> = ARMS.iter().map(|(l, _, _, v, t)| format!("{l} {:?}", if gpt { t } else { v })).collect();
            grids.join("; ")
        };
        format!(
            "Two halves, the same five arms. Momentum is Nesterov 0.9; warmup is a tenth of the steps then cosine decay to \
             lr/100; OneCycle is PyTorch's (30% up, cosine down, momentum cycled 0.85–0.95); Adam has no weight decay; no \
             clipping. Each arm's learning rate is chosen by one run (seed 0) per grid value trained on a training part \
             and scored on a held-out part of the training data; then every seed trains at that rate on the whole \
             training data and is scored on data never used for the choice. ViT half: a ViT on the UCI digits (patch 2, \
             width {}, depth {}, MLP 2×, class token), {} steps of batch {}, no augmentation, AdamW weight decay 0.05 \
             (timm's no-decay set); the choice trains on 80% of the training digits and scores on the other 20%, the \
             final score is accuracy on the 360 test digits; grids: {}. GPT half: a pre-LN character GPT on \
             tinyshakespeare (`../shared/data/tinyshakespeare.txt`, 90/10 split; {} layers, width {}, {} heads, context \
             {}, no dropout), {} steps of batch {}, AdamW weight decay {GPT_WEIGHT_DECAY} on matrices and embeddings \
             (nanoGPT's rule); the choice trains on the first 8/9 of the training text and scores on its last 1/9, the \
             final score is the loss on {} fixed windows of the validation text (a diverged run scores ln(vocabulary), \
             a uniform guess); grids: {}.",
            s.width,
            s.depth,
            s.steps,
            s.batch,
            grids(false),
            g.layers,
            g.width,
            g.heads,
            g.context,
            g.steps,
            g.batch,
            g.eval_batches * g.batch as u64,
            grids(true),
        )
    }
    fn rule(&self) -> &'static str {
        "Each half is decided alone. ViT half: reproduced if AdamW + warmup/cosine's mean final test accuracy exceeds \
         vanilla SGD's by more than twice the pooled standard deviation over seeds, and no other arm's exceeds AdamW's \
         by more than twice the pooled standard deviation; not reproduced otherwise. GPT half: the same with the final \
         validation loss, lower being better (AdamW's below SGD's by more than twice the pooled standard deviation, and \
         no arm's below AdamW's by more than that). Both halves: inconclusive with fewer than two seeds. The experiment \
         is reproduced if both halves are, not reproduced if either half is not (the reason names the half and which \
         comparison failed), inconclusive otherwise (a half inconclusive or not run)."
    }
    fn run(&self, ctx: &Context) -> Result<Outcome> {
        let s = setup(ctx.scale);
        let validation = Images::digits_validation(ctx.device)?;
        let data = Images::digits(ctx.device)?;
        let mut records = Vec::new();
        let mut chosen = Vec::new();
        for (label, opt, schedule, grid, _) in ARMS {
            // Choose the learning rate on the validation split.
            let mut best = (grid[0], f64::NEG_INFINITY);
            for lr in grid {
                let curve = train(&recipe(&s, opt, schedule, lr), &validation, 0, ctx.device)?;
                let acc = curve.final_accuracy();
                records.push(Record::new(label, 0, lr, "val_acc", acc));
                ctx.log(format!("ViT {label} lr {lr}: validation accuracy {acc:.3}"));
                if acc > best.1 {
                    best = (lr, acc);
                }
            }
            chosen.push(best);
            for &seed in &ctx.seeds {
                let curve = train(&recipe(&s, opt, schedule, best.0), &data, seed, ctx.device)?;
                for &(step, acc) in &curve.test_acc {
                    records.push(Record::new(label, seed, step as f64, "test_acc", acc));
                }
                if let Some(step) = curve.diverged_at {
                    // A diverged run scores chance-or-worse: record 0 at the last step so it counts.
                    records.push(Record::new(label, seed, s.steps as f64, "test_acc", 0.0));
                    ctx.log(format!("ViT {label} seed {seed}: diverged at step {step}"));
                }
                let last = values_at(&records, label, "test_acc", s.steps as f64).last().copied().unwrap_or(f64::NAN);
                ctx.log(format!("ViT {label} lr {} seed {seed}: test accuracy {last:.3}", best.0));
            }
        }
        let vit_finals: Vec<Vec<f64>> = ARMS.iter().map(|(l, ..)| values_at(&records, l, "test_acc", s.steps as f64)).collect();
        let mut table = Table::new(&[
            "model",
            "arm",
            "chosen lr (held-out score)",
            "final score (ViT: test accuracy, higher better; GPT: validation loss, lower better)",
        ]);
        push_rows(&mut table, "ViT", &chosen, &vit_finals);
        let vit = decide_half(&vit_finals, &ctx.seeds, Order::Greater);
        let mut notes = edge_notes("ViT", &chosen, |i| ARMS[i].3);

        let mut curves = Panel::new("ViT: test accuracy at each arm's chosen lr", "step", "test accuracy");
        let mut selection = Panel::new("ViT: learning-rate selection (held-out, seed 0)", "peak learning rate", "validation accuracy");
        selection.log_x = true;
        for (label, ..) in ARMS {
            curves = curves.line_from(&records, label, "test_acc", label);
            selection = selection.line_from(&records, label, "val_acc", label);
        }
        let mut panels = vec![curves, selection];

        let gpt = match char_gpt::missing_data() {
            Some(reason) => {
                notes.push(format!("The GPT half did not run: {reason}."));
                Verdict::inconclusive(format!("the GPT half could not run ({reason})"))
            }
            None => {
                let text = char_gpt::load()?;
                let (gpt_chosen, gpt_finals) = run_gpt_half(ctx, &text, &mut records)?;
                push_rows(&mut table, "GPT", &gpt_chosen, &gpt_finals);
                notes.extend(edge_notes("GPT", &gpt_chosen, |i| ARMS[i].4));
                let mut curves = Panel::new("char GPT: validation loss at each arm's chosen lr", "step", "validation loss (log)").log_y();
                let mut selection = Panel::new(
                    "char GPT: learning-rate selection (held-out, seed 0)",
                    "peak learning rate",
                    "held-out loss (log)",
                )
                .log_y();
                selection.log_x = true;
                for (label, ..) in ARMS {
                    curves = curves.line_from(&records, label, "gpt_val_loss", label);
                    selection = selection.line_from(&records, label, "gpt_selection_loss", label);
                }
                panels.extend([curves, selection]);
                decide_half(&gpt_finals, &ctx.seeds, Order::Less)
            }
        };
        Ok(Outcome {
            records,
            table,
            panels,
            verdict: combine(&vit, &gpt),
            notes,
        })
    }
}

/// An arm's chosen learning rate and its held-out score.
type Chosen = (f64, f64);

/// The GPT half: choose each arm's rate on the held-out part of the training
/// text, then train every seed at it. Returns each arm's (lr, held-out loss)
/// and its final validation losses, one per seed; records the curves.
fn run_gpt_half(ctx: &Context, text: &CharDataset, records: &mut Vec<Record>) -> Result<(Vec<Chosen>, Vec<Vec<f64>>)> {
    let g = gpt_setup(ctx.scale);
    let held_out = char_gpt::validation_split(text);
    // A diverged run scores the loss of a uniform guess over the vocabulary.
    let uniform = (text.vocab_size() as f64).ln();
    let score = |curve: &char_gpt::GptCurve| if curve.diverged_at.is_some() { uniform } else { curve.final_val() };
    let (mut chosen, mut finals) = (Vec::new(), Vec::new());
    for (label, opt, schedule, _, grid) in ARMS {
        let mut best = (grid[0], f64::INFINITY);
        for lr in grid {
            let loss = score(&char_gpt::train(&gpt_recipe(&g, opt, schedule, lr), &held_out, 0, ctx.device)?);
            records.push(Record::new(label, 0, lr, "gpt_selection_loss", loss));
            ctx.log(format!("GPT {label} lr {lr}: held-out loss {loss:.3}"));
            if loss < best.1 {
                best = (lr, loss);
            }
        }
        chosen.push(best);
        let mut arm_finals = Vec::new();
        for &seed in &ctx.seeds {
            let curve = char_gpt::train(&gpt_recipe(&g, opt, schedule, best.0), text, seed, ctx.device)?;
            for &(step, loss, _) in &curve.val {
                records.push(Record::new(label, seed, step as f64, "gpt_val_loss", loss));
            }
            let last = score(&curve);
            if let Some(step) = curve.diverged_at {
                records.push(Record::new(label, seed, g.steps as f64, "gpt_val_loss", last));
                ctx.log(format!("GPT {label} seed {seed}: diverged at step {step}"));
            }
            ctx.log(format!("GPT {label} lr {} seed {seed}: validation loss {last:.3}", best.0));
            arm_finals.push(last);
        }
        finals.push(arm_finals);
    }
    Ok((chosen, finals))
}

/// The table's rows of one half.
fn push_rows(table: &mut Table, model: &str, chosen: &[Chosen], finals: &[Vec<f64>]) {
    for (i, (label, ..)) in ARMS.iter().enumerate() {
        let (lr, held_out) = chosen.get(i).copied().unwrap_or((f64::NAN, f64::NAN));
        table.push(vec![
            model.to_string(),
            label.to_string(),
            format!("{lr} ({held_out:.3})"),
            stats::mean_std_cell(finals.get(i).map_or(&[][..], Vec::as_slice), 3),
        ]);
    }
}

/// A note for each arm whose chosen rate is an end of its grid: the best may lie beyond it.
fn edge_notes(model: &str, chosen: &[Chosen], grid: impl Fn(usize) -> [f64; 3]) -> Vec<String> {
    chosen
        .iter()
        .enumerate()
        .filter(|&(i, &(lr, _))| lr == grid(i)[0] || lr == grid(i)[2])
        .map(|(i, &(lr, _))| {
            format!(
                "{model}: {}'s learning rate {lr} is an end of its grid {:?}: its best may lie outside.",
                ARMS[i].0,
                grid(i)
            )
        })
        .collect()
}

/// One half of [`Optimizers::rule`]: `better` is `Order::Greater` when a higher
/// final score is better (accuracy), `Order::Less` when lower is (loss).
fn decide_half(finals: &[Vec<f64>], seeds: &[u64], better: Order) -> Verdict {
    if seeds.len() < 2 {
        return Verdict::inconclusive("fewer than two seeds: no spread to compare against");
    }
    let adamw = &finals[ADAMW];
    let (mut held, mut failed) = (Vec::new(), Vec::new());
    match stats::compare(adamw, &finals[0], 2.0) {
        Some(c) if c.order == better => held.push(c.describe("AdamW", "SGD")),
        Some(c) => failed.push(format!("AdamW does not beat SGD: {}", c.describe("AdamW", "SGD"))),
        None => return Verdict::inconclusive("the final scores could not be compared"),
    }
    for (i, (label, ..)) in ARMS.iter().enumerate() {
        if i == ADAMW || i == 0 {
            continue;
        }
        if let Some(c) = stats::compare(&finals[i], adamw, 2.0) {
            if c.order == better {
                failed.push(format!("{label} beats AdamW: {}", c.describe(label, "AdamW")));
            }
        }
    }
    if failed.is_empty() {
        Verdict::reproduced(format!("{}; no arm beats AdamW beyond the noise", held.join("; ")))
    } else if held.is_empty() {
        Verdict::not_reproduced(failed.join("; "))
    } else {
        Verdict::not_reproduced(format!("{}; held: {}", failed.join("; "), held.join("; ")))
    }
}

/// The experiment's verdict from its halves': reproduced if both are, not
/// reproduced if either is not, else inconclusive.
fn combine(vit: &Verdict, gpt: &Verdict) -> Verdict {
    let reason = format!("ViT half {}: {}. GPT half {}: {}", vit.kind.text(), vit.reason, gpt.kind.text(), gpt.reason);
    match (vit.kind, gpt.kind) {
        (VerdictKind::Reproduced, VerdictKind::Reproduced) => Verdict::reproduced(reason),
        (VerdictKind::NotReproduced, _) | (_, VerdictKind::NotReproduced) => Verdict::not_reproduced(reason),
        _ => Verdict::inconclusive(reason),
    }
}
