//! Reading and writing safetensors files.
//!
//! Writing lays the file out itself, in a fixed order (the same tensors and
//! metadata always give the same bytes), then replaces the target atomically
//! (temp file in the same directory, fsync, rename). Reading first
//! validates the header itself, so every corrupt file gets a message that says
//! which tensor and which bytes are wrong, then hands the buffer to the crate.

use super::Checkpoint;
use crate::nn::Module;
use crate::types::Element;
use crate::{DType, Error, Result, Tensor};
use half::{bf16, f16};
use safetensors::{Dtype as StDtype, SafeTensors};
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::Path;

const SAVE: &str = "checkpoint::save";
const LOAD: &str = "checkpoint::load";
/// The safetensors format caps the JSON header at 100 MB.
const MAX_HEADER: u64 = 100_000_000;

/// One tensor's little-endian bytes, ready for the writer.
struct Encoded {
    /// The safetensors dtype name ("F32" ...).
    dtype: &'static str,
    shape: Vec<usize>,
    data: Vec<u8>,
}

fn le_bytes<T: Element, const N: usize>(t: &Tensor, to_le: impl Fn(T) -> [u8; N]) -> Result<Vec<u8>> {
    Ok(t.to_vec::<T>()?.into_iter().flat_map(to_le).collect())
}

fn encode(t: &Tensor) -> Result<Encoded> {
    let (dtype, data) = match t.dtype() {
        DType::F16 => ("F16", le_bytes::<f16, 2>(t, |x| x.to_le_bytes())?),
        DType::BF16 => ("BF16", le_bytes::<bf16, 2>(t, |x| x.to_le_bytes())?),
        DType::F32 => ("F32", le_bytes::<f32, 4>(t, |x| x.to_le_bytes())?),
        DType::F64 => ("F64", le_bytes::<f64, 8>(t, |x| x.to_le_bytes())?),
        DType::I64 => ("I64", le_bytes::<i64, 8>(t, |x| x.to_le_bytes())?),
    };
    Ok(Encoded {
        dtype,
        shape: t.dims().to_vec(),
        data,
    })
}

/// The bytes of a safetensors file holding `tensors` (any layout; written
/// row-major) and the string `metadata` (the `__metadata__` header entry).
///
/// ```
/// use tamer::{checkpoint, Tensor};
/// let t = Tensor::from_vec(vec![1.0f32, 2.0], [2]).unwrap();
/// let bytes = checkpoint::serialize(&[("w".to_string(), t)], &Default::default()).unwrap();
/// let back = checkpoint::deserialize(&bytes, "in memory").unwrap();
/// assert_eq!(back.get("w").unwrap().to_vec::<f32>().unwrap(), vec![1.0, 2.0]);
/// ```
pub fn serialize(tensors: &[(String, Tensor)], metadata: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    let mut seen = HashSet::new();
    let mut encoded = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        if name == "__metadata__" {
            return Err(Error::value(SAVE, "the tensor name \"__metadata__\" is reserved by the safetensors format"));
        }
        if !seen.insert(name.as_str()) {
            return Err(Error::value(SAVE, format!("the tensor name {name:?} appears twice")));
        }
        let e = encode(t).map_err(|e| Error::new(SAVE, e.kind.clone(), format!("tensor {name:?}: {e}")))?;
        encoded.push((name.clone(), e));
    }
    Ok(write_safetensors(encoded, metadata))
}

