//! `tamer::plot` on real runs: the curves read back from the metrics.jsonl a
//! short training run wrote, its metrics.svg, a diverged run's, and
//! `plot_metrics`' command line (its refusal to overwrite, its errors).

#[path = "../../examples/cli/plot_args.rs"]
mod plot_args;

use clap::Parser;
use plot_args::PlotArgs;
use std::path::{Path, PathBuf};
use tamer::data::{digits, DataLoader, LoaderConfig, Normalization};
use tamer::models::{Pool, VisionTransformer, VitConfig};
use tamer::nn::Module;
use tamer::ops::nn::cross_entropy::CrossEntropyOptions;
use tamer::optim::{Adam, AdamConfig, Scheduler, Sgd, SgdConfig, WarmupCosine};
use tamer::plot::{metrics_figure, read_metrics, write_metrics_svg, Overwrite, METRICS_SVG};
use tamer::rng;
use tamer::train::{read_jsonl, ImageClassification, Progress, TrainConfig, Trainer, METRICS_FILE};

/// A fresh, empty directory under the system's temp dir.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tamer-plot-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A tiny digits ViT trained for `steps` into `out`, logging every step
/// and evaluating every 3.
fn vit_trainer(steps: u64, out: &Path) -> Trainer<ImageClassification<VisionTransformer>> {
    let (train, test) = digits::load_images().unwrap();
    let cfg = VitConfig {
        pool: Pool::Mean,
        ..VitConfig::new((8, 8), 2, 1, 10, 16, 1, 2, 2.0)
    };
    let model = VisionTransformer::new(cfg, &mut rng(5)).unwrap();
    let opt = Adam::new(model.named_params(), AdamConfig::adamw(3e-3)).unwrap();
    let loader = DataLoader::new(train, LoaderConfig::train(32, 5).with_normalization(Normalization::FromData)).unwrap();
    let task = ImageClassification::new(model, loader, test, 512, CrossEntropyOptions::default()).unwrap();
    let config = TrainConfig {
        total_steps: steps,
        clip: Some(1.0),
        log_every: 1,
        eval_every: Some(3),
        checkpoint_every: None,
        out_dir: Some(out.to_path_buf()),
        seed: 7,
        print: false,
        progress: Progress::Never,
        ..TrainConfig::default()
    };
    Trainer::new(config, task, Box::new(opt), Scheduler::new(WarmupCosine::new(3e-3, 2, steps, 1e-5).unwrap())).unwrap()
}

/// The number of points of each series line of an SVG (its polylines of
/// stroke width 2; axes and ticks are width 1), in document order.
fn series_lines(svg: &str) -> Vec<usize> {
    svg.split("<polyline")
        .skip(1)
        .filter(|tag| tag[..tag.find('>').unwrap()].contains("stroke-width=\"2\""))
        .map(|tag| {
            let points = tag.split("points=\"").nth(1).unwrap();
            points[..points.find('"').unwrap()].split_whitespace().count()
        })
        .collect()
}

