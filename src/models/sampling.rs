//! Choosing the next token from a row of logits, on the host in f64, so that
//! every generation path (with or without a KV cache) samples identically.

use rand::Rng;

/// The next token from `logits` (one row, length V): the arg-max when
/// `temperature` is 0 (first index on ties), else a draw from
/// `softmax(logits / temperature)` restricted to the `top_k` largest logits
/// (ties with the k-th largest are kept, as nanoGPT's `logits < v[:, [-1]]`).
/// Uses one uniform draw from `rng` when sampling, none when greedy.
///
/// ```
/// use tamer::models::sample_token;
/// let logits = [0.0, 3.0, 1.0, 3.0];
/// assert_eq!(sample_token(&logits, 0.0, None, &mut tamer::rng(0)), 1);
/// // top-1 sampling is greedy whatever the draw.
/// assert_eq!(sample_token(&[0.5, 2.0, 1.0], 1.0, Some(1), &mut tamer::rng(3)), 1);
/// ```
pub fn sample_token(logits: &[f64], temperature: f64, top_k: Option<usize>, rng: &mut impl Rng) -> i64 {
    let argmax = || {
        let mut best = 0;
        for (i, &l) in logits.iter().enumerate() {
            if l > logits[best] {
                best = i;
            }
        }
        best as i64
    };
    if temperature == 0.0 || logits.is_empty() {
        return argmax();
    }
    let scaled: Vec<f64> = logits.iter().map(|l| l / temperature).collect();
    let threshold = match top_k {
        Some(k) if k < scaled.len() => {
            let mut sorted = scaled.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            sorted[k.max(1) - 1]
        }
        _ => f64::NEG_INFINITY,
    };
    let max = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = scaled.iter().map(|&l| if l >= threshold { (l - max).exp() } else { 0.0 }).collect();
    let total: f64 = weights.iter().sum();
    if !(total > 0.0 && total.is_finite()) {
        return argmax(); // NaN or infinite logits: fall back to the largest
    }
    let u = rng.random::<f64>() * total;
    let mut acc = 0.0;
    let mut last_kept = 0;
    for (i, &w) in weights.iter().enumerate() {
        if w > 0.0 {
            acc += w;
            last_kept = i;
            if u < acc {
                return i as i64;
            }
        }
    }
    last_kept as i64 // rounding left u just above the running sum
}