/// The file bytes, laid out as the `safetensors` crate does (widest dtypes
/// first so every tensor is aligned to its element size, then by name; the
/// header padded with spaces to a multiple of 8), but with the header written
/// in one fixed order: `__metadata__` first with its keys sorted, then the
/// tensors in data order. (The crate takes the metadata as a `HashMap`, whose
/// order changes from run to run, so two runs of one seed wrote different bytes.)
fn write_safetensors(mut encoded: Vec<(String, Encoded)>, metadata: &BTreeMap<String, String>) -> Vec<u8> {
    let width = |dtype: &str| dtype_bits(dtype).unwrap_or(8);
    encoded.sort_by(|(na, a), (nb, b)| width(b.dtype).cmp(&width(a.dtype)).then_with(|| na.cmp(nb)));
    let json = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let mut entries = Vec::with_capacity(encoded.len() + 1);
    if !metadata.is_empty() {
        let pairs: Vec<String> = metadata.iter().map(|(k, v)| format!("{}:{}", json(k), json(v))).collect();
        entries.push(format!("\"__metadata__\":{{{}}}", pairs.join(",")));
    }
    let mut offset = 0usize;
    for (name, e) in &encoded {
        let shape: Vec<String> = e.shape.iter().map(|d| d.to_string()).collect();
        entries.push(format!(
            "{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{offset},{}]}}",
            json(name),
            e.dtype,
            shape.join(","),
            offset + e.data.len()
        ));
        offset += e.data.len();
    }
    let mut header = format!("{{{}}}", entries.join(","));
    // The data section starts 8-byte aligned.
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    let mut bytes = Vec::with_capacity(8 + header.len() + offset);
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for (_, e) in &encoded {
        bytes.extend_from_slice(&e.data);
    }
    bytes
}

/// Write `tensors` to `path` as safetensors, atomically: a reader sees either
/// the old file or the complete new one, never a partial write.
///
/// ```
/// use tamer::{checkpoint, Tensor};
/// let path = std::env::temp_dir().join(format!("tamer-doc-save-{}.safetensors", std::process::id()));
/// let t = Tensor::from_vec(vec![1i64, 2, 3], [3]).unwrap();
/// checkpoint::save(&path, &[("ids".to_string(), t)]).unwrap();
/// let back = checkpoint::load(&path).unwrap();
/// assert_eq!(back[0].0, "ids");
/// assert_eq!(back[0].1.to_vec::<i64>().unwrap(), vec![1, 2, 3]);
/// std::fs::remove_file(&path).unwrap();
/// ```
pub fn save(path: impl AsRef<Path>, tensors: &[(String, Tensor)]) -> Result<()> {
    save_with_metadata(path, tensors, &BTreeMap::new())
}

/// [`save`] with string metadata in the header (configuration, versions).
pub fn save_with_metadata(path: impl AsRef<Path>, tensors: &[(String, Tensor)], metadata: &BTreeMap<String, String>) -> Result<()> {
    let path = path.as_ref();
    let bytes = serialize(tensors, metadata).map_err(|e| Error::new(SAVE, e.kind, format!("{}: {}", path.display(), e.message)))?;
    write_atomic(path, &bytes)
}

/// Save a module's parameters and buffers under their hierarchical names
/// (PyTorch's `state_dict` convention), atomically.
pub fn save_module(path: impl AsRef<Path>, module: &dyn Module) -> Result<()> {
    save(path, &module_tensors(module))
}

/// A module's parameters, then buffers, then tied aliases as `(name, value)` pairs.
pub fn module_tensors(module: &dyn Module) -> Vec<(String, Tensor)> {
    let mut tensors: Vec<(String, Tensor)> = module
        .named_params()
        .into_iter()
        .chain(module.named_buffers())
        .map(|(n, p)| (n, p.tensor().detach()))
        .collect();
    for (alias, canonical) in module.tied_aliases() {
        if let Some(t) = tensors.iter().find(|(n, _)| *n == canonical).map(|(_, t)| t.clone()) {
            tensors.push((alias, t));
        }
    }
    tensors
}

/// Write `bytes` to a temp file beside `path`, fsync it, and rename it over
/// `path`. On failure the temp file is removed and `path` is untouched.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    // Threads of one process writing the same path must not share a temp file.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::io(SAVE, format!("{}: the path does not name a file", path.display())))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let tmp = dir.join(format!(
        "{}{TEMP_MARKER}{}-{}",
        file_name.to_string_lossy(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(
            SAVE,
            format!("{}: could not write ({e}); any previous file there is unchanged", path.display()),
        ));
    }
    // Make the rename itself durable; a failure here loses nothing already written.
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// What marks a temp file of [`save`]: `NAME.tamer-tmp-PID-N`. A marker of
/// tamer's own, so that the cleanup never mistakes a user's file for one
/// (`results.tmp-2024-06` is not ours, whatever process 2024 is).
const TEMP_MARKER: &str = ".tamer-tmp-";

