//! The suite's checks on two real classifiers' answers (scikit-learn's
//! breast-cancer data: a logistic regression and a deliberately worse
//! depth-1 tree; `tests/data/references.json`): accuracy as scikit-learn
//! computes it, the better model promoted over the worse, the worse one
//! refused with its interval named, and the contract check.

use std::collections::BTreeMap;

use mlmesh_validate::{
    checks::{Answers, contract, evaluate},
    suite::{Signature, Suite, TensorSpec},
};
use serde_json::{Value, json};

fn references() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/references.json"
    ))
    .expect("references.json");
    serde_json::from_str(&text).expect("json")
}

fn answers(rows: &Value) -> Answers {
    rows.as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            let p: Vec<f64> = r
                .as_array()
                .expect("row")
                .iter()
                .map(|x| x.as_f64().expect("p"))
                .collect();
            BTreeMap::from([("probabilities".to_owned(), p)])
        })
        .collect()
}

/// A suite over the held-out labels (inputs are not needed to judge
/// answers already given).
fn suite(labels: &Value, margin: f64) -> Suite {
    let examples: Vec<Value> = labels
        .as_array()
        .expect("labels")
        .iter()
        .map(|l| json!({"inputs": {}, "label": l}))
        .collect();
    let doc = json!({
        "name": "breast-cancer",
        "examples": examples,
        "checks": [{"kind": "accuracy", "output": "probabilities", "min": 0.9, "margin": margin}],
        "bootstrap": {"resamples": 4000, "confidence": 0.95, "seed": 3},
    });
    Suite::parse(doc.to_string().as_bytes()).expect("suite")
}

#[test]
fn accuracy_and_non_inferiority_on_real_classifiers() {
    let r = references();
    let a = &r["classifier_answers"];
    let (good, worse) = (
        answers(&a["good_probabilities"]),
        answers(&a["worse_probabilities"]),
    );
    let s = suite(&a["labels"], 0.01);

    // Alone: accuracy is scikit-learn's accuracy_score.
    let alone = evaluate(&s, &good, None).expect("evaluate");
    let acc = alone.checks[0].figures["accuracy"];
    assert!(
        (acc - a["good_accuracy"].as_f64().expect("acc")).abs() < 1e-12,
        "{acc}"
    );
    assert!(alone.passed(), "{:?}", alone.checks[0]);

    // The better model replacing the worse one passes, with its interval.
    let up = evaluate(&s, &good, Some(&worse)).expect("evaluate");
    let c = &up.checks[0];
    assert!(up.passed(), "{}", c.detail);
    let i = c.interval.expect("an interval");
    assert!(i.low > 0.0 && i.n == 285, "{i:?}");
    assert!(c.mcnemar.expect("mcnemar").p_value < 0.01, "{}", c.detail);
    assert!(c.min_detectable.is_some());

    // The worse one replacing the better one is refused: above the minimum
    // accuracy, but worse than the champion beyond the margin; the detail
    // names the interval and the margin.
    let down = evaluate(&s, &worse, Some(&good)).expect("evaluate");
    let c = &down.checks[0];
    println!("refused: {}", c.detail);
    assert!(!down.passed());
    assert!((c.figures["accuracy"] - a["worse_accuracy"].as_f64().expect("acc")).abs() < 1e-12);
    for words in [
        "margin 0.01",
        "lower bound",
        "McNemar",
        "detects differences",
    ] {
        assert!(c.detail.contains(words), "{} lacks {words:?}", c.detail);
    }
    // Against itself, any model is non-inferior.
    assert!(evaluate(&s, &worse, Some(&worse)).expect("same").passed());

    // Answers that do not match the suite are an error, not a pass.
    assert!(evaluate(&s, &good[..10].to_vec(), None).is_err());
}

fn spec(name: &str, datatype: &str, shape: &[i64]) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
    }
}

