//! Checkpoints: safetensors round trips, corrupt files (property tests: never
//! a panic), atomic writes, loading into modules with every mismatch in one
//! error, and interop with the PyTorch fixtures in tests/fixtures (made by
//! scripts/make_fixtures.py): HF GPT-2 → nanoGPT names, timm's bicubic
//! pos_embed resizing, f16/bf16 weights, ViT fine-tuning adaptation.

use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tamer::checkpoint::interop::{
    adapt_vit_checkpoint, gpt2_hf_to_nanogpt, interpolate_bicubic, nanogpt_to_gpt2_hf, resample_pos_embed, resize_pos_embed, PosEmbedResize, VitAdapt,
};
use tamer::checkpoint::{self, fixture, Checkpoint, LoadOptions};
use tamer::nn::{Module, Param};
use tamer::ops::nn::cross_entropy::CrossEntropyOptions;
use tamer::testing::proptest_config;
use tamer::{rng, DType, ErrorKind, Tensor};

/// A scratch directory unique to this test process and test name.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tamer-ckpt-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A module made of named parameters and buffers, standing in for a model.
struct Bag {
    params: Vec<(String, Param)>,
    buffers: Vec<(String, Param)>,
}

impl Module for Bag {
    fn named_params(&self) -> Vec<(String, Param)> {
        self.params.clone()
    }
    fn named_buffers(&self) -> Vec<(String, Param)> {
        self.buffers.clone()
    }
    fn set_training(&mut self, _: bool) {}
}

fn bag(params: &[(&str, &[usize])], seed: u64) -> Bag {
    let mut r = rng(seed);
    Bag {
        params: params
            .iter()
            .map(|(n, d)| (n.to_string(), Param::new(Tensor::randn(d.to_vec(), DType::F32, &mut r).unwrap())))
            .collect(),
        buffers: Vec::new(),
    }
}

fn values(m: &dyn Module) -> Vec<(String, Vec<f64>)> {
    m.named_params().into_iter().map(|(n, p)| (n, p.tensor().to_f64_vec().unwrap())).collect()
}

fn sample_tensors() -> Vec<(String, Tensor)> {
    let mut r = rng(11);
    let f32s = Tensor::randn([3, 4], DType::F32, &mut r).unwrap();
    vec![
        ("a.f32".to_string(), f32s.clone()),
        ("a.f64".to_string(), Tensor::randn([2, 3, 2], DType::F64, &mut r).unwrap()),
        ("a.f16".to_string(), f32s.to_dtype(DType::F16).unwrap()),
        ("a.bf16".to_string(), f32s.to_dtype(DType::BF16).unwrap()),
        ("a.i64".to_string(), Tensor::from_vec(vec![i64::MIN, -1, 0, 7, i64::MAX], [5]).unwrap()),
        ("scalar".to_string(), Tensor::scalar(2.5f32)),
        ("empty".to_string(), Tensor::zeros([0, 4], DType::F32).unwrap()),
        // A non-contiguous view is written row-major.
        ("permuted".to_string(), f32s.t().unwrap()),
    ]
}

fn valid_bytes() -> Vec<u8> {
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    checkpoint::serialize(&sample_tensors(), &meta).unwrap()
}

/// A safetensors file with a hand-written header (padded to 8 bytes) and data.
fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.as_bytes().to_vec();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    out
}

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

