//! A tiny client for the embedding service: embeds texts and prints vectors
//! (first components), or similarity scores with `--similar-to`.
//!
//! ```text
//! cargo run --release -p mlmesh-embedding --example embed -- "hello world" "goodbye"
//! cargo run --release -p mlmesh-embedding --example embed -- --similar-to "a cat" "a kitten" "a truck"
//! ```

use clap::Parser;
use mlmesh_proto::embedding::v1::{
    EmbedRequest, InfoRequest, SimilarityRequest, embedding_service_client::EmbeddingServiceClient,
};

#[derive(Parser)]
struct Args {
    /// Service address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,
    /// Model name (empty: the default model).
    #[arg(long, default_value = "")]
    model: String,
    /// Keep only the first N dimensions (Matryoshka).
    #[arg(long)]
    dimensions: Option<u32>,
    /// Print cosine similarity of this text to each text instead.
    #[arg(long)]
    similar_to: Option<String>,
    /// Texts to embed; none prints the service's Info.
    texts: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut client = EmbeddingServiceClient::connect(args.addr.clone()).await?;
    if args.texts.is_empty() {
        println!("{:#?}", client.info(InfoRequest {}).await?.into_inner());
        return Ok(());
    }
    if let Some(source) = args.similar_to {
        let r = client
            .similarity(SimilarityRequest {
                source: source.clone(),
                texts: args.texts.clone(),
                model: args.model,
                ..Default::default()
            })
            .await?
            .into_inner();
        for (t, s) in args.texts.iter().zip(r.scores) {
            println!("{s:+.4}  {source:?} ~ {t:?}");
        }
        return Ok(());
    }
    let r = client
        .embed(EmbedRequest {
            inputs: args.texts.clone(),
            model: args.model,
            dimensions: args.dimensions,
            ..Default::default()
        })
        .await?
        .into_inner();
    for (t, e) in args.texts.iter().zip(&r.embeddings) {
        let head: Vec<String> = e
            .values
            .iter()
            .take(6)
            .map(|v| format!("{v:+.4}"))
            .collect();
        println!("{t:?} → [{}, …] ({} dims)", head.join(", "), e.values.len());
    }
    if let (Some(u), Some(t)) = (r.usage, r.timings) {
        println!(
            "model {}: {} tokens; tokenize {} µs, queue {} µs, inference {} µs, total {} µs",
            r.model, u.prompt_tokens, t.tokenize_us, t.queue_us, t.inference_us, t.total_us
        );
    }
    Ok(())
}
