//! `plot_metrics`' command line and what it does (a module of its own so
//! that `tests/integration/plot.rs` runs it as the example does).

use clap::Parser;
use std::path::{Path, PathBuf};
use tamer::plot::{metrics_figure, read_metrics, Overwrite, Skipped};
use tamer::{Error, Result};

const OP: &str = "plot_metrics";

/// Draw training runs' metrics.jsonl files as one SVG of four panels (loss,
/// evaluation metric, learning rate, gradient norm against step), the runs
/// overlaid, each named by its directory (or the file's stem when the file is
/// not named metrics.jsonl).
#[derive(Parser, Debug, Clone)]
#[command(name = "plot_metrics")]
pub struct PlotArgs {
    /// The runs' metrics files (the trainer's metrics.jsonl).
    #[arg(required = true, value_name = "FILE.jsonl")]
    pub files: Vec<PathBuf>,
    /// Where the SVG goes; an existing file is not replaced without --force.
    #[arg(long, value_name = "FILE.svg", default_value = "metrics.svg")]
    pub out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
}

/// Whether `a` and `b` name the same existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
}

/// Read every file (errors name it), then write the figure to `--out`;
/// returns what could not be drawn. Checked before anything is read: `--out`
/// is not one of the inputs (not even with `--force`), and exists only with
/// `--force`. Runs with the same name get their file's path as name instead.
pub fn run(args: &PlotArgs) -> Result<Skipped> {
    if let Some(input) = args.files.iter().find(|f| same_file(f, &args.out)) {
        return Err(Error::value(
            OP,
            format!(
                "--out {} is the input {}: choose another --out; nothing was written",
                args.out.display(),
                input.display()
            ),
        ));
    }
    let refuse = || {
        Error::io(
            OP,
            format!(
                "--out {} already exists: pass --force to replace it, or choose another --out; nothing was written",
                args.out.display()
            ),
        )
    };
    if !args.force && args.out.exists() {
        return Err(refuse());
    }
    let mut runs = args.files.iter().map(read_metrics).collect::<Result<Vec<_>>>()?;
    let names: Vec<String> = runs.iter().map(|r| r.name.clone()).collect();
    for (run, file) in runs.iter_mut().zip(&args.files) {
        if names.iter().filter(|n| **n == run.name).count() > 1 {
            run.name = file.display().to_string();
        }
    }
    let overwrite = if args.force { Overwrite::Replace } else { Overwrite::Refuse };
    // A file that appeared since the check above is refused all the same.
    metrics_figure(&runs)
        .write_svg(&args.out, overwrite)
        .map_err(|e| if !args.force && args.out.exists() { refuse() } else { e })
}