#[test]
fn round_trip_every_dtype_through_a_file() {
    let dir = scratch("roundtrip");
    let path = dir.join("all.safetensors");
    let tensors = sample_tensors();
    let mut meta = BTreeMap::new();
    meta.insert("config".to_string(), "{\"n_layer\": 2}".to_string());
    checkpoint::save_with_metadata(&path, &tensors, &meta).unwrap();
    let back = checkpoint::read(&path).unwrap();
    assert_eq!(back.metadata, meta);
    assert!(back.unsupported.is_empty());
    assert_eq!(back.len(), tensors.len());
    for (name, t) in &tensors {
        let b = back.get(name).unwrap();
        assert_eq!(b.dtype(), t.dtype(), "{name}");
        assert_eq!(b.dims(), t.dims(), "{name}");
        assert!(b.is_contiguous());
        match t.dtype() {
            DType::I64 => assert_eq!(b.to_vec::<i64>().unwrap(), t.to_vec::<i64>().unwrap()),
            // Bitwise equality (to_f64 is exact for every float dtype).
            _ => assert_eq!(b.to_f64_vec().unwrap(), t.to_f64_vec().unwrap(), "{name}"),
        }
    }
    // `load` gives the same pairs in file order.
    let pairs = checkpoint::load(&path).unwrap();
    assert_eq!(pairs.len(), tensors.len());
    // `to_floats` widens f16/bf16 to f32 and leaves i64 alone.
    let f32s = back.to_floats(DType::F32).unwrap();
    assert_eq!(f32s.get("a.bf16").unwrap().dtype(), DType::F32);
    assert_eq!(f32s.get("a.i64").unwrap().dtype(), DType::I64);
}

#[test]
fn serialize_rejects_duplicate_and_reserved_names() {
    let t = Tensor::zeros([1], DType::F32).unwrap();
    let dup = checkpoint::serialize(&[("w".into(), t.clone()), ("w".into(), t.clone())], &BTreeMap::new()).unwrap_err();
    assert!(dup.to_string().contains("\"w\" appears twice"), "{dup}");
    let reserved = checkpoint::serialize(&[("__metadata__".into(), t)], &BTreeMap::new()).unwrap_err();
    assert!(reserved.to_string().contains("reserved"), "{reserved}");
}

#[test]
fn save_module_and_load_module_round_trip_params_and_buffers() {
    let dir = scratch("module");
    let path = dir.join("m.safetensors");
    let mut src = bag(&[("blocks.0.attn.qkv.weight", &[6, 2]), ("head.bias", &[3])], 1);
    src.buffers
        .push(("bn.running_mean".into(), Param::new(Tensor::full([2], 0.5, DType::F32).unwrap())));
    checkpoint::save_module(&path, &src).unwrap();
    let mut dst = bag(&[("blocks.0.attn.qkv.weight", &[6, 2]), ("head.bias", &[3])], 2);
    dst.buffers
        .push(("bn.running_mean".into(), Param::new(Tensor::zeros([2], DType::F32).unwrap())));
    let report = checkpoint::load_module(&path, &dst, &LoadOptions::default()).unwrap();
    assert_eq!(report.loaded.len(), 3);
    assert_eq!(values(&dst), values(&src));
    assert_eq!(dst.buffers[0].1.tensor().to_vec::<f32>().unwrap(), vec![0.5, 0.5]);
}

// ---------------------------------------------------------------------------------------------
// Corrupt files
// ---------------------------------------------------------------------------------------------

fn load_err(bytes: &[u8]) -> String {
    let e = checkpoint::deserialize(bytes, "bad.safetensors").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Format, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("bad.safetensors"), "the message names the file: {msg}");
    msg
}

