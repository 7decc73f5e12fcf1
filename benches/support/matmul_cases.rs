//! The matmul benchmark's cases, read from `benches/matmul_cases.json`, the
//! one list that `matmul.rs` and `numpy_matmul.py` both run.
//!
//! Each case is `C[m, n] = A[m, k] · B[k, n]` for `batch` independent entries;
//! `ta`/`tb` say that the operand is read transposed (stored `[k, m]` /
//! `[n, k]` row-major), as a linear layer's products read theirs: forward
//! `x·Wᵀ` (`tb`), input gradient `dY·W`, weight gradient `xᵀ·dY` (`ta`, the
//! long reduction over every token).

/// One product to time.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub batch: usize,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub ta: bool,
    pub tb: bool,
}

impl Case {
    /// Flops of one run: a multiply and an add per term.
    pub fn flops(&self) -> f64 {
        2.0 * (self.batch * self.m * self.n * self.k) as f64
    }
}

/// Every case of the list, in its order.
pub fn cases() -> Vec<Case> {
    let list: serde_json::Value = serde_json::from_str(include_str!("../matmul_cases.json")).expect("benches/matmul_cases.json is valid JSON");
    let size = |c: &serde_json::Value, key: &str| c[key].as_u64().unwrap_or_else(|| panic!("case {c}: {key} is not a size")) as usize;
    let flag = |c: &serde_json::Value, key: &str| c[key].as_bool().unwrap_or_else(|| panic!("case {c}: {key} is not a bool"));
    list.as_array()
        .expect("benches/matmul_cases.json is a list")
        .iter()
        .map(|c| Case {
            name: c["case"].as_str().expect("every case has a name").to_string(),
            batch: size(c, "batch"),
            m: size(c, "m"),
            k: size(c, "k"),
            n: size(c, "n"),
            ta: flag(c, "ta"),
            tb: flag(c, "tb"),
        })
        .collect()
}
