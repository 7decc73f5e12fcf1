//! The lab: each training tip tamer's recipe relies on, tested by a small
//! experiment with a plot and a measured verdict.
//!
//! ```sh
//! cargo run --release --example lab -- rank-collapse             # one experiment, --scale default
//! cargo run --release --example lab -- all                       # every experiment, then docs/lab/README.md
//! cargo run --release --example lab -- pooling --scale quick --out /tmp/lab   # plumbing only, seconds
//! cargo run --release --features cuda --example lab -- all --scale full --device cuda
//! ```
//!
//! Each run writes `OUT/NAME/{runs.jsonl, NAME.svg, verdict.json}` (OUT is
//! `out/lab` unless `--out` says otherwise; an existing `OUT/NAME` is only
//! replaced with `--force`). At `--scale default` and `--scale full` the
//! verdict and chart are also copied to `docs/lab/` and `docs/lab/README.md`
//! is regenerated; `--scale quick` writes only under OUT unless `--report
//! DIR` names where the report goes.
//!
//! Modules: `experiment` (the `Experiment` trait, records, tables, chart
//! panels, verdicts), `stats` (mean, standard deviations, the comparison the
//! rules use), `output` (the run directory), `report` (the README), `chart`
//! (the SVG), `experiments/` (one file per experiment).
//!
//! Data: the digits are vendored; the MNIST and tinyshakespeare experiments
//! read `--data-dir` (default `../shared/data` beside the repository, else
//! `datasets/`, where `scripts/download_data.sh` puts them) and are skipped,
//! with the command that fetches the files, when those are absent.

#[allow(dead_code)]
#[path = "../cli/common.rs"]
mod common;
#[path = "../cli/pipe.rs"]
mod pipe;

mod chart;
mod experiment;
mod experiments;
mod output;
mod report;
mod stats;

use clap::builder::PossibleValuesParser;
use clap::Parser;
use common::DeviceKind;
use experiment::{Context, Experiment, Scale};
use std::path::PathBuf;
use std::time::Instant;

/// Run the lab's experiments: each writes OUT/NAME/{runs.jsonl, NAME.svg, verdict.json}
/// and (at --scale default or full) regenerates docs/lab/README.md.
#[derive(Parser, Debug)]
#[command(name = "lab")]
pub struct Args {
    /// The experiment to run, or `all` (in the report's order).
    #[arg(value_parser = experiment_names())]
    pub name: String,
    /// quick: seconds, plumbing only; default: at most 15 minutes per experiment on a 2-core CPU; full: for a GPU.
    #[arg(long, value_enum, default_value_t = Scale::Default)]
    pub scale: Scale,
    /// Seeds per configuration [default: 2 quick, 3 default, 5 full].
    #[arg(long, value_parser = common::positive_usize)]
    pub seeds: Option<usize>,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
    /// The directory that receives NAME/ per experiment.
    #[arg(long, default_value = "out/lab")]
    pub out: PathBuf,
    /// Replace an existing OUT/NAME.
    #[arg(long)]
    pub force: bool,
    /// The folder holding `mnist/` (the t10k files) and `tinyshakespeare.txt` [default: ../shared/data beside the
    /// repository if present, else datasets/, where scripts/download_data.sh puts them].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where the report (README.md, NAME.svg, NAME.json) goes [default: docs/lab at --scale default/full; none at quick].
    #[arg(long, value_name = "DIR")]
    pub report: Option<PathBuf>,
}

fn experiment_names() -> PossibleValuesParser {
    let mut names: Vec<&'static str> = experiments::all().iter().map(|e| e.name()).collect();
    names.push("all");
    PossibleValuesParser::new(names)
}

impl Args {
    /// The report directory, if this run writes one.
    pub fn report_dir(&self) -> Option<PathBuf> {
        match (&self.report, self.scale) {
            (Some(dir), _) => Some(dir.clone()),
            (None, Scale::Quick) => None,
            (None, _) => Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs").join("lab")),
        }
    }
}

pub fn validate(args: &Args) -> Result<(), String> {
    if args.device == DeviceKind::Cuda {
        common::cuda_available()?;
    }
    Ok(())
}

/// The canonical command that reruns `name` as `args` ran it.
fn command_for(name: &str, args: &Args) -> String {
    let mut c = format!("cargo run --release --example lab -- {name} --scale {}", args.scale.name());
    if let Some(n) = args.seeds {
        c += &format!(" --seeds {n}");
    }
    if args.device == DeviceKind::Cuda {
        c = c.replace("--release", "--release --features cuda") + " --device cuda";
    }
    c
}

/// Run what `args` asks for; returns each experiment's verdict.json object.
pub fn run(args: &Args) -> tamer::Result<Vec<serde_json::Value>> {
    if let Some(dir) = &args.data_dir {
        experiments::data::set_data_dir(dir.clone());
    }
    let registry = experiments::all();
    let mut selected: Vec<&dyn Experiment> = registry.iter().copied().filter(|e| args.name == "all" || args.name == e.name()).collect();
    // `all` skips what it cannot run; an experiment asked for by name is an error.
    if let [only] = selected.as_slice() {
        if let (false, Some(reason)) = (args.name == "all", only.missing_data()) {
            return Err(tamer::Error::io("lab", format!("{} cannot run: {reason}", only.name())));
        }
    }
    selected.retain(|e| match e.missing_data() {
        Some(reason) => {
            eprintln!("skipping {}: {reason}", e.name());
            false
        }
        None => true,
    });
    // Refuse before running anything, so `all` does not stop half-way over an old run.
    let dirs = selected
        .iter()
        .map(|e| output::run_dir(&args.out, e.name(), args.force))
        .collect::<tamer::Result<Vec<_>>>()?;
    let device = common::rank_device(args.device, 0)?;
    let seeds = args.seeds.unwrap_or(args.scale.default_seeds());
    let report_dir = args.report_dir();
    // The commit as the run starts: each experiment rewrites files under docs/lab, which would
    // mark the tree dirty for every later one.
    let commit = output::commit();
    let mut verdicts = Vec::new();
    for (exp, dir) in selected.iter().zip(&dirs) {
        let ctx = Context::new(exp.name(), args.scale, seeds, device).with_run_dir(dir.clone());
        ctx.log(format!("{} at --scale {}, {seeds} seeds on {device}", exp.title(), args.scale.name()));
        let load_before = output::load_average();
        let started = Instant::now();
        let outcome = exp.run(&ctx)?;
        let info = output::RunInfo {
            seconds: started.elapsed().as_secs_f64(),
            command: command_for(exp.name(), args),
            date: output::utc_now(),
            commit: commit.clone(),
            load: (load_before, output::load_average()),
        };
        let verdict = output::write_run(dir, *exp, &ctx, &outcome, &info)?;
        ctx.log(format!(
            "{}: {} ({:.0} s); files in {}",
            outcome.verdict.kind.text(),
            outcome.verdict.reason,
            info.seconds,
            dir.display()
        ));
        if let Some(report_dir) = &report_dir {
            report::add_run(report_dir, dir, &verdict)?;
        }
        verdicts.push(verdict);
    }
    if let Some(report_dir) = &report_dir {
        let readme = report::regenerate(report_dir, &registry)?;
        eprintln!("report: {}", readme.display());
    }
    Ok(verdicts)
}

fn main() {
    common::main_with(validate, |args: &Args| run(args).map(|_| ()));
}