#[test]
fn corrupt_files_are_errors_that_say_what_is_wrong() {
    let good = valid_bytes();
    assert!(load_err(&good[..5]).contains("shorter than the 8-byte header length"));
    assert!(load_err(&good[..40]).contains("truncated"));
    assert!(load_err(&good[..good.len() - 1]).contains("data section"));
    let mut huge = good.clone();
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(load_err(&huge).contains("100 MB"));
    assert!(load_err(&raw_file("{\"a\": ", &[])).contains("not valid JSON"));
    assert!(load_err(&raw_file("[1, 2]", &[])).contains("not a JSON object"));
    let bad_utf8 = {
        let mut f = raw_file("{\"a\":1}", &[]);
        f[9] = 0xff;
        f
    };
    assert!(load_err(&bad_utf8).contains("UTF-8"));
    let out_of_range = raw_file(r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, &[0; 4]);
    let msg = load_err(&out_of_range);
    assert!(msg.contains("\"w\"") && msg.contains("outside the data section"), "{msg}");
    let unknown = raw_file(r#"{"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}"#, &[0; 8]);
    assert!(load_err(&unknown).contains("unknown dtype \"Q4\""));
    let wrong_count = raw_file(r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, &[0; 8]);
    let msg = load_err(&wrong_count);
    assert!(msg.contains("needs 12 bytes") && msg.contains("span 8"), "{msg}");
    let overlap = raw_file(
        r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#,
        &[0; 8],
    );
    assert!(load_err(&overlap).contains("gaps or overlaps"));
    let trailing = raw_file(r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, &[0; 12]);
    assert!(load_err(&trailing).contains("trailing bytes"));
    let overflow = raw_file(r#"{"w":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#, &[0; 8]);
    assert!(load_err(&overflow).contains("too large"));
    let bad_meta = raw_file(r#"{"__metadata__":{"k":1}}"#, &[]);
    assert!(load_err(&bad_meta).contains("__metadata__"));

    // Missing files are Io errors naming the path.
    let e = checkpoint::read("/nonexistent/dir/x.safetensors").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Io);
    assert!(e.to_string().contains("/nonexistent/dir/x.safetensors"));
}

#[test]
fn exotic_dtypes_are_listed_not_fatal_for_read_and_fatal_for_load() {
    let dir = scratch("exotic");
    let path = dir.join("f8.safetensors");
    let bytes = raw_file(
        r#"{"f8":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]},"c":{"dtype":"C64","shape":[1],"data_offsets":[2,10]},"u":{"dtype":"U64","shape":[1],"data_offsets":[10,18]},"ok":{"dtype":"I32","shape":[2],"data_offsets":[18,26]}}"#,
        &[
            1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xff, 0xff, 0xff, 7, 0, 0, 0,
        ],
    );
    std::fs::write(&path, &bytes).unwrap();
    let ckpt = checkpoint::read(&path).unwrap();
    assert_eq!(ckpt.get("ok").unwrap().to_vec::<i64>().unwrap(), vec![-2, 7]);
    let names: Vec<&str> = ckpt.unsupported.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, vec!["f8", "c", "u"]);
    let e = checkpoint::load(&path).unwrap_err().to_string();
    assert!(
        e.contains("3 tensor(s) of unsupported dtype") && e.contains("F8_E4M3") && e.contains("C64"),
        "{e}"
    );
}

fn no_panic_on(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(ckpt) = checkpoint::deserialize(bytes, "fuzz") {
        // Whatever parses is self-consistent.
        for (_, t) in &ckpt.tensors {
            prop_assert_eq!(t.to_f64_vec().unwrap().len(), t.numel());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(proptest_config(256))]

    #[test]
    fn truncated_files_are_errors(cut in 0usize..10_000) {
        let good = valid_bytes();
        let cut = cut % good.len();
        let e = checkpoint::deserialize(&good[..cut], "cut").unwrap_err();
        prop_assert_eq!(e.kind, ErrorKind::Format);
    }

    #[test]
    fn flipped_header_bytes_never_panic(flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let mut bytes = valid_bytes();
        let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        for (at, value) in flips {
            let at = at % header_end;
            bytes[at] ^= value | 1;
        }
        no_panic_on(&bytes)?;
    }

    #[test]
    fn flipped_bytes_anywhere_never_panic(flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let mut bytes = valid_bytes();
        let len = bytes.len();
        for (at, value) in flips {
            bytes[at % len] ^= value;
        }
        no_panic_on(&bytes)?;
    }

    #[test]
    fn random_garbage_is_an_error(garbage in prop::collection::vec(any::<u8>(), 0..512)) {
        prop_assert!(checkpoint::deserialize(&garbage, "garbage").is_err());
    }

    #[test]
    fn random_headers_never_panic(
        entries in prop::collection::vec(
            (
                prop::sample::select(vec!["F32", "F16", "BF16", "F64", "I64", "I32", "U8", "BOOL", "U64", "F8_E4M3", "F4", "C64", "X"]),
                prop::collection::vec(0u64..6, 0..4),
                0u64..64,
                0u64..64,
            ),
            0..4,
        ),
        data_len in 0usize..64,
        giant in any::<bool>(),
    ) {
        let mut header = String::from("{");
        for (i, (dtype, shape, begin, end)) in entries.iter().enumerate() {
            let shape: Vec<String> = shape.iter().map(|d| if giant { (d << 60).to_string() } else { d.to_string() }).collect();
            if i > 0 {
                header.push(',');
            }
            header.push_str(&format!(r#""t{i}":{{"dtype":"{dtype}","shape":[{}],"data_offsets":[{begin},{end}]}}"#, shape.join(",")));
        }
        header.push('}');
        no_panic_on(&raw_file(&header, &vec![0x3c; data_len]))?;
    }
}

// ---------------------------------------------------------------------------------------------
// Atomic writes
// ---------------------------------------------------------------------------------------------

fn leftover_temp_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tamer-tmp-"))
        .collect()
}

#[test]
fn a_failed_save_leaves_the_old_file_intact_and_no_temp_file() {
    let dir = scratch("atomic");
    let path = dir.join("model.safetensors");
    let old = vec![("w".to_string(), Tensor::from_vec(vec![1.0f32, 2.0], [2]).unwrap())];
    checkpoint::save(&path, &old).unwrap();
    let old_bytes = std::fs::read(&path).unwrap();

    // Invalid content fails before any byte is written.
    let t = Tensor::zeros([1], DType::F32).unwrap();
    assert!(checkpoint::save(&path, &[("a".into(), t.clone()), ("a".into(), t.clone())]).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), old_bytes);

    // A rename that fails (the target is a non-empty directory) removes the temp file.
    let blocked = dir.join("blocked.safetensors");
    std::fs::create_dir(&blocked).unwrap();
    std::fs::write(blocked.join("keep"), b"x").unwrap();
    let e = checkpoint::save(&blocked, &old).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Io);
    assert!(e.to_string().contains("blocked.safetensors") && e.to_string().contains("unchanged"), "{e}");
    assert!(blocked.join("keep").exists());
    assert_eq!(leftover_temp_files(&dir), Vec::<String>::new());

    // A directory that does not exist: an Io error, nothing created.
    let e = checkpoint::save(dir.join("missing").join("x.safetensors"), &old).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Io);

    // A successful save replaces the file whole and leaves no temp file.
    let new = vec![("w".to_string(), Tensor::from_vec(vec![3.0f32, 4.0, 5.0], [3]).unwrap())];
    checkpoint::save(&path, &new).unwrap();
    assert_eq!(checkpoint::read(&path).unwrap().get_f32("w").unwrap(), vec![3.0, 4.0, 5.0]);
    assert_eq!(leftover_temp_files(&dir), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// load_into
// ---------------------------------------------------------------------------------------------

#[test]
fn load_into_lists_every_problem_in_one_error_and_changes_nothing() {
    let mut model = bag(
        &[
            ("blocks.0.attn.qkv.weight", &[6, 2]),
            ("blocks.0.attn.proj.weight", &[2, 2]),
            ("head.weight", &[10, 2]),
            ("norm.weight", &[2]),
        ],
        3,
    );
    model
        .buffers
        .push(("bn.running_var".into(), Param::new(Tensor::ones([2], DType::F32).unwrap())));
    let before = values(&model);
    let mut r = rng(4);
    let ckpt = vec![
        ("blocks.0.attn.qkv.weight".to_string(), Tensor::randn([6, 2], DType::F32, &mut r).unwrap()), // fine
        ("head.weight".to_string(), Tensor::randn([1000, 2], DType::F32, &mut r).unwrap()),           // shape
        ("norm.weight".to_string(), Tensor::from_vec(vec![1i64, 2], [2]).unwrap()),                   // dtype
        ("pre_logits.fc.weight".to_string(), Tensor::randn([2, 2], DType::F32, &mut r).unwrap()),     // unexpected
        ("dist_token".to_string(), Tensor::randn([1, 1, 2], DType::F32, &mut r).unwrap()),            // unexpected
    ];
    let e = checkpoint::load_into(&model, ckpt.clone(), &LoadOptions::default()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Format);
    let msg = e.to_string();
    for needle in [
        "6 problem(s)",
        "missing (in the model, not in the checkpoint) [2]",
        "blocks.0.attn.proj.weight",
        "bn.running_var",
        "unexpected (in the checkpoint, not in the model) [2]",
        "pre_logits.fc.weight",
        "dist_token",
        "head.weight: checkpoint [1000, 2], model [10, 2]",
        "norm.weight: checkpoint i64, model f32",
        "nothing was loaded",
    ] {
        assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
    }
    assert_eq!(values(&model), before, "a failed load changes nothing");

    // Non-strict: missing/unexpected are reported, shape and dtype still fail.
    let e = checkpoint::load_into(&model, ckpt.clone(), &LoadOptions::non_strict()).unwrap_err().to_string();
    assert!(e.contains("2 problem(s)") && !e.contains("missing (in"), "{e}");

    // Skipping the mismatched names makes a non-strict load succeed.
    let opts = LoadOptions::non_strict().skip("head.*").skip("norm.*");
    let report = checkpoint::load_into(&model, ckpt.clone(), &opts).unwrap();
    assert_eq!(report.loaded, vec!["blocks.0.attn.qkv.weight".to_string()]);
    assert_eq!(report.missing, vec!["blocks.0.attn.proj.weight".to_string(), "bn.running_var".to_string()]);
    assert_eq!(report.unexpected, vec!["pre_logits.fc.weight".to_string(), "dist_token".to_string()]);
    assert!(report.skipped.contains(&"head.weight".to_string()));
    assert!(report.to_string().contains("loaded 1 tensors"));
    assert_eq!(model.params[0].1.tensor().to_f64_vec().unwrap(), ckpt[0].1.to_f64_vec().unwrap());
}

#[test]
fn load_into_renames_and_drops_keys() {
    let model = bag(&[("encoder.layer.weight", &[2, 2]), ("encoder.layer.bias", &[2])], 5);
    let w = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]).unwrap();
    let b = Tensor::from_vec(vec![5.0f32, 6.0], [2]).unwrap();
    let ckpt = vec![
        ("module.enc.l.weight".to_string(), w),
        ("module.enc.l.bias".to_string(), b),
        ("module.num_batches_tracked".to_string(), Tensor::scalar(3i64)),
    ];
    let opts = LoadOptions::default()
        .rename_prefix("module.", "")
        .rename_with(|n| if n == "num_batches_tracked" { None } else { Some(n.to_string()) })
        .rename_map([("enc.l.weight", "encoder.layer.weight"), ("enc.l.bias", "encoder.layer.bias")]);
    let report = checkpoint::load_into(&model, ckpt.clone(), &opts).unwrap();
    assert_eq!(report.dropped, vec!["module.num_batches_tracked".to_string()]);
    assert_eq!(model.params[1].1.tensor().to_vec::<f32>().unwrap(), vec![5.0, 6.0]);

    // Two checkpoint names landing on one parameter is an error naming both.
    let twice = vec![
        ("a".to_string(), Tensor::zeros([2], DType::F32).unwrap()),
        ("b".to_string(), Tensor::zeros([2], DType::F32).unwrap()),
    ];
    let model = bag(&[("x", &[2])], 6);
    let e = checkpoint::load_into(&model, twice, &LoadOptions::default().rename_with(|_| Some("x".to_string()))).unwrap_err();
    assert!(e.to_string().contains("x: from both a and b"), "{e}");
}

