//! Load a ViT checkpoint (safetensors, timm's names) and classify an image
//! tensor, printing the top-k classes.
//!
//! A checkpoint `train_vit` wrote carries the model's configuration and the
//! input normalisation it was trained with in its metadata: both are used
//! (`--heads` may only repeat the stored head count). A plain timm checkpoint
//! has neither: its configuration is read off the shapes
//! ([`VitConfig::from_checkpoint`](tamer::models::VitConfig::from_checkpoint)),
//! except the number of heads (`--heads`; default 64-wide heads as every timm
//! ViT, or 2 for the bundled fixture), and the example says so. The default
//! checkpoint is the tiny timm ViT of
//! `tests/fixtures/vit_tiny.safetensors` (8×8×1, random weights) and the
//! default image its PyTorch input, whose logits PyTorch recorded: the example
//! prints how closely tamer reproduces them.
//!
//! ```sh
//! cargo run --release --example classify_vit
//! cargo run --release --example classify_vit -- --image digits:5 --top-k 3
//! cargo run --release --example classify_vit -- --checkpoint vit_tiny_patch16_224.safetensors --image img.safetensors:x
//! ```
//!
//! Images: `fixture` (the fixture input, a batch of 2), `digits:N` (image N of
//! the vendored 8×8 UCI digits, pixels scaled to [0, 1]), or `PATH[:KEY]`, a
//! safetensors file holding a `[B, C, H, W]` (or `[C, H, W]`) tensor under KEY
//! (default `x`), already resized to the model's input. A `digits:N` or PATH
//! image is normalised with the checkpoint's input normalisation when it
//! records one (pixels then in `[0, 1]`), and taken as the model's input
//! otherwise; the fixture image is the fixture model's input as it is.

#[path = "cli/pipe.rs"]
mod pipe;

use tamer::checkpoint::{self, fixture_path, Checkpoint, InputNormalization};
use tamer::models::VisionTransformer;
use tamer::nn::Module;
use tamer::{DType, Tensor};

const USAGE: &str = "usage: classify_vit [--checkpoint PATH] [--image fixture|digits:N|PATH[:KEY]] [--heads N] [--top-k K]";

struct Args {
    checkpoint: Option<String>,
    image: String,
    heads: Option<usize>,
    top_k: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        checkpoint: None,
        image: "fixture".into(),
        heads: None,
        top_k: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number = |v: &str| {
            v.parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{flag} {v:?}: expected a positive integer\n{USAGE}"))
        };
        match flag.as_str() {
            "--checkpoint" => args.checkpoint = Some(value),
            "--image" => args.image = value,
            "--heads" => args.heads = Some(number(&value)?),
            "--top-k" => args.top_k = number(&value)?,
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    Ok(args)
}

/// The image batch `[B, C, H, W]` named by `spec`.
fn load_image(spec: &str) -> tamer::Result<Tensor> {
    if spec == "fixture" {
        return Ok(checkpoint::fixture("vit_tiny_io.safetensors")?.get("x")?.clone());
    }
    if let Some(n) = spec.strip_prefix("digits:") {
        let digits = tamer::data::digits::load()?;
        let i: usize = n
            .parse()
            .ok()
            .filter(|&i| i < digits.len())
            .ok_or_else(|| tamer::Error::value("classify_vit", format!("digits index {n:?} must be below {}", digits.len())))?;
        println!("image: digits[{i}], label {}", digits.labels[i]);
        let side = tamer::data::digits::IMAGE_SIDE;
        return Tensor::from_slice(&digits.pixels[i * side * side..(i + 1) * side * side], [1, 1, side, side]);
    }
    let (path, key) = spec.rsplit_once(':').filter(|(p, _)| !p.is_empty()).unwrap_or((spec, "x"));
    let t = checkpoint::read(path)?.get(key)?.clone();
    let t = if t.rank() == 3 { t.unsqueeze(0)? } else { t };
    if t.dtype().is_compute_float() {
        Ok(t)
    } else {
        t.to_dtype(DType::F32)
    }
}

/// The library asks for a field (`give num_heads`); on this command line that is a flag.
fn name_the_flag(e: tamer::Error, field: &str, flag: &str) -> tamer::Error {
    if e.message.ends_with(&format!("give {field}")) {
        tamer::Error::new(e.op, e.kind.clone(), format!("{} ({flag} N)", e.message))
    } else {
        e
    }
}

fn run(args: Args) -> tamer::Result<()> {
    let default_ckpt = args.checkpoint.is_none();
    let path = args.checkpoint.map_or_else(|| fixture_path("vit_tiny.safetensors"), Into::into);
    let ckpt: Checkpoint = checkpoint::read(&path)?;
    // The bundled fixture has 2 heads of width 8 (scripts/make_fixtures.py).
    let heads = args.heads.or(if default_ckpt { Some(2) } else { None });
    let normalization = InputNormalization::from_checkpoint(&ckpt)?;
    let (mut vit, notes) = VisionTransformer::from_checkpoint(ckpt, heads).map_err(|e| name_the_flag(e, "num_heads", "--heads"))?;
    let config = &vit.config;
    println!(
        "model: {}×{}×{} images, patch {}, width {}, depth {}, {} heads, MLP ratio {}, {:?} pooling, {} classes",
        config.img_size.0,
        config.img_size.1,
        config.in_chans,
        config.patch_size,
        config.embed_dim,
        config.depth,
        config.num_heads,
        config.mlp_ratio,
        config.pool,
        config.num_classes
    );
    for note in &notes {
        println!("{note}");
    }
    println!("{} parameters", vit.num_params());
    vit.set_training(false);

    let x = load_image(&args.image)?;
    let x = match (&normalization, args.image.as_str()) {
        (Some(n), image) if image != "fixture" => {
            println!(
                "inputs normalised with the checkpoint's input_normalization (mean {:?}, std {:?})",
                n.mean, n.std
            );
            n.apply(&x)?
        }
        (None, image) if image != "fixture" => {
            println!("the checkpoint records no input normalisation: the image is used as it is");
            x
        }
        _ => x,
    };
    let logits = tamer::no_grad(|| vit.forward(&x))?;
    if args.image == "fixture" && default_ckpt {
        let reference = checkpoint::fixture("vit_tiny_io.safetensors")?;
        let (ours, theirs) = (logits.to_f64_vec()?, reference.get("logits")?.to_f64_vec()?);
        let scale = theirs.iter().fold(0f64, |m, v| m.max(v.abs()));
        let diff = ours.iter().zip(&theirs).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
        println!("max |logit − PyTorch's| = {diff:.2e} ({:.2e} of the largest logit)", diff / scale);
    }
    let probs = logits.softmax(-1)?.to_vec2::<f32>()?;
    for (b, row) in probs.iter().enumerate() {
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&i, &j| row[j].total_cmp(&row[i]));
        let top: Vec<String> = order.iter().take(args.top_k).map(|&c| format!("class {c}: {:.4}", row[c])).collect();
        println!("image {b}: {}", top.join(", "));
    }
    Ok(())
}

fn main() {
    pipe::exit_quietly_on_broken_pipe();
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2);
    });
    if let Err(e) = run(args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
