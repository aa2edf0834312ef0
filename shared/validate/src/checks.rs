//! A suite's checks over the answers of a candidate, and of the champion
//! it would replace: contract, tensor tolerances, cosine, accuracy with
//! non-inferiority. Each result says in plain words what was measured,
//! with the figures and, against a champion, the interval, McNemar's test
//! and the smallest difference the suite could detect.

use std::collections::BTreeMap;

use crate::{
    Interval, McNemar, StatsError, mcnemar, min_detectable_difference, paired_bootstrap,
    suite::{Check, Signature, Suite},
};

/// What a model answered for each example of a suite, in order: output
/// name → its elements, flattened.
pub type Answers = Vec<BTreeMap<String, Vec<f64>>>;

/// One check's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    /// `contract`, `tensor y`, `cosine embedding`, `accuracy probabilities`.
    pub check: String,
    pub passed: bool,
    /// What was found, in plain words.
    pub detail: String,
    pub figures: BTreeMap<String, f64>,
    /// Candidate − champion, when there is a champion.
    pub interval: Option<Interval>,
    pub mcnemar: Option<McNemar>,
    /// The smallest difference the suite could detect (α 0.05, power 0.8).
    pub min_detectable: Option<f64>,
    /// The non-inferiority margin the interval was judged with.
    pub margin: Option<f64>,
}

impl CheckResult {
    /// A result without figures (a runner's own checks use it too).
    pub fn new(check: impl Into<String>, passed: bool, detail: impl Into<String>) -> Self {
        Self {
            check: check.into(),
            passed,
            detail: detail.into(),
            figures: BTreeMap::new(),
            interval: None,
            mcnemar: None,
            min_detectable: None,
            margin: None,
        }
    }
}

/// Every check of a suite, run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub suite: String,
    /// Examples run.
    pub n: usize,
    pub checks: Vec<CheckResult>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }
}

/// The model's signature against the suite's and against the version it
/// would replace (a change from the champion is reported as such, and
/// fails: a changed signature breaks its callers).
pub fn contract(
    declared: Option<&Signature>,
    candidate: &Signature,
    champion: Option<&Signature>,
) -> CheckResult {
    let mut problems = Vec::new();
    if let Some(d) = declared {
        diff("the suite declares", d, candidate, &mut problems);
    }
    if let Some(c) = champion {
        diff("the champion has", c, candidate, &mut problems);
    }
    let passed = problems.is_empty();
    let detail = if passed {
        format!(
            "{} inputs and {} outputs as declared",
            candidate.inputs.len(),
            candidate.outputs.len()
        )
    } else {
        problems.join("; ")
    };
    CheckResult::new("contract", passed, detail)
}

fn diff(whose: &str, want: &Signature, got: &Signature, out: &mut Vec<String>) {
    for (kind, w, g) in [
        ("input", &want.inputs, &got.inputs),
        ("output", &want.outputs, &got.outputs),
    ] {
        for t in w {
            match g.iter().find(|x| x.name == t.name) {
                None => out.push(format!("{whose} {kind} {:?}, the model has none", t.name)),
                Some(x) if x.datatype != t.datatype || !shapes_agree(&t.shape, &x.shape) => {
                    out.push(format!(
                        "{whose} {kind} {:?} as {} {:?}, the model has {} {:?}",
                        t.name, t.datatype, t.shape, x.datatype, x.shape
                    ));
                }
                Some(_) => {}
            }
        }
        for x in g.iter().filter(|x| !w.iter().any(|t| t.name == x.name)) {
            out.push(format!(
                "the model has {kind} {:?}, which {whose} not",
                x.name
            ));
        }
    }
}

/// Same rank, and every fixed dimension equal (`-1` matches anything).
fn shapes_agree(a: &[i64], b: &[i64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| *x < 0 || *y < 0 || x == y)
}

/// Why answers cannot be evaluated at all.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{who} answered {got} examples of the suite's {want}")]
    Count {
        who: &'static str,
        got: usize,
        want: usize,
    },
    #[error(transparent)]
    Stats(#[from] StatsError),
}

/// Runs every check of `suite` over the answers.
pub fn evaluate(
    suite: &Suite,
    candidate: &Answers,
    champion: Option<&Answers>,
) -> Result<Report, EvalError> {
    evaluate_with_corpus(suite, candidate, champion, &Corpora::default())
}

