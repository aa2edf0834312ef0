//! `mlmesh-bench embed-memory`: what one model run costs in resident
//! memory, by batch size and input length — the measurements behind the
//! embedding service's memory budget (`embedding.max_run_memory_mb`).
//!
//! For each (inputs, tokens) cell a fresh release service is started, warmed
//! with one short text, its peak resident set reset to the current one
//! (`/proc/<pid>/clear_refs`), and then asked to embed
//! one request of `inputs` texts of exactly `tokens` tokens each, in one
//! model run. Reported: the peak resident set (VmHWM) added by that run, and
//! the service's own estimate for the run, so the two can be compared.

use std::time::Duration;

use anyhow::{Context as _, ensure};
use clap::Parser;
use mlmesh_embedding::{
    engine::{memory::RunCost, model::ModelFolder},
    settings::{DEFAULT_MODEL_DIR, DEFAULT_MODEL_NAME},
};
use mlmesh_proto::embedding::v1::{EmbedRequest, embedding_service_client::EmbeddingServiceClient};
use mlmesh_tests::Service;

use crate::rss_kib;

#[derive(Parser)]
pub struct EmbedMemoryArgs {
    /// Inputs per run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    inputs: Vec<usize>,
    /// Tokens per input (special tokens included), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "32,128,256")]
    tokens: Vec<usize>,
    /// Extra settings for the service, `KEY=VALUE`, comma-separated.
    #[arg(long, value_delimiter = ',')]
    env: Vec<String>,
}

/// A text MiniLM's tokenizer turns into exactly `tokens` tokens ("[CLS]",
/// `tokens − 2` times "word", "[SEP]").
fn text_of(tokens: usize) -> String {
    vec!["word"; tokens.saturating_sub(2)].join(" ")
}

pub async fn run(args: EmbedMemoryArgs) -> anyhow::Result<()> {
    let extra = crate::env_pairs("--env", &args.env)?;
    let folder = ModelFolder::load(
        DEFAULT_MODEL_NAME,
        &mlmesh_tests::repo_root().join(DEFAULT_MODEL_DIR),
    )?;
    let cost = RunCost::of(folder.shape);
    println!("# mlmesh-bench embed-memory");
    println!("model {} ({:?})", folder.dir.display(), folder.shape);
    println!();
    println!(
        "| inputs | tokens | padded tokens | idle RSS MB | peak RSS MB | run added MB | service estimate MB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for &tokens in &args.tokens {
        for &n in &args.inputs {
            let mut env: Vec<(&str, String)> = vec![
                ("MLMESH_EMBEDDING__MAX_BATCH_SIZE", n.max(1).to_string()),
                ("MLMESH_EMBEDDING__MAX_CLIENT_BATCH", n.max(64).to_string()),
                (
                    "MLMESH_EMBEDDING__MAX_BATCH_TOKENS",
                    (n * tokens).max(8192).to_string(),
                ),
                ("MLMESH_EMBEDDING__MAX_RUN_MEMORY_MB", "0".into()),
                (
                    "MLMESH_TELEMETRY__LOG_LEVEL",
                    "warn,mlmesh_runtime=info".into(),
                ),
            ];
            env.extend(extra.iter().map(|(k, v)| (k.as_str(), v.clone())));
            let svc = Service::start("mlmesh-embedding", &env);
            let mut c = EmbeddingServiceClient::connect(format!("http://{}", svc.addr)).await?;
            c.embed(EmbedRequest {
                inputs: vec!["warm".into()],
                ..Default::default()
            })
            .await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            // Reset the peak to the current resident set (the model load's
            // transient peak would otherwise hide small runs).
            std::fs::write(format!("/proc/{}/clear_refs", svc.child.id()), "5")
                .context("resetting VmHWM (needs the same user or root)")?;
            let (idle, _) = rss_kib(svc.child.id()).context("no /proc entry")?;
            let r = c
                .embed(EmbedRequest {
                    inputs: vec![text_of(tokens); n],
                    ..Default::default()
                })
                .await?
                .into_inner();
            ensure!(
                r.embeddings.len() == n,
                "asked {n}, got {}",
                r.embeddings.len()
            );
            let (_, peak) = rss_kib(svc.child.id()).context("no /proc entry")?;
            let estimate = cost.bytes(n, tokens) as f64 / (1024.0 * 1024.0);
            println!(
                "| {n} | {tokens} | {} | {:.0} | {:.0} | {:.0} | {estimate:.0} |",
                n * tokens,
                idle as f64 / 1024.0,
                peak as f64 / 1024.0,
                peak.saturating_sub(idle) as f64 / 1024.0,
            );
        }
    }
    Ok(())
}
