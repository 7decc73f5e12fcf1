//! Experiment 11, patch size vs model size: at about the same compute, a
//! bigger model on bigger patches against a smaller model on smaller patches.

use super::data_hunger::data_dir;
use super::digits::{train, Images, Opt, Recipe, Sched};
use super::experiment::{values_at, Context, Experiment, Outcome, Panel, Record, Scale, Table, Verdict};
use super::stats::{self, Order};
use std::time::Instant;
use tamer::data::mnist;
use tamer::models::VitConfig;
use tamer::Result;

pub struct PatchSize;

/// (label, patch, width): both 4 layers, 4 heads, MLP 2×, on 28×28 MNIST.
const ARMS: [(&str, usize, usize); 2] = [("smaller model, patch 4", 4, 32), ("larger model, patch 7", 7, 64)];
const DEPTH: usize = 4;
const PEAK_LR: f64 = 1e-3;

struct Setup {
    train_images: usize,
    steps: u64,
    batch: usize,
    test_images: usize,
}

fn setup(scale: Scale) -> Setup {
    scale.pick(
        Setup {
            train_images: 200,
            steps: 4,
            batch: 16,
            test_images: 200,
        },
        Setup {
            train_images: 8000,
            steps: 300,
            batch: 64,
            test_images: 2000,
        },
        Setup {
            train_images: 8000,
            steps: 3000,
            batch: 128,
            test_images: 2000,
        },
    )
}

/// Multiply-adds of one image's forward pass through the blocks: per layer the
/// qkv, output and MLP projections (`T·(4D² + 2·D·2D)`) and the attention products (`2·T²·D`).
fn block_macs(tokens: usize, width: usize) -> usize {
    DEPTH * (tokens * (4 * width * width + 4 * width * width) + 2 * tokens * tokens * width)
}