/// The corpus vectors of a retrieval suite, as each version embedded them
/// (in the suite's corpus order).
#[derive(Debug, Default, Clone)]
pub struct Corpora {
    pub candidate: Vec<Vec<f64>>,
    pub champion: Option<Vec<Vec<f64>>>,
}

/// [`evaluate`], with the corpus vectors recall checks search.
pub fn evaluate_with_corpus(
    suite: &Suite,
    candidate: &Answers,
    champion: Option<&Answers>,
    corpora: &Corpora,
) -> Result<Report, EvalError> {
    let want = suite.examples.len();
    for (who, a) in [
        ("the candidate", Some(candidate)),
        ("the champion", champion),
    ] {
        if let Some(a) = a
            && a.len() != want
        {
            return Err(EvalError::Count {
                who,
                got: a.len(),
                want,
            });
        }
    }
    let mut checks = Vec::with_capacity(suite.checks.len());
    for c in &suite.checks {
        checks.push(match c {
            Check::Tensor { output, atol, rtol } => tensor(suite, candidate, output, *atol, *rtol),
            Check::Cosine { output, min } => cosine(suite, candidate, output, *min),
            Check::Accuracy {
                output,
                min,
                margin,
                top_k,
            } => accuracy(suite, candidate, champion, (output, *top_k), *min, *margin)?,
            Check::Recall { k, min, margin } => recall(
                suite,
                (candidate, &corpora.candidate),
                champion.zip(corpora.champion.as_ref()),
                *k,
                *min,
                *margin,
            )?,
        });
    }
    Ok(Report {
        suite: suite.name.clone(),
        n: want,
        checks,
    })
}

/// The answer's `output` on example `i`, or why there is none usable.
fn answer<'a>(a: &'a Answers, i: usize, output: &str) -> Result<&'a [f64], String> {
    a[i].get(output)
        .map(Vec::as_slice)
        .ok_or_else(|| format!("example {i} has no output {output:?}"))
}

/// Example `i`'s answer for `output` beside its expected values, of the
/// same length.
fn with_expected<'a>(
    example: &'a crate::suite::Example,
    a: &'a Answers,
    i: usize,
    output: &str,
) -> Result<(&'a [f64], &'a [f64]), String> {
    let expected = example.expected.get(output).map_or(&[][..], Vec::as_slice);
    let got = answer(a, i, output)?;
    if got.len() != expected.len() {
        return Err(format!(
            "example {i}: {} elements, {} expected",
            got.len(),
            expected.len()
        ));
    }
    Ok((got, expected))
}

fn tensor(suite: &Suite, a: &Answers, output: &str, atol: f64, rtol: f64) -> CheckResult {
    let name = format!("tensor {output}");
    let (mut worst, mut failing, mut first) = (0.0f64, 0usize, None);
    for (i, e) in suite.examples.iter().enumerate() {
        let (got, expected) = match with_expected(e, a, i, output) {
            Ok(pair) => pair,
            Err(why) => return CheckResult::new(name, false, why),
        };
        let mut bad = false;
        for (g, x) in got.iter().zip(expected) {
            let err = (g - x).abs();
            if !err.is_finite() || err > atol + rtol * x.abs() {
                bad = true;
            }
            worst = worst.max(if err.is_nan() { f64::INFINITY } else { err });
        }
        if bad {
            failing += 1;
            first.get_or_insert(i);
        }
    }
    let passed = failing == 0;
    let detail = match first {
        None => {
            format!("every element within atol {atol} + rtol {rtol}; largest error {worst:.3e}")
        }
        Some(i) => format!(
            "{failing} of {} examples outside atol {atol} + rtol {rtol} (first: example {i}); largest error {worst:.3e}",
            suite.examples.len()
        ),
    };
    let mut r = CheckResult::new(name, passed, detail);
    r.figures.insert("max_abs_error".into(), worst);
    r.figures.insert("failing_examples".into(), failing as f64);
    r
}

fn cosine(suite: &Suite, a: &Answers, output: &str, min: f64) -> CheckResult {
    let name = format!("cosine {output}");
    let (mut lowest, mut sum, mut at) = (f64::INFINITY, 0.0, 0);
    for (i, e) in suite.examples.iter().enumerate() {
        let (got, expected) = match with_expected(e, a, i, output) {
            Ok(([], _)) => {
                return CheckResult::new(name, false, format!("example {i}: 0 elements"));
            }
            Ok(pair) => pair,
            Err(why) => return CheckResult::new(name, false, why),
        };
        let dot: f64 = got.iter().zip(expected).map(|(x, y)| x * y).sum();
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let c = dot / (norm(got) * norm(expected));
        let c = if c.is_finite() { c } else { -1.0 };
        sum += c;
        if c < lowest {
            lowest = c;
            at = i;
        }
    }
    let n = suite.examples.len() as f64;
    let passed = lowest >= min;
    let detail = format!(
        "lowest cosine {lowest:.6} (example {at}), mean {:.6}; at least {min} required",
        sum / n
    );
    let mut r = CheckResult::new(name, passed, detail);
    r.figures.insert("min_cosine".into(), lowest);
    r.figures.insert("mean_cosine".into(), sum / n);
    r
}

