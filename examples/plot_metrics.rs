//! Overlay training runs' metrics in one SVG: loss, evaluation metric,
//! learning rate and gradient norm against step (the panels of the
//! `metrics.svg` every training run writes).
//!
//! ```sh
//! cargo run --example plot_metrics -- runs/a/metrics.jsonl runs/b/metrics.jsonl --out a-vs-b.svg
//! cargo run --example plot_metrics -- runs/a/metrics.jsonl --out a.svg --force   # replace a.svg
//! ```
//!
//! Each run is named by its directory (or the file's stem). `--out`
//! (default `metrics.svg`) is never replaced without `--force`, nor ever an
//! input. A missing file, a line that is not JSON or a file with no training
//! record is an error naming the file (exit status 1); what could not be
//! drawn (non-finite values of a diverged run, zeros on the log axis) is
//! counted on stdout.

#[path = "cli/pipe.rs"]
mod pipe;
#[path = "cli/plot_args.rs"]
mod plot_args;

use clap::Parser;

fn main() {
    pipe::exit_quietly_on_broken_pipe();
    let args = plot_args::PlotArgs::parse();
    match plot_args::run(&args) {
        Ok(skipped) if skipped.is_empty() => println!("wrote {}", args.out.display()),
        Ok(skipped) => println!("wrote {} ({skipped})", args.out.display()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
