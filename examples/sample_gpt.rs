//! Sample from a GPT checkpoint in nanoGPT's naming (safetensors).
//!
//! ```sh
//! cargo run --release --example sample_gpt                                  # the tiny PyTorch fixture
//! cargo run --release --example sample_gpt -- --checkpoint out/train_gpt/gpt.safetensors --tokens 200 --top-k 10
//! ```
//!
//! A checkpoint `train_gpt` wrote carries the model's configuration in its
//! metadata (`model_config`), which is used as it is. Otherwise the shapes
//! (vocabulary, context, width, layers, biases) are read off the tensors and
//! the head count comes from the file's `n_head` metadata or `--n-head`. When the metadata holds the character vocabulary (`vocab`, as
//! the training example writes it), tokens are printed as text, else as ids.
//! HF GPT-2 files (Conv1D layout) are converted on the fly.

#[path = "cli/pipe.rs"]
mod pipe;

use tamer::checkpoint::{interop, read};
use tamer::models::Gpt;
use tamer::nn::Module;
use tamer::{rng, Error, Result, Tensor};

struct Args {
    /// None: the tiny PyTorch fixture.
    checkpoint: Option<String>,
    n_head: Option<usize>,
    tokens: usize,
    temperature: f64,
    top_k: Option<usize>,
    seed: u64,
    prompt: Option<String>,
}

const USAGE: &str = "usage: sample_gpt [--checkpoint FILE] [--n-head N] [--tokens N] [--temperature X] [--top-k N] [--seed N] [--prompt TEXT]";

fn parse_args() -> std::result::Result<Args, String> {
    let mut a = Args {
        checkpoint: None,
        n_head: None,
        tokens: 32,
        temperature: 1.0,
        top_k: None,
        seed: 0,
        prompt: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let v = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |what: &str| format!("{flag} {v:?}: expected {what}\n{USAGE}");
        match flag.as_str() {
            "--checkpoint" => a.checkpoint = Some(v.clone()),
            "--n-head" => a.n_head = Some(v.parse().ok().filter(|&n| n > 0).ok_or_else(|| bad("a positive whole number"))?),
            "--tokens" => a.tokens = v.parse().map_err(|_| bad("a whole number"))?,
            "--temperature" => {
                a.temperature = v
                    .parse()
                    .ok()
                    .filter(|&t: &f64| t >= 0.0 && t.is_finite())
                    .ok_or_else(|| bad("a number >= 0"))?
            }
            "--top-k" => a.top_k = Some(v.parse().ok().filter(|&k| k > 0).ok_or_else(|| bad("a positive whole number"))?),
            "--seed" => a.seed = v.parse().map_err(|_| bad("a whole number"))?,
            "--prompt" => a.prompt = Some(v.clone()),
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    Ok(a)
}

fn run(args: Args) -> Result<()> {
    let (path, n_head) = match &args.checkpoint {
        Some(path) => (path.clone(), args.n_head),
        // The fixture has 2 heads (tests/fixtures/fixtures.json).
        None => (
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gpt_tiny.safetensors").to_string(),
            args.n_head.or(Some(2)),
        ),
    };
    let mut ckpt = read(&path)?;
    if ckpt.get("wte.weight").is_ok() || ckpt.get("transformer.h.0.attn.c_attn.weight").is_err() {
        let adapted = interop::gpt2_hf_to_nanogpt(ckpt.tensors.clone())?;
        for note in &adapted.notes {
            eprintln!("note: {note}");
        }
        ckpt.tensors = adapted.tensors;
    }
    let vocab: Option<Vec<char>> = ckpt.metadata.get("vocab").map(|v| v.chars().collect());
    let (gpt, notes) = Gpt::from_checkpoint(ckpt, n_head).map_err(|e| {
        // The library asks for the field (`give n_head`); on this command line that is a flag.
        if e.message.ends_with("give n_head") {
            Error::new(e.op, e.kind.clone(), format!("{} (--n-head N)", e.message))
        } else {
            e
        }
    })?;
    for note in &notes {
        eprintln!("note: {note}");
    }
    eprintln!("loaded {path} ({} parameters): {:?}", gpt.num_params(), gpt.config);

    let prompt: Vec<i64> = match (&args.prompt, &vocab) {
        (Some(p), Some(v)) => p
            .chars()
            .map(|c| {
                v.iter()
                    .position(|&x| x == c)
                    .map(|i| i as i64)
                    .ok_or_else(|| Error::value("sample_gpt", format!("prompt character {c:?} is not in the vocabulary")))
            })
            .collect::<Result<_>>()?,
        (Some(p), None) => p
            .split(',')
            .map(|s| {
                s.trim()
                    .parse::<i64>()
                    .map_err(|_| Error::value("sample_gpt", format!("prompt {p:?}: expected comma-separated token ids")))
            })
            .collect::<Result<_>>()?,
        (None, _) => vec![0],
    };
    let n = prompt.len();
    let idx = Tensor::from_vec(prompt, [1, n])?;
    let out = gpt
        .generate(&idx, args.tokens, args.temperature, args.top_k, &mut rng(args.seed))?
        .to_vec::<i64>()?;
    match vocab {
        Some(v) => println!("{}", out.iter().map(|&i| v.get(i as usize).copied().unwrap_or('?')).collect::<String>()),
        None => println!("{}", out.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(" ")),
    }
    Ok(())
}

fn main() {
    pipe::exit_quietly_on_broken_pipe();
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