#[test]
fn half_precision_checkpoints_load_into_f32_models() {
    let model = bag(&[("w", &[3, 4]), ("v", &[3, 4])], 7);
    let dt = fixture("dtypes.safetensors").unwrap();
    let ckpt = vec![
        ("w".to_string(), dt.get("x_f16").unwrap().clone()),
        ("v".to_string(), dt.get("x_bf16").unwrap().clone()),
    ];
    checkpoint::load_into(&model, ckpt, &LoadOptions::default()).unwrap();
    assert_eq!(model.params[0].1.tensor().dtype(), DType::F32);
    assert_eq!(model.params[0].1.tensor().to_vec::<f32>().unwrap(), dt.get_f32("x_f16_as_f32").unwrap());
    assert_eq!(model.params[1].1.tensor().to_vec::<f32>().unwrap(), dt.get_f32("x_bf16_as_f32").unwrap());
}

// ---------------------------------------------------------------------------------------------
// PyTorch fixtures
// ---------------------------------------------------------------------------------------------

#[test]
fn committed_fixtures_stay_under_one_megabyte() {
    let dir = checkpoint::fixture_path("");
    let total: u64 = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    assert!(total < 1_000_000, "tests/fixtures holds {total} bytes");
}

#[test]
fn torch_written_dtypes_load_exactly() {
    let dt = fixture("dtypes.safetensors").unwrap();
    assert!(dt.metadata["generator"].contains("torch"));
    // torch's f16/bf16 bytes decode to exactly torch's own f32 upcasts.
    assert_eq!(dt.get_f32("x_f16").unwrap(), dt.get_f32("x_f16_as_f32").unwrap());
    assert_eq!(dt.get_f32("x_bf16").unwrap(), dt.get_f32("x_bf16_as_f32").unwrap());
    assert_eq!(dt.get("x_f16").unwrap().dtype(), DType::F16);
    assert_eq!(dt.get("x_bf16").unwrap().dtype(), DType::BF16);
    assert_eq!(dt.get_f32("x_f64").unwrap(), dt.get_f32("x_f32").unwrap());
    // Our f16/bf16 rounding agrees with torch's.
    let x = dt.get("x_f32").unwrap();
    assert_eq!(
        x.to_dtype(DType::F16).unwrap().to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap(),
        dt.get_f32("x_f16_as_f32").unwrap()
    );
    assert_eq!(
        x.to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap(),
        dt.get_f32("x_bf16_as_f32").unwrap()
    );
    let ints: Vec<i64> = (-5..7).collect();
    assert_eq!(dt.get("i_i64").unwrap().to_vec::<i64>().unwrap(), ints);
    assert_eq!(dt.get("i_i32").unwrap().to_vec::<i64>().unwrap(), ints);
    assert_eq!(dt.get("i_u8").unwrap().to_vec::<i64>().unwrap(), (0..12).collect::<Vec<i64>>());
    assert_eq!(dt.get("b_bool").unwrap().to_vec::<i64>().unwrap(), vec![1, 0, 1]);
    assert_eq!(dt.get("scalar_f32").unwrap().dims(), &[] as &[usize]);
    assert_eq!(dt.get("empty_f32").unwrap().dims(), &[0, 3]);
}

