//! The statistics the verdicts rest on: mean, sample standard deviation,
//! pooled standard deviation, and the one comparison every rule uses ("A's
//! mean differs from B's by more than k pooled standard deviations"), with
//! Spearman's rank correlation and a least-squares line for the rules about
//! orderings and fitted curves.
//!
//! Everything takes plain `f64` samples, one per seed. A sample with a
//! non-finite value (a diverged run) is not averaged: the rules check for
//! divergence first and say so in the verdict.

/// The arithmetic mean; `None` for an empty sample.
pub fn mean(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        None
    } else {
        Some(xs.iter().sum::<f64>() / xs.len() as f64)
    }
}

/// The sample standard deviation `√(Σ(x − x̄)² / (n − 1))` (Bessel's
/// correction, numpy's `std(ddof=1)`); `None` below two values.
pub fn sample_std(xs: &[f64]) -> Option<f64> {
    let m = mean(xs)?;
    if xs.len() < 2 {
        return None;
    }
    let ss: f64 = xs.iter().map(|x| (x - m) * (x - m)).sum();
    Some((ss / (xs.len() - 1) as f64).sqrt())
}

/// The pooled standard deviation of two samples,
/// `√(((n₁ − 1)s₁² + (n₂ − 1)s₂²) / (n₁ + n₂ − 2))`: the common spread
/// both are assumed to share. `None` unless both have two values or more.
pub fn pooled_std(a: &[f64], b: &[f64]) -> Option<f64> {
    let (sa, sb) = (sample_std(a)?, sample_std(b)?);
    let (na, nb) = (a.len() as f64, b.len() as f64);
    Some((((na - 1.0) * sa * sa + (nb - 1.0) * sb * sb) / (na + nb - 2.0)).sqrt())
}

/// `mean ± std` for a table cell, with `digits` decimals (`±` omitted for one seed).
pub fn mean_std_cell(xs: &[f64], digits: usize) -> String {
    match (mean(xs), sample_std(xs)) {
        (Some(m), Some(s)) => format!("{m:.digits$} ± {s:.digits$}"),
        (Some(m), None) => format!("{m:.digits$}"),
        _ => "–".to_string(),
    }
}

/// `mean ± std` in scientific notation, for values spanning decades.
pub fn mean_std_cell_sci(xs: &[f64]) -> String {
    match (mean(xs), sample_std(xs)) {
        (Some(m), Some(s)) => format!("{m:.2e} ± {s:.1e}"),
        (Some(m), None) => format!("{m:.2e}"),
        _ => "–".to_string(),
    }
}

/// How the means of two samples compare at a margin of `k` pooled standard deviations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Order {
    /// `mean(a) − mean(b) > k·pooled`.
    Greater,
    /// `mean(b) − mean(a) > k·pooled`.
    Less,
    /// The difference is within `k·pooled`.
    Within,
}

/// The result of [`compare`]: the order and the numbers behind it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Comparison {
    pub order: Order,
    /// `mean(a) − mean(b)`.
    pub difference: f64,
    pub pooled_std: f64,
    pub k: f64,
}

impl Comparison {
    /// The numbers in words, for a verdict's reason.
    pub fn describe(&self, a: &str, b: &str) -> String {
        format!(
            "mean({a}) − mean({b}) = {:.4}, {}·pooled std = {:.4}",
            self.difference,
            self.k,
            self.k * self.pooled_std
        )
    }
}

/// Compare the means of `a` and `b` at a margin of `k` pooled standard
/// deviations: `Greater` when `mean(a) − mean(b) > k·s_p`, `Less` when
/// `mean(b) − mean(a) > k·s_p`, else `Within`. `None` when a sample has
/// fewer than two values or a non-finite one (no spread can be estimated).
/// With both samples constant (`s_p = 0`) any nonzero difference decides.
pub fn compare(a: &[f64], b: &[f64], k: f64) -> Option<Comparison> {
    if a.iter().chain(b).any(|x| !x.is_finite()) {
        return None;
    }
    let pooled = pooled_std(a, b)?;
    let difference = mean(a)? - mean(b)?;
    let margin = k * pooled;
    let order = if difference > margin {
        Order::Greater
    } else if -difference > margin {
        Order::Less
    } else {
        Order::Within
    };
    Some(Comparison {
        order,
        difference,
        pooled_std: pooled,
        k,
    })
}