#[test]
fn a_changed_signature_is_reported_as_such() {
    let declared = Signature {
        inputs: vec![spec("input", "FP32", &[-1, 4])],
        outputs: vec![spec("probabilities", "FP32", &[-1, 3])],
    };
    let same = declared.clone();
    assert!(contract(Some(&declared), &same, Some(&declared)).passed);
    let changed = Signature {
        inputs: vec![spec("input", "FP64", &[-1, 4])],
        outputs: vec![
            spec("probabilities", "FP32", &[-1, 3]),
            spec("label", "INT64", &[-1]),
        ],
    };
    let r = contract(Some(&declared), &changed, Some(&same));
    assert!(!r.passed);
    for words in [
        "input \"input\" as FP32",
        "the model has FP64",
        "the model has output \"label\"",
        "the champion has",
    ] {
        assert!(r.detail.contains(words), "{} lacks {words:?}", r.detail);
    }
}

#[test]
fn tensor_and_cosine_tolerances() {
    let doc = json!({
        "name": "t",
        "examples": [
            {"inputs": {}, "expected": {"y": [1.0, 2.0], "e": [1.0, 0.0]}},
            {"inputs": {}, "expected": {"y": [3.0, 4.0], "e": [0.0, 1.0]}},
        ],
        "checks": [
            {"kind": "tensor", "output": "y", "atol": 1e-3, "rtol": 0.0},
            {"kind": "cosine", "output": "e", "min": 0.999},
        ],
    });
    let s = Suite::parse(doc.to_string().as_bytes()).expect("suite");
    let ans = |y1: f64, e2: [f64; 2]| -> Answers {
        vec![
            BTreeMap::from([("y".into(), vec![1.0, 2.0]), ("e".into(), vec![2.0, 0.0])]),
            BTreeMap::from([("y".into(), vec![3.0, y1]), ("e".into(), e2.to_vec())]),
        ]
    };
    let ok = evaluate(&s, &ans(4.0005, [0.0, 3.0]), None).expect("ok");
    assert!(ok.passed(), "{:?}", ok.checks);
    let bad = evaluate(&s, &ans(4.01, [1.0, 1.0]), None).expect("bad");
    assert!(!bad.checks[0].passed && bad.checks[0].detail.contains("example 1"));
    assert!(!bad.checks[1].passed && bad.checks[1].detail.contains("0.707"));
    let nan = evaluate(&s, &ans(f64::NAN, [0.0, 1.0]), None).expect("nan");
    assert!(!nan.checks[0].passed, "NaN never passes a tolerance");
}