#[test]
fn hf_gpt2_layout_converts_to_the_nanogpt_fixture_exactly() {
    let hf = fixture("gpt_tiny_hf.safetensors").unwrap();
    let nano = fixture("gpt_tiny.safetensors").unwrap();
    let adapted = gpt2_hf_to_nanogpt(hf.tensors).unwrap();
    let notes = adapted.notes.join("\n");
    assert!(notes.contains("transposed 8 Conv1D weights"), "{notes}");
    assert!(notes.contains("dropped 4 attention-mask buffers"), "{notes}");
    assert!(notes.contains("lm_head.weight tied"), "{notes}");
    let mut got: Vec<&str> = adapted.tensors.iter().map(|(n, _)| n.as_str()).collect();
    let mut want = nano.names();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want);
    for (name, t) in &adapted.tensors {
        let w = nano.get(name).unwrap();
        assert_eq!(t.dims(), w.dims(), "{name}");
        assert_eq!(t.to_vec::<f32>().unwrap(), w.to_vec::<f32>().unwrap(), "{name}");
    }
    // And back: nanoGPT -> HF transposes the same four weights per block.
    let back = nanogpt_to_gpt2_hf(adapted.tensors).unwrap();
    let hf = fixture("gpt_tiny_hf.safetensors").unwrap();
    for (name, t) in &back.tensors {
        if let Some(short) = name.strip_prefix("transformer.") {
            assert_eq!(t.to_vec::<f32>().unwrap(), hf.get(short).unwrap().to_vec::<f32>().unwrap(), "{name}");
        }
    }
}