impl Experiment for PatchSize {
    fn name(&self) -> &'static str {
        "patch-size"
    }
    fn title(&self) -> &'static str {
        "Larger patches vs a smaller model at matched compute"
    }
    fn claim(&self) -> &'static str {
        "To make a ViT cheaper, increasing the patch size is better than shrinking the model."
    }
    fn source(&self) -> &'static str {
        "Steiner et al. 2021 (How to train your ViT) §4.6, \"Prefer increasing patch-size to shrinking model-size\", \
         Table 3 (ImageNet-21k pre-training, 384 px): Ti/16 78.22% at 610 img/s against B/32 83.59% at 955 img/s and \
         S/32 79.58% at 2154 img/s. Dosovitskiy et al. 2021 (ViT) App. D.2: smaller patches give \"surprisingly robust \
         improvements\"; compute may predict performance better than parameters."
    }
    fn setup(&self, scale: Scale) -> String {
        let s = setup(scale);
        let (a, b) = (ARMS[0], ARMS[1]);
        let tokens = |p: usize| (28 / p) * (28 / p) + 1;
        format!(
            "MNIST's t10k split: the first {} images for training, {} of the last 2,000 for testing. Two ViTs of {DEPTH} \
             layers, 4 heads, MLP 2×, class token: {} (width {}, {} tokens, {:.2} M multiply-adds per image in the blocks) \
             and {} (width {}, {} tokens, {:.2} M). AdamW (weight decay 0.05) at peak lr {PEAK_LR}, {} warmup steps then \
             cosine decay, {} steps of batch {}, no augmentation. Final test accuracy and measured training time.",
            s.train_images,
            s.test_images,
            a.0,
            a.2,
            tokens(a.1),
            block_macs(tokens(a.1), a.2) as f64 / 1e6,
            b.0,
            b.2,
            tokens(b.1),
            block_macs(tokens(b.1), b.2) as f64 / 1e6,
            s.steps / 10,
            s.steps,
            s.batch
        )
    }
    fn rule(&self) -> &'static str {
        "Reproduced if the larger model on larger patches ends with a higher mean test accuracy than the smaller model \
         on smaller patches by more than twice the pooled standard deviation over seeds; not reproduced if it is lower \
         by that much or the two are within the margin; inconclusive with fewer than two seeds. The measured training \
         times are reported beside the accuracies: compute is matched by the multiply-add estimate, not by time."
    }
    fn missing_data(&self) -> Option<String> {
        super::data_hunger::DataHunger.missing_data()
    }
    fn run(&self, ctx: &Context) -> Result<Outcome> {
        let s = setup(ctx.scale);
        let (train_all, test_all) = mnist::mnist10k(data_dir())?;
        let train_set = train_all.subset(&(0..s.train_images.min(train_all.len())).collect::<Vec<_>>())?;
        let test = test_all.subset(&(0..s.test_images.min(test_all.len())).collect::<Vec<_>>())?;
        let data = Images::new(train_set, test, ctx.device)?;
        let mut records = Vec::new();
        for (label, patch, width) in ARMS {
            for &seed in &ctx.seeds {
                let recipe = Recipe {
                    model: VitConfig::new((28, 28), patch, 1, 10, width, DEPTH, 4, 2.0),
                    optimizer: Opt::AdamW,
                    schedule: Sched::WarmupCosine,
                    peak_lr: PEAK_LR,
                    warmup_steps: s.steps / 10,
                    steps: s.steps,
                    batch_size: s.batch,
                    weight_decay: 0.05,
                    clip: None,
                    eval_every: (s.steps / 6).max(1),
                    no_positions: false,
                    augment: None,
                    label_smoothing: 0.0,
                };
                let started = Instant::now();
                let curve = train(&recipe, &data, seed, ctx.device)?;
                let seconds = started.elapsed().as_secs_f64();
                for &(step, acc) in &curve.test_acc {
                    records.push(Record::new(label, seed, step as f64, "test_acc", acc));
                }
                let last = curve.final_accuracy();
                records.push(Record::new(label, seed, 0.0, "final_test_acc", last));
                records.push(Record::new(label, seed, 0.0, "seconds", seconds));
                ctx.log(format!("{label} seed {seed}: test accuracy {last:.3} in {seconds:.1} s"));
            }
        }
        let (table, verdict) = decide(&records, &ctx.seeds);
        let mut panel = Panel::new("test accuracy (mean ± std over seeds)", "step", "test accuracy");
        for (label, ..) in ARMS {
            panel = panel.line_from(&records, label, "test_acc", label);
        }
        Ok(Outcome {
            records,
            table,
            panels: vec![panel],
            verdict,
            notes: vec!["The measured times include the periodic evaluations and depend on the machine's load.".to_string()],
        })
    }
}

/// The rule of [`PatchSize::rule`]: the table and the verdict.
fn decide(records: &[Record], seeds: &[u64]) -> (Table, Verdict) {
    let at = |label: &str, metric: &str| values_at(records, label, metric, 0.0);
    let mut table = Table::new(&["arm", "final test accuracy", "training time (s)"]);
    for (label, ..) in ARMS {
        table.push(vec![
            label.to_string(),
            stats::mean_std_cell(&at(label, "final_test_acc"), 3),
            stats::mean_std_cell(&at(label, "seconds"), 1),
        ]);
    }
    if seeds.len() < 2 {
        return (table, Verdict::inconclusive("fewer than two seeds: no spread to compare against"));
    }
    let (small, large) = (ARMS[0].0, ARMS[1].0);
    let verdict = match stats::compare(&at(large, "final_test_acc"), &at(small, "final_test_acc"), 2.0) {
        None => Verdict::inconclusive("the accuracies could not be compared"),
        Some(c) => {
            let numbers = c.describe("larger model, patch 7", "smaller model, patch 4");
            match c.order {
                Order::Greater => Verdict::reproduced(numbers),
                Order::Less => Verdict::not_reproduced(format!("the smaller model on smaller patches is better; {numbers}")),
                Order::Within => Verdict::not_reproduced(format!("no difference beyond the noise; {numbers}")),
            }
        }
    };
    (table, verdict)
}
