//! Paired comparisons: bootstrap intervals, McNemar's exact test, the
//! smallest detectable difference, and the normal quantile they need.

/// Most paired examples one comparison takes.
pub const MAX_EXAMPLES: usize = 10_000_000;
/// Most bootstrap resamples (each costs one pass over the examples).
pub const MAX_RESAMPLES: usize = 100_000;

/// Why a statistic cannot be computed; names the argument.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    #[error("`{what}`: {reason}")]
    Invalid { what: &'static str, reason: String },
}

fn invalid(what: &'static str, reason: impl Into<String>) -> StatsError {
    StatsError::Invalid {
        what,
        reason: reason.into(),
    }
}

/// A confidence interval of the mean difference (candidate − champion).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// The observed mean difference.
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
    /// The confidence level (0.95).
    pub confidence: f64,
    /// Paired examples it rests on.
    pub n: usize,
}

impl Interval {
    /// Non-inferiority by `margin` (≥ 0): the whole interval lies above
    /// `-margin`, so the candidate is at most `margin` worse at this
    /// confidence.
    pub fn non_inferior(&self, margin: f64) -> bool {
        self.low > -margin.abs()
    }
}

/// The paired differences, after checking both sides.
fn differences(candidate: &[f64], champion: &[f64]) -> Result<Vec<f64>, StatsError> {
    if candidate.len() != champion.len() {
        return Err(invalid(
            "champion",
            format!(
                "{} values for {} candidate values; the comparison is paired",
                champion.len(),
                candidate.len()
            ),
        ));
    }
    if candidate.is_empty() {
        return Err(invalid("candidate", "no examples"));
    }
    if candidate.len() > MAX_EXAMPLES {
        return Err(invalid(
            "candidate",
            format!("{} examples; at most {MAX_EXAMPLES}", candidate.len()),
        ));
    }
    candidate
        .iter()
        .zip(champion)
        .enumerate()
        .map(|(i, (a, b))| {
            if a.is_finite() && b.is_finite() {
                Ok(a - b)
            } else {
                Err(invalid(
                    "candidate",
                    format!("example {i} is not a finite number ({a} vs {b})"),
                ))
            }
        })
        .collect()
}

fn check_level(what: &'static str, p: f64) -> Result<(), StatsError> {
    if p > 0.0 && p < 1.0 {
        Ok(())
    } else {
        Err(invalid(
            what,
            format!("{p} is not strictly between 0 and 1"),
        ))
    }
}

/// SplitMix64: a small, well-mixed generator, enough for resampling and
/// reproducible from its seed on every platform.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Uniform in `(0, 1]` (never 0, so its logarithm is finite).
    pub fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply; the bias is below 2^-40 for
    /// any `n` this module accepts).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

/// The `q` quantile of sorted `v`, interpolated linearly between order
/// statistics (NumPy's default, which SciPy's percentile interval uses).
fn quantile(v: &[f64], q: f64) -> f64 {
    let h = q * (v.len() - 1) as f64;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    v[lo] + (h - lo as f64) * (v[hi] - v[lo])
}

fn check_resamples(resamples: usize) -> Result<(), StatsError> {
    if resamples == 0 || resamples > MAX_RESAMPLES {
        return Err(invalid(
            "resamples",
            format!("{resamples}; between 1 and {MAX_RESAMPLES}"),
        ));
    }
    Ok(())
}

