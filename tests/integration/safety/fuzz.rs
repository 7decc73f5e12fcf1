//! Fuzzing as property tests: random bytes, and valid files with random
//! mutations (flipped, inserted, deleted, duplicated bytes, truncation, and
//! numbers in headers replaced by others, huge ones included), go into every
//! reader (safetensors, IDX, CIFAR-10, text, digits) and every model loader
//! (configuration from shapes or metadata, rebuilding a ViT or a GPT, the HF
//! GPT-2 conversion sample_gpt applies, pretrained loading, a training resume). Each must answer with a value or
//! an error: a panic (or an allocation abort) fails the test.
//!
//! `cargo test` runs 48 cases per property (the resume property, which builds
//! a trainer per case, a quarter of them); run them longer with
//! `PROPTEST_CASES=20000 cargo test --test integration safety::fuzz` (the test
//! profile is optimised and keeps overflow checks, which `--release` would
//! turn off).

use super::harness::{scratch, vit_trainer};
use flate2::write::GzEncoder;
use proptest::prelude::*;
use std::io::Write;
use std::sync::OnceLock;
use tamer::checkpoint::{self, interop, model_metadata, Checkpoint, InputNormalization, MODEL_CONFIG_KEY};
use tamer::data::mnist::{self, encode_idx};
use tamer::data::{cifar, digits, CharDataset};
use tamer::models::{Gpt, GptConfig, Pool, PretrainedOptions, VisionTransformer, VitConfig};
use tamer::nn::Module;
use tamer::rng;
use tamer::testing::proptest_config;
use tamer::train::CHECKPOINT_FILE;

/// 48 cases, or `PROPTEST_CASES`.
fn fuzz_config() -> ProptestConfig {
    proptest_config(48)
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// One edit of a file.
#[derive(Clone, Debug)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Duplicate(usize, usize),
    Truncate(usize),
    /// Replace the n-th run of ASCII digits (a number in a JSON header or
    /// CSV) by this value: shapes, offsets, counts and configuration fields.
    Number(usize, u64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let number = prop_oneof![0u64..4, 0u64..100_000, Just(u32::MAX as u64), Just(1 << 40), Just(u64::MAX), any::<u64>()];
    prop_oneof![
        1 => (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(i, x)| Mutation::Set(i, x)),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, v)| Mutation::Insert(i, v)),
        1 => (any::<usize>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => (any::<usize>(), 1usize..64).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        3 => (0usize..64, number).prop_map(|(k, v)| Mutation::Number(k, v)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    let at = |i: usize| if len == 0 { 0 } else { i % len };
    match m {
        Mutation::Flip(i, x) if len > 0 => bytes[at(*i)] ^= x,
        Mutation::Set(i, x) if len > 0 => bytes[at(*i)] = *x,
        Mutation::Insert(i, v) => {
            let i = if len == 0 { 0 } else { i % (len + 1) };
            bytes.splice(i..i, v.iter().copied());
        }
        Mutation::Delete(i, n) if len > 0 => {
            let i = at(*i);
            bytes.drain(i..(i + n).min(len));
        }
        Mutation::Duplicate(i, n) if len > 0 => {
            let i = at(*i);
            let chunk = bytes[i..(i + n).min(len)].to_vec();
            bytes.splice(i..i, chunk);
        }
        Mutation::Truncate(i) => bytes.truncate(if len == 0 { 0 } else { i % (len + 1) }),
        Mutation::Number(k, v) => {
            let runs: Vec<(usize, usize)> = {
                let mut runs = Vec::new();
                let mut i = 0;
                while i < len {
                    if bytes[i].is_ascii_digit() {
                        let start = i;
                        while i < len && bytes[i].is_ascii_digit() {
                            i += 1;
                        }
                        runs.push((start, i));
                    } else {
                        i += 1;
                    }
                }
                runs
            };
            if let Some(&(a, b)) = runs.get(k % runs.len().max(1)) {
                bytes.splice(a..b, v.to_string().into_bytes());
            }
        }
        _ => {}
    }
}

/// Valid input, damaged by up to 4 mutations; or (one case in 8) plain noise.
fn damaged(seeds: &'static [Vec<u8>]) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        7 => (0..seeds.len(), prop::collection::vec(mutation(), 1..5)).prop_map(move |(i, ms)| {
            let mut b = seeds[i].clone();
            for m in &ms {
                apply(&mut b, m);
            }
            b
        }),
        1 => prop::collection::vec(any::<u8>(), 0..300),
    ]
}