/// If `file_name` is a temp file [`save`] left behind (`NAME.tamer-tmp-PID-N`),
/// the PID of the process that wrote it.
fn temp_file_pid(file_name: &str) -> Option<u32> {
    let (target, tail) = file_name.rsplit_once(TEMP_MARKER)?;
    let (pid, seq) = tail.split_once('-')?;
    seq.parse::<u64>().ok()?;
    (!target.is_empty()).then_some(())?;
    pid.parse().ok()
}

/// Whether process `pid` is running (on Linux; elsewhere only this process
/// is known to run, so a crashed writer's files are found there too).
fn process_is_running(pid: u32) -> bool {
    pid == std::process::id() || (cfg!(target_os = "linux") && Path::new(&format!("/proc/{pid}")).exists())
}

/// Remove the temp files (`NAME.tamer-tmp-PID-N`) that a [`save`] into `dir`
/// leaves behind when its process dies between creating and renaming them
/// (a crash, a kill, a power cut); files of a process that is still running
/// are kept, since it may be writing them now. Nothing else is touched: a
/// name without tamer's marker (`results.tmp-2024-06`) is never a temp file
/// of ours. Returns the paths removed; a missing `dir` has none.
///
/// ```
/// let dir = std::env::temp_dir().join(format!("tamer-doc-stale-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// // PID 4294967295 cannot be running.
/// std::fs::write(dir.join("checkpoint.safetensors.tamer-tmp-4294967295-0"), b"partial").unwrap();
/// std::fs::write(dir.join("results.tmp-4294967295-06"), b"a user's file").unwrap();
/// let removed = tamer::checkpoint::remove_stale_temp_files(&dir).unwrap();
/// assert_eq!(removed.len(), 1);
/// assert!(dir.join("results.tmp-4294967295-06").exists());
/// std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn remove_stale_temp_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    const OP: &str = "checkpoint::remove_stale_temp_files";
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(OP, format!("{}: cannot list: {e}", dir.display()))),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(OP, format!("{}: cannot list: {e}", dir.display())))?;
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(temp_file_pid) else { continue };
        if process_is_running(pid) || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        std::fs::remove_file(&path).map_err(|e| Error::io(OP, format!("{}: cannot remove: {e}", path.display())))?;
        removed.push(path);
    }
    removed.sort();
    Ok(removed)
}

/// Read a safetensors file: every tensor tamer can represent, plus a list of
/// those it cannot (exotic dtypes), plus the header metadata.
///
/// Corrupt input (truncated, bad JSON, offsets outside the file, unknown
/// dtypes, byte counts that do not match the shapes) is an `Err` naming the
/// file and the problem, never a panic.
pub fn read(path: impl AsRef<Path>) -> Result<Checkpoint> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(LOAD, format!("{}: could not read: {e}", path.display())))?;
    deserialize(&bytes, &path.display().to_string())
}

/// Read a safetensors file into `(name, tensor)` pairs in file order. A tensor
/// whose dtype tamer cannot hold (f8, complex ...) is an error; use [`read`]
/// to get the rest anyway. Integer and bool tensors widen to i64; f16 and
/// bf16 stay as they are (loading into a module converts them to its dtype).
pub fn load(path: impl AsRef<Path>) -> Result<Vec<(String, Tensor)>> {
    let ckpt = read(path)?;
    if !ckpt.unsupported.is_empty() {
        let list: Vec<String> = ckpt.unsupported.iter().map(|u| format!("{} ({} {:?})", u.name, u.dtype, u.shape)).collect();
        return Err(Error::format(
            LOAD,
            format!("{}: {} tensor(s) of unsupported dtype: {}", ckpt.source, list.len(), list.join(", ")),
        ));
    }
    Ok(ckpt.tensors)
}