/// A percentile bootstrap interval of the mean of `candidate[i] −
/// champion[i]`: `resamples` resamples of the example indices (the pairs
/// stay together), from `seed`.
pub fn paired_bootstrap(
    candidate: &[f64],
    champion: &[f64],
    confidence: f64,
    resamples: usize,
    seed: u64,
) -> Result<Interval, StatsError> {
    check_level("confidence", confidence)?;
    check_resamples(resamples)?;
    let d = differences(candidate, champion)?;
    let n = d.len();
    let estimate = d.iter().sum::<f64>() / n as f64;
    let mut rng = SplitMix(seed);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| d[rng.below(n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let tail = (1.0 - confidence) / 2.0;
    Ok(Interval {
        estimate,
        low: quantile(&means, tail),
        high: quantile(&means, 1.0 - tail),
        confidence,
        n,
    })
}

/// A percentile bootstrap interval of the mean of `v`.
pub fn bootstrap_mean(
    v: &[f64],
    confidence: f64,
    resamples: usize,
    seed: u64,
) -> Result<Interval, StatsError> {
    paired_bootstrap(v, &vec![0.0; v.len()], confidence, resamples, seed)
}

/// A percentile bootstrap interval of `mean(a) / mean(b)` for two
/// independent samples (each resampled on its own), e.g. per-window
/// throughputs of a candidate and a baseline.
pub fn bootstrap_ratio(
    a: &[f64],
    b: &[f64],
    confidence: f64,
    resamples: usize,
    seed: u64,
) -> Result<Interval, StatsError> {
    check_level("confidence", confidence)?;
    check_resamples(resamples)?;
    for (what, v) in [("candidate", a), ("champion", b)] {
        if v.is_empty() || v.len() > MAX_EXAMPLES {
            return Err(invalid(
                what,
                format!("{} values; 1 to {MAX_EXAMPLES}", v.len()),
            ));
        }
        if v.iter().any(|x| !x.is_finite() || *x < 0.0) {
            return Err(invalid(what, "values must be finite and not negative"));
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    if mean(b) <= 0.0 {
        return Err(invalid("champion", "its mean is 0: no ratio"));
    }
    let mut rng = SplitMix(seed);
    let mut draw =
        |v: &[f64]| (0..v.len()).map(|_| v[rng.below(v.len())]).sum::<f64>() / v.len() as f64;
    let mut ratios: Vec<f64> = (0..resamples)
        .filter_map(|_| {
            let (x, y) = (draw(a), draw(b));
            (y > 0.0).then(|| x / y)
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    let tail = (1.0 - confidence) / 2.0;
    Ok(Interval {
        estimate: mean(a) / mean(b),
        low: quantile(&ratios, tail),
        high: quantile(&ratios, 1.0 - tail),
        confidence,
        n: a.len().min(b.len()),
    })
}

/// McNemar's exact test of two classifiers on the same examples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct McNemar {
    /// Examples only the candidate got right.
    pub b: u64,
    /// Examples only the champion got right.
    pub c: u64,
    /// Two-sided p-value of `b` among `b + c` discordant pairs under
    /// Binomial(b + c, ½): how surprising the disagreement is if the two
    /// were equally accurate.
    pub p_value: f64,
}

/// McNemar's exact test on paired correctness.
pub fn mcnemar(
    candidate_correct: &[bool],
    champion_correct: &[bool],
) -> Result<McNemar, StatsError> {
    if candidate_correct.len() != champion_correct.len() {
        return Err(invalid(
            "champion_correct",
            format!(
                "{} answers for {} candidate answers; the comparison is paired",
                champion_correct.len(),
                candidate_correct.len()
            ),
        ));
    }
    if candidate_correct.len() > MAX_EXAMPLES {
        return Err(invalid(
            "candidate_correct",
            format!(
                "{} examples; at most {MAX_EXAMPLES}",
                candidate_correct.len()
            ),
        ));
    }
    let (mut b, mut c) = (0u64, 0u64);
    for (x, y) in candidate_correct.iter().zip(champion_correct) {
        match (x, y) {
            (true, false) => b += 1,
            (false, true) => c += 1,
            _ => {}
        }
    }
    Ok(McNemar {
        b,
        c,
        p_value: binomial_half_two_sided(b, b + c),
    })
}

/// Two-sided exact p-value of `k` successes in `n` fair trials: twice the
/// smaller tail (the distribution is symmetric), at most 1. Summed in logs
/// so large `n` neither underflows nor overflows.
fn binomial_half_two_sided(k: u64, n: u64) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let m = k.min(n - k);
    if 2 * m == n {
        return 1.0;
    }
    // log C(n, i) − n·ln 2, for i = 0..=m, combined by log-sum-exp.
    let ln2n = n as f64 * std::f64::consts::LN_2;
    let mut log_c = 0.0f64;
    let mut terms = Vec::with_capacity(m as usize + 1);
    for i in 0..=m {
        if i > 0 {
            log_c += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        terms.push(log_c - ln2n);
    }
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let tail = max.exp() * terms.iter().map(|t| (t - max).exp()).sum::<f64>();
    (2.0 * tail).min(1.0)
}

/// The smallest true mean difference a two-sided test at level `alpha`
/// detects with probability `power`, given these paired differences:
/// (z₁₋α/₂ + z_power) · s / √n, with s their sample standard deviation
/// (the normal approximation; what the suite's size can resolve).
pub fn min_detectable_difference(
    differences: &[f64],
    alpha: f64,
    power: f64,
) -> Result<f64, StatsError> {
    check_level("alpha", alpha)?;
    check_level("power", power)?;
    let n = differences.len();
    if n < 2 {
        return Err(invalid("differences", format!("{n} examples; at least 2")));
    }
    if n > MAX_EXAMPLES {
        return Err(invalid(
            "differences",
            format!("{n} examples; at most {MAX_EXAMPLES}"),
        ));
    }
    if let Some(i) = differences.iter().position(|d| !d.is_finite()) {
        return Err(invalid(
            "differences",
            format!("example {i} is not a finite number"),
        ));
    }
    let mean = differences.iter().sum::<f64>() / n as f64;
    let var = differences.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    Ok(
        (normal_quantile(1.0 - alpha / 2.0) + normal_quantile(power)) * var.sqrt()
            / (n as f64).sqrt(),
    )
}

/// The standard normal quantile (inverse CDF) of `p` in (0, 1): Acklam's
/// rational approximation (relative error below 1.2·10⁻⁹); ±∞ at the ends,
/// NaN outside.
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const LOW: f64 = 0.024_25;
    if p.is_nan() || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p <= 1.0 - LOW {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_interval_covers_the_ratio_and_narrows_with_data() {
        let a: Vec<f64> = (0..40).map(|i| 100.0 + f64::from(i % 5)).collect();
        let b: Vec<f64> = (0..40).map(|i| 50.0 + f64::from(i % 3)).collect();
        let r = bootstrap_ratio(&a, &b, 0.95, 2000, 7).expect("ratio");
        assert!(r.low < r.estimate && r.estimate < r.high, "{r:?}");
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        assert!((r.estimate - mean(&a) / mean(&b)).abs() < 1e-12);
        assert!(r.high - r.low < 0.05, "{r:?}");
        let same = bootstrap_ratio(&a, &a, 0.95, 2000, 7).expect("same");
        assert!(same.low <= 1.0 && 1.0 <= same.high, "{same:?}");
        assert!(bootstrap_ratio(&a, &[0.0, 0.0], 0.95, 100, 1).is_err());
        let m = bootstrap_mean(&a, 0.95, 1000, 3).expect("mean");
        assert!(m.low <= 102.0 && 102.0 <= m.high, "{m:?}");
        let mut g = SplitMix::new(1);
        assert!((0..1000).map(|_| g.unit()).all(|u| u > 0.0 && u <= 1.0));
    }

    #[test]
    fn bad_inputs_name_the_argument() {
        let e = paired_bootstrap(&[1.0], &[1.0, 2.0], 0.95, 10, 0).expect_err("unpaired");
        assert!(e.to_string().contains("paired"), "{e}");
        let e = paired_bootstrap(&[], &[], 0.95, 10, 0).expect_err("empty");
        assert!(e.to_string().contains("candidate"), "{e}");
        let e = paired_bootstrap(&[f64::NAN], &[1.0], 0.95, 10, 0).expect_err("nan");
        assert!(e.to_string().contains("example 0"), "{e}");
        let e = paired_bootstrap(&[1.0], &[1.0], 1.0, 10, 0).expect_err("level");
        assert!(e.to_string().contains("confidence"), "{e}");
        let e = paired_bootstrap(&[1.0], &[1.0], 0.9, MAX_RESAMPLES + 1, 0).expect_err("many");
        assert!(e.to_string().contains("resamples"), "{e}");
        assert!(min_detectable_difference(&[1.0], 0.05, 0.8).is_err());
        assert!(mcnemar(&[true], &[]).is_err());
    }

    #[test]
    fn a_seed_gives_the_same_interval() {
        let a: Vec<f64> = (0..200).map(|i| f64::from(i % 7)).collect();
        let b: Vec<f64> = (0..200).map(|i| f64::from(i % 5)).collect();
        let x = paired_bootstrap(&a, &b, 0.95, 2000, 42).expect("x");
        let y = paired_bootstrap(&a, &b, 0.95, 2000, 42).expect("y");
        assert_eq!(x, y);
        assert!(x.low <= x.estimate && x.estimate <= x.high, "{x:?}");
        // Identical models: every resample's difference is 0.
        let same = paired_bootstrap(&a, &a, 0.95, 100, 1).expect("same");
        assert_eq!((same.low, same.high), (0.0, 0.0));
        assert!(same.non_inferior(0.0001));
    }
}
