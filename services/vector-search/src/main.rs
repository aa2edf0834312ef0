//! `mlmesh-vector-search`: the vector-search service binary.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use mlmesh_runtime::cli::ServerArgs;
use mlmesh_vector_search::{Application, Settings};

/// Vector collections and nearest-neighbour search over gRPC (mlmesh.vector.v1).
#[derive(Parser, Debug)]
#[command(name = "mlmesh-vector-search", version, after_long_help = SETTINGS_HELP)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
    /// Data folder of the embedded engine; overrides `vector.data_dir`.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

const SETTINGS_HELP: &str = "\
Settings (file key / environment variable / default):
  server.listen              MLMESH_SERVER__LISTEN               127.0.0.1:50052
  server.metrics_listen      MLMESH_SERVER__METRICS_LISTEN       127.0.0.1:9052 (off: disabled)
  server.shutdown_grace_secs MLMESH_SERVER__SHUTDOWN_GRACE_SECS  30   drain time after SIGTERM
  server.max_request_bytes   MLMESH_SERVER__MAX_REQUEST_BYTES    16777216 larger requests: RESOURCE_EXHAUSTED
  server.max_concurrent_streams MLMESH_SERVER__MAX_CONCURRENT_STREAMS 1024
  telemetry.log_format       MLMESH_TELEMETRY__LOG_FORMAT        pretty (pretty|json)
  telemetry.log_level        MLMESH_TELEMETRY__LOG_LEVEL         info (RUST_LOG wins)
  vector.backend             MLMESH_VECTOR__BACKEND              embedded (embedded|qdrant)
  vector.data_dir            MLMESH_VECTOR__DATA_DIR             .cache/mlmesh/vector-data
  vector.sync_writes         MLMESH_VECTOR__SYNC_WRITES          false (true: fsync before acknowledging)
  vector.checkpoint_interval_secs MLMESH_VECTOR__CHECKPOINT_INTERVAL_SECS 5
  vector.indexing_threshold_kb MLMESH_VECTOR__INDEXING_THRESHOLD_KB 10000 (HNSW above this segment size)
  vector.engine_wal_limit_mb MLMESH_VECTOR__ENGINE_WAL_LIMIT_MB  256  compact a collection past this engine log size
  vector.hnsw_m              MLMESH_VECTOR__HNSW_M               16   default for new collections
  vector.hnsw_ef_construct   MLMESH_VECTOR__HNSW_EF_CONSTRUCT    100  default for new collections
  vector.max_upsert_points   MLMESH_VECTOR__MAX_UPSERT_POINTS    10000 points per Upsert / ids per Delete
  vector.max_search_limit    MLMESH_VECTOR__MAX_SEARCH_LIMIT     1000 hits per search
  vector.max_batch_searches  MLMESH_VECTOR__MAX_BATCH_SEARCHES   64   searches per SearchBatch
  vector.max_page_size       MLMESH_VECTOR__MAX_PAGE_SIZE        1000 points per Scroll page / Get
  vector.max_filter_conditions MLMESH_VECTOR__MAX_FILTER_CONDITIONS 256
  vector.max_in_flight       MLMESH_VECTOR__MAX_IN_FLIGHT        512  beyond: RESOURCE_EXHAUSTED
  qdrant.url                 MLMESH_QDRANT__URL                  http://127.0.0.1:6334 (gRPC port)
  qdrant.api_key             MLMESH_QDRANT__API_KEY              (none; never logged)
  qdrant.timeout_secs        MLMESH_QDRANT__TIMEOUT_SECS         30
  qdrant.shard_number        MLMESH_QDRANT__SHARD_NUMBER         1    for collections created here
  qdrant.replication_factor  MLMESH_QDRANT__REPLICATION_FACTOR   1    for collections created here

Trace export: OTEL_EXPORTER_OTLP_ENDPOINT (off when unset), OTEL_SERVICE_NAME.";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut settings = Settings::load(args.server.config.as_deref(), std::env::vars().collect())
        .context("loading settings")?;
    args.server.apply(&mut settings.server);
    if let Some(d) = args.data_dir {
        settings.vector.data_dir = d;
    }
    let _telemetry = mlmesh_runtime::telemetry::init("mlmesh-vector-search", &settings.telemetry)?;
    tracing::info!(?settings, "starting");
    let app = Application::build(settings)
        .await
        .context("starting the vector-search service")?;
    app.run_until_stopped(mlmesh_runtime::shutdown::signal())
        .await?;
    Ok(())
}