/// Parse safetensors bytes; `source` names them in error messages.
pub fn deserialize(bytes: &[u8], source: &str) -> Result<Checkpoint> {
    let fail = |msg: String| Error::format(LOAD, format!("{source}: {msg}"));
    let metadata = check_header(bytes).map_err(fail)?;
    // The header is known good here; the crate re-validates it on its own terms.
    let st = SafeTensors::deserialize(bytes).map_err(|e| fail(format!("not a valid safetensors file: {e}")))?;
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| fail(format!("not a valid safetensors file: {e}")))?;
    let mut ckpt = Checkpoint {
        source: source.to_string(),
        metadata,
        ..Checkpoint::default()
    };
    for name in meta.offset_keys() {
        let view = st.tensor(&name).map_err(|e| fail(format!("tensor {name:?}: {e}")))?;
        match decode(view.dtype(), view.shape(), view.data()) {
            Ok(t) => ckpt.tensors.push((name, t)),
            Err(reason) => ckpt.unsupported.push(super::Unsupported {
                name,
                dtype: view.dtype().to_string(),
                shape: view.shape().to_vec(),
                reason,
            }),
        }
    }
    Ok(ckpt)
}

/// The dtypes the safetensors format defines, with their sizes in bits.
fn dtype_bits(name: &str) -> Option<usize> {
    Some(match name {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" | "F8_E4M3FNUZ" | "F8_E5M2FNUZ" => 8,
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "I64" | "U64" | "F64" | "C64" => 64,
        _ => return None,
    })
}

/// Validate the 8-byte length prefix and the JSON header against the file
/// size; returns the `__metadata__` map. Errors are plain sentences.
fn check_header(bytes: &[u8]) -> std::result::Result<BTreeMap<String, String>, String> {
    let Some(prefix) = bytes.get(..8) else {
        return Err(format!(
            "the file is {} bytes long, shorter than the 8-byte header length (truncated, or not a safetensors file)",
            bytes.len()
        ));
    };
    let mut le = [0u8; 8];
    le.copy_from_slice(prefix);
    let n = u64::from_le_bytes(le);
    if n > MAX_HEADER {
        return Err(format!(
            "the header length field says {n} bytes, above the format's 100 MB limit (not a safetensors file?)"
        ));
    }
    let n = n as usize;
    let Some(header) = bytes.get(8..8 + n) else {
        return Err(format!(
            "the header length field says {n} bytes but only {} follow it (truncated file)",
            bytes.len() - 8
        ));
    };
    let header = std::str::from_utf8(header).map_err(|e| format!("the header is not valid UTF-8 ({e})"))?;
    let json: serde_json::Value = serde_json::from_str(header).map_err(|e| format!("the header is not valid JSON ({e})"))?;
    let obj = json.as_object().ok_or("the header is not a JSON object")?;
    let data_len = bytes.len() - 8 - n;
    let mut metadata = BTreeMap::new();
    let mut spans = Vec::new();
    for (name, info) in obj {
        if name == "__metadata__" {
            let m = info.as_object().ok_or("__metadata__ is not a JSON object")?;
            for (k, v) in m {
                let v = v.as_str().ok_or_else(|| format!("__metadata__ entry {k:?} is not a string"))?;
                metadata.insert(k.clone(), v.to_string());
            }
            continue;
        }
        let bad = |what: &str| format!("tensor {name:?}: {what}");
        let info = info.as_object().ok_or_else(|| bad("its header entry is not a JSON object"))?;
        let dtype = info.get("dtype").and_then(|d| d.as_str()).ok_or_else(|| bad("no dtype string"))?;
        let bits = dtype_bits(dtype).ok_or_else(|| bad(&format!("unknown dtype {dtype:?}")))?;
        let shape: Vec<u64> = info
            .get("shape")
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().map(|d| d.as_u64()).collect::<Option<Vec<u64>>>())
            .ok_or_else(|| bad("shape is not a list of non-negative integers"))?;
        let offsets: Vec<u64> = info
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().map(|d| d.as_u64()).collect::<Option<Vec<u64>>>())
            .filter(|o| o.len() == 2)
            .ok_or_else(|| bad("data_offsets is not a pair of non-negative integers"))?;
        let (begin, end) = (offsets[0], offsets[1]);
        if begin > end || end > data_len as u64 {
            return Err(bad(&format!(
                "data_offsets [{begin}, {end}] lie outside the data section of {data_len} bytes (truncated or corrupt file)"
            )));
        }
        // The product of the non-zero dimensions bounds the strides too: [0, 2^63 − 1, 3]
        // holds no bytes but no tensor can have that shape.
        let reach = shape.iter().filter(|&&d| d != 0).try_fold(bits as u64, |acc, &d| acc.checked_mul(d));
        if reach.is_none_or(|b| b / 8 > isize::MAX as u64) {
            return Err(bad(&format!("shape {shape:?} is too large: the product of its dimensions overflows isize")));
        }
        let nbits = shape.iter().try_fold(bits as u64, |acc, &d| acc.checked_mul(d)).unwrap_or(0);
        if nbits % 8 != 0 || nbits / 8 != end - begin {
            return Err(bad(&format!(
                "shape {shape:?} of {dtype} needs {} bytes but data_offsets [{begin}, {end}] span {}",
                nbits as f64 / 8.0,
                end - begin
            )));
        }
        spans.push((begin, end, name.as_str()));
    }
    // The format requires the tensors to tile the data section exactly.
    spans.sort();
    let mut at = 0u64;
    for (begin, end, name) in &spans {
        if *begin != at {
            return Err(format!(
                "tensor {name:?} starts at byte {begin} of the data section, expected {at} (tensors must follow each other without gaps or overlaps)"
            ));
        }
        at = *end;
    }
    if at != data_len as u64 {
        return Err(format!(
            "the tensors cover {at} bytes but the data section has {data_len} (trailing bytes or a corrupt header)"
        ));
    }
    Ok(metadata)
}