/// The small ViT the loaders read into (the fixture's shape: 8×8×1, patch 4, width 16, 2 heads).
fn fixture_vit() -> VisionTransformer {
    VisionTransformer::new(VitConfig::new((8, 8), 4, 1, 10, 16, 2, 2, 2.0), &mut rng(0)).unwrap()
}

/// Valid safetensors files: timm's ViT and nanoGPT's GPT fixtures, and tamer
/// files with model_config and input_normalization metadata.
fn safetensors_seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let fixture = |name: &str| std::fs::read(checkpoint::fixture_path(name)).unwrap();
        let vit_cfg = VitConfig {
            pool: Pool::Mean,
            ..VitConfig::new((8, 8), 4, 1, 3, 8, 1, 2, 2.0)
        };
        let vit = VisionTransformer::new(vit_cfg.clone(), &mut rng(1)).unwrap();
        let norm = InputNormalization::new(vec![0.3], vec![0.4]).unwrap();
        let vit_meta = model_metadata(&vit_cfg.to_json(), Some(&norm));
        let gpt_cfg = GptConfig {
            vocab_size: 5,
            block_size: 4,
            n_layer: 1,
            n_head: 2,
            n_embd: 8,
            dropout: 0.0,
            bias: true,
            tie_weights: true,
        };
        let gpt = Gpt::new(gpt_cfg.clone(), &mut rng(1)).unwrap();
        vec![
            fixture("vit_tiny.safetensors"),
            fixture("gpt_tiny.safetensors"),
            checkpoint::serialize(&checkpoint::module_tensors(&vit), &vit_meta).unwrap(),
            checkpoint::serialize(&checkpoint::module_tensors(&gpt), &model_metadata(&gpt_cfg.to_json(), None)).unwrap(),
            // HF GPT-2 names and Conv1D layout, which sample_gpt converts.
            fixture("gpt_tiny_hf.safetensors"),
        ]
    })
}