#[test]
fn gpt_fixture_loads_into_a_module_with_nanogpt_names() {
    let nano = fixture("gpt_tiny.safetensors").unwrap();
    let shapes: Vec<(String, Vec<usize>)> = nano.tensors.iter().map(|(n, t)| (n.clone(), t.dims().to_vec())).collect();
    let spec: Vec<(&str, &[usize])> = shapes.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
    let model = bag(&spec, 8);
    // Through the HF file and the adapter: every nanoGPT name is filled.
    let hf = gpt2_hf_to_nanogpt(fixture("gpt_tiny_hf.safetensors").unwrap().tensors).unwrap();
    let report = checkpoint::load_into(&model, hf.tensors, &LoadOptions::default()).unwrap();
    assert_eq!(report.loaded.len(), nano.len());
    let io = fixture("gpt_tiny_io.safetensors").unwrap();
    assert_eq!(io.get("idx").unwrap().dtype(), DType::I64);
    assert_eq!(io.get("logits").unwrap().dims(), &[2, 8, 11]);
}

#[test]
fn io_fixtures_are_consistent_with_tamers_cross_entropy() {
    // loss = cross_entropy(logits, targets); d loss / d head.bias = mean over the batch of softmax - onehot
    // (the token-pooled ViT's head sees one row per image).
    for name in ["vit_tiny_io.safetensors", "vit_tiny_avg_io.safetensors"] {
        let io = fixture(name).unwrap();
        let logits = io.get("logits").unwrap().variable();
        let loss = logits.cross_entropy(io.get("targets").unwrap(), CrossEntropyOptions::default()).unwrap();
        io.check_close("loss", &loss, 1e-5, 1e-6).unwrap();
        let g = loss.backward().unwrap().get(&logits).unwrap().sum(&[0], false).unwrap();
        io.check_close("grad.head.bias", &g, 1e-4, 1e-6).unwrap();
    }
    let io = fixture("gpt_tiny_io.safetensors").unwrap();
    let logits = io.get("logits").unwrap().reshape([16, 11]).unwrap();
    let loss = logits
        .cross_entropy(&io.get("targets").unwrap().reshape([16]).unwrap(), CrossEntropyOptions::default())
        .unwrap();
    io.check_close("loss", &loss, 1e-5, 1e-6).unwrap();
}