/// Ranks `1..=n` of `xs` in ascending order, ties given the mean of the ranks they share.
fn ranks(xs: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..xs.len()).collect();
    order.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
    let mut ranks = vec![0.0; xs.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && xs[order[j + 1]] == xs[order[i]] {
            j += 1;
        }
        // Positions i..=j hold equal values: each gets the mean rank (i + j)/2 + 1.
        for &k in &order[i..=j] {
            ranks[k] = (i + j) as f64 / 2.0 + 1.0;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman's rank correlation of paired samples: Pearson's correlation of
/// their ranks (ties at mean rank, as scipy's `spearmanr`). `None` for
/// unequal lengths, fewer than two pairs, a non-finite value, or a constant sample.
pub fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() != b.len() || a.len() < 2 || a.iter().chain(b).any(|x| !x.is_finite()) {
        return None;
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let (ma, mb) = (mean(&ra)?, mean(&rb)?);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma) * (x - ma)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb) * (y - mb)).sum();
    (va > 0.0 && vb > 0.0).then(|| cov / (va * vb).sqrt())
}

/// The least-squares line `y ≈ intercept + slope·x`: `(intercept, slope)`.
/// `None` for unequal lengths, fewer than two points, a non-finite value, or all `x` equal.
pub fn fit_line(x: &[f64], y: &[f64]) -> Option<(f64, f64)> {
    if x.len() != y.len() || x.len() < 2 || x.iter().chain(y).any(|v| !v.is_finite()) {
        return None;
    }
    let (mx, my) = (mean(x)?, mean(y)?);
    let sxx: f64 = x.iter().map(|v| (v - mx) * (v - mx)).sum();
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    Some((my - slope * mx, slope))
}

