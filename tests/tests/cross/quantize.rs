//! `mlmesh model quantize` on the real all-MiniLM-L6-v2: the fp32 model
//! converted from its checkpoint, quantized in a closed loop on
//! calibration texts that are not the golden ones, pushed with its lineage,
//! then validated by the embedding service against sentence-transformers'
//! own vectors for the 60 held-out golden texts (cosine ≥ 0.99 each) and
//! the outcome recorded as evidence. Speed is reported, never judged here
//! (`make bench-quantize` does).

use mlmesh_tests::{TempDir, repo_root};

use crate::registry_cli::RegistryCli;

#[test]
fn minilm_int8_keeps_quality_on_held_out_texts() {
    let _serial = mlmesh_tests::serial();
    let ck = repo_root().join(".cache/mlmesh/models/all-MiniLM-L6-v2-checkpoint");
    if !ck.join("model.safetensors").is_file() {
        eprintln!(
            "skipped: {} is missing; run make models (make test does)",
            ck.display()
        );
        return;
    }
    let work = TempDir::new("quantize-minilm");
    let (fp32, int8) = (work.path().join("fp32"), work.path().join("int8"));
    // 48 calibration texts keep the loop short; the gate is judged on all.
    let texts: Vec<String> = serde_json::from_slice(
        &std::fs::read(repo_root().join("tests/data/calibration-texts.json")).expect("texts"),
    )
    .expect("json");
    let calibration = work.path().join("calibration.json");
    std::fs::write(
        &calibration,
        serde_json::to_vec(&texts[..48]).expect("json"),
    )
    .expect("write");
    let suite = work.path().join("suite.json");
    std::fs::write(
        &suite,
        serde_json::to_vec(&crate::golden::minilm_suite(0.99)).expect("json"),
    )
    .expect("write");

    let cli = RegistryCli::start("quantize-registry");
    cli.ok(&["registry", "create", "minilm"]);
    let (fp32_arg, int8_arg) = (fp32.display().to_string(), int8.display().to_string());
    cli.ok(&[
        "model",
        "convert",
        &ck.display().to_string(),
        &fp32_arg,
        "--push",
        "minilm",
    ]);
    let printed = cli.ok(&[
        "model",
        "quantize",
        &fp32_arg,
        &int8_arg,
        "--calibration",
        &calibration.display().to_string(),
        "--min-cosine",
        "0.995",
        "--scan-texts",
        "16",
        "--rounds",
        "3",
        "--push",
        "minilm",
        "--parent",
        "1",
        "--force",
        "--suite",
        &suite.display().to_string(),
        "--json",
    ]);
    println!("{printed}");
    let report: serde_json::Value = printed
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("a JSON report");
    let eligible = report["eligible"].as_array().expect("eligible").len();
    assert_eq!(eligible, 36, "6 layers × 6 projections");
    let excluded = report["excluded"].as_array().expect("excluded");
    assert!(report["passes"].as_bool().expect("passes"), "{report}");
    assert!(report["quality"]["min_cosine"].as_f64().expect("cos") >= 0.995);
    // Quantizing everything misses the gate on MiniLM: the loop had to
    // keep some nodes fp32 — and not most of them.
    assert!(
        report["quality_all"]["min_cosine"].as_f64().expect("cos") < 0.995,
        "{report}"
    );
    assert!(!excluded.is_empty() && excluded.len() <= 12, "{excluded:?}");
    assert_eq!(report["pushed"]["version"], 2);
    println!(
        "speed (not judged): {:.2}× ({:.1} → {:.1} texts/s)",
        report["speed"]["speedup"].as_f64().unwrap_or_default(),
        report["speed"]["fp32_items_per_s"]
            .as_f64()
            .unwrap_or_default(),
        report["speed"]["int8_items_per_s"]
            .as_f64()
            .unwrap_or_default()
    );

    let note: serde_json::Value =
        serde_json::from_slice(&std::fs::read(int8.join("mlmesh.json")).expect("note"))
            .expect("json");
    assert_eq!(note["dtype"], "int8");
    assert_eq!(note["parent_version"], 1);
    let shown = cli.ok(&["registry", "show", "minilm", "2"]);
    assert!(shown.contains("parent version: 1"), "{shown}");
    assert!(shown.contains("excluded_nodes"), "{shown}");
    assert!(
        shown.contains("PASS") || shown.contains("passed"),
        "evidence listed: {shown}"
    );
}

/// A scikit-learn MLP through ONNX (digits-mlp: 64 → 32 → 10): quantized
/// with its validation suite as calibration and the agreement gate, pushed
/// with its lineage and validated by the real inference service against
/// its parent on the held-out digits (accuracy, non-inferiority). Whether
/// int8 is faster here is reported, not judged (on this tiny model it is
/// not, and the quantizer says so).
#[test]
fn a_scikit_learn_mlp_quantizes_and_validates() {
    let _serial = mlmesh_tests::serial();
    let work = TempDir::new("quantize-digits");
    let src = repo_root().join("services/inference/models/digits-mlp");
    let int8 = work.path().join("digits-int8");
    let suite = repo_root().join("tests/data/validation/digits-suite.json");
    let suite_arg = suite.display().to_string();
    let cli = RegistryCli::start("quantize-digits-registry");
    cli.all_ok(&[
        &["registry", "create", "digits"][..],
        &["registry", "push", "digits", &src.display().to_string()],
    ]);
    let printed = cli.ok(&[
        "model",
        "quantize",
        &src.display().to_string(),
        &int8.display().to_string(),
        "--calibration",
        &suite_arg,
        "--min-agreement",
        "0.99",
        "--rounds",
        "3",
        "--push",
        "digits",
        "--parent",
        "1",
        "--force",
        "--suite",
        &suite_arg,
        "--json",
    ]);
    println!("{printed}");
    let report: serde_json::Value = printed
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("a JSON report");
    assert_eq!(report["eligible"].as_array().expect("eligible").len(), 2);
    assert!(
        report["quality"]["agreement"].as_f64().expect("agreement") >= 0.99,
        "{report}"
    );
    assert_eq!(report["options"]["gate"]["kind"], "agreement");
    assert!(report["verdict"].as_str().is_some_and(|v| !v.is_empty()));
    assert_eq!(report["pushed"]["version"], 2);
    assert!(
        int8.join("1/model.onnx").is_file(),
        "the repository layout is kept"
    );
    assert!(
        printed.contains("PASS accuracy"),
        "validated against v1: {printed}"
    );
}
