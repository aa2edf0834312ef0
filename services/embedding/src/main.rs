//! `mlmesh-embedding`: the embedding service binary.

use anyhow::Context as _;
use clap::Parser;
use mlmesh_embedding::{Application, Settings};
use mlmesh_runtime::cli::ServerArgs;

/// Sentence embeddings from ONNX models over gRPC (mlmesh.embedding.v1).
#[derive(Parser, Debug)]
#[command(name = "mlmesh-embedding", version, after_long_help = SETTINGS_HELP)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
}

const SETTINGS_HELP: &str = "\
Settings (file key / environment variable / default):
  server.listen              MLMESH_SERVER__LISTEN               127.0.0.1:50051
  server.metrics_listen      MLMESH_SERVER__METRICS_LISTEN       127.0.0.1:9051 (off: disabled)
  server.shutdown_grace_secs MLMESH_SERVER__SHUTDOWN_GRACE_SECS  30   drain time after SIGTERM
  server.max_request_bytes   MLMESH_SERVER__MAX_REQUEST_BYTES    16777216
  server.max_concurrent_streams MLMESH_SERVER__MAX_CONCURRENT_STREAMS 1024
  telemetry.log_format       MLMESH_TELEMETRY__LOG_FORMAT        pretty (pretty|json)
  telemetry.log_level        MLMESH_TELEMETRY__LOG_LEVEL         info (RUST_LOG wins)
  embedding.models           MLMESH_EMBEDDING__MODELS            all-MiniLM-L6-v2=.cache/mlmesh/models/all-MiniLM-L6-v2
                             (comma-separated name=folder list; folders in the sentence-transformers layout)
  embedding.default_model    MLMESH_EMBEDDING__DEFAULT_MODEL     the first model
  embedding.ort_dylib_path   MLMESH_EMBEDDING__ORT_DYLIB_PATH    $ORT_DYLIB_PATH, else .cache/mlmesh/onnxruntime/libonnxruntime.so.1.31.1
  embedding.intra_op_threads MLMESH_EMBEDDING__INTRA_OP_THREADS  2
  embedding.allow_spinning   MLMESH_EMBEDDING__ALLOW_SPINNING    false (ONNX Runtime idle spinning)
  embedding.shrink_arena     MLMESH_EMBEDDING__SHRINK_ARENA      true (give arena memory back after each run)
  embedding.cpu_arena        MLMESH_EMBEDDING__CPU_ARENA         true (false: no ONNX Runtime arena)
  embedding.sessions_per_model MLMESH_EMBEDDING__SESSIONS_PER_MODEL 1
  embedding.max_batch_size   MLMESH_EMBEDDING__MAX_BATCH_SIZE    32   inputs per model run
  embedding.max_batch_tokens MLMESH_EMBEDDING__MAX_BATCH_TOKENS  8192 padded tokens per model run
  embedding.max_queued_inputs MLMESH_EMBEDDING__MAX_QUEUED_INPUTS 1024 beyond: RESOURCE_EXHAUSTED
  embedding.max_client_batch MLMESH_EMBEDDING__MAX_CLIENT_BATCH  64   inputs per request
  embedding.stream_concurrency MLMESH_EMBEDDING__STREAM_CONCURRENCY 8 requests in flight per EmbedStream

Trace export: OTEL_EXPORTER_OTLP_ENDPOINT (off when unset), OTEL_SERVICE_NAME.";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut settings = Settings::load(args.server.config.as_deref(), std::env::vars().collect())
        .context("loading settings")?;
    args.server.apply(&mut settings.server);
    let _telemetry = mlmesh_runtime::telemetry::init("mlmesh-embedding", &settings.telemetry)?;
    tracing::info!(?settings, "starting");
    let app = Application::build(settings)
        .await
        .context("starting the embedding service")?;
    app.run_until_stopped(mlmesh_runtime::shutdown::signal())
        .await?;
    Ok(())
}