/// Where a falling curve first reaches `target`: the `x` of the first point
/// with `y ≤ target`, interpolated linearly from the point before it (the
/// first point's own `x` when it is already there). `None` if no point
/// reaches it or the lengths differ. Points are in the order of `x`.
pub fn first_crossing(x: &[f64], y: &[f64], target: f64) -> Option<f64> {
    if x.len() != y.len() {
        return None;
    }
    let i = y.iter().position(|&v| v <= target)?;
    if i == 0 || !y[i - 1].is_finite() {
        return Some(x[i]);
    }
    // y[i − 1] > target ≥ y[i]: the straight line between them meets the target at fraction t.
    let t = (y[i - 1] - target) / (y[i - 1] - y[i]);
    Some(x[i - 1] + t * (x[i] - x[i - 1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std_match_hand_computed_values() {
        // 2, 4, 4, 4, 5, 5, 7, 9: mean 5, Σ(x − 5)² = 32, sample variance 32/7.
        let xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        assert_eq!(mean(&xs), Some(5.0));
        assert!((sample_std(&xs).unwrap() - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean(&[]), None);
        assert_eq!(sample_std(&[3.0]), None);
        assert_eq!(sample_std(&[3.0, 3.0]), Some(0.0));
    }

    #[test]
    fn pooled_std_weights_by_degrees_of_freedom() {
        // a: 1, 3 (s² = 2, 1 dof); b: 2, 4, 6 (s² = 4, 2 dof): (2 + 8)/3.
        let p = pooled_std(&[1.0, 3.0], &[2.0, 4.0, 6.0]).unwrap();
        assert!((p - (10.0f64 / 3.0).sqrt()).abs() < 1e-12);
        // Equal sizes: the root of the mean variance.
        let p = pooled_std(&[0.0, 2.0], &[0.0, 4.0]).unwrap();
        assert!((p - ((2.0 + 8.0) / 2.0f64).sqrt()).abs() < 1e-12);
        assert_eq!(pooled_std(&[1.0], &[1.0, 2.0]), None);
    }

    #[test]
    fn compare_decides_at_k_pooled_stds() {
        // Both samples have s = 1 (pooled 1); means 10 and 7: difference 3.
        let a = [9.0, 10.0, 11.0];
        let b = [6.0, 7.0, 8.0];
        let c = compare(&a, &b, 2.0).unwrap();
        assert_eq!(c.order, Order::Greater);
        assert!((c.difference - 3.0).abs() < 1e-12 && (c.pooled_std - 1.0).abs() < 1e-12);
        assert_eq!(compare(&b, &a, 2.0).unwrap().order, Order::Less);
        assert_eq!(compare(&a, &b, 3.5).unwrap().order, Order::Within);
        // A diverged run (NaN) or a single seed cannot be compared.
        assert_eq!(compare(&[1.0, f64::NAN], &b, 2.0), None);
        assert_eq!(compare(&[1.0], &b, 2.0), None);
        // Constant samples: any difference decides.
        assert_eq!(compare(&[1.0, 1.0], &[0.5, 0.5], 2.0).unwrap().order, Order::Greater);
        assert_eq!(compare(&[1.0, 1.0], &[1.0, 1.0], 2.0).unwrap().order, Order::Within);
    }

    #[test]
    fn cells_format_mean_and_std() {
        assert_eq!(mean_std_cell(&[1.0, 3.0], 2), format!("2.00 ± {:.2}", 2f64.sqrt()));
        assert_eq!(mean_std_cell(&[1.0], 1), "1.0");
        assert_eq!(mean_std_cell(&[], 1), "–");
    }

    #[test]
    fn spearman_matches_hand_computed_values() {
        // Any increasing relation is +1, any decreasing one −1.
        assert_eq!(spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 10.0, 100.0, 1000.0]), Some(1.0));
        assert_eq!(spearman(&[1.0, 2.0, 3.0, 4.0], &[4.0, 3.0, 2.0, 0.5]), Some(-1.0));
        // Ranks 1 2 3 4 against 1 3 2 4: Σd² = 2, ρ = 1 − 6·2/(4·15) = 0.8.
        assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[10.0, 30.0, 20.0, 40.0]).unwrap() - 0.8).abs() < 1e-12);
        // A tie takes the mean rank: b's ranks are 1, 2.5, 2.5, 4; Σ products of deviations 4.5,
        // Σ squares 5 and 4.5: ρ = 4.5/√22.5.
        assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 2.0, 2.0, 3.0]).unwrap() - 4.5 / 22.5f64.sqrt()).abs() < 1e-12);
        assert_eq!(spearman(&[1.0, 2.0], &[3.0, 3.0]), None);
        assert_eq!(spearman(&[1.0, 2.0], &[1.0, f64::NAN]), None);
        assert_eq!(spearman(&[1.0], &[1.0]), None);
    }

    #[test]
    fn fit_line_recovers_an_exact_line_and_averages_noise() {
        let (a, b) = fit_line(&[1.0, 2.0, 3.0], &[5.0, 7.0, 9.0]).unwrap();
        assert!((a - 3.0).abs() < 1e-12 && (b - 2.0).abs() < 1e-12);
        // (0, 0), (1, 1), (2, 0): slope 0, intercept 1/3.
        let (a, b) = fit_line(&[0.0, 1.0, 2.0], &[0.0, 1.0, 0.0]).unwrap();
        assert!((a - 1.0 / 3.0).abs() < 1e-12 && b.abs() < 1e-12);
        assert_eq!(fit_line(&[1.0, 1.0], &[1.0, 2.0]), None);
        assert_eq!(fit_line(&[1.0, 2.0], &[1.0]), None);
    }

    #[test]
    fn first_crossing_interpolates_between_the_bracketing_points() {
        let x = [10.0, 20.0, 30.0, 40.0];
        let y = [4.0, 3.0, 2.0, 1.0];
        // 2.5 lies halfway between (20, 3) and (30, 2).
        assert_eq!(first_crossing(&x, &y, 2.5), Some(25.0));
        assert_eq!(first_crossing(&x, &y, 2.0), Some(30.0));
        // Already below at the first point; never reached.
        assert_eq!(first_crossing(&x, &y, 5.0), Some(10.0));
        assert_eq!(first_crossing(&x, &y, 0.5), None);
        // The first point at or below counts, even if the curve rises again.
        assert_eq!(first_crossing(&x, &[4.0, 2.0, 3.0, 1.0], 2.5), Some(17.5));
        assert_eq!(first_crossing(&x, &y[..3], 2.5), None);
    }
}