/// One structural edit of a checkpoint: what byte mutations rarely reach
/// past the safetensors reader.
#[derive(Clone, Debug)]
enum Edit {
    Remove(usize),
    /// Replace a tensor by zeros of this shape (dims at most 5, or huge beside a 0).
    Reshape(usize, Vec<usize>),
    /// Rename a tensor by replacing its first digit.
    Renumber(usize, char),
    /// Set a model_config field (by index, nested blocks included) to a value.
    ConfigField(usize, serde_json::Value),
    RemoveConfigField(usize),
    Normalization(String),
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    prop_oneof![
        (0u64..6).prop_map(|v| json!(v)),
        Just(json!(0)),
        Just(json!(u64::MAX)),
        Just(json!(1u64 << 40)),
        Just(json!(-1)),
        Just(json!(0.5)),
        Just(json!(1e300)),
        Just(json!(true)),
        Just(json!("cls")),
        Just(json!("post_ln")),
        Just(json!(null)),
        Just(json!([1, 2])),
        Just(json!({})),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    let shape = prop_oneof![
        3 => prop::collection::vec(0usize..6, 0..5),
        1 => prop::collection::vec(prop_oneof![Just(0usize), Just(1 << 40), Just(usize::MAX / 2)], 1..4).prop_map(|mut v| {
            v.push(0);
            v
        }),
    ];
    prop_oneof![
        any::<usize>().prop_map(Edit::Remove),
        (any::<usize>(), shape).prop_map(|(i, s)| Edit::Reshape(i, s)),
        (any::<usize>(), prop::char::range('0', '9')).prop_map(|(i, c)| Edit::Renumber(i, c)),
        (any::<usize>(), json_value()).prop_map(|(i, v)| Edit::ConfigField(i, v)),
        any::<usize>().prop_map(Edit::RemoveConfigField),
        prop_oneof![
            Just(r#"{"mean":[0.1],"std":[0.0]}"#.to_string()),
            Just(r#"{"mean":[0.1,0.2],"std":[1,1]}"#.to_string()),
            Just(r#"{"mean":[],"std":[]}"#.to_string()),
            Just("not json".to_string()),
            Just(r#"{"mean":[1e40],"std":[1]}"#.to_string()),
        ]
        .prop_map(Edit::Normalization),
    ]
}

/// The leaves of a JSON object, as paths of keys.
fn leaf_paths(v: &serde_json::Value, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    match v.as_object() {
        Some(o) => {
            for (k, x) in o {
                let mut p = prefix.clone();
                p.push(k.clone());
                leaf_paths(x, p, out);
            }
        }
        None => out.push(prefix),
    }
}

fn edit_checkpoint(ckpt: &mut Checkpoint, e: &Edit) {
    let n = ckpt.tensors.len().max(1);
    let config = ckpt
        .metadata
        .get(MODEL_CONFIG_KEY)
        .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok());
    match e {
        Edit::Remove(i) if !ckpt.tensors.is_empty() => {
            ckpt.tensors.remove(i % n);
        }
        Edit::Reshape(i, shape) if !ckpt.tensors.is_empty() => {
            if let Ok(t) = tamer::Tensor::zeros(shape.clone(), tamer::DType::F32) {
                ckpt.tensors[i % n].1 = t;
            }
        }
        Edit::Renumber(i, c) if !ckpt.tensors.is_empty() => {
            let name = &mut ckpt.tensors[i % n].0;
            if let Some(pos) = name.find(|ch: char| ch.is_ascii_digit()) {
                name.replace_range(pos..pos + 1, &c.to_string());
            }
        }
        Edit::ConfigField(i, value) => {
            if let Some(mut cfg) = config {
                let mut paths = Vec::new();
                leaf_paths(&cfg, Vec::new(), &mut paths);
                if let Some(path) = paths.get(i % paths.len().max(1)) {
                    let mut slot = &mut cfg;
                    for k in path {
                        slot = &mut slot[k.as_str()];
                    }
                    *slot = value.clone();
                }
                ckpt.metadata.insert(MODEL_CONFIG_KEY.into(), cfg.to_string());
            }
        }
        Edit::RemoveConfigField(i) => {
            if let Some(mut cfg) = config {
                if let Some(o) = cfg.as_object_mut() {
                    if let Some(k) = o.keys().nth(i % o.len().max(1)).cloned() {
                        o.remove(&k);
                    }
                }
                ckpt.metadata.insert(MODEL_CONFIG_KEY.into(), cfg.to_string());
            }
        }
        Edit::Normalization(text) => {
            ckpt.metadata.insert(checkpoint::INPUT_NORMALIZATION_KEY.into(), text.clone());
        }
        _ => {}
    }
}

/// A valid checkpoint (one of the seeds) with up to 3 structural edits.
fn damaged_checkpoint() -> impl Strategy<Value = Checkpoint> {
    (0..safetensors_seeds().len(), prop::collection::vec(edit(), 1..4)).prop_map(|(i, edits)| {
        let mut ckpt = checkpoint::deserialize(&safetensors_seeds()[i], "edited.safetensors").unwrap();
        for e in &edits {
            edit_checkpoint(&mut ckpt, e);
        }
        ckpt
    })
}

/// A training checkpoint of a 2-step run of the harness's ViT.
fn training_checkpoint_seed() -> &'static [Vec<u8>] {
    static SEED: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEED.get_or_init(|| {
        let dir = scratch("fuzz-train-seed");
        let mut t = vit_trainer(4, Some(dir.clone()));
        t.config.stop_at = Some(2);
        t.fit().unwrap();
        let bytes = std::fs::read(dir.join(CHECKPOINT_FILE)).unwrap();
        let _ = std::fs::remove_dir_all(dir);
        vec![bytes]
    })
}

/// Every loader that reads a checkpoint: none may panic.
fn load_everything(ckpt: Checkpoint) {
    let _ = InputNormalization::from_checkpoint(&ckpt);
    for heads in [None, Some(2)] {
        let _ = VitConfig::from_checkpoint(&ckpt, heads);
        let _ = GptConfig::from_checkpoint(&ckpt, heads);
        let _ = VisionTransformer::from_checkpoint(ckpt.clone(), heads);
        let _ = Gpt::from_checkpoint(ckpt.clone(), heads);
    }
    // sample_gpt's path for HF GPT-2 files: names and Conv1D layout converted, then rebuilt.
    if let Ok(adapted) = interop::gpt2_hf_to_nanogpt(ckpt.tensors.clone()) {
        let converted = Checkpoint {
            tensors: adapted.tensors,
            ..ckpt.clone()
        };
        let _ = Gpt::from_checkpoint(converted, Some(2));
    }
    let _ = fixture_vit().load_pretrained_into(ckpt.clone(), &PretrainedOptions::default());
    let avg = VisionTransformer::new(
        VitConfig {
            pool: Pool::Mean,
            img_size: (12, 12),
            ..VitConfig::new((8, 8), 4, 1, 3, 16, 2, 2, 2.0)
        },
        &mut rng(0),
    )
    .unwrap();
    let _ = avg.load_pretrained_into(ckpt, &PretrainedOptions::default());
}

proptest! {
    #![proptest_config(fuzz_config())]

    #[test]
    fn safetensors_readers_and_model_loaders_never_panic(bytes in damaged(safetensors_seeds())) {
        if let Ok(ckpt) = checkpoint::deserialize(&bytes, "fuzz.safetensors") {
            load_everything(ckpt);
        }
    }

    #[test]
    fn model_loaders_never_panic_on_damaged_tensors_and_metadata(ckpt in damaged_checkpoint()) {
        load_everything(ckpt);
    }

    #[test]
    fn idx_readers_never_panic(
        images in damaged(idx_seeds().0),
        labels in damaged(idx_seeds().1),
    ) {
        if let Ok(ds) = mnist::from_bytes(images, labels, "images", "labels", "fuzz") {
            let (c, h, w) = ds.shape;
            prop_assert_eq!(ds.images.len(), ds.labels.len() * c * h * w);
        }
    }

    #[test]
    fn cifar_reader_never_panics(batch in damaged(cifar_seeds())) {
        if let Ok(ds) = cifar::from_batches(vec![("batch".into(), batch)], "fuzz") {
            prop_assert_eq!(ds.images.len(), ds.labels.len() * cifar::IMAGE_BYTES);
        }
    }

    #[test]
    fn text_and_digits_readers_never_panic(bytes in damaged(text_seeds())) {
        if let Ok(ds) = CharDataset::from_bytes(bytes.clone(), "fuzz.txt") {
            prop_assert!(ds.train.iter().chain(&ds.val).all(|&c| (c as usize) < ds.vocab_size()));
        }
        if let Ok(d) = digits::parse_gz(&bytes, "fuzz.csv.gz") {
            prop_assert_eq!(d.pixels.len(), d.labels.len() * digits::NUM_PIXELS);
        }
        let _ = digits::parse_csv(&String::from_utf8_lossy(&bytes), "fuzz.csv");
    }
}

proptest! {
    // Each case builds a small trainer: fewer of them.
    #![proptest_config({ let config = fuzz_config(); ProptestConfig { cases: config.cases.div_ceil(4), ..config } })]

    #[test]
    fn a_resume_from_a_damaged_training_checkpoint_never_panics(bytes in damaged(training_checkpoint_seed())) {
        static CASE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = scratch(&format!("fuzz-resume-{}", CASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
        let path = dir.join(CHECKPOINT_FILE);
        std::fs::write(&path, &bytes).unwrap();
        let mut t = vit_trainer(4, None);
        if t.resume(&path).is_ok() {
            // Whatever loaded trains on, or stops with an error (damaged weights diverge).
            let _ = t.fit();
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Files, each raw and gzipped.
type Files = Vec<Vec<u8>>;

/// Valid IDX images (raw and gzipped) and labels.
fn idx_seeds() -> (&'static [Vec<u8>], &'static [Vec<u8>]) {
    static SEEDS: OnceLock<(Files, Files)> = OnceLock::new();
    let (i, l) = SEEDS.get_or_init(|| {
        let images = encode_idx(&[3, 4, 4], &(0..48).map(|v| (v * 5) as u8).collect::<Vec<u8>>());
        let labels = encode_idx(&[3], &[1, 7, 9]);
        (vec![gz(&images), images], vec![gz(&labels), labels])
    });
    (i, l)
}

/// A valid CIFAR-10 batch of 2 records, raw and gzipped.
fn cifar_seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut batch = vec![0u8; 2 * cifar::RECORD_BYTES];
        batch[0] = 3;
        batch[cifar::RECORD_BYTES] = 9;
        batch[1..100].iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        vec![gz(&batch), batch]
    })
}

/// Text and digits CSV, raw and gzipped.
fn text_seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let text = "To be, or not to be, that is the question: ünïcödé ✓\n".repeat(4).into_bytes();
        let csv = format!("{}3\n{}7\n", "0,4,16,".repeat(21) + "1,", "2,".repeat(64)).into_bytes();
        vec![gz(&text), text, gz(&csv), csv]
    })
}

#[test]
fn the_seeds_are_valid_inputs() {
    // Mutations start from files every reader accepts, so they reach past the first check.
    for (i, bytes) in safetensors_seeds().iter().enumerate() {
        checkpoint::deserialize(bytes, "seed").unwrap_or_else(|e| panic!("seed {i}: {e}"));
    }
    let vit_meta = checkpoint::deserialize(&safetensors_seeds()[2], "seed").unwrap();
    VisionTransformer::from_checkpoint(vit_meta, None).unwrap();
    let gpt_meta = checkpoint::deserialize(&safetensors_seeds()[3], "seed").unwrap();
    Gpt::from_checkpoint(gpt_meta, None).unwrap();
    let hf = checkpoint::deserialize(&safetensors_seeds()[4], "seed").unwrap();
    let converted = Checkpoint {
        tensors: interop::gpt2_hf_to_nanogpt(hf.tensors.clone()).unwrap().tensors,
        ..hf
    };
    Gpt::from_checkpoint(converted, Some(2)).unwrap();
    let (images, labels) = idx_seeds();
    assert_eq!(mnist::from_bytes(images[0].clone(), labels[1].clone(), "i", "l", "t").unwrap().len(), 3);
    assert_eq!(cifar::from_batches(vec![("b".into(), cifar_seeds()[0].clone())], "t").unwrap().len(), 2);
    assert!(CharDataset::from_bytes(text_seeds()[0].clone(), "t").is_ok());
    assert_eq!(digits::parse_gz(&text_seeds()[2], "d").unwrap().len(), 2);
    let mut t = vit_trainer(4, None);
    let dir = scratch("fuzz-seed-check");
    std::fs::write(dir.join(CHECKPOINT_FILE), &training_checkpoint_seed()[0]).unwrap();
    t.resume(dir.join(CHECKPOINT_FILE)).unwrap();
    assert_eq!(t.step, 2);
    assert!(fixture_vit().num_params() > 0);
    let _ = std::fs::remove_dir_all(dir);
}
