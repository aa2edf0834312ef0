//! The statistics against SciPy's answers on real classifiers
//! (`tests/data/references.json`, from `scripts/make-validation-references.py`:
//! scikit-learn's breast-cancer data, a logistic regression and a
//! deliberately worse depth-1 tree, 285 held-out examples).

use mlmesh_validate::{mcnemar, min_detectable_difference, normal_quantile, paired_bootstrap};
use serde_json::Value;

fn references() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/references.json"
    ))
    .expect("references.json");
    serde_json::from_str(&text).expect("json")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn num(v: &Value) -> f64 {
    v.as_f64().expect("number")
}

#[test]
fn bootstrap_intervals_agree_with_scipy() {
    let r = references();
    for case in r["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        let (a, b) = (floats(&case["candidate"]), floats(&case["champion"]));
        for (level, key) in [(0.95, "bootstrap_95"), (0.90, "bootstrap_90")] {
            let ours = paired_bootstrap(&a, &b, level, 9999, 7).expect(name);
            let (low, high) = (num(&case[key]["low"]), num(&case[key]["high"]));
            assert!(
                (ours.estimate - num(&case["mean_difference"])).abs() < 1e-12,
                "{name}: {ours:?}"
            );
            // Both are Monte Carlo estimates of the same percentiles (9,999
            // resamples each, different generators): they agree to a small
            // share of the interval's width.
            let tolerance = 0.08 * (high - low);
            assert!(
                (ours.low - low).abs() <= tolerance && (ours.high - high).abs() <= tolerance,
                "{name} at {level}: ours [{}, {}], SciPy [{low}, {high}]",
                ours.low,
                ours.high
            );
            assert_eq!(ours.n, a.len());
        }
    }
}

#[test]
fn the_gate_decides_as_the_intervals_say() {
    let r = references();
    let cases = r["cases"].as_array().expect("cases");
    let interval = |i: usize| {
        let c = &cases[i];
        paired_bootstrap(
            &floats(&c["candidate"]),
            &floats(&c["champion"]),
            0.95,
            9999,
            7,
        )
        .expect("interval")
    };
    // The better model replacing the worse one is non-inferior at any margin;
    // the worse one replacing the better one is refused at a 1-point margin
    // (its whole interval lies below −0.01) and only passes a margin wider
    // than its interval's lower bound.
    assert!(interval(0).non_inferior(0.0));
    let worse = interval(1);
    assert!(!worse.non_inferior(0.01), "{worse:?}");
    assert!(worse.non_inferior(-worse.low + 0.01), "{worse:?}");
}

#[test]
fn mcnemar_matches_scipys_binomial_test() {
    let r = references();
    for m in r["mcnemar"].as_array().expect("mcnemar") {
        let (b, c) = (m["b"].as_u64().expect("b"), m["c"].as_u64().expect("c"));
        // Paired answers with exactly b and c discordant pairs (and some
        // agreeing ones, which the test ignores).
        let mut cand = vec![true; 10];
        let mut champ = vec![true; 10];
        cand.extend(std::iter::repeat_n(true, b as usize));
        champ.extend(std::iter::repeat_n(false, b as usize));
        cand.extend(std::iter::repeat_n(false, c as usize));
        champ.extend(std::iter::repeat_n(true, c as usize));
        let ours = mcnemar(&cand, &champ).expect("mcnemar");
        assert_eq!((ours.b, ours.c), (b, c));
        let want = num(&m["p_value"]);
        assert!(
            (ours.p_value - want).abs() <= 1e-9 * want.max(1e-300) + 1e-15,
            "{}: ours {}, SciPy {want}",
            m["name"],
            ours.p_value
        );
    }
    // The classifiers' own answers, as the reference script built them.
    let case = &r["cases"][0];
    let cand: Vec<bool> = floats(&case["candidate"])
        .iter()
        .map(|x| *x == 1.0)
        .collect();
    let champ: Vec<bool> = floats(&case["champion"])
        .iter()
        .map(|x| *x == 1.0)
        .collect();
    let ours = mcnemar(&cand, &champ).expect("classifiers");
    let want = &r["mcnemar"][0];
    assert_eq!(ours.b, want["b"].as_u64().expect("b"));
    assert_eq!(ours.c, want["c"].as_u64().expect("c"));
}

#[test]
fn detectable_differences_and_quantiles_match_scipy() {
    let r = references();
    for case in r["cases"].as_array().expect("cases") {
        let d: Vec<f64> = floats(&case["candidate"])
            .iter()
            .zip(floats(&case["champion"]))
            .map(|(a, b)| a - b)
            .collect();
        let ours = min_detectable_difference(&d, 0.05, 0.8).expect("mdd");
        let want = num(&case["mdd_alpha05_power80"]);
        assert!((ours - want).abs() <= 1e-8 * want, "{ours} vs {want}");
    }
    for pair in r["normal_quantiles"].as_array().expect("quantiles") {
        let (p, want) = (num(&pair[0]), num(&pair[1]));
        let ours = normal_quantile(p);
        assert!(
            (ours - want).abs() <= 2e-9 * want.abs().max(1.0),
            "Φ⁻¹({p}): ours {ours}, SciPy {want}"
        );
    }
}
