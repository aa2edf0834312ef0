//! `mlmesh model convert <SRC> <OUT> [--push MODEL]`: a sentence-transformers
//! BERT checkpoint folder to an fp32 ONNX folder the embedding service
//! serves (see `mlmesh_modelkit::convert`), optionally pushed to the registry
//! as a new version whose lineage and metadata name the source's digest and
//! the converter.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use mlmesh_proto::registry::v1 as pb;
use mlmesh_registry_client::push::About;

#[derive(Args, Debug)]
pub struct Convert {
    /// The checkpoint folder (config.json, model.safetensors, tokenizer.json,
    /// 1_Pooling/config.json), e.g. a sentence-transformers model.
    src: PathBuf,
    /// The folder to write (must not exist).
    out: PathBuf,
    /// Push the result as the next version of this registry model.
    #[arg(long)]
    push: Option<String>,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: crate::registry::RegistryConn,
}

pub async fn convert(c: Convert) -> anyhow::Result<()> {
    let (src, out) = (c.src.clone(), c.out.clone());
    let done = tokio::task::spawn_blocking(move || mlmesh_modelkit::convert::convert(&src, &out))
        .await
        .context("the conversion task failed")?
        .with_context(|| format!("cannot convert {}", c.src.display()))?;
    let mut report = serde_json::to_value(&done)?;
    if let Some(model) = &c.push {
        let mut reg = c.conn.connect()?;
        let mut meta = serde_json::Map::new();
        meta.insert("dtype".into(), "float32".into());
        meta.insert("converter".into(), done.converter.clone().into());
        meta.insert("source_digest".into(), done.source_digest.clone().into());
        let about = About {
            lineage: pb::Lineage {
                source_run: done.converter.clone(),
                framework: "onnx".into(),
                task: "embedding".into(),
                ..Default::default()
            },
            metadata: Some(mlmesh_proto::json::json_to_struct(meta)),
        };
        let v = crate::registry::transfer::push(&mut reg, model, &done.out, None, about, 1 << 20)
            .await?;
        report["pushed"] = serde_json::json!({"model": model, "version": v.version});
    }
    if c.json {
        println!("{report}");
    } else {
        println!(
            "converted {} → {}: {} layers, hidden {}, {} parameters, model.onnx {:.1} MB, source digest {}",
            c.src.display(),
            done.out.display(),
            done.layers,
            done.hidden_size,
            done.parameters,
            done.model_bytes as f64 / 1e6,
            done.source_digest
        );
        if let Some(p) = report.get("pushed") {
            println!("pushed as {} version {}", p["model"], p["version"]);
        }
    }
    Ok(())
}
