//! `mlmesh-registry`: the model registry binary.

use anyhow::Context as _;
use clap::Parser;
use mlmesh_registry::{Application, Settings};
use mlmesh_runtime::cli::ServerArgs;

/// Models, immutable content-addressed versions, aliases and a watch stream.
#[derive(Parser, Debug)]
#[command(name = "mlmesh-registry", version, after_long_help = SETTINGS_HELP)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
}

const SETTINGS_HELP: &str = "\
Settings (file key / environment variable / default):
  server.listen              MLMESH_SERVER__LISTEN               127.0.0.1:50054
  server.metrics_listen      MLMESH_SERVER__METRICS_LISTEN       127.0.0.1:9054 (off: disabled)
  server.shutdown_grace_secs MLMESH_SERVER__SHUTDOWN_GRACE_SECS  30   drain time after SIGTERM
  server.max_request_bytes   MLMESH_SERVER__MAX_REQUEST_BYTES    8388608 (larger: RESOURCE_EXHAUSTED)
  telemetry.log_format       MLMESH_TELEMETRY__LOG_FORMAT        pretty (pretty|json)
  telemetry.log_level        MLMESH_TELEMETRY__LOG_LEVEL         info (RUST_LOG wins)
  registry.data_dir          MLMESH_REGISTRY__DATA_DIR           .mlmesh/registry (registry.db, blobs/, uploads/)
  registry.max_files         MLMESH_REGISTRY__MAX_FILES          10000 files per version
  registry.max_chunk_bytes   MLMESH_REGISTRY__MAX_CHUNK_BYTES    4194304 bytes per upload message
  registry.download_chunk_bytes MLMESH_REGISTRY__DOWNLOAD_CHUNK_BYTES 1048576
  registry.upload_expiry_secs MLMESH_REGISTRY__UPLOAD_EXPIRY_SECS 86400 (uncommitted uploads dropped)
  registry.blob_grace_secs   MLMESH_REGISTRY__BLOB_GRACE_SECS    3600 (released contents kept this long)
  registry.housekeeping_secs MLMESH_REGISTRY__HOUSEKEEPING_SECS  60
  registry.event_retention   MLMESH_REGISTRY__EVENT_RETENTION    100000 events kept for Watch
  registry.watch_progress_secs MLMESH_REGISTRY__WATCH_PROGRESS_SECS 10
  registry.watch_poll_ms     MLMESH_REGISTRY__WATCH_POLL_MS      1000 (log re-read: other replicas' commits)
  registry.metadata_url      MLMESH_REGISTRY__METADATA_URL       (empty: SQLite in data_dir; else PostgreSQL)
  registry.page_size         MLMESH_REGISTRY__PAGE_SIZE          100 (at most 1000)

Trace export: OTEL_EXPORTER_OTLP_ENDPOINT (off when unset), OTEL_SERVICE_NAME.";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut settings = Settings::load(args.server.config.as_deref(), std::env::vars().collect())
        .context("loading settings")?;
    args.server.apply(&mut settings.server);
    let _telemetry = mlmesh_runtime::telemetry::init("mlmesh-registry", &settings.telemetry)?;
    tracing::info!(?settings, "starting");
    let app = Application::build(settings)
        .await
        .context("starting the registry")?;
    app.run_until_stopped(mlmesh_runtime::shutdown::signal())
        .await?;
    Ok(())
}