/// The class an answer predicts: the index of the largest value, or the
/// single value itself (a label output).
fn predicted(values: &[f64]) -> Option<i64> {
    match values {
        [] => None,
        [v] => Some(v.round() as i64),
        _ => values
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i as i64),
    }
}

/// Whether each example's label is among the `k` classes the answer
/// ranks highest (k = 1: the predicted class; a single-value output is
/// its own class whatever `k`).
fn correctness(suite: &Suite, a: &Answers, output: &str, k: usize) -> Result<Vec<bool>, String> {
    suite
        .examples
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let values = answer(a, i, output)?;
            if k <= 1 || values.len() <= 1 {
                let p =
                    predicted(values).ok_or_else(|| format!("example {i}: {output:?} is empty"))?;
                return Ok(Some(p) == e.label);
            }
            let mut ranked: Vec<usize> = (0..values.len()).collect();
            // Highest first; ties by class index, so the result is stable.
            ranked.sort_by(|x, y| values[*y].total_cmp(&values[*x]).then(x.cmp(y)));
            Ok(e.label
                .is_some_and(|l| ranked.iter().take(k).any(|c| *c as i64 == l)))
        })
        .collect()
}

/// The smallest detectable difference in words. Paired differences with
/// no variance (the two versions did alike on every example) leave it
/// undefined: said so rather than claiming any difference would show.
fn detectable(mdd: Option<f64>) -> String {
    match mdd {
        Some(m) if m > 0.0 => format!("; the suite detects differences of {m:.4} or more"),
        Some(_) => {
            "; both did alike on every example, so the smallest detectable difference is undefined"
                .into()
        }
        None => String::new(),
    }
}

/// Each query's recall at `k`: the share of its relevant documents among
/// the `k` corpus vectors of highest cosine to its own vector.
fn recalls(
    suite: &Suite,
    answers: &Answers,
    corpus: &[Vec<f64>],
    k: usize,
) -> Result<Vec<f64>, String> {
    if corpus.len() != suite.corpus.len() {
        return Err(format!(
            "{} corpus vectors for {} documents",
            corpus.len(),
            suite.corpus.len()
        ));
    }
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let cos = |a: &[f64], b: &[f64]| {
        let c = a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>() / (norm(a) * norm(b));
        if c.is_finite() && a.len() == b.len() {
            c
        } else {
            -1.0
        }
    };
    suite
        .examples
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let q = answer(answers, i, "embedding")?;
            let mut scored: Vec<(f64, usize)> = corpus
                .iter()
                .enumerate()
                .map(|(j, d)| (cos(q, d), j))
                .collect();
            // Highest first; ties by corpus order, so the result is stable.
            scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let found = scored
                .iter()
                .take(k)
                .filter(|(_, j)| e.relevant.contains(&suite.corpus[*j].id))
                .count();
            Ok(found as f64 / e.relevant.len() as f64)
        })
        .collect()
}

