//! The validator's statistics (issue: no version takes traffic unchecked).
//! A candidate is compared with the version it would replace on the same
//! examples, so every comparison here is paired, and every answer is an
//! interval with its sample size and the smallest difference the suite
//! could have detected — never a point value alone:
//!
//! - [`paired_bootstrap`]: a percentile interval of the mean per-example
//!   difference (candidate − champion), from a seeded generator so a
//!   validation is reproducible;
//! - [`mcnemar`]: McNemar's exact test of two classifiers' correctness on
//!   the same examples;
//! - [`min_detectable_difference`]: the difference a two-sided test would
//!   detect with the given power at this sample size;
//! - [`Interval::non_inferior`]: the gate's rule, lower bound above
//!   `-margin`.
//!
//! Over them: [`suite`] (a suite document: signature, examples, checks with
//! tolerances, bounded when parsed) and [`checks`] (contract, tensor
//! tolerances, cosine, accuracy with non-inferiority, each result in plain
//! words with its figures).
//!
//! Every input is bounded and checked before any loop (lengths, finiteness,
//! levels, resample counts); references are SciPy's
//! (`scripts/make-validation-references.py`).

pub mod checks;
mod stats;
pub mod suite;

pub use stats::{
    Interval, MAX_EXAMPLES, MAX_RESAMPLES, McNemar, SplitMix, StatsError, bootstrap_mean,
    bootstrap_ratio, mcnemar, min_detectable_difference, normal_quantile, paired_bootstrap,
};
