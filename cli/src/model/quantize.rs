//! `mlmesh model quantize <SRC> <OUT> --calibration FILE`: an fp32 sentence
//! encoder folder quantized to int8 in a closed loop (see
//! `mlmesh_modelkit::quantize`): the quality gate against the fp32 model on
//! the calibration texts, the worst nodes kept fp32 until it holds, and the
//! speed-up measured on this CPU. With `--push MODEL` the result becomes
//! the next version of MODEL, its lineage naming the parent version and
//! the calibration's digest and its metadata the excluded nodes, quality
//! and speed; with `--suite` it is then validated (against the parent)
//! and the outcome recorded as evidence.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Args;
use mlmesh_modelkit::quantize::{
    self, Gate, Options, embedding::EmbeddingBackend, tensor::TensorBackend,
};
use mlmesh_proto::registry::v1 as pb;
use mlmesh_registry_client::push::About;
use serde_json::{Map, json};
use sha2::{Digest as _, Sha256};

#[derive(Args, Debug)]
pub struct Quantize {
    /// The fp32 model folder: a sentence encoder (model.onnx,
    /// tokenizer.json, 1_Pooling/config.json, e.g. `mlmesh model
    /// convert`'s), or a model of an inference repository (config.pbtxt and
    /// <version>/model.onnx, or model.onnx).
    src: PathBuf,
    /// The folder to write (must not exist).
    out: PathBuf,
    /// Calibration data: for a sentence encoder a JSON list of texts or a
    /// validation suite (its examples' `text` inputs); for other models a
    /// validation suite (its examples' tensors). At most 4096 are used.
    #[arg(long)]
    calibration: PathBuf,
    /// The quality gate of a sentence encoder: every calibration text's
    /// vector at least this cosine to the fp32 model's.
    #[arg(long, default_value_t = 0.99)]
    min_cosine: f64,
    /// The quality gate of other models: at least this fraction of the
    /// calibration examples keep the fp32 model's arg-max of --output.
    #[arg(long, default_value_t = 0.99)]
    min_agreement: f64,
    /// The float output compared (models other than sentence encoders).
    #[arg(long, default_value = "probabilities")]
    output: String,
    /// Activations quantized with fixed ranges measured on the calibration
    /// texts (static: an input's vector does not depend on its batch), or
    /// per call (dynamic: faster to set up, but batching changes results).
    #[arg(long, value_enum, default_value_t = Activations::Static)]
    activations: Activations,
    /// Recommend the int8 model only when at least this much faster.
    #[arg(long, default_value_t = 1.05)]
    min_speedup: f64,
    /// ONNX Runtime threads per session (the embedding service's
    /// embedding.intra_op_threads).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Timed rounds of each model (alternating).
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Calibration texts used to rank the nodes by their error (the gate
    /// is judged on all of them).
    #[arg(long, default_value_t = 64)]
    scan_texts: usize,
    /// Push the result as the next version of this registry model (only
    /// when recommended, unless --force).
    #[arg(long)]
    push: Option<String>,
    /// The registry version SRC is (the new version's lineage parent).
    #[arg(long, requires = "push")]
    parent: Option<i64>,
    /// Push even when not recommended.
    #[arg(long, requires = "push")]
    force: bool,
    /// After pushing, validate the new version with this suite (against
    /// --parent when given) and record the outcome as evidence.
    #[arg(long, requires = "push")]
    suite: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: crate::registry::RegistryConn,
}

/// Where the ONNX file of `src` is, relative to it: `model.onnx`, or the
/// highest numbered `<version>/model.onnx` of an inference repository model.
fn model_path(src: &Path) -> anyhow::Result<PathBuf> {
    if src.join("model.onnx").is_file() {
        return Ok("model.onnx".into());
    }
    let mut versions: Vec<u64> = std::fs::read_dir(src)
        .with_context(|| format!("reading {}", src.display()))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|v: &u64| src.join(v.to_string()).join("model.onnx").is_file())
        .collect();
    versions.sort_unstable();
    match versions.last() {
        Some(v) => Ok(PathBuf::from(v.to_string()).join("model.onnx")),
        None => bail!(
            "{}: no model.onnx (nor <version>/model.onnx)",
            src.display()
        ),
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Activations {
    Static,
    Dynamic,
}

pub async fn quantize(q: Quantize) -> anyhow::Result<()> {
    let calibration = std::fs::read(&q.calibration)
        .with_context(|| format!("reading {}", q.calibration.display()))?;
    let calibration_digest = hex::encode(Sha256::digest(&calibration));
    let task = if q.src.join("1_Pooling/config.json").is_file() {
        "embedding"
    } else {
        "classification"
    };
    let encoder =
        q.src.join("1_Pooling/config.json").is_file() && q.src.join("tokenizer.json").is_file();
    let model_rel = model_path(&q.src)?;
    let model_rel = model_rel.as_path();
    let bytes = std::fs::read(q.src.join(model_rel))
        .with_context(|| format!("reading {}", q.src.join(model_rel).display()))?;
    let model = mlmesh_modelkit::onnx::decode(&bytes)
        .with_context(|| format!("{}", q.src.join(model_rel).display()))?;
    drop(bytes);
    let options = Options {
        gate: if encoder {
            Gate::Cosine { min: q.min_cosine }
        } else {
            Gate::Agreement {
                min: q.min_agreement,
            }
        },
        activations: match q.activations {
            Activations::Static => quantize::Mode::Static,
            Activations::Dynamic => quantize::Mode::Dynamic,
        },
        min_speedup: q.min_speedup,
        speed_rounds: q.rounds,
        scan_examples: q.scan_texts,
        ..Options::default()
    };
    let (src, threads, quiet, output) = (q.src.clone(), q.threads, q.json, q.output.clone());
    let scratch = q.out.with_file_name(format!(
        ".{}.scratch",
        q.out
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let scratch2 = scratch.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let backend: Box<dyn quantize::Backend> = if encoder {
            let texts = quantize::embedding::calibration_texts(&calibration)?;
            Box::new(EmbeddingBackend::new(&src, &texts, threads, &scratch2)?)
        } else {
            Box::new(TensorBackend::new(&calibration, &output, threads)?)
        };
        quantize::quantize(model, backend.as_ref(), &options, |line| {
            if !quiet {
                eprintln!("{line}");
            }
        })
    })
    .await
    .context("the quantization task failed")?;
    let _ = std::fs::remove_dir_all(&scratch);
    let outcome = outcome?;
    let mut note = Map::new();
    note.insert("dtype".into(), "int8".into());
    note.insert(
        "quantizer".into(),
        format!("mlmesh-quantize {}", env!("CARGO_PKG_VERSION")).into(),
    );
    note.insert(
        "calibration_digest".into(),
        calibration_digest.clone().into(),
    );
    note.insert("excluded_nodes".into(), json!(outcome.excluded));
    note.insert("activations".into(), json!(outcome.options.activations));
    note.insert(
        "quality".into(),
        json!({"min_cosine": outcome.quality.min_cosine, "mean_cosine": outcome.quality.mean_cosine,
               "sqnr_db": outcome.quality.sqnr_db, "agreement": outcome.quality.agreement,
               "gate": outcome.options.gate}),
    );
    note.insert(
        "speed".into(),
        json!({"speedup": outcome.speed.speedup, "fp32_items_per_s": outcome.speed.fp32_items_per_s,
               "int8_items_per_s": outcome.speed.int8_items_per_s, "batch": quantize::embedding::BATCH,
               "threads": q.threads}),
    );
    note.insert("recommended".into(), outcome.recommended.into());
    if let Some(p) = q.parent {
        note.insert("parent_version".into(), p.into());
    }
    quantize::save(&q.src, model_rel, &q.out, &outcome, note.clone())?;

    let mut report = serde_json::to_value(&outcome)?;
    report["out"] = json!(q.out.display().to_string());
    if !q.json {
        println!(
            "{}: {} of {} nodes int8 ({} kept fp32); min cosine {:.6}, agreement {:.4} to fp32 on {} examples; {:.1} → {:.1} items/s at batch {} ({:.2}×)",
            if outcome.recommended {
                "recommended"
            } else {
                "NOT recommended"
            },
            outcome.quantized,
            outcome.eligible.len(),
            outcome.excluded.len(),
            outcome.quality.min_cosine,
            outcome.quality.agreement,
            outcome.calibration_examples,
            outcome.speed.fp32_items_per_s,
            outcome.speed.int8_items_per_s,
            quantize::embedding::BATCH,
            outcome.speed.speedup
        );
        println!("{}", outcome.verdict);
        println!("written to {}", q.out.display());
    }
    if let Some(model) = &q.push {
        if !outcome.recommended && !q.force {
            bail!("not pushed: {} (--force pushes anyway)", outcome.verdict);
        }
        let mut reg = q.conn.connect()?;
        let about = About {
            lineage: pb::Lineage {
                source_run: format!("mlmesh-quantize {}", env!("CARGO_PKG_VERSION")),
                dataset_digest: calibration_digest,
                parent_version: q.parent.unwrap_or(0),
                framework: "onnx".into(),
                task: task.into(),
                ..Default::default()
            },
            metadata: Some(mlmesh_proto::json::json_to_struct(note)),
        };
        let v =
            crate::registry::transfer::push(&mut reg, model, &q.out, None, about, 1 << 20).await?;
        report["pushed"] = json!({"model": model, "version": v.version});
        if !q.json {
            println!("pushed as {model} version {}", v.version);
        }
        if let Some(suite) = &q.suite {
            super::validate::validate(super::validate::Validate::recording(
                model,
                v.version,
                suite,
                q.parent,
                q.conn.clone(),
            ))
            .await?;
        }
    }
    if q.json {
        println!("{report}");
    }
    Ok(())
}
