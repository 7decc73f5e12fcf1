//! What the CPU kernels' unit tests share: deterministic inputs and the
//! element-wise comparison of a fast kernel with its reference.

use crate::types::Float;

/// `n` values spread over `[-spread/2, spread/2)` in a fixed, irregular order
/// (`salt` shifts the sequence, so two inputs of one test differ).
pub fn ramp<T: Float>(n: usize, spread: f64, salt: usize) -> Vec<T> {
    (0..n)
        .map(|i| T::from_f64((((i + salt) * 7919 % 1013) as f64 / 1013.0 - 0.5) * spread))
        .collect()
}

/// `len` hashed values, uniform in `[0, 1)`, one sequence per `seed`.
pub fn unit_hash(len: usize, seed: u64) -> Vec<f64> {
    (0..len as u64)
        .map(|i| {
            let h = (i + seed * 7919 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
            h as f64 / (1u64 << 53) as f64
        })
        .collect()
}

/// `|a − b| ≤ tol · (1 + |b|)` element by element; `what` names the output.
pub fn assert_close<T: Float>(a: &[T], b: &[T], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let (x, y) = (x.to_f64(), y.to_f64());
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}[{i}]: {x} vs {y}");
    }
}