#[test]
fn pos_embed_bicubic_resize_matches_pytorch() {
    let fx = fixture("pos_embed_resize.safetensors").unwrap();
    type Case = (&'static str, &'static str, (usize, usize), Option<(usize, usize)>, usize);
    let cases: [Case; 4] = [
        ("2x2_to_3x3", "pe_2x2", (3, 3), None, 1),
        ("4x4_to_2x3", "pe_4x4", (2, 3), None, 1),
        ("4x4_to_7x5", "pe_4x4", (7, 5), None, 1),
        ("2x3_to_4x5_noprefix", "pe_2x3_noprefix", (4, 5), Some((2, 3)), 0),
    ];
    for (case, src, new_grid, old_grid, npre) in cases {
        for antialias in [false, true] {
            let how = PosEmbedResize {
                new_grid,
                old_grid,
                num_prefix_tokens: npre,
                antialias,
            };
            let out = resample_pos_embed(fx.get(src).unwrap(), &how).unwrap();
            let key = format!("{case}.{}", if antialias { "aa" } else { "noaa" });
            fx.check_close(&key, &out, 1e-5, 1e-5).unwrap();
        }
    }
    // The short form: square old grid, plain bicubic; the CLS token is kept as is.
    let pe = fx.get("pe_2x2").unwrap();
    let out = resize_pos_embed(pe, (3, 3), 1).unwrap();
    fx.check_close("2x2_to_3x3.noaa", &out, 1e-5, 1e-5).unwrap();
    assert_eq!(
        out.narrow(1, 0, 1).unwrap().to_vec::<f32>().unwrap(),
        pe.narrow(1, 0, 1).unwrap().contiguous().unwrap().to_vec::<f32>().unwrap()
    );
    // Same grid: unchanged. A grid that does not fit: an error saying so.
    assert_eq!(resize_pos_embed(pe, (2, 2), 1).unwrap().to_vec::<f32>().unwrap(), pe.to_vec::<f32>().unwrap());
    let e = resize_pos_embed(fx.get("pe_2x3_noprefix").unwrap(), (3, 3), 0).unwrap_err();
    assert!(e.to_string().contains("not a 2×2 grid") && e.to_string().contains("old_grid"), "{e}");
}