/// Recall@k over a corpus, by exact cosine search of each version's own
/// vectors; the expected hits worked out by hand on 2-D vectors.
#[test]
fn recall_counts_relevant_documents_among_the_nearest() {
    use mlmesh_validate::checks::{Corpora, evaluate_with_corpus};
    let suite = Suite::parse(
        json!({
            "name": "r",
            "task": "embedding",
            "corpus": [{"id": "east", "text": "e"}, {"id": "north", "text": "n"}, {"id": "west", "text": "w"}],
            "examples": [
                {"inputs": {"text": "q1"}, "relevant": ["east"]},
                {"inputs": {"text": "q2"}, "relevant": ["north"]},
                {"inputs": {"text": "q3"}, "relevant": ["west", "north"]}
            ],
            "checks": [{"kind": "recall", "k": 1, "min": 0.5, "margin": 0.1}],
            "bootstrap": {"resamples": 200, "seed": 1}
        })
        .to_string()
        .as_bytes(),
    )
    .expect("suite");
    let q = |x: f64, y: f64| -> BTreeMap<String, Vec<f64>> {
        [("embedding".to_owned(), vec![x, y])].into_iter().collect()
    };
    let corpus = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![-1.0, 0.0]];
    // q1 nearest east (hit), q2 nearest north (hit), q3 nearest west: one
    // of its two relevant documents at k = 1 (0.5). Mean 5/6.
    let good: Answers = vec![q(0.9, 0.1), q(0.1, 0.9), q(-0.9, 0.2)];
    // q2 now nearest east: a miss. Mean 1/2.
    let worse: Answers = vec![q(0.9, 0.1), q(0.9, 0.2), q(-0.9, 0.2)];
    let corpora = Corpora {
        candidate: corpus.clone(),
        champion: Some(corpus),
    };
    let r = evaluate_with_corpus(&suite, &good, Some(&worse), &corpora).expect("evaluates");
    let c = &r.checks[0];
    assert!((c.figures["recall"] - 5.0 / 6.0).abs() < 1e-12, "{c:?}");
    assert!((c.figures["champion_recall"] - 0.5).abs() < 1e-12, "{c:?}");
    assert!(c.passed, "{c:?}");
    let r = evaluate_with_corpus(
        &suite,
        &worse,
        Some(&good),
        &Corpora {
            candidate: corpora.candidate.clone(),
            champion: corpora.champion.clone(),
        },
    )
    .expect("evaluates");
    let c = &r.checks[0];
    // The minimum is met, but worse by 1/3 on average: the interval
    // reaches below -0.1, so it is refused on the margin, and says so.
    assert!((c.figures["recall"] - 0.5).abs() < 1e-12, "{c:?}");
    assert!(!c.interval.expect("interval").non_inferior(0.1), "{c:?}");
    assert!(
        !c.passed && c.detail.contains("worse by more than the margin 0.1"),
        "{c:?}"
    );
    // A corpus missing vectors is a failed check, not a panic.
    let short = Corpora {
        candidate: vec![vec![1.0, 0.0]],
        champion: None,
    };
    let r = evaluate_with_corpus(&suite, &good, None, &short).expect("evaluates");
    assert!(
        !r.checks[0].passed
            && r.checks[0]
                .detail
                .contains("1 corpus vectors for 3 documents")
    );
    // A recall check needs a corpus and known ids.
    let e = Suite::parse(br#"{"name": "r", "task": "embedding", "examples": [{"inputs": {"text": "q"}, "relevant": ["x"]}], "checks": [{"kind": "recall", "k": 1}]}"#)
        .expect_err("no corpus");
    assert!(e.to_string().contains("checks[0].kind"), "{e}");
    let e = Suite::parse(br#"{"name": "r", "task": "embedding", "corpus": [{"id": "a", "text": "t"}], "examples": [{"inputs": {"text": "q"}, "relevant": ["x"]}], "checks": [{"kind": "recall", "k": 1}]}"#)
        .expect_err("unknown id");
    assert!(e.to_string().contains("examples[0].relevant"), "{e}");
}

/// Top-k accuracy: right when the label is among the k highest scores
/// (worked out by hand on three examples).
#[test]
fn top_k_accuracy_counts_labels_among_the_highest_scores() {
    let suite = Suite::parse(
        json!({
            "name": "k",
            "examples": [
                {"inputs": {}, "label": 0},
                {"inputs": {}, "label": 1},
                {"inputs": {}, "label": 2}
            ],
            "checks": [
                {"kind": "accuracy", "output": "p"},
                {"kind": "accuracy", "output": "p", "top_k": 2}
            ]
        })
        .to_string()
        .as_bytes(),
    )
    .expect("suite");
    let row = |v: [f64; 3]| -> BTreeMap<String, Vec<f64>> {
        [("p".to_owned(), v.to_vec())].into_iter().collect()
    };
    // Example 0: class 0 first (top-1 right); example 1: class 1 second
    // (top-2 right); example 2: class 2 last (wrong either way).
    let a: Answers = vec![
        row([0.7, 0.2, 0.1]),
        row([0.5, 0.3, 0.2]),
        row([0.6, 0.3, 0.1]),
    ];
    let r = evaluate(&suite, &a, None).expect("evaluates");
    assert_eq!(r.checks[0].check, "accuracy p");
    assert!((r.checks[0].figures["accuracy"] - 1.0 / 3.0).abs() < 1e-12);
    assert_eq!(r.checks[1].check, "top-2 accuracy p");
    assert!((r.checks[1].figures["accuracy"] - 2.0 / 3.0).abs() < 1e-12);
    let e = Suite::parse(br#"{"name": "k", "examples": [{"inputs": {}, "label": 0}], "checks": [{"kind": "accuracy", "output": "p", "top_k": 0}]}"#)
        .expect_err("top_k 0");
    assert!(e.to_string().contains("checks[0].top_k"), "{e}");
}