#[test]
fn a_training_runs_metrics_read_back_and_plot() {
    let dir = temp_dir("run");
    let out = dir.join("vit-run");
    let mut trainer = vit_trainer(6, &out);
    trainer.fit().unwrap();
    let metrics = out.join(METRICS_FILE);
    let run = read_metrics(&metrics).unwrap();
    assert_eq!(run.name, "vit-run");
    // Every train record's numbers, in order, as the trainer wrote them.
    let records = read_jsonl(&metrics).unwrap();
    let train: Vec<_> = records.iter().filter(|r| r["event"] == "train").collect();
    assert_eq!(train.len(), 6);
    let column = |key: &str| -> Vec<(f64, f64)> { train.iter().map(|r| (r["step"].as_f64().unwrap(), r[key].as_f64().unwrap())).collect() };
    assert_eq!(run.loss, column("loss"));
    assert_eq!(run.lr, column("lr"));
    assert_eq!(run.grad_norm, column("grad_norm"));
    assert_eq!(run.acc, column("acc"));
    assert_eq!(run.loss.iter().map(|p| p.0).collect::<Vec<_>>(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    // The warmup: the learning rate rises over the first two steps.
    assert!(run.lr[0].1 < run.lr[1].1);
    // The evaluations at steps 3 and 6: the image task's two metrics.
    let names: Vec<&str> = run.eval.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["test_loss", "test_acc"]);
    let acc = run.eval_metric("test_acc").unwrap();
    assert_eq!(acc.iter().map(|p| p.0).collect::<Vec<_>>(), [3.0, 6.0]);
    assert!(acc.iter().all(|p| (0.0..=1.0).contains(&p.1)));

    // metrics.svg: the four panels' lines hold every point.
    let svg_path = out.join(METRICS_SVG);
    let skipped = write_metrics_svg(&metrics, &svg_path, Overwrite::Refuse).unwrap();
    assert!(skipped.is_empty(), "{skipped}");
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    // loss: train loss, test_loss; evaluation: train acc, test_acc; lr; grad norm.
    assert_eq!(series_lines(&svg), vec![6, 2, 6, 2, 6, 6]);
    for text in ["training run: vit-run", "train loss", "test_loss", "test_acc", "learning rate", "gradient norm"] {
        assert!(svg.contains(text), "{text} missing");
    }
    // Written once, it is not replaced unless asked.
    assert!(write_metrics_svg(&metrics, &svg_path, Overwrite::Refuse).is_err());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_diverged_run_still_plots() {
    let dir = temp_dir("diverged");
    let mut t = vit_trainer(10, &dir);
    t.optimizer = Box::new(Sgd::new(t.task.model.named_params(), SgdConfig::new(1e30)).unwrap());
    t.scheduler = Scheduler::new(tamer::optim::Constant { lr: 1e30 });
    t.config.clip = None;
    assert!(t.fit().unwrap_err().to_string().contains("diverged"));
    let run = read_metrics(dir.join(METRICS_FILE)).unwrap();
    assert!(!run.loss.is_empty() && run.loss.len() < 10, "{:?}", run.loss);
    let svg = metrics_figure(&[run]).render_svg().unwrap();
    assert!(svg.text.contains("train loss"));
    let _ = std::fs::remove_dir_all(dir);
}

/// A metrics file with `n` train records (and one evaluation) in `dir/name/metrics.jsonl`.
fn fake_run(dir: &Path, name: &str, n: usize) -> PathBuf {
    std::fs::create_dir_all(dir.join(name)).unwrap();
    let mut text = String::new();
    for s in 1..=n {
        text.push_str(&format!(
            "{{\"event\":\"train\",\"step\":{s},\"loss\":{},\"lr\":0.001,\"grad_norm\":{}}}\n",
            2.0 / s as f64,
            1.0 / s as f64
        ));
    }
    text.push_str(&format!("{{\"event\":\"eval\",\"step\":{n},\"val_loss\":1.0}}\n"));
    let path = dir.join(name).join("metrics.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

fn args(list: &[&Path], extra: &[&str]) -> PlotArgs {
    let mut argv: Vec<String> = vec!["plot_metrics".into()];
    argv.extend(list.iter().map(|p| p.display().to_string()));
    argv.extend(extra.iter().map(|s| s.to_string()));
    PlotArgs::try_parse_from(argv).unwrap()
}

#[test]
fn plot_metrics_overlays_runs_and_never_overwrites_unasked() {
    let dir = temp_dir("cli");
    let a = fake_run(&dir, "run-a", 5);
    let b = fake_run(&dir, "run-b", 8);
    let out = dir.join("both.svg");
    let o = out.to_str().unwrap();
    plot_args::run(&args(&[&a, &b], &["--out", o])).unwrap();
    let svg = std::fs::read_to_string(&out).unwrap();
    assert!(svg.contains("run-a: train loss") && svg.contains("run-b: val_loss"));
    // Lines for the train loss, the learning rate and the gradient norm of a and b; each run's
    // single evaluation (val_loss, in the loss panel and, as the only metric, the evaluation's) is a dot.
    assert_eq!(series_lines(&svg), vec![5, 8, 5, 8, 5, 8]);

    // An existing --out is refused, and left as it was.
    std::fs::write(&out, "mine").unwrap();
    let e = plot_args::run(&args(&[&a], &["--out", o])).unwrap_err().to_string();
    assert!(e.contains("both.svg") && e.contains("--force"), "{e}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "mine");
    plot_args::run(&args(&[&a], &["--out", o, "--force"])).unwrap();
    assert!(std::fs::read_to_string(&out).unwrap().contains("training run: run-a"));
    // An input is never the output, --force or not.
    let e = plot_args::run(&args(&[&a], &["--out", a.to_str().unwrap(), "--force"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("is the input"), "{e}");
    assert!(read_metrics(&a).is_ok(), "the input is intact");
    // Two files with the same run name are told apart by their paths.
    std::fs::create_dir_all(dir.join("x")).unwrap();
    let twin = fake_run(&dir.join("x"), "run-a", 3);
    let out2 = dir.join("twins.svg");
    plot_args::run(&args(&[&a, &twin], &["--out", out2.to_str().unwrap()])).unwrap();
    let svg = std::fs::read_to_string(&out2).unwrap();
    assert!(svg.contains(&format!("{}: train loss", twin.display())), "the twin is named by its path");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn plot_metrics_names_the_bad_file() {
    let dir = temp_dir("cli-bad");
    let good = fake_run(&dir, "good", 3);
    let out = dir.join("out.svg");
    let o = out.to_str().unwrap();
    let missing = dir.join("missing.jsonl");
    let not_jsonl = dir.join("notes.txt");
    std::fs::write(&not_jsonl, "step 1: loss 2.0\nstep 2: loss 1.5\n").unwrap();
    let no_train = dir.join("eval-only.jsonl");
    std::fs::write(&no_train, "{\"event\":\"eval\",\"step\":1,\"val_loss\":1.0}\n").unwrap();
    for (bad, says) in [(&missing, "cannot read"), (&not_jsonl, "not a JSON line"), (&no_train, "no \"train\" record")] {
        let e = plot_args::run(&args(&[&good, bad], &["--out", o])).unwrap_err().to_string();
        assert!(e.contains(&bad.display().to_string()) && e.contains(says), "{e}");
        assert!(!out.exists(), "nothing is written when an input is bad");
    }
    // No input at all is clap's error.
    assert!(PlotArgs::try_parse_from(["plot_metrics", "--out", o]).is_err());
    let _ = std::fs::remove_dir_all(dir);
}