#[test]
fn bicubic_reproduces_constants_and_checks_its_input() {
    let x = Tensor::full([2, 3, 4, 5], 1.25, DType::F64).unwrap();
    for aa in [false, true] {
        for out in [(1, 1), (7, 3), (4, 5), (9, 11)] {
            let y = interpolate_bicubic(&x, out, aa).unwrap();
            assert!(y.to_vec::<f64>().unwrap().iter().all(|v| (v - 1.25).abs() < 1e-12), "aa={aa} {out:?}");
        }
    }
    assert!(interpolate_bicubic(&Tensor::zeros([4, 5], DType::F32).unwrap(), (2, 2), false).is_err());
    assert!(interpolate_bicubic(&x, (0, 2), false).is_err());
}

#[test]
fn vit_checkpoint_adapts_to_a_larger_image_and_fewer_classes() {
    let vit = fixture("vit_tiny.safetensors").unwrap();
    // The fine-tuning model: 12×12 images (3×3 patches of 4) and 5 classes.
    let shapes: Vec<(String, Vec<usize>)> = vit
        .tensors
        .iter()
        .map(|(n, t)| {
            let d = match n.as_str() {
                "pos_embed" => vec![1, 1 + 9, 16],
                "head.weight" => vec![5, 16],
                "head.bias" => vec![5],
                _ => t.dims().to_vec(),
            };
            (n.clone(), d)
        })
        .collect();
    let spec: Vec<(&str, &[usize])> = shapes.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
    let model = bag(&spec, 9);

    // Unadapted, the strict load names both problems at once.
    let e = checkpoint::load_into(&model, vit.clone(), &LoadOptions::default()).unwrap_err().to_string();
    assert!(
        e.contains("pos_embed: checkpoint [1, 5, 16], model [1, 10, 16]") && e.contains("head.weight: checkpoint [10, 16], model [5, 16]"),
        "{e}"
    );

    let adapted = adapt_vit_checkpoint(vit.tensors.clone(), &model, &VitAdapt::default()).unwrap();
    let notes = adapted.notes.join("\n");
    assert!(notes.contains("pos_embed interpolated from 5 to 10 tokens"), "{notes}");
    assert!(
        notes.contains("head re-initialised") && notes.contains("head.weight [10, 16] -> [5, 16]"),
        "{notes}"
    );
    checkpoint::load_into(&model, adapted.tensors, &LoadOptions::default()).unwrap();
    let pe = model.params.iter().find(|(n, _)| n == "pos_embed").unwrap().1.tensor();
    let want = resize_pos_embed(vit.get("pos_embed").unwrap(), (3, 3), 1).unwrap();
    assert_eq!(pe.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
    let head_bias = model.params.iter().find(|(n, _)| n == "head.bias").unwrap().1.tensor();
    assert_eq!(head_bias.to_vec::<f32>().unwrap(), vec![0.0; 5]);
    let qkv = model.params.iter().find(|(n, _)| n == "blocks.0.attn.qkv.weight").unwrap().1.tensor();
    assert_eq!(qkv.to_vec::<f32>().unwrap(), vit.get_f32("blocks.0.attn.qkv.weight").unwrap());

    // Same shapes: nothing to do, no notes.
    let same = bag(&vit.tensors.iter().map(|(n, t)| (n.as_str(), t.dims())).collect::<Vec<_>>(), 10);
    let adapted = adapt_vit_checkpoint(vit.tensors.clone(), &same, &VitAdapt::default()).unwrap();
    assert!(adapted.notes.is_empty(), "{:?}", adapted.notes);
}

#[test]
fn checkpoint_helpers_name_what_is_missing() {
    let io = fixture("vit_tiny_io.safetensors").unwrap();
    let e = io.get("logitz").unwrap_err().to_string();
    assert!(
        e.contains("vit_tiny_io.safetensors") && e.contains("logits") && e.contains("grad.head.weight"),
        "{e}"
    );
    let wrong = Tensor::zeros([3], DType::F32).unwrap();
    assert!(io
        .check_close("logits", &wrong, 1e-4, 0.0)
        .unwrap_err()
        .to_string()
        .contains("expected shape [2, 10]"));
    let mut c = Checkpoint::from_tensors("x", vec![("a".into(), wrong)]);
    assert!(c.remove("a").is_ok() && c.is_empty());
}