fn recall(
    suite: &Suite,
    candidate: (&Answers, &Vec<Vec<f64>>),
    champion: Option<(&Answers, &Vec<Vec<f64>>)>,
    k: usize,
    min: Option<f64>,
    margin: Option<f64>,
) -> Result<CheckResult, EvalError> {
    let name = format!("recall@{k}");
    let ours = match recalls(suite, candidate.0, candidate.1, k) {
        Ok(r) => r,
        Err(why) => return Ok(CheckResult::new(name, false, why)),
    };
    let n = ours.len();
    let mean = ours.iter().sum::<f64>() / n as f64;
    let mut passed = min.is_none_or(|m| mean >= m);
    let mut detail = format!(
        "recall@{k} {mean:.4} over {n} queries and {} documents",
        suite.corpus.len()
    );
    if let Some(m) = min {
        detail.push_str(&format!(" (at least {m} required)"));
    }
    let mut r = CheckResult::new(name.clone(), passed, String::new());
    r.figures.insert("recall".into(), mean);
    if let Some((answers, corpus)) = champion {
        let theirs = match recalls(suite, answers, corpus, k) {
            Ok(r) => r,
            Err(why) => return Ok(CheckResult::new(name, false, format!("champion: {why}"))),
        };
        let bs = suite.bootstrap;
        let interval = paired_bootstrap(&ours, &theirs, bs.confidence, bs.resamples, bs.seed)?;
        let d: Vec<f64> = ours.iter().zip(&theirs).map(|(x, y)| x - y).collect();
        let mdd = if n >= 2 {
            Some(min_detectable_difference(&d, 0.05, 0.8)?)
        } else {
            None
        };
        r.figures.insert(
            "champion_recall".into(),
            theirs.iter().sum::<f64>() / n as f64,
        );
        detail.push_str(&format!(
            "; against the champion {:+.4} [{:+.4}, {:+.4}] at {:.0}%",
            interval.estimate,
            interval.low,
            interval.high,
            interval.confidence * 100.0
        ));
        detail.push_str(&detectable(mdd));
        if let Some(margin) = margin {
            let ok = interval.non_inferior(margin);
            detail.push_str(&if ok {
                format!("; non-inferior by margin {margin}")
            } else {
                format!(
                    "; may be worse by more than the margin {margin} (lower bound {:+.4})",
                    interval.low
                )
            });
            passed &= ok;
        }
        r.interval = Some(interval);
        r.min_detectable = mdd;
        r.margin = margin;
    }
    r.passed = passed;
    r.detail = detail;
    Ok(r)
}

fn accuracy(
    suite: &Suite,
    candidate: &Answers,
    champion: Option<&Answers>,
    (output, k): (&str, usize),
    min: Option<f64>,
    margin: Option<f64>,
) -> Result<CheckResult, EvalError> {
    let name = match k {
        1 => format!("accuracy {output}"),
        k => format!("top-{k} accuracy {output}"),
    };
    let ours = match correctness(suite, candidate, output, k) {
        Ok(c) => c,
        Err(why) => return Ok(CheckResult::new(name, false, why)),
    };
    let n = ours.len();
    let acc = ours.iter().filter(|c| **c).count() as f64 / n as f64;
    let mut passed = min.is_none_or(|m| acc >= m);
    let mut detail = format!("accuracy {acc:.4} on {n} examples");
    if let Some(m) = min {
        detail.push_str(&format!(" (at least {m} required)"));
    }
    let mut r = CheckResult::new(name.clone(), passed, String::new());
    r.figures.insert("accuracy".into(), acc);
    if let Some(champ) = champion {
        let theirs = match correctness(suite, champ, output, k) {
            Ok(c) => c,
            Err(why) => return Ok(CheckResult::new(name, false, format!("champion: {why}"))),
        };
        let as_f64 = |v: &[bool]| {
            v.iter()
                .map(|c| f64::from(u8::from(*c)))
                .collect::<Vec<_>>()
        };
        let (a, b) = (as_f64(&ours), as_f64(&theirs));
        let bs = suite.bootstrap;
        let interval = paired_bootstrap(&a, &b, bs.confidence, bs.resamples, bs.seed)?;
        let test = mcnemar(&ours, &theirs)?;
        let d: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
        let mdd = if n >= 2 {
            Some(min_detectable_difference(&d, 0.05, 0.8)?)
        } else {
            None
        };
        r.figures
            .insert("champion_accuracy".into(), b.iter().sum::<f64>() / n as f64);
        detail.push_str(&format!(
            "; against the champion {:+.4} [{:+.4}, {:+.4}] at {:.0}% (McNemar p = {:.3e}, {} vs {} discordant examples)",
            interval.estimate,
            interval.low,
            interval.high,
            interval.confidence * 100.0,
            test.p_value,
            test.b,
            test.c
        ));
        detail.push_str(&detectable(mdd));
        if let Some(margin) = margin {
            let ok = interval.non_inferior(margin);
            detail.push_str(&if ok {
                format!("; non-inferior by margin {margin}")
            } else {
                format!(
                    "; may be worse by more than the margin {margin} (lower bound {:+.4})",
                    interval.low
                )
            });
            passed &= ok;
        }
        r.interval = Some(interval);
        r.mcnemar = Some(test);
        r.min_detectable = mdd;
        r.margin = margin;
    }
    r.passed = passed;
    r.detail = detail;
    Ok(r)
}
