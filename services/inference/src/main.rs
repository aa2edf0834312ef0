//! `mlmesh-inference`: the inference service binary.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use mlmesh_inference::{Application, Settings};
use mlmesh_runtime::cli::ServerArgs;

/// ONNX and NumPy models over the Open Inference Protocol (Triton / KServe v2 gRPC).
#[derive(Parser, Debug)]
#[command(name = "mlmesh-inference", version, after_long_help = SETTINGS_HELP)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
    /// A Triton-layout model repository; overrides `inference.model_repository`.
    #[arg(long, value_name = "DIR")]
    model_repository: Option<PathBuf>,
}

const SETTINGS_HELP: &str = "\
Settings (file key / environment variable / default):
  server.listen              MLMESH_SERVER__LISTEN               127.0.0.1:50053
  server.metrics_listen      MLMESH_SERVER__METRICS_LISTEN       127.0.0.1:9053 (off: disabled)
  server.shutdown_grace_secs MLMESH_SERVER__SHUTDOWN_GRACE_SECS  30   drain time after SIGTERM
  server.max_request_bytes   MLMESH_SERVER__MAX_REQUEST_BYTES    67108864 (larger: RESOURCE_EXHAUSTED)
  server.max_concurrent_streams MLMESH_SERVER__MAX_CONCURRENT_STREAMS 1024
  telemetry.log_format       MLMESH_TELEMETRY__LOG_FORMAT        pretty (pretty|json)
  telemetry.log_level        MLMESH_TELEMETRY__LOG_LEVEL         info (RUST_LOG wins)
  inference.model_repository MLMESH_INFERENCE__MODEL_REPOSITORY  services/inference/models (the demo models)
  inference.load_models      MLMESH_INFERENCE__LOAD_MODELS       (empty: every model; comma-separated)
  inference.load_on_demand   MLMESH_INFERENCE__LOAD_ON_DEMAND    true  load a model when a request names it
  inference.memory_budget_mb MLMESH_INFERENCE__MEMORY_BUDGET_MB  0 (no budget; else LRU eviction)
  inference.pinned_models    MLMESH_INFERENCE__PINNED_MODELS     (never evicted; comma-separated)
  inference.poll_interval_secs MLMESH_INFERENCE__POLL_INTERVAL_SECS 0 (off; else reload changed models)
  inference.ort_dylib_path   MLMESH_INFERENCE__ORT_DYLIB_PATH    $ORT_DYLIB_PATH, else .cache/mlmesh/onnxruntime/libonnxruntime.so.1.31.1
  inference.intra_op_threads MLMESH_INFERENCE__INTRA_OP_THREADS  1
  inference.allow_spinning   MLMESH_INFERENCE__ALLOW_SPINNING    false
  inference.max_queue_size   MLMESH_INFERENCE__MAX_QUEUE_SIZE    1024 requests waiting per model version
  inference.stream_concurrency MLMESH_INFERENCE__STREAM_CONCURRENCY 16
  inference.default_max_batch_size MLMESH_INFERENCE__DEFAULT_MAX_BATCH_SIZE 64 (models without config.pbtxt)
  inference.registry_models  MLMESH_INFERENCE__REGISTRY_MODELS   (none) registry://<model>@<alias|version>, comma-separated
  inference.registry_addr    MLMESH_INFERENCE__REGISTRY_ADDR     (none) the model registry's host:port
  inference.registry_cache_dir MLMESH_INFERENCE__REGISTRY_CACHE_DIR .cache/mlmesh/inference-registry (pulled versions)

Trace export: OTEL_EXPORTER_OTLP_ENDPOINT (off when unset), OTEL_SERVICE_NAME.";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut env: std::collections::HashMap<String, String> = std::env::vars().collect();
    if let Some(dir) = &args.model_repository {
        env.insert(
            "MLMESH_INFERENCE__MODEL_REPOSITORY".into(),
            dir.display().to_string(),
        );
    }
    let mut settings =
        Settings::load(args.server.config.as_deref(), env).context("loading settings")?;
    args.server.apply(&mut settings.server);
    let _telemetry = mlmesh_runtime::telemetry::init("mlmesh-inference", &settings.telemetry)?;
    tracing::info!(?settings, "starting");
    let app = Application::build(settings)
        .await
        .context("starting the inference service")?;
    app.run_until_stopped(mlmesh_runtime::shutdown::signal())
        .await?;
    Ok(())
}