fn from_le<T: Element, const N: usize>(data: &[u8], shape: &[usize], f: impl Fn([u8; N]) -> T) -> std::result::Result<Tensor, String> {
    let values: Vec<T> = data
        .chunks_exact(N)
        .map(|c| {
            let mut b = [0u8; N];
            b.copy_from_slice(c);
            f(b)
        })
        .collect();
    Tensor::from_vec(values, shape.to_vec()).map_err(|e| e.to_string())
}

/// Bytes to a tensor; `Err(reason)` for dtypes tamer cannot hold. Integers
/// and bools widen to i64 (the only integer dtype), which is lossless except
/// for u64 values above `i64::MAX`.
fn decode(dtype: StDtype, shape: &[usize], data: &[u8]) -> std::result::Result<Tensor, String> {
    match dtype {
        StDtype::F32 => from_le::<f32, 4>(data, shape, f32::from_le_bytes),
        StDtype::F64 => from_le::<f64, 8>(data, shape, f64::from_le_bytes),
        StDtype::F16 => from_le::<f16, 2>(data, shape, f16::from_le_bytes),
        StDtype::BF16 => from_le::<bf16, 2>(data, shape, bf16::from_le_bytes),
        StDtype::I64 => from_le::<i64, 8>(data, shape, i64::from_le_bytes),
        StDtype::I32 => from_le::<i64, 4>(data, shape, |b| i32::from_le_bytes(b) as i64),
        StDtype::U32 => from_le::<i64, 4>(data, shape, |b| u32::from_le_bytes(b) as i64),
        StDtype::I16 => from_le::<i64, 2>(data, shape, |b| i16::from_le_bytes(b) as i64),
        StDtype::U16 => from_le::<i64, 2>(data, shape, |b| u16::from_le_bytes(b) as i64),
        StDtype::I8 => from_le::<i64, 1>(data, shape, |b| i8::from_le_bytes(b) as i64),
        StDtype::U8 | StDtype::BOOL => from_le::<i64, 1>(data, shape, |b| b[0] as i64),
        StDtype::U64 => {
            let fits = data.chunks_exact(8).all(|c| c[7] & 0x80 == 0);
            if !fits {
                return Err("a U64 value is above i64::MAX".to_string());
            }
            from_le::<i64, 8>(data, shape, i64::from_le_bytes)
        }
        other => Err(format!("tamer has no {other} dtype")),
    }
}
