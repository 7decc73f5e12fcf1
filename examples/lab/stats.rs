//! The statistics the verdicts rest on: mean, sample standard deviation,
//! pooled standard deviation, and the one comparison every rule uses ("A's
//! mean differs from B's by more than k pooled standard deviations").
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
}
